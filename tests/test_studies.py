"""Tests of hclstat.studies: configs, seeds, the resumable runner, dask execution, figures.

The studies here use a test-only estimator (``cheap``: the true pattern with
loadings from each modality's top eigenvectors), so they neither depend on HCL
nor take long.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hclstat import studies
from hclstat.estimators.base import BaseHierarchicalEstimator
from hclstat.exceptions import EstimationWarning
from hclstat.model.designs import d1_hierarchy, published_hierarchy
from hclstat.studies import (
    COLUMNS,
    count_fits,
    fit_failures,
    MethodUnavailableError,
    StudyConfig,
    StudyConfigError,
    load_config,
    load_results,
    plot_study,
    register_method,
    replication_seed,
    run_study,
    simulate_replication,
    summarize_results,
    unregister_method,
)

SIMULATIONS = Path(__file__).resolve().parents[1] / "simulations"


# ------------------------------------------------------------ test methods
class _TopEigen(BaseHierarchicalEstimator):
    """Cheap stand-in: the given pattern, each modality's top eigenvectors split over its structures."""

    def __init__(self, hierarchy=None, shrink=1.0):
        self.hierarchy = hierarchy
        self.shrink = shrink

    def _fit_moments(self, moments):
        h = self.hierarchy
        loadings = {s: {} for s in h.structures}
        noise = {}
        for m in h.modalities:
            w, V = np.linalg.eigh(moments.block(m, m))
            w, V = w[::-1], V[:, ::-1]
            k = h.modality_rank(m)
            sigma2 = float(w[k:].mean())
            cols = V[:, :k] * np.sqrt(np.maximum(w[:k] - sigma2, 1e-6)) * self.shrink
            j = 0
            for s in h.structures_of(m):
                loadings[s][m] = cols[:, j : j + h.rank(s)]
                j += h.rank(s)
            noise[m] = np.full(w.shape[0], sigma2)
        self.hierarchy_ = h
        self.loadings_ = loadings
        self.noise_variances_ = noise


#: random states of every in-process fit of the cheap method (counts recomputation)
CALLS = []


def _cheap(ctx, **options):
    CALLS.append(ctx.random_state)
    return _TopEigen(ctx.hierarchy, **options)


def _broken(ctx, **options):
    raise RuntimeError("boom: this method always fails")


@pytest.fixture(autouse=True)
def test_methods():
    register_method("cheap", _cheap, description="test-only", overwrite=True)
    register_method("broken", _broken, description="test-only", overwrite=True)
    CALLS.clear()
    yield
    unregister_method("cheap")
    unregister_method("broken")


def _config(**changes):
    """A tiny valid study: 2 x 2 cells, 2 replications, small D1."""
    cfg = {
        "study": {"name": "tiny", "replications": 2, "seed": 7, "methods": ["cheap"],
                  "metrics": ["pattern", "loading_sin_theta", "block_error", "fit_time"]},
        "grid": {"n": [60, 120], "noise_model": ["isotropic", "diagonal"]},
        "model": {"hierarchy": "D1", "p": [6, 7, 8]},
    }
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        if value is _DROP:
            cfg[section].pop(key)
        else:
            cfg.setdefault(section, {})[key] = value
    return cfg


_DROP = object()


def _sorted(table):
    keys = ["cell", "replication", "method", "metric", "structure", "modality"]
    return table.sort_values(keys, na_position="first", kind="mergesort").reset_index(drop=True)


def _without_times(table):
    """Everything but the wall-clock values (fit_time rows keep their keys)."""
    t = table.copy()
    t.loc[t["metric"] == "fit_time", "value"] = 0.0
    return t


# ------------------------------------------------------------------ config
def test_config_expands_grid_and_resolves_designs():
    config = load_config(_config())
    assert isinstance(config, StudyConfig)
    assert [(c["n"], c["noise_model"]) for c in config.cells] == [
        (60, "isotropic"), (60, "diagonal"), (120, "isotropic"), (120, "diagonal"),
    ]
    cell = config.cells[0]
    assert cell["p"] == (6, 7, 8) and cell["M"] == 3 and cell["rank"] == 1
    assert cell["singular_values"] == (0.5, 1.5) and cell["loading_scale"] is None
    assert config.n_tasks == 8
    # replications do not enter the fingerprint: a study may be extended in place
    more = load_config(_config(study__replications=5))
    assert more.fingerprint == config.fingerprint
    assert load_config(_config(study__seed=8)).fingerprint != config.fingerprint


