"""The ``preforkd`` command: load the configuration, set up logging, run the master."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence

from preforkd import errors, logs
from preforkd.settings import EarlyExit, load_config


def _fail(message: str) -> int:
    for line in message.splitlines() or [""]:
        print(f"preforkd: error: {line}", file=sys.stderr)
    return errors.EXIT_CONFIG_ERROR


# Subcommands: the first argument names one; anything else is an app to serve.
# An app module named like one is served as MODULE:ATTRIBUTE (``preforkd top:application``).
SUBCOMMANDS = {
    "check": "preforkd.check:main",
    "status": "preforkd.status:main",
    "top": "preforkd.top:main",
}


def _subcommand(argv: Sequence[str]) -> int | None:
    if not argv or argv[0] not in SUBCOMMANDS:
        return None
    import importlib

    module, _, function = SUBCOMMANDS[argv[0]].partition(":")
    run: Callable[[Sequence[str]], int] = getattr(importlib.import_module(module), function)
    return run(argv[1:])


def main(argv: Sequence[str] | None = None) -> int:
    """Run preforkd with ``argv`` (default: ``sys.argv[1:]``); returns the exit code.

    Usable as ``sys.exit(main())``. Configuration problems are all reported on standard
    error, one ``preforkd: error:`` line each, with exit code EXIT_CONFIG_ERROR.
    """
    args = sys.argv[1:] if argv is None else argv
    if (code := _subcommand(args)) is not None:
        return code
    try:
        cfg = load_config(argv)
    except EarlyExit as early:  # --help, --version
        try:
            print(early.text.rstrip("\n"), flush=True)
        except BrokenPipeError:  # e.g. `preforkd --help | head`: the reader is gone
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return errors.EXIT_OK
    except errors.ConfigError as exc:
        return _fail(str(exc))
    try:
        logs.setup_error_log(cfg)
    except OSError as exc:
        return _fail(f"--error-logfile: cannot open {cfg.error_logfile!r}: {exc.strerror}")

    from preforkd.master.main import run  # imported late: --help must stay fast

    return run(cfg)
