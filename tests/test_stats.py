"""wma_study.stats against scipy.stats and hand-computed numbers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from wma_study.stats import mean_ci, paired_test, summarize


def test_mean_ci_matches_scipy_t_interval():
    x = np.array([0.71, 0.74, 0.69, 0.73, 0.75])
    m, lo, hi = mean_ci(x)
    ref = st.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=st.sem(x))
    assert m == pytest.approx(x.mean(), abs=1e-15)
    assert (lo, hi) == pytest.approx(ref, abs=1e-12)
    m90, lo90, hi90 = mean_ci(x, confidence=0.9)
    assert (lo90, hi90) == pytest.approx(st.t.interval(0.9, 4, loc=x.mean(), scale=st.sem(x)), abs=1e-12)
    assert lo < lo90 < m90 < hi90 < hi


def test_mean_ci_hand_formula_three_seeds():
    # values 1, 2, 3: mean 2, s = 1, sem = 1/sqrt(3), t_{0.975, 2} = 4.302652729749464
    m, lo, hi = mean_ci([1.0, 2.0, 3.0])
    h = 4.302652729749464 / math.sqrt(3)
    assert m == 2.0
    assert lo == pytest.approx(2 - h, abs=1e-9) and hi == pytest.approx(2 + h, abs=1e-9)
    # two values a, b: half-width = t_{0.975,1} * |a-b|/2, t_{0.975,1} = 12.706204736174705
    m, lo, hi = mean_ci([0.5, 0.7])
    assert (hi - lo) / 2 == pytest.approx(12.706204736174705 * 0.1, abs=1e-9)


def test_mean_ci_edge_cases():
    assert mean_ci([0.42])[0] == 0.42
    assert all(math.isnan(v) for v in mean_ci([0.42])[1:])
    assert all(math.isnan(v) for v in mean_ci([]))
    assert all(math.isnan(v) for v in mean_ci([float("nan")]))
    # NaN values are dropped, not propagated
    m, lo, hi = mean_ci([1.0, float("nan"), 2.0, 3.0])
    assert (m, lo, hi) == pytest.approx(mean_ci([1.0, 2.0, 3.0]))
    # zero spread: a degenerate interval, not NaN
    assert mean_ci([0.3, 0.3, 0.3]) == (pytest.approx(0.3), pytest.approx(0.3), pytest.approx(0.3))
    with pytest.raises(ValueError):
        mean_ci([1, 2], confidence=1.5)


def test_paired_test_by_hand():
    a = [0.70, 0.72, 0.68, 0.71]
    b = [0.72, 0.73, 0.71, 0.71]
    d = np.array(b) - np.array(a)  # 0.02, 0.01, 0.03, 0.00
    n = 4
    dm = d.mean()
    sd = math.sqrt(((d - dm) ** 2).sum() / (n - 1))
    t = dm / (sd / math.sqrt(n))
    p = 2 * st.t.sf(abs(t), n - 1)
    h = st.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
    r = paired_test(a, b)
    assert r["n"] == 4
    assert r["diff_mean"] == pytest.approx(0.015, abs=1e-12)
    assert r["diff_lo"] == pytest.approx(dm - h, abs=1e-12)
    assert r["diff_hi"] == pytest.approx(dm + h, abs=1e-12)
    assert r["p_value"] == pytest.approx(p, rel=1e-9)
    assert r["p_value"] == pytest.approx(st.ttest_rel(b, a).pvalue, rel=1e-9)
    # direction: b - a, so swapping flips the sign and keeps the p-value
    s = paired_test(b, a)
    assert s["diff_mean"] == pytest.approx(-0.015, abs=1e-12)
    assert s["diff_lo"] == pytest.approx(-(dm + h), abs=1e-12)
    assert s["p_value"] == pytest.approx(p, rel=1e-9)


def test_paired_test_is_not_an_unpaired_test():
    # large seed-to-seed spread, constant-ish paired gain: the pairing makes it significant
    a = np.array([0.60, 0.70, 0.80, 0.65, 0.75])
    b = a + np.array([0.011, 0.009, 0.010, 0.012, 0.008])
    r = paired_test(a, b)
    assert r["p_value"] < 1e-3  # t = 14.1 on 4 df: p = 1.45e-4
    assert st.ttest_ind(b, a).pvalue > 0.5


def test_paired_test_edge_cases():
    r = paired_test([0.5], [0.6])
    assert r["n"] == 1 and r["diff_mean"] == pytest.approx(0.1)
    assert math.isnan(r["diff_lo"]) and math.isnan(r["diff_hi"]) and math.isnan(r["p_value"])
    r = paired_test([], [])
    assert r["n"] == 0 and math.isnan(r["diff_mean"]) and math.isnan(r["p_value"])
    # a NaN drops its whole pair
    r = paired_test([0.5, float("nan"), 0.7, 0.6], [0.6, 0.9, 0.75, float("nan")])
    assert r["n"] == 2
    assert r["diff_mean"] == pytest.approx(0.075)
    assert r["p_value"] == pytest.approx(st.ttest_rel([0.6, 0.75], [0.5, 0.7]).pvalue)
    # identical differences: s = 0, t = d/0 or 0/0: the p-value is undefined (NaN), not 0 or 1
    r = paired_test([1, 2, 3], [1, 2, 3])
    assert math.isnan(r["p_value"]) and (r["diff_mean"], r["diff_lo"], r["diff_hi"]) == (0.0, 0.0, 0.0)
    r = paired_test([1, 2, 3], [2, 3, 4])
    assert math.isnan(r["p_value"]) and r["diff_lo"] == pytest.approx(1.0) and r["diff_hi"] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        paired_test([1, 2], [1, 2, 3])


def test_summarize_groups():
    df = pd.DataFrame({
        "method": ["baseline"] * 3 + ["wma"] * 3 + ["wma"],
        "beta": [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 2.0],
        "value": [1.0, 2.0, 3.0, 4.0, 6.0, float("nan"), 9.0],
    })
    s = summarize(df, ["method", "beta"])
    assert list(s.columns) == ["method", "beta", "mean", "lo", "hi", "std", "n"]
    assert list(zip(s["method"], s["beta"])) == [("baseline", 1.0), ("wma", 0.5), ("wma", 2.0)]
    r0 = s.iloc[0]
    assert r0["mean"] == 2.0 and r0["std"] == pytest.approx(1.0) and r0["n"] == 3
    assert (r0["lo"], r0["hi"]) == pytest.approx(st.t.interval(0.95, 2, loc=2.0, scale=1 / math.sqrt(3)))
    r1 = s.iloc[1]  # NaN dropped: values 4, 6
    assert r1["mean"] == 5.0 and r1["n"] == 2 and r1["std"] == pytest.approx(math.sqrt(2))
    assert (r1["hi"] - r1["lo"]) / 2 == pytest.approx(12.706204736174705 * 1.0, rel=1e-9)
    r2 = s.iloc[2]
    assert r2["mean"] == 9.0 and r2["n"] == 1 and math.isnan(r2["lo"]) and math.isnan(r2["std"])
    # a single column name works too
    assert list(summarize(df, "method")["n"]) == [3, 3]


# --------------------------------------------------------------------------- power, Holm, pooling


def test_mde_has_80_percent_power_by_the_noncentral_t():
    from wma_study.stats import mde

    for n, sd in [(3, 0.02), (8, 0.01), (20, 0.05)]:
        m = mde(sd, n)
        # independent reference: power of the two-sided one-sample t-test on the differences,
        # P(|T| > t_crit) with T ~ noncentral t(n - 1, nc = m / sd * sqrt(n))
        crit = st.t.ppf(0.975, n - 1)
        nc = m / sd * math.sqrt(n)
        power = st.nct.sf(crit, n - 1, nc) + st.nct.cdf(-crit, n - 1, nc)
        assert power == pytest.approx(0.8, abs=1e-6)
    # scales with sd, shrinks with n; undefined with one seed
    assert mde(0.02, 8) == pytest.approx(2 * mde(0.01, 8))
    assert mde(0.01, 16) < mde(0.01, 8) < mde(0.01, 3)
    assert math.isnan(mde(0.01, 1)) and mde(0.0, 5) == 0.0


def test_holm_by_hand():
    from wma_study.stats import holm

    # sorted p: 0.01 (x3 = 0.03), 0.03 (x2 = 0.06), 0.04 (x1 = 0.04 -> monotone: 0.06)
    assert holm([0.04, 0.01, 0.03]) == pytest.approx([0.06, 0.03, 0.06])
    # capped at 1; NaN stays NaN and is not counted in the family (m = 2 here)
    out = holm([0.6, float("nan"), 0.02])
    assert math.isnan(out[1]) and out[0] == pytest.approx(0.6) and out[2] == pytest.approx(0.04)
    assert holm([0.7, 0.8])[1] == 1.0 or holm([0.7, 0.8]).max() <= 1.0


def test_pool_effects_by_hand():
    from wma_study.stats import pool_effects

    e = np.array([0.010, 0.030, -0.005, 0.020])
    v = np.array([1e-4, 4e-4, 2e-4, 1e-4])
    w = 1 / v
    fe = (w * e).sum() / w.sum()
    se = math.sqrt(1 / w.sum())
    r = pool_effects(e, v, method="fixed")
    assert r["effect"] == pytest.approx(fe, rel=1e-10)
    assert (r["lo"], r["hi"]) == pytest.approx((fe - 1.959963984540054 * se, fe + 1.959963984540054 * se), rel=1e-8)
    # DerSimonian-Laird by hand
    q = (w * (e - fe) ** 2).sum()
    tau2 = max(0.0, (q - (len(e) - 1)) / (w.sum() - (w ** 2).sum() / w.sum()))
    ws = 1 / (v + tau2)
    re = (ws * e).sum() / ws.sum()
    r = pool_effects(e, v, method="random")
    assert r["tau2"] == pytest.approx(tau2, rel=1e-8)
    assert r["effect"] == pytest.approx(re, rel=1e-8)
    assert r["hi"] - r["lo"] == pytest.approx(2 * 1.959963984540054 * math.sqrt(1 / ws.sum()), rel=1e-8)
    assert r["k"] == 4
    # a NaN study (a collapsed dataset, say) is left out
    r = pool_effects([0.01, float("nan")], [1e-4, 1e-4])
    assert r["k"] == 1 and r["effect"] == pytest.approx(0.01)
    assert math.isnan(pool_effects([], [])["effect"])


# --------------------------------------------------------------------------- variance split, selection


def test_variance_split_mean_metric_by_hand():
    from wma_study.stats import ci_halfwidth, variance_split

    rng = np.random.default_rng(1)
    n, seeds = 400, 6
    y = rng.normal(size=n)
    a = [y + rng.normal(0, 1.0, n) for _ in range(seeds)]
    # b = a + a seed-level shift + per-sample noise
    shifts = rng.normal(0.05, 0.03, seeds)
    b = [x + s + rng.normal(0, 0.5, n) for x, s in zip(a, shifts)]

    def metric(lab, out):  # negative mean absolute error: greater is better
        return -float(np.mean(np.abs(out - lab)))

    r = variance_split(a, b, y, metric, n_boot=300, seed=0)
    gains = np.array([metric(y, bb) - metric(y, aa) for aa, bb in zip(a, b)])
    assert r["gains"] == pytest.approx(gains.tolist())
    assert r["total"] == pytest.approx(gains.var(ddof=1))
    # the bootstrap variance of a mean of n paired per-sample differences is about var / n
    per = [np.var(-np.abs(bb - y) + np.abs(aa - y), ddof=1) / n for aa, bb in zip(a, b)]
    assert r["test"] == pytest.approx(np.mean(per), rel=0.25)
    assert r["seed"] == pytest.approx(max(r["total"] - r["test"], 0.0))
    assert r["test_share"] == pytest.approx(r["test"] / r["total"])
    # the same as an error metric, gains flipped
    r2 = variance_split(a, b, y, lambda lab, out: float(np.mean(np.abs(out - lab))), greater_is_better=False, n_boot=300)
    assert r2["gains"] == pytest.approx(gains.tolist())
    # the half-width a design buys, by hand
    h = ci_halfwidth(8, 1e-4, 4e-4, 200, 800)
    assert h == pytest.approx(st.t.ppf(0.975, 7) * math.sqrt((1e-4 + 4e-4 * 200 / 800) / 8))
    assert math.isnan(ci_halfwidth(1, 1e-4, 1e-4, 100, 100))
    with pytest.raises(ValueError):
        variance_split(a[:1], b[:1], y, metric)


def test_expected_max_by_enumeration():
    import itertools

    from wma_study.stats import expected_max

    vals = [0.3, -0.1, 0.2, 0.0]
    for k in (1, 2, 4):
        brute = np.mean([max(t) for t in itertools.product(vals, repeat=k)])
        assert expected_max(vals, k) == pytest.approx(brute, abs=1e-12)
    assert expected_max(vals) == pytest.approx(np.mean([max(t) for t in itertools.product(vals, repeat=4)]))
    assert expected_max(vals, 1) == pytest.approx(np.mean(vals))
    assert math.isnan(expected_max([]))


def test_selection_null():
    from wma_study.stats import selection_null

    # one cell: no selection, mean 0
    assert selection_null(0.01, 1, 10**6)["mean"] == pytest.approx(0.0, abs=3e-4)
    # two cells against an exact baseline: E[max(Z1, Z2)] = 1/sqrt(pi)
    r = selection_null(0.02, 2, 10**8, n_sims=200000)
    assert r["mean"] == pytest.approx(0.02 / math.sqrt(math.pi), rel=0.02)
    # more cells, more apparent gain
    assert selection_null(0.01, 12, 8)["mean"] > selection_null(0.01, 4, 8)["mean"] > 0
    with pytest.raises(ValueError):
        selection_null(0.01, 0, 3)


def test_pool_effects_random_with_heterogeneity():
    from wma_study.stats import pool_effects

    e = np.array([0.00, 0.05, -0.03, 0.04])  # far apart relative to their variances: tau^2 > 0
    v = np.array([1e-4, 1e-4, 2e-4, 1e-4])
    w = 1 / v
    fe = (w * e).sum() / w.sum()
    q = (w * (e - fe) ** 2).sum()
    tau2 = (q - 3) / (w.sum() - (w ** 2).sum() / w.sum())
    assert tau2 > 0
    ws = 1 / (v + tau2)
    r = pool_effects(e, v)
    assert r["tau2"] == pytest.approx(tau2, rel=1e-8)
    assert r["effect"] == pytest.approx((ws * e).sum() / ws.sum(), rel=1e-8)
    assert r["hi"] - r["lo"] == pytest.approx(2 * 1.959963984540054 * math.sqrt(1 / ws.sum()), rel=1e-8)


def test_pooling_identical_effects_is_quiet_and_exact():
    from wma_study.stats import pool_effects

    # identical effects with unequal variances: statsmodels' unused Hartung-Knapp rows take the
    # sqrt of 0/negative numbers; the pooled effect is the common one, with no warning on the page
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = pool_effects([0.0, 0.0, 0.0, 0.0], [1e-6, 1e-2, 1e-2, 1e-3])
    w = 1 / np.array([1e-6, 1e-2, 1e-2, 1e-3])
    assert res["effect"] == pytest.approx(0.0, abs=1e-12)
    assert res["hi"] - res["effect"] == pytest.approx(1.959963984540054 / np.sqrt(w.sum()), rel=1e-9)
