"""Small sockets the master serves from its own loop: the control socket and /metrics.

Theory of operation. The master has no threads (it forks), so these are served by the
arbiter's selector like its pipes. A readable listener accepts; a readable client adds
to its buffer, and each complete request in it becomes a :class:`Command` on the
arbiter's one queue (``name`` says which endpoint, ``pid`` carries the client's id,
``detail`` the request). The arbiter's handler answers with :meth:`Endpoint.reply`.
Replies are small (a status table, a metrics page): they are sent without blocking, and
the rest, if the socket buffer is full, when the client's socket is writable again.

Every socket here is closed in forked workers (``private_fds``): a worker must not hold
the control socket or a metrics client open.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
from collections.abc import Callable, MutableSet
from dataclasses import dataclass, field

from preforkd.master.signals import Command

log = logging.getLogger("preforkd.master")

MAX_CLIENTS = 32  # more at once: the oldest is dropped (these are tools, not traffic)
MAX_REQUEST = 64 * 1024  # bytes buffered without a complete request: the client is dropped


@dataclass(eq=False)
class Client:
    sock: socket.socket
    ident: int
    inbox: bytearray = field(default_factory=bytearray)
    outbox: bytearray = field(default_factory=bytearray)
    close_after_reply: bool = False


# Splits a client's buffer into complete requests: (requests, rest of the buffer).
Framer = Callable[[bytes], tuple[list[str], bytes]]


class Endpoint:
    """One listening socket and its clients, served by the master's selector."""

    def __init__(self, name: str, sock: socket.socket, framer: Framer) -> None:
        self.name = name  # the Command name of its requests
        self.sock = sock
        self._framer = framer
        self._clients: dict[int, Client] = {}
        self._next_ident = 1
        self._selector: selectors.BaseSelector | None = None
        self._private: MutableSet[int] = set()

    def attach(self, selector: selectors.BaseSelector, private_fds: MutableSet[int]) -> None:
        self.sock.setblocking(False)
        self._selector, self._private = selector, private_fds
        private_fds.add(self.sock.fileno())
        selector.register(self.sock, selectors.EVENT_READ, self._accept)

    def close(self) -> None:
        for client in list(self._clients.values()):
            self._drop(client)
        if self._selector is not None and self.sock.fileno() >= 0:
            self._private.discard(self.sock.fileno())
            with contextlib.suppress(KeyError, ValueError, RuntimeError):  # selector closed
                self._selector.unregister(self.sock)
        self.sock.close()

    def reply(self, ident: int, data: bytes, close: bool = False) -> None:
        """Send ``data`` to client ``ident`` (gone already: nothing happens)."""
        client = self._clients.get(ident)
        if client is None:
            return
        client.outbox += data
        client.close_after_reply = client.close_after_reply or close
        self._flush(client)

    # --- selector callbacks (return commands for the arbiter's queue) --------------------

    def _accept(self) -> list[Command]:
        for _ in range(MAX_CLIENTS):
            try:
                sock, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:  # EMFILE and friends: the master must go on
                log.warning("%s: cannot accept: %s", self.name, exc)
                break
            self._add(sock)
        return []

    def _add(self, sock: socket.socket) -> None:
        assert self._selector is not None
        if len(self._clients) >= MAX_CLIENTS:
            self._drop(next(iter(self._clients.values())))
        sock.setblocking(False)
        client = Client(sock, self._next_ident)
        self._next_ident += 1
        self._clients[client.ident] = client
        self._private.add(sock.fileno())
        self._selector.register(sock, selectors.EVENT_READ, lambda: self._service(client))

    def _service(self, client: Client) -> list[Command]:
        if client.outbox:
            self._flush(client)
        if client.ident not in self._clients:
            return []
        try:
            data = client.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return []
        except OSError:
            data = b""
        if not data:
            self._drop(client)
            return []
        client.inbox += data
        requests, rest = self._framer(bytes(client.inbox))
        client.inbox[:] = rest
        if len(client.inbox) > MAX_REQUEST:
            log.warning("%s: dropping a client: request over %d bytes", self.name, MAX_REQUEST)
            self._drop(client)
            return []
        return [Command(self.name, client.ident, request) for request in requests]

    def _flush(self, client: Client) -> None:
        assert self._selector is not None
        try:
            sent = client.sock.send(client.outbox)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._drop(client)
            return
        del client.outbox[:sent]
        if not client.outbox and client.close_after_reply:
            self._drop(client)
            return
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if client.outbox else 0)
        self._selector.modify(client.sock, events, lambda: self._service(client))

    def _drop(self, client: Client) -> None:
        self._clients.pop(client.ident, None)
        if self._selector is not None:
            self._private.discard(client.sock.fileno())
            with contextlib.suppress(KeyError, ValueError, RuntimeError):
                self._selector.unregister(client.sock)
        client.sock.close()


def split_lines(data: bytes) -> tuple[list[str], bytes]:
    """A framer for line protocols (the control socket: one JSON object per line)."""
    *lines, rest = data.split(b"\n")
    return [line.decode("utf-8", "replace").strip() for line in lines if line.strip()], rest


def split_http_heads(data: bytes) -> tuple[list[str], bytes]:
    """A framer for HTTP/1.x GET requests: the request line of each complete head.

    Only bodiless requests are expected (a scrape is ``GET /metrics``); a body would be
    read as the start of the next head and most likely answered with 400.
    """
    heads = []
    while (end := data.find(b"\r\n\r\n")) >= 0:
        head, data = data[:end], data[end + 4 :]
        heads.append(head.decode("latin-1"))
    return heads, data


def open_metrics_listener(address: str) -> Endpoint:
    """Bind ``--metrics-bind`` (HOST:PORT; an empty host: every interface). Raises OSError.

    SO_REUSEPORT lets a new master started by USR2 bind the same port while the old
    one still serves it; scrapes in that moment reach either of them.
    """
    host, _, port = address.rpartition(":")
    family = socket.AF_INET
    if host.startswith("["):
        host, family = host[1:-1], socket.AF_INET6
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, int(port)))
        sock.listen(16)
    except OSError:
        sock.close()
        raise
    return Endpoint("metrics", sock, split_http_heads)
