"""The book's figures and tables: one function per kind of plot, shared by every notebook.

Every function takes what :mod:`wma_study.report` returns (comparison frames, grids) or raw
run records (:func:`wma_core.train.fit`) and returns a matplotlib ``Figure`` (or a pandas
``Styler`` for tables); nothing here trains or reads the store. ``from wma_study import
figures; figures.X`` reaches every name of the modules below:

- :mod:`.style`: colours, labels, type sizes (``rcParams``) and line styles;
- :mod:`.publish`: :class:`Publisher` (a figure as a PNG under ``<build>/figures/<notebook>/``,
  glued for the book's ``{glue:figure}``), PNG bytes, the figure cache (:func:`cached_png`);
- :mod:`.tables`: :func:`comparison_table`, :func:`endpoints_table`, :func:`claims_table`,
  :func:`show_table` and the other tables, with the paper beside ours;
- :mod:`.verdicts`: verdict texts, the values each chapter glues, the collapsed-run note;
- :mod:`.comparisons`: :func:`comparison_figure` (method a vs b per test case, ours with 95%
  CIs, the paper's numbers as markers, the gains side by side), :func:`methods_figure`,
  :func:`claims_figure`;
- :mod:`.distances`: :func:`d_trajectory` (mean OT distance D over training epochs against the
  target β·D0), :func:`d_histogram` (per-sample D on the test set against β·D0 and D0),
  :func:`d_vs_beta`;
- :mod:`.grids`: :func:`grid_heatmaps`, :func:`beta_curves`: the α × β grids (Fig. 2, Tables 3-6);
- :mod:`.explorer`: :func:`explorer_panels`, :func:`slider_html`: the OT explorer and its static,
  JS-driven view;
- :mod:`.training`: :func:`pretraining_curves`, :func:`probe_curves`, :func:`timing_bars`.

Colours: baseline grey, WMA blue, minimise-OT red, WMA with the ``batch`` target purple; the
paper is always black (markers, dashed lines).
"""

from __future__ import annotations

from .style import (
    COLORS, METHOD_LABELS, DATASET_LABELS, METRIC_LABELS, PAIR_COLORS, DPI, MARKERS, LINESTYLES, PAIR_HATCHES,
    BAR_HATCHES, line_style, case_label, metric_label,
)
from .publish import build_dir, figure_dir, Publisher, fig_to_png, cached_png, placeholder
from .tables import (
    show_table, comparison_frame, report_min_seeds, VERDICT_COLORS, p_text, comparison_table, endpoints_frame,
    endpoints_table, claims_table, data_summary, target_text, runs_table,
)
from .verdicts import verdict, headline_glue, collapse_note
from .comparisons import comparison_figure, method_summary, methods_figure, claims_figure
from .distances import trajectory_frame, d_trajectory, d_histogram, d_ratio, distance_table, d_vs_beta
from .grids import PAPER_GRID_TABLE, our_grid, paper_grid, paper_baseline, grid_heatmaps, beta_curves
from .explorer import explorer_panels, slider_html, image_key
from .training import pretraining_curves, probe_curves, timing_bars

__all__ = [
    "COLORS", "METHOD_LABELS", "DATASET_LABELS", "METRIC_LABELS", "PAIR_COLORS", "DPI", "MARKERS", "LINESTYLES",
    "PAIR_HATCHES", "BAR_HATCHES", "line_style", "case_label", "metric_label", "build_dir", "figure_dir",
    "Publisher", "fig_to_png", "cached_png", "placeholder", "show_table", "comparison_frame", "report_min_seeds",
    "VERDICT_COLORS", "p_text", "comparison_table", "endpoints_frame", "endpoints_table", "claims_table",
    "data_summary", "target_text", "runs_table", "verdict", "headline_glue", "collapse_note", "comparison_figure",
    "method_summary", "methods_figure", "claims_figure", "trajectory_frame", "d_trajectory", "d_histogram",
    "d_ratio", "distance_table", "d_vs_beta", "PAPER_GRID_TABLE", "our_grid", "paper_grid", "paper_baseline",
    "grid_heatmaps", "beta_curves", "explorer_panels", "slider_html", "image_key", "pretraining_curves",
    "timing_bars", "probe_curves",
]
