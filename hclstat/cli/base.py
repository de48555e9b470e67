"""What every command shares: exit codes, errors, the console, and the parsing of options."""

from __future__ import annotations

import argparse
import contextlib
import re
import sys

__all__ = ["EXIT_OK", "EXIT_FAILURE", "EXIT_USAGE", "PROG", "UsageError", "CLIError"]

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
PROG = "hclstat"
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


class UsageError(Exception):
    """The command line is malformed (exit code 2)."""


class CLIError(Exception):
    """The run failed for a reason the user can act on (exit code 1)."""


# ---------------------------------------------------------------- messages
class Console:
    """Messages of a run: progress and information on stderr (unless quiet), results on stdout."""

    def __init__(self, quiet=False):
        self.quiet = quiet

    def info(self, text):
        if not self.quiet:
            from tqdm.auto import tqdm

            tqdm.write(text, file=sys.stderr)  # keeps an active progress bar intact

    def warn(self, text):
        """A warning line on stderr, shown even when quiet."""
        _warning_line(text)

    def result(self, text):
        if not self.quiet:
            print(text)

    def stages(self, names, desc):
        """A tqdm bar over named stages (disabled when quiet or stderr is not a terminal)."""
        from tqdm.auto import tqdm

        return _Stages(tqdm(total=len(names), desc=desc, unit="step", file=sys.stderr,
                            disable=True if self.quiet else None, leave=False,
                            bar_format="{desc}: {n_fmt}/{total_fmt} [{elapsed}] {postfix}"))


class _Stages:
    def __init__(self, bar):
        self.bar = bar

    def __call__(self, label):
        self.bar.set_postfix_str(label, refresh=False)
        self.bar.update(1)

    def close(self):
        self.bar.close()


@contextlib.contextmanager
def stages(console, names, desc):
    """``with stages(console, names, desc) as step: ... step(label)``: the progress of a command."""
    bar = console.stages(names, desc)
    try:
        yield bar
    finally:
        bar.close()


def one_line(exc):
    """An exception as one line of text (a KeyError says which key)."""
    text = " ".join(str(exc).split())
    if isinstance(exc, KeyError) and text.startswith("'"):
        text = f"key {text} not found"
    return text or type(exc).__name__


def _warning_line(text):
    print(f"{PROG}: warning: {' '.join(str(text).split())}", file=sys.stderr)


def show_warning(message, category, filename, lineno, file=None, line=None):
    """``warnings.showwarning`` of the command line: one line, no source location."""
    _warning_line(message)


# ------------------------------------------------------------ option types
def _integer(text, minimum, what):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a {what} integer, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected a {what} integer, got {value}")
    return value


def positive_int(text):
    return _integer(text, 1, "positive")


def nonnegative_int(text):
    return _integer(text, 0, "non-negative")


