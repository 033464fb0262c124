"""The book's figures and tables: one function per kind of plot, shared by every notebook.

Every function takes what :mod:`wma_core.report` returns (comparison frames, grids) or raw
run records (:func:`wma_core.train.fit`) and returns a matplotlib ``Figure`` (or a pandas
``Styler`` for tables); nothing here trains or reads the store. :class:`Publisher` saves a
figure as a PNG under ``<build>/figures/<notebook>/`` and glues it for the book, where a
``{glue:figure}`` directive shows it as a numbered figure.

- :func:`comparison_figure`: method a vs b per test case (ours with 95% CIs, the paper's
  numbers as markers), and the gains side by side;
- :func:`d_trajectory`: mean OT distance D over training epochs against the target β·D0;
- :func:`d_histogram`: per-sample D on the test set against β·D0 and D0;
- :func:`grid_heatmaps`, :func:`beta_curves`: the α × β grids (Fig. 2, Tables 3-6);
- :func:`explorer_panels`, :func:`slider_html`: the OT explorer and its static, JS-driven view;
- :func:`comparison_table`, :func:`show_table`: tables with the paper beside ours.

Colours: baseline grey, WMA blue, minimise-OT red, WMA with the ``batch`` target purple; the
paper is always black (markers, dashed lines).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

COLORS = {"baseline": "#7f7f7f", "wma": "#1f77b4", "min_ot": "#d62728", "batch": "#9467bd", "paper": "#000000"}
METHOD_LABELS = {"baseline": "baseline (ViLT)", "wma": "WMA", "min_ot": "minimise OT (β = 0)"}
DATASET_LABELS = {"hateful_memes": "Hateful Memes", "mmimdb": "MM-IMDb", "ur_funny": "UR-FUNNY", "mosei": "CMU-MOSEI"}
METRIC_LABELS = {"auroc": "AUROC", "f1_macro": "F1 (macro)", "mae": "MAE (lower is better)"}
PAIR_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c"]
DPI = 100


def _root() -> Path:
    return Path(__file__).resolve().parents[1]


def build_dir() -> Path:
    """Where the build writes (``$WMA_BUILD_DIR``, set by ``book/build.py``; default ``<repo>/_build``)."""
    return Path(os.environ.get("WMA_BUILD_DIR", _root() / "_build")).resolve()


def figure_dir(notebook: str) -> Path:
    """``<build>/figures/<notebook>/`` (created)."""
    d = build_dir() / "figures" / notebook
    d.mkdir(parents=True, exist_ok=True)
    return d


def case_label(case: str) -> str:
    """``"image_missing"`` → ``"image missing"``."""
    return case.replace("_", " ")


def metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric)


class Publisher:
    """Saves a notebook's figures as PNG files and glues them for ``{glue:figure}``.

    ``pub = Publisher("02_hateful_memes"); pub(fig, "comparison")`` writes
    ``<build>/figures/02_hateful_memes/comparison.png``, glues the figure under the key
    ``comparison`` and shows it in the notebook (the book hides that copy with the cell tag
    ``remove-output`` and shows the numbered ``{glue:figure}`` instead).
    """

    def __init__(self, notebook: str):
        self.notebook = notebook
        self.paths: dict[str, Path] = {}

    def __call__(self, fig, key: str, *, show: bool = True) -> Path:
        from myst_nb import glue

        path = figure_dir(self.notebook) / f"{key}.png"
        fig.savefig(path, dpi=DPI, bbox_inches="tight")
        self.paths[key] = path
        glue(key, fig, display=show)
        plt.close(fig)
        return path


def fig_to_base64(fig, dpi: int = 72) -> str:
    """The figure as a base64 PNG string (for HTML ``<img src="data:image/png;base64,...">``)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


# --------------------------------------------------------------------------- tables


