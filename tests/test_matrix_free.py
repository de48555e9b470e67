"""MatrixFreeHCL and its operator: products, spectra, agreement with HCL, memory.

Agreement designs are D1-like (one global, one {a,b} and one specific component
per modality; loadings i.i.d. N(0, s^2)) at p = (80, 100, 120), n = 2000, where
the dense HCL is cheap. Both estimators minimise the same objective and draw
the same permutations, so they must learn the same hierarchy with the same
thresholds, and their loading subspaces must be much closer to each other than
either is to the truth: distance between the estimates <= 0.2 x their error
to the truth + 1e-3 (measured: at most 0.01 x the error).
"""

from __future__ import annotations

import tracemalloc
import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose
from sklearn.base import clone
from threadpoolctl import threadpool_limits

from hclstat import HCL, ConvergenceWarning, EstimationWarning, HierarchicalModel, Hierarchy, compute_moments
from hclstat.estimators.base import BaseHierarchicalEstimator
from hclstat.factor_analysis import fa_noise
from hclstat.estimators.hcl import hcl_objective
from hclstat.estimators.matrix_free import CentredData, MatrixFreeHCL, block_lanczos
from hclstat.metrics import loading_errors
from hclstat.moments import CovarianceDatafit
from hclstat.lattice import bound_test, permutation_test
from hclstat.solvers import ProductMajoriseMinimise, RowLeastSquares, gaussian_bic
from hclstat.solvers.product_mm import LoadingState
from hclstat.solvers.selection import describe_support, noise_variances, support_of

DIMS = {"a": 80, "b": 100, "c": 120}
RANKS = {("a", "b", "c"): 1, ("a", "b"): 1, "a": 1, "b": 1, "c": 1}
N = 2000


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    # many thin products: BLAS threads on a shared 2-core machine only contend
    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def d1():
    return Hierarchy(DIMS, RANKS)


def _views(h, seed, n=N, offset=0.0, **kw):
    kw.setdefault("loading_scale", 0.3)
    model = HierarchicalModel.random(h, random_state=seed, **kw)
    views, _ = model.sample(n, random_state=100 + seed)
    return model, {m: x + offset for m, x in views.items()}


@pytest.fixture(scope="module")
def small(d1):
    # non-zero means, so centring inside the products is exercised
    model, views = _views(Hierarchy({"a": 20, "b": 30, "c": 25}, RANKS), 3, n=400, offset=5.0, loading_scale=0.5)
    mom = compute_moments(views)
    return views, mom


# ------------------------------------------------------------------ operator
def test_operator_products_equal_dense_products(small, rng):
    views, mom = small
    op = CentredData(views)
    S, sl = mom.covariance, mom.slices
    scale = np.abs(S).max()
    for a in "abc":
        for b in "abc":
            B = rng.standard_normal((op.dims[b], 3))
            assert_allclose(op.cross(a, b, B), S[sl[a], sl[b]] @ B, rtol=0, atol=1e-10 * scale * np.abs(B).sum(0).max())
        assert_allclose(op.diag(a), np.diag(S[sl[a], sl[a]]), rtol=1e-12)
        assert_allclose(op.frobenius2(a, "b", chunk_columns=7), np.sum(S[sl[a], sl["b"]] ** 2), rtol=1e-10)
    # column scales act inside the products: diag(s) S diag(s)
    s = rng.uniform(0.5, 2.0, S.shape[0])
    ops = op.rescaled(s)
    Sw = S * s[:, None] * s[None, :]
    B = rng.standard_normal((op.dims["c"], 2))
    assert_allclose(ops.cross("a", "c", B), Sw[sl["a"], sl["c"]] @ B, rtol=0, atol=1e-10 * np.abs(Sw).max() * 30)
    assert_allclose(ops.stacked_diag(), np.diag(Sw), rtol=1e-12)
    # a row subset keeps the full-sample means (as HCL centres its permutation rows)
    rows = np.sort(rng.choice(400, 150, replace=False))
    sub = op.subset(rows)
    Xc = {m: views[m][rows] - mom.means[sl[m]] for m in "abc"}
    Y = rng.standard_normal((20, 2))
    assert_allclose(sub.cross("b", "a", Y), Xc["b"].T @ (Xc["a"] @ Y) / 149, rtol=0, atol=1e-10 * scale * 20)


