"""The book's verdict wording and sign conventions, on hand-computed cases (AUROC and MAE).

Every expected value here is computed in the test with plain arithmetic (or read with ``csv``
from the paper-results file), never taken from the code under test.
"""

from __future__ import annotations

import csv
import math
from types import SimpleNamespace

import numpy as np
import pytest
from scipy import stats as st

from wma_study import figures, report
from wma_study.paper import DEFAULT_PATH
from wma_core.store import ResultsStore, config_key

NAN = float("nan")


# --------------------------------------------------------------------------- the rule


@pytest.mark.parametrize("args, expected", [
    # (diff_mean, lo, hi, n, paper_gain, mde, collapsed)
    ((0.010, 0.004, 0.016, 8, 0.005, 0.008, 0), "detected"),
    ((0.010, 0.004, 0.016, 8, NAN, 0.008, 0), "detected"),  # no paper number: our sign only
    ((-0.010, -0.016, -0.004, 8, 0.005, 0.008, 0), "detected (opposite sign)"),
    ((-0.010, -0.016, -0.004, 8, -0.020, 0.008, 0), "detected"),  # the paper also reports a loss
    ((0.001, -0.003, 0.005, 8, 0.020, 0.006, 0), "ruled out at the paper's size"),  # hi 0.005 < 0.020
    ((-0.001, -0.005, 0.003, 8, -0.020, 0.006, 0), "ruled out at the paper's size"),  # lo -0.005 > -0.020
    ((0.001, -0.010, 0.012, 8, 0.005, 0.016, 0), "inconclusive (our MDE exceeds the paper's gain)"),
    ((0.006, -0.001, 0.013, 8, 0.012, 0.010, 0), "inconclusive (consistent with 0 and with the paper's gain)"),
    ((0.001, -0.010, 0.012, 8, NAN, 0.016, 0), "inconclusive (no paper number; our MDE is 0.016)"),
    ((0.000, 0.000, 0.000, 8, 0.005, 0.0, 0), "ruled out at the paper's size"),  # 0 exactly: no CI excludes it
    ((-0.3, -0.4, -0.2, 3, 0.007, 0.1, 3), "collapsed run"),  # a constant predictor is no loss
    ((0.010, NAN, NAN, 1, 0.005, NAN, 0), "inconclusive (fewer than 2 paired seeds: no interval)"),
])
def test_verdict_rule(args, expected):
    assert report.verdict(*args) == expected
    cat = report.verdict_category(expected)
    assert cat in report.VERDICTS and expected.startswith(cat)


def test_verdict_category_rejects_free_text():
    with pytest.raises(ValueError):
        report.verdict_category("WMA is significantly worse")
    assert report.verdict_category("detected (opposite sign)") == "detected (opposite sign)"


def test_figures_verdict_text_carries_the_numbers():
    row = SimpleNamespace(diff_mean=0.012, diff_lo=0.004, diff_hi=0.020, n_seeds=8, paper_gain=0.005, mde=0.011,
                          collapsed_a=0, collapsed_b=0, verdict=None)
    assert figures.verdict(row) == ("detected: WMA − baseline +0.012 [+0.004, +0.020] vs the paper's +0.005 "
                                    "(our MDE at 80% power 0.011)")
    dead = SimpleNamespace(diff_mean=-0.277, diff_lo=-0.366, diff_hi=-0.188, n_seeds=3, paper_gain=0.007, mde=0.2,
                           collapsed_a=0, collapsed_b=3, verdict=None)
    assert figures.verdict(dead) == "collapsed run"
    one = SimpleNamespace(diff_mean=0.01, diff_lo=NAN, diff_hi=NAN, n_seeds=1, paper_gain=0.005, mde=NAN,
                          collapsed_a=0, collapsed_b=0, verdict=None)
    assert figures.verdict(one) == "inconclusive (fewer than 2 paired seeds: no interval)"


# --------------------------------------------------------------------------- a hand-made store


