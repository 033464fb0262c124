"""wma_study.report on a hand-written results store.

The expected numbers are computed here independently: Student-t intervals from
``scipy.stats.t.ppf`` and numpy, the paper's cells read with the ``csv`` module straight from
``book/data/paper_results.csv``, the data digest with ``hashlib``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math

import numpy as np
import pytest
from scipy import stats as st

from wma_study import report
from wma_study.paper import DEFAULT_PATH
from wma_core.store import ResultsStore, config_key

HM_CASES = ["normal", "text_noise", "image_noise", "text_missing", "image_missing"]
MOSEI_CASES = ["normal", "text_noise", "video_noise", "audio_noise", "text_missing", "video_missing", "audio_missing"]

# Hateful Memes, AUROC per seed (0, 1, 2). WMA "X" (α=1, β=1) = baseline + a per-case shift.
HM_BASE = {
    "normal": [0.70, 0.72, 0.74],
    "text_noise": [0.60, 0.61, 0.62],
    "image_noise": [0.55, 0.50, 0.52],
    "text_missing": [0.64, 0.65, 0.66],
    "image_missing": [0.65, 0.66, 0.67],
}
HM_SHIFT_X = {
    "normal": [0.010, 0.011, 0.009],  # small spread: the paper's +0.005 is outside the noise
    "text_noise": [0.006, 0.007, 0.008],  # our CI contains the paper's +0.007, and excludes 0
    "image_noise": [0.05, -0.03, 0.01],  # large spread: the paper's +0.020 is inside the noise
    "text_missing": [0.006, 0.002, 0.004],  # diff 0.004 ± 0.005, paper +0.008: outside the noise, in our CI
    "image_missing": [-0.01, -0.02, -0.03],  # WMA worse here; CI contains 0
}
# dev AUROC: X is best on dev, Y (α=0.1, β=2) is best on the test split's normal case
DEV = {"baseline": [0.75, 0.76, 0.77], "X": [0.80, 0.80, 0.80], "Y": [0.70, 0.70, 0.70], "Z": [0.72, 0.72]}
Y_NORMAL = [0.76, 0.76, 0.76]
Z_NORMAL = [0.70, 0.69]  # Z (α=1, β=2) ran seeds 0 and 1 only
MINOT_NORMAL = [0.69, 0.70, 0.71]

# MOSEI, MAE (lower is better)
MO_BASE = [0.80, 0.82, 0.81]
MO_WMA = [0.79, 0.80, 0.80]


def t_ci(x):
    x = np.asarray(x, dtype=float)
    n = len(x)
    h = st.t.ppf(0.975, n - 1) * x.std(ddof=1) / math.sqrt(n)
    return x.mean(), x.mean() - h, x.mean() + h


def paper_cells(table, dataset, method):
    with open(DEFAULT_PATH, newline="") as f:
        return {r["test_case"]: float(r["value"]) for r in csv.DictReader(f)
                if r["table"] == str(table) and r["dataset"] == dataset and r["method"] == method}


def make_record(dataset, method, alpha, beta, seed, metrics, dev, data, lr=1e-3, target="init"):
    config = {"dataset": dataset, "method": method, "alpha": alpha, "beta": beta, "target": target, "lr": lr,
              "seed": seed, "epochs": 4, "batch_size": 32, "model": "tiny", "data": data, "patience": 5,
              "adam_betas": [0.9, 0.98]}
    head = {"hateful_memes": "auroc", "mosei": "mae"}[dataset]
    return {"key": config_key(config), "config": config, "headline_metric": head, "metrics": metrics,
            "dev_metrics": dev, "best_epoch": 1}


def hm_metrics(values_by_case, seed):
    return {c: {"auroc": v[seed], "accuracy": 0.5} for c, v in values_by_case.items()}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    data_dir = root / "prepared"
    data_dir.mkdir()
    (data_dir / "manifest.json").write_text(json.dumps({"dataset": "hateful_memes", "splits": {"train": 10}}))
    digest = hashlib.sha256((data_dir / "manifest.json").read_bytes()).hexdigest()[:16]
    store = ResultsStore(root / "results")
    X = {c: list(np.add(HM_BASE[c], HM_SHIFT_X[c])) for c in HM_CASES}
    Y = {c: ([v + 0.01 for v in Y_NORMAL] if c != "normal" else Y_NORMAL) for c in HM_CASES}
    Z = {c: Z_NORMAL for c in HM_CASES}
    M = {c: MINOT_NORMAL for c in HM_CASES}
    for s in range(3):
        store.put(make_record("hateful_memes", "baseline", 0.0, 1.0, s, hm_metrics(HM_BASE, s), {"auroc": DEV["baseline"][s], "accuracy": 0.6}, digest))
        store.put(make_record("hateful_memes", "wma", 1.0, 1.0, s, hm_metrics(X, s), {"auroc": DEV["X"][s], "accuracy": 0.6}, digest))
        # α = 0.1 stored as a sum that is not exactly 0.1: where-filters compare with a tolerance
        store.put(make_record("hateful_memes", "wma", 0.7 - 0.6, 2.0, s, hm_metrics(Y, s), {"auroc": DEV["Y"][s], "accuracy": 0.6}, digest))
        store.put(make_record("hateful_memes", "min_ot", 1.0, 0.0, s, hm_metrics(M, s), {"auroc": 0.7, "accuracy": 0.6}, digest))
        mo = {c: {"mae": MO_BASE[s] + 0.001 * i, "corr": 0.5} for i, c in enumerate(MOSEI_CASES)}
        mw = {c: {"mae": MO_WMA[s] + 0.001 * i, "corr": 0.5} for i, c in enumerate(MOSEI_CASES)}
        store.put(make_record("mosei", "baseline", 0.0, 1.0, s, mo, {"mae": 0.9, "corr": 0.4}, digest))
        store.put(make_record("mosei", "wma", 1.0, 1.2, s, mw, {"mae": 0.85, "corr": 0.4}, digest))
    for s in range(2):
        store.put(make_record("hateful_memes", "wma", 1.0, 2.0, s, hm_metrics(Z, s), {"auroc": DEV["Z"][s], "accuracy": 0.6}, digest))
    # a run on other data (e.g. the smoke twin): must never mix with the others
    store.put(make_record("hateful_memes", "baseline", 0.0, 1.0, 0, hm_metrics(HM_BASE, 0), {"auroc": 0.99, "accuracy": 0.9}, "f" * 16))
    runs = report.runs_frame(store, data_dir=data_dir)
    return store, data_dir, runs


def test_runs_frame_rows_and_filters(setup):
    store, data_dir, runs = setup
    assert list(runs.columns) == ["key", "dataset", "method", "alpha", "beta", "target", "lr", "l2sp", "seed", "epochs",
                                  "batch_size", "model", "backbone", "data", "init", "split", "test_case", "metric",
                                  "value", "collapsed", "feasible", "at_prior"]
    # hateful memes: 3+3+3+3+2 runs x (5 cases x 2 metrics + 2 dev metrics); mosei: 6 runs x (7 x 2 + 2)
    assert len(runs) == 14 * 12 + 6 * 16
    assert runs["key"].nunique() == 20
    everything = report.runs_frame(store.root)
    assert everything["key"].nunique() == 21 and len(everything) == len(runs) + 12
    assert set(runs["data"]) == {hashlib.sha256((data_dir / "manifest.json").read_bytes()).hexdigest()[:16]}
    dev = runs[runs["split"] == "dev"]
    assert set(dev["test_case"]) == {"normal"}
    x0 = dev[(dev["method"] == "wma") & (np.isclose(dev["alpha"], 1)) & (np.isclose(dev["beta"], 1)) & (dev["seed"] == 0) & (dev["metric"] == "auroc")]
    assert x0["value"].tolist() == [0.80]
    # float tolerance: the stored alpha is 0.7 - 0.6 != 0.1
    y = report.runs_frame(store, data_dir=data_dir, alpha=0.1)
    assert y["key"].nunique() == 3 and set(y["beta"]) == {2.0}
    assert report.runs_frame(store, data_dir=data_dir, method="wma", alpha=1.0, beta=[1.0, 2.0])["key"].nunique() == 5
    assert report.runs_frame(store, dataset="mosei", method="baseline")["key"].nunique() == 3
    assert report.runs_frame(store, dataset="nope").empty
    # runs on two prepared data sets never mix silently
    with pytest.raises(ValueError, match="different prepared data"):
        report.comparison(everything, "hateful_memes")
    with pytest.raises(ValueError, match="different prepared data"):
        report.select(everything, dataset="hateful_memes")
    assert len(report.comparison(report.runs_frame(store, data="f" * 16), "hateful_memes")) == 5


def test_comparison_auroc_values_and_flags(setup):
    _, _, runs = setup
    c = report.comparison(runs, "hateful_memes", b={"method": "wma", "alpha": 1.0, "beta": 1.0})
    assert c["test_case"].tolist() == HM_CASES
    assert (c["metric"] == "auroc").all() and (c["n_seeds"] == 3).all()
    pa, pb = paper_cells(1, "hateful_memes", "baseline"), paper_cells(1, "hateful_memes", "wma")
    for r in c.itertuples():
        a = np.array(HM_BASE[r.test_case])
        b = a + np.array(HM_SHIFT_X[r.test_case])
        assert r.paper_a == pa[r.test_case] and r.paper_b == pb[r.test_case]
        assert r.paper_gain == pytest.approx(pb[r.test_case] - pa[r.test_case])
        assert (r.a_mean, r.a_lo, r.a_hi) == pytest.approx(t_ci(a), abs=1e-12)
        assert (r.b_mean, r.b_lo, r.b_hi) == pytest.approx(t_ci(b), abs=1e-12)
        assert (r.diff_mean, r.diff_lo, r.diff_hi) == pytest.approx(t_ci(b - a), abs=1e-12)
        d = b - a
        tstat = d.mean() / (d.std(ddof=1) / math.sqrt(3))
        assert r.p_value == pytest.approx(2 * st.t.sf(abs(tstat), 2), rel=1e-6)
        assert r.a_config == "baseline lr=0.001" and r.b_config == "wma lr=0.001 α=1 β=1 target=init"
    flags = c.set_index("test_case")[["gain_in_noise", "paper_gain_in_ci", "ci_contains_zero"]]
    # normal: diff 0.010 ± 0.0025, paper +0.005 -> outside the noise, outside our CI
    assert flags.loc["normal"].tolist() == [False, False, False]
    # text noise: diff 0.007 ± 0.0025, paper +0.007 -> not noise, inside our CI
    assert flags.loc["text_noise"].tolist() == [False, True, False]
    # image noise: diff 0.01 ± 0.099, paper +0.020 -> inside the noise
    assert flags.loc["image_noise"].tolist() == [True, True, True]
    # text missing: diff 0.004 ± 0.00497 (half-width), paper +0.008 -> beyond the half-width, inside our CI
    assert flags.loc["text_missing"].tolist() == [False, True, True]
    # image missing: diff -0.02 ± 0.025, paper +0.010 -> inside the noise, outside our CI
    assert flags.loc["image_missing"].tolist() == [True, False, True]
    assert c["gain_in_noise"].dtype == bool


def test_comparison_mae_sign_and_missing_paper_cells(setup):
    _, _, runs = setup
    c = report.comparison(runs, "mosei")
    assert c["test_case"].tolist() == MOSEI_CASES
    assert (c["metric"] == "mae").all()
    pa, pb = paper_cells(1, "mosei", "baseline"), paper_cells(1, "mosei", "wma")
    for i, r in enumerate(c.itertuples()):
        a = np.array(MO_BASE) + 0.001 * i
        b = np.array(MO_WMA) + 0.001 * i
        # lower MAE is better: a positive gain means WMA has the lower MAE
        assert r.paper_gain == pytest.approx(pa[r.test_case] - pb[r.test_case])
        assert r.diff_mean == pytest.approx((a - b).mean(), abs=1e-12) and r.diff_mean > 0
        assert (r.diff_lo, r.diff_hi) == pytest.approx(t_ci(a - b)[1:], abs=1e-12)
        assert r.diff_lo < r.diff_hi
        assert r.a_mean == pytest.approx(a.mean()) and r.b_mean == pytest.approx(b.mean())
    # a metric the paper does not report: paper columns NaN, flags False
    corr = report.comparison(runs, "mosei", metric="corr")
    assert corr["paper_a"].isna().all() and corr["paper_gain"].isna().all()
    assert not corr["gain_in_noise"].any() and not corr["paper_gain_in_ci"].any()


def test_comparison_table2_selection_and_pairing(setup):
    _, _, runs = setup
    c = report.comparison(runs, "hateful_memes", a={"method": "min_ot"}, b={"method": "wma", "alpha": 1.0, "beta": 1.0}, paper_table=2)
    pa, pb = paper_cells(2, "hateful_memes", "min_ot"), paper_cells(2, "hateful_memes", "wma")
    assert c["paper_a"].tolist() == [pa[k] for k in HM_CASES]
    assert c["paper_b"].tolist() == [pb[k] for k in HM_CASES]
    assert c.loc[0, "a_mean"] == pytest.approx(np.mean(MINOT_NORMAL))
    # b left open: the WMA cell is chosen on dev (X), or on test (Y) the paper's way
    assert report.comparison(runs, "hateful_memes")["b_config"].iloc[0] == "wma lr=0.001 α=1 β=1 target=init"
    ct = report.comparison(runs, "hateful_memes", by="test")
    assert ct["b_config"].iloc[0] == "wma lr=0.001 α=0.1 β=2 target=init"
    assert ct.loc[0, "b_mean"] == pytest.approx(0.76)
    # Z ran seeds 0 and 1 only: the comparison pairs those
    cz = report.comparison(runs, "hateful_memes", b={"method": "wma", "alpha": 1.0, "beta": 2.0})
    assert (cz["n_seeds"] == 2).all()
    assert cz.loc[0, "a_mean"] == pytest.approx(np.mean(HM_BASE["normal"][:2]))
    assert cz.loc[0, "diff_mean"] == pytest.approx(np.mean(np.subtract(Z_NORMAL, HM_BASE["normal"][:2])))
    # a table-1 comparison naming a method table 1 does not have: NaN paper cells
    assert report.comparison(runs, "hateful_memes", a={"method": "min_ot"}, paper_table=1)["paper_a"].isna().all()


def test_select_dev_vs_test(setup):
    _, _, runs = setup
    dev = report.select(runs, by="dev", dataset="hateful_memes")
    test = report.select(runs, by="test", dataset="hateful_memes")
    assert set(dev["alpha"]) == {1.0} and set(dev["beta"]) == {1.0}
    assert set(np.round(test["alpha"], 9)) == {0.1} and set(test["beta"]) == {2.0}
    assert (dev["n_candidates"] == 3).all() and (test["n_candidates"] == 3).all()
    assert dev["selected_on"].iloc[0] == pytest.approx(0.80)
    assert test["selected_on"].iloc[0] == pytest.approx(0.76)
    d = dev[dev["metric"] == "auroc"].set_index("test_case")
    assert d.index.tolist() == HM_CASES
    x = np.add(HM_BASE["image_noise"], HM_SHIFT_X["image_noise"])
    assert (d.loc["image_noise", "mean"], d.loc["image_noise", "lo"], d.loc["image_noise", "hi"]) == pytest.approx(t_ci(x))
    assert (d["n"] == 3).all()
    # several datasets and methods at once; MAE selected as "lower is better"
    both = report.select(runs, by="dev", methods=("baseline", "wma"))
    assert set(zip(both["dataset"], both["method"])) == {("hateful_memes", "baseline"), ("hateful_memes", "wma"), ("mosei", "baseline"), ("mosei", "wma")}


def test_select_mae_picks_lowest(tmp_path):
    store = ResultsStore(tmp_path)
    for beta, dev_mae, test_mae in [(0.5, 0.70, 0.90), (1.0, 0.60, 0.95), (2.0, 0.80, 0.85)]:
        for s in range(2):
            m = {c: {"mae": test_mae + 0.01 * s} for c in MOSEI_CASES}
            store.put(make_record("mosei", "wma", 1.0, beta, s, m, {"mae": dev_mae}, "d" * 16))
    runs = report.runs_frame(store)
    assert report.select(runs, by="dev")["beta"].iloc[0] == 1.0
    assert report.select(runs, by="test")["beta"].iloc[0] == 2.0


def test_grid(setup):
    _, _, runs = setup
    g = report.grid(runs, "hateful_memes")
    assert list(g.columns) == [0.0, 1.0, 2.0]
    assert np.allclose(g.index, [0.1, 1.0])
    assert g.loc[1.0, 1.0] == pytest.approx(np.mean(np.add(HM_BASE["normal"], HM_SHIFT_X["normal"])))
    assert g.loc[1.0, 2.0] == pytest.approx(np.mean(Z_NORMAL))
    assert g.loc[1.0, 0.0] == pytest.approx(np.mean(MINOT_NORMAL))
    assert math.isnan(g.iloc[0][1.0])  # (α=0.1, β=1) never ran
    assert g.attrs["baseline"]["mean"] == pytest.approx(np.mean(HM_BASE["normal"]))
    assert g.attrs["baseline"]["n"] == 3
    long = report.grid(runs, "hateful_memes", test_case="image_noise", long=True)
    row = long[np.isclose(long["alpha"], 1.0) & np.isclose(long["beta"], 1.0)].iloc[0]
    x = np.add(HM_BASE["image_noise"], HM_SHIFT_X["image_noise"])
    assert (row["mean"], row["lo"], row["hi"]) == pytest.approx(t_ci(x)) and row["n"] == 3
    assert report.grid(runs, "hateful_memes", split="dev").loc[1.0, 1.0] == pytest.approx(0.80)


def test_format_ci():
    assert report.format_ci(0.7123, 0.7, 0.7246) == "0.712 ± 0.012"
    assert report.format_ci(0.7123, float("nan"), float("nan")) == "0.712"


# --------------------------------------------------------------------------- the paper's own grids


def _hand_grid(dataset, table, case, selected):
    """Share above, median, max, E[max of K], selected gain: plain arithmetic on the CSV's rows."""
    with open(DEFAULT_PATH, newline="") as f:
        rows = list(csv.DictReader(f))
    base = [float(r["value"]) for r in rows if r["table"] == "1" and r["dataset"] == dataset
            and r["method"] == "baseline" and r["test_case"] == case][0]
    sign = -1.0 if dataset == "mosei" else 1.0
    cells = [(float(r["alpha"]), float(r["beta"]), sign * (float(r["value"]) - base)) for r in rows
             if r["table"] == str(table) and r["dataset"] == dataset and r["test_case"] == case]
    gains = sorted(g for _, _, g in cells)
    k = len(gains)
    above = sum(1 for g in gains if g > 0) / k
    median = gains[k // 2] if k % 2 else (gains[k // 2 - 1] + gains[k // 2]) / 2
    emax = sum(g * ((j / k) ** k - ((j - 1) / k) ** k) for j, g in enumerate(gains, start=1))
    sel = [g for a, b, g in cells if abs(a - selected[0]) < 1e-9 and abs(b - selected[1]) < 1e-9][0]
    return {"k": k, "share_above": above, "median_gain": median, "max_gain": gains[-1], "expected_max": emax,
            "selected_gain": sel}


@pytest.mark.parametrize("dataset, table, case, selected", [
    ("hateful_memes", 3, "normal", (1.0, 2.0)),
    ("mmimdb", 4, "normal", (6.0, 0.2)),
    ("ur_funny", 5, "video_noise", (5.0, 0.6)),
    ("mosei", 6, "audio_noise", (1.0, 1.2)),
])
def test_paper_grid_summary_by_hand(dataset, table, case, selected):
    from wma_study.paper_grids import grid_summary

    s = grid_summary([dataset]).set_index("test_case").loc[case]
    hand = _hand_grid(dataset, table, case, selected)
    assert s["k"] == hand["k"]
    for col in ("share_above", "median_gain", "max_gain", "expected_max", "selected_gain"):
        assert s[col] == pytest.approx(hand[col], abs=1e-12), col


def test_paper_grid_summary_known_facts_and_exclusions():
    from wma_study.paper_grids import EXCLUDED, grid_summary

    s = grid_summary().set_index(["dataset", "test_case"])
    hm = s.loc[("hateful_memes", "normal")]
    # 10 of 56 cells beat the baseline 0.736; the median cell is 0.005 below it; the selected cell is the maximum
    assert hm["k"] == 56 and hm["share_above"] == pytest.approx(10 / 56)
    assert hm["median_gain"] == pytest.approx(-0.005, abs=1e-9) and hm["selected_is_max"]
    mm = s.loc[("mmimdb", "normal")]
    assert mm["k"] == 62 and mm["median_gain"] == pytest.approx(-0.001, abs=1e-9)
    assert mm["selected_gain"] == pytest.approx(0.007, abs=1e-9) and mm["selected_is_max"]
    # MOSEI's swapped columns are left out, and said so
    assert ("mosei", "text_missing") not in s.index and ("mosei", "video_missing") not in s.index
    assert set(EXCLUDED) == {("mosei", "text_missing"), ("mosei", "video_missing")}
    # the selected cell is Table 1's WMA row everywhere else
    assert np.allclose(s["selected_gain"], s["table1_gain"], atol=1e-9)


def test_p_values_print_small_and_undefined_honestly():
    from wma_study.figures import p_text

    assert p_text(0.0004) == "< 0.001" and p_text(0.0) == "< 0.001"
    assert p_text(0.0123) == "0.012" and p_text(float("nan")) == "–" and p_text(None) == "–"


def test_cached_png_draws_once_per_key(tmp_path):
    import matplotlib.pyplot as plt

    from wma_study import figures

    calls = []

    def draw(v=1.0):
        calls.append(v)
        fig, ax = plt.subplots(figsize=(2, 1))
        ax.plot([0, v])
        return fig

    a = figures.cached_png({"run": "k1"}, draw, cache_dir=tmp_path)
    b = figures.cached_png({"run": "k1"}, draw, cache_dir=tmp_path)
    assert a == b and a.startswith(b"\x89PNG") and len(calls) == 1
    figures.cached_png({"run": "k2"}, lambda: draw(2.0), cache_dir=tmp_path)  # other records: drawn
    figures.cached_png({"run": "k1"}, draw, dpi=50, cache_dir=tmp_path)  # other resolution: drawn
    assert calls == [1.0, 2.0, 1.0]
    for f in tmp_path.glob("*.png"):  # a damaged file is drawn anew, never returned
        f.write_bytes(b"not a png")
    assert figures.cached_png({"run": "k1"}, draw, cache_dir=tmp_path) == a and len(calls) == 4


def test_summary_claim_rows_carry_each_endpoint_and_its_evidence():
    import pandas as pd

    from wma_study import chapters, figures

    ep = pd.DataFrame([{"endpoint": "normal", "diff_mean": 0.01, "diff_lo": -0.01, "diff_hi": 0.03, "paper_gain": 0.005,
                        "mde": 0.02, "n_seeds": 8, "verdict": "inconclusive"},
                       {"endpoint": "missing", "diff_mean": 0.06, "diff_lo": 0.03, "diff_hi": 0.09, "paper_gain": 0.009,
                        "mde": 0.04, "n_seeds": 8, "verdict": "detected"}])
    rows = chapters.claim_rows({"mmimdb": ep}, "WMA beats minimise-OT", table=2)
    assert list(rows.columns) == chapters.CLAIM_COLUMNS
    assert rows["claim"].tolist() == ["MM-IMDb, normal: WMA beats minimise-OT", "MM-IMDb, missing: WMA beats minimise-OT"]
    assert rows["evidence"].tolist() == ["03_mmimdb: Table 2"] * 2
    assert rows[["gain", "lo", "hi", "paper", "mde", "seeds"]].iloc[1].tolist() == [0.06, 0.03, 0.09, 0.009, 0.04, 8]
    shown = figures.claims_table(rows.assign(verdict=["collapsed run", "detected"]), "c").data
    assert shown["ours [95% CI]"].tolist()[0] == "collapsed run"  # no interval for a collapsed run
    assert "0.060" in shown["ours [95% CI]"].tolist()[1]
