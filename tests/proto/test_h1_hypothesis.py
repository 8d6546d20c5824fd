"""Generated requests and responses: the events do not depend on how the bytes are cut,
and framed responses parse back to the body that went in."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import httptools
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from preforkd.proto.events import Data, EndOfMessage, Event, Request
from preforkd.proto.h1_response import ResponseFramer

from .h1_support import EXAMPLES, feed, merge_data, request

# With the native head parser and with llhttp alone (tests/proto/conftest.py).
pytestmark = pytest.mark.usefixtures("h1_head_parser")

SETTINGS = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

_TCHAR = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_PCHAR = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~%!$&'()*+,;=:@/"
_VCHAR = "".join(chr(c) for c in range(0x21, 0x7F)) + "\xe9\xff"
_RESERVED = {"host", "content-length", "transfer-encoding", "connection", "upgrade", "expect"}

names = st.text(_TCHAR, min_size=1, max_size=12).filter(lambda n: n.lower() not in _RESERVED)
values = st.builds(
    lambda a, b: (a + " " + b).strip(),
    st.text(_VCHAR, max_size=10),
    st.text(_VCHAR, max_size=10),
)
bodies = st.binary(max_size=300)


@dataclass
class Generated:
    data: bytes
    events: list[Event]


@st.composite
def one_request(draw: st.DrawFn, last: bool) -> Generated:
    version = draw(st.sampled_from(["1.1", "1.0"]))
    method = draw(st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]))
    target = "/" + draw(st.text(_PCHAR, max_size=30))
    if draw(st.booleans()):
        target += "?" + draw(st.text(_PCHAR + "?", max_size=20))
    headers = [("host", draw(st.sampled_from(["example.com", "a.test:8080", "[::1]"])))]
    headers += [(n.lower(), v) for n, v in draw(st.lists(st.tuples(names, values), max_size=6))]
    wire_names = [n.title() if draw(st.booleans()) else n for n, _ in headers]
    keep_alive = not (last and draw(st.booleans()))
    framing = draw(
        st.sampled_from(["none", "length", "chunked"] if version == "1.1" else ["none", "length"])
    )
    body = draw(bodies) if framing != "none" else b""
    extra: list[tuple[str, str]] = []
    if framing == "length":
        extra.append(("content-length", str(len(body))))
    elif framing == "chunked":
        extra.append(("transfer-encoding", "chunked"))
    if version == "1.1" and not keep_alive:
        extra.append(("connection", "close"))
    if version == "1.0" and keep_alive:
        extra.append(("connection", "keep-alive"))
    lines = [f"{method} {target} HTTP/{version}\r\n"]
    for wire_name, (_, value) in zip(wire_names, headers, strict=True):
        ows = draw(st.sampled_from(["", " ", "\t "]))
        lines.append(f"{wire_name}:{ows}{value}{ows}\r\n")
    lines += [f"{n}: {v}\r\n" for n, v in extra]
    lines.append("\r\n")
    data = "".join(lines).encode("latin-1")
    if framing == "chunked":
        data += draw(chunked(body))
    else:
        data += body
    req = request(
        method,
        target,
        headers + extra,
        http_version=version,
        keep_alive=keep_alive,
        has_body=framing == "chunked" or bool(body),
        content_length=len(body) if framing == "length" else None,
    )
    events: list[Event] = [req]
    if body:
        events.append(Data(body))
    events.append(EndOfMessage())
    return Generated(data, events)


@st.composite
def chunked(draw: st.DrawFn, body: bytes) -> bytes:
    cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=5)))
    pieces = [body[a:b] for a, b in itertools.pairwise([0, *cuts, len(body)])]
    out = b""
    for piece in pieces:
        if piece:
            size = b"%x" % len(piece) if draw(st.booleans()) else b"%X" % len(piece)
            ext = draw(st.sampled_from([b"", b";a", b";a=b", b';q="x y"']))
            out += size + ext + b"\r\n" + piece + b"\r\n"
    trailers = draw(st.sampled_from([b"", b"X-Sum: 1\r\n", b"A: 1\r\nB: 2\r\n"]))
    return out + b"0\r\n" + trailers + b"\r\n"


@st.composite
def pipelines(draw: st.DrawFn) -> Generated:
    count = draw(st.integers(1, 4))
    reqs = [draw(one_request(last=i == count - 1)) for i in range(count)]
    # Stop at the first request that ends the connection: later ones are never read.
    data, events = b"", []
    for generated in reqs:
        data += generated.data
        events += generated.events
        first = generated.events[0]
        assert isinstance(first, Request)
        if not first.keep_alive:
            break
    return Generated(data, events)


@SETTINGS
@given(pipelines(), st.data())
def test_generated_requests_split_anywhere(generated: Generated, data: st.DataObject) -> None:
    whole = merge_data(feed(generated.data)[1])
    assert whole == generated.events
    splits = data.draw(st.lists(st.integers(0, len(generated.data)), max_size=15))
    assert merge_data(feed(generated.data, splits)[1]) == generated.events


class _Parsed:
    def __init__(self) -> None:
        self.body = b""
        self.complete = 0

    def on_body(self, data: bytes) -> None:
        self.body += data

    def on_message_complete(self) -> None:
        self.complete += 1


@SETTINGS
@given(
    version=st.sampled_from(["1.1", "1.0"]),
    pieces=st.lists(st.binary(max_size=200), max_size=6),
    declare=st.sampled_from(["no", "exact", "short", "long"]),
)
def test_framed_responses_parse_back(version: str, pieces: list[bytes], declare: str) -> None:
    body = b"".join(pieces)
    req = Request("GET", "/", version, [], keep_alive=True)
    framer = ResponseFramer(req, b"Sat, 21 Nov 2026 20:00:00 GMT")
    headers: list[tuple[str, str]] = []
    declared = {"no": None, "exact": len(body), "short": len(body) // 2, "long": len(body) + 1}[
        declare
    ]
    if declared is not None:
        headers.append(("Content-Length", str(declared)))
    wire = framer.head("200 OK", headers) + b"".join(framer.body(p) for p in pieces) + framer.end()
    parsed = _Parsed()
    parser = httptools.HttpResponseParser(parsed)
    parser.feed_data(wire)
    if declared is None and version == "1.0":
        assert framer.keep_alive is False  # the body ends when the connection closes
        assert wire.endswith(body)
        return
    expected = body if declared is None else body[:declared]
    assert parsed.body == expected
    assert framer.bytes_sent == len(expected)
    assert parsed.complete == (declare != "long")
    assert framer.keep_alive is (
        declare in ("no", "exact") or (declare == "short" and body == body[: len(body) // 2])
    )
