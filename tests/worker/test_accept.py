"""The worker's own accept path (worker/accept.py) against a real loop and socket."""

from __future__ import annotations

import asyncio
import socket

import pytest

from preforkd.worker.accept import Acceptor, Gate
from preforkd.worker.tls import ListenerSpec


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_accepted_tcp_connections_have_nagle_off(loop_kind: str) -> None:
    """asyncio's connect_accepted_socket leaves TCP_NODELAY off, where its own server
    turns it on: small writes of a response would wait for the client's delayed ACK."""
    if loop_kind == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    made: asyncio.Future[asyncio.BaseTransport] = loop.create_future()

    class Protocol(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            made.set_result(transport)

    gate = Gate(loop, set(), cap=10)
    gate.acceptors.append(
        Acceptor(loop, ListenerSpec(listener, frozenset({"h1"}), None), Protocol, gate, 5.0)
    )
    client = socket.create_connection(listener.getsockname())
    try:
        gate.start()
        transport = loop.run_until_complete(asyncio.wait_for(made, 5))
        sock = transport.get_extra_info("socket")
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        transport.close()
        gate.stop()
        loop.run_until_complete(asyncio.sleep(0))
    finally:
        client.close()
        listener.close()
        loop.close()


def _new_loop(loop_kind: str) -> asyncio.AbstractEventLoop:
    if loop_kind == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        return uvloop.new_event_loop()  # type: ignore[no-any-return]
    return asyncio.new_event_loop()


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_plain_connections_settle_without_a_task_and_a_failed_one_is_closed(
    loop_kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A plain connection is stepped to its transport by the acceptor itself (no Task):
    it leaves the "being started" count once connection_made has run, and a connection
    whose protocol cannot be made is closed, logged and uncounted, not leaked."""
    loop = _new_loop(loop_kind)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    made: list[asyncio.BaseTransport] = []
    fail = [False]

    class Protocol(asyncio.Protocol):
        def __init__(self) -> None:
            if fail[0]:
                raise RuntimeError("no protocol for you")

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            made.append(transport)

    gate = Gate(loop, set(), cap=10)
    acceptor = Acceptor(loop, ListenerSpec(listener, frozenset({"h1"}), None), Protocol, gate, 5.0)
    clients = [socket.create_connection(listener.getsockname()) for _ in range(2)]
    try:
        acceptor.sweep()  # accepts both queued connections, now
        assert gate.pending == 2
        loop.run_until_complete(asyncio.wait_for(gate.settled(), 5))
        assert gate.pending == 0 and len(made) == 2
        assert not any(t.is_closing() for t in made)

        fail[0] = True
        late = socket.create_connection(listener.getsockname())
        clients.append(late)
        late.settimeout(5)
        acceptor.sweep()
        loop.run_until_complete(asyncio.wait_for(gate.settled(), 5))
        assert gate.pending == 0 and len(made) == 2
        assert late.recv(1) == b""  # closed by the server, not left hanging
        assert "Connection not started" in caplog.text
        for transport in made:
            transport.close()
        loop.run_until_complete(asyncio.sleep(0))
    finally:
        for client in clients:
            client.close()
        listener.close()
        loop.close()
