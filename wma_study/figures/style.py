"""Colours, labels, type sizes and line styles shared by every figure and table of the book.

Importing this module sets matplotlib's ``rcParams`` (type sizes for figures read at the page's
width). Colours: baseline grey, WMA blue, minimise-OT red, WMA with the ``batch`` target purple;
the paper is always black (markers, dashed lines). Lines and bars also differ by marker, line
style or hatch (:data:`MARKERS`, :data:`LINESTYLES`, :data:`PAIR_HATCHES`, :data:`BAR_HATCHES`,
:func:`line_style`). Also here: the display names of test cases and metrics
(:func:`case_label`, :func:`metric_label`), the label and colour of one run record, and the
panel grid that the multi-panel figures start from.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt

COLORS = {"baseline": "#7f7f7f", "wma": "#1f77b4", "min_ot": "#d62728", "l2sp": "#2ca02c", "batch": "#9467bd", "paper": "#000000"}
METHOD_LABELS = {"baseline": "baseline (ViLT)", "wma": "WMA", "min_ot": "minimise OT (β = 0)", "l2sp": "L2-SP"}
DATASET_LABELS = {"hateful_memes": "Hateful Memes", "mmimdb": "MM-IMDb", "ur_funny": "UR-FUNNY", "mosei": "CMU-MOSEI"}
METRIC_LABELS = {"auroc": "AUROC", "f1_macro": "F1 (macro)", "mae": "MAE (lower is better)"}
PAIR_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c"]
DPI = 100
# Type sizes for figures read at the page's width: the book's text column is about 730 px wide,
# so a 10-inch figure is shown at about 3/4 of its size; nothing is set below 11 pt (about 9 pt
# or more on the page).
plt.rcParams.update({"font.size": 12, "axes.titlesize": 12, "axes.labelsize": 12, "xtick.labelsize": 11,
                     "ytick.labelsize": 11, "legend.fontsize": 11, "figure.titlesize": 13, "legend.framealpha": 0.9})
# Lines and bars differ by marker, line style or hatch as well as by colour (readable in grey, and
# for readers who do not tell the colours apart).
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
LINESTYLES = ["-", "--", "-.", ":"]
PAIR_HATCHES = ["", "//", ".."]
BAR_HATCHES = ["", "//", "..", "xx", "\\\\", "--"]


def line_style(i: int) -> dict:
    """Marker and line style of the ``i``-th line of a panel (cycled)."""
    return {"marker": MARKERS[i % len(MARKERS)], "linestyle": LINESTYLES[i % len(LINESTYLES)]}


def case_label(case: str) -> str:
    """``"image_missing"`` → ``"image missing"``."""
    return case.replace("_", " ")


def metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric)


def _label(record: dict) -> str:
    c = record["config"]
    if c["method"] == "baseline":
        return "baseline"
    if c["method"] == "l2sp":
        return f"L2-SP λ={c['l2sp']:g}"
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


def _panels(n: int, w: float, h: float, ncol_max: int = 2):
    """A grid of ``n`` panels, at most ``ncol_max`` per row; unused axes switched off."""
    ncol = min(ncol_max, max(1, n))
    nrow = max(1, math.ceil(n / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(w * ncol, h * nrow), squeeze=False)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    return fig, axes
