"""RFC 9218 extensible priorities: the signals, and the DATA scheduler that follows them.

Theory of operation
-------------------
A client says how urgent each response is, and whether it can use it piece by piece:

* the ``priority`` request field (RFC 9218 §5), an RFC 8941 Dictionary such as
  ``u=0`` or ``u=5, i``: ``u`` (urgency, §4.1) is an integer 0..7, lower first, default 3;
  ``i`` (incremental, §4.2) a boolean, default false. Unknown parameters, values out of
  range and values of another type are ignored (§4); a field that fails to parse is
  ignored as a whole (RFC 8941 §4.2), so the defaults apply;
* the PRIORITY_UPDATE frame (type 0x10, §7.1), on stream 0, naming a request stream and
  carrying a new field value; it may arrive before the request it names (§7), and then
  wins over the request's field: the last signal received is the most up to date.

``PriorityScheduler`` keeps each open stream's ``Priority`` and orders the streams that
have DATA pending, as §10 recommends:

1. lower urgency first: a stream is served only when no more urgent stream can send
   (the connection still serves a less urgent stream whose more urgent rivals are held
   by their flow-control windows: §10's "when possible");
2. within one urgency, non-incremental responses one at a time, in ascending stream id
   (the order the client made its requests), each sent whole before the next;
3. incremental responses of one urgency share the connection round-robin, one quantum
   (a DATA frame of up to 16 KiB) per turn.

When one urgency has both kinds, the non-incremental ones take one turn of the rotation
between them, as if they were one more incremental stream. §10 names this case (a large
non-incremental response followed by incremental ones) and recommends avoiding
starvation either way; giving the group one turn does, without guessing sizes.

The connection asks for the order before every quantum it frames (``order``), passing the
streams with data pending, least recently served first; that recency is what the
round-robin follows. It need not ask again while the stream it serves ``keeps_turn`` (a
non-incremental one with no incremental rival at its urgency): a large response then
costs one ``order`` call, not one per 16 KiB. The scheduler never sees bytes or windows:
the connection skips a stream its windows hold and offers the quantum to the next in the
order.

Two rules keep this module honest: no IO and no clock (values in, values out), and every
rule cites its section of RFC 9218 (or RFC 8941 for the field syntax).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from preforkd.proto.h2.settings import ErrorCodes, H2ProtocolError
from preforkd.proto.structured import StructuredFieldError, parse_dictionary

__all__ = [
    "DEFAULT_PRIORITY",
    "Priority",
    "PriorityScheduler",
    "parse_priority",
    "parse_priority_update",
    "request_priority",
]

# RFC 9218 §4.1: urgency is an integer from 0 (most urgent) to 7 (background).
MAX_URGENCY = 7


@dataclass(frozen=True, slots=True)
class Priority:
    """A response's priority (RFC 9218 §4): ``urgency`` 0..7, lower first; ``incremental``
    when the client can use the response in parts as they arrive."""

    urgency: int = 3  # §4.1: the default urgency
    incremental: bool = False  # §4.2: the default

    def __post_init__(self) -> None:
        if not 0 <= self.urgency <= MAX_URGENCY:
            raise ValueError(f"urgency {self.urgency} is not in 0..{MAX_URGENCY}")


DEFAULT_PRIORITY = Priority()

# Field values already parsed, and what they gave. Clients send few distinct values (a
# browser a handful, one per kind of resource), and parsing one costs about as much as the
# rest of a small request in the core; the memo is pure (same bytes, same answer) and
# bounded: it starts over once it holds this many values.
_MEMO_SIZE = 128
_memo: dict[bytes, Priority | None] = {}


def parse_priority(value: bytes | str) -> Priority | None:
    """The priority a Priority field value states, or None when it does not parse.

    A parameter that is absent takes its default (§4: a PRIORITY_UPDATE carries the full
    set, and a request without the parameter gets the default); one that is out of range
    or of another type is ignored, i.e. also the default (§4). ``u=1.0`` (a decimal),
    ``u=8``, ``u=-1`` and ``u`` (Boolean true) all leave the urgency at 3; ``i=1`` (an
    integer, not ``?1``) leaves ``incremental`` false.
    """
    if isinstance(value, str):
        value = value.encode()
    try:
        return _memo[value]
    except KeyError:
        pass
    if len(_memo) >= _MEMO_SIZE:
        _memo.clear()
    priority = _memo[value] = _parse(value)
    return priority


def _parse(value: bytes) -> Priority | None:
    try:
        members = parse_dictionary(value)
    except StructuredFieldError:
        return None
    urgency = DEFAULT_PRIORITY.urgency
    incremental = DEFAULT_PRIORITY.incremental
    if "u" in members:
        u = members["u"][0]
        # ``type() is int``: an sf-boolean is a Python bool, which is also an int.
        if type(u) is int and 0 <= u <= MAX_URGENCY:
            urgency = u
    if "i" in members:
        i = members["i"][0]
        if isinstance(i, bool):
            incremental = i
    if urgency == DEFAULT_PRIORITY.urgency and incremental == DEFAULT_PRIORITY.incremental:
        return DEFAULT_PRIORITY
    return Priority(urgency, incremental)


def request_priority(value: bytes | None) -> Priority:
    """The priority of a request whose Priority field (all its lines joined with ", ",
    RFC 9110 §5.3) is ``value``: the defaults when there is none or it does not parse."""
    if value is None:
        return DEFAULT_PRIORITY
    return parse_priority(value) or DEFAULT_PRIORITY


def parse_priority_update(stream_id: int, payload: bytes | memoryview) -> tuple[int, bytes]:
    """Check a PRIORITY_UPDATE frame (RFC 9218 §7.1); its prioritized stream id and value.

    Raises ``H2ProtocolError`` for the connection errors of §7.1: the frame on a stream
    other than 0, a prioritized stream id of 0, or one naming a push stream (an even id:
    we never promise any, so it would name an idle push stream). A payload too short to
    hold the stream id is a FRAME_SIZE_ERROR (RFC 9113 §4.2). The reserved bit is ignored.
    The remaining connection-level rule, on how many idle streams may be prioritized,
    needs the stream table: ``PriorityScheduler.update`` enforces it.
    """
    if stream_id:
        raise H2ProtocolError(f"PRIORITY_UPDATE on stream {stream_id}")  # §7.1
    if len(payload) < 4:
        raise H2ProtocolError("PRIORITY_UPDATE too short", ErrorCodes.FRAME_SIZE_ERROR)
    prioritized = int.from_bytes(payload[:4]) & 0x7FFFFFFF
    if not prioritized:
        raise H2ProtocolError("PRIORITY_UPDATE for stream 0")  # §7.1
    if not prioritized % 2:
        raise H2ProtocolError(f"PRIORITY_UPDATE for push stream {prioritized}")  # §7.1
    return prioritized, bytes(payload[4:])


class PriorityScheduler:
    """The RFC 9218 DATA scheduler (see the module docstring), with the ``Scheduler``
    interface of ``scheduler.py``: ``open``, ``update``, ``close``, ``order``,
    ``keeps_turn``.

    ``max_streams`` is our SETTINGS_MAX_CONCURRENT_STREAMS: it bounds the updates kept for
    streams not yet opened (§7.1), so the memory of a connection stays bounded.
    """

    __slots__ = ("_early", "_incremental", "_max_streams", "_priorities", "_special")

    def __init__(self, max_streams: int = 100) -> None:
        self._max_streams = max_streams
        self._priorities: dict[int, Priority] = {}  # every open stream
        self._early: dict[int, Priority] = {}  # idle streams named by PRIORITY_UPDATE
        self._special = 0  # open streams whose priority is not the default
        self._incremental = [0] * (MAX_URGENCY + 1)  # open incremental streams by urgency

    def priority(self, stream_id: int) -> Priority:
        """The priority an open stream is served with (the default for unknown ones)."""
        return self._priorities.get(stream_id, DEFAULT_PRIORITY)

    def open(self, stream_id: int, priority: bytes | None) -> None:
        """A request arrived; ``priority`` is its Priority field value, or None."""
        if priority is None and not self._early:
            self._priorities[stream_id] = DEFAULT_PRIORITY  # the common case, made cheap
            return
        early = self._early
        update = early.pop(stream_id, None) if early else None
        if early:
            # RFC 9113 §5.1.1: opening a stream closes every idle stream below it; their
            # remembered updates can never apply.
            for sid in [sid for sid in early if sid < stream_id]:
                del early[sid]
        # RFC 9218 §7: an update received before the request overrides its field.
        self._set(stream_id, update or request_priority(priority))

    def update(self, stream_id: int, priority: bytes) -> None:
        """A PRIORITY_UPDATE (checked by ``parse_priority_update``) for a stream that is
        open or idle; the connection drops those for closed streams (§7.1 allows it).

        An update for an idle stream is kept until the stream opens; at most one per
        stream, the latest (§7). Raises ``H2ProtocolError`` when the idle streams so
        prioritized plus the open ones would exceed SETTINGS_MAX_CONCURRENT_STREAMS
        (§7.1: PROTOCOL_ERROR). A value that does not parse is ignored: §7 allows
        treating it as a connection error, but the stream is served well enough as it is.
        """
        new = parse_priority(priority)
        if stream_id in self._priorities:
            if new is not None:
                self._set(stream_id, new)
            return
        early = self._early
        if stream_id not in early and len(self._priorities) + len(early) >= self._max_streams:
            raise H2ProtocolError(
                f"PRIORITY_UPDATE for idle stream {stream_id}: more than "
                f"{self._max_streams} streams open or prioritized"
            )
        if new is not None:
            early[stream_id] = new

    def close(self, stream_id: int) -> None:
        """The stream is over, or was refused: forget it (and any update kept for it)."""
        old = self._priorities.pop(stream_id, None)
        if old is not None and old is not DEFAULT_PRIORITY:
            self._forget(old)
        if self._early:
            self._early.pop(stream_id, None)

    def _set(self, stream_id: int, priority: Priority) -> None:
        old = self._priorities.get(stream_id)
        if old is not None and old is not DEFAULT_PRIORITY:
            self._forget(old)
        # parse_priority gives the default as this one object, so ``is`` tells it.
        if priority is not DEFAULT_PRIORITY:
            self._special += 1
            if priority.incremental:
                self._incremental[priority.urgency] += 1
        self._priorities[stream_id] = priority

    def _forget(self, priority: Priority) -> None:
        """Undo the counts ``_set`` made for a priority (not the default) a stream no
        longer has."""
        self._special -= 1
        if priority.incremental:
            self._incremental[priority.urgency] -= 1

    def keeps_turn(self, stream_id: int) -> bool:
        """After a quantum, the stream still comes first (and no other moves): it is not
        incremental and no incremental stream shares its urgency, so only stream ids
        order its rivals, and the ones the connection skipped before it are held by their
        windows, which sending only closes further."""
        priority = self._priorities.get(stream_id, DEFAULT_PRIORITY)
        return not priority.incremental and not self._incremental[priority.urgency]

    def order(self, ready: Sequence[int]) -> Sequence[int]:
        """The streams of ``ready`` (data pending, least recently served first) in the
        order the next quantum should be offered to them (RFC 9218 §10)."""
        if len(ready) < 2:
            return ready
        if not self._special:
            # Every stream has the default priority (u=3, not incremental): one at a time,
            # in request order (§10).
            return sorted(ready)
        priorities = self._priorities
        default = DEFAULT_PRIORITY
        entries = [(priorities.get(sid, default), turn, sid) for turn, sid in enumerate(ready)]
        # The turn of each urgency's non-incremental group: that of its most recently
        # served member, so that the group goes to the back of the rotation once served.
        group_turn = {p.urgency: turn for p, turn, _ in entries if not p.incremental}

        def key(entry: tuple[Priority, int, int]) -> tuple[int, int, int]:
            p, turn, sid = entry
            if p.incremental:
                return p.urgency, turn, 0
            return p.urgency, group_turn[p.urgency], sid

        entries.sort(key=key)
        return [sid for _, _, sid in entries]
