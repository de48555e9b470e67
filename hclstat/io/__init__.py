"""Reading modality tables, joining them on an ID, and writing results.

Input: one table per modality (CSV, TSV or Parquet), joined on an ID column or
by row order. With an ID column the *union* of IDs is kept by default
(``join="outer"``): a modality's rows that are absent become all-NaN
(block-missing), which the pairwise-complete moments handle without imputing,
and the rows each modality and each pair contribute are reported;
``join="inner"`` keeps the intersection and reports the IDs each modality loses.

Out of core: :func:`load_views_chunked` reads the tables with
``dask.dataframe`` in row chunks, learns the preprocessing in one pass (means
and scales merged across chunks) and returns the preprocessed modalities as
dask arrays, from which the moments are computed chunk by chunk
(:func:`hclstat.moments.compute_moments`); :func:`write_scores_chunked` writes
the component scores chunk by chunk.

Output: writers for a fitted representation (hierarchy JSON, loadings per
structure and modality, scores per structure, noise variances) and
:func:`atomic_directory`, which builds a result in a temporary directory beside
its destination and moves it into place only when everything succeeded.

Layout: :mod:`~hclstat.io.read` (one table and the checks on a source),
:mod:`~hclstat.io.join` (joining, missingness, :class:`MultiViewData`,
:func:`load_views`), :mod:`~hclstat.io.chunked` (the out-of-core reader) and
:mod:`~hclstat.io.write` (result files and directories, hierarchy files).
"""

from .chunked import ChunkedViewData, load_views_chunked
from .events import EVENT_SUMMARIES, NUMERIC_SUMMARIES, event_features, numeric_features, outcome_within, time_to_event
from .join import MIN_ROWS, JoinReport, MultiViewData, join_tables, load_views, missingness_table
from .mudata import from_mudata, to_mudata
from .read import CSV_SUFFIXES, PARQUET_SUFFIXES, TSV_SUFFIXES, read_table
from .write import (
    RUN_FILE,
    atomic_directory,
    check_output_target,
    is_hclstat_output,
    read_hierarchy,
    structure_label,
    write_representation,
    write_scores_chunked,
)

__all__ = [
    "MIN_ROWS",
    "JoinReport",
    "MultiViewData",
    "ChunkedViewData",
    "read_table",
    "from_mudata",
    "to_mudata",
    "load_views_chunked",
    "write_scores_chunked",
    "join_tables",
    "load_views",
    "missingness_table",
    "read_hierarchy",
    "structure_label",
    "write_representation",
    "atomic_directory",
    "is_hclstat_output",
    "check_output_target",
    "RUN_FILE",
    "NUMERIC_SUMMARIES",
    "EVENT_SUMMARIES",
    "numeric_features",
    "event_features",
    "outcome_within",
    "time_to_event",
]