def test_block_lanczos_matches_dense_spectra(small, rng):
    views, mom = small
    op = CentredData(views)
    S, sl = mom.covariance, mom.slices
    cross = S[sl["a"], np.r_[sl["b"], sl["c"]]]
    exact = np.linalg.svd(cross, compute_uv=False)
    s = op.svd("a", ["b", "c"], 6, random_state=0)
    assert_allclose(s, exact[:6], rtol=1e-8)
    U, s, V = op.svd("c", ["a"], 4, random_state=1, return_vectors=True)  # runs on the smaller side
    block = S[sl["c"], sl["a"]]
    assert_allclose(block @ V, U * s, rtol=0, atol=1e-8 * s[0])
    assert_allclose(U.T @ U, np.eye(4), atol=1e-10)
    assert_allclose(op.norm2("b", tol=1e-12), np.linalg.norm(S[sl["b"], sl["b"]], 2), rtol=1e-10)
    # permutation nulls: the spectral norm of X_a^T X_U[perm] / (n - 1), all permutations at once
    perms = [rng.permutation(400) for _ in range(3)]
    Xc = {m: views[m] - mom.means[sl[m]] for m in "abc"}
    XU = np.hstack([Xc["b"], Xc["c"]])
    dense = [np.linalg.norm(Xc["a"].T @ XU[p] / 399, 2) for p in perms]
    # block Lanczos from products, in double precision
    assert_allclose(op.permutation_nulls("a", ["b", "c"], perms, random_state=2), dense, rtol=1e-8)
    # dense single-precision nulls (the rows behind HCL; documented: ~1e-8 relative, well inside 1e-6)
    dense_op = CentredData(views, dense_nulls=True)
    assert_allclose(dense_op.permutation_nulls("a", ["b", "c"], perms), dense, rtol=1e-6)
    assert_allclose(dense_op.permutation_nulls("a", ["c"], perms),
                    [np.linalg.norm(Xc["a"].T @ Xc["c"][p] / 399, 2) for p in perms], rtol=1e-6)
    # a symmetric indefinite operator: largest algebraic eigenvalues
    M = rng.standard_normal((60, 60))
    M = M + M.T
    w, V = block_lanczos(lambda B: M @ B, 60, 3, random_state=3)
    assert_allclose(w, np.linalg.eigvalsh(M)[::-1][:3], rtol=1e-9)
    assert_allclose(M @ V, V * w, atol=1e-6)


@pytest.mark.parametrize("p, r", [(20, 2), (40, 3)])
def test_factor_noise_from_products_solves_the_fa_noise_problem(rng, p, r):
    # CentredData.fa_noise iterates the stationarity condition of the Gaussian factor fit
    # from products; run to convergence it lands on hclstat.factor_analysis.fa_noise
    # (measured: 2e-8, 6e-8 relative), at its default tolerance within 1% (measured 0.1%, 0.5%)
    L = rng.standard_normal((p, r))
    psi = np.exp(rng.uniform(-1.0, 1.0, p))
    X = rng.standard_normal((2000, r)) @ L.T + rng.standard_normal((2000, p)) * np.sqrt(psi)
    views = {"a": X, "b": rng.standard_normal((2000, 5))}
    op = CentredData(views, random_state=0)
    reference = fa_noise(compute_moments(views).block("a", "a"), r)
    assert_allclose(op.fa_noise("a", r, tol=1e-9, n_iter=5000), reference, rtol=1e-6)
    assert_allclose(op.fa_noise("a", r), reference, rtol=1e-2)


def test_objective_trace_form_equals_hcl_objective(small, rng):
    # the monitored objective is F(A) - C; adding the constant back gives HCL's objective
    views, mom = small
    h = Hierarchy({"a": 20, "b": 30, "c": 25}, RANKS)
    sl = [mom.slices[m] for m in "abc"]
    support = support_of(h)
    A = rng.standard_normal((75, h.n_components)) * np.repeat(support, [20, 30, 25], axis=0)
    dh = 1.0 / np.sqrt(rng.uniform(0.5, 2.0, 75) * np.diag(mom.covariance))
    op = CentredData(views).rescaled(dh)
    Sw = mom.covariance * dh[:, None] * dh[None, :]
    diags = [op.diag(m) for m in "abc"]
    const = sum(op.frobenius2(a, b) for a, b in (("a", "b"), ("a", "c"), ("b", "c")))
    const += 0.5 * 0.7 * sum(op.frobenius2(m, m) for m in "abc")
    value = ProductMajoriseMinimise(gamma=0.7).objective(op, LoadingState(op, A), diags) + const
    assert_allclose(value, hcl_objective(Sw, A, sl, support, gamma=0.7), rtol=1e-10)


