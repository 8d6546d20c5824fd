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
