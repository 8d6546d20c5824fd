"""Listeners on real sockets: 127.0.0.1, ::1, unix paths, inherited descriptors."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import textwrap

import pytest

from preforkd.errors import BindError
from preforkd.master.sockets import (
    FdAddress,
    TcpAddress,
    UnixAddress,
    close_listeners,
    open_listeners,
    parse_bind,
    systemd_listen_fds,
)


def _has_ipv6() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(not _has_ipv6(), reason="no IPv6 loopback")


@pytest.fixture
def listeners():
    opened = []

    def open_(*binds, backlog=16, environ=None):
        result = open_listeners(binds, backlog, environ={} if environ is None else environ)
        opened.extend(result)
        return result

    yield open_
    close_listeners(opened)


@pytest.fixture
def short_tmp(tmp_path_factory):
    """A short directory: unix socket paths are limited to ~107 bytes."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="pfd") as path:
        yield path


def test_parse_bind():
    assert parse_bind("127.0.0.1:80") == TcpAddress("127.0.0.1:80", "127.0.0.1", 80, False)
    assert parse_bind("localhost:0") == TcpAddress("localhost:0", "localhost", 0, False)
    assert parse_bind(":8000") == TcpAddress(":8000", "", 8000, False)
    assert parse_bind("[::1]:8000") == TcpAddress("[::1]:8000", "::1", 8000, True)
    assert parse_bind("unix:/run/a.sock") == UnixAddress("unix:/run/a.sock", "/run/a.sock")
    assert parse_bind("fd://3") == FdAddress("fd://3", 3)


@pytest.mark.parametrize(
    "text",
    [
        "8000",
        "127.0.0.1",
        "127.0.0.1:http",
        "1.2.3.4:70000",
        "::1:80",
        "[::1:80",
        "unix:",
        "fd://x",
    ],
)
def test_parse_errors_name_the_address(text):
    with pytest.raises(BindError, match=r"is not HOST:PORT|IPv6|unix:|fd://"):
        parse_bind(text)


def test_nothing_is_bound_when_one_address_is_invalid(listeners):
    with pytest.raises(BindError):
        listeners("127.0.0.1:0", "nonsense")


def test_port_0_gets_a_real_port_and_accepts(listeners):
    (listener,) = listeners("127.0.0.1:0")
    host, port = listener.sock.getsockname()
    assert (host, listener.name) == ("127.0.0.1", f"127.0.0.1:{port}")
    assert port != 0
    assert listener.sock.getblocking() is False
    assert listener.sock.get_inheritable() is False
    assert listener.sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass


def test_several_binds(listeners, short_tmp):
    path = os.path.join(short_tmp, "s.sock")
    result = listeners("127.0.0.1:0", f"unix:{path}")
    assert [s.sock.family for s in result] == [socket.AF_INET, socket.AF_UNIX]


@needs_ipv6
def test_ipv6_is_v6_only(listeners):
    (listener,) = listeners("[::1]:0")
    assert listener.sock.family == socket.AF_INET6
    assert listener.sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
    assert listener.name == f"[::1]:{listener.sock.getsockname()[1]}"


def test_address_in_use_is_a_bind_error(listeners):
    (first,) = listeners("127.0.0.1:0")
    port = first.sock.getsockname()[1]
    with pytest.raises(BindError, match=rf"^127\.0\.0\.1:{port}: Address already in use$"):
        listeners(f"127.0.0.1:{port}")


def test_unknown_host_is_a_bind_error(listeners):
    with pytest.raises(BindError, match="cannot resolve"):
        listeners("no-such-host.invalid:0")


def test_unix_socket_is_created_with_the_umask_and_removed_on_close(short_tmp):
    path = os.path.join(short_tmp, "app.sock")
    old = os.umask(0o007)
    try:
        (listener,) = open_listeners([f"unix:{path}"], 16, environ={})
    finally:
        os.umask(old)
    assert stat.S_ISSOCK(os.lstat(path).st_mode)
    assert stat.S_IMODE(os.lstat(path).st_mode) == 0o770
    assert listener.name == f"unix:{path}"
    with socket.socket(socket.AF_UNIX) as client:
        client.connect(path)
    close_listeners([listener])
    assert not os.path.exists(path)


def test_close_leaves_a_socket_file_that_is_not_ours(short_tmp):
    path = os.path.join(short_tmp, "app.sock")
    (listener,) = open_listeners([f"unix:{path}"], 16, environ={})
    os.unlink(path)
    with socket.socket(socket.AF_UNIX) as other:
        other.bind(path)  # someone else's socket now
        close_listeners([listener])
        assert os.path.exists(path)


