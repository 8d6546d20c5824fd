"""One worker's event loop: serve the inherited listeners until told to stop, then drain."""

from __future__ import annotations

import asyncio
import asyncio.selector_events
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable

from preforkd.heartbeat import HeartbeatSlot
from preforkd.worker.accept import Acceptor, Gate
from preforkd.worker.balance import Share, listener_group
from preforkd.worker.connection import H1Protocol, listening_for
from preforkd.worker.proxied import ProxyProtocol
from preforkd.worker.state import WorkerState
from preforkd.worker.tls import ListenerSpec

log = logging.getLogger("preforkd.worker")

MAX_TICK = 1.0  # the ticker refreshes clocks and checks deadlines at least this often
MIN_TICK = 0.05
DRAIN_TICK = 0.05
# The workers of a generation start together: look for peers at 10, 20, 40... ms after
# start, not only each tick, so a burst soon after start is shared too.
EARLY_REFRESH = 0.01
# How much earlier than the master's SIGKILL a draining worker gives up by itself: a
# tenth of --graceful-timeout, at most one second (the time to log, close and exit).
DRAIN_MARGIN_MAX = 1.0


def worker_drain_time(graceful_timeout: float) -> float:
    """The part of --graceful-timeout a worker spends draining before it gives up."""
    return graceful_timeout - min(DRAIN_MARGIN_MAX, graceful_timeout / 10)


