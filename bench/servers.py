"""The servers under comparison and how to start each one for a workload.

A server is a function from a :class:`Launch` (port, protocol, workers, app...) to the
command that runs it in the foreground, or ``None`` when it does not speak that protocol.
Every server runs with its defaults except where a workload needs otherwise (the idle
workload raises keep-alive timeouts and connection caps) and where a default would make
the comparison meaningless (gunicorn's gthread worker gets 16 threads, as many as the
hello workloads keep busy; preforkd starts threads on demand up to its default of 64).
App threads per worker with these commands: preforkd up to 64 (on demand), gunicorn-gthread
16, uvicorn 10 (a2wsgi's pool), hypercorn min(32, CPUs + 4), granian up to backlog/2 = 512 (grown on
demand), nginx none (the echo module's non-blocking sleep).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
PROJECT_DIR = BENCH_DIR.parent
# Generated inputs (64 KiB file, 1 MiB body, certificate), outside the source tree.
DATA_DIR = Path(os.environ.get("BENCH_DATA") or "/tmp/preforkd-bench-data")
NGINX = Path("/usr/sbin/nginx")
NGINX_ECHO_MODULE = Path("/usr/lib/nginx/modules/ngx_http_echo_module.so")
GUNICORN_THREADS = 16  # preforkd's default --threads until it became 64 (grown on demand)


@dataclass(frozen=True)
class Launch:
    """Everything a server command may depend on."""

    port: int
    proto: str  # "h1", "h2c" (prior knowledge) or "tls" (ALPN h2)
    workers: int
    app: str  # "apps:hello": module apps.py in bench/, callable hello
    run_dir: Path  # scratch directory of this run (configuration files, logs)
    data_dir: Path  # generated inputs: cert.pem, key.pem
    venv: Path  # the peers' virtualenv
    keep_alive: int | None = None  # idle keep-alive timeout to configure, seconds
    many_connections: bool = False  # lift per-worker connection caps (idle workload)

    @property
    def cert(self) -> str:
        return str(self.data_dir / "cert.pem")

    @property
    def key(self) -> str:
        return str(self.data_dir / "key.pem")

    def bin(self, name: str) -> str:
        return str(self.venv / "bin" / name)


Command = list[str]


@dataclass(frozen=True)
class ServerSpec:
    name: str
    command: Callable[[Launch], Command | None]
    note: str
    installed: Callable[[Path], bool]  # given the peers' venv
    env: Callable[[Launch], dict[str, str]] = lambda launch: {}
    files: Callable[[Launch], dict[Path, str]] = lambda launch: {}
    reference: bool = False  # the machine's ceiling, not a peer
    protos: tuple[str, ...] = field(default=("h1", "h2c", "tls"))


# --- preforkd ----------------------------------------------------------------------------------


def preforkd_python() -> str:
    """The interpreter that runs preforkd: $PREFORKD_PYTHON, else the one running the suite."""
    return os.environ.get("PREFORKD_PYTHON", sys.executable)


def preforkd_command(launch: Launch) -> Command:
    argv = [preforkd_python(), "-m", "preforkd", "--workers", str(launch.workers)]
    argv += ["--bind", f"127.0.0.1:{launch.port}", "--graceful-timeout", "3"]
    if launch.keep_alive is not None:
        argv += ["--keep-alive", str(launch.keep_alive)]
    if launch.proto == "tls":
        argv += ["--certfile", launch.cert, "--keyfile", launch.key]
    return [*argv, launch.app]


def preforkd_onloop_command(launch: Launch) -> Command:
    """preforkd with --app-on-loop: bodiless requests run on the event loop thread."""
    argv = preforkd_command(launch)
    return [*argv[:-1], "--app-on-loop", argv[-1]]


def preforkd_env(launch: Launch) -> dict[str, str]:
    # The suite runs every server from bench/ (where apps.py is); preforkd comes from here.
    path = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": str(PROJECT_DIR) + (os.pathsep + path if path else "")}


def preforkd_base_env(launch: Launch) -> dict[str, str]:
    """preforkd-base runs another checkout ($BENCH_PREFORKD_BASE, e.g. a git worktree of an older
    commit) with the same interpreter: old and new side by side in one run."""
    return {"PYTHONPATH": os.environ.get("BENCH_PREFORKD_BASE", "")}


def _base_checkout(venv: Path) -> bool:
    base = os.environ.get("BENCH_PREFORKD_BASE")
    return bool(base) and (Path(base) / "preforkd" / "__main__.py").exists()


# --- peers ------------------------------------------------------------------------------------


def gunicorn_command(launch: Launch) -> Command:
    argv = [launch.bin("gunicorn"), "--no-control-socket", "-b", f"127.0.0.1:{launch.port}"]
    argv += ["-w", str(launch.workers), "-k", "gthread", "--threads", str(GUNICORN_THREADS)]
    argv += ["--graceful-timeout", "3", "--log-level", "warning"]
    if launch.keep_alive is not None:
        argv += ["--keep-alive", str(launch.keep_alive)]
    if launch.many_connections:
        argv += ["--worker-connections", "20000"]
    if launch.proto == "h2c":
        argv += ["--http-protocols", "h2,h1", "--http2-cleartext", "prior-knowledge"]
    elif launch.proto == "tls":
        argv += ["--http-protocols", "h2,h1", "--certfile", launch.cert, "--keyfile", launch.key]
    return [*argv, launch.app]


def uvicorn_command(launch: Launch) -> Command | None:
    if launch.proto != "h1":
        return None
    argv = [launch.bin("uvicorn"), "--interface", "wsgi", "--http", "httptools"]
    argv += ["--loop", "uvloop", "--workers", str(launch.workers), "--host", "127.0.0.1"]
    argv += ["--port", str(launch.port), "--no-access-log", "--log-level", "warning"]
    if launch.keep_alive is not None:
        argv += ["--timeout-keep-alive", str(launch.keep_alive)]
    return [*argv, launch.app]


def hypercorn_command(launch: Launch) -> Command:
    argv = [launch.bin("hypercorn"), "-k", "asyncio", "-w", str(launch.workers)]
    argv += ["-b", f"127.0.0.1:{launch.port}", "--graceful-timeout", "2"]
    argv += ["--log-level", "warning", "--backlog", "2048"]
    if launch.keep_alive is not None:
        argv += ["--keep-alive", str(launch.keep_alive)]
    if launch.proto == "tls":
        argv += ["--certfile", launch.cert, "--keyfile", launch.key]
    return [*argv, launch.app]


def granian_command(launch: Launch) -> Command:
    argv = [launch.bin("granian"), "--interface", "wsgi", "--workers", str(launch.workers)]
    argv += ["--host", "127.0.0.1", "--port", str(launch.port), "--no-ws"]
    argv += ["--log-level", "warning", "--http", "auto", "--respawn-failed-workers"]
    argv += ["--respawn-interval", "0"]
    if launch.keep_alive is not None:
        # hyper's header-read timer also runs while a keep-alive connection waits for its
        # next request: it is granian's idle timeout (at most 60 s).
        timeout_ms = min(60_000, launch.keep_alive * 1000)
        argv += ["--http1-header-read-timeout", str(timeout_ms)]
    if launch.many_connections:
        # Backpressure caps the connections a worker serves at once (default: backlog = 1024);
        # blocking threads default to half of it, more than enough for idle connections.
        argv += ["--backpressure", "16384", "--blocking-threads", "64"]
    if launch.proto == "tls":
        argv += ["--ssl-certificate", launch.cert, "--ssl-keyfile", launch.key]
    return [*argv, launch.app]


# --- nginx: the machine's ceiling ------------------------------------------------------------

NGINX_CONF = """\
load_module {echo_module};
worker_processes {workers};
worker_rlimit_nofile 40000;
pid {run_dir}/nginx.pid;
error_log {run_dir}/nginx.error.log warn;
daemon off;
events {{ worker_connections 20000; }}
http {{
    access_log off;
    default_type text/plain;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout {keep_alive};
    keepalive_requests 100000000;
    client_body_temp_path {run_dir}/body;
    proxy_temp_path {run_dir}/proxy;
    fastcgi_temp_path {run_dir}/fastcgi;
    uwsgi_temp_path {run_dir}/uwsgi;
    scgi_temp_path {run_dir}/scgi;
    server {{
        listen 127.0.0.1:{port}{listen};
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        client_max_body_size 4m;
        client_body_buffer_size 2m;
        location = / {{ return 200 "Hello, world!"; }}
        location = /64k {{ default_type application/octet-stream; alias {data_dir}/64k.bin; }}
        location = /echo {{ echo_read_request_body; echo -n $content_length; }}
        location = /sleep {{ echo_sleep 0.010; echo -n "Hello, world!"; }}
    }}
}}
"""

NGINX_LISTEN = {"h1": "", "h2c": " http2", "tls": " ssl http2"}


def nginx_files(launch: Launch) -> dict[Path, str]:
    conf = NGINX_CONF.format(
        echo_module=NGINX_ECHO_MODULE,
        workers=launch.workers,
        run_dir=launch.run_dir,
        keep_alive=launch.keep_alive or 65,
        port=launch.port,
        listen=NGINX_LISTEN[launch.proto],
        cert=launch.cert,
        key=launch.key,
        data_dir=launch.data_dir,
    )
    return {launch.run_dir / "nginx.conf": conf}


def nginx_command(launch: Launch) -> Command:
    conf = launch.run_dir / "nginx.conf"
    return [str(NGINX), "-c", str(conf), "-e", str(launch.run_dir / "nginx.stderr.log")]


def _in_venv(name: str) -> Callable[[Path], bool]:
    return lambda venv: (venv / "bin" / name).exists()


SERVERS: dict[str, ServerSpec] = {
    spec.name: spec
    for spec in (
        ServerSpec(
            "preforkd",
            preforkd_command,
            "the project, from this checkout, default settings (up to 64 threads, on demand)",
            installed=lambda venv: True,
            env=preforkd_env,
        ),
        ServerSpec(
            "preforkd-base",
            preforkd_command,
            "another checkout of preforkd ($BENCH_PREFORKD_BASE), to compare before and after",
            installed=_base_checkout,
            env=preforkd_base_env,
        ),
        ServerSpec(
            "preforkd-onloop",
            preforkd_onloop_command,
            "the project with --app-on-loop (requests without a body run on the loop)",
            installed=lambda venv: True,
            env=preforkd_env,
        ),
        ServerSpec(
            "gunicorn-gthread",
            gunicorn_command,
            f"gthread worker, --threads {GUNICORN_THREADS}; HTTP/2 through the h2 package",
            installed=_in_venv("gunicorn"),
        ),
        ServerSpec(
            "uvicorn",
            uvicorn_command,
            "--interface wsgi (a2wsgi bridge, 10 threads), httptools + uvloop; HTTP/1.1 only",
            installed=_in_venv("uvicorn"),
            protos=("h1",),
        ),
        ServerSpec(
            "hypercorn",
            hypercorn_command,
            "asyncio worker; WSGI in the default executor, request body buffered",
            installed=_in_venv("hypercorn"),
        ),
        ServerSpec(
            "granian",
            granian_command,
            "Rust (hyper/tokio) I/O, --http auto, default blocking threads, respawns workers",
            installed=_in_venv("granian"),
        ),
        ServerSpec(
            "nginx",
            nginx_command,
            "static answers, sendfile, echo module: the machine's ceiling",
            installed=lambda venv: NGINX.exists() and NGINX_ECHO_MODULE.exists(),
            files=nginx_files,
            reference=True,
        ),
    )
}
DEFAULT_SERVERS = tuple(SERVERS)
