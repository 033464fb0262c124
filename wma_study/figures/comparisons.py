"""Method-comparison plots: method a vs b per test case with the paper's numbers
(:func:`comparison_figure`), several methods side by side (:func:`method_summary`,
:func:`methods_figure`) and the forest plot of the paper's claims (:func:`claims_figure`)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .style import BAR_HATCHES, COLORS, METHOD_LABELS, case_label, metric_label


def comparison_figure(cmp: pd.DataFrame, *, a: str = "baseline", b: str = "wma", a_label: str | None = None,
                      b_label: str | None = None, title: str = ""):
    """Two panels per comparison frame.

    Top: our mean per test case for a and b (bars, 95% CI error bars) with the paper's
    numbers as black markers (○ a, ◆ b). Bottom: the gain of b over a (positive = b better):
    ours with its 95% CI, the paper's as a black ×; a zero line.
    """
    a_label = a_label or METHOD_LABELS.get(a, a)
    b_label = b_label or METHOD_LABELS.get(b, b)
    cases = list(cmp["test_case"])
    x = np.arange(len(cases))
    metric = cmp["metric"].iloc[0] if len(cmp) else ""
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8.5, 7.4))
    w = 0.38
    for off, pre, color, label in ((-w / 2, "a", COLORS.get(a, "#7f7f7f"), a_label), (w / 2, "b", COLORS.get(b, "#1f77b4"), b_label)):
        m, lo, hi = (cmp[f"{pre}_{k}"].to_numpy(dtype=float) for k in ("mean", "lo", "hi"))
        err = np.vstack([m - lo, hi - m])
        err = np.where(np.isnan(err), 0, err)
        ax1.bar(x + off, m, w, color=color, alpha=0.85, label=f"ours: {label}", yerr=err, capsize=3, error_kw={"lw": 1})
        paper = cmp[f"paper_{pre}"].to_numpy(dtype=float)
        ax1.scatter(x + off, paper, marker="o" if pre == "a" else "D", facecolor="white" if pre == "a" else "black",
                    edgecolor="black", zorder=5, s=28, label=f"paper: {label}")
    # limits from the means and the paper's numbers (wide intervals of few seeds run off the axes)
    vals = np.concatenate([cmp[c].to_numpy(dtype=float) for c in ("a_mean", "b_mean", "paper_a", "paper_b")])
    vals = vals[np.isfinite(vals)]
    bounded = metric in ("auroc", "f1_macro", "f1_micro", "f1_samples", "f1_weighted", "accuracy", "acc2")
    if len(vals):
        lo_v, hi_v = vals.min(), vals.max()
        pad = 0.25 * (hi_v - lo_v) + 0.03
        lo_v, hi_v = lo_v - pad, hi_v + pad
        if bounded or metric == "mae":
            lo_v = max(0.0, lo_v)
        if bounded:
            hi_v = min(1.0, hi_v)
        ax1.set_ylim(lo_v, hi_v)
    ax1.set_xticks(x, [case_label(c) for c in cases], rotation=20 if len(cases) > 5 else 0)
    ax1.set_ylabel(metric_label(metric))
    ax1.set_title("ours (mean, 95% CI) and the paper's numbers")
    ax1.legend(fontsize=11, ncol=2, loc="best", framealpha=0.9)
    ax1.grid(axis="y", alpha=0.3)

    d, dlo, dhi = (cmp[k].to_numpy(dtype=float) for k in ("diff_mean", "diff_lo", "diff_hi"))
    err = np.vstack([d - dlo, dhi - d])
    err = np.where(np.isnan(err), 0, err)
    ax2.axhline(0, color="#444", lw=0.8)
    ax2.errorbar(x, d, yerr=err, fmt="o", color=COLORS.get(b, "#1f77b4"), capsize=4, label=f"ours: {b_label} − {a_label}")
    ax2.scatter(x, cmp["paper_gain"].to_numpy(dtype=float), marker="x", color="black", s=40, zorder=5, label="paper's gain")
    g = np.concatenate([d, cmp["paper_gain"].to_numpy(dtype=float), dlo, dhi])
    g = g[np.isfinite(g)]
    if len(g):
        span = max(abs(g.min()), abs(g.max()), 0.01) * 1.15
        if bounded:
            span = min(span, 1.0)
        ax2.set_ylim(-span, span)
    ax2.set_xticks(x, [case_label(c) for c in cases], rotation=20 if len(cases) > 5 else 0)
    ax2.set_ylabel("gain (positive = better)")
    ax2.set_title(f"gain of {b_label} over {a_label}: ours (95% CI) and the paper's")
    ax2.legend(fontsize=11)
    ax2.grid(axis="y", alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def method_summary(runs: pd.DataFrame, dataset: str, selections: dict, metric: str | None = None) -> pd.DataFrame:
    """Mean and 95% CI over seeds per (method label, test case) of ``metric`` on the test split.

    ``selections``: ``{label: {config field: value}}`` (e.g. ``{"WMA (init)": {"method": "wma", "target": "init"}}``).
    """
    from .. import stats
    from ..report import headline, test_case_order

    metric = metric or headline(dataset)
    df = runs[(runs["dataset"] == dataset) & (runs["split"] == "test") & (runs["metric"] == metric)]
    parts = []
    for label, sel in selections.items():
        keep = np.ones(len(df), dtype=bool)
        for k, v in sel.items():
            col = df[k]
            keep &= np.isclose(col.to_numpy(dtype=float), float(v)) if isinstance(v, (int, float)) else (col == v).to_numpy()
        sub = df[keep]
        if sub.empty:
            continue
        summ = stats.summarize(sub, ["test_case"])
        summ.insert(0, "label", label)
        parts.append(summ)
    out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["label", "test_case", "mean", "lo", "hi", "std", "n"])
    order = {c: i for i, c in enumerate(test_case_order(out["test_case"]))}
    out = out.sort_values("test_case", key=lambda c: c.map(order), kind="stable").reset_index(drop=True)
    out.attrs["metric"] = metric
    return out


def methods_figure(summary: pd.DataFrame, *, colors: dict | None = None, title: str = ""):
    """Grouped bars: one group per test case, one bar per method label (mean, 95% CI)."""
    labels = list(dict.fromkeys(summary["label"]))
    cases = list(dict.fromkeys(summary["test_case"]))
    metric = summary.attrs.get("metric", "")
    fig, ax = plt.subplots(figsize=(min(9.0, max(6.0, 1.2 * len(cases) + 2)), 3.8))
    w = 0.8 / max(1, len(labels))
    default = [COLORS["baseline"], COLORS["min_ot"], COLORS["wma"], COLORS["batch"], "#2ca02c", "#8c564b"]
    x = np.arange(len(cases))
    means = []
    for i, label in enumerate(labels):
        sub = summary[summary["label"] == label].set_index("test_case").reindex(cases)
        m = sub["mean"].to_numpy(dtype=float)
        err = np.vstack([m - sub["lo"].to_numpy(dtype=float), sub["hi"].to_numpy(dtype=float) - m])
        err = np.where(np.isnan(err), 0, err)
        color = (colors or {}).get(label, default[i % len(default)])
        ax.bar(x + (i - (len(labels) - 1) / 2) * w, m, w, color=color, label=label, yerr=err, capsize=2, error_kw={"lw": 0.8},
               hatch=BAR_HATCHES[i % len(BAR_HATCHES)], edgecolor="white")
        means.append(m)
    vals = np.concatenate(means) if means else np.array([])
    vals = vals[np.isfinite(vals)]
    if len(vals):
        pad = 0.25 * (vals.max() - vals.min()) + 0.03
        ax.set_ylim(max(0.0, vals.min() - pad), vals.max() + pad if metric == "mae" else min(1.0, vals.max() + pad))
    ax.set_xticks(x, [case_label(c) for c in cases], rotation=30 if len(cases) > 5 else 0, ha="right" if len(cases) > 5 else "center")
    ax.set_ylabel(metric_label(metric))
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=11, ncol=2)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def claims_figure(claims: pd.DataFrame, *, title: str = ""):
    """A forest plot of the paper's claims: our gain (95% CI) against the paper's, one row per claim.

    ``claims``: columns ``claim, gain, lo, hi, paper, verdict`` (rows without an interval are drawn
    as a point; collapsed runs as a grey cross at 0, runs that never left the prior as a grey plus).
    Marker shape follows the verdict category, so that the reading does not rest on colour alone.
    """
    from ..report import FAILED_FIT, verdict_category

    n = len(claims)
    fig, ax = plt.subplots(figsize=(8.5, 0.8 + 0.32 * max(n, 1)))
    marks = {"detected": "o", "detected (opposite sign)": "v", "ruled out at the paper's size": "s",
             "inconclusive": "D", "collapsed run": "X", "never left the prior": "P"}
    y = np.arange(n)[::-1]
    for yi, r in zip(y, claims.itertuples(index=False)):
        cat = verdict_category(r.verdict)
        color = "#999999" if cat in FAILED_FIT else COLORS["wma"]
        if cat in FAILED_FIT:
            ax.scatter([0], [yi], marker=marks[cat], color=color, s=40, zorder=4)
        else:
            if r.lo == r.lo and r.hi == r.hi:
                ax.plot([r.lo, r.hi], [yi, yi], color=color, lw=1.6)
            ax.scatter([r.gain], [yi], marker=marks[cat], color=color, s=30, zorder=4)
        if r.paper == r.paper:
            ax.scatter([r.paper], [yi], marker="x", color=COLORS["paper"], s=36, zorder=5)
    ax.axvline(0, color="#444", lw=0.8)
    ax.set_yticks(y, list(claims["claim"]), fontsize=8)
    ax.set_xlabel("gain of WMA (positive = better; relative for the averages): ours (95% CI) and the paper's (×)")
    handles = [plt.Line2D([], [], marker=m, ls="", color=COLORS["wma"] if k not in FAILED_FIT else "#999999", label=k)
               for k, m in marks.items()] + [plt.Line2D([], [], marker="x", ls="", color="black", label="paper")]
    ax.legend(handles=handles, fontsize=7, loc="lower right", framealpha=0.9)
    ax.grid(axis="x", alpha=0.3)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig
