"""The HTTP/1.1 connection adapter: a thin asyncio.Protocol around the pure H1 core.

Theory of operation. Bytes from the socket go to :class:`H1Connection`, which returns
events. A Request event starts an :class:`Exchange`: its body flows into a bounded
:class:`InputStream` and its WSGI call runs on the worker's thread pool. Responses are
written in request order: while an exchange is in progress, events of pipelined requests
wait in ``_pending`` and reading is paused, so a client cannot make us buffer more than
one read's worth of pipelined requests (RFC 9112 §9.3.2).

Reading is paused for two reasons, tracked separately: the body buffer is full (the app
reads slower than the client sends), or requests are waiting behind the current one.
Writing backpressure comes from the transport (pause_writing/resume_writing): an app
thread's handoff is acknowledged only once the transport is below its high-water mark.
:class:`Exchange` is the response channel shared with HTTP/2 (worker/channel.py, with
its ``WriteFlow``) plus HTTP/1.1's framing.

Timeouts: one deadline per connection, checked by the worker's ticker: the header timeout
while a request head is arriving (slowloris), the keep-alive timeout while idle.
"""

from __future__ import annotations

import asyncio
import asyncio.selector_events
import logging
import os
import socket
import ssl
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from preforkd.errors import (
    BadRequestBody,
    ClientDisconnected,
    RemoteProtocolError,
)
from preforkd.proto.events import ConnectionClosed, Data, EndOfMessage, Event, Request
from preforkd.proto.h1 import H1Connection
from preforkd.proto.h1_response import CONTINUE_RESPONSE, ResponseFramer, error_response
from preforkd.proto.negotiate import (
    GOAWAY_PROTOCOL_ERROR,
    Start,
    classify,
    h2c_settings,
    is_http1_request,
    valid_http2_settings,
)
from preforkd.worker import h1body
from preforkd.worker.channel import Channel, WriteFlow, abort_if_not_reading
from preforkd.worker.h1body import BODY_READ_MIN, BodyReader
from preforkd.worker.state import WorkerState
from preforkd.wsgi.bridge import Head, WSGICycle
from preforkd.wsgi.environ import ConnectionInfo, build_environ, environ_template
from preforkd.wsgi.input import EMPTY_INPUT, InputStream

log = logging.getLogger("preforkd.worker")

_IDLE, _HEAD, _BUSY = 0, 1, 2  # what the connection's deadline is guarding
_COPY_MAX = 16 * 1024  # a body piece at least this large is written without joining
# First bytes that can only be HTTP/1.1 (see data_received's shortcut past the sniffing).
_COMMON_REQUESTS = (b"GET ", b"POST ", b"HEAD ", b"PUT ", b"DELETE ", b"OPTIONS ", b"PATCH ")


