"""The command line, the config file and the environment, seen from a real process.

Also every kind of listener (IPv4, IPv6, unix, fd://N, several at once) and every form of
app spec, each checked with a real request.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.harness import (
    APPS,
    ROOT,
    Preforkd,
    free_port,
    run_preforkd,
    wait_for,
)

Start = Callable[..., Preforkd]


def get(url: str, timeout: float = 10.0) -> httpx.Response:
    with httpx.Client(trust_env=False, timeout=timeout) as client:
        return client.get(url)


def uds_get(path: str, target: str, timeout: float = 5.0) -> httpx.Response:
    transport = httpx.HTTPTransport(uds=path)
    with httpx.Client(transport=transport, trust_env=False, timeout=timeout) as client:
        return client.get(f"http://preforkd{target}")


def wait_uds(server: Preforkd, path: str) -> None:
    def answered() -> bool:
        server.check_running()
        try:
            return uds_get(path, "/hello", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(answered, what=f"an answer on unix:{path}")


def ready_count(server: Preforkd) -> int:
    return server.log().count(" is ready")


def wait_settled(server: Preforkd, n: int) -> None:
    """Until the master wants n workers and all n are up and ready."""
    server.wait_log(rf"starting {n} worker\(s\)")
    server.wait_workers(n)
    wait_for(lambda: ready_count(server) >= n, what=f"{n} ready workers")
    assert len(server.workers()) == n
    assert ready_count(server) == n


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: unix socket paths are limited to 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="pfd-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# --- --version, --help ---------------------------------------------------------------------


def _entry_point() -> str:
    """The `preforkd` console script's target, from pyproject.toml."""
    with open(ROOT / "pyproject.toml", "rb") as fh:
        target: str = tomllib.load(fh)["project"]["scripts"]["preforkd"]
    return target


def run_console_script(*args: str) -> subprocess.CompletedProcess[str]:
    """Run `preforkd ARGS` as the installed console script would (it may not be on PATH)."""
    module, _, func = _entry_point().partition(":")
    code = f"import sys; from {module} import {func} as main; sys.argv[0] = 'preforkd'; "
    code += "sys.exit(main())"
    env = {**os.environ, "PYTHONPATH": f"{APPS}{os.pathsep}{ROOT}"}
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=15,
        check=False,
    )


def test_version() -> None:
    from preforkd import __version__

    script = run_console_script("--version")
    module = run_preforkd(["--version"])
    assert script.returncode == module.returncode == 0
    assert script.stdout.strip() == module.stdout.strip() == f"preforkd {__version__}"
    assert script.stderr == module.stderr == ""


def test_help_shows_the_groups() -> None:
    result = run_preforkd(["--help"])
    assert result.returncode == 0
    assert result.stderr == ""
    out = result.stdout
    assert out.startswith("usage: preforkd")
    for group in ("General", "Application", "Server", "Workers", "Timeouts",
                  "Request limits", "Logging", "Process"):  # fmt: skip
        assert f"\n{group}:\n" in out, group
    for text in ("--workers", "PREFORKD_WORKERS", "--bind", "TTIN, TTOU", "USR1"):
        assert text in out
    assert run_console_script("--help").stdout == out


# --- precedence: defaults < file < environment < command line --------------------------------


def test_precedence_file_env_cli(start_server: Start, tmp_path: Path) -> None:
    port = free_port()
    conf = tmp_path / "preforkd.toml"
    conf.write_text(f'workers = 3\nbind = "127.0.0.1:{port}"\ngraceful_timeout = "3s"\n')
    cases: list[tuple[dict[str, str], list[str], int]] = [
        ({}, [], 3),  # the file
        ({"PREFORKD_WORKERS": "2"}, [], 2),  # the environment beats the file
        ({"PREFORKD_WORKERS": "2"}, ["-w", "1"], 1),  # the command line beats both
    ]
    for env, args, expected in cases:
        server = start_server("probe:app", "-c", str(conf), *args, env=env, bind=False,
                              wait=False)  # fmt: skip
        server.port = port  # from the file
        server.wait_serving()
        wait_settled(server, expected)
        assert get(f"http://127.0.0.1:{port}/pid").status_code == 200
        server.signal(signal.SIGTERM)
        assert server.wait_exit() == 0


def test_bind_list_from_the_environment(start_server: Start, short_dir: Path) -> None:
    port = free_port()
    sock = short_dir / "env.sock"
    server = start_server(
        "probe:app", env={"PREFORKD_BIND": f"127.0.0.1:{port},unix:{sock}"}, bind=False,
        wait=False,
    )  # fmt: skip
    server.port = port
    server.wait_serving()
    wait_uds(server, str(sock))


# --- errors: exit non-zero before any worker starts, one message per mistake --------------


