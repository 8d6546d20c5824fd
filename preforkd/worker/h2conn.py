"""The HTTP/2 connection adapter: a thin asyncio.Protocol around the pure H2 core.

Theory of operation. Every stream's request runs its WSGI call on the worker's thread
pool, so the streams of one connection are served in parallel. Each stream is an
:class:`H2Stream`, the response channel shared with HTTP/1.1 (worker/channel.py) with the
core's framing: the app thread's output is queued in the core, which frames it fairly
across streams within the flow-control windows. An app thread's write is acknowledged
(``WriteFlow``) only while its stream has less than ``STREAM_HIGH_WATER`` bytes queued
and the transport is not paused, so a client that reads slowly (or keeps its window
shut) slows only its own streams. Request bodies flow into a bounded InputStream
per stream, and the core reopens the receive window only as the app consumes them.

Output is flushed once per loop iteration (``_schedule_flush``), so the frames of many
streams that answered in the same iteration go out in one write.

The worker's ticker calls ``check_deadline``: streams whose client accepts no data for
``send_timeout`` are cancelled, a header block that takes longer than ``header_timeout``
ends the connection, an idle connection (no streams) is closed after ``keep_alive`` with
GOAWAY, a connection whose streams are silent is probed with PING, and a graceful
shutdown's second GOAWAY is sent if the client does not acknowledge the first promptly.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

from preforkd.errors import ClientDisconnected, RemoteProtocolError
from preforkd.proto.events import (
    ConnectionClosed,
    Data,
    EndOfMessage,
    Event,
    Request,
    StreamReset,
)
from preforkd.proto.h2 import ErrorCodes, H2Connection, H2Settings
from preforkd.worker.channel import Channel, WriteFlow, abort_if_not_reading
from preforkd.worker.state import WorkerState
from preforkd.wsgi.bridge import Head, WSGICycle
from preforkd.wsgi.environ import ConnectionInfo, build_environ
from preforkd.wsgi.input import EMPTY_INPUT, InputStream

log = logging.getLogger("preforkd.worker")

STREAM_HIGH_WATER = 64 * 1024  # queued response bytes per stream before the app waits
SHUTDOWN_ACK_TIMEOUT = 1.0  # RFC 9113 §6.8: a round trip or two for the first GOAWAY
# After the final GOAWAY the connection half-closes and reads (and drops) what the client
# still sends, until it closes or this many seconds pass. Closing a socket with unread
# bytes makes the kernel answer RST, which can destroy the GOAWAY before the client reads
# it: the client then cannot tell which of its streams were processed (RFC 9113 §6.8).
LINGER_TIMEOUT = 2.0
_ERROR_BODY = b"Internal Server Error\n"
_ERROR_HEADERS = [("content-type", "text/plain"), ("content-length", str(len(_ERROR_BODY)))]


class H2Stream(Channel):
    """One request/response on an HTTP/2 connection: the response channel
    (worker/channel.py) with the core's framing. Output is queued in the core, which
    frames it across streams within the flow-control windows."""

    __slots__ = ()

    conn: H2Protocol
    can_sendfile = False

    def __init__(self, conn: H2Protocol, request: Request, window: int) -> None:
        # Buffered body is bounded by the stream's receive window: the core reopens it
        # only as the app consumes (on_consumed). Consumption is reported every half
        # window, the core's WINDOW_UPDATE pace (flow.py): a report of less only costs a
        # cross-thread call, and all is reported before the reader blocks anyway.
        Channel.__init__(
            self,
            conn,
            request,
            InputStream(conn.state.call_soon_threadsafe, self.on_consumed, window, window // 2)
            if request.has_body
            else EMPTY_INPUT,
        )

    @property
    def stream_id(self) -> int:
        return self.request.stream_id

    def _transmit(self, head: Head | None, body: Sequence[bytes], end: bool) -> None:
        core, sid = self.conn.core, self.request.stream_id
        if head is not None:
            core.send_response(sid, head[0], head[1], end_stream=end and not body)
            self.head_sent = True
        last = len(body) - 1
        for i, chunk in enumerate(body):
            core.send_data(sid, chunk, end_stream=end and i == last)
        if end and head is None and not body:
            core.send_data(sid, b"", end_stream=True)
        if end:
            self._finish()
        self.conn.schedule_flush()

    def send_file(
        self, head: Head | None, fd: int, offset: int, count: int, done: Callable[[], None]
    ) -> None:
        raise AssertionError("HTTP/2 streams do not sendfile (can_sendfile is False)")

    def fail(self, head_sent: bool) -> None:
        if self.finished:
            return
        core, sid = self.conn.core, self.request.stream_id
        if not (head_sent or self.head_sent) and core.stream_open(sid):
            core.send_response(sid, "500 Internal Server Error", _ERROR_HEADERS)
            core.send_data(sid, _ERROR_BODY, end_stream=True)
        else:
            core.reset_stream(sid, ErrorCodes.INTERNAL_ERROR)
        self._finish()
        self.conn.schedule_flush()

    def abandon(self, error_code: int | None) -> None:
        """The client reset the stream, or we gave up on it: stop the app's output."""
        if self.cycle is not None:
            self.cycle.disconnect()
        if not self.input.complete:
            self.input.feed_error(ClientDisconnected("stream reset"))
        if not self.finished:
            if error_code is not None:
                self.conn.core.reset_stream(self.request.stream_id, error_code)
            else:
                self.conn.core.reset_stream(self.request.stream_id)
            self._finish()
        self.conn.flow.release_key(self)

    def _finish(self) -> None:
        self.complete(self.conn.state)
        self.conn.stream_finished(self)

    def on_consumed(self, nbytes: int) -> None:
        """The app consumed body bytes (loop thread): reopen the windows that much."""
        conn, core, sid = self.conn, self.conn.core, self.request.stream_id
        if conn.closed:
            return
        if self._continue_due() and core.stream_open(sid):
            core.send_response(sid, "100 Continue", [])
        if nbytes:
            core.acknowledge_received_data(sid, nbytes)
        # The reader reports before it blocks: wake it at once if the client cannot send
        # what it waits for without more consumption (see InputStream.wake).
        self.input.wake(core.receivable(sid))
        conn.schedule_flush()


