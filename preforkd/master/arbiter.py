"""The master process: bind, fork, supervise. Synchronous and single-threaded.

Theory of operation. Everything that happens to the master becomes a
:class:`~preforkd.master.signals.Command` on one queue (signals, and the workers'
"ready" lines on the status pipe). Each turn of the loop (:meth:`Arbiter.run_once`):

1. waits on the signal wake-up fd and the status pipe, with a timeout that ends at the
   next deadline (a stop deadline or a delayed respawn); with no deadline it blocks;
2. handles the queued commands (``handle_<name>``);
3. reaps exited children and logs why each one exited;
4. sends SIGKILL to workers that did not stop by their deadline;
5. reconciles the number of workers: forks the missing ones, retires the excess.

Phases: BOOTING (worker 1 runs alone until it reports ready, so a broken application
is reported once, not by N workers) → RUNNING → STOPPING (no more forks; the loop ends
when the last worker is reaped). A worker exiting with WORKER_EXIT_APP_LOAD_ERROR or
WORKER_EXIT_BOOT_ERROR, or worker 1 dying before it is ready, stops the master with a
distinct exit code instead of being forked again and again.

Signals: TERM graceful stop (a second TERM: quick stop); INT, QUIT quick stop; TTIN
one worker more; TTOU one fewer (never below one); USR1 reopen log files, forwarded to
workers; HUP, USR2 not implemented yet (logged); CHLD only wakes the loop.
"""

from __future__ import annotations

import enum
import logging
import os
import queue
import selectors
import signal
from collections.abc import Callable, Sequence
from queue import SimpleQueue

from preforkd import errors
from preforkd.config import Config
from preforkd.master.process import OSProcesses, Processes
from preforkd.master.signals import Command, MasterPipes, SignalHandlers
from preforkd.master.sockets import Listener, close_listeners, listener_names, open_listeners
from preforkd.master.startup import (
    Credentials,
    PidFile,
    log_reopener,
    other_threads,
    preload_app,
    resolve_credentials,
    set_title,
)
from preforkd.master.workers import Worker, WorkerTable
from preforkd.worker.main import WorkerSpec, WSGIApp

log = logging.getLogger("preforkd.master")

QUICK_STOP_TIMEOUT = 2.0  # INT/QUIT: seconds before the remaining workers get SIGKILL
FORK_RETRY_DELAY = 1.0  # after fork() itself failed (EAGAIN, ENOMEM)
# A worker that dies before it is ready (outside BOOTING) is replaced after a delay
# that doubles with each such death in a row, so a crash at start-up is no fork loop.
FIRST_RESPAWN_DELAY = 0.1
MAX_RESPAWN_DELAY = 10.0


class Phase(enum.Enum):
    BOOTING = "booting"  # worker 1 alone, until it reports ready
    RUNNING = "running"
    STOPPING = "stopping"  # no more forks; done when no worker is left


