"""The single-worker accept path, in process: this checkout's worker/accept.py beside
another checkout's, interleaved in one run (a CPU-time ratio that machine noise hits
alike, unlike a throughput benchmark on a shared machine).

    python bench/accept_path.py --against /work/main

It times what one accepted connection costs the accept code itself: the listener's reader
callback taking a batch (a fake socket hands out ready-made connections; creating the
serving task is a no-op) and the close notification (``Gate.check``). Everything else on
the path (the kernel's accept(), connect_accepted_socket, the protocol) is the same code in
both and left out, so the ratio is the change's own cost, not diluted.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from types import ModuleType
from typing import Any

from preforkd.worker.tls import ListenerSpec

BATCHES = 2000


class _Conn:
    def setsockopt(self, *args: object) -> None:
        pass


class _Listener:
    """Hands out ``ready`` connections per batch, then would block."""

    def __init__(self) -> None:
        self.ready = 0
        self.conn = _Conn()

    def accept(self) -> tuple[_Conn, None]:
        if not self.ready:
            raise BlockingIOError
        self.ready -= 1
        return self.conn, None

    def fileno(self) -> int:
        return -1

    @property
    def family(self) -> int:
        return 0


class _Loop:
    def create_task(self, coro: Coroutine[Any, Any, None]) -> None:
        coro.close()

    def add_reader(self, *args: object) -> None:
        pass

    def remove_reader(self, *args: object) -> None:
        pass


def _load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _time(module: ModuleType) -> float:
    """Seconds per connection: accepted in batches, then each closed."""
    loop, listener = _Loop(), _Listener()
    gate = module.Gate(loop, set(), cap=10**9)
    spec = ListenerSpec(listener, frozenset({"h1"}), None)  # type: ignore[arg-type]
    acceptor = module.Acceptor(loop, spec, object, gate, 5.0)
    batch = module.ACCEPT_BATCH
    on_readable, check = acceptor._on_readable, gate.check
    started = time.process_time()
    for _ in range(BATCHES):
        listener.ready = batch
        on_readable()
        gate.pending = 0  # what started_one() does when the task runs
        for _ in range(batch):
            check()
    return (time.process_time() - started) / (BATCHES * batch)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", type=Path, required=True, help="the other checkout")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    here = Path(__file__).resolve().parents[1]
    modules = {
        "other": _load(args.against / "preforkd/worker/accept.py", "other_accept"),
        "this": _load(here / "preforkd/worker/accept.py", "this_accept"),
    }
    times: dict[str, list[float]] = {name: [] for name in modules}
    for _ in range(args.rounds):
        for name, module in modules.items():
            times[name].append(_time(module))
    other, this = (statistics.median(times[n]) for n in ("other", "this"))
    print(f"accept + close, per connection, median of {args.rounds} rounds:")
    print(f"  {args.against}: {other * 1e9:.0f} ns")
    print(f"  this checkout: {this * 1e9:.0f} ns ({this / other:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