def show_table(df: pd.DataFrame, *, caption: str | None = None, precision: int = 3, hide_index: bool = True):
    """A pandas ``Styler``: numbers to ``precision`` digits, an optional caption, no index."""
    sty = df.style.format(precision=precision, na_rep="–")
    if hide_index:
        sty = sty.hide(axis="index")
    if caption:
        sty = sty.set_caption(caption)
    return sty.set_table_styles([{"selector": "caption", "props": "caption-side: top; font-weight: bold; text-align: left;"}])


def _ci_text(m, lo, hi, digits=3) -> str:
    if m != m:
        return "–"
    if lo != lo or hi != hi:
        return f"{m:.{digits}f}"
    return f"{m:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def comparison_frame(cmp: pd.DataFrame, *, a_label: str = "baseline", b_label: str = "WMA") -> pd.DataFrame:
    """A :func:`wma_core.report.comparison` frame as display columns (paper beside ours).

    Columns: test case, the paper's a and b and its gain, our a and b (mean [95% CI]), our
    gain (mean [95% CI], positive = b better), paired p-value, seeds, and whether the paper's
    gain lies within our seed noise (``gain_in_noise``).
    """
    rows = []
    for r in cmp.itertuples(index=False):
        rows.append({
            "test case": case_label(r.test_case),
            f"paper {a_label}": r.paper_a,
            f"paper {b_label}": r.paper_b,
            "paper gain": r.paper_gain,
            f"ours {a_label}": _ci_text(r.a_mean, r.a_lo, r.a_hi),
            f"ours {b_label}": _ci_text(r.b_mean, r.b_lo, r.b_hi),
            "ours gain [95% CI]": _ci_text(r.diff_mean, r.diff_lo, r.diff_hi),
            "p (paired t)": r.p_value,
            "seeds": r.n_seeds,
            "paper gain within our noise": ("yes" if r.gain_in_noise else "no") if r.paper_gain == r.paper_gain and r.n_seeds >= 2 else "–",
        })
    return pd.DataFrame(rows)


def comparison_table(cmp: pd.DataFrame, *, a_label: str = "baseline", b_label: str = "WMA", caption: str | None = None):
    """:func:`comparison_frame` styled: p-values to 3 digits, the 'within noise' cells shaded."""
    df = comparison_frame(cmp, a_label=a_label, b_label=b_label)
    sty = show_table(df, caption=caption, precision=3)

    def shade(v):
        return "background-color: #fde2c4" if v == "yes" else ""

    return sty.map(shade, subset=["paper gain within our noise"])


# --------------------------------------------------------------------------- comparisons


