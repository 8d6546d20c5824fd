"""The HPACK memo (proto/h2/codec.py) gives exactly what hpack alone gives, block by block.

Sequences of header lists drawn from a small alphabet repeat often (so the memo is hit),
with indexed, unindexed and never-indexed fields, table size updates and evictions (a
small table) in between: the memo must never answer from a table state that has changed.
"""

from __future__ import annotations

from hpack import Decoder, Encoder, HeaderTuple, NeverIndexedHeaderTuple
from hyperframe.frame import HeadersFrame
from hypothesis import given, settings
from hypothesis import strategies as st

from preforkd.proto.h2.codec import MemoDecoder, MemoEncoder

from .h2_helpers import EXAMPLES, RawClient, frame

_NAMES = [b"x-a", b"x-b", b"content-type", b"date", b"cookie"]
_VALUES = [b"1", b"22", b"v" * 40, b"text/plain", b""]

field = st.tuples(st.sampled_from(_NAMES), st.sampled_from(_VALUES), st.booleans())
header_list = st.lists(field, min_size=1, max_size=4)
step = st.one_of(header_list, st.sampled_from([0, 64, 128, 4096]))  # an int: resize


def _same_outcome(plain: Decoder, memo: MemoDecoder, block: bytes) -> None:
    """The same fields, or the same hpack error (hpack's own encoder can emit blocks its
    decoder refuses after a table resize to 0 and back)."""
    try:
        expected = list(plain.decode(block, raw=True))
    except Exception as exc:  # any hpack error: the memo must raise it too
        try:
            memo.decode(block)
        except type(exc):
            return
        raise AssertionError("the memo decoded a block hpack refused") from exc
    assert memo.decode(block) == expected


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.lists(step, max_size=40))
def test_memo_decoder_matches_hpack(steps: list[list[tuple[bytes, bytes, bool]] | int]) -> None:
    encoder = Encoder()
    plain, memo = Decoder(), MemoDecoder(65536)
    blocks: list[bytes] = []
    for item in steps:
        if isinstance(item, int):
            encoder.header_table_size = item
            continue
        fields = [NeverIndexedHeaderTuple(n, v) if s else HeaderTuple(n, v) for n, v, s in item]
        block = encoder.encode(fields)
        blocks.append(block)
        _same_outcome(plain, memo, block)
    # The same blocks again, in order, to a fresh pair (a replay hits the memo at once).
    plain, memo = Decoder(), MemoDecoder(65536)
    for block in blocks + blocks[:1]:
        _same_outcome(plain, memo, block)


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.lists(step, max_size=40))
def test_memo_encoder_matches_hpack(steps: list[list[tuple[bytes, bytes, bool]] | int]) -> None:
    plain, memo = Encoder(), MemoEncoder()
    for item in steps:
        if isinstance(item, int):
            if item != plain.header_table_size:  # see the last test: hpack needs this
                plain.header_table_size = item
            memo.set_table_size(item)
            continue
        fields = [(n, v) for n, v, _ in item]
        block = memo.encode(fields)
        assert block == plain.encode(fields)  # byte for byte what hpack alone writes


def test_a_repeated_request_is_decoded_once() -> None:
    encoder, memo = Encoder(), MemoDecoder(65536)
    fields = [(b":method", b"GET"), (b":path", b"/"), (b"x-a", b"1")]
    first = encoder.encode(fields)  # literals with indexing: the table changes
    assert memo.decode(first) == fields
    second = encoder.encode(fields)  # all indexed now
    assert memo.decode(second) is memo.decode(second)  # the memo answered


def test_a_repeated_table_size_setting_still_reaches_the_client() -> None:
    """A client that repeats SETTINGS_HEADER_TABLE_SIZE before our next response must
    still get the table size update (RFC 7541 §4.2). hpack's encoder forgets a pending
    update when it is told the same size again, and then grows its table past the
    client's: the client cannot decode what follows (the old core, through h2, did so)."""
    raw = RawClient()
    bigger = frame(4, 0, 0, (1).to_bytes(2) + (8192).to_bytes(4))
    raw.send(bigger + bigger)  # e.g. two SETTINGS frames, both with the new size
    client = Decoder()  # the client's decoder: 4096 until told otherwise, 8192 allowed
    client.max_allowed_table_size = 8192
    value = "v" * 1000
    for sid in range(1, 20, 2):
        raw.send(raw.headers(sid))
        fields = [(f"x-{sid}-{i}", value) for i in range(3)]  # new entries: the table grows
        raw.server.send_response(sid, "204 No Content", fields, end_stream=True)
        raw.received += raw.server.data_to_send()
        for f in raw.frames():
            if isinstance(f, HeadersFrame):
                decoded = client.decode(bytes(f.data), raw=True)
                assert (f"x-{sid}-0".encode(), value.encode()) in decoded
