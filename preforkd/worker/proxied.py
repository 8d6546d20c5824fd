"""Reading the PROXY protocol header off an accepted socket, before anything else.

With ``--proxy-protocol``, every connection must start with the header (haproxy's
specification: a receiver configured for it must not accept connections without one), and
only from a peer in ``--forwarded-allow-ips``. It is read from the raw socket before the
TLS handshake or HTTP detection, without reading one byte past it: each read takes at
most what the parser (``proto/proxy.py``) knows to be header, so the bytes after it stay
in the socket for the TLS or HTTP layer. A peer that sends no complete header within
``--header-timeout`` is closed.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass

from preforkd.proto.proxy import V1_MAX, ProxyHeader, ProxyHeaderError, parse_proxy_header
from preforkd.wsgi.environ import ProxyTrust

log = logging.getLogger("preforkd.worker")

_PEEK = max(V1_MAX, 232)  # a v1 line, or a v2 header with IPv6 addresses and some TLVs


class ProxyRefused(Exception):
    """The connection is closed: the reason is in the log line."""


@dataclass(frozen=True)
class ProxyProtocol:
    """What the accept path needs to read headers: who may send them, how long to wait."""

    trust: ProxyTrust
    timeout: float

    async def read(self, loop: asyncio.AbstractEventLoop, conn: socket.socket) -> ProxyHeader:
        """The connection's header, consumed from the socket; raises ProxyRefused."""
        peer = _peer_address(conn)
        if not self.trust.trusts(peer):
            log.warning(
                "PROXY protocol: connection from %s, which is not in --forwarded-allow-ips; "
                "closing", peer,
            )  # fmt: skip
            raise ProxyRefused
        try:
            async with asyncio.timeout(self.timeout if self.timeout > 0 else None):
                return await _read_header(loop, conn)
        except TimeoutError:
            log.info("PROXY protocol: no header from %s within %gs; closing", peer, self.timeout)
        except ProxyHeaderError as exc:
            log.warning("PROXY protocol: bad header from %s: %s; closing", peer, exc)
        except (ConnectionError, EOFError) as exc:
            log.info("PROXY protocol: %s went away before its header (%s)", peer, exc or "EOF")
        raise ProxyRefused


async def _read_header(loop: asyncio.AbstractEventLoop, conn: socket.socket) -> ProxyHeader:
    received = b""
    while True:
        await _readable(loop, conn)
        try:
            peeked = conn.recv(_PEEK, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            continue
        if not peeked:
            raise EOFError
        header = parse_proxy_header(received + peeked)
        if header is not None:
            _consume(conn, header.length - len(received))
            return header
        received += _consume(conn, len(peeked))  # all header: safe to take off the socket


def _consume(conn: socket.socket, count: int) -> bytes:
    data = conn.recv(count)  # peeked already: these bytes are there
    if len(data) != count:
        raise ConnectionError("short read of bytes already received")
    return data


async def _readable(loop: asyncio.AbstractEventLoop, conn: socket.socket) -> None:
    ready: asyncio.Future[None] = loop.create_future()
    fd = conn.fileno()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, wake)
    try:
        await ready
    finally:
        loop.remove_reader(fd)


def _peer_address(conn: socket.socket) -> str:
    if conn.family not in (socket.AF_INET, socket.AF_INET6):
        return ""  # a UNIX socket: a local peer (ProxyTrust trusts it)
    try:
        return str(conn.getpeername()[0])
    except OSError:
        return "?"
