"""The application thread pool: on-demand threads, never fewer than the work needs."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

import pytest

from preforkd.worker.pool import AppThreads
from tests.integration.harness import wait_for


def test_a_burst_of_blocking_tasks_runs_in_parallel() -> None:
    pool = AppThreads(10)
    gate = threading.Barrier(10, timeout=5)  # passes only if all ten run at once
    done: list[int] = []
    for i in range(10):
        pool.submit(lambda n: (gate.wait(), done.append(n)), i)
    wait_for(lambda: len(done) == 10, timeout=5, what="ten tasks at once")
    pool.shutdown()


def test_never_more_threads_than_its_size() -> None:
    pool = AppThreads(2)
    release = threading.Event()
    done: list[int] = []
    for i in range(6):
        pool.submit(lambda n: (release.wait(5), done.append(n)), i)
    assert pool.started == 2
    release.set()
    wait_for(lambda: len(done) == 6, timeout=5, what="all tasks")
    assert pool.started == 2
    pool.shutdown()


def test_an_exception_in_a_task_does_not_kill_the_thread() -> None:
    pool = AppThreads(1)
    done: list[int] = []
    pool.submit(lambda _: 1 / 0, None)
    pool.submit(done.append, 1)
    wait_for(lambda: done == [1], timeout=5, what="the task after the failing one")
    assert pool.started == 1
    pool.shutdown()


def test_idle_threads_retire_down_to_the_kept_few() -> None:
    pool = AppThreads(8, idle_timeout=0.2, keep=2)
    gate = threading.Barrier(8, timeout=5)
    done: list[int] = []
    for i in range(8):
        pool.submit(lambda n: (gate.wait(), done.append(n)), i)
    wait_for(lambda: len(done) == 8, timeout=5, what="eight tasks at once")
    assert pool.started == 8
    wait_for(lambda: pool.started == 2, timeout=5, what="idle threads to retire")
    # ... and the pool grows again when work comes.
    gate2 = threading.Barrier(5, timeout=5)
    for i in range(5):
        pool.submit(lambda n: (gate2.wait(), done.append(n)), i)
    wait_for(lambda: len(done) == 13, timeout=5, what="five more at once")
    pool.shutdown()


def test_beyond_the_eager_threads_the_pool_grows_only_while_threads_are_blocked() -> None:
    def call_later(delay: float, fn: Callable[[], None]) -> None:
        threading.Timer(delay, fn).start()  # stands in for the loop's call_later

    pool = AppThreads(8, eager=2, call_later=call_later)
    gate = threading.Barrier(6, timeout=5)  # passes only if six run at once
    done: list[int] = []
    for i in range(6):
        pool.submit(lambda n: (gate.wait(), done.append(n)), i)
    assert pool.started == 2  # the others wait for the starvation check
    wait_for(lambda: len(done) == 6, timeout=5, what="six blocked tasks at once")
    assert pool.started == 6
    pool.shutdown()


def test_a_loop_turns_tasks_are_handed_over_together_after_its_callbacks() -> None:
    """With the loop's call_soon, submit() only collects: the turn's tasks reach the
    threads in one hand-over (one wake-up for the lot, not one per request)."""
    scheduled: list[Callable[[], None]] = []
    pool = AppThreads(4, call_soon=scheduled.append)  # stands in for loop.call_soon
    done: list[int] = []
    for i in range(5):
        pool.submit(done.append, i)
    assert len(scheduled) == 1  # one hand-over per turn, however many tasks
    assert pool.started == 0 and done == []  # nothing queued before it runs
    scheduled.pop()()
    wait_for(lambda: sorted(done) == [0, 1, 2, 3, 4], timeout=5, what="the turn's tasks")
    pool.submit(done.append, 5)  # the next turn schedules its own hand-over
    assert len(scheduled) == 1
    pool.shutdown()  # a turn collected when the worker stops still runs
    wait_for(lambda: 5 in done, timeout=5, what="the task collected before shutdown")


@pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="SCHED_BATCH is Linux's")
def test_app_threads_do_not_preempt_on_wakeup() -> None:
    # SCHED_BATCH: a woken app thread waits for the running thread (the loop, holding
    # the GIL it needs) to block, instead of preempting it for nothing.
    for batch, expected in ((True, os.SCHED_BATCH), (False, os.SCHED_OTHER)):
        policies: list[int] = []
        pool = AppThreads(1, batch=batch)
        pool.submit(lambda _, seen=policies: seen.append(os.sched_getscheduler(0)), None)
        wait_for(lambda seen=policies: bool(seen), timeout=5, what="the task")
        assert policies == [expected]
        pool.shutdown()
    assert os.sched_getscheduler(0) == os.SCHED_OTHER  # the submitting thread keeps its own
