"""Multinomial group lasso (kernel, cvxpy certificates) and the multiclass HCLClassifier."""

from __future__ import annotations


import cvxpy as cp
import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy.special import softmax
from sklearn.model_selection import KFold
from threadpoolctl import threadpool_limits

from hclstat.downstream import HCLClassifier
from hclstat.downstream.risk import _true_posterior
from hclstat.estimators.base import ModelRepresentation
from hclstat.exceptions import EstimationWarning
from hclstat.hierarchy import Hierarchy
from hclstat.kernels import multinomial_group_lasso as mgl
from hclstat.kernels.group_lasso import logistic_group_lasso, make_groups
from hclstat.model import HierarchicalModel

SIZES = [2, 3, 1, 2, 4]


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    with threadpool_limits(1):
        yield


def _softmax_labels(eta, rng):
    """One draw of ``y ~ Categorical(softmax(eta_i))`` per row."""
    return (softmax(eta, axis=1).cumsum(axis=1) > rng.uniform(size=(eta.shape[0], 1))).argmax(axis=1)


@pytest.fixture(params=[3, 4])
def problem(request, rng):
    """Correlated design, 5 groups (2 active), ``C`` classes."""
    C = request.param
    n, p = 150, sum(SIZES)
    X = rng.standard_normal((n, p))
    X[:, 3] += X[:, 2]  # correlation across groups
    B = np.zeros((p, C))
    B[:5] = rng.standard_normal((5, C))
    y = _softmax_labels(0.2 * np.arange(C) + X @ B, rng)
    grp_ptr, grp_indices = make_groups(SIZES)
    return X, mgl.one_hot(y, C), grp_ptr, grp_indices, np.sqrt(np.asarray(SIZES, dtype=float))


def _groups(grp_ptr, grp_indices):
    return [grp_indices[grp_ptr[g]:grp_ptr[g + 1]] for g in range(grp_ptr.size - 1)]


def _cvxpy(X, Y, groups, w, lam):
    B = cp.Variable((X.shape[1], Y.shape[1]))
    b0 = cp.Variable(Y.shape[1])
    eta = X @ B + np.ones((X.shape[0], 1)) @ cp.reshape(b0, (1, Y.shape[1]), order="C")
    loss = (cp.sum(cp.log_sum_exp(eta, axis=1)) - cp.sum(cp.multiply(Y, eta))) / X.shape[0]
    pen = sum(w[g] * cp.norm(B[idx, :], "fro") for g, idx in enumerate(groups))
    prob = cp.Problem(cp.Minimize(loss + lam * pen))
    prob.solve(solver=cp.CLARABEL, tol_gap_abs=1e-9, tol_gap_rel=1e-9)
    assert prob.status == cp.OPTIMAL
    return B.value, prob.value


def _independent_kkt(X, Y, b0, B, groups, w, lam):
    """KKT residual from scipy's softmax: stationarity on active blocks, dual feasibility on zero ones."""
    R = softmax(b0 + X @ B, axis=1) - Y
    G = X.T @ R / X.shape[0]
    worst = np.linalg.norm(R.mean(axis=0))
    for g, idx in enumerate(groups):
        nb = np.linalg.norm(B[idx])
        if nb > 0:
            worst = max(worst, np.linalg.norm(G[idx] + lam * w[g] * B[idx] / nb))
        else:
            worst = max(worst, np.linalg.norm(G[idx]) - lam * w[g])
    return worst


# ------------------------------------------------------------------ kernel
@pytest.mark.parametrize("ratio", [0.5, 0.1, 0.01])
def test_solver_certified_by_cvxpy(problem, ratio):
    X, Y, grp_ptr, grp_indices, w = problem
    groups = _groups(grp_ptr, grp_indices)
    lam = ratio * mgl.multinomial_lambda_max(X, Y, grp_ptr, grp_indices, w)
    b0, B, _, viol = mgl.multinomial_group_lasso(X, Y, grp_ptr, grp_indices, w, lam, tol=1e-10)
    assert viol <= 1e-10
    B_cvx, f_cvx = _cvxpy(X, Y, groups, w, lam)
    f = mgl.multinomial_objective(X, Y, b0, B, grp_ptr, grp_indices, w, lam)
    assert abs(f - f_cvx) <= 1e-6 * abs(f_cvx)
    assert f <= f_cvx + 1e-9  # the first-order solution is at least as good as the interior point's
    ours = [np.linalg.norm(B[idx]) > 0 for idx in groups]
    theirs = [np.linalg.norm(B_cvx[idx]) > 1e-6 for idx in groups]
    assert ours == theirs
    assert_allclose(B, B_cvx - B_cvx.mean(axis=1, keepdims=True), atol=1e-4)
    # the KKT conditions, checked independently of the kernel's own residual
    assert _independent_kkt(X, Y, b0, B, groups, w, lam) <= 1e-9
    assert mgl.multinomial_kkt_violation(X, Y, b0, B, grp_ptr, grp_indices, w, lam) <= 1e-10
    # symmetric parametrisation: rows of B and the intercepts are centred over classes
    assert_allclose(B.sum(axis=1), 0.0, atol=1e-12)
    assert abs(b0.sum()) <= 1e-12


