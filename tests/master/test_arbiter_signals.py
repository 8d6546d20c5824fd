"""TTIN/TTOU, USR1, HUP/USR2, and the real signal handlers."""

from __future__ import annotations

import os
import select
import signal
from queue import SimpleQueue

import pytest

from preforkd.master import startup
from preforkd.master.signals import Command, MasterPipes, SignalHandlers
from tests.master.fakes import WouldBlockForever


def test_ttin_adds_a_worker(make_master):
    master = make_master(workers=2)
    master.boot()
    master.signal(signal.SIGTTIN)
    master.step()
    assert [c.slot for c in master.os.alive()] == [1, 2, 3]


def test_ttou_retires_the_highest_slot_gracefully(make_master):
    master = make_master(workers=3, graceful_timeout=30.0)
    first, second, third = master.boot()
    master.signal(signal.SIGTTOU)
    master.step()
    assert master.os.children[third].signals == [signal.SIGTERM]
    assert master.os.children[first].signals == master.os.children[second].signals == []
    master.os.exit(third, 0)
    master.step()
    assert master.os.pids() == [first, second]
    with pytest.raises(WouldBlockForever):  # nothing to replace
        master.step()


def test_ttou_never_goes_below_one_worker(make_master, caplog):
    master = make_master(workers=2)
    first, second = master.boot()
    for _ in range(3):
        master.signal(signal.SIGTTOU)
    master.step()
    assert master.os.children[second].signals == [signal.SIGTERM]
    assert master.os.children[first].signals == []
    assert "TTOU: already down to one worker" in caplog.messages


def test_ttin_while_a_retired_worker_drains_takes_a_free_slot(make_master):
    master = make_master(workers=2)
    first, second = master.boot()
    master.signal(signal.SIGTTOU)
    master.step()
    master.signal(signal.SIGTTIN)
    master.step()
    slots = {c.pid: c.slot for c in master.os.alive()}
    assert slots[first] == 1 and slots[second] == 2  # 2 still draining
    assert sorted(slots.values()) == [1, 2, 3]


def test_usr1_reopens_log_files_and_is_forwarded(make_master, monkeypatch, caplog):
    calls = []
    monkeypatch.setattr(startup, "reopen_log_files", lambda: calls.append("reopen"))
    master = make_master(workers=2)
    pids = master.boot()
    master.signal(signal.SIGUSR1)
    master.step()
    assert calls == ["reopen"]
    assert all(master.os.children[p].signals == [signal.SIGUSR1] for p in pids)
    assert "USR1: log files reopened" in caplog.messages


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGUSR2])
def test_hup_and_usr2_without_an_origin_keep_the_workers(make_master, caplog, sig):
    # A master that does not know how it was started cannot re-read its configuration
    # (HUP restarts the workers with the same one) nor re-execute itself (USR2).
    master = make_master(workers=1)
    (pid,) = master.boot()
    master.signal(sig)
    master.step()
    if sig == signal.SIGUSR2:
        assert "USR2: ignored: this master does not know how it was started" in caplog.messages
        assert master.os.pids() == [pid]
    else:
        assert "HUP: starting generation 2 (replacing 1)" in caplog.messages
        assert len(master.os.pids()) == 2


def test_idle_master_blocks_without_timeout(make_master):
    master = make_master(workers=2)
    master.boot()
    with pytest.raises(WouldBlockForever):
        master.step()


def test_real_signal_queues_a_command_and_wakes_the_loop():
    pipes = MasterPipes()
    commands: SimpleQueue[Command] = SimpleQueue()
    handlers = SignalHandlers(commands, pipes.wakeup_w)
    before = signal.getsignal(signal.SIGTTIN)
    handlers.install()
    try:
        os.kill(os.getpid(), signal.SIGTTIN)
        readable, _, _ = select.select([pipes.wakeup_r], [], [], 5.0)
        assert readable == [pipes.wakeup_r]
        assert commands.get(timeout=5.0) == Command("ttin")
        pipes.drain_wakeup()
        assert select.select([pipes.wakeup_r], [], [], 0)[0] == []
    finally:
        handlers.restore()
        pipes.close()
    assert signal.getsignal(signal.SIGTTIN) == before


def test_status_pipe_lines_split_across_reads():
    pipes = MasterPipes()
    try:
        os.write(pipes.status_w, b"ready 12\nready 3")
        assert pipes.read_status() == [Command("ready", 12)]
        os.write(pipes.status_w, b"4\n")
        assert pipes.read_status() == [Command("ready", 34)]
    finally:
        pipes.close()
