"""The code checks run with the tests, so one command tells whether main is releasable."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CODE = ["preforkd", "tests", "examples"]


def _tool(name: str) -> list[str]:
    local = Path(sys.executable).parent / name
    if local.exists():
        return [str(local)]
    if shutil.which(name):
        return [name]
    pytest.skip(f"{name} is not installed (pip install -e '.[test]')")


def test_ruff_check() -> None:
    result = subprocess.run([*_tool("ruff"), "check", *CODE], cwd=ROOT, capture_output=True,
                            text=True)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format() -> None:
    result = subprocess.run([*_tool("ruff"), "format", "--check", *CODE], cwd=ROOT,
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict() -> None:
    result = subprocess.run([*_tool("mypy")], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_protocol_cores_import_no_io() -> None:
    # Architecture rule: the protocol layer is IO-free, so it can be tested byte by byte.
    code = (
        "import sys, preforkd.proto.events, preforkd.proto.fields, preforkd.proto.h1, "
        "preforkd.proto.h1_response, "
        "preforkd.proto.h2, preforkd.proto.negotiate; "
        "print(','.join(sorted(m for m in ('asyncio', 'socket') if m in sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"preforkd.proto imported {result.stdout.strip()}"


def test_heartbeat_imports_neither_master_nor_worker() -> None:
    # Issue 11: heartbeat.py is shared by the master and the workers, so it must not name
    # either side, not even under TYPE_CHECKING (that is still an arrow for the reader).
    source = (ROOT / "preforkd" / "heartbeat.py").read_text()
    assert "preforkd.worker" not in source
    assert "preforkd.master" not in source
