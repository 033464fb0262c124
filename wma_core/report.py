"""From the results store to the book's tables: runs, comparisons with CIs, model selection, grids.

Everything here reads the records written by :func:`wma_core.train.fit` (directly or through
:mod:`wma_core.sweep`):

- :func:`runs_frame`: one row per (run, split, test case, metric);
- :func:`comparison`: baseline vs WMA (or min-OT vs WMA) per test case, mean ± 95% CI over
  seeds, the seed-paired difference and its p-value, next to the paper's Table 1/2 numbers, and
  whether the paper's claimed gain is distinguishable from seed noise at our scale;
- :func:`select`: model selection, the paper's way (lr, α, β chosen on the test split) and the
  clean way (chosen on the dev split only);
- :func:`grid`: the α × β table of one test case (β-curves, heatmaps).

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
RUN_COLUMNS = ["key"] + CONFIG_COLUMNS + ["split", "test_case", "metric", "value"]
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


def records_frame(records: list, store_or_dir) -> pd.DataFrame:
    """:func:`runs_frame` restricted to the runs of ``records`` (what a chapter just trained or reused)."""
    runs = runs_frame(store_or_dir)
    return runs[runs["key"].isin({r["key"] for r in records})]


def runs_frame(store_or_dir, *, data_dir=None, **where) -> pd.DataFrame:
    """All runs of a results store as a long table.

    One row per (run, split, test case, metric); columns :data:`RUN_COLUMNS`: ``key``, the config
    fields ``dataset, method, alpha, beta, target, lr, seed, epochs, batch_size, model, data``,
    ``split`` (``"test"``: every test case of the best checkpoint; ``"dev"``: the dev split,
    unperturbed, best checkpoint, with ``test_case="normal"``), ``test_case``, ``metric``, ``value``.

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
        base = {"key": rec["key"], **{c: cfg.get(c) for c in CONFIG_COLUMNS}}
        for case, metrics in (rec.get("metrics") or {}).items():
            for metric, value in metrics.items():
                rows.append({**base, "split": "test", "test_case": case, "metric": metric, "value": value})
        for metric, value in (rec.get("dev_metrics") or {}).items():
            rows.append({**base, "split": "dev", "test_case": "normal", "metric": metric, "value": value})
    df = pd.DataFrame(rows, columns=RUN_COLUMNS)
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
    ci_contains_zero, a_config, b_config``.

    Pairing and signs: only seeds that both cells ran are used (``n_seeds``), for the means and for
    the difference, so ``diff_mean = b_mean - a_mean`` (or ``a_mean - b_mean`` for MAE): ``paper_gain``
    and ``diff_*`` are positive when b is better. Intervals are 95% Student-t over seeds;
    ``p_value`` is the paired t-test (:func:`wma_core.stats.paired_test`).

    The three flags (``False`` where undefined: no paper number, or fewer than 2 paired seeds):

    - ``gain_in_noise``: ``|paper_gain| <= h``, with ``h = (diff_hi - diff_lo) / 2`` the half-width
      of our 95% CI of the mean difference. Read: had our experiment measured exactly the paper's
      gain, its CI would still contain 0 — an effect that large is not distinguishable from seed
      noise with our seeds. (Conservative towards the paper: a single-seed comparison, as in the
      paper, is noisier than our n-seed mean, by about ``sqrt(n)``.)
    - ``paper_gain_in_ci``: ``diff_lo <= paper_gain <= diff_hi``: our result is consistent with
      the paper's claimed effect.
    - ``ci_contains_zero``: ``diff_lo <= 0 <= diff_hi``: our own difference is not significant.
    """
    df = _as_runs(runs)
    a = {"method": "baseline"} if a is None else dict(a)
    b = {"method": "wma"} if b is None else dict(b)
    metric = metric or headline(dataset)
    sel_metric = headline(dataset)
    sign = 1.0 if greater_is_better(metric) else -1.0
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
    pa = _paper_values(dataset, paper_table, a.get("method"), metric)
    pb = _paper_values(dataset, paper_table, b.get("method"), metric)
    cases = test_case_order(list(ta["test_case"]) + list(tb["test_case"]) + list(pa) + list(pb))
    rows = []
    for case in cases:
        va = ta[ta["test_case"] == case].groupby("seed")["value"].mean()
        vb = tb[tb["test_case"] == case].groupby("seed")["value"].mean()
        seeds = sorted(set(va.index) & set(vb.index))
        xa = va.reindex(seeds).to_numpy(dtype=float)
        xb = vb.reindex(seeds).to_numpy(dtype=float)
        ok = ~(np.isnan(xa) | np.isnan(xb))
        xa, xb = xa[ok], xb[ok]
        a_m, a_lo, a_hi = stats.mean_ci(xa)
        b_m, b_lo, b_hi = stats.mean_ci(xb)
        t = stats.paired_test(xa, xb)
        if sign > 0:
            d_m, d_lo, d_hi = t["diff_mean"], t["diff_lo"], t["diff_hi"]
        else:
            d_m, d_lo, d_hi = -t["diff_mean"], -t["diff_hi"], -t["diff_lo"]
        p_a, p_b = pa.get(case, float("nan")), pb.get(case, float("nan"))
        gain = sign * (p_b - p_a)
        has_ci = d_lo == d_lo and d_hi == d_hi
        rows.append({
            "test_case": case, "metric": metric, "paper_a": p_a, "paper_b": p_b, "paper_gain": gain,
            "a_mean": a_m, "a_lo": a_lo, "a_hi": a_hi, "b_mean": b_m, "b_lo": b_lo, "b_hi": b_hi,
            "diff_mean": d_m, "diff_lo": d_lo, "diff_hi": d_hi, "p_value": t["p_value"], "n_seeds": t["n"],
            "gain_in_noise": bool(has_ci and gain == gain and abs(gain) <= (d_hi - d_lo) / 2),
            "paper_gain_in_ci": bool(has_ci and gain == gain and d_lo <= gain <= d_hi),
            "ci_contains_zero": bool(has_ci and d_lo <= 0 <= d_hi),
            "a_config": _cell_label(cell_a), "b_config": _cell_label(cell_b),
        })
    cols = ["test_case", "metric", "paper_a", "paper_b", "paper_gain", "a_mean", "a_lo", "a_hi", "b_mean", "b_lo",
            "b_hi", "diff_mean", "diff_lo", "diff_hi", "p_value", "n_seeds", "gain_in_noise", "paper_gain_in_ci",
            "ci_contains_zero", "a_config", "b_config"]
    out = pd.DataFrame(rows, columns=cols)
    out["n_seeds"] = out["n_seeds"].astype(int)
    for c in ("gain_in_noise", "paper_gain_in_ci", "ci_contains_zero"):
        out[c] = out[c].astype(bool)
    return out


# --------------------------------------------------------------------------- grid


def grid(runs, dataset: str, *, test_case: str = "normal", metric: str | None = None, split: str = "test",
         long: bool = False, **where) -> pd.DataFrame:
    """The α × β table of the mean ``metric`` over seeds (WMA and min-OT runs; the baseline aside).

    Args:
        runs: a :func:`runs_frame` (or a store / its folder).
        test_case: which test case (``split="dev"`` has only ``normal``).
        metric: default: the dataset's headline metric.
        long: return the long form instead: one row per (α, β) with ``mean, lo, hi, std, n``.
        **where: further selections (e.g. ``lr=1e-3``, ``target="init"``); if several lr or
            targets remain for one (α, β), a ``ValueError`` asks to choose.

    The wide form has α as index and β as columns. Both forms carry the baseline (same lr,
    target ignored) in ``.attrs["baseline"]`` as ``{"mean", "lo", "hi", "n"}`` when there is one.
    """
    df = _as_runs(runs)
    metric = metric or headline(dataset)
    _one_data(df, dataset)
    df = df[(df["dataset"] == dataset) & (df["split"] == split) & (df["test_case"] == test_case) & (df["metric"] == metric)]
    base = _filter(df[df["method"] == "baseline"], {k: v for k, v in where.items() if k not in ("alpha", "beta", "target", "method")})
    df = _filter(df[df["method"] != "baseline"], where)
    other = [c for c in ("lr", "target", "epochs", "batch_size", "model", "data") if df[c].nunique(dropna=False) > 1]
    if other:
        raise ValueError(f"several values of {other} in the selected runs: choose with e.g. grid(..., {other[0]}=...)")
    summ = stats.summarize(df.sort_values(["alpha", "beta"]), ["alpha", "beta"])
    attrs = {}
    if not base.empty:
        if base["lr"].nunique() > 1 and df["lr"].nunique() == 1:
            base = base[np.isclose(base["lr"], df["lr"].iloc[0])]
        m, lo, hi = stats.mean_ci(base.groupby("seed")["value"].mean())
        attrs["baseline"] = {"mean": m, "lo": lo, "hi": hi, "n": int(base["seed"].nunique())}
    if long:
        out = summ.reset_index(drop=True)
    else:
        out = summ.pivot(index="alpha", columns="beta", values="mean").sort_index().sort_index(axis=1)
    out.attrs.update(attrs)
    return out
