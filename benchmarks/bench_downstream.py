"""Downstream benchmark: excess risk of structure selection against baselines and the oracle.

Design: three modalities (p = 15, 20, 25), six structures of rank 2
({a,b,c}, {a,b}, {b,c}, {a}, {b}, {c}), unit isotropic noise, of which two
({a,b,c} and {a,b}) carry the outcome, ``beta = (1, -0.5 | 0.6, 0.6)``. The
representation is fitted on an unlabelled sample of ``n`` rows; predictors are
trained on ``m`` labelled rows. Methods:

* ``hcl-select``: :class:`hclstat.HCLRegressor` / :class:`HCLClassifier`
  (group lasso over structures, refit-CV with the 1-SE rule, unpenalised refit),
  on each representation (oracle loadings, StructuredFactorAnalysis with the
  true pattern, HCL learning the pattern);
* ``all-scores``: (a) OLS / unpenalised logistic regression on all scores of
  the same representation (no selection);
* ``raw-lasso``: (b) cross-validated lasso (L1 logistic) on the standardised
  concatenated raw features;
* ``oracle``: (c) OLS / logistic regression on the *true latents* of the true
  support in the labelled sample; it predicts with the true posterior
  ``E[z_S | x]`` (and, for the binary outcome, integrates the sigmoid over
  ``eta | x``), since only ``x`` is seen at test time.

Reported: excess risk against the Bayes predictor given the views
(:func:`hclstat.downstream.excess_risk`, ``reference="observed"``; excess
squared error, excess log-loss), averaged over replications, and its ratio to
the oracle's. Everything is measured in one run.

Usage::

    python benchmarks/bench_downstream.py [--quick] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings

import numpy as np
from sklearn.linear_model import LassoCV, LinearRegression, LogisticRegression, LogisticRegressionCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from hclstat.downstream import HCLClassifier, HCLRegressor, _true_posterior, excess_risk
from hclstat.estimators.base import ModelRepresentation
from hclstat.hierarchy import Hierarchy
from hclstat.model import HierarchicalModel
from provenance import commit_label, source_fingerprint

BETA = {("a", "b", "c"): [1.0, -0.5], ("a", "b"): [0.6, 0.6]}
TRUE = (frozenset("abc"), frozenset("ab"))
INTERCEPT = {"continuous": 0.0, "binary": 0.5}


def _rng(*key):
    return np.random.default_rng(list(key))


def make_design(seed=1):
    h = Hierarchy(
        dims={"a": 15, "b": 20, "c": 25},
        ranks={("a", "b", "c"): 2, ("a", "b"): 2, ("b", "c"): 2, "a": 2, "b": 2, "c": 2},
    )
    return HierarchicalModel.random(h, noise=1.0, random_state=seed)


class ViewsPredictor:
    """Wrap a function of the views as a predictor for :func:`excess_risk`."""

    def __init__(self, predict=None, proba=None):
        self._predict, self._proba = predict, proba
        if proba is not None:
            self.classes_ = np.array([0, 1])
            self.predict_proba = lambda views: np.column_stack([1 - proba(views), proba(views)])
            self.predict = lambda views: (proba(views) > 0.5).astype(int)
        else:
            self.predict = predict


def _stack(scores, structures):
    return np.concatenate([scores[s] for s in structures], axis=1)


def _raw(views, modalities):
    return np.concatenate([np.asarray(views[m]) for m in modalities], axis=1)


def representations(model, unlabeled, seed):
    reps = {"oracle-rep": ModelRepresentation(model).fit()}
    try:
        from hclstat.estimators.sfa import StructuredFactorAnalysis

        reps["sfa"] = StructuredFactorAnalysis(model.hierarchy, random_state=seed).fit(unlabeled)
    except ImportError:
        pass
    try:
        from hclstat.estimators.hcl import HCL

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reps["hcl"] = HCL(random_state=seed).fit(unlabeled)
    except ImportError:
        pass
    return reps


def fit_methods(kind, model, reps, views, y, latents, seed):
    """All predictors for one labelled sample: {name: predictor}."""
    h = model.hierarchy
    out, selected = {}, {}
    for rname, rep in reps.items():
        est = HCLRegressor if kind == "continuous" else HCLClassifier
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fitted = est(rep, random_state=seed).fit(views, y)
        out[f"hcl-select[{rname}]"] = fitted
        names = {rep.hierarchy_.name(s) for s in fitted.selected_structures_}
        selected[f"hcl-select[{rname}]"] = sorted(names)
        structs = rep.hierarchy_.structures
        Z = _stack(rep.transform(views), structs)
        if kind == "continuous":
            lin = LinearRegression().fit(Z, y)
            out[f"all-scores[{rname}]"] = ViewsPredictor(
                predict=lambda v, lin=lin, rep=rep, structs=structs: lin.predict(_stack(rep.transform(v), structs)))
        else:
            lin = LogisticRegression(C=np.inf, max_iter=5000).fit(Z, y)
            out[f"all-scores[{rname}]"] = ViewsPredictor(
                proba=lambda v, lin=lin, rep=rep, structs=structs: lin.predict_proba(_stack(rep.transform(v), structs))[:, 1])
    X = _raw(views, h.modalities)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind == "continuous":
            raw = make_pipeline(StandardScaler(), LassoCV(cv=5, random_state=seed)).fit(X, y)
            out["raw-lasso"] = ViewsPredictor(predict=lambda v: raw.predict(_raw(v, h.modalities)))
        else:
            raw = make_pipeline(StandardScaler(), LogisticRegressionCV(
                Cs=10, cv=5, l1_ratios=(1.0,), solver="saga", scoring="neg_log_loss", max_iter=5000, random_state=seed)).fit(X, y)
            out["raw-lasso"] = ViewsPredictor(proba=lambda v: raw.predict_proba(_raw(v, h.modalities))[:, 1])
    # oracle: true latents of the true support in training, true posterior at test time
    Zt = np.concatenate([latents[s] for s in TRUE], axis=1)
    cols = np.concatenate([np.arange(h.component_slices()[s].start, h.component_slices()[s].stop) for s in TRUE])
    if kind == "continuous":
        ols = LinearRegression().fit(Zt, y)
        out["oracle"] = ViewsPredictor(predict=lambda v: ols.intercept_ + _true_posterior(model, v)[0][:, cols] @ ols.coef_)
    else:
        lr = LogisticRegression(C=np.inf, max_iter=5000).fit(Zt, y)
        t, w = np.polynomial.hermite_e.hermegauss(64)
        w = w / np.sqrt(2 * np.pi)

        def proba(v, lr=lr):
            mean, cov = _true_posterior(model, v)
            b = lr.coef_.ravel()
            mu = lr.intercept_[0] + mean[:, cols] @ b
            s = np.sqrt(b @ cov[np.ix_(cols, cols)] @ b)
            return (1 / (1 + np.exp(-(mu[:, None] + s * t)))) @ w

        out["oracle"] = ViewsPredictor(proba=proba)
    return out, selected


def run(quick=False, seed=0):
    model = make_design()
    ms = [200, 800] if quick else [100, 200, 400, 800, 1600]
    n_reps = 3 if quick else 10
    n_unlabeled = 5000
    test = model.sample(5_000 if quick else 20_000, random_state=_rng(seed, 99))
    results = {"continuous": {}, "binary": {}}
    exact = {"continuous": {}, "binary": {}}
    t0 = time.perf_counter()
    for r in range(n_reps):
        unlabeled, _ = model.sample(n_unlabeled, random_state=_rng(seed, r, 0))
        reps = representations(model, unlabeled, seed + r)
        for kind in ("continuous", "binary"):
            for m in ms:
                views, latents = model.sample(m, random_state=_rng(seed, r, m, 1))
                y = model.outcome(latents, BETA, noise=1.0, kind=kind, intercept=INTERCEPT[kind],
                                  random_state=_rng(seed, r, m, 2))
                preds, selected = fit_methods(kind, model, reps, views, y, latents, seed + r)
                for name, pred in preds.items():
                    risk = excess_risk(pred, model, BETA, intercept=INTERCEPT[kind], kind=kind, sample=test)
                    results[kind].setdefault(name, {}).setdefault(m, []).append(risk)
                for name, sel in selected.items():
                    ok = sel == ["{a,b,c}", "{a,b}"]
                    exact[kind].setdefault(name, {}).setdefault(m, []).append(ok)
        print(f"replication {r + 1}/{n_reps} done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    summary = {"design": "M=3, p=(15,20,25), 6 structures of rank 2, 2 relevant; noise 1; n_unlabeled=5000",
               "m": ms, "n_reps": n_reps, "seconds": time.perf_counter() - t0}
    for kind in ("continuous", "binary"):
        oracle = {m: float(np.mean(results[kind]["oracle"][m])) for m in ms}
        table = {}
        for name, by_m in results[kind].items():
            table[name] = {
                "excess_risk": {m: float(np.mean(v)) for m, v in by_m.items()},
                "ratio_to_oracle": {m: float(np.mean(v)) / oracle[m] for m, v in by_m.items()},
            }
            if name in exact[kind]:
                table[name]["exact_selection"] = {m: float(np.mean(v)) for m, v in exact[kind][name].items()}
        summary[kind] = table
    return summary


def print_table(summary):
    for kind in ("continuous", "binary"):
        loss = "excess MSE" if kind == "continuous" else "excess log-loss"
        ms = summary["m"]
        print(f"\n{kind} outcome: {loss} / oracle's (oracle's absolute value in the last row)")
        print(f"{'method':28s}" + "".join(f"{'m=' + str(m):>10s}" for m in ms) + "   exact selection")
        rows = summary[kind]
        for name in sorted(rows, key=lambda k: (k == "oracle", k)):
            ratios = "".join(f"{rows[name]['ratio_to_oracle'][m]:10.2f}" for m in ms)
            ex = rows[name].get("exact_selection")
            ex_txt = " ".join(f"{ex[m]:.2f}" for m in ms) if ex else ""
            print(f"{name:28s}{ratios}   {ex_txt}")
        print(f"{'oracle (absolute)':28s}" + "".join(f"{rows['oracle']['excess_risk'][m]:10.4f}" for m in ms))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 sample sizes, 3 replications")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write the summary as JSON here")
    args = parser.parse_args(argv)
    with threadpool_limits(1):  # small matrices: BLAS threads only add contention
        summary = run(quick=args.quick, seed=args.seed)
    fp = source_fingerprint()
    summary = {"commit": commit_label(fp), "source": fp,
               "threads": "BLAS limited to 1 thread (threadpoolctl): measures excess risk, not time", **summary}
    print(f"commit {summary['commit']}")
    print_table(summary)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(summary, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
