"""The noise calibration file, read: the relative noise amplitudes per dataset and modality,
the paper's drops they aim at, and the first-step terms that map α between the paper and the
miniature. :mod:`wma_study.calibrate` is the command that writes the file; its docstring holds
the method. This module never trains anything."""

from __future__ import annotations

import json
import math
from pathlib import Path

from .profiles import PAPER_SELECTED, ROOT, get_profile

#: Where the calibration lives (committed; the default profile reads it).
CALIBRATION_PATH = ROOT / "book" / "data" / "noise_calibration.json"
#: The smallest drop aimed at, in the headline metric's units (so that noise always hurts).
MIN_DROP = 0.01
MODALITIES = {"hateful_memes": ("text", "image"), "mmimdb": ("text", "image"),
              "ur_funny": ("text", "video", "audio"), "mosei": ("text", "video", "audio")}


def load_calibration(path: str | Path | None = None) -> dict:
    """The calibration file, validated: ``{"datasets": {ds: {m: {"amplitude": a, ...}}}, ...}``."""
    path = Path(path) if path is not None else CALIBRATION_PATH
    if not path.exists():
        raise FileNotFoundError(f"{path}: no noise calibration; make it with `python -m wma_study.calibrate`")
    try:
        cal = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(cal, dict) or cal.get("mode") != "relative" or not isinstance(cal.get("datasets"), dict):
        raise ValueError(f"{path}: expected an object with mode 'relative' and a 'datasets' object")
    for ds, mods in cal["datasets"].items():
        for m, entry in (mods or {}).items():
            a = entry.get("amplitude") if isinstance(entry, dict) else None
            if not isinstance(a, (int, float)) or not math.isfinite(a) or a < 0:
                raise ValueError(f"{path}: datasets.{ds}.{m}.amplitude must be a finite number >= 0, got {a!r}")
    return cal


def calibrated_amplitudes(dataset: str, path: str | Path | None = None) -> dict:
    """``{modality: a}`` for ``dataset`` from the calibration file (every modality of the dataset)."""
    cal = load_calibration(path)
    entry = cal["datasets"].get(dataset)
    want = MODALITIES[dataset]
    if not entry or any(m not in entry for m in want):
        raise KeyError(
            f"{path or CALIBRATION_PATH}: no calibrated amplitude for {dataset} "
            f"(need {list(want)}, have {sorted(entry or {})}); run `python -m wma_study.calibrate --datasets {dataset}`"
        )
    return {m: float(entry[m]["amplitude"]) for m in want}


def paper_drops(dataset: str) -> dict:
    """``{modality: s * (normal - m_noise)}`` of the paper's Table 1 baseline (positive = worse)."""
    from .paper import METRICS, load_paper_results
    from .report import greater_is_better

    p = load_paper_results()
    base = p[(p["table"] == 1) & (p["dataset"] == dataset) & (p["method"] == "baseline")].set_index("test_case")["value"]
    s = 1.0 if greater_is_better(METRICS[dataset]) else -1.0
    return {m: round(s * float(base["normal"] - base[f"{m}_noise"]), 6) for m in MODALITIES[dataset]}


def first_step_ratio(terms: dict, alpha: float, beta: float) -> float:
    """``R(α, β) / L`` at the first step from :func:`first_step_terms` (see there)."""
    r = sum(t["var"] + ((1.0 - beta) * t["d0"]) ** 2 for t in terms["pairs"].values())
    return float(alpha) * r / terms["task_loss"]


def summary_frame(cal: dict | None = None):
    """One row per (dataset, modality): amplitude, our dev and test drops, the paper's drop, the
    target, whether the chosen noise hurts by at least ``min_drop`` on dev, and whether it was
    calibrated on that dataset."""
    import pandas as pd

    cal = cal or load_calibration()
    rows = []
    for ds, mods in cal["datasets"].items():
        for m, e in mods.items():
            rows.append({"dataset": ds, "modality": m, "amplitude": e["amplitude"], "dev drop": e["dev_drop"],
                         "test drop": e.get("test_drop", float("nan")), "paper drop": e["paper_drop"],
                         "target drop": e["target_drop"],
                         "hurts on dev": {True: "yes", False: "no"}.get(e.get("hurts"), "not measured"),
                         "calibrated": "yes" if e.get("calibrated", True) else f"no (from {e.get('transferred_from')})"})
    return pd.DataFrame(rows)


def alpha_mapping_frame(cal: dict | None = None, alphas=None, betas=None):
    """How α maps between the paper and the default grid: the first-step ratio ``R/L`` of the
    regulariser to the task loss (:func:`first_step_ratio`), per dataset, at the paper's
    selected (α, β) and over the default grid's cells (smallest..largest over its β)."""
    import pandas as pd

    cal = cal or load_calibration()
    prof = get_profile(cal.get("scale", "default"))
    alphas = [a for a in (alphas or prof.alpha_grid) if a > 0]
    betas = list(betas or prof.beta_grid)
    rows = []
    for ds, terms in cal.get("first_step", {}).items():
        pa, pb = PAPER_SELECTED[ds]
        row = {"dataset": ds, "task loss L": terms["task_loss"],
               "D0": ", ".join(f"{t['d0']:.3f}" for t in terms["pairs"].values()),
               "paper's (α, β)": f"{pa:g}, {pb:g}", "R/L at the paper's (α, β)": first_step_ratio(terms, pa, pb)}
        for a in (0.1, 0.2, 1.0, 5.0):  # the paper's α grid, at the paper's β for this dataset
            row[f"R/L, α={a:g}, paper's β"] = first_step_ratio(terms, a, pb)
        for a in alphas:
            r = [first_step_ratio(terms, a, b) for b in betas]
            row[f"R/L ours α={a:g} (β {min(betas):g}..{max(betas):g})"] = f"{min(r):.3f}..{max(r):.3f}"
        rows.append(row)
    return pd.DataFrame(rows)
