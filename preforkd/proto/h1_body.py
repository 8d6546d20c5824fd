"""The two framings of an HTTP/1.1 request body that the H1 core applies itself.

llhttp parses request heads; a body that goes on past the read holding its head is taken
over from it (see ``H1Connection._frame_length`` and ``_on_headers_complete`` in
:mod:`preforkd.proto.h1`) and framed by one of these:

* :class:`LengthBody`: a Content-Length body, counted down (RFC 9112 §6.2). llhttp would
  hand each read of it over through a Python callback as a new bytes object; counting it
  here passes a read that is all body on as the very object received.
* :class:`ChunkedBody`: a chunked body (RFC 9112 §7.1), decoded by
  :class:`preforkd.proto.chunked.ChunkedDecoder` (llhttp refuses the whitespace §7.1.1
  allows in chunk extensions).

Both have the same interface: ``feed(data, start, events)`` appends ``Data`` events for
the body bytes of ``data[start:]`` to ``events`` and returns ``None`` while the body goes
on; once the body is complete it appends ``EndOfMessage`` and returns the bytes that
follow the body (the next request's, for the caller to parse). What happens next (keep
alive, close, a protocol switch) is the caller's business.

Pure: bytes in, events out; no IO.
"""

from __future__ import annotations

from preforkd.proto.chunked import ChunkedDecoder
from preforkd.proto.events import Data, EndOfMessage, Event

__all__ = ["VIEW_MIN", "ChunkedBody", "LengthBody"]

# A piece of body at least this large that starts inside its read is handed on as a view of
# the read rather than a copy. A smaller one is copied: that is as cheap, and lets a
# whole-body read() return the piece itself (wsgi/input.py).
VIEW_MIN = 16 * 1024


class LengthBody:
    """A Content-Length body counted down (RFC 9112 §6.2).

    One per connection, re-armed by :meth:`start` for each counted body: the common read of
    a large upload touches only ``remaining`` (the core's fast path reads it directly).
    """

    __slots__ = ("remaining",)

    def __init__(self) -> None:
        self.remaining = 0  # body bytes still to come

    def start(self, length: int) -> None:
        self.remaining = length

    def feed(self, data: bytes, start: int, events: list[Event]) -> bytes | None:
        """Count the body bytes of ``data[start:]``; see the module docstring.

        A read that is all body becomes one Data event holding the received object itself.
        The large rest of a read after its head becomes a memoryview of it (the first
        read of an upload holds up to 256 KiB of body: not copied once more); only a
        small rest, or the end of a body, is sliced."""
        remaining = self.remaining
        end = start + remaining
        size = len(data)
        if end > size:
            if start < size:  # (a head that ends its read: no body bytes yet)
                if not start:
                    events.append(Data(data))
                elif size - start < VIEW_MIN:
                    events.append(Data(data[start:]))
                else:
                    events.append(Data(memoryview(data)[start:]))
                self.remaining = remaining - (size - start)
            return None
        events.append(Data(data[start:end] if start or end < size else data))
        events.append(EndOfMessage())
        self.remaining = 0
        return data[end:]


class ChunkedBody:
    """A chunked body (RFC 9112 §7.1), one per request.

    The limits are those of the request head: a chunk-size line is limited like a field,
    trailer fields like header fields (they are checked, then dropped)."""

    __slots__ = ("_decoder",)

    def __init__(self, max_line: int, max_fields: int, max_field_size: int) -> None:
        self._decoder = ChunkedDecoder(max_line, max_fields, max_field_size)

    def feed(self, data: bytes, start: int, events: list[Event]) -> bytes | None:
        """Decode ``data[start:]``; see the module docstring. Raises
        ``RemoteProtocolError`` (400) on a malformed body."""
        pieces, done, rest = self._decoder.feed(data[start:] if start else data)
        for piece in pieces:
            events.append(Data(piece))
        if not done:
            return None
        events.append(EndOfMessage())
        return rest