class Arbiter:
    """Supervises the workers. Call :meth:`start`, then :meth:`run_once` until it
    returns the exit code (:meth:`run_forever` does exactly that)."""

    def __init__(
        self,
        cfg: Config,
        listeners: Sequence[Listener],
        processes: Processes,
        pipes: MasterPipes,
        *,
        app: WSGIApp | None = None,
        credentials: Credentials | None = None,
    ) -> None:
        self.cfg = cfg
        self.processes = processes
        self.pipes = pipes
        self.commands: SimpleQueue[Command] = SimpleQueue()
        self.workers = WorkerTable()
        self.phase = Phase.BOOTING
        self.quick = False  # a quick stop was asked for
        self.exit_code = errors.EXIT_OK
        self.target = cfg.workers  # wanted number of workers (TTIN/TTOU change it)
        self.generation = 1
        self.crash_streak = 0  # workers in a row that died before becoming ready
        self.spawn_after = 0.0  # no fork before this monotonic time
        self._listeners = tuple(listener.sock for listener in listeners)
        self._app = app
        self._credentials = credentials or Credentials()
        self._master_pid = os.getpid()
        self._selector = selectors.DefaultSelector()
        self._selector.register(pipes.wakeup_r, selectors.EVENT_READ, pipes.drain_wakeup)
        self._selector.register(pipes.status_r, selectors.EVENT_READ, pipes.read_status)

    # --- the loop ------------------------------------------------------------------------

    def start(self) -> None:
        log.info("starting %d worker(s), worker 1 first", self.target)
        self._reconcile()

    def run_forever(self) -> int:
        self.start()
        while (code := self.run_once()) is None:
            pass
        return code

    def run_once(self) -> int | None:
        """One turn of the loop; returns the exit code once the master is done."""
        self._wait()
        self._handle_commands()
        self._reap()
        self._kill_overdue()
        self._reconcile()
        if self.phase is Phase.STOPPING and not self.workers:
            log.info("stopped")
            return self.exit_code
        return None

    def close(self) -> None:
        self._selector.close()

    def abandon(self) -> None:
        """The master is failing: ask every worker to stop (they also notice our death)."""
        for worker in self.workers:
            self.processes.kill(worker.pid, signal.SIGTERM)

    def _wait(self) -> None:
        for key, _ in self.processes.wait(self._selector, self._next_timeout()):
            read: Callable[[], list[Command]] = key.data
            for command in read():
                self.commands.put(command)

    def _next_timeout(self) -> float | None:
        if not self.commands.empty():
            return 0.0
        deadlines = self.workers.kill_deadlines()
        if self._missing() > 0:
            deadlines.append(self.spawn_after)
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - self.processes.monotonic())

    def _handle_commands(self) -> None:
        while True:
            try:
                command = self.commands.get_nowait()
            except queue.Empty:
                return
            handler: Callable[[Command], None] | None
            handler = getattr(self, f"handle_{command.name}", None)
            if handler is None:
                log.warning("ignoring unknown command %r", command.name)
            else:
                handler(command)

    # --- commands ------------------------------------------------------------------------

    def handle_ready(self, command: Command) -> None:
        worker = self.workers.get(command.pid)
        if worker is None:
            log.debug("ready message from unknown pid %d", command.pid)
            return
        worker.ready = True
        self.crash_streak = 0
        log.info("%s is ready", worker.label)
        if self.phase is Phase.BOOTING:
            self.phase = Phase.RUNNING
            if self.target > 1:
                log.info("application loaded; starting %d more worker(s)", self.target - 1)

    def handle_term(self, command: Command) -> None:
        if self.phase is not Phase.STOPPING:
            timeout = self.cfg.graceful_timeout
            log.info("TERM: graceful stop, up to %gs for in-flight requests", timeout)
            self._stop_gracefully()
        elif not self.quick:
            log.info("TERM again: stopping quickly")
            self._stop_quickly()

    def handle_int(self, command: Command) -> None:
        log.info("%s: quick stop", command.name.upper())
        self._stop_quickly()

    handle_quit = handle_int

    def handle_ttin(self, command: Command) -> None:
        if self.phase is Phase.STOPPING:
            return
        self.target += 1
        log.info("TTIN: now %d worker(s)", self.target)

    def handle_ttou(self, command: Command) -> None:
        if self.phase is Phase.STOPPING:
            return
        if self.target == 1:
            log.info("TTOU: already down to one worker")
            return
        self.target -= 1
        log.info("TTOU: now %d worker(s)", self.target)

    def handle_usr1(self, command: Command) -> None:
        reopen = log_reopener()
        if reopen is None:
            log.warning("USR1: cannot reopen log files (preforkd.logs is missing)")
        else:
            try:
                reopen()
            except Exception:
                log.exception("USR1: could not reopen the log files")
            else:
                log.info("USR1: log files reopened")
        for worker in self.workers:
            self.processes.kill(worker.pid, signal.SIGUSR1)

    def handle_hup(self, command: Command) -> None:
        # Reload will: re-read the config, bump self.generation, let _reconcile start
        # the new generation, and retire the old workers once the new ones are ready.
        log.warning("HUP: reloading is not implemented yet; ignoring the signal")

    def handle_usr2(self, command: Command) -> None:
        log.warning("USR2: re-executing the master is not implemented yet; ignoring it")

    # --- stopping ------------------------------------------------------------------------

    def _stop_gracefully(self) -> None:
        self.phase = Phase.STOPPING
        for worker in self.workers:
            if not worker.stopping:
                self._retire(worker, signal.SIGTERM, self.cfg.graceful_timeout)

    def _stop_quickly(self) -> None:
        self.phase = Phase.STOPPING
        self.quick = True
        timeout = min(QUICK_STOP_TIMEOUT, self.cfg.graceful_timeout)
        for worker in self.workers:
            if not worker.killed:
                self._retire(worker, signal.SIGQUIT, timeout)

    def _retire(self, worker: Worker, sig: int, timeout: float) -> None:
        """Ask a worker to stop with ``sig``; SIGKILL it if still alive after timeout."""
        self.processes.kill(worker.pid, sig)
        worker.stop_signal = sig
        deadline = self.processes.monotonic() + timeout
        if worker.stop_deadline is None or deadline < worker.stop_deadline:
            worker.stop_deadline = deadline

    def _halt(self, exit_code: int, message: str) -> None:
        """Stop the master because of a failure that a respawn would not fix."""
        log.error("%s", message)
        if self.exit_code == errors.EXIT_OK:
            self.exit_code = exit_code
        if self.phase is not Phase.STOPPING:
            self._stop_gracefully()

    def _kill_overdue(self) -> None:
        for worker in self.workers.overdue(self.processes.monotonic()):
            log.warning("%s did not stop in time; killing it", worker.label)
            self.processes.kill(worker.pid, signal.SIGKILL)
            worker.killed = True

    # --- reaping -------------------------------------------------------------------------

    def _reap(self) -> None:
        for pid, returncode in self.processes.reap():
            worker = self.workers.pop(pid)
            if worker is None:
                log.debug("reaped unknown child %d (returncode %d)", pid, returncode)
                continue
            _log_exit(worker, returncode)
            self._after_exit(worker, returncode)

    def _after_exit(self, worker: Worker, returncode: int) -> None:
        if returncode == errors.WORKER_EXIT_APP_LOAD_ERROR:
            self._halt(errors.EXIT_APP_LOAD_ERROR, "application failed to load, stopping")
        elif returncode == errors.WORKER_EXIT_BOOT_ERROR:
            self._halt(errors.EXIT_WORKER_BOOT_ERROR, "worker failed to boot, stopping")
        elif self.phase is Phase.BOOTING:
            self._halt(
                errors.EXIT_WORKER_BOOT_ERROR,
                f"{worker.label} died before it was ready, stopping",
            )
        elif not worker.ready and not worker.stopping:
            self.crash_streak += 1
            delay = min(FIRST_RESPAWN_DELAY * 2 ** (self.crash_streak - 1), MAX_RESPAWN_DELAY)
            self.spawn_after = self.processes.monotonic() + delay
            log.warning("%s died before it was ready; next fork in %gs", worker.label, delay)

    # --- reconciling ---------------------------------------------------------------------

    def _wanted(self) -> int:
        if self.phase is Phase.STOPPING:
            return 0
        return 1 if self.phase is Phase.BOOTING else self.target

    def _missing(self) -> int:
        if self.phase is Phase.STOPPING:
            return 0
        return self._wanted() - len(self.workers.active(self.generation))

    def _reconcile(self) -> None:
        if self.phase is Phase.STOPPING:
            return
        for worker in self.workers.active(self.generation)[self._wanted() :]:
            log.info("retiring %s", worker.label)
            self._retire(worker, signal.SIGTERM, self.cfg.graceful_timeout)
        while self._missing() > 0 and self.processes.monotonic() >= self.spawn_after:
            if not self._spawn():
                break

    def _spawn(self) -> bool:
        slot = self.workers.free_slot(self.generation)
        spec = WorkerSpec(
            worker_id=slot,
            cfg=self.cfg,
            listeners=self._listeners,
            notify_fd=self.pipes.status_w,
            master_pid=self._master_pid,
            app=self._app,
            uid=self._credentials.uid,
            gid=self._credentials.gid,
        )
        now = self.processes.monotonic()
        try:
            pid = self.processes.fork_worker(spec)
        except OSError as exc:
            log.error("cannot fork worker %d: %s; retrying in %gs", slot, exc, FORK_RETRY_DELAY)
            self.spawn_after = now + FORK_RETRY_DELAY
            return False
        self.workers.add(Worker(slot, pid, self.generation, started=now))
        log.info("booting worker %d (pid %d)", slot, pid)
        return True


