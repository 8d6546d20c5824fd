"""The request corpus (tests/data/requests): every valid case gives its events, every
invalid case its status, however the bytes are cut."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from preforkd.errors import RemoteProtocolError
from preforkd.proto.h1 import H1ProtocolError

from .h1_support import EXAMPLES, Case, error_of, expected_events, load_cases, run_valid

# With the native head parser and with llhttp alone (tests/proto/conftest.py).
pytestmark = pytest.mark.usefixtures("h1_head_parser")

VALID = load_cases("valid")
INVALID = load_cases("invalid")


def test_corpus_is_big_enough() -> None:
    assert len(VALID) >= 40
    assert len(INVALID) >= 60


def _check_valid(case: Case, splits: list[int] | None = None) -> None:
    conn, events = run_valid(case, splits)
    assert events == expected_events(case.spec), case.spec["description"]
    if "trailing_data" in case.spec:
        assert conn.trailing_data == case.spec["trailing_data"].encode("latin-1")


def _check_invalid(case: Case, splits: list[int] | None = None) -> RemoteProtocolError:
    error = error_of(case.data, eof=case.eof, splits=splits)
    assert error.status == case.spec["status"], (case.spec["description"], str(error))
    return error


@pytest.mark.parametrize("case", VALID, ids=[c.name for c in VALID])
def test_valid_request(case: Case) -> None:
    _check_valid(case)


@pytest.mark.parametrize("case", VALID, ids=[c.name for c in VALID])
def test_valid_request_byte_by_byte(case: Case) -> None:
    _check_valid(case, list(range(len(case.data))))


@pytest.mark.parametrize("case", INVALID, ids=[c.name for c in INVALID])
def test_invalid_request(case: Case) -> None:
    error = _check_invalid(case)
    assert isinstance(error, H1ProtocolError)
    if "events_before" in case.spec:
        assert len(error.events) == case.spec["events_before"]


# Cases of 100 kB and more are left out: one byte per call would only make them slow.
SMALL_INVALID = [c for c in INVALID if len(c.data) < 20_000]


@pytest.mark.parametrize("case", SMALL_INVALID, ids=[c.name for c in SMALL_INVALID])
def test_invalid_request_byte_by_byte(case: Case) -> None:
    _check_invalid(case, list(range(len(case.data))))


def _splits(cases: list[Case]) -> st.SearchStrategy[tuple[Case, list[int]]]:
    return st.sampled_from(cases).flatmap(
        lambda case: st.tuples(
            st.just(case),
            st.lists(st.integers(min_value=0, max_value=len(case.data)), max_size=12),
        )
    )


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_splits(VALID))
def test_valid_corpus_split_anywhere(case_and_splits: tuple[Case, list[int]]) -> None:
    case, splits = case_and_splits
    _check_valid(case, splits)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_splits(INVALID))
def test_invalid_corpus_split_anywhere(case_and_splits: tuple[Case, list[int]]) -> None:
    case, splits = case_and_splits
    _check_invalid(case, splits)
