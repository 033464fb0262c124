"""From the results store to the book's tables: runs, comparisons with CIs, model selection, grids.

Everything here reads the records written by :func:`wma_core.train.fit` (directly or through
:mod:`wma_core.sweep`):

- :func:`runs_frame`: one row per (run, split, test case, metric);
- :func:`comparison`: baseline vs WMA (or min-OT vs WMA) per test case, mean ± 95% CI over
  seeds, the seed-paired difference, its p-value (Holm-corrected on the secondary cases), our
  minimum detectable effect and the verdict, next to the paper's Table 1/2 numbers;
- :func:`endpoints`, :func:`pooled`: the three primary endpoints (normal, mean over noise cases,
  mean over missing cases; per seed, paired) with :func:`verdict` from a fixed vocabulary, and one
  effect per endpoint pooled over the datasets;
- :func:`select`: model selection, the paper's way (lr, α, β chosen on the test split) and the
  clean way (chosen on the dev split only);
- :func:`grid`: the α × β table of one test case (β-curves, heatmaps); :func:`grid_gains`: every
  cell against all baseline seeds; :func:`selection_table`: the best cell beside the selection null;
- :func:`is_collapsed`: a run that predicts a constant (reported as "collapsed run", never as a loss).

Signs: every "gain" and "diff" is oriented so that **positive means b is better** (for MAE,
lower is better, so the gain is ``a - b``).
"""

from __future__ import annotations

import math
import numbers
from pathlib import Path

import numpy as np
import pandas as pd

from . import stats
from .metrics import GREATER_IS_BETTER
from .results import ResultsStore

CONFIG_COLUMNS = ["dataset", "method", "alpha", "beta", "target", "lr", "seed", "epochs", "batch_size", "model", "data"]
RUN_COLUMNS = ["key"] + CONFIG_COLUMNS + ["split", "test_case", "metric", "value", "collapsed", "feasible"]
# a configuration up to its seed (what a "cell" of a sweep is)
CELL = ["dataset", "method", "alpha", "beta", "target", "lr", "epochs", "batch_size", "model", "data"]
HEADLINE = {"hateful_memes": "auroc", "mmimdb": "f1_macro", "ur_funny": "auroc", "mosei": "mae"}
MODALITY_ORDER = ["text", "image", "video", "audio"]


# --------------------------------------------------------------------------- runs


def _matches(value, wanted) -> bool:
    if isinstance(wanted, (list, tuple, set, frozenset)):
        return any(_matches(value, w) for w in wanted)
    if value is None or wanted is None:
        return value is None and wanted is None
    if isinstance(wanted, (bool, np.bool_)) or isinstance(value, (bool, np.bool_)):
        return value == wanted
    if isinstance(wanted, numbers.Real) and isinstance(value, numbers.Real):
        return math.isclose(float(value), float(wanted), rel_tol=1e-9, abs_tol=1e-12)
    return value == wanted


#: the headline of a constant predictor: AUROC of a constant score, macro-F1 of predicting no genre
CONSTANT_HEADLINE = {"auroc": 0.5, "f1_macro": 0.0}


def is_collapsed(record: dict, test_case: str = "normal") -> bool:
    """Whether a run predicts a constant on ``test_case`` (a *collapsed run*).

    True when the record's prediction summary (``record["predictions"][test_case]``, written at
    evaluation by :func:`wma_core.metrics.prediction_summary`) has one distinct prediction for the
    whole test set, or when its headline metric equals the constant predictor's exactly
    (:data:`CONSTANT_HEADLINE`: AUROC 0.5, macro-F1 0; an MAE has no label-free constant value,
    so regression runs rely on the prediction summary).
    """
    summary = (record.get("predictions") or {}).get(test_case)
    if summary is not None and int(summary.get("distinct", 2)) <= 1:
        return True
    metric = record.get("headline_metric")
    value = (record.get("metrics") or {}).get(test_case, {}).get(metric)
    const = CONSTANT_HEADLINE.get(metric)
    return const is not None and value is not None and value == value and abs(float(value) - const) < 1e-12


def records_frame(records: list, store_or_dir) -> pd.DataFrame:
    """:func:`runs_frame` restricted to the runs of ``records`` (what a chapter just trained or reused)."""
    runs = runs_frame(store_or_dir)
    return runs[runs["key"].isin({r["key"] for r in records})]


