"""The worker's application threads: a queue and up to N threads, started on demand.

Lighter than concurrent.futures.ThreadPoolExecutor on the per-request path: no Future,
no Condition, no semaphore per task, because nothing waits for a task's result (the
bridge reports completion to the loop itself). Threads are daemonic: a worker that must
exit past its graceful timeout does not wait for an application call stuck in C code.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from queue import SimpleQueue
from typing import Any

log = logging.getLogger("preforkd.worker")

Task = tuple[Callable[[Any], None], Any]


class AppThreads:
    def __init__(self, size: int, name: str = "preforkd-app") -> None:
        self.size = size
        self.name = name
        self._tasks: SimpleQueue[Task | None] = SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = 0  # threads waiting for a task; changed under _lock
        self._lock = threading.Lock()

    def submit(self, fn: Callable[[Any], None], arg: Any) -> None:
        """Run ``fn(arg)`` on an application thread (from the loop thread)."""
        tasks = self._tasks
        tasks.put((fn, arg))
        # More tasks waiting than threads waiting: start one (a thread that was just
        # handed a task may still count as idle, so compare with the queue, not with 0).
        # Unlocked reads: at worst one thread more than needed is started.
        if tasks.qsize() > self._idle and len(self._threads) < self.size:
            self._start_thread()

    def _start_thread(self) -> None:
        thread = threading.Thread(
            target=self._work, name=f"{self.name}-{len(self._threads) + 1}", daemon=True
        )
        self._threads.append(thread)
        thread.start()

    def _work(self) -> None:
        get, lock = self._tasks.get, self._lock
        while True:
            with lock:
                self._idle += 1
            task = get()
            with lock:
                self._idle -= 1
            if task is None:
                return
            fn, arg = task
            try:
                fn(arg)
            except BaseException:  # the bridge handles app errors; this is a last resort
                log.exception("Unexpected error on an application thread")

    def shutdown(self) -> None:
        """Let idle threads end; busy ones end after their task (they are daemonic)."""
        for _ in self._threads:
            self._tasks.put(None)

    @property
    def started(self) -> int:
        return len(self._threads)