def _rec(dataset, method, alpha, beta, seed, metrics, dev, data="d" * 16, predictions=None):
    config = {"dataset": dataset, "method": method, "alpha": alpha, "beta": beta, "target": "init", "lr": 1e-3,
              "seed": seed, "epochs": 4, "batch_size": 32, "model": "tiny", "data": data}
    head = {"hateful_memes": "auroc", "mosei": "mae", "mmimdb": "f1_macro"}[dataset]
    rec = {"key": config_key(config), "config": config, "headline_metric": head, "metrics": metrics, "dev_metrics": dev}
    if predictions is not None:
        rec["predictions"] = predictions
    return rec


MOSEI_CASES = ["normal", "text_noise", "video_noise", "audio_noise", "text_missing", "video_missing", "audio_missing"]
# MAE per seed: baseline, WMA (lower is better). WMA is 0.02 lower on normal, 0.01 higher on text noise.
MO = {
    "baseline": {"normal": [0.80, 0.82, 0.81, 0.83], "noise": [0.90, 0.91, 0.92, 0.93], "missing": [0.85, 0.86, 0.84, 0.85]},
    "wma": {"normal": [0.78, 0.80, 0.80, 0.80], "noise": [0.91, 0.92, 0.93, 0.94], "missing": [0.85, 0.86, 0.84, 0.85]},
}


def _mosei_metrics(method, seed, noise_offsets=(0.0, 0.01, -0.01)):
    m = {"normal": {"mae": MO[method]["normal"][seed]}}
    for c, off in zip(["text_noise", "video_noise", "audio_noise"], noise_offsets):
        m[c] = {"mae": MO[method]["noise"][seed] + off}
    for c, off in zip(["text_missing", "video_missing", "audio_missing"], (0.0, 0.02, -0.02)):
        m[c] = {"mae": MO[method]["missing"][seed] + off}
    return m


@pytest.fixture()
def mosei_runs(tmp_path):
    store = ResultsStore(tmp_path)
    for s in range(4):
        store.put(_rec("mosei", "baseline", 0.0, 1.0, s, _mosei_metrics("baseline", s), {"mae": 0.9}))
        store.put(_rec("mosei", "wma", 1.0, 1.2, s, _mosei_metrics("wma", s), {"mae": 0.8}))
    return report.runs_frame(store)


def _paper(table, dataset, method):
    with open(DEFAULT_PATH, newline="") as f:
        return {r["test_case"]: float(r["value"]) for r in csv.DictReader(f)
                if r["table"] == str(table) and r["dataset"] == dataset and r["method"] == method}