def test_config_designs_and_explicit_hierarchies():
    cfg = {
        "study": {"replications": 1, "seed": 0, "methods": ["cheap"]},
        "grid": [
            {"hierarchy": ["published"], "n": [100]},
            {"hierarchy": ["chain", {"name": "pair", "dims": {"x": 5, "y": 6},
                                     "ranks": [{"structure": ["x", "y"], "rank": 2}]}], "n": [50]},
            {"hierarchy": ["random"], "M": [4], "p": [12], "rank": [2], "n": [40]},
        ],
        "hierarchies": {"chain": {"dims": {"a": 8, "b": 8, "c": 8, "d": 8},
                                  "ranks": {"a,b,c,d": 1, "a,b": 1, "c,d": 1, "a": 1}}},
    }
    config = load_config(cfg)
    assert [c["hierarchy"] for c in config.cells] == ["published", "chain", "pair", "random"]
    published = studies.cell_hierarchy(config.cells[0], config.hierarchies)
    assert len(published.structures) == 7 and set(published.ranks.values()) == {3}
    assert published.dims == {"a": 100, "b": 500, "c": 800}
    chain = studies.cell_hierarchy(config.cells[1], config.hierarchies)
    assert chain.rank(("c", "d")) == 1 and chain.n_components == 4
    assert studies.cell_hierarchy(config.cells[2], config.hierarchies).modalities == ("x", "y")
    # a random pattern is drawn per replication, deterministically from its seed
    drawn = [simulate_replication(config, 3, r)[0].hierarchy for r in range(6)]
    assert drawn == [simulate_replication(config, 3, r)[0].hierarchy for r in range(6)]
    assert len(set(drawn)) > 1
    assert all(h.modalities == ("a", "b", "c", "d") and max(h.ranks.values()) <= 2 for h in drawn)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"study__methods": ["cheap", "nope"]}, r"study\.methods: unknown method 'nope'; known methods are \["),
        ({"grid__sample_size": [10]}, r"grid: unknown parameter 'sample_size'; expected one of \['n'"),
        ({"study__replications": _DROP}, r"study\.replications: missing required field"),
        ({"study__seed": _DROP}, r"study\.seed: missing required field"),
        ({"study__methods": _DROP}, r"study\.methods: missing required field"),
        ({"grid__n": _DROP}, r"n: missing required parameter"),
        ({"study__metrics": ["pattern", "speed"]}, r"study\.metrics: unknown metric 'speed'"),
        ({"study__methods": ["cheap", {"name": "cheap"}]}, r"label 'cheap' is used twice"),
        ({"study__replications": 0}, r"study\.replications: expected a positive integer, got 0"),
        ({"study__colour": "red"}, r"study: unknown field 'colour'"),
        ({"grid__n": [60, 1.5]}, r"grid\.n\[1\]: expected an integer number of rows >= 2, got 1\.5"),
        ({"grid__singular_values": [0.5, 1.5]}, r"write \[\[0\.5, 1\.5\]\] for one level"),
        ({"model__n": 100}, r"grid\.n: also given in \[model\]"),
        ({"model__loading_scale": 1.0, "model__singular_values": [1, 2]}, r"give either loading_scale"),
        ({"model__hierarchy": "D2"}, r"unknown hierarchy 'D2'; expected one of \['D1', 'published', 'random'"),
        ({"model__M": 2, "model__p": _DROP}, r"hierarchy 'D1' needs M >= 3"),
        ({"model__hierarchy": "published", "model__p": [3, 3, 3], "model__rank": 2},
         r"modality 'a': total rank 8 .* exceeds its 3 columns"),
        ({"model__noise_model": "pink", "grid__noise_model": _DROP},
         r"model\.noise_model: expected 'isotropic' or 'diagonal', got 'pink'"),
        ({"model__structure_probability": 0.3}, r"structure_probability is only used by hierarchy = 'random'"),
        ({"model__latent_correlation": -0.5},
         r"latent_correlation -0\.5 makes the latent covariance of 5 components not positive definite"),
    ],
)
def test_config_errors_name_the_field(changes, message):
    with pytest.raises(StudyConfigError, match=message):
        load_config(_config(**changes))


