"""A WSGI app made by a decorator that sets __wrapped__ to a one-argument view function,
as werkzeug's Request.application does: the app's own signature is (*args)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any


def _view(request: dict[str, Any]) -> bytes:
    return b"wrapped"


def as_wsgi(view: Callable[[dict[str, Any]], bytes]) -> Callable[..., list[bytes]]:
    @functools.wraps(view)
    def application(*args: Any) -> list[bytes]:
        environ, start_response = args[-2:]
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [view(environ)]

    return application


app = as_wsgi(_view)
