"""Sharing connections among workers (worker/balance.py, the heartbeat table's load board),
in memory with a real table and, for the gates, a real loop and listening socket."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from preforkd.heartbeat import Beat, HeartbeatTable
from preforkd.worker.accept import ACCEPT_BATCH, Acceptor, Gate
from preforkd.worker.balance import STALL, Share, listener_group, slack
from preforkd.worker.tls import ListenerSpec

GROUP = 7


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def table() -> Iterator[HeartbeatTable]:
    table = HeartbeatTable(capacity=256)
    yield table
    table.close()


def _worker(table: HeartbeatTable, index: int, tick: float = 1000.0, **beat: Any) -> None:
    """A live worker in slot ``index`` (its heartbeat record)."""
    fields = {"requests": 0, "connections": 0, "in_flight": 0, "draining": False, **beat}
    table.slot(index).write(Beat(pid=100 + index, tick=tick, **fields))


def _load(table: HeartbeatTable, index: int, load: int, turns: int = 0, **kw: Any) -> None:
    group, accepting = kw.get("group", GROUP), kw.get("accepting", True)
    table.slot(index).board().publish(index, group, load, turns, accepting)


def _share(table: HeartbeatTable, clock: Clock, index: int = 0) -> Share:
    _worker(table, index)
    share = Share(table.slot(index), GROUP, clock)
    share.refresh(clock.now)
    return share


def test_the_used_slots_are_found_without_reading_the_whole_table(table: HeartbeatTable) -> None:
    for index in (0, 1, 70):
        _worker(table, index)
    board = table.slot(0).board()
    assert board.occupied() == [0, 1, 70]
    # The master hands out the lowest free slot: past a chunk of never-used slots, no
    # worker can be (so one there is not looked for).
    _worker(table, 200)
    assert board.occupied() == [0, 1, 70]


def test_a_worker_alone_takes_a_full_batch(table: HeartbeatTable) -> None:
    share = _share(table, Clock())
    assert share.peers == []
    assert share.allowance(load=500, batch=ACCEPT_BATCH) == ACCEPT_BATCH


def test_a_worker_takes_up_to_slack_more_than_the_least_loaded_peer(table: HeartbeatTable) -> None:
    clock = Clock()
    _worker(table, 1)
    _worker(table, 2)
    _load(table, 1, 40)
    _load(table, 2, 10)
    share = _share(table, clock)
    assert share.peers == [1, 2]
    assert share.allowance(load=5, batch=ACCEPT_BATCH) == 10 + slack(10) - 5
    assert share.allowance(load=0, batch=4) == 4  # at most a batch
    assert share.allowance(load=10 + slack(10), batch=ACCEPT_BATCH) == 0  # ahead: yield
    assert slack(0) >= 1 and slack(64) == 64 // 8


def test_only_live_accepting_peers_on_the_same_listeners_are_waited_for(
    table: HeartbeatTable,
) -> None:
    clock = Clock()
    _worker(table, 1, draining=True)  # stopping: gone from the queue
    _worker(table, 2, tick=clock.now - 60)  # its loop has not ticked for a minute
    _worker(table, 3)
    _load(table, 3, 0, group=GROUP + 1)  # accepts from other listening sockets
    _worker(table, 4)
    _load(table, 4, 0, accepting=False)  # at --worker-connections, or out of descriptors
    for index in (1, 2):
        _load(table, index, 0)
    share = _share(table, clock)
    assert share.peers == [4]
    assert share.allowance(load=30, batch=ACCEPT_BATCH) == ACCEPT_BATCH


def test_a_peer_that_does_not_run_while_we_yield_is_not_waited_for_until_it_does(
    table: HeartbeatTable,
) -> None:
    clock = Clock()
    _worker(table, 1)
    _load(table, 1, 0, turns=5)
    share = _share(table, clock)
    assert share.allowance(load=30, batch=ACCEPT_BATCH) == 0
    clock.now += STALL / 2
    assert share.allowance(load=30, batch=ACCEPT_BATCH) == 0
    clock.now += STALL  # its turns did not move for STALL: its loop is stuck
    assert share.allowance(load=30, batch=ACCEPT_BATCH) == ACCEPT_BATCH
    _worker(table, 1, tick=clock.now)  # its heartbeat is still fresh
    share.refresh(clock.now)  # a refresh does not make us wait for it again...
    assert share.peers == [1]
    assert share.allowance(load=30, batch=ACCEPT_BATCH) == ACCEPT_BATCH
    _load(table, 1, 0, turns=6)  # ...its loop running again does
    assert share.allowance(load=30, batch=ACCEPT_BATCH) == 0


def test_a_peer_that_keeps_running_is_waited_for(table: HeartbeatTable) -> None:
    clock = Clock()
    _worker(table, 1)
    _load(table, 1, 0)
    share = _share(table, clock)
    for turns in range(1, 6):
        _load(table, 1, 0, turns=turns)
        assert share.allowance(load=30, batch=ACCEPT_BATCH) == 0
        clock.now += STALL
    assert share.peers == [1]


def test_listener_group_is_the_same_for_inherited_sockets_only() -> None:
    with socket.create_server(("127.0.0.1", 0)) as a, socket.create_server(("127.0.0.1", 0)) as b:
        with a.dup() as inherited:  # what fork gives a worker: the same socket
            assert listener_group([a]) == listener_group([inherited]) != 0
        assert listener_group([a]) != listener_group([b])
        assert listener_group([a, b]) == listener_group([b, a])


class _Conn(asyncio.Protocol):
    def __init__(self, connections: set[Any]) -> None:
        self.connections = connections

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.connections.add(self)


def _gate(
    loop: asyncio.AbstractEventLoop, listener: socket.socket, table: HeartbeatTable, index: int
) -> Gate:
    """One "worker": a gate and acceptor on its own descriptor of the shared listener. Its
    clock stands still, so it never gives up waiting for its peer (see the STALL test)."""
    sock = listener.dup()
    sock.setblocking(False)
    _worker(table, index, tick=time.monotonic())
    connections: set[Any] = set()
    gate = Gate(loop, connections, cap=1000, share=Share(table.slot(index), GROUP, Clock()))
    spec = ListenerSpec(sock, frozenset({"h1"}), None)
    gate.acceptors.append(Acceptor(loop, spec, lambda: _Conn(connections), gate, 5.0))
    return gate


def test_a_worker_that_runs_first_leaves_its_peer_a_share_of_a_burst(
    table: HeartbeatTable,
) -> None:
    """64 connections queued at once and one worker on the CPU first (its peer woken but
    not yet running): it used to take them all, 16 a loop turn; now it takes a few,
    yields, and the peer takes its part when it runs."""
    loop = asyncio.new_event_loop()
    listener = socket.create_server(("127.0.0.1", 0), backlog=128)
    first, second = gates = [_gate(loop, listener, table, index) for index in (0, 1)]
    for gate in gates:
        gate.publish()
    for gate in gates:
        gate.refresh(time.monotonic())
    assert [g.peers for g in gates] == [[1], [0]]
    clients = [socket.create_connection(listener.getsockname()) for _ in range(64)]

    async def until(condition: Callable[[], bool]) -> None:
        while not condition():
            await asyncio.sleep(0.001)

    try:
        first.start()
        held_first = lambda: first.pending + len(first.connections)  # noqa: E731
        loop.run_until_complete(asyncio.wait_for(until(lambda: held_first() > 0), 10))
        # Some loop turns more (each finds the listener readable and yields): still
        # no more than slack(0), the peer's load plus the slack, however many turns.
        loop.run_until_complete(asyncio.sleep(0.02))
        assert held_first() == slack(0)
        second.start()
        held = lambda: sum(len(g.connections) for g in gates)  # noqa: E731
        loop.run_until_complete(asyncio.wait_for(until(lambda: held() == 64), 10))
        counts = sorted(len(g.connections) for g in gates)
        assert counts[1] - counts[0] <= slack(counts[0]) + 1, counts
        first.stop()  # a stopping worker says so at once: nobody yields to it
        assert table.slot(0).board().read(0)[3] == 0
    finally:
        for gate in gates:
            gate.stop()
            for conn in gate.connections:
                conn.transport.close()
            for acceptor in gate.acceptors:
                acceptor.listener.sock.close()
        loop.run_until_complete(asyncio.sleep(0))
        for client in clients:
            client.close()
        listener.close()
        loop.close()


def test_the_load_board_lies_outside_the_heartbeat_record(table: HeartbeatTable) -> None:
    _worker(table, 3, connections=9)
    _load(table, 3, 12, turns=2**32 + 5)
    beat = table.slot(3).read()
    assert beat is not None and beat.connections == 9 and beat.pid == 103
    assert table.slot(3).board().read(3) == (GROUP, 12, 5, 1)
    table.slot(3).clear()
    assert table.slot(3).board().read(3) == (0, 0, 0, 0)


def test_a_worker_that_stops_while_it_yields_stays_stopped(table: HeartbeatTable) -> None:
    """The end of a yield resumes reading only if the worker still accepts: a stop (or
    the cap) during the pause must not be undone by it."""
    loop = asyncio.new_event_loop()
    listener = socket.create_server(("127.0.0.1", 0), backlog=16)
    _worker(table, 1, tick=time.monotonic())
    _load(table, 1, 0)  # an idle peer that never takes a turn: this one yields to it
    gate = _gate(loop, listener, table, 0)
    gate.refresh(time.monotonic())
    clients = [socket.create_connection(listener.getsockname()) for _ in range(8)]
    try:
        gate.start()

        async def until_yielding() -> None:
            while not gate.yielding:
                await asyncio.sleep(0)  # one loop turn at a time: the yield lasts 1 ms

        loop.run_until_complete(asyncio.wait_for(until_yielding(), 10))
        assert gate.pending + len(gate.connections) == slack(0)
        gate.stop()
        turns = gate.turns
        loop.run_until_complete(asyncio.sleep(0.01))  # past the end of the yield
        assert not any(acceptor.reading for acceptor in gate.acceptors)
        assert gate.turns == turns  # its reader never ran again
        assert table.slot(0).board().read(0)[3] == 0  # peers see it is not accepting
    finally:
        for conn in gate.connections:
            conn.transport.close()
        loop.run_until_complete(asyncio.sleep(0))
        for acceptor in gate.acceptors:
            acceptor.listener.sock.close()
        for client in clients:
            client.close()
        listener.close()
        loop.close()
