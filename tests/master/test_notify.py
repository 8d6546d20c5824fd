"""sd_notify: the arbiter's transitions on a fake process layer, and the datagram itself."""

from __future__ import annotations

import os
import signal
import socket

from preforkd import errors
from preforkd.master.notify import Notifier, socket_address


class Recorder(Notifier):
    def __init__(self, watchdog_usec: int = 0, upgraded: bool = False) -> None:
        super().__init__("/unused", watchdog_usec, upgraded)
        self.sent: list[list[str]] = []

    def send(self, *lines: str) -> None:
        if not self.muted:
            self.sent.append([line.split("=")[0] for line in lines])


def test_ready_only_once_all_workers_are_ready(make_reloadable):
    recorder = Recorder()
    master = make_reloadable("workers = 2\n", notifier=recorder)
    master.arbiter.start()
    master.os.report_ready(master.os.pids()[0])
    master.step()
    assert recorder.sent == []  # worker 1 alone serves; worker 2 is starting
    master.ready_all()
    assert recorder.sent == [["READY", "STATUS"]]


def test_hup_reloading_then_ready_then_stopping(make_reloadable):
    recorder = Recorder()
    master = make_reloadable("workers = 2\n", notifier=recorder)
    master.boot()
    master.signal(signal.SIGHUP)
    master.step()
    assert recorder.sent[-1] == ["RELOADING", "MONOTONIC_USEC", "STATUS"]
    master.ready_all()
    master.ready_all()
    assert recorder.sent[-1] == ["READY", "STATUS"]
    master.signal(signal.SIGTERM)
    master.step()
    assert recorder.sent == [
        ["READY", "STATUS"],
        ["RELOADING", "MONOTONIC_USEC", "STATUS"],
        ["READY", "STATUS"],
        ["STOPPING", "STATUS"],
    ]


def test_abandoned_reload_is_ready_again(make_reloadable):
    recorder = Recorder()
    master = make_reloadable("workers = 1\n", notifier=recorder)
    old = master.boot()
    master.signal(signal.SIGHUP)
    master.step()
    (new,) = [p for p in master.os.pids() if p not in old]
    master.os.exit(new, errors.WORKER_EXIT_APP_LOAD_ERROR)
    master.step()
    assert master.arbiter.generation == 1
    assert recorder.sent[-2:] == [["RELOADING", "MONOTONIC_USEC", "STATUS"], ["READY", "STATUS"]]


def test_new_master_sends_mainpid_before_telling_the_old_one(make_reloadable):
    recorder = Recorder(upgraded=True)
    order: list[str] = []
    master = make_reloadable("workers = 1\n", notifier=recorder)
    master.arbiter.context.on_serving = lambda: order.append(f"on_serving after {recorder.sent}")
    master.boot()
    assert order == ["on_serving after [['MAINPID', 'READY', 'STATUS']]"]


def test_old_master_is_silent_after_handing_over(make_reloadable):
    recorder = Recorder()
    master = make_reloadable("workers = 1\n", notifier=recorder)
    master.boot()
    recorder.hand_over()  # what handle_successor_serving does, before it stops
    master.signal(signal.SIGTERM)
    master.step()
    assert recorder.sent == [["READY", "STATUS"]]  # no STOPPING=1 for the new master's service


def test_watchdog_every_half_interval_on_the_arbiters_clock(make_reloadable):
    recorder = Recorder(watchdog_usec=2_000_000)
    master = make_reloadable("workers = 1\n", notifier=recorder)
    master.boot()
    pings = sum(m == ["WATCHDOG"] for m in recorder.sent)
    assert pings == 1  # due at once, then every second
    assert master.arbiter._next_timeout() == 1.0  # the loop wakes up for the next one
    master.os.now += 1.0
    master.step()
    assert sum(m == ["WATCHDOG"] for m in recorder.sent) == 2


def test_socket_address() -> None:
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert socket_address("@abstract/name") == b"\0abstract/name"
    assert socket_address("") is None
    assert socket_address("vsock:2:1234") is None


def test_one_datagram_to_the_socket_and_none_without_it() -> None:
    name = f"preforkd-notify-unit-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(b"\0" + name.encode())
        notifier = Notifier.from_environ({"NOTIFY_SOCKET": "@" + name})
        notifier.update(False, False, True, 1, 4)
        assert receiver.recv(4096) == b"READY=1\nSTATUS=serving: generation 1, 4 worker(s)\n"
    Notifier.from_environ({}).update(True, False, False, 1, 1)  # no socket: nothing, no error


def test_unreachable_socket_is_not_fatal(caplog) -> None:
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": "/nonexistent/notify"})
    notifier.update(False, False, True, 1, 1)
    notifier.update(True, False, False, 1, 1)
    warnings = [m for m in caplog.messages if "cannot notify systemd" in m]
    assert len(warnings) == 1


def test_watchdog_pid_of_another_process() -> None:
    env = {"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1000000"}
    assert Notifier.from_environ({**env, "WATCHDOG_PID": str(os.getpid())}).watchdog_at == 0.0
    assert Notifier.from_environ({**env, "WATCHDOG_PID": "1"}).watchdog_at is None
    assert Notifier.from_environ({**env, "WATCHDOG_PID": "1"}, upgraded=True).watchdog_at == 0.0
