"""Column spaces and signal blocks of the non-specific structures (population linear algebra).

Bilinear annihilation gives every ``col(A_{m,S})`` from the cross-covariances
alone; the cores ``R_m R_{m'}^T`` then give the signal blocks
``A_{m,S} A_{m',S}^T`` exactly (DESIGN §1, §6: orthogonal complements are not
the answer).
"""

from __future__ import annotations

import itertools

import numpy as np


def top_left(X, k):
    """Top-``k`` left singular vectors of ``X`` (an orthonormal basis, shape (rows, k))."""
    if k == 0:
        return np.zeros((X.shape[0], 0))
    u, _, _ = np.linalg.svd(X, full_matrices=False)
    return u[:, :k]


def annihilate(X, N):
    """``X (I - N N^T)``: remove from the rows of ``X`` the directions of ``col(N)``."""
    if N.shape[1] == 0:
        return X
    return X - (X @ N) @ N.T


def intersection(bases, d):
    """Orthonormal basis of ``∩ col(U_i)`` (dimension ``d`` known).

    Solves ``U_1 a_1 = U_i a_i`` (i >= 2) by the ``d`` smallest singular vectors of
    the stacked difference system: the smallest singular values grow linearly
    with the principal angles (an averaged-projector eigenproblem would grow
    quadratically, i.e. lose half the digits).
    """
    if d == 0:
        return np.zeros((bases[0].shape[0], 0))
    if len(bases) == 1:
        return bases[0][:, :d]
    widths = [b.shape[1] for b in bases]
    starts = np.concatenate([[0], np.cumsum(widths)])
    p = bases[0].shape[0]
    system = np.zeros((p * (len(bases) - 1), starts[-1]))
    for i in range(1, len(bases)):
        rows = slice(p * (i - 1), p * i)
        system[rows, : widths[0]] = bases[0]
        system[rows, starts[i] : starts[i + 1]] = -bases[i]
    _, _, vt = np.linalg.svd(system, full_matrices=True)
    coef = vt[-d:].T
    # average the |bases| representations of each intersection vector (symmetric in the inputs)
    v = sum(bases[i] @ coef[starts[i] : starts[i + 1]] for i in range(len(bases))) / len(bases)
    return top_left(v, d)


def span(parts, d, p):
    """Orthonormal basis of the (direct) sum of the column spaces in ``parts``."""
    parts = [q for q in parts if q.shape[1] > 0]
    if d == 0 or not parts:
        return np.zeros((p, 0))
    return top_left(np.hstack(parts), d)


def norm2(X):
    return float(np.linalg.norm(X, 2)) if X.size else 0.0



