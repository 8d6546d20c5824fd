"""Building the WSGI environ (PEP 3333) from a protocol-neutral Request event.

``build_environ`` is the C version from ``preforkd.native._wsgienv`` when it is built
(and ``PREFORKD_PURE_PYTHON`` is not set), else ``build_environ_py``, the pure-Python
reference written here. The C version takes requests of the usual shape and calls this
module's helpers for the rare steps, so the rules (field names to keys, Host, targets,
trusted proxies) are written once, here; tests/native/ compares the two.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import stat
from collections.abc import Iterator, Sequence
from typing import IO, Any, NamedTuple
from urllib.parse import unquote_to_bytes

from preforkd import __version__, native
from preforkd.proto.events import Request

# Fixed names for the headers whose environ key is not HTTP_*, and every other name's
# key, memoised: header names repeat endlessly, so each is converted once per worker.
_SPECIAL_KEYS = {"content-type": "CONTENT_TYPE", "content-length": "CONTENT_LENGTH"}
_key_cache: dict[str, str | None] = {}
_KEY_CACHE_MAX = 2048


def _environ_key(name: str) -> str | None:
    """'x-api-key' -> 'HTTP_X_API_KEY'; None for a name that must be dropped."""
    key = _key_cache.get(name)
    if key is None and name not in _key_cache:
        if "_" in name:
            # "X_Api_Key" and "X-Api-Key" would collide in the environ; a client could use
            # the underscore form to spoof a header a proxy in front of us sets (nginx and
            # gunicorn drop them too).
            key = None
        else:
            key = _SPECIAL_KEYS.get(name) or "HTTP_" + name.upper().replace("-", "_")
        if len(_key_cache) < _KEY_CACHE_MAX:
            _key_cache[name] = key
    return key


class ProxyTrust:
    """Which peers may tell us the client address and scheme (--forwarded-allow-ips)."""

    def __init__(self, allowed: Sequence[str]) -> None:
        self.any = "*" in allowed
        self._networks = [ipaddress.ip_network(a, strict=False) for a in allowed if a != "*"]
        self._cache: dict[str, bool] = {}

    def trusts(self, address: str) -> bool:
        if self.any:
            return True
        known = self._cache.get(address)
        if known is None:
            try:
                ip = ipaddress.ip_address(address)
            except ValueError:
                known = address == ""  # a UNIX socket peer is local: only a proxy can reach it
            else:
                known = any(ip in net for net in self._networks)
            if len(self._cache) < 4096:
                self._cache[address] = known
        return known

    def client_from(self, forwarded_for: str) -> str | None:
        """The client address in X-Forwarded-For: the rightmost entry we do not trust
        (entries to its left were written by the client and cannot be believed)."""
        hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
        for hop in reversed(hops):
            if not self.trusts(hop):
                return hop
        return hops[0] if hops else None


class ConnectionInfo(NamedTuple):
    """What the environ needs to know about the connection a request came on.

    Made once per connection: a NamedTuple, because a frozen dataclass costs about three
    times as much to create (each field is set through object.__setattr__)."""

    server_name: str
    server_port: str
    remote_addr: str
    remote_port: str
    url_scheme: str  # "http" or "https"
    from_trusted_proxy: bool
    extra: dict[str, str] | None = None  # per-connection keys, e.g. the TLS client cert


class ErrorStream:
    """wsgi.errors: text written by the app goes to the error log, a line at a time."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger

    def write(self, text: str) -> int:
        for line in text.splitlines():
            if line.strip():
                self._logger.error(line)
        return len(text)

    def writelines(self, lines: Sequence[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        pass


class FileWrapper:
    """wsgi.file_wrapper: lets the server send a file with sendfile(2) where it can."""

    def __init__(self, filelike: IO[bytes], block_size: int = 64 * 1024) -> None:
        self.filelike = filelike
        self.block_size = block_size
        close = getattr(filelike, "close", None)
        if close is not None:
            self.close = close

    def fileno(self) -> int | None:
        """The descriptor of a regular file we can sendfile() from, else None."""
        try:
            fd = self.filelike.fileno()

            return fd if stat.S_ISREG(os.fstat(fd).st_mode) else None
        except (AttributeError, OSError, ValueError):
            return None

    def __iter__(self) -> Iterator[bytes]:
        read = self.filelike.read
        while block := read(self.block_size):
            yield block


_app_errors = ErrorStream(logging.getLogger("preforkd.app"))


SERVER_SOFTWARE = f"preforkd/{__version__}"


# Host field value -> (SERVER_NAME, SERVER_PORT or "" for the scheme's default), memoised:
# a server sees few distinct Host values (bounded, like the other memo tables).
_host_cache: dict[str, tuple[str, str]] = {}
_HOST_CACHE_MAX = 1024


def _server_name_port(host: str, default_port: str) -> tuple[str, str]:
    known = _host_cache.get(host)
    if known is None:
        if host.startswith("["):  # [::1]:8000
            end = host.find("]")
            name, rest = host[: end + 1], host[end + 1 :]
            known = name, rest[1:] if rest.startswith(":") else ""
        else:
            name, sep, port = host.partition(":")
            known = name, port if sep else ""
        if len(_host_cache) < _HOST_CACHE_MAX:
            _host_cache[host] = known
    return known if known[1] else (known[0], default_port)


def _split_target(target: str) -> tuple[str, str, str | None]:
    """request-target to (path, query, authority-from-absolute-form)."""
    authority = None
    if not target.startswith("/") and "://" in target:
        # absolute-form (RFC 9112 §3.2.2): the target's authority replaces Host.
        _, _, rest = target.partition("://")
        slash = rest.find("/")
        question = rest.find("?")
        cut = min(i for i in (slash, question, len(rest)) if i >= 0)
        authority, target = rest[:cut], rest[cut:] or "/"
        if target.startswith("?"):
            target = "/" + target
    path, _, query = target.partition("?")
    path = path.partition("#")[0]
    return path, query, authority


def environ_template(
    conn: ConnectionInfo,
    *,
    multithread: bool = True,
    multiprocess: bool = False,
    script_name: str = "",
) -> dict[str, Any]:
    """The keys every request on a connection shares; built once per connection and
    copied per request (a C-level dict copy instead of twenty assignments)."""
    template: dict[str, Any] = {
        "SERVER_SOFTWARE": SERVER_SOFTWARE,  # CGI/1.1 (RFC 3875 §4.1.17): product/version
        "SCRIPT_NAME": script_name,
        "SERVER_NAME": conn.server_name,
        "SERVER_PORT": conn.server_port,
        "REMOTE_ADDR": conn.remote_addr,
        "REMOTE_PORT": conn.remote_port,
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": conn.url_scheme,
        "wsgi.input_terminated": True,
        "wsgi.errors": _app_errors,
        "wsgi.multithread": multithread,
        "wsgi.multiprocess": multiprocess,
        "wsgi.run_once": False,
        "wsgi.file_wrapper": FileWrapper,
    }
    if conn.extra:
        template.update(conn.extra)
    # The keys build_environ sets on every request, as placeholders it overwrites, and a
    # table grown past them: dict.copy() keeps the table's size (CPython), so a request's
    # environ takes them and its fields without a resize (~1k instructions a request).
    template.update(_PER_REQUEST_KEYS)
    template[_GROW] = None
    del template[_GROW]
    return template


_PER_REQUEST_KEYS = dict.fromkeys(
    ("REQUEST_METHOD", "PATH_INFO", "QUERY_STRING", "RAW_URI", "REQUEST_URI"), ""
) | {"SERVER_PROTOCOL": "", "wsgi.input": None}
_GROW = "preforkd.grow"


def build_environ_py(
    request: Request,
    conn: ConnectionInfo,
    wsgi_input: Any,
    proxy: ProxyTrust,
    *,
    template: dict[str, Any] | None = None,
    multithread: bool = True,
    multiprocess: bool = False,
    script_name: str = "",
) -> dict[str, Any]:
    """The environ of one request; ``template`` comes from :func:`environ_template`.

    The pure-Python reference. ``build_environ`` is the C version from
    :mod:`preforkd.native` when it is built (it calls this function for every case it does
    not take itself), else this function."""
    if template is None:
        template = environ_template(
            conn, multithread=multithread, multiprocess=multiprocess, script_name=script_name
        )
    environ = template.copy()
    keys = _key_cache
    for name, value in request.headers:
        key = keys.get(name) or _environ_key(name)  # inline: the cache hits nearly always
        if key is None:
            continue
        if key in environ:
            # Repeated fields combine with "," (RFC 9110 §5.3); cookies with "; "
            # (RFC 6265 §5.4, which HTTP/2 clients rely on: RFC 9113 §8.2.3).
            sep = "; " if key == "HTTP_COOKIE" else ","
            environ[key] = environ[key] + sep + value
        else:
            environ[key] = value

    target = request.target
    if target[:1] == "/" and "#" not in target:  # origin-form, the common case (inline)
        path, _, query = target.partition("?")
    else:
        path, query, authority = _split_target(target)
        if authority is not None:
            environ["HTTP_HOST"] = authority
    if conn.from_trusted_proxy:
        _apply_proxy_headers(environ, proxy)
    host = environ.get("HTTP_HOST")
    if host:
        default_port = "443" if environ["wsgi.url_scheme"] == "https" else "80"
        environ["SERVER_NAME"], environ["SERVER_PORT"] = _server_name_port(host, default_port)

    # PATH_INFO is the percent-decoded path, its bytes as latin-1 (PEP 3333 "unicode
    # issues"); SCRIPT_NAME is a mount prefix the app sees as already consumed.
    path_info = unquote_to_bytes(path).decode("latin-1") if "%" in path else path
    script_name = environ["SCRIPT_NAME"]
    if script_name and (path_info == script_name or path_info.startswith(script_name + "/")):
        path_info = path_info[len(script_name) :]

    environ["REQUEST_METHOD"] = request.method
    environ["PATH_INFO"] = path_info
    environ["QUERY_STRING"] = query
    environ["RAW_URI"] = environ["REQUEST_URI"] = target
    environ["SERVER_PROTOCOL"] = "HTTP/" + request.http_version
    environ["wsgi.input"] = wsgi_input
    return environ


def _apply_proxy_headers(environ: dict[str, Any], proxy: ProxyTrust) -> None:
    """X-Forwarded-Proto and -For from a trusted proxy set the scheme and client address."""
    proto = environ.get("HTTP_X_FORWARDED_PROTO")
    if proto:
        proto = proto.rpartition(",")[2].strip().lower()
        if proto in ("http", "https"):
            environ["wsgi.url_scheme"] = proto
    forwarded_for = environ.get("HTTP_X_FORWARDED_FOR")
    if forwarded_for:
        environ["REMOTE_ADDR"] = proxy.client_from(forwarded_for) or environ["REMOTE_ADDR"]


build_environ = build_environ_py
if native.ENABLED:
    try:
        from preforkd.native import _wsgienv
    except ImportError:  # not built: the reference serves
        pass
    else:
        # The C builder calls back into the helpers above for every rare step (a new
        # field name or Host, a non-origin-form target, a trusted proxy's fields), so
        # their rules live here only.
        build_environ = _wsgienv.bind(
            build_environ_py,
            Request,
            ConnectionInfo,
            _key_cache,
            _environ_key,
            _host_cache,
            _server_name_port,
            _split_target,
            _apply_proxy_headers,
        )


def default_script_name() -> str:
    """SCRIPT_NAME from the process environment (a mount prefix set by the operator)."""
    return os.environ.get("SCRIPT_NAME", "").rstrip("/")


__all__ = [
    "ConnectionInfo",
    "ErrorStream",
    "FileWrapper",
    "ProxyTrust",
    "build_environ",
    "build_environ_py",
    "default_script_name",
    "environ_template",
]
