"""Three views of one tumour: a hierarchical model of the Wisconsin breast-cancer data.

scikit-learn ships the Wisconsin diagnostic breast-cancer data (569 tumours, no
download needed). Each of ten nucleus measurements (radius, texture, perimeter,
area, smoothness, compactness, concavity, concave points, symmetry, fractal
dimension) is summarised three ways over the nuclei of an image, which gives
three natural modalities of ten columns each:

* ``mean``  - the average over the nuclei,
* ``se``    - its standard error (the spread between nuclei),
* ``worst`` - the mean of the three largest values.

HCL learns which latent factors all three views share, which only two share
(``mean`` and ``worst`` describe the typical and the extreme nucleus, ``se``
the heterogeneity), and which belong to one view; then a classifier on the
component scores tells which structures carry the diagnosis.

Run::

    python examples/breast_cancer_views.py [OUTPUT_DIR]

It writes into ``OUTPUT_DIR`` (default ``breast_cancer_output``): the fitted
pattern and loadings (the same layout as ``hclstat fit``), ``summary.txt`` and
the figures ``figures/pattern.png``, ``figures/variance_explained.png`` and
``figures/top_features.png``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.datasets import load_breast_cancer

from hclstat.estimators.hcl import HCL
from hclstat.io import atomic_directory, load_views, write_representation
from hclstat.plotting import write_figures

VIEWS = {"mean": "mean ", "se": " error", "worst": "worst "}


def breast_cancer_views():
    """The three views as DataFrames with an ``id`` column, and the diagnosis."""
    data = load_breast_cancer(as_frame=True)
    X = data.frame.drop(columns="target")
    ids = [f"tumour{i:03d}" for i in range(len(X))]
    views = {}
    for view, marker in VIEWS.items():
        cols = [c for c in X.columns if (c.startswith(marker) if marker.endswith(" ") else c.endswith(marker))]
        table = X[cols].rename(columns=lambda c: c.replace(marker.strip(), "").strip())
        table.insert(0, "id", ids)
        views[view] = table
    diagnosis = pd.Series(np.asarray(data.target_names)[data.target], index=ids, name="diagnosis")
    return views, diagnosis


def main(out="breast_cancer_output"):
    tables, diagnosis = breast_cancer_views()
    # the measurements are positive and right-skewed (areas span two decades): log1p, then
    # centre and scale every column, since the summaries are on very different scales
    data = load_views(tables, id_column="id", preprocessing={m: "log1p" for m in tables})
    hcl = HCL(random_state=0).fit(data.views)  # the pattern is learned
    results = hcl.get_results()
    scores = hcl.transform(data.views)
    text = [results.summary(), "", data.report()]

    try:
        from hclstat.downstream import HCLClassifier
    except ImportError:  # pragma: no cover - optional part of the example
        HCLClassifier = None
    if HCLClassifier is not None:
        rng = np.random.default_rng(0)
        test = rng.permutation(len(diagnosis))[: len(diagnosis) // 4]
        train = np.setdiff1d(np.arange(len(diagnosis)), test)
        rows = lambda idx: {m: t.iloc[idx] for m, t in data.views.items()}  # noqa: E731
        y = (diagnosis.to_numpy() == "malignant").astype(int)
        clf = HCLClassifier(representation=HCL(random_state=0), random_state=0)
        # the representation is unsupervised: it may see every tumour, the labels only of the training ones
        clf.fit(rows(train), y[train], unlabeled_views=data.views)
        accuracy = float(np.mean(clf.predict(rows(test)) == y[test]))
        names = [clf.hierarchy_.name(s) for s in clf.selected_structures_]
        text += ["", "Diagnosis (malignant vs benign) from the component scores",
                 "-" * 60, f"selected structures: {', '.join(names) or 'none'}",
                 f"held-out accuracy: {accuracy:.3f} on {len(test)} tumours"]

    with atomic_directory(out, overwrite=False) as tmp:
        write_representation(tmp, hcl, scores, ids=list(data.ids), id_name="id")
        results.variance_explained.to_csv(tmp / "variance_explained.csv")
        (tmp / "summary.txt").write_text("\n".join(text) + "\n")
        figures = write_figures(results, tmp / "figures", top=8)
        (tmp / "run.json").write_text('{"hclstat_version": "example"}\n')
    print("\n".join(text))
    print("\nfigures:", ", ".join(str(Path(out) / "figures" / f.name) for f in figures))


if __name__ == "__main__":
    main(*sys.argv[1:2])
