"""Verdicts, seed pairing and collapse detection, against values computed here.

- every branch of :func:`report.verdict` with both signs of the paper's gain;
- :func:`report.comparison` / :func:`report.endpoints` / :func:`report.grid_gains` pair seeds by
  seed id: unequal and shuffled seed sets, unmatched seeds dropped, the same answer when the rows
  are shuffled; the difference, its SD (numpy), interval and p-value (scipy), MDE (statsmodels'
  TTestPower) and Holm (multipletests) recomputed from the seed-matched values; MAE (lower is
  better) with positive and negative paper gains;
- collapse detection: the headline tolerance and the count of distinct (multi-label) predictions
  just above and below the threshold.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestPower

from wma_core.metrics import prediction_summary
from wma_study import report
from wma_study.paper import load_paper_results

NAN = float("nan")
V = report.verdict


# --------------------------------------------------------------------------- verdict branches
@pytest.mark.parametrize("g", [0.02, -0.02])
def test_collapsed_and_too_few_seeds(g):
    # a collapsed run wins over every other reading, even a detected one or a single seed
    assert V(0.1, 0.05, 0.15, 5, g, 0.01, collapsed=1) == "collapsed run"
    assert V(0.1, NAN, NAN, 1, g, NAN, collapsed=2) == "collapsed run"
    for n, lo, hi in ((1, NAN, NAN), (0, NAN, NAN), (1, 0.05, 0.15)):  # n < 2 even with a finite interval
        v = V(0.1, lo, hi, n, g, NAN)
        assert v.startswith("inconclusive") and report.MIN_SEEDS_TEXT in v
    # two seeds with a finite interval are enough for a reading
    assert V(0.03, 0.01, 0.05, 2, abs(g), 0.01) == "detected"


@pytest.mark.parametrize("g", [0.02, -0.02])
def test_detected_same_and_opposite_sign(g):
    s = math.copysign(1.0, g)
    assert V(s * 0.03, *sorted((s * 0.01, s * 0.05)), 5, g, 0.01) == "detected"
    assert V(-s * 0.03, *sorted((-s * 0.01, -s * 0.05)), 5, g, 0.01) == "detected (opposite sign)"
    # no paper number, or a paper gain of 0: an excluded 0 is "detected" either way
    for gg in (NAN, 0.0):
        assert V(-s * 0.03, *sorted((-s * 0.01, -s * 0.05)), 5, gg, 0.01) == "detected"


@pytest.mark.parametrize("g", [0.10, -0.10])
def test_ruled_out_at_the_papers_size(g):
    s = math.copysign(1.0, g)
    # interval contains 0 and ends before the paper's gain
    lo, hi = sorted((-s * 0.02, s * 0.05))
    assert V(s * 0.01, lo, hi, 5, g, 0.03) == "ruled out at the paper's size"
    # interval reaching exactly to the paper's gain: not ruled out (strict)
    lo, hi = sorted((-s * 0.02, s * 0.10))
    assert V(s * 0.01, lo, hi, 5, g, 0.03).startswith("inconclusive")
    # the interval contains the paper's gain: not ruled out
    lo, hi = sorted((-s * 0.02, s * 0.15))
    assert V(s * 0.05, lo, hi, 5, g, 0.2) == "inconclusive (our MDE exceeds the paper's gain)"


@pytest.mark.parametrize("g", [0.03, -0.03])
def test_inconclusive_reasons(g):
    s = math.copysign(1.0, g)
    lo, hi = sorted((-s * 0.02, s * 0.04))  # contains 0 and the paper's gain
    assert V(s * 0.01, lo, hi, 5, g, 0.05) == "inconclusive (our MDE exceeds the paper's gain)"
    assert V(s * 0.01, lo, hi, 5, g, 0.02) == "inconclusive (consistent with 0 and with the paper's gain)"
    assert V(s * 0.01, lo, hi, 5, g, 0.03) == "inconclusive (consistent with 0 and with the paper's gain)"
    assert V(s * 0.01, lo, hi, 5, NAN, 0.05) == "inconclusive (no paper number; our MDE is 0.050)"
    for text in (V(s * 0.01, lo, hi, 5, g, 0.05), V(0.1, 0.05, 0.15, 5, g, 0.01, 1), V(s * 0.03, *sorted((s * 0.01, s * 0.05)), 5, g)):
        assert report.verdict_category(text) in report.VERDICTS


# --------------------------------------------------------------------------- runs frames
def _frame(values: dict, dataset: str, metric: str, collapsed=()):
    """values[(method, seed, test_case)] = test value (NaN allowed); one dev row per (method, seed)."""
    rows = []

    def row(method, seed, split, case, v, dead=False):
        return {"key": f"{method}-{seed}", "dataset": dataset, "method": method, "alpha": 0.0 if method == "baseline" else 1.0,
                "beta": 1.0, "target": "init", "lr": 1e-3, "seed": seed, "epochs": 2, "batch_size": 16, "model": "tiny",
                "data": "d", "split": split, "test_case": case, "metric": metric, "value": v, "collapsed": dead, "feasible": True}

    for (m, s, c), v in values.items():
        rows.append(row(m, s, "test", c, v, (m, s, c) in collapsed))
    for m, s in sorted({(m, s) for m, s, _ in values}):
        rows.append(row(m, s, "dev", "normal", 0.5))
    return pd.DataFrame(rows, columns=report.RUN_COLUMNS)


def _paper_gain(dataset, metric, a, b, case, table=1):
    p = load_paper_results()
    p = p[(p["table"] == table) & (p["dataset"] == dataset) & (p["metric"] == metric)]
    pa = float(p[(p["method"] == a) & (p["test_case"] == case)]["value"].iloc[0])
    pb = float(p[(p["method"] == b) & (p["test_case"] == case)]["value"].iloc[0])
    return (pb - pa) if report.greater_is_better(metric) else (pa - pb)


HM_CASES = ["normal", "text_noise", "image_noise", "text_missing", "image_missing"]


def _hm_values():
    rng = np.random.default_rng(3)
    base_seeds = [1, 2, 3, 4, 5, 7]      # 5 and 7 only for the baseline
    wma_seeds = [0, 4, 3, 1, 2, 6]       # 0 and 6 only for WMA: shared {1, 2, 3, 4}
    vals = {}
    for c in HM_CASES:
        for s in base_seeds:
            vals[("baseline", s, c)] = 0.60 + 0.03 * s + 0.01 * rng.standard_normal()
        for s in wma_seeds:
            vals[("wma", s, c)] = 0.61 + 0.03 * s + 0.01 * rng.standard_normal()  # seed-driven: pairing matters
    vals[("wma", 2, "image_missing")] = NAN  # this pair is dropped from image_missing only
    return vals, {1, 2, 3, 4}


def test_comparison_pairs_by_seed_id_and_ignores_row_order():
    vals, shared = _hm_values()
    df = _frame(vals, "hateful_memes", "auroc")
    out = report.comparison(df, "hateful_memes").set_index("test_case")
    shuffled = report.comparison(df.sample(frac=1.0, random_state=1).reset_index(drop=True), "hateful_memes").set_index("test_case")
    pd.testing.assert_frame_equal(out, shuffled)
    p_second = []
    for c in HM_CASES:
        seeds = sorted(s for s in shared if not (np.isnan(vals[("baseline", s, c)]) or np.isnan(vals[("wma", s, c)])))
        a = np.array([vals[("baseline", s, c)] for s in seeds])
        b = np.array([vals[("wma", s, c)] for s in seeds])
        d = b - a
        r = out.loc[c]
        assert r["n_seeds"] == len(seeds) == (3 if c == "image_missing" else 4)
        assert r["a_mean"] == pytest.approx(a.mean(), abs=1e-12) and r["b_mean"] == pytest.approx(b.mean(), abs=1e-12)
        assert r["diff_mean"] == pytest.approx(d.mean(), abs=1e-12)
        lo, hi = st.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=st.sem(d))
        assert (r["diff_lo"], r["diff_hi"]) == pytest.approx((lo, hi), abs=1e-12)
        assert r["half_width"] == pytest.approx((hi - lo) / 2, abs=1e-12)
        assert r["p_value"] == pytest.approx(st.ttest_rel(b, a).pvalue, rel=1e-9)
        sd = np.std(d, ddof=1)
        assert r["sd_diff"] == pytest.approx(sd, rel=1e-12)
        es = TTestPower().solve_power(nobs=len(d), alpha=0.05, power=0.8, alternative="two-sided")
        assert r["mde"] == pytest.approx(es * sd, rel=1e-6)
        g = _paper_gain("hateful_memes", "auroc", "baseline", "wma", c)
        assert r["paper_gain"] == pytest.approx(g, abs=1e-12)
        assert r["verdict"] == V(d.mean(), lo, hi, len(d), g, es * sd, 0)
        assert r["ci_contains_zero"] == (lo <= 0 <= hi) and r["paper_gain_in_ci"] == (lo <= g <= hi)
        assert r["gain_in_noise"] == (abs(g) <= (hi - lo) / 2)
        if c != "normal":
            p_second.append(st.ttest_rel(b, a).pvalue)
        # pairing by position would give another answer
        pa = np.array([vals[("baseline", s, c)] for s in [1, 2, 3, 4, 5, 7]])
        pb = np.array([vals[("wma", s, c)] for s in [0, 4, 3, 1, 2, 6]])
        assert abs(np.nanmean(pb - pa) - d.mean()) > 0.01
    assert math.isnan(out.loc["normal", "p_holm"])
    np.testing.assert_allclose(out.loc[HM_CASES[1:], "p_holm"].to_numpy(), multipletests(p_second, method="holm")[1], atol=1e-12)


def test_endpoints_pair_by_seed_and_drop_incomplete_seeds():
    vals, shared = _hm_values()
    df = _frame(vals, "hateful_memes", "auroc")
    out = report.endpoints(df, "hateful_memes").set_index("endpoint")
    out2 = report.endpoints(df.sample(frac=1.0, random_state=4), "hateful_memes").set_index("endpoint")
    pd.testing.assert_frame_equal(out, out2)
    for ep, cases in (("normal", ["normal"]), ("noise", ["text_noise", "image_noise"]), ("missing", ["text_missing", "image_missing"])):
        # a seed counts only with every case of the endpoint for both methods (seed 2 lacks one missing case)
        seeds = sorted(s for s in shared if all(not np.isnan(vals[(m, s, c)]) for m in ("baseline", "wma") for c in cases))
        a = np.array([np.mean([vals[("baseline", s, c)] for c in cases]) for s in seeds])
        b = np.array([np.mean([vals[("wma", s, c)] for c in cases]) for s in seeds])
        d = b - a
        r = out.loc[ep]
        assert r["n_seeds"] == len(seeds) == (3 if ep == "missing" else 4)
        assert r["diff_mean"] == pytest.approx(d.mean(), abs=1e-12)
        assert r["sd_diff"] == pytest.approx(np.std(d, ddof=1), rel=1e-12)
        assert r["p_value"] == pytest.approx(st.ttest_rel(b, a).pvalue, rel=1e-9)
        assert r["rel_gain"] == pytest.approx(d.mean() / a.mean(), rel=1e-9)
        assert r["rel_var"] == pytest.approx(np.var(d, ddof=1) / a.mean() ** 2 / len(d), rel=1e-9)
        g = np.mean([_paper_gain("hateful_memes", "auroc", "baseline", "wma", c) for c in cases])
        assert r["paper_gain"] == pytest.approx(g, abs=1e-12)


MOSEI_CASES = ["normal", "text_noise", "video_noise", "audio_noise", "text_missing", "video_missing", "audio_missing"]


@pytest.mark.parametrize("roles", [("baseline", "wma"), ("wma", "baseline")])  # paper gain > 0, then < 0
@pytest.mark.parametrize("direction", [+1, -1])
def test_mae_orientation_detected_and_opposite(roles, direction):
    """MOSEI (MAE, lower is better): b's MAE lower by 0.02 on every seed (direction +1) or higher."""
    a_name, b_name = roles
    rng = np.random.default_rng(8)
    vals = {}
    for s in (0, 1, 2, 3, 4):
        for c in MOSEI_CASES:
            base = 0.80 + 0.01 * s
            vals[(a_name, s, c)] = base
            vals[(b_name, s, c)] = base - direction * (0.02 + 0.002 * rng.standard_normal())
    df = _frame(vals, "mosei", "mae")
    out = report.comparison(df, "mosei", a={"method": a_name}, b={"method": b_name}).set_index("test_case")
    r = out.loc["normal"]
    g = _paper_gain("mosei", "mae", a_name, b_name, "normal")
    assert (g > 0) == (roles == ("baseline", "wma")) and g != 0
    a = np.array([vals[(a_name, s, "normal")] for s in range(5)])
    b = np.array([vals[(b_name, s, "normal")] for s in range(5)])
    d = a - b  # lower MAE is better: positive = b better
    lo, hi = st.t.interval(0.95, 4, loc=d.mean(), scale=st.sem(d))
    assert r["diff_mean"] == pytest.approx(d.mean(), abs=1e-12)
    assert (r["diff_lo"], r["diff_hi"]) == pytest.approx((lo, hi), abs=1e-12)
    assert r["paper_gain"] == pytest.approx(g, abs=1e-12)
    same = (direction > 0) == (g > 0)
    assert r["verdict"] == ("detected" if same else "detected (opposite sign)")
    e = report.endpoints(df, "mosei", a={"method": a_name}, b={"method": b_name}).set_index("endpoint").loc["normal"]
    assert e["verdict"] == r["verdict"] and e["rel_gain"] == pytest.approx(d.mean() / a.mean(), rel=1e-9)