def test_bic_by_woodbury_equals_dense(small, rng):
    views, mom = small
    h = Hierarchy({"a": 20, "b": 30, "c": 25}, RANKS)
    support = support_of(h)
    A = 0.5 * rng.standard_normal((75, h.n_components)) * np.repeat(support, [20, 30, 25], axis=0)
    S = mom.covariance
    psi = noise_variances(CovarianceDatafit(mom), A, "diagonal")
    # the likelihood by slogdet on the p x p model covariance, independent of the Woodbury form
    Sigma = A @ A.T + np.diag(psi)
    sign, logdet = np.linalg.slogdet(Sigma)
    assert sign > 0
    # loadings: {a,b,c} 75 + {a,b} 50 + {a} 20 + {b} 30 + {c} 25; noise: 75 variances
    dense = 400 * (logdet + np.trace(np.linalg.solve(Sigma, S))) + np.log(400) * (200 + 75)
    for datafit in (CovarianceDatafit(mom), CentredData(views)):
        # measured: 4e-9 (dense), 1.2e-8 (products, means of 5 centred inside them)
        assert_allclose(gaussian_bic(datafit, A, psi, support, 400, "diagonal"), dense, rtol=5e-8)


# ------------------------------------------------------------ against HCL
def _assert_close_to_hcl(dense, free, model):
    assert free.hierarchy_ == dense.hierarchy_
    err_d = loading_errors(dense.loadings_, model.loadings)
    err_f = loading_errors(free.loadings_, model.loadings)
    between = loading_errors(free.loadings_, dense.loadings_)
    assert set(between) == set(err_d)
    for key, dist in between.items():
        assert dist <= 0.2 * min(err_d[key], err_f[key]) + 1e-3, (key, dist, err_d[key], err_f[key])
    for m in dense.modalities_:
        assert_allclose(free.noise_variances_[m], dense.noise_variances_[m], rtol=0.02)


@pytest.mark.parametrize(
    "seed, kw",
    [(0, {}), (1, {}), (2, {"noise_model": "diagonal"}), (3, {"loading_scale": 0.15})],
    ids=["iso-0", "iso-1", "heteroskedastic", "weak-s0.15"],
)
def test_learns_the_same_hierarchy_and_loadings_as_hcl(d1, seed, kw):
    model, views = _views(d1, seed, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EstimationWarning)
        dense = HCL(random_state=0).fit(views)
        free = MatrixFreeHCL(random_state=0).fit(views)
    assert dense.hierarchy_ == d1
    _assert_close_to_hcl(dense, free, model)
    # same permutations, spectra to Ritz accuracy: the lattice is the same table
    assert_allclose(free.lattice_.observed["threshold"], dense.lattice_.observed["threshold"], rtol=1e-6)
    assert_allclose(free.lattice_.observed["top_singular_value"], dense.lattice_.observed["top_singular_value"],
                    rtol=1e-6)
    assert (free.lattice_.observed["rank"] == dense.lattice_.observed["rank"]).all()


