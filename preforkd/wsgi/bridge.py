"""The WSGI bridge: runs one request's application call on an app thread.

Threading invariant (as in the h2 project's asyncio WSGI example): only the event-loop
thread touches sockets and protocol state. The app thread hands each piece of output to
the loop with ``call_soon_threadsafe`` and then waits until the loop has taken it and the
transport can accept more, so a slow client slows the app that writes to it and memory
stays bounded. The last piece (with the end of the response) is handed over without
waiting: nothing more will follow it, and that saves a thread round trip per request.

The loop-thread side of a response is a :class:`ResponseChannel`, implemented by each
protocol adapter; the bridge does not know whether HTTP/1.1 or HTTP/2 carries it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from preforkd.errors import BadRequestBody, ClientDisconnected
from preforkd.proto.events import Headers, Request
from preforkd.wsgi.environ import FileWrapper

log = logging.getLogger("preforkd.error")

WSGIApp = Callable[..., Iterable[bytes]]
Head = tuple[str, Headers]
StartResponse = Callable[..., Callable[[bytes], None]]

# Status codes whose responses never carry content (RFC 9110 §6.4.1, §15.3.5, §15.4.5):
# the bridge must not add a Content-Length for them.
_NO_CONTENT_PREFIXES = ("1", "204", "304")
_BAD_HEADER_CHARS = frozenset("\r\n\0")


class ResponseChannel(Protocol):
    """The loop-thread end of one response. Every method runs on the event loop."""

    def send(
        self, head: Head | None, body: Sequence[bytes], end: bool, done: Callable[[], None] | None
    ) -> None:
        """Send the head (first call only), then body pieces; ``end`` closes the response.
        ``done`` is called once the data is taken and the transport can accept more, or
        at once if the connection is gone."""

    def send_file(
        self, head: Head | None, fd: int, offset: int, count: int, done: Callable[[], None]
    ) -> None:
        """Like send() for ``count`` bytes of a file (sendfile where possible); the head
        declares a Content-Length that covers them. Never ends the response."""

    def fail(self, head_sent: bool) -> None:
        """The app failed: answer 500 if no head was sent, else abort the response."""

    @property
    def can_sendfile(self) -> bool: ...


# Statuses and (name, value) pairs that passed _check_headers: apps repeat them endlessly.
# Bounded like the other memo tables; set operations are atomic, so app threads share it.
_checked: set[object] = set()
_CHECKED_MAX = 2048


def _check_headers(status: str, headers: Headers) -> None:
    """PEP 3333 types, and no CR/LF/NUL that could split the response."""
    checked = _checked
    if type(status) is not str or status not in checked:
        _check_status(status)
    if type(headers) is not list:
        raise TypeError(f"headers must be a list, not {type(headers).__name__}")
    for item in headers:
        # A pair seen and checked before (the common case). The exact types are checked
        # again: a str subclass may compare equal to a checked str.
        if (
            type(item) is tuple
            and len(item) == 2
            and type(item[0]) is str
            and type(item[1]) is str
            and item in checked
        ):
            continue
        _check_item(item)


def _check_status(status: str) -> None:
    if type(status) is not str or len(status) < 3 or not status[:3].isdigit():
        raise ValueError(f"invalid status {status!r}: expected e.g. '200 OK'")
    if _BAD_HEADER_CHARS.intersection(status):
        raise ValueError(f"invalid status {status!r}")
    if len(_checked) < _CHECKED_MAX:
        _checked.add(status)


def _check_item(item: object) -> None:
    if type(item) is not tuple or len(item) != 2:
        raise TypeError(f"header {item!r} is not a (name, value) tuple")
    name, value = item
    if type(name) is not str or type(value) is not str:
        raise TypeError(f"header {item!r}: name and value must be str")
    if _BAD_HEADER_CHARS.intersection(value) or _BAD_HEADER_CHARS.intersection(name):
        raise ValueError(f"header {name!r} contains CR, LF or NUL")
    if len(_checked) < _CHECKED_MAX:
        _checked.add(item)


class WSGICycle:
    """One request/response exchange, from the app thread's point of view."""

    __slots__ = (
        "_call_soon",
        "_channel",
        "_head_sent",
        "_headers",
        "_lock",
        "_status",
        "app",
        "bytes_sent",
        "disconnected",
        "duration",
        "environ",
        "finished",
        "inline",
        "request",
        "start_time",
    )

    def __init__(
        self,
        app: WSGIApp,
        request: Request,
        environ: dict[str, Any],
        channel: ResponseChannel,
        call_soon_threadsafe: Callable[..., Any],
        inline: bool = False,
    ) -> None:
        self.app = app
        self.request = request
        self.environ = environ
        self._channel = channel
        # inline: the app runs on the loop thread itself (--app-on-loop): hand-offs are
        # plain calls, and writes cannot wait for the transport (there is no other thread
        # to block), so a slow client's response is buffered.
        self.inline = inline
        self._call_soon = _call_now if inline else call_soon_threadsafe
        self._status: str | None = None
        self._headers: Headers = []
        self._head_sent = False
        # Made, already acquired, by the first handoff that waits (most responses make one
        # final handoff that does not wait, and never need it); released by the loop each
        # time a handoff is taken.
        self._lock: threading.Lock | None = None
        self.disconnected = False  # set by the loop thread when the client goes away
        self.finished = False  # the final handoff (end or fail) has been made
        self.bytes_sent = 0
        self.start_time = time.time()
        self.duration = 0.0

    @property
    def status(self) -> str | None:
        return self._status

    @property
    def response_headers(self) -> Headers:
        return self._headers

    # --- PEP 3333 callables ------------------------------------------------------------
    def start_response(
        self, status: str, headers: Headers, exc_info: Any = None
    ) -> Callable[[bytes], None]:
        if exc_info:
            try:
                if self._head_sent:
                    # Too late to change the response: re-raise for the app (PEP 3333).
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self._status is not None:
            raise AssertionError("start_response() called twice without exc_info")
        _check_headers(status, headers)
        self._status = status
        self._headers = headers
        return self.write

    def write(self, data: bytes) -> None:
        """The legacy write() callable: sends at once and blocks until the loop took it."""
        if type(data) is not bytes:
            data = _as_bytes(data)
        if data:
            self._handoff([data], end=False)

    # --- running the app ----------------------------------------------------------------
    def run(self) -> None:
        """Call the app and send its response (app thread)."""
        started = time.perf_counter()
        try:
            self._run_app()
        finally:
            self.duration = time.perf_counter() - started

    def _run_app(self) -> None:
        try:
            result = self.app(self.environ, self.start_response)
        except BaseException as exc:  # the app's bug must not take the worker down
            self._failed(exc)
            return
        try:
            self._send_result(result)
        except BaseException as exc:
            self._failed(exc)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                try:
                    close()
                except BaseException:
                    log.exception("Error closing the response of %s", self._describe())

    def _send_result(self, result: Iterable[bytes]) -> None:
        if type(result) is list or type(result) is tuple:
            # The common case: the whole body is known. One handoff, no waiting.
            if len(result) == 1 and type(result[0]) is bytes:  # one piece: no list walks
                self._finish([result[0]] if result[0] else [], total_known=True)
                return
            chunks = [c if type(c) is bytes else _as_bytes(c) for c in result]
            self._finish([c for c in chunks if c], total_known=True)
            return
        if isinstance(result, FileWrapper) and self._send_file(result):
            self._finish([])
            return
        for chunk in result:
            if type(chunk) is not bytes:
                chunk = _as_bytes(chunk)
            if chunk:
                self._handoff([chunk], end=False)
            elif self.disconnected:
                raise ClientDisconnected("client went away")
        self._finish([])

    def _send_file(self, wrapper: FileWrapper) -> bool:
        """Send a regular file with sendfile(2) where the channel can; False to iterate it.

        Either way the response gets a Content-Length: the app's (capped at what the file
        holds) or, when it gave none, the rest of the file, which we declare ourselves."""
        fd = wrapper.fileno()
        if fd is None or self._head_sent or self._status is None:
            return False
        offset = os.lseek(fd, 0, os.SEEK_CUR)
        available = max(0, os.fstat(fd).st_size - offset)
        declared = self._declared_length()
        if declared is None:
            if self._status.startswith(_NO_CONTENT_PREFIXES):
                return False
            self._headers = [*self._headers, ("Content-Length", str(available))]
            count = available
        else:
            count = min(declared, available)
        if not self._channel.can_sendfile or self.inline:
            return False
        head = self._take_head()
        self.bytes_sent += count
        lock = self._handoff_lock()
        self._call(self._channel.send_file, head, fd, offset, count, self.release)
        lock.acquire()
        if self.disconnected:
            raise ClientDisconnected("client went away")
        return True

    def _declared_length(self) -> int | None:
        for name, value in self._headers:
            if name.lower() == "content-length":
                return int(value) if value.strip().isdigit() else None
        return None

    def _take_head(self) -> Head | None:
        if self._head_sent:
            return None
        if self._status is None:
            raise AssertionError("the application sent a body before calling start_response()")
        self._head_sent = True
        return (self._status, self._headers)

    def _handoff(self, chunks: list[bytes], *, end: bool) -> None:
        if self.disconnected:
            raise ClientDisconnected("client went away")
        head = self._take_head()
        for chunk in chunks:
            self.bytes_sent += len(chunk)
        if self.inline:
            self._channel.send(head, chunks, end, None)
        else:
            lock = self._handoff_lock()
            self._call(self._channel.send, head, chunks, end, self.release)
            lock.acquire()
        if self.disconnected:
            raise ClientDisconnected("client went away")

    def _finish(self, chunks: list[bytes], total_known: bool = False) -> None:
        if self._status is None:
            raise AssertionError("the application returned without calling start_response()")
        if total_known and not self._head_sent:
            self._add_content_length(chunks)
        head = self._take_head()
        for chunk in chunks:
            self.bytes_sent += len(chunk)
        self.finished = True
        self._call(self._channel.send, head, chunks, True, None)

    def _add_content_length(self, chunks: list[bytes]) -> None:
        """A body known in full gets a Content-Length rather than chunked framing."""
        status = self._status or ""
        if status.startswith(_NO_CONTENT_PREFIXES):
            return
        for name, _ in self._headers:
            lname = name.lower()
            if lname == "content-length" or lname == "transfer-encoding":
                return
        self._headers = [*self._headers, ("Content-Length", str(sum(map(len, chunks))))]

    def _failed(self, exc: BaseException) -> None:
        if isinstance(exc, BadRequestBody):
            log.info("Bad request body in %s: %s (%d)", self._describe(), exc, exc.status)
        elif isinstance(exc, ClientDisconnected) or self.disconnected:
            log.info("Client went away during %s", self._describe())
        elif self.finished:
            log.error("Error after the response to %s was complete", self._describe(), exc_info=exc)
        else:
            log.error("Error handling request %s", self._describe(), exc_info=exc)
        if self.finished:
            return
        self.finished = True
        if not self._head_sent:
            self._status = "500 Internal Server Error"
            self._headers = []
        self._call(self._channel.fail, self._head_sent)

    def _call(self, fn: Callable[..., Any], *args: Any) -> None:
        try:
            self._call_soon(fn, *args)
        except RuntimeError:  # the loop is closed: the worker is going down
            self.disconnected = True
            raise ClientDisconnected("server shutting down") from None

    def _describe(self) -> str:
        return f"{self.request.method} {self.request.target}"

    def _handoff_lock(self) -> threading.Lock:
        """The lock a waiting handoff blocks on, held until the loop releases it."""
        lock = self._lock
        if lock is None:
            lock = self._lock = threading.Lock()
            lock.acquire()
        return lock

    # --- loop side ----------------------------------------------------------------------
    def release(self) -> None:
        """Wake the app thread waiting on a handoff (loop thread)."""
        lock = self._lock
        if lock is not None and lock.locked():
            lock.release()

    def disconnect(self) -> None:
        """The client is gone (loop thread): fail further writes, wake a waiting writer."""
        self.disconnected = True


def _call_now(fn: Callable[..., Any], *args: Any) -> None:
    fn(*args)


def _as_bytes(data: Any) -> bytes:
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"the application must produce bytes, not {type(data).__name__}")
