"""Requests become the shared events; malformed ones are stream errors (RFC 9113 §8)."""

from __future__ import annotations

import h2.events
import pytest
from hyperframe.frame import RstStreamFrame

from preforkd.proto.events import Data, EndOfMessage, Request, StreamReset
from preforkd.proto.h2 import ErrorCodes

from .h2_helpers import GET, Pair, RawClient, frame, of_type, post


def test_get_request_events() -> None:
    pair = Pair()
    sid = pair.request()
    events = pair.to_server()
    assert events == [
        Request("GET", "/", "2", [("host", "example.com")], stream_id=sid),
        EndOfMessage(sid),
    ]


def test_post_body_and_length() -> None:
    pair = Pair()
    sid = pair.request(post(5), b"hello")
    request, data, end = pair.to_server()
    assert isinstance(request, Request)
    assert (request.method, request.target, request.has_body, request.content_length) == (
        "POST",
        "/upload",
        True,
        5,
    )
    assert data == Data(b"hello", sid)
    assert end == EndOfMessage(sid)


def test_body_without_content_length() -> None:
    pair = Pair()
    sid = pair.request(post(), b"abc")
    request, data, _ = pair.to_server()
    assert isinstance(request, Request) and request.content_length is None and request.has_body
    assert data == Data(b"abc", sid)


def test_headers_lower_case_str_and_cookie_crumbs_kept_apart() -> None:
    pair = Pair()
    pair.request([*GET, ("cookie", "a=1"), ("accept", "*/*"), ("cookie", "b=2")])
    request = pair.to_server()[0]
    assert isinstance(request, Request)
    # RFC 9113 §8.2.3: the environ joins the crumbs with "; ".
    assert request.headers == [
        ("host", "example.com"),
        ("cookie", "a=1"),
        ("accept", "*/*"),
        ("cookie", "b=2"),
    ]


def test_host_field_kept_when_present() -> None:
    pair = Pair()
    pair.request([(":method", "GET"), (":scheme", "http"), (":path", "/"), ("host", "a.test")])
    request = pair.to_server()[0]
    assert isinstance(request, Request) and request.headers == [("host", "a.test")]


def test_latin1_values_decoded() -> None:
    raw = RawClient()
    block = raw.encoder.encode([*[(k.encode(), v.encode()) for k, v in GET], (b"x-n", b"caf\xe9")])
    events = raw.send(frame(1, 0x5, 1, block))
    assert isinstance(events[0], Request) and ("x-n", "caf\xe9") in events[0].headers


def test_expect_continue_flag() -> None:
    pair = Pair()
    pair.client.send_headers(1, [*post(3), ("expect", "100-continue")])
    request = pair.to_server()[0]
    assert isinstance(request, Request) and request.expect_continue


def test_options_asterisk() -> None:
    pair = Pair()
    pair.request(
        [(":method", "OPTIONS"), (":scheme", "https"), (":path", "*"), (":authority", "a")]
    )
    request = pair.to_server()[0]
    assert isinstance(request, Request) and request.target == "*"


def test_trailers_are_checked_and_dropped() -> None:
    pair = Pair()
    pair.client.send_headers(1, post(2))
    pair.client.send_data(1, b"ok")
    pair.client.send_headers(1, [("x-checksum", "abc")], end_stream=True)
    events = pair.to_server()
    assert [type(e) for e in events] == [Request, Data, EndOfMessage]


def test_pseudo_header_in_trailers_is_malformed() -> None:
    raw = RawClient()
    raw.send(raw.headers(1, post(), end_stream=False))
    events = raw.send(frame(1, 0x5, 1, raw.block([(":path", "/x")])))
    assert events == [StreamReset(1, ErrorCodes.PROTOCOL_ERROR)]
    assert _resets(raw) == [(1, ErrorCodes.PROTOCOL_ERROR)]


def test_trailers_without_end_stream_is_malformed() -> None:
    # RFC 9113 §8.1 (h2spec 8.1/1): a second HEADERS without END_STREAM.
    raw = RawClient()
    raw.send(raw.headers(1, post(), end_stream=False))
    raw.send(frame(0, 0, 1, b"test"))
    events = raw.send(frame(1, 0x4, 1, raw.block([("x-test", "ok")])))
    assert events == [StreamReset(1, ErrorCodes.PROTOCOL_ERROR)]
    assert _resets(raw) == [(1, ErrorCodes.PROTOCOL_ERROR)]


def _resets(raw: RawClient) -> list[tuple[int, int]]:
    return [(f.stream_id, f.error_code) for f in raw.frames() if isinstance(f, RstStreamFrame)]


BASE = [(":method", "GET"), (":scheme", "https"), (":path", "/"), (":authority", "a.test")]

