"""USR2: the old master starts a new one on the same sockets and stops once it serves."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys

import pytest

from preforkd import errors
from preforkd.master import arbiter as arbiter_module
from preforkd.master.arbiter import Context, Phase
from preforkd.master.reload import Origin
from preforkd.master.sockets import Listener, bind_tcp, bind_unix, parse_bind
from preforkd.master.upgrade import (
    ENV_VAR,
    Inheritance,
    InheritedSocket,
    adopt_listeners,
    notify_predecessor,
    take_inheritance,
)
from preforkd.settings import load_config
from tests.master.conftest import Master


@pytest.fixture(autouse=True)
def _no_title(monkeypatch):
    monkeypatch.setattr(arbiter_module, "set_title", lambda title: None)


@pytest.fixture
def upgradable(tmp_path):
    """A master with real listening sockets (a TCP and a unix one) and an origin."""
    listeners = [
        bind_tcp(parse_bind("127.0.0.1:0"), 16),  # type: ignore[arg-type]
        bind_unix(parse_bind(f"unix:{tmp_path}/s.sock"), 16),  # type: ignore[arg-type]
    ]
    argv = ("myapp:app", "-w", "2", "--bind", "127.0.0.1:0")
    origin = Origin(argv, {"PATH": "/bin", "PREFORKD_INTERNAL_X": "1"}, str(tmp_path))
    master = Master(load_config(argv, {}), Context(origin=origin), listeners)
    master.listeners = listeners
    yield master
    master.close()
    for listener in listeners:
        listener.close()


def _usr2(master: Master):
    master.signal(signal.SIGUSR2)
    master.step()
    (program,) = master.os.programs.values()
    return program


def test_usr2_starts_a_new_master_with_the_listening_sockets(upgradable, caplog):
    master = upgradable
    master.boot()
    program = _usr2(master)
    spec = program.spec
    assert spec.argv == (sys.executable, "-m", "preforkd", *master.arbiter.context.origin.argv)
    assert spec.cwd == master.arbiter.context.origin.cwd
    assert "PREFORKD_INTERNAL_X" not in spec.env and spec.env["PATH"] == "/bin"
    inheritance = Inheritance.decode(spec.env[ENV_VAR])
    fds = [listener.sock.fileno() for listener in master.listeners]
    assert [s.fd for s in inheritance.sockets] == fds
    assert inheritance.sockets[1].unlink_path == master.listeners[1].unlink_path
    assert inheritance.predecessor == os.getpid()
    assert inheritance.binds == ("127.0.0.1:0",)
    assert set(spec.pass_fds) == {*fds, inheritance.notify_fd}
    assert f"USR2: started a new master (pid {program.pid}) on the same listening sockets" in (
        caplog.messages
    )
    assert all(master.os.children[p].signals == [] for p in master.os.pids())


def test_old_master_stops_gracefully_once_the_new_one_serves(upgradable, caplog):
    master = upgradable
    pids = master.boot()
    program = _usr2(master)
    notify = program.fds[Inheritance.decode(program.spec.env[ENV_VAR]).notify_fd]
    os.write(notify, b"serving %d\n" % program.pid)
    os.close(notify)
    program.fds.clear()
    master.step()
    assert master.arbiter.handed_over
    assert master.arbiter.phase is Phase.STOPPING
    assert all(master.os.children[p].signals == [signal.SIGTERM] for p in pids)
    assert (
        f"USR2: the new master (pid {program.pid}) is serving; stopping this one gracefully"
    ) in caplog.messages
    for pid in pids:
        master.os.exit(pid, 0)
    assert master.run_until_done() == errors.EXIT_OK


def test_new_master_failing_leaves_the_old_one_serving(upgradable, caplog):
    master = upgradable
    pids = master.boot()
    program = _usr2(master)
    assert len(master.os.private_fds) == 1  # the pipe's read end: closed in new workers
    master.os.exit(program.pid, errors.EXIT_APP_LOAD_ERROR)
    master.step()
    assert master.os.private_fds == set()  # closed: its number may be reused
    assert (
        f"USR2: the new master (pid {program.pid}) exited with code 4 before it served; "
        "this master carries on"
    ) in caplog.messages
    assert master.arbiter.phase is Phase.RUNNING and not master.arbiter.handed_over
    assert all(master.os.children[p].signals == [] for p in pids)
    # A later USR2 may try again.
    master.signal(signal.SIGUSR2)
    master.step()
    assert len(master.os.programs) == 2


def test_usr2_is_refused_while_an_upgrade_or_reload_is_under_way(upgradable, caplog):
    master = upgradable
    master.boot()
    program = _usr2(master)
    master.signal(signal.SIGUSR2)
    master.step()
    assert f"USR2: ignored: the new master (pid {program.pid}) is starting" in caplog.messages
    assert len(master.os.programs) == 1


def test_usr2_during_boot_is_ignored(upgradable, caplog):
    master = upgradable
    master.arbiter.start()
    master.signal(signal.SIGUSR2)
    master.step()
    assert "USR2: ignored while booting" in caplog.messages
    assert master.os.programs == {}


def test_new_master_announces_itself_once_all_workers_are_ready(make_master):
    calls = []
    master = make_master(workers=3)
    master.arbiter.context.on_serving = lambda: calls.append(master.os.now)
    master.arbiter.start()
    master.os.report_ready(master.os.pids()[0])
    master.step()
    assert calls == []  # 1 of 3
    master.os.report_ready(master.os.pids()[1])
    master.step()
    assert calls == []
    master.os.report_ready(master.os.pids()[2])
    master.step()
    assert len(calls) == 1
    master.os.crash(master.os.pids()[0], signal.SIGKILL)
    master.step()
    master.os.report_ready(master.os.pids()[0])
    master.step()
    assert len(calls) == 1  # once


def test_inheritance_round_trip_and_environment_handling():
    inheritance = Inheritance((InheritedSocket(5, None), InheritedSocket(6, "/x.sock")), 9,
                              ("a:1", "unix:/x.sock"), 42)  # fmt: skip
    environ = {ENV_VAR: inheritance.encode(), "OTHER": "1"}
    assert take_inheritance(environ) == inheritance
    assert environ == {"OTHER": "1"}
    assert take_inheritance(environ) is None
    with pytest.raises(errors.BindError, match="PREFORKD_INTERNAL_UPGRADE is malformed"):
        Inheritance.decode(json.dumps({"sockets": 3}))


def test_adopt_listeners_takes_over_inherited_sockets(tmp_path):
    tcp = socket.create_server(("127.0.0.1", 0))
    path = tmp_path / "a.sock"
    unix = socket.socket(socket.AF_UNIX)
    unix.bind(str(path))
    unix.listen()
    fds = [os.dup(tcp.fileno()), os.dup(unix.fileno())]
    inheritance = Inheritance(
        (InheritedSocket(fds[0], None), InheritedSocket(fds[1], str(path))), -1, (), 1
    )
    adopted: list[Listener] = adopt_listeners(inheritance)
    try:
        assert [lst.sock.fileno() for lst in adopted] == fds
        assert adopted[0].name == f"127.0.0.1:{tcp.getsockname()[1]}"
        assert adopted[1].name == f"unix:{path}"
        assert adopted[1].unlink_path == str(path)
        assert not adopted[0].sock.getblocking()
    finally:
        for listener in adopted:
            listener.close()
        tcp.close()
        unix.close()
    assert not path.exists()  # the last master to exit removes the socket file


def test_adopt_listeners_rejects_a_non_listening_descriptor():
    with socket.socket() as plain:
        fd = os.dup(plain.fileno())
        inheritance = Inheritance((InheritedSocket(fd, None),), -1, (), 1)
        with pytest.raises(errors.BindError, match="not a listening socket"):
            adopt_listeners(inheritance)
        os.close(fd)


def test_notify_predecessor_writes_and_closes():
    read_fd, write_fd = os.pipe()
    notify_predecessor(write_fd)
    assert os.read(read_fd, 100) == b"serving %d\n" % os.getpid()
    assert os.read(read_fd, 100) == b""  # closed
    os.close(read_fd)


def test_notify_predecessor_when_it_is_gone(caplog):
    read_fd, write_fd = os.pipe()
    os.close(read_fd)
    notify_predecessor(write_fd)  # EPIPE: logged, no exception
    assert any("could not notify the old master" in m for m in caplog.messages)
