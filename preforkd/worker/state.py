"""What every connection of one worker shares: the app, the thread pool, settings, clocks."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import TYPE_CHECKING, Any

from preforkd.logs import AccessLog, AccessRecord
from preforkd.proto.h1 import H1Limits
from preforkd.proto.h2 import H2Settings
from preforkd.worker.h1body import BodyBuffers
from preforkd.worker.pool import AppThreads
from preforkd.worker.stats import RequestStats
from preforkd.wsgi.environ import ProxyTrust

if TYPE_CHECKING:
    from preforkd.wsgi.bridge import WSGICycle


READ_BUFFER_SIZE = 256 * 1024  # uvloop's own read buffer; libuv suggests 64 KiB


@dataclass(frozen=True, slots=True)
class ConnectionSettings:
    """The slice of the configuration a connection needs (a small frozen sub-config)."""

    limits: H1Limits
    keep_alive: float  # seconds an idle connection is kept; 0 disables keep-alive
    header_timeout: float  # seconds a request head may take to arrive
    multiprocess: bool
    multithread: bool
    send_timeout: float = 60.0  # seconds a client may accept no response data
    h2: H2Settings | None = None  # HTTP/2 SETTINGS and abuse limits
    h2_ping_interval: float = 60.0  # PING a connection whose streams are silent this long
    graceful_timeout: float = 30.0  # a draining worker's time for requests in flight
    script_name: str = ""
    body_buffer: int = 256 * 1024  # request-body bytes buffered before reading pauses
    max_discard: int = 1024 * 1024  # unread body bytes we drain to keep a connection


@dataclass
class WorkerState:
    """Mutable per-worker state. Only the event-loop thread changes it."""

    app: Callable[..., Any]
    settings: ConnectionSettings
    executor: AppThreads
    proxy: ProxyTrust
    call_soon_threadsafe: Callable[..., Any]
    access_log: AccessLog | None = None
    connections: set[Any] = field(default_factory=set)
    draining: bool = False
    requests_served: int = 0
    cycles_started: int = 0
    cycles_finished: int = 0  # incremented by app threads, under _lock
    stats: RequestStats = field(default_factory=RequestStats)  # changed under _lock too
    on_request_done: Callable[[], None] | None = None
    # --app-on-loop: bodiless requests run on the loop thread (see WSGICycle.inline).
    app_on_loop: bool = False
    call_soon: Callable[..., Any] | None = None
    on_tick: Callable[[], None] | None = None  # each ticker run: heartbeat, request timeout
    on_draining: Callable[[], None] | None = None  # a graceful stop began: tell the master
    on_connection_closed: Callable[[], None] | None = None  # may resume accepting (accept.Gate)
    # App thread ident -> (time.monotonic() when its current call began, the cycle).
    # Written by app threads (one key each), read by the loop thread with copy().
    running: dict[int, tuple[float, WSGICycle]] = field(default_factory=dict)
    # Coarse clocks, refreshed by the worker's ticker: the hot path reads attributes
    # instead of calling time functions and formatting dates per request.
    now: float = field(default_factory=time.monotonic)
    # The exact clock. A period that a deadline guards (idle, header read, a paused write)
    # starts from it, never from the coarse ``now``: ``now`` may be a tick old, and a
    # deadline counted from it fired up to a tick early. Deadlines are checked at each
    # tick against a fresh ``now``, so they fire late by at most one tick interval.
    clock: Callable[[], float] = time.monotonic
    pid: int = field(default_factory=os.getpid)  # made after fork, in the worker
    date_header: bytes = b""
    # HTTP/2 connections read into this buffer (asyncio.BufferedProtocol), one read at a
    # time on the loop thread, and copy out only each frame's payload: the size of the
    # most uvloop reads at once. Allocated on first use, so a worker that never speaks
    # HTTP/2 does not hold it.
    _read_buffer: bytearray | None = None
    # HTTP/1.1 request bodies are read into these (worker/h1body.py). Made on first use.
    _body_buffers: BodyBuffers | None = None

    def tick(self) -> None:
        self.now = self.clock()
        self.date_header = formatdate(usegmt=True).encode("ascii")
        if self._body_buffers is not None:
            self._body_buffers.trim()  # idle body buffers go once uploads stop

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self.tick()

    @property
    def read_buffer(self) -> bytearray:
        """The buffer HTTP/2 connections lend to each read (see ``_read_buffer``)."""
        if self._read_buffer is None:
            self._read_buffer = bytearray(READ_BUFFER_SIZE)
        return self._read_buffer

    @property
    def body_buffers(self) -> BodyBuffers:
        """The pool of buffers HTTP/1.1 bodies are read into (see ``_body_buffers``)."""
        if self._body_buffers is None:
            self._body_buffers = BodyBuffers()
        return self._body_buffers

    @property
    def in_flight(self) -> int:
        """WSGI calls started and not yet returned (their clients may be gone)."""
        return self.cycles_started - self.cycles_finished

    def submit(self, cycle: WSGICycle) -> None:
        self.cycles_started += 1
        if cycle.inline and self.call_soon is not None:
            # --app-on-loop: on the loop thread, but in its own callback, so a pipeline of
            # requests answered one after another never nests calls.
            self.call_soon(self._run, cycle)
        else:
            self.executor.submit(self._run, cycle)

    def _run(self, cycle: WSGICycle) -> None:
        ident = threading.get_ident()
        self.running[ident] = (time.monotonic(), cycle)
        try:
            cycle.run()
            access_log = self.access_log
            if access_log is not None and access_log.enabled:
                access_log.log(_access_record(cycle, self.pid))
        finally:
            self.running.pop(ident, None)
            with self._lock:
                self.cycles_finished += 1
                self.stats.record(cycle)


def _access_record(cycle: WSGICycle, pid: int) -> AccessRecord:
    request, environ = cycle.request, cycle.environ
    status = cycle.status or "500"
    return AccessRecord(
        remote_addr=environ.get("REMOTE_ADDR", ""),
        remote_port=int(environ["REMOTE_PORT"]) if environ.get("REMOTE_PORT") else None,
        method=request.method,
        target=request.target,
        http_version=request.http_version,
        status=int(status[:3]),
        response_bytes=cycle.bytes_sent,
        request_headers=request.headers,
        response_headers=cycle.response_headers,
        start_time=cycle.start_time,
        duration=cycle.duration,
        pid=pid,
    )