def test_mae_sign_in_comparison_endpoints_and_glue(mosei_runs):
    c = report.comparison(mosei_runs, "mosei").set_index("test_case")
    a, b = np.array(MO["baseline"]["normal"]), np.array(MO["wma"]["normal"])
    d = a - b  # lower MAE is better: positive = WMA better
    assert d.tolist() == pytest.approx([0.02, 0.02, 0.01, 0.03])
    h = st.t.ppf(0.975, 3) * d.std(ddof=1) / 2
    r = c.loc["normal"]
    assert r["diff_mean"] == pytest.approx(0.02) and (r["diff_lo"], r["diff_hi"]) == pytest.approx((0.02 - h, 0.02 + h))
    pa, pb = _paper(1, "mosei", "baseline"), _paper(1, "mosei", "wma")
    assert r["paper_gain"] == pytest.approx(pa["normal"] - pb["normal"]) and r["paper_gain"] > 0
    assert r["verdict"] == "detected"
    # text noise: WMA's MAE is 0.01 higher on every seed: an opposite-sign detection? all differences
    # equal -0.01, so s = 0: the interval is the point [-0.01, -0.01] and the p-value NaN
    t = c.loc["text_noise"]
    assert t["diff_mean"] == pytest.approx(-0.01) and math.isnan(t["p_value"])
    assert t["verdict"] == ("detected (opposite sign)" if pa["text_noise"] > pb["text_noise"] else "detected")
    # endpoints: the mean over the noise cases per seed, then paired
    ep = report.endpoints(mosei_runs, "mosei").set_index("endpoint")
    noise_a = np.array(MO["baseline"]["noise"]) + 0.0  # offsets 0, +0.01, -0.01 average to 0
    noise_b = np.array(MO["wma"]["noise"])
    assert ep.loc["noise", "diff_mean"] == pytest.approx((noise_a - noise_b).mean())
    assert ep.loc["noise", "test_cases"] == "text_noise, video_noise, audio_noise"
    paper_noise = np.mean([pa[k] - pb[k] for k in ["text_noise", "video_noise", "audio_noise"]])
    assert ep.loc["noise", "paper_gain"] == pytest.approx(paper_noise)
    # relative gain: (baseline - WMA) / baseline
    assert ep.loc["normal", "rel_gain"] == pytest.approx(0.02 / a.mean())
    assert ep.loc["normal", "paper_rel_gain"] == pytest.approx((pa["normal"] - pb["normal"]) / pa["normal"])
    g = figures.headline_glue(c.reset_index(), endpoints=ep.reset_index())
    assert g["gain_normal"] == f"+0.020 [{0.02 - h:+.3f}, {0.02 + h:+.3f}]"
    assert g["paper_gain_normal"] == f"{pa['normal'] - pb['normal']:+.3f}"
    assert g["gain_noise"].startswith("-0.010")
    assert g["verdict_normal"].startswith("detected: WMA − baseline +0.020")


def test_holm_on_secondary_cases_only(mosei_runs):
    c = report.comparison(mosei_runs, "mosei")
    assert math.isnan(c.loc[c["test_case"] == "normal", "p_holm"].iloc[0])
    sec = c[c["test_case"] != "normal"]
    p = sec["p_value"].to_numpy()
    ok = ~np.isnan(p)
    m = ok.sum()
    # Holm by hand: sort, multiply by (m - rank), running max, cap 1
    order = np.argsort(p[ok])
    adj = np.minimum(1, np.maximum.accumulate((m - np.arange(m)) * p[ok][order]))
    expect = np.empty(m)
    expect[order] = adj
    assert sec["p_holm"].to_numpy()[ok] == pytest.approx(expect)


def test_grid_gains_mae_sign_and_all_baseline_seeds(tmp_path):
    store = ResultsStore(tmp_path)
    base = [0.80, 0.82, 0.81, 0.85]
    for s, v in enumerate(base):
        store.put(_rec("mosei", "baseline", 0.0, 1.0, s, {"normal": {"mae": v}}, {"mae": 0.9}))
    store.put(_rec("mosei", "wma", 1.0, 0.5, 0, {"normal": {"mae": 0.78}}, {"mae": 0.7}))  # one seed
    for s, v in enumerate([0.79, 0.80, 0.80]):  # three seeds, paired with the baseline's 0..2
        store.put(_rec("mosei", "wma", 1.0, 2.0, s, {"normal": {"mae": v}}, {"mae": 0.95}))
    runs = report.runs_frame(store)
    g = report.grid_gains(runs, "mosei").set_index("beta")
    # single seed: gain = mean(all 4 baseline seeds) - 0.78, se = s_B * sqrt(1 + 1/4), t with 3 df
    mb, sb = np.mean(base), np.std(base, ddof=1)
    h = st.t.ppf(0.975, 3) * sb * math.sqrt(1 + 1 / 4)
    assert g.loc[0.5, "gain"] == pytest.approx(mb - 0.78) and g.loc[0.5, "gain"] > 0
    assert (g.loc[0.5, "gain_lo"], g.loc[0.5, "gain_hi"]) == pytest.approx((mb - 0.78 - h, mb - 0.78 + h))
    assert not g.loc[0.5, "paired"]
    # three seeds: paired with baseline seeds 0..2
    d = np.array(base[:3]) - np.array([0.79, 0.80, 0.80])
    hp = st.t.ppf(0.975, 2) * d.std(ddof=1) / math.sqrt(3)
    assert g.loc[2.0, "paired"] and g.loc[2.0, "gain"] == pytest.approx(d.mean())
    assert (g.loc[2.0, "gain_lo"], g.loc[2.0, "gain_hi"]) == pytest.approx((d.mean() - hp, d.mean() + hp))
    assert g.attrs["baseline"]["n"] == 4 and g.attrs["baseline"]["mean"] == pytest.approx(mb)
    # figures.our_grid shows the same gains (positive = lower MAE)
    fg = figures.our_grid(runs, "mosei")["normal"].set_index("beta")
    assert fg.loc[0.5, "gain"] == pytest.approx(mb - 0.78)
    # the selection table: best of 2 cells on test (β = 0.5) and on dev (β = 0.5, dev MAE 0.7 < 0.95)
    sel = report.selection_table(runs, ["mosei"]).iloc[0]
    assert sel["k"] == 2 and sel["selected_test"] == "α=1, β=0.5"
    assert sel["selected_gain_test"] == pytest.approx(max(mb - 0.78, d.mean()))
    assert sel["share_above"] == 1.0 and sel["baseline_seeds"] == 4
    assert sel["null_mean"] > 0


