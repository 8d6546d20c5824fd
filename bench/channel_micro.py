"""CPU per HTTP/1.1 request on the adapter's path, this tree against a git revision, in one
process (interleaved rounds, so machine load hits both alike).

    python bench/channel_micro.py                 # against main
    python bench/channel_micro.py --ref HEAD~3 --requests 20000 --rounds 15

Instructions instead of time (deterministic whatever the load): run one side under
callgrind at two request counts; the difference divided by the difference in requests is
the cost of one request, start-up cancelled out:

    valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        python bench/channel_micro.py --one tree --requests 4000   # and 2000; --one ref

The other revision's preforkd/worker/connection.py is loaded beside this tree's as a
module of its own (everything it imports comes from this tree). Requests run inline
(--app-on-loop) on a fake transport: parsing, the WSGI call, the response channel and the
framing, without sockets or threads, so the numbers are about the code, not the machine's
scheduler. Throughput benchmarks on a shared machine are noise; this is not.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from preforkd.proto.h1 import H1Limits  # noqa: E402
from preforkd.worker.pool import AppThreads  # noqa: E402
from preforkd.worker.state import ConnectionSettings, WorkerState  # noqa: E402
from preforkd.wsgi.environ import ConnectionInfo, ProxyTrust, environ_template  # noqa: E402

REQUEST = b"GET /hello HTTP/1.1\r\nHost: bench\r\nUser-Agent: micro\r\nAccept: */*\r\n\r\n"


class NullTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = 0

    def write(self, data: Any) -> None:
        self.written += len(data)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 5000)}.get(name, default)

    def is_closing(self) -> bool:
        return False


def hello(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"Hello, world!"]


def chunks(environ: dict[str, Any], start_response: Any) -> Any:
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"a" * 100
    yield b"b" * 100


def load_revision(ref: str) -> ModuleType:
    source = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{ref}:preforkd/worker/connection.py"],
        check=True, capture_output=True,
    ).stdout  # fmt: skip
    path = Path(tempfile.mkdtemp()) / "connection_ref.py"
    path.write_bytes(source)
    spec = importlib.util.spec_from_file_location("connection_ref", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def make_connection(module: ModuleType, app: Any) -> tuple[Any, NullTransport]:
    settings = ConnectionSettings(
        limits=H1Limits(), keep_alive=5.0, header_timeout=5.0,
        multiprocess=False, multithread=True,
    )  # fmt: skip
    state = WorkerState(
        app=app, settings=settings, executor=AppThreads(1), proxy=ProxyTrust([]),
        call_soon_threadsafe=lambda fn, *a: fn(*a), app_on_loop=True,
    )  # fmt: skip
    state.call_soon = lambda fn, *a: fn(*a)  # inline, synchronously
    info = ConnectionInfo("127.0.0.1", "8000", "", "", "http", False)
    listening = module.Listening(True, "127.0.0.1", "8000", False, environ_template(info))
    transport = NullTransport()
    proto = module.H1Protocol(state, listening=listening)
    proto.connection_made(transport)
    return proto, transport


def per_request(module: ModuleType, app: Any, n: int) -> float:
    """Process CPU nanoseconds per request over ``n`` requests on one connection."""
    proto, transport = make_connection(module, app)
    receive = proto.data_received
    started = time.process_time_ns()
    for _ in range(n):
        receive(REQUEST)
    elapsed = time.process_time_ns() - started
    assert transport.written > n * 50 and not proto.closed, "requests were not answered"
    return elapsed / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", default="main")
    parser.add_argument("--requests", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--one", choices=("ref", "tree"), help="one side, once (callgrind)")
    args = parser.parse_args()
    import preforkd.worker.connection as here

    there = load_revision(args.ref)
    if args.one:
        for app in (hello, chunks):
            per_request(there if args.one == "ref" else here, app, args.requests)
        return
    for name, app in (("list body", hello), ("streamed body", chunks)):
        results: dict[str, list[float]] = {args.ref: [], "this tree": []}
        for _ in range(args.rounds):  # interleaved: load hits both alike
            results[args.ref].append(per_request(there, app, args.requests))
            results["this tree"].append(per_request(here, app, args.requests))
        print(f"{name}: CPU ns per request (median / min of {args.rounds} rounds)")
        for label, values in results.items():
            print(f"  {label:>10}: {statistics.median(values):8.0f} / {min(values):8.0f}")


if __name__ == "__main__":
    main()