def test_stale_unix_socket_file_is_replaced(listeners, short_tmp):
    path = os.path.join(short_tmp, "app.sock")
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(path)
    dead.close()  # the file stays, nobody accepts on it
    listeners(f"unix:{path}")
    with socket.socket(socket.AF_UNIX) as client:
        client.connect(path)


def test_live_unix_socket_is_refused(listeners, short_tmp):
    path = os.path.join(short_tmp, "app.sock")
    with socket.socket(socket.AF_UNIX) as live:
        live.bind(path)
        live.listen(1)
        with pytest.raises(BindError, match="address already in use"):
            listeners(f"unix:{path}")
        assert os.path.exists(path)


def test_unix_path_that_is_not_a_socket_is_refused(listeners, short_tmp):
    path = os.path.join(short_tmp, "file")
    with open(path, "w") as file:
        file.write("precious")
    with pytest.raises(BindError, match="not a socket"):
        listeners(f"unix:{path}")
    with open(path) as file:
        assert file.read() == "precious"


def test_fd_inherits_a_listening_socket(listeners):
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        bound.listen(8)
        fd = os.dup(bound.fileno())
    (listener,) = listeners(f"fd://{fd}")
    port = listener.sock.getsockname()[1]
    assert listener.sock.family == socket.AF_INET
    assert listener.sock.fileno() == fd
    assert listener.name == f"127.0.0.1:{port} (fd://{fd})"
    assert listener.sock.getblocking() is False


def test_fd_that_is_not_listening_is_refused(listeners):
    with socket.socket() as unbound:
        with pytest.raises(BindError, match="not a listening socket"):
            listeners(f"fd://{unbound.fileno()}")
        assert unbound.fileno() != -1  # left open for its owner


def test_fd_that_is_not_a_socket_is_refused(listeners, tmp_path):
    with open(tmp_path / "f", "w") as file:
        fd = file.fileno()
        with pytest.raises(BindError, match=rf"^fd://{fd}: Socket operation on non-socket"):
            listeners(f"fd://{fd}")


def test_fd_that_is_closed_is_refused(listeners):
    fd = os.dup(0)
    os.close(fd)
    with pytest.raises(BindError, match="Bad file descriptor"):
        listeners(f"fd://{fd}")


def test_systemd_variables_for_another_pid_are_ignored():
    environ = {"LISTEN_PID": "1", "LISTEN_FDS": "2"}
    assert systemd_listen_fds(environ, 12345) == []
    assert environ == {"LISTEN_PID": "1", "LISTEN_FDS": "2"}


def test_systemd_variables_for_us_are_consumed():
    environ = {"LISTEN_PID": "77", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "a:b", "X": "y"}
    assert systemd_listen_fds(environ, 77) == [3, 4]
    assert environ == {"X": "y"}


_ACTIVATED = textwrap.dedent(
    """
    import fcntl, json, os, sys
    from preforkd.master.sockets import close_listeners, open_listeners
    high = [fcntl.fcntl(int(fd), fcntl.F_DUPFD, 100) for fd in sys.argv[1:]]
    for target, fd in enumerate(high, start=3):
        os.dup2(fd, target)
        os.close(fd)
    os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS=str(len(sys.argv) - 1))
    listeners = open_listeners(["127.0.0.1:1"], 16)
    print(json.dumps({
        "names": [l.name for l in listeners],
        "fds": [l.sock.fileno() for l in listeners],
        "env": [k for k in os.environ if k.startswith("LISTEN_")],
    }))
    close_listeners(listeners)
    """
)


def test_systemd_socket_activation_uses_fds_from_3(short_tmp):
    path = os.path.join(short_tmp, "act.sock")
    tcp = socket.create_server(("127.0.0.1", 0))
    unix = socket.socket(socket.AF_UNIX)
    unix.bind(path)
    unix.listen(1)
    port = tcp.getsockname()[1]
    with tcp, unix:
        fds = [tcp.fileno(), unix.fileno()]
        out = subprocess.run(
            [sys.executable, "-c", _ACTIVATED, *map(str, fds)],
            pass_fds=fds,
            capture_output=True,
            check=True,
            timeout=60,
            cwd=os.getcwd(),
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
    result = json.loads(out.stdout)
    assert result == {
        "names": [f"127.0.0.1:{port} (systemd fd 3)", f"unix:{path} (systemd fd 4)"],
        "fds": [3, 4],
        "env": [],
    }