class Server:
    """Owns the loop-side life of a worker: listening, ticking, stopping."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        state: WorkerState,
        listeners: list[ListenerSpec],
        *,
        backlog: int,
        master_pid: int,
        max_requests: int = 0,
        handshake_timeout: float = 10.0,
        worker_connections: int = 1000,
        proxy: ProxyProtocol | None = None,
        heartbeat: HeartbeatSlot | None = None,
    ) -> None:
        self.loop = loop
        self.proxy = proxy
        self.state = state
        self.listeners = listeners
        self.backlog = backlog
        self.master_pid = master_pid
        self.max_requests = max_requests
        self.handshake_timeout = handshake_timeout
        # With a heartbeat table the workers see each other's load and share it.
        share = None
        if heartbeat is not None:
            share = Share(heartbeat, listener_group(spec.sock for spec in listeners))
        self.gate = Gate(loop, state.connections, worker_connections, state.clock, share)
        state.on_connection_closed = self.gate.check
        self._stop_requested: asyncio.Future[bool] = loop.create_future()  # True: graceful
        self._drained: asyncio.Future[None] | None = None
        self._drain_deadline = 0.0
        settings = state.settings
        timeouts = [t / 4 for t in (settings.keep_alive, settings.header_timeout) if t > 0]
        self.tick_interval = max(MIN_TICK, min([MAX_TICK, *timeouts]))
        if max_requests:
            state.on_request_done = self._check_max_requests

    async def start(self) -> None:
        for listener in self.listeners:
            listener.sock.setblocking(False)
            acceptor = Acceptor(
                self.loop,
                listener,
                self._protocol_factory(listener),
                self.gate,
                self.handshake_timeout,
                self.proxy,
            )
            self.gate.acceptors.append(acceptor)
        self.gate.refresh(time.monotonic())  # the workers already serving share with us
        self.gate.start()
        self.loop.call_later(self.tick_interval, self._tick)
        self.loop.call_later(EARLY_REFRESH, self._refresh_early, EARLY_REFRESH)

    def _protocol_factory(self, listener: ListenerSpec) -> Callable[[], H1Protocol]:
        state = self.state
        scheme = "https" if listener.ssl_context else "http"
        protocols = listener.protocols
        listening = listening_for(listener.sock, scheme, protocols, state)
        return lambda: H1Protocol(state, scheme, protocols, listening)

    def install_signal_handlers(self, reopen_logs: Callable[[], None]) -> None:
        add = self.loop.add_signal_handler
        add(signal.SIGTERM, self.stop, True)
        add(signal.SIGINT, self.stop, False)
        add(signal.SIGQUIT, self.stop, False)
        add(signal.SIGUSR1, reopen_logs)
        # The master's business: a worker ignores them rather than die of their defaults.
        for sig in (signal.SIGHUP, signal.SIGUSR2, signal.SIGTTIN, signal.SIGTTOU):
            add(sig, lambda: None)

    def stop(self, graceful: bool = True) -> None:
        if not self._stop_requested.done():
            self._stop_requested.set_result(graceful)
            if graceful:
                self._begin_drain()
        elif not graceful and self._drained is not None and not self._drained.done():
            self._drained.set_result(None)  # a quick stop cuts a graceful one short

    def _begin_drain(self) -> None:
        """Mark the worker draining *now*, in the same loop turn as the stop request.

        From here on every response this worker frames says "Connection: close", and a
        response already framed with keep-alive leaves its connection open for the
        client's next request (which then gets the close). Setting the flag later, after
        accepting has stopped, left a window of loop turns in which a keep-alive response
        was followed by a close the client never heard of: its next request was lost."""
        state = self.state
        state.draining = True
        # The master SIGKILLs a worker --graceful-timeout after asking it to stop. The
        # worker gives up a margin earlier, counted from the same moment, so that it ends
        # its own drain: it logs what it cut short and exits with its own code.
        self._drain_deadline = time.monotonic() + worker_drain_time(state.settings.graceful_timeout)
        if state.on_draining is not None:
            state.on_draining()
        for conn in list(state.connections):
            conn.drain()

    async def serve_until_stopped(self) -> None:
        graceful = await self._stop_requested
        await self._stop_accepting()
        if graceful:
            await self._drain()
        for conn in list(self.state.connections):
            conn.close()

    async def _stop_accepting(self) -> None:
        """Stop taking connections and close this worker's copy of each listener, without
        dropping a connection the kernel has already completed.

        A listening socket stops listening only when its last descriptor closes; then the
        kernel resets every connection still in its accept queue, requests and all. On a
        reload other workers hold the socket open, but on a graceful stop of the whole
        server (the master has closed its copies) this worker may be the last holder. So
        the queue is swept with non-blocking accept() calls, whose connections are served
        like any other, and the listener is closed right after. What arrives in the few
        microseconds between the last accept() and the close is refused or reset by the
        kernel: the price of refusing new clients at once, so a load balancer moves on."""
        gate = self.gate
        gate.stop()
        # The window between the last accept() and the close is where a connection can
        # still be lost. Application threads may hold the GIL for up to the switch
        # interval (5 ms) when accept() returns; shortened here, the loop thread gets it
        # back within microseconds. (Observed: one reset in ~600 requests on a graceful
        # stop under load, before this.)
        interval = sys.getswitchinterval()
        sys.setswitchinterval(1e-6)
        try:
            for acceptor in gate.acceptors:
                acceptor.sweep()
                acceptor.listener.sock.close()
        finally:
            sys.setswitchinterval(interval)
        # Let every accepted connection get its transport and register, so the drain
        # below waits for its request instead of exiting under it (a TLS handshake still
        # under way gets until the drain deadline, no longer).
        remaining = self._drain_deadline - time.monotonic()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(gate.settled(), max(0.0, remaining))

    async def _drain(self) -> None:
        state = self.state
        for conn in list(state.connections):
            conn.drain()  # connections accepted since _begin_drain() hear of it too
        if state.connections or state.in_flight:
            self._drained = self.loop.create_future()
            self.loop.call_later(DRAIN_TICK, self._poll_drain)
            await self._drained
        if state.connections or state.in_flight:
            log.warning(
                "Graceful timeout: cutting %d request(s) in flight on %d connection(s)",
                state.in_flight,
                len(state.connections),
            )

    def _poll_drain(self) -> None:
        """While draining, notice within DRAIN_TICK that the last request is done (app
        threads finish without waking the loop, so this cannot be purely event-driven)."""
        drained, state = self._drained, self.state
        if drained is None or drained.done():
            return
        if not (state.connections or state.in_flight) or time.monotonic() >= self._drain_deadline:
            drained.set_result(None)
        else:
            self.loop.call_later(DRAIN_TICK, self._poll_drain)

    def _tick(self) -> None:
        try:
            self._check()
        except Exception:  # the ticker must survive anything, or timeouts stop for good
            log.exception("Worker housekeeping failed")
        self.loop.call_later(self.tick_interval, self._tick)

    def _check(self) -> None:
        state = self.state
        state.tick()
        if state.on_tick is not None:
            state.on_tick()
        now = state.now
        self.gate.refresh(now)
        for conn in list(state.connections):
            conn.check_deadline(now)
        if os.getppid() != self.master_pid and not self._stop_requested.done():
            log.warning("The master (pid %d) is gone; stopping", self.master_pid)
            self.stop(True)

    def _refresh_early(self, delay: float) -> None:
        if self.gate.stopped:
            return
        self.gate.refresh(time.monotonic())
        if delay * 2 < self.tick_interval:
            self.loop.call_later(delay * 2, self._refresh_early, delay * 2)

    def _check_max_requests(self) -> None:
        if self.state.requests_served >= self.max_requests and not self._stop_requested.done():
            log.info("Served %d requests: recycling this worker", self.state.requests_served)
            self.stop(True)