class H2Protocol(asyncio.BufferedProtocol):
    """The transport reads into the worker's read buffer (``get_buffer``), lent to the
    core for each read: a copy less of every received byte than ``data_received``,
    which still takes the bytes handed over by the HTTP/1.1 side, and EOF."""

    def __init__(
        self,
        state: WorkerState,
        url_scheme: str,
        info: ConnectionInfo,
        template: dict[str, Any],
    ) -> None:
        self.state = state
        self.url_scheme = url_scheme
        self.info = info
        self.environ_template = template
        self.core = H2Connection(state.settings.h2 or H2Settings())
        self.core.date_header = state.date_header
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, H2Stream] = {}
        self.closed = False
        self.flow = WriteFlow()
        self._flush_scheduled = False
        self._idle_since: float | None = state.clock()
        self._last_received = state.clock()
        self._headers_since: float | None = None
        self._drain_started: float | None = None
        self._linger_since: float | None = None  # the final GOAWAY is out; reading to EOF
        self._transport_closed = False

    # --- taking over a transport from H1Protocol (ALPN, preface or Upgrade) --------------
    def adopt(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.state.connections.add(self)
        if self.state.draining:  # switched to HTTP/2 while the worker drains
            self._drain_started = self.state.clock()

    def start(self, initial: bytes = b"") -> None:
        self.core.initiate()
        if initial:
            # The client's first requests usually come with its preface: take them before
            # the first flush, which ends a drain at once if no stream is open.
            self.data_received(initial)
        else:
            self._flush()

    def start_upgrade(
        self, settings_header: str, request: Request, body: bytes, initial: bytes
    ) -> None:
        """h2c: the HTTP/1.1 request (its body already read) becomes stream 1."""
        events = self.core.initiate_upgrade(settings_header, request)
        if request.has_body:
            events += self.core.receive_upgrade_body(body, end=True)
        self._wake_readers(self._dispatch(events))
        self._flush()
        if initial:
            self.data_received(initial)

    # --- asyncio.BufferedProtocol ---------------------------------------------------------
    def get_buffer(self, sizehint: int) -> memoryview:
        return self.core.get_buffer(self.state.read_buffer)

    def buffer_updated(self, nbytes: int) -> None:
        self._received(nbytes)

    def data_received(self, data: bytes) -> None:
        self._received(data)

    def _received(self, data: bytes | int) -> None:
        """Bytes (or EOF, b""), or how many were read into the lent buffer."""
        if self.closed:
            return  # lingering after the final GOAWAY: what the client sends is dropped
        state = self.state
        self._last_received = state.clock()
        try:
            if isinstance(data, int):
                events = self.core.buffer_updated(data, state.now)
            else:
                events = self.core.receive_data(data, state.now)
        except RemoteProtocolError as exc:
            peer = self.info.remote_addr if self.info else "?"
            log.info("HTTP/2 protocol error from %s: %s", peer or "unix socket", exc)
            self._flush()
            self._close_all()
            return
        fed = self._dispatch(events)
        if self.core.peer_goaway and self._drain_started is None:
            self.drain()  # the client is leaving: answer what it asked, then close
        if self.core.receiving_headers:
            if self._headers_since is None:
                self._headers_since = state.clock()
        else:
            self._headers_since = None
        self._flush()
        # Last: a woken app thread preempts the loop thread, only to find the GIL held.
        self._wake_readers(fed)

    def eof_received(self) -> bool:
        self.data_received(b"")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = self._transport_closed = True
        state = self.state
        state.connections.discard(self)
        if state.on_connection_closed is not None:
            state.on_connection_closed()
        for stream in list(self.streams.values()):
            stream.abandon(None)
        self.flow.release_all()

    def pause_writing(self) -> None:
        # Reading pauses too: a client that does not read cannot make us queue replies
        # (PING and SETTINGS acknowledgements) without bound.
        self.flow.pause(self.state.clock())
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.flow.resume()
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()
        self._flush()

    # --- events ---------------------------------------------------------------------------
    def _dispatch(self, events: list[Event]) -> dict[int, H2Stream]:
        """Hand the core's events to the streams; returns the streams that got body
        bytes, whose readers the caller wakes (``_wake_readers``) once it is done.

        A stream's body pieces from one read go to its InputStream together (one lock,
        not one per 16 KiB DATA frame), before any later event of that stream."""
        body: dict[int, list[bytes | memoryview]] = {}
        streams = self.streams
        for event in events:
            kind = type(event)
            if kind is Data:
                sid = event.stream_id  # type: ignore[union-attr]
                pieces = body.get(sid)
                if pieces is None:
                    body[sid] = [event.data]  # type: ignore[union-attr]
                else:
                    pieces.append(event.data)  # type: ignore[union-attr]
            elif kind is Request:
                self._start_stream(event)  # type: ignore[arg-type]
            elif kind is EndOfMessage:
                sid = event.stream_id  # type: ignore[union-attr]
                stream = streams.get(sid)
                if stream is not None:
                    if sid in body:
                        stream.input.feed_all(body.pop(sid))
                    stream.input.feed_eof()
            elif kind is StreamReset:
                sid = event.stream_id  # type: ignore[union-attr]
                body.pop(sid, None)  # the request is abandoned with it
                stream = streams.get(sid)
                if stream is not None:
                    stream.abandon(None)
                else:
                    self.core.reset_stream(sid)
            elif kind is ConnectionClosed:
                body.clear()
                self._close_all()
        fed: dict[int, H2Stream] = {}  # readers are woken after the whole read, if at all
        for sid, pieces in body.items():
            stream = streams.get(sid)
            if stream is not None:
                stream.input.feed_all(pieces)
                fed[sid] = stream
        return fed

    def _wake_readers(self, fed: dict[int, H2Stream]) -> None:
        """Wake the app threads whose read can now return, or that must consume what is
        buffered for the client to send more (InputStream.wake). One wake per read, not
        per network read: each costs thread switches and a handover of the GIL.

        Body bytes reopen the windows only as they are consumed, and the connection window
        is shared: DATA on one stream can shut it under another stream's waiting reader.
        So once it runs low, every waiting reader is looked at, not only those fed now;
        one with bytes buffered then consumes them, which reopens the window (never a
        deadlock of readers each waiting for more than the window lets through). A stream
        with nothing buffered is skipped without taking its lock: a client that keeps the
        window low with many streams open costs little more per read."""
        if not fed:
            return
        core = self.core
        if core.connection_receivable < core.settings.initial_window_size:
            fed = self.streams
        for sid, stream in fed.items():
            stream_input = stream.input
            if stream_input.buffered:  # the loop alone adds to it: no stale zero here
                stream_input.wake(core.receivable(sid))

    def _start_stream(self, request: Request) -> None:
        state = self.state
        self._idle_since = None
        stream = H2Stream(self, request, self.core.settings.initial_window_size)
        self.streams[request.stream_id] = stream
        environ = build_environ(
            request, self.info, stream.input, state.proxy, template=self.environ_template
        )
        stream.cycle = WSGICycle(
            state.app,
            request,
            environ,
            stream,
            state.call_soon_threadsafe,
            inline=state.app_on_loop and not request.has_body,
        )
        state.submit(stream.cycle)

    def stream_finished(self, stream: H2Stream) -> None:
        """The app is done with ``stream`` (ended, failed or abandoned; counted)."""
        if self.streams.pop(stream.stream_id, None) is None:
            return
        if not self.streams:
            self._idle_since = self.state.clock()
            if self._drain_started is not None:
                self.schedule_flush()  # the flush ends the drain once everything is framed

    # --- output and backpressure ----------------------------------------------------------
    def schedule_flush(self) -> None:
        if not self._flush_scheduled and not self.closed:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self.closed or self.transport is None:
            return
        if not self.flow.paused:
            self.core.date_header = self.state.date_header
            data = self.core.data_to_send()
            if data:
                self.transport.write(data)
            self.flow.release(self._may_write)
            if self._drain_started is not None and self._quiet():
                self._goaway_and_close()
                return
        if self.core.closed:
            self.close()
        elif self.core.done:  # the final GOAWAY is out and every stream is over
            self._linger()

    def _quiet(self) -> bool:
        """No stream left: every app call is done and every response fully framed."""
        return not self.streams and self.core.open_streams == 0

    def when_writable(self, stream: H2Stream, done: Callable[[], None]) -> None:
        """Wake the app thread once the transport takes more and its stream has less than
        STREAM_HIGH_WATER queued (worker/channel.py): a client that keeps one stream's
        window shut slows only that stream's writer."""
        if self.closed or (not self.flow.paused and self._may_write(stream)):
            done()
        else:
            self.flow.wait(stream, done)

    def _may_write(self, stream: H2Stream) -> bool:
        return self.core.stream_buffered(stream.stream_id) < STREAM_HIGH_WATER

    # --- closing, draining, timeouts ------------------------------------------------------
    def _close_all(self) -> None:
        for stream in list(self.streams.values()):
            stream.abandon(None)
        self._flush()
        self.close()

    def close(self) -> None:
        if not self._transport_closed and self.transport is not None:
            self.closed = self._transport_closed = True
            self.transport.close()

    def _linger(self) -> None:
        """After the final GOAWAY: half-close, then read and drop until the client closes
        (eof_received) or LINGER_TIMEOUT passes (check_deadline)."""
        transport = self.transport
        if self.closed or transport is None:
            return
        self.closed = True  # nothing more is written or dispatched
        self._linger_since = self.state.clock()
        if transport.can_write_eof():
            transport.write_eof()  # after what is buffered: the client reads the GOAWAY
        if not transport.is_reading():
            transport.resume_reading()  # paused by pause_writing: we must see the EOF

    def abort(self) -> None:
        if self.transport is not None:
            self.closed = True
            self.transport.abort()

    def drain(self) -> None:
        """Graceful stop: let the streams in flight finish, then GOAWAY and close.

        The two-step GOAWAY of RFC 9113 §6.8 (a SHOULD) is held back while streams are in
        flight: clients built on the Python h2 library (httpx among them) treat any GOAWAY
        as the end of the connection and lose the responses still coming. A connection
        that keeps opening streams gets it at half the graceful timeout, so what it has in
        flight then still has the other half to finish."""
        if self._drain_started is None:
            self._drain_started = self.state.clock()
            self._flush()  # ends the drain at once if nothing is in flight

    def _goaway_and_close(self) -> None:
        """Nothing in flight and everything framed: the final GOAWAY (RFC 9113 §6.8), so it
        follows the last DATA frame, then a lingering close."""
        self.core.finish_graceful_shutdown()
        data = self.core.data_to_send()
        if data and self.transport is not None:
            self.transport.write(data)
        self._linger()

    def check_deadline(self, now: float) -> None:
        if self.closed:
            lingering = self._linger_since
            if lingering is not None and now - lingering > LINGER_TIMEOUT:
                self.close()
            return
        settings = self.state.settings
        peer = (self.info.remote_addr if self.info else "?") or "unix socket"
        if self.flow.paused and abort_if_not_reading(self, now):
            return
        for sid in self.core.stalled_streams(now, settings.send_timeout):
            log.info("Stream %d of %s stalled (window closed) for %.0fs; resetting",
                     sid, peer, settings.send_timeout)  # fmt: skip
            stream = self.streams.get(sid)
            if stream is not None:
                stream.abandon(ErrorCodes.CANCEL)
            else:
                self.core.reset_stream(sid, ErrorCodes.CANCEL)
        if self._headers_since is not None and now - self._headers_since > settings.header_timeout:
            log.info("HTTP/2 header block from %s timed out; closing", peer)
            self._close_all()
            return
        self._check_liveness(now)
        self._flush()

    def _check_liveness(self, now: float) -> None:
        settings, core = self.state.settings, self.core
        if self._drain_started is not None:
            # Once quiet, the flush that follows this check ends the drain.
            busy_for = now - self._drain_started
            if core.shutting_down:
                if busy_for > settings.graceful_timeout / 2 + SHUTDOWN_ACK_TIMEOUT:
                    core.finish_graceful_shutdown()
            elif busy_for > settings.graceful_timeout / 2:
                core.start_graceful_shutdown()  # a connection that never goes quiet
            return
        if self._idle_since is not None and not self.streams:
            if now - self._idle_since > settings.keep_alive and self._quiet():
                self._goaway_and_close()
            return
        interval = settings.h2_ping_interval
        if interval and now - self._last_received > interval:
            since = core.ping_outstanding_since
            if since is None:
                core.ping(now)
            elif now - since > interval:
                peer = (self.info.remote_addr if self.info else "?") or "unix socket"
                log.info("HTTP/2 client %s did not answer PING; closing", peer)
                self._close_all()
