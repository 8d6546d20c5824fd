"""``preforkd check URL``: a health probe for images without curl.

Docker ``HEALTHCHECK`` and Kubernetes exec probes run it; its exit code is the verdict:
0 healthy (an expected status within the timeout), 1 unhealthy (refused, TLS failure,
timeout, unexpected status, a broken response), 2 usage error.

One GET per run, ``Connection: close`` under HTTP/1.1. Over HTTP/2 (``https://`` when
the server selects ``h2`` by ALPN, RFC 9113 §3.2; ``--h2c`` for cleartext with prior
knowledge, §3.3) it also sends a PING (§6.7) and reports its round-trip time: the
connection's own liveness, measured apart from the application's time to answer.

The expected status defaults to 200-399, what Kubernetes' own httpGet probe accepts, so a
redirect to a login page still counts as alive; ``--status 200`` is stricter.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import h2.config
import h2.connection
import h2.events
import h2.exceptions

EXIT_HEALTHY, EXIT_UNHEALTHY, EXIT_USAGE = 0, 1, 2
READ_SIZE = 65536


@dataclass
class Result:
    status: int
    protocol: str  # "HTTP/1.1" or "h2"
    elapsed: float  # seconds, connect to status
    ping_rtt: float | None = None  # seconds; HTTP/2 only


class Unhealthy(Exception):
    """The probe failed; the message says how."""


def parse_statuses(text: str) -> set[int]:
    """``200``, ``2xx``, ``200-204``, comma-separated; raises ValueError."""
    codes: set[int] = set()
    for part in text.split(","):
        part = part.strip().lower()
        if len(part) == 3 and part[0] in "12345" and part[1:] == "xx":
            base = int(part[0]) * 100
            codes.update(range(base, base + 100))
        elif "-" in part:
            low, high = (int(x) for x in part.split("-", 1))
            codes.update(range(low, high + 1))
        else:
            codes.add(int(part))
    if not codes or min(codes) < 100 or max(codes) > 599:
        raise ValueError(f"not HTTP statuses: {text!r}")
    return codes


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="preforkd check",
        description="Probe URL once; exit 0 if healthy, 1 if not, 2 on a usage error.",
    )
    parser.add_argument("url", help="http://HOST:PORT/PATH or https://HOST:PORT/PATH")
    parser.add_argument(
        "--status",
        default="200-399",
        help="expected statuses: 200, 2xx, 200-299, comma-separated (default: 200-399)",
    )
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds (default: 5)")
    protocol = parser.add_mutually_exclusive_group()
    protocol.add_argument("--h2c", action="store_true", help="HTTP/2 over cleartext")
    protocol.add_argument("--http1", action="store_true", help="HTTP/1.1 only (no ALPN h2)")
    parser.add_argument("--insecure", action="store_true", help="do not verify the TLS peer")
    parser.add_argument("--cacert", help="CA bundle (PEM) to verify the server with")
    parser.add_argument("--host", help="Host header / :authority (default: from the URL)")
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing")
    return parser


@dataclass
class Target:
    scheme: str
    host: str
    port: int
    authority: str
    path: str


def parse_url(url: str, host_header: str | None) -> Target:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http:// or https:// URL: {url!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(parts.scheme, parts.hostname, port, host_header or parts.netloc, path)


def client_context(args: argparse.Namespace) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=args.cacert)
    if args.insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"] if args.http1 else ["h2", "http/1.1"])
    return ctx


async def probe(target: Target, args: argparse.Namespace) -> Result:
    start = time.monotonic()
    ctx = client_context(args) if target.scheme == "https" else None
    try:
        reader, writer = await asyncio.open_connection(
            target.host, target.port, ssl=ctx, server_hostname=target.host if ctx else None
        )
    except ssl.SSLError as exc:
        raise Unhealthy(f"TLS handshake failed: {exc.reason or exc}") from None
    except OSError as exc:
        raise Unhealthy(f"cannot connect: {exc.strerror or exc}") from None
    try:
        tls = writer.get_extra_info("ssl_object")
        use_h2 = args.h2c or (tls is not None and tls.selected_alpn_protocol() == "h2")
        if use_h2:
            status, rtt = await _h2(reader, writer, target)
            return Result(status, "h2", time.monotonic() - start, rtt)
        status = await _h1(reader, writer, target)
        return Result(status, "HTTP/1.1", time.monotonic() - start)
    finally:
        writer.close()


async def _h1(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target: Target) -> int:
    request = (
        f"GET {target.path} HTTP/1.1\r\nHost: {target.authority}\r\n"
        "User-Agent: preforkd-check\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    )
    writer.write(request.encode("latin-1"))
    line = await reader.readline()
    while line.startswith(b"HTTP/1.1 1") and not line.startswith(b"HTTP/1.1 101"):
        # RFC 9110 §15.2: interim responses come before the final one; skip them.
        while (await reader.readline()) not in (b"\r\n", b"\n", b""):
            pass
        line = await reader.readline()
    fields = line.split(None, 2)
    if len(fields) < 2 or not fields[0].startswith(b"HTTP/1.") or not fields[1].isdigit():
        raise Unhealthy(f"not an HTTP/1.1 response: {line[:80]!r}")
    return int(fields[1])


async def _h2(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target: Target
) -> tuple[int, float | None]:
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    headers = [
        (":method", "GET"),
        (":scheme", target.scheme),
        (":authority", target.authority),
        (":path", target.path),
        ("user-agent", "preforkd-check"),
    ]
    conn.send_headers(1, headers, end_stream=True)
    conn.ping(os.urandom(8))
    ping_sent = time.monotonic()
    writer.write(conn.data_to_send())
    status: int | None = None
    rtt: float | None = None
    while status is None or rtt is None:
        data = await reader.read(READ_SIZE)
        if not data:
            break
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived) and event.stream_id == 1:
                status = _h2_status(event.headers)
            elif isinstance(event, h2.events.PingAckReceived):
                rtt = time.monotonic() - ping_sent
            elif isinstance(event, h2.events.StreamReset) and event.stream_id == 1:
                raise Unhealthy(f"stream reset by the server (error {event.error_code})")
            elif isinstance(event, h2.events.ConnectionTerminated) and status is None:
                raise Unhealthy(f"GOAWAY from the server (error {event.error_code})")
        writer.write(conn.data_to_send())
    if status is None:
        raise Unhealthy("the server closed the connection without a response")
    conn.close_connection()
    writer.write(conn.data_to_send())
    return status, rtt


def _h2_status(headers: Sequence[tuple[bytes | str, bytes | str]]) -> int:
    for name, value in headers:
        if name in (b":status", ":status"):
            text = value.decode() if isinstance(value, bytes) else value
            if text.isdigit():
                return int(text)
    raise Unhealthy("response without a valid :status")


def report(result: Result, healthy: bool) -> str:
    verdict = "healthy" if healthy else "unhealthy: unexpected status"
    line = f"{verdict}: {result.status} over {result.protocol} in {result.elapsed * 1e3:.1f} ms"
    if result.ping_rtt is not None:
        line += f", PING round trip {result.ping_rtt * 1e3:.2f} ms"
    return line


def main(argv: Sequence[str]) -> int:
    """Run the probe with ``argv`` (the arguments after ``check``); return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(list(argv))
        expected = parse_statuses(args.status)
        target = parse_url(args.url, args.host)
    except SystemExit as exc:  # --help (0) or argparse's usage error (2)
        return EXIT_HEALTHY if exc.code == 0 else EXIT_USAGE
    except ValueError as exc:
        print(f"preforkd check: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        result = asyncio.run(asyncio.wait_for(probe(target, args), args.timeout))
    except (Unhealthy, TimeoutError, OSError, ssl.SSLError, h2.exceptions.H2Error) as exc:
        message = str(exc) or type(exc).__name__
        if isinstance(exc, TimeoutError):
            message = f"no answer within {args.timeout:g}s"
        if not args.quiet:
            print(f"unhealthy: {message}", file=sys.stderr)
        return EXIT_UNHEALTHY
    healthy = result.status in expected
    if not args.quiet:
        print(report(result, healthy), file=sys.stdout if healthy else sys.stderr)
    return EXIT_HEALTHY if healthy else EXIT_UNHEALTHY