def fraction(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {value}")
    return value


def parse_views(items):
    """``["labs=labs.csv", ...]`` -> ``{"labs": "labs.csv", ...}`` in the given order."""
    views = {}
    for item in items or []:
        name, sep, path = item.partition("=")
        name, path = name.strip(), path.strip()
        if not sep or not name or not path:
            raise UsageError(f"--view: expected NAME=FILE, got {item!r}")
        if not _NAME.match(name):
            raise UsageError(
                f"--view: modality name {name!r} may only contain letters, digits, '_', '.' and '-'"
            )
        if name in views:
            raise UsageError(f"--view: modality {name!r} is given twice")
        views[name] = path
    if not views:
        raise UsageError("expected at least one --view NAME=FILE")
    return views


def parse_preprocessing(items, modalities):
    """``["codes=log1p,noscale", ...]`` -> ``{"codes": Preprocessing, ...}``."""
    from ..preprocess import Preprocessing

    out = {}
    for item in items or []:
        name, sep, steps = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise UsageError(f"--prep: expected NAME=STEPS (e.g. codes=log1p,noscale), got {item!r}")
        if name not in modalities:
            raise UsageError(f"--prep: unknown modality {name!r}; the --view modalities are {list(modalities)}")
        if name in out:
            raise UsageError(f"--prep: modality {name!r} is given twice")
        try:
            out[name] = Preprocessing.parse(steps)
        except ValueError as exc:
            raise UsageError(f"--prep {name}: {exc}") from None
    return out


#: ``--type`` values
COLUMN_TYPES = ("auto", "continuous", "binary", "ternary", "truncated")


def parse_types(items, modalities):
    """``["codes=binary", "auto"]`` -> ``HCL(types=...)``: None, one type for all, or a dict per modality."""
    if not items:
        return None
    everywhere, out = None, {}
    for item in items:
        name, sep, kind = item.rpartition("=")
        name, kind = name.strip(), kind.strip()
        if kind not in COLUMN_TYPES:
            raise UsageError(f"--type: expected [NAME=]TYPE with TYPE one of {list(COLUMN_TYPES)}, got {item!r}")
        if not sep:
            if everywhere is not None:
                raise UsageError(f"--type: a type for every modality is given twice ({everywhere!r}, {kind!r})")
            everywhere = kind
            continue
        if name not in modalities:
            raise UsageError(f"--type: unknown modality {name!r}; the --view modalities are {list(modalities)}")
        if name in out:
            raise UsageError(f"--type: modality {name!r} is given twice")
        out[name] = kind
    if not out:
        return everywhere
    return {m: out.get(m, everywhere or "auto") for m in modalities}


# ----------------------------------------------------------- option groups
def add_common(p):
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress bars or messages (warnings and errors still go to stderr)")
    p.add_argument("--traceback", action="store_true", help="show the Python traceback of an error (for debugging)")


def add_output(p, default=None):
    if default is None:
        p.add_argument("--out", required=True, metavar="DIR",
                       help="output directory (built in a temporary directory and moved into place on success)")
    else:
        p.add_argument("--out", default=default, metavar="DIR", help=f"output directory (default: {default})")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing non-empty --out that was not written by hclstat (only after success)")


def add_estimator(p, *, pattern=True):
    g = p.add_argument_group("estimator")
    if pattern:
        g.add_argument("--hierarchy", metavar="JSON",
                       help="sharing pattern to impose (Hierarchy JSON; 'dims' may be omitted). "
                            "Without it HCL learns the pattern")
        g.add_argument("--estimator", choices=("hcl", "sfa"), default="hcl",
                       help="hcl: structure-aware contrastive estimator (default); "
                            "sfa: structured factor analysis (needs --hierarchy)")
    g.add_argument("--max-rank", type=positive_int, metavar="K",
                   help="largest rank considered per structure; at most the columns of every modality")
    g.add_argument("--type", action="append", metavar="[NAME=]TYPE", dest="types",
                   help="column types of mixed data (latent Gaussian copula): auto, continuous, binary, ternary "
                        "or truncated, for modality NAME (NAME=TYPE) or for every modality (TYPE); repeatable; "
                        "auto infers each column's type and the summary reports it. Without --type every "
                        "column is linear-Gaussian (HCL only)")
    g.add_argument("--noise-model", choices=("diagonal", "isotropic"), default="diagonal",
                   help="noise covariance per modality (default: diagonal)")
    g.add_argument("--seed", type=nonnegative_int, default=0, help="random seed (default: 0)")
    g.add_argument("--verbose", action="store_true", help="let the estimator report its iterations")


#: ``--join`` help: every command keeps every sample by default
JOIN_HELP = ("outer (default): keep the IDs of any table, a sample a table lacks is missing in that modality "
             "(each covariance block uses the samples measured in both); inner: only the IDs present in every "
             "table")


def add_data(p, *, join_help=JOIN_HELP, mudata=False):
    """The data options; ``--join`` parses to None when not given (callers resolve it, see
    :func:`hclstat.cli.shared.load_data`), so that an explicit ``--join outer`` can be told apart.
    ``mudata``: also ``--mudata FILE`` (then ``--view`` is optional; exactly one of them is given)."""
    g = p.add_argument_group("data")
    g.add_argument("--view", action="append", metavar="NAME=FILE", required=not mudata,
                   help="one modality table (CSV, TSV or Parquet); repeat for each modality")
    if mudata:
        g.add_argument("--mudata", metavar="FILE",
                       help="read the modalities from a MuData .h5mu file instead of --view (its .mod, rows "
                            "matched by obs names; a sample a modality lacks is missing there). Needs the "
                            "mudata extra: pip install 'hclstat[mudata]'")
        g.add_argument("--layer", metavar="NAME",
                       help="with --mudata: the layer to read in every modality (default: .X)")
    g.add_argument("--id", metavar="COLUMN",
                   help="ID column to join the tables on (default: join by row order)")
    g.add_argument("--join", choices=("inner", "outer"), default=None, help=join_help)
    g.add_argument("--prep", action="append", metavar="NAME=STEPS",
                   help="preprocessing of one modality, comma-separated: center/nocenter, scale/noscale, "
                        "log1p, onehot, keepconstant, raw (default: center,scale)")
    g.add_argument("--sep", metavar="CHAR",
                   help="delimiter of the CSV/TSV tables, e.g. ';' or '\\t' (default: the suffix's, or the "
                        "one that splits a file's first lines consistently, with a warning)")
    g.add_argument("--encoding", metavar="NAME",
                   help="text encoding of the CSV/TSV tables, e.g. latin-1 (default: utf-8)")


def add_figures(p):
    p.add_argument("--top", type=positive_int, default=10,
                   help="features per structure in top_features.png (default: 10)")
    p.add_argument("--no-figures", action="store_true", help="skip the figures")
