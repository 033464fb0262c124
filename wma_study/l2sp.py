"""The L2-SP control: its strength per dataset, chosen on its own dev runs, never on WMA's.

WMA keeps one statistic of the token geometry, the OT distance D, near β·D0. A method that simply
keeps the whole network near its starting weights would also keep D near D0, so a WMA gain alone
cannot say whether WMA helps by *keeping the alignment* or by *staying near the start*. L2-SP
(:class:`wma_core.losses.L2SP`, ``(λ/2)·||θ − θ0||²`` over the backbone) is the second kind, and
the book trains it as a third method beside the baseline and WMA.

Its strength ``λ`` is chosen once per dataset, before the comparison is read, by the rule::

    score(λ) = mean over SEEDS of the dev headline metric of the L2-SP run at λ
    λ*       = the λ of GRID with the best score (ties: the weaker λ)

on dev only (no test split, no WMA run). :data:`SEEDS` has one seed per backbone (0 and 4 with
the default profile's 2 × 4 design), so the choice does not lean on one pretraining. The choice
and every score go into the pre-registration file (``choices["l2sp"]``, :mod:`.preregistration`),
which :func:`strength` reads::

    python -m wma_study.l2sp               # trains the grid (reuses stored runs), writes the file
    python -m wma_study.l2sp --dry-run     # prints the choice, writes nothing
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import pandas as pd

from .experiments import DATASETS, get_profile, prepare_data, results_dir, run_configs
from .report.runs import HEADLINE, greater_is_better

#: L2-SP strengths tried. The backbone moves ||θ − θ0|| ≈ 6 in a Hateful Memes baseline run (4
#: epochs), so ``(λ/2)·36`` runs from about 0.002 to 18 against a task loss of about 0.4-0.6:
#: from negligible to dominant. (A first grid of 0.001-0.1 chose its edge on three datasets.)
GRID = (0.0001, 0.001, 0.01, 0.1, 1.0)
#: training seeds of the choice: one per backbone of the default profile (0-3 and 4-7)
SEEDS = (0, 4)


def strength_configs(dataset: str, scale: str = "default", grid=GRID, seeds=SEEDS) -> list:
    """The L2-SP runs of the choice: one per (λ, seed), the profile's recipe otherwise."""
    data_dir = prepare_data(dataset, scale)
    out = []
    for lam in grid:
        out += run_configs(dataset, data_dir, scale, alphas=(0.0,), seeds=seeds, l2sp=float(lam))
    return out


def choose(records: list, dataset: str) -> dict:
    """``{"strength", "scores", "seeds"}``: the λ with the best mean dev headline over its seeds
    (ties: the smaller λ) and the score of every λ (``{λ: mean dev headline}``)."""
    metric = HEADLINE[dataset]
    rows = [{"l2sp": float(r["config"]["l2sp"]), "seed": r["config"]["seed"], "dev": r["dev_metrics"][metric]}
            for r in records if r["config"]["dataset"] == dataset and float(r["config"].get("l2sp") or 0) > 0]
    if not rows:
        raise ValueError(f"no L2-SP run of {dataset} among the {len(records)} records")
    df = pd.DataFrame(rows)
    scores = df.groupby("l2sp")["dev"].mean().sort_index()
    vals = scores.to_numpy()
    best = float(np.nanmax(vals) if greater_is_better(metric) else np.nanmin(vals))
    lam = float(scores.index[np.flatnonzero(vals == best)[0]])  # sorted ascending: ties go to the weaker λ
    return {"strength": lam, "scores": {f"{k:g}": float(v) for k, v in scores.items()},
            "seeds": sorted(int(s) for s in df["seed"].unique()), "metric": metric}


def strength(dataset: str, path=None) -> float | None:
    """The pre-registered L2-SP strength of ``dataset`` (``None``: not chosen yet, so the book
    trains no L2-SP runs for it)."""
    from . import preregistration

    entry = preregistration.load(path)["choices"].get("l2sp", {}).get("strength")
    if not entry:
        return None
    value = entry["value"].get(dataset)
    return None if value is None else float(value)


def register(choices: dict, path=None) -> None:
    """Merge ``{dataset: choose(...)}`` into the pre-registration file's ``choices["l2sp"]``
    (datasets not in ``choices`` keep their entry)."""
    from pathlib import Path

    from . import preregistration

    path = Path(path or preregistration.PATH)
    doc = preregistration.load(path)
    old = doc["choices"].get("l2sp", {}).get("strength", {})
    value = {**old.get("value", {}), **{ds: c["strength"] for ds, c in choices.items()}}
    scores = {**old.get("scores", {}), **{ds: {"metric": c["metric"], "seeds": c["seeds"], "dev": c["scores"]}
                                          for ds, c in choices.items()}}
    evidence = "; ".join(f"{ds}: dev {sc['metric']} " + ", ".join(f"λ={k} {v:.3f}" for k, v in sc["dev"].items())
                         + f" (seeds {sc['seeds']})" for ds, sc in scores.items())
    doc["choices"]["l2sp"] = {"strength": {
        "value": value, "scores": scores,
        "evidence": "L2-SP's own dev runs only (no WMA run, no test split), best mean over one seed per backbone, "
                    f"ties to the weaker strength (python -m wma_study.l2sp): {evidence}"}}
    path.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def main(argv=None) -> int:
    from .sweep import run_trials

    ap = argparse.ArgumentParser(prog="python -m wma_study.l2sp", description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", default="default", choices=["smoke", "default"])
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    ap.add_argument("--executor", default="ray", choices=["ray", "local"])
    ap.add_argument("--dry-run", action="store_true", help="print the choice; do not write the pre-registration file")
    args = ap.parse_args(argv)
    get_profile(args.scale)
    configs = [c for ds in args.datasets for c in strength_configs(ds, args.scale)]
    records = run_trials(configs, results_dir(), executor=args.executor, progress=True)
    choices = {ds: choose(records, ds) for ds in args.datasets}
    for ds, c in choices.items():
        print(f"{ds}: λ = {c['strength']:g}  (dev {c['metric']}: {c['scores']})")
    if not args.dry_run:
        register(choices)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
