"""Fixtures shared by the protocol-core tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from preforkd.proto import h1


@pytest.fixture(scope="module", params=["native", "llhttp"])
def h1_head_parser(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run a module's HTTP/1.1 tests twice: with the native head parser (when built) and
    with llhttp's callbacks alone, the pure-Python fallback (preforkd/native/_h1head.c)."""
    if request.param == "native" and h1._parse_head is None:
        pytest.skip("the native head parser is not built (or PREFORKD_PURE_PYTHON is set)")
    with pytest.MonkeyPatch.context() as patch:
        if request.param == "llhttp":
            patch.setattr(h1, "_parse_head", None)
        yield request.param
