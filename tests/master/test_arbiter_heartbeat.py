"""--timeout: a worker whose event loop stops ticking gets SIGABRT (stack dump), then
SIGKILL, and is replaced. The fake clock moves only while the master waits."""

from __future__ import annotations

import signal

import pytest

from preforkd import errors
from preforkd.config import Config
from preforkd.heartbeat import Beat, HeartbeatTable
from preforkd.master.arbiter import ABORT_GRACE, Context
from tests.master.conftest import Master
from tests.master.fakes import WouldBlockForever


@pytest.fixture
def make_watched():
    made = []

    def make(workers: int = 2, timeout: float = 10.0, **settings) -> Master:
        cfg = Config(app="myapp:app", workers=workers, timeout=timeout, **settings)
        master = Master(cfg, Context(heartbeats=HeartbeatTable(capacity=8)))
        made.append(master)
        return master

    yield make
    for master in made:
        master.close()


def test_ticking_workers_are_left_alone(make_watched):
    master = make_watched(workers=2, timeout=10.0)
    pids = master.boot()
    master.os.ticking.update(pids)
    for _ in range(5):  # the master wakes when a beat would be due, finds a newer one
        master.step()
    assert master.os.now == pytest.approx(1000.0 + 50.0)
    assert all(master.os.children[p].signals == [] for p in pids)


def test_silent_worker_gets_sigabrt_then_sigkill_and_is_replaced(make_watched, caplog):
    master = make_watched(workers=2, timeout=10.0)
    quiet, busy = master.boot()
    master.os.ticking.add(busy)
    start = master.os.now
    master.step()
    assert master.os.children[quiet].signals == [signal.SIGABRT]
    assert master.os.now == pytest.approx(start + 10.0)
    assert (
        f"worker 1 (pid {quiet}) is silent: its event loop has not run for 10.0s "
        "(--timeout 10s); sending SIGABRT (its threads' stacks go to the error log), then "
        "SIGKILL in 1s"
    ) in caplog.messages
    # Its replacement starts at once; SIGKILL follows after the grace.
    (replacement,) = [p for p in master.os.pids() if p not in (quiet, busy)]
    master.os.ticking.add(replacement)
    master.step()
    assert master.os.children[quiet].signals == [signal.SIGABRT, signal.SIGKILL]
    assert master.os.now == pytest.approx(start + 10.0 + ABORT_GRACE)
    master.step()  # reaped
    assert f"worker 1 (pid {quiet}) was killed: its event loop was blocked" in caplog.messages
    assert sorted(master.os.pids()) == sorted([replacement, busy])
    assert master.os.children[busy].signals == []


def test_silence_is_measured_from_the_last_beat(make_watched):
    master = make_watched(workers=1, timeout=10.0)
    (pid,) = master.boot()
    master.os.now += 7
    master.os.beat(pid)
    while not master.os.children[pid].signals:
        master.step()
    assert master.os.now == pytest.approx(1000.0 + 7 + 10)


def test_a_worker_that_never_becomes_ready_is_aborted_too(make_watched, caplog):
    # A hung import: --timeout bounds the boot as well (measured from the fork).
    master = make_watched(workers=1, timeout=5.0)
    master.arbiter.start()
    (pid,) = master.os.pids()
    master.step()
    assert master.os.children[pid].signals == [signal.SIGABRT]
    assert any("it has not become ready for 5.0s" in m for m in caplog.messages)
    master.step()
    assert master.os.children[pid].signals == [signal.SIGABRT, signal.SIGKILL]
    # At start, with nothing else serving, a worker that cannot boot stops the master.
    assert master.run_until_done() == errors.EXIT_WORKER_BOOT_ERROR


def test_timeout_zero_disables_the_heartbeat_check(make_watched):
    master = make_watched(workers=1, timeout=0)
    master.boot()
    with pytest.raises(WouldBlockForever):
        master.step()


def test_each_worker_gets_its_own_slot_reused_after_it_is_reaped(make_watched):
    master = make_watched(workers=3)
    pids = master.boot()
    beats = [master.arbiter.workers.get(p).beat for p in pids]
    assert sorted(beats) == [0, 1, 2]
    master.os.beat(pids[1], requests=42)
    master.os.exit(pids[1], 1)
    master.step()
    (new,) = [p for p in master.os.pids() if p not in pids]
    assert master.arbiter.workers.get(new).beat == beats[1]
    # The slot was cleared for its new owner.
    assert master.arbiter.monitor.beat(master.arbiter.workers.get(new)) is None


def test_heartbeat_slot_round_trip_and_clear():
    table = HeartbeatTable(capacity=4)
    try:
        slot = table.slot(3)
        assert slot.read() == Beat(0, 0.0, 0, 0, 0, False)
        beat = Beat(1234, 5678.25, 2**40, 17, 3, True)
        slot.write(beat)
        slot.write(beat)
        assert slot.read() == beat
        assert table.slot(2).read() == Beat(0, 0.0, 0, 0, 0, False)  # neighbours untouched
        slot.clear()
        assert slot.read() == Beat(0, 0.0, 0, 0, 0, False)
        with pytest.raises(IndexError):
            table.slot(4)
    finally:
        table.close()


def test_heartbeat_table_is_shared_with_forked_children():
    import os

    table = HeartbeatTable(capacity=2)
    try:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            table.slot(1).write(Beat(os.getpid(), 1.5, 9, 1, 1, False))
            os._exit(0)
        os.waitpid(pid, 0)
        assert table.slot(1).read() == Beat(pid, 1.5, 9, 1, 1, False)
    finally:
        table.close()


def test_heartbeat_slot_carries_what_status_and_metrics_read():
    table = HeartbeatTable(capacity=2)
    try:
        path = "/ünïcode/" + "x" * 400  # longer than the slot keeps
        beat = Beat(
            7, 2.5, 99, 12, 3, False, h2_connections=4, rate=123.5, oldest_start=1.25,
            oldest_method="PROPFIND", oldest_path=path, by_status=tuple(range(10)),
            durations=tuple(range(100, 112)), duration_sum=9.75, body_in=2**40, body_out=5,
        )  # fmt: skip
        table.slot(1).write(beat)
        read = table.slot(1).read()
        assert read is not None
        assert read.oldest_path == path.encode()[:160].decode()
        assert read == Beat(**{**{f: getattr(beat, f) for f in Beat.__slots__},
                               "oldest_path": read.oldest_path})  # fmt: skip
        assert table.slot(0).read() == Beat(0, 0.0, 0, 0, 0, False)
    finally:
        table.close()
