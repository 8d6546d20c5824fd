"""Exceptions and process exit codes shared by every layer.

This module is the bottom of the dependency graph: it imports nothing from preforkd.
"""

from __future__ import annotations

# Exit codes of the master process. A supervisor (systemd, Kubernetes) can tell a
# configuration mistake from a broken application from a crash by these.
EXIT_OK = 0
EXIT_FAILURE = 1  # unexpected error in the master itself
EXIT_CONFIG_ERROR = 2  # bad flag, setting, value or config file (argparse uses 2 as well)
EXIT_BIND_ERROR = 3  # a listener could not be bound or inherited
EXIT_APP_LOAD_ERROR = 4  # the WSGI application could not be imported or found
EXIT_WORKER_BOOT_ERROR = 5  # a worker failed to start for a reason other than the app
EXIT_CRASH_LOOP = 6  # --max-boot-failures workers in a row died before they were ready

# Exit codes of worker processes, read by the master when it reaps them.
WORKER_EXIT_OK = 0
WORKER_EXIT_APP_LOAD_ERROR = EXIT_APP_LOAD_ERROR
WORKER_EXIT_BOOT_ERROR = EXIT_WORKER_BOOT_ERROR


class PreforkdError(Exception):
    """Base class of every error preforkd raises on purpose."""


class ConfigError(PreforkdError):
    """One or more settings are invalid; the message lists all of them."""


class BindError(PreforkdError):
    """A listener address could not be bound, parsed or inherited."""


class AppLoadError(PreforkdError):
    """The WSGI application could not be loaded; ``details`` holds the traceback text."""

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(message)
        self.details = details


class ProtocolError(PreforkdError):
    """A protocol rule was broken. ``status`` is the HTTP status to answer with, if any."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol: answer ``status`` (when still possible) and close."""


class LocalProtocolError(ProtocolError):
    """We (the application, through the server) tried to break the protocol."""


class ClientDisconnected(OSError):
    """The client went away (or sent a short body): raised in the app's thread on read/write."""


class BadRequestBody(ClientDisconnected):
    """The request body broke the protocol (bad chunk size, missing CRLF, ...): raised in the
    app's thread on read, like a disconnect, but logged as what it is and answered with
    ``status`` (400) when the app has not answered yet."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status
