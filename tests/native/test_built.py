"""The C accelerators are built in this install and used, unless PREFORKD_PURE_PYTHON=1.

A failed build only costs speed (setup.py marks the extensions optional), so nothing
else would notice one: these tests do. They skip only where no C compiler exists.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import types
from collections.abc import Callable
from typing import Any

import pytest

from preforkd import native
from preforkd.proto.events import Request
from preforkd.proto.h1_response import ResponseFramer, head_py
from preforkd.wsgi import environ
from preforkd.wsgi.environ import ConnectionInfo, ProxyTrust, environ_template

OURS = ("_h1frame", "_wsgienv")


def _compiler() -> str | None:
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    return shutil.which(cc)


@pytest.mark.parametrize("name", OURS)
def test_module_is_built(name: str) -> None:
    if importlib.util.find_spec(f"preforkd.native.{name}") is None:
        if _compiler() is None:
            pytest.skip("no C compiler: the pure-Python paths serve")
        pytest.fail(f"preforkd.native.{name} is not built; pip install -e . (see setup.py)")
    assert name in native._MODULES


def _python_calls(fn: Callable[[], Any]) -> set[types.CodeType]:
    """The Python functions run while fn runs (a C function's calls into Python too)."""
    seen: set[types.CodeType] = set()

    def profile(frame: types.FrameType, event: str, arg: Any) -> None:
        if event == "call":
            seen.add(frame.f_code)

    sys.setprofile(profile)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return seen


@pytest.mark.skipif(not native.ENABLED, reason="PREFORKD_PURE_PYTHON=1: the next test's case")
def test_accelerators_are_used_for_the_common_request() -> None:
    if _compiler() is None and not native.available():
        pytest.skip("no C compiler: the pure-Python paths serve")
    assert {"h1frame", "wsgienv"} <= set(native.available())
    assert environ.build_environ is not environ.build_environ_py
    assert ResponseFramer.head is not head_py
    # The keep-alive hello request of bench/h1_path.py, after one warm-up call for the
    # memo tables: neither reference runs.
    request = Request("GET", "/", "1.1", [("host", "127.0.0.1:18900"), ("user-agent", "wrk")])
    info = ConnectionInfo("127.0.0.1", "18900", "127.0.0.1", "40000", "http", True)
    template = environ_template(info)
    proxy = ProxyTrust(["127.0.0.1"])
    fields = [("Content-Type", "text/plain"), ("Content-Length", "13")]

    def one() -> None:
        built = environ.build_environ(request, info, None, proxy, template=template)
        assert built["PATH_INFO"] == "/" and built["SERVER_PORT"] == "18900"
        head = ResponseFramer(request, b"date").head("200 OK", fields)
        assert head.startswith(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n")

    one()
    called = _python_calls(one)
    assert environ.build_environ_py.__code__ not in called
    assert head_py.__code__ not in called
    assert not {c for c in called if c.co_filename == environ.__file__}


def test_pure_python_switch() -> None:
    # PREFORKD_PURE_PYTHON=1 selects the references at import, built or not.
    code = (
        "from preforkd import native\n"
        "from preforkd.wsgi import environ\n"
        "from preforkd.proto.h1_response import ResponseFramer, head_py\n"
        "assert not native.ENABLED and native.available() == []\n"
        "assert environ.build_environ is environ.build_environ_py\n"
        "assert ResponseFramer.head is head_py\n"
    )
    env = dict(os.environ, PREFORKD_PURE_PYTHON="1")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