def comparison_figure(cmp: pd.DataFrame, *, a: str = "baseline", b: str = "wma", a_label: str | None = None,
                      b_label: str | None = None, title: str = ""):
    """Two panels per comparison frame.

    Left: our mean per test case for a and b (bars, 95% CI error bars) with the paper's
    numbers as black markers (○ a, ◆ b). Right: the gain of b over a (positive = b better):
    ours with its 95% CI, the paper's as a black ×; a zero line.
    """
    a_label = a_label or METHOD_LABELS.get(a, a)
    b_label = b_label or METHOD_LABELS.get(b, b)
    cases = list(cmp["test_case"])
    x = np.arange(len(cases))
    metric = cmp["metric"].iloc[0] if len(cmp) else ""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 3.8), gridspec_kw={"width_ratios": [1.35, 1]})
    w = 0.38
    for off, pre, color, label in ((-w / 2, "a", COLORS.get(a, "#7f7f7f"), a_label), (w / 2, "b", COLORS.get(b, "#1f77b4"), b_label)):
        m, lo, hi = (cmp[f"{pre}_{k}"].to_numpy(dtype=float) for k in ("mean", "lo", "hi"))
        err = np.vstack([m - lo, hi - m])
        err = np.where(np.isnan(err), 0, err)
        ax1.bar(x + off, m, w, color=color, alpha=0.85, label=f"ours: {label}", yerr=err, capsize=3, error_kw={"lw": 1})
        paper = cmp[f"paper_{pre}"].to_numpy(dtype=float)
        ax1.scatter(x + off, paper, marker="o" if pre == "a" else "D", facecolor="white" if pre == "a" else "black",
                    edgecolor="black", zorder=5, s=28, label=f"paper: {label}")
    vals = np.concatenate([cmp[c].to_numpy(dtype=float) for c in ("a_lo", "a_mean", "b_mean", "b_hi", "paper_a", "paper_b")])
    vals = vals[np.isfinite(vals)]
    if len(vals):
        lo_v, hi_v = vals.min(), vals.max()
        pad = 0.15 * (hi_v - lo_v) + 0.02
        ax1.set_ylim(max(0.0, lo_v - pad) if lo_v >= 0 else lo_v - pad, hi_v + pad)
    ax1.set_xticks(x, [case_label(c) for c in cases], rotation=30, ha="right")
    ax1.set_ylabel(metric_label(metric))
    ax1.set_title("ours (mean, 95% CI) and the paper's numbers")
    ax1.legend(fontsize=7, ncol=2, loc="lower left")
    ax1.grid(axis="y", alpha=0.3)

    d, dlo, dhi = (cmp[k].to_numpy(dtype=float) for k in ("diff_mean", "diff_lo", "diff_hi"))
    err = np.vstack([d - dlo, dhi - d])
    err = np.where(np.isnan(err), 0, err)
    ax2.axhline(0, color="#444", lw=0.8)
    ax2.errorbar(x, d, yerr=err, fmt="o", color=COLORS.get(b, "#1f77b4"), capsize=4, label=f"ours: {b_label} − {a_label}")
    ax2.scatter(x, cmp["paper_gain"].to_numpy(dtype=float), marker="x", color="black", s=40, zorder=5, label="paper's gain")
    ax2.set_xticks(x, [case_label(c) for c in cases], rotation=30, ha="right")
    ax2.set_ylabel("gain (positive = better)")
    ax2.set_title("gain over " + a_label)
    ax2.legend(fontsize=7)
    ax2.grid(axis="y", alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- OT distances


def _pairs(record: dict) -> list[str]:
    return list(record.get("d0") or {})


def _label(record: dict) -> str:
    c = record["config"]
    if c["method"] == "baseline":
        return "baseline"
    s = f"{METHOD_LABELS.get(c['method'], c['method'])} α={c['alpha']:g}"
    if c["method"] != "min_ot":
        s += f" β={c['beta']:g}"
    if c.get("target", "init") != "init":
        s += f" ({c['target']} target)"
    return s


def _color(record: dict) -> str:
    c = record["config"]
    if c.get("target") == "batch" and c["method"] != "baseline":
        return COLORS["batch"]
    return COLORS.get(c["method"], "#1f77b4")


def trajectory_frame(records) -> pd.DataFrame:
    """Long table of the D trajectories: ``label, seed, epoch, split, pair, D``."""
    rows = []
    for rec in records:
        for point in rec.get("d_trajectory", []):
            for pair in _pairs(rec):
                if pair in point:
                    rows.append({"label": _label(rec), "seed": rec["config"]["seed"], "epoch": point["epoch"],
                                 "split": point["split"], "pair": pair, "D": point[pair]})
    return pd.DataFrame(rows, columns=["label", "seed", "epoch", "split", "pair", "D"])


def d_trajectory(records, *, title: str = ""):
    """Mean OT distance over training, one panel per modality pair.

    For each run group (method, α, β, target; seeds averaged, each seed a thin line): the dev
    mean D per epoch (solid) and the training-batch mean (dashed, regularised runs only); epoch 0
    is D0, the first training batch under the initial weights. The target β·D0 of every
    regularised group is a horizontal dotted line in its colour.
    """
    records = list(records)
    pairs = _pairs(records[0]) if records else []
    fig, axes = plt.subplots(1, max(1, len(pairs)), figsize=(4.6 * max(1, len(pairs)), 3.4), squeeze=False)
    groups: dict[str, list] = {}
    for rec in records:
        groups.setdefault(_label(rec), []).append(rec)
    for ax, pair in zip(axes[0], pairs):
        for label, recs in groups.items():
            color = _color(recs[0])
            for split, ls in (("dev", "-"), ("train", "--")):
                curves = []
                for rec in recs:
                    pts = [(p["epoch"], p[pair]) for p in rec["d_trajectory"] if pair in p and (p["split"] == split or p["split"] == "train_first_batch")]
                    if len(pts) > 1:
                        e, v = zip(*sorted(pts))
                        curves.append((np.array(e), np.array(v)))
                        ax.plot(e, v, ls, color=color, lw=0.6, alpha=0.35)
                if curves:
                    n = min(len(c[0]) for c in curves)
                    mean = np.mean([c[1][:n] for c in curves], axis=0)
                    ax.plot(curves[0][0][:n], mean, ls, color=color, lw=2, label=f"{label} ({split})" if split == "dev" or recs[0]["config"]["alpha"] > 0 else None)
            c = recs[0]["config"]
            if c["alpha"] > 0 and c.get("target", "init") == "init":
                target = c["beta"] * float(np.mean([r["d0"][pair] for r in recs]))
                ax.axhline(target, color=color, ls=":", lw=1.5)
                ax.annotate(f"β·D0 = {target:.3f}", (1.0, target), xycoords=("axes fraction", "data"), fontsize=7,
                            color=color, ha="right", va="bottom")
        ax.set_title(f"pair {pair}")
        ax.set_xlabel("epoch (0 = D0, first batch at initialisation)")
        ax.set_ylabel("mean OT distance D")
        ax.grid(alpha=0.3)
    if len(axes[0]):
        axes[0][0].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def d_histogram(records, *, test_case: str = "normal", title: str = "", bins: int = 30):
    """Per-sample D on the test set (one ``test_case``), one panel per pair, one histogram per run group.

    Vertical lines: D0 (grey, dashed) and β·D0 of every regularised group (its colour, dotted).
    Seeds of a group are pooled.
    """
    records = list(records)
    pairs = _pairs(records[0]) if records else []
    fig, axes = plt.subplots(1, max(1, len(pairs)), figsize=(4.6 * max(1, len(pairs)), 3.3), squeeze=False)
    groups: dict[str, list] = {}
    for rec in records:
        groups.setdefault(_label(rec), []).append(rec)
    for ax, pair in zip(axes[0], pairs):
        all_d = np.concatenate([np.asarray(r["distances"][test_case][pair]) for r in records])
        edges = np.linspace(min(all_d.min(), 0.0), max(all_d.max(), 1e-3), bins + 1) if len(all_d) else bins
        d0 = float(np.mean([r["d0"][pair] for r in records]))
        for label, recs in groups.items():
            d = np.concatenate([np.asarray(r["distances"][test_case][pair]) for r in recs])
            color = _color(recs[0])
            ax.hist(d, bins=edges, color=color, alpha=0.45, label=f"{label} (mean {d.mean():.3f})")
            c = recs[0]["config"]
            if c["alpha"] > 0 and c.get("target", "init") == "init":
                ax.axvline(c["beta"] * float(np.mean([r["d0"][pair] for r in recs])), color=color, ls=":", lw=2)
        ax.axvline(d0, color="#555", ls="--", lw=1, label=f"D0 = {d0:.3f}")
        ax.set_title(f"pair {pair}, test case {case_label(test_case)}")
        ax.set_xlabel("OT distance D per test sample")
        ax.set_ylabel("samples")
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- α × β grids


def _heat(ax, table: pd.DataFrame, *, title: str, cmap: str, center: float | None = None, fmt: str = "{:.3f}"):
    vals = table.to_numpy(dtype=float)
    finite = vals[np.isfinite(vals)]
    if center is not None and len(finite):
        span = max(float(np.abs(finite - center).max()), 1e-9)
        vmin, vmax = center - span, center + span
    else:
        vmin, vmax = (finite.min(), finite.max()) if len(finite) else (0, 1)
    im = ax.imshow(np.ma.masked_invalid(vals), cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(table.shape[1]), [f"{b:g}" for b in table.columns], fontsize=7)
    ax.set_yticks(range(table.shape[0]), [f"{a:g}" for a in table.index], fontsize=7)
    ax.set_xlabel("β")
    ax.set_ylabel("α")
    ax.set_title(title, fontsize=9)
    if table.size <= 80:
        for i in range(table.shape[0]):
            for j in range(table.shape[1]):
                if np.isfinite(vals[i, j]):
                    ax.text(j, i, fmt.format(vals[i, j]), ha="center", va="center", fontsize=6)
    return im


def grid_heatmaps(tables: dict, *, metric: str, baseline: dict | None = None, title: str = "", gain: bool = True):
    """One α × β heatmap per test case.

    Args:
        tables: ``{test_case: wide grid}`` (α index, β columns), e.g. from :func:`wma_core.report.grid`.
        baseline: ``{test_case: baseline mean}``; with ``gain`` the cells show the gain over it
            (positive = better, sign flipped for MAE) on a diverging scale centred at 0.
    """
    cases = list(tables)
    ncol = min(4, len(cases))
    nrow = math.ceil(len(cases) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.6 * ncol, 2.9 * nrow), squeeze=False)
    sign = -1.0 if metric == "mae" else 1.0
    for ax, case in zip(axes.flat, cases):
        t = tables[case]
        if gain and baseline and case in baseline and baseline[case] == baseline[case]:
            shown = sign * (t - baseline[case])
            im = _heat(ax, shown, title=f"{case_label(case)}: gain over baseline", cmap="RdBu", center=0.0, fmt="{:+.3f}")
        else:
            im = _heat(ax, t, title=f"{case_label(case)}: {metric_label(metric)}", cmap="viridis" if sign > 0 else "viridis_r")
        fig.colorbar(im, ax=ax, shrink=0.8)
    for ax in list(axes.flat)[len(cases):]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def beta_curves(ours: dict, paper: dict | None = None, *, metric: str, title: str = ""):
    """Gain over the baseline against β, one panel per test case (the paper's Fig. 2, every α).

    Args:
        ours: ``{test_case: long frame}`` with columns ``alpha, beta, gain, lo, hi`` (our gain
            over our baseline, positive = better; ``lo``/``hi`` may be NaN with one seed).
        paper: the same for the paper (``alpha, beta, gain``), drawn dashed in grey shades.
    Solid lines: ours, one colour per α; dashed: the paper's α rows. β on a log-like axis
    (symlog, so β = 0, minimise-OT, is shown).
    """
    cases = list(ours)
    ncol = min(4, len(cases))
    nrow = math.ceil(len(cases) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.9 * ncol, 3.0 * nrow), squeeze=False, sharey=False)
    our_alphas = sorted({a for df in ours.values() for a in df["alpha"]})
    cmap = plt.get_cmap("viridis", max(2, len(our_alphas) + 1))
    paper_alphas = sorted({a for df in (paper or {}).values() for a in df["alpha"]})
    greys = plt.get_cmap("Greys", len(paper_alphas) + 2) if paper_alphas else None
    for ax, case in zip(axes.flat, cases):
        ax.axhline(0, color="#444", lw=0.8)
        for i, a in enumerate(our_alphas):
            df = ours[case][ours[case]["alpha"] == a].sort_values("beta")
            if df.empty:
                continue
            ax.plot(df["beta"], df["gain"], "-o", color=cmap(i), ms=3, label=f"ours α={a:g}")
            if df["lo"].notna().any():
                ax.fill_between(df["beta"], df["lo"], df["hi"], color=cmap(i), alpha=0.15)
        if paper and case in paper:
            for j, a in enumerate(paper_alphas):
                df = paper[case][paper[case]["alpha"] == a].sort_values("beta")
                if not df.empty:
                    ax.plot(df["beta"], df["gain"], "--", color=greys(j + 2), lw=1.2, label=f"paper α={a:g}")
        ax.set_xscale("symlog", linthresh=0.5)
        ax.set_xlabel("β (target = β·D0)")
        ax.set_ylabel("gain over baseline")
        ax.set_title(case_label(case), fontsize=9)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(cases):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(8, len(labels)), fontsize=7, bbox_to_anchor=(0.5, -0.02))
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