def describe_exit(label: str, returncode: int) -> str:
    """'worker 2 (pid 123) exited with code 1', '... was killed by signal SIGSEGV'."""
    if returncode >= 0:
        return f"{label} exited with code {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = str(-returncode)
    text = f"{label} was killed by signal {name}"
    if -returncode == signal.SIGKILL:
        text += " (perhaps out of memory?)"
    return text


def _log_exit(worker: Worker, returncode: int) -> None:
    if worker.killed and returncode == -signal.SIGKILL:
        log.warning("%s was killed after its stop deadline", worker.label)
    elif worker.stopping and returncode in (0, -(worker.stop_signal or 0)):
        log.info("%s stopped", worker.label)
    elif returncode == 0:
        log.info("%s exited with code 0", worker.label)
    else:
        log.error("%s", describe_exit(worker.label, returncode))


# --- the master process --------------------------------------------------------------


def run(cfg: Config) -> int:
    """Run the master until it stops; return the process exit code (preforkd.errors)."""
    try:
        credentials = resolve_credentials(cfg.user, cfg.group)
    except errors.ConfigError as exc:
        log.error("%s", exc)
        return errors.EXIT_CONFIG_ERROR
    os.umask(cfg.umask)  # before binding: unix socket files get 0o777 & ~umask
    try:
        listeners = open_listeners(cfg.binds, cfg.backlog)
    except errors.BindError as exc:
        log.error("cannot listen: %s", exc)
        return errors.EXIT_BIND_ERROR
    try:
        for listener in listeners:
            log.info("listening on %s", listener.name)
        return _run_bound(cfg, listeners, credentials)
    finally:
        close_listeners(listeners)