def nonspecific_subspaces(Sigma, base, ranks):
    """``{(S, m): orthonormal basis of col A_{m,S}}`` for every non-specific ``S``.

    Bilinear annihilation. For ``m, m' ∈ S``,
    ``Sigma_{mm'} = sum_{S'' ⊇ {m,m'}} A_{m,S''} A_{m',S''}^T``; right-multiplying
    by the projector onto the orthogonal complement (in modality ``m'``) of

        N_{m'}(m, S) = span{A_{m',S''} : S'' ⊇ {m,m'}, S'' != S}

    leaves ``A_{m,S} A_{m',S}^T Π⊥_N``, whose column space is ``col A_{m,S}``
    (general position: ``col A_{m',S} ∩ N = 0``). ``N`` splits into

    * the structures not inside ``S``: ``sum_{j ∉ S} C_{m'}({m,m',j})`` with
      ``C_{m'}({m,m',j}) = col Sigma_{m'm} ∩ col Sigma_{m'j}`` — available directly;
    * the structures strictly inside ``S`` that contain ``{m,m'}`` — known
      already because structures are processed by increasing size.

    The ``|S| - 1`` annihilated blocks (one per ``m'``) are pooled and the top
    ``k_S`` left singular vectors taken. Every dimension comes from ``ranks``.
    """
    mods = base.modalities
    sl = base.feature_slices()
    index = {m: i for i, m in enumerate(mods)}
    structs = sorted(
        (s for s, k in ranks.items() if k > 0 and len(s) > 1),
        key=lambda s: (len(s), sorted(index[m] for m in s)),  # smaller first: see `inner`
    )

    def dim_up(T):
        return sum(k for s, k in ranks.items() if k > 0 and len(s) > 1 and T <= s)

    colspace, up = {}, {}

    def col(a, b):  # basis of col Sigma_{ab} in modality a
        if (a, b) not in colspace:
            colspace[(a, b)] = top_left(Sigma[sl[a], sl[b]], dim_up(frozenset((a, b))))
        return colspace[(a, b)]

    def upper(a, b, j):  # C_a({a,b,j}) in modality a
        key = (a, frozenset((b, j)))
        if key not in up:
            up[key] = intersection([col(a, b), col(a, j)], dim_up(frozenset((a, b, j))))
        return up[key]

    Q = {}
    for s in structs:
        for m in s:
            pooled = []
            for mp in sorted(s - {m}, key=index.__getitem__):
                parts = [upper(mp, m, j) for j in mods if j not in s]
                inner = [t for t in structs if len(t) < len(s) and {m, mp} <= t < s]
                parts += [Q[(t, mp)] for t in inner]
                # the parts overlap (a structure may contain several j ∉ S); their sum
                # is spanned by exactly the other structures of Sigma_{mm'}
                d = dim_up(frozenset((m, mp))) - ranks[s]
                N = span(parts, d, base.dims[mp])
                pooled.append(annihilate(Sigma[sl[m], sl[mp]], N))
            Q[(s, m)] = top_left(np.hstack(pooled), ranks[s])
    return Q


def cross_cores(Sigma, base, ranks, Q):
    """``{(S, m, m'): R_m R_{m'}^T}`` (k_S x k_S) for ``m != m'`` in ``S``.

    With ``A_{m,S} = Q_{m,S} R_m`` and ``B_m = [Q_{m,S''}]_{S'' ⊇ {m,m'}}`` (full
    column rank), ``Sigma_{mm'} = B_m diag(R_m R_{m'}^T) B_{m'}^T``, so the core of
    ``S`` is its diagonal block of ``B_m^+ Sigma_{mm'} B_{m'}^{+T}`` — exact.
    """
    mods = base.modalities
    sl = base.feature_slices()
    cores = {}
    for a, b in itertools.combinations(mods, 2):
        over = [s for s, k in ranks.items() if k > 0 and {a, b} <= s]
        if not over:
            continue
        Ba = np.hstack([Q[(s, a)] for s in over])
        Bb = np.hstack([Q[(s, b)] for s in over])
        C = np.linalg.pinv(Ba) @ Sigma[sl[a], sl[b]] @ np.linalg.pinv(Bb).T
        start = 0
        for s in over:
            k = ranks[s]
            block = C[start : start + k, start : start + k]
            cores[(s, a, b)] = block
            cores[(s, b, a)] = block.T
            start += k
    return cores


def within_cores_from_cross(s, cores, index):
    """``{m: R_m R_m^T}`` for ``|S| >= 3`` from cross cores alone.

    ``A_m A_m^T = (A_m A_{m'}^T)(A_{m''} A_{m'}^T)^+(A_{m''} A_m^T)``, averaged
    over the ordered pairs ``(m', m'')`` of the other members.
    """
    out = {}
    for m in s:
        others = sorted(s - {m}, key=index.__getitem__)
        acc = []
        for m1, m2 in itertools.permutations(others, 2):
            # the pseudo-inverse: invertible under the model; a covariance that is not (the
            # member estimates disagree and identify warns) must not stop at a singular core
            acc.append(cores[(s, m, m1)] @ np.linalg.pinv(cores[(s, m2, m1)]) @ cores[(s, m2, m)])
        G = sum(acc) / len(acc)
        out[m] = 0.5 * (G + G.T)
    return out


