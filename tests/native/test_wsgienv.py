"""The C build_environ (preforkd.native._wsgienv) against the Python reference.

Every case runs both and compares the environs item by item, order included, or the
exceptions. The C builder is bound here with a counting fallback, so each hand-written
case also states whether C takes it or hands it to the reference: a branch of the C
code that a case claims to cover is really run. The tests run whether or not
PREFORKD_PURE_PYTHON is set; they need the module built (test_built.py says why not).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any, NamedTuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from preforkd.proto.events import Request
from preforkd.wsgi import environ as env_mod
from preforkd.wsgi.environ import ConnectionInfo, ProxyTrust, build_environ_py, environ_template

_wsgienv = pytest.importorskip("preforkd.native._wsgienv", reason="C accelerators not built")

CONN = ConnectionInfo("127.0.0.1", "8000", "10.1.2.3", "50000", "http", False)
PROXIED = ConnectionInfo("127.0.0.1", "8000", "127.0.0.1", "50000", "http", True)
TLS = ConnectionInfo("example.org", "443", "10.1.2.3", "50000", "https", False)
PROXY = ProxyTrust(["127.0.0.1"])
INPUT = io.BytesIO()


class Counted:
    """The reference, counting the calls the C builder hands over."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        self.calls += 1
        return build_environ_py(*args, **kwargs)


