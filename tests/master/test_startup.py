"""Start-up: credentials, the pid file, and run()'s early exits with their codes."""

from __future__ import annotations

import os
import pwd
import socket
import stat

import pytest

from preforkd import errors
from preforkd.config import Config
from preforkd.master import main as master_main
from preforkd.master.startup import Credentials, PidFile, resolve_credentials

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


@pytest.fixture
def keep_umask():
    old = os.umask(0o022)
    os.umask(old)
    yield
    os.umask(old)


def test_no_user_no_group():
    assert resolve_credentials(None, None) == Credentials(None, None)


@root_only
def test_user_name_gives_its_uid_and_primary_group():
    entry = pwd.getpwnam("nobody")
    assert resolve_credentials("nobody", None) == Credentials(entry.pw_uid, entry.pw_gid)


@root_only
def test_numeric_ids_and_group_override():
    assert resolve_credentials("0", "12345") == Credentials(0, 12345)
    assert resolve_credentials("54321", None) == Credentials(54321, None)  # no passwd entry


def test_unknown_user_or_group_is_a_config_error():
    with pytest.raises(errors.ConfigError, match="--user no-such-user-x: no such user"):
        resolve_credentials("no-such-user-x", None)
    with pytest.raises(errors.ConfigError, match="--group no-such-group-x: no such group"):
        resolve_credentials(None, "no-such-group-x")


def test_switching_user_without_root_is_a_config_error(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(errors.ConfigError, match="needs root"):
        resolve_credentials("0", None)
    assert resolve_credentials("1000", None) == Credentials(1000, None)


def test_pid_file_is_written_and_removed(tmp_path):
    path = tmp_path / "run" / "master.pid"
    path.parent.mkdir()
    pidfile = PidFile(str(path), umask=0o022)
    pidfile.write()
    assert path.read_text() == f"{os.getpid()}\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert os.listdir(path.parent) == ["master.pid"]
    pidfile.remove()
    assert not path.exists()


def test_pid_file_of_another_process_is_left_alone(tmp_path):
    path = tmp_path / "master.pid"
    pidfile = PidFile(str(path), umask=0o022)
    pidfile.write()
    path.write_text("1\n")
    pidfile.remove()
    assert path.read_text() == "1\n"


def test_run_unknown_user_exits_with_config_error(keep_umask):
    cfg = Config(app="x:app", user="no-such-user-x", binds=("127.0.0.1:0",))
    assert master_main.run(cfg) == errors.EXIT_CONFIG_ERROR


def test_run_bind_error_exits_with_bind_error(keep_umask, caplog):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        cfg = Config(app="x:app", binds=(f"127.0.0.1:{port}",))
        assert master_main.run(cfg) == errors.EXIT_BIND_ERROR
    assert caplog.messages == [f"cannot listen: 127.0.0.1:{port}: Address already in use"]


def test_run_preload_failure_exits_with_app_load_error(keep_umask, tmp_path, monkeypatch, caplog):
    def broken(cfg):
        raise errors.AppLoadError("cannot import 'x'", "Traceback (most recent call last):\n...")

    monkeypatch.setattr(master_main, "preload_app", broken)
    monkeypatch.setattr(master_main, "set_title", lambda title: None)
    sock = tmp_path / "s.sock"
    pid = tmp_path / "m.pid"
    cfg = Config(app="x:app", preload=True, binds=(f"unix:{sock}",), pidfile=str(pid))
    assert master_main.run(cfg) == errors.EXIT_APP_LOAD_ERROR
    assert caplog.messages[-1] == "cannot import 'x'\nTraceback (most recent call last):\n..."
    assert not sock.exists() and not pid.exists()
