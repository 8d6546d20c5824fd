"""A worker process's life, from the moment the master forks it.

Start-up checklist (order matters): the master's process layer has already reset the
signal dispositions and inherited the umask (preforkd.master.process); here we set the
process title, reseed random, drop privileges, load the app, create the event loop,
serve on the inherited listeners, and report "ready" to the master.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import random
import resource
import socket
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from preforkd import errors
from preforkd.config import Config
from preforkd.heartbeat import HeartbeatSlot
from preforkd.proto.h1 import H1Limits
from preforkd.proto.h2 import H2Settings
from preforkd.worker.pool import AppThreads
from preforkd.worker.proxied import ProxyProtocol
from preforkd.worker.server import Server
from preforkd.worker.state import ConnectionSettings, WorkerState
from preforkd.worker.tls import listener_specs
from preforkd.worker.watchdog import Watchdog, install_stack_dumper
from preforkd.wsgi.environ import ProxyTrust, default_script_name

WSGIApp = Callable[..., Any]

log = logging.getLogger("preforkd.worker")

# The worker writes this line to the master's status pipe once it is serving. One line is
# far below PIPE_BUF, so concurrent writes from several workers never interleave.
READY_MESSAGE = b"ready %d\n"
# ... and this one when it begins a graceful stop of its own accord (--max-requests,
# --request-timeout), so that the master starts its replacement at once.
DRAINING_MESSAGE = b"draining %d\n"


@dataclass(frozen=True)
class WorkerSpec:
    """What the master hands a freshly forked worker."""

    worker_id: int  # slot number 1..N, reused when a worker is replaced
    cfg: Config
    listeners: tuple[socket.socket, ...]
    notify_fd: int  # write end of the master's status pipe
    master_pid: int
    app: WSGIApp | None = None  # the preloaded app (--preload), else loaded from cfg.app
    uid: int | None = None  # drop to this user after fork (--user)
    gid: int | None = None  # and this group (--group)
    heartbeat: HeartbeatSlot | None = None  # its slot in the master's heartbeat table
    generation: int = 1  # the reload generation it belongs to (shown in its title)


def notify_ready(fd: int) -> None:
    os.write(fd, READY_MESSAGE % os.getpid())


def notify_draining(fd: int) -> None:
    with suppress(OSError):  # the master may be gone: that is why we stop
        os.write(fd, DRAINING_MESSAGE % os.getpid())


def run_worker(spec: WorkerSpec) -> int:
    """Run a worker to completion in the forked child; returns its exit code."""
    cfg = spec.cfg
    install_stack_dumper()  # SIGABRT from the master: log every thread's stack, die
    _set_title(f"preforkd: worker {spec.worker_id} [{cfg.app}] gen {spec.generation}")
    random.seed()
    try:
        _drop_privileges(spec)
    except OSError as exc:
        log.error("Worker %d could not drop privileges: %s", spec.worker_id, exc)
        return errors.WORKER_EXIT_BOOT_ERROR
    app = spec.app
    if app is None:
        from preforkd.loading import load_app

        try:
            app = load_app(cfg.app, chdir=cfg.chdir, pythonpath=cfg.pythonpath)
        except errors.AppLoadError as exc:
            if not cfg.reload:
                log.error("Failed to load the application: %s\n%s", exc, exc.details)
                return errors.WORKER_EXIT_APP_LOAD_ERROR
            app = _serve_load_error(exc)
    if cfg.reload:
        from preforkd.devmode import show_tracebacks

        app = show_tracebacks(app)
    try:
        loop = _new_loop(cfg.loop)
    except errors.PreforkdError as exc:
        log.error("%s", exc)
        return errors.WORKER_EXIT_BOOT_ERROR
    try:
        return _serve(spec, app, loop)
    finally:
        loop.close()


def _serve(spec: WorkerSpec, app: WSGIApp, loop: asyncio.AbstractEventLoop) -> int:
    cfg = spec.cfg
    from preforkd.logs import AccessLog, reopen_log_files

    access_log = AccessLog(cfg.access_logfile, cfg.access_log_format)
    executor = AppThreads(
        cfg.threads,
        name=f"preforkd-w{spec.worker_id}",
        call_later=loop.call_later,
        call_soon=loop.call_soon,
    )
    state = WorkerState(
        app=app,
        settings=connection_settings(cfg),
        executor=executor,
        proxy=ProxyTrust(cfg.forwarded_allow_ips),
        call_soon_threadsafe=loop.call_soon_threadsafe,
        call_soon=loop.call_soon,
        app_on_loop=cfg.app_on_loop,
        access_log=access_log,
    )
    max_requests = cfg.max_requests
    if max_requests:
        max_requests += random.randint(0, cfg.max_requests_jitter)
    server = Server(
        loop,
        state,
        listener_specs(cfg, spec.listeners),
        backlog=cfg.backlog,
        master_pid=spec.master_pid,
        max_requests=max_requests,
        handshake_timeout=cfg.handshake_timeout,
        worker_connections=cfg.worker_connections,
        proxy=ProxyProtocol(state.proxy, cfg.header_timeout) if cfg.proxy_protocol else None,
        heartbeat=spec.heartbeat,
    )
    _check_open_file_limit(cfg.worker_connections)

    def reopen() -> None:
        reopen_log_files()
        access_log.reopen()
        install_stack_dumper()  # the error log may have a new descriptor

    watchdog = _report_to_master(spec, state, server)
    server.install_signal_handlers(reopen)

    async def serve() -> None:
        # One run of the loop from start to stop: uvloop drops a signal that arrives while
        # the loop is not running, so a TERM sent right after "ready" must find it running.
        await server.start()
        watchdog.tick()  # the first heartbeat, before "ready"
        notify_ready(spec.notify_fd)
        log.info("Worker %d (pid %d) serving", spec.worker_id, os.getpid())
        await server.serve_until_stopped()

    # The app's import-time objects live as long as the worker: move them out of the
    # collector's sight, so full collections stay short (they show up in p99 otherwise).
    gc.collect()
    gc.freeze()
    loop.run_until_complete(serve())
    watchdog.publish()  # the last counts, which the master adds to its totals (metrics)
    # App threads still running past the graceful timeout cannot be stopped safely; the
    # process exits under them (they are daemonic in effect: we never join them).
    executor.shutdown()
    log.info("Worker %d (pid %d) exiting", spec.worker_id, os.getpid())
    return errors.WORKER_EXIT_OK


def _report_to_master(spec: WorkerSpec, state: WorkerState, server: Server) -> Watchdog:
    """Heartbeat and --request-timeout at each tick; "draining" when a stop begins."""
    watchdog = Watchdog(state, spec.heartbeat, spec.cfg.request_timeout, server.stop, os.getpid())
    title = LiveTitle(spec, state)

    def tick() -> None:
        watchdog.tick()
        title.update()

    state.on_tick = tick
    state.on_draining = lambda: notify_draining(spec.notify_fd)
    return watchdog


def _serve_load_error(exc: errors.AppLoadError) -> WSGIApp:
    """--reload: log the error with its location and serve it as a 500 until fixed."""
    from preforkd.devmode import error_location, load_error_app

    where = error_location(exc)
    log.error(
        "Failed to load the application%s: %s\n%s\nServing the error page until the next change.",
        f" at {where}" if where else "",
        exc,
        exc.details.rstrip(),
    )
    return load_error_app(exc)


def connection_settings(cfg: Config) -> ConnectionSettings:
    return ConnectionSettings(
        limits=H1Limits(
            max_request_line=cfg.limit_request_line,
            max_header_fields=cfg.limit_request_fields,
            max_header_field_size=cfg.limit_request_field_size,
        ),
        keep_alive=cfg.keep_alive,
        header_timeout=cfg.header_timeout,
        send_timeout=cfg.send_timeout,
        h2=H2Settings(
            max_concurrent_streams=cfg.http2_max_concurrent_streams,
            initial_window_size=cfg.http2_initial_window_size,
            max_frame_size=cfg.http2_max_frame_size,
            max_header_list_size=cfg.http2_max_header_list_size,
            max_request_line=cfg.limit_request_line,
            max_field_size=cfg.limit_request_field_size,
        ),
        h2_ping_interval=cfg.http2_ping_interval,
        graceful_timeout=cfg.graceful_timeout,
        # Other processes may run the app at the same time even with --workers 1: after
        # TTIN, and while a reload or a recycled worker overlaps two generations.
        multiprocess=True,
        multithread=cfg.threads > 1,
        script_name=default_script_name(),
    )


# Descriptors a worker needs besides its connections: listeners, pipes, log files, the
# loop's own, and whatever the application opens.
FD_RESERVE = 64


def _check_open_file_limit(worker_connections: int) -> None:
    """Say at start when the open-file limit cannot hold --worker-connections: accept()
    would fail with EMFILE before the cap (that is survived, but better avoided)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < worker_connections + FD_RESERVE:
        log.warning(
            "The open-file limit (%d) is below --worker-connections (%d) plus %d for the "
            "rest of the worker: raise it (ulimit -n, systemd LimitNOFILE=) or lower "
            "--worker-connections",
            soft,
            worker_connections,
            FD_RESERVE,
        )


