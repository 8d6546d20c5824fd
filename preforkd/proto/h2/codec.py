"""HPACK (RFC 7541) through the ``hpack`` library, with a memo of the blocks that repeat.

Most of a small request's CPU went into hpack's pure-Python coding: a client that repeats
a request sends the same header block bytes (every field indexed, RFC 7541 §6.1), and a
server answers with the same fields. Such a block means the same thing as long as the
dynamic table (§2.3.2) is as it was, and coding it does not change the table. So each
side keeps a small memo, block -> fields and fields -> block, filled only by a coding
that left the table unchanged, and emptied whenever any coding changes it (a literal
with incremental indexing, an eviction, a table size update, §4.3, §6.3). A block is
still coded by hpack the first time, with all its checks (the decoder's header-list
limit included): a memo hit returns exactly what hpack returned for the same bytes in
the same table state.

The table state is read from hpack's ``HeaderTable`` (``dynamic_entries``, ``maxsize``):
every change either puts a new entry object first, changes the number of entries, or
changes the maximum size. tests/proto/test_h2_codec.py pins that against hpack.
"""

from __future__ import annotations

from hpack import Decoder, Encoder
from hpack.table import HeaderTable

__all__ = ["MEMO_SIZE", "MemoDecoder", "MemoEncoder"]

Fields = list[tuple[bytes, bytes]]

# Distinct repeating blocks remembered per connection and direction: a client's handful of
# request shapes, an application's handful of response heads. Bounded: a full memo is
# emptied and refilled, so a peer cycling through many shapes only loses the speed-up.
MEMO_SIZE = 32


def _state(table: HeaderTable) -> tuple[object, int, int]:
    entries = table.dynamic_entries
    return (entries[0] if entries else None, len(entries), table.maxsize)


def _same(a: tuple[object, int, int], b: tuple[object, int, int]) -> bool:
    # The first entry by identity: a new entry equal to the old first one is a change.
    return a[0] is b[0] and a[1] == b[1] and a[2] == b[2]


class MemoDecoder:
    """hpack's ``Decoder``, returning raw (bytes) fields, with the memo described above."""

    __slots__ = ("_decoder", "_memo", "_state")

    def __init__(self, max_header_list_size: int) -> None:
        self._decoder = Decoder(max_header_list_size=max_header_list_size)
        self._memo: dict[bytes, Fields] = {}
        self._state = _state(self._decoder.header_table)

    def decode(self, block: bytes) -> Fields:
        """The fields of ``block`` (hpack's exceptions propagate). Do not mutate the list."""
        fields = self._memo.get(block)
        if fields is not None:
            return fields
        fields = list(self._decoder.decode(block, raw=True))
        state = _state(self._decoder.header_table)
        memo = self._memo
        if not _same(state, self._state):
            self._state = state
            memo.clear()
        elif len(memo) < MEMO_SIZE:
            memo[block] = fields
        else:
            memo.clear()
        return fields


class MemoEncoder:
    """hpack's ``Encoder`` for lower-case, checked raw fields, with the memo above."""

    __slots__ = ("_encoder", "_memo", "_state")

    def __init__(self) -> None:
        self._encoder = Encoder()
        self._memo: dict[tuple[tuple[bytes, bytes], ...], bytes] = {}
        self._state = _state(self._encoder.header_table)

    def set_table_size(self, size: int) -> None:
        """The peer's SETTINGS_HEADER_TABLE_SIZE (RFC 7541 §4.2; the next block says so).

        A value equal to the current one is no change, and is not handed to hpack: its
        setter would clear the "resized" mark, and a size update still waiting for the
        next block (from an earlier SETTINGS) would never be sent -- our table could then
        outgrow the client's, which breaks every later block (RFC 7541 §4.2)."""
        encoder = self._encoder
        if size != encoder.header_table_size:
            encoder.header_table_size = size
            self._memo.clear()

    def encode(self, fields: Fields) -> bytes:
        key = tuple(fields)
        block = self._memo.get(key)
        if block is not None:
            return block
        encoder = self._encoder
        resizing = bool(encoder.table_size_changes)
        block = encoder.encode(fields)
        state = _state(encoder.header_table)
        memo = self._memo
        if resizing or not _same(state, self._state):
            self._state = state
            memo.clear()
        elif len(memo) < MEMO_SIZE:
            memo[key] = block
        else:
            memo.clear()
        return block
