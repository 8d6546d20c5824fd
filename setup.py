"""Build hook for the optional C accelerators; everything else is in pyproject.toml.

Each ``preforkd/native/_NAME.c`` becomes the extension ``preforkd.native._NAME``. They are
optional (``optional=True``): without a C compiler or the Python headers the build warns
and the package installs with its pure-Python paths, which are the reference anyway. Set
``PREFORKD_PURE_PYTHON=1`` to skip building them.
"""

import os
from pathlib import Path

from setuptools import Extension, setup

HERE = Path(__file__).parent

extensions = (
    []
    if os.environ.get("PREFORKD_PURE_PYTHON", "") not in ("", "0")
    else [
        Extension(
            f"preforkd.native.{source.stem}",
            [source.relative_to(HERE).as_posix()],
            depends=["preforkd/native/_common.h"],
            optional=True,
            extra_compile_args=["-O2"],
        )
        for source in sorted((HERE / "preforkd" / "native").glob("_*.c"))
    ]
)

setup(ext_modules=extensions)
