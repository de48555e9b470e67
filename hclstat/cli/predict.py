"""``hclstat predict``: an outcome from the components (HCLRegressor / HCLClassifier).

Writes ``predictions.csv`` (every row: target, prediction, split),
``metrics.json`` (train and test), ``summary.txt``, ``data_report.json``,
``hierarchy.json`` (the representation's pattern) and ``run.json``.
"""

from __future__ import annotations

import time

import numpy as np

from . import shared
from .base import EXIT_OK, CLIError, UsageError, add_common, add_data, add_estimator, add_output, fraction, \
    one_line, stages


def add_parser(sub):
    p = sub.add_parser("predict", help="predict an outcome from the components (HCLRegressor / HCLClassifier)",
                       description="Fit a representation and a downstream model on the labelled rows; "
                                   "write predictions for every row and the model summary.")
    add_data(p)
    p.add_argument("--target", required=True, metavar="FILE:COLUMN",
                   help="table holding the outcome and its column; rows without a value are only predicted")
    p.add_argument("--task", choices=("auto", "regression", "classification"), default="auto",
                   help="auto: classification for a non-numeric or two-valued target, else regression")
    p.add_argument("--test-fraction", type=fraction, default=0.0, metavar="F",
                   help="hold out this share of the labelled rows to report test metrics (default: 0)")
    add_estimator(p)
    add_output(p)
    add_common(p)
    p.set_defaults(func=run)
    return p


def parse_target(text):
    path, sep, column = text.rpartition(":")
    if not sep or not path or not column:
        raise UsageError(f"--target: expected FILE:COLUMN, got {text!r}")
    return path, column


def read_target(text, data, *, sep=None, encoding=None):
    """The outcome column aligned with the joined rows (NaN where unknown)."""
    from ..io import read_table

    path, column = parse_target(text)
    table = read_table(path, id_column=data.join.id_column, name="target", sep=sep, encoding=encoding)
    if column not in table.columns:
        raise CLIError(f"--target: column {column!r} not found in {path}; its columns are {list(table.columns)[:10]}")
    y = table[column]
    if data.join.id_column is None:
        if len(y) != len(data.ids):
            raise CLIError(f"--target: {path} has {len(y)} rows but the views have {len(data.ids)} "
                           "(joined by row order)")
        return y.set_axis(data.ids)
    return y.reindex(data.ids)


def encode_target(y, task):
    """Resolve ``auto`` and encode a binary outcome as 0/1; returns (values, task, classes)."""
    import pandas as pd

    observed = y.dropna()
    numeric = pd.api.types.is_numeric_dtype(y.dtype) and not pd.api.types.is_bool_dtype(y.dtype)
    if task == "auto":
        task = "classification" if (not numeric or observed.nunique() == 2) else "regression"
    if task == "regression":
        if not numeric:
            raise CLIError(f"--target: regression needs a numeric outcome, column {y.name!r} is {y.dtype}")
        values = y.to_numpy(dtype=np.float64, na_value=np.nan)
        if np.isinf(values).any():
            raise CLIError(f"--target: column {y.name!r} has infinite values")
        return values, task, None
    classes = sorted(observed.unique().tolist(), key=str)
    if len(classes) != 2:
        raise CLIError(f"--target: classification needs exactly 2 classes, column {y.name!r} has "
                       f"{len(classes)}: {classes[:5]}")
    values = np.full(len(y), np.nan)
    values[(y == classes[1]).to_numpy(dtype=bool, na_value=False)] = 1.0
    values[(y == classes[0]).to_numpy(dtype=bool, na_value=False)] = 0.0
    return values, task, classes


def metrics(task, y, pred, proba=None):
    if task == "regression":
        resid = y - pred
        tss = float(np.sum((y - y.mean()) ** 2))
        return {"n": int(y.size), "mse": float(np.mean(resid**2)),
                "r2": float(1 - np.sum(resid**2) / tss) if tss > 0 else float("nan")}
    out = {"n": int(y.size), "accuracy": float(np.mean(pred == y))}
    if proba is not None:
        p = np.clip(proba, 1e-12, 1 - 1e-12)
        out["log_loss"] = float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
    return out


def _test_rows(args, labelled, rng):
    """The held-out rows of ``--test-fraction`` (a boolean mask)."""
    from ..io import MIN_ROWS

    test = np.zeros(labelled.size, dtype=bool)
    if args.test_fraction > 0:
        idx = np.flatnonzero(labelled)
        n_test = int(round(args.test_fraction * idx.size))
        if idx.size - n_test < MIN_ROWS or n_test < 1:
            raise CLIError(f"--test-fraction {args.test_fraction} leaves too few training or test rows "
                           f"({idx.size} labelled)")
        test[rng.choice(idx, size=n_test, replace=False)] = True
    return test


