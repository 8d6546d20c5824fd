"""The worker's application threads: a queue and up to N threads, started on demand and
retired when idle.

Lighter than concurrent.futures.ThreadPoolExecutor on the per-request path: no Future,
no Condition, no semaphore per task, because nothing waits for a task's result (the
bridge reports completion to the loop itself). Threads are daemonic: a worker that must
exit past its graceful timeout does not wait for an application call stuck in C code.

Handing tasks over once per loop turn. With ``call_soon`` (the loop's), ``submit`` only
collects the task, and the tasks of one loop turn go to the threads together, in one
callback after the turn's I/O callbacks. Why: uvloop releases the GIL between I/O
callbacks, so a task queued from one callback woke an app thread that took the GIL at
once, answered, and blocked again before the loop read the next connection: loop and app
thread ping-ponged, 2.4 context switches per request on a keep-alive hello load. Handed
over together, one app thread runs a turn's tasks back to back while the loop waits in
poll, and the loop then writes all their responses in one turn: 0.2 switches per request,
and 35% more requests per second on one CPU. The cost is one loop callback per turn that
has tasks; the first task of a quiet turn waits for no timer.

Not preempting the loop. App threads run under SCHED_BATCH (Linux): a thread that
wakes up then waits for the running thread's time slice to end or for it to block,
instead of preempting it. Woken (a request body arrived, a write was taken), an app
thread needs the GIL, which the preempted thread -- the loop, or another app thread --
holds: preempting it only costs two context switches before the woken thread sleeps again
on the GIL. On an h2c load of 1 MiB uploads (64 streams, one thread each, reading 64 KiB at
a time) that took voluntary context switches from 27 to 9 per request, involuntary ones
from 20 to under 1, and worker CPU per request down ~15%; hello loads were unchanged.
It changes nothing else: the threads keep their share of the CPU (same nice value).

Sizing. The cap (``--threads``, default 64) is what one worker runs at once: a browser
asking for 30 slow subresources over one HTTP/2 connection gets them all at once, not 16
at a time. Threads start only when a task finds none idle. Up to ``eager`` (16) they start
at once; beyond that only while the threads are *blocked* (no task has finished for
``STARVED_AFTER``), because threads that are merely busy share one GIL: more of them only
add switching (64 threads on a CPU-bound hello load cost ~45% more CPU per request than
16). A task that waits then is picked up by a thread started from the loop's timer
(:meth:`check_starved`). A thread idle for ``idle_timeout`` seconds ends, down to ``keep``
threads, so a burst does not pin its threads' memory for the worker's lifetime.
An idle thread costs about 20 KiB of resident memory (measured: a worker's RSS grew from
24.4 to 25.7 MiB with 63 more threads after serving 64 concurrent requests): its stack
pages touched so far and its Python thread state; the 8 MiB stack is only reserved address
space. The application's own per-thread state (connections, caches) comes on top.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from queue import Empty, SimpleQueue
from typing import Any

log = logging.getLogger("preforkd.worker")

Task = tuple[Callable[[Any], None], Any]

IDLE_TIMEOUT = 60.0  # seconds an idle thread waits for work before it ends
KEEP = 4  # threads never retired for idleness (the next quick requests need no start)
EAGER = 16  # threads started as soon as a task finds none idle
STARVED_AFTER = 0.05  # no task finished for this long: the threads are blocked; add some


class AppThreads:
    def __init__(
        self,
        size: int,
        name: str = "preforkd-app",
        *,
        idle_timeout: float = IDLE_TIMEOUT,
        keep: int = KEEP,
        eager: int = EAGER,
        call_later: Callable[[float, Callable[[], None]], Any] | None = None,
        call_soon: Callable[[Callable[[], None]], Any] | None = None,
        batch: bool = True,
    ) -> None:
        self.size = size
        self.batch = batch  # threads run under SCHED_BATCH, where there is one
        self.name = name
        self.idle_timeout = idle_timeout
        self.keep = keep
        self.eager = eager
        # The loop's call_later, for the starvation check (None: grow eagerly to the cap).
        self._call_later = call_later
        self._check_pending = False
        # The loop's call_soon, to hand a turn's tasks over together (None: at once).
        self._call_soon = call_soon
        self._turn: list[Task] = []  # this loop turn's tasks, not yet queued
        self._last_done = 0.0  # monotonic time a task last finished (written by app threads)
        self._tasks: SimpleQueue[Task | None] = SimpleQueue()
        self._count = 0  # live threads; changed under _lock
        self._idle = 0  # threads waiting for a task; changed under _lock
        self._serial = 0  # for thread names
        self._lock = threading.Lock()

    def submit(self, fn: Callable[[Any], None], arg: Any) -> None:
        """Run ``fn(arg)`` on an application thread (from the loop thread), handed over
        with the rest of this loop turn's tasks."""
        turn = self._turn
        turn.append((fn, arg))
        if len(turn) == 1:
            if self._call_soon is None:
                self.hand_over()
            else:
                self._call_soon(self.hand_over)

    def hand_over(self) -> None:
        """(Loop thread.) Queue the tasks collected this turn for the app threads."""
        turn, self._turn = self._turn, []
        for task in turn:
            self._queue(task)

    def _queue(self, task: Task) -> None:
        tasks = self._tasks
        tasks.put(task)
        # More tasks waiting than threads waiting: start one (a thread that was just
        # handed a task may still count as idle, so compare with the queue, not with 0).
        # Unlocked reads: at worst one thread more than needed is started.
        if tasks.qsize() > self._idle and self._count < self.size:
            if self._count < self.eager or self._call_later is None:
                self._start_thread()
            elif not self._check_pending:
                self._check_pending = True
                self._call_later(STARVED_AFTER, self.check_starved)

    def check_starved(self) -> None:
        """(Loop thread.) Tasks wait and no thread has finished one for STARVED_AFTER:
        the threads are blocked (I/O, sleep, a slow backend), so threads are started for
        the waiting tasks; checked again while tasks still wait."""
        self._check_pending = False
        if self._tasks.qsize() <= self._idle or self._count >= self.size:
            return
        if time.monotonic() - self._last_done >= STARVED_AFTER:
            # One thread per waiting task: blocked threads free none of them soon.
            for _ in range(min(self._tasks.qsize() - self._idle, self.size - self._count)):
                self._start_thread()
        if self._call_later is not None and self._count < self.size:
            self._check_pending = True
            self._call_later(STARVED_AFTER, self.check_starved)

    def _start_thread(self) -> None:
        with self._lock:
            if self._count >= self.size:
                return
            self._count += 1
            self._serial += 1
            serial = self._serial
        thread = threading.Thread(target=self._work, name=f"{self.name}-{serial}", daemon=True)
        thread.start()

    def _work(self) -> None:
        if self.batch:
            _no_wakeup_preemption()
        get, lock, monotonic = self._tasks.get, self._lock, time.monotonic
        while True:
            with lock:
                self._idle += 1
            try:
                task = get(timeout=self.idle_timeout)
            except Empty:
                with lock:
                    self._idle -= 1
                    if self._count > self.keep:
                        self._count -= 1
                        return  # idle for long enough: give the memory back
                continue
            with lock:
                self._idle -= 1
            if task is None:
                with lock:
                    self._count -= 1
                return
            fn, arg = task
            try:
                fn(arg)
            except BaseException:  # the bridge handles app errors; this is a last resort
                log.exception("Unexpected error on an application thread")
            self._last_done = monotonic()

    def shutdown(self) -> None:
        """Let idle threads end; busy ones end after their task (they are daemonic)."""
        self.hand_over()  # tasks collected this turn still run
        for _ in range(self._count):
            self._tasks.put(None)

    @property
    def started(self) -> int:
        """Threads alive now (started and not retired)."""
        return self._count


def _no_wakeup_preemption() -> None:
    """Run the calling thread under SCHED_BATCH (see the module docstring), if the
    platform has it; nothing changes where it does not or where it is refused."""
    setscheduler = getattr(os, "sched_setscheduler", None)
    batch = getattr(os, "SCHED_BATCH", None)
    if setscheduler is None or batch is None:
        return
    try:
        setscheduler(0, batch, os.sched_param(0))  # 0: the calling thread (Linux)
    except OSError as exc:
        log.debug("App threads keep the default scheduling policy: %s", exc)
