from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from preforkd.config import Config
from preforkd.master.arbiter import Arbiter, Context
from preforkd.master.reload import Origin
from preforkd.master.signals import MasterPipes, signal_command
from preforkd.master.sockets import Listener
from preforkd.master.startup import Credentials
from preforkd.settings import load_config
from tests.master.fakes import FakeProcesses


class Master:
    """An arbiter on a fake process layer, driven one loop turn at a time."""

    def __init__(
        self, cfg: Config, context: Context | None = None, listeners: Sequence[Listener] = ()
    ) -> None:
        self.os = FakeProcesses()
        self.pipes = MasterPipes()
        self.arbiter = Arbiter(cfg, listeners, self.os, self.pipes, context)
        self.cfg = cfg
        self.config_path: Any = None  # the config file, for make_reloadable masters

    def close(self) -> None:
        self.arbiter.close()
        self.pipes.close()
        self.os.close()

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

    def ready_all(self) -> None:
        """Every live worker reports ready (if not yet), one loop turn each round."""
        for _ in range(5):
            waiting = [
                c.pid
                for c in self.os.alive()
                if not self.arbiter.workers.get(c.pid).ready  # type: ignore[union-attr]
            ]
            if not waiting:
                return
            for pid in waiting:
                self.os.report_ready(pid)
            self.step()

    def generation_of(self, pid: int) -> int:
        worker = self.arbiter.workers.get(pid)
        assert worker is not None
        return worker.generation

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
        context = Context(app=app, credentials=credentials or Credentials())
        master = Master(cfg, context)
        made.append(master)
        return master

    yield make
    for master in made:
        master.close()


@pytest.fixture
def make_reloadable(tmp_path) -> Iterator[Callable[..., Master]]:
    """A master started with ``-c FILE`` (FILE holds ``settings``); HUP re-reads it."""
    made: list[Master] = []

    def make(settings: str = "workers = 2\n", *, app: Any = None, **context: Any) -> Master:
        config = tmp_path / "preforkd.toml"
        config.write_text(settings)
        argv = ("myapp:app", "-c", str(config))
        cfg = load_config(argv, {})
        origin = Origin(argv, {}, str(tmp_path))
        master = Master(cfg, Context(app=app, origin=origin, **context))
        master.config_path = config
        made.append(master)
        return master

    yield make
    for master in made:
        master.close()