def target_reachable(rec: dict) -> bool:
    """False for a WMA run (``init`` target) whose target β·D0 exceeds, on some modality pair, the
    largest OT distance the cosine cost allows (:data:`wma_core.losses.D_MAX` = 2); True otherwise.

    Read from the record's ``infeasible`` flag, or recomputed from its config and D0 for records
    written before the flag existed.
    """
    if "infeasible" in rec:
        return not rec["infeasible"]
    from .losses import WMAConfig, target_feasible

    cfg = rec.get("config", {})
    wma = WMAConfig(alpha=float(cfg.get("alpha", 0.0)), beta=float(cfg.get("beta", 1.0)), target=cfg.get("target", "init"))
    return all(target_feasible(wma, rec.get("d0")).values())


def runs_frame(store_or_dir, *, data_dir=None, **where) -> pd.DataFrame:
    """All runs of a results store as a long table.

    One row per (run, split, test case, metric); columns :data:`RUN_COLUMNS`: ``key``, the config
    fields ``dataset, method, alpha, beta, target, lr, seed, epochs, batch_size, model, data``,
    ``split`` (``"test"``: every test case of the best checkpoint; ``"dev"``: the dev split,
    unperturbed, best checkpoint, with ``test_case="normal"``), ``test_case``, ``metric``, ``value``,
    ``collapsed`` (:func:`is_collapsed` on that test case; always False on dev), ``feasible``
    (:func:`target_reachable`: False when WMA's target β·D0 cannot be reached).

    Args:
        store_or_dir: a :class:`ResultsStore` or its folder.
        data_dir: keep only runs trained on this prepared folder (their config's ``data`` equals
            :func:`wma_core.train.manifest_digest` of it), so smoke, default and paper runs never mix.
        **where: keep only runs whose config field equals the value (floats compared with a
            relative tolerance of 1e-9; a list/tuple/set means "any of").
    """
    store = store_or_dir if isinstance(store_or_dir, ResultsStore) else ResultsStore(store_or_dir)
    if data_dir is not None:
        from .train import manifest_digest

        where = {**where, "data": manifest_digest(data_dir)}
    rows = []
    for rec in store.records():
        cfg = rec.get("config", {})
        if any(k not in cfg or not _matches(cfg[k], v) for k, v in where.items()):
            continue
        base = {"key": rec["key"], **{c: cfg.get(c) for c in CONFIG_COLUMNS}, "feasible": target_reachable(rec)}
        for case, metrics in (rec.get("metrics") or {}).items():
            dead = is_collapsed(rec, case)
            for metric, value in metrics.items():
                rows.append({**base, "split": "test", "test_case": case, "metric": metric, "value": value, "collapsed": dead})
        for metric, value in (rec.get("dev_metrics") or {}).items():
            rows.append({**base, "split": "dev", "test_case": "normal", "metric": metric, "value": value, "collapsed": False})
    df = pd.DataFrame(rows, columns=RUN_COLUMNS)
    df["collapsed"] = df["collapsed"].astype(bool)
    df["feasible"] = df["feasible"].astype(bool)
    for c in ("alpha", "beta", "lr", "value"):
        df[c] = df[c].astype(float)
    return df


def _as_runs(runs) -> pd.DataFrame:
    if isinstance(runs, pd.DataFrame):
        return runs
    if isinstance(runs, (ResultsStore, str, Path)):
        return runs_frame(runs)
    raise TypeError(f"runs must be a runs_frame DataFrame, a ResultsStore or its folder; got {type(runs).__name__}")


def _filter(df: pd.DataFrame, sel: dict) -> pd.DataFrame:
    mask = np.ones(len(df), dtype=bool)
    for k, v in sel.items():
        if k not in df.columns:
            raise KeyError(f"cannot select on {k!r}: not a column of the runs frame")
        mask &= _column_matches(df[k], v)
    return df[mask]


