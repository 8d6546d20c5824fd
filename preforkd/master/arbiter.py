"""The master process: bind, fork, supervise. Synchronous and single-threaded.

Theory of operation. Everything that happens to the master becomes a
:class:`~preforkd.master.signals.Command` on one queue (signals; the workers' lines on
the status pipe; the file watcher's and a new master's lines on their pipes). Each turn
of the loop (:meth:`Arbiter.run_once`):

1. waits on those pipes, with a timeout that ends at the next deadline (a stop
   deadline, a delayed respawn, a heartbeat due, a watcher restart); with none it blocks;
2. handles the queued commands (``handle_<name>``), then a reload if one was asked for;
3. reaps exited children and logs why each one exited;
4. sends SIGABRT to workers whose event loop went silent (``--timeout``), SIGKILL to
   workers that did not stop by their deadline;
5. reconciles: forks the missing workers of the current generation, retires the
   excess, and lets a fully ready new generation take over from the old one.

A reload (HUP, --reload) starts generation N+1 next to N (worker 1 first), retires N
once N+1 is all ready, and abandons N+1 if one of its workers dies before it is ready.
At start, such a death stops the master (exit code: app load error, boot error); later,
a replacement is retried with back-off, up to --max-boot-failures (EXIT_CRASH_LOOP).
The sequences are in the README (Supervision).

Signals: TERM graceful stop (again: quick stop); INT, QUIT quick stop; HUP reload; TTIN,
TTOU one worker more, fewer (never below one); USR1 reopen the log files, forwarded to
workers (to a booting worker once it is ready: USR1 would kill it before); USR2 a new
master on the same sockets (preforkd.master.upgrade); CHLD wakes.
"""

from __future__ import annotations

import logging
import os
import queue
import selectors
import signal
from collections.abc import Callable, Sequence
from queue import SimpleQueue

from preforkd import __version__, errors
from preforkd.config import Config
from preforkd.master.control import (
    SIGNAL_REQUESTS,
    encode_reply,
    parse_request,
    rss_bytes,
    worker_row,
)
from preforkd.master.metrics import Tallies, WorkerSample, metrics_reply, render
from preforkd.master.process import Processes
from preforkd.master.reload import apply_logging, reread_config
from preforkd.master.signals import Command, MasterPipes
from preforkd.master.sockets import Listener, listener_names
from preforkd.master.startup import Context, reopen_master_logs, set_title
from preforkd.master.stats import ABORT_GRACE, HeartbeatMonitor
from preforkd.master.upgrade import Successor
from preforkd.master.watcher import WatcherHandle
from preforkd.master.workers import (
    Fallback,
    Phase,
    Worker,
    WorkerTable,
    boot_failure,
    describe_exit,
    log_exit,
)
from preforkd.worker.main import WorkerSpec

__all__ = ["Arbiter", "Context", "Phase", "describe_exit"]

log = logging.getLogger("preforkd.master")

QUICK_STOP_TIMEOUT = 2.0  # INT/QUIT: seconds before the remaining workers get SIGKILL
FORK_RETRY_DELAY = 1.0  # after fork() itself failed (EAGAIN, ENOMEM)
# A worker that dies before it is ready (outside BOOTING) is replaced after a delay
# that doubles with each such death in a row, so a crash at start-up is no fork loop.
FIRST_RESPAWN_DELAY = 0.1
MAX_RESPAWN_DELAY = 10.0


