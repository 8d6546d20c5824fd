"""``preforkd top``: ``preforkd status``, live, refreshed every second.

Usage::

    preforkd top [--control-socket PATH | --pid PID] [--interval SECONDS]

Workers are sorted by load (requests in flight, then requests per second); a worker
whose oldest request is stuck (older than half of ``--request-timeout``, or 15 s when
there is no timeout) is shown in red. Keys: ``h`` reload (as SIGHUP), ``+`` one worker
more (TTIN), ``-`` one fewer (TTOU), ``q`` or Ctrl-C quit. It exits by itself, with
status 0, when the server stops.
"""

from __future__ import annotations

import os
import select
import shutil
import sys
import termios
import time
import tty
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import IO, Any

from preforkd.control import ControlClient, ControlError
from preforkd.status import chosen_sockets, parser, render

KEYS = {"h": "reload", "+": "ttin", "-": "ttou"}
HELP = "h reload (HUP) · + one worker more · - one fewer · q quit"
STUCK = ("\x1b[1;31m", "\x1b[0m")  # bold red
CLEAR = "\x1b[H\x1b[2J"
ALT_SCREEN_ON, ALT_SCREEN_OFF = "\x1b[?1049h\x1b[?25l", "\x1b[?25h\x1b[?1049l"


def main(argv: Sequence[str]) -> int:
    parse = parser("preforkd top", "Watch a running server's workers, live.")
    parse.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    args = parse.parse_args(argv)
    paths = chosen_sockets(args)
    if len(paths) != 1:
        found = ", ".join(str(p) for p in paths) or "none"
        print(f"preforkd top: choose one server with --pid or --control-socket (found: {found})",
              file=sys.stderr)  # fmt: skip
        return 1
    try:
        client = ControlClient(paths[0])
    except ControlError as exc:
        print(f"preforkd top: {exc}", file=sys.stderr)
        return 1
    with client:
        top = Top(client, sys.stdin, sys.stdout, max(0.1, args.interval))
        code = top.run()
    if top.farewell:
        print(top.farewell)
    return code


class Top:
    def __init__(self, client: ControlClient, keys: IO[str], out: IO[str], interval: float) -> None:
        self.client = client
        self.keys = keys
        self.out = out
        self.interval = interval
        self.message = ""
        self.farewell = ""  # printed once the terminal is restored

    def run(self) -> int:
        with _terminal(self.keys, self.out):
            try:
                while True:
                    try:
                        status = self.client.call("status")["status"]
                    except ControlError:
                        self.farewell = "preforkd top: the server has stopped"
                        return 0
                    self.draw(status)
                    if not self.wait_for_keys():
                        return 0
            except KeyboardInterrupt:
                return 0

    def draw(self, status: dict[str, Any]) -> None:
        status["workers"].sort(key=lambda w: (-w["in_flight"], -w["rps"], w["slot"]))
        width = shutil.get_terminal_size().columns
        lines = [_cut(line, width) for line in render(status, STUCK)]
        lines += ["", HELP, self.message]
        self.out.write(CLEAR + "\n".join(lines) + "\n")
        self.out.flush()

    def wait_for_keys(self) -> bool:
        """Handle keys until the next refresh; False once asked to quit."""
        deadline = time.monotonic() + self.interval
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([self.keys], [], [], left)
            if not ready:
                break
            key = os.read(self.keys.fileno(), 1).decode("ascii", "replace")
            if key in ("q", "Q", "\x03", ""):  # "" : end of input
                return False
            if key in KEYS:
                try:
                    self.client.call(KEYS[key])
                    self.message = f"sent {KEYS[key]} at {time.strftime('%H:%M:%S')}"
                except ControlError as exc:
                    self.message = str(exc)
                return True  # redraw at once to show its effect
        return True


def _cut(line: str, width: int) -> str:
    if line.startswith(STUCK[0]):
        return line[: width + len(STUCK[0])] + STUCK[1] if len(line) > width else line
    return line[:width]


@contextmanager
def _terminal(keys: IO[str], out: IO[str]) -> Iterator[None]:
    """Keys without Enter and no echo, on the alternate screen; restored on the way out."""
    if not keys.isatty():
        yield
        return
    saved = termios.tcgetattr(keys.fileno())
    tty.setcbreak(keys.fileno())
    out.write(ALT_SCREEN_ON)
    try:
        yield
    finally:
        out.write(ALT_SCREEN_OFF)
        out.flush()
        with suppress(termios.error):
            termios.tcsetattr(keys.fileno(), termios.TCSADRAIN, saved)