def test_config_errors_sections_and_toml(tmp_path):
    with pytest.raises(StudyConfigError, match=r"config: unknown section 'grids'"):
        load_config({**_config(), "grids": {}})
    with pytest.raises(StudyConfigError, match=r"study: missing required section \[study\]"):
        load_config({"grid": {"n": [10]}})
    bad = tmp_path / "bad.toml"
    bad.write_text("[study\nreplications = 1\n")
    with pytest.raises(StudyConfigError, match=r"not valid TOML"):
        load_config(bad)
    with pytest.raises(FileNotFoundError, match=r"config: no such file"):
        load_config(tmp_path / "missing.toml")
    with pytest.raises(TypeError, match=r"config: expected a path to a TOML file, a dict or a StudyConfig"):
        load_config(42)


def test_toml_file_name_defaults_to_stem(tmp_path):
    path = tmp_path / "my_study.toml"
    path.write_text(
        '[study]\nreplications = 1\nseed = 3\nmethods = ["cheap", { name = "cheap", label = "cheap_half", shrink = 0.5 }]\n'
        "[grid]\nn = [40, 80]\np = [[5, 6, 7]]\n"
    )
    config = load_config(path)
    assert config.name == "my_study"
    assert [m.label for m in config.methods] == ["cheap", "cheap_half"]
    assert config.methods[1].options == {"shrink": 0.5}
    assert [c["p"] for c in config.cells] == [(5, 6, 7), (5, 6, 7)]


@pytest.mark.parametrize("path", sorted(SIMULATIONS.glob("*.toml")), ids=lambda p: p.name)
def test_shipped_configs_are_valid(path):
    config = load_config(path)
    assert config.cells and config.replications >= 10
    assert {m.name for m in config.methods} <= set(studies.available_methods())
    assert path.stem == config.name


def test_design_cells_use_the_model_layer_designs():
    d1 = load_config(_config())
    assert studies.cell_hierarchy(d1.cells[0]) == d1_hierarchy({"a": 6, "b": 7, "c": 8})
    cfg = _config(model__hierarchy="published", model__p=[9, 10, 11], model__rank=2)
    assert studies.cell_hierarchy(load_config(cfg).cells[0]) == published_hierarchy((9, 10, 11), rank=2)
    default = load_config(_config(model__p=_DROP))
    assert studies.cell_hierarchy(default.cells[0]) == d1_hierarchy()


def test_shipped_configs_match_the_design():
    pub = load_config(SIMULATIONS / "published_design.toml")
    h = studies.cell_hierarchy(pub.cells[0], pub.hierarchies)
    assert len(h.structures) == 7 and set(h.ranks.values()) == {3}
    assert h.dims == {"a": 100, "b": 500, "c": 800}
    assert {c["noise"] for c in pub.cells} == {6.0}
    assert [c["n"] for c in pub.cells][0] == 5000 and [c["n"] for c in pub.cells][-1] == 30000
    d1 = load_config(SIMULATIONS / "d1_pattern.toml")
    assert {c["loading_scale"] for c in d1.cells} == {1.0, 0.3, 0.15}
    rates = load_config(SIMULATIONS / "loading_rates.toml")
    ns = sorted({c["n"] for c in rates.cells})
    assert all(b == 2 * a for a, b in zip(ns, ns[1:]))
    assert {c["noise_model"] for c in rates.cells} == {"isotropic", "diagonal"}


# ------------------------------------------------------------------- seeds
def test_replication_seeds_follow_the_spawn_tree():
    base = np.random.SeedSequence(11)
    child = base.spawn(3)[2].spawn(4)[3]
    expected = int(child.generate_state(1, np.uint64)[0] >> np.uint64(1))
    assert replication_seed(11, 2, 3) == expected
    seeds = {replication_seed(11, c, r) for c in range(5) for r in range(5)}
    assert len(seeds) == 25 and all(0 <= s < 2**63 for s in seeds)


