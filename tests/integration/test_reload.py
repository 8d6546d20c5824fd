"""Reload, upgrade, heartbeat and recycling with real processes, under load.

"Zero failed requests" is checked with :class:`Load`: threads sending requests on fresh
connections (``Connection: close``) one after the other, recording every response and
every error, while the test reloads, upgrades or recycles workers. Every wait is a
deadline loop; every process started is stopped by PID.
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.integration.harness import Preforkd, cmdline, is_alive, wait_for

Start = Callable[..., Preforkd]
NO_PYC = {"PYTHONDONTWRITEBYTECODE": "1"}  # an edit within a second must not hit a stale .pyc

APP = """\
VERSION = {version!r}


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [VERSION.encode()]
"""


def write_app(path: Path, version: str) -> None:
    path.write_text(APP.format(version=version))


def get(port: int, path: str = "/", timeout: float = 10.0) -> httpx.Response:
    with httpx.Client(trust_env=False, timeout=timeout) as client:
        return client.get(f"http://127.0.0.1:{port}{path}", headers={"Connection": "close"})


class Load:
    """Requests on fresh connections from ``threads`` threads for at least ``at_least``
    seconds, until stopped (at most ``limit`` seconds): every response and every error
    is recorded."""

    def __init__(self, port: int, path: str = "/", threads: int = 2, at_least: float = 2.0,
                 limit: float = 30.0) -> None:  # fmt: skip
        self.url = f"http://127.0.0.1:{port}{path}"
        self.responses: list[tuple[int, str]] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._started = time.monotonic()
        self._at_least = at_least
        self._deadline = self._started + limit
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        with httpx.Client(trust_env=False, timeout=10.0) as client:
            while not self._stop.is_set() and time.monotonic() < self._deadline:
                try:
                    response = client.get(self.url, headers={"Connection": "close"})
                    result = (response.status_code, response.text)
                    with self._lock:
                        self.responses.append(result)
                except httpx.HTTPError as exc:
                    with self._lock:
                        self.errors.append(f"{type(exc).__name__}: {exc}")

    def count(self) -> int:
        with self._lock:
            return len(self.responses)

    def saw(self, body: str) -> bool:
        with self._lock:
            return any(text == body for _, text in self.responses)

    def wait_more(self, n: int = 20) -> None:
        target = self.count() + n
        wait_for(lambda: self.count() >= target or self.errors, what=f"{n} more responses")

    def stop(self) -> None:
        wait_for(
            lambda: time.monotonic() - self._started >= self._at_least,
            timeout=self._at_least + 1,
            what=f"{self._at_least}s of load",
        )
        self._stop.set()
        for thread in self._threads:
            thread.join(15)

    def assert_no_failure(self) -> None:
        assert self.errors == [], self.errors[:5]
        assert self.responses, "no response at all"
        bad = [r for r in self.responses if r[0] != 200]
        assert bad == [], bad[:5]


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "site"
    directory.mkdir()
    return directory


def worker_pids(server: Preforkd) -> list[int]:
    """The master's workers, without the file watcher (--reload)."""
    return [pid for pid in server.workers() if cmdline(pid).startswith("preforkd: worker")]


def new_master_pid(server: Preforkd) -> int:
    """The pid of the master a USR2 started, from the old master's log."""
    text = server.wait_log(r"USR2: started a new master \(pid \d+\)")
    match = re.search(r"USR2: started a new master \(pid (\d+)\)", text)
    assert match is not None
    return int(match[1])


