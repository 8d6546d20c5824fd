from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from preforkd.config import Config
from preforkd.master.arbiter import Arbiter
from preforkd.master.signals import MasterPipes, signal_command
from preforkd.master.startup import Credentials
from tests.master.fakes import FakeProcesses


class Master:
    """An arbiter on a fake process layer, driven one loop turn at a time."""

    def __init__(self, cfg: Config, **kwargs: Any) -> None:
        self.os = FakeProcesses()
        self.pipes = MasterPipes()
        self.arbiter = Arbiter(cfg, [], self.os, self.pipes, **kwargs)
        self.cfg = cfg

    def close(self) -> None:
        self.arbiter.close()
        self.pipes.close()

    def signal(self, sig: int) -> None:
        """What the real signal handler does."""
        self.arbiter.commands.put(signal_command(sig))

    def step(self) -> int | None:
        return self.arbiter.run_once()

    def run_until_done(self, max_turns: int = 20) -> int:
        for _ in range(max_turns):
            code = self.step()
            if code is not None:
                return code
        raise AssertionError(f"master still running after {max_turns} turns")

    def boot(self) -> list[int]:
        """Start, make every worker report ready; returns their pids by slot."""
        self.arbiter.start()
        self.os.report_ready(self.os.pids()[0])
        assert self.step() is None
        for pid in self.os.pids()[1:]:
            self.os.report_ready(pid)
        if self.cfg.workers > 1:
            assert self.step() is None
        assert all(self.arbiter.workers.get(pid).ready for pid in self.os.pids())  # type: ignore[union-attr]
        return self.os.pids()


@pytest.fixture(autouse=True)
def _master_log_level(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "preforkd.master")


@pytest.fixture
def make_master() -> Iterator[Callable[..., Master]]:
    made: list[Master] = []

    def make(
        workers: int = 3,
        graceful_timeout: float = 30.0,
        credentials: Credentials | None = None,
        app: Any = None,
    ) -> Master:
        cfg = Config(app="myapp:app", workers=workers, graceful_timeout=graceful_timeout)
        master = Master(cfg, credentials=credentials, app=app)
        made.append(master)
        return master

    yield make
    for master in made:
        master.close()
