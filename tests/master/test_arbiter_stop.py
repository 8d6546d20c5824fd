"""Graceful and quick stops: who gets which signal, and when SIGKILL comes."""

from __future__ import annotations

import signal

import pytest

from preforkd import errors
from preforkd.master.arbiter import QUICK_STOP_TIMEOUT


def test_graceful_stop_waits_for_workers_then_returns_ok(make_master):
    master = make_master(workers=3, graceful_timeout=30.0)
    pids = master.boot()
    start = master.os.now
    master.signal(signal.SIGTERM)
    assert master.step() is None
    assert all(master.os.children[p].signals == [signal.SIGTERM] for p in pids)

    for pid in pids:
        master.os.exit(pid, 0)
    assert master.run_until_done() == errors.EXIT_OK
    assert master.os.now == start  # nobody waited for the deadline
    assert all(master.os.children[p].signals == [signal.SIGTERM] for p in pids)
    assert master.os.forks() == 3  # no respawn while stopping


def test_graceful_stop_kills_stragglers_at_the_deadline(make_master, caplog):
    master = make_master(workers=3, graceful_timeout=30.0)
    first, second, third = master.boot()
    start = master.os.now
    master.signal(signal.SIGTERM)
    master.step()
    master.os.exit(first, 0)
    master.os.exit(second, 0)
    master.step()  # reaps those two; the third is still draining
    assert master.os.now == start
    assert master.os.pids() == [third]

    assert master.step() is None  # sleeps until the deadline, then SIGKILL
    assert master.os.now == pytest.approx(start + 30.0)
    assert master.os.children[third].signals == [signal.SIGTERM, signal.SIGKILL]
    assert master.run_until_done() == errors.EXIT_OK
    assert f"worker 3 (pid {third}) did not stop in time; killing it" in caplog.messages
    assert f"worker 3 (pid {third}) was killed after its stop deadline" in caplog.messages
    assert not any("out of memory" in m for m in caplog.messages)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGQUIT])
def test_quick_stop_sends_quit_and_kills_after_a_short_wait(make_master, sig):
    master = make_master(workers=2, graceful_timeout=30.0)
    first, second = master.boot()
    start = master.os.now
    master.signal(sig)
    master.step()
    assert master.os.children[first].signals == [signal.SIGQUIT]
    master.os.exit(first, 0)
    assert master.run_until_done() == errors.EXIT_OK
    assert master.os.children[second].signals == [signal.SIGQUIT, signal.SIGKILL]
    assert master.os.now == pytest.approx(start + QUICK_STOP_TIMEOUT)


def test_second_term_escalates_to_a_quick_stop(make_master):
    master = make_master(workers=2, graceful_timeout=30.0)
    first, second = master.boot()
    start = master.os.now
    master.signal(signal.SIGTERM)
    master.step()
    master.signal(signal.SIGTERM)
    master.step()
    for pid in (first, second):
        assert master.os.children[pid].signals == [signal.SIGTERM, signal.SIGQUIT]
    assert master.run_until_done() == errors.EXIT_OK
    assert master.os.now == pytest.approx(start + QUICK_STOP_TIMEOUT)


def test_int_during_a_graceful_stop_escalates(make_master):
    master = make_master(workers=1, graceful_timeout=30.0)
    (pid,) = master.boot()
    master.signal(signal.SIGTERM)
    master.step()
    master.os.now += 5.0
    master.signal(signal.SIGINT)
    master.step()
    assert master.os.children[pid].signals == [signal.SIGTERM, signal.SIGQUIT]
    master.os.exit(pid, 0)
    assert master.run_until_done() == errors.EXIT_OK


def test_quick_stop_never_extends_an_earlier_deadline(make_master):
    master = make_master(workers=1, graceful_timeout=1.0)
    master.boot()
    start = master.os.now
    master.signal(signal.SIGTERM)
    master.step()
    master.signal(signal.SIGQUIT)
    assert master.run_until_done() == errors.EXIT_OK
    assert master.os.now == pytest.approx(start + 1.0)


def test_third_term_changes_nothing(make_master):
    master = make_master(workers=1)
    (pid,) = master.boot()
    for _ in range(3):
        master.signal(signal.SIGTERM)
        master.step()
    assert master.os.children[pid].signals == [signal.SIGTERM, signal.SIGQUIT]
