"""Answers with what it was asked, as JSON: the request as the app sees it."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    seen = {k: v for k, v in environ.items() if k.isupper() and isinstance(v, str)}
    seen.pop("REMOTE_PORT", None)  # differs per connection
    seen.pop("SERVER_PORT", None) if "HTTP_HOST" not in environ else None
    seen["body"] = environ["wsgi.input"].read().decode("latin-1")
    body = json.dumps(seen, sort_keys=True).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]