def stop_by_pid(pid: int) -> None:
    """End a master we caused to exist (e.g. by USR2) but did not start, and its workers."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    if is_alive(pid):
        os.kill(pid, signal.SIGINT)
        try:
            wait_for(lambda: not is_alive(pid), timeout=10, what=f"pid {pid} to exit")
        except TimeoutError:
            os.kill(pid, signal.SIGKILL)
    for child in map(int, children):
        if is_alive(child):
            os.kill(child, signal.SIGKILL)


# --- HUP ---------------------------------------------------------------------------------


# Both event loops: they accept and create transports differently (a drain bug once hit
# asyncio's selector loop only).
LOOPS = [
    "asyncio",
    pytest.param(
        "uvloop",
        marks=pytest.mark.skipif(importlib.util.find_spec("uvloop") is None,
                                 reason="uvloop is not installed"),
    ),
]  # fmt: skip


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("preload", [False, True], ids=["import-in-worker", "preload"])
def test_hup_loads_new_code_and_config_without_failed_requests(
    start_server: Start, app_dir: Path, preload: bool, loop: str
) -> None:
    write_app(app_dir / "versioned.py", "v1")
    config = app_dir / "preforkd.toml"
    config.write_text(f"workers = 2\npreload = {'true' if preload else 'false'}\n")
    env = {**NO_PYC, "PREFORKD_LOOP": loop}
    server = start_server("versioned:app", "-c", str(config), cwd=app_dir, env=env)
    assert server.port is not None
    old = server.wait_workers(2)
    with Load(server.port) as load:
        load.wait_more()
        write_app(app_dir / "versioned.py", "v2")
        config.write_text(config.read_text().replace("workers = 2", "workers = 3"))
        server.signal(signal.SIGHUP)
        server.wait_log(r"generation 2 is ready \(3 worker\(s\)\); retiring the older")
        wait_for(
            lambda: len(w := server.workers()) == 3 and not set(w) & set(old),
            what="the old workers to be gone",
        )
        load.wait_more()
    assert {text for _, text in load.responses} == {"v1", "v2"}
    assert load.responses[-1][1] == "v2"
    assert "new configuration: --workers '2' -> '3'" in server.log()
    server.check_running()
    load.assert_no_failure()


def test_hup_with_a_broken_app_keeps_the_old_workers(start_server: Start, app_dir: Path) -> None:
    module = app_dir / "versioned.py"
    write_app(module, "v1")
    server = start_server("versioned:app", "-w", "2", cwd=app_dir, env=NO_PYC)
    assert server.port is not None
    old = server.wait_workers(2)
    with Load(server.port) as load:
        load.wait_more()
        module.write_text("VERSION = 'v2'\nraise RuntimeError('broken on purpose')\n")
        server.signal(signal.SIGHUP)
        text = server.wait_log(r"generation 2 failed to boot: worker 1 \(pid \d+\): the appl")
        load.wait_more()
        assert sorted(server.workers()) == sorted(old)
        assert "RuntimeError: broken on purpose" in text
        assert f'File "{module}", line 2' in text  # the worker logged the traceback
        assert "generation 1 keeps serving" in text

        write_app(module, "v3")  # fixed: the next HUP succeeds
        server.signal(signal.SIGHUP)
        server.wait_log(r"generation 3 is ready")
        wait_for(lambda: load.saw("v3"), what="the fixed code to answer")
    assert {text for _, text in load.responses} == {"v1", "v3"}
    server.check_running()
    load.assert_no_failure()


# --- USR2 ---------------------------------------------------------------------------------


def test_usr2_upgrade_keeps_the_port_and_drops_no_request(
    start_server: Start, tmp_path: Path
) -> None:
    pidfile = tmp_path / "preforkd.pid"
    server = start_server("probe:app", "-w", "2", "--pid", str(pidfile))
    assert server.port is not None
    old_master = server.pid
    old_workers = server.wait_workers(2)
    new_master = 0
    try:
        with Load(server.port, "/pid") as load:
            load.wait_more()
            server.signal(signal.SIGUSR2)
            new_master = new_master_pid(server)
            assert server.wait_exit(timeout=15) == 0  # the old master hands over and exits
            load.wait_more()
        assert pidfile.read_text().strip() == str(new_master)
        assert is_alive(new_master)
        served_by = {int(text) for _, text in load.responses}
        assert served_by & set(old_workers), "the old workers served before the upgrade"
        assert served_by - set(old_workers), "the new master's workers served after it"
        assert not any(is_alive(pid) for pid in old_workers)
        log = server.log()
        assert f"listening on 127.0.0.1:{server.port} (inherited)" in log
        assert f"serving: telling the old master (pid {old_master}) to stop" in log
        assert "the new master (pid" in log and "is serving; stopping this one" in log
        load.assert_no_failure()
    finally:
        if new_master:
            stop_by_pid(new_master)


# --- heartbeat and request timeout -------------------------------------------------------


def test_blocked_event_loop_gets_its_stacks_dumped_and_is_replaced(start_server: Start) -> None:
    # /block holds the GIL in C (see apps/stuck.py): the worker's loop stops ticking.
    server = start_server("stuck:app", "-w", "2", "--timeout", "2")
    assert server.port is not None
    port = server.port
    before = server.wait_workers(2)
    with ThreadPoolExecutor(1) as pool:
        blocked = pool.submit(get, port, "/block?seconds=30", 20.0)
        text = server.wait_log(r"was killed: its event loop was blocked", timeout=15)
        with pytest.raises(httpx.HTTPError):  # its worker died under it
            blocked.result(timeout=10)
    silent = (
        r"worker \d+ \(pid (\d+)\) is silent: its event loop has not run for [\d.]+s "
        r"\(--timeout 2s\); sending SIGABRT"
    )
    match = re.search(silent, text)
    assert match is not None, text
    victim = int(match[1])
    assert victim in before
    # faulthandler's dump: every thread, the stuck one in the application's code.
    assert "Fatal Python error: Aborted" in text
    assert re.search(r'File ".*stuck\.py", line \d+ in hold_the_gil', text), text
    assert "Current thread" in text
    wait_for(lambda: len(w := server.workers()) == 2 and victim not in w, what="a replacement")
    assert get(port, "/").status_code == 200
    server.check_running()


def test_request_past_request_timeout_is_logged_and_its_worker_recycled(
    start_server: Start, tmp_path: Path
) -> None:
    server = start_server("stuck:app", "--request-timeout", "1", "--graceful-timeout", "2")
    assert server.port is not None
    port = server.port
    (first,) = server.wait_workers(1)
    mark = tmp_path / "mark"
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(get, port, f"/sleep?seconds=30&mark={mark}", 20.0)
        wait_for(mark.exists, what="the slow request to reach the app")
        text = server.wait_log(rf"worker 1 \(pid {first}\) is draining; starting its replace")
        logged = (
            r"Request GET /sleep\?seconds=30&mark=\S+ has been running for [\d.]+s "
            r"\(--request-timeout 1s\) in thread preforkd-w1"
        )
        assert re.search(logged, text), text
        assert re.search(r'File ".*stuck\.py", line \d+, in app\n\s+time\.sleep', text), text
        # The replacement serves while the old worker finishes; it is gone within
        # --graceful-timeout (the slow request is cut there).
        wait_for(lambda: get(port, "/").text != str(first), what="the replacement to serve")
        wait_for(lambda: not is_alive(first), timeout=6, what="the old worker to exit")
        with pytest.raises(httpx.HTTPError):
            slow.result(timeout=10)
    server.check_running()


# --- max-requests ---------------------------------------------------------------------------


@pytest.mark.parametrize("loop", LOOPS)
def test_max_requests_recycling_drops_no_request(start_server: Start, loop: str) -> None:
    server = start_server(
        "probe:app",
        "-w",
        "2",
        "--max-requests",
        "15",
        "--max-requests-jitter",
        "5",
        "--loop",
        loop,
    )
    assert server.port is not None
    with Load(server.port, "/pid", threads=3) as load:
        wait_for(
            lambda: server.log().count("is draining; starting its replacement") >= 4,
            what="four recycled workers",
        )
    assert len({text for _, text in load.responses}) >= 4
    server.check_running()
    load.assert_no_failure()


# --- crash loop -----------------------------------------------------------------------------


def test_crash_loop_stops_the_master_with_its_exit_code(start_server: Start, tmp_path: Path):
    marker = tmp_path / "broken"
    server = start_server(
        "crashy:app", "--max-boot-failures", "3", env={"PFD_TEST_CRASH_MARKER": str(marker)}
    )
    (worker,) = server.wait_workers(1)
    marker.write_text("from now on, workers cannot start")
    os.kill(worker, signal.SIGKILL)
    assert server.wait_exit() == 6
    log = server.log()
    halted = (
        r"3 workers in a row died before they were ready \(--max-boot-failures 3\); "
        r"last: worker 1 \(pid \d+\): the application failed to load"
    )
    assert re.search(halted, log), log
    assert len(re.findall(r"^RuntimeError: crashy: cannot start", log, re.MULTILINE)) == 3
    assert "next fork in 0.1s" in log and "next fork in 0.2s" in log


# --- --reload / --dev -----------------------------------------------------------------------


def _answer(port: int) -> tuple[int, str]:
    """(status, body), or (0, "") if the request failed (e.g. during a reload)."""
    try:
        response = get(port, "/", timeout=2)
    except httpx.HTTPError:
        return 0, ""
    return response.status_code, response.text


def _body(port: int) -> str:
    return _answer(port)[1]


def test_dev_mode_reloads_on_save_and_survives_a_broken_edit(
    start_server: Start, app_dir: Path
) -> None:
    module = app_dir / "devapp.py"
    write_app(module, "v1")
    server = start_server("devapp:app", "--dev", cwd=app_dir)
    assert server.port is not None
    port = server.port
    server.wait_log(rf"reload: watching {re.escape(str(app_dir))}")
    assert _body(port) == "v1"

    write_app(module, "v2")
    wait_for(lambda: _body(port) == "v2", what="the edit to be served")

    module.write_text(APP.format(version="v3") + "\ndef broken(:\n")
    _, page = wait_for(  # type: ignore[misc]
        lambda: (a := _answer(port))[0] == 500 and a, what="the error page"
    )
    assert f"the application failed to load ({module}:8)" in page
    assert "SyntaxError" in page
    server.wait_log(rf"Failed to load the application at {re.escape(str(module))}:8")

    write_app(module, "v4")  # the next good edit recovers, same master
    wait_for(lambda: _body(port) == "v4", what="the fix to be served")
    server.check_running()
    log = server.log()
    assert re.search(r'"GET / HTTP/1.1" 200', log)  # --dev: the access log on stdout
    assert "[DEBUG]" in log  # and debug logging
    assert "reload: changed: devapp.py" in log


def test_editing_the_config_file_reloads_with_the_new_config(
    start_server: Start, app_dir: Path
) -> None:
    write_app(app_dir / "versioned.py", "v1")
    config = app_dir / "preforkd.toml"
    config.write_text("workers = 1\n")
    server = start_server("versioned:app", "--reload", "-c", str(config), cwd=app_dir)
    server.wait_log(r"reload: watching")
    (first,) = wait_for(lambda: worker_pids(server), what="the worker")  # type: ignore[misc]
    config.write_text("workers = 2\nbacklog = 64\n")
    server.wait_log(r"generation 2 is ready \(2 worker\(s\)\)")
    wait_for(lambda: len(w := worker_pids(server)) == 2 and first not in w, what="new workers")
    watchers = [p for p in server.workers() if cmdline(p).startswith("preforkd: watcher")]
    assert len(watchers) == 1  # the same watcher all along (what it watches is unchanged)
    log = server.log()
    assert "reload: changed: preforkd.toml" in log
    assert "--backlog cannot change on reload" in log
    assert server.port is not None
    assert get(server.port, "/").text == "v1"


@pytest.fixture(autouse=True)
def _bounded(request: pytest.FixtureRequest) -> Iterator[None]:
    started = time.monotonic()
    yield
    assert time.monotonic() - started < 30, f"{request.node.name} took too long"


def test_usr2_keeps_a_worker_count_changed_by_ttin(start_server: Start, tmp_path: Path) -> None:
    """Issue 11: the new master used to start --workers workers, dropping TTIN/TTOU."""
    server = start_server("probe:app", "-w", "2")
    server.wait_workers(2)
    server.signal(signal.SIGTTIN)
    server.wait_workers(3)
    new_master = 0
    try:
        server.signal(signal.SIGUSR2)
        new_master = new_master_pid(server)
        assert server.wait_exit(timeout=15) == 0
        wait_for(lambda: len(worker_pids(_Master(new_master))) == 3,
                 what="three workers under the new master")  # fmt: skip
        assert "USR2: keeping 3 worker(s), as TTIN/TTOU left them" in server.log()
    finally:
        if new_master:
            stop_by_pid(new_master)


class _Master(Preforkd):
    """A master we did not start (the new one after USR2), seen through /proc."""

    def __init__(self, pid: int) -> None:
        self._pid = pid

    @property
    def pid(self) -> int:
        return self._pid


def test_dev_mode_shows_a_request_time_traceback_to_loopback_clients_only(
    start_server: Start,
) -> None:
    """Issue 11: in dev mode an exception at request time shows its traceback, to clients
    on this machine only; outside dev mode never."""
    dev = start_server("probe:app", "--reload")
    assert dev.port is not None
    local = get(dev.port, "/error")
    assert local.status_code == 500
    assert "Traceback (most recent call last)" in local.text and "probe.py" in local.text
    # A client elsewhere (as a trusted proxy on loopback reports it) sees no traceback.
    with httpx.Client(trust_env=False, timeout=10) as client:
        remote = client.get(f"http://127.0.0.1:{dev.port}/error",
                            headers={"X-Forwarded-For": "203.0.113.5"})  # fmt: skip
    assert remote.status_code == 500 and "Traceback" not in remote.text
    prod = start_server("probe:app")
    assert prod.port is not None
    plain = get(prod.port, "/error")
    assert plain.status_code == 500 and "Traceback" not in plain.text
