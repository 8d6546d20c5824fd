"""--reload: a file watcher in its own process, reporting changes to the master.

watchfiles runs a thread (its Rust notify backend), and the master must never have a
thread when it forks; so the watcher is a separate program, started with fork + exec::

    python -m preforkd.master.watcher --master PID --dir DIR ... [--app SPEC] [--file F]

It writes one line per batch of changes to its standard output, a pipe the master
reads like the workers' status pipe::

    watching ["/srv/app", "/srv/app/src/pkg"]     once its watches are in place
    changed ["/srv/app/views.py"]                  a debounced batch (one reload)

watchfiles groups changes until none has come for ``step`` ms (editors write a file in
several steps: temporary file, rename, chmod), so a save is one reload. The watcher
exits when the master goes away.

What is watched: ``--reload-dir`` directories, or by default the current directory (or
``--chdir``) and the directory of the application's top-level package, found without
importing it. In them, files whose name matches ``--reload-include`` (``*.py``), unless
a part of their path below the watched directory matches ``--reload-exclude`` (``.git``,
``__pycache__``, virtualenvs, ``*.pyc``, editor swap files...). The config file is
always watched, whatever its name.
"""

from __future__ import annotations

import argparse
import fnmatch
import importlib.machinery
import json
import logging
import os
import selectors
import signal
import sys
from collections.abc import Iterable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from preforkd.config import Config
from preforkd.master.signals import Command, LineReader

if TYPE_CHECKING:  # not imported at run time: the watcher process stays small
    from preforkd.master.process import Processes, ProgramSpec
    from preforkd.master.reload import Origin

log = logging.getLogger("preforkd.master")

DEBOUNCE_MS = 1600  # at most this long to group a burst of changes
STEP_MS = 50  # a batch ends after this long without a change
POLL_PARENT_MS = 250  # how often the watcher checks that the master is alive
MAX_RESTART_DELAY = 60.0  # a watcher that keeps dying is restarted at most this often


# --- the master's side ------------------------------------------------------------------


def watcher_program(
    cfg: Config, *, master_pid: int, cwd: str, environ: Mapping[str, str], stdout: int
) -> ProgramSpec:
    """How the master starts the watcher for ``cfg`` (its output goes to ``stdout``)."""
    from preforkd.master.process import ProgramSpec

    argv = [sys.executable, "-m", "preforkd.master.watcher", "--master", str(master_pid)]
    if cfg.reload_dirs:
        argv += [arg for d in cfg.reload_dirs for arg in ("--dir", d)]
    else:  # the current directory and the application's package
        argv += ["--dir", cfg.chdir or ".", "--app", cfg.app]
        argv += [f"--chdir={cfg.chdir}"] if cfg.chdir else []
        argv += [f"--pythonpath={entry}" for entry in cfg.pythonpath]
    argv += [f"--include={pattern}" for pattern in cfg.reload_include]
    argv += [f"--exclude={pattern}" for pattern in cfg.reload_exclude]
    argv += ["--file", cfg.config] if cfg.config else []
    return ProgramSpec(tuple(argv), environ, cwd, stdout=stdout, name="file watcher")


@dataclass(frozen=True)
class WatcherReport:
    kind: str  # "watching" or "changed"
    paths: tuple[str, ...]


def parse_report(line: bytes) -> WatcherReport | None:
    kind, _, payload = line.decode("utf-8", "replace").partition(" ")
    if kind not in ("watching", "changed"):
        return None
    try:
        paths = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(paths, list):
        return None
    return WatcherReport(kind, tuple(str(p) for p in paths))


def describe_paths(paths: Sequence[str], base: str, limit: int = 3) -> str:
    """'app.py, views/x.py and 2 more', relative to ``base`` where possible."""
    shown = [os.path.relpath(p, base) if p.startswith(base + os.sep) else p for p in paths]
    text = ", ".join(shown[:limit])
    return text + (f" and {len(shown) - limit} more" if len(shown) > limit else "")


