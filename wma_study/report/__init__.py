"""From the results store to the book's tables: runs, comparisons with CIs, model selection, grids.

Everything here reads the records written by :func:`wma_core.train.fit` (directly or through
:mod:`wma_study.sweep`):

- :func:`runs_frame`: one row per (run, split, test case, metric);
- :func:`comparison`: baseline vs WMA (or min-OT vs WMA) per test case, mean ± 95% CI over
  seeds, the seed-paired difference, its p-value (Holm-corrected on the secondary cases), our
  minimum detectable effect and the verdict, next to the paper's Table 1/2 numbers;
- :func:`endpoints`, :func:`pooled`: the three primary endpoints (normal, mean over noise cases,
  mean over missing cases; per seed, paired) with :func:`verdict` from a fixed vocabulary, and one
  effect per endpoint pooled over the datasets;
- :func:`select`: model selection, the paper's way (lr, α, β chosen on the test split) and the
  clean way (chosen on the dev split only);
- :func:`grid`: the α × β table of one test case (β-curves, heatmaps); :func:`grid_gains`: every
  cell against all baseline seeds; :func:`selection_table`: the best cell beside the selection null;
- :func:`is_collapsed`: a run that predicts a constant (reported as "collapsed run", never as a loss);
  :func:`stayed_at_prior`: a constant run that predicts the label prior (reported as "never left the
  prior"); :func:`failure_kind`: which of the two, if any.

Signs: every "gain" and "diff" is oriented so that **positive means b is better** (for MAE,
lower is better, so the gain is ``a - b``).

The package is split by concern, imports pointing one way (``runs`` at the bottom):

- :mod:`.runs`: records → frames (:func:`runs_frame`, :func:`records_frame`, :func:`is_collapsed`,
  :func:`stayed_at_prior`, :func:`failure_kind`, :func:`target_reachable`), the column constants,
  selections on the frame, :func:`headline`, :func:`greater_is_better`, :func:`test_case_order`,
  :func:`format_ci` and the best-cell helpers;
- :mod:`.comparisons`: :func:`comparison`, :func:`verdict`, :func:`verdict_category`,
  :func:`endpoints`, :func:`pooled` and their texts (:data:`VERDICTS`, :data:`FAILED_FIT`,
  :data:`MIN_SEEDS_TEXT`, :data:`PRIMARY_ENDPOINTS_TEXT`);
- :mod:`.grids`: :func:`select`, :func:`grid`, :func:`grid_gains`, :func:`selection_table`.

Every name is importable from ``wma_study.report`` itself.
"""

from __future__ import annotations

from .comparisons import (
    ENDPOINTS,
    FAILED_FIT,
    MIN_SEEDS_TEXT,
    PRIMARY_ENDPOINTS_TEXT,
    VERDICTS,
    comparison,
    endpoints,
    pooled,
    verdict,
    verdict_category,
)
from .grids import grid, grid_gains, select, selection_table
from .runs import (
    CELL,
    CONFIG_COLUMNS,
    CONSTANT_HEADLINE,
    HEADLINE,
    MODALITY_ORDER,
    PRIOR_TOL,
    RUN_COLUMNS,
    failure_kind,
    format_ci,
    greater_is_better,
    headline,
    is_collapsed,
    records_frame,
    runs_frame,
    stayed_at_prior,
    target_reachable,
    test_case_order,
)

__all__ = [
    "CELL", "CONFIG_COLUMNS", "CONSTANT_HEADLINE", "ENDPOINTS", "FAILED_FIT", "HEADLINE", "MIN_SEEDS_TEXT",
    "MODALITY_ORDER", "PRIMARY_ENDPOINTS_TEXT", "PRIOR_TOL", "RUN_COLUMNS", "VERDICTS",
    "comparison", "endpoints", "failure_kind", "format_ci", "greater_is_better", "grid", "grid_gains", "headline",
    "is_collapsed", "pooled", "records_frame", "runs_frame", "select", "selection_table", "stayed_at_prior",
    "target_reachable", "test_case_order", "verdict", "verdict_category",
]
