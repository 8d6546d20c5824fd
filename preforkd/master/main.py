"""The master process from start to exit: bind (or inherit), preload, supervise, clean up.

Order at start: take the sockets inherited from an old master (USR2) out of the
environment, resolve --user/--group, set the umask, bind or adopt the listeners,
remember how we were started (:class:`~preforkd.master.reload.Origin`), write the pid
file (a new master started by USR2 writes it only once it serves), preload the app if
asked, check that the master has no thread, create the heartbeat table, install the
signal handlers, and run the arbiter.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

from preforkd import errors
from preforkd.config import Config
from preforkd.control import AUTO, remove_stale
from preforkd.control import socket_path as control_socket_path
from preforkd.devmode import apply_dev
from preforkd.heartbeat import HeartbeatTable
from preforkd.master.arbiter import Arbiter, Context
from preforkd.master.control import open_control_socket
from preforkd.master.endpoint import open_metrics_listener
from preforkd.master.notify import Notifier
from preforkd.master.process import OSProcesses
from preforkd.master.reload import Origin
from preforkd.master.signals import MasterPipes, SignalHandlers
from preforkd.master.sockets import Listener, close_listeners, listener_names, open_listeners
from preforkd.master.startup import (
    Credentials,
    PidFile,
    other_threads,
    preload_app,
    resolve_credentials,
    set_title,
)
from preforkd.master.upgrade import (
    INTERNAL_PREFIX,
    Inheritance,
    adopt_listeners,
    check_binds,
    notify_predecessor,
    take_inheritance,
)
from preforkd.worker.main import WSGIApp
from preforkd.worker.tls import check_tls_settings

log = logging.getLogger("preforkd.master")


def run(cfg: Config, argv: Sequence[str] | None = None) -> int:
    """Run the master until it stops; return the process exit code (preforkd.errors).

    ``argv`` (default ``sys.argv[1:]``) is what a reload re-reads and USR2 re-executes.
    """
    argv = tuple(sys.argv[1:] if argv is None else argv)
    problems = check_tls_settings(cfg)  # load the certificate now, before any worker
    if problems:
        for problem in problems:
            log.error("%s", problem)
        return errors.EXIT_CONFIG_ERROR
    try:
        inheritance = take_inheritance(os.environ)
    except errors.BindError as exc:
        log.error("cannot take over from the old master: %s", exc)
        return errors.EXIT_BIND_ERROR
    cfg = _apply_dev(cfg)
    try:
        credentials = resolve_credentials(cfg.user, cfg.group)
    except errors.ConfigError as exc:
        log.error("%s", exc)
        return errors.EXIT_CONFIG_ERROR
    os.umask(cfg.umask)  # before binding: unix socket files get 0o777 & ~umask
    try:
        if inheritance is not None:
            listeners = adopt_listeners(inheritance)
        else:
            listeners = open_listeners(cfg.binds, cfg.backlog)
    except errors.BindError as exc:
        log.error("cannot listen: %s", exc)
        return errors.EXIT_BIND_ERROR
    environ = {k: v for k, v in os.environ.items() if not k.startswith(INTERNAL_PREFIX)}
    origin = Origin(argv, environ, os.getcwd())
    handed_over = False
    try:
        for listener in listeners:
            log.info("listening on %s%s", listener.name, " (inherited)" if inheritance else "")
        log.info("%s", startup_summary(cfg, listeners))
        if inheritance is not None:
            check_binds(inheritance, cfg.binds)
        code, handed_over = _run_bound(cfg, listeners, credentials, origin, inheritance)
        return code
    finally:
        if handed_over:  # the new master serves these sockets: leave their files alone
            for listener in listeners:
                listener.unlink_path = None
        close_listeners(listeners)


def _apply_dev(cfg: Config) -> Config:
    dev = apply_dev(cfg)
    if dev.log_level != cfg.log_level:
        from preforkd.logs import setup_error_log

        setup_error_log(dev)
    if dev.reload:
        sys.dont_write_bytecode = True  # no stale .pyc after an edit within the same second
    return dev


def startup_summary(cfg: Config, listeners: Sequence[Listener]) -> str:
    """One line that says what this server runs with: what an operator reads first."""
    import platform

    from preforkd import __version__, native
    from preforkd.worker.tls import listener_protocols

    loop = cfg.loop
    if loop in ("auto", "uvloop"):
        from importlib.metadata import PackageNotFoundError, version

        try:
            loop = f"uvloop {version('uvloop')}"
        except PackageNotFoundError:
            loop = "asyncio"
    tls = "TLS" if cfg.certfile else "plain"
    served = ", ".join(
        f"{listener.name} {'+'.join(sorted(listener_protocols(cfg, listener.sock)))} ({tls})"
        for listener in listeners
    )
    accelerators = ", ".join(native.available()) or "none (pure Python)"
    return (
        f"preforkd {__version__} on {platform.python_implementation()} "
        f"{platform.python_version()}, {loop} loop, native: {accelerators}, "
        f"{cfg.workers} worker(s) x up to "
        f"{cfg.threads} threads, app {cfg.app}; serving {served}"
    )


def _run_bound(
    cfg: Config,
    listeners: list[Listener],
    credentials: Credentials,
    origin: Origin,
    inheritance: Inheritance | None,
) -> tuple[int, bool]:
    """(exit code, whether a new master started by USR2 has the sockets now)."""
    pidfile = PidFile(cfg.pidfile, cfg.umask) if cfg.pidfile else None
    if pidfile is not None and inheritance is None:
        try:
            pidfile.write()
        except OSError as exc:
            log.error("cannot write the pid file %s: %s", pidfile.path, exc.strerror or exc)
            return errors.EXIT_CONFIG_ERROR, False
    try:
        set_title(f"preforkd: master [{cfg.app}] {listener_names(listeners)}")
        app: WSGIApp | None = None
        stale: tuple[str, ...] = ()
        if cfg.preload and cfg.reload:
            log.warning("--preload is ignored with --reload: workers load the app themselves")
        elif cfg.preload:
            before = set(sys.modules)
            try:
                app = preload_app(cfg)
            except errors.AppLoadError as exc:
                log.error("%s", f"{exc}\n{exc.details}".rstrip())
                return errors.EXIT_APP_LOAD_ERROR, False
            stale = tuple(m for m in sys.modules if m not in before and _app_module(m))
        if threads := other_threads():
            hint = "; started by the preloaded application?" if cfg.preload else ""
            log.error("cannot fork: the master has threads (%s)%s", ", ".join(threads), hint)
            return (errors.EXIT_APP_LOAD_ERROR if cfg.preload else errors.EXIT_FAILURE), False
        context = Context(app, credentials, origin)
        context.notifier = Notifier.from_environ(os.environ, upgraded=inheritance is not None)
        if inheritance is not None:
            context.on_serving = lambda: _take_over(pidfile, inheritance)
            if inheritance.workers is not None:
                context.workers = inheritance.workers
                log.info("USR2: keeping %d worker(s), as TTIN/TTOU left them", inheritance.workers)
        return _supervise(cfg, listeners, context, stale)
    finally:
        if pidfile is not None:
            pidfile.remove()  # only if it still holds our pid


def _app_module(name: str) -> bool:
    """A module the preload imported that a reload must import afresh."""
    return name != "preforkd" and not name.startswith("preforkd.")


def _take_over(pidfile: PidFile | None, inheritance: Inheritance) -> None:
    """USR2, in the new master: all our workers are ready; the old master may go."""
    if pidfile is not None:
        try:
            pidfile.write()
        except OSError as exc:
            log.error("cannot write the pid file %s: %s", pidfile.path, exc.strerror or exc)
    log.info("serving: telling the old master (pid %d) to stop", inheritance.predecessor)
    notify_predecessor(inheritance.notify_fd)


def _supervise(
    cfg: Config, listeners: list[Listener], context: Context, stale: Sequence[str]
) -> tuple[int, bool]:
    try:
        _open_endpoints(cfg, context)
    except OSError as exc:
        log.error("%s", exc)
        _close_endpoints(context)
        return errors.EXIT_BIND_ERROR, False
    pipes = MasterPipes()
    processes = OSProcesses(close_in_child=pipes.private_fds(), stale_modules=stale)
    context.heartbeats = HeartbeatTable()
    arbiter = Arbiter(cfg, listeners, processes, pipes, context)
    handlers = SignalHandlers(arbiter.commands, pipes.wakeup_w)
    handlers.install()
    try:
        code = arbiter.run_forever()
    except Exception:
        log.exception("unexpected error in the master; stopping the workers")
        arbiter.abandon()
        code = errors.EXIT_FAILURE
    finally:
        handlers.restore()
        arbiter.close()
        _close_endpoints(context)
        pipes.close()
        context.heartbeats.close()
    # A new master (USR2) serves our sockets, or is about to: keep their files.
    return code, arbiter.handed_over or arbiter.successor is not None


def _open_endpoints(cfg: Config, context: Context) -> None:
    """The control socket and the metrics listener; raises OSError saying which failed.

    An "auto" control socket that cannot be made is only worth a warning: the server
    runs, without ``preforkd status``. A path or address asked for is an error.
    """
    path = control_socket_path(cfg.control_socket, os.getpid())
    if path is not None:
        try:
            if cfg.control_socket == AUTO:
                remove_stale(path.parent)
            context.control = open_control_socket(path, private=cfg.control_socket == AUTO)
            log.info("control socket: %s", path)
        except OSError as exc:
            if cfg.control_socket != AUTO:
                raise OSError(f"--control-socket {path}: {exc.strerror or exc}") from None
            why = exc.strerror or exc
            log.warning("no control socket (preforkd status, top): %s: %s", path, why)
    if cfg.metrics_bind:
        try:
            context.metrics = open_metrics_listener(cfg.metrics_bind)
        except OSError as exc:
            raise OSError(f"--metrics-bind {cfg.metrics_bind}: {exc.strerror or exc}") from None
        log.info("metrics: http://%s/metrics", cfg.metrics_bind)


def _close_endpoints(context: Context) -> None:
    if context.control is not None:
        context.control.close()
        context.control = None
    if context.metrics is not None:
        context.metrics.close()
        context.metrics = None
