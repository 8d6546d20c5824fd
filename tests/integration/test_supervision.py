"""The master supervising real workers: respawn, signals, failed boots, titles, pid file.

Every test starts its own `python -m preforkd` through the ``start_server`` fixture, which
stops it afterwards; every wait is a deadline loop from the harness.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import signal
import socket
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.integration.harness import Preforkd, cmdline, is_alive, wait_for

Start = Callable[..., Preforkd]
HAS_UVLOOP = importlib.util.find_spec("uvloop") is not None


def get(port: int, path: str, timeout: float = 10.0) -> httpx.Response:
    """One request on a fresh connection (no proxies from the environment)."""
    with httpx.Client(trust_env=False, timeout=timeout) as client:
        return client.get(f"http://127.0.0.1:{port}{path}", headers={"Connection": "close"})


def served(port: int) -> bool:
    """True if a new connection gets an answer within a short time."""
    try:
        return get(port, "/hello", timeout=0.3).status_code == 200
    except httpx.HTTPError:
        return False


def assert_serving(port: int, n: int = 5) -> None:
    for _ in range(n):
        response = get(port, "/hello")
        assert response.status_code == 200
        assert response.text == "hello"


def start_slow(pool: ThreadPoolExecutor, server: Preforkd, mark: Path,
               seconds: float) -> Future[httpx.Response]:  # fmt: skip
    """Start /slow in a thread and return once the request is inside the application."""
    assert server.port is not None
    future = pool.submit(get, server.port, f"/slow?seconds={seconds}&mark={mark}", 30)
    wait_for(lambda: mark.exists() or future.done(), what="the slow request to reach the app")
    assert not future.done(), future.result()
    return future


# --- respawn ---------------------------------------------------------------------------


def test_sigkilled_worker_is_respawned(start_server: Start) -> None:
    server = start_server("probe:app", "-w", "2")
    before = server.wait_workers(2)
    victim = before[0]
    slot = wait_for(lambda: re.search(r"preforkd: worker (\d+)", cmdline(victim)), what="its title")
    assert isinstance(slot, re.Match)

    os.kill(victim, signal.SIGKILL)

    server.wait_log(
        rf"worker {slot[1]} \(pid {victim}\) was killed by signal SIGKILL "
        r"\(perhaps out of memory\?\)"
    )
    wait_for(lambda: len(w := server.workers()) == 2 and victim not in w, what="a replacement")
    after = server.workers()
    (new,) = set(after) - set(before)
    assert before[1] in after
    # The replacement takes the slot of the worker it replaces, and becomes ready.
    server.wait_log(rf"booting worker {slot[1]} \(pid {new}\)")
    server.wait_log(rf"worker {slot[1]} \(pid {new}\) is ready")
    assert server.port is not None
    assert_serving(server.port)
    server.check_running()


def test_worker_that_exits_by_itself_is_replaced(start_server: Start) -> None:
    server = start_server("control:app", "-w", "2")
    before = server.wait_workers(2)
    assert server.port is not None

    with pytest.raises(httpx.HTTPError):  # the worker dies before it answers
        get(server.port, "/exit?code=7")

    text = server.wait_log(r"worker \d+ \(pid \d+\) exited with code 7")
    match = re.search(r"worker \d+ \(pid (\d+)\) exited with code 7", text)
    assert match is not None
    dead = int(match[1])
    assert dead in before
    wait_for(lambda: len(w := server.workers()) == 2 and dead not in w, what="a replacement")
    assert_serving(server.port)
    server.check_running()
    assert "before it was ready" not in server.log()


def test_max_requests_recycles_without_dropping_requests(start_server: Start) -> None:
    server = start_server("probe:app", "--max-requests", "2")
    assert server.port is not None
    first = server.wait_workers(1)[0]
    pids = set()
    for _ in range(5):
        response = get(server.port, "/pid")
        assert response.status_code == 200
        pids.add(int(response.text))
    server.wait_log("Served 2 requests: recycling this worker")
    assert first in pids
    assert len(pids) >= 2  # at least one recycled worker and its replacement answered
    server.check_running()


# --- stopping --------------------------------------------------------------------------


def test_term_finishes_in_flight_request_then_exits_0(start_server: Start, tmp_path: Path) -> None:
    server = start_server("control:app", "--graceful-timeout", "3")
    port = server.port
    assert port is not None
    with ThreadPoolExecutor(1) as pool:
        slow = start_slow(pool, server, tmp_path / "mark", 1.5)
        started = time.monotonic()
        server.signal(signal.SIGTERM)
        server.wait_log("TERM: graceful stop")
        # Once the stop has begun, new connections are no longer served.
        wait_for(lambda: not served(port), timeout=5, what="new connections to be refused")
        response = slow.result(timeout=10)
    assert response.status_code == 200
    assert response.text == "slow done"
    assert server.wait_exit(timeout=5) == 0
    assert time.monotonic() - started < 3.0  # well within the graceful timeout
    assert "did not stop in time" not in server.log()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_term_kills_request_slower_than_graceful_timeout(
    start_server: Start, tmp_path: Path
) -> None:
    server = start_server("control:app", "--graceful-timeout", "1")
    with ThreadPoolExecutor(1) as pool:
        slow = start_slow(pool, server, tmp_path / "mark", 30)
        started = time.monotonic()
        server.signal(signal.SIGTERM)
        assert server.wait_exit(timeout=6) == 0
        elapsed = time.monotonic() - started
        with pytest.raises(httpx.HTTPError):  # cut off at the deadline, never answered
            slow.result(timeout=10)
    assert 0.85 <= elapsed < 5.0  # the worker gives up a tenth early (worker_drain_time)
    log = server.log()
    assert "Graceful timeout: cutting 1 request(s) in flight" in log, log
    assert "did not stop in time" not in log  # it exited by itself, before SIGKILL


def test_int_stops_quickly(start_server: Start, tmp_path: Path) -> None:
    server = start_server("control:app", "-w", "2")  # default graceful timeout: 30s
    with ThreadPoolExecutor(1) as pool:
        slow = start_slow(pool, server, tmp_path / "mark", 30)
        started = time.monotonic()
        server.signal(signal.SIGINT)
        assert server.wait_exit(timeout=8) == 0
        elapsed = time.monotonic() - started
        with pytest.raises(httpx.HTTPError):
            slow.result(timeout=10)
    assert elapsed < 4.0
    assert "INT: quick stop" in server.log()


def test_second_term_stops_quickly(start_server: Start, tmp_path: Path) -> None:
    server = start_server("control:app")  # default graceful timeout: 30s
    with ThreadPoolExecutor(1) as pool:
        slow = start_slow(pool, server, tmp_path / "mark", 30)
        started = time.monotonic()
        server.signal(signal.SIGTERM)
        server.wait_log("TERM: graceful stop")
        server.signal(signal.SIGTERM)
        assert server.wait_exit(timeout=8) == 0
        with pytest.raises(httpx.HTTPError):
            slow.result(timeout=10)
    assert time.monotonic() - started < 4.0
    assert "TERM again: stopping quickly" in server.log()


# --- TTIN / TTOU / USR1 ------------------------------------------------------------------


def test_ttin_ttou_change_the_number_of_workers(start_server: Start) -> None:
    server = start_server("probe:app")
    (first,) = server.wait_workers(1)
    server.signal(signal.SIGTTIN)
    server.wait_workers(2)
    server.signal(signal.SIGTTIN)
    server.wait_workers(3)
    # Retire only serving workers: a TERM that reaches a worker just after it reported
    # ready can be lost (test_term_right_after_ready_is_not_lost).
    server.wait_log(r"Worker \d \(pid \d+\) serving", count=3)
    server.signal(signal.SIGTTOU)
    server.wait_workers(2)
    server.signal(signal.SIGTTOU)
    server.wait_workers(1)
    server.signal(signal.SIGTTOU)  # never below one
    server.wait_log("TTOU: already down to one worker")
    assert server.workers() == [first]  # the highest slots were retired, slot 1 stays
    server.wait_log(r"worker \d+ \(pid \d+\) stopped", count=2)
    assert server.port is not None
    assert_serving(server.port)


def _open_paths(pid: int) -> set[str]:
    paths: set[str] = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return paths
    for fd in fds:
        with contextlib.suppress(OSError):
            paths.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
    return paths


def test_usr1_reopens_the_access_log(start_server: Start, tmp_path: Path) -> None:
    access = tmp_path / "access.log"
    rotated = tmp_path / "access.log.1"
    server = start_server("probe:app", "-w", "2", "--access-logfile", str(access))
    workers = server.wait_workers(2)
    assert server.port is not None
    assert get(server.port, "/hello?before-rotation").status_code == 200
    wait_for(lambda: "before-rotation" in access.read_text(), what="the first access line")

    access.rename(rotated)  # what logrotate does
    server.signal(signal.SIGUSR1)
    server.wait_log("USR1: log files reopened")
    wait_for(
        lambda: all(
            str(access) in (paths := _open_paths(pid)) and str(rotated) not in paths
            for pid in workers
        ),
        what="every worker to reopen the access log",
    )
    for _ in range(4):
        assert get(server.port, "/hello?after-rotation").status_code == 200
    wait_for(lambda: access.read_text().count("after-rotation") == 4, what="the new lines")
    old = rotated.read_text()
    assert "before-rotation" in old
    assert "after-rotation" not in old
    assert server.workers() == workers  # the workers were not restarted for it


def test_usr1_reopens_the_error_log(start_server: Start, tmp_path: Path) -> None:
    errors = tmp_path / "error.log"
    rotated = tmp_path / "error.log.1"
    server = start_server("probe:app", "--error-logfile", str(errors))
    (worker,) = server.wait_workers(1)
    wait_for(lambda: "is ready" in errors.read_text(), what="the master's log lines")

    errors.rename(rotated)
    server.signal(signal.SIGUSR1)
    wait_for(errors.exists, what="a new error log")
    wait_for(lambda: "USR1: log files reopened" in errors.read_text(), what="the USR1 line")
    wait_for(lambda: str(rotated) not in _open_paths(worker), what="the worker to reopen it")
    server.signal(signal.SIGTTIN)  # something new for the master and a worker to log
    server.wait_workers(2)
    wait_for(lambda: "Worker 2" in errors.read_text(), what="the new worker's line")
    old = rotated.read_text()
    assert "is ready" in old
    assert "USR1" not in old and "TTIN" not in old and "Worker 2" not in old


def test_usr1_while_a_worker_loads_the_app(start_server: Start, tmp_path: Path) -> None:
    """USR1 (logrotate) must not kill a worker that is still importing the application."""
    mark, release = tmp_path / "importing", tmp_path / "release"
    env = {"PFD_TEST_IMPORT_MARK": str(mark), "PFD_TEST_IMPORT_RELEASE": str(release)}
    server = start_server("gated_import:app", "-w", "2", env=env, wait=False)
    wait_for(mark.exists, what="worker 1 to start importing the app")
    (booting,) = server.workers()
    server.signal(signal.SIGUSR1)
    server.wait_log("USR1: log files reopened")
    release.touch()
    server.wait_serving()
    server.wait_workers(2)
    assert booting in server.workers()
    server.signal(signal.SIGUSR1)  # and once they are serving, USR1 still reaches them
    server.wait_log("USR1: log files reopened", count=2)
    assert_serving(server.port or 0)
    assert "killed by signal SIGUSR1" not in server.log()


@pytest.mark.parametrize(
    "loop",
    [
        "asyncio",
        pytest.param(
            "uvloop",
            marks=pytest.mark.skipif(not HAS_UVLOOP, reason="uvloop is not installed"),
        ),
    ],
)
def test_term_right_after_ready_is_not_lost(start_server: Start, tmp_path: Path,
                                            loop: str) -> None:  # fmt: skip
    mark = tmp_path / "termed"
    server = start_server("term_after_ready:app", "--loop", loop, "--graceful-timeout", "20",
                          env={"PFD_TEST_TERM_MARK": str(mark)}, wait=False)  # fmt: skip
    wait_for(mark.exists, what="the hook in term_after_ready to send its TERM")
    termed = int(mark.read_text())
    wait_for(lambda: not is_alive(termed), timeout=3, what="the TERM to stop the worker")
    server.wait_log(rf"\(pid {termed}\) (stopped|exited with code 0)")
    server.wait_serving()  # by its replacement
    (replacement,) = server.wait_workers(1)
    assert replacement != termed


# --- an application that cannot be loaded ------------------------------------------------


@pytest.mark.parametrize("preload", [False, True], ids=["workers", "preload"])
def test_broken_import_exits_4_without_fork_loop(start_server: Start, preload: bool) -> None:
    args = ["-w", "4", *(["--preload"] if preload else [])]
    server = start_server("broken_import:app", *args, wait=False)
    assert server.wait_exit() == 4
    log = server.log()
    assert log.count("Traceback (most recent call last)") == 1, log
    final = re.findall(
        r"^ModuleNotFoundError: No module named 'this_module_does_not_exist_anywhere'$",
        log,
        re.MULTILINE,
    )
    assert len(final) == 1, log
    assert "broken_import.py" in log  # the traceback points at the application's file
    booted = log.count("booting worker")
    assert booted == (0 if preload else 1), log


@pytest.mark.parametrize("preload", [False, True], ids=["workers", "preload"])
@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("probe:nope", "module 'probe' has no attribute 'nope'"),
        ("control:NOT_CALLABLE", "'control:NOT_CALLABLE' is not callable (it is int)"),
    ],
    ids=["missing-attribute", "not-callable"],
)
def test_bad_app_attribute_exits_4(
    start_server: Start, spec: str, message: str, preload: bool
) -> None:
    server = start_server(spec, "-w", "3", *(["--preload"] if preload else []), wait=False)
    assert server.wait_exit() == 4
    log = server.log()
    assert log.count(message) == 1, log
    assert "Traceback" not in log  # not the application's fault: no traceback
    assert log.count("booting worker") <= 1, log


# --- titles, pid file, orphans ------------------------------------------------------------


def test_process_titles(start_server: Start) -> None:
    server = start_server("probe:app", "-w", "2")
    workers = server.wait_workers(2)
    master = f"preforkd: master [probe:app] 127.0.0.1:{server.port} · 2 workers · running"
    wait_for(lambda: cmdline(server.pid) == master, what=f"master title {master!r}")
    title = re.compile(r"preforkd: worker ([12]) \[probe:app\] gen 1 · 0 conns · 0 busy · \d+ req")

    def slots() -> set[str]:
        return {m[1] for pid in workers if (m := title.fullmatch(cmdline(pid)))}

    wait_for(lambda: slots() == {"1", "2"}, what="worker titles")


def test_process_titles_say_what_each_process_is_doing(start_server: Start) -> None:
    """Issue 11: titles updated at most once a second with connections, busy requests,
    requests served; the master's with its workers and state."""
    server = start_server("probe:app", "-w", "1")
    [worker] = server.wait_workers(1)
    assert server.port is not None
    with httpx.Client(trust_env=False) as client:  # one kept-alive connection
        for _ in range(1200):
            client.get(f"http://127.0.0.1:{server.port}/")
        pattern = r"preforkd: worker 1 \[probe:app\] gen 1 · 1 conns · 0 busy · 1\.2k req"
        wait_for(lambda: re.fullmatch(pattern, cmdline(worker)) is not None,
                 what="the worker's title to count 1.2k requests")  # fmt: skip
    server.signal(signal.SIGHUP)
    wait_for(lambda: "· reloading" in cmdline(server.pid) or "gen 2" in _titles(server),
             what="the master to show the reload")  # fmt: skip
    wait_for(lambda: cmdline(server.pid).endswith("· 1 workers · running") and
             "gen 2" in _titles(server), what="generation 2 running")  # fmt: skip


def _titles(server: Preforkd) -> str:
    return " ".join(cmdline(pid) for pid in server.workers())


def test_pid_file_written_and_removed(start_server: Start, tmp_path: Path) -> None:
    pidfile = tmp_path / "preforkd.pid"
    server = start_server("probe:app", "--pid", str(pidfile))
    assert pidfile.read_text().strip() == str(server.pid)
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    assert not pidfile.exists()


def test_workers_exit_when_the_master_is_killed(start_server: Start) -> None:
    server = start_server("probe:app", "-w", "2")
    workers = server.wait_workers(2)
    assert server.proc is not None
    try:
        server.proc.kill()
        server.proc.wait(5)
        wait_for(
            lambda: not any(is_alive(pid) for pid in workers),
            timeout=5,
            what="the orphaned workers to exit",
        )
    finally:
        for pid in workers:  # ours: clean up by PID whatever happened
            if is_alive(pid):
                os.kill(pid, signal.SIGKILL)
