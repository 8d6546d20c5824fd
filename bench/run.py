"""preforkd's benchmark suite: preforkd beside its peers and nginx, on the same workloads.

    python bench/run.py --setup          # once: the peers' virtualenv ($BENCH_VENV)
    python bench/run.py                  # every installed server, workload, configuration
    python bench/run.py --servers preforkd,granian,nginx --workloads h1-hello --rounds 3

For each configuration, round, workload and server, in that nesting (so servers take turns:
A B C A B C), it starts the server, checks one answer, warms it up, measures, and stops it
by PID. It writes report.md and runs.json to --out and prints preforkd's ratio to each peer.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import select
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import probes
import procs
from environment import ensure_data, setup, versions
from report import SUBJECT, Run, Summary, config_section, details, ratio_text, table
from servers import DATA_DIR, SERVERS, Launch, ServerSpec, preforkd_python
from workloads import DEFAULT_WORKLOADS, WORKLOADS, Loader, Workload

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_VENV = Path(
    os.environ.get("BENCH_VENV") or Path.home() / ".cache" / "preforkd-bench" / "venv"
)
RELOAD_SCRIPT = BENCH_DIR / "reload_latency.py"


@dataclass(frozen=True)
class Config:
    name: str
    workers: int
    server_cpus: str | None  # taskset list for the server, None: unpinned
    client_cpus: str | None  # and for the load generator
    desc: str


CONFIGS = {
    c.name: c
    for c in (
        Config("pin1", 1, "1", "0", "1 worker; server on CPU 1, load generator on CPU 0"),
        Config("w2", 2, None, None, "2 workers, nothing pinned"),
    )
}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--servers", help=f"comma-separated (default: all installed of {','.join(SERVERS)})"
    )
    p.add_argument("--workloads", default=",".join(DEFAULT_WORKLOADS), help="comma-separated")
    p.add_argument("--configs", default="pin1,w2", help=f"comma-separated of {','.join(CONFIGS)}")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=10, help="seconds per measured run")
    p.add_argument("--warmup", type=float, default=2, help="seconds of discarded load before it")
    p.add_argument("--idle-conns", type=int, default=10_000)
    p.add_argument("--idle-hold", type=float, default=5, help="seconds the connections stay idle")
    p.add_argument(
        "--quiet",
        type=float,
        default=0.3,
        metavar="CPUS",
        help="before measuring, wait until the machine uses at most this many CPUs",
    )
    p.add_argument("--quiet-wait", type=float, default=15, help="... for at most this long")
    p.add_argument(
        "--max-other",
        type=float,
        default=0.4,
        metavar="CPUS",
        help="measure again when other processes used more CPUs than this",
    )
    p.add_argument("--retries", type=int, default=1, help="how many times to measure again")
    p.add_argument("--ports", default="18000-18999", help="range of ports to pick free ones from")
    p.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="the peers' virtualenv")
    p.add_argument("--out", type=Path, help="results directory (default: bench/out/DATE)")
    p.add_argument(
        "--no-reload-latency",
        action="store_true",
        help=f"skip {RELOAD_SCRIPT.name} even if it exists",
    )
    p.add_argument("--setup", action="store_true", help="create the peers' virtualenv and exit")
    p.add_argument(
        "--from-runs",
        type=Path,
        metavar="DIR",
        help="write DIR/report.md again from DIR/runs.json, and exit",
    )
    p.add_argument("--list", action="store_true", help="list servers and workloads and exit")
    return p.parse_args()


# --- one run -------------------------------------------------------------------------------


@dataclass
class Context:
    args: argparse.Namespace
    out: Path
    ports: procs.PortPicker


def run_one(ctx: Context, config: Config, rnd: int, w: Workload, spec: ServerSpec) -> Run:
    run = Run(config.name, rnd, w.name, spec.name)
    run.port = port = ctx.ports.take()
    run_dir = ctx.out / "runs" / f"{config.name}-r{rnd}-{w.name}-{spec.name}"
    run_dir.mkdir(parents=True, exist_ok=True)
    run_dir.chmod(0o755)
    launch = Launch(
        port=port,
        proto=w.proto,
        workers=w.workers or config.workers,
        app=w.app,
        run_dir=run_dir,
        data_dir=DATA_DIR,
        venv=ctx.args.venv,
        keep_alive=w.keep_alive,
        many_connections=w.kind == "idle",
    )
    argv = spec.command(launch)
    if argv is None:
        run.status = f"does not speak {w.proto}"
        return run
    for path, text in spec.files(launch).items():
        path.write_text(text)
    if config.server_cpus:
        argv = ["taskset", "-c", config.server_cpus, *argv]
    run.command = shlex.join(argv)
    server = procs.Server(argv, BENCH_DIR, run_dir / "server.log", spec.env(launch))
    server.start()
    try:
        run.startup_s = probes.wait_ready(server, port, w.proto, timeout=30)
        if run.startup_s is None:
            tail = server.log_tail(1) or "no output"
            run.status = f"did not start: {tail}" if server.exited() else "not ready after 30 s"
        elif (problem := probes.check_answer(w, port, DATA_DIR)) is not None:
            run.status = f"wrong answer: {problem}"
        elif w.kind == "load":
            measure_load(ctx, config, w, server, run)
        elif w.kind == "idle":
            measure_idle(ctx, config, server, run)
        else:
            run.respawn_s, why = probes.measure_respawn(server, port)
            run.note = "" if run.respawn_s is not None else f"respawn n/a: {why}"
    finally:
        stopped = server.stop()
        if stopped != "ok":
            run.note = (run.note + "; " if run.note else "") + f"stop: {stopped}"
    return run


def measure_load(ctx: Context, config: Config, w: Workload, server: procs.Server, run: Run) -> None:
    args = ctx.args
    loader = Loader(w, run.port, args.duration, config.client_cpus, ctx.out)
    if not loader.warm_up(args.warmup, server):
        run.status = "failed during warm-up" + (": server exited" if server.exited() else "")
        return
    for attempt in range(args.retries + 1):
        procs.wait_until_quiet(args.quiet, args.quiet_wait)
        shares = procs.CpuShares(server.pid)
        shares.start()
        argv, result = loader.measure()
        shares.stop()
        run.server_cpu, run.loadgen_cpu, run.other_cpu = (
            shares.server,
            shares.children,
            shares.other,
        )
        if shares.other <= args.max_other or server.exited() or attempt == args.retries:
            break
        log(f"    other processes used {shares.other:.2f} CPUs: measuring again")
    run.load_command = shlex.join(argv)
    run.rps, run.p50_ms, run.p99_ms = result.rps, result.p50_ms, result.p99_ms
    run.errors, run.requests = result.errors, result.requests
    run.peak_rss_mib = procs.tree_kib(server.pid, "VmHWM") / 1024
    if server.exited():
        run.status = "server died during the load"
    elif not result.rps or not result.requests:
        lines = result.output.strip().splitlines()
        run.status = "no result: " + (lines[-1] if lines else "no output")
    elif result.errors > result.requests // 2:
        run.status = f"mostly errors ({result.errors} errors, {result.requests} requests)"


def measure_idle(ctx: Context, config: Config, server: procs.Server, run: Run) -> None:
    args = ctx.args
    base_kib = procs.tree_kib(server.pid, "VmRSS")
    argv = [sys.executable, str(BENCH_DIR / "idle_conns.py"), "--port", str(run.port)]
    argv += ["--conns", str(args.idle_conns), "--hold", str(args.idle_hold)]
    if config.client_cpus:
        argv = ["taskset", "-c", config.client_cpus, *argv]
    run.load_command = shlex.join(argv)
    limit = 150 + args.idle_hold  # idle_conns.py gives up on each phase after 60 s
    client = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    assert client.stdout is not None
    try:
        ready, _, _ = select.select([client.stdout], [], [], limit)
        held = json.loads(client.stdout.readline() or "{}") if ready else {}
        time.sleep(min(1.0, args.idle_hold / 2))  # let the server settle
        idle_kib = procs.tree_kib(server.pid, "VmRSS")
        rest, _ = client.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        client.kill()
        client.wait()
        run.status = f"idle client did not finish in {limit:.0f} s"
        return
    done = json.loads(rest.strip().splitlines()[-1]) if rest.strip() else {}
    if not held or not done:
        run.status = f"idle client failed (exit {client.returncode})"
        return
    opened = held["opened"]
    errors = sum(held["open_errors"].values()) + sum(done["check_errors"].values())
    run.idle = {
        "opened": opened,
        "still_ok": done["still_ok"],
        "errors": errors,
        "open_errors": held["open_errors"],
        "check_errors": done["check_errors"],
        "open_s": held["open_s"],
        "rss_base_mib": base_kib / 1024,
        "rss_idle_mib": idle_kib / 1024,
        "kib_per_conn": (idle_kib - base_kib) / opened if opened else None,
    }
    if errors:
        run.note = f"errors: {held['open_errors'] | done['check_errors']}"
    if server.exited():
        run.status = "server died holding the connections"


# --- the whole suite -----------------------------------------------------------------------


def log(message: str) -> None:
    print(time.strftime("%H:%M:%S"), message, file=sys.stderr, flush=True)


def choose_servers(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """(servers to run, lines saying why others are left out)."""
    wanted = args.servers.split(",") if args.servers else list(SERVERS)
    chosen, skipped = [], []
    for name in wanted:
        spec = SERVERS.get(name)
        if spec is None:
            raise SystemExit(f"unknown server {name!r}; known: {', '.join(SERVERS)}")
        if spec.installed(args.venv):
            chosen.append(name)
        else:
            skipped.append(f"- {name}: not installed (see bench/README.md)")
    return chosen, skipped


def run_reload_script(out: Path) -> list[str]:
    """bench/reload_latency.py, when someone has written it, runs last; its output is quoted."""
    argv = [preforkd_python(), str(RELOAD_SCRIPT)]
    log(f"running {RELOAD_SCRIPT.name}")
    env = {**os.environ, "PYTHONPATH": str(BENCH_DIR.parent), "BENCH_OUT": str(out)}
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env)
        text, status = done.stdout.strip(), f"exit {done.returncode}"
    except subprocess.TimeoutExpired:
        text, status = "", "stopped after 600 s"
    return ["## save-to-served latency in --reload mode", "", f"`{shlex.join(argv)}`: {status}",
            "", "```", text or "(no output)", "```", ""]  # fmt: skip


@dataclass
class Meta:
    """What a runs.json holds beside the runs: enough to write the report again."""

    started: str
    argv: str
    servers: list[str]
    workloads: list[str]
    configs: list[str]
    versions: dict[str, str]
    rounds: int
    duration: float
    warmup: float
    extra: list[str] = field(default_factory=list)  # markdown sections after the versions


def write_report(meta: Meta, runs: list[Run]) -> str:
    summary, servers, workloads = Summary(runs), meta.servers, meta.workloads
    lines = [f"# preforkd benchmark, {meta.started}", "", f"`{meta.argv}`", ""]
    lines += [f"{meta.rounds} rounds; {meta.duration:g} s measured after {meta.warmup:g} s of "
              "warm-up; servers interleaved round by round. Medians of rounds.", ""]  # fmt: skip
    lines += [*table(["", "version"], [[k, v] for k, v in meta.versions.items()]), ""]
    lines += meta.extra
    for name in meta.configs:
        lines += config_section(summary, name, CONFIGS[name].desc, servers, workloads)
    lines += ["## workloads", ""] + [f"- `{w}`: {WORKLOADS[w].desc}" for w in workloads]
    lines += ["", "## servers", ""] + [f"- `{s}`: {SERVERS[s].note}" for s in servers] + [""]
    lines += ["## command lines (first round)", ""]
    for run in runs:
        if run.round == 1 and run.command:
            load = f" / load: `{run.load_command}`" if run.load_command else ""
            lines.append(f"- {run.config} {run.workload} {run.server}: `{run.command}`{load}")
    lines.append("")
    for name in meta.configs:
        lines += details(summary, name, servers, workloads)
    return "\n".join(lines)


def save(out: Path, meta: Meta, runs: list[Run]) -> None:
    data = {"meta": asdict(meta), "runs": [asdict(r) for r in runs]}
    (out / "runs.json").write_text(json.dumps(data, indent=1))


def load(out: Path) -> tuple[Meta, list[Run]]:
    data = json.loads((out / "runs.json").read_text())
    return Meta(**data["meta"]), [Run(**r) for r in data["runs"]]


def finish(out: Path, meta: Meta, runs: list[Run]) -> None:
    """Write report.md; print preforkd's ratios."""
    (out / "report.md").write_text(write_report(meta, runs) + "\n")
    summary = Summary(runs)
    if SUBJECT in meta.servers:
        for name in meta.configs:
            print(ratio_text(summary, name, meta.servers, meta.workloads))
    print(f"report: {out / 'report.md'}")


