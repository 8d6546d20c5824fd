"""Medians over rounds, ratios of preforkd to each peer, and the markdown report."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from workloads import WORKLOADS

SUBJECT = "preforkd"


@dataclass
class Run:
    """One server on one workload in one round of one configuration."""

    config: str
    round: int
    workload: str
    server: str
    status: str = "ok"  # anything else says why the run has no figures
    port: int = 0
    command: str = ""
    load_command: str = ""
    # throughput workloads
    rps: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    errors: int | None = None
    requests: int | None = None
    peak_rss_mib: float | None = None  # VmHWM summed over the server's process tree
    server_cpu: float | None = None  # CPUs used by the server's tree during the run
    loadgen_cpu: float | None = None
    other_cpu: float | None = None  # CPUs used by everything else on the machine
    # idle workload
    idle: dict[str, Any] = field(default_factory=dict)
    # every workload: seconds from start to first answer
    startup_s: float | None = None
    respawn_s: float | None = None
    note: str = ""  # what a run with partial figures could not measure, and why

    @property
    def ok(self) -> bool:
        return self.status == "ok"


Metric = Callable[[Run], float | None]

METRICS: dict[str, Metric] = {
    "rps": lambda r: r.rps,
    "p50_ms": lambda r: r.p50_ms,
    "p99_ms": lambda r: r.p99_ms,
    "peak_rss_mib": lambda r: r.peak_rss_mib,
    "server_cpu": lambda r: r.server_cpu,
    # What one request costs the server in CPU time, whatever the machine's noise did to
    # the throughput: the figure to compare servers by (issues 10 and 12).
    "cpu_us_per_request": lambda r: (
        r.server_cpu / r.rps * 1e6 if r.server_cpu is not None and r.rps else None
    ),
    "other_cpu": lambda r: r.other_cpu,
    "errors": lambda r: r.errors,
    "startup_ms": lambda r: None if r.startup_s is None else r.startup_s * 1000,
    "respawn_ms": lambda r: None if r.respawn_s is None else r.respawn_s * 1000,
    "kib_per_conn": lambda r: r.idle.get("kib_per_conn"),
    "idle_rss_mib": lambda r: r.idle.get("rss_idle_mib"),
    "idle_ok": lambda r: r.idle.get("still_ok"),
    "idle_errors": lambda r: r.idle.get("errors"),
    "open_s": lambda r: r.idle.get("open_s"),
}


def median(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


class Summary:
    """Runs grouped by (config, workload, server), with medians over the ok rounds."""

    def __init__(self, runs: Sequence[Run]) -> None:
        self.runs = list(runs)

    def group(self, config: str, workload: str, server: str) -> list[Run]:
        return [
            r for r in self.runs if (r.config, r.workload, r.server) == (config, workload, server)
        ]

    def value(self, config: str, workload: str, server: str, metric: str) -> float | None:
        runs = [r for r in self.group(config, workload, server) if r.ok]
        return median(METRICS[metric](r) for r in runs)

    def ratio(self, config: str, workload: str, peer: str, metric: str) -> float | None:
        ours = self.value(config, workload, SUBJECT, metric)
        theirs = self.value(config, workload, peer, metric)
        if ours is None or not theirs:
            return None
        return ours / theirs


# --- formatting --------------------------------------------------------------------------------


def fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def cell(s: Summary, config: str, workload: str, server: str, metric: str, spec: str) -> str:
    value = s.value(config, workload, server, metric)
    if value is not None:
        runs = s.group(config, workload, server)
        good = sum(r.ok for r in runs)
        return format(value, spec) + ("" if good == len(runs) else f" ({good}/{len(runs)} ok)")
    return "n/a" if s.group(config, workload, server) else "-"


def matrix(
    s: Summary,
    config: str,
    servers: Sequence[str],
    workloads: Sequence[str],
    metric: str,
    spec: str,
) -> list[str]:
    rows = [
        [name] + [cell(s, config, w, name, metric, spec) for w in workloads] for name in servers
    ]
    return table(["server", *workloads], rows)


def ratio_cell(s: Summary, config: str, workload: str, peer: str, metric: str) -> str:
    r = s.ratio(config, workload, peer, metric)
    return "n/a" if r is None else f"{r:.2f}x"


def ratio_rows(
    s: Summary, config: str, peers: Sequence[str], columns: Sequence[tuple[str, str, str]]
) -> list[list[str]]:
    return [[peer] + [ratio_cell(s, config, w, peer, m) for w, m, _ in columns] for peer in peers]


def ratio_columns(s: Summary, config: str, workloads: Sequence[str]) -> list[tuple[str, str, str]]:
    """(workload, metric, title) of every column of the ratio table."""
    columns = []
    for w in workloads:
        kind = WORKLOADS[w].kind
        if kind == "load":
            columns.append((w, "rps", f"{w} req/s"))
        elif kind == "idle":
            columns.append((w, "kib_per_conn", f"{w} KiB/conn"))
        elif kind == "startup":
            columns += [(w, "startup_ms", "start ms"), (w, "respawn_ms", "respawn ms")]
    return columns


def failures(
    s: Summary, config: str, servers: Sequence[str], workloads: Sequence[str]
) -> list[str]:
    """Why runs have no figures (or only some), e.g. "preforkd / h2c-hello, rounds 1, 2: ..."."""
    lines = []
    for w in workloads:
        for name in servers:
            runs = s.group(config, w, name)
            reasons: dict[str, list[int]] = {}
            for r in runs:
                for reason in ([] if r.ok else [r.status]) + ([r.note] if r.note else []):
                    reasons.setdefault(reason, []).append(r.round)
            for reason, rounds in reasons.items():
                numbers = ", ".join(map(str, rounds))
                which = "every round" if len(rounds) == len(runs) else f"round {numbers}"
                lines.append(f"- {name} / {w}, {which}: {reason}")
    return lines


def config_section(
    s: Summary, config: str, desc: str, servers: Sequence[str], workloads: Sequence[str]
) -> list[str]:
    load = [w for w in workloads if WORKLOADS[w].kind == "load"]
    out = [f"## {config}: {desc}", ""]
    if load:
        for title, metric, spec in (
            ("requests/s (median of rounds)", "rps", ",.0f"),
            ("p50 latency, ms", "p50_ms", ".2f"),
            ("p99 latency, ms", "p99_ms", ".2f"),
            ("peak RSS, MiB (VmHWM summed over the process tree)", "peak_rss_mib", ".1f"),
            ("CPUs used by the server during the run", "server_cpu", ".2f"),
            (
                "server CPU per request, µs (CPUs used / requests per second)",
                "cpu_us_per_request",
                ".1f",
            ),
            ("errors per run (socket errors and non-2xx, median of rounds)", "errors", ".0f"),
            ("CPUs used by other processes of the machine (noise)", "other_cpu", ".2f"),
        ):
            out += [f"**{title}**", "", *matrix(s, config, servers, load, metric, spec), ""]
    if "idle-10k" in workloads:
        out += ["**idle-10k: 10,000 idle keep-alive connections, one worker**", ""]
        rows = [
            [name]
            + [
                cell(s, config, "idle-10k", name, metric, spec)
                for metric, spec in (
                    ("idle_ok", ".0f"),
                    ("idle_errors", ".0f"),
                    ("idle_rss_mib", ".1f"),
                    ("kib_per_conn", ".1f"),
                    ("open_s", ".2f"),
                )
            ]
            for name in servers
        ]
        header = ["server", "still working", "errors", "RSS held, MiB", "KiB/conn", "open s"]
        out += [*table(header, rows), ""]
    if "startup" in workloads:
        out += ["**start-up: command to first answer; worker SIGKILLed to first answer**", ""]
        rows = [
            [name]
            + [cell(s, config, "startup", name, m, ".0f") for m in ("startup_ms", "respawn_ms")]
            for name in servers
        ]
        out += [*table(["server", "start ms", "respawn ms"], rows), ""]
    peers = [name for name in servers if name != SUBJECT]
    if SUBJECT in servers and peers:
        columns = ratio_columns(s, config, workloads)
        out += [
            f"**{SUBJECT} / peer** (req/s: above 1 means {SUBJECT} is faster; KiB/conn and ms: "
            f"below 1 means {SUBJECT} is better)",
            "",
            *table(
                ["peer", *(title for _, _, title in columns)], ratio_rows(s, config, peers, columns)
            ),
            "",
        ]
    if lines := failures(s, config, servers, workloads):
        out += ["**runs without figures, and notes**", "", *lines, ""]
    return out


def ratio_text(s: Summary, config: str, servers: Sequence[str], workloads: Sequence[str]) -> str:
    """Plain-text ratios for the terminal: one line per peer."""
    columns = ratio_columns(s, config, workloads)
    lines = [f"{config}: {SUBJECT} / peer (req/s >1: faster; KiB/conn, ms <1: better)"]
    for peer in (name for name in servers if name != SUBJECT):
        parts = [f"{title} {ratio_cell(s, config, w, peer, m)}" for w, m, title in columns]
        lines.append(f"  vs {peer:17} " + ", ".join(parts))
    return "\n".join(lines)


def details(s: Summary, config: str, servers: Sequence[str], workloads: Sequence[str]) -> list[str]:
    """Every round's figure, to see the spread behind each median."""
    out = [f"### {config}: every round", ""]
    rows = []
    for w in workloads:
        kind = WORKLOADS[w].kind
        metric = {"load": "rps", "idle": "kib_per_conn", "startup": "startup_ms"}[kind]
        spec = ".1f" if kind == "idle" else ".0f"
        for name in servers:
            runs = s.group(config, w, name)
            if runs:
                values = [
                    fmt(METRICS[metric](r), spec) if r.ok else r.status.split(":")[0] for r in runs
                ]
                rows.append([w, name, metric, " / ".join(values)])
    return [*out, *table(["workload", "server", "metric", "rounds"], rows), ""]
