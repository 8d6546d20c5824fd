"""The memo of response heads (proto/h2/fields.py) answers exactly as building one would."""

from __future__ import annotations

import pytest

from preforkd.errors import LocalProtocolError
from preforkd.proto.h2.fields import _build_head, response_head

DATE = b"Mon, 01 Jan 2024 00:00:00 GMT"


def test_a_repeated_head_is_built_once() -> None:
    headers = [("Content-Type", "text/plain"), ("Content-Length", "5")]
    first = response_head("200 OK", headers, False, DATE, b"preforkd")
    assert response_head("200 OK", list(headers), False, DATE, b"preforkd") is first
    assert first == _build_head("200 OK", headers, False, DATE, b"preforkd")
    # Any difference in the arguments is another head.
    head = response_head("200 OK", headers, True, DATE, b"preforkd")
    assert head is not first and head.no_body


def test_an_invalid_head_is_refused_every_time() -> None:
    for _ in range(2):
        with pytest.raises(LocalProtocolError):
            response_head("200 OK", [("x-bad", "a\r\nb")], False, DATE, b"")


def test_unhashable_header_pairs_are_built_without_the_memo() -> None:
    headers: list = [["content-type", "text/plain"]]
    head = response_head("200 OK", headers, False, DATE, b"")
    assert (b"content-type", b"text/plain") in head.fields