class Exchange(Channel):
    """One request and its response on an HTTP/1.1 connection: the response channel
    (worker/channel.py) with HTTP/1.1 framing. Responses go out in request order, so at
    most one exchange per connection is writing."""

    __slots__ = ("body_complete", "framer", "wake_pending")

    conn: H1Protocol

    def __init__(self, conn: H1Protocol, request: Request, framer: ResponseFramer) -> None:
        # Channel.__init__'s fields, assigned here: one call fewer per request on the
        # HTTP/1.1 hot path (measured with bench/channel_micro.py).
        state = conn.state
        self.conn = conn
        self.request = request
        self.input = (
            InputStream(
                state.call_soon_threadsafe,
                self._on_consumed,
                state.settings.body_buffer,
                windowed=False,  # TCP holds the client back: fewer reports (wsgi/input.py)
            )
            if request.has_body
            else EMPTY_INPUT
        )
        self.cycle = None
        self.head_sent = self.continue_sent = self.finished = False
        self.framer = framer
        self.body_complete = not request.has_body
        self.wake_pending = False  # a wake of the reading app thread is scheduled

    def wake_reader(self) -> None:
        """(Loop thread, at the end of a turn.) Wake the app thread if it waits for
        body bytes that this turn's reads brought (wsgi/input.py decides)."""
        self.wake_pending = False
        # Only if its read can now return: the client keeps sending until the buffer is
        # over high water (then reading pauses and it is woken at once), so it needs no
        # wake to take and report pieces, as an HTTP/2 reader may (the receive windows).
        self.input.wake(receivable=self.conn.state.settings.body_buffer)

    @property
    def can_sendfile(self) -> bool:
        return self.conn.can_sendfile

    def _transmit(self, head: Head | None, body: Sequence[bytes], end: bool) -> None:
        framer = self.framer
        parts = [framer.head(head[0], head[1])] if head is not None else []
        self.head_sent = True
        for chunk in body:
            framed = framer.body(chunk)
            if framed:
                parts.append(framed)
        if end:
            last = framer.end()
            if last:
                parts.append(last)
        self.conn.write(parts)
        if end:
            self.conn.response_complete(self)

    def send_file(
        self, head: Head | None, fd: int, offset: int, count: int, done: Callable[[], None]
    ) -> None:
        if self.conn.closed:
            self._gone(done)
            return
        self.send(head, (), False, None)
        if self.request.method == "HEAD" or count == 0 or self.conn.closed:
            done()
            return
        task = asyncio.ensure_future(self.conn.sendfile(self, fd, offset, count))
        task.add_done_callback(lambda _: done())

    def fail(self, head_sent: bool) -> None:
        conn = self.conn
        if conn.closed:
            self.finished = True
            return
        if head_sent or self.head_sent:
            self.finished = True
            conn.close()  # the client sees a truncated response, not a wrong one
            return
        status = conn.protocol_error.status if conn.protocol_error else 500
        conn.write([error_response(status, conn.state.date_header)])
        conn.response_complete(self, keep_alive=False)

    def _on_consumed(self, nbytes: int) -> None:
        """The app consumed body bytes (or is waiting for the first ones)."""
        conn = self.conn
        if conn.closed or conn.current is not self:
            return
        if self._continue_due():
            conn.write([CONTINUE_RESPONSE])
        if not self.input.over_high_water:
            conn.resume_reading("body")


