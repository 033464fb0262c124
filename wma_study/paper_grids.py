"""The paper's own α × β grids (Tables 3-6) read against its Table 1 baseline: no training at all.

The paper searched a grid of (α, β) per dataset and reports in Table 1 the cell that is best on the
test set. Its appendix prints every cell, so the grid itself says how much of the reported gain a
best-of-K choice explains. Per dataset and test case, :func:`grid_summary` gives

- ``k``: the number of printed cells (Table 3/4/5/6; the minimise-OT row of Table 2 is not a cell);
- ``share_above``: the share of cells strictly above the Table 1 baseline;
- ``median_gain``, ``max_gain``: the median and the best cell's gain over the baseline;
- ``expected_max``: the expected best of ``k`` draws from the grid's own cells
  (:func:`wma_study.stats.expected_max`): what choosing the best of ``k`` would give if α and β did
  not matter and the cells were exchangeable draws;
- ``selected_gain``: the gain of the cell the paper selected (:data:`wma_study.experiments.PAPER_SELECTED`)
  and ``table1_gain``, Table 1's WMA row minus its baseline (equal, except for MOSEI's swap);
- ``selected_is_max``: whether the selected cell is the grid's maximum on that test case.

Gains are positive when the cell is better (for MOSEI's MAE, lower is better: ``baseline - cell``).
**Excluded**: MOSEI's text-missing and video-missing cases. Table 1's WMA row prints the values of
Table 6's selected cell with these two columns swapped, so which of the two numbers belongs to
which test case cannot be decided from the paper (:data:`EXCLUDED`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .paper import load_paper_results
from .stats import expected_max

GRID_TABLE = {"hateful_memes": 3, "mmimdb": 4, "ur_funny": 5, "mosei": 6}
#: (dataset, test case) left out, and why
EXCLUDED = {
    ("mosei", "text_missing"): "Table 1 and Table 6 swap the text- and video-missing values of the selected cell",
    ("mosei", "video_missing"): "Table 1 and Table 6 swap the text- and video-missing values of the selected cell",
}
COLUMNS = ["dataset", "test_case", "metric", "k", "baseline", "share_above", "median_gain", "max_gain", "expected_max",
           "selected_gain", "table1_gain", "selected_is_max"]


def _sign(metric: str) -> float:
    return -1.0 if metric == "mae" else 1.0


def cell_gains(dataset: str, test_case: str, paper: pd.DataFrame | None = None) -> pd.DataFrame:
    """The printed cells of one dataset's grid on one test case: ``alpha, beta, value, gain``."""
    p = load_paper_results() if paper is None else paper
    p = p[(p["dataset"] == dataset) & (p["test_case"] == test_case)]
    base = p[(p["table"] == 1) & (p["method"] == "baseline")]["value"]
    cells = p[p["table"] == GRID_TABLE[dataset]][["alpha", "beta", "value", "metric"]].sort_values(["alpha", "beta"])
    b = float(base.iloc[0]) if len(base) else float("nan")
    out = cells[["alpha", "beta", "value"]].reset_index(drop=True)
    out["gain"] = _sign(cells["metric"].iloc[0] if len(cells) else "") * (out["value"] - b)
    out.attrs["baseline"] = b
    return out


def grid_summary(datasets=None, paper: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per (dataset, test case) of the paper's grids: see the module docstring (:data:`COLUMNS`)."""
    from .experiments import PAPER_SELECTED
    from .report import test_case_order

    p = load_paper_results() if paper is None else paper
    datasets = list(datasets or GRID_TABLE)
    rows = []
    for ds in datasets:
        grid = p[(p["dataset"] == ds) & (p["table"] == GRID_TABLE[ds])]
        metric = grid["metric"].iloc[0]
        sign = _sign(metric)
        table1 = p[(p["dataset"] == ds) & (p["table"] == 1)]
        for case in test_case_order(grid["test_case"].unique()):
            if (ds, case) in EXCLUDED:
                continue
            g = cell_gains(ds, case, p)
            base = g.attrs["baseline"]
            a, b = PAPER_SELECTED[ds]
            sel = g[np.isclose(g["alpha"], a) & np.isclose(g["beta"], b)]["gain"]
            w = table1[(table1["method"] == "wma") & (table1["test_case"] == case)]["value"]
            sel_gain = float(sel.iloc[0]) if len(sel) else float("nan")
            rows.append({
                "dataset": ds, "test_case": case, "metric": metric, "k": len(g), "baseline": base,
                "share_above": float((g["gain"] > 0).mean()), "median_gain": float(g["gain"].median()),
                "max_gain": float(g["gain"].max()), "expected_max": expected_max(g["gain"]),
                "selected_gain": sel_gain,
                "table1_gain": sign * (float(w.iloc[0]) - base) if len(w) else float("nan"),
                "selected_is_max": bool(len(sel) and np.isclose(sel_gain, g["gain"].max())),
            })
    return pd.DataFrame(rows, columns=COLUMNS)
