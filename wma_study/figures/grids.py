"""The α × β grids (the paper's Fig. 2 and Tables 3-6): ours (:func:`our_grid`) and the
paper's (:func:`paper_grid`, :func:`paper_baseline`) as long frames, drawn as heatmaps
(:func:`grid_heatmaps`) and as gain-against-β curves (:func:`beta_curves`). Cells whose target
β·D0 cannot be reached are hatched or crossed in red."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .style import MARKERS, _panels, case_label, metric_label


def _heat(ax, table: pd.DataFrame, *, title: str, cmap: str, center: float | None = None, fmt: str = "{:.3f}"):
    vals = table.to_numpy(dtype=float)
    finite = vals[np.isfinite(vals)]
    if center is not None and len(finite):
        # the 95th percentile, so that one outlier cell does not wash out the rest
        span = max(float(np.percentile(np.abs(finite - center), 95)), 1e-9)
        vmin, vmax = center - span, center + span
    else:
        vmin, vmax = (finite.min(), finite.max()) if len(finite) else (0, 1)
    im = ax.imshow(np.ma.masked_invalid(vals), cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(table.shape[1]), [f"{b:g}" for b in table.columns], fontsize=11, rotation=90 if table.shape[1] > 6 else 0)
    ax.set_yticks(range(table.shape[0]), [f"{a:g}" for a in table.index], fontsize=11)
    ax.set_xlabel("β")
    ax.set_ylabel("α")
    ax.set_title(title, fontsize=12)
    if table.size <= 40:
        for i in range(table.shape[0]):
            for j in range(table.shape[1]):
                if np.isfinite(vals[i, j]):
                    ax.text(j, i, fmt.format(vals[i, j]), ha="center", va="center", fontsize=12 if table.shape[1] <= 6 else 10)
    return im


def _hatch_unreachable(ax, unreachable: pd.DataFrame) -> int:
    """Hatch and frame the cells of a heatmap whose target β·D0 could not be reached.

    ``unreachable``: a bool table with the heatmap's index and columns. Returns how many cells.
    """
    from matplotlib.patches import Rectangle

    n = 0
    for i in range(unreachable.shape[0]):
        for j in range(unreachable.shape[1]):
            if bool(unreachable.iat[i, j]):
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="///", edgecolor="#b00", lw=1.2))
                n += 1
    return n


PAPER_GRID_TABLE = {"hateful_memes": 3, "mmimdb": 4, "ur_funny": 5, "mosei": 6}


def _sign(metric: str) -> float:
    return -1.0 if metric == "mae" else 1.0


def our_grid(runs: pd.DataFrame, dataset: str, cases=None, metric: str | None = None) -> dict:
    """``{test_case: long frame}`` of our α × β grid with ``alpha, beta, n, mean, gain, gain_lo, gain_hi``.

    Every cell is compared with **all** baseline seeds (:func:`wma_study.report.grid_gains`: paired
    by seed where the cell has several seeds the baseline also ran; otherwise against the mean of
    all baseline seeds, the interval's spread from the baseline seeds). Positive = better (for MAE
    the gain is baseline − cell). The baseline's summary is in ``.attrs["baseline"]``.
    """
    from ..report import grid_gains, headline, test_case_order

    metric = metric or headline(dataset)
    sub = runs[(runs["dataset"] == dataset) & (runs["split"] == "test")]
    cases = cases or test_case_order(sub["test_case"].unique())
    return {case: grid_gains(runs, dataset, test_case=case, metric=metric) for case in cases}


def paper_grid(dataset: str, paper: pd.DataFrame | None = None) -> dict:
    """``{test_case: long frame}`` of the paper's α × β grid (Tables 3-6) with ``alpha, beta, value, gain``.

    The gain is over the paper's Table 1 baseline (positive = better). The minimise-OT row of
    Table 2 is added as the cell (α = 1, β = 0).
    """
    from ..paper import load_paper_results

    p = load_paper_results() if paper is None else paper
    p = p[p["dataset"] == dataset]
    base = p[(p["table"] == 1) & (p["method"] == "baseline")].set_index("test_case")["value"]
    cells = p[p["table"] == PAPER_GRID_TABLE[dataset]]
    min_ot = p[(p["table"] == 2) & (p["method"] == "min_ot")].assign(alpha=1.0, beta=0.0)
    cells = pd.concat([cells, min_ot], ignore_index=True)
    metric = cells["metric"].iloc[0] if len(cells) else "auroc"
    out = {}
    for case, g in cells.groupby("test_case", sort=False):
        g = g[["alpha", "beta", "value"]].sort_values(["alpha", "beta"]).reset_index(drop=True)
        g["gain"] = _sign(metric) * (g["value"] - base.get(case, np.nan))
        out[case] = g
    from ..report import test_case_order

    return {c: out[c] for c in test_case_order(out)}


def paper_baseline(dataset: str, test_case: str = "normal") -> float:
    """The paper's Table 1 baseline value of ``dataset`` on ``test_case``."""
    from ..paper import load_paper_results

    p = load_paper_results()
    v = p[(p["table"] == 1) & (p["dataset"] == dataset) & (p["method"] == "baseline") & (p["test_case"] == test_case)]["value"]
    return float(v.iloc[0]) if len(v) else float("nan")


