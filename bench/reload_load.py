"""Failed requests through planned restarts, under load: preforkd beside gunicorn.

    python bench/reload_load.py [--requests 30000] [--servers preforkd,gunicorn]

For each server and each kind of restart, starts the server (3 workers, hello app, on
127.0.0.1), drives a bounded client load of ``--requests`` requests (6 threads: half reuse
keep-alive connections as client pools do, half open a new connection per request; the
load of tests/integration/mixed_load.py), and causes the restart while it runs:

- ``hup``: two HUPs (reload), at a third and two thirds of the run;
- ``usr2``: one USR2 (upgrade to a new master on the same sockets) at half the run, then
  the old master is stopped the way the server expects (preforkd: by itself; gunicorn:
  TERM once the new master has written its pid file);
- ``recycle``: --max-requests 400 --max-requests-jitter 50 (workers recycle all along);
- ``ttou``: one TTOU (a worker fewer) at half the run;
- ``term``: a graceful stop (TERM) at 90% of the run; requests sent before are counted,
  connections refused after are not failures (that is how a stopping server sends a load
  balancer elsewhere).

Prints, per server and restart, the requests answered and the requests *sent* that got no
answer (reset, closed, or 5xx). Counts, not speed: machine load does not change them,
only how long the run takes. Only loopback; every process started is stopped by PID.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
PROJECT_DIR = BENCH_DIR.parent
sys.path.insert(0, str(PROJECT_DIR))

from tests.integration.harness import free_port, wait_for  # noqa: E402
from tests.integration.mixed_load import MixedLoad  # noqa: E402

SCENARIOS = ("hup", "usr2", "recycle", "ttou", "term")
RECYCLE = ["--max-requests", "400", "--max-requests-jitter", "50"]


def preforkd_command(port: int, pidfile: Path, recycle: bool) -> list[str]:
    argv = [sys.executable, "-m", "preforkd", "-w", "3", "-b", f"127.0.0.1:{port}"]
    argv += ["--pid", str(pidfile), "--graceful-timeout", "10"]
    return [*argv, *(RECYCLE if recycle else []), "apps:hello"]


def gunicorn_command(port: int, pidfile: Path, recycle: bool) -> list[str] | None:
    venv = Path(os.environ.get("BENCH_VENV") or Path(tempfile.gettempdir()) / "benchvenv")
    gunicorn = venv / "bin" / "gunicorn"
    if not gunicorn.exists():
        return None
    argv = [str(gunicorn), "-w", "3", "-k", "gthread", "--threads", "16"]
    argv += ["-b", f"127.0.0.1:{port}", "--pid", str(pidfile), "--graceful-timeout", "10"]
    argv += ["--log-level", "warning"]
    return [*argv, *(RECYCLE if recycle else []), "apps:hello"]


SERVERS: dict[str, Callable[[int, Path, bool], list[str] | None]] = {
    "preforkd": preforkd_command,
    "gunicorn": gunicorn_command,
}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def run_one(server: str, scenario: str, requests: int, workdir: Path) -> tuple[int, int] | None:
    port = free_port()
    pidfile = workdir / f"{server}-{scenario}.pid"
    argv = SERVERS[server](port, pidfile, scenario == "recycle")
    if argv is None:
        return None
    log = open(workdir / f"{server}-{scenario}.log", "wb")  # noqa: SIM115
    env = {**os.environ, "PYTHONPATH": f"{BENCH_DIR}{os.pathsep}{PROJECT_DIR}"}
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=BENCH_DIR)
    masters = {proc.pid}
    try:
        wait_for(lambda: _read_pid(pidfile) is not None, timeout=30, what=f"{server} to start")
        with MixedLoad(port, "/", limit=600, max_requests=requests) as load:
            load.wait_more(min(1000, requests // 10), timeout=60)
            _restart_during(load, scenario, requests, proc, pidfile, masters)
            wait_for(lambda: load.ok + len(load.failures) >= requests or not load._running(),
                     timeout=600, what="the requests")  # fmt: skip
        return load.ok, len(load.failures)
    finally:
        for pid in masters:
            if _alive(pid):
                os.kill(pid, signal.SIGINT)
        for pid in masters:
            deadline = time.monotonic() + 15
            while _alive(pid) and time.monotonic() < deadline:
                if pid == proc.pid and proc.poll() is not None:
                    break
                time.sleep(0.05)
            if _alive(pid) and pid != proc.pid:
                os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        log.close()


def _restart_during(
    load: MixedLoad, scenario: str, requests: int, proc: subprocess.Popen[bytes],
    pidfile: Path, masters: set[int],
) -> None:  # fmt: skip
    def at(fraction: float) -> None:
        wait_for(lambda: load.ok >= requests * fraction, timeout=600, what=f"{fraction:.0%}")

    if scenario == "hup":
        for fraction in (1 / 3, 2 / 3):
            at(fraction)
            proc.send_signal(signal.SIGHUP)
    elif scenario == "ttou":
        at(0.5)
        proc.send_signal(signal.SIGTTOU)
    elif scenario == "term":
        at(0.9)
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        load.stop()
    elif scenario == "usr2":
        at(0.5)
        proc.send_signal(signal.SIGUSR2)
        # preforkd's new master takes over the pid file; gunicorn's writes PIDFILE.2.
        second = pidfile.with_name(pidfile.name + ".2")

        def new_master() -> int | None:
            pid = _read_pid(second) or _read_pid(pidfile)
            return pid if pid not in (None, proc.pid) else None

        wait_for(lambda: new_master() is not None, timeout=30, what="the new master")
        new = new_master()
        assert new is not None
        masters.add(new)
        # The new master's workers start; preforkd retires the old master by itself,
        # gunicorn's is told to stop once the new one answers.
        at(0.6)
        if proc.poll() is None and "gunicorn" in " ".join(map(str, proc.args)):
            proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=30_000)
    parser.add_argument("--servers", default="preforkd,gunicorn")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="reload-load-") as tmp:
        for scenario in args.scenarios.split(","):
            for server in args.servers.split(","):
                started = time.monotonic()
                result = run_one(server, scenario, args.requests, Path(tmp))
                took = time.monotonic() - started
                if result is None:
                    print(f"{server:9} {scenario:8} not installed", flush=True)
                    continue
                ok, failed = result
                rows.append((server, scenario, ok, failed))
                print(f"{server:9} {scenario:8} answered {ok:7,}  failed {failed:5}"
                      f"  ({took:.0f}s)", flush=True)  # fmt: skip
    print("\n| server | restart | requests answered | failed |\n|---|---|---:|---:|")
    for server, scenario, ok, failed in rows:
        print(f"| {server} | {scenario} | {ok:,} | {failed} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
