"""RFC 8941 Dictionary parsing (preforkd/proto/structured.py), as the Priority field needs."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from preforkd.proto.structured import StructuredFieldError, Token, parse_dictionary


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", {}),
        ("u=1", {"u": (1, {})}),
        ("u=5, i", {"u": (5, {}), "i": (True, {})}),
        ("i=?0", {"i": (False, {})}),
        ("  u=1,\ti  ", {"u": (1, {}), "i": (True, {})}),  # OWS around members
        ("u=1,u=2", {"u": (2, {})}),  # §4.2.2: the last value of a key wins
        ("u=-7", {"u": (-7, {})}),
        ("d=1.5", {"d": (1.5, {})}),
        ('s="a\\"b\\\\c"', {"s": ('a"b\\c', {})}),
        ("t=foo/bar:baz", {"t": (Token("foo/bar:baz"), {})}),
        ("b=:AQID:", {"b": (b"\x01\x02\x03", {})}),
        ("b=:AQI:", {"b": (b"\x01\x02", {})}),  # §4.2.7: missing padding is tolerated
        ("u=1;a;b=2", {"u": (1, {"a": True, "b": 2})}),
        ('l=(1 tok "s");p', {"l": ([(1, {}), (Token("tok"), {}), ("s", {})], {"p": True})}),
        ("l=()", {"l": ([], {})}),
        ("*k.x_y-z=1", {"*k.x_y-z": (1, {})}),
    ],
)
def test_valid_dictionaries(text: str, expected: dict[str, object]) -> None:
    assert parse_dictionary(text) == expected
    assert parse_dictionary(text.encode()) == expected


@pytest.mark.parametrize(
    "text",
    [
        "u=1,",  # trailing comma
        "u=1,,i",
        "U=1",  # keys are lowercase
        "1=1",
        "u=",  # no item
        "u=1 i",  # members need a comma
        "u=1.",  # a decimal needs a fractional digit
        "u=1.2345",  # at most three
        "u=1234567890123456",  # an integer has at most 15 digits
        "u=1234567890123.5",  # a decimal at most 12 integer digits
        "u=-",
        "u=?2",
        'u="open',
        'u="bad\\escape"',
        "u=:AQ=D:",  # "=" inside
        "u=:AQID",  # no closing colon
        "u=(1 2",  # no closing parenthesis
        "u=(1,2)",  # inner-list items are separated by SP
        "u=1;",  # a parameter needs a key
        "u=@1",  # RFC 9651's dates are not RFC 8941
        "u=\u00e9",
    ],
)
def test_invalid_dictionaries(text: str) -> None:
    with pytest.raises(StructuredFieldError):
        parse_dictionary(text)


def test_non_ascii_bytes_fail() -> None:
    with pytest.raises(StructuredFieldError):
        parse_dictionary(b'u="\xff"')


# -- Hypothesis: what we serialize, we parse back; nothing ever raises anything else --------

keys = st.from_regex(r"[a-z*][a-z0-9_.*-]{0,6}", fullmatch=True)
integers = st.integers(-(10**15) + 1, 10**15 - 1)
tokens = st.from_regex(r"[A-Za-z*][A-Za-z0-9!#$%&'*+.^_`|~:/-]{0,6}", fullmatch=True)
strings = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=8)
items = st.one_of(st.booleans(), integers, tokens.map(Token), strings)


def serialize(value: object) -> str:
    if isinstance(value, bool):
        return "?1" if value else "?0"
    if isinstance(value, Token):
        return str(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return str(value)


@given(st.dictionaries(keys, items, max_size=5), st.sampled_from([",", ", ", " ,\t"]))
def test_serialized_dictionaries_parse_back(members: dict[str, object], sep: str) -> None:
    text = sep.join(
        key if value is True else f"{key}={serialize(value)}" for key, value in members.items()
    )
    parsed = parse_dictionary(text)
    assert {key: value for key, (value, _) in parsed.items()} == members
    for key, (value, _) in parsed.items():
        assert type(value) is type(members[key])


@given(st.binary(max_size=40))
def test_arbitrary_bytes_parse_or_fail_cleanly(data: bytes) -> None:
    with contextlib.suppress(StructuredFieldError):
        parse_dictionary(data)


@given(st.text(alphabet=' \t,;=()?:"\\*-.0129aiuAZ/', max_size=30))
def test_field_like_text_parses_or_fails_cleanly(text: str) -> None:
    with contextlib.suppress(StructuredFieldError):
        parse_dictionary(text)