def run_suite(args: argparse.Namespace, out: Path, meta: Meta) -> list[Run]:
    first, _, last = args.ports.partition("-")
    ctx = Context(args, out, procs.PortPicker(int(first), int(last or first)))
    runs: list[Run] = []
    all_cpus = os.sched_getaffinity(0)
    try:
        for config in (CONFIGS[name] for name in meta.configs):
            # Keep the suite itself (sampling, probes) off the server's CPU when pinning.
            pinned = config.client_cpus and {int(c) for c in config.client_cpus.split(",")}
            os.sched_setaffinity(0, pinned or all_cpus)
            for rnd in range(1, args.rounds + 1):
                for w in (WORKLOADS[name] for name in meta.workloads):
                    for name in meta.servers:
                        log(f"[{config.name} {rnd}/{args.rounds}] {w.name:12} {name}")
                        runs.append(run_one(ctx, config, rnd, w, SERVERS[name]))
                        log(f"    {summary_line(runs[-1])}")
                        save(out, meta, runs)
    finally:
        os.sched_setaffinity(0, all_cpus)
    return runs


def main() -> int:
    args = parse_args()
    if args.setup:
        setup(args.venv)
        return 0
    if args.list:
        for spec in SERVERS.values():
            mark = "" if spec.installed(args.venv) else "  [not installed]"
            print(f"{spec.name:17} {spec.note}{mark}")
        print()
        for w in WORKLOADS.values():
            print(f"{w.name:12} {w.desc}")
        return 0
    if args.from_runs:
        meta, runs = load(args.from_runs)
        finish(args.from_runs, meta, runs)
        return 0
    servers, skipped = choose_servers(args)
    workloads, configs = args.workloads.split(","), args.configs.split(",")
    for name in workloads:
        if name not in WORKLOADS:
            raise SystemExit(f"unknown workload {name!r}; known: {', '.join(WORKLOADS)}")
    for name in configs:
        if name not in CONFIGS:
            raise SystemExit(f"unknown configuration {name!r}; known: {', '.join(CONFIGS)}")
    procs.raise_fd_limit()
    ensure_data(DATA_DIR)
    started = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = (args.out or BENCH_DIR / "out" / started).resolve()
    out.mkdir(parents=True, exist_ok=True)
    argv = shlex.join([Path(sys.executable).name, *sys.argv])
    meta = Meta(started, argv, servers, workloads, configs, versions(args.venv), args.rounds,
                args.duration, args.warmup)  # fmt: skip
    for line in skipped:
        log(line)
    runs = run_suite(args, out, meta)
    meta.extra = ["## left out", "", *skipped, ""] if skipped else []
    if RELOAD_SCRIPT.exists() and not args.no_reload_latency:
        meta.extra += run_reload_script(out)
    save(out, meta, runs)
    finish(out, meta, runs)
    return 0


def summary_line(run: Run) -> str:
    if not run.ok:
        return f"n/a: {run.status}"
    parts = []
    if run.rps is not None:
        parts.append(f"{run.rps:,.0f} req/s p99 {run.p99_ms or 0:.1f} ms errors {run.errors}")
        parts.append(f"cpu {run.server_cpu:.2f} other {run.other_cpu:.2f}")
    if run.idle:
        parts.append(
            f"{run.idle['still_ok']} still ok, {run.idle['kib_per_conn'] or 0:.1f} KiB/conn"
        )
    if run.startup_s is not None:
        parts.append(f"start {run.startup_s * 1000:.0f} ms")
    if run.respawn_s is not None:
        parts.append(f"respawn {run.respawn_s * 1000:.0f} ms")
    return ", ".join(parts) + (f" ({run.note})" if run.note else "")


if __name__ == "__main__":
    raise SystemExit(main())
