"""OT-distance plots and tables from run records.

- :func:`d_trajectory`, :func:`trajectory_frame`: mean OT distance D over training epochs
  against the target β·D0;
- :func:`d_histogram`: per-sample D on the test set against β·D0 and D0;
- :func:`d_ratio`, :func:`distance_table`, :func:`d_vs_beta`: where the runs' modalities ended
  up, D / D0 against β.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .style import BAR_HATCHES, COLORS, DATASET_LABELS, MARKERS, _color, _label, _panels, case_label, line_style
from .tables import target_text


def _pairs(record: dict) -> list[str]:
    return list(record.get("d0") or {})


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
    fig, axes = _panels(len(pairs), 4.8, 3.6)
    groups: dict[str, list] = {}
    for rec in records:
        groups.setdefault(_label(rec), []).append(rec)
    for ax, pair in zip(axes.flat, pairs):
        for g, (label, recs) in enumerate(groups.items()):
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
                    ax.plot(curves[0][0][:n], mean, ls, color=color, lw=2, marker=MARKERS[g % len(MARKERS)], ms=5,
                            label=f"{label} ({split})" if split == "dev" or recs[0]["config"]["alpha"] > 0 else None)
            c = recs[0]["config"]
            if c["alpha"] > 0 and c.get("target", "init") == "init":
                target = c["beta"] * float(np.mean([r["d0"][pair] for r in recs]))
                ax.axhline(target, color=color, ls=":", lw=1.5)
                ax.annotate(f"β·D0 = {target:.3f}", (1.0, target), xycoords=("axes fraction", "data"), fontsize=11,
                            color=color, ha="right", va="bottom")
        ax.set_title(f"pair {pair}")
        ax.set_xlabel("epoch (0 = D0, first batch at initialisation)")
        ax.set_ylabel("mean OT distance D")
        ax.grid(alpha=0.3)
    if pairs:
        axes.flat[0].legend(fontsize=11)
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
    fig, axes = _panels(len(pairs), 4.8, 3.5)
    groups: dict[str, list] = {}
    for rec in records:
        groups.setdefault(_label(rec), []).append(rec)
    for ax, pair in zip(axes.flat, pairs):
        all_d = np.concatenate([np.asarray(r["distances"][test_case][pair]) for r in records])
        edges = np.linspace(min(all_d.min(), 0.0), max(all_d.max(), 1e-3), bins + 1) if len(all_d) else bins
        d0 = float(np.mean([r["d0"][pair] for r in records]))
        for g, (label, recs) in enumerate(groups.items()):
            d = np.concatenate([np.asarray(r["distances"][test_case][pair]) for r in recs])
            color = _color(recs[0])
            ax.hist(d, bins=edges, color=color, alpha=0.45, hatch=BAR_HATCHES[g % len(BAR_HATCHES)],
                    label=f"{label} (mean {d.mean():.3f})")
            c = recs[0]["config"]
            if c["alpha"] > 0 and c.get("target", "init") == "init":
                ax.axvline(c["beta"] * float(np.mean([r["d0"][pair] for r in recs])), color=color, ls=":", lw=2)
        ax.axvline(d0, color="#555", ls="--", lw=1, label=f"D0 = {d0:.3f}")
        ax.set_title(f"pair {pair}, test case {case_label(test_case)}")
        ax.set_xlabel("OT distance D per test sample")
        ax.set_ylabel("samples")
        ax.legend(fontsize=11)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def d_ratio(record: dict, test_case: str = "normal") -> float:
    """Mean over pairs of (mean test D on ``test_case``) / D0: where the run's modalities ended up."""
    vals = [float(np.mean(record["distances"][test_case][p])) / record["d0"][p] for p in _pairs(record) if record["d0"][p] > 0]
    return float(np.mean(vals)) if vals else float("nan")


def distance_table(records) -> pd.DataFrame:
    """Per run: dataset, α, β, seed, D0 and mean test D (means over pairs), D / D0, the target β, the headline metric (normal test)."""
    rows = []
    for r in records:
        c = r["config"]
        m = r.get("headline_metric")
        pairs = _pairs(r)
        rows.append({
            "dataset": DATASET_LABELS.get(c["dataset"], c["dataset"]), "method": c["method"], "α": f"{c['alpha']:g}",
            "β": f"{c['beta']:g}" if c["method"] != "baseline" else "–", "seed": c["seed"],
            "D0": float(np.mean([r["d0"][p] for p in pairs])),
            "mean test D": float(np.mean([np.mean(r["distances"]["normal"][p]) for p in pairs])),
            "D / D0": d_ratio(r), "target D / D0": c["beta"] if c["alpha"] > 0 and c.get("target", "init") == "init" else np.nan,
            "target β·D0": target_text(r),
            "metric": m, "test (normal)": r["metrics"]["normal"].get(m, np.nan), "key": r.get("key", ""),
        })
    return pd.DataFrame(rows)


def d_vs_beta(records, *, title: str = ""):
    """OT distance against β: mean test D / D0 per dataset (panels) and α (lines).

    The dashed diagonal is WMA's target (D / D0 = β); the grey line is the baseline, the red
    point at β = 0 with α > 0 is minimise-OT. Seeds are averaged.
    """
    rows = [{"dataset": r["config"]["dataset"], "alpha": r["config"]["alpha"], "beta": r["config"]["beta"],
             "method": r["config"]["method"], "ratio": d_ratio(r)} for r in records if r["config"].get("target", "init") == "init"]
    df = pd.DataFrame(rows)
    dss = list(dict.fromkeys(df["dataset"])) if len(df) else []
    ncol = min(2, max(1, len(dss)))
    nrow = max(1, math.ceil(len(dss) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(5.2 * ncol, 3.6 * nrow), squeeze=False)
    for ax in list(axes.flat)[len(dss):]:
        ax.axis("off")
    for ax, ds in zip(axes.flat, dss):
        sub = df[df["dataset"] == ds]
        reg = sub[sub["method"] != "baseline"]
        alphas = sorted(reg["alpha"].unique())
        cmap = plt.get_cmap("viridis", max(2, len(alphas) + 1))
        bmax = max(reg["beta"].max() if len(reg) else 1.0, 1.0)
        ax.plot([0, bmax], [0, bmax], color="black", ls=(0, (1, 1.5)), lw=1.2, label="target D/D0 = β")
        for i, a in enumerate(alphas):
            g = reg[reg["alpha"] == a].groupby("beta")["ratio"].mean()
            ax.plot(g.index, g.values, color=cmap(i), ms=6, lw=1.6, label=f"α={a:g}", **line_style(i))
        base = sub[sub["method"] == "baseline"]["ratio"].mean()
        if base == base:
            ax.axhline(base, color=COLORS["baseline"], lw=1.5, label="baseline")
        ax.set_title(DATASET_LABELS.get(ds, ds), fontsize=11)
        ax.set_xlabel("β")
        ax.set_ylabel("mean test D / D0 (normal)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=11)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
