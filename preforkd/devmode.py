"""Development mode: what ``--dev`` expands to, and the pages shown when the app is broken.

With ``--reload`` a worker that cannot load the application does not exit: it serves
:func:`load_error_app`, a 500 whose body is the error and its traceback, so that the
browser shows what broke and the next good edit (a reload) recovers. An exception the
application raises while handling a request is shown the same way
(:func:`show_tracebacks`), to loopback clients only. Only in reload mode: a production
server never shows a traceback to its clients.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import re
import sys
import traceback
from collections.abc import Callable, Iterable
from typing import Any

from preforkd.config import Config
from preforkd.errors import AppLoadError

_DEFAULTS = Config()
_FRAME = re.compile(r'^  File "([^"]+)", line (\d+)', re.MULTILINE)
_SYNTAX = re.compile(r"\((.+), line (\d+)\)$")


def apply_dev(cfg: Config) -> Config:
    """``--dev``: --reload, plus one worker, debug logging and the access log on stdout
    wherever those settings still have their defaults."""
    if not cfg.dev:
        return cfg
    changes: dict[str, Any] = {"reload": True}
    if cfg.log_level == _DEFAULTS.log_level:
        changes["log_level"] = "debug"
    if cfg.access_logfile is None:
        changes["access_logfile"] = "-"
    return dataclasses.replace(cfg, **changes)


def error_location(exc: AppLoadError) -> str | None:
    """'path/app.py:12': where the application broke, from its traceback or message."""
    frames = _FRAME.findall(exc.details)
    if frames:
        path, line = frames[-1]
        return f"{path}:{line}"
    match = _SYNTAX.search(str(exc))
    return f"{match[1]}:{match[2]}" if match else None


def load_error_app(exc: AppLoadError) -> Callable[..., Iterable[bytes]]:
    """A WSGI app answering every request with 500 and the load error."""
    where = error_location(exc)
    text = "preforkd: the application failed to load"
    text += f" ({where})" if where else ""
    text += f"\n\n{exc}\n"
    if exc.details:
        text += f"\n{exc.details.rstrip()}\n"
    text += "\nFix the code: the server reloads when you save.\n"
    body = text.encode("utf-8", "replace")

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        start_response(
            "500 Internal Server Error",
            [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))],
        )
        return [body]

    return app


def _is_loopback(address: str) -> bool:
    """127.0.0.0/8, ::1, or a UNIX socket (no address): a client on this machine."""
    if not address:
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def show_tracebacks(app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
    """Wrap ``app`` so that an exception it raises when called is answered, to a loopback
    client, with a 500 showing the traceback (and still logged). Other clients get the
    server's usual 500. Exceptions raised while the response is iterated are handled by
    the server as always (the head may already be on its way)."""
    log = logging.getLogger("preforkd.app")

    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        try:
            return app(environ, start_response)
        except Exception:
            if not _is_loopback(environ.get("REMOTE_ADDR", "")):
                raise
            text = traceback.format_exc()
            log.error("Error handling request %s %s\n%s", environ.get("REQUEST_METHOD"),
                      environ.get("PATH_INFO"), text.rstrip())  # fmt: skip
            body = (
                f"preforkd (development mode): the application raised an exception\n\n{text}"
                "\nShown only to clients on this machine, and only with --reload or --dev.\n"
            ).encode("utf-8", "replace")
            start_response(
                "500 Internal Server Error",
                [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))],
                sys.exc_info(),
            )
            return [body]

    return wrapped