@pytest.mark.parametrize("roles", [("baseline", "wma"), ("wma", "baseline")])
def test_mae_inconclusive_ruled_out_collapsed_and_one_seed(roles):
    a_name, b_name = roles
    g = _paper_gain("mosei", "mae", a_name, b_name, "normal")
    s = math.copysign(1.0, g)
    rng = np.random.default_rng(9)
    # noise far above |g|: inconclusive, our MDE exceeds the paper's gain
    wide = {}
    for k in range(4):
        wide[(a_name, k, "normal")] = 0.8
        wide[(b_name, k, "normal")] = 0.8 + 0.05 * rng.standard_normal()
    r = report.comparison(_frame(wide, "mosei", "mae"), "mosei", a={"method": a_name}, b={"method": b_name}).set_index("test_case").loc["normal"]
    assert r["diff_lo"] <= 0 <= r["diff_hi"] and r["diff_lo"] <= g <= r["diff_hi"] and r["mde"] > abs(g)
    assert r["verdict"] == "inconclusive (our MDE exceeds the paper's gain)"
    # tiny noise around 0: contains 0 but not the paper's gain → ruled out at the paper's size
    tight = {}
    for k, e in enumerate([0.0004, -0.0003, 0.0002, -0.0001, 0.0]):
        tight[(a_name, k, "normal")] = 0.8 + 0.01 * k
        tight[(b_name, k, "normal")] = 0.8 + 0.01 * k - s * e
    f = _frame(tight, "mosei", "mae")
    r = report.comparison(f, "mosei", a={"method": a_name}, b={"method": b_name}).set_index("test_case").loc["normal"]
    assert r["diff_lo"] <= 0 <= r["diff_hi"] and abs(g) > max(abs(r["diff_lo"]), abs(r["diff_hi"]))
    assert r["verdict"] == "ruled out at the paper's size"
    # the same with one collapsed run of b (on a shared seed): collapsed run
    dead = _frame(tight, "mosei", "mae", collapsed={(b_name, 2, "normal")})
    r = report.comparison(dead, "mosei", a={"method": a_name}, b={"method": b_name}).set_index("test_case").loc["normal"]
    assert r["verdict"] == "collapsed run" and r["collapsed_b"] == 1 and r["collapsed_a"] == 0
    # a collapsed run of a seed that is not shared does not count
    extra = dict(tight)
    extra[(b_name, 9, "normal")] = 0.5
    r = report.comparison(_frame(extra, "mosei", "mae", collapsed={(b_name, 9, "normal")}), "mosei",
                          a={"method": a_name}, b={"method": b_name}).set_index("test_case").loc["normal"]
    assert r["collapsed_b"] == 0 and r["verdict"] == "ruled out at the paper's size"
    # one shared seed only
    one = {(a_name, 0, "normal"): 0.8, (b_name, 0, "normal"): 0.7, (a_name, 1, "normal"): 0.8, (b_name, 2, "normal"): 0.7}
    r = report.comparison(_frame(one, "mosei", "mae"), "mosei", a={"method": a_name}, b={"method": b_name}).set_index("test_case").loc["normal"]
    assert r["n_seeds"] == 1 and report.MIN_SEEDS_TEXT in r["verdict"]