def bind(fallback: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    return _wsgienv.bind(
        fallback,
        Request,
        ConnectionInfo,
        env_mod._key_cache,
        env_mod._environ_key,
        env_mod._host_cache,
        env_mod._server_name_port,
        env_mod._split_target,
        env_mod._apply_proxy_headers,
    )


def outcome(fn: Callable[[], dict[str, Any]]) -> Any:
    try:
        return ("ok", list(fn().items()))
    except Exception as exc:
        return ("raised", type(exc), str(exc))


def compare(
    request: Any,
    conn: Any = CONN,
    *,
    fast: bool | None = True,
    script_name: str = "",
    clear_caches: bool = False,
    kwargs: dict[str, Any] | None = None,
    proxy: Any = PROXY,
) -> list[tuple[str, Any]]:
    """Both builders on the same input; ``fast``: whether C must take it (None: either).
    ``kwargs``: build_environ's keyword arguments (default: the template, as the workers
    call it)."""
    info = conn if isinstance(conn, ConnectionInfo) else CONN
    if kwargs is None:
        kwargs = {"template": environ_template(info, script_name=script_name)}
    counted = Counted()
    c_build = bind(counted)
    if clear_caches:  # the C builder's cache-miss paths call the Python helpers
        env_mod._key_cache.clear()
        env_mod._host_cache.clear()
    got = outcome(lambda: c_build(request, conn, INPUT, proxy, **kwargs))
    want = outcome(lambda: build_environ_py(request, conn, INPUT, proxy, **kwargs))
    assert got == want
    if fast is not None:
        assert counted.calls == (0 if fast else 1)
    return got[1] if got[0] == "ok" else []


def req(target: str = "/", headers: Any = None, method: str = "GET", version: str = "1.1") -> Any:
    return Request(method, target, version, [("host", "h")] if headers is None else headers)


@pytest.mark.parametrize("clear_caches", [True, False])
@pytest.mark.parametrize(
    "headers",
    [
        [],
        [("host", "example.com"), ("user-agent", "wrk")],
        [("accept", "a"), ("accept", "b"), ("accept", "c")],  # RFC 9110 §5.3
        [("cookie", "x=1"), ("cookie", "y=2")],  # RFC 6265 §5.4
        [("content-type", "text/plain"), ("content-length", "3")],
        [("content-type", "a"), ("content-type", "b")],
        [("x_forwarded_for", "6.6.6.6"), ("x-real", "1"), ("x_forwarded_for", "7")],
        [("x-a", ""), ("x-a", "")],
        [("x-latin", "caf\xe9"), ("x-wide", "\u20ac")],
        [("Mixed-Case", "v")],  # what the cores never give, but the rules still apply
        [("x-\xe9", "v")],  # a non-ASCII name: str.upper()'s rules, via _environ_key
    ],
)
def test_fields(headers: list[tuple[str, str]], clear_caches: bool) -> None:
    compare(req(headers=headers), clear_caches=clear_caches)


@pytest.mark.parametrize(
    ("target", "fast"),
    [
        ("/", True),
        ("/a/b?x=1&y=%20", True),
        ("/?", True),
        ("/p?x=1?y=2", True),
        ("/caf%C3%A9/a%2Fb", True),
        ("/caf%c3%a9", True),
        ("/%", True),
        ("/%4", True),
        ("/a%2", True),
        ("/%zz%4g%g4", True),
        ("/%%41", True),
        ("/%00%FF", True),
        ("/" + "%41" * 400, True),  # longer than the C decoder's stack buffer
        ("/" + "a" * 600 + "%20", True),
        ("/caf\xe9", True),  # non-ASCII, nothing to decode
        ("/caf\xe9%20", False),  # unquote_to_bytes encodes it as UTF-8: the reference's
        ("/a#frag", True),  # not origin-form as C takes it: _split_target decides
        ("http://other.example:81/p?q=1", True),  # RFC 9112 §3.2.2: replaces Host
        ("http://h", True),
        ("http://h?q", True),
        ("*", True),
        ("", True),
    ],
)
def test_targets(target: str, fast: bool) -> None:
    compare(req(target), fast=fast)


@pytest.mark.parametrize(
    ("script_name", "target"),
    [
        ("/app", "/app/page"),
        ("/app", "/app"),
        ("/app", "/app/"),
        ("/app", "/application"),
        ("/app", "/ap"),
        ("/app", "/"),
        ("/app", "/%61pp/x"),  # compared after decoding, as the reference does
        ("/caf\xe9", "/caf\xe9/x"),
    ],
)
def test_script_name(script_name: str, target: str) -> None:
    compare(req(target), script_name=script_name)


@pytest.mark.parametrize("clear_caches", [True, False])
@pytest.mark.parametrize("conn", [CONN, TLS])
@pytest.mark.parametrize(
    "host", ["h", "h:8000", "h:", "[::1]:8000", "[::1]", "[::1", "", "a:b:c", "caf\xe9"]
)
def test_host(host: str, conn: ConnectionInfo, clear_caches: bool) -> None:
    compare(req(headers=[("host", host)]), conn, clear_caches=clear_caches)
    compare(req(headers=[("host", host)]), conn)  # the cached answer


@pytest.mark.parametrize("conn", [CONN, PROXIED])
@pytest.mark.parametrize(
    "headers",
    [
        [("host", "h")],
        [("host", "h"), ("x-forwarded-for", "6.6.6.6, 1.1.1.1, 127.0.0.1")],
        [("host", "h"), ("x-forwarded-proto", "https")],
        [("x-forwarded-proto", "ftp"), ("x-forwarded-for", "")],
    ],
)
def test_proxy(headers: list[tuple[str, str]], conn: ConnectionInfo) -> None:
    compare(req(headers=headers), conn)


def test_an_error_in_a_python_helper_propagates() -> None:
    # The C builder calls _apply_proxy_headers, which fails on this proxy object: the
    # same exception as the reference's, raised from the C path (no second attempt).
    headers = [("x-forwarded-for", "1.1.1.1")]
    assert compare(req(headers=headers), PROXIED, proxy=None) == []


@pytest.mark.parametrize(("method", "version"), [("GET", "1.0"), ("HEAD", "1.1"), ("X", "2")])
def test_method_and_version(method: str, version: str) -> None:
    compare(req(method=method, version=version))


def test_template_keys_from_the_connection() -> None:
    # A per-connection key that a field also maps to is joined like a repeat.
    conn = CONN._replace(extra={"HTTP_X_A": "tls", "SSL_CLIENT_S_DN": "cn"})
    compare(req(headers=[("x-a", "field")]), conn)


class Str(str):
    pass


class OtherRequest(Request):
    pass


class OtherConn(NamedTuple):
    server_name: str
    server_port: str
    remote_addr: str
    remote_port: str
    url_scheme: str
    from_trusted_proxy: bool
    extra: dict[str, str] | None = None


@pytest.mark.parametrize(
    "request_",
    [
        req(headers=[(Str("x-a"), "v")]),
        req(headers=[("x-a", Str("v"))]),
        req(headers=[["x-a", "v"]]),
        req(headers=[("x-a", "v", "w")]),
        req(headers=(("x-a", "v"),)),
        req(headers=[("x-a", 1)]),
        req(headers=[("x-a", 1), ("x-a", 2)]),
        req(headers=[(1, "v")]),
        req(headers=[(["unhashable"], "v")]),
        req(Str("/a")),
        req(version=Str("1.1")),
        Request("GET", "/", 1.1, []),  # type: ignore[arg-type]
        Request("GET", b"/", "1.1", []),  # type: ignore[arg-type]
        OtherRequest("GET", "/", "1.1", [("x-a", "v")]),
        object(),
    ],
)
def test_other_shapes_go_to_the_reference(request_: Any) -> None:
    compare(request_, fast=False)


def test_field_loop_shapes_found_midway_go_to_the_reference() -> None:
    # The C builder starts, then meets a field it does not take: nothing of its partial
    # environ leaks, the reference builds the whole.
    compare(req(headers=[("x-a", "v"), ("x-b", Str("w"))]), fast=False)


@pytest.mark.parametrize(
    "conn",
    [
        OtherConn("127.0.0.1", "8000", "", "", "http", False),
        CONN._replace(from_trusted_proxy=1),  # type: ignore[arg-type]
        ("127.0.0.1", "8000", "", "", "http", False),
    ],
)
def test_other_connections_go_to_the_reference(conn: Any) -> None:
    compare(req(), conn, fast=False)


def test_other_arguments_go_to_the_reference() -> None:
    compare(req(), fast=False, kwargs={"multithread": False})  # no template: the reference's
    compare(req(), fast=False, kwargs={"template": environ_template(CONN), "script_name": "/x"})
    compare(req(), fast=False, kwargs={"template": type("D", (dict,), {})(environ_template(CONN))})
    compare(req(), fast=False, kwargs={"template": None})
    counted = Counted()
    c_build = bind(counted)
    with pytest.raises(TypeError):
        c_build(req(), CONN, INPUT)
    assert counted.calls == 1


def test_template_without_the_keys_the_reference_reads() -> None:
    template = environ_template(CONN)
    del template["SCRIPT_NAME"]
    compare(req(), fast=False, kwargs={"template": template})
    template = environ_template(CONN)
    del template["wsgi.url_scheme"]
    compare(req(), fast=False, kwargs={"template": template})
    compare(req(headers=[]), fast=True, kwargs={"template": template})  # no Host: not read


# -- generated ----------------------------------------------------------------------------

_NAME_CHARS = "abcxyz-_" + "ABC" + "\xe9"
names = st.one_of(
    st.sampled_from(
        [
            "host",
            "cookie",
            "accept",
            "content-type",
            "content-length",
            "x-forwarded-for",
            "x-forwarded-proto",
            "x_forwarded_for",
        ]
    ),
    st.text(_NAME_CHARS, min_size=1, max_size=8),
)
values = st.text(st.characters(max_codepoint=0x17F, exclude_categories=("Cs",)), max_size=12)
targets = st.one_of(
    st.text("/ab%?#:2AfgZ\xe9", max_size=16).map(lambda t: "/" + t),
    st.text("/ab%?#:2AfgZ\xe9", max_size=16),
    st.sampled_from(["http://h:81/p?q", "http://[::1]/x", "*"]),
)
hosts = st.text("ab:[]1.\xe9", max_size=8)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    fields=st.lists(st.tuples(names, values), max_size=8),
    host=st.none() | hosts,
    target=targets,
    method=st.sampled_from(["GET", "HEAD", "POST"]),
    version=st.sampled_from(["1.0", "1.1", "2"]),
    conn=st.sampled_from([CONN, PROXIED, TLS]),
    script_name=st.sampled_from(["", "/a", "/ab", "/%61"]),
    clear_caches=st.booleans(),
)
def test_generated(
    fields: list[tuple[str, str]],
    host: str | None,
    target: str,
    method: str,
    version: str,
    conn: ConnectionInfo,
    script_name: str,
    clear_caches: bool,
) -> None:
    headers = fields if host is None else [("host", host), *fields]
    compare(
        Request(method, target, version, headers),
        conn,
        fast=None,
        script_name=script_name,
        clear_caches=clear_caches,
    )
