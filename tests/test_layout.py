"""The package's shape: no oversized module, no block of code written twice.

Both are measured on the source tree itself, with no tool beyond the standard
library, so the test runs wherever the suite does.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "hclstat"
#: the hard limit of issue 12 (the aim is about 500)
MAX_LINES = 600
#: a block repeated at least this many significant lines is a duplicate
MIN_BLOCK = 6

_SKIP = re.compile(r"^(#.*|[\)\]\}\(\[\{,:]+|(from \S+ )?import .*|\"\"\"|''')$")


def _modules():
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _significant_lines(path):
    """(line number, whitespace-folded text) of the lines that carry code."""
    out = []
    for i, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        text = " ".join(raw.split())
        if text and not _SKIP.match(text):
            out.append((i, text))
    return out


def repeated_blocks(paths, min_block=MIN_BLOCK):
    """Places where ``min_block`` consecutive significant lines occur again verbatim.

    Returns a list of ``((path, first_line), (path, first_line))`` pairs, one per
    maximal run (overlapping windows of one run are reported once).
    """
    where = defaultdict(list)
    lines = {p: _significant_lines(p) for p in paths}
    for p, ls in lines.items():
        for k in range(len(ls) - min_block + 1):
            window = tuple(t for _, t in ls[k:k + min_block])
            where[window].append((p, k))
    pairs, seen = [], set()
    for places in where.values():
        if len(places) < 2:
            continue
        (p0, k0), (p1, k1) = places[0], places[1]
        # report a run once: skip windows that continue a pair already seen
        if (p0, k0 - 1, p1, k1 - 1) in seen:
            seen.add((p0, k0, p1, k1))
            continue
        seen.add((p0, k0, p1, k1))
        pairs.append(((p0, lines[p0][k0][0]), (p1, lines[p1][k1][0])))
    return pairs


def test_no_module_exceeds_the_line_limit():
    too_long = {}
    for p in _modules():
        n = len(p.read_text(encoding="utf-8").splitlines())
        rel = p.relative_to(PACKAGE).as_posix()
        if n > MAX_LINES:
            too_long[rel] = n
    assert not too_long, f"modules over {MAX_LINES} lines: {too_long}"


def test_no_block_is_written_twice():
    pairs = repeated_blocks(_modules())
    shown = [f"{a.relative_to(PACKAGE)}:{la} ~ {b.relative_to(PACKAGE)}:{lb}" for (a, la), (b, lb) in pairs]
    assert not shown, f"blocks of {MIN_BLOCK}+ identical lines repeated: {shown}"


def test_the_detector_finds_a_planted_repeat(tmp_path):
    body = "\n".join(f"    x{i} = f(x{i - 1}, {i})" for i in range(1, 8))
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text(f"def one():\n{body}\n    return x7\n")
    b.write_text(f"import os\n\n\ndef two():\n    # a comment\n{body}\n")
    pairs = repeated_blocks([a, b])
    assert [(pa.name, pb.name) for (pa, _), (pb, _) in pairs] == [("a.py", "b.py")]
    assert pairs[0][0][1] == 2 and pairs[0][1][1] == 6
    # five repeated lines are not a duplicate
    assert repeated_blocks([a, b], min_block=8) == []