def test_grid_gains_pairs_a_cell_with_the_baseline_by_seed():
    vals = {}
    for s in range(5):
        vals[("baseline", s, "normal")] = 0.60 + 0.05 * s
    for s, v in ((4, 0.83), (1, 0.66)):  # the cell ran seeds 4 and 1 (listed out of order)
        vals[("wma", s, "normal")] = v
    g = report.grid_gains(_frame(vals, "hateful_memes", "auroc"), "hateful_memes").iloc[0]
    d = np.array([0.83 - 0.80, 0.66 - 0.65])
    assert bool(g["paired"]) and g["n"] == 2
    assert g["gain"] == pytest.approx(d.mean(), abs=1e-12)
    assert (g["gain_lo"], g["gain_hi"]) == pytest.approx(st.t.interval(0.95, 1, loc=d.mean(), scale=st.sem(d)), abs=1e-12)


# --------------------------------------------------------------------------- collapse detection
def _rec(metric, value, distinct=None):
    r = {"headline_metric": metric, "metrics": {"normal": {metric: value}}}
    if distinct is not None:
        r["predictions"] = {"normal": {"output_std": 0.1, "distinct": distinct}}
    return r


def test_is_collapsed_tolerance_and_distinct_count():
    assert report.is_collapsed(_rec("auroc", 0.5))
    assert report.is_collapsed(_rec("auroc", 0.5 + 1e-13))        # within 1e-12 of a constant's AUROC
    assert report.is_collapsed(_rec("auroc", 0.5 - 1e-13))
    assert not report.is_collapsed(_rec("auroc", 0.5 + 1e-10))    # just outside
    assert not report.is_collapsed(_rec("auroc", 0.5 - 1e-9))
    assert report.is_collapsed(_rec("f1_macro", 0.0)) and not report.is_collapsed(_rec("f1_macro", 1e-9))
    assert not report.is_collapsed(_rec("mae", 0.5)) and not report.is_collapsed(_rec("mae", 0.0))
    # the prediction summary: one distinct prediction collapses, two do not
    assert report.is_collapsed(_rec("mae", 0.7, distinct=1)) and report.is_collapsed(_rec("f1_macro", 0.3, distinct=1))
    assert not report.is_collapsed(_rec("f1_macro", 0.3, distinct=2)) and not report.is_collapsed(_rec("mae", 0.7, distinct=2))
    assert not report.is_collapsed(_rec("auroc", 0.7), "text_noise")  # no such test case: not collapsed