def _failed(server: Preforkd, code: int = 2) -> str:
    assert server.wait_exit() == code, server.log()
    log = server.log()
    assert "booting worker" not in log
    if code == 2:  # configuration errors: found before any socket is bound
        assert "listening on" not in log
    return log


def _errors(log: str) -> list[str]:
    return [line for line in log.splitlines() if line.startswith("preforkd: error:")]


def test_misspelt_flag(start_server: Start) -> None:
    server = start_server("probe:app", "--wokers", "2", wait=False)
    log = _failed(server)
    assert _errors(log) == [
        "preforkd: error: unrecognized option --wokers (did you mean --workers?)"
    ]
    assert "listening on" not in log


def test_misspelt_toml_key(start_server: Start, tmp_path: Path) -> None:
    conf = tmp_path / "bad.toml"
    conf.write_text("wrokers = 2\n")
    server = start_server("probe:app", "-c", str(conf), wait=False)
    (error,) = _errors(_failed(server))
    assert str(conf) in error
    assert "unknown setting 'wrokers' (did you mean 'workers'?)" in error


def test_misspelt_environment_variable(start_server: Start) -> None:
    server = start_server("probe:app", env={"PREFORKD_WROKERS": "2"}, wait=False)
    assert _errors(_failed(server)) == [
        "preforkd: error: unknown environment variable PREFORKD_WROKERS "
        "(did you mean PREFORKD_WORKERS?)"
    ]


def test_bad_value(start_server: Start) -> None:
    server = start_server("probe:app", "--workers", "x", wait=False)
    assert _errors(_failed(server)) == ["preforkd: error: --workers: 'x' is not an integer"]


def test_several_errors_reported_together(start_server: Start, tmp_path: Path) -> None:
    conf = tmp_path / "bad.toml"
    conf.write_text('wrokers = 2\nthreads = 0\nloop = "tokio"\n')
    server = start_server(
        "probe:app", "-c", str(conf), "--timeout", "soon", "--backlog", "0",
        env={"PREFORKD_KEEP_ALIVE": "forever", "PREFORKD_WROKERS": "1"}, wait=False,
    )  # fmt: skip
    errors = "\n".join(_errors(_failed(server)))
    for text in ("wrokers", "threads", "loop", "--timeout", "--backlog",
                 "PREFORKD_KEEP_ALIVE", "PREFORKD_WROKERS"):  # fmt: skip
        assert text in errors, errors
    assert len(errors.splitlines()) == 7, errors


def test_missing_app(start_server: Start) -> None:
    server = start_server("--workers", "2", wait=False)  # argv without any APP
    (error,) = _errors(_failed(server))
    assert "no application given" in error


def test_address_in_use_exits_3(start_server: Start) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        server = start_server("probe:app", "-b", f"127.0.0.1:{port}", bind=False, wait=False)
        log = _failed(server, code=3)
    lines = [line for line in log.splitlines() if "cannot listen" in line]
    assert len(lines) == 1, log
    assert f"127.0.0.1:{port}" in lines[0]
    assert "in use" in lines[0]


def test_live_unix_socket_is_not_stolen(start_server: Start, short_dir: Path) -> None:
    path = short_dir / "live.sock"
    with socket.socket(socket.AF_UNIX) as holder:
        holder.bind(str(path))
        holder.listen(1)
        server = start_server("probe:app", "-b", f"unix:{path}", bind=False, wait=False)
        log = _failed(server, code=3)
        assert path.exists()
    assert f"unix:{path}" in log
    assert "already in use" in log


# --- listeners -----------------------------------------------------------------------------


def _ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback (::1) on this machine")
def test_ipv6_bind(start_server: Start) -> None:
    port = free_port("::1")
    server = start_server("probe:app", "-b", f"[::1]:{port}", bind=False, wait=False)
    server.wait_serving(host="::1", port=port)
    response = get(f"http://[::1]:{port}/environ")
    assert response.status_code == 200
    environ = response.json()
    assert environ["REMOTE_ADDR"] == "::1"
    assert environ["SERVER_PORT"] == str(port)


def test_unix_bind(start_server: Start, short_dir: Path) -> None:
    path = short_dir / "s.sock"
    server = start_server("probe:app", "-b", f"unix:{path}", bind=False, wait=False)
    wait_uds(server, str(path))
    assert uds_get(str(path), "/hello").text == "hello"
    # a raw AF_UNIX client as well
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(str(path))
        sock.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200")
    assert data.endswith(b"hello")
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    assert not path.exists()  # the master removes the socket file it created