class Arbiter:
    """Supervises the workers. Call :meth:`start`, then :meth:`run_once` until it
    returns the exit code (:meth:`run_forever` does exactly that)."""

    def __init__(
        self,
        cfg: Config,
        listeners: Sequence[Listener],
        processes: Processes,
        pipes: MasterPipes,
        context: Context | None = None,
    ) -> None:
        self.cfg = cfg
        self.processes = processes
        self.pipes = pipes
        self.context = context or Context()
        self.commands: SimpleQueue[Command] = SimpleQueue()
        self.workers = WorkerTable()
        self.phase = Phase.BOOTING
        self.quick = False  # a quick stop was asked for
        self.exit_code = errors.EXIT_OK
        # Wanted number of workers: TTIN/TTOU change it, and USR2 hands it on (Context).
        self.target = self.context.workers or cfg.workers
        self.generation = 1  # the generation being kept at self.target workers
        self.proven = False  # a worker of self.generation has been ready
        self.fallback: Fallback | None = None  # serving while self.generation boots
        self.crash_streak = 0  # workers in a row that died before becoming ready
        self.spawn_after = 0.0  # no fork before this monotonic time
        self.handed_over = False  # USR2: a new master serves; we stop for it
        self._last_generation = 1
        self._reload_reason: str | None = None
        self._listeners = tuple(listeners)
        self._title_prefix = f"preforkd: master [{cfg.app}] {listener_names(self._listeners)}"
        self._title = ""
        self._socks = tuple(listener.sock for listener in listeners)
        self._master_pid = os.getpid()
        self._selector = selectors.DefaultSelector()
        self._selector.register(pipes.wakeup_r, selectors.EVENT_READ, pipes.drain_wakeup)
        self._selector.register(pipes.status_r, selectors.EVENT_READ, pipes.read_status)
        self.successor: Successor | None = None
        self.watcher = WatcherHandle(processes, self._selector, self._master_pid)
        self.monitor = HeartbeatMonitor(self.context.heartbeats)
        self.tallies = Tallies()  # restarts, boot failures, exited workers' counts
        self.started = self.processes.monotonic()
        private_fds: set[int] = getattr(processes, "private_fds", set())
        for endpoint in self.context.endpoints():
            endpoint.attach(self._selector, private_fds)

    # --- the loop ------------------------------------------------------------------------

    def start(self) -> None:
        log.info("starting %d worker(s), worker 1 first", self.target)
        if self.cfg.reload and self.context.origin is not None:
            self.watcher.start(self.cfg, self.context.origin)
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
        if self._reload_reason is not None and self.phase is not Phase.STOPPING:
            self._reload(self._reload_reason)
        self._reload_reason = None
        self._reap()
        self._check_heartbeats()
        self._kill_overdue()
        self._reconcile()
        self._tell_supervisor()
        if self.phase is Phase.STOPPING and not self.workers:
            log.info("stopped")
            return self.exit_code
        return None

    def close(self) -> None:
        self.watcher.stop()
        if self.successor is not None:
            self.successor.close()
        self._selector.close()

    def abandon(self) -> None:
        """The master is failing: ask every worker to stop (they also notice our death)."""
        for worker in self.workers:
            self.processes.kill(worker.pid, signal.SIGTERM)
        self.watcher.stop()

    def _wait(self) -> None:
        for key, _ in self.processes.wait(self._selector, self._next_timeout()):
            read: Callable[[], list[Command]] = key.data
            for command in read():
                self.commands.put(command)

    def _next_timeout(self) -> float | None:
        if not self.commands.empty():
            return 0.0
        deadlines = self.workers.kill_deadlines()
        deadlines += self.monitor.deadlines(self.workers, self.cfg.timeout)
        if self._missing() > 0:
            deadlines.append(self.spawn_after)
        if (restart := self.watcher.restart_at) is not None:
            deadlines.append(restart)
        if (ping := self.context.notifier.watchdog_at) is not None:
            deadlines.append(ping)
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
        log.info("%s is ready", worker.label)
        if worker.reopen_pending:  # a USR1 came while it was booting
            worker.reopen_pending = False
            self.processes.kill(worker.pid, signal.SIGUSR1)
        if worker.generation != self.generation or worker.stopping:
            return
        self.crash_streak = 0
        if not self.proven:
            self.proven = True
            if self.phase is Phase.BOOTING:
                self.phase = Phase.RUNNING
            if self.target > 1:
                log.info("application loaded; starting %d more worker(s)", self.target - 1)

    def handle_draining(self, command: Command) -> None:
        """A worker stops of its own accord (--max-requests, --request-timeout)."""
        worker = self.workers.get(command.pid)
        if worker is None or worker.stopping:
            return
        log.info("%s is draining; starting its replacement", worker.label)
        self._retire(worker, signal.SIGTERM, self.cfg.graceful_timeout, "recycle")

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
        reopen_master_logs()
        for worker in self.workers:
            if worker.ready:
                self.processes.kill(worker.pid, signal.SIGUSR1)
            else:
                # Until it serves, a worker has no USR1 handler and the default action
                # would kill it (at start: "died before it was ready", exit 5). It gets
                # the signal once it reports ready.
                worker.reopen_pending = True

    def handle_hup(self, command: Command) -> None:
        self._reload_reason = "HUP"  # several in one turn: one reload

    def handle_changed(self, command: Command) -> None:
        log.info("reload: changed: %s", command.detail)
        self._reload_reason = self._reload_reason or "reload"

    def handle_usr2(self, command: Command) -> None:
        if self.phase is not Phase.RUNNING or self.fallback is not None:
            busy = "booting" if self.phase is Phase.RUNNING else self.phase.value
            log.warning("USR2: ignored while %s", busy)
        elif self.successor is not None:
            log.warning("USR2: ignored: the new master (pid %d) is starting", self.successor.pid)
        elif self.context.origin is None:
            log.warning("USR2: ignored: this master does not know how it was started")
        else:
            self.successor = Successor.start(
                self.processes,
                self._selector,
                self.context.origin,
                self._listeners,
                self.cfg,
                self.target,
            )

    def handle_successor_serving(self, command: Command) -> None:
        if self.successor is None or self.phase is Phase.STOPPING:
            return
        pid = self.successor.pid
        log.info("USR2: the new master (pid %d) is serving; stopping this one gracefully", pid)
        self.handed_over = True
        self.context.notifier.hand_over()
        self.successor.close()
        self.successor = None
        set_title(f"preforkd: old master [{self.cfg.app}] (handed over)")
        self._stop_gracefully()

    # --- generations ---------------------------------------------------------------------

    def _reload(self, why: str) -> None:
        origin = self.context.origin
        cfg = self.cfg if origin is None else reread_config(origin, self.cfg, why)
        if cfg is None:
            return
        if self.proven and self.fallback is None:
            self.fallback = Fallback(self.generation, self.cfg, self.target)
        else:  # the generation still booting is replaced by the new one
            self._retire_generation(self.generation, "superseded by a newer reload")
        if cfg.workers != self.cfg.workers:
            self.target = cfg.workers
        apply_logging(self.cfg, cfg)
        old, self._last_generation = self.generation, self._last_generation + 1
        self.generation, self.cfg, self.proven = self._last_generation, cfg, False
        self.crash_streak, self.spawn_after = 0, 0.0
        log.info("%s: starting generation %d (replacing %d)", why, self.generation, old)
        if origin is not None and cfg.reload:
            self.watcher.update(cfg, origin)

    def _check_takeover(self) -> None:
        fallback = self.fallback
        if fallback is None or not self.proven:
            return
        if self.workers.ready_count(self.generation) < self.target:
            return
        self.fallback = None
        ready = f"generation {self.generation} is ready ({self.target} worker(s))"
        log.info("%s; retiring the older generation", ready)
        for worker in self.workers:
            if worker.generation != self.generation and not worker.stopping:
                self._retire(worker, signal.SIGTERM, self.cfg.graceful_timeout, "reload")

    def _abandon_generation(self, fallback: Fallback, cause: str) -> None:
        failed = f"generation {self.generation} failed to boot: {cause}"
        kept = f"generation {fallback.generation} keeps serving"
        log.error("%s; %s. Fix the error and reload again (HUP).", failed, kept)
        self._retire_generation(self.generation, "its generation was abandoned")
        apply_logging(self.cfg, fallback.cfg)
        self.generation, self.cfg, self.target = fallback.generation, fallback.cfg, fallback.target
        self.fallback, self.proven = None, True
        self.crash_streak, self.spawn_after = 0, 0.0

    def _retire_generation(self, generation: int, why: str) -> None:
        for worker in self.workers.active(generation):
            log.info("retiring %s: %s", worker.label, why)
            self._retire(worker, signal.SIGTERM, self.cfg.graceful_timeout, "reload")

    def _announce_serving(self) -> None:
        on_serving = self.context.on_serving
        if on_serving is None or self.phase is not Phase.RUNNING:
            return
        if self.workers.ready_count(self.generation) >= self.target:
            self.context.on_serving = None
            self._tell_supervisor()  # a new master (USR2): MAINPID= before the old one goes
            on_serving()

    def _tell_supervisor(self) -> None:
        """Report our state to systemd (preforkd.master.notify), and ping its watchdog."""
        serving = self.proven and self.workers.ready_count(self.generation) >= self.target
        notifier = self.context.notifier
        stopping = self.phase is Phase.STOPPING
        notifier.update(stopping, self.fallback is not None, serving, self.generation, self.target)
        notifier.watchdog(self.processes.monotonic())
        self._show_state()

    def _show_state(self) -> None:
        """The master's process title says what it is doing (ps, top): set only when the
        text changes, so this costs nothing on a quiet turn."""
        if self.handed_over:
            return  # the title says "(handed over)"
        title = f"{self._title_prefix} · {len(self.workers)} workers · {self.state}"
        if title != self._title:
            self._title = title
            set_title(title)

    @property
    def state(self) -> str:
        """What the master is doing, in one word (process title, status)."""
        if self.handed_over:
            return "handed over"
        if self.phase is Phase.STOPPING:
            return "stopping"
        if self.successor is not None:
            return "upgrading"
        if self.fallback is not None or not self.proven:
            return "reloading" if self.generation > 1 else "booting"
        return "running"

    # --- the control socket and /metrics ----------------------------------------------

    def handle_control(self, command: Command) -> None:
        """One request on the control socket (protocol: preforkd/control.py)."""
        assert self.context.control is not None
        endpoint = self.context.control.endpoint
        try:
            name = parse_request(command.detail)
        except ValueError as exc:
            endpoint.reply(command.pid, encode_reply({"ok": False, "error": str(exc)}))
            return
        if name == "status":
            reply = {"ok": True, "status": self.status()}
        elif name in SIGNAL_REQUESTS:
            log.info("control socket: %s", name)
            self.commands.put(Command(SIGNAL_REQUESTS[name]))
            reply = {"ok": True}
        else:
            reply = {"ok": False, "error": f"unknown command {name!r}"}
        endpoint.reply(command.pid, encode_reply(reply))

    def handle_metrics(self, command: Command) -> None:
        """One HTTP request on the metrics listener."""
        assert self.context.metrics is not None
        data, close = metrics_reply(command.detail, self._metrics_page)
        self.context.metrics.reply(command.pid, data, close)

    def status(self) -> dict[str, object]:
        """The master and its workers, as ``preforkd status`` shows them."""
        now = self.processes.monotonic()
        workers = sorted(self.workers, key=lambda w: (w.generation, w.slot))
        return {
            "master": {
                "pid": self._master_pid,
                "version": __version__,
                "app": self.cfg.app,
                "binds": listener_names(self._listeners),
                "uptime": round(now - self.started, 3),
                "generation": self.generation,
                "state": self.state,
                "workers_wanted": self.target,
                "request_timeout": self.cfg.request_timeout,
            },
            "workers": [worker_row(w, self.monitor.beat(w), now) for w in workers],
        }

    def _metrics_page(self) -> str:
        samples = [
            WorkerSample(w.slot, w.generation, self.monitor.beat(w), rss_bytes(w.pid))
            for w in sorted(self.workers, key=lambda w: (w.generation, w.slot))
        ]
        return render(self.tallies, samples, self.generation, self.target)

    # --- heartbeats ---------------------------------------------------------------------

    def _check_heartbeats(self) -> None:
        now = self.processes.monotonic()
        for worker in self.monitor.silent(self.workers, self.cfg.timeout, now):
            self.processes.kill(worker.pid, signal.SIGABRT)
            worker.stop_signal = signal.SIGABRT
            worker.aborted = True
            worker.stop_deadline = now + ABORT_GRACE

    # --- stopping ------------------------------------------------------------------------

    def _stop_listening(self) -> None:
        """Close the master's copies of the listeners as a stop begins. Each worker closes
        its own once it has accepted what is queued (worker/server.py), so the port then
        refuses new connections at once and a load balancer moves on, while the requests
        in flight finish. Sockets inherited from systemd stay open in systemd, which queues
        new connections for the next start. (A successor master after USR2 holds copies
        of its own, so this never closes a port it serves.)"""
        for sock in self._socks:
            sock.close()

    def _stop_gracefully(self) -> None:
        self.phase = Phase.STOPPING
        self._stop_listening()
        self.watcher.stop()
        for worker in self.workers:
            if not worker.stopping:
                self._retire(worker, signal.SIGTERM, self.cfg.graceful_timeout)

    def _stop_quickly(self) -> None:
        self.phase = Phase.STOPPING
        self._stop_listening()
        self.quick = True
        self.watcher.stop()
        timeout = min(QUICK_STOP_TIMEOUT, self.cfg.graceful_timeout)
        for worker in self.workers:
            if not worker.killed:
                self._retire(worker, signal.SIGQUIT, timeout)

    def _retire(self, worker: Worker, sig: int, timeout: float, reason: str = "") -> None:
        """Ask a worker to stop with ``sig``; SIGKILL it if still alive after timeout.
        ``reason``: why it is replaced (recycle, reload), counted in the metrics."""
        self.processes.kill(worker.pid, sig)
        worker.retire_reason = worker.retire_reason or reason
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
            if not worker.aborted:
                log.warning("%s did not stop in time; killing it", worker.label)
            self.processes.kill(worker.pid, signal.SIGKILL)
            worker.killed = True

    # --- reaping -------------------------------------------------------------------------

    def _reap(self) -> None:
        for pid, returncode in self.processes.reap():
            worker = self.workers.pop(pid)
            if worker is not None:
                log_exit(worker, returncode)
                self._count_exit(worker)
                self._after_exit(worker, returncode)
            elif self.watcher.exited(pid, returncode, self.processes.monotonic()):
                pass
            elif self.successor is not None and self.successor.pid == pid:
                self.successor.exited(returncode)
                self.successor = None
            else:
                log.debug("reaped unknown child %d (returncode %d)", pid, returncode)

    def _count_exit(self, worker: Worker) -> None:
        """Keep an exited worker's counts and why it went (metrics)."""
        beat = self.monitor.beat(worker)
        if beat is not None:
            self.tallies.retire(beat)
        reason = "timeout" if worker.aborted else worker.retire_reason
        if not reason and worker.ready and not worker.stopping:
            reason = "crash"
        if reason:
            self.tallies.restarts[reason] += 1

    def _after_exit(self, worker: Worker, returncode: int) -> None:
        if worker.ready or (worker.stopping and not worker.aborted):
            return  # a serving worker died (replaced at once), or one we retired
        self.tallies.boot_failures += 1
        if worker.generation != self.generation:
            return  # an older generation: the current one replaces it
        if not self.proven or self.fallback is not None:
            self._boot_failed(worker, returncode)
            return
        self.crash_streak += 1
        cause = boot_failure(worker, returncode)
        if self.crash_streak >= self.cfg.max_boot_failures:
            self._halt(
                errors.EXIT_CRASH_LOOP,
                f"{self.crash_streak} workers in a row died before they were ready "
                f"(--max-boot-failures {self.cfg.max_boot_failures}); last: {cause}; stopping",
            )
            return
        delay = min(FIRST_RESPAWN_DELAY * 2 ** (self.crash_streak - 1), MAX_RESPAWN_DELAY)
        self.spawn_after = self.processes.monotonic() + delay
        log.warning("%s died before it was ready; next fork in %gs", worker.label, delay)

    def _boot_failed(self, worker: Worker, returncode: int) -> None:
        """A worker of a generation not yet serving on its own died before it was ready."""
        if self.fallback is not None:
            self._abandon_generation(self.fallback, boot_failure(worker, returncode))
        elif returncode == errors.WORKER_EXIT_APP_LOAD_ERROR:
            self._halt(errors.EXIT_APP_LOAD_ERROR, "application failed to load, stopping")
        elif returncode == errors.WORKER_EXIT_BOOT_ERROR:
            self._halt(errors.EXIT_WORKER_BOOT_ERROR, "worker failed to boot, stopping")
        else:
            self._halt(
                errors.EXIT_WORKER_BOOT_ERROR,
                f"{worker.label} died before it was ready, stopping",
            )

    # --- reconciling ---------------------------------------------------------------------

    def _wanted(self) -> int:
        if self.phase is Phase.STOPPING:
            return 0
        return self.target if self.proven else 1

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
        self._check_takeover()
        self._announce_serving()
        if self.cfg.reload and self.context.origin is not None:
            self.watcher.restart_if_due(self.cfg, self.context.origin, self.processes.monotonic())

    def _spawn(self) -> bool:
        slot = self.workers.free_slot(self.generation)
        now = self.processes.monotonic()
        beat = self.monitor.free_index(self.workers)
        if beat is None:
            log.error("cannot start worker %d: the heartbeat table is full", slot)
            self.spawn_after = now + FORK_RETRY_DELAY
            return False
        spec = WorkerSpec(
            worker_id=slot,
            cfg=self.cfg,
            listeners=self._socks,
            notify_fd=self.pipes.status_w,
            master_pid=self._master_pid,
            app=self.context.app if self.generation == 1 else None,  # reloads load anew
            uid=self.context.credentials.uid,
            gid=self.context.credentials.gid,
            heartbeat=self.monitor.slot(beat),
            generation=self.generation,
        )
        try:
            pid = self.processes.fork_worker(spec)
        except OSError as exc:
            log.error("cannot fork worker %d: %s; retrying in %gs", slot, exc, FORK_RETRY_DELAY)
            self.spawn_after = now + FORK_RETRY_DELAY
            return False
        self.workers.add(Worker(slot, pid, self.generation, started=now, beat=beat))
        log.info("booting worker %d (pid %d)", slot, pid)
        return True
