"""An application factory: `factory:create_app()` and `factory:create_app('greeting')`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def create_app(greeting: str = "factory") -> Callable[..., Any]:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [greeting.encode()]

    return app
