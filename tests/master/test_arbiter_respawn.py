"""A worker that dies is replaced promptly in its slot, and the log says why."""

from __future__ import annotations

import signal

import pytest

from preforkd.master.arbiter import describe_exit


@pytest.mark.parametrize(
    ("how", "message"),
    [
        (("exit", 1), "worker 2 (pid {pid}) exited with code 1"),
        (("crash", signal.SIGSEGV), "worker 2 (pid {pid}) was killed by signal SIGSEGV"),
        (
            ("crash", signal.SIGKILL),
            "worker 2 (pid {pid}) was killed by signal SIGKILL (perhaps out of memory?)",
        ),
    ],
)
def test_dead_worker_is_replaced_in_its_slot_with_the_cause_logged(
    make_master, caplog, how, message
):
    master = make_master(workers=3)
    first, second, third = master.boot()
    start = master.os.now
    getattr(master.os, how[0])(second, how[1])

    assert master.step() is None

    assert master.os.now == start  # at once, no timer involved
    alive = master.os.alive()
    assert [c.slot for c in alive] == [1, 2, 3]
    assert alive[0].pid == first and alive[2].pid == third
    assert alive[1].pid not in (first, second, third)
    assert message.format(pid=second) in caplog.messages


def test_worker_exiting_cleanly_on_its_own_is_replaced(make_master, caplog):
    master = make_master(workers=2)
    first, _ = master.boot()
    master.os.exit(first, 0)  # e.g. recycled after --max-requests
    master.step()
    assert [c.slot for c in master.os.alive()] == [1, 2]
    assert f"worker 1 (pid {first}) exited with code 0" in caplog.messages


def test_replacement_crashing_before_ready_is_respawned_with_growing_delay(make_master, caplog):
    master = make_master(workers=2)
    master.boot()
    delays = []
    for _ in range(4):
        pid = master.os.pids()[1]
        master.os.exit(pid, 1)
        before = master.os.now
        while pid in master.os.pids() or len(master.os.alive()) < 2:
            master.step()
        delays.append(round(master.os.now - before, 3))
    # The first death was of a ready worker: replaced at once. Then replacements
    # that never became ready: 0.1 s, 0.2 s, 0.4 s.
    assert delays == [0.0, 0.1, 0.2, 0.4]
    assert master.os.forks() == 6
    # A worker that becomes ready resets the delay.
    master.os.report_ready(master.os.pids()[1])
    master.step()
    master.os.exit(master.os.pids()[1], 1)
    master.step()
    assert len(master.os.alive()) == 2


def test_describe_exit():
    assert describe_exit("worker 1 (pid 9)", 3) == "worker 1 (pid 9) exited with code 3"
    assert describe_exit("w", -signal.SIGABRT) == "w was killed by signal SIGABRT"
    assert describe_exit("w", -200) == "w was killed by signal 200"