def test_simulate_replication_is_reproducible():
    config = load_config(_config())
    model1, views1 = simulate_replication(config, 1, 0)
    model2, views2 = simulate_replication(config, 1, 0)
    for m in views1:
        np.testing.assert_array_equal(views1[m], views2[m])
    _, other = simulate_replication(config, 1, 1)
    assert not np.allclose(views1["a"], other["a"])
    assert views1["a"].shape == (60, 6)
    assert np.ptp(model1.noise_variances["a"]) > 0  # cell 1 is the diagonal-noise cell


# ------------------------------------------------------------------ runner
def test_run_study_table_and_files(tmp_path):
    cfg = _config(study__methods=["cheap", {"name": "cheap", "label": "cheap_again"}])
    table = run_study(cfg, tmp_path / "out", quiet=True, plot=False)
    assert tuple(table.columns) == COLUMNS
    assert set(table["method"]) == {"cheap", "cheap_again"}
    assert set(table["cell"]) == {0, 1, 2, 3} and set(table["replication"]) == {0, 1}
    seeds = table.groupby(["cell", "replication"])["seed"].unique()
    for (c, r), s in seeds.items():
        assert list(s) == [replication_seed(7, c, r)]
    sin = table[table["metric"] == "loading_sin_theta"]
    assert set(sin["level"]) == {"global", "partial", "specific"}
    assert set(sin["structure"]) == {"{a,b,c}", "{a,b}", "{a}", "{b}", "{c}"}
    assert ((sin["value"] >= 0) & (sin["value"] <= 1.0 + 1e-12)).all()
    # one simulated data set per replication for all methods: a deterministic method agrees with itself
    a = _without_times(table[table["method"] == "cheap"]).drop(columns="method").reset_index(drop=True)
    b = _without_times(table[table["method"] == "cheap_again"]).drop(columns="method").reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    # files: manifest, one checkpoint per (cell, replication), the table, a summary, no temporary files
    out = tmp_path / "out"
    assert json.loads((out / "study.json").read_text())["fingerprint"] == load_config(cfg).fingerprint
    assert len(list((out / "checkpoints").glob("cell*-rep*.json"))) == 8
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    pd.testing.assert_frame_equal(load_results(out), table, check_exact=True)
    summary = pd.read_csv(out / "summary.csv")
    assert {"mean", "std", "count", "n_errors"} <= set(summary.columns)


class _Interrupt(Exception):
    pass


def test_interrupted_study_resumes_to_the_uninterrupted_rows(tmp_path):
    cfg = _config()
    full = run_study(cfg, tmp_path / "full", quiet=True, plot=False)
    n_tasks = 8
    assert len(CALLS) == n_tasks
    CALLS.clear()

    done = []

    def stop_after_three(cell, replication, rows):
        done.append((cell, replication))
        if len(done) == 3:
            raise _Interrupt

    out = tmp_path / "resumed"
    with pytest.raises(_Interrupt):
        run_study(cfg, out, quiet=True, plot=False, on_replication=stop_after_three)
    assert len(list((out / "checkpoints").glob("cell*-rep*.json"))) == 3
    assert not (out / "results.csv").exists()
    CALLS.clear()
    resumed = run_study(cfg, out, quiet=True, plot=False)
    assert len(CALLS) == n_tasks - 3  # finished replications are not redone
    pd.testing.assert_frame_equal(_sorted(_without_times(resumed)), _sorted(_without_times(full)), check_exact=True)
    # the checkpointed fit times survive the restart unchanged
    first = {(c, r) for c, r in done}
    kept = resumed[resumed.apply(lambda row: (row["cell"], row["replication"]) in first, axis=1)]
    assert (kept["metric"] == "fit_time").sum() == 3


def test_max_cells_then_full_run(tmp_path):
    cfg = _config()
    out = tmp_path / "out"
    part = run_study(cfg, out, quiet=True, plot=False, max_cells=1)
    assert set(part["cell"]) == {0}
    CALLS.clear()
    full = run_study(cfg, out, quiet=True, plot=False)
    assert len(CALLS) == 6
    assert set(full["cell"]) == {0, 1, 2, 3}
    pd.testing.assert_frame_equal(_sorted(full[full["cell"] == 0]), _sorted(part), check_exact=True)


