"""Workers that die while booting: back-off, then a clear stop with EXIT_CRASH_LOOP.
Workers that stop of their own accord (draining): replaced at once."""

from __future__ import annotations

import signal

import pytest

from preforkd import errors
from preforkd.config import Config
from tests.master.conftest import Master


@pytest.fixture
def make(make_master):
    made = []

    def build(workers: int = 2, max_boot_failures: int = 4) -> Master:
        cfg = Config(app="myapp:app", workers=workers, max_boot_failures=max_boot_failures)
        master = Master(cfg)
        made.append(master)
        return master

    yield build
    for master in made:
        master.close()


def _fail_replacements(master: Master, times: int, code: int = 1) -> list[float]:
    """Make the replacement in slot 2 fail ``times`` times; returns the delays seen."""
    delays = []
    for _ in range(times):
        (pid,) = [c.pid for c in master.os.alive() if c.slot == 2]
        master.os.exit(pid, code)
        before = master.os.now
        while pid in master.os.pids() or len(master.os.alive()) < 2:
            if master.step() is not None:
                return delays
        delays.append(round(master.os.now - before, 3))
    return delays


def test_consecutive_boot_failures_stop_the_master_with_crash_loop_code(make, caplog):
    master = make(workers=2, max_boot_failures=4)
    first, second = master.boot()
    master.os.crash(second, signal.SIGKILL)  # a serving worker dies: replaced at once
    master.step()
    delays = _fail_replacements(master, 3, code=errors.WORKER_EXIT_APP_LOAD_ERROR)
    assert delays == [0.1, 0.2, 0.4]
    (last,) = [c.pid for c in master.os.alive() if c.slot == 2]
    master.os.crash(last, signal.SIGSEGV)  # the 4th in a row
    master.step()
    assert master.os.children[first].signals == [signal.SIGTERM]  # a graceful stop
    master.os.exit(first, 0)
    assert master.run_until_done() == errors.EXIT_CRASH_LOOP
    assert (
        "4 workers in a row died before they were ready (--max-boot-failures 4); last: "
        f"worker 2 (pid {last}) was killed by signal SIGSEGV; stopping"
    ) in caplog.messages


def test_a_worker_becoming_ready_resets_the_count(make):
    master = make(workers=2, max_boot_failures=3)
    master.boot()
    master.os.crash(master.os.pids()[1], signal.SIGKILL)
    master.step()
    assert _fail_replacements(master, 2) == [0.1, 0.2]
    master.os.report_ready(master.os.pids()[1])
    master.step()
    assert master.arbiter.crash_streak == 0
    master.os.crash(master.os.pids()[1], signal.SIGKILL)
    master.step()
    assert _fail_replacements(master, 2) == [0.1, 0.2]
    assert master.arbiter.phase.value == "running"


def test_back_off_is_capped(make):
    master = make(workers=2, max_boot_failures=100)
    master.boot()
    master.os.crash(master.os.pids()[1], signal.SIGKILL)
    master.step()
    delays = _fail_replacements(master, 10)
    assert delays[-3:] == [10.0, 10.0, 10.0]


def test_draining_worker_is_replaced_at_once_and_drains(make_master, caplog):
    master = make_master(workers=2, graceful_timeout=5.0)
    first, second = master.boot()
    master.os.report_draining(first)  # e.g. it served --max-requests
    master.step()
    assert f"worker 1 (pid {first}) is draining; starting its replacement" in caplog.messages
    alive = master.os.pids()
    assert len(alive) == 3  # the replacement boots while the old one finishes its requests
    assert master.os.children[first].signals == [signal.SIGTERM]
    master.os.report_ready(alive[-1])
    master.step()
    master.os.exit(first, 0)
    master.step()
    assert f"worker 1 (pid {first}) stopped" in caplog.messages
    assert len(master.os.pids()) == 2
    assert master.os.children[second].signals == []


def test_draining_worker_is_killed_after_the_graceful_timeout(make_master):
    master = make_master(workers=1, graceful_timeout=5.0)
    (pid,) = master.boot()
    master.os.report_draining(pid)
    master.step()
    start = master.os.now
    master.os.report_ready(master.os.pids()[-1])
    master.step()
    master.step()
    assert master.os.children[pid].signals == [signal.SIGTERM, signal.SIGKILL]
    assert master.os.now == pytest.approx(start + 5.0)


def test_draining_message_during_stop_is_ignored(make_master):
    master = make_master(workers=1)
    (pid,) = master.boot()
    master.signal(signal.SIGTERM)
    master.step()
    master.os.report_draining(pid)
    master.step()
    assert master.os.forks() == 1
    assert master.os.children[pid].signals == [signal.SIGTERM]
