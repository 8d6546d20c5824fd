"""Re-reading the configuration on reload (HUP, or a change seen by the file watcher).

The master keeps how it was started (:class:`Origin`: the command-line arguments, a
copy of the environment, the working directory) and builds a new Config from them with
:func:`preforkd.settings.load_config`, exactly as at start-up: the config file is read
again, the environment and the command line are the original ones.

Some settings are fixed for the life of the master, because they were applied before
the first fork and the workers inherit their effect (:data:`FIXED_SETTINGS`). A reload
that changes one logs a warning naming it and keeps the running value; a restart, or an
upgrade with USR2 (a new master reads everything afresh), applies it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from preforkd.config import Config
from preforkd.devmode import apply_dev
from preforkd.errors import ConfigError

log = logging.getLogger("preforkd.master")

# Setting -> why it cannot change without a new master.
FIXED_SETTINGS: dict[str, str] = {
    "binds": "the listening sockets are bound once",
    "backlog": "the listening sockets are bound once",
    "user": "workers are started by the master's user",
    "group": "workers are started by the master's group",
    "umask": "it is set in the master",
    "pidfile": "the master wrote it at start",
    "preload": "the master loads the application only at start",
    "reload": "the file watcher is started with the master",
    "dev": "the file watcher is started with the master",
}
_LISTED_CHANGES = 8  # changed settings shown in the log line of a reload


@dataclass(frozen=True)
class Origin:
    """How this master was started: what a reload re-reads and USR2 re-executes."""

    argv: tuple[str, ...]  # without the program name
    environ: Mapping[str, str]  # a copy, taken at start (PREFORKD_INTERNAL_* removed)
    cwd: str  # the working directory at start: relative paths in argv are relative to it


def reread_config(origin: Origin, current: Config, why: str) -> Config | None:
    """The configuration as it is now, or None (errors logged) to keep ``current``."""
    from preforkd.settings import EarlyExit, load_config

    here = os.getcwd()  # --preload --chdir moved the master
    try:
        os.chdir(origin.cwd)
        new = load_config(origin.argv, origin.environ)
    except ConfigError as exc:
        log.error("%s: the configuration has errors; keeping the current one:\n%s", why, exc)
        return None
    except (EarlyExit, OSError) as exc:
        log.error("%s: cannot read the configuration (%s); keeping the current one", why, exc)
        return None
    finally:
        os.chdir(here)
    new = apply_dev(new)
    if problems := tls_problems(new):
        # A renewal written half-way, or a key that does not match: the new generation
        # would fail to boot on it. Keep serving the certificate loaded before.
        log.error("%s: %s; keeping the current configuration and certificate", why, problems)
        return None
    kept = fixed_changes(current, new, why)
    new = dataclasses.replace(new, **kept)
    log_changes(current, new, why)
    return new


def tls_problems(cfg: Config) -> str:
    """Why the certificate files of ``cfg`` cannot be served (empty: they can).

    A reload re-reads them here, in the master, the same way each new worker will: that
    is how renewed certificates are served without a restart (HUP after the renewal)."""
    from preforkd.worker.tls import check_tls_settings

    return "; ".join(check_tls_settings(cfg))


def fixed_changes(current: Config, new: Config, why: str) -> dict[str, Any]:
    """The fixed settings ``new`` changes, with their current values; each is logged."""
    kept: dict[str, Any] = {}
    for name, reason in FIXED_SETTINGS.items():
        old, value = getattr(current, name), getattr(new, name)
        if old != value:
            log.warning(
                "%s: %s cannot change on reload (%s): keeping %s, ignoring %s; "
                "restart, or upgrade with USR2, to apply it",
                why,
                _label(name),
                reason,
                _show(name, old),
                _show(name, value),
            )
            kept[name] = old
    return kept


def log_changes(current: Config, new: Config, why: str) -> None:
    changes = [
        f"{_label(f.name)} {_show(f.name, getattr(current, f.name))} -> "
        f"{_show(f.name, getattr(new, f.name))}"
        for f in dataclasses.fields(Config)
        if getattr(current, f.name) != getattr(new, f.name)
    ]
    if not changes:
        log.info("%s: configuration unchanged; reloading the application", why)
        return
    more = len(changes) - _LISTED_CHANGES
    listed = ", ".join(changes[:_LISTED_CHANGES]) + (f" and {more} more" if more > 0 else "")
    log.info("%s: new configuration: %s", why, listed)


def _label(name: str) -> str:
    from preforkd.settings import SPECS

    return next((spec.label for spec in SPECS if spec.name == name), name)


def _show(name: str, value: Any) -> str:
    from preforkd.settings import SPECS, show_value

    spec = next((spec for spec in SPECS if spec.name == name), None)
    text = show_value(spec, value) if spec is not None else str(value)
    return repr(text) if text else "(none)"


def apply_logging(current: Config, new: Config) -> None:
    """Switch the master's error log to the new file or level, if they changed."""
    if (new.error_logfile, new.log_level) == (current.error_logfile, current.log_level):
        return
    from preforkd.logs import setup_error_log

    try:
        setup_error_log(new)
    except OSError as exc:
        log.error("cannot open the new error log %s: %s", new.error_logfile, exc)