# --------------------------------------------------------------------------- explorer


def explorer_panels(record: dict, baseline: dict | None = None, *, title: str = ""):
    """The OT explorer's three panels for one run (and the baseline beside it).

    1. per-sample D on the test set (normal), every pair, with β·D0 (dotted) and D0 (dashed);
    2. mean D over training epochs (dev solid, training batches dashed) with the target line;
    3. the headline metric per test case (the run, and the baseline in grey).
    """
    c = record["config"]
    pairs = _pairs(record)
    regularised = c["alpha"] > 0 and c.get("target", "init") == "init"
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(14, 3.6))
    dists = [np.asarray(record["distances"]["normal"][p]) for p in pairs]
    hi = max([d.max() for d in dists if len(d)] + [max(record["d0"].values()) * max(c["beta"], 1.0) * 1.05 if regularised else 0.0])
    edges = np.linspace(0, max(hi, 1e-3) * 1.02, 31)
    for k, (pair, d) in enumerate(zip(pairs, dists)):
        col = PAIR_COLORS[k % len(PAIR_COLORS)]
        ax1.hist(d, bins=edges, color=col, alpha=0.45, label=f"{pair} (mean {d.mean():.3f})")
        d0 = record["d0"][pair]
        ax1.axvline(d0, color=col, ls="--", lw=1)
        if regularised:
            ax1.axvline(c["beta"] * d0, color=col, ls=":", lw=2)
    ax1.set_title("test D per sample (normal); -- D0, ··· β·D0", fontsize=9)
    ax1.set_xlabel("OT distance D")
    ax1.set_ylabel("samples")
    ax1.legend(fontsize=7)

    for k, pair in enumerate(pairs):
        col = PAIR_COLORS[k % len(PAIR_COLORS)]
        for split, ls in (("dev", "-"), ("train", "--")):
            pts = sorted((p["epoch"], p[pair]) for p in record["d_trajectory"] if pair in p and p["split"] in (split, "train_first_batch"))
            if len(pts) > 1:
                e, v = zip(*pts)
                ax2.plot(e, v, ls, marker="o", ms=3, color=col, label=f"{pair} {split}")
        if regularised:
            ax2.axhline(c["beta"] * record["d0"][pair], color=col, ls=":", lw=1.5)
    ax2.set_title("mean D over training; ··· target β·D0", fontsize=9)
    ax2.set_xlabel("epoch (0 = D0)")
    ax2.set_ylabel("mean D")
    ax2.legend(fontsize=6)
    ax2.grid(alpha=0.3)

    metric = record.get("headline_metric")
    cases = [k for k in _case_order(record["metrics"])]
    x = np.arange(len(cases))
    vals = [record["metrics"][k][metric] for k in cases]
    if baseline is not None and baseline is not record:
        bvals = [baseline["metrics"].get(k, {}).get(metric, np.nan) for k in cases]
        ax3.bar(x - 0.2, bvals, 0.4, color=COLORS["baseline"], label="baseline")
        ax3.bar(x + 0.2, vals, 0.4, color=_color(record), label=_label(record))
    else:
        ax3.bar(x, vals, 0.6, color=_color(record), label=_label(record))
    allv = np.array(vals + ([] if baseline is None else [baseline["metrics"].get(k, {}).get(metric, np.nan) for k in cases]), dtype=float)
    allv = allv[np.isfinite(allv)]
    if len(allv):
        pad = 0.1 * (allv.max() - allv.min()) + 0.02
        ax3.set_ylim(max(0, allv.min() - pad), allv.max() + pad)
    ax3.set_xticks(x, [case_label(k) for k in cases], rotation=35, ha="right", fontsize=7)
    ax3.set_ylabel(metric_label(metric))
    ax3.set_title("test metric per test case", fontsize=9)
    ax3.legend(fontsize=7)
    ax3.grid(axis="y", alpha=0.3)
    fig.suptitle(title or f"{DATASET_LABELS.get(c['dataset'], c['dataset'])}: {_label(record)}, seed {c['seed']}")
    fig.tight_layout()
    return fig