def _predictions(data, y_raw, pred, proba, classes, train, test):
    import pandas as pd

    frame = pd.DataFrame(index=pd.Index(list(data.ids), name=data.id_name))
    frame["target"] = y_raw.to_numpy()
    if classes is not None:
        frame["prediction"] = [classes[int(v)] if np.isfinite(v) else None for v in pred]
        if proba is not None:
            frame[f"probability_{classes[1]}"] = proba
    else:
        frame["prediction"] = pred
    frame["split"] = np.where(test, "test", np.where(train, "train", "unlabelled"))
    return frame


def run(args, console):
    from ..io import MIN_ROWS, RUN_FILE, atomic_directory, check_output_target

    shared.check_estimator_args(args)
    parse_target(args.target)
    check_output_target(args.out, overwrite=args.overwrite)
    with stages(console, ["read"] * len(args.view) + ["fit", "predict", "write"], "hclstat predict") as step:
        data = shared.load_data(args, console, step)
        y_raw = read_target(args.target, data, sep=args.sep, encoding=args.encoding)
        y, task, classes = encode_target(y_raw, args.task)
        labelled = ~np.isnan(y)
        if labelled.sum() < MIN_ROWS:
            raise CLIError(f"--target: only {int(labelled.sum())} rows have an outcome (need at least {MIN_ROWS})")
        hierarchy = shared.hierarchy_from_args(args, data)
        shared.check_max_rank(args.max_rank, data)
        test = _test_rows(args, labelled, np.random.default_rng(args.seed))
        train = labelled & ~test
        cls_name = "HCLClassifier" if task == "classification" else "HCLRegressor"
        Model = shared.import_attr("hclstat.downstream", cls_name, f"the {cls_name} model is")
        representation = shared.make_estimator(args, hierarchy)
        model = shared.construct(Model, representation=representation, random_state=args.seed)
        rows = lambda mask: {m: t.iloc[np.flatnonzero(mask)] for m, t in data.views.items()}  # noqa: E731
        # the representation is unsupervised: fit it on every row except the held-out ones
        extra = {"unlabeled_views": rows(~test)} if (~labelled).any() else {}
        t0 = time.perf_counter()
        model.fit(rows(train), y[train], **extra)
        console.info(f"fitted {cls_name} on {int(train.sum())} rows in {time.perf_counter() - t0:.1f} s")
        step("fit")
        pred = np.asarray(model.predict(data.views), dtype=np.float64).reshape(-1)
        proba = None
        if task == "classification" and hasattr(model, "predict_proba"):
            proba = np.asarray(model.predict_proba(data.views), dtype=np.float64)
            proba = proba[:, 1] if proba.ndim == 2 else proba.reshape(-1)
        step("predict")
        part = lambda mask: metrics(task, y[mask], pred[mask], None if proba is None else proba[mask])  # noqa: E731
        scores = {"task": task, "train": part(train)}
        if test.any():
            scores["test"] = part(test)
        if classes is not None:
            scores["classes"] = {"0": str(classes[0]), "1": str(classes[1])}
        try:
            summary = str(model.summary()) if hasattr(model, "summary") else repr(model)
        except ValueError as exc:  # e.g. the unpenalised refit failed; the predictions stand
            summary = f"{cls_name}: no inference summary ({one_line(exc)})"
        with atomic_directory(args.out, overwrite=args.overwrite) as tmp:
            _predictions(data, y_raw, pred, proba, classes, train, test).to_csv(tmp / "predictions.csv")
            shared.write_json(tmp / "metrics.json", scores)
            (tmp / "summary.txt").write_text(summary + "\n\n" + data.report() + "\n")
            shared.write_json(tmp / "data_report.json", data.to_dict())
            fitted = getattr(model, "representation_", None)
            if fitted is not None and hasattr(fitted, "hierarchy_"):
                shared.write_json(tmp / "hierarchy.json", fitted.hierarchy_.to_dict())
            shared.write_json(tmp / RUN_FILE, shared.run_record("predict", args.argv, args))
        step("write")
    for split in ("train", "test"):
        if split in scores:
            console.info(f"{split}: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                                  for k, v in scores[split].items()))
    console.result(f"wrote {args.out}")
    return EXIT_OK