def test_paper_grid_mae_sign():
    with open(DEFAULT_PATH, newline="") as f:
        rows = list(csv.DictReader(f))
    base = next(float(r["value"]) for r in rows if r["table"] == "1" and r["dataset"] == "mosei"
                and r["method"] == "baseline" and r["test_case"] == "normal")
    cell = next(r for r in rows if r["table"] == "6" and r["dataset"] == "mosei" and r["test_case"] == "normal")
    g = figures.paper_grid("mosei")["normal"]
    row = g[np.isclose(g["alpha"], float(cell["alpha"])) & np.isclose(g["beta"], float(cell["beta"]))].iloc[0]
    assert row["gain"] == pytest.approx(base - float(cell["value"]))  # MAE: baseline - cell


# --------------------------------------------------------------------------- collapsed runs


def test_is_collapsed_from_predictions_and_from_the_constant_headline():
    live = {"headline_metric": "f1_macro", "metrics": {"normal": {"f1_macro": 0.31}},
            "predictions": {"normal": {"output_std": 0.4, "distinct": 17}}}
    assert not report.is_collapsed(live)
    const = {"headline_metric": "f1_macro", "metrics": {"normal": {"f1_macro": 0.12}},
             "predictions": {"normal": {"output_std": 0.0, "distinct": 1}}}
    assert report.is_collapsed(const)  # one label set for every movie, even with F1 > 0
    old = {"headline_metric": "f1_macro", "metrics": {"normal": {"f1_macro": 0.0}}}  # no summary: F1 = 0
    assert report.is_collapsed(old)
    assert report.is_collapsed({"headline_metric": "auroc", "metrics": {"normal": {"auroc": 0.5}}})
    assert not report.is_collapsed({"headline_metric": "auroc", "metrics": {"normal": {"auroc": 0.52}}})
    assert not report.is_collapsed({"headline_metric": "mae", "metrics": {"normal": {"mae": 0.8}}})


def test_prediction_summary_counts_distinct_predictions():
    from wma_core.metrics import prediction_summary

    assert prediction_summary("multilabel", np.full((5, 3), -2.0)) == {"output_std": 0.0, "distinct": 1}
    out = np.array([[3.0, -3.0], [-3.0, 3.0], [3.0, -3.0]])
    r = prediction_summary("multilabel", out)
    assert r["distinct"] == 2 and r["output_std"] == pytest.approx(np.std([3, -3, 3]))
    assert prediction_summary("regression", np.array([0.1, 0.1, 0.1]))["distinct"] == 1
    assert prediction_summary("binary", np.array([0.1, 0.2, 0.1]))["distinct"] == 2


