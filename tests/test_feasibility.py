"""Unreachable WMA targets are flagged: in the run record, the runs frame and tables, the α × β
grid, its heatmaps and β-curves; and the default β grid keeps every target reachable.

The cosine cost lies in [0, 2], so the OT distance D (a plan-weighted mean of costs) is at most 2;
a target β·D0 above 2 cannot be reached. Every expectation below is computed in the test from
β and D0.
"""

from __future__ import annotations

import json
import warnings

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from wma_study import figures, report  # noqa: E402
from wma_core.store import ResultsStore, config_key  # noqa: E402


@pytest.fixture(scope="module")
def small_hm(hm_twin):
    return hm_twin(120, 5)


@pytest.mark.slow
def test_fit_flags_an_unreachable_target(small_hm, tmp_path):
    from wma_core import train as T

    kw = dict(dataset="hateful_memes", data_dir=str(small_hm), epochs=1, batch_size=16, seed=0, device="cpu",
              progress=False, ot_iters=5, alpha=1.0)
    with pytest.warns(UserWarning, match="unreachable|above the largest reachable"):
        bad = T.fit(T.TrainConfig(beta=10.0, **kw), tmp_path / "store")
    d0 = bad["d0"]["text-image"]
    assert 10.0 * d0 > 2.0  # D0 of the tiny model is ~0.9: the target is out of reach
    assert bad["target_feasible"] == {"text-image": False} and bad["infeasible"] is True
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a reachable target warns nothing
        ok = T.fit(T.TrainConfig(beta=1.5 / d0, **kw), tmp_path / "store")
    assert ok["target_feasible"] == {"text-image": True} and ok["infeasible"] is False
    runs = report.runs_frame(tmp_path / "store")
    flags = runs.groupby("key")["feasible"].first()
    assert flags[bad["key"]] == False and flags[ok["key"]] == True  # noqa: E712
    table = figures.runs_table([bad, ok]).set_index("key")["target β·D0"]
    assert table[bad["key"]] == f"{10.0 * d0:.2f} ✗ unreachable (> 2)"
    assert table[ok["key"]] == "1.50"


def _record(beta, d0, seed=0, alpha=1.0, flag=True, value=0.7):
    config = {"dataset": "hateful_memes", "method": "wma" if alpha else "baseline", "alpha": alpha, "beta": beta,
              "target": "init", "lr": 1e-3, "seed": seed, "epochs": 1, "batch_size": 16, "model": "tiny", "data": "d" * 16}
    rec = {"key": config_key(config), "config": config, "headline_metric": "auroc", "d0": {"text-image": d0},
           "metrics": {c: {"auroc": value + 0.01 * beta} for c in ("normal", "text_noise")}, "dev_metrics": {"auroc": value}}
    if flag:  # records written before the flag existed have no such field
        ok = alpha == 0 or beta * d0 <= 2.0
        rec["target_feasible"] = {} if alpha == 0 else {"text-image": ok}
        rec["infeasible"] = not ok
    return rec


@pytest.fixture()
def grid_store(tmp_path):
    store = ResultsStore(tmp_path / "grid")
    d0 = 0.8  # reachable: β ≤ 2.5
    for seed in (0, 1):
        store.put(_record(1.0, d0, seed, alpha=0.0, value=0.6))
        for beta in (0.5, 2.0, 4.0):
            store.put(_record(beta, d0, seed, flag=(beta != 4.0 or seed == 0)))  # one old-style record
    return store


def test_grid_marks_unreachable_cells(grid_store):
    runs = report.runs_frame(grid_store)
    wma = runs[runs["method"] == "wma"].groupby(["beta", "seed"])["feasible"].first()
    # recomputed from config and D0 where the record has no flag (β = 4, seed 1)
    assert wma.to_dict() == {(0.5, 0): True, (0.5, 1): True, (2.0, 0): True, (2.0, 1): True, (4.0, 0): False, (4.0, 1): False}
    g = report.grid(runs, "hateful_memes", long=True)
    assert dict(zip(g["beta"], g["feasible"])) == {0.5: True, 2.0: True, 4.0: False}
    ours = figures.our_grid(runs, "hateful_memes")
    assert not ours["normal"].set_index("beta").loc[4.0, "feasible"]
    # the runs table's text: baseline none, old-style record recomputed (4 * 0.8 = 3.2 > 2)
    assert figures.target_text(_record(1.0, 0.8, alpha=0.0)) == "–"
    assert figures.target_text(_record(4.0, 0.8, flag=False)) == "3.20 ✗ unreachable (> 2)"
    assert figures.target_text(_record(2.0, 0.8, flag=False)) == "1.60"


def test_heatmap_hatches_and_curves_mark_unreachable_cells(grid_store):
    from matplotlib.patches import Rectangle

    ours = figures.our_grid(report.runs_frame(grid_store), "hateful_memes")
    fig = figures.grid_heatmaps(ours, value="gain")
    ax = fig.axes[0]
    hatched = [p for p in ax.patches if isinstance(p, Rectangle) and p.get_hatch()]
    # one cell (α = 1, β = 4): column 2 of the β axis (0.5, 2, 4), row 0
    assert [(p.get_x() + 0.5, p.get_y() + 0.5) for p in hatched] == [(2.0, 0.0)]
    assert any("unreachable" in t.get_text() for t in fig.texts)
    fig = figures.beta_curves(ours, metric="auroc")
    crosses = [ln for ln in fig.axes[0].lines if ln.get_marker() == "x"]
    assert len(crosses) == 1 and list(crosses[0].get_xdata()) == [4.0]
    assert crosses[0].get_label().startswith("target β·D0 > 2")
    # a grid without unreachable cells gets no hatch and no cross
    ok = {c: g[g["beta"] < 4.0] for c, g in ours.items()}
    assert not [p for p in figures.grid_heatmaps(ok).axes[0].patches if p.get_hatch()]
    assert not [ln for ln in figures.beta_curves(ok, metric="auroc").axes[0].lines if ln.get_marker() == "x"]


def test_default_beta_grid_reachable_for_recorded_d0():
    """Every default grid cell's target β·D0 ≤ 2 for the largest D0 the calibration runs measured."""
    from wma_study.calibration import CALIBRATION_PATH
    from wma_study.experiments import get_profile

    cal = json.loads(CALIBRATION_PATH.read_text())
    prof = get_profile("default")
    d0_max = max(v for pairs in cal["d0"].values() for vals in pairs.values() for v in vals)
    assert set(cal["d0"]) == {"hateful_memes", "mmimdb", "ur_funny", "mosei"}
    assert 0 < d0_max <= 2.0
    assert max(prof.beta_grid) * d0_max <= 2.0, (prof.beta_grid, d0_max)
    # the margin the grid keeps: its largest target is at most this share of the largest reachable D
    print(f"largest default target: {max(prof.beta_grid) * d0_max:.3f} (D0 max {d0_max:.3f})")
    assert np.isfinite(d0_max)