def test_row_subsample_isotropic_model_and_narrow_modality_agree_with_hcl():
    # permutation nulls on a row subset (n > permutation_rows), the isotropic
    # Tracy-Widom rule, and a narrow modality (p^2 <= n: likelihood-ratio ranks)
    h = Hierarchy({"a": 30, "b": 100, "c": 120}, RANKS)
    model, views = _views(h, 5, loading_scale=0.4)
    kw = dict(random_state=1, permutation_rows=900)
    for noise_model in ("isotropic", "diagonal"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", EstimationWarning)
            dense = HCL(noise_model=noise_model, **kw).fit(views)
            free = MatrixFreeHCL(noise_model=noise_model, **kw).fit(views)
        assert dense.hierarchy_ == h
        _assert_close_to_hcl(dense, free, model)
        # HCL matches its subsample's covariances to the full sample's before permuting
        # (hclstat.moments.nulls.matched_rows, plus the second-order finite-size factor);
        # MatrixFreeHCL, which forms no p x p block, rescales to first order only: the same
        # draws, thresholds within a few per cent (measured -0.5% to +2.6% here)
        ratio = free.lattice_.observed["threshold"].to_numpy() / dense.lattice_.observed["threshold"].to_numpy()
        assert np.all(np.abs(ratio - 1) < 0.06) and not np.allclose(ratio, 1, rtol=1e-3), ratio
        assert (free.lattice_.observed["rank"] == dense.lattice_.observed["rank"]).all()


def test_four_modalities_and_bic_selection_agree_with_hcl():
    h = Hierarchy({"a": 60, "b": 70, "c": 80, "d": 90},
                  {("a", "b", "c", "d"): 1, ("a", "b"): 1, ("b", "c", "d"): 1, "a": 1, "d": 1})
    model, views = _views(h, 12, n=1500)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EstimationWarning)
        dense = HCL(penalty="group", selection="bic", random_state=0).fit(views)
        free = MatrixFreeHCL(penalty="group", selection="bic", random_state=0).fit(views)
    assert dense.hierarchy_ == h
    _assert_close_to_hcl(dense, free, model)
    # the BIC of every visited support, by Woodbury on products vs slogdet on the moments
    assert_allclose(free.selection_path_["bic"], dense.selection_path_["bic"], rtol=1e-6)
    assert list(free.selection_path_["pattern"]) == list(dense.selection_path_["pattern"])
    # exactly one support is selected, and it is the pattern both estimators return
    for est in (dense, free):
        chosen = est.selection_path_[est.selection_path_["selected"]]
        assert len(set(chosen["support"])) == 1
        assert chosen["pattern"].iloc[0] == describe_support(est.hierarchy_, support_of(est.hierarchy_))


def test_given_hierarchy_objective_decreases_monotonically(d1):
    model, views = _views(d1, 7)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        free = MatrixFreeHCL(hierarchy=d1, random_state=0).fit(views)
        dense = HCL(hierarchy=d1, random_state=0).fit(views)
    path = np.asarray(free.objective_path_)
    assert free.converged_ and free.n_iter_ == path.size - 1 and path.size > 2
    assert np.all(np.diff(path) <= 1e-12 * np.abs(path).max())
    assert path[-1] < path[0]
    assert free.lattice_ is None and free.selection_path_.empty
    _assert_close_to_hcl(dense, free, model)


def test_max_iter_gives_a_convergence_warning(d1):
    _, views = _views(d1, 8, n=500)
    with pytest.warns(ConvergenceWarning, match=r"MatrixFreeHCL stopped after max_iter=2 alternations"):
        est = MatrixFreeHCL(hierarchy=d1, max_iter=2, random_state=0).fit(views)
    assert not est.converged_ and est.n_iter_ == 2


# ------------------------------------------------------------------ memory
@pytest.mark.parametrize("noise_model", ["diagonal", "isotropic"])
def test_fit_never_forms_a_p_by_p_block(noise_model):
    # p_m = 4000 per modality: any p_a x p_b or p_a x p_a block is 128 MB; the whole
    # learned fit (lattice, nulls, Tracy-Widom ranks, initialiser, path, refit) must
    # stay at a quarter of that beyond the data (measured peak: about 11 MB, mostly Krylov bases)
    dims = {"a": 4000, "b": 4000, "c": 4000}
    h = Hierarchy(dims, RANKS)
    model, views = _views(h, 11, n=500)
    # warm up: imports and Numba loading allocate Python objects once
    MatrixFreeHCL(noise_model=noise_model, random_state=0).fit({m: x[:200, :40] for m, x in views.items()})
    tracemalloc.start()
    try:
        est = MatrixFreeHCL(noise_model=noise_model, random_state=0).fit(views)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    block = 4000 * 4000 * 8
    assert peak < block / 4, f"peak {peak / 1e6:.1f} MB"
    assert est.hierarchy_ == h
    assert max(loading_errors(est.loadings_, model.loadings).values()) < 0.2