def _label_sets(logits):
    """Distinct predicted label sets at probability 0.5 (logit 0 counts as predicted), by Python sets."""
    return len({tuple(float(x) >= 0.0 for x in row) for row in logits})


@pytest.mark.parametrize("logits", [
    # every row predicts {label 0} although the logits differ: one label set (mixed 0/1 columns)
    [[2.0, -1.0, -3.0], [0.5, -0.2, -0.1], [3.0, -2.0, -1e-7]],
    # one logit just above 0 (label predicted) against just below: two sets
    [[2.0, -1.0, 1e-7], [2.0, -1.0, -1e-7], [1.0, -1.0, -2.0]],
    # exactly at the threshold: sigmoid(0) = 0.5 is predicted
    [[0.0, -1.0, -1.0], [-1e-6, -1.0, -1.0]],
    [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]],
    [[1.0, 1.0, -1.0], [1.0, -1.0, 1.0], [-1.0, 1.0, 1.0], [1.0, 1.0, -1.0]],
])
def test_multilabel_distinct_predictions(logits):
    got = prediction_summary("multilabel", np.array(logits))
    assert got["distinct"] == _label_sets(logits)
    assert got["output_std"] == pytest.approx(np.array(logits).std(axis=0).max())


def test_binary_distinct_rounding():
    assert prediction_summary("binary", np.array([0.1, 0.1 + 4e-7, 0.1 - 4e-7]))["distinct"] == 1  # 6 decimals
    assert prediction_summary("binary", np.array([0.1, 0.1 + 2e-6]))["distinct"] == 2
    assert prediction_summary("regression", np.array([[0.3], [0.3], [0.3]]))["distinct"] == 1
