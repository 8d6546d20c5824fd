"""Accepting connections ourselves: bounded batches, a per-worker cap, and running out of
descriptors without going silent or spinning.

Why not ``loop.create_server``: a loop's own server accepts everything queued in one go,
cannot be paused when the worker holds as many connections as it should, and handles
EMFILE badly (uvloop accepts and closes connections with no log line; asyncio logs every
attempt). Here each listener has a reader callback that accepts at most
:data:`ACCEPT_BATCH` connections per loop turn, so a busy worker leaves the rest of the
queue to idle ones; stops reading the listener while the worker is at
``--worker-connections``, so the kernel queue and the other workers take the load; and on
EMFILE/ENFILE logs one line (at most every :data:`EXHAUSTED_LOG_INTERVAL`) that says what
to raise, pauses accepting for :data:`EXHAUSTED_PAUSE` and then tries again, with no
restart. When the worker stops, :meth:`Acceptor.sweep` takes what is still queued.

With other workers on the same listeners, the :class:`~preforkd.worker.balance.Share`
says how many of a batch this worker should take, so that the workers hold about as many
connections each; when this worker is ahead it *yields* (stops reading for a moment) so
the others can take their part (see ``worker/balance.py``). With one worker the accept
path is the same as without it.

The accepted socket becomes a transport through ``loop.connect_accepted_socket`` (TLS
included), the same on asyncio's loops and uvloop.
"""

from __future__ import annotations

import _socket
import asyncio
import asyncio.selector_events
import errno
import logging
import socket
import ssl
import time
from collections.abc import Callable, Coroutine
from functools import partial
from typing import Any

from preforkd.worker.balance import YIELD_PAUSE, Share
from preforkd.worker.connection import H1Protocol
from preforkd.worker.proxied import ProxyProtocol, ProxyRefused
from preforkd.worker.tls import ListenerSpec

log = logging.getLogger("preforkd.worker")

# At most this many accept() calls per listener per loop turn: bounded, so that a burst
# of new connections cannot take a worker far past --worker-connections and the workers
# sharing a listener each take part of it; large enough that accepting costs few loop
# turns (one accept per turn cost measurably more CPU per new connection).
ACCEPT_BATCH = 16
EXHAUSTED_PAUSE = 0.5  # seconds without accepting after EMFILE/ENFILE
EXHAUSTED_LOG_INTERVAL = 10.0  # at most one "out of descriptors" line per this many seconds
_EXHAUSTED = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))


class _Accepted(socket.socket):
    """An accepted connection's socket whose ``family`` and ``type`` are plain ints.

    ``socket.socket`` turns them into IntEnum members on every read, which costs about a
    microsecond each, and the loops read them several times per connection (uvloop's
    ``connect_accepted_socket`` three times, ``socket.accept()`` twice): a tenth of the
    cost of a new connection in Python. The C getters give the same values as ints."""

    __slots__ = ()
    family = _socket.socket.family  # type: ignore[assignment]
    type = _socket.socket.type  # type: ignore[assignment]


