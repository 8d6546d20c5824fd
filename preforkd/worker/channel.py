"""One response channel for both protocols, and the write backpressure behind it.

Theory of operation. An application thread hands each piece of its response to the loop
(``call_soon_threadsafe``) and then blocks until the loop calls the ``done`` callback it
passed along (see wsgi/bridge.py). On the loop thread the piece reaches a :class:`Channel`,
the loop-thread end of one response: HTTP/1.1's ``Exchange`` and HTTP/2's ``H2Stream``
subclass it and only say how bytes are framed (``_transmit``) and how a failed response
ends (``fail``). Everything else is written once, here:

* a response whose connection is gone, or that is already over (the client reset the
  stream, the app failed), takes nothing more: ``done`` is called at once and the app's
  next write raises ``ClientDisconnected`` (the bridge checks ``cycle.disconnected``);
* a head that breaks the protocol's field rules (``LocalProtocolError``) fails the
  response rather than the connection;
* ``done`` waits in the connection's :class:`WriteFlow` while the transport is paused
  (its buffer is over the high-water mark: asyncio's ``pause_writing``) or, on HTTP/2,
  while the stream has too much queued in front of its flow-control window. So a slow
  client slows exactly the threads that write to it, and memory stays bounded;
* a client that takes no data for ``--send-timeout`` is cut off (``WriteFlow.overdue``);
* 100 Continue goes out once, when the app first asks for the body (RFC 9110 §10.1.1).

Nothing here blocks, and nothing here knows a protocol's bytes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from preforkd.errors import LocalProtocolError

if TYPE_CHECKING:
    from preforkd.proto.events import Request
    from preforkd.worker.state import WorkerState
    from preforkd.wsgi.bridge import Head, WSGICycle
    from preforkd.wsgi.input import InputStream

log = logging.getLogger("preforkd.worker")

Done = Callable[[], None]


class WriteFlow:
    """Write backpressure of one connection: whether the transport is paused, since when,
    and which app threads wait to write (each as the ``done`` that wakes it)."""

    __slots__ = ("_waiters", "paused", "paused_since")

    def __init__(self) -> None:
        self.paused = False
        self.paused_since: float | None = None
        self._waiters: list[tuple[object, Done]] = []

    def pause(self, now: float) -> None:
        """The transport's buffer is over its high-water mark (asyncio pause_writing)."""
        self.paused = True
        self.paused_since = now

    def resume(self) -> None:
        """Below the low-water mark again; the caller then releases who may write."""
        self.paused = False
        self.paused_since = None

    def wait(self, key: object, done: Done) -> None:
        """Hold ``done`` (the writer ``key``) until a release lets it go."""
        self._waiters.append((key, done))

    def release(self, ready: Callable[[Any], bool] | None = None) -> None:
        """Wake the writers that may write again: all, or those ``ready`` accepts. Nobody
        while the transport is paused."""
        if not self._waiters or self.paused:
            return
        if ready is None:
            self.release_all()
            return
        keep = []
        for key, done in self._waiters:
            if ready(key):
                done()
            else:
                keep.append((key, done))
        self._waiters = keep

    def release_key(self, key: object) -> None:
        """Wake ``key``'s writers whatever the state: its response is over."""
        if self._waiters:
            keep = []
            for waiting, done in self._waiters:
                if waiting is key:
                    done()
                else:
                    keep.append((waiting, done))
            self._waiters = keep

    def release_all(self) -> None:
        """Wake every writer (the connection is gone: their next write fails)."""
        waiters, self._waiters = self._waiters, []
        for _, done in waiters:
            done()

    def overdue(self, now: float, timeout: float) -> float | None:
        """How long the transport has been paused, if longer than ``timeout``: the client
        takes no data, and only aborting the connection frees the memory it holds."""
        since = self.paused_since
        if since is not None and now - since > timeout:
            return now - since
        return None


class Channel:
    """The loop-thread end of one response (the bridge's ResponseChannel).

    ``conn`` is the connection adapter: it has ``closed``, ``state`` (WorkerState) and
    ``when_writable(channel, done)``. Subclasses implement ``_transmit`` and ``fail``."""

    __slots__ = ("conn", "continue_sent", "cycle", "finished", "head_sent", "input", "request")

    conn: Any  # H1Protocol or H2Protocol (no import: they import this module)

    def __init__(self, conn: Any, request: Request, body: InputStream) -> None:
        self.conn = conn
        self.request = request
        self.input = body
        self.cycle: WSGICycle | None = None
        self.head_sent = False
        self.continue_sent = False
        self.finished = False  # sent in full, failed or abandoned: takes nothing more

    def send(self, head: Head | None, body: Sequence[bytes], end: bool, done: Done | None) -> None:
        if self.conn.closed or self.finished:
            self._gone(done)
            return
        try:
            self._transmit(head, body, end)
        except LocalProtocolError as exc:
            request = self.request
            log.error("Invalid response to %s %s: %s", request.method, request.target, exc)
            self.fail(self.head_sent)
            self._gone(done)
            return
        if done is not None:
            self.conn.when_writable(self, done)

    def _transmit(self, head: Head | None, body: Sequence[bytes], end: bool) -> None:
        """Frame and write (or queue) the head, if any, then ``body``; ``end`` ends the
        response (and must lead to ``complete``). Raises LocalProtocolError for a bad head."""
        raise NotImplementedError

    def fail(self, head_sent: bool) -> None:
        """The app failed: answer 500 if no head was sent, else abort the response."""
        raise NotImplementedError

    def complete(self, state: WorkerState) -> None:
        """The response is over: count it, and break the channel <-> cycle <-> input
        cycles so that all three are freed by refcount, not by the garbage collector."""
        self.finished = True
        self.cycle = None
        self.input.detach()
        state.requests_served += 1
        if state.on_request_done is not None:
            state.on_request_done()

    def _gone(self, done: Done | None) -> None:
        """The client is gone: fail the app's next write, and do not keep it waiting."""
        if self.cycle is not None:
            self.cycle.disconnect()
        if done is not None:
            done()

    def _continue_due(self) -> bool:
        """The app asks for the body of a request that expects 100-continue: answer 100
        now, once, unless the final response has begun (RFC 9110 §10.1.1)."""
        if self.request.expect_continue and not self.continue_sent and not self.head_sent:
            self.continue_sent = True
            return True
        return False


def abort_if_not_reading(conn: Any, now: float) -> bool:
    """Abort ``conn`` if its client has taken no data for ``--send-timeout`` (True then).

    Its transport has been paused all that time, with the app threads that write to it
    blocked; aborting (no flush: the client would not take it) frees them and the buffer."""
    stuck = conn.flow.overdue(now, conn.state.settings.send_timeout)
    if stuck is None:
        return False
    peer = (conn.info.remote_addr if conn.info else "?") or "unix socket"
    log.info("Client %s took no data for %.0fs; aborting", peer, stuck)
    conn.abort()
    return True
