"""The error log (stdlib logging) and the access log (direct writes, on the hot path).

Named ``logs`` so that it never shadows the standard library's ``logging``.

Error log: the ``preforkd`` logger hierarchy (``preforkd.master``, ``preforkd.worker``, ...)
writes ``[2026-11-21 20:00:00 +0000] [pid] [LEVEL] message`` lines to standard error or
to ``--error-logfile``.

Access log: one line per request, rendered by a function compiled once from the format
and written with a single ``os.write`` on a file opened with ``O_APPEND``, so lines from
several threads and several worker processes never interleave. Callers check
``access_log.enabled`` before building an :class:`AccessRecord`, so a disabled access
log costs one attribute read per request.

Client-controlled text is escaped nginx-style before it reaches a text-format line: bytes
outside printable ASCII, ``"`` and ``\\`` become ``\\xHH`` (``\\uHHHH`` beyond latin-1),
so a request can neither forge a log line nor break the quoting of a field.

Both logs are reopened by :func:`reopen_log_files` (SIGUSR1), which is what logrotate
needs: the old file is renamed, the new one is created on reopen.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
import sys
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from preforkd import parsers
from preforkd.config import Config

LOGGER_NAME = "preforkd"
ERROR_LOG_FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s"
ERROR_LOG_DATEFMT = "%Y-%m-%d %H:%M:%S %z"

log = logging.getLogger(LOGGER_NAME)

# --- Error log --------------------------------------------------------------------------


class _ReopenableFileHandler(logging.FileHandler):
    """A FileHandler that can switch to a fresh file of the same name (logrotate)."""

    def reopen(self) -> None:
        self.acquire()  # emit() holds the same lock: no record is written to a closed stream
        try:
            new = self._open()
            old, self.stream = self.stream, new
            if old is not None:
                old.close()
        finally:
            self.release()


_installed: list[logging.Handler] = []


def setup_error_log(cfg: Config) -> None:
    """Send the ``preforkd`` loggers to ``cfg.error_logfile`` at ``cfg.log_level``.

    Idempotent: a second call (on reload) replaces the handler installed by the first.
    Raises OSError if the log file cannot be opened.
    """
    handler: logging.Handler
    if cfg.error_logfile == "-":
        handler = logging.StreamHandler(sys.stderr)
    else:
        handler = _ReopenableFileHandler(cfg.error_logfile, encoding="utf-8")
    handler.setFormatter(logging.Formatter(ERROR_LOG_FORMAT, ERROR_LOG_DATEFMT))
    for old in _installed:
        log.removeHandler(old)
        old.close()
    _installed[:] = [handler]
    log.addHandler(handler)
    log.setLevel(cfg.log_level.upper())
    log.propagate = False  # the application's root handlers must not print our lines twice


def reopen_log_files() -> None:
    """Reopen the error log file and every access log file (on SIGUSR1)."""
    for handler in list(_installed):
        if isinstance(handler, _ReopenableFileHandler):
            try:
                handler.reopen()
            except OSError as exc:
                log.error("cannot reopen the error log %s: %s", handler.baseFilename, exc)
    for access_log in list(_access_logs):
        try:
            access_log.reopen()
        except OSError as exc:
            log.error("cannot reopen the access log %s: %s", access_log.logfile, exc)


# --- Access log -------------------------------------------------------------------------


@dataclass(slots=True)
class AccessRecord:
    """What the access log knows about one finished request."""

    remote_addr: str
    remote_port: int | None
    method: str
    target: str  # the raw request-target, e.g. "/a%20b?x=1"
    http_version: str  # "1.0", "1.1", "2"
    status: int
    response_bytes: int  # body bytes sent
    request_headers: list[tuple[str, str]]  # lower-case names
    response_headers: list[tuple[str, str]]  # as the app gave them
    start_time: float  # time.time() when the request began
    duration: float  # seconds
    pid: int


_UNSAFE = re.compile(r'[^\x20-\x7e]|["\\]')


def _escape_char(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code < 0x100:
        return f"\\x{code:02X}"
    return f"\\u{code:04X}" if code < 0x10000 else f"\\U{code:08X}"


def escape(value: str) -> str:
    """nginx-style escaping of a client-controlled value for a text log line."""
    if value.isascii() and value.isprintable() and '"' not in value and "\\" not in value:
        return value  # the common case: no regex, no copy
    return _UNSAFE.sub(_escape_char, value)


def _header(headers: list[tuple[str, str]], name: str, fold: bool = False) -> str | None:
    """The value of header ``name`` (lower-case); repeated headers are joined by ', '.

    Request header names arrive lower-cased; response ones as the app wrote them
    (``fold``). No list is built for the usual single occurrence."""
    found: str | None = None
    for key, value in headers:
        if (key.lower() if fold else key) == name:
            found = value if found is None else f"{found}, {value}"
    return found


def _basic_auth_user(record: AccessRecord) -> str | None:
    auth = _header(record.request_headers, "authorization")
    if not auth or auth[:6].lower() != "basic ":
        return None
    try:
        decoded = base64.b64decode(auth[6:].strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user = decoded.decode("utf-8", "replace").partition(":")[0]
    return user or None


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_clf_cache: tuple[int, str] = (-1, "")


def _clf_time(timestamp: float) -> str:
    """[21/Nov/2026:20:00:00 +0000] in local time, English month names whatever the locale."""
    global _clf_cache
    second = int(timestamp)
    cached = _clf_cache  # one read: another thread may replace the tuple meanwhile
    if cached[0] == second:
        return cached[1]
    t = time.localtime(second)
    offset = abs(t.tm_gmtoff)
    sign = "-" if t.tm_gmtoff < 0 else "+"
    text = (
        f"[{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year}:"
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} "
        f"{sign}{offset // 3600:02d}{offset % 3600 // 60:02d}]"
    )
    _clf_cache = (second, text)
    return text


Render = Callable[[AccessRecord], str]


def _or_dash(value: str | None) -> str:
    return escape(value) if value else "-"


_ATOMS: dict[str, Render] = {
    "h": lambda r: _or_dash(r.remote_addr),
    "l": lambda r: "-",
    "u": lambda r: _or_dash(_basic_auth_user(r)),
    "t": lambda r: _clf_time(r.start_time),
    "r": lambda r: escape(f"{r.method} {r.target} HTTP/{r.http_version}"),
    "m": lambda r: escape(r.method),
    "U": lambda r: escape(r.target.partition("?")[0]),
    "q": lambda r: escape(r.target.partition("?")[2]),
    "H": lambda r: escape(f"HTTP/{r.http_version}"),
    "s": lambda r: str(r.status),
    "B": lambda r: str(r.response_bytes),
    "b": lambda r: str(r.response_bytes) if r.response_bytes else "-",
    "f": lambda r: _or_dash(_header(r.request_headers, "referer")),
    "a": lambda r: _or_dash(_header(r.request_headers, "user-agent")),
    "T": lambda r: str(int(r.duration)),
    "D": lambda r: str(int(r.duration * 1_000_000)),
    "M": lambda r: str(int(r.duration * 1000)),
    "L": lambda r: f"{r.duration:.6f}",
    "p": lambda r: f"<{r.pid}>",
}


def _atom(atom: str) -> Render:
    if atom in _ATOMS:
        return _ATOMS[atom]
    if not atom.startswith("{"):  # a code parsers.ACCESS_LOG_ATOMS knows but we do not
        raise ValueError(f"access log atom %({atom})s has no renderer")
    name, kind = atom[1:-2], atom[-1]  # "{x-request-id}i"
    if kind == "i":
        return lambda r: _or_dash(_header(r.request_headers, name))
    return lambda r: _or_dash(_header(r.response_headers, name, fold=True))


# The keys of a JSON access log line, in order. Absent values are null.
JSON_KEYS = (
    "time",  # ISO 8601, local time with offset, milliseconds: 2026-11-21T20:00:00.123+00:00
    "remote_addr",
    "remote_port",  # integer or null (unix sockets)
    "user",  # from HTTP Basic authentication, or null
    "method",
    "target",  # the raw request-target, path and query
    "path",
    "query",
    "protocol",  # "HTTP/1.1", "HTTP/2"
    "status",  # integer
    "bytes",  # response body bytes, integer
    "duration",  # seconds, float with microsecond precision
    "referer",
    "user_agent",
    "pid",  # integer
)


def _render_json(r: AccessRecord) -> str:
    path, _, query = r.target.partition("?")
    values = (
        datetime.fromtimestamp(r.start_time).astimezone().isoformat(timespec="milliseconds"),
        r.remote_addr,
        r.remote_port,
        _basic_auth_user(r),
        r.method,
        r.target,
        path,
        query,
        f"HTTP/{r.http_version}",
        r.status,
        r.response_bytes,
        round(r.duration, 6),
        _header(r.request_headers, "referer"),
        _header(r.request_headers, "user-agent"),
        r.pid,
    )
    # ensure_ascii: control characters, quotes and non-ASCII all come out escaped.
    return json.dumps(dict(zip(JSON_KEYS, values, strict=True)))


def compile_format(fmt: str) -> Render:
    """Turn an access log format (or 'json') into a record -> line function, once.

    Raises ValueError for an unknown atom (the settings loader reports it at start-up).
    """
    if fmt == parsers.ACCESS_LOG_JSON:
        return _render_json
    template, atoms = parsers.split_access_log_format(fmt)
    getters = tuple(_atom(atom) for atom in atoms)

    def render(record: AccessRecord) -> str:
        return template % tuple([get(record) for get in getters])

    return render


_access_logs: weakref.WeakSet[AccessLog] = weakref.WeakSet()


def _open_append(path: str) -> int:
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)


class AccessLog:
    """One line per request to a file, standard output ('-') or nowhere (None)."""

    def __init__(self, logfile: str | None, fmt: str) -> None:
        self.logfile = logfile
        self.enabled = logfile is not None
        self._render = compile_format(fmt)
        self._fd: int | None = None  # None: standard output (or disabled)
        self._lock = threading.Lock()  # guards standard output, reopen and close
        self._failing = False  # a write failed: it was logged once, stay quiet until reopen
        if logfile is not None and logfile != "-":
            self._fd = _open_append(logfile)
        _access_logs.add(self)

    def log(self, record: AccessRecord) -> None:
        """Write the record's line. Never raises: a failure is reported once to the error log."""
        if not self.enabled:
            return
        try:
            line = self._render(record) + "\n"
            fd = self._fd
            if fd is None:
                with self._lock:
                    sys.stdout.write(line)
                    sys.stdout.flush()
            else:
                # One write per line on an O_APPEND file: atomic with respect to other
                # threads and processes appending to the same file.
                data = line.encode("utf-8", "backslashreplace")
                while data:
                    data = data[os.write(fd, data) :]
        except Exception:
            if not self._failing:
                self._failing = True
                log.exception("cannot write to the access log %s", self.logfile)

    def reopen(self) -> None:
        """Switch to a fresh file of the same name; concurrent log() calls are safe."""
        with self._lock:
            if self._fd is None or self.logfile is None:
                return
            new = _open_append(self.logfile)
            try:
                # dup2 replaces the file behind our descriptor number atomically, so a
                # thread in log() writes to the old file or the new one, never to a closed
                # (or, worse, reused) descriptor.
                os.dup2(new, self._fd, inheritable=False)
            finally:
                os.close(new)
            self._failing = False

    def close(self) -> None:
        """Close the file. Only once no thread can call log() any more (worker exit)."""
        with self._lock:
            self.enabled = False
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
        _access_logs.discard(self)