def test_more_replications_extend_a_study_and_other_configs_are_refused(tmp_path):
    out = tmp_path / "out"
    run_study(_config(), out, quiet=True, plot=False)
    CALLS.clear()
    more = run_study(_config(study__replications=3), out, quiet=True, plot=False)
    assert len(CALLS) == 4 and set(more["replication"]) == {0, 1, 2}
    with pytest.raises(StudyConfigError, match=r"holds results of a different study configuration"):
        run_study(_config(grid__n=[60, 240]), out, quiet=True, plot=False)


def test_failing_method_is_recorded_not_fatal(tmp_path):
    with pytest.warns(EstimationWarning, match=r"^8 of 16 fits of the study failed .* method 'broken': "
                                                r"fit: RuntimeError: boom"):
        table = run_study(_config(study__methods=["broken", "cheap"]), tmp_path, quiet=True, plot=False)
    errors = table[table["method"] == "broken"]
    assert len(errors) == 8 and (errors["metric"] == "error").all()
    assert errors["value"].isna().all()
    assert errors["error"].str.startswith("fit: RuntimeError: boom").all()
    assert (table.loc[table["method"] == "cheap", "metric"] != "error").all()
    summary = summarize_results(table)
    assert summary.loc[summary["method"] == "cheap", "n_errors"].eq(0).all()
    failed = fit_failures(table)
    assert list(failed.columns) == ["cell", "replication", "method", "error"]
    assert len(failed) == 8 and set(failed["method"]) == {"broken"} and count_fits(table) == 16


def test_summary_keeps_a_method_whose_every_fit_failed(tmp_path):
    # the old summary dropped a (cell, method) with no successful row: a total failure was invisible there
    with pytest.warns(EstimationWarning, match=r"8 of 16 fits"):
        run_study(_config(study__methods=["broken", "cheap"]), tmp_path, quiet=True, plot=False)
    summary = pd.read_csv(tmp_path / "summary.csv")
    broken = summary[summary["method"] == "broken"]
    assert sorted(broken["cell"]) == [0, 1, 2, 3]
    assert (broken["metric"] == "error").all() and (broken["count"] == 0).all() and (broken["n_errors"] == 2).all()
    assert broken["mean"].isna().all()


def test_study_where_every_fit_fails_still_writes_its_summary(tmp_path):
    with pytest.warns(EstimationWarning, match=r"^8 of 8 fits of the study failed"):
        table = run_study(_config(study__methods=["broken"]), tmp_path, quiet=True)
    assert (table["metric"] == "error").all() and len(fit_failures(table)) == count_fits(table) == 8
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert len(summary) == 4 and summary["n_errors"].eq(2).all()


def test_a_failed_metric_is_not_a_failed_fit():
    table = pd.DataFrame({"cell": [0, 0], "replication": [0, 0], "method": ["m", "m"],
                          "metric": ["fit_time", "error"], "value": [0.1, np.nan],
                          "error": [None, "metric pattern: KeyError: 'x'"]})
    assert fit_failures(table).empty and count_fits(table) == 1


def test_missing_estimator_fails_before_running_naming_the_method(tmp_path):
    register_method("ghost", _cheap, requires=("hclstat.no_such_module:Ghost",), overwrite=True)
    try:
        with pytest.raises(MethodUnavailableError, match=r"method 'ghost' needs hclstat\.no_such_module\.Ghost"):
            run_study(_config(study__methods=["cheap", "ghost"]), tmp_path / "out", quiet=True)
    finally:
        unregister_method("ghost")
    assert not CALLS and not (tmp_path / "out").exists()


def test_run_study_argument_errors(tmp_path):
    with pytest.raises(ValueError, match=r"workers: expected a positive integer or None, got 0"):
        run_study(_config(), tmp_path, workers=0)
    with pytest.raises(ValueError, match=r"max_cells: expected a positive integer or None, got -1"):
        run_study(_config(), tmp_path, max_cells=-1)