def test_lambda_max_is_the_threshold(problem):
    X, Y, grp_ptr, grp_indices, w = problem
    lam_max = mgl.multinomial_lambda_max(X, Y, grp_ptr, grp_indices, w)
    b0, B, _, viol = mgl.multinomial_group_lasso(X, Y, grp_ptr, grp_indices, w, lam_max, tol=1e-10)
    assert np.all(B == 0) and viol <= 1e-10
    logp = np.log(Y.mean(axis=0))
    assert_allclose(b0, logp - logp.mean(), atol=1e-9)  # the empty model predicts the class frequencies
    _, B, _, _ = mgl.multinomial_group_lasso(X, Y, grp_ptr, grp_indices, w, 0.99 * lam_max, tol=1e-10)
    active = [np.linalg.norm(B[idx]) > 0 for idx in _groups(grp_ptr, grp_indices)]
    assert sum(active) == 1


def test_two_classes_reduce_to_the_logistic_group_lasso(problem, rng):
    # C = 2, centred columns B = [-beta/2, beta/2]: ||B_g||_F = ||beta_g|| / sqrt(2), so the
    # multinomial problem at lam is the logistic one at lam / sqrt(2)
    X, _, grp_ptr, grp_indices, w = problem
    y = (rng.uniform(size=X.shape[0]) < 1 / (1 + np.exp(-(X[:, 0] - X[:, 4])))).astype(float)
    lam = 0.02
    b0, B, _, _ = mgl.multinomial_group_lasso(X, mgl.one_hot(y, 2), grp_ptr, grp_indices, w, lam, tol=1e-11)
    a0, beta, _, _ = logistic_group_lasso(X, y, grp_ptr, grp_indices, w, lam / np.sqrt(2), tol=1e-11)
    assert_allclose(B[:, 1] - B[:, 0], beta, atol=1e-8)
    assert b0[1] - b0[0] == pytest.approx(a0, abs=1e-8)


def test_path_warm_starts_match_single_solves(problem):
    X, Y, grp_ptr, grp_indices, w = problem
    lam_max = mgl.multinomial_lambda_max(X, Y, grp_ptr, grp_indices, w)
    lams = lam_max * np.geomspace(1.0, 0.01, 6)
    coefs, b0s, _, viols = mgl.multinomial_group_lasso_path(X, Y, grp_ptr, grp_indices, w, lams, tol=1e-10)
    assert np.all(viols <= 1e-10)
    for i in (2, 5):
        b0, B, _, _ = mgl.multinomial_group_lasso(X, Y, grp_ptr, grp_indices, w, lams[i], tol=1e-10)
        assert_allclose(coefs[i], B, atol=1e-7)
        assert_allclose(b0s[i], b0, atol=1e-7)


def test_newton_refit_is_the_maximum_likelihood(problem):
    import statsmodels.api as sm

    X, Y, grp_ptr, grp_indices, w = problem
    b0, B, n_iter, grad = mgl.multinomial_newton(X, Y, tol=1e-10)
    assert grad <= 1e-10 and n_iter < 20
    # statsmodels' MNLogit (baseline class 0) is an independent implementation of the same MLE
    res = sm.MNLogit(Y.argmax(axis=1), np.column_stack([np.ones(X.shape[0]), X])).fit(disp=0, tol=1e-12)
    full = np.vstack([b0, B])
    assert_allclose(full[:, 1:] - full[:, :1], np.asarray(res.params), atol=1e-6)
    # and the penalised solver at lambda = 0 (one unpenalised group) reaches the same point
    ptr, idx = make_groups([X.shape[1]])
    c0, Bf, _, _ = mgl.multinomial_group_lasso(X, Y, ptr, idx, np.ones(1), 0.0, tol=1e-10)
    assert_allclose(Bf, B, atol=1e-7)
    assert_allclose(c0, b0, atol=1e-7)


