"""wma_core.stats against scipy.stats and hand-computed numbers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from wma_core.stats import mean_ci, paired_test, summarize


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
    # identical differences
    assert paired_test([1, 2, 3], [1, 2, 3])["p_value"] == 1.0
    assert paired_test([1, 2, 3], [2, 3, 4])["p_value"] == 0.0
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