# ---------------------------------------------------------------- figures
def test_plots_are_written(tmp_path):
    cfg = _config(grid__noise_model=_DROP, study__replications=1,
                  study__methods=["cheap", "truth"])
    cfg["grid"]["loading_scale"] = [1.0, 0.5]
    table = run_study(cfg, tmp_path / "out", quiet=True)
    names = {p.name for p in (tmp_path / "out" / "figures").iterdir()}
    assert {
        "loading_sin_theta_vs_n.png", "block_error_vs_n.png", "pattern_recovery_vs_n.png",
        "pattern_recovery_vs_loading_scale.png", "fit_time_vs_n.png",
    } <= names
    for name in names:
        assert (tmp_path / "out" / "figures" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # from the CSV, and the p-scaling figure when p varies
    cfg = _config(grid__noise_model=_DROP, study__replications=1, model__p=_DROP, model__n=100, grid__n=_DROP)
    cfg["grid"]["p"] = [6, 12]
    run_study(cfg, tmp_path / "p", quiet=True, plot=False)
    written = plot_study(tmp_path / "p" / "results.csv", tmp_path / "pfig")
    assert [p.name for p in written] == ["loading_sin_theta_squared_vs_p.png"]
    assert len(table)


def test_figures_of_a_zero_error_method_warn_about_nothing(tmp_path):
    # the truth method's lines are left out of the log-log panels: no empty legend to warn about
    import warnings

    table = run_study(_config(study__methods=["truth"], study__replications=1), tmp_path / "out", quiet=True,
                      plot=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        written = plot_study(table, tmp_path / "fig")
    assert {p.name for p in written} >= {"loading_sin_theta_vs_n.png", "pattern_recovery_vs_n.png"}


# ------------------------------------------------------------------- dask
@pytest.fixture
def alarm():
    """Fail instead of hanging if the cluster never answers (no pytest-timeout here)."""

    def on_alarm(signum, frame):
        raise TimeoutError("dask test exceeded 120 s")

    if not hasattr(signal, "SIGALRM"):
        pytest.skip("needs SIGALRM")
    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(120)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def test_local_cluster_gives_the_serial_rows(tmp_path, alarm):
    import cloudpickle

    # workers cannot import this test module: ship the test method by value
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        cfg = _config(study__replications=1)
        serial = run_study(cfg, tmp_path / "serial", quiet=True, plot=False)
        parallel = run_study(cfg, tmp_path / "dask", workers=2, quiet=True, plot=False)
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    pd.testing.assert_frame_equal(
        _sorted(_without_times(parallel)), _sorted(_without_times(serial)), check_exact=True
    )
    assert len(list((tmp_path / "dask" / "checkpoints").glob("*.json"))) == 4


def test_atomic_writes_get_the_usual_file_mode(tmp_path):
    # mkstemp creates 0600 files; results must be as readable as a plain open() makes them
    import os

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hclstat.studies import _atomic_write_bytes, _save

    umask = os.umask(0o022)
    try:
        _atomic_write_bytes(tmp_path / "x.json", b"{}")
        fig = plt.figure()
        _save(fig, tmp_path / "x.png")
        plt.close(fig)
    finally:
        os.umask(umask)
    for name in ("x.json", "x.png"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name


def test_atomic_writes_leave_the_process_umask_alone(tmp_path, monkeypatch):
    # os.umask(0) to read the umask opens a window in which other threads create world-writable files
    import os

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from hclstat.studies import _atomic_write_text, _save

    def forbidden(mask):
        raise AssertionError(f"os.umask({mask:#o}) called: the process umask is shared by every thread")

    monkeypatch.setattr(os, "umask", forbidden)
    _atomic_write_text(tmp_path / "x.json", "{}")
    _save(Figure(), tmp_path / "x.png")
    assert (tmp_path / "x.json").read_text() == "{}" and (tmp_path / "x.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json", "x.png"]  # no temporary file left


def test_failed_atomic_write_leaves_the_target_and_no_temporary_file(tmp_path):
    from hclstat.studies.storage import atomic_file

    target = tmp_path / "x.json"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_file(target) as fh:
            fh.write(b"half")
            raise RuntimeError("disk full")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["x.json"]
