"""``preforkd status``: the master and each worker of running servers, as one table.

Usage::

    preforkd status [--control-socket PATH | --pid PID] [--json]

Without ``--control-socket`` or ``--pid`` it asks every server of this user found in the
"auto" directory (``preforkd/control.py``): usually one; during a USR2 upgrade, the old
master and the new one. ``--json`` prints the master's reply as is (a list when it found
several servers), for scripts. Exit status: 0, or 1 when no server answered.

The figures come from the workers' heartbeats, so they are at most a second old.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from preforkd.control import PREFIX, SUFFIX, ControlClient, ControlError, found_sockets, runtime_dir

STUCK_WITHOUT_TIMEOUT = 15.0  # seconds: "stuck" when --request-timeout is 0 (no limit)


def parser(prog: str, description: str) -> argparse.ArgumentParser:
    parse = argparse.ArgumentParser(prog=prog, description=description)
    where = parse.add_mutually_exclusive_group()
    where.add_argument("--control-socket", metavar="PATH", help="the server's control socket")
    where.add_argument("--pid", type=int, help="the master's pid (an 'auto' control socket)")
    return parse


def chosen_sockets(args: argparse.Namespace) -> list[Path]:
    if args.control_socket:
        return [Path(args.control_socket)]
    if args.pid:
        return [runtime_dir() / f"{PREFIX}{args.pid}{SUFFIX}"]
    return found_sockets()


def main(argv: Sequence[str]) -> int:
    parse = parser("preforkd status", "Show the master and workers of running servers.")
    parse.add_argument("--json", action="store_true", help="print JSON, for scripts")
    args = parse.parse_args(argv)
    statuses, problems = [], []
    for path in chosen_sockets(args):
        try:
            with ControlClient(path) as client:
                statuses.append(client.call("status")["status"])
        except ControlError as exc:
            problems.append(str(exc))
    explicit = bool(args.control_socket or args.pid)
    if not statuses:
        for problem in problems if explicit else []:
            print(f"preforkd status: {problem}", file=sys.stderr)
        if not explicit:
            print(f"preforkd status: no running server found in {runtime_dir()}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(statuses[0] if len(statuses) == 1 else statuses, indent=2))
    else:
        print("\n\n".join("\n".join(render(status)) for status in statuses))
    return 0


# --- the table ---------------------------------------------------------------------------

COLUMNS = (
    ("WORKER", ">"), ("PID", ">"), ("GEN", ">"), ("AGE", ">"), ("STATE", "<"),
    ("REQS", ">"), ("REQ/S", ">"), ("H1", ">"), ("H2", ">"), ("BUSY", ">"),
    ("OLDEST REQUEST", "<"), ("RSS", ">"), ("BEAT", ">"),
)  # fmt: skip


def render(status: dict[str, Any], stuck_marker: tuple[str, str] = ("", "")) -> list[str]:
    """The table's lines; ``stuck_marker`` wraps rows with a stuck request (``top``)."""
    master = status["master"]
    workers = status["workers"]
    lines = [
        f"preforkd {master['version']} · master pid {master['pid']} · {master['app']} · "
        f"{master['binds']}",
        f"{master['state']} · generation {master['generation']} · up "
        f"{duration(master['uptime'])} · {len(workers)} worker(s), {master['workers_wanted']} "
        f"wanted · {count(sum(w['requests'] for w in workers))} requests · "
        f"{sum(w['rps'] for w in workers):.1f} req/s · {sum(w['in_flight'] for w in workers)} busy",
        "",
    ]
    rows = [[name for name, _ in COLUMNS]] + [cells(w) for w in workers]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    limit = stuck_after(master)
    for index, row in enumerate(rows):
        text = "  ".join(
            f"{cell:{align}{width}}"
            for cell, (_, align), width in zip(row, COLUMNS, widths, strict=True)
        ).rstrip()
        if index and stuck(workers[index - 1], limit):
            text = f"{stuck_marker[0]}{text}{stuck_marker[1]}"
        lines.append(text)
    return lines


def cells(worker: dict[str, Any]) -> list[str]:
    oldest = worker["oldest"]
    request = (
        f"{oldest['method']} {oldest['path'][:40]} {duration(oldest['age'])}" if oldest else "-"
    )
    beat = worker["heartbeat_age"]
    return [
        str(worker["slot"]), str(worker["pid"]), str(worker["generation"]),
        duration(worker["age"]), worker["state"], count(worker["requests"]),
        f"{worker['rps']:.1f}", str(worker["connections"]["h1"]),
        str(worker["connections"]["h2"]), str(worker["in_flight"]), request,
        size(worker["rss"]), "-" if beat is None else duration(beat),
    ]  # fmt: skip


def stuck_after(master: dict[str, Any]) -> float:
    """A request older than this is "stuck": half of --request-timeout."""
    timeout = float(master.get("request_timeout") or 0)
    return timeout / 2 if timeout > 0 else STUCK_WITHOUT_TIMEOUT


def stuck(worker: dict[str, Any], limit: float) -> bool:
    oldest = worker["oldest"]
    return bool(oldest) and float(oldest["age"]) > limit


def duration(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        minutes, secs = divmod(int(seconds), 60)
        return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
    hours, rest = divmod(int(seconds), 3600)
    if hours < 48:
        return f"{hours}h{rest // 60:02d}m"
    return f"{hours // 24}d{hours % 24:02d}h"


def count(n: int) -> str:
    if n < 10_000:
        return str(n)
    if n < 10_000_000:
        return f"{n / 1000:.1f}k"
    return f"{n / 1_000_000:.1f}M"


def size(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / (1024 * 1024):.1f}M"
