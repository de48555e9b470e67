"""The NAFLD study (``examples/ehr_nafld.py``): modalities from before the index only, a resumable run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
sys.path.insert(0, str(EXAMPLES))
import ehr_nafld  # noqa: E402

from hclstat.datasets import NafldTables, load_nafld  # noqa: E402


@pytest.fixture(scope="module")
def tables():
    return load_nafld()


@pytest.fixture(scope="module")
def built(tables):
    return ehr_nafld.nafld_modalities(tables)


def test_modalities_and_outcomes(built, tables):
    views, outcomes = built
    n = len(tables.subjects)
    assert list(views) == ["demographics", "labs", "diagnoses"]
    assert all(v.shape[0] == n and v.index.equals(outcomes.index) for v in views.values())
    assert sorted(views["labs"].columns) == ["fib4_last", "hdl_count", "hdl_last", "sbp_count", "sbp_last",
                                             "smoke_last"]
    assert "nafld_ever" not in views["diagnoses"].columns and views["diagnoses"].shape[1] == 9
    assert set(np.unique(views["diagnoses"].to_numpy())) <= {0.0, 1.0}
    # deaths within five years: events after the index only; censored before five years -> NaN
    sub = tables.subjects.set_index("id")
    died = (sub["status"] == 1) & (sub["futime"] <= ehr_nafld.HORIZON)
    assert (outcomes.loc[died, "death_5y"] == 1).all()
    followed = sub["futime"] >= ehr_nafld.HORIZON  # followed to the end of (0, horizon]
    assert (outcomes.loc[followed & ~died, "death_5y"] == 0).all()
    assert outcomes.loc[~died & ~followed, "death_5y"].isna().all()
    assert (outcomes["event"].to_numpy() == sub["status"].to_numpy()).all()
    assert np.allclose(outcomes["time"].to_numpy(), sub["futime"].to_numpy())


def test_nothing_after_the_index_reaches_the_features(tables, built):
    # planting extreme lab values and new diagnoses at and after the index changes no feature
    views, _ = built
    ids = tables.subjects["id"].to_numpy()[:500]
    labs = pd.DataFrame({"id": np.repeat(ids, 2), "days": np.tile([0, 30], ids.size),
                         "test": "hdl", "value": 1e6})
    events = pd.DataFrame({"id": ids, "days": 1, "event": "stroke"})
    planted = NafldTables(subjects=tables.subjects, labs=pd.concat([tables.labs, labs], ignore_index=True),
                          events=pd.concat([tables.events, events], ignore_index=True))
    again, _ = ehr_nafld.nafld_modalities(planted)
    for m in views:
        assert_frame_equal(again[m], views[m])


def test_quick_study_runs_and_resumes_from_its_checkpoints(tmp_path, capsys):
    out = tmp_path / "nafld"
    argv = ["--quick", "--tasks", "mortality_5y", "--methods", "hcl,pca,raw", "--out", str(out)]
    assert ehr_nafld.main(argv) == 0
    results = pd.read_csv(out / "results" / "results.csv")
    assert set(results["method"]) == {"hcl", "pca", "raw"} and set(results["metric"]) == {"AUROC", "AUPRC"}
    auroc = results[results["metric"] == "AUROC"].set_index("method")
    # every method predicts better than chance on held-out rows; intervals bracket the estimate
    assert (auroc["value"] > 0.6).all()
    assert ((auroc["ci_low"] <= auroc["value"]) & (auroc["value"] <= auroc["ci_high"])).all()
    for name in ("roc.png", "calibration.png", "pattern.png", "variance_explained.png", "results.md"):
        assert (out / "results" / name).stat().st_size > 0
    run = json.loads((out / "results" / "run.json").read_text())
    assert len(run["folds"]["mortality_5y"]) == 3
    checkpoints = sorted(p.name for p in (out / "checkpoints").glob("mortality_5y-*.json"))
    assert checkpoints == [f"mortality_5y-r0-f{f}.json" for f in range(3)]
    # a second run reads every fold from its checkpoint: same numbers, no fold refitted
    capsys.readouterr()
    assert ehr_nafld.main(argv) == 0
    assert "fold 1/3" not in capsys.readouterr().out
    assert_frame_equal(pd.read_csv(out / "results" / "results.csv"), results)
    # checkpoints of another configuration are refused, not mixed in
    with pytest.raises(SystemExit, match="checkpoints of another configuration"):
        ehr_nafld.main(["--quick", "--tasks", "mortality_5y", "--methods", "hcl,pca", "--out", str(out)])
