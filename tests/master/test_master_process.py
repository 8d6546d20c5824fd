"""The real master in a subprocess, with a tiny stand-in worker: signals, fork, reaping.

The stand-in replaces run_worker (the real worker is tested elsewhere): it reports ready
and sleeps until TERM, or fails to load the app, as FAKE_WORKER says.
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from preforkd import errors

_MASTER = textwrap.dedent(
    """
    import logging, os, signal, sys, time
    from preforkd.config import Config
    from preforkd.master import main, process
    from preforkd.worker.main import notify_ready

    def stand_in_worker(spec):
        signal.signal(signal.SIGTERM, lambda *args: sys.exit(0))
        if os.environ["FAKE_WORKER"] == "broken-app":
            return 4
        notify_ready(spec.notify_fd)
        while os.getppid() == spec.master_pid:
            time.sleep(0.1)
        return 0

    process.run_worker = stand_in_worker
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    cfg = Config(app="fake:app", workers=2, binds=("127.0.0.1:0",), pidfile=sys.argv[1],
                 graceful_timeout=5.0)
    sys.exit(main.run(cfg))
    """
)


class Master:
    def __init__(self, tmp_path, mode: str) -> None:
        self.pidfile = tmp_path / "master.pid"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _MASTER, str(self.pidfile)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, "FAKE_WORKER": mode, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        self.lines: list[str] = []
        self._buffer = b""

    def expect(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        """Wait for a log line matching pattern (a deadline loop, not a sleep)."""
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for line in self.lines[seen:]:
                if match := re.search(pattern, line):
                    self.lines.remove(line)
                    return match
            seen = len(self.lines)
            left = deadline - time.monotonic()
            assert left > 0, f"no line matching {pattern!r} in {self.lines}"
            assert self.stdout_ready(left), f"no line matching {pattern!r} in {self.lines}"

    def stdout_ready(self, timeout: float) -> bool:
        assert self.proc.stdout is not None
        if not select.select([self.proc.stdout], [], [], timeout)[0]:
            return False
        chunk = os.read(self.proc.stdout.fileno(), 65536)
        *lines, self._buffer = (self._buffer + chunk).split(b"\n")
        self.lines += [line.decode() for line in lines]
        return bool(chunk)

    def wait(self) -> int:
        code = self.proc.wait(timeout=15)
        while self.stdout_ready(0):
            pass
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        assert self.proc.stdout is not None
        self.proc.stdout.close()


@pytest.fixture
def start_master(tmp_path):
    started = []

    def start(mode: str) -> Master:
        master = Master(tmp_path, mode)
        started.append(master)
        return master

    yield start
    for master in started:
        master.close()


def test_boot_respawn_and_graceful_stop(start_master):
    master = start_master("serve")
    master.expect(r"listening on 127\.0\.0\.1:\d+")
    master.expect(r"worker 1 \(pid \d+\) is ready")
    pid2 = int(master.expect(r"booting worker 2 \(pid (\d+)\)")[1])
    master.expect(r"worker 2 \(pid \d+\) is ready")
    assert master.pidfile.read_text() == f"{master.proc.pid}\n"

    os.kill(pid2, signal.SIGKILL)
    master.expect(rf"worker 2 \(pid {pid2}\) was killed by signal SIGKILL \(perhaps out of")
    master.expect(r"booting worker 2 \(pid \d+\)")
    master.expect(r"worker 2 \(pid \d+\) is ready")

    os.kill(master.proc.pid, signal.SIGTERM)
    assert master.wait() == errors.EXIT_OK
    assert sum("stopped" in line for line in master.lines) == 3  # two workers, master
    assert not master.pidfile.exists()


def test_broken_app_stops_the_master_once(start_master):
    master = start_master("broken-app")
    assert master.wait() == errors.EXIT_APP_LOAD_ERROR
    text = "\n".join(master.lines)
    assert text.count("booting worker") == 1
    assert text.count("application failed to load, stopping") == 1
    assert not master.pidfile.exists()