def _column_matches(col: pd.Series, wanted) -> np.ndarray:
    if isinstance(wanted, (list, tuple, set, frozenset)):
        out = np.zeros(len(col), dtype=bool)
        for w in wanted:
            out |= _column_matches(col, w)
        return out
    num = isinstance(wanted, (int, float, np.integer, np.floating)) and not isinstance(wanted, (bool, np.bool_))
    if num and pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
        return np.isclose(col.to_numpy(dtype=float), float(wanted), rtol=1e-9, atol=1e-12)
    return np.array([_matches(x, wanted) for x in col], dtype=bool)


def _one_data(df: pd.DataFrame, dataset: str) -> None:
    """Refuse to mix runs on different prepared data (e.g. the smoke and the default twin)."""
    digests = sorted(set(df.loc[df["dataset"] == dataset, "data"].dropna()))
    if len(digests) > 1:
        raise ValueError(
            f"{dataset} runs on {len(digests)} different prepared data sets ({', '.join(digests)}): "
            "select one with runs_frame(store, data_dir=...) or runs_frame(store, data=...)"
        )


def headline(dataset: str) -> str:
    if dataset not in HEADLINE:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {sorted(HEADLINE)}")
    return HEADLINE[dataset]


def greater_is_better(metric: str) -> bool:
    return GREATER_IS_BETTER.get(metric, metric != "mae")


def test_case_order(cases) -> list[str]:
    """``normal``, then ``<m>_noise`` for each modality, then ``<m>_missing`` (text, image, video, audio)."""
    cases = list(dict.fromkeys(cases))

    def rank(c):
        if c == "normal":
            return (0, 0, c)
        m, _, kind = c.rpartition("_")
        group = {"noise": 1, "missing": 2}.get(kind, 3)
        mi = MODALITY_ORDER.index(m) if m in MODALITY_ORDER else len(MODALITY_ORDER)
        return (group, mi, c)

    return sorted(cases, key=rank)


def format_ci(mean: float, lo: float, hi: float, digits: int = 3) -> str:
    """``"0.712 ± 0.014"`` (half-width of the interval); ``"0.712"`` when there is no interval."""
    if mean != mean:
        return "–"
    if lo != lo or hi != hi:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {(hi - lo) / 2:.{digits}f}"


# --------------------------------------------------------------------------- selection


def _cell_scores(df: pd.DataFrame, split: str, metric: str) -> pd.DataFrame:
    """Mean over seeds of ``metric`` on ``split``/normal, one row per cell (config up to its seed)."""
    sub = df[(df["split"] == split) & (df["test_case"] == "normal") & (df["metric"] == metric)]
    if sub.empty:
        return pd.DataFrame(columns=CELL + ["score", "n"])
    g = sub.groupby(CELL, sort=True, dropna=False)["value"]
    out = g.mean().rename("score").to_frame()
    out["n"] = g.count()
    return out.reset_index()


def _best_cell(df: pd.DataFrame, by: str, metric: str) -> tuple[dict | None, float, int]:
    """The cell with the best mean ``metric`` on the ``by`` split; ties → the first in sorted order."""
    split = {"dev": "dev", "test": "test"}.get(by)
    if split is None:
        raise ValueError(f"by must be 'dev' (clean) or 'test' (the paper's way), got {by!r}")
    scores = _cell_scores(df, split, metric).dropna(subset=["score"])
    if scores.empty:
        return None, float("nan"), 0
    vals = scores["score"].to_numpy()
    i = int(np.argmax(vals) if greater_is_better(metric) else np.argmin(vals))
    row = scores.iloc[i]
    return {c: row[c] for c in CELL}, float(row["score"]), len(scores)


def _cell_label(cell: dict | None) -> str:
    if cell is None:
        return ""
    s = f"{cell['method']} lr={cell['lr']:g}"
    if cell["method"] != "baseline":
        s += f" α={cell['alpha']:g} β={cell['beta']:g} target={cell['target']}"
    return s