class H1Protocol(asyncio.Protocol):
    # While a long Content-Length body arrives, the transport's protocol (worker/h1body.py).
    _body_reader: BodyReader | None = None

    def __init__(
        self,
        state: WorkerState,
        url_scheme: str = "http",
        protocols: frozenset[str] = frozenset(("h1",)),
        listening: Listening | None = None,
    ) -> None:
        self.state = state
        self.url_scheme = url_scheme
        self.protocols = protocols
        self.listening = listening
        self.parser = H1Connection(state.settings.limits)
        self.transport: asyncio.Transport | None = None
        self.info: ConnectionInfo | None = None
        self.current: Exchange | None = None
        self._pending: deque[Event] = deque()
        self._read_pauses: set[str] = set()
        self.flow = WriteFlow()
        self.closed = False
        self.can_sendfile = False
        self.protocol_error: RemoteProtocolError | None = None
        self._peer_eof = False
        self._discarded = 0
        self.deadline: float | None = None
        self._deadline_kind = _IDLE
        self._head_started = False  # bytes of a request head have arrived since the last one
        self._error_after_pending = False  # answer protocol_error once the queue is served
        # The first bytes of a cleartext connection that may speak HTTP/2 (None: decided).
        self._sniff: bytes | None = b"" if "h2" in protocols and url_scheme == "http" else None
        self._upgrade: tuple[Request, str, bytearray] | None = None  # an h2c upgrade's body
        # --proxy-protocol: the client's address and port from the PROXY header.
        self.proxied_client: tuple[str, str] | None = None

    # --- asyncio.Protocol -----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing asyncio.Transport.
        self.transport = transport  # type: ignore[assignment]
        state = self.state
        state.connections.add(self)
        listening = self.listening
        if listening is None:  # a protocol made outside a Server (tests)
            listening = self.listening = listening_for(
                transport.get_extra_info("socket"), self.url_scheme, self.protocols, state
            )
        self.can_sendfile = listening.can_sendfile
        if self.proxied_client is not None:  # behind a TCP proxy: the client it names
            remote_addr, remote_port = self.proxied_client
        elif listening.inet:
            peer = transport.get_extra_info("peername")
            remote_addr, remote_port = str(peer[0]), str(peer[1])
        else:  # a UNIX socket: no peer address (PEP 3333 allows empty strings)
            remote_addr = remote_port = ""
        https = self.url_scheme == "https"
        extra = _tls_environ(transport) if https else None  # type: ignore[arg-type]
        self.info = ConnectionInfo(
            listening.server_name,
            listening.server_port,
            remote_addr,
            remote_port,
            self.url_scheme,
            state.proxy.trusts(remote_addr),
            extra,
        )
        template = listening.template.copy()
        template["REMOTE_ADDR"] = remote_addr
        template["REMOTE_PORT"] = remote_port
        if extra:
            template.update(extra)
        self.environ_template = template
        self._set_deadline(_HEAD)
        if https:
            ssl_object = transport.get_extra_info("ssl_object")
            alpn = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
            if alpn == "h2":
                self._switch_to_h2()
            elif alpn is None and "h1" not in self.protocols:
                self.close()  # an HTTP/2-only listener, and the client did not offer h2

    def data_received(self, data: bytes) -> None:
        if self._sniff is not None:
            if not self._sniff and data.startswith(_COMMON_REQUESTS) and "h1" in self.protocols:
                # A request line's start, not a prefix of the HTTP/2 preface ("PRI * ..."):
                # HTTP/1.1, decided without classify() (the first read of most connections).
                self._sniff = None
            else:
                data = self._sniff_preface(data)
            if not data:
                return
        if self.current is None:
            self._head_started = True
        try:
            events = self.parser.receive_data(data)
        except RemoteProtocolError as exc:
            self._on_protocol_error(exc)
            return
        self._dispatch_all(events)
        if self._head_started and self._deadline_kind == _IDLE and not self.closed:
            # Bytes of a new request head arrived and did not complete it: from now on the
            # header timeout applies. (A head that came whole has started its request, which
            # cleared _head_started: no clock read for it.)
            self._set_deadline(_HEAD)

    def _dispatch_all(self, events: list[Event]) -> None:
        upgrade = False
        for event in events:
            if self._upgrade is not None:
                if self._collect_upgrade(event):
                    return  # now HTTP/2: the rest belongs to the new protocol
                continue
            if type(event) is Request and event.upgrade is not None:
                if self._accept_h2c(event):
                    continue
                upgrade = True
            if self._pending:
                self._pending.append(event)  # keep order behind requests already waiting
            else:
                self._route(event)
        if upgrade and not self.closed:
            # RFC 9110 §7.8: a server may ignore Upgrade. The request is answered over
            # HTTP/1.1 and whatever follows it is parsed as HTTP/1.1 again.
            try:
                events = self.parser.resume_after_declined_upgrade()
            except RemoteProtocolError as exc:
                self._on_protocol_error(exc)
                return
            self._dispatch_all(events)

    # --- switching to HTTP/2 -----------------------------------------------------------------
    def _sniff_preface(self, data: bytes) -> bytes:
        """Bytes to parse as HTTP/1.1, or b"" (switched to HTTP/2, closed, or undecided)."""
        assert self._sniff is not None
        data = self._sniff + data
        verdict = classify(data)
        if verdict is Start.UNDECIDED:
            self._sniff = data
            return b""
        self._sniff = None
        if verdict is Start.HTTP2:
            self._switch_to_h2(initial=data)
            return b""
        if verdict is Start.BROKEN:
            self.write([GOAWAY_PROTOCOL_ERROR])
            self.close()
            return b""
        if "h1" not in self.protocols:  # an HTTP/2-only listener
            http1 = is_http1_request(data)
            if http1 is None:
                self._sniff = data  # the first line is not complete yet
            elif http1:
                self.write([error_response(505, self.state.date_header)])
                self.close()
            else:
                self.write([GOAWAY_PROTOCOL_ERROR])  # RFC 9113 §3.4: an invalid preface
                self.close()
            return b""
        return data

    def _accept_h2c(self, request: Request) -> bool:
        """Take an "Upgrade: h2c" request (RFC 7540 §3.2) if we can answer it on HTTP/2.

        Its body is read over HTTP/1.1 first and must fit the body buffer; a larger one is
        served over HTTP/1.1 rather than held in memory (RFC 9110 §7.8: Upgrade may be
        ignored)."""
        settings = h2c_settings(request)
        if (
            settings is None
            or not valid_http2_settings(settings)
            or "h2" not in self.protocols
            or self.url_scheme != "http"
            or self.current is not None
            or self._pending
            or (request.content_length or 0) > self.state.settings.body_buffer
            or self.state.draining
        ):
            return False
        self._upgrade = (request, settings, bytearray())
        self._set_deadline(_BUSY)
        return True

    def _collect_upgrade(self, event: Event) -> bool:
        """Gather the upgrading request's body; switch at its end (True once switched)."""
        assert self._upgrade is not None
        request, settings, body = self._upgrade
        if type(event) is Data:
            body += event.data
            return False
        if type(event) is not EndOfMessage:
            return False
        self._upgrade = None
        self._switch_to_h2(
            upgrade=(settings, request, bytes(body)), initial=self.parser.trailing_data
        )
        return True

    def _switch_to_h2(
        self, initial: bytes = b"", upgrade: tuple[str, Request, bytes] | None = None
    ) -> None:
        from preforkd.worker.h2conn import H2Protocol

        transport = self.transport
        assert transport is not None and self.info is not None
        h2 = H2Protocol(self.state, self.url_scheme, self.info, self.environ_template)
        self.state.connections.discard(self)
        transport.set_protocol(h2)
        h2.adopt(transport)
        if upgrade is not None:
            h2.start_upgrade(*upgrade, initial)
        else:
            h2.start(initial)

    def eof_received(self) -> bool:
        try:
            events = self.parser.receive_data(b"")
        except RemoteProtocolError as exc:
            self._peer_eof = True  # a body cut short by the client's EOF: it went away
            self._on_protocol_error(exc)
            return True
        self._peer_eof = True
        self._dispatch_all(events)
        # Keep the transport open for writing while a response is still being produced.
        return self.current is not None and not self.closed

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._body_reader = None  # (it gave its buffer back before calling us)
        state = self.state
        state.connections.discard(self)
        if state.on_connection_closed is not None:
            state.on_connection_closed()
        current = self.current
        if current is not None:
            if not current.body_complete:
                current.input.feed_error(ClientDisconnected("client closed the connection"))
            if current.cycle is not None and not current.finished:
                current.cycle.disconnect()
        self._pending.clear()
        self.flow.release_all()

    def pause_writing(self) -> None:
        self.flow.pause(self.state.clock())

    def resume_writing(self) -> None:
        self.flow.resume()
        self.flow.release()

    # --- events ---------------------------------------------------------------------------
    def _dispatch(self, event: Event) -> None:
        if self._pending:
            self._pending.append(event)  # keep order behind requests already waiting
        else:
            self._route(event)

    def _route(self, event: Event) -> None:
        current = self.current
        if current is None:
            if type(event) is Request:
                self._start(event)
            elif type(event) is ConnectionClosed:
                self.close()
        elif type(event) is Request:
            self._pending.append(event)  # a pipelined request waits its turn
            self.pause_reading("pipeline")
        elif type(event) is Data:
            self._on_body(current, event.data)
        elif type(event) is EndOfMessage:
            current.body_complete = True
            if current.input is not EMPTY_INPUT:
                current.input.feed_eof()
            if current.finished:
                self._next()

    def _on_body(self, current: Exchange, data: bytes | memoryview) -> None:
        if (
            self._body_reader is None
            and self.parser.body_remaining >= BODY_READ_MIN
            and not self.closed
            and h1body.ENABLED
        ):
            self._read_body_into_buffers()
        if current.finished:
            # The app answered without reading the whole body: drain it, within reason.
            self._discarded += len(data)
            if self._discarded > self.state.settings.max_discard:
                self.close()
            return
        body = current.input
        if body.feed(data, wake=False):
            self.pause_reading("body")
            body.wake()  # no more of it is read until the app has taken some
        elif not current.wake_pending:
            # The app thread is woken once this loop turn's reads are in, not for each:
            # a wake-up costs a thread switch, and uvloop reads a ready socket up to 32
            # times a turn (more data for the app per wake, fewer wakes per body).
            call_soon = self.state.call_soon
            if call_soon is None:
                body.wake()
            else:
                current.wake_pending = True
                call_soon(current.wake_reader)

    def _read_body_into_buffers(self) -> None:
        """The rest of this body is read into the worker's body buffers, not copied into
        a new bytes object per read (worker/h1body.py)."""
        transport = self.transport
        assert transport is not None
        self._body_reader = reader = BodyReader(self, self.state.body_buffers)
        transport.set_protocol(reader)

    def body_received(self, data: bytes | memoryview) -> None:
        """(BodyReader) Bytes read into a body buffer (a view, or a copy of a short read):
        the counted body's, as its reads stop at the body's end; anything past it (after
        a head read between requests) is parsed as usual."""
        parser = self.parser
        remaining = parser.body_remaining
        rest = b""
        if len(data) > remaining:
            data, rest = data[:remaining], bytes(data[remaining:])
        if data:
            self._dispatch_all(parser.receive_body(data))
        if rest and not self.closed:
            self.data_received(rest)

    def buffered_read_done(self, body_ended: bool) -> None:
        """(BodyReader, after each read) Go on reading into body buffers while a body is
        arriving, and right after a read that ended one: a client that uploads once
        often uploads again, and the next head is then read there too, leaving its body
        in place. Otherwise the transport comes back here: heads arrive as bytes."""
        reader = self._body_reader
        if reader is None or self.closed or self.parser.body_remaining:
            return
        reader.give_back()  # between requests a connection holds no buffer
        if body_ended:
            return
        self._body_reader = None
        transport = self.transport
        if transport is not None and transport.get_protocol() is reader:
            transport.set_protocol(self)

    def _start(self, request: Request) -> None:
        state = self.state
        if state.draining or state.settings.keep_alive <= 0:
            request.keep_alive = False
        self._deadline_kind = _BUSY  # no deadline while the app works (inline _set_deadline)
        self.deadline = None
        self._head_started = False
        self._discarded = 0
        exchange = Exchange(self, request, ResponseFramer(request, state.date_header))
        self.current = exchange
        assert self.info is not None
        environ = build_environ(
            request, self.info, exchange.input, state.proxy, template=self.environ_template
        )
        cycle = WSGICycle(
            state.app,
            request,
            environ,
            exchange,
            state.call_soon_threadsafe,
            inline=state.app_on_loop and not request.has_body,
        )
        exchange.cycle = cycle
        state.submit(cycle)

    def response_complete(self, exchange: Exchange, keep_alive: bool | None = None) -> None:
        """The last bytes of ``exchange``'s response are written (loop thread)."""
        state = self.state
        exchange.complete(state)
        if keep_alive is None:
            keep_alive = exchange.framer.keep_alive
        if self.protocol_error is not None and not self._pending and keep_alive:
            if self._error_after_pending:
                self.write([error_response(self.protocol_error.status, state.date_header)])
            self.close()
            return
        # A draining worker does not close here after a response that promised keep-alive
        # (its head was framed before the drain began): the client may already be sending
        # its next request on this connection. That request is answered with
        # "Connection: close"; an idle connection ends at its keep-alive deadline.
        if not keep_alive or (self._peer_eof and not self._pending):
            self.close()
            return
        if exchange.body_complete:
            self._next()
            return
        # The body is still arriving: drain the rest, unless the client may be waiting for
        # a 100 it never got (it might never send the body) or the rest is too large.
        request = exchange.request
        remaining = (request.content_length or 0) - exchange.input.bytes_read
        if (request.expect_continue and not exchange.continue_sent) or (
            remaining > self.state.settings.max_discard
        ):
            self.close()
            return
        exchange.input.feed_error(ClientDisconnected("response already sent"))
        self.resume_reading("body")

    @property
    def busy(self) -> bool:
        """A request is in progress (set and cleared as events are routed)."""
        return self.current is not None

    def _next(self) -> None:
        """Move on to the next request, if one is already waiting."""
        self.current = None
        self._set_deadline(_IDLE)
        pending = self._pending
        while pending and not self.closed:
            if self.busy and type(pending[0]) is Request:
                break  # the one after next waits too
            self._route(pending.popleft())
        if not pending and self._read_pauses:
            self.resume_reading("pipeline")

    def _on_protocol_error(self, exc: RemoteProtocolError) -> None:
        # Requests parsed before the bad bytes (in the same read) are answered first.
        for event in getattr(exc, "events", ()):
            self._dispatch(event)
        peer = self.info.remote_addr if self.info else "?"
        log.info("Bad request from %s: %s (%d)", peer or "unix socket", exc, exc.status)
        self.protocol_error = exc
        current = self.current
        if current is None and not self._pending:
            self.write([error_response(exc.status, self.state.date_header)])
            self.close()
            return
        self.pause_reading("error")
        if current is not None and not current.body_complete:
            # The request in progress is broken: the app's reads fail, and if it has not
            # answered yet, fail() answers with this error's status.
            error = (
                ClientDisconnected(str(exc))
                if self._peer_eof
                else BadRequestBody(str(exc), exc.status)
            )
            current.input.feed_error(error)
        else:
            # The bad bytes are a request of their own, after those already received:
            # they get their answer once those are served.
            self._error_after_pending = True

    # --- flow control and IO -----------------------------------------------------------
    def write(self, parts: list[bytes]) -> None:
        transport = self.transport
        if transport is None or self.closed:
            return
        if len(parts) == 1:
            transport.write(parts[0])
        elif parts:
            if len(parts[-1]) < _COPY_MAX:
                transport.write(b"".join(parts))  # one small send
            else:
                # A large body is not copied once more to join it to its head: uvloop
                # sends the pieces with one writev (asyncio's loop joins them itself).
                transport.writelines(parts)

    def when_writable(self, exchange: Exchange, done: Callable[[], None]) -> None:
        """Wake the app thread once the transport takes more (worker/channel.py)."""
        if self.flow.paused and not self.closed:
            self.flow.wait(exchange, done)
        else:
            done()

    def pause_reading(self, reason: str) -> None:
        if not self._read_pauses and self.transport is not None and not self.closed:
            self.transport.pause_reading()
        self._read_pauses.add(reason)

    def resume_reading(self, reason: str) -> None:
        if reason in self._read_pauses:
            self._read_pauses.discard(reason)
            if not self._read_pauses and self.transport is not None and not self.closed:
                self.transport.resume_reading()

    async def sendfile(self, exchange: Exchange, fd: int, offset: int, count: int) -> None:
        transport = self.transport
        assert transport is not None
        loop = asyncio.get_running_loop()
        try:
            with open(os.dup(fd), "rb") as file:
                sent = await loop.sendfile(transport, file, offset, count)
            if sent < count:
                raise OSError(f"file shrank while sending: {sent} of {count} bytes")
            exchange.framer.count_sent(sent)
        except (OSError, RuntimeError) as exc:
            log.info("sendfile for %s failed: %s", exchange.request.target, exc)
            self.close()
            if exchange.cycle is not None:
                exchange.cycle.disconnect()

    def close(self) -> None:
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.close()  # flushes what is buffered, then closes

    def abort(self) -> None:
        """Close without flushing: for a peer that will never take what is buffered."""
        if self.transport is not None:
            self.closed = True
            self.transport.abort()

    # --- timeouts and draining (called by the worker) ----------------------------------
    def _set_deadline(self, kind: int) -> None:
        # Counted from the exact clock: never early (see WorkerState.clock).
        self._deadline_kind = kind
        settings = self.state.settings
        if kind == _HEAD:
            self.deadline = self.state.clock() + settings.header_timeout
        elif kind == _IDLE:
            self.deadline = self.state.clock() + settings.keep_alive
        else:
            self.deadline = None

    def check_deadline(self, now: float) -> None:
        if self.flow.paused and abort_if_not_reading(self, now):
            return
        if self.deadline is None or now < self.deadline or self.closed:
            return
        if self._deadline_kind == _HEAD and self._head_started:
            peer = self.info.remote_addr if self.info else "?"
            log.info("Request head from %s timed out; closing", peer or "unix socket")
            # RFC 9110 §15.5.9: a server may send 408 before closing an unused connection.
            self.write([error_response(408, self.state.date_header)])
        self.close()

    def drain(self) -> None:
        """Graceful stop. Nothing is closed here: a connection may hold a request we have
        not read yet (closing it would drop that request). A request that arrives now is
        answered with "Connection: close", and so is the one in progress if its head is
        not framed yet; an idle connection ends at its keep-alive or header deadline, well
        within the graceful timeout."""
        current = self.current
        if current is not None and not current.head_sent:
            current.request.keep_alive = False


@dataclass(frozen=True, slots=True)
class Listening:
    """What all connections of one listener share, worked out once per listener."""

    inet: bool  # TCP (a peer address to read) rather than a UNIX socket
    server_name: str
    server_port: str
    can_sendfile: bool
    template: dict[str, Any]  # environ keys every request on this listener shares


def listening_for(
    sock: Any, scheme: str, protocols: frozenset[str], state: WorkerState
) -> Listening:
    inet = sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6)
    if inet:
        local = sock.getsockname()
        server_name, server_port = str(local[0]), str(local[1])
    else:
        server_name, server_port = "localhost", "443" if scheme == "https" else "80"
    # sendfile(2) needs a plain socket and a loop that implements loop.sendfile natively
    # (asyncio's selector loops; uvloop does not): elsewhere the file is streamed.
    can_sendfile = (
        scheme == "http"
        and sock is not None
        and isinstance(asyncio.get_running_loop(), asyncio.selector_events.BaseSelectorEventLoop)
    )
    settings = state.settings
    base = ConnectionInfo(server_name, server_port, "", "", scheme, False)
    template = environ_template(
        base,
        multithread=settings.multithread,
        multiprocess=settings.multiprocess,
        script_name=settings.script_name,
    )
    return Listening(inet, server_name, server_port, can_sendfile, template)


def _tls_environ(transport: asyncio.Transport) -> dict[str, str]:
    """What the app may want to know of the TLS session: version, cipher, client cert."""
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return {}
    extra = {"HTTPS": "on", "SSL_PROTOCOL": ssl_object.version() or ""}
    cipher = ssl_object.cipher()
    if cipher:
        extra["SSL_CIPHER"] = cipher[0]
    der = ssl_object.getpeercert(binary_form=True)
    if der:  # only present when verified (--cert-reqs optional/required)
        extra["SSL_CLIENT_CERT"] = ssl.DER_cert_to_PEM_cert(der)
        subject = ssl_object.getpeercert().get("subject", ())
        extra["SSL_CLIENT_S_DN"] = ",".join(
            f"{key}={value}" for rdn in subject for key, value in rdn
        )
        extra["SSL_CLIENT_VERIFY"] = "SUCCESS"
    return extra