def test_two_binds(start_server: Start, short_dir: Path) -> None:
    path = short_dir / "two.sock"
    server = start_server("probe:app", "-b", f"unix:{path}", "-w", "2")  # plus 127.0.0.1
    wait_uds(server, str(path))
    assert get(f"http://127.0.0.1:{server.port}/hello").text == "hello"
    assert uds_get(str(path), "/hello").text == "hello"
    log = server.log()
    assert f"listening on unix:{path}" in log
    assert f"listening on 127.0.0.1:{server.port}" in log


def test_fd_bind(start_server: Start) -> None:
    sock = socket.socket()
    try:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        port = sock.getsockname()[1]
        fd = sock.fileno()
        server = start_server("probe:app", "-b", f"fd://{fd}", bind=False, wait=False,
                              pass_fds=(fd,))  # fmt: skip
    finally:
        sock.close()  # the server holds its own copy now
    server.port = port
    server.wait_serving()
    assert get(f"http://127.0.0.1:{port}/hello").text == "hello"
    assert f"listening on 127.0.0.1:{port} (fd://{fd})" in server.log()


def test_stale_unix_socket_is_replaced(start_server: Start, short_dir: Path) -> None:
    path = short_dir / "stale.sock"
    with socket.socket(socket.AF_UNIX) as dead:  # bound, then closed: a dead server's file
        dead.bind(str(path))
    assert path.exists()
    server = start_server("probe:app", "-b", f"unix:{path}", bind=False, wait=False)
    wait_uds(server, str(path))
    assert f"removed stale socket file {path}" in server.log()


# --- app specs -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "body"),
    [
        ("factory:create_app()", "factory"),
        ("factory:create_app('hi')", "hi"),
        ("factory:create_app(greeting='kw')", "kw"),
        ("probe", "hello"),  # finds 'application'
        ("wrapped:app", "wrapped"),  # app(*args) whose __wrapped__ takes one argument
    ],
)
def test_app_specs(start_server: Start, spec: str, body: str) -> None:
    server = start_server(spec)
    assert get(f"http://127.0.0.1:{server.port}/hello").text == body


def test_chdir_and_pythonpath(start_server: Start, tmp_path: Path) -> None:
    project = tmp_path / "project"
    lib = tmp_path / "lib"
    project.mkdir()
    lib.mkdir()
    (lib / "pfd_helper_lib.py").write_text('GREETING = "from the pythonpath"\n')
    (project / "pfd_chdir_app.py").write_text(
        "import os\n"
        "from pfd_helper_lib import GREETING\n\n"
        "def app(environ, start_response):\n"
        '    start_response("200 OK", [("Content-Type", "text/plain")])\n'
        '    return [f"{GREETING} in {os.getcwd()}".encode()]\n'
    )
    server = start_server("pfd_chdir_app:app", "--chdir", str(project), "--pythonpath", str(lib))
    assert server.cwd == ROOT  # found only through --chdir and --pythonpath
    assert get(f"http://127.0.0.1:{server.port}/").text == f"from the pythonpath in {project}"


def test_a_bind_with_a_scheme_says_what_a_bind_takes() -> None:
    """Issue 11: '-b http://127.0.0.1:8000' reported an IPv6 error."""
    result = run_preforkd(["-b", "http://127.0.0.1:8000", "examples.hello:app"])
    assert result.returncode == 2
    assert "a bind address takes no scheme: HOST:PORT" in result.stderr
    assert "goes in brackets" not in result.stderr


def test_a_bind_without_a_host_listens_on_all_interfaces(start_server: Start) -> None:
    port = free_port()
    server = start_server("probe:app", "-b", f":{port}", bind=False, wait=False)
    server.wait_serving(port=port)
    assert f"listening on 0.0.0.0:{port}" in server.log()


def test_the_example_config_file_runs_as_the_readme_says(start_server: Start) -> None:
    """Issue 11: 'preforkd -c conf/preforkd.toml' had no app (every key commented out)."""
    port = free_port()
    server = start_server("-c", "conf/preforkd.toml", "-b", f"127.0.0.1:{port}",
                          bind=False, wait=False)  # fmt: skip
    server.wait_serving(port=port)
    assert get(f"http://127.0.0.1:{port}/").text == "Hello, world!\n"


def test_the_startup_log_says_what_the_server_runs_with(start_server: Start) -> None:
    """Issue 11: version, Python, loop, native accelerators, workers, threads, protocols and
    TLS per listener."""
    server = start_server("probe:app", "-w", "2", "--loop", "asyncio")
    line = server.wait_log(r"preforkd \S+ on \w+ 3\.")
    assert re.search(
        rf"preforkd \S+ on \w+ 3\.\d+\.\d+, asyncio loop, native: [\w, ()]+, "
        rf"2 worker\(s\) x up to 64 threads, "
        rf"app probe:app; serving 127\.0\.0\.1:{server.port} h1\+h2 \(plain\)",
        line,
    ), line
