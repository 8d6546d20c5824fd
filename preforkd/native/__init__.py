"""Optional compiled accelerators for the per-request hot path (issue 12).

Each C module here is a drop-in for a pure-Python function that stays in the package and
stays the reference: the tests run both and compare them (``tests/native/``). A module is
built by ``pip install`` when a C compiler and the Python headers are there (``setup.py``
marks the extensions optional: a failed build only costs speed) and is used unless the
environment says ``PREFORKD_PURE_PYTHON=1`` when preforkd starts.

Modules (each ``_name.c`` with its ``_name.pyi`` stub, and its name in ``_MODULES``):

* ``_h1head``: parses a complete, plain HTTP/1.1 request head (no chunked body, upgrade
  or expectation) in one call, where llhttp calls back into Python for each field. It
  takes only a subset of what llhttp accepts and declines the rest, which
  ``proto/h1.py`` then hands to llhttp as before.
* ``_wsgienv``: :func:`preforkd.wsgi.environ.build_environ`. ``bind(reference, ...)``
  returns a builtin with the same signature that builds the environ of a request of the
  usual shape (a template, a list of str field pairs) and calls the Python helpers of
  ``wsgi/environ.py`` for the rare steps (a new field name or Host, a target that is not
  plain origin-form, a trusted proxy's fields), so their rules live in one place; any
  other shape goes to ``build_environ_py`` whole.
* ``_h1frame``: :meth:`preforkd.proto.h1_response.ResponseFramer.head`. ``bind_head``
  returns a method that writes the status line and header section of a plainly valid
  response; everything else, and every error, goes to ``head_py`` (which raises the
  ``LocalProtocolError`` the caller expects).

``_wsgienv`` and ``_h1frame`` read and write the ``__slots__`` of ``Request`` and
``ResponseFramer`` directly, at offsets found once when bound (after checking that the
classes do not customise attribute access), and take only instances of exactly those
classes.

A consumer imports what it needs only when :data:`ENABLED`, and treats ``ImportError`` as
"not built"::

    parse_head = None
    if native.ENABLED:
        with contextlib.suppress(ImportError):
            from preforkd.native._h1head import parse_head
"""

from __future__ import annotations

import os

PURE_PYTHON_ENV = "PREFORKD_PURE_PYTHON"
# Read once, at import: a worker inherits the choice of the master that forked it.
ENABLED = os.environ.get(PURE_PYTHON_ENV, "") in ("", "0")

_MODULES: tuple[str, ...] = ("_h1head", "_h1frame", "_wsgienv")


def available() -> list[str]:
    """The accelerators this process uses (for the start-up log and ``preforkd --version``)."""
    if not ENABLED:
        return []
    found = []
    for name in _MODULES:
        try:
            __import__(f"{__name__}.{name}")
        except ImportError:
            continue
        found.append(name.lstrip("_"))
    return found