def test_newton_under_separation_stops_quickly(rng):
    # a class of one row is separable from the rest: no MLE; the gradient still goes flat fast
    X = rng.standard_normal((80, 3))
    y = (X[:, 0] > 0).astype(int)
    y[np.argmax(X[:, 1])] = 2
    _, B, n_iter, grad = mgl.multinomial_newton(X, mgl.one_hot(y, 3), tol=1e-7)
    assert grad <= 1e-7 and n_iter <= 40
    assert np.abs(B).max() > 10  # the coefficients of the separated class are large


def test_kernel_input_errors(problem):
    X, Y, grp_ptr, grp_indices, w = problem
    with pytest.raises(ValueError, match="Y: expected one-hot rows"):
        mgl.multinomial_group_lasso(X, 2 * Y, grp_ptr, grp_indices, w, 0.1)
    with pytest.raises(ValueError, match="Y: class column 1 has no rows"):
        mgl.multinomial_group_lasso(X, mgl.one_hot(np.zeros(X.shape[0]), 3), grp_ptr, grp_indices, w, 0.1)
    with pytest.raises(ValueError, match=r"X, Y: expected shapes \(n, p\) and \(n, C\)"):
        mgl.multinomial_group_lasso(X, Y[:-1], grp_ptr, grp_indices, w, 0.1)
    with pytest.raises(ValueError, match="lam: expected a non-negative number"):
        mgl.multinomial_group_lasso(X, Y, grp_ptr, grp_indices, w, -1.0)
    with pytest.raises(ValueError, match="B0: expected shape"):
        mgl.multinomial_group_lasso(X, Y, grp_ptr, grp_indices, w, 0.1, B0=np.zeros(3))


# -------------------------------------------------------------- estimator
H = Hierarchy(dims={"a": 15, "b": 20, "c": 25},
              ranks={("a", "b", "c"): 2, ("a", "b"): 2, ("b", "c"): 2, "a": 2, "b": 2, "c": 2})
TRUE = {frozenset("abc"), frozenset("ab")}


def _class_coefs(C):
    """Softmax coefficients (one column per class) on the two relevant structures: each structure
    moves the log-odds of class ``c`` along the unit direction at angle ``2 pi c / C`` (the second
    structure's directions rotated by ``pi / C``), so every class is equally separable at any ``C``."""
    angle = 2 * np.pi * np.arange(C) / C
    return {("a", "b", "c"): np.vstack([np.cos(angle), np.sin(angle)]),
            ("a", "b"): np.vstack([np.cos(angle + np.pi / C), np.sin(angle + np.pi / C)])}


def _labelled(model, m, seed, C):
    """Views and a softmax outcome ``y ~ Categorical(softmax(eta))``, ``eta_c = z^T beta_c`` (and ``eta``)."""
    views, latents = model.sample(m, random_state=np.random.default_rng([seed, 1]))
    coef = _class_coefs(C)
    eta = np.column_stack([model.linear_predictor(latents, {s: b[:, c] for s, b in coef.items()})
                           for c in range(C)])
    return views, _softmax_labels(eta, np.random.default_rng([seed, 2])), eta


def _design(noise):
    model = HierarchicalModel.random(H, noise=noise, random_state=1)
    return model, ModelRepresentation(model).fit()


@pytest.fixture(scope="module")
def design():
    return _design(1.0)


@pytest.fixture(scope="module")
def sharp_design():
    """Less noise: the latents are nearly determined by the views (Cov(z|x) small)."""
    return _design(0.1)


def _oracle_accuracies(model, C, n=20_000):
    """Held-out sample and the accuracy of the true softmax on the latents and on the posterior means."""
    views, y, eta = _labelled(model, n, 10**6, C)
    mean, _ = _true_posterior(model, views)
    coef = _class_coefs(C)
    B = np.vstack([coef[("a", "b", "c")], coef[("a", "b")], np.zeros((8, C))])  # hierarchy component order
    return views, y, np.mean(eta.argmax(axis=1) == y), np.mean((mean @ B).argmax(axis=1) == y)


#: exact selection (the two relevant structures, nothing else) with the default rule (BIC), measured
#: over 20 seeds per m with n_lambdas=20 on the noise-1 design: 19/20 at m = 150 (one miss of {a,b,c}),
#: 20/20 at m = 200 and 300, for 3 and for 4 classes
M_SELECT = 150