def test_collapsed_wma_is_not_a_significant_loss(tmp_path):
    store = ResultsStore(tmp_path)
    base = [0.30, 0.32, 0.31]
    for s in range(3):
        store.put(_rec("mmimdb", "baseline", 0.0, 1.0, s, {"normal": {"f1_macro": base[s]}}, {"f1_macro": 0.3},
                       predictions={"normal": {"output_std": 0.5, "distinct": 40}}))
        store.put(_rec("mmimdb", "wma", 6.0, 0.2, s, {"normal": {"f1_macro": 0.0}}, {"f1_macro": 0.0},
                       predictions={"normal": {"output_std": 0.0, "distinct": 1}}))
    runs = report.runs_frame(store)
    c = report.comparison(runs, "mmimdb")
    r = c.iloc[0]
    assert r["collapsed_b"] == 3 and r["collapsed_a"] == 0
    assert r["verdict"] == "collapsed run"  # not "detected (opposite sign)" although every seed lost 0.3
    shown = figures.comparison_frame(c).iloc[0]
    assert shown["ours gain [95% CI]"] == "collapsed run (0 of baseline, 3 of WMA)"
    assert shown["verdict"] == "collapsed run"
    assert figures.headline_glue(c)["gain_normal"] == "collapsed run"
    ep = report.endpoints(runs, "mmimdb")
    assert ep.loc[ep["endpoint"] == "normal", "verdict"].iloc[0] == "collapsed run"
    # pooled: a collapsed dataset is left out and named
    pooled = report.pooled({"mmimdb": ep})
    assert pooled.loc[0, "left_out"] == "mmimdb" and pooled.loc[0, "k"] == 0


def test_fewer_than_two_seeds_prints_no_interval(tmp_path):
    store = ResultsStore(tmp_path)
    store.put(_rec("mosei", "baseline", 0.0, 1.0, 0, {"normal": {"mae": 0.80}}, {"mae": 0.9}))
    store.put(_rec("mosei", "wma", 1.0, 1.2, 0, {"normal": {"mae": 0.79}}, {"mae": 0.8}))
    c = report.comparison(report.runs_frame(store), "mosei")
    shown = figures.comparison_frame(c).iloc[0]
    assert shown["ours gain [95% CI]"] == "+0.010 (fewer than 2 paired seeds: no interval)"
    assert "[" not in shown["ours gain [95% CI]"]
    assert c.loc[0, "verdict"] == "inconclusive (fewer than 2 paired seeds: no interval)"


# --------------------------------------------------------------------------- never left the prior

# MM-IMDb-like prior: label rates of the training split -> their log-odds (computed here, not by the code)
RATES = np.array([0.10, 0.20, 0.05])
PRIOR = np.log(RATES / (1 - RATES))


def _summary(kind):
    """A prediction summary of 40 test outputs that sit at the prior, at a far constant, or vary."""
    from wma_core.metrics import prediction_summary

    if kind == "prior":
        out = np.tile(PRIOR, (40, 1))
    elif kind == "far":  # one constant, 4 logits below the prior on every label
        out = np.tile(PRIOR - 4.0, (40, 1))
    else:
        out = PRIOR + 3.0 * np.random.default_rng(0).standard_normal((40, 3))
    return prediction_summary("multilabel", out, PRIOR)


def _one(kind, f1=None):
    f1 = {"prior": 0.0, "far": 0.0, "varied": 0.3}[kind] if f1 is None else f1
    return {"headline_metric": "f1_macro", "metrics": {"normal": {"f1_macro": f1}}, "predictions": {"normal": _summary(kind)}}


