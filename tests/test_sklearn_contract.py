"""The scikit-learn contract: declared parameters, likelihood, feature names, the array adapter."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from scipy.stats import multivariate_normal
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.estimator_checks import parametrize_with_checks

from hclstat import HCL, HierarchicalModel, ModelRepresentation, StructuredFactorAnalysis
from hclstat.baselines import ConcatenatedPCA, PairwiseCCA, SharedPrivate
from hclstat.estimators.arrays import ColumnViews, default_views
from hclstat.estimators.matrix_free import MatrixFreeHCL
from hclstat.exceptions import EstimationWarning
from hclstat.model.designs import D1_DIMS, d1_model

ESTIMATORS = [HCL, MatrixFreeHCL, StructuredFactorAnalysis, SharedPrivate, ConcatenatedPCA, PairwiseCCA, ColumnViews]
D1_VIEWS = {"a": slice(0, 50), "b": slice(50, 110), "c": slice(110, 180)}


@pytest.fixture(scope="module")
def small():
    """A small three-modality model (8/10/12 columns, 6 components), its views and stacked rows."""
    from hclstat.hierarchy import Hierarchy

    h = Hierarchy({"a": 8, "b": 10, "c": 12}, {("a", "b", "c"): 2, ("a", "b"): 1, "a": 1, "b": 1, "c": 1})
    model = HierarchicalModel.random(h, loading_scale=0.6, random_state=3)
    views, _ = model.sample(400, random_state=4)
    views = {m: v + 2.0 * (i + 1) for i, (m, v) in enumerate(views.items())}  # non-zero means
    return model, views, np.hstack([views[m] for m in h.modalities])


@pytest.fixture(scope="module")
def small_fit(small):
    model, views, _ = small
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EstimationWarning)
        return HCL(hierarchy=model.hierarchy, random_state=0).fit(views)


# ------------------------------------------------------------------ check_estimator
# Every generic check passes with the defaults (views=None: two halves; HCL()) and with
# another wrapped estimator; none is expected to fail.
@parametrize_with_checks([ColumnViews(), ColumnViews(ConcatenatedPCA())])
def test_check_estimator(estimator, check):
    with warnings.catch_warnings():
        # the checks' data are noise with 2-10 columns: "no component" / one-column warnings
        warnings.simplefilter("ignore", EstimationWarning)
        check(estimator)


# ------------------------------------------------------------------ parameter constraints
@pytest.mark.parametrize("cls", ESTIMATORS)
def test_every_parameter_is_declared(cls):
    assert set(cls._parameter_constraints) == set(cls().get_params(deep=False))


@pytest.mark.parametrize("est, message", [
    (HCL(alpha=1.5), r"alpha: expected a number in \(0, 1\), got 1\.5"),
    (HCL(alpha=0), r"alpha: expected a number in \(0, 1\), got 0"),
    (HCL(permutation_rows=True), r"permutation_rows: expected a positive integer, got True"),
    (HCL(lambdas=3), r"lambdas: expected an array-like or None, got 3"),
    (HCL(random_state=-1), r"random_state: expected a non-negative integer, a Generator, a RandomState, "
                           r"a SeedSequence or None, got -1"),
    (HCL(random_state="seed"), r"random_state: expected .* or None, got 'seed'"),
    (HCL(verbose="yes"), r"verbose: expected a bool or a non-negative integer, got 'yes'"),
    (HCL(selection="cv"), r"selection: expected 'lattice' or 'bic', got 'cv'"),
    (HCL(penalty="l1"), r"penalty: expected 'group' or None, got 'l1'"),
    (HCL(hierarchy={"a": 1}), r"hierarchy: expected a Hierarchy or None, got dict"),
    (MatrixFreeHCL(max_iter=0), r"max_iter: expected a positive integer, got 0"),
    (MatrixFreeHCL(alpha=2.0), r"alpha: expected a number in \(0, 1\), got 2\.0"),
    (StructuredFactorAnalysis(noise_model="full"), r"noise_model: expected 'diagonal' or 'isotropic', got 'full'"),
    (StructuredFactorAnalysis(init=[1]), r"init: expected 'spectral', 'random' or a dict, got list"),
    (StructuredFactorAnalysis(random_state=1.5), r"random_state: expected .*, got 1\.5"),
    (SharedPrivate(n_private=1.5), r"n_private: expected a non-negative integer or a dict, got 1\.5"),
    (SharedPrivate(max_iter=0), r"max_iter: expected a positive integer, got 0"),
    (ConcatenatedPCA(n_components=True), r"n_components: expected a positive integer, got True"),
    (PairwiseCCA(ridge=-0.1), r"ridge: expected a non-negative number, got -0\.1"),
    (ColumnViews(views=[0, 1]), r"views: expected a dict or None, got list"),
    (ColumnViews(estimator="HCL"), r"estimator: expected an object implementing 'fit', 'transform'.* or None, got 'HCL'"),
])
def test_bad_parameters_are_rejected_in_fit(small, est, message):
    _, views, X = small
    data = X if isinstance(est, ColumnViews) else views
    with pytest.raises(InvalidParameterError, match=message):
        est.fit(data)
    # InvalidParameterError is both: callers catching either keep working
    assert issubclass(InvalidParameterError, ValueError) and issubclass(InvalidParameterError, TypeError)


def test_parameters_are_validated_before_the_moments(small):
    _, views, _ = small
    bad = dict(views, a=np.full((400, 8), np.inf))
    with pytest.raises(InvalidParameterError, match="tol: expected a positive number, got 0"):
        HCL(tol=0).fit(bad)
    with pytest.raises(InvalidParameterError, match="max_rank: expected a positive integer or None"):
        HCL(max_rank=0).fit_moments(None)


# ------------------------------------------------------------------ likelihood
def test_score_samples_is_the_gaussian_log_density(small, small_fit):
    _, views, X = small
    est = small_fit
    Sigma = est.get_covariance()
    mu = np.concatenate([est.means_[m] for m in est.modalities_])
    assert Sigma.shape == (30, 30)
    A = est.stacked_loadings()
    psi = np.concatenate([est.noise_variances_[m] for m in est.modalities_])
    assert_allclose(Sigma, A @ A.T + np.diag(psi), rtol=1e-12)
    assert_allclose(mu, X.mean(axis=0), rtol=1e-12)
    want = multivariate_normal(mu, Sigma).logpdf(X)
    assert_allclose(est.score_samples(views), want, rtol=1e-10)
    assert est.score(views) == pytest.approx(want.mean(), rel=1e-12)


def test_score_samples_with_missing_entries_is_the_marginal_density(small, small_fit, rng):
    _, views, X = small
    est = small_fit
    Xm = X[:60].copy()
    Xm[rng.random(Xm.shape) < 0.2] = np.nan
    Xm[5] = np.nan  # nothing observed: the empty marginal, log-density 0
    Xm[7, :] = X[7]  # complete row
    parts = {m: Xm[:, sl] for m, sl in zip(est.modalities_, (slice(0, 8), slice(8, 18), slice(18, 30)))}
    got = est.score_samples(parts)
    Sigma = est.get_covariance()
    mu = np.concatenate([est.means_[m] for m in est.modalities_])
    for i, row in enumerate(Xm):
        obs = ~np.isnan(row)
        want = 0.0 if not obs.any() else multivariate_normal(mu[obs], Sigma[np.ix_(obs, obs)]).logpdf(row[obs])
        assert got[i] == pytest.approx(want, rel=1e-10, abs=1e-10), i
    assert got[5] == 0.0


def test_oracle_score_uses_the_true_model(small):
    model, views, X = small
    oracle = ModelRepresentation(model).fit()  # zero means: score centred rows
    centred = {m: v - v.mean(axis=0) for m, v in views.items()}
    Xc = X - X.mean(axis=0)
    assert_allclose(oracle.get_covariance(), model.covariance(), rtol=1e-12)
    assert_allclose(oracle.score_samples(centred), multivariate_normal(np.zeros(30), model.covariance()).logpdf(Xc),
                    rtol=1e-10)


def test_pairwise_cca_has_no_likelihood(small):
    _, views, _ = small
    est = PairwiseCCA().fit(views)
    with pytest.raises(NotImplementedError, match="PairwiseCCA has no joint noise model"):
        est.score(views)
    with pytest.raises(NotImplementedError, match="no joint noise model"):
        est.get_covariance()


def test_the_fitted_likelihood_beats_a_wrong_pattern_held_out(small):
    # score is what model selection compares: the true pattern must win on new rows
    model, views, _ = small
    test_views, _ = model.sample(400, random_state=9)
    test_views = {m: v + 2.0 * (i + 1) for i, (m, v) in enumerate(test_views.items())}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EstimationWarning)
        right = StructuredFactorAnalysis(model.hierarchy, random_state=0).fit(views)
        wrong = ConcatenatedPCA(n_components=1).fit(views)
    assert right.score(test_views) > wrong.score(test_views) + 1.0


# ------------------------------------------------------------------ feature names
def test_feature_names_follow_the_component_order(small, small_fit):
    model, views, X = small
    est = small_fit
    names = est.get_feature_names_out()
    assert names.dtype == object
    assert list(names) == ["{a,b,c}_0", "{a,b,c}_1", "{a,b}_0", "{a}_0", "{b}_0", "{c}_0"]
    with pytest.raises(ValueError, match="input_features: expected 30 names"):
        est.get_feature_names_out(["x"])
    adapter = ColumnViews(HCL(hierarchy=model.hierarchy, random_state=0),
                          views={"a": slice(0, 8), "b": slice(8, 18), "c": slice(18, 30)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EstimationWarning)
        Z = adapter.fit(X).transform(X)
    assert_array_equal(adapter.get_feature_names_out(), names)
    dict_scores = est.transform(views)
    for j, name in enumerate(names):
        s = frozenset(name[1:name.index("}")].split(","))
        k = int(name.rsplit("_", 1)[1])
        # two fits (adapter, views) that agree to the solver's tolerance (tol=1e-7 on the objective)
        assert_allclose(Z[:, j], dict_scores[s][:, k], rtol=1e-6, atol=1e-9)


# ------------------------------------------------------------------ the adapter
def test_adapter_matches_the_estimator_on_views(small):
    model, views, X = small
    # modalities given out of column order: the covariance follows columns_
    spec = {"c": slice(18, 30), "a": range(0, 8), "b": np.arange(8, 18)}
    from hclstat.hierarchy import Hierarchy

    h = Hierarchy({"c": 12, "a": 8, "b": 10}, {("a", "b", "c"): 2, ("a", "b"): 1, "a": 1, "b": 1, "c": 1})
    direct = StructuredFactorAnalysis(h, random_state=0).fit({m: views[m] for m in ("c", "a", "b")})
    adapter = ColumnViews(StructuredFactorAnalysis(h, random_state=0), views=spec).fit(X)
    assert_array_equal(adapter.columns_, np.r_[18:30, 0:8, 8:18])
    # the same fit up to rounding: column extraction changes the BLAS summation order,
    # and the EM iterations carry those last digits along (measured ~1e-11)
    assert_allclose(adapter.get_covariance(), direct.get_covariance(), rtol=1e-8)
    Xc = X[:, adapter.columns_]
    assert_allclose(adapter.score_samples(X), multivariate_normal(Xc.mean(0), direct.get_covariance()).logpdf(Xc),
                    rtol=1e-10)
    assert adapter.transform(X).shape == (400, 6)
    assert adapter.estimator is not adapter.estimator_  # cloned, never fitted in place


def test_adapter_selectors(small):
    _, _, X = small
    cols = [f"f{j}" for j in range(30)]
    df = pd.DataFrame(X, columns=cols)
    mask = np.zeros(30, dtype=bool)
    mask[18:] = True
    spec = {"a": cols[:8], "b": list(range(8, 18)), "c": mask}
    est = ColumnViews(ConcatenatedPCA(2), views=spec).fit(df)
    assert {m: list(v) for m, v in est.views_.items()} == {"a": list(range(8)), "b": list(range(8, 18)),
                                                           "c": list(range(18, 30))}
    assert est.estimator_.feature_names_["a"] == cols[:8]
    assert est.transform(df).shape == (400, 2)
    dropped = ColumnViews(ConcatenatedPCA(1), views={"a": [0, 1, 2], "b": [-2, -1]}).fit(X)
    assert dropped.get_covariance().shape == (5, 5) and list(dropped.columns_) == [0, 1, 2, 28, 29]


@pytest.mark.parametrize("spec, error, message", [
    ({"a": [0, 1], "b": [1, 2]}, ValueError, r"views: column 1 is in both 'a' and 'b'"),
    ({"a": [0, 1], "b": [30]}, ValueError, r"views\['b'\]: expected column indices in \[0, 30\), got 30"),
    ({"a": ["x", "y"]}, ValueError, r"views\['a'\]: column names need a DataFrame"),
    ({"a": slice(5, 5)}, ValueError, r"views\['a'\]: expected at least one column, got none"),
    ({"a": np.ones(3, dtype=bool)}, ValueError, r"views\['a'\]: expected a boolean mask of 30 entries, got 3"),
    ({"a": [0.5, 1.5]}, TypeError, r"views\['a'\]: expected a slice, column indices, names or a boolean mask"),
    ({1: [0, 1]}, TypeError, r"views: modality names must be str, got 1"),
    ({}, ValueError, r"views: expected at least one modality, got an empty dict"),
])
def test_adapter_rejects_bad_views(small, spec, error, message):
    _, _, X = small
    with pytest.raises(error, match=message):
        ColumnViews(ConcatenatedPCA(), views=spec).fit(X)


def test_adapter_unknown_column_names(small):
    _, _, X = small
    df = pd.DataFrame(X, columns=[f"f{j}" for j in range(30)])
    with pytest.raises(ValueError, match=r"views\['a'\]: expected columns of X, got unknown names \['g1'\]"):
        ColumnViews(ConcatenatedPCA(), views={"a": ["f0", "g1"]}).fit(df)


def test_default_views_are_two_halves():
    assert {m: list(v) for m, v in default_views(5).items()} == {"x0": [0, 1, 2], "x1": [3, 4]}
    assert {m: list(v) for m, v in default_views(2).items()} == {"x0": [0], "x1": [1]}
    with pytest.raises(ValueError, match=r"expected at least 2 columns, got 1 feature\(s\)"):
        default_views(1)


def test_one_column_modality_is_fitted_as_noise_with_a_warning(small):
    _, views, _ = small
    with pytest.warns(EstimationWarning, match=r"modality 'c' has 1 column: it cannot carry a latent component"):
        est = HCL(random_state=0).fit(dict(views, c=views["c"][:, :1]))
    assert all("c" not in s for s in est.hierarchy_.structures)


def test_adapter_keeps_missing_entries(small, small_fit):
    model, views, X = small
    Xm = X.copy()
    Xm[::7, 3] = np.nan
    adapter = ColumnViews(HCL(hierarchy=model.hierarchy, random_state=0),
                          views={"a": slice(0, 8), "b": slice(8, 18), "c": slice(18, 30)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EstimationWarning)
        adapter.fit(Xm)
    assert np.all(np.isfinite(adapter.transform(Xm))) and np.isfinite(adapter.score(Xm))


# ------------------------------------------------------------------ model selection
@pytest.fixture(scope="module")
def d1_rows():
    """D1 (five rank-1 components; modalities a and b carry three each, c two), n = 500, as one array."""
    model = d1_model(0.3, random_state=0)
    views, _ = model.sample(500, random_state=100)
    return model, np.hstack([views[m] for m in D1_DIMS])


def test_pipeline_and_cross_val_score(d1_rows):
    _, X = d1_rows
    pipe = make_pipeline(StandardScaler(), ColumnViews(HCL(penalty=None, random_state=0), views=D1_VIEWS))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EstimationWarning)
        scores = cross_val_score(pipe, X, cv=KFold(3, shuffle=True, random_state=0))
        Z = clone(pipe).fit(X).transform(X)
    assert scores.shape == (3,) and np.all(np.isfinite(scores))
    assert Z.shape == (500, 5)


def test_grid_search_picks_a_max_rank_that_recovers_the_pattern(d1_rows):
    # max_rank caps every structure's rank and every modality's total rank. The true total
    # ranks are 3 (a, b) and 2 (c): max_rank 1 or 2 cannot hold the pattern, 3 can. Measured
    # over 4 designs x samples: 3 chosen every time, the true pattern recovered, and the
    # held-out log-likelihood per row above max_rank=1's by 5.0-9.1 in every fold.
    model, X = d1_rows
    pipe = make_pipeline(StandardScaler(), ColumnViews(HCL(penalty=None, random_state=0), views=D1_VIEWS))
    grid = GridSearchCV(pipe, {"columnviews__estimator__max_rank": [1, 2, 3]},
                        cv=KFold(3, shuffle=True, random_state=0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EstimationWarning)
        grid.fit(X)
    res = grid.cv_results_
    assert grid.best_params_ == {"columnviews__estimator__max_rank": 3}
    assert np.all(np.diff(res["mean_test_score"]) > 0)
    folds = np.array([res[f"split{k}_test_score"] for k in range(3)])
    assert np.all(folds[:, 2] - folds[:, 0] > 2.0)
    assert grid.best_estimator_[-1].estimator_.hierarchy_.ranks == model.hierarchy.ranks


# ------------------------------------------------------------------ packaging
def test_hclstat_imports_without_cvxpy():
    # cvxpy certifies kernels in the tests only (the `test` extra); the package must not need it
    code = (
        "import sys, importlib, pkgutil\n"
        "sys.modules['cvxpy'] = None\n"  # any `import cvxpy` now raises ImportError
        "import hclstat\n"
        "for m in pkgutil.walk_packages(hclstat.__path__, 'hclstat.'):\n"
        "    if not m.name.endswith('__main__'):\n"
        "        importlib.import_module(m.name)\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