def _case_order(cases) -> list[str]:
    from .report import test_case_order

    return test_case_order(list(cases))


def slider_html(images: dict, datasets: list, alphas: dict, betas: dict, *, element_id: str = "wma-explorer") -> str:
    """A self-contained HTML block: a dataset menu, α and β sliders and JavaScript that swaps images.

    Args:
        images: ``{"<dataset>|<alpha>|<beta>": base64 PNG}``; the baseline (α = 0) is stored under
            β = the first β of that dataset (any β shows it).
        datasets: dataset names for the menu.
        alphas, betas: ``{dataset: [values]}`` (α includes 0 for the baseline).

    The page works without Python: every combination is pre-rendered and embedded.
    """
    eid = html.escape(element_id)
    payload = json.dumps({"images": images, "alphas": alphas, "betas": betas})
    options = "".join(f'<option value="{html.escape(d)}">{html.escape(DATASET_LABELS.get(d, d))}</option>' for d in datasets)
    return f"""<div id="{eid}" class="wma-explorer" style="border:1px solid #ccc;padding:8px;border-radius:6px;">
<div style="display:flex;gap:18px;align-items:center;flex-wrap:wrap;font-family:sans-serif;font-size:14px;">
<label>dataset <select class="wma-ds">{options}</select></label>
<label>α <input class="wma-a" type="range" min="0" max="0" step="1" value="0"> <span class="wma-a-val"></span></label>
<label>β <input class="wma-b" type="range" min="0" max="0" step="1" value="0"> <span class="wma-b-val"></span></label>
<span class="wma-note" style="color:#666;"></span>
</div>
<img class="wma-img" alt="OT explorer view" style="max-width:100%;margin-top:6px;">
<script type="application/json" class="wma-data">{payload}</script>
<script>
(function() {{
  var root = document.getElementById("{eid}");
  var data = JSON.parse(root.querySelector(".wma-data").textContent);
  var ds = root.querySelector(".wma-ds"), a = root.querySelector(".wma-a"), b = root.querySelector(".wma-b");
  var img = root.querySelector(".wma-img"), note = root.querySelector(".wma-note");
  function key(d, av, bv) {{ return d + "|" + av + "|" + bv; }}
  function setRanges() {{
    var d = ds.value;
    a.max = data.alphas[d].length - 1; b.max = data.betas[d].length - 1;
    if (+a.value > +a.max) a.value = a.max;
    if (+b.value > +b.max) b.value = b.max;
  }}
  function show() {{
    var d = ds.value, av = data.alphas[d][+a.value], bv = data.betas[d][+b.value];
    root.querySelector(".wma-a-val").textContent = av;
    root.querySelector(".wma-b-val").textContent = bv;
    var k = key(d, av, bv);
    if (+av === 0) {{ k = key(d, av, data.betas[d][0]); note.textContent = "α = 0: the baseline (β has no effect)"; }}
    else {{ note.textContent = ""; }}
    if (data.images[k]) {{ img.src = "data:image/png;base64," + data.images[k]; img.alt = "OT explorer: " + k; }}
    else {{ img.removeAttribute("src"); img.alt = "not run: " + k; note.textContent = "no run for " + k; }}
  }}
  ds.addEventListener("change", function() {{ setRanges(); show(); }});
  a.addEventListener("input", show); b.addEventListener("input", show);
  setRanges(); show();
}})();
</script>
</div>"""


def image_key(dataset: str, alpha: float, beta: float) -> str:
    """The key of one pre-rendered explorer view (numbers as JavaScript prints them)."""
    return f"{dataset}|{_js_num(alpha)}|{_js_num(beta)}"


def _js_num(x: float) -> str:
    x = float(x)
    return str(int(x)) if x.is_integer() else repr(x)
