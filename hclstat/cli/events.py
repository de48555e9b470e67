"""``hclstat events``: a long-format event table to one wide modality table (:mod:`hclstat.io.events`)."""

from __future__ import annotations

import argparse

from . import shared
from .base import EXIT_OK, UsageError, add_common, add_output

EPILOG = """\
example (NAFLD labs, everything in the two years before the index date):
  hclstat events labs_long.csv --kind numeric --window -730 0 \\
                 --summaries last,mean,count --out labs
  hclstat fit --view labs=labs/features.csv --id id ...
  hclstat events dx_long.csv --kind events --window none 0 --out dx

times are numbers relative to each subject's index time (e.g. days; negative
before it); rows with START <= time < END are summarised, END <= 0.

output (built in a temporary directory beside DIR, moved into place on success):
  features.csv   subject x {variable}_{summary}
  run.json       version, command line
"""


def _number(text):
    if text.strip().lower() in ("none", "-inf"):  # no lower limit ("-inf" alone would read as an option)
        return float("-inf")
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number (or none: no lower limit), got {text!r}") from None


def add_parser(sub):
    p = sub.add_parser("events", help="turn a long-format event table into a wide modality table",
                       description="Summarise a long table (subject, time, variable[, value]) over a window "
                                   "before each subject's index time: numeric variables (last, mean, min, max, "
                                   "count, slope) or events (ever, count). Absent values stay empty.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("table", help="long-format table (CSV, TSV or Parquet)")
    p.add_argument("--kind", choices=("numeric", "events"), required=True,
                   help="numeric: a value column summarised per variable; events: rows are events")
    p.add_argument("--window", nargs=2, type=_number, metavar=("START", "END"), default=None,
                   help="rows with START <= time < END relative to the index, END <= 0; START none: no lower "
                        "limit (default: none 0, everything before the index)")
    p.add_argument("--summaries", metavar="LIST",
                   help="comma-separated: last,mean,min,max,count,slope (numeric; default all) "
                        "or ever,count (events; default both)")
    g = p.add_argument_group("columns")
    g.add_argument("--subject", default="id", metavar="COLUMN", help="subject ID column (default: id)")
    g.add_argument("--time", default="days", metavar="COLUMN",
                   help="time relative to the index (default: days)")
    g.add_argument("--variable", metavar="COLUMN",
                   help="variable or event name column (default: test for numeric, event for events)")
    g.add_argument("--value", default="value", metavar="COLUMN", help="value column, numeric only (default: value)")
    add_output(p)
    add_common(p)
    p.set_defaults(func=run)
    return p


def run(args, console):
    from ..io import RUN_FILE, atomic_directory, check_output_target, event_features, numeric_features, read_table

    if args.kind == "events" and args.value != "value":
        raise UsageError("--value applies to --kind numeric only (event rows have no value)")
    options = {"subject": args.subject, "time": args.time}
    if args.window is not None:
        options["window"] = tuple(args.window)
    if args.summaries is not None:
        options["summaries"] = [s.strip() for s in args.summaries.split(",") if s.strip()]
    check_output_target(args.out, overwrite=args.overwrite)
    table = read_table(args.table)
    if args.kind == "numeric":
        wide = numeric_features(table, variable=args.variable or "test", value=args.value, **options)
    else:
        wide = event_features(table, variable=args.variable or "event", **options)
    with atomic_directory(args.out, overwrite=args.overwrite) as tmp:
        wide.to_csv(tmp / "features.csv")
        shared.write_json(tmp / RUN_FILE, shared.run_record(args.command, args.argv, args))
    console.info(f"{len(table)} rows -> {wide.shape[0]} subjects x {wide.shape[1]} features")
    console.result(f"wrote {args.out}")
    return EXIT_OK