# ------------------------------------------------------------------ contract
def test_estimator_contract_and_transform(d1):
    est = MatrixFreeHCL(hierarchy=d1, gamma=0.5, random_state=3)
    assert clone(est).get_params() == est.get_params()
    assert set(est.get_params()) == set(HCL().get_params())
    _, views = _views(d1, 9, n=400)
    est.fit(views)
    scores = est.transform(views)
    reference = BaseHierarchicalEstimator.transform(est, views)  # stacks the views
    assert set(scores) == set(d1.structures)
    for s in scores:
        assert scores[s].shape == (400, d1.rank(s))
        assert_allclose(scores[s], reference[s], rtol=0, atol=1e-12)
    for m in d1.modalities:
        assert_allclose(est.means_[m], views[m].mean(axis=0))
    assert est.objective_constant_estimate_ > 0


def test_errors_are_named(d1):
    _, views = _views(d1, 10, n=300)
    bad = dict(views)
    bad["b"] = views["b"].copy()
    bad["b"][4, 7] = np.nan
    with pytest.raises(ValueError, match=r"modality 'b': missing value \(NaN\) at row 4, column 7"):
        MatrixFreeHCL(hierarchy=d1).fit(bad)
    with pytest.raises(TypeError, match=r"MatrixFreeHCL works from the rows .* use HCL\(\)\.fit_moments"):
        MatrixFreeHCL().fit_moments(compute_moments(views))
    const = dict(views)
    const["a"] = views["a"].copy()
    const["a"][:, 3] = 1.0
    with pytest.raises(ValueError, match="feature 3 of the stacked data has zero variance"):
        MatrixFreeHCL().fit(const)
    with pytest.raises(ValueError, match="noise_model: expected 'diagonal' or 'isotropic'"):
        MatrixFreeHCL(noise_model="full").fit(views)
    with pytest.raises(ValueError, match=r"views: expected aligned rows, got 300 and 299 \(modality 'b'\)"):
        CentredData({"a": views["a"], "b": views["b"][:299]})


def test_a_solver_names_the_datafit_operations_it_lacks(small):
    views, mom = small
    dense, data = CovarianceDatafit(mom), CentredData(views)
    A = np.zeros((75, 1))
    support = np.ones((3, 1), dtype=bool)
    with pytest.raises(TypeError, match=r"RowLeastSquares needs the datafit operations \['covariance_matrix'\], "
                                        r"which CentredData does not implement"):
        RowLeastSquares().fit(data, A, support)
    with pytest.raises(TypeError, match=r"ProductMajoriseMinimise needs the datafit operations "
                                        r"\['matmat', 'rmatmat', 'objective_constant'\], which CovarianceDatafit"):
        ProductMajoriseMinimise().fit(dense, A, support)
    with pytest.raises(TypeError, match=r"the permutation threshold policy needs the datafit operations "
                                        r"\['permutation_nulls'\], which CovarianceDatafit does not implement"):
        permutation_test(data, dense, {})
    with pytest.raises(TypeError, match=r"the bound threshold policy needs the datafit operations \['null_bound'\]"):
        bound_test(data)


def test_product_solver_rejects_a_step_that_does_not_majorise(small):
    # the majoriser of the product solver starts at a curvature bound and measured, holds at the
    # first trial; with no trial allowed (max_doublings=0) no step can be certified, and every
    # one must be rejected and counted, leaving the loadings and the objective as they were,
    # and an unchanged objective after rejected steps is not convergence
    views, _ = small
    h = Hierarchy({"a": 20, "b": 30, "c": 25}, RANKS)
    support = support_of(h)
    A0 = 0.5 * np.random.default_rng(1).standard_normal((75, 5)) * np.repeat(support, [20, 30, 25], axis=0)
    A, info = ProductMajoriseMinimise(max_iter=3, max_doublings=0).fit(CentredData(views, random_state=0), A0, support)
    assert info.n_rejected == 3 * 3  # every modality in every alternation
    assert info.n_iter == 3 and not info.converged
    assert_allclose(A, A0, rtol=0, atol=0)
    assert np.ptp(info.objective_path) == 0.0