def select(runs, *, by: str = "dev", dataset: str | None = None, methods=("wma",), metric: str | None = None) -> pd.DataFrame:
    """Model selection per dataset and method, then the chosen configuration's test results.

    Among the cells (runs up to their seed: lr, α, β, target, ... of one method) the best by the
    mean over seeds of the dataset's headline metric (unperturbed) is chosen on

    - ``by="test"``: the test split — the paper's way (lr, α and β picked per dataset by the
      number that is then reported; optimistic, since the choice sees the test data);
    - ``by="dev"``: the dev split only — the clean way (the test split is looked at once).

    Returns one row per (dataset, method, test case, metric): ``dataset, method, by, lr, alpha,
    beta, target, selected_on`` (the selection score), ``n_candidates``, ``test_case, metric,
    mean, lo, hi, n`` (test metrics of the chosen cell, mean ± 95% CI over seeds).
    """
    df = _as_runs(runs)
    datasets = [dataset] if dataset is not None else list(dict.fromkeys(df["dataset"]))
    methods = [methods] if isinstance(methods, str) else list(methods)
    rows = []
    for ds in datasets:
        m = metric or headline(ds)
        _one_data(df, ds)
        for meth in methods:
            sub = df[(df["dataset"] == ds) & (df["method"] == meth)]
            cell, score, n_cand = _best_cell(sub, by, m)
            if cell is None:
                continue
            chosen = _filter(sub, cell)
            test = chosen[chosen["split"] == "test"]
            summ = stats.summarize(test, ["test_case", "metric"])
            order = {c: i for i, c in enumerate(test_case_order(summ["test_case"]))}
            summ = summ.sort_values("test_case", key=lambda s: s.map(order), kind="stable")
            for r in summ.itertuples(index=False):
                rows.append({
                    "dataset": ds, "method": meth, "by": by, "lr": cell["lr"], "alpha": cell["alpha"],
                    "beta": cell["beta"], "target": cell["target"], "selected_on": score, "n_candidates": n_cand,
                    "test_case": r.test_case, "metric": r.metric, "mean": r.mean, "lo": r.lo, "hi": r.hi, "n": r.n,
                })
    cols = ["dataset", "method", "by", "lr", "alpha", "beta", "target", "selected_on", "n_candidates",
            "test_case", "metric", "mean", "lo", "hi", "n"]
    return pd.DataFrame(rows, columns=cols)


# --------------------------------------------------------------------------- verdicts

#: The fixed vocabulary of verdicts (:func:`verdict`); a verdict string starts with one of these.
VERDICTS = ("detected", "detected (opposite sign)", "ruled out at the paper's size", "inconclusive", "collapsed run")
MIN_SEEDS_TEXT = "fewer than 2 paired seeds: no interval"


