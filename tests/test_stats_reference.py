"""wma_study.stats (and the report's pooling) against independent references.

Every expected value here is computed from a formula or a library that the code under test does
not call the same way: scipy's t interval and paired t-test, the noncentral t distribution solved
by root finding (MDE), statsmodels' ``multipletests`` and ``combine_effects`` beside the
DerSimonian-Laird formulas written out by hand, the delta method for the variance of a relative
gain, exact integrals for the best-of-K selection null, brute-force enumeration for the expected
maximum. Inputs are tiny and synthetic.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, optimize
from scipy import stats as st
from statsmodels.stats.meta_analysis import combine_effects
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestPower

from wma_study import report
from wma_study import stats as S

Z975 = st.norm.ppf(0.975)


# --------------------------------------------------------------------------- intervals, paired test
@pytest.mark.parametrize("conf", [0.95, 0.9])
def test_mean_ci_is_scipys_t_interval(conf):
    x = np.array([0.61, 0.64, 0.58, 0.66, 0.70])
    m, lo, hi = S.mean_ci(list(x) + [np.nan], conf)
    ref = st.t.interval(conf, len(x) - 1, loc=x.mean(), scale=st.sem(x))
    assert m == pytest.approx(x.mean(), abs=1e-12)
    assert (lo, hi) == pytest.approx(ref, abs=1e-12)


def test_paired_test_against_scipy_and_orientation():
    a = np.array([0.70, 0.72, 0.69, 0.75, 0.71, 0.73])
    b = np.array([0.73, 0.72, 0.74, 0.77, 0.70, 0.78])
    d = b - a
    r = S.paired_test(a, b)
    assert r["n"] == 6
    assert r["diff_mean"] == pytest.approx(d.mean(), abs=1e-12)
    assert (r["diff_lo"], r["diff_hi"]) == pytest.approx(st.t.interval(0.95, 5, loc=d.mean(), scale=st.sem(d)), abs=1e-12)
    assert r["p_value"] == pytest.approx(st.ttest_rel(b, a).pvalue, rel=1e-10)
    assert r["p_value"] == pytest.approx(st.ttest_1samp(d, 0.0).pvalue, rel=1e-10)
    # b - a, not a - b
    s = S.paired_test(b, a)
    assert s["diff_mean"] == pytest.approx(-d.mean(), abs=1e-12) and s["p_value"] == pytest.approx(r["p_value"])
    # a NaN drops the whole pair
    a2, b2 = a.copy(), b.copy()
    a2[2] = np.nan
    r2 = S.paired_test(a2, b2)
    keep = [0, 1, 3, 4, 5]
    assert r2["n"] == 5
    assert r2["diff_mean"] == pytest.approx((b[keep] - a[keep]).mean(), abs=1e-12)
    assert r2["p_value"] == pytest.approx(st.ttest_rel(b[keep], a[keep]).pvalue, rel=1e-10)


def test_summarize_against_pandas():
    df = pd.DataFrame({"g": list("aabbbc"), "value": [1.0, 2.0, 3.0, 5.0, np.nan, 4.0]})
    out = S.summarize(df, "g").set_index("g")
    for g, x in df.groupby("g")["value"]:
        x = x.dropna().to_numpy()
        assert out.loc[g, "n"] == len(x)
        assert out.loc[g, "mean"] == pytest.approx(x.mean())
        if len(x) > 1:
            assert out.loc[g, "std"] == pytest.approx(np.std(x, ddof=1))
            assert (out.loc[g, "lo"], out.loc[g, "hi"]) == pytest.approx(st.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=st.sem(x)))


# --------------------------------------------------------------------------- power
def _nct_power(d: float, n: int, alpha: float) -> float:
    """Power of the two-sided one-sample t-test on n paired differences at standardised effect d."""
    df, nc = n - 1, d * math.sqrt(n)
    tc = st.t.ppf(1 - alpha / 2, df)
    return st.nct.sf(tc, df, nc) + np.nan_to_num(st.nct.cdf(-tc, df, nc))  # the lower tail underflows


@pytest.mark.parametrize("n", [3, 5, 8])
@pytest.mark.parametrize("sd", [0.01, 0.04])
def test_mde_is_the_noncentral_t_solution(n, sd):
    d = optimize.brentq(lambda x: _nct_power(x, n, 0.05) - 0.8, 1e-3, 5.0, xtol=1e-12)
    got = S.mde(sd, n)
    assert got == pytest.approx(d * sd, rel=1e-4)
    # ...and statsmodels' power at that effect is 80%
    assert TTestPower().power(effect_size=got / sd, nobs=n, alpha=0.05, alternative="two-sided") == pytest.approx(0.8, abs=1e-4)


def test_mde_power_alpha_and_edges():
    d = optimize.brentq(lambda x: _nct_power(x, 6, 0.1) - 0.5, 1e-3, 5.0, xtol=1e-12)
    assert S.mde(0.02, 6, power=0.5, alpha=0.1) == pytest.approx(0.02 * d, rel=1e-4)
    assert math.isnan(S.mde(0.02, 1)) and math.isnan(S.mde(float("nan"), 5))
    assert S.mde(0.0, 5) == 0.0


# --------------------------------------------------------------------------- Holm
def test_holm_is_statsmodels_with_nans_left_out():
    p = np.array([0.01, 0.04, np.nan, 0.03, 0.2, 0.001])
    got = S.holm(p)
    ok = ~np.isnan(p)
    ref = multipletests(p[ok], method="holm")[1]
    assert np.isnan(got[2])
    np.testing.assert_allclose(got[ok], ref, rtol=0, atol=1e-15)
    # Holm by hand: sorted p_(i) * (m - i + 1), running maximum, capped at 1
    q = p[ok]
    order = np.argsort(q)
    m = len(q)
    adj = np.minimum(1.0, np.maximum.accumulate(q[order] * (m - np.arange(m))))
    hand = np.empty(m)
    hand[order] = adj
    np.testing.assert_allclose(got[ok], hand, atol=1e-15)


# --------------------------------------------------------------------------- pooling
E = np.array([0.020, -0.010, 0.050, 0.000, 0.030])
V = np.array([1.0e-4, 2.0e-4, 1.5e-4, 1.0e-4, 0.5e-4])


def _dl(e, v):
    """DerSimonian-Laird by hand: (fixed, se_fixed, random, se_random, tau2)."""
    w = 1 / v
    fe = np.sum(w * e) / np.sum(w)
    q = np.sum(w * (e - fe) ** 2)
    c = np.sum(w) - np.sum(w ** 2) / np.sum(w)
    tau2 = max(0.0, (q - (len(e) - 1)) / c)
    ws = 1 / (v + tau2)
    re = np.sum(ws * e) / np.sum(ws)
    return fe, np.sum(w) ** -0.5, re, np.sum(ws) ** -0.5, tau2


def test_random_effects_pooling_against_hand_dl_and_statsmodels():
    fe, se_f, re, se_r, tau2 = _dl(E, V)
    assert tau2 > 1e-4 and abs(re - fe) > 1e-3, "the inputs must be heterogeneous (RE differs from FE)"
    r = S.pool_effects(E, V, method="random")
    assert r["k"] == 5 and r["tau2"] == pytest.approx(tau2, rel=1e-9)
    assert r["effect"] == pytest.approx(re, rel=1e-9)
    assert (r["lo"], r["hi"]) == pytest.approx((re - Z975 * se_r, re + Z975 * se_r), rel=1e-9)
    sm = combine_effects(E, V, method_re="dl").summary_frame().loc["random effect"]
    assert r["effect"] == pytest.approx(sm["eff"], rel=1e-9) and r["hi"] == pytest.approx(sm["ci_upp"], rel=1e-9)
    f = S.pool_effects(E, V, method="fixed")
    assert f["effect"] == pytest.approx(fe, rel=1e-9)
    assert (f["lo"], f["hi"]) == pytest.approx((fe - Z975 * se_f, fe + Z975 * se_f), rel=1e-9)


def test_pooling_homogeneous_and_excluded_studies():
    e = np.array([0.010, 0.011, 0.009])
    v = np.array([1e-4, 1e-4, 1e-4])
    fe, _, _, _, tau2 = _dl(e, v)
    assert tau2 == 0.0
    assert S.pool_effects(e, v)["effect"] == pytest.approx(fe, rel=1e-12)
    # non-finite effects and non-positive variances are left out
    r = S.pool_effects(list(E) + [np.nan, 0.2], list(V) + [1e-4, 0.0])
    assert r["k"] == 5 and r["effect"] == pytest.approx(_dl(E, V)[2], rel=1e-9)


def _endpoint_frame(eff, var, *, collapsed=0, n=4, paper=0.01):
    rows = []
    for ep in report.ENDPOINTS:
        rows.append({"endpoint": ep, "paper_rel_gain": paper, "paper_gain": paper, "collapsed_a": collapsed,
                     "collapsed_b": 0, "n_seeds": n, "rel_gain": eff, "rel_var": var,
                     "diff_mean": eff, "sd_diff": math.sqrt(var * n)})
    return pd.DataFrame(rows)


def test_report_pooled_uses_random_effects_and_leaves_collapsed_out():
    frames = {f"ds{i}": _endpoint_frame(e, v, paper=0.01 * (i + 1)) for i, (e, v) in enumerate(zip(E, V))}
    frames["dead"] = _endpoint_frame(0.5, 1e-4, collapsed=1)
    out = report.pooled(frames).set_index("endpoint")
    _, _, re, se_r, tau2 = _dl(E, V)
    for ep in report.ENDPOINTS:
        assert out.loc[ep, "k"] == 5 and out.loc[ep, "left_out"] == "dead"
        assert out.loc[ep, "effect"] == pytest.approx(re, rel=1e-9)
        assert out.loc[ep, "tau2"] == pytest.approx(tau2, rel=1e-9)
        assert out.loc[ep, "hi"] - out.loc[ep, "lo"] == pytest.approx(2 * Z975 * se_r, rel=1e-9)
        # the paper's value: the plain mean of the per-dataset paper gains (collapsed ones included)
        assert out.loc[ep, "paper"] == pytest.approx(np.mean([0.01 * (i + 1) for i in range(5)] + [0.01]))
    # raw gains: variance sd_diff^2 / n
    raw = report.pooled(frames, relative=False).set_index("endpoint")
    assert raw.loc["normal", "effect"] == pytest.approx(re, rel=1e-9)


# --------------------------------------------------------------------------- variance of a relative gain
def _runs(values: dict, dataset="hateful_memes", metric="auroc"):
    """A runs frame: values[(method, seed, test_case)] = test value; one dev row per run."""
    rows = []
    for (method, seed, case), v in values.items():
        base = {"key": f"{method}-{seed}", "dataset": dataset, "method": method, "alpha": 0.0 if method == "baseline" else 1.0,
                "beta": 1.0, "target": "init", "lr": 1e-3, "seed": seed, "epochs": 2, "batch_size": 16, "model": "tiny",
                "data": "d", "metric": metric, "value": v, "collapsed": False, "feasible": True}
        rows.append({**base, "split": "test", "test_case": case})
    for method, seed in {(m, s) for m, s, _ in values}:
        rows.append({"key": f"{method}-{seed}", "dataset": dataset, "method": method,
                     "alpha": 0.0 if method == "baseline" else 1.0, "beta": 1.0, "target": "init", "lr": 1e-3, "seed": seed,
                     "epochs": 2, "batch_size": 16, "model": "tiny", "data": "d", "metric": metric, "value": 0.5,
                     "collapsed": False, "feasible": True, "split": "dev", "test_case": "normal"})
    return pd.DataFrame(rows, columns=report.RUN_COLUMNS)


def _delta_var(a, d):
    """Delta-method variance of mean(d) / mean(a) over n seeds (first order, with the covariance)."""
    n = len(a)
    am, dm = a.mean(), d.mean()
    va, vd = np.var(a, ddof=1) / n, np.var(d, ddof=1) / n
    cov = np.cov(a, d, ddof=1)[0, 1] / n
    return vd / am ** 2 - 2 * dm * cov / am ** 3 + dm ** 2 * va / am ** 4


@pytest.mark.parametrize("dataset,metric,sign", [("hateful_memes", "auroc", 1.0), ("mosei", "mae", -1.0)])
def test_relative_gain_and_its_variance_against_the_delta_method(dataset, metric, sign):
    rng = np.random.default_rng(7)
    n = 6
    a = 0.70 + 0.004 * rng.standard_normal(n)
    g = 0.01 + 0.01 * rng.standard_normal(n)  # gain, positive = b better
    b = a + sign * g
    vals = {}
    for s in range(n):
        vals[("baseline", s, "normal")] = a[s]
        vals[("wma", s, "normal")] = b[s]
    out = report.endpoints(_runs(vals, dataset, metric), dataset, metric=metric).set_index("endpoint")
    r = out.loc["normal"]
    d = sign * (b - a)
    assert r["n_seeds"] == n
    assert r["rel_gain"] == pytest.approx(d.mean() / a.mean(), rel=1e-9)
    assert r["rel_var"] == pytest.approx(_delta_var(a, d), rel=0.03)
    # and a Monte-Carlo estimate of the relative gain's sampling variance (fixed seed), from the
    # same bivariate law the seeds were drawn from
    mc = np.random.default_rng(11)
    A = 0.70 + 0.004 * mc.standard_normal((40000, n))
    G = 0.01 + 0.01 * mc.standard_normal((40000, n))
    rel = G.mean(1) / A.mean(1)
    true_var = np.var(rel, ddof=1)
    # the variance formula (sd_diff / a_mean)² / n at the law's parameters
    assert (0.01 / 0.70) ** 2 / n == pytest.approx(true_var, rel=0.05)


# --------------------------------------------------------------------------- selection
def _null_exact(sd, k, nb):
    """Mean and 95th percentile of max_j X_j - B, X_j ~ N(0, sd²) (k of them), B ~ N(0, sd²/nb)."""
    mean_max = integrate.quad(lambda x: x * k * st.norm.pdf(x) * st.norm.cdf(x) ** (k - 1), -12, 12)[0] * sd
    sb = sd / math.sqrt(nb)

    def cdf(q):
        return integrate.quad(lambda b: st.norm.cdf((q + b) / sd) ** k * st.norm.pdf(b, scale=sb), -10 * sb, 10 * sb)[0]

    q95 = optimize.brentq(lambda q: cdf(q) - 0.95, -10 * sd, 10 * sd, xtol=1e-10)
    return mean_max, q95


@pytest.mark.parametrize("k,nb", [(1, 3), (4, 4), (12, 8)])
def test_selection_null_against_exact_integrals(k, nb):
    sd = 0.02
    mean, q95 = _null_exact(sd, k, nb)
    r = S.selection_null(sd, k, nb, seed=0)
    assert r["k"] == k and r["n_baseline"] == nb
    # Monte-Carlo error of 20000 draws: about 0.005 sd on the mean, 0.012 sd on the 95th percentile
    assert r["mean"] == pytest.approx(mean, abs=0.02 * sd)
    assert r["q95"] == pytest.approx(q95, abs=0.04 * sd)
    # the test can tell K from K - 1 and the 95th percentile from the 90th
    if 1 < k <= 4:
        assert abs(_null_exact(sd, k - 1, nb)[0] - mean) > 0.08 * sd


def test_selection_null_with_our_own_monte_carlo():
    sd, k, nb = 0.03, 5, 2
    rng = np.random.default_rng(2024)
    g = rng.normal(0, sd, (200000, k)).max(1) - rng.normal(0, sd / math.sqrt(nb), 200000)
    r = S.selection_null(sd, k, nb, seed=3)
    assert r["mean"] == pytest.approx(g.mean(), abs=0.02 * sd)
    assert r["q95"] == pytest.approx(np.quantile(g, 0.95), abs=0.04 * sd)


def test_selection_table_uses_all_cells_and_baseline_seeds():
    rng = np.random.default_rng(5)
    rows = []
    base_vals = 0.70 + 0.02 * rng.standard_normal(5)
    cells = [(0.2, 0.5), (0.2, 1.0), (1.0, 0.5), (1.0, 1.0), (1.0, 2.0), (0.2, 2.0)]
    cell_vals = 0.70 + 0.02 * rng.standard_normal(len(cells))
    for s, v in enumerate(base_vals):
        for split in ("test", "dev"):
            rows.append(dict(method="baseline", alpha=0.0, beta=1.0, seed=s, split=split, value=v))
    for (al, be), v in zip(cells, cell_vals):
        for split in ("test", "dev"):
            rows.append(dict(method="wma", alpha=al, beta=be, seed=0, split=split, value=v))
    df = pd.DataFrame([{**{"key": f"{r['method']}{r['alpha']}{r['beta']}{r['seed']}", "dataset": "hateful_memes",
                            "target": "init", "lr": 1e-3, "epochs": 2, "batch_size": 16, "model": "tiny", "data": "d",
                            "test_case": "normal", "metric": "auroc", "collapsed": False, "feasible": True}, **r}
                       for r in rows], columns=report.RUN_COLUMNS)
    t = report.selection_table(df, ["hateful_memes"]).iloc[0]
    sd = float(np.std(base_vals, ddof=1))
    assert t["k"] == len(cells) and t["baseline_seeds"] == 5
    assert t["baseline_sd"] == pytest.approx(sd, rel=1e-12)
    mean, q95 = _null_exact(sd, len(cells), 5)
    assert t["null_mean"] == pytest.approx(mean, abs=0.02 * sd)
    assert t["null_q95"] == pytest.approx(q95, abs=0.04 * sd)
    gains = cell_vals - base_vals.mean()
    assert t["selected_gain_test"] == pytest.approx(gains.max(), abs=1e-12)
    assert t["median_gain"] == pytest.approx(np.median(gains), abs=1e-12)
    assert t["share_above"] == pytest.approx(np.mean(gains > 0))


def test_expected_max_by_enumeration():
    v = np.array([0.3, -0.1, 0.7, 0.2])
    for k in (1, 2, 3):
        brute = np.mean([max(t) for t in itertools.product(v, repeat=k)])
        assert S.expected_max(v, k) == pytest.approx(brute, abs=1e-12)
    assert S.expected_max(list(v) + [np.nan]) == pytest.approx(np.mean([max(t) for t in itertools.product(v, repeat=4)]))


# --------------------------------------------------------------------------- variance split
def test_variance_split_orientation_and_ci_halfwidth():
    y = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    mae = lambda y_, p: float(np.mean(np.abs(y_ - p)))  # noqa: E731
    a = [y + 1.0, y + 0.5, y - 1.5]
    b = [y + 0.5, y + 0.5, y - 0.5]
    r = S.variance_split(a, b, y, mae, greater_is_better=False, n_boot=20)
    gains = np.array([0.5, 0.0, 1.0])  # MAE(a) - MAE(b): positive = b better
    np.testing.assert_allclose(r["gains"], gains)
    assert r["total"] == pytest.approx(np.var(gains, ddof=1))
    assert r["test"] == pytest.approx(0.0, abs=1e-12)  # constant errors: no test-sampling variance
    h = S.ci_halfwidth(8, 4e-4, 3e-4, 200, 600)
    assert h == pytest.approx(st.t.ppf(0.975, 7) * math.sqrt((4e-4 + 3e-4 * 200 / 600) / 8))
