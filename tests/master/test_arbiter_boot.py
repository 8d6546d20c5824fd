"""Start-up: worker 1 alone until it is ready, then the rest; a broken app halts."""

from __future__ import annotations

import logging
import os
import signal

import pytest

from preforkd import errors
from preforkd.master.arbiter import Phase
from preforkd.master.startup import Credentials
from tests.master.fakes import WouldBlockForever


def test_worker_1_boots_alone_then_the_rest(make_master):
    master = make_master(workers=3)
    master.arbiter.start()
    assert [c.slot for c in master.os.alive()] == [1]
    with pytest.raises(WouldBlockForever):  # it waits for worker 1, nothing else
        master.step()
    assert master.os.forks() == 1

    master.os.report_ready(master.os.pids()[0])
    assert master.step() is None
    assert [c.slot for c in master.os.alive()] == [1, 2, 3]
    assert master.arbiter.phase is Phase.RUNNING


def test_workers_receive_their_spec(make_master):
    app = object()
    master = make_master(workers=2, credentials=Credentials(uid=1234, gid=5678), app=app)
    master.boot()
    specs = [c.spec for c in master.os.alive()]
    assert [s.worker_id for s in specs] == [1, 2]
    for spec in specs:
        assert spec.cfg is master.cfg
        assert spec.notify_fd == master.pipes.status_w
        assert spec.master_pid == os.getpid()
        assert spec.app is app
        assert (spec.uid, spec.gid) == (1234, 5678)


def test_app_load_error_halts_with_its_exit_code_and_no_refork(make_master, caplog):
    master = make_master(workers=4)
    master.arbiter.start()
    master.os.exit(master.os.pids()[0], errors.WORKER_EXIT_APP_LOAD_ERROR)
    with caplog.at_level(logging.INFO, "preforkd.master"):
        assert master.step() == errors.EXIT_APP_LOAD_ERROR
    assert master.os.forks() == 1
    assert "application failed to load, stopping" in caplog.messages
    assert sum("failed to load" in m for m in caplog.messages) == 1


def test_boot_error_halts_with_its_exit_code(make_master, caplog):
    master = make_master(workers=2)
    master.arbiter.start()
    master.os.exit(master.os.pids()[0], errors.WORKER_EXIT_BOOT_ERROR)
    assert master.step() == errors.EXIT_WORKER_BOOT_ERROR
    assert master.os.forks() == 1
    assert "worker failed to boot, stopping" in caplog.messages


def test_worker_1_crashing_before_ready_halts_instead_of_looping(make_master, caplog):
    master = make_master(workers=2)
    master.arbiter.start()
    pid = master.os.pids()[0]
    master.os.crash(pid, signal.SIGSEGV)
    assert master.step() == errors.EXIT_WORKER_BOOT_ERROR
    assert master.os.forks() == 1
    assert f"worker 1 (pid {pid}) was killed by signal SIGSEGV" in caplog.messages
    assert f"worker 1 (pid {pid}) died before it was ready, stopping" in caplog.messages


def test_app_load_error_in_a_later_worker_is_retried_while_the_others_serve(make_master):
    # E.g. the code on disk was broken after start-up, and a worker was recycled. The
    # others keep serving; the replacement is retried with back-off (see
    # test_arbiter_crash_loop for where that ends).
    master = make_master(workers=3)
    first, second, third = master.boot()
    master.os.crash(second, signal.SIGSEGV)
    master.step()  # replaced
    replacement = master.os.pids()[1]
    master.os.exit(replacement, errors.WORKER_EXIT_APP_LOAD_ERROR)
    assert master.step() is None
    assert master.os.children[first].signals == []
    assert master.os.children[third].signals == []
    master.step()  # after the back-off delay
    assert [c.slot for c in master.os.alive()] == [1, 2, 3]
    assert master.os.forks() == 5


def test_stop_during_boot(make_master):
    master = make_master(workers=3)
    master.arbiter.start()
    pid = master.os.pids()[0]
    master.signal(signal.SIGTERM)
    assert master.step() is None
    assert master.os.children[pid].signals == [signal.SIGTERM]
    master.os.exit(pid, 0)
    assert master.step() == errors.EXIT_OK
    assert master.os.forks() == 1


def test_ready_from_an_unknown_pid_is_ignored(make_master):
    master = make_master(workers=2)
    master.arbiter.start()
    os.write(master.pipes.status_w, b"ready 99999\nnonsense\n")
    master.step()
    assert master.arbiter.phase is Phase.BOOTING
    assert master.os.forks() == 1


def test_fork_failure_is_retried_later(make_master, caplog):
    master = make_master(workers=1)
    master.os.fork_error = BlockingIOError(11, "Resource temporarily unavailable")
    master.arbiter.start()
    assert master.os.forks() == 0
    assert any("cannot fork worker 1" in m for m in caplog.messages)
    master.os.fork_error = None
    start = master.os.now
    master.step()  # waits for the retry deadline, then forks
    assert master.os.forks() == 1
    assert master.os.now == pytest.approx(start + 1.0)
