from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.harness import Preforkd, free_port

Start = Callable[..., Preforkd]


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Start]:
    """Start preforkd on a free 127.0.0.1 port; it is stopped after the test."""
    started: list[Preforkd] = []

    def start(
        app: str = "examples.hello:app",
        *args: str,
        wait: bool = True,
        bind: bool = True,
        **kw: object,
    ) -> Preforkd:
        port = free_port()
        argv = [app, *args]
        if bind:
            argv += ["--bind", f"127.0.0.1:{port}"]
        server = Preforkd(argv, tmp_path, **kw)  # type: ignore[arg-type]
        server.port = port
        started.append(server.start())
        if wait:
            server.wait_serving()
        return server

    yield start
    for server in started:
        server.stop()
