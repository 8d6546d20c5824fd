"""wsgi/wakeup.py: an app thread blocked on its own fd, woken by another thread."""

from __future__ import annotations

import gc
import os
import threading

from preforkd.wsgi.wakeup import ThreadWaker, current_waker


def test_a_wake_before_the_wait_is_not_lost() -> None:
    waker = ThreadWaker()
    waker.wake()
    waker.wait()  # returns at once


def test_another_thread_wakes_a_blocked_one() -> None:
    waker = ThreadWaker()
    woken = threading.Event()

    def blocked() -> None:
        waker.wait()
        woken.set()

    thread = threading.Thread(target=blocked, daemon=True)
    thread.start()
    assert not woken.wait(0.05)
    waker.wake()
    assert woken.wait(5)
    thread.join(5)


def test_each_thread_has_its_own_waker_and_its_fd_is_closed_when_it_ends() -> None:
    seen: list[ThreadWaker] = []
    mine = current_waker()  # this thread's own, made before counting
    fds_before = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None

    def record() -> None:
        seen.append(current_waker())
        assert current_waker() is seen[-1]

    for _ in range(3):
        thread = threading.Thread(target=record)
        thread.start()
        thread.join(5)
    assert len({id(w) for w in seen}) == 3 and mine not in seen
    seen.clear()
    gc.collect()
    if fds_before is not None:
        assert len(os.listdir("/proc/self/fd")) <= fds_before