def test_failure_kind_tells_the_prior_from_a_collapse():
    at_prior, far, varied = _one("prior"), _one("far"), _one("varied")
    assert report.failure_kind(at_prior) == "never left the prior" and report.stayed_at_prior(at_prior)
    assert report.failure_kind(far) == "collapsed" and not report.stayed_at_prior(far)
    assert report.failure_kind(varied) is None and not report.stayed_at_prior(varied)
    # is_collapsed keeps meaning "predicts a constant": true for both failures
    assert report.is_collapsed(at_prior) and report.is_collapsed(far) and not report.is_collapsed(varied)
    # a record written before prior_gap existed reads as before: collapsed
    old = {"headline_metric": "f1_macro", "metrics": {"normal": {"f1_macro": 0.0}},
           "predictions": {"normal": {"output_std": 0.0, "distinct": 1}}}
    assert report.failure_kind(old) == "collapsed"
    # the tolerance: 1 logit by default, a gap just inside / outside it, and a test case the record lacks
    near = {**old, "predictions": {"normal": {"output_std": 0.0, "distinct": 1, "prior_gap": 0.99}}}
    off = {**old, "predictions": {"normal": {"output_std": 0.0, "distinct": 1, "prior_gap": 1.01}}}
    assert report.PRIOR_TOL == 1.0
    assert report.stayed_at_prior(near) and not report.stayed_at_prior(off)
    assert report.stayed_at_prior(off, tol=1.1) and not report.stayed_at_prior(near, tol=0.5)
    assert report.failure_kind(at_prior, "text_noise") is None


def test_verdict_never_left_the_prior_only_when_every_failure_stayed_there():
    V = report.verdict
    assert V(-0.3, -0.4, -0.2, 3, 0.007, 0.1, 3, 3) == "never left the prior"
    assert V(-0.3, -0.4, -0.2, 3, 0.007, 0.1, 3, 2) == "collapsed run"  # one of the three moved elsewhere
    assert V(-0.3, -0.4, -0.2, 3, 0.007, 0.1, 3) == "collapsed run"     # no prior information: as before
    assert V(-0.3, -0.4, -0.2, 3, 0.007, 0.1, 0, 0) == "detected (opposite sign)"
    assert report.verdict_category("never left the prior") == "never left the prior"
    assert "never left the prior" in report.VERDICTS and "collapsed run" in report.VERDICTS


def _prior_store(tmp_path, wma_kinds):
    """MM-IMDb: 3 live baseline seeds, and WMA seeds whose (normal, text_noise, image_noise) are the given kinds."""
    store = ResultsStore(tmp_path)
    base = [0.30, 0.32, 0.31]
    for s, kinds in enumerate(wma_kinds):
        cases = ("normal", "text_noise", "image_noise")
        store.put(_rec("mmimdb", "baseline", 0.0, 1.0, s, {c: {"f1_macro": base[s]} for c in cases}, {"f1_macro": 0.3},
                       predictions={c: _summary("varied") for c in cases}))
        store.put(_rec("mmimdb", "wma", 6.0, 0.2, s, {c: {"f1_macro": 0.0} for c in cases}, {"f1_macro": 0.0},
                       predictions={c: _summary(k) for c, k in zip(cases, kinds)}))
    return report.runs_frame(store)


def test_comparison_says_never_left_the_prior(tmp_path):
    runs = _prior_store(tmp_path, [("prior", "prior", "prior")] * 3)
    assert runs.loc[(runs["method"] == "wma") & (runs["split"] == "test"), "at_prior"].all()
    assert not runs.loc[runs["method"] == "baseline", "at_prior"].any()
    c = report.comparison(runs, "mmimdb").set_index("test_case")
    r = c.loc["normal"]
    assert (r["collapsed_a"], r["collapsed_b"], r["prior_a"], r["prior_b"]) == (0, 3, 0, 3)
    assert r["verdict"] == "never left the prior"
    assert figures.comparison_frame(c.reset_index()).iloc[0]["verdict"] == "never left the prior"
    assert figures.headline_glue(c.reset_index())["gain_normal"] == "never left the prior"
    row = SimpleNamespace(**{**r.to_dict(), "verdict": None})
    assert figures.verdict(row) == "never left the prior"  # recomputed from the counts
    ep = report.endpoints(runs, "mmimdb").set_index("endpoint")
    assert ep.loc["normal", "verdict"] == ep.loc["noise", "verdict"] == "never left the prior"