def verdict(diff_mean: float, diff_lo: float, diff_hi: float, n: int, paper_gain: float = float("nan"),
            mde: float = float("nan"), collapsed: int = 0) -> str:
    """What one seed-paired comparison supports, in the fixed vocabulary :data:`VERDICTS`.

    Inputs are oriented so that positive means "b (WMA) is better" (MAE already sign-flipped):
    ``diff_mean`` and its 95% interval ``[diff_lo, diff_hi]`` over ``n`` paired seeds, the
    paper's gain ``g`` (NaN if the paper has no number), our minimum detectable effect ``mde`` at
    80% power (:func:`wma_core.stats.mde`) and ``collapsed``, the number of runs (of either
    method) that predict a constant (:func:`is_collapsed`). The rule, first match wins:

    1. ``collapsed > 0`` → **"collapsed run"**: a constant predictor is a failed fit, not a
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
        return "collapsed run"
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
    from .paper import load_paper_results

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
    ci_contains_zero, sd_diff, half_width, mde, collapsed_a, collapsed_b, verdict, p_holm,
    a_config, b_config``: ``sd_diff`` is the standard deviation of the per-seed differences,
    ``half_width`` that of our interval, ``mde`` the minimum detectable effect at 80% power
    (:func:`wma_core.stats.mde`), ``collapsed_a/b`` the number of collapsed runs
    (:func:`is_collapsed`), ``verdict`` the reading of :func:`verdict`, and ``p_holm`` the
    Holm-corrected p-value over the perturbed test cases (the secondary endpoints; NaN on
    ``normal``, a primary endpoint: see :func:`endpoints`).

    Pairing and signs: only seeds that both cells ran are used (``n_seeds``), for the means and for
    the difference, so ``diff_mean = b_mean - a_mean`` (or ``a_mean - b_mean`` for MAE): ``paper_gain``
    and ``diff_*`` are positive when b is better. Intervals are 95% Student-t over seeds;
    ``p_value`` is the paired t-test (:func:`wma_core.stats.paired_test`).

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
        xa, xb, ca, cb = per_case.get(case, (np.array([]), np.array([]), 0, 0))
        p_a, p_b = pa.get(case, float("nan")), pb.get(case, float("nan"))
        rows.append({"test_case": case, "metric": metric, "paper_a": p_a, "paper_b": p_b,
                     **_paired_row(xa, xb, ca, cb, sign, sign * (p_b - p_a))})
    cols = ["test_case", "metric", "paper_a", "paper_b", "paper_gain", "a_mean", "a_lo", "a_hi", "b_mean", "b_lo",
            "b_hi", "diff_mean", "diff_lo", "diff_hi", "p_value", "n_seeds", "gain_in_noise", "paper_gain_in_ci",
            "ci_contains_zero", "sd_diff", "half_width", "mde", "collapsed_a", "collapsed_b", "verdict", "p_holm"]
    out = pd.DataFrame(rows, columns=cols)
    secondary = (out["test_case"] != "normal").to_numpy()
    out.loc[secondary, "p_holm"] = stats.holm(out.loc[secondary, "p_value"])
    out["p_holm"] = out["p_holm"].astype(float)
    out["a_config"], out["b_config"] = _cell_label(cell_a), _cell_label(cell_b)
    out["n_seeds"] = out["n_seeds"].astype(int)
    for c in ("gain_in_noise", "paper_gain_in_ci", "ci_contains_zero"):
        out[c] = out[c].astype(bool)
    for c in ("collapsed_a", "collapsed_b"):
        out[c] = out[c].astype(int)
    return out


def _paired(df: pd.DataFrame, dataset: str, a: dict, b: dict, metric: str, by: str):
    """Seed-matched values of the cells ``a`` and ``b`` select: ``({case: (xa, xb, ca, cb)}, cell_a, cell_b)``.

    ``xa[i]``, ``xb[i]``: the metric of a and b on the ``i``-th seed both ran (NaN pairs dropped);
    ``ca``, ``cb``: how many of those runs of a / b collapsed on that case (:func:`is_collapsed`).
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
        ga, gb = ta[ta["test_case"] == case].groupby("seed"), tb[tb["test_case"] == case].groupby("seed")
        va, vb = ga["value"].mean(), gb["value"].mean()
        da, db = ga["collapsed"].any(), gb["collapsed"].any()
        seeds = sorted(set(va.index) & set(vb.index))
        xa = va.reindex(seeds).to_numpy(dtype=float)
        xb = vb.reindex(seeds).to_numpy(dtype=float)
        ok = ~(np.isnan(xa) | np.isnan(xb))
        kept = [s for s, k in zip(seeds, ok) if k]
        out[case] = (xa[ok], xb[ok], int(da.reindex(kept).fillna(False).sum()), int(db.reindex(kept).fillna(False).sum()))
    return out, cell_a, cell_b