def grid_heatmaps(frames: dict, *, value: str = "gain", metric: str = "", title: str = ""):
    """One α × β heatmap per test case from long frames (``alpha, beta`` and ``value`` columns).

    ``value="gain"``: a diverging map centred at 0 (blue = better than the baseline); otherwise
    the metric itself. Cells whose target β·D0 could not be reached (a ``feasible`` column that
    is False, :func:`our_grid`) are hatched in red and named in a note under the figure.
    """
    cases = list(frames)
    fig, axes = _panels(len(cases), 5.0, 3.4)
    n_flagged = 0
    for ax, case in zip(axes.flat, cases):
        t = frames[case].pivot_table(index="alpha", columns="beta", values=value, aggfunc="mean").sort_index().sort_index(axis=1)
        if value == "gain":
            im = _heat(ax, t, title=f"{case_label(case)}: gain over baseline", cmap="RdBu", center=0.0, fmt="{:+.3f}")
        else:
            im = _heat(ax, t, title=f"{case_label(case)}: {metric_label(metric)}", cmap="viridis_r" if metric == "mae" else "viridis")
        if "feasible" in frames[case]:
            bad = (~frames[case]["feasible"].astype(bool)).astype(float)
            u = frames[case].assign(_bad=bad).pivot_table(index="alpha", columns="beta", values="_bad", aggfunc="max")
            n_flagged = max(n_flagged, _hatch_unreachable(ax, u.reindex(index=t.index, columns=t.columns).fillna(0) > 0))
        fig.colorbar(im, ax=ax, shrink=0.8)
    if title:
        fig.suptitle(title)
    if n_flagged:
        fig.text(0.5, 0.0, f"hatched: {n_flagged} cell(s) whose target β·D0 exceeds 2, the largest OT distance (unreachable)",
                 ha="center", va="bottom", fontsize=11, color="#b00")
    fig.tight_layout()
    return fig


def beta_curves(ours: dict, paper: dict | None = None, *, metric: str, title: str = ""):
    """Gain over the baseline against β, one panel per test case (the paper's Fig. 2, every α).

    Args:
        ours: ``{test_case: long frame}`` with columns ``alpha, beta, gain, gain_lo, gain_hi``
            (:func:`our_grid`; the interval is NaN with one seed).
        paper: the same for the paper (:func:`paper_grid`), drawn dashed in grey shades.
    Red crosses: our cells whose target β·D0 could not be reached (``feasible`` False).
    Solid lines: ours, one colour per α; dashed: the paper's α rows. β on a log-like axis
    (symlog, so β = 0, minimise-OT, is shown).
    """
    cases = list(ours)
    fig, axes = _panels(len(cases), 5.0, 3.3)
    our_alphas = sorted({a for df in ours.values() for a in df["alpha"]})
    cmap = plt.get_cmap("viridis", max(2, len(our_alphas) + 1))
    # α rows with a cell whose target β·D0 cannot be reached (marked with a red cross, labelled once)
    our_alphas_flagged = [i for i, a in enumerate(our_alphas)
                          if any("feasible" in df and not df.loc[df["alpha"] == a, "feasible"].astype(bool).all() for df in ours.values())]
    paper_alphas = sorted({a for df in (paper or {}).values() for a in df["alpha"]})
    greys = plt.get_cmap("Greys", len(paper_alphas) + 2) if paper_alphas else None
    amark = {a: MARKERS[k % len(MARKERS)] for k, a in enumerate(sorted(set(our_alphas) | set(paper_alphas)))}
    for ax, case in zip(axes.flat, cases):
        ax.axhline(0, color="#444", lw=0.8)
        for i, a in enumerate(our_alphas):
            df = ours[case][ours[case]["alpha"] == a].sort_values("beta")
            if df.empty:
                continue
            ax.plot(df["beta"], df["gain"], "-", marker=amark[a], color=cmap(i), ms=5, label=f"ours α={a:g}")
            if "gain_lo" in df and df["gain_lo"].notna().any():
                ax.fill_between(df["beta"], df["gain_lo"], df["gain_hi"], color=cmap(i), alpha=0.15)
            if "feasible" in df and not df["feasible"].astype(bool).all():
                bad = df[~df["feasible"].astype(bool)]
                ax.plot(bad["beta"], bad["gain"], "x", color="#b00", ms=9, mew=2, ls="none",
                        label="target β·D0 > 2: unreachable" if i == min(our_alphas_flagged) else None)
        if paper and case in paper:
            for j, a in enumerate(paper_alphas):
                df = paper[case][paper[case]["alpha"] == a].sort_values("beta")
                if not df.empty:
                    ax.plot(df["beta"], df["gain"], "--", marker=amark[a], mfc="white", ms=4, color=greys(j + 2), lw=1.2,
                            label=f"paper α={a:g}")
        ax.set_xscale("symlog", linthresh=0.5)
        ax.set_xlabel("β (target = β·D0)")
        ax.set_ylabel("gain over baseline")
        ax.set_title(case_label(case), fontsize=12)
        ax.grid(alpha=0.3)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    spare = list(axes.flat[len(cases):])
    if handles:
        if spare:  # an empty panel slot: the legend goes there, at full size
            spare[0].legend(handles, labels, loc="center", fontsize=14, frameon=False)
        else:
            fig.legend(handles, labels, loc="lower center", ncol=min(5, len(labels)), fontsize=13, bbox_to_anchor=(0.5, -0.01))
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.04 + 0.02 * math.ceil(len(labels) / 5) if handles and not spare else 0, 1, 1))
    return fig
