"""Seed-paired comparisons with their verdicts, the primary endpoints and their pooling.

- :func:`comparison`: baseline vs WMA (or min-OT vs WMA) per test case, mean ± 95% CI over
  seeds, the seed-paired difference, its p-value (Holm-corrected on the secondary cases), our
  minimum detectable effect and the verdict, next to the paper's Table 1/2 numbers;
- :func:`verdict`, :func:`verdict_category`: the reading of one comparison in the fixed
  vocabulary :data:`VERDICTS`;
- :func:`endpoints`, :func:`pooled`: the three primary endpoints (:data:`ENDPOINTS`, declared in
  :data:`PRIMARY_ENDPOINTS_TEXT`; per seed, paired) and one effect per endpoint pooled over the
  datasets.

Signs: every "gain" and "diff" is oriented so that **positive means b is better** (for MAE,
lower is better, so the gain is ``a - b``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import stats
from .runs import _as_runs, _best_cell, _cell_label, _filter, _one_data, greater_is_better, headline, test_case_order


# --------------------------------------------------------------------------- verdicts

#: The fixed vocabulary of verdicts (:func:`verdict`); a verdict string starts with one of these.
VERDICTS = ("detected", "detected (opposite sign)", "ruled out at the paper's size", "inconclusive", "collapsed run",
            "never left the prior")
#: The verdicts of a comparison with a failed fit (a constant predictor), not a measurement of the method.
FAILED_FIT = ("collapsed run", "never left the prior")
MIN_SEEDS_TEXT = "fewer than 2 paired seeds: no interval"


def verdict(diff_mean: float, diff_lo: float, diff_hi: float, n: int, paper_gain: float = float("nan"),
            mde: float = float("nan"), collapsed: int = 0, at_prior: int = 0) -> str:
    """What one seed-paired comparison supports, in the fixed vocabulary :data:`VERDICTS`.

    Inputs are oriented so that positive means "b (WMA) is better" (MAE already sign-flipped):
    ``diff_mean`` and its 95% interval ``[diff_lo, diff_hi]`` over ``n`` paired seeds, the
    paper's gain ``g`` (NaN if the paper has no number), our minimum detectable effect ``mde`` at
    80% power (:func:`wma_study.stats.mde`), ``collapsed``, the number of runs (of either
    method) that predict a constant (:func:`is_collapsed`), and ``at_prior``, how many of those
    predict the label prior (:func:`stayed_at_prior`). The rule, first match wins:

    1. ``collapsed > 0`` → **"never left the prior"** when every one of them stayed at the prior
       (``at_prior >= collapsed``: the run learned nothing), else **"collapsed run"** (at least one
       moved and collapsed onto another constant): a constant predictor is a failed fit, not a
       measurement of the method; its difference is not reported as a gain or a loss.
    2. ``n < 2`` → **"inconclusive (fewer than 2 paired seeds: no interval)"**.
    3. ``0 < diff_lo`` or ``diff_hi < 0`` (the interval excludes 0): **"detected"** when the sign
       of ``diff_mean`` is the sign of ``g`` (or ``g`` is NaN or 0), else **"detected (opposite
       sign)"**.
    4. ``g > 0`` and ``diff_hi < g``, or ``g < 0`` and ``diff_lo > g`` (the interval contains 0
       but not the paper's gain, which lies beyond it): **"ruled out at the paper's size"**.
    5. Otherwise **"inconclusive"**, with the reason: ``"(our MDE exceeds the paper's gain)"``
       when ``mde > |g|``; ``"(consistent with 0 and with the paper's gain)"`` when ``mde <= |g|``;
       ``"(no paper number; our MDE is m)"`` when ``g`` is NaN.
    """
    if collapsed:
        return "never left the prior" if at_prior >= collapsed else "collapsed run"
    if n < 2 or diff_lo != diff_lo or diff_hi != diff_hi:
        return f"inconclusive ({MIN_SEEDS_TEXT})"
    g = paper_gain
    if diff_lo > 0 or diff_hi < 0:
        if g != g or g == 0 or (diff_mean > 0) == (g > 0):
            return "detected"
        return "detected (opposite sign)"
    if g == g and ((g > 0 and diff_hi < g) or (g < 0 and diff_lo > g)):
        return "ruled out at the paper's size"
    if g != g:
        return f"inconclusive (no paper number; our MDE is {mde:.3f})" if mde == mde else "inconclusive"
    if mde == mde and mde <= abs(g):
        return "inconclusive (consistent with 0 and with the paper's gain)"
    return "inconclusive (our MDE exceeds the paper's gain)"


def verdict_category(text: str) -> str:
    """The vocabulary entry a :func:`verdict` string starts with."""
    for v in sorted(VERDICTS, key=len, reverse=True):
        if text.startswith(v):
            return v
    raise ValueError(f"not a verdict of the fixed vocabulary {VERDICTS}: {text!r}")


# --------------------------------------------------------------------------- comparison


def _paper_values(dataset: str, table: int, method: str | None, metric: str) -> dict:
    if method is None:
        return {}
    from ..paper import load_paper_results

    p = load_paper_results()
    p = p[(p["table"] == table) & (p["dataset"] == dataset) & (p["method"] == method) & (p["metric"] == metric)]
    return dict(zip(p["test_case"], p["value"]))


def comparison(runs, dataset: str, *, a: dict | None = None, b: dict | None = None, paper_table: int = 1,
               metric: str | None = None, by: str = "dev") -> pd.DataFrame:
    """Method ``a`` vs method ``b`` on every test case of ``dataset``, over seeds, with the paper's numbers.

    Args:
        runs: a :func:`runs_frame` (or a store / its folder).
        a, b: config selections (``{"method": "baseline"}`` and ``{"method": "wma"}`` by default;
            ``b`` may fix ``alpha``, ``beta``, ``target``, ``lr``...). If a selection still matches
            several cells (e.g. a whole α × β grid), the one with the best mean headline metric on
            the ``by`` split (``"dev"``: clean, default; ``"test"``: the paper's way) is used; the
            chosen cells are in the columns ``a_config`` and ``b_config``.
        paper_table: 1 (baseline vs WMA) or 2 (min-OT vs WMA): where the paper's numbers come
            from, for the methods named in ``a["method"]`` and ``b["method"]`` (cells the paper
            does not print are NaN).
        metric: default: the dataset's headline metric (AUROC, F1 macro, AUROC, MAE).

    Returns one row per test case (``normal``, ``<m>_noise``..., ``<m>_missing``...) with
    ``test_case, metric, paper_a, paper_b, paper_gain, a_mean, a_lo, a_hi, b_mean, b_lo, b_hi,
    diff_mean, diff_lo, diff_hi, p_value, n_seeds, gain_in_noise, paper_gain_in_ci,
    ci_contains_zero, sd_diff, se_diff, half_width, mde, collapsed_a, collapsed_b, prior_a, prior_b,
    verdict, n_backbones, by_backbone, holds_on, tau2_backbone, p_backbone, p_holm, a_config,
    b_config``: ``se_diff`` is the standard error of the mean difference and ``sd_diff`` the
    standard deviation of the per-seed differences (with replicated backbones, the one that gives
    the same standard error over ``n_seeds``), ``half_width`` that of our interval, ``mde`` the
    minimum detectable effect at 80% power (:func:`wma_study.stats.mde`), ``collapsed_a/b`` the
    number of collapsed runs (:func:`is_collapsed`), ``prior_a/b`` how many of those never left
    the prior (:func:`stayed_at_prior`), ``verdict`` the reading of :func:`verdict`, and
    ``p_holm`` the Holm-corrected p-value over the perturbed test cases (the secondary endpoints;
    NaN on ``normal``, a primary endpoint: see :func:`endpoints`).

    Backbones: when the seeds are nested in independently pretrained backbones (the runs'
    ``backbone``), the interval is the gain averaged over the backbones with the pooled
    within-backbone variance (:func:`wma_study.stats.blocked_paired_test`), ``by_backbone`` gives
    each backbone's own interval and verdict category, ``holds_on`` how many of them reach the
    pooled verdict's category (``"2/2"``), ``tau2_backbone`` the between-backbone variance of the
    gain and ``p_backbone`` the F test of equal gains on every backbone (``n_backbones`` 0 and
    empty texts for runs that are not replicated).

    Pairing and signs: only seeds that both cells ran are used (``n_seeds``), for the means and for
    the difference, so ``diff_mean = b_mean - a_mean`` (or ``a_mean - b_mean`` for MAE): ``paper_gain``
    and ``diff_*`` are positive when b is better. Intervals are 95% Student-t over seeds;
    ``p_value`` is the paired t-test (:func:`wma_study.stats.paired_test`).

    The three flags (``False`` where undefined: no paper number, or fewer than 2 paired seeds):

    - ``gain_in_noise``: ``|paper_gain| <= h``, with ``h = (diff_hi - diff_lo) / 2`` the half-width
      of our 95% CI of the mean difference: a statement about *our* power (had we measured exactly
      the paper's gain, our CI would still contain 0: about 50% power at that size), never about
      the paper; the verdict and ``mde`` say it properly.
    - ``paper_gain_in_ci``: ``diff_lo <= paper_gain <= diff_hi``: our result is consistent with
      the paper's claimed effect.
    - ``ci_contains_zero``: ``diff_lo <= 0 <= diff_hi``: our own difference is not significant.
    """
    df = _as_runs(runs)
    a = {"method": "baseline"} if a is None else dict(a)
    b = {"method": "wma"} if b is None else dict(b)
    metric = metric or headline(dataset)
    sign = 1.0 if greater_is_better(metric) else -1.0
    per_case, cell_a, cell_b = _paired(df, dataset, a, b, metric, by)
    pa = _paper_values(dataset, paper_table, a.get("method"), metric)
    pb = _paper_values(dataset, paper_table, b.get("method"), metric)
    cases = test_case_order(list(per_case) + list(pa) + list(pb))
    rows = []
    for case in cases:
        xa, xb, ca, cb, qa, qb, blocks, fail = per_case.get(case, (np.array([]), np.array([]), 0, 0, 0, 0, [], {}))
        p_a, p_b = pa.get(case, float("nan")), pb.get(case, float("nan"))
        rows.append({"test_case": case, "metric": metric, "paper_a": p_a, "paper_b": p_b,
                     **_paired_row(xa, xb, ca, cb, sign, sign * (p_b - p_a), qa, qb, blocks, fail)})
    cols = ["test_case", "metric", "paper_a", "paper_b", "paper_gain", "a_mean", "a_lo", "a_hi", "b_mean", "b_lo",
            "b_hi", "diff_mean", "diff_lo", "diff_hi", "p_value", "n_seeds", "gain_in_noise", "paper_gain_in_ci",
            "ci_contains_zero", "sd_diff", "se_diff", "half_width", "mde", "collapsed_a", "collapsed_b", "prior_a",
            "prior_b", "verdict", "n_backbones", "by_backbone", "holds_on", "tau2_backbone", "p_backbone", "p_holm"]
    out = pd.DataFrame(rows, columns=cols)
    secondary = (out["test_case"] != "normal").to_numpy()
    out.loc[secondary, "p_holm"] = stats.holm(out.loc[secondary, "p_value"])
    out["p_holm"] = out["p_holm"].astype(float)
    out["a_config"], out["b_config"] = _cell_label(cell_a), _cell_label(cell_b)
    out["n_seeds"] = out["n_seeds"].astype(int)
    out["n_backbones"] = out["n_backbones"].astype(int)
    for c in ("gain_in_noise", "paper_gain_in_ci", "ci_contains_zero"):
        out[c] = out[c].astype(bool)
    for c in ("collapsed_a", "collapsed_b", "prior_a", "prior_b"):
        out[c] = out[c].astype(int)
    return out


def _failures(t: pd.DataFrame, seeds) -> tuple[int, int]:
    """Of ``seeds``, how many have a collapsed row in ``t`` (one method's test rows), and how many
    of those stayed at the prior on every collapsed row (frames without ``at_prior`` have none)."""
    if t.empty:
        return 0, 0
    dead = t["collapsed"].eq(True)  # NaN (a frame built without the column's values) is False
    prior = t["at_prior"].eq(True) if "at_prior" in t else pd.Series(False, index=t.index)
    g = pd.DataFrame({"seed": t["seed"], "dead": dead, "prior_or_live": prior | ~dead}).groupby("seed")
    any_dead = g["dead"].any().reindex(seeds).fillna(False).astype(bool)
    all_prior = g["prior_or_live"].all().reindex(seeds).fillna(False).astype(bool)
    return int(any_dead.sum()), int((any_dead & all_prior).sum())


def _paired(df: pd.DataFrame, dataset: str, a: dict, b: dict, metric: str, by: str):
    """Seed-matched values of the cells ``a`` and ``b`` select: ``({case: (xa, xb, ca, cb, qa, qb)}, cell_a, cell_b)``.

    ``xa[i]``, ``xb[i]``: the metric of a and b on the ``i``-th seed both ran (NaN pairs dropped);
    ``ca``, ``cb``: how many of those runs of a / b collapsed on that case (:func:`is_collapsed`);
    ``qa``, ``qb``: how many of those collapsed runs never left the prior (:func:`stayed_at_prior`);
    ``blocks``: the backbone of each of those seeds (:func:`_seed_blocks`); ``fail``:
    ``{backbone: ((ca, qa), (cb, qb))}``, the same counts per backbone.
    """
    sel_metric = headline(dataset)
    _one_data(df, dataset)
    df = df[df["dataset"] == dataset]

    def pick(sel):
        sub = _filter(df, sel)
        cell, _, _ = _best_cell(sub, by, sel_metric)
        if cell is None:  # no dev/test rows for selection: fall back to all rows that matched
            return sub[sub["split"] == "test"], None
        chosen = _filter(sub, cell)
        return chosen[chosen["split"] == "test"], cell

    ta, cell_a = pick(a)
    tb, cell_b = pick(b)
    ta = ta[ta["metric"] == metric]
    tb = tb[tb["metric"] == metric]
    out = {}
    for case in test_case_order(list(ta["test_case"]) + list(tb["test_case"])):
        sa, sb = ta[ta["test_case"] == case], tb[tb["test_case"] == case]
        va, vb = sa.groupby("seed")["value"].mean(), sb.groupby("seed")["value"].mean()
        seeds = sorted(set(va.index) & set(vb.index))
        xa = va.reindex(seeds).to_numpy(dtype=float)
        xb = vb.reindex(seeds).to_numpy(dtype=float)
        ok = ~(np.isnan(xa) | np.isnan(xb))
        kept = [s for s, k in zip(seeds, ok) if k]
        blocks, fail = _blocks_and_failures(sa, sb, kept)
        (ca, qa), (cb, qb) = _failures(sa, kept), _failures(sb, kept)
        out[case] = (xa[ok], xb[ok], ca, cb, qa, qb, blocks, fail)
    return out, cell_a, cell_b


def _blocks_and_failures(sa: pd.DataFrame, sb: pd.DataFrame, seeds) -> tuple[list, dict]:
    """The backbone of each of ``seeds`` (:func:`_seed_blocks`) and, per backbone, the
    :func:`_failures` of a's and of b's runs on its seeds: ``(blocks, {backbone: ((ca, qa), (cb, qb))})``."""
    blocks = _seed_blocks(sa, sb, seeds)
    fail = {}
    for k in dict.fromkeys(blocks):
        mine = [s for s, g in zip(seeds, blocks) if g == k]
        fail[k] = (_failures(sa, mine), _failures(sb, mine))
    return blocks, fail


def _seed_blocks(sa: pd.DataFrame, sb: pd.DataFrame, seeds) -> list:
    """The backbone each paired seed fine-tuned from (``""``: not replicated). A seed's backbone
    is read from either method's runs (one side may be random init, which has none); two methods
    that give one seed different backbones are not paired (ValueError)."""
    def of(t):
        if "backbone" not in t:
            return {}
        return {s: set(v) - {""} for s, v in t.groupby("seed")["backbone"].agg(lambda x: set(x.fillna(""))).items()}

    fa, fb = of(sa), of(sb)
    out = []
    for s in seeds:
        names = fa.get(s, set()) | fb.get(s, set())
        if len(names) > 1:
            raise ValueError(f"seed {s} ran on backbones {sorted(names)}: the two methods are not paired on one backbone")
        out.append(next(iter(names)) if names else "")
    return out


def _oriented(t: dict, sign: float) -> tuple[float, float, float]:
    """``(mean, lo, hi)`` of a test's difference b - a, sign-flipped for an error (MAE)."""
    if sign > 0:
        return t["diff_mean"], t["diff_lo"], t["diff_hi"]
    return -t["diff_mean"], -t["diff_hi"], -t["diff_lo"]


def _backbone_verdicts(blocks: dict, sign: float, gain: float, fail: dict | None) -> list[dict]:
    """One row per replicated backbone (``""``, not replicated, has none): ``backbone, n, mean,
    lo, hi, verdict``, from that backbone's own paired test (``blocks``, as
    :func:`wma_study.stats.blocked_paired_test` returns them; oriented, positive = b better),
    with its own collapsed counts from ``fail``."""
    rows = []
    for k, t in blocks.items():
        if k == "":
            continue
        m, lo, hi = _oriented(t, sign)
        n = t["n"]
        (ca, qa), (cb, qb) = (fail or {}).get(k, ((0, 0), (0, 0)))
        rows.append({"backbone": k, "n": n, "mean": m, "lo": lo, "hi": hi,
                     "verdict": verdict(m, lo, hi, n, gain, stats.mde(t["sd"], n), ca + cb, qa + qb)})
    return rows


def _backbone_text(rows: list[dict]) -> str:
    """``"b0: +0.012 [-0.010, +0.034] inconclusive; b1: ..."``."""
    def one(r):
        ci = f" [{r['lo']:+.3f}, {r['hi']:+.3f}]" if r["hi"] == r["hi"] else ""
        return f"{r['backbone']}: {r['mean']:+.3f}{ci} {verdict_category(r['verdict'])}"

    return "; ".join(one(r) for r in rows)


def _paired_row(xa, xb, ca: int, cb: int, sign: float, gain: float, qa: int = 0, qb: int = 0, blocks=None,
                fail: dict | None = None) -> dict:
    """The statistics of one seed-paired comparison (positive = b better), with its :func:`verdict`
    (``ca``, ``cb`` collapsed runs of a / b, ``qa``, ``qb`` of them at the prior).

    ``blocks``: the backbone of each seed (:func:`wma_study.stats.blocked_paired_test`; ``None``
    or all ``""``: one block, the plain paired t-test). With two or more backbones the interval is
    the gain averaged over them, with the pooled within-backbone variance, and the row also gives
    each backbone's own interval and verdict (``by_backbone``), how many backbones reach the
    pooled verdict's category (``holds_on``, e.g. ``"2/2"``), the between-backbone variance of
    the gain (``tau2_backbone``) and the F test of equal backbone gains (``p_backbone``)."""
    a_m, a_lo, a_hi = stats.mean_ci(xa)
    b_m, b_lo, b_hi = stats.mean_ci(xb)
    blocks = [""] * len(np.asarray(xa).reshape(-1)) if blocks is None else list(blocks)
    t = stats.blocked_paired_test(xa, xb, blocks)
    d_m, d_lo, d_hi = _oriented(t, sign)
    n = t["n"]
    se = t.get("se", float("nan"))
    # the standard deviation a single-block design with the same standard error would have
    sd = float(se * np.sqrt(n)) if n >= 2 and se == se else float("nan")
    mde = stats.mde(sd, n)
    has_ci = d_lo == d_lo and d_hi == d_hi
    v = verdict(d_m, d_lo, d_hi, n, gain, mde, ca + cb, qa + qb)
    per = _backbone_verdicts(t["blocks"], sign, gain, fail)
    k = len(per)
    holds = sum(verdict_category(r["verdict"]) == verdict_category(v) for r in per)
    return {
        "paper_gain": gain, "a_mean": a_m, "a_lo": a_lo, "a_hi": a_hi, "b_mean": b_m, "b_lo": b_lo, "b_hi": b_hi,
        "diff_mean": d_m, "diff_lo": d_lo, "diff_hi": d_hi, "p_value": t["p_value"], "n_seeds": n,
        "gain_in_noise": bool(has_ci and gain == gain and abs(gain) <= (d_hi - d_lo) / 2),
        "paper_gain_in_ci": bool(has_ci and gain == gain and d_lo <= gain <= d_hi),
        "ci_contains_zero": bool(has_ci and d_lo <= 0 <= d_hi),
        "sd_diff": sd, "half_width": (d_hi - d_lo) / 2 if has_ci else float("nan"), "mde": mde,
        "collapsed_a": ca, "collapsed_b": cb, "prior_a": qa, "prior_b": qb, "se_diff": se,
        "verdict": v, "n_backbones": k, "by_backbone": _backbone_text(per),
        "holds_on": f"{holds}/{k}" if k else "", "tau2_backbone": t.get("tau2", float("nan")),
        "p_backbone": t.get("p_between", float("nan")),
    }


ENDPOINTS = ("normal", "noise", "missing")
#: The primary endpoints, declared before any result (the same text in every dataset chapter).
PRIMARY_ENDPOINTS_TEXT = """\
**Primary endpoints** (fixed before any run was looked at). For each dataset and each comparison
(WMA against the baseline, Table 1; WMA against minimise-OT, Table 2) there are three:

1. **normal**: the headline metric on the unperturbed test set;
2. **noise**: the mean of the headline metric over the noise test cases (one per modality);
3. **missing**: the mean over the missing-modality test cases.

Each is computed per training seed and compared seed by seed (the same seed trains both methods,
on the same data order and the same perturbed test inputs). The gain is oriented so that positive
means WMA is better (for MAE, lower is better, so the gain is the baseline's MAE minus WMA's). We
report its mean with a 95% Student-t interval, the paired t-test's p-value, our minimum
detectable effect at 80% power, and one verdict from a fixed vocabulary:

- *detected*: our interval excludes 0 in the paper's direction (*detected (opposite sign)*:
  it excludes 0 in the other direction);
- *ruled out at the paper's size*: our interval contains 0 and ends before the paper's gain;
- *inconclusive*: neither, with the reason (usually: our MDE exceeds the paper's gain);
- *collapsed run*: a run predicts the same output for every test sample (a failed fit, not a
  measurement of the method); *never left the prior*: each such run predicts the label prior (the
  training split's label rate) for every sample, so it learned nothing from the inputs.

Every single test case is a **secondary** endpoint: its p-values are Holm-corrected over the
dataset's perturbed test cases. One effect per primary endpoint is pooled over the four datasets
(relative gains, random-effects) on the summary page.
"""


def endpoints(runs, dataset: str, *, a: dict | None = None, b: dict | None = None, paper_table: int = 1,
              metric: str | None = None, by: str = "dev") -> pd.DataFrame:
    """The three primary endpoints of one comparison (:data:`ENDPOINTS`), seed-paired, with verdicts.

    Per seed ``s`` and method: ``normal(s)``; ``noise(s)`` = the mean over the ``<m>_noise`` test
    cases; ``missing(s)`` = the mean over the ``<m>_missing`` cases (a seed enters an endpoint only
    if it has every case of it, for both methods). The paper's gain of an endpoint is the same mean
    of its per-case gains (cases the paper prints; MOSEI's swapped text/video-missing columns do
    not change the missing mean). Selection of the cells as in :func:`comparison`.

    Returns one row per endpoint: ``endpoint, test_cases, metric, paper_gain, paper_rel_gain``
    (the paper's gain relative to its a), ``a_mean ... b_hi, diff_mean, diff_lo, diff_hi, p_value,
    n_seeds, sd_diff, se_diff, half_width, mde, collapsed_a, collapsed_b, prior_a, prior_b, verdict,
    n_backbones, by_backbone, holds_on, tau2_backbone, p_backbone, rel_gain, rel_var`` (our mean
    gain relative to a's mean, and its sampling variance ``(se_diff / a_mean)²``, for
    :func:`pooled`; with one backbone ``se_diff = sd_diff / sqrt(n)``).
    """
    df = _as_runs(runs)
    a = {"method": "baseline"} if a is None else dict(a)
    b = {"method": "wma"} if b is None else dict(b)
    metric = metric or headline(dataset)
    sign = 1.0 if greater_is_better(metric) else -1.0
    _one_data(df, dataset)
    sub = df[df["dataset"] == dataset]
    pa = _paper_values(dataset, paper_table, a.get("method"), metric)
    pb = _paper_values(dataset, paper_table, b.get("method"), metric)

    def pick(sel):
        s = _filter(sub, sel)
        cell, _, _ = _best_cell(s, by, headline(dataset))
        t = _filter(s, cell) if cell is not None else s
        return t[(t["split"] == "test") & (t["metric"] == metric)]

    ta, tb = pick(a), pick(b)
    all_cases = test_case_order(list(ta["test_case"]) + list(tb["test_case"]))
    rows = []
    for ep in ENDPOINTS:
        cases = ["normal"] if ep == "normal" else [c for c in all_cases if c.endswith("_" + ep)]
        wa = ta[ta["test_case"].isin(cases)].pivot_table(index="seed", columns="test_case", values="value", aggfunc="mean")
        wb = tb[tb["test_case"].isin(cases)].pivot_table(index="seed", columns="test_case", values="value", aggfunc="mean")
        wa, wb = wa.reindex(columns=cases), wb.reindex(columns=cases)
        seeds = sorted(set(wa.dropna().index) & set(wb.dropna().index)) if cases else []
        xa = wa.reindex(seeds).mean(axis=1).to_numpy(dtype=float)
        xb = wb.reindex(seeds).mean(axis=1).to_numpy(dtype=float)
        sa, sb = ta[ta["test_case"].isin(cases)], tb[tb["test_case"].isin(cases)]
        ca, qa = _failures(sa, seeds)
        cb, qb = _failures(sb, seeds)
        blocks, fail = _blocks_and_failures(sa, sb, seeds)
        gains = [sign * (pb[c] - pa[c]) for c in cases if c in pa and c in pb]
        g = float(np.mean(gains)) if gains and len(gains) == len(cases) else float("nan")
        pa_mean = float(np.mean([pa[c] for c in cases])) if all(c in pa for c in cases) and cases else float("nan")
        row = {"endpoint": ep, "test_cases": ", ".join(cases), "metric": metric,
               "paper_rel_gain": g / pa_mean if pa_mean == pa_mean and pa_mean != 0 else float("nan"),
               **_paired_row(xa, xb, ca, cb, sign, g, qa, qb, blocks, fail)}
        am, se = row["a_mean"], row["se_diff"]
        row["rel_gain"] = row["diff_mean"] / am if am == am and am != 0 else float("nan")
        row["rel_var"] = (se / am) ** 2 if se == se and am == am and am != 0 else float("nan")
        rows.append(row)
    out = pd.DataFrame(rows)
    out["n_seeds"] = out["n_seeds"].astype(int)
    return out


def pooled(frames: dict, *, relative: bool = True, method: str = "random") -> pd.DataFrame:
    """One effect per primary endpoint pooled over datasets (:func:`wma_study.stats.pool_effects`).

    ``frames``: ``{dataset: endpoints(...)}``. ``relative=True`` pools the relative gains
    (``rel_gain``, variance ``rel_var``: the headline metrics differ in scale, and the paper's
    averages 0.9% / 2.5% / 2.1% are relative gains averaged over datasets); ``False`` pools the raw
    gains (variance ``se_diff²``, which is ``sd_diff² / n`` with one backbone). Datasets whose endpoint collapsed or has fewer than 2 seeds
    are left out (``k`` counts the rest; ``left_out`` names them). The paper's value is the plain
    mean of its per-dataset (relative) gains, as in its abstract.
    """
    rows = []
    for ep in ENDPOINTS:
        eff, var, paper, used, left = [], [], [], [], []
        for ds, f in frames.items():
            r = f[f["endpoint"] == ep]
            if r.empty:
                continue
            r = r.iloc[0]
            paper.append(r["paper_rel_gain"] if relative else r["paper_gain"])
            if r["collapsed_a"] + r["collapsed_b"] > 0 or r["n_seeds"] < 2:
                left.append(ds)
                continue
            eff.append(r["rel_gain"] if relative else r["diff_mean"])
            se = r["se_diff"] if "se_diff" in r.index else r["sd_diff"] / np.sqrt(r["n_seeds"])  # frames from before se_diff
            var.append(r["rel_var"] if relative else se ** 2)
            used.append(ds)
        p = stats.pool_effects(eff, var, method=method)
        paper = [x for x in paper if x == x]
        g = float(np.mean(paper)) if paper else float("nan")
        has = p["k"] >= 1 and p["lo"] == p["lo"]
        # MDE of a normal test at 80% power: (z_0.975 + z_0.8) · se, se from the pooled interval
        mde = (1.959963984540054 + 0.8416212335729143) * (p["hi"] - p["lo"]) / (2 * 1.959963984540054) if has else float("nan")
        v = verdict(p["effect"], p["lo"], p["hi"], 2, g, mde, 0) if has else f"inconclusive ({MIN_SEEDS_TEXT})"
        rows.append({"endpoint": ep, "effect": p["effect"], "lo": p["lo"], "hi": p["hi"], "k": p["k"], "tau2": p["tau2"],
                     "mde": mde, "paper": g, "datasets": ", ".join(used), "left_out": ", ".join(left), "verdict": v})
    return pd.DataFrame(rows)