def test_selects_the_relevant_structures(design):
    model, rep = design
    exact = 0
    for seed in range(10):
        views, y, _ = _labelled(model, M_SELECT, seed, 4)
        clf = HCLClassifier(rep, n_lambdas=20, random_state=seed).fit(views, y)
        exact += set(clf.selected_structures_) == TRUE
        assert set(clf.selected_structures_) <= TRUE  # no false structure in any measured fit
    assert exact >= 8, exact  # P(exact <= 7 of 10) = 0.01 at the measured rate 0.95


def test_accuracy_close_to_the_oracle(sharp_design):
    # measured over 20 seeds at m = 500: gap 0.6 points on average (1.4 at most) to the posterior-mean
    # oracle, 2.0 to the true-latent oracle (1.4 of which is the irreducible Cov(z | x) of not seeing z)
    model, rep = sharp_design
    test_views, test_y, acc_latent, acc_scores = _oracle_accuracies(model, 4)
    assert acc_latent - acc_scores < 0.025  # the design: the latents are nearly observed
    views, y, _ = _labelled(model, 500, 3, 4)
    clf = HCLClassifier(rep, n_lambdas=20, random_state=0).fit(views, y)
    assert set(clf.selected_structures_) == TRUE
    acc = clf.score(test_views, test_y)
    assert acc_scores - 0.02 <= acc <= acc_scores + 0.005  # the 2 points; the oracle is the upper end
    assert acc >= acc_latent - 0.04


def test_ten_classes(design):
    # the claim: 10 classes, the relevant structures, accuracy within 2 points of the oracle scores
    # (measured over 20 seeds at m = 1000: exact 20/20, gap 0.9 points on average, 1.8 at most)
    model, rep = design
    test_views, test_y, _, acc_scores = _oracle_accuracies(model, 10)
    for seed in range(5):
        views, y, _ = _labelled(model, 1000, seed, 10)
        clf = HCLClassifier(rep, n_lambdas=20, random_state=seed).fit(views, y)
        assert set(clf.selected_structures_) == TRUE
        assert clf.score(test_views, test_y) >= acc_scores - 0.02


def test_fitted_model_and_refit_inference(design):
    model, rep = design
    C = 3
    views, codes, _ = _labelled(model, 600, 21, C)
    names = np.array(["low", "high", "mid"])  # classes_ sorts them: high, low, mid
    y = names[codes]
    clf = HCLClassifier(rep, n_lambdas=20, random_state=0).fit(views, y)
    assert list(clf.classes_) == ["high", "low", "mid"]
    assert set(clf.selected_structures_) == TRUE
    h = model.hierarchy
    assert all(clf.coef_[s].shape == (h.rank(s), C) for s in h.structures)
    assert all(np.all(clf.coef_[s] == 0) for s in h.structures if s not in TRUE)
    assert clf.intercept_.shape == (C,) and abs(clf.intercept_.sum()) < 1e-10
    assert clf.path_coefs_.shape == (20, 12, C) and np.all(clf.path_coefs_[0] == 0)
    assert clf.lambda_path_[0] == pytest.approx(clf.lambda_max_)
    # predictions: softmax of the decision function, columns in classes_ order
    v2, c2, _ = _labelled(model, 400, 22, C)
    eta = clf.decision_function(v2)
    proba = clf.predict_proba(v2)
    assert eta.shape == proba.shape == (400, C)
    assert_allclose(proba, softmax(eta, axis=1), rtol=1e-12)
    assert_allclose(proba.sum(axis=1), 1.0, atol=1e-12)
    assert np.all(clf.predict(v2) == clf.classes_[proba.argmax(axis=1)])
    assert clf.score(v2, names[c2]) == pytest.approx(np.mean(clf.predict(v2) == names[c2]))
    # the refit is MNLogit with baseline classes_[0]: its contrasts are ours
    res = clf.refit_results_
    assert type(res).__name__ == "MultinomialResultsWrapper"
    full = np.vstack([clf.intercept_, np.concatenate([clf.coef_[s] for s in h.structures])[clf.support_]])
    assert_allclose(np.asarray(res.params), full[:, 1:] - full[:, :1], atol=1e-4)
    # BIC of the chosen set from statsmodels' log-likelihood, df = (components + 1)(C - 1)
    k = int(clf.support_.sum())
    assert clf.criterion_path_[clf.lambda_index_] == pytest.approx(-2 * res.llf + (k + 1) * (C - 1) * np.log(600),
                                                                    rel=1e-8)
    text = str(clf.summary())
    assert "y=low" in text and "y=mid" in text and "MNLogit" in text and "Post-selection inference" in text
    frame = clf.summary_frame()
    assert frame.index.names == ["class", "term"]
    assert list(frame.index.get_level_values("class").unique()) == ["low", "mid"]
    assert list(frame.columns) == ["structure", "component", "coef", "std_err", "ci_low", "ci_high", "p_value"]
    assert_allclose(frame.loc["mid", "coef"].to_numpy(), np.asarray(res.params)[:, 1])
    assert_allclose(frame.loc["low", "std_err"].to_numpy(), np.asarray(res.bse)[:, 0])
    lo, hi = frame["ci_low"].to_numpy(), frame["ci_high"].to_numpy()
    assert np.all(lo < frame["coef"].to_numpy()) and np.all(frame["coef"].to_numpy() < hi)
    # held-out rows: inference by sample splitting on the same selected set
    held = clf.summary_frame(v2, names[c2])
    assert list(held.index) == list(frame.index) and not np.allclose(held["coef"], frame["coef"])
    with pytest.raises(ValueError, match=r"y: labels \['other'\] were not seen in fit"):
        clf.summary_frame(v2, np.where(c2 == 0, "other", names[c2]))
    with pytest.raises(ValueError, match="y: the held-out rows have no row of class 'mid'"):
        clf.summary_frame(v2, np.where(names[c2] == "mid", "low", names[c2]))