MALFORMED = {
    # RFC 9113 §8.3.1 / h2spec 8.1.2.3
    "no :method": BASE[1:],
    "no :scheme": [BASE[0], *BASE[2:]],
    "no :path": [*BASE[:2], BASE[3]],
    "empty :path": [*BASE[:2], (":path", ""), BASE[3]],
    "relative :path": [*BASE[:2], (":path", "x"), BASE[3]],
    "fragment in :path": [*BASE[:2], (":path", "/a#b"), BASE[3]],
    "space in :path": [*BASE[:2], (":path", "/a b"), BASE[3]],
    "asterisk for GET": [*BASE[:2], (":path", "*"), BASE[3]],
    "duplicate :method": [*BASE, (":method", "GET")],
    "duplicate :path": [*BASE, (":path", "/")],
    "invalid method": [(":method", "G T"), *BASE[1:]],
    "invalid scheme": [BASE[0], (":scheme", "1x"), *BASE[2:]],
    # §8.3 / h2spec 8.1.2.1
    "unknown pseudo-header": [*BASE, (":foo", "bar")],
    "response pseudo-header": [*BASE, (":status", "200")],
    "extended CONNECT not offered": [*BASE, (":protocol", "websocket")],
    "pseudo after regular": [*BASE[:3], ("accept", "*/*"), BASE[3]],
    # §8.2.2 / h2spec 8.1.2.2
    "connection": [*BASE, ("connection", "keep-alive")],
    "keep-alive": [*BASE, ("keep-alive", "5")],
    "transfer-encoding": [*BASE, ("transfer-encoding", "chunked")],
    "upgrade": [*BASE, ("upgrade", "h2c")],
    "proxy-connection": [*BASE, ("proxy-connection", "close")],
    "te not trailers": [*BASE, ("te", "gzip")],
    # §8.2.1 / h2spec 8.1.2
    "upper-case name": [*BASE, ("X-Upper", "1")],
    "space in name": [*BASE, ("x y", "1")],
    "colon in name": [*BASE, ("x:y", "1")],
    "empty name": [*BASE, ("", "1")],
    "leading space in value": [*BASE, ("x-a", " v")],
    "trailing tab in value": [*BASE, ("x-a", "v\t")],
    "control in value": [*BASE, ("x-a", "a\x01b")],
    "newline in value": [*BASE, ("x-a", "a\nb")],
    # host / :authority
    "no authority, no host": BASE[:3],
    "empty authority": [*BASE[:3], (":authority", "")],
    "userinfo in authority": [*BASE[:3], (":authority", "u@a.test")],
    "host differs": [*BASE, ("host", "b.test")],
    "two hosts": [*BASE[:3], ("host", "a.test"), ("host", "a.test")],
    # RFC 9110 §8.6
    "content-length not digits": [*BASE, ("content-length", "1x")],
    "two content-lengths": [*BASE, ("content-length", "0"), ("content-length", "0")],
    "content-length, no body": [*BASE, ("content-length", "3")],
    "CONNECT with :path": [(":method", "CONNECT"), (":authority", "a:443"), (":path", "/")],
}


@pytest.mark.parametrize("headers", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_request_is_a_stream_error(headers: list[tuple[str, str]]) -> None:
    raw = RawClient()
    events = raw.send(raw.headers(1, headers))
    assert events == []  # the application never hears of it
    assert _resets(raw) == [(1, ErrorCodes.PROTOCOL_ERROR)]
    # The connection goes on.
    events = raw.send(raw.headers(3))
    assert [type(e) for e in events] == [Request, EndOfMessage]


def test_host_matches_authority_case_insensitively() -> None:
    raw = RawClient()
    events = raw.send(raw.headers(1, [*BASE, ("host", "A.TEST")]))
    assert isinstance(events[0], Request)


def test_connect_is_answered_501_without_the_app() -> None:
    pair = Pair()
    pair.client.send_headers(1, [(":method", "CONNECT"), (":authority", "example.com:443")])
    server_events, client_events = pair.exchange()
    assert server_events == []
    (response,) = of_type(client_events, h2.events.ResponseReceived)
    assert dict(response.headers)[":status"] == "501"
    # The request side was still open: RST_STREAM(NO_ERROR) asks the client to stop.
    (reset,) = of_type(client_events, h2.events.StreamReset)
    assert reset.error_code == ErrorCodes.NO_ERROR


def test_content_length_shorter_than_body_is_a_stream_error() -> None:
    # RFC 9113 §8.1.1 (h2spec 8.1.2.6/1).
    raw = RawClient()
    raw.send(raw.headers(1, post(1), end_stream=False))
    events = raw.send(frame(0, 0x1, 1, b"test"))
    assert events == [StreamReset(1, ErrorCodes.PROTOCOL_ERROR)]
    assert _resets(raw) == [(1, ErrorCodes.PROTOCOL_ERROR)]


def test_content_length_longer_than_body_is_a_stream_error() -> None:
    raw = RawClient()
    raw.send(raw.headers(1, post(10), end_stream=False))
    events = raw.send(frame(0, 0, 1, b"test") + frame(0, 0x1, 1, b"te"))
    assert events == [Data(b"test", 1), Data(b"te", 1), StreamReset(1, ErrorCodes.PROTOCOL_ERROR)]


def test_data_after_malformed_body_is_discarded() -> None:
    raw = RawClient()
    raw.send(raw.headers(1, post(1), end_stream=False))
    raw.send(frame(0, 0, 1, b"test"))
    assert raw.send(frame(0, 0x1, 1, b"more")) == []  # in flight before our RST_STREAM


def test_too_large_header_list_gets_431() -> None:
    pair = Pair()
    big = [*GET, *[(f"x-{i}", "v" * 1000) for i in range(70)]]  # ~72 KB > 64 KiB
    pair.client.send_headers(1, big, end_stream=True)
    server_events, client_events = pair.exchange()
    assert server_events == []
    (response,) = of_type(client_events, h2.events.ResponseReceived)
    assert dict(response.headers)[":status"] == "431"
    assert of_type(client_events, h2.events.StreamEnded)
    # HPACK state is intact: the next request goes through.
    pair.request()
    assert isinstance(pair.to_server()[0], Request)


@pytest.mark.parametrize(
    ("fields", "status"),
    [
        ([(":method", "GET"), (":scheme", "http"), (":authority", "a.test"),
          (":path", "/" + "a" * 9000)], 414),  # over --limit-request-line
        ([*GET, ("x-big", "v" * 9000)], 431),  # over --limit-request-field-size
    ],
    ids=["path", "field"],
)  # fmt: skip
def test_http1_limits_hold_on_http2_too(fields: list[tuple[str, str]], status: int) -> None:
    pair = Pair()
    pair.client.send_headers(1, fields, end_stream=True)
    server_events, client_events = pair.exchange()
    assert server_events == []
    (response,) = of_type(client_events, h2.events.ResponseReceived)
    assert dict(response.headers)[":status"] == str(status)


def test_path_at_the_request_line_limit_is_accepted() -> None:
    pair = Pair()
    path = "/" + "a" * (8190 - len("GET  HTTP/1.1") - 1)
    pair.client.send_headers(
        1,
        [(":method", "GET"), (":scheme", "http"), (":authority", "a.test"), (":path", path)],
        end_stream=True,
    )
    server_events, _ = pair.exchange()
    assert isinstance(server_events[0], Request) and server_events[0].target == path


def test_custom_methods_reach_the_application() -> None:
    # RFC 9110 §9.1: any token; the same rule as HTTP/1.1.
    pair = Pair()
    pair.client.send_headers(
        1, [(":method", "PROPFIND"), (":scheme", "http"), (":authority", "a.test"),
            (":path", "/dav/")], end_stream=True,
    )  # fmt: skip
    server_events, _ = pair.exchange()
    assert isinstance(server_events[0], Request) and server_events[0].method == "PROPFIND"


def test_a_repeated_field_block_is_parsed_once_and_each_stream_gets_its_own_request() -> None:
    """parse_request keeps what it made of a clean field block: a repeat returns an equal
    Request with its own header list, and what depends on the stream (its id, END_STREAM)
    is still applied per call."""
    from preforkd.proto.h2 import fields as h2fields

    block = [
        (b":method", b"POST"),
        (b":scheme", b"https"),
        (b":path", b"/memo-test"),
        (b":authority", b"example.com"),
        (b"content-length", b"3"),
        (b"expect", b"100-continue"),
    ]
    h2fields._parsed.clear()
    first = h2fields.parse_request(block, 1, False)
    assert len(h2fields._parsed) == 1
    again = h2fields.parse_request(list(block), 3, False)
    assert again == Request(
        "POST",
        "/memo-test",
        "2",
        [("host", "example.com"), ("content-length", "3"), ("expect", "100-continue")],
        expect_continue=True,
        has_body=True,
        content_length=3,
        stream_id=3,
    )
    assert again.headers == first.headers and again.headers is not first.headers
    # From the memo too: a content-length with no body to follow is malformed (§8.1.1).
    with pytest.raises(h2fields.Malformed):
        h2fields.parse_request(block, 5, True)
    # A malformed block is never remembered, and is refused each time.
    bad = [*block[:2], (b":path", b"no-slash"), *block[3:]]
    for sid in (7, 9):
        with pytest.raises(h2fields.Malformed):
            h2fields.parse_request(bad, sid, False)
    assert len(h2fields._parsed) == 1


def test_the_parsed_request_memo_is_bounded_in_entries_and_bytes() -> None:
    from preforkd.proto.h2 import fields as h2fields

    h2fields._parsed.clear()
    base = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"a")]
    big = [*base, (b":path", b"/big"), (b"cookie", b"x" * h2fields._PARSED_BLOCK_MAX)]
    assert h2fields.parse_request(big, 1, True).target == "/big"
    assert not h2fields._parsed  # too large to keep
    for i in range(h2fields._PARSED_MAX + 10):
        h2fields.parse_request([*base, (b":path", b"/%d" % i)], 1, True)
    assert len(h2fields._parsed) == h2fields._PARSED_MAX
    assert h2fields.parse_request([*base, (b":path", b"/new")], 1, True).target == "/new"
    h2fields._parsed.clear()
