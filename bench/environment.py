"""The machine's side of the suite: installing the peers, generated inputs, versions."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

from servers import preforkd_python

BENCH_DIR = Path(__file__).resolve().parent
PEER_PACKAGES = ["gunicorn", "h2", "uvicorn", "a2wsgi", "uvloop", "httptools", "hypercorn"]
PEER_PACKAGES += ["granian"]
APT_PACKAGES = "nginx libnginx-mod-http-echo wrk nghttp2-client curl"


def setup(venv: Path) -> None:
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--upgrade", *PEER_PACKAGES]
    subprocess.run(pip, check=True)
    print(f"peers installed in {venv}; also needed: apt-get install -y {APT_PACKAGES}")


def ensure_data(data: Path) -> None:
    """Generated inputs: the 64 KiB file nginx serves, the 1 MiB body, a P-256 cert."""
    data.mkdir(parents=True, exist_ok=True)
    data.chmod(0o755)  # nginx workers run as another user
    for name, size in (("64k.bin", 64 * 1024), ("body1m.bin", 1024 * 1024)):
        path = data / name
        if not path.exists() or path.stat().st_size != size:
            path.write_bytes(b"x" * size)
    if not (data / "cert.pem").exists():
        argv = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
        argv += ["-nodes", "-keyout", str(data / "key.pem"), "-out", str(data / "cert.pem")]
        argv += ["-days", "365", "-subj", "/CN=localhost"]
        argv += ["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"]
        subprocess.run(argv, check=True, capture_output=True)


def first_line(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return "not found"
    lines = (done.stdout + done.stderr).strip().splitlines()
    return lines[0] if lines else "?"


def versions(venv: Path) -> dict[str, str]:
    code = (
        "import importlib.metadata as m, json, sys\n"
        "names = ['gunicorn', 'uvicorn', 'a2wsgi', 'hypercorn', 'granian', 'h2', 'uvloop']\n"
        "out = {'peers python': sys.version.split()[0]}\n"
        "for n in names:\n"
        "    try: out[n] = m.version(n)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(out))\n"
    )
    found: dict[str, str] = {"python": platform.python_version()}
    project = BENCH_DIR.parent
    import_preforkd = f"import sys; sys.path.insert(0, {str(project)!r}); import preforkd"
    found["preforkd"] = first_line(
        [preforkd_python(), "-c", import_preforkd + "; print(preforkd.__version__)"]
    )
    git = ["git", "-C", str(project)]
    commit = first_line([*git, "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run([*git, "diff", "--quiet", "HEAD", "--", "preforkd"], check=False)
    found["preforkd commit"] = commit + (" + uncommitted changes" if dirty.returncode else "")
    with contextlib.suppress(json.JSONDecodeError):
        found.update(json.loads(first_line([str(venv / "bin" / "python"), "-c", code])))
    for name, argv in (
        ("nginx", ["/usr/sbin/nginx", "-v"]),
        ("wrk", ["wrk", "-v"]),
        ("h2load", ["h2load", "--version"]),
        ("openssl", ["openssl", "version"]),
    ):
        found[name] = first_line(argv)
    found["kernel"] = platform.release()
    cpu = next(
        (ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in ln), ""
    )
    found["cpu"] = f"{cpu.partition(':')[2].strip()} x {os.cpu_count()}"
    mem_kib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 1024
    found["memory"] = f"{mem_kib / 1024**2:.1f} GiB"
    return found
