"""A leak check of the C accelerators: their every path, a million times, then memory.

    python bench/native_soak.py              # 1,000,000 rounds (~1-2 minutes)
    python bench/native_soak.py -n 20000     # what tests/native/test_soak.py runs

One round calls the C build_environ and ResponseFramer.head on each kind of input they
meet: the common request, a long percent-encoded path (the decoder's heap buffer), a
large response head (the writer's heap buffer), an absolute-form target, a trusted
proxy's fields, a field-name cache miss, and the shapes and errors they hand to the
Python references. A reference leaked per call shows as growth in the traced Python
memory (``tracemalloc``) and in the process's RSS; the script prints both after a
warm-up, between the first and the last tenth of the rounds, and the reference counts
of objects every call touches (unchanged when nothing leaks).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from preforkd.errors import LocalProtocolError
from preforkd.proto import h1
from preforkd.proto.events import Request
from preforkd.proto.h1_response import ResponseFramer, head_py
from preforkd.wsgi import environ
from preforkd.wsgi.environ import ConnectionInfo, ProxyTrust, environ_template

INFO = ConnectionInfo("127.0.0.1", "8000", "127.0.0.1", "40000", "http", True)
TEMPLATE = environ_template(INFO, script_name="/app")
PROXY = ProxyTrust(["127.0.0.1"])
INPUT = io.BytesIO()
DATE = b"Fri, 04 Dec 2026 05:00:00 GMT"
HEADERS = [("host", "example.com:8080"), ("user-agent", "wrk"), ("cookie", "a=1"), ("cookie", "b")]
REQUESTS = [
    Request("GET", "/app/x?y=1", "1.1", HEADERS),
    Request("GET", "/" + "%41" * 300 + "b" * 300, "1.1", HEADERS),
    Request("GET", "http://other:81/p?q", "1.0", [("x_drop", "1"), ("host", "h")]),
    Request("POST", "/", "1.1", [("x-forwarded-for", "1.1.1.1"), ("x-forwarded-proto", "https")]),
    Request("GET", "/caf\xe9%20", "2", [("x-a", "1")]),  # handed to the reference
]
ODD = Request("GET", b"/", "1.1", [])  # type: ignore[arg-type]  # the reference raises
STATUS = "200 OK"
FIELDS = [("Content-Type", "text/plain"), ("Content-Length", "13"), ("Connection", "close")]
BIG = [(f"X-Field-{i}", "v" * 40) for i in range(60)]
BAD = [("X", "a\r\nb")]


HEADS = [
    b"GET /a?b=c HTTP/1.1\r\nHost: example.com\r\nUser-Agent: wrk\r\nX: \xe9\r\n\r\n",
    b"POST /u HTTP/1.0\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\nhello",
    b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",  # declined
    b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X: v\r\n" * 120 + b"\r\n",  # declined late
    b"GET / HTTP/1.1\r\nHost: a\r\n",  # incomplete
]


class Str(str):
    pass


def one_round(n: int) -> None:
    parse_head = h1._parse_head
    if parse_head is not None:
        for head in HEADS:
            parse_head(head, 0, 8190, 8190, 100)
        with contextlib.suppress(TypeError):
            parse_head(HEADS[0], "0", 8190, 8190, 100)  # type: ignore[arg-type]
    build = environ.build_environ
    for request in REQUESTS:
        build(request, INFO, INPUT, PROXY, template=TEMPLATE)
    build(REQUESTS[0], INFO, INPUT, PROXY, template=TEMPLATE, multithread=True)
    with contextlib.suppress(TypeError):
        build(ODD, INFO, INPUT, PROXY, template=TEMPLATE)
    with contextlib.suppress(AttributeError):  # raised in a Python helper the C code calls
        build(REQUESTS[3], INFO, INPUT, None, template=TEMPLATE)
    # A field name not in the cache: the C builder calls _environ_key (forgotten again,
    # so that every round takes that path and the cache does not grow).
    name = f"x-n{n}"
    build(Request("GET", "/", "1.1", [(name, "v")]), INFO, INPUT, PROXY, template=TEMPLATE)
    environ._key_cache.pop(name, None)
    for request, status, fields in (
        (REQUESTS[0], STATUS, FIELDS),
        (REQUESTS[2], "204 No Content", BIG),
        (REQUESTS[0], STATUS, [("Content-Length", "1" * 19)]),  # for the reference
        (REQUESTS[0], "200", [("Transfer-Encoding", "chunked")]),
    ):
        framer = ResponseFramer(request, DATE)
        framer.head(status, fields)
        framer.body(b"hello")
        framer.end()
    for status, fields in ((STATUS, BAD), (Str(STATUS), FIELDS)):
        with contextlib.suppress(LocalProtocolError):
            ResponseFramer(REQUESTS[0], DATE).head(status, fields)


def refcounts() -> list[int]:
    watched: list[object] = [TEMPLATE, HEADERS, STATUS, FIELDS, BIG, DATE, INFO, PROXY, *HEADS]
    watched += [r.target for r in REQUESTS] + [r.headers for r in REQUESTS]
    return [sys.getrefcount(o) for o in watched]


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def soak(n: int, report: Callable[[str], None] = print) -> tuple[int, int, bool]:
    """(traced bytes grown, RSS KiB grown, reference counts unchanged) over n rounds."""
    if (
        environ.build_environ is environ.build_environ_py
        or ResponseFramer.head is head_py
        or h1._parse_head is None
    ):
        report("warning: the C accelerators are not in use; this soaks the references")
    tenth = max(n // 10, 1)
    for i in range(tenth):  # warm-up: memo tables, free lists, the allocator's arenas
        one_round(i)
    gc.collect()
    tracemalloc.start()
    counts, traced, rss = refcounts(), tracemalloc.get_traced_memory()[0], rss_kib()
    for i in range(tenth, n):
        one_round(i)
    gc.collect()
    traced_growth = tracemalloc.get_traced_memory()[0] - traced
    tracemalloc.stop()
    rss_growth = rss_kib() - rss
    same = refcounts() == counts
    report(
        f"{n - tenth:,} rounds: traced memory {traced_growth:+,} bytes, RSS {rss_growth:+,} KiB, "
        f"reference counts {'unchanged' if same else 'CHANGED'}"
    )
    return traced_growth, rss_growth, same


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("-n", type=int, default=1_000_000, help="rounds")
    soak(p.parse_args().n)


if __name__ == "__main__":
    main()