def _paired_row(xa, xb, ca: int, cb: int, sign: float, gain: float) -> dict:
    """The statistics of one seed-paired comparison (positive = b better), with its :func:`verdict`."""
    a_m, a_lo, a_hi = stats.mean_ci(xa)
    b_m, b_lo, b_hi = stats.mean_ci(xb)
    t = stats.paired_test(xa, xb)
    if sign > 0:
        d_m, d_lo, d_hi = t["diff_mean"], t["diff_lo"], t["diff_hi"]
    else:
        d_m, d_lo, d_hi = -t["diff_mean"], -t["diff_hi"], -t["diff_lo"]
    n = t["n"]
    sd = float(np.std(np.asarray(xb) - np.asarray(xa), ddof=1)) if n >= 2 else float("nan")
    mde = stats.mde(sd, n)
    has_ci = d_lo == d_lo and d_hi == d_hi
    return {
        "paper_gain": gain, "a_mean": a_m, "a_lo": a_lo, "a_hi": a_hi, "b_mean": b_m, "b_lo": b_lo, "b_hi": b_hi,
        "diff_mean": d_m, "diff_lo": d_lo, "diff_hi": d_hi, "p_value": t["p_value"], "n_seeds": n,
        "gain_in_noise": bool(has_ci and gain == gain and abs(gain) <= (d_hi - d_lo) / 2),
        "paper_gain_in_ci": bool(has_ci and gain == gain and d_lo <= gain <= d_hi),
        "ci_contains_zero": bool(has_ci and d_lo <= 0 <= d_hi),
        "sd_diff": sd, "half_width": (d_hi - d_lo) / 2 if has_ci else float("nan"), "mde": mde,
        "collapsed_a": ca, "collapsed_b": cb,
        "verdict": verdict(d_m, d_lo, d_hi, n, gain, mde, ca + cb),
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
  measurement of the method).

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
    n_seeds, sd_diff, half_width, mde, collapsed_a, collapsed_b, verdict, rel_gain, rel_var``
    (our mean gain relative to a's mean, and its sampling variance ``(sd_diff / a_mean)² / n``,
    for :func:`pooled`).
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
        ka = ta[ta["test_case"].isin(cases)].groupby("seed")["collapsed"].any()
        kb = tb[tb["test_case"].isin(cases)].groupby("seed")["collapsed"].any()
        wa, wb = wa.reindex(columns=cases), wb.reindex(columns=cases)
        seeds = sorted(set(wa.dropna().index) & set(wb.dropna().index)) if cases else []
        xa = wa.reindex(seeds).mean(axis=1).to_numpy(dtype=float)
        xb = wb.reindex(seeds).mean(axis=1).to_numpy(dtype=float)
        ca = int(ka.reindex(seeds).fillna(False).sum())
        cb = int(kb.reindex(seeds).fillna(False).sum())
        gains = [sign * (pb[c] - pa[c]) for c in cases if c in pa and c in pb]
        g = float(np.mean(gains)) if gains and len(gains) == len(cases) else float("nan")
        pa_mean = float(np.mean([pa[c] for c in cases])) if all(c in pa for c in cases) and cases else float("nan")
        row = {"endpoint": ep, "test_cases": ", ".join(cases), "metric": metric,
               "paper_rel_gain": g / pa_mean if pa_mean == pa_mean and pa_mean != 0 else float("nan"),
               **_paired_row(xa, xb, ca, cb, sign, g)}
        am, n = row["a_mean"], row["n_seeds"]
        row["rel_gain"] = row["diff_mean"] / am if am == am and am != 0 else float("nan")
        row["rel_var"] = (row["sd_diff"] / am) ** 2 / n if n >= 2 and am == am and am != 0 else float("nan")
        rows.append(row)
    out = pd.DataFrame(rows)
    out["n_seeds"] = out["n_seeds"].astype(int)
    return out


