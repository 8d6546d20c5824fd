"""Helpers shared by the HTTP/1.1 core tests: feeding bytes and reading the request corpus."""

from __future__ import annotations

import itertools
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from preforkd.errors import RemoteProtocolError
from preforkd.proto.events import ConnectionClosed, Data, EndOfMessage, Event, Request
from preforkd.proto.h1 import H1Connection, H1Limits

CORPUS = Path(__file__).resolve().parent.parent / "data" / "requests"

# Hypothesis examples per test: modest by default (the suite shares two cores); raise it
# for a deeper local run, e.g. PREFORKD_H1_EXAMPLES=5000 pytest tests/proto.
EXAMPLES = int(os.environ.get("PREFORKD_H1_EXAMPLES", "200"))

_REPEAT = re.compile(r"<<(\d+)\*(.*?)>>")
_ESCAPE = re.compile(r"\\(x[0-9A-Fa-f]{2}|r|n|t|\\)")
_SIMPLE = {"r": "\r", "n": "\n", "t": "\t", "\\": "\\"}


def decode_http(text: str) -> bytes:
    """Turn a corpus .http file into bytes (the format is in tests/data/requests/README.md)."""
    text = text.replace("\n", "")
    text = _REPEAT.sub(lambda m: m.group(2) * int(m.group(1)), text)

    def unescape(match: re.Match[str]) -> str:
        code = match.group(1)
        return chr(int(code[1:], 16)) if code[0] == "x" else _SIMPLE[code]

    return _ESCAPE.sub(unescape, text).encode("latin-1")


def merge_data(events: list[Event]) -> list[Event]:
    """Join adjacent Data events: how a body is cut into Data events is not part of the contract."""
    merged: list[Event] = []
    for event in events:
        if isinstance(event, Data) and merged and isinstance(merged[-1], Data):
            merged[-1] = Data(merged[-1].data + event.data)
        else:
            merged.append(event)
    return merged


def feed(
    data: bytes, splits: list[int] | None = None, limits: H1Limits | None = None
) -> tuple[H1Connection, list[Event]]:
    """Feed ``data`` (cut at ``splits``) to a new connection; return it and all events."""
    conn = H1Connection(limits) if limits else H1Connection()
    events: list[Event] = []
    bounds = [0, *sorted(set(splits or [])), len(data)]
    for start, end in itertools.pairwise(bounds):
        if end > start:
            events += conn.receive_data(data[start:end])
    return conn, events


def events_of(data: bytes, **kwargs: Any) -> list[Event]:
    return merge_data(feed(data, **kwargs)[1])


def error_of(data: bytes, eof: bool = False, **kwargs: Any) -> RemoteProtocolError:
    """The error a connection raises for ``data`` (optionally followed by EOF)."""
    try:
        conn, _ = feed(data, **kwargs)
        if eof:
            conn.receive_data(b"")
    except RemoteProtocolError as exc:
        return exc
    raise AssertionError(f"no error for {data[:200]!r}")


def request(method: str, target: str, headers: list[tuple[str, str]], **fields: Any) -> Request:
    version = fields.pop("http_version", "1.1")
    fields.setdefault("keep_alive", version == "1.1")
    return Request(method, target, version, headers, **fields)


# -- corpus -----------------------------------------------------------------------------


@dataclass
class Case:
    name: str
    data: bytes
    spec: dict[str, Any]

    @property
    def eof(self) -> bool:
        return bool(self.spec.get("eof", False))


def load_cases(kind: str) -> list[Case]:
    cases = []
    for path in sorted((CORPUS / kind).glob("*.http")):
        spec = json.loads(path.with_suffix(".json").read_text())
        cases.append(Case(path.stem, decode_http(path.read_text(encoding="ascii")), spec))
    return cases


def expected_events(spec: dict[str, Any]) -> list[Event]:
    events: list[Event] = []
    for item in spec["events"]:
        kind = item["type"]
        if kind == "Request":
            fields = {k: v for k, v in item.items() if k not in ("type", "headers")}
            headers = [(name, value) for name, value in item["headers"]]
            events.append(request(fields.pop("method"), fields.pop("target"), headers, **fields))
        elif kind == "Data":
            events.append(Data(item["data"].encode("latin-1")))
        elif kind == "EndOfMessage":
            events.append(EndOfMessage())
        elif kind == "ConnectionClosed":
            events.append(ConnectionClosed())
        else:
            raise ValueError(f"unknown event type {kind!r}")
    return events


def run_valid(case: Case, splits: list[int] | None = None) -> tuple[H1Connection, list[Event]]:
    conn, events = feed(case.data, splits)
    if case.eof:
        events += conn.receive_data(b"")
    return conn, merge_data(events)
