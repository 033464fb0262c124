"""Honest statistics over seeds: intervals, paired tests, power, pooling, selection (scipy, statsmodels).

A configuration trained with ``n`` seeds gives ``n`` values of a metric. We report

- :func:`mean_ci`: the mean and its Student-t confidence interval
  ``mean ± t_{(1+c)/2, n-1} · s / sqrt(n)`` with ``s`` the sample standard deviation
  (``ddof=1``);
- :func:`paired_test`: two methods trained with the same seeds are compared seed by seed:
  the differences ``d_i = b_i - a_i`` get the same interval, and the paired t-test
  (:func:`scipy.stats.ttest_rel`, two-sided) gives the p-value of "no difference";
- :func:`blocked_paired_test`: the same when the seeds are nested in blocks (backbones, each
  pretrained independently): each block its own mean gain, one pooled within-block variance,
  the gain averaged over blocks, plus the between-block variance and its F test;
- :func:`summarize`: the first, per group of a long table;
- :func:`mde`: the minimum detectable effect of a paired t-test at 80% power
  (:class:`statsmodels.stats.power.TTestPower`);
- :func:`holm`: Holm's step-down correction of secondary p-values
  (:func:`statsmodels.stats.multitest.multipletests`);
- :func:`pool_effects`: one effect pooled over datasets, inverse-variance and random-effects
  (:func:`statsmodels.stats.meta_analysis.combine_effects`);
- :func:`variance_split`, :func:`ci_halfwidth`: how the variance of a paired gain splits between
  training seeds and test samples, and the interval that a design (seeds, test size) buys;
- :func:`selection_null`, :func:`expected_max`: what choosing the best of ``K`` cells gains when
  no cell differs.

NaN values (a metric undefined for one seed, e.g. AUROC with one class) are left out; in a
paired test the whole pair is left out. With fewer than two values the interval and the
p-value are NaN: one seed says nothing about seed noise.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats as _st
from statsmodels.stats.meta_analysis import combine_effects
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestPower

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
        and p-value. When every difference is the same (up to float rounding, 1e-12 relative)
        the sample standard deviation is 0 and the t statistic ``d/0`` (or ``0/0``): the p-value
        is undefined and reported as NaN, never as 0 or 1 (the interval is the point ``[d, d]``).
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
    elif np.ptp(d) <= 1e-12 * max(1.0, float(np.abs(d).max())):  # equal up to rounding: s = 0
        p = NAN
    else:
        p = float(_st.ttest_rel(b, a).pvalue)
    return {"n": n, "diff_mean": m, "diff_lo": lo, "diff_hi": hi, "p_value": p, "test": "paired t-test"}


def blocked_paired_test(a, b, blocks, confidence: float = 0.95) -> dict:
    """Seed-paired comparison with the seeds nested in blocks (independently pretrained backbones).

    Args:
        a, b: equally long sequences, ``a[i]`` and ``b[i]`` from the same seed;
        blocks: the block (backbone) of each seed, same length.

    With ``d_ks = b_ks - a_ks`` for seed ``s`` of block ``k`` (``n_k`` seeds, ``K`` blocks,
    ``N = Σ n_k``), the model is ``d_ks = μ_k + ε_ks``, ``ε ~ N(0, σ²)``: every backbone has its
    own mean gain and the seeds scatter around it with one variance. Reported:

    - ``diff_mean`` ``μ̂ = (1/K) Σ_k m_k``, the gain averaged over the backbones (each weighs the
      same), with ``m_k`` the block means;
    - ``se`` ``= σ̂ · sqrt(Σ_k 1/n_k) / K`` with the pooled within-block variance
      ``σ̂² = Σ_k Σ_s (d_ks − m_k)² / (N − K)``, and the t interval and two-sided p-value on
      ``N − K`` degrees of freedom. This is the intercept of the least-squares fit
      ``d ~ C(block, Sum)`` (statsmodels): inference about *these* backbones, as every interval
      of the book describes our runs; a claim about backbones in general needs many more of them;
    - ``tau2``: the between-backbone variance of the gain, the moment estimator
      ``max(0, (MSB − MSW) / n0)`` with ``n0 = (N − Σ n_k² / N) / (K − 1)`` (one-way random
      effects ANOVA; REML's estimate for balanced blocks when positive), and ``p_between``, the
      F test of equal block means (:func:`scipy.stats.f_oneway`);
    - ``blocks``: ``{block: paired_test of its seeds, with "sd" the standard deviation of its
      differences}``, for a verdict per backbone.

    With one block this is :func:`paired_test` exactly (``N − 1`` degrees of freedom). NaN pairs
    are left out. ``N − K < 1`` (e.g. one seed per backbone) → NaN interval and p-value; zero
    spread within every block → the point interval ``[μ̂, μ̂]`` and a NaN p-value.
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    g = np.asarray(blocks, dtype=object).reshape(-1)
    if not (a.shape == b.shape == g.shape):
        raise ValueError(f"a, b and blocks need equal lengths, got {len(a)}, {len(b)} and {len(g)}")
    keep = ~(np.isnan(a) | np.isnan(b))
    a, b, g = a[keep], b[keep], g[keep]
    d = b - a
    names = list(dict.fromkeys(g.tolist()))
    per = {}
    for k in names:
        dk = d[g == k]
        per[k] = {**paired_test(a[g == k], b[g == k], confidence), "sd": float(dk.std(ddof=1)) if len(dk) > 1 else NAN}
    K, N = len(names), len(d)
    base = {"n": N, "k_blocks": K, "blocks": per, "test": "paired t-test, seeds nested in backbones"}
    if K <= 1:
        t = paired_test(a, b, confidence)
        se = float(d.std(ddof=1)) / math.sqrt(N) if N >= 2 else NAN
        return {**base, **t, "se": se, "df": N - 1, "tau2": NAN, "p_between": NAN}
    groups = [d[g == k] for k in names]
    means = np.array([x.mean() for x in groups])
    ns = np.array([len(x) for x in groups], dtype=float)
    mu = float(means.mean())
    df = N - K
    ssw = float(sum(((x - x.mean()) ** 2).sum() for x in groups))
    out = {**base, "diff_mean": mu, "df": df}
    if df < 1:
        return {**out, "diff_lo": NAN, "diff_hi": NAN, "p_value": NAN, "se": NAN, "tau2": NAN, "p_between": NAN}
    msw = ssw / df
    se = math.sqrt(msw) * math.sqrt(float((1.0 / ns).sum())) / K
    msb = float((ns * (means - d.mean()) ** 2).sum()) / (K - 1)
    n0 = (N - float((ns ** 2).sum()) / N) / (K - 1)
    tau2 = max(0.0, (msb - msw) / n0)
    scale = max(1.0, float(np.abs(d).max()) if N else 1.0)
    if math.sqrt(msw) <= 1e-12 * scale:  # every block constant: no within-block spread
        return {**out, "diff_lo": mu, "diff_hi": mu, "p_value": NAN, "se": 0.0, "tau2": tau2, "p_between": NAN}
    h = float(_st.t.ppf((1 + confidence) / 2, df)) * se
    p = float(2 * _st.t.sf(abs(mu) / se, df))
    p_between = float(_st.f_oneway(*groups).pvalue)
    return {**out, "diff_lo": mu - h, "diff_hi": mu + h, "p_value": p, "se": se, "tau2": tau2, "p_between": p_between}


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


# --------------------------------------------------------------------------- power


def mde(sd: float, n: int, *, power: float = 0.8, alpha: float = 0.05) -> float:
    """Minimum detectable effect of a two-sided paired t-test: ``d · sd`` with ``d`` solving power.

    ``n`` paired seeds whose differences have standard deviation ``sd`` (``ddof=1``) detect a true
    mean difference of at least ``mde`` with probability ``power`` at level ``alpha``;
    ``d = TTestPower().solve_power(nobs=n, alpha=alpha, power=power)`` (the noncentral-t power of
    a one-sample t-test on the differences). ``n < 2`` or a non-finite ``sd`` → NaN; ``sd = 0`` → 0.
    """
    if n < 2 or not np.isfinite(sd):
        return NAN
    if sd == 0:
        return 0.0
    d = TTestPower().solve_power(effect_size=None, nobs=int(n), alpha=alpha, power=power, alternative="two-sided")
    return float(d) * float(sd)


def holm(pvalues) -> np.ndarray:
    """Holm-adjusted p-values (family-wise error), NaNs left out of the family and kept as NaN."""
    p = np.asarray(pvalues, dtype=np.float64).reshape(-1)
    out = np.full(p.shape, NAN)
    ok = ~np.isnan(p)
    if ok.any():
        out[ok] = multipletests(p[ok], method="holm")[1]
    return out


def pool_effects(effects, variances, *, method: str = "random") -> dict:
    """One effect pooled over studies (datasets): ``{"effect", "lo", "hi", "k", "tau2", "method"}``.

    ``effects[i]`` with sampling variance ``variances[i]`` (the squared standard error of a
    dataset's mean paired gain, ``s²/n``). ``method="fixed"``: inverse-variance
    ``Σ w_i e_i / Σ w_i`` with ``w_i = 1/v_i`` and ``se = (Σ w_i)^(-1/2)``; ``"random"``:
    DerSimonian-Laird, ``w_i = 1/(v_i + τ²)`` with ``τ² = max(0, (Q - (k-1)) / (Σw - Σw²/Σw))``
    (:func:`statsmodels.stats.meta_analysis.combine_effects`, normal 95% interval). Studies with a non-finite effect or a non-positive/NaN variance are
    left out; ``k`` counts the rest. ``k = 0`` → NaN; ``k = 1`` → that study.
    """
    if method not in ("fixed", "random"):
        raise ValueError(f"method must be 'fixed' or 'random', got {method!r}")
    e = np.asarray(effects, dtype=np.float64).reshape(-1)
    v = np.asarray(variances, dtype=np.float64).reshape(-1)
    if e.shape != v.shape:
        raise ValueError(f"effects and variances need equal lengths, got {len(e)} and {len(v)}")
    ok = np.isfinite(e) & np.isfinite(v) & (v > 0)
    e, v = e[ok], v[ok]
    k = len(e)
    if k == 0:
        return {"effect": NAN, "lo": NAN, "hi": NAN, "k": 0, "tau2": NAN, "method": method}
    if k == 1:
        h = 1.959963984540054 * math.sqrt(v[0])
        return {"effect": float(e[0]), "lo": float(e[0] - h), "hi": float(e[0] + h), "k": 1, "tau2": NAN, "method": method}
    # statsmodels also computes Hartung-Knapp (HKSJ) rows, whose variance can be negative, and
    # I² = 1 - 1/H², which divides by Q = 0 for identical effects (RuntimeWarnings that would
    # show on the page); neither is used here
    with np.errstate(invalid="ignore", divide="ignore"):
        res = combine_effects(e, v, method_re="dl")
        # DerSimonian-Laird truncates τ² at 0; statsmodels 0.14 keeps a negative estimate (and
        # weights with it), so with τ² <= 0 the random-effects estimate is the fixed-effect one
        row = res.summary_frame().loc["random effect" if method == "random" and res.tau2 > 0 else "fixed effect"]
    return {"effect": float(row["eff"]), "lo": float(row["ci_low"]), "hi": float(row["ci_upp"]), "k": k,
            "tau2": max(float(res.tau2), 0.0), "method": method}


# --------------------------------------------------------------------------- variance split


def variance_split(a_outputs, b_outputs, labels, metric, *, greater_is_better: bool = True, n_boot: int = 200,
                   seed: int = 0) -> dict:
    """How the variance of a seed-paired gain splits between training seeds and test samples.

    Args:
        a_outputs, b_outputs: per seed, the per-sample outputs of method a and b on the same test
            set (``[n_seeds]`` arrays of shape ``[N, ...]``, seed ``i`` of a paired with seed ``i`` of b).
        labels: ``[N, ...]`` test labels.
        metric: ``metric(labels, outputs) -> float`` (e.g. AUROC).
        greater_is_better: ``False`` for an error (MAE): the gain is then ``a - b``.

    Per seed ``i`` the gain is ``g_i = ±(metric(y, b_i) - metric(y, a_i))``. Its variance across
    seeds, ``total = Var_i(g_i)`` (ddof=1), has two parts:

    - ``test``: the test-sampling variance of one seed's gain, ``mean_i Var_r(g_i^r)`` over
      ``n_boot`` bootstrap resamples ``r`` of the test samples (the same resampled indices for a
      and b, so the pairing is kept);
    - ``seed``: the rest, ``max(total - test, 0)``: what a new training seed changes.

    Returns ``{"n_seeds", "n_test", "gains", "total", "test", "seed", "test_share"}``: the
    variance of a mean over ``n`` seeds on ``M`` test samples is then about
    ``(seed + test · n_test / M) / n`` (:func:`ci_halfwidth`).
    """
    a_outputs = [np.asarray(x) for x in a_outputs]
    b_outputs = [np.asarray(x) for x in b_outputs]
    if len(a_outputs) != len(b_outputs) or len(a_outputs) < 2:
        raise ValueError(f"need the same number (>= 2) of a and b seeds, got {len(a_outputs)} and {len(b_outputs)}")
    y = np.asarray(labels)
    n = len(y)
    if any(len(x) != n for x in a_outputs + b_outputs):
        raise ValueError(f"every output array needs {n} rows (one per test label)")
    sign = 1.0 if greater_is_better else -1.0
    gains = np.array([sign * (metric(y, b) - metric(y, a)) for a, b in zip(a_outputs, b_outputs)])
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    within = []
    for a, b in zip(a_outputs, b_outputs):
        g = np.array([sign * (metric(y[i], b[i]) - metric(y[i], a[i])) for i in idx])
        within.append(np.nanvar(g, ddof=1))
    total = float(np.var(gains, ddof=1))
    test = float(np.mean(within))
    return {"n_seeds": len(gains), "n_test": n, "gains": gains.tolist(), "total": total, "test": test,
            "seed": max(total - test, 0.0), "test_share": test / total if total > 0 else NAN}


def ci_halfwidth(n_seeds: int, var_seed: float, var_test: float, n_test_measured: int, n_test: int,
                 confidence: float = 0.95) -> float:
    """Expected half-width of the t interval of a mean paired gain over ``n_seeds`` seeds.

    ``t_{(1+c)/2, n-1} · sqrt((var_seed + var_test · n_test_measured / n_test) / n_seeds)``: the
    test-sampling part shrinks as ``1/M`` with the test size ``M`` (measured ``var_test`` at
    ``n_test_measured`` samples, :func:`variance_split`), the seed part only with more seeds.
    """
    if n_seeds < 2:
        return NAN
    v = var_seed + var_test * n_test_measured / n_test
    return float(_st.t.ppf((1 + confidence) / 2, n_seeds - 1)) * math.sqrt(v / n_seeds)


# --------------------------------------------------------------------------- selection


def expected_max(values, k: int | None = None) -> float:
    """Expected maximum of ``k`` independent draws (with replacement) from the values' empirical law.

    With the values sorted, ``v_(1) <= ... <= v_(K)``, the largest of ``k`` draws is ``v_(j)`` with
    probability ``(j/K)^k - ((j-1)/K)^k``, so ``E[max] = Σ_j v_(j) · ((j/K)^k - ((j-1)/K)^k)``.
    ``k`` defaults to ``K``: what the best of a grid of ``K`` cells would be on average if the cells
    were exchangeable draws (no structure in α and β), to compare with the selected cell.
    """
    v = np.sort(_finite(values))
    K = len(v)
    if K == 0:
        return NAN
    k = K if k is None else int(k)
    j = np.arange(1, K + 1)
    w = (j / K) ** k - ((j - 1) / K) ** k
    return float(np.sum(v * w))


def selection_null(sd: float, k: int, n_baseline: int, *, n_sims: int = 20000, seed: int = 0) -> dict:
    """The gain that picking the best of ``k`` single-seed cells shows when no cell differs.

    Simulated: each cell is one seed, ``X_j ~ N(0, sd²)``, ``j = 1..k``; the baseline is the mean of
    ``n_baseline`` seeds, ``B ~ N(0, sd²/n_baseline)``; the selected gain is ``max_j X_j - B``.
    ``sd`` is the seed-to-seed standard deviation of one run's metric (from the baseline seeds).
    Returns ``{"mean", "q95", "k", "sd", "n_baseline"}``: the average and the 95th percentile of
    the selected gain under this null (``k = 1``: mean 0).
    """
    if k < 1 or n_baseline < 1:
        raise ValueError(f"k and n_baseline must be >= 1, got {k} and {n_baseline}")
    if not np.isfinite(sd):
        return {"mean": NAN, "q95": NAN, "k": int(k), "sd": sd, "n_baseline": int(n_baseline)}
    rng = np.random.default_rng(seed)
    best = rng.normal(0.0, sd, size=(n_sims, k)).max(axis=1)
    base = rng.normal(0.0, sd / math.sqrt(n_baseline), size=n_sims)
    g = best - base
    return {"mean": float(g.mean()), "q95": float(np.quantile(g, 0.95)), "k": int(k), "sd": float(sd),
            "n_baseline": int(n_baseline)}