class WatcherHandle:
    """The master's side of the watcher: start it, read its reports, restart it if it
    dies (after 1s, 2s, 4s... up to a minute), stop it."""

    def __init__(
        self, processes: Processes, selector: selectors.BaseSelector, master_pid: int
    ) -> None:
        self.processes = processes
        self.selector = selector
        self.master_pid = master_pid
        self.pid: int | None = None
        self.restart_at: float | None = None
        self._failures = 0
        self._reader: LineReader | None = None
        self._argv: tuple[str, ...] = ()
        self._base = ""

    def start(self, cfg: Config, origin: Origin) -> None:
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        env = dict(origin.environ)
        spec = watcher_program(
            cfg, master_pid=self.master_pid, cwd=origin.cwd, environ=env, stdout=write_fd
        )
        try:
            self.pid = self.processes.spawn(spec)
        except OSError as exc:
            os.close(read_fd)
            log.error("reload: cannot start the file watcher: %s", exc)
            self._schedule_restart()
            return
        finally:
            os.close(write_fd)
        self._argv, self._base = spec.argv, os.path.abspath(cfg.chdir or origin.cwd)
        self._reader = LineReader(read_fd)
        self.processes.private_fds.add(read_fd)
        self.selector.register(read_fd, selectors.EVENT_READ, self._read)
        log.debug("reload: file watcher started (pid %d)", self.pid)

    def update(self, cfg: Config, origin: Origin) -> None:
        """After a reload: restart the watcher if what it watches has changed."""
        spec = watcher_program(cfg, master_pid=self.master_pid, cwd=origin.cwd, environ={},
                               stdout=-1)  # fmt: skip
        if self.pid is not None and spec.argv != self._argv:
            self.stop()
            self.start(cfg, origin)

    def restart_if_due(self, cfg: Config, origin: Origin, now: float) -> None:
        if self.restart_at is not None and now >= self.restart_at:
            self.restart_at = None
            self.start(cfg, origin)

    def exited(self, pid: int, returncode: int, now: float) -> bool:
        """``pid`` was reaped: True if it was the watcher (then restart it later)."""
        if pid != self.pid:
            return False
        self.pid = None
        self._close_pipe()
        self._schedule_restart(now)
        log.warning(
            "reload: the file watcher (pid %d) exited with code %d; restarting it in %gs",
            pid, returncode, (self.restart_at or now) - now,
        )  # fmt: skip
        return True

    def stop(self) -> None:
        self.restart_at = None
        self._close_pipe()
        if self.pid is not None:
            self.processes.kill(self.pid, signal.SIGTERM)
            self.pid = None  # reaped later as an unknown child

    def _schedule_restart(self, now: float | None = None) -> None:
        self._failures += 1
        now = self.processes.monotonic() if now is None else now
        self.restart_at = now + min(2.0 ** (self._failures - 1), MAX_RESTART_DELAY)

    def _read(self) -> list[Command]:
        if self._reader is None:
            return []
        commands = []
        for line in self._reader.read_lines():
            report = parse_report(line)
            if report is None:
                log.warning("reload: unexpected line from the file watcher: %r", line)
            elif report.kind == "watching":
                self._failures = 0
                log.info("reload: watching %s", ", ".join(report.paths) or "nothing")
            else:
                commands.append(Command("changed", detail=describe_paths(report.paths, self._base)))
        if self._reader.eof:
            self._close_pipe()
        return commands

    def _close_pipe(self) -> None:
        if self._reader is None:
            return
        fd, self._reader = self._reader.fd, None
        with suppress(KeyError, ValueError):
            self.selector.unregister(fd)
        self.processes.private_fds.discard(fd)
        os.close(fd)


# --- the watcher process ----------------------------------------------------------------


