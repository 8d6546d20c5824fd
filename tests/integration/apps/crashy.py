"""probe's app, whose import fails once the file named by PFD_TEST_CRASH_MARKER exists:
workers booted after the test creates it die before they are ready (a crash loop)."""

from __future__ import annotations

import os

from probe import app, application

__all__ = ["app", "application"]

_marker = os.environ.get("PFD_TEST_CRASH_MARKER")
if _marker and os.path.exists(_marker):
    raise RuntimeError(f"crashy: cannot start while {_marker} exists")
