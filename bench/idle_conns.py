"""Open many keep-alive connections, leave them idle, then check they still work.

    python bench/idle_conns.py --port 18000 --conns 10000 --hold 5

Each connection makes one request ("GET /"), reads the answer and goes idle. Once all are
open the script prints a JSON line {"phase": "holding", ...} and waits ``--hold`` seconds
(the caller measures the server's memory meanwhile), then sends a second request on every
connection and prints {"phase": "done", ...}: how many connections worked at each step
and why the others failed. Run by run.py for the idle-10k workload; it raises its own
open-files limit as far as the hard limit allows.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time
from collections import Counter

Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
OPENING = 256  # connections being opened at a time: keeps the server's backlog from overflowing
TIMEOUT = 10.0  # seconds for one connect or one request
PHASE_DEADLINE = 60.0  # seconds for opening them all, and for checking them all


async def request(conn: Conn) -> None:
    """Send one request and read its answer (Content-Length framing); raise on failure."""
    reader, writer = conn
    writer.write(REQUEST)
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, _, fields = head.partition(b"\r\n")
    if status_line.split(b" ", 2)[1:2] != [b"200"]:
        raise ValueError(status_line.decode(errors="replace"))
    for line in fields.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            await reader.readexactly(int(value))
            return
    raise ValueError("no Content-Length")


def reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, asyncio.IncompleteReadError):
        return "closed by server"
    return type(exc).__name__ + (f" {exc.errno}" if isinstance(exc, OSError) and exc.errno else "")


async def open_one(port: int, gate: asyncio.Semaphore) -> Conn:
    async with gate:
        conn = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), TIMEOUT)
        try:
            await asyncio.wait_for(request(conn), TIMEOUT)
        except BaseException:
            conn[1].close()
            raise
        return conn


async def open_all(port: int, count: int) -> tuple[list[Conn], Counter[str]]:
    """Open ``count`` connections, each with one request answered; give up on those still
    not open after PHASE_DEADLINE (a server that stops accepting would otherwise keep us
    waiting TIMEOUT seconds per batch of OPENING connections)."""
    gate = asyncio.Semaphore(OPENING)
    tasks = [asyncio.create_task(open_one(port, gate)) for _ in range(count)]
    done, pending = await asyncio.wait(tasks, timeout=PHASE_DEADLINE)
    for task in pending:
        task.cancel()
    failures = Counter({"not open after the deadline": len(pending)} if pending else {})
    conns = []
    for task in done:
        if (exc := task.exception()) is not None:
            failures[reason(exc)] += 1
        else:
            conns.append(task.result())
    return conns, failures


async def check_all(conns: list[Conn]) -> tuple[int, Counter[str]]:
    """A second request on every connection; how many worked, why the others did not."""
    gate = asyncio.Semaphore(OPENING)

    async def check(conn: Conn) -> None:
        async with gate:
            await asyncio.wait_for(request(conn), TIMEOUT)

    tasks = [asyncio.create_task(check(c)) for c in conns]
    done, pending = await asyncio.wait(tasks, timeout=PHASE_DEADLINE) if tasks else (set(), set())
    for task in pending:
        task.cancel()
    failures = Counter({"not checked before the deadline": len(pending)} if pending else {})
    failures.update(reason(exc) for task in done if (exc := task.exception()) is not None)
    return len(conns) - failures.total(), failures


async def run(port: int, count: int, hold_s: float) -> None:
    started = time.monotonic()
    conns, open_errors = await open_all(port, count)
    open_s = round(time.monotonic() - started, 3)
    report = {"phase": "holding", "opened": len(conns), "open_errors": open_errors}
    print(json.dumps({**report, "open_s": open_s}), flush=True)
    await asyncio.sleep(hold_s)
    ok, check_errors = await check_all(conns)
    print(json.dumps({"phase": "done", "still_ok": ok, "check_errors": check_errors}), flush=True)
    for _, writer in conns:
        writer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--conns", type=int, default=10_000)
    parser.add_argument("--hold", type=float, default=5.0, help="seconds to stay idle")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < args.conns + 100:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, args.conns + 1000), hard))
    asyncio.run(run(args.port, args.conns, args.hold))


if __name__ == "__main__":
    main()
