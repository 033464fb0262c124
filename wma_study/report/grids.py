"""Model selection and the α × β grids.

- :func:`select`: model selection, the paper's way (lr, α, β chosen on the test split) and the
  clean way (chosen on the dev split only);
- :func:`grid`: the α × β table of one test case (β-curves, heatmaps); :func:`grid_gains`: every
  cell against all baseline seeds; :func:`selection_table`: the best cell beside the selection null.

Signs: every "gain" is oriented so that **positive means better** than the baseline (for MAE,
lower is better).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .. import stats
from .runs import _as_runs, _best_cell, _filter, _one_data, greater_is_better, headline, test_case_order


# --------------------------------------------------------------------------- selection


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
    other = [c for c in ("lr", "target", "epochs", "batch_size", "init", "data") if df[c].nunique(dropna=False) > 1]
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
    (:func:`wma_study.stats.selection_null`): the mean and 95th percentile of the best-of-``k`` gain
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
