"""Sharing a listener's connections evenly among the workers that accept on it.

Theory of operation. All workers wait on the same listening socket, and the kernel wakes
every one of them when a connection arrives (level-triggered epoll, no EPOLLEXCLUSIVE:
asyncio and uvloop register readers without it). Whichever worker is *on a CPU* then takes
what is queued: on a busy machine that is the one already running, so a burst of 64
connections from a client's pool landed 48/16 or 56/8 (issue 12), and the connections
stay where they land. The kernel will not balance a shared accept queue; the workers
have to.

So each worker publishes its *load*, the connections it holds plus those being started,
in its heartbeat slot at every accept and close (``heartbeat.LoadBoard``: one 16-byte
store, no lock), and before each batch of accepts reads the load of its *peers*, the
workers accepting on the same listeners. It accepts while it holds at most
:func:`slack` more than the least loaded peer; beyond that it *yields*: it stops reading
the listener for :data:`YIELD_PAUSE`, which also frees its CPU for a peer the kernel has
woken but not yet run, and looks again. This is "least connections" (as HAProxy's
leastconn and Envoy's exact balance), decided by the accepting side: a worker slowed by
long requests holds its connections longer and so gets fewer new ones.

A yield never turns into a refusal. Each worker also publishes its *turns*, how many
times it has looked at its listeners (its reader ran: its loop is running and it takes
part). A worker that yields while connections are waiting watches the turns of the less
loaded peers: if none moved for :data:`STALL` (a blocked loop, a peer starved of CPU,
one about to stop), it stops waiting for those peers and takes full batches, until their
turns move again. The cost of balancing is therefore bounded: at most :data:`STALL` of
extra accept latency, once each time a peer gets stuck; with one worker, or no live peer,
nothing changes on the accept path.

Peers are found when the worker starts, a few times in its first second, then at each
tick of its ticker (at most a second apart), from the heartbeat table: the other slots
with a pid, the same listener group (a hash of the listening sockets' inode numbers, so
that two workers are peers only if they accept from the same kernel queues), a tick newer
than :data:`PEER_FRESH` and not draining. A draining or paused worker (at
``--worker-connections``, out of descriptors) says "not accepting" at once, so nobody
yields to it.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import zlib
from collections.abc import Callable, Iterable

from preforkd.heartbeat import HeartbeatSlot

log = logging.getLogger("preforkd.worker")

# A worker may hold this many connections more than the least loaded peer before it
# yields: a few, so that a single connection never waits for a peer, or an eighth of the
# peer's, so that 64 pooled connections end within about 10% of each other (the issue
# asks for 20%) without a yield for every other accept.
SLACK_MIN = 2
SLACK_DIVISOR = 8
# How long a worker that is ahead stops reading the listener before it looks again. Its
# peer, woken by the same connection, usually runs the moment this one sleeps.
YIELD_PAUSE = 0.001
# A less loaded peer that did not look at its listeners for this long while we yielded
# is not waited for until it does: the bound on what balancing may add to the accept
# latency. Long enough for a peer that is runnable but waits for a CPU on a loaded
# machine (50 ms was seen with 8 runnable processes on 2 CPUs), short beside a client's
# connect timeout; nginx's accept_mutex_delay, the same idea, defaults to 500 ms.
STALL = 0.2
PEER_FRESH = 5.0  # a peer whose heartbeat is older than this is not accepting


def slack(least: int) -> int:
    """How many connections more than the least loaded peer a worker may hold."""
    return max(SLACK_MIN, least // SLACK_DIVISOR)


def listener_group(socks: Iterable[socket.socket]) -> int:
    """A number shared by exactly the workers that accept from these listening sockets.

    Workers inherit the same sockets from the master, and an inherited socket keeps its
    inode number; a reload that binds other addresses makes other sockets."""
    inodes = sorted(os.fstat(sock.fileno()).st_ino for sock in socks)
    return zlib.crc32(",".join(map(str, inodes)).encode()) or 1  # 0: an empty slot


class Share:
    """This worker's side of sharing: publish our load, decide how many to accept."""

    def __init__(
        self, slot: HeartbeatSlot, group: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.slot = slot
        self.board = slot.board()
        self.group = group
        self.clock = clock
        self.peers: list[int] = []  # slot indexes; mutated in place (the Gate holds it)
        self._yield_since: float | None = None  # when we started waiting for peers
        self._seen: dict[int, int] = {}  # peer index -> its turns when we last looked
        self._stuck: dict[int, int] = {}  # peer index -> its turns when we gave up on it
        self._pids: list[int] = []  # the peers' pids, for the log

    def publish(self, load: int, turns: int, accepting: bool) -> None:
        self.board.publish(self.slot.index, self.group, load, turns, accepting)

    def refresh(self, now: float) -> None:
        """Find the live peers again (at start, then from the ticker; ~20 µs)."""
        found, pids = [], []
        for index in self.board.occupied():
            if index == self.slot.index or self.board.read(index)[0] != self.group:
                continue
            beat = self.slot.sibling(index).read()
            if beat is None or beat.draining:
                continue
            if now - beat.tick < PEER_FRESH:
                found.append(index)
                pids.append(beat.pid)
        if pids != self._pids:
            self._pids = pids
            log.debug("Sharing connections with %d other worker(s): %s", len(pids), pids)
        self.peers[:] = found
        self._stuck = {i: turns for i, turns in self._stuck.items() if i in found}
        self._yield_since = None

    def allowance(self, load: int, batch: int) -> int:
        """How many connections to accept now (at most ``batch``); 0: yield."""
        least = None
        read, stuck = self.board.read, self._stuck
        for index in self.peers:
            _, peer_load, turns, accepting = read(index)
            if stuck and index in stuck:
                if stuck[index] == turns:
                    continue  # still not looking at its listeners
                del stuck[index]  # it runs again: share with it again
            if accepting and (least is None or peer_load < least):
                least = peer_load
        if least is None:
            return batch
        room = least + slack(least) - load
        if room > 0:
            self._yield_since = None
            return min(room, batch)
        return batch if self._stalled(load) else 0

    def _stalled(self, load: int) -> bool:
        """While we yield: True once the less loaded peers have not looked at their
        listeners for STALL (they are left out until they do)."""
        now = self.clock()
        read = self.board.read
        turns = {index: read(index)[2] for index in self.peers if index not in self._stuck}
        if self._yield_since is None or turns != self._seen:
            self._yield_since, self._seen = now, turns  # peers take part: keep yielding
            return False
        if now - self._yield_since < STALL:
            return False
        for index, count in turns.items():
            if read(index)[1] < load:
                self._stuck[index] = count
        log.debug(
            "Peers in slots %s took no turn in %.0f ms: accepting without them until they do",
            sorted(self._stuck), (now - self._yield_since) * 1000,
        )  # fmt: skip
        self._yield_since = None
        return True
