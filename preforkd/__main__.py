"""``python -m preforkd``: the same as the ``preforkd`` command."""

from preforkd.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
