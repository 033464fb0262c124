"""Backbones as a unit of replication, and the L2-SP control.

- the blocked statistics against statsmodels (least squares with sum-coded blocks, MixedLM's
  REML variance, the ANOVA F test) and against the plain paired test for one block;
- the report: the gain averaged over backbones, each backbone's own verdict, the pairing of a
  random-init side with a replicated side, one cell for all backbones;
- the nesting of seeds in backbones, the replicated pretraining (its own corpus, one tokenizer);
- L2-SP: its gradient, and that it holds the backbone near its start.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats as st

from wma_study import report
from wma_study.stats import blocked_paired_test, paired_test

smf = pytest.importorskip("statsmodels.formula.api")
NAN = float("nan")


# --------------------------------------------------------------------------- statistics
def _ols_intercept(d, g):
    fit = smf.ols("d ~ C(g, Sum)", pd.DataFrame({"d": d, "g": g})).fit()
    lo, hi = fit.conf_int().iloc[0]
    return float(fit.params.iloc[0]), float(fit.bse.iloc[0]), float(lo), float(hi), float(fit.pvalues.iloc[0]), fit


def test_blocked_gain_is_the_sum_coded_least_squares_intercept():
    rng = np.random.default_rng(7)
    a = rng.normal(0.7, 0.05, size=9)
    g = np.array(["b0"] * 4 + ["b1"] * 3 + ["b2"] * 2)  # unbalanced on purpose
    shift = np.select([g == "b0", g == "b1"], [0.00, 0.06], 0.02)
    b = a + 0.03 + shift + rng.normal(0, 0.015, size=9)
    r = blocked_paired_test(a, b, g)
    mu, se, lo, hi, p, fit = _ols_intercept(b - a, g)
    assert r["diff_mean"] == pytest.approx(mu, rel=1e-10)
    assert r["se"] == pytest.approx(se, rel=1e-10)
    assert (r["diff_lo"], r["diff_hi"]) == (pytest.approx(lo, rel=1e-9), pytest.approx(hi, rel=1e-9))
    assert r["p_value"] == pytest.approx(p, rel=1e-8)
    assert r["df"] == 9 - 3 == int(fit.df_resid)
    # the unweighted mean of the block means, not the mean over all seeds
    means = [np.mean((b - a)[g == k]) for k in ("b0", "b1", "b2")]
    assert r["diff_mean"] == pytest.approx(np.mean(means)) and r["diff_mean"] != pytest.approx(np.mean(b - a))
    # the between-block test: the F test of the block factor (statsmodels' ANOVA table)
    from statsmodels.stats.anova import anova_lm

    f_p = anova_lm(smf.ols("d ~ C(g)", pd.DataFrame({"d": b - a, "g": g})).fit())["PR(>F)"].iloc[0]
    assert r["p_between"] == pytest.approx(float(f_p), rel=1e-8)
    # each block alone is a plain paired test of its seeds
    for k in ("b0", "b1", "b2"):
        t = paired_test(a[g == k], b[g == k])
        assert r["blocks"][k]["diff_mean"] == pytest.approx(t["diff_mean"])
        assert r["blocks"][k]["diff_lo"] == pytest.approx(t["diff_lo"], nan_ok=True)


def test_between_backbone_variance_is_mixedlm_reml_on_balanced_blocks():
    rng = np.random.default_rng(11)
    a = rng.normal(0.6, 0.05, size=12)
    g = np.repeat(["b0", "b1", "b2"], 4)
    b = a + np.repeat([0.0, 0.08, -0.05], 4) + rng.normal(0, 0.02, size=12)
    r = blocked_paired_test(a, b, g)
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mm = smf.mixedlm("d ~ 1", pd.DataFrame({"d": b - a, "g": g}), groups="g").fit(reml=True)
    assert r["tau2"] > 0
    assert r["tau2"] == pytest.approx(float(mm.cov_re.iloc[0, 0]), rel=1e-3)
    assert r["diff_mean"] == pytest.approx(float(mm.params.iloc[0]), rel=1e-6)
    # no spread between the blocks beyond the seeds': tau2 is truncated at 0
    b2 = a + 0.02 + rng.normal(0, 0.02, size=12)
    b2 -= np.repeat([np.mean((b2 - a)[g == k]) for k in ("b0", "b1", "b2")], 4) - 0.02  # equal block means
    assert blocked_paired_test(a, b2, g)["tau2"] == 0.0


def test_one_block_is_the_paired_t_test_and_degenerate_designs_give_no_interval():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=6), rng.normal(size=6)
    one = blocked_paired_test(a, b, ["b0"] * 6)
    t = paired_test(a, b)
    for k in ("diff_mean", "diff_lo", "diff_hi", "p_value"):
        assert one[k] == pytest.approx(t[k])
    assert one["se"] == pytest.approx(np.std(b - a, ddof=1) / math.sqrt(6))
    # one seed per backbone: N - K = 0 degrees of freedom
    none = blocked_paired_test(a[:2], b[:2], ["b0", "b1"])
    assert math.isnan(none["diff_lo"]) and math.isnan(none["p_value"]) and none["diff_mean"] == pytest.approx(
        np.mean(b[:2] - a[:2]))
    # no spread within any backbone: the point interval, an undefined p-value
    z = blocked_paired_test([0, 0, 0, 0], [0.1, 0.1, 0.3, 0.3], ["b0", "b0", "b1", "b1"])
    assert z["diff_lo"] == z["diff_hi"] == pytest.approx(0.2) and math.isnan(z["p_value"])
    with pytest.raises(ValueError, match="equal lengths"):
        blocked_paired_test([1, 2], [1, 2], ["b0"])


# --------------------------------------------------------------------------- the report
def _frame(values: dict, backbone_of, models=None, dataset="hateful_memes", metric="auroc"):
    """values[(method, seed)] = normal test value; backbone_of(method, seed) -> label."""
    rows = []
    for (m, s), v in values.items():
        bb = backbone_of(m, s)
        model = (models or {}).get(bb, "tiny" if not bb else f"folder:{bb}")
        base = {"key": f"{m}-{s}", "dataset": dataset, "method": m, "alpha": 0.0 if m in ("baseline", "l2sp") else 1.0,
                "beta": 1.0, "target": "init", "lr": 1e-3, "l2sp": 0.01 if m == "l2sp" else 0.0, "seed": s, "epochs": 2,
                "batch_size": 16, "model": model, "backbone": bb, "data": "d", "init": "pretrained" if bb else model,
                "metric": metric, "collapsed": False, "feasible": True, "at_prior": False}
        rows.append({**base, "split": "test", "test_case": "normal", "value": v})
        rows.append({**base, "split": "dev", "test_case": "normal", "value": 0.5})
    return pd.DataFrame(rows, columns=report.RUN_COLUMNS)


def _two_backbones():
    rng = np.random.default_rng(5)
    vals = {}
    for s in range(8):
        base = 0.70 + 0.01 * rng.standard_normal()
        vals[("baseline", s)] = base
        # backbone b0 (seeds 0-3): a clear gain; b1 (4-7): none
        vals[("wma", s)] = base + (0.05 if s < 4 else 0.0) + 0.004 * rng.standard_normal()
    return vals


def test_comparison_averages_over_backbones_and_says_where_the_verdict_holds():
    vals = _two_backbones()
    df = _frame(vals, lambda m, s: "b0" if s < 4 else "b1")
    row = report.comparison(df, "hateful_memes").set_index("test_case").loc["normal"]
    a = np.array([vals[("baseline", s)] for s in range(8)])
    b = np.array([vals[("wma", s)] for s in range(8)])
    g = np.array(["b0"] * 4 + ["b1"] * 4)
    mu, se, lo, hi, p, _ = _ols_intercept(b - a, g)
    assert row["n_seeds"] == 8 and row["n_backbones"] == 2  # one cell over both backbones
    assert row["diff_mean"] == pytest.approx(mu) and row["diff_lo"] == pytest.approx(lo) and row["diff_hi"] == pytest.approx(hi)
    assert row["se_diff"] == pytest.approx(se) and row["p_value"] == pytest.approx(p)
    # per backbone: b0 alone detects its gain, b1 alone does not
    t0 = st.ttest_rel(b[:4], a[:4])
    assert t0.pvalue < 0.05 and st.ttest_rel(b[4:], a[4:]).pvalue > 0.05
    assert f"b0: {np.mean(b[:4] - a[:4]):+.3f}" in row["by_backbone"]
    assert f"b1: {np.mean(b[4:] - a[4:]):+.3f}" in row["by_backbone"]
    assert "b0" in row["by_backbone"].split(";")[0] and "detected" in row["by_backbone"].split(";")[0]
    assert "inconclusive" in row["by_backbone"].split(";")[1]
    assert report.verdict_category(row["verdict"]) == "detected" and row["holds_on"] == "1/2"
    assert row["tau2_backbone"] > 0 and row["p_backbone"] < 0.05
    # the endpoints' sampling variance is the blocked standard error's
    ep = report.endpoints(df, "hateful_memes").set_index("endpoint").loc["normal"]
    assert ep["rel_var"] == pytest.approx((se / ep["a_mean"]) ** 2)


def test_random_init_pairs_with_the_backbone_of_its_seed():
    vals = _two_backbones()
    vals = {("l2sp" if m == "baseline" else m, s): v for (m, s), v in vals.items()}
    df = _frame(vals, lambda m, s: "" if m == "l2sp" else ("b0" if s < 4 else "b1"))
    row = report.comparison(df, "hateful_memes", a={"method": "l2sp"}).set_index("test_case").loc["normal"]
    assert row["n_backbones"] == 2 and row["holds_on"].endswith("/2")


def test_a_seed_on_two_backbones_is_not_paired():
    vals = _two_backbones()
    df = _frame(vals, lambda m, s: ("b1" if m == "wma" and s == 0 else ("b0" if s < 4 else "b1")))
    with pytest.raises(ValueError, match="seed 0 ran on backbones"):
        report.comparison(df, "hateful_memes")


def test_unreplicated_runs_keep_the_plain_paired_test():
    vals = _two_backbones()
    df = _frame(vals, lambda m, s: "")
    row = report.comparison(df, "hateful_memes").set_index("test_case").loc["normal"]
    a = np.array([vals[("baseline", s)] for s in range(8)])
    b = np.array([vals[("wma", s)] for s in range(8)])
    t = paired_test(a, b)
    assert row["n_backbones"] == 0 and row["holds_on"] == "" and row["by_backbone"] == ""
    assert row["diff_lo"] == pytest.approx(t["diff_lo"]) and row["p_value"] == pytest.approx(t["p_value"])


# --------------------------------------------------------------------------- nesting and pretraining
def test_seeds_are_nested_in_backbones_in_blocks():
    from wma_study.profiles import PROFILES, backbone_of
    from wma_study.pretrain_study import transfer_seeds

    prof = PROFILES["default"]
    assert prof.backbones == (0, 1) and prof.seeds == tuple(range(8))
    assert [backbone_of(prof, s) for s in range(8)] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert [backbone_of(prof, s) for s in (8, 12)] == [0, 1]
    assert transfer_seeds("default") == (0, 1, 4, 5)
    assert backbone_of(PROFILES["smoke"], 1) == 0


def test_replicate_draws_its_own_corpus_and_seeds_but_shares_the_tokenizer(tmp_path):
    from wma_core.pretrain import SCALES, corpus_dir, replicate

    cfg = SCALES["smoke"]
    assert replicate(cfg, 0) is cfg
    r = replicate(cfg, 2)
    assert (r.seed, r.corpus_seed, r.tokenizer_seed) == (cfg.seed + 2, cfg.corpus_seed + 2, cfg.corpus_seed)
    with pytest.raises(ValueError):
        replicate(cfg, -1)
    p0, p1 = corpus_dir(cfg, tmp_path), corpus_dir(replicate(cfg, 1), tmp_path)
    assert p0 != p1
    cap = lambda p: sorted(json.loads(f.read_text())["annotations"][0]["caption"]  # noqa: E731
                           for f in (p.parent.parent / "raw" / p.name / "annotations").glob("*.json"))
    assert cap(p0) != cap(p1)  # another draw of the world
    v0 = json.loads((p0 / "tokenizer.json").read_text())["model"]["vocab"]
    v1 = json.loads((p1 / "tokenizer.json").read_text())["model"]["vocab"]
    assert v0 == v1


def test_backbones_with_different_tokenizers_are_refused(tmp_path):
    from wma_study.experiments import same_tokenizer

    for name, vocab in (("a", {"[PAD]": 0, "lion": 1}), ("b", {"[PAD]": 0, "kite": 1})):
        (tmp_path / name).mkdir()
        (tmp_path / name / "tokenizer.json").write_text(json.dumps({"model": {"vocab": vocab}}))
    same_tokenizer(tmp_path / "a", tmp_path / "a")
    with pytest.raises(ValueError, match="different tokenizers"):
        same_tokenizer(tmp_path / "a", tmp_path / "b")
    (tmp_path / "c").mkdir()
    with pytest.raises(ValueError, match="tokenizer.json"):
        same_tokenizer(tmp_path / "a", tmp_path / "c")


def test_run_configs_fine_tune_each_seed_from_its_backbone(tmp_path, monkeypatch):
    from dataclasses import replace

    from wma_study import experiments as E
    from wma_study import profiles

    monkeypatch.setenv("WMA_DATA", str(tmp_path))
    smoke = profiles.PROFILES["smoke"]
    # a learning rate per initialisation, and a faster head for pretrained weights only
    smoke = replace(smoke, backbones=(0, 1), seeds=(0, 1, 2, 3), lr={**smoke.lr, "hateful_memes": 3e-4},
                    random_init_lr={"hateful_memes": 2e-3}, head_lr_mult={"hateful_memes": 10.0},
                    readout={"hateful_memes": "mean"})
    monkeypatch.setitem(profiles.PROFILES, "smoke", smoke)
    data_dir = E.prepare_data("hateful_memes", "smoke")
    cfgs = E.run_configs("hateful_memes", data_dir, "smoke")
    assert [c.backbone for c in cfgs] == ["b0", "b0", "b1", "b1"]
    f0, f1 = E.resolve_model("pretrained", "smoke", 0), E.resolve_model("pretrained", "smoke", 1)
    assert f0 != f1 and [c.model for c in cfgs] == [f0, f0, f1, f1]
    assert json.loads(open(f"{f1}/pretrain.json").read())["config"]["seed"] == 1
    assert {(c.lr, c.head_lr_mult) for c in cfgs} == {(3e-4, 10.0)}
    # the profile's read-out per dataset, a chapter's parameter over it, ViLT's pooler elsewhere
    assert {c.readout for c in cfgs} == {"mean"}
    assert {c.readout for c in E.run_configs("hateful_memes", data_dir, "smoke", readout="pooler")} == {"pooler"}
    assert E.run_configs("mmimdb", E.prepare_data("mmimdb", "smoke"), "smoke", seeds=(0,))[0].readout == "pooler"
    # random initialisation is not replicated, and has its own learning rate and one rate for all
    tiny = E.run_configs("hateful_memes", data_dir, "smoke", model="tiny")
    assert {c.backbone for c in tiny} == {""} and {(c.lr, c.head_lr_mult) for c in tiny} == {(2e-3, 1.0)}


# --------------------------------------------------------------------------- L2-SP
def test_l2sp_penalty_and_gradient_by_hand():
    from wma_core.losses import L2SP

    torch.manual_seed(0)
    lin = torch.nn.Linear(3, 2)
    start = [p.detach().clone() for p in lin.parameters()]
    sp = L2SP(lin.parameters(), 0.3)
    with torch.no_grad():
        for p in lin.parameters():
            p.add_(torch.randn_like(p))
    value = sp()
    value.backward()
    want = 0.15 * sum(float(((p.detach() - s) ** 2).sum()) for p, s in zip(lin.parameters(), start))
    assert float(value.detach()) == pytest.approx(want, rel=1e-6)
    for p, s in zip(lin.parameters(), start):
        assert torch.allclose(p.grad, 0.3 * (p.detach() - s), atol=1e-6)
    assert sp.distance() == pytest.approx(math.sqrt(want / 0.15), rel=1e-6)
    with pytest.raises(ValueError):
        L2SP(lin.parameters(), -1.0)


def test_l2sp_is_its_own_method_and_holds_the_backbone_near_its_start(hm_twin, tmp_path):
    from wma_core import train as T

    with pytest.raises(ValueError, match="cannot be combined"):
        T.TrainConfig(alpha=1.0, l2sp=0.1)
    assert T.TrainConfig(l2sp=0.1).method == "l2sp" and T.TrainConfig().method == "baseline"
    data_dir = hm_twin(120, 3)
    kw = dict(dataset="hateful_memes", data_dir=str(data_dir), epochs=2, batch_size=16, lr=3e-3, seed=0, progress=False,
              device="cpu", ot_iters=10, max_train_samples=64)
    free = T.fit(T.TrainConfig(**kw), tmp_path)
    held = T.fit(T.TrainConfig(**kw, l2sp=50.0), tmp_path)
    assert free["key"] != held["key"] and held["config"]["l2sp"] == 50.0
    s_free = [h["weight_shift"] for h in free["history"]]
    s_held = [h["weight_shift"] for h in held["history"]]
    assert all(x > 0 for x in s_free) and s_held[-1] < 0.5 * s_free[-1]
    assert held["history"][0]["reg_loss"] > 0 and free["history"][0]["reg_loss"] == 0


def test_l2sp_strength_is_the_best_dev_mean_with_ties_to_the_weaker():
    from wma_study.l2sp import choose

    def rec(lam, seed, dev):
        return {"config": {"dataset": "mosei", "l2sp": lam, "seed": seed}, "dev_metrics": {"mae": dev}}

    recs = [rec(0.001, 0, 0.60), rec(0.001, 4, 0.58), rec(0.01, 0, 0.55), rec(0.01, 4, 0.57), rec(0.1, 0, 0.56),
            rec(0.1, 4, 0.56), {"config": {"dataset": "mosei", "l2sp": 0.0, "seed": 0}, "dev_metrics": {"mae": 0.1}}]
    c = choose(recs, "mosei")  # MAE: lower is better; the baseline row (λ = 0) is not a candidate
    assert c["strength"] == 0.01 and c["scores"]["0.001"] == pytest.approx(0.59) and c["seeds"] == [0, 4]
    tie = [rec(0.001, 0, 0.5), rec(0.01, 0, 0.5)]
    assert choose(tie, "mosei")["strength"] == 0.001
    with pytest.raises(ValueError, match="no L2-SP run"):
        choose(recs[-1:], "mosei")


def test_tables_show_the_backbones_only_when_the_runs_are_replicated():
    from wma_study import chapters, figures

    vals = _two_backbones()
    rep = report.endpoints(_frame(vals, lambda m, s: "b0" if s < 4 else "b1"), "hateful_memes")
    one = report.endpoints(_frame(vals, lambda m, s: ""), "hateful_memes")
    shown = figures.endpoints_frame(rep)
    assert shown["holds on backbones"].tolist() == rep["holds_on"].tolist()
    assert "holds on backbones" not in figures.endpoints_frame(one)
    claims = chapters.claim_rows({"hateful_memes": rep}, "WMA beats the baseline", table=1)
    html = figures.claims_table(claims, "c").to_html()
    r = rep.set_index("endpoint").loc["normal"]
    assert f"b0: {r['by_backbone'].split(': ')[1].split(' [')[0]}" in html and "<br>b1:" in html
    assert "per backbone" not in figures.claims_table(chapters.claim_rows({"hateful_memes": one}, "x", table=1), "c").to_html()


def test_chapters_train_l2sp_at_its_registered_strength_on_the_twins_only(tmp_path, monkeypatch):
    from wma_study import l2sp, plan

    monkeypatch.setenv("WMA_DATA", str(tmp_path))
    lam = l2sp.strength("mosei")
    assert lam is not None and lam > 0
    runs = plan.dataset_runs("mosei", "smoke")
    sp = [c for c in runs if c.method == "l2sp"]
    assert len(sp) == len({c.seed for c in runs}) and {c.l2sp for c in sp} == {lam} and {c.alpha for c in sp} == {0.0}
    assert not [c for c in plan.dataset_runs("mosei", "smoke", l2sp=0) if c.method == "l2sp"]
