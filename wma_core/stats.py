"""Honest statistics over seeds: confidence intervals and paired tests (scipy.stats).

A configuration trained with ``n`` seeds gives ``n`` values of a metric. We report

- :func:`mean_ci`: the mean and its Student-t confidence interval
  ``mean ± t_{(1+c)/2, n-1} · s / sqrt(n)`` with ``s`` the sample standard deviation
  (``ddof=1``);
- :func:`paired_test`: two methods trained with the same seeds are compared seed by seed:
  the differences ``d_i = b_i - a_i`` get the same interval, and the paired t-test
  (:func:`scipy.stats.ttest_rel`, two-sided) gives the p-value of "no difference";
- :func:`summarize`: the first, per group of a long table.

NaN values (a metric undefined for one seed, e.g. AUROC with one class) are left out; in a
paired test the whole pair is left out. With fewer than two values the interval and the
p-value are NaN: one seed says nothing about seed noise.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats as _st

NAN = float("nan")


def _finite(values) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    return x[~np.isnan(x)]


def mean_ci(values, confidence: float = 0.95) -> tuple[float, float, float]:
    """``(mean, lo, hi)``: the mean of ``values`` and its Student-t confidence interval.

    NaNs are dropped. ``n = 0`` → ``(nan, nan, nan)``; ``n = 1`` → ``(x, nan, nan)``;
    identical values → ``(x, x, x)`` (zero spread).
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    x = _finite(values)
    n = len(x)
    if n == 0:
        return NAN, NAN, NAN
    m = float(x.mean())
    if n == 1:
        return m, NAN, NAN
    sem = float(x.std(ddof=1)) / math.sqrt(n)
    h = float(_st.t.ppf((1 + confidence) / 2, n - 1)) * sem
    return m, m - h, m + h


def paired_test(a, b, confidence: float = 0.95) -> dict:
    """Paired comparison of seed-matched values: ``b - a``.

    Args:
        a, b: equally long sequences, ``a[i]`` and ``b[i]`` from the same seed.

    Returns:
        ``{"n", "diff_mean", "diff_lo", "diff_hi", "p_value", "test"}``: the number of
        complete pairs, the mean difference ``b - a`` with its t interval, and the two-sided
        p-value of the paired t-test (:func:`scipy.stats.ttest_rel`). ``n < 2`` → NaN interval
        and p-value. When every difference is the same the t statistic is ±inf (p = 0) or, if
        they are all 0, undefined: reported as p = 1 (nothing distinguishes the two).
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"paired values need equal lengths, got {len(a)} and {len(b)}")
    keep = ~(np.isnan(a) | np.isnan(b))
    a, b = a[keep], b[keep]
    d = b - a
    n = len(d)
    m, lo, hi = mean_ci(d, confidence)
    if n < 2:
        p = NAN
    elif np.all(d == d[0]):
        p = 1.0 if d[0] == 0 else 0.0
    else:
        p = float(_st.ttest_rel(b, a).pvalue)
    return {"n": n, "diff_mean": m, "diff_lo": lo, "diff_hi": hi, "p_value": p, "test": "paired t-test"}


def summarize(df: pd.DataFrame, by, value: str = "value", confidence: float = 0.95) -> pd.DataFrame:
    """Per group of ``by``: ``mean``, ``lo``, ``hi`` (t interval), ``std`` (ddof=1), ``n``.

    ``n`` counts the non-NaN values. Groups keep their first-appearance order; a NaN group key
    is a group of its own.
    """
    by = [by] if isinstance(by, str) else list(by)
    rows = []
    for keys, g in df.groupby(by, sort=False, dropna=False):
        keys = keys if isinstance(keys, tuple) else (keys,)
        x = _finite(g[value])
        m, lo, hi = mean_ci(x, confidence)
        std = float(x.std(ddof=1)) if len(x) > 1 else NAN
        rows.append({**dict(zip(by, keys)), "mean": m, "lo": lo, "hi": hi, "std": std, "n": len(x)})
    return pd.DataFrame(rows, columns=by + ["mean", "lo", "hi", "std", "n"])