class LiveTitle:
    """The worker's process title, saying what it is doing (for ps, top, htop):
    ``preforkd: worker 3 [app:application] gen 2 · 12 conns · 3 busy · 1.2k req``.
    Updated from the ticker, at most once a second and only when the text changes."""

    def __init__(self, spec: WorkerSpec, state: WorkerState) -> None:
        self.prefix = f"preforkd: worker {spec.worker_id} [{spec.cfg.app}] gen {spec.generation}"
        self.state = state
        self.shown = ""
        self.next_update = 0.0

    def update(self) -> None:
        state = self.state
        if state.now < self.next_update:
            return
        self.next_update = state.now + 1.0
        title = (
            f"{self.prefix} · {len(state.connections)} conns · {max(0, state.in_flight)} busy"
            f" · {_count(state.requests_served)} req" + (" · draining" if state.draining else "")
        )
        if title != self.shown:
            self.shown = title
            _set_title(title)


def _count(n: int) -> str:
    """1234 -> '1.2k', 5600000 -> '5.6M': short enough for a process title."""
    if n < 1000:
        return str(n)
    if n < 1_000_000:
        return f"{n / 1000:.1f}k"
    return f"{n / 1_000_000:.1f}M"


def _set_title(title: str) -> None:
    try:
        import setproctitle

        setproctitle.setproctitle(title)
    except ImportError:  # pragma: no cover - a declared dependency
        pass


def _drop_privileges(spec: WorkerSpec) -> None:
    if spec.gid is not None and spec.gid != os.getgid():
        os.setgroups([spec.gid])
        os.setgid(spec.gid)
    if spec.uid is not None and spec.uid != os.getuid():
        os.setuid(spec.uid)


def _new_loop(kind: str) -> asyncio.AbstractEventLoop:
    if kind in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if kind == "uvloop":
                raise errors.PreforkdError(
                    "--loop uvloop: uvloop is not installed (pip install 'preforkd[uvloop]')"
                ) from None
        else:
            loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
            asyncio.set_event_loop(loop)
            return loop
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    return loop


__all__ = [
    "DRAINING_MESSAGE", "READY_MESSAGE", "WorkerSpec", "notify_draining", "notify_ready",
    "run_worker",
]  # fmt: skip
