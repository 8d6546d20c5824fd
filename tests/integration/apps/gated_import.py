"""probe's app behind an import that waits: the test sees the worker loading the app
(PFD_TEST_IMPORT_MARK is created) and decides when the import finishes (by creating
PFD_TEST_IMPORT_RELEASE; the import gives up waiting after 10 seconds)."""

from __future__ import annotations

import os
import time

from probe import app, application

__all__ = ["app", "application"]

_mark = os.environ.get("PFD_TEST_IMPORT_MARK")
_release = os.environ.get("PFD_TEST_IMPORT_RELEASE")
if _mark:
    with open(_mark, "w") as fh:
        fh.write(str(os.getpid()))
if _release:
    _deadline = time.monotonic() + 10
    while not os.path.exists(_release) and time.monotonic() < _deadline:
        time.sleep(0.01)
