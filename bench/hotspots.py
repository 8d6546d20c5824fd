"""Profile one preforkd worker under one workload with py-spy; print the hot spots.

    python bench/hotspots.py h1-hello --seconds 10
    python bench/hotspots.py h1-post1m --native      # include C frames (httptools, uvloop)
    python bench/hotspots.py h1-hello --gc           # and what the cyclic GC costs per request

preforkd runs with one worker on CPU 1; wrk and py-spy run on CPU 0. py-spy samples the
worker (run as root, or where ptrace is allowed), by default only the thread holding the
GIL (the Python work, wherever it runs), and writes collapsed stacks (one line per
distinct stack: "frame;frame;... count", loadable in speedscope.app) to --out. The script
then prints the functions with the most samples: "self" (the function was running) and
"total" (it was on the stack), per thread kind: the event loop or an app thread.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import probes
import procs
from servers import DATA_DIR, SERVERS, Launch
from workloads import WORKLOADS, Loader, LoadResult

BENCH_DIR = Path(__file__).resolve().parent
FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]*)(?::\d+)?\)$")


def short(frame: str) -> str:
    """ "read (preforkd/wsgi/input.py:120)" -> "read (wsgi/input.py)": one row per function."""
    m = FRAME.match(frame)
    if not m:
        return frame
    parts = Path(m["file"]).parts
    return f"{m['func']} ({'/'.join(parts[-2:])})"


def thread_kind(stack: list[str]) -> str:
    # App threads start in threading's Thread._bootstrap; the main thread runs the loop.
    return "app thread" if any("_bootstrap (" in f for f in stack[:3]) else "event loop"


def aggregate(raw: Path) -> tuple[int, Counter[str], Counter[str], Counter[str]]:
    """(samples, per thread kind, self counts, total counts) of a collapsed-stack file."""
    samples, kinds, own, total = 0, Counter[str](), Counter[str](), Counter[str]()
    for line in raw.read_text().splitlines():
        stack_text, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        stack = [short(f) for f in stack_text.split(";")]
        kind = thread_kind(stack)
        samples += count
        kinds[kind] += count
        own[f"{stack[-1]}  [{kind}]"] += count
        for func in set(stack):
            total[f"{func}  [{kind}]"] += count
    return samples, kinds, own, total


def print_top(title: str, counts: Counter[str], samples: int, n: int) -> None:
    """The ``n`` functions with the most samples, leaving out those under which nearly every
    sample ran (the worker's entry, the master's frames it was forked from)."""
    print(f"\n{title}")
    shown = [(f, c) for f, c in counts.most_common() if c < 0.9 * samples][:n]
    for func, count in shown:
        print(f"{100 * count / samples:6.1f}%  {func}")


def measure(loader: Loader, worker: int) -> tuple[LoadResult, float]:
    """One measured run: the load generator's result and the worker's CPU seconds."""
    cpu0 = procs.cpu_seconds([worker])
    _, result = loader.measure()
    return result, procs.cpu_seconds([worker]) - cpu0


def describe(label: str, result: LoadResult, cpu: float) -> str:
    text = f"{label}: {result.rps or 0:,.0f} req/s"
    if result.requests:
        text += f", {cpu / result.requests * 1e6:.0f} µs of worker CPU per request"
    return text


def py_spy_command(args: argparse.Namespace, worker: int, raw: Path) -> list[str]:
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    argv = ["taskset", "-c", "0", py_spy, "record", "--pid", str(worker), "--format", "raw"]
    argv += ["--rate", str(args.rate), "--duration", str(round(args.seconds)), "-o", str(raw)]
    return argv + ["--native"] * args.native + ([] if args.all_threads else ["--gil"])


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("workload", choices=[w for w, spec in WORKLOADS.items() if spec.kind == "load"])
    p.add_argument("--seconds", type=float, default=10, help="of profiling")
    p.add_argument("--rate", type=int, default=200, help="samples per second")
    p.add_argument("--native", action="store_true", help="also sample C frames")
    p.add_argument(
        "--all-threads",
        action="store_true",
        help="sample every thread, not only the one holding the GIL (idle threads included)",
    )
    p.add_argument(
        "--gc",
        action="store_true",
        help="serve the app through gc_probe.py and report the cyclic collector's cost",
    )
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--out", type=Path, default=Path("/tmp/preforkd-profile"))
    return p.parse_args()


GCStats = dict[str, list[float]]


def read_gc_stats(path: Path) -> GCStats:
    try:
        data: GCStats = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data


def describe_gc(before: GCStats, after: GCStats, requests: int) -> str:
    """What the cyclic collector cost over a run (stats are at most 0.5 s stale)."""
    if not after or not requests:
        return "gc: no statistics (is gc_probe loaded?)"

    def delta(key: str) -> list[float]:
        return [a - b for a, b in zip(after[key], before.get(key, [0, 0, 0]), strict=True)]

    seconds, collected, collections = delta("seconds"), delta("collected"), delta("collections")
    return (
        f"gc: {sum(seconds) / requests * 1e6:.1f} µs per request in the collector, "
        f"{sum(collected) / requests:.1f} objects per request freed by it (in cycles); "
        f"collections per generation {[int(c) for c in collections]}, "
        f"longest pause per generation (ms) {[round(x * 1000, 1) for x in after['longest']]}"
    )


def profile(args: argparse.Namespace, server: procs.Server, loader: Loader, raw: Path) -> bool:
    """A baseline run, then one under py-spy; False if py-spy failed."""
    worker = probes.busiest_worker(server)
    assert worker is not None, "no worker process"
    loader.warm_up(1, server)
    gc_file = Path(server.env.get("BENCH_GC_STATS", "/nonexistent"))
    gc_before = read_gc_stats(gc_file)
    result, cpu = measure(loader, worker)
    print(describe(f"{loader.w.name} without profiler", result, cpu))
    if args.gc:
        print(describe_gc(gc_before, read_gc_stats(gc_file), result.requests or 0))
    loader.seconds = args.seconds + 1  # the load outlasts py-spy's recording
    spy = py_spy_command(args, worker, raw)
    recorder = subprocess.Popen(spy, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(0.5)
    print(describe(f"{loader.w.name} under py-spy", *measure(loader, worker)))
    _, errors = recorder.communicate(timeout=args.seconds + 30)
    if recorder.returncode != 0:
        print(f"py-spy failed: {errors.decode(errors='replace')}", file=sys.stderr)
    return recorder.returncode == 0


def main() -> int:
    args = parse_args()
    w = WORKLOADS[args.workload]
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    port = procs.PortPicker(18900, 18999).take()
    app = "gc_probe:" + w.app.partition(":")[2] if args.gc else w.app
    launch = Launch(port, w.proto, 1, app, out, DATA_DIR, venv=Path("unused"))
    spec = SERVERS["preforkd"]
    argv = ["taskset", "-c", "1", *(spec.command(launch) or [])]
    env = spec.env(launch) | ({"BENCH_GC_STATS": str(out / "gc.json")} if args.gc else {})
    server = procs.Server(argv, BENCH_DIR, out / "server.log", env)
    server.start()
    raw = out / f"{w.name}.collapsed.txt"
    try:
        if probes.wait_ready(server, port, w.proto, timeout=30) is None:
            print(f"preforkd did not start:\n{server.log_tail()}", file=sys.stderr)
            return 1
        if not profile(args, server, Loader(w, port, min(5, args.seconds), "0", out), raw):
            return 1
    finally:
        server.stop()
    samples, kinds, own, total = aggregate(raw)
    shares = ", ".join(f"{k} {100 * c / samples:.0f}%" for k, c in kinds.items())
    print(f"{samples} samples ({'all threads' if args.all_threads else 'GIL holder'}): {shares}")
    print_top("self (the function itself was running)", own, samples, args.top)
    print_top("total (the function was on the stack)", total, samples, args.top)
    print(f"\ncollapsed stacks: {raw}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
