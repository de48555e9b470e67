"""``python -m hclstat``: the command-line interface (see :mod:`hclstat.cli`)."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