def pooled(frames: dict, *, relative: bool = True, method: str = "random") -> pd.DataFrame:
    """One effect per primary endpoint pooled over datasets (:func:`wma_core.stats.pool_effects`).

    ``frames``: ``{dataset: endpoints(...)}``. ``relative=True`` pools the relative gains
    (``rel_gain``, variance ``rel_var``: the headline metrics differ in scale, and the paper's
    averages 0.9% / 2.5% / 2.1% are relative gains averaged over datasets); ``False`` pools the raw
    gains (variance ``sd_diff² / n``). Datasets whose endpoint collapsed or has fewer than 2 seeds
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
            var.append(r["rel_var"] if relative else r["sd_diff"] ** 2 / r["n_seeds"])
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


# --------------------------------------------------------------------------- grid


def grid(runs, dataset: str, *, test_case: str = "normal", metric: str | None = None, split: str = "test",
         long: bool = False, **where) -> pd.DataFrame:
    """The α × β table of the mean ``metric`` over seeds (WMA and min-OT runs; the baseline aside).

    Args:
        runs: a :func:`runs_frame` (or a store / its folder).
        test_case: which test case (``split="dev"`` has only ``normal``).
        metric: default: the dataset's headline metric.
        long: return the long form instead: one row per (α, β) with ``mean, lo, hi, std, n`` and
            ``feasible`` (False when some run of the cell had an unreachable target β·D0).
        **where: further selections (e.g. ``lr=1e-3``, ``target="init"``); if several lr or
            targets remain for one (α, β), a ``ValueError`` asks to choose.

    The wide form has α as index and β as columns. Both forms carry the baseline (same lr,
    target ignored) in ``.attrs["baseline"]`` as ``{"mean", "lo", "hi", "n"}`` when there is one.
    """
    metric = metric or headline(dataset)
    df, base = _grid_rows(runs, dataset, test_case, metric, split, where)
    summ = stats.summarize(df.sort_values(["alpha", "beta"]), ["alpha", "beta"])
    attrs = {}
    if not base.empty:
        m, lo, hi = stats.mean_ci(base.groupby("seed")["value"].mean())
        attrs["baseline"] = {"mean": m, "lo": lo, "hi": hi, "n": int(base["seed"].nunique())}
    if long:
        out = summ.reset_index(drop=True)
        if len(out):
            ok = df.groupby(["alpha", "beta"])["feasible"].all().rename("feasible").reset_index()
            out = out.merge(ok, on=["alpha", "beta"], how="left")
            out["feasible"] = out["feasible"].fillna(True).astype(bool)
        else:
            out["feasible"] = pd.Series(dtype=bool)
    else:
        out = summ.pivot(index="alpha", columns="beta", values="mean").sort_index().sort_index(axis=1)
    out.attrs.update(attrs)
    return out


def _grid_rows(runs, dataset: str, test_case: str, metric: str, split: str, where: dict):
    """The regularised runs of a grid and its baselines (same lr when the grid has one lr)."""
    df = _as_runs(runs)
    _one_data(df, dataset)
    df = df[(df["dataset"] == dataset) & (df["split"] == split) & (df["test_case"] == test_case) & (df["metric"] == metric)]
    base = _filter(df[df["method"] == "baseline"], {k: v for k, v in where.items() if k not in ("alpha", "beta", "target", "method")})
    df = _filter(df[df["method"] != "baseline"], where)
    other = [c for c in ("lr", "target", "epochs", "batch_size", "model", "data") if df[c].nunique(dropna=False) > 1]
    if other:
        raise ValueError(f"several values of {other} in the selected runs: choose with e.g. grid(..., {other[0]}=...)")
    if not base.empty and base["lr"].nunique() > 1 and df["lr"].nunique() == 1:
        base = base[np.isclose(base["lr"], df["lr"].iloc[0])]
    return df, base


def grid_gains(runs, dataset: str, *, test_case: str = "normal", metric: str | None = None, split: str = "test",
               **where) -> pd.DataFrame:
    """Every α × β cell against **all** baseline seeds: one row per cell, positive = better.

    For a cell with seeds ``S`` and the baseline with seeds ``B`` (values ``x_s``, ``y_s``):

    - if ``S ⊆ B`` and ``|S| >= 2``: paired by seed, ``gain = mean_s(x_s - y_s)`` with its t
      interval over ``S`` (``paired=True``);
    - otherwise (typically one seed per cell): ``gain = mean(x) - mean(y)`` against the mean of
      *all* baseline seeds, with a t interval whose standard error uses the baseline's seed spread
      ``s_B`` as the spread of one run: ``se = s_B · sqrt(1/|S| + 1/|B|)``, ``|B| - 1`` degrees of
      freedom (``paired=False``). With fewer than 2 baseline seeds the interval is NaN.

    For MAE the gain is ``mean(y) - mean(x)``. Columns: ``alpha, beta, n, mean, gain, gain_lo,
    gain_hi, paired, collapsed`` (the cell has a collapsed run), ``feasible`` (every run of the cell
    could reach its target β·D0, :func:`target_reachable`); ``.attrs["baseline"]`` holds
    ``{"mean", "sd", "n", "collapsed"}`` of the baseline seeds.
    """
    metric = metric or headline(dataset)
    sign = 1.0 if greater_is_better(metric) else -1.0
    df, base = _grid_rows(runs, dataset, test_case, metric, split, where)
    y = base.groupby("seed")["value"].mean().dropna()
    y_dead = bool(base["collapsed"].any()) if len(base) else False
    nb = len(y)
    sb = float(y.std(ddof=1)) if nb >= 2 else float("nan")
    rows = []
    for (al, be), g in df.groupby(["alpha", "beta"], sort=True):
        x = g.groupby("seed")["value"].mean().dropna()
        row = {"alpha": al, "beta": be, "n": len(x), "mean": float(x.mean()) if len(x) else float("nan"),
               "collapsed": bool(g["collapsed"].any()),
               "feasible": bool(g["feasible"].all()) if "feasible" in g else True}
        if len(x) >= 2 and set(x.index) <= set(y.index):
            t = stats.paired_test(y.reindex(x.index), x)
            m, lo, hi = t["diff_mean"], t["diff_lo"], t["diff_hi"]
            row["paired"] = True
        else:
            m = float(x.mean() - y.mean()) if len(x) and nb else float("nan")
            h = float(_t_ppf(nb - 1) * sb * math.sqrt(1 / max(len(x), 1) + 1 / nb)) if nb >= 2 and len(x) else float("nan")
            lo, hi = m - h, m + h
            row["paired"] = False
        if sign < 0:
            m, lo, hi = -m, -hi, -lo
        row.update(gain=m, gain_lo=lo, gain_hi=hi)
        rows.append(row)
    out = pd.DataFrame(rows, columns=["alpha", "beta", "n", "mean", "gain", "gain_lo", "gain_hi", "paired", "collapsed",
                                      "feasible"])
    out.attrs["baseline"] = {"mean": float(y.mean()) if nb else float("nan"), "sd": sb, "n": nb, "collapsed": y_dead}
    return out


def _t_ppf(df: int, confidence: float = 0.95) -> float:
    from scipy import stats as st

    return float(st.t.ppf((1 + confidence) / 2, df))


def selection_table(runs, datasets, *, test_case: str = "normal", method: str = "wma", seed: int = 0) -> pd.DataFrame:
    """Our grid's best cell beside the selection null, per dataset (chapter 07).

    For each dataset: ``k`` regularised cells (:func:`grid_gains`, one per (α, β) of ``method``),
    the best cell's gain over the mean of all baseline seeds chosen on the test split (the paper's
    way: ``selected_gain_test``) and on the dev split (``selected_gain_dev``: its *test* gain), the
    median cell's gain, the share of cells above the baseline, and the **selection null**
    (:func:`wma_core.stats.selection_null`): the mean and 95th percentile of the best-of-``k`` gain
    when no cell differs from the baseline, with the spread of one run taken from the baseline
    seeds. A test-chosen gain inside the null's range is what selection alone produces.
    """
    df = _as_runs(runs)
    rows = []
    for ds in datasets:
        m = headline(ds)
        sub = df[(df["dataset"] == ds) & (((df["method"] == method) & (df["target"] == "init")) | (df["method"] == "baseline"))]
        if sub.empty:
            continue
        g = grid_gains(sub, ds, test_case=test_case, metric=m)
        if g.empty:
            continue
        dev = grid_gains(sub, ds, test_case="normal", metric=m, split="dev")
        base = g.attrs["baseline"]
        null = stats.selection_null(base["sd"], len(g), max(base["n"], 1), seed=seed) if base["n"] >= 2 else \
            {"mean": float("nan"), "q95": float("nan")}
        i_test = int(np.nanargmax(g["gain"].to_numpy())) if g["gain"].notna().any() else None
        d = dev.set_index(["alpha", "beta"])["gain"].reindex(list(zip(g["alpha"], g["beta"])))
        i_dev = int(np.nanargmax(d.to_numpy())) if d.notna().any() else None
        rows.append({
            "dataset": ds, "metric": m, "k": len(g), "baseline_seeds": base["n"], "baseline_sd": base["sd"],
            "share_above": float((g["gain"] > 0).mean()), "median_gain": float(g["gain"].median()),
            "selected_test": "" if i_test is None else f"α={g['alpha'].iloc[i_test]:g}, β={g['beta'].iloc[i_test]:g}",
            "selected_gain_test": float("nan") if i_test is None else float(g["gain"].iloc[i_test]),
            "selected_dev": "" if i_dev is None else f"α={g['alpha'].iloc[i_dev]:g}, β={g['beta'].iloc[i_dev]:g}",
            "selected_gain_dev": float("nan") if i_dev is None else float(g["gain"].iloc[i_dev]),
            "null_mean": null["mean"], "null_q95": null["q95"], "collapsed_cells": int(g["collapsed"].sum()),
            "baseline_collapsed": bool(base["collapsed"]),
        })
    return pd.DataFrame(rows)