def test_cross_validation_criterion(design):
    model, rep = design
    views, y, _ = _labelled(model, 400, 31, 4)
    clf = HCLClassifier(rep, criterion="cv", n_lambdas=15, random_state=0).fit(views, y)
    assert clf.cv_scores_.shape == (15, 5) and np.all(np.isfinite(clf.cv_scores_))
    assert_allclose(clf.criterion_path_, clf.cv_scores_.mean(axis=1))
    # the chosen model predicts better than the class frequencies (their log-loss is the entropy)
    freq = np.bincount(y) / y.size
    assert clf.criterion_path_[clf.lambda_index_] < -np.sum(freq * np.log(freq)) - 0.05
    assert set(clf.selected_structures_) == TRUE
    mins = HCLClassifier(rep, criterion="cv", cv_rule="min", n_lambdas=15, random_state=0).fit(views, y)
    assert mins.lambda_ <= clf.lambda_
    assert mins.lambda_index_ == int(np.argmin(mins.criterion_path_))


def test_separated_refit_warns(design):
    model, rep = design
    views, y, _ = _labelled(model, 80, 41, 3)
    y[5] = 3  # a class with a single member: its refit coefficients run off to infinity
    with pytest.warns(EstimationWarning, match=r"MNLogit refit failed .* the rarest, 3, has 1 of 80"):
        clf = HCLClassifier(rep, n_lambdas=10).fit(views, y)
    assert clf.refit_results_ is None
    with pytest.raises(ValueError, match="summary: the refit could not be computed"):
        clf.summary()
    assert clf.predict_proba(views).shape == (80, 4)  # predictions still work


def test_bad_input_errors(design):
    model, rep = design
    views, y, _ = _labelled(model, 60, 2, 3)
    rare = y.copy()
    rare[rare == 2] = 1
    rare[0] = 2
    with pytest.raises(ValueError, match=r"cv=5: class 2 has only 1 row\(s\); stratified 5-fold"):
        HCLClassifier(rep, criterion="cv").fit(views, rare)
    with pytest.raises(ValueError, match="y: NaN or infinite label at position 3"):
        HCLClassifier(rep).fit(views, np.where(np.arange(60) == 3, np.nan, y))
    labels = np.array(["a", "b", "c"], dtype=object)[y]
    labels[4] = None
    with pytest.raises(ValueError, match="y: missing label at position 4"):
        HCLClassifier(rep).fit(views, labels)
    with pytest.raises(ValueError, match=r"y: expected class labels .* got a one-hot matrix of shape \(60, 3\)"):
        HCLClassifier(rep).fit(views, mgl.one_hot(y, 3))
    with pytest.raises(ValueError, match="modality 'a': expected a 2-D array"):
        HCLClassifier(rep).fit({**views, "a": views["a"][:, 0]}, y)
    order = np.argsort(y, kind="stable")  # unshuffled folds on sorted labels: the last class misses a fold
    sorted_views = {k: v[order] for k, v in views.items()}
    with pytest.raises(ValueError, match="cv: a training fold has no row of class 2"):
        HCLClassifier(rep, criterion="cv", cv=KFold(3), n_lambdas=5).fit(sorted_views, y[order])
    clf = HCLClassifier(rep, n_lambdas=5).fit(views, y)
    with pytest.raises(ValueError, match="views: expected modalities"):
        clf.predict_proba({"a": views["a"], "b": views["b"]})
