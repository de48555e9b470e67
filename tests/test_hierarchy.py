"""Tests for :mod:`hclstat.hierarchy`."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_array_equal

from hclstat.hierarchy import LEVELS, Hierarchy, as_structure

fs = frozenset


# ---------------------------------------------------------------- ordering
def test_structures_canonical_order(hierarchy):
    assert hierarchy.modalities == ("a", "b", "c")
    assert hierarchy.structures == (fs("abc"), fs("ab"), fs("a"), fs("b"), fs("c"))


def test_partial_structures_by_decreasing_size_then_modality_order():
    dims = {m: 10 for m in "abcd"}
    # given in a scrambled order on purpose
    ranks = {"d": 1, ("c", "d"): 1, ("b", "d"): 1, ("a", "b", "d"): 1, "a": 1,
             ("a", "b", "c", "d"): 1, ("a", "c"): 1, ("b", "c", "d"): 1, ("a", "b"): 1}
    h = Hierarchy(dims, ranks)
    names = [h.name(s) for s in h.structures]
    assert names == [
        "{a,b,c,d}",
        "{a,b,d}", "{b,c,d}",
        "{a,b}", "{a,c}", "{b,d}", "{c,d}",
        "{a}", "{d}",
    ]
    assert [h.level(s) for s in h.structures] == (
        ["global"] + ["partial"] * 6 + ["specific"] * 2
    )


def test_modality_order_is_the_dims_order_not_alphabetical():
    h = Hierarchy({"z": 5, "y": 5, "x": 5}, {"x": 1, "y": 1, "z": 1, ("x", "y"): 1, ("x", "z"): 1})
    assert h.modalities == ("z", "y", "x")
    assert [h.name(s) for s in h.structures] == ["{z,x}", "{y,x}", "{z}", "{y}", "{x}"]
    assert h.name(("x", "z")) == "{z,x}"


def test_all_structures_is_every_nonempty_subset_in_canonical_order(hierarchy):
    got = hierarchy.all_structures()
    assert got == (fs("abc"), fs("ab"), fs("ac"), fs("bc"), fs("a"), fs("b"), fs("c"))


# ------------------------------------------------------- rank, level, counts
def test_rank_accepts_every_key_form(hierarchy):
    assert hierarchy.rank(("a", "b", "c")) == 2
    assert hierarchy.rank({"c", "b", "a"}) == 2
    assert hierarchy.rank(fs("ba")) == 1
    assert hierarchy.rank(["b", "a"]) == 1
    assert hierarchy.rank("b") == 2
    assert hierarchy.rank(("b",)) == 2
    # a valid structure with no component has rank 0
    assert hierarchy.rank(("a", "c")) == 0
    assert hierarchy.rank(("b", "c")) == 0


def test_rank_rejects_unknown_modality(hierarchy):
    with pytest.raises(ValueError, match=r"names unknown modality \['d'\]"):
        hierarchy.rank(("a", "d"))


def test_level(hierarchy):
    assert hierarchy.level(("a", "b", "c")) == "global"
    assert hierarchy.level(("a", "b")) == "partial"
    assert hierarchy.level(("b", "c")) == "partial"  # level is defined for rank-0 structures too
    assert hierarchy.level("c") == "specific"
    assert set(LEVELS) == {"global", "partial", "specific"}


def test_level_with_two_modalities_has_no_partial():
    h = Hierarchy({"a": 3, "b": 3}, {("a", "b"): 1, "a": 1})
    assert h.level(("a", "b")) == "global"
    assert h.level("a") == "specific"


def test_counts_and_slices(hierarchy):
    assert hierarchy.n_modalities == 3
    assert hierarchy.n_components == 7
    assert hierarchy.n_features == 30
    assert hierarchy.dims == {"a": 8, "b": 10, "c": 12}
    assert hierarchy.modality_rank("a") == 4
    assert hierarchy.modality_rank("b") == 5
    assert hierarchy.modality_rank("c") == 3
    assert hierarchy.structures_of("c") == (fs("abc"), fs("c"))
    assert hierarchy.component_slices() == {
        fs("abc"): slice(0, 2), fs("ab"): slice(2, 3), fs("a"): slice(3, 4),
        fs("b"): slice(4, 6), fs("c"): slice(6, 7),
    }
    assert hierarchy.feature_slices() == {"a": slice(0, 8), "b": slice(8, 18), "c": slice(18, 30)}
    assert hierarchy.index("c") == 2
    with pytest.raises(ValueError, match=r"unknown modality 'd'; known modalities are \['a', 'b', 'c'\]"):
        hierarchy.index("d")
    with pytest.raises(ValueError, match="unknown modality 'd'"):
        hierarchy.structures_of("d")


def test_properties_return_copies(hierarchy):
    hierarchy.dims["a"] = 100
    hierarchy.ranks[fs("a")] = 100
    assert hierarchy.dims["a"] == 8
    assert hierarchy.rank("a") == 1


def test_support_matrix(hierarchy):
    B = hierarchy.support_matrix()
    expected = np.array(
        [
            # abc abc ab  a  b  b  c
            [1, 1, 1, 1, 0, 0, 0],  # a
            [1, 1, 1, 0, 1, 1, 0],  # b
            [1, 1, 0, 0, 0, 0, 1],  # c
        ]
    )
    assert B.dtype == np.int64
    assert_array_equal(B, expected)


def test_empty_hierarchy_has_empty_support():
    h = Hierarchy({"a": 2, "b": 3}, {})
    assert h.structures == ()
    assert h.n_components == 0
    assert h.support_matrix().shape == (2, 0)
    assert "none" in repr(h)


# ----------------------------------------------------------- equality, io
def test_equality_ignores_key_form_and_order(hierarchy):
    other = Hierarchy(
        dims={"a": 8, "b": 10, "c": 12},
        ranks={"c": 1, fs("b"): 2, ("b", "a"): 1, ("c", "a", "b"): 2, ("a",): 1, ("a", "c"): 0},
    )
    assert other == hierarchy
    assert hash(other) == hash(hierarchy)
    assert len({other, hierarchy}) == 1


@pytest.mark.parametrize(
    "dims, ranks",
    [
        ({"a": 8, "b": 10, "c": 12}, {("a", "b", "c"): 2, ("a", "b"): 1, "a": 1, "b": 2}),  # a structure fewer
        ({"a": 8, "b": 10, "c": 12}, {("a", "b", "c"): 1, ("a", "b"): 1, "a": 1, "b": 2, "c": 1}),  # a rank
        ({"a": 8, "b": 10, "c": 13}, {("a", "b", "c"): 2, ("a", "b"): 1, "a": 1, "b": 2, "c": 1}),  # a dim
        ({"b": 10, "a": 8, "c": 12}, {("a", "b", "c"): 2, ("a", "b"): 1, "a": 1, "b": 2, "c": 1}),  # order
    ],
)
def test_inequality(hierarchy, dims, ranks):
    assert Hierarchy(dims, ranks) != hierarchy


def test_not_equal_to_other_types(hierarchy):
    assert hierarchy != hierarchy.to_dict()
    assert (hierarchy == 3) is False


def test_to_dict_content(hierarchy):
    d = hierarchy.to_dict()
    assert d == {
        "dims": {"a": 8, "b": 10, "c": 12},
        "ranks": [
            {"structure": ["a", "b", "c"], "rank": 2},
            {"structure": ["a", "b"], "rank": 1},
            {"structure": ["a"], "rank": 1},
            {"structure": ["b"], "rank": 2},
            {"structure": ["c"], "rank": 1},
        ],
    }
    assert Hierarchy.from_dict(d) == hierarchy


def test_json_round_trip(hierarchy):
    text = hierarchy.to_json()
    assert json.loads(text) == hierarchy.to_dict()
    assert Hierarchy.from_dict(text) == hierarchy
    assert Hierarchy.from_dict(json.loads(text)) == hierarchy
    assert Hierarchy.from_dict(hierarchy.to_json(indent=2)) == hierarchy


def test_from_dict_mapping_convenience_form(hierarchy):
    d = {"dims": {"a": 8, "b": 10, "c": 12}, "ranks": {"a,b,c": 2, "a,b": 1, "a": 1, "b": 2, "c": 1}}
    assert Hierarchy.from_dict(d) == hierarchy


def test_from_dict_errors():
    with pytest.raises(ValueError, match="expected a mapping with keys 'dims' and 'ranks'"):
        Hierarchy.from_dict({"dims": {"a": 2}})
    with pytest.raises(ValueError, match="expected a mapping with keys 'dims' and 'ranks'"):
        Hierarchy.from_dict("[1, 2]")
    with pytest.raises(ValueError, match=r"ranks\[0\] must have keys 'structure' and 'rank'"):
        Hierarchy.from_dict({"dims": {"a": 2}, "ranks": [{"structure": ["a"]}]})
    with pytest.raises(ValueError, match=r"ranks: structure \['a', 'b'\] is given twice"):
        Hierarchy.from_dict(
            {
                "dims": {"a": 2, "b": 2},
                "ranks": [{"structure": ["a", "b"], "rank": 1}, {"structure": ["b", "a"], "rank": 1}],
            }
        )


def test_repr_is_readable(hierarchy):
    r = repr(hierarchy)
    assert r == (
        "Hierarchy(dims=(a=8, b=10, c=12), "
        "ranks=({a,b,c}: 2, {a,b}: 1, {a}: 1, {b}: 2, {c}: 1))"
    )


# -------------------------------------------------------------- validation
def test_rank_zero_structures_are_dropped():
    h = Hierarchy({"a": 4, "b": 4}, {("a", "b"): 0, "a": 2, "b": 0})
    assert h.structures == (fs("a"),)
    assert h.ranks == {fs("a"): 2}
    assert h.rank(("a", "b")) == 0
    assert h == Hierarchy({"a": 4, "b": 4}, {"a": 2})


def test_error_unknown_modality():
    with pytest.raises(ValueError, match=r"ranks: structure \['a', 'z'\] names unknown modality \['z'\]; "
                                         r"known modalities are \['a', 'b'\]"):
        Hierarchy({"a": 4, "b": 4}, {("a", "z"): 1})


@pytest.mark.parametrize("key", [(), frozenset(), []], ids=["tuple", "frozenset", "list"])
def test_error_empty_structure(key):
    ranks = {"a": 1}
    ranks[tuple(key) if isinstance(key, list) else key] = 1
    with pytest.raises(ValueError, match="a structure must name at least one modality"):
        Hierarchy({"a": 4, "b": 4}, ranks)


def test_error_duplicate_structure():
    with pytest.raises(ValueError, match=r"ranks: structure \['a', 'b'\] is given twice"):
        Hierarchy({"a": 4, "b": 4}, {("a", "b"): 1, ("b", "a"): 1})
    with pytest.raises(ValueError, match=r"ranks: structure \['a'\] is given twice"):
        Hierarchy({"a": 4, "b": 4}, {"a": 1, ("a",): 2})


def test_error_modality_repeated_in_structure():
    with pytest.raises(ValueError, match=r"modality repeated in \('a', 'a'\)"):
        Hierarchy({"a": 4, "b": 4}, {("a", "a"): 1})


def test_error_structure_of_non_names():
    with pytest.raises(TypeError, match="expected modality names"):
        Hierarchy({"a": 4, "b": 4}, {(1, 2): 1})
    with pytest.raises(TypeError, match="expected a modality name or a collection of names"):
        as_structure(3)


def test_error_negative_rank():
    with pytest.raises(ValueError, match=r"ranks\[\['a'\]\]: expected a non-negative integer, got -1"):
        Hierarchy({"a": 4, "b": 4}, {"a": -1})


@pytest.mark.parametrize("k", [1.5, 2.0, "2", True, None])
def test_error_non_integer_rank(k):
    with pytest.raises(TypeError, match=r"ranks\[\['a', 'b'\]\]: expected a non-negative integer, got"):
        Hierarchy({"a": 4, "b": 4}, {("a", "b"): k})


def test_numpy_integer_ranks_and_dims_are_accepted():
    h = Hierarchy({"a": np.int64(4), "b": np.int32(3)}, {("a", "b"): np.int64(2)})
    assert h.rank(("a", "b")) == 2
    assert type(h.dims["a"]) is int
    assert Hierarchy.from_dict(h.to_json()) == h  # numpy ints do not leak into JSON


@pytest.mark.parametrize("p", [0, -3])
def test_error_non_positive_dim(p):
    with pytest.raises(ValueError, match=rf"dims\['b'\]: expected a positive integer, got {p}"):
        Hierarchy({"a": 4, "b": p}, {"a": 1})


@pytest.mark.parametrize("p", [2.5, "4", True])
def test_error_non_integer_dim(p):
    with pytest.raises(TypeError, match=r"dims\['b'\]: expected a positive integer"):
        Hierarchy({"a": 4, "b": p}, {"a": 1})


def test_error_dims_and_ranks_types():
    with pytest.raises(TypeError, match="dims: expected a non-empty mapping"):
        Hierarchy({}, {})
    with pytest.raises(TypeError, match="dims: expected a non-empty mapping"):
        Hierarchy([("a", 3)], {})
    with pytest.raises(TypeError, match="dims: modality names must be str"):
        Hierarchy({1: 3}, {})
    with pytest.raises(TypeError, match="ranks: expected a mapping structure -> rank, got list"):
        Hierarchy({"a": 3}, [("a", 1)])


def test_error_total_rank_above_dim():
    with pytest.raises(
        ValueError,
        match=r"modality 'a': total rank 5 \(\{a,b\}: 3, \{a\}: 2\) exceeds its 4 columns",
    ):
        Hierarchy({"a": 4, "b": 10}, {("a", "b"): 3, "a": 2})


def test_total_rank_equal_to_dim_is_allowed():
    h = Hierarchy({"a": 4, "b": 10}, {("a", "b"): 2, "a": 2})
    assert h.modality_rank("a") == 4


# ---------------------------------------------------------------- property
@st.composite
def hierarchies(draw):
    M = draw(st.integers(2, 5))
    names = draw(
        st.lists(st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=4), min_size=M, max_size=M, unique=True)
    )
    subsets = [fs(c) for r in range(1, M + 1) for c in itertools.combinations(names, r)]
    chosen = draw(st.lists(st.sampled_from(subsets), unique=True, max_size=min(len(subsets), 10)))
    ranks = {tuple(draw(st.permutations(sorted(s)))): draw(st.integers(0, 3)) for s in chosen}
    # dims within budget: at least the total rank of each modality, plus slack
    dims = {}
    for m in names:
        total = sum(k for s, k in ranks.items() if m in s)
        dims[m] = max(1, total) + draw(st.integers(0, 5))
    return Hierarchy(dims, ranks), ranks


@settings(max_examples=150, deadline=None)
@given(hierarchies())
def test_property_json_round_trip(drawn):
    h, ranks = drawn
    back = Hierarchy.from_dict(h.to_json())
    assert back == h
    assert back.structures == h.structures
    assert back.modalities == h.modalities
    assert {fs(s): k for s, k in ranks.items() if k > 0} == h.ranks


@settings(max_examples=150, deadline=None)
@given(hierarchies())
def test_property_support_matrix_sums(drawn):
    h, _ = drawn
    B = h.support_matrix()
    assert B.shape == (h.n_modalities, h.n_components)
    assert set(np.unique(B)) <= {0, 1}
    sizes = np.concatenate([[len(s)] * h.rank(s) for s in h.structures]) if h.structures else np.zeros(0)
    assert_array_equal(B.sum(axis=0), sizes)
    assert_array_equal(B.sum(axis=1), [h.modality_rank(m) for m in h.modalities])
    # the canonical order: sizes never increase along the components
    assert np.all(np.diff(sizes) <= 0)
