"""The preforkd command: main() and python -m preforkd."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from preforkd import __version__, errors, logs
from preforkd.cli import main
from preforkd.config import Config

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in list(os.environ):
        if var.startswith("PREFORKD_"):
            monkeypatch.delenv(var)


@pytest.fixture
def fake_run(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Config]]:
    """Replace the master with a stub recording the Config it was given."""
    calls: list[Config] = []

    def run(cfg: Config) -> int:
        calls.append(cfg)
        return 7

    module = types.ModuleType("preforkd.master.main")
    module.run = run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "preforkd.master.main", module)
    logger = logging.getLogger("preforkd")
    saved = (logger.handlers[:], logger.level, logger.propagate, logs._installed[:])
    yield calls
    for handler in logs._installed:
        handler.close()
    logger.handlers[:], logger.level, logger.propagate = saved[0], saved[1], saved[2]
    logs._installed[:] = saved[3]


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == errors.EXIT_OK
    assert capsys.readouterr().out == f"preforkd {__version__}\n"


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == errors.EXIT_OK
    out = capsys.readouterr().out
    assert out.startswith("usage: preforkd [OPTIONS] APP")


def test_config_errors_are_all_printed(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PREFORKD_THREADS", "many")
    assert main(["m:app", "-w", "x", "--wrokers", "2"]) == errors.EXIT_CONFIG_ERROR
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        "preforkd: error: unrecognized option --wrokers (did you mean --workers?)",
        "preforkd: error: --workers: 'x' is not an integer",
        "preforkd: error: PREFORKD_THREADS: 'many' is not an integer",
    ]


def test_runs_the_master_with_the_config(
    fake_run: list[Config], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["m:app", "-w", "3", "--log-level", "debug"]) == 7
    [cfg] = fake_run
    assert (cfg.app, cfg.workers) == ("m:app", 3)
    logger = logging.getLogger("preforkd")
    assert logger.getEffectiveLevel() == logging.DEBUG
    logger.debug("hello from the test")
    assert "[DEBUG] hello from the test" in capsys.readouterr().err


def test_unopenable_error_log(
    fake_run: list[Config], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = str(tmp_path / "missing-dir" / "error.log")
    assert main(["m:app", "--error-logfile", bad]) == errors.EXIT_CONFIG_ERROR
    assert capsys.readouterr().err == (
        f"preforkd: error: --error-logfile: cannot open {bad!r}: No such file or directory\n"
    )
    assert fake_run == []


def run_module(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFORKD_")}
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_python_dash_m_preforkd_version() -> None:
    result = run_module("preforkd", "--version")
    assert (result.returncode, result.stdout, result.stderr) == (
        0,
        f"preforkd {__version__}\n",
        "",
    )


def test_python_dash_m_preforkd_without_app() -> None:
    result = run_module("preforkd")
    assert result.returncode == errors.EXIT_CONFIG_ERROR
    assert result.stderr.startswith("preforkd: error: no application given")


def test_help_into_a_closed_pipe_is_quiet() -> None:
    # `preforkd --help | head -1`: the reader exits early; no traceback, exit 0.
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "preforkd", "--help"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # before the child writes: its write meets a pipe with no reader
    assert proc.wait(10) == 0
    assert b"Traceback" not in proc.stderr.read()


def test_help_wraps_between_words_never_inside_one() -> None:
    """Issue 11: a list default wrapped mid-word ('.gi t,__pycache__')."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "COLUMNS": "80"}
    out = subprocess.run(
        [sys.executable, "-m", "preforkd", "--help"], capture_output=True, text=True, env=env,
        check=True,
    ).stdout  # fmt: skip
    words = set(out.split())
    for item in (".git,", "__pycache__,", ".mypy_cache,", ".pytest_cache,", "*.pyc,"):
        assert item in words, item