def _run_bound(cfg: Config, listeners: list[Listener], credentials: Credentials) -> int:
    pidfile = PidFile(cfg.pidfile, cfg.umask) if cfg.pidfile else None
    if pidfile is not None:
        try:
            pidfile.write()
        except OSError as exc:
            log.error("cannot write the pid file %s: %s", pidfile.path, exc.strerror or exc)
            return errors.EXIT_CONFIG_ERROR
    try:
        set_title(f"preforkd: master [{cfg.app}] {listener_names(listeners)}")
        app = None
        if cfg.preload:
            try:
                app = preload_app(cfg)
            except errors.AppLoadError as exc:
                log.error("%s", f"{exc}\n{exc.details}".rstrip())
                return errors.EXIT_APP_LOAD_ERROR
        if threads := other_threads():
            hint = "; started by the preloaded application?" if cfg.preload else ""
            log.error("cannot fork: the master has threads (%s)%s", ", ".join(threads), hint)
            return errors.EXIT_APP_LOAD_ERROR if cfg.preload else errors.EXIT_FAILURE
        return _supervise(cfg, listeners, app, credentials)
    finally:
        if pidfile is not None:
            pidfile.remove()


def _supervise(
    cfg: Config, listeners: list[Listener], app: WSGIApp | None, credentials: Credentials
) -> int:
    pipes = MasterPipes()
    processes = OSProcesses(close_in_child=pipes.private_fds())
    arbiter = Arbiter(cfg, listeners, processes, pipes, app=app, credentials=credentials)
    handlers = SignalHandlers(arbiter.commands, pipes.wakeup_w)
    handlers.install()
    try:
        return arbiter.run_forever()
    except Exception:
        log.exception("unexpected error in the master; stopping the workers")
        arbiter.abandon()
        return errors.EXIT_FAILURE
    finally:
        handlers.restore()
        arbiter.close()
        pipes.close()