def test_comparison_says_collapsed_when_one_failure_left_the_prior(tmp_path):
    # seed 2 collapsed far from the prior on the normal case; seed 0 on image noise only
    runs = _prior_store(tmp_path, [("prior", "prior", "far"), ("prior", "prior", "prior"), ("far", "prior", "prior")])
    c = report.comparison(runs, "mmimdb").set_index("test_case")
    assert (c.loc["normal", "collapsed_b"], c.loc["normal", "prior_b"]) == (3, 2)
    assert c.loc["normal", "verdict"] == "collapsed run"
    assert c.loc["text_noise", "verdict"] == "never left the prior"
    assert (c.loc["image_noise", "prior_b"], c.loc["image_noise", "verdict"]) == (2, "collapsed run")
    assert figures.headline_glue(c.reset_index())["gain_normal"] == "collapsed run"
    ep = report.endpoints(runs, "mmimdb").set_index("endpoint")
    # the noise endpoint of seed 0 has one case at the prior and one far from it: that seed collapsed
    assert (ep.loc["noise", "collapsed_b"], ep.loc["noise", "prior_b"]) == (3, 2)
    assert ep.loc["noise", "verdict"] == "collapsed run" and ep.loc["normal", "verdict"] == "collapsed run"


def test_claims_show_never_left_the_prior_without_an_interval():
    import pandas as pd

    claims = pd.DataFrame({"claim": ["a", "b"], "paper": [0.01, 0.01], "gain": [-0.3, 0.02], "lo": [-0.4, 0.01],
                           "hi": [-0.2, 0.03], "mde": [0.1, 0.01], "verdict": ["never left the prior", "detected"],
                           "evidence": ["x", "y"]})
    shown = figures.claims_table(claims, "c").data
    assert shown["ours [95% CI]"].tolist()[0] == "never left the prior"
    assert "0.020" in shown["ours [95% CI]"].tolist()[1]
    assert figures.VERDICT_COLORS["never left the prior"] == figures.VERDICT_COLORS["collapsed run"]
    import matplotlib.pyplot as plt

    plt.close(figures.claims_figure(claims))  # a marker for every verdict of the vocabulary


def test_an_untrained_head_sits_near_the_prior_within_the_tolerance(hm_twin):
    """Why PRIOR_TOL is 1 logit: at initialisation (head_bias="prior") the random last layer adds an
    offset of about 0.2 logits (tiny model) to the prior; an untrained run must read as at the prior."""
    import torch

    from data_prep.dataset import PreparedDataset, make_loader, task_info
    from wma_core import train as T
    from wma_core.metrics import prediction_summary

    d = hm_twin(120, 3)
    train = PreparedDataset(d, "train")
    task = task_info(train.manifest)
    y = np.asarray(train.labels, dtype=float)
    prior = np.log(y.mean() / (1 - y.mean()))  # the label log-odds, by hand
    gaps = []
    for seed in range(3):
        cfg = T.TrainConfig(dataset="hateful_memes", data_dir=str(d), progress=False, device="cpu", seed=seed,
                            head_bias="prior")
        model = T.build_model(task, cfg).eval()
        T.init_head_bias(model, "prior", task.kind, train.labels)
        with torch.no_grad():
            out = np.concatenate([model(b)[0].reshape(-1).numpy() for b in make_loader(PreparedDataset(d, "test"), 64)])
        gaps.append(prediction_summary(task.kind, out, [prior])["prior_gap"])
        assert gaps[-1] == pytest.approx(np.abs(out - prior).mean(), rel=1e-6)
    assert all(0 < g < report.PRIOR_TOL for g in gaps), gaps  # off the prior, but within the tolerance
