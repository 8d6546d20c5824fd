"""The settings registry: every setting of preforkd is declared exactly once, here.

Each field of :class:`Config` carries a :class:`Setting` in its metadata: its type parser,
validator, CLI flags, ``PREFORKD_*`` environment variable, TOML key, group and help. The
command-line parser, the environment and config-file loaders and the settings reference
in the README are all generated from these declarations (see :mod:`preforkd.settings`).

Precedence: defaults < config file < environment < command line.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from preforkd import parsers as p


@dataclass(frozen=True, slots=True)
class Setting:
    """How one setting is spelt on every surface, and how its value is parsed."""

    group: str
    help: str
    flags: tuple[str, ...] = ()  # CLI flags; empty for file/env-only settings
    parse: Callable[[str], Any] = str  # turns one textual value (CLI, env) into the type
    validate: Callable[[Any], None] | None = None  # raises ValueError with a reason
    multiple: bool = False  # repeatable flag; env and single strings are comma-separated
    boolean: bool = False  # a --flag/--no-flag switch
    choices: tuple[str, ...] = ()
    metavar: str | None = None
    cli_only: bool = False  # not read from the config file (e.g. --config itself)
    positional: bool = False  # the APP argument
    env: str | None = None  # environment variable, if not PREFORKD_ + the field name
    toml_aliases: tuple[str, ...] = ()  # other accepted config-file keys
    example: Any = None  # shown in conf/preforkd.toml when the default is None or empty


def setting(default: Any, *flags: str, group: str, help: str, **kw: Any) -> Any:
    """Declare a field of Config together with its Setting (returns a dataclass field)."""
    meta = {"setting": Setting(group=group, help=help, flags=flags, **kw)}
    return dataclasses.field(default=default, metadata=meta)


SERVER = "Server"
WORKERS = "Workers"
LIMITS = "Request limits"
TIMEOUTS = "Timeouts"
LOGGING = "Logging"
PROCESS = "Process"
APPLICATION = "Application"
TLS = "TLS"
HTTP2 = "HTTP/2"
MONITORING = "Monitoring"

# Apache's "combined" log format; %(t)s includes its brackets, as in gunicorn.
COMBINED_FORMAT = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'


# One compact block per setting reads better than one argument per line:
# fmt: off
@dataclass(frozen=True, slots=True)
class Config:
    """The complete, validated configuration. Immutable; build with preforkd.settings."""

    # --- Application -------------------------------------------------------------------
    app: str = setting(
        "", group=APPLICATION, positional=True, metavar="APP",
        example="myproject.wsgi:application",
        help="The WSGI application: 'module:attr', 'module:factory()' or 'module' "
        "(which looks for 'application', then 'app').",
    )
    config: str | None = setting(
        None, "-c", "--config", group=APPLICATION, cli_only=True, metavar="FILE",
        help="Read settings from this TOML file.",
    )
    chdir: str | None = setting(
        None, "--chdir", group=APPLICATION, metavar="DIR", example="/srv/myproject",
        help="Change to this directory before loading the application.",
    )
    pythonpath: tuple[str, ...] = setting(
        (), "--pythonpath", group=APPLICATION, multiple=True, metavar="DIR",
        example=("src",),
        help="Directories to prepend to sys.path (repeatable or comma-separated).",
    )
    preload: bool = setting(
        False, "--preload", group=APPLICATION, boolean=True,
        help="Load the application in the master before forking workers (faster start, "
        "shared memory). A reload (HUP) still loads new code: see the README, Reload (HUP).",
    )
    reload: bool = setting(
        False, "--reload", group=APPLICATION, boolean=True,
        help="Development: watch the source files and reload (as on HUP) when they change; "
        "an application that fails to load is answered with a 500 showing the error.",
    )
    reload_dirs: tuple[str, ...] = setting(
        (), "--reload-dir", group=APPLICATION, multiple=True, metavar="DIR",
        toml_aliases=("reload_dir",), example=("src",),
        help="Directories --reload watches (repeatable). Default: the current directory "
        "(or --chdir) and the application's package.",
    )
    reload_include: tuple[str, ...] = setting(
        ("*.py",), "--reload-include", group=APPLICATION, multiple=True, metavar="GLOB",
        help="File names --reload reacts to (glob patterns, repeatable). The config file "
        "is always watched.",
    )
    reload_exclude: tuple[str, ...] = setting(
        (".git", "__pycache__", ".venv", "venv", ".tox", ".nox", "node_modules",
         ".mypy_cache", ".pytest_cache", ".ruff_cache", ".hypothesis", "*.pyc", "*.pyo",
         ".*.sw?", "*~", ".#*", "#*#"),
        "--reload-exclude", group=APPLICATION, multiple=True, metavar="GLOB",
        help="Paths --reload ignores: glob patterns matched against every part of the path "
        "below a watched directory (repeatable; replaces the default list).",
    )
    dev: bool = setting(
        False, "--dev", group=APPLICATION, boolean=True,
        help="Development mode: --reload, and unless set otherwise one worker, "
        "--log-level debug and the access log on standard output.",
    )

    # --- Server ------------------------------------------------------------------------
    binds: tuple[str, ...] = setting(
        ("127.0.0.1:8000",), "-b", "--bind", group=SERVER, multiple=True,
        metavar="ADDRESS", parse=p.bind_address, validate=p.not_empty,
        env="PREFORKD_BIND", toml_aliases=("bind",),
        help="Listen on HOST:PORT, [IPv6]:PORT, unix:PATH or fd://N. Repeatable.",
    )
    backlog: int = setting(
        2048, "--backlog", group=SERVER, parse=p.integer, validate=p.in_range(1, 65535),
        help="The listen() backlog: connections queued before the kernel refuses more.",
    )
    forwarded_allow_ips: tuple[str, ...] = setting(
        ("127.0.0.1", "::1"), "--forwarded-allow-ips", group=SERVER, multiple=True,
        parse=p.ip_network_or_star, metavar="ADDRESSES",
        help="Proxies trusted to set X-Forwarded-For and X-Forwarded-Proto (and to send "
        "PROXY protocol headers): addresses or networks, comma-separated, or '*' for any.",
    )
    proxy_protocol: bool = setting(
        False, "--proxy-protocol", group=SERVER, boolean=True,
        help="Every connection starts with a PROXY protocol header (v1 or v2, read before "
        "TLS) from a peer in --forwarded-allow-ips, naming the client; others are closed.",
    )

    # --- Workers -----------------------------------------------------------------------
    workers: int = setting(
        1, "-w", "--workers", group=WORKERS, parse=p.integer, validate=p.in_range(1, 1024),
        help="Number of worker processes.",
    )
    threads: int = setting(
        64, "--threads", group=WORKERS, parse=p.integer, validate=p.in_range(1, 4096),
        help="Application threads per worker at most: requests served in parallel by one "
        "worker. Threads start on demand and end after 60 s idle (a few are kept).",
    )
    worker_connections: int = setting(
        1000, "--worker-connections", group=WORKERS, parse=p.integer,
        validate=p.in_range(1, 1_000_000),
        help="Open connections one worker holds at most: at the cap it stops accepting "
        "(the kernel queue and the other workers take new clients) until one closes. "
        "Keep it below the open-file limit (ulimit -n).",
    )
    app_on_loop: bool = setting(
        False, "--app-on-loop", group=WORKERS, boolean=True,
        help="Run the application on the event loop thread for requests without a body, "
        "skipping the hand-off to a thread (faster for small, quick responses). Only for "
        "applications that never block: a slow call stalls every connection of the "
        "worker, and a response to a slow reader is buffered whole. Requests with a "
        "body still run on the thread pool.",
    )
    loop: str = setting(
        "auto", "--loop", group=WORKERS, choices=("auto", "asyncio", "uvloop"),
        help="Event loop: 'uvloop' (must be installed), 'asyncio', or 'auto' "
        "(uvloop when installed).",
    )
    max_requests: int = setting(
        0, "--max-requests", group=WORKERS, parse=p.integer, validate=p.in_range(0, 2**31),
        help="Recycle a worker gracefully after this many requests (0: never).",
    )
    max_requests_jitter: int = setting(
        0, "--max-requests-jitter", group=WORKERS, parse=p.integer,
        validate=p.in_range(0, 2**31),
        help="Add a random 0..N to --max-requests per worker, so workers do not all "
        "restart at once.",
    )
    max_boot_failures: int = setting(
        10, "--max-boot-failures", group=WORKERS, parse=p.integer,
        validate=p.in_range(1, 10000),
        help="Stop the master (exit code 6) after this many workers in a row died before "
        "they were ready; each retry waits twice as long (0.1s, 0.2s, ... up to 10s).",
    )

    # --- Timeouts ----------------------------------------------------------------------
    timeout: float = setting(
        30.0, "-t", "--timeout", group=TIMEOUTS, parse=p.duration, metavar="SECONDS",
        validate=p.in_range(0, 86400),
        help="A worker whose event loop is silent this long (or not ready this long after "
        "it was started) gets SIGABRT: it logs every thread's stack and dies (SIGKILL a "
        "second later if it lingers); a new worker replaces it (0: never).",
    )
    graceful_timeout: float = setting(
        30.0, "--graceful-timeout", group=TIMEOUTS, parse=p.duration, metavar="SECONDS",
        validate=p.in_range(0, 86400),
        help="On stop or reload, time given to in-flight requests before workers are killed.",
    )
    keep_alive: float = setting(
        5.0, "--keep-alive", group=TIMEOUTS, parse=p.duration, metavar="SECONDS",
        validate=p.in_range(0, 3600),
        help="Close an idle keep-alive connection after this long (0: no keep-alive).",
    )
    header_timeout: float = setting(
        10.0, "--header-timeout", group=TIMEOUTS, parse=p.duration, metavar="SECONDS",
        validate=p.in_range(0.1, 3600),
        help="Close a connection whose request head has not fully arrived after this long "
        "(defends against slowloris).",
    )
    request_timeout: float = setting(
        0.0, "--request-timeout", group=TIMEOUTS, parse=p.duration, metavar="SECONDS",
        validate=p.in_range(0, 86400),
        help="A request running longer than this has its thread's stack logged, and its "
        "worker is replaced gracefully (0: no limit).",
    )

    send_timeout: float = setting(
        60.0, "--send-timeout", group=TIMEOUTS, parse=p.duration, metavar="SECONDS",
        validate=p.in_range(0.1, 86400),
        help="Give up on a client that accepts no response data for this long (a full "
        "socket buffer, or an HTTP/2 window never reopened); the app's write fails.",
    )

    # --- Request limits ----------------------------------------------------------------
    limit_request_line: int = setting(
        8190, "--limit-request-line", group=LIMITS, parse=p.integer,
        validate=p.in_range(16, 65536),
        help="Maximum size of the request line, in bytes (414 beyond; RFC 9112 §3 "
        "recommends at least 8000). HTTP/2 applies it to :method, :path and :authority.",
    )
    limit_request_fields: int = setting(
        100, "--limit-request-fields", group=LIMITS, parse=p.integer,
        validate=p.in_range(1, 32768),
        help="Maximum number of header fields in a request (431 beyond).",
    )
    limit_request_field_size: int = setting(
        8190, "--limit-request-field-size", group=LIMITS, parse=p.integer,
        validate=p.in_range(16, 65536),
        help="Maximum size of one header field (name and value), in bytes (431 beyond).",
    )

    # --- Logging -----------------------------------------------------------------------
    access_logfile: str | None = setting(
        None, "--access-logfile", group=LOGGING, metavar="FILE", example="-",
        help="Write the access log here ('-' for standard output). Off by default.",
    )
    access_log_format: str = setting(
        COMBINED_FORMAT, "--access-log-format", group=LOGGING, metavar="FORMAT",
        validate=p.access_log_format,
        help="Access log line format with gunicorn-style atoms (%(h)s %(r)s %(s)s ...), "
        "or 'json' for one JSON object per line. Default: combined.",
    )
    error_logfile: str = setting(
        "-", "--error-logfile", "--log-file", group=LOGGING, metavar="FILE",
        help="Write the error log here ('-' for standard error).",
    )
    log_level: str = setting(
        "info", "--log-level", group=LOGGING,
        choices=("debug", "info", "warning", "error", "critical"),
        help="Minimum level of error-log messages.",
    )

    # --- Process -----------------------------------------------------------------------
    pidfile: str | None = setting(
        None, "-p", "--pid", group=PROCESS, metavar="FILE", example="/run/preforkd.pid",
        help="Write the master's process id to this file.",
    )
    user: str | None = setting(
        None, "-u", "--user", group=PROCESS, example="www-data",
        help="Switch worker processes to this user (name or uid) after binding.",
    )
    group: str | None = setting(
        None, "-g", "--group", group=PROCESS, example="www-data",
        help="Switch worker processes to this group (name or gid) after binding.",
    )
    umask: int = setting(
        0o22, "-m", "--umask", group=PROCESS, parse=p.octal, metavar="MODE",
        validate=p.in_range(0, 0o777),
        help="File mode creation mask of the server processes (octal, e.g. 022).",
    )

    # --- TLS ---------------------------------------------------------------------------
    certfile: str | None = setting(
        None, "--certfile", group=TLS, metavar="FILE", example="/etc/preforkd/cert.pem",
        help="Serve TLS with this certificate chain (PEM). Every TCP and UNIX listener "
        "then speaks TLS; ALPN offers h2 and http/1.1.",
    )
    keyfile: str | None = setting(
        None, "--keyfile", group=TLS, metavar="FILE", example="/etc/preforkd/key.pem",
        help="The private key of --certfile (PEM), if not in the certificate file.",
    )
    keyfile_password: str | None = setting(
        None, "--keyfile-password", group=TLS, metavar="PASSWORD", example="secret",
        help="Password of an encrypted --keyfile (prefer the environment variable).",
    )
    ca_certs: str | None = setting(
        None, "--ca-certs", group=TLS, metavar="FILE", example="/etc/preforkd/clients-ca.pem",
        help="CA certificates (PEM) to verify client certificates against.",
    )
    cert_reqs: str = setting(
        "none", "--cert-reqs", group=TLS, choices=("none", "optional", "required"),
        help="Client certificates: not asked for, verified if given, or required. The "
        "verified certificate is in the environ as SSL_CLIENT_CERT (PEM) and "
        "SSL_CLIENT_S_DN.",
    )
    ciphers: str | None = setting(
        None, "--ciphers", group=TLS, metavar="LIST", example="ECDHE+AESGCM:ECDHE+CHACHA20",
        help="OpenSSL cipher list for TLS 1.2 (TLS 1.3 suites are OpenSSL's defaults).",
    )
    tls_min_version: str = setting(
        "1.2", "--tls-min-version", group=TLS, choices=("1.2", "1.3"),
        help="Oldest TLS version accepted.",
    )
    handshake_timeout: float = setting(
        10.0, "--handshake-timeout", group=TLS, parse=p.duration, metavar="SECONDS",
        validate=p.in_range(0.1, 600),
        help="Close a connection whose TLS handshake has not finished after this long.",
    )

    # --- HTTP/2 ------------------------------------------------------------------------
    http2: bool = setting(
        True, "--http2", group=HTTP2, boolean=True,
        help="Serve HTTP/2: ALPN h2 on TLS listeners, and h2c (prior knowledge and "
        "Upgrade: h2c) on plain ones where --http-protocols allows.",
    )
    http_protocols: tuple[str, ...] = setting(
        ("h1", "h2"), "--http-protocols", group=HTTP2, multiple=True,
        parse=p.http_protocol, metavar="PROTOCOLS",
        help="Protocols every listener serves: h1, h2 or both (comma-separated).",
    )
    bind_protocols: tuple[str, ...] = setting(
        (), "--bind-protocols", group=HTTP2, multiple=True, parse=p.bind_protocols,
        metavar="ADDRESS=PROTOCOLS", example=("127.0.0.1:8001=h2",),
        help="Per-listener override of --http-protocols, e.g. 127.0.0.1:8443=h2 or "
        "unix:/run/a.sock=h1 (repeatable; ADDRESS as given to --bind).",
    )
    http2_max_concurrent_streams: int = setting(
        100, "--http2-max-concurrent-streams", group=HTTP2, parse=p.integer,
        validate=p.in_range(1, 10000),
        help="Streams a client may have open at once on one connection.",
    )
    http2_initial_window_size: int = setting(
        262144, "--http2-initial-window-size", group=HTTP2, parse=p.integer,
        validate=p.in_range(65535, 2**31 - 1),
        help="Receive window of each stream, in bytes: how much of a request body may be "
        "in flight before the application reads it.",
    )
    http2_max_frame_size: int = setting(
        16384, "--http2-max-frame-size", group=HTTP2, parse=p.integer,
        validate=p.in_range(16384, 16777215),
        help="Largest frame payload we accept (RFC 9113 §6.5.2).",
    )
    http2_max_header_list_size: int = setting(
        65536, "--http2-max-header-list-size", group=HTTP2, parse=p.integer,
        validate=p.in_range(1024, 16777216),
        help="Largest decoded request header list, in bytes (defends against HPACK bombs).",
    )
    http2_ping_interval: float = setting(
        60.0, "--http2-ping-interval", group=HTTP2, parse=p.duration, metavar="SECONDS",
        validate=p.in_range(0, 86400),
        help="PING a connection whose client has sent nothing for this long while it has "
        "streams open; close it if the PING is not answered within as long again (0: "
        "never). A connection with no streams closes after --keep-alive.",
    )

    # --- Monitoring --------------------------------------------------------------------
    control_socket: str = setting(
        "auto", "--control-socket", group=MONITORING, metavar="PATH",
        help="The master's UNIX control socket, read by `preforkd status` and `preforkd "
        "top` (mode 0600). 'auto': preforkd-<pid>.sock in $RUNTIME_DIRECTORY, "
        "$XDG_RUNTIME_DIR/preforkd or /tmp/preforkd-<uid>; 'off': none.",
    )
    metrics_bind: str | None = setting(
        None, "--metrics-bind", group=MONITORING, metavar="ADDRESS", parse=p.metrics_address,
        example="127.0.0.1:9100",
        help="Serve Prometheus metrics (all workers summed) at /metrics on this HOST:PORT, "
        "from the master. Off by default.",
    )

# fmt: on
