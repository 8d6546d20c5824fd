"""The chunked transfer coding of a request body (RFC 9112 §7.1), decoded byte by byte.

Why our own: llhttp rejects the optional whitespace RFC 9112 §7.1.1 allows around the
";" and "=" of a chunk extension (``5 ; name = value``), and it has no leniency for it
that would not also accept what the grammar forbids. Everything else is as strict as
llhttp's: CRLF only (a bare LF is a request-smuggling lever, RFC 9112 §2.2), hex digits
only in the size (no "0x", sign or trailing space), a CRLF right after each chunk's data,
well-formed extensions (their values are ignored, §7.1.1) and trailer fields (checked,
limited like header fields, then dropped, as the rest of the core drops trailers).

Pure: bytes in, body pieces out; no IO.
"""

from __future__ import annotations

import enum
import re

from preforkd.errors import RemoteProtocolError

__all__ = ["ChunkedDecoder"]

# RFC 9112 §7.1: chunk-size = 1*HEXDIG; chunk-ext = *( BWS ";" BWS chunk-ext-name
# [ BWS "=" BWS chunk-ext-val ] ); chunk-ext-val = token / quoted-string (RFC 9110 §5.6).
# 16 hex digits at most: a size beyond 2^64 is an overflow, as llhttp has it.
_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED = rb'"(?:[\t !#-\[\]-~\x80-\xff]|\\[\t -~\x80-\xff])*"'
_SIZE_LINE = re.compile(
    rb"([0-9A-Fa-f]{1,16})(?:[ \t]*;[ \t]*" + _TOKEN
    + rb"(?:[ \t]*=[ \t]*(?:" + _TOKEN + rb"|" + _QUOTED + rb"))?)*"
)  # fmt: skip
# RFC 9110 §5.1, §5.5: field-name ":" OWS field-value OWS; no obs-fold (RFC 9112 §5.2).
_FIELD_LINE = re.compile(_TOKEN + rb":[ \t]*[\t\x20-\x7e\x80-\xff]*")


class _State(enum.Enum):
    SIZE = "reading a chunk-size line"
    DATA = "reading chunk data"
    DATA_END = "expecting the CRLF after chunk data"
    TRAILERS = "reading the trailer section"
    DONE = "the body is complete"


class ChunkedDecoder:
    """Decodes one chunked body. :meth:`feed` returns the data it decoded, whether the
    body is complete, and the bytes after it (the next request's, when complete)."""

    __slots__ = (
        "_buffer",
        "_fields",
        "_max_field_size",
        "_max_fields",
        "_max_line",
        "_remaining",
        "_state",
    )

    def __init__(self, max_line: int, max_fields: int, max_field_size: int) -> None:
        self._max_line = max_line  # a size line with its extensions, and a trailer line
        self._max_fields = max_fields
        self._max_field_size = max_field_size
        self._state = _State.SIZE
        self._buffer = b""  # an incomplete line (or the part of a CRLF seen so far)
        self._remaining = 0  # data bytes left in the current chunk
        self._fields = 0  # trailer fields seen

    def feed(self, data: bytes) -> tuple[list[bytes], bool, bytes]:
        pieces: list[bytes] = []
        pos, end = 0, len(data)
        while pos < end:
            state = self._state
            if state is _State.DATA:
                take = min(self._remaining, end - pos)
                pieces.append(data[pos : pos + take])
                pos += take
                self._remaining -= take
                if not self._remaining:
                    self._state = _State.DATA_END
            elif state is _State.DATA_END:
                got = data[pos : pos + 2 - len(self._buffer)]
                pos += len(got)
                self._after_data(got)
            else:
                line, pos = self._line(data, pos)
                if line is None:
                    break
                if state is _State.SIZE:
                    self._on_size_line(line)
                elif self._on_trailer_line(line):
                    return pieces, True, data[pos:]
        return pieces, False, b""

    def _after_data(self, got: bytes) -> None:
        """Check the CRLF that ends a chunk's data (RFC 9112 §7.1), perhaps split."""
        self._buffer += got
        if not b"\r\n".startswith(self._buffer):
            raise RemoteProtocolError("expected CRLF after chunk data")
        if len(self._buffer) == 2:
            self._buffer = b""
            self._state = _State.SIZE

    def _line(self, data: bytes, pos: int) -> tuple[bytes | None, int]:
        """The next CRLF-terminated line (without its CRLF), or None: need more bytes."""
        newline = data.find(b"\n", pos)
        if newline == -1:
            self._buffer += data[pos:]
            if len(self._buffer) > self._max_line:
                raise RemoteProtocolError("chunk size line or trailer field too long")
            return None, len(data)
        line = self._buffer + data[pos:newline]
        self._buffer = b""
        if not line.endswith(b"\r"):
            raise RemoteProtocolError("bare LF in chunked framing")  # RFC 9112 §2.2
        if len(line) > self._max_line + 1:
            raise RemoteProtocolError("chunk size line or trailer field too long")
        return line[:-1], newline + 1

    def _on_size_line(self, line: bytes) -> None:
        match = _SIZE_LINE.fullmatch(line)
        if match is None:
            raise RemoteProtocolError("invalid chunk size or chunk extension")
        size = int(match.group(1), 16)
        if size:
            self._remaining = size
            self._state = _State.DATA
        else:
            self._state = _State.TRAILERS  # last-chunk: the trailer section follows

    def _on_trailer_line(self, line: bytes) -> bool:
        """One line of the trailer section; True at its end (the empty line)."""
        if not line:
            self._state = _State.DONE
            return True
        if _FIELD_LINE.fullmatch(line) is None:
            raise RemoteProtocolError("invalid trailer field")
        self._fields += 1
        if self._fields > self._max_fields:
            raise RemoteProtocolError("too many trailer fields", 431)
        if len(line) - 1 > self._max_field_size:
            raise RemoteProtocolError("trailer field too large", 431)
        return False
