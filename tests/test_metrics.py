"""Tests for :mod:`hclstat.metrics`."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy.stats import ortho_group

from hclstat.hierarchy import Hierarchy
from hclstat.metrics import (
    block_errors,
    loading_errors,
    orthonormal_basis,
    pattern_scores,
    principal_angles,
    subspace_distance,
)
from hclstat.model import HierarchicalModel

fs = frozenset
KINDS = ("sin_theta", "chordal", "spectral")


def _projector(A):
    q = orthonormal_basis(A)
    return q @ q.T


def _well_conditioned(rng, k):
    """A random invertible k x k matrix with condition number <= 10."""
    u, v = ortho_group.rvs(k, random_state=rng), ortho_group.rvs(k, random_state=rng)
    return (u * rng.uniform(0.1, 1.0, k)) @ v if k > 1 else np.array([[rng.uniform(0.1, 1.0)]])


# ------------------------------------------------------- subspace distance
@pytest.mark.parametrize("kind", KINDS)
def test_subspace_distance_invariant_to_bases(rng, kind):
    p, k = 20, 4
    U, V = rng.standard_normal((p, k)), rng.standard_normal((p, k))
    ref = subspace_distance(U, V, kind)
    assert 0 < ref
    for _ in range(5):
        G, H = _well_conditioned(rng, k), _well_conditioned(rng, k)
        assert_allclose(subspace_distance(U @ G, V @ H, kind), ref, rtol=1e-10)
    for c in (1e-6, 3.0, 1e6):
        assert_allclose(subspace_distance(c * U, V / c, kind), ref, rtol=1e-10)
    assert_allclose(subspace_distance(V, U, kind), ref, rtol=1e-12)  # symmetric


@pytest.mark.parametrize("kind", KINDS)
def test_identical_spaces_are_at_zero(rng, kind):
    U = rng.standard_normal((15, 3))
    assert subspace_distance(U, U, kind) < 1e-12
    assert subspace_distance(U, U @ _well_conditioned(rng, 3), kind) < 1e-12
    assert subspace_distance(U[:, 0], 5.0 * U[:, 0], kind) < 1e-12  # 1-D input is a column


@pytest.mark.parametrize("k", [1, 2, 5])
def test_orthogonal_spaces(rng, k):
    Q = ortho_group.rvs(12, random_state=rng)
    U, V = Q[:, :k] @ _well_conditioned(rng, k), Q[:, k : 2 * k]
    assert_allclose(subspace_distance(U, V, "sin_theta"), np.sqrt(k), rtol=1e-12)
    assert_allclose(subspace_distance(U, V, "chordal"), np.sqrt(2 * k), rtol=1e-12)
    assert_allclose(subspace_distance(U, V, "spectral"), 1.0, rtol=1e-12)


def test_known_angles_and_projector_identities(rng):
    Q = ortho_group.rvs(10, random_state=rng)
    t1, t2 = 0.3, 1.1
    U = Q[:, :2]
    V = np.column_stack([np.cos(t1) * Q[:, 0] + np.sin(t1) * Q[:, 2], np.cos(t2) * Q[:, 1] + np.sin(t2) * Q[:, 3]])
    assert_allclose(principal_angles(U, V), [t1, t2], rtol=1e-12)
    s2 = np.sin(t1) ** 2 + np.sin(t2) ** 2
    assert_allclose(subspace_distance(U, V), np.sqrt(s2), rtol=1e-12)
    assert_allclose(subspace_distance(U, V, "chordal"), np.sqrt(2 * s2), rtol=1e-12)
    assert_allclose(subspace_distance(U, V, "spectral"), np.sin(t2), rtol=1e-12)
    # the chordal and spectral kinds are the projector norms they claim to be
    for _ in range(3):
        A, B = rng.standard_normal((9, 3)), rng.standard_normal((9, 3))
        D = _projector(A) - _projector(B)
        assert_allclose(subspace_distance(A, B, "chordal"), np.linalg.norm(D), rtol=1e-10)
        assert_allclose(subspace_distance(A, B, "spectral"), np.linalg.norm(D, 2), rtol=1e-10)


def test_small_angles_are_resolved(rng):
    Q = ortho_group.rvs(6, random_state=rng)
    t = 1e-9
    U, V = Q[:, :1], np.cos(t) * Q[:, :1] + np.sin(t) * Q[:, 1:2]
    assert_allclose(subspace_distance(U, V), t, rtol=1e-6)


def test_unequal_column_counts_convention(rng):
    # documented: d = |k_U - k_V| unmatched directions count as right angles
    Q = ortho_group.rvs(10, random_state=rng)
    t = 0.4
    U = np.column_stack([Q[:, 0], np.cos(t) * Q[:, 1] + np.sin(t) * Q[:, 5]])  # 2-dim
    V = Q[:, :4]  # 4-dim, contains Q[:, 0]; angle t to the second direction
    d = 2
    assert_allclose(principal_angles(U, V), [0.0, t], atol=1e-12)
    assert_allclose(subspace_distance(U, V), np.sqrt(d + np.sin(t) ** 2), rtol=1e-12)
    assert_allclose(subspace_distance(U, V, "chordal"), np.sqrt(d + 2 * np.sin(t) ** 2), rtol=1e-12)
    assert subspace_distance(U, V, "spectral") == 1.0
    # and it is the projector norm
    assert_allclose(
        subspace_distance(U, V, "chordal"), np.linalg.norm(_projector(U) - _projector(V)), rtol=1e-12
    )
    # a subspace of the other: only the unmatched directions count
    assert_allclose(subspace_distance(Q[:, :1], Q[:, :3]), np.sqrt(2), rtol=1e-12)
    assert_allclose(subspace_distance(Q[:, :3], Q[:, :1], "chordal"), np.sqrt(2), rtol=1e-12)
    # an empty (all-zero) space against a k-dim one
    assert_allclose(subspace_distance(np.zeros((10, 2)), Q[:, :3]), np.sqrt(3), rtol=1e-12)


def test_column_count_is_the_numerical_rank(rng):
    u = rng.standard_normal((8, 2))
    dup = np.column_stack([u, u[:, 0] + 2 * u[:, 1]])  # rank 2 with 3 columns
    assert orthonormal_basis(dup).shape == (8, 2)
    for kind in KINDS:
        assert subspace_distance(dup, u, kind) < 1e-12


def test_subspace_distance_errors(rng):
    with pytest.raises(ValueError, match=r"kind: expected one of \('sin_theta', 'chordal', 'spectral'\), got 'frob'"):
        subspace_distance(np.eye(3), np.eye(3), "frob")
    with pytest.raises(ValueError, match="U and V must have the same number of rows .* got 4 and 5"):
        subspace_distance(np.ones((4, 1)), np.ones((5, 1)))
    with pytest.raises(ValueError, match=r"expected a 2-D matrix, got shape \(2, 2, 2\)"):
        orthonormal_basis(np.ones((2, 2, 2)))


# ---------------------------------------------------------- pattern scores
@pytest.fixture
def truth(hierarchy):
    return hierarchy  # {a,b,c}: 2, {a,b}: 1, {a}: 1, {b}: 2, {c}: 1


def _variant(h, **changes):
    """The hierarchy ``h`` with some ranks changed; keys like ``ab`` name structures."""
    ranks = dict(h.ranks)
    for key, k in changes.items():
        ranks[fs(key)] = k
    return Hierarchy(h.dims, ranks)


def _brute_force_hamming(est, tru):
    Be, Bt = est.support_matrix(), tru.support_matrix()
    K = max(Be.shape[1], Bt.shape[1])
    Be = np.pad(Be, ((0, 0), (0, K - Be.shape[1])))
    Bt = np.pad(Bt, ((0, 0), (0, K - Bt.shape[1])))
    return min(int(np.abs(Be[:, list(perm)] - Bt).sum()) for perm in itertools.permutations(range(K)))


def test_pattern_exact(truth):
    sc = pattern_scores(truth, truth)
    assert sc["exact"] is True
    assert sc["structure_precision"] == 1.0 and sc["structure_recall"] == 1.0
    assert sc["support_hamming"] == 0
    assert sc["rank_errors"] == {s: 0 for s in truth.structures}


def test_pattern_missing_structure(truth):
    est = _variant(truth, ab=0)
    sc = pattern_scores(est, truth)
    assert sc["exact"] is False
    assert sc["structure_precision"] == 1.0  # 4 of 4 estimated are true
    assert sc["structure_recall"] == pytest.approx(4 / 5)
    assert sc["rank_errors"] == {fs("abc"): 0, fs("ab"): -1, fs("a"): 0, fs("b"): 0, fs("c"): 0}
    assert sc["support_hamming"] == 2  # the unmatched {a,b} column
    assert sc["support_hamming"] == _brute_force_hamming(est, truth)


def test_pattern_extra_structure(truth):
    est = _variant(truth, bc=1)
    sc = pattern_scores(est, truth)
    assert sc["exact"] is False
    assert sc["structure_precision"] == pytest.approx(5 / 6)
    assert sc["structure_recall"] == 1.0
    assert sc["rank_errors"][fs("bc")] == 1
    assert list(sc["rank_errors"]) == [fs("abc"), fs("ab"), fs("bc"), fs("a"), fs("b"), fs("c")]
    assert sc["support_hamming"] == 2
    assert sc["support_hamming"] == _brute_force_hamming(est, truth)


def test_pattern_wrong_rank(truth):
    est = _variant(truth, abc=1, b=3)
    sc = pattern_scores(est, truth)
    assert sc["exact"] is False
    assert sc["structure_precision"] == 1.0 and sc["structure_recall"] == 1.0
    assert sc["rank_errors"] == {fs("abc"): -1, fs("ab"): 0, fs("a"): 0, fs("b"): 1, fs("c"): 0}
    # the lost global column is paired with the extra {b} column: they differ on a and c
    assert sc["support_hamming"] == 2
    assert sc["support_hamming"] == _brute_force_hamming(est, truth)
    only_lost = pattern_scores(_variant(truth, abc=1), truth)
    assert only_lost["support_hamming"] == 3  # an unmatched component counts its whole column


def test_pattern_swapped_structure(truth):
    est = _variant(truth, ab=0, ac=1)
    sc = pattern_scores(est, truth)
    assert sc["structure_precision"] == pytest.approx(4 / 5)
    assert sc["structure_recall"] == pytest.approx(4 / 5)
    assert sc["rank_errors"][fs("ab")] == -1 and sc["rank_errors"][fs("ac")] == 1
    assert sc["support_hamming"] == 2  # {a,b} vs {a,c}: entries b and c
    assert sc["support_hamming"] == _brute_force_hamming(est, truth)


def test_pattern_empty_hierarchies(truth):
    empty = Hierarchy(truth.dims, {})
    sc = pattern_scores(empty, truth)
    assert sc["structure_precision"] == 1.0 and sc["structure_recall"] == 0.0
    assert sc["support_hamming"] == int(truth.support_matrix().sum())
    both = pattern_scores(empty, empty)
    assert both["exact"] and both["support_hamming"] == 0 and both["structure_recall"] == 1.0


def test_pattern_accepts_models_and_fitted_estimators(truth):
    model = HierarchicalModel.random(truth, random_state=0)

    class Fitted:
        hierarchy_ = _variant(truth, ab=0)

    sc = pattern_scores(Fitted(), model)
    assert sc["structure_recall"] == pytest.approx(4 / 5)


def test_pattern_errors(truth):
    other = Hierarchy({"a": 8, "b": 10, "d": 12}, {"a": 1})
    with pytest.raises(ValueError, match="estimated and true hierarchies have different modalities"):
        pattern_scores(other, truth)
    with pytest.raises(TypeError, match="estimated: expected a Hierarchy .* got dict"):
        pattern_scores(truth.to_dict(), truth)
    with pytest.raises(TypeError, match="truth: expected a Hierarchy .* got str"):
        pattern_scores(truth, "truth")


# ----------------------------------------------------------- loading errors
@pytest.fixture
def model(hierarchy):
    return HierarchicalModel.random(hierarchy, random_state=1)


def _whole(model, Q):
    """Loadings of the whole stacked matrix A Q, every block (also m not in S) kept."""
    h = model.hierarchy
    AQ = model.stacked_loadings() @ Q
    rows, cols = h.feature_slices(), h.component_slices()
    return {s: {m: AQ[rows[m], cols[s]] for m in h.modalities} for s in h.structures}


def test_loading_errors_zero_on_truth(model, hierarchy):
    errs = loading_errors(model.loadings, model.loadings)
    assert set(errs) == {(s, m) for s in hierarchy.structures for m in s}
    assert max(errs.values()) < 1e-12
    for kind in KINDS:
        assert max(loading_errors(model.loadings, model.loadings, kind=kind).values()) < 1e-12


def test_loading_errors_invariant_within_structure(model, rng):
    rotated = {
        s: {m: a @ _well_conditioned(rng, a.shape[1]) for m, a in blocks.items()}
        for s, blocks in model.loadings.items()
    }
    assert max(loading_errors(rotated, model.loadings).values()) < 1e-12


def test_loading_errors_keys_forms_and_missing(model, hierarchy, rng):
    # structure keys as tuples, or a bare name for a singleton structure
    est = {("c", "b", "a"): model.loadings[fs("abc")], ("a",): model.loadings[fs("a")], "c": model.loadings[fs("c")]}
    # {a,b} not estimated: skipped
    perturbed = model.loadings[fs("b")]["b"] + 0.1 * rng.standard_normal((10, 2))
    est[("b",)] = {"b": perturbed}
    errs = loading_errors(est, model.loadings)
    expected_keys = {(s, m) for s in hierarchy.structures if s != fs("ab") for m in s}
    assert set(errs) == expected_keys
    assert_allclose(errs[(fs("b"), "b")], subspace_distance(perturbed, model.loadings[fs("b")]["b"]), rtol=1e-14)
    assert errs[(fs("b"), "b")] > 1e-3
    assert errs[(fs("c"), "c")] < 1e-12


# ------------------------------------------------------------- block errors
def test_block_errors_invariant_to_whole_rotation(model, hierarchy, rng):
    truth = model.loadings
    for _ in range(3):
        Q = ortho_group.rvs(hierarchy.n_components, random_state=rng)
        errs = block_errors(_whole(model, Q), truth)
        assert set(errs) == {(s, m) for s in hierarchy.structures for m in s}
        assert max(errs.values()) < 1e-12
    # one orthogonal rotation per structure (what the model identifies) keeps the pattern
    per = {}
    for s, blocks in truth.items():
        k = hierarchy.rank(s)
        Qs = ortho_group.rvs(k, random_state=rng) if k > 1 else -np.eye(1)
        per[s] = {m: a @ Qs for m, a in blocks.items()}
    assert max(block_errors(per, truth).values()) < 1e-12
    assert max(block_errors(truth, truth, relative=True).values()) < 1e-12


def test_block_errors_positive_when_perturbed(model, hierarchy, rng):
    truth = model.loadings
    est = {s: {m: a + 0.05 * rng.standard_normal(a.shape) for m, a in blocks.items()} for s, blocks in truth.items()}
    errs = block_errors(est, truth)
    assert min(errs.values()) > 1e-4
    rel = block_errors(est, truth, relative=True)
    for (s, m), e in errs.items():
        ref = truth[s][m] @ truth[s][m].T
        assert_allclose(rel[(s, m)], e / np.linalg.norm(ref), rtol=1e-12)


def test_block_errors_scaled_estimate_by_hand(model):
    # E = 2T: the Procrustes rotation is the identity and each block error is 3 ||A A^T||_F
    truth = model.loadings
    est = {s: {m: 2.0 * a for m, a in blocks.items()} for s, blocks in truth.items()}
    rel = block_errors(est, truth, relative=True)
    assert_allclose(list(rel.values()), 3.0, rtol=1e-10)
    errs = block_errors(est, truth)
    for (s, m), e in errs.items():
        assert_allclose(e, 3.0 * np.linalg.norm(truth[s][m] @ truth[s][m].T), rtol=1e-10)


def test_block_errors_missing_structure_is_padded(model, hierarchy):
    truth = model.loadings
    est = {s: dict(b) for s, b in truth.items() if s != fs("ab")}
    errs = block_errors(est, truth, hierarchy.dims)
    assert set(errs) == {(s, m) for s in hierarchy.structures for m in s}
    assert all(np.isfinite(list(errs.values())))
    assert errs[(fs("ab"), "a")] > 0.1


def test_block_errors_row_mismatch(model):
    est = {s: dict(b) for s, b in model.loadings.items()}
    est[fs("a")] = {"a": np.ones((7, 1))}
    with pytest.raises(ValueError, match=r"loadings of structure \['a'\], modality 'a': expected 8 rows, got 7"):
        block_errors(est, model.loadings)
