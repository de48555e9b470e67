"""``python -m hclstat``: the command-line interface (see :mod:`hclstat.cli`)."""

from .cli import main

raise SystemExit(main())
