"""H2Settings validation and the flood budget's windows."""

from __future__ import annotations

import pytest

from preforkd.proto.h2 import ErrorCodes, H2ProtocolError, H2Settings
from preforkd.proto.h2_config import Budget


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_concurrent_streams": 0},
        {"initial_window_size": 65534},  # below the RFC default: unenforceable before ACK
        {"initial_window_size": 2**31},
        {"connection_window_size": 1000},
        {"max_frame_size": 16383},
        {"max_frame_size": 2**24},
        {"max_header_list_size": 100},
        {"max_resets": 0},
        {"flood_window": 0.0},
        {"max_pings": 1.5},
    ],
)
def test_invalid_settings(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        H2Settings(**kwargs)  # type: ignore[arg-type]


def test_budget_counts_per_window() -> None:
    budget = Budget("things", 2, 10.0)
    budget.spend(0.0)
    budget.spend(9.9)
    with pytest.raises(H2ProtocolError) as info:
        budget.spend(9.9)
    assert info.value.error_code == ErrorCodes.ENHANCE_YOUR_CALM
    assert "things" in str(info.value)


def test_budget_starts_a_new_window() -> None:
    budget = Budget("things", 2, 10.0)
    for now in (0.0, 1.0, 10.0, 11.0, 20.0, 21.0):
        budget.spend(now)
    budget.spend(5.0)  # a clock that went backwards starts a window too
    budget.spend(5.0)
