"""In-process timings of this checkout beside another, interleaved run by run.

Each run starts one child process per checkout, one after the other, so both see the same
load on a shared machine: the figure to quote is their ratio, not the times. The script
that uses this runs itself as the child (``--child DATA``): it loads ``DATA`` (pickled
input recorded once by the parent), times its work and prints one number.
"""

from __future__ import annotations

import argparse
import pickle
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = str(Path(__file__).resolve().parent.parent)  # this checkout


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """--runs, --compare OLD_TREE, and the hidden --child DATA."""
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--compare", metavar="OLD_TREE")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)


def child(path: Path, serve: Callable[[Any], tuple[float, int]]) -> None:
    """(The child.) Time ``serve`` on the recorded input after a warm-up run; print the
    microseconds per item it reports having served."""
    data = pickle.loads(path.read_bytes())
    serve(data)  # warm-up
    seconds, served = serve(data)
    print(seconds / served * 1e6)


def run(script: str, data: object, runs: int, old_tree: str | None) -> dict[str, list[float]]:
    """The numbers ``script --child`` printed, per checkout ("this", and "old" if given)."""
    trees = {"this": HERE} | ({"old": old_tree} if old_tree else {})
    path = Path(f"/tmp/{Path(script).stem}_{id(data)}.pickle")
    path.write_bytes(pickle.dumps(data))
    results: dict[str, list[float]] = {name: [] for name in trees}
    try:
        for _ in range(runs):
            for name, tree in trees.items():
                results[name].append(_child(script, tree, path))
    finally:
        path.unlink()
    return results


def _child(script: str, tree: str, path: Path) -> float:
    out = subprocess.run(
        [sys.executable, script, "--child", str(path)],
        check=True,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": tree, "PATH": "/usr/bin:/bin"},
    )
    return float(out.stdout.strip())


def report(results: dict[str, list[float]], unit: str) -> None:
    """Medians per checkout, each run's figure, and old / this when there are both."""
    for name, values in results.items():
        rounded = [round(v, 1) for v in values]
        print(f"{name:5} {statistics.median(values):7.1f} {unit}  (runs: {rounded})")
    if "old" in results:
        ratio = statistics.median(results["old"]) / statistics.median(results["this"])
        print(f"old / this: {ratio:.2f}x")
