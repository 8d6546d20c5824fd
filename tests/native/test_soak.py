"""No leak on any path of the C accelerators (bench/native_soak.py, a short run).

The reference counts of the objects every call touches must come back unchanged, and
the traced Python memory must not grow with the rounds. The full run (a million rounds)
is ``python bench/native_soak.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import native_soak

from preforkd.proto.h1_response import ResponseFramer, head_py
from preforkd.wsgi import environ


@pytest.mark.skipif(
    environ.build_environ is environ.build_environ_py or ResponseFramer.head is head_py,
    reason="the C accelerators are not in use (PREFORKD_PURE_PYTHON=1 or not built)",
)
def test_no_leak() -> None:
    traced, _rss, same_refcounts = native_soak.soak(4000, report=lambda _: None)
    assert same_refcounts
    # One leaked object per round would be 3600 objects, well past 100 kB; what is left
    # is the allocator's and the interpreter's noise.
    assert traced < 16 * 1024
