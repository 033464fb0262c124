"""The experiment around the method (:mod:`wma_core`): profiles, sweeps, calibration,
statistics, report and figures.

The names a chapter calls most are re-exported here, so ``from wma_study import prepare_data,
method_configs, run_trials`` works; each is imported on first use (PEP 562), so importing one
module of the package does not import them all.

=================  ==================================================================
module             holds
=================  ==================================================================
``profiles``       the three scales (smoke, default, paper) and the paper's selected cells
``experiments``    from a chapter's parameters to prepared data and run configurations
``sweep``          the trials of a chapter on Ray (or in process), resumable
``calibration``    the noise-calibration file, read
``calibrate``      the command that writes it (``python -m wma_study.calibrate``)
``stats``          paired intervals, power and MDE, Holm, pooling, the selection null
``report``         records -> frames, comparisons and verdicts, α × β grids
``figures``        style, publishing, tables, comparisons, distances, grids
``paper``          the paper's printed numbers; ``paper_grids`` its Tables 3-6
``budget``         where the build's CPU time went
``chapters``       the pieces the dataset chapters and the summary share
``pretrain_study`` the pretraining chapter's measurements
=================  ==================================================================
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "DATASETS": "profiles", "PAPER_SELECTED": "profiles", "PROFILES": "profiles", "get_profile": "profiles",
    "chapter_alpha": "experiments", "chapter_selection": "experiments", "method_configs": "experiments",
    "prepare_data": "experiments", "resolve_model": "experiments", "results_dir": "experiments",
    "run_configs": "experiments", "run_trials": "sweep",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