class Acceptor:
    """Accepts on one listener for one worker; the :class:`Gate` says when to stop."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        listener: ListenerSpec,
        factory: Callable[[], H1Protocol],
        gate: Gate,
        handshake_timeout: float,
        proxy: ProxyProtocol | None = None,
    ) -> None:
        self.loop = loop
        self.listener = listener
        self.factory = factory
        self.gate = gate
        self.proxy = proxy  # --proxy-protocol: each connection starts with the header
        self.fd = listener.sock.fileno()
        self.reading = False
        self._ssl = listener.ssl_context
        sock = listener.sock
        self._family, self._type, self._proto = int(sock.family), int(sock.type), sock.proto
        # uvloop sets TCP_NODELAY on every TCP transport; asyncio's selector loops do not
        # for connect_accepted_socket, so we do, on TCP listeners.
        self._nodelay = listener.sock.family in (socket.AF_INET, socket.AF_INET6) and isinstance(
            loop, asyncio.selector_events.BaseSelectorEventLoop
        )
        self._handshake_timeout = handshake_timeout if listener.ssl_context else None

    def resume(self) -> None:
        if not self.reading:
            self.reading = True
            self.loop.add_reader(self.fd, self._on_readable)

    def pause(self) -> None:
        if self.reading:
            self.reading = False
            self.loop.remove_reader(self.fd)

    def _on_readable(self) -> None:
        gate = self.gate
        batch = ACCEPT_BATCH
        if gate.peers:  # other workers accept here too: take our part only
            gate.turns += 1
            batch = gate.allowance()
            if not batch:
                gate.yield_to_peers()
                return
        try:
            for _ in range(batch):
                if gate.full:
                    gate.pause_all()
                    return
                if not self._accept_one(stopping=False):
                    return
        finally:
            if gate.peers:
                gate.publish()

    def sweep(self) -> None:
        """Accept and serve everything queued on the listener, cap or not (the worker is
        stopping, and these clients have connected and may have sent their request)."""
        while self._accept_one(stopping=True):
            pass

    def _accept_one(self, stopping: bool) -> bool:
        """Accept one queued connection and start serving it; False when none was taken."""
        try:
            # socket.accept() minus its IntEnum conversions (see _Accepted)
            fd, _ = self.listener.sock._accept()  # type: ignore[attr-defined]
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return False
        except OSError as exc:
            if stopping:
                log.warning("Accepting queued connections while stopping: %s", exc)
            elif exc.errno in _EXHAUSTED:
                self.gate.exhausted(exc)
            else:  # EPERM from a firewall, EPROTO...: that connection only
                log.warning("accept() failed: %s", exc)
            return False
        self.start(_Accepted(self._family, self._type, self._proto, fileno=fd))
        return True

    def start(self, conn: socket.socket) -> None:
        """Make ``conn`` a served connection (it counts against the cap at once)."""
        if self._nodelay:
            # asyncio's connect_accepted_socket leaves Nagle on (its own server turns it
            # off): a response written in pieces would wait for the client's delayed ACK.
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.gate.pending += 1
        if self.proxy is None and self._ssl is None:
            self._attach(conn)
        else:
            self.loop.create_task(self._connect(conn))

    def _attach(self, conn: socket.socket) -> None:
        """A plain connection (no TLS handshake, no PROXY header): made a transport
        without a Task of its own.

        ``connect_accepted_socket`` makes the transport at once and then only waits for
        ``connection_made``; a Task per connection (creation, its registry entry, a loop
        turn to start it) cost about a tenth of a new connection's Python work. So the
        coroutine is stepped here: now, and again when what it waits for is done."""
        steps = self.loop.connect_accepted_socket(self.factory, conn)
        self._step(steps, conn)

    def _step(self, steps: Coroutine[Any, Any, Any], conn: socket.socket, _: object = None) -> None:
        try:
            waiting = steps.send(None)
        except StopIteration:
            self.gate.started_one()
            return
        except Exception as exc:
            if isinstance(exc, OSError):  # a peer gone before we started: nothing to serve
                log.debug("Connection not started: %s", exc)
            else:
                log.exception("Connection not started")
            conn.close()
            self.gate.started_one()
            return
        if waiting is None:  # a bare yield: go on in the next loop turn
            self.loop.call_soon(self._step, steps, conn)
        else:  # a future (asyncio's protocol for awaiting one): go on once it is done
            waiting.add_done_callback(partial(self._step, steps, conn))

    async def _connect(self, conn: socket.socket) -> None:
        try:
            factory = self.factory
            if self.proxy is not None:  # before the TLS handshake: the header comes first
                header = await self.proxy.read(self.loop, conn)
                if header.client is not None:
                    factory = _proxied(factory, header.client)
            await self.loop.connect_accepted_socket(
                factory, conn, ssl=self._ssl, ssl_handshake_timeout=self._handshake_timeout
            )
        except ProxyRefused:  # logged with the reason
            conn.close()
        except (TimeoutError, OSError, ssl.SSLError) as exc:
            # A failed TLS handshake, or a peer gone before we started: nothing to serve.
            log.debug("Connection not started: %s", exc)
            conn.close()
        except Exception:  # e.g. the protocol could not be made: close, say why
            log.exception("Connection not started")
            conn.close()
        finally:
            self.gate.started_one()


def _proxied(
    factory: Callable[[], H1Protocol], client: tuple[str, int]
) -> Callable[[], H1Protocol]:
    """A protocol factory whose connections belong to ``client`` (a PROXY header's)."""

    def make() -> H1Protocol:
        protocol = factory()
        protocol.proxied_client = (client[0], str(client[1]))
        return protocol

    return make


class Gate:
    """The worker's decision to accept or not, shared by its :class:`Acceptor` objects.

    Accepting stops while ``open connections + connections being started`` is at the cap,
    after EMFILE/ENFILE for a short pause, and for good once the worker stops."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        connections: set[Any],
        cap: int,
        clock: Callable[[], float] = time.monotonic,
        share: Share | None = None,
    ) -> None:
        self.loop = loop
        self.connections = connections
        self.cap = cap
        self.clock = clock
        self.acceptors: list[Acceptor] = []
        self.pending = 0  # accepted, transport not made yet (a TLS handshake may take long)
        self.turns = 0  # times we looked at the listeners with peers (they see us run)
        self.share = share
        # The live peers' slots (the Share's list, updated in place); empty: accept alone.
        self.peers: list[int] = share.peers if share is not None else []
        self.yielding = False
        self._settled: asyncio.Future[None] | None = None  # set when pending drops to 0
        self.paused_at_cap = False
        self.stopped = False
        self._exhausted_until = 0.0
        self._resting = False  # in the pause after EMFILE/ENFILE
        self._last_exhausted_log = -EXHAUSTED_LOG_INTERVAL
        self._exhausted_since_log = 0

    @property
    def full(self) -> bool:
        return len(self.connections) + self.pending >= self.cap

    @property
    def accepting(self) -> bool:
        """Taking connections, or about to (a yield is a pause of a millisecond)."""
        return not (self.stopped or self.paused_at_cap or self._resting)

    def start(self) -> None:
        for acceptor in self.acceptors:
            acceptor.resume()
        self.publish()

    def stop(self) -> None:
        self.stopped = True
        for acceptor in self.acceptors:
            acceptor.pause()
        self.publish()  # at once: no peer may yield to a worker that has stopped

    def pause_all(self) -> None:
        if not self.paused_at_cap:
            self.paused_at_cap = True
            log.info(
                "At --worker-connections %d: not accepting until a connection closes", self.cap
            )
        for acceptor in self.acceptors:
            acceptor.pause()
        self.publish()

    # --- sharing with the other workers (worker/balance.py) -----------------------------

    def publish(self) -> None:
        """Show the peers our load as it is now."""
        if self.share is not None:
            load = len(self.connections) + self.pending
            self.share.publish(load, self.turns, self.accepting)

    def refresh(self, now: float) -> None:
        """From the ticker: find the peers again, and publish (a peer may be new)."""
        if self.share is not None:
            self.share.refresh(now)
            self.publish()

    def allowance(self) -> int:
        """Connections to accept in this batch; 0: yield to less loaded peers."""
        assert self.share is not None
        return self.share.allowance(len(self.connections) + self.pending, ACCEPT_BATCH)

    def yield_to_peers(self) -> None:
        """Stop reading the listeners for YIELD_PAUSE: less loaded peers take what comes."""
        if not self.yielding:
            self.yielding = True
            for acceptor in self.acceptors:
                acceptor.pause()
            self.loop.call_later(YIELD_PAUSE, self._after_yield)

    def _after_yield(self) -> None:
        self.yielding = False
        if self.accepting:
            for acceptor in self.acceptors:
                acceptor.resume()

    def started_one(self) -> None:
        """A connection got its transport (or failed to): it is counted where it belongs."""
        self.pending -= 1
        if not self.pending and self._settled is not None and not self._settled.done():
            self._settled.set_result(None)
        self.check()

    async def settled(self) -> None:
        """Wait until every accepted connection has its transport (and has registered),
        without spinning the loop while a TLS handshake takes its time."""
        if self.pending:
            self._settled = self.loop.create_future()
            await self._settled

    def check(self) -> None:
        """Resume accepting if it was paused at the cap and is under it now (called when
        a connection closes or fails to start)."""
        if self.peers:
            self.publish()
        if self.paused_at_cap and not self.full and not self.stopped:
            if self.clock() < self._exhausted_until:
                return  # the EMFILE pause resumes by itself
            self.paused_at_cap = False
            if not self.yielding:
                for acceptor in self.acceptors:
                    acceptor.resume()
            self.publish()

    def exhausted(self, exc: OSError) -> None:
        """accept() failed for want of descriptors (or kernel memory): pause, say so."""
        now = self.clock()
        self._exhausted_since_log += 1
        if now - self._last_exhausted_log >= EXHAUSTED_LOG_INTERVAL:
            log.error(
                "Cannot accept connections: %s (with %d open); pausing accepting for %.1fs. "
                "Raise the open-file limit (ulimit -n, systemd LimitNOFILE=) or lower "
                "--worker-connections. (%d such failure(s) since the last message)",
                exc.strerror or exc,
                len(self.connections),
                EXHAUSTED_PAUSE,
                self._exhausted_since_log,
            )
            self._last_exhausted_log = now
            self._exhausted_since_log = 0
        self._exhausted_until = now + EXHAUSTED_PAUSE
        self._resting = True
        for acceptor in self.acceptors:
            acceptor.pause()
        self.publish()
        self.loop.call_later(EXHAUSTED_PAUSE, self._after_exhausted)

    def _after_exhausted(self) -> None:
        self._resting = False
        if self.stopped:
            return
        if self.full:
            self.paused_at_cap = True  # resumed by check() when a connection closes
            return
        for acceptor in self.acceptors:
            acceptor.resume()
        self.publish()
