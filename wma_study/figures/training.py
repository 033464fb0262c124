"""How training went and what it costs: the pretraining losses and held-out accuracies
(:func:`pretraining_curves`) and benchmark times per step (:func:`timing_bars`)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from .style import line_style


def pretraining_curves(steps: pd.DataFrame, epochs: pd.DataFrame):
    """Pretraining at a glance: the three losses per step (thin: each step, thick: running mean,
    columns ``mlm``, ``itm``, ``wpa`` and ``*_smooth`` of :func:`wma_study.pretrain_study.loss_curves`)
    and, per epoch, the held-out image-text matching accuracy and masked-word accuracy with and
    without the image (columns ``dev_*`` of ``pretrain.json``'s epoch history)."""
    fig, grid = plt.subplots(2, 2, figsize=(10, 7.0))
    axes = grid.ravel()
    for ax, (k, title) in zip(axes, [("mlm", "masked language modelling"), ("itm", "image-text matching"),
                                     ("wpa", "word-patch alignment")]):
        ax.plot(steps.index, steps[k], alpha=0.25, lw=0.8, color="C0")
        ax.plot(steps.index, steps[f"{k}_smooth"], lw=1.8, color="C0")
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
    ax = axes[3]
    cols = [("dev_itm_accuracy", "ITM accuracy"), ("dev_itm_accuracy_hard", "ITM accuracy, hard negatives"),
            ("dev_mlm_accuracy_with_image", "masked words, with image"),
            ("dev_mlm_accuracy_without_image", "masked words, image missing")]
    for i, (c, label) in enumerate(cols):
        if c in epochs:
            ax.plot(epochs["epoch"], epochs[c], label=label, **line_style(i))
    ax.set_ylim(0, 1)
    ax.set_xlabel("epoch")
    ax.set_title("held-out accuracy")
    # below the panel: inside it, the legend would hide the hard-negative curve near 0.5
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def timing_bars(labels, ms, colors, *, unit: str, legend: str):
    """Horizontal bars of times in ms (one per benchmark entry), log scale when they span > 20x."""
    ms = list(ms)
    fig, ax = plt.subplots(figsize=(8, 0.5 + 0.35 * len(ms)))
    ax.barh(list(labels), ms, color=list(colors))
    wide = max(ms) / max(min(ms), 1e-9) > 20
    if wide:
        ax.set_xscale("log")
    ax.set_xlabel(f"ms per {unit}" + (" (log scale)" if wide else "") + f"; {legend}")
    ax.invert_yaxis()
    ax.grid(axis="x", alpha=0.3, which="both")
    fig.tight_layout()
    return fig


def probe_curves(probes: pd.DataFrame):
    """Dev AUROC of linear probes on frozen features against the layer, one panel per (dataset,
    modality), a line per weights (columns of :func:`wma_study.probes.probe_table`): backbones
    solid, random initialisation dotted grey; each panel has its own y scale."""
    from .style import DATASET_LABELS

    panels = list(probes[["dataset", "modality"]].drop_duplicates().itertuples(index=False))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.6), squeeze=False, sharey=False)
    for ax, (ds, m) in zip(axes[0], panels):
        sub = probes[(probes.dataset == ds) & (probes.modality == m)]
        for i, (w, g) in enumerate(sub.groupby("weights", sort=False)):
            g = g.sort_values("layer")
            style = {"color": "grey", "linestyle": ":", "marker": "x"} if w == "random init" else \
                {"linestyle": "-", "marker": line_style(i)["marker"]}
            ax.plot(g["layer"], g["auroc"], label=w, **style)
        ax.set_title(f"{DATASET_LABELS.get(ds, ds)}: {m} tokens")
        ax.set_xlabel("layer (0: embeddings)")
        ax.set_xticks(sorted(sub["layer"].unique()))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("dev AUROC of a linear probe")
    axes[0][-1].legend(fontsize=9, frameon=False)
    fig.tight_layout()
    return fig