class PathFilter:
    """watchfiles' filter: which changed paths matter."""

    def __init__(
        self, roots: Sequence[Path], include: Sequence[str], exclude: Sequence[str],
        files: Iterable[Path] = (),
    ) -> None:  # fmt: skip
        self.roots = tuple(roots)
        self.include = tuple(include)
        self.exclude = tuple(exclude)
        self.files = {str(f) for f in files}

    def __call__(self, change: object, path: str) -> bool:
        if path in self.files:
            return True
        relative = self._relative(Path(path))
        if relative is None:
            return False
        if any(
            fnmatch.fnmatch(part, pattern) for part in relative.parts for pattern in self.exclude
        ):
            return False
        return any(fnmatch.fnmatch(relative.name, pattern) for pattern in self.include)

    def _relative(self, path: Path) -> Path | None:
        for root in self.roots:
            if path.is_relative_to(root):
                return path.relative_to(root)
        return None


def app_package_dir(app: str, search: Sequence[str]) -> Path | None:
    """The directory of the app's top-level package (or module), found without
    importing anything; None if it is not found, or is part of the Python installation
    (standard library, site-packages): not worth watching."""
    top = app.partition(":")[0].strip().split(".")[0]
    if not top.isidentifier():
        return None
    spec = importlib.machinery.PathFinder.find_spec(top, list(search))
    if spec is None:
        return None
    if spec.submodule_search_locations:
        directory = Path(next(iter(spec.submodule_search_locations))).resolve()
    elif spec.origin:
        directory = Path(spec.origin).resolve().parent
    else:
        return None
    prefixes = {Path(p).resolve() for p in (sys.prefix, sys.base_prefix)}
    if any(directory.is_relative_to(prefix) for prefix in prefixes):
        return None
    return directory


def watch_roots(dirs: Sequence[str], app_dir: Path | None, files: Sequence[Path]) -> list[Path]:
    """Directories to watch, none inside another."""
    wanted = [Path(d).resolve() for d in dirs]
    if app_dir is not None:
        wanted.append(app_dir)
    wanted += [f.parent for f in files]
    roots: list[Path] = []
    for path in sorted(set(wanted), key=lambda p: (len(p.parts), str(p))):
        if not any(path.is_relative_to(root) for root in roots):
            roots.append(path)
    return roots


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m preforkd.master.watcher")
    parser.add_argument("--master", type=int, required=True)
    parser.add_argument("--dir", action="append", default=[])
    parser.add_argument("--include", action="append", default=[])
    parser.add_argument("--exclude", action="append", default=[])
    parser.add_argument("--file", action="append", default=[])
    parser.add_argument("--app")
    parser.add_argument("--chdir")
    parser.add_argument("--pythonpath", action="append", default=[])
    return parser.parse_args(argv)


def _report(kind: str, paths: Iterable[object]) -> None:
    sys.stdout.write(f"{kind} {json.dumps(sorted(str(p) for p in paths))}\n")
    sys.stdout.flush()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        from setproctitle import setproctitle

        setproctitle(f"preforkd: watcher [{args.app or ''}]")
    except ImportError:  # pragma: no cover - a declared dependency
        pass
    import watchfiles

    files = [Path(f).resolve() for f in args.file]
    search = [os.path.abspath(p) for p in args.pythonpath] + [os.path.abspath(args.chdir or ".")]
    app_dir = app_package_dir(args.app, [*search, *sys.path]) if args.app else None
    roots = [r for r in watch_roots(args.dir, app_dir, files) if r.is_dir()]
    watch_filter = PathFilter(roots, args.include, args.exclude, files)
    announced = False
    try:
        for changes in watchfiles.watch(
            *roots, watch_filter=watch_filter, debounce=DEBOUNCE_MS, step=STEP_MS,
            rust_timeout=POLL_PARENT_MS, yield_on_timeout=True, raise_interrupt=False,
        ):  # fmt: skip
            if not announced:  # only now are the watches in place
                _report("watching", roots)
                announced = True
            if os.getppid() != args.master:
                return 0
            if changes:
                _report("changed", {path for _, path in changes})
    except BrokenPipeError:  # the master is gone
        return 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
