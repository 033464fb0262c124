"""Test conditions calibrated to the miniature: the noise amplitude and the scale of α.

**Noise.** The paper adds ``U(-3, 3)`` to a modality's embedding features of ViLT-B/32. How much
that hurts depends on the embedding scale, which the miniature does not share with ViLT-B/32:
on the tiny model U(±3) on the image embeddings did not hurt the baseline at all, while in the
paper image noise is the most damaging case. So the embedded default uses *relative* noise
(:mod:`wma_core.perturb`, ``mode="relative"``: ``U(-a·r_m, a·r_m)`` with ``r_m`` the RMS of
modality m's embedding features on the first training batch under the initial weights) and
chooses ``a`` per dataset and modality, **once, on the dev split**, so that the baseline loses
about what the paper's baseline loses in its Table 1::

    paper_drop[m] = s * (paper normal - paper m_noise)        (s = +1, or -1 for MAE)
    target[m]     = max(paper_drop[m], MIN_DROP)
    drop(a)       = mean over seeds of s * (dev normal - dev m_noise at amplitude a)
    a*[m]         = the candidate a whose drop(a) is closest to target[m]

``MIN_DROP`` keeps every modality's noise harmful: MOSEI's printed audio drop is 0.000 and its
text and video drops are below 0.01. The result, with the measured and the paper's drops, the
backbone, the seeds and the date, is written to ``book/data/noise_calibration.json``, which the
``default`` and ``smoke`` profiles read (:func:`wma_core.experiments.run_configs`). The paper
scale keeps the paper's absolute ``U(-3, 3)``.

The same file records what the calibration runs measured on their first training batch: D0
per modality pair (the range over seeds: the default β grid must keep ``β·D0 <= 2``, the
largest OT distance) and the first-step ratio of the regulariser to the task loss (below).

**α.** At the first step ``D_i ≈ D0``, so the regulariser is ``α · mean_i (D_i − β·D0)^2``,
about ``α · ((1 − β)^2 · D0^2 + var_i D_i)``. With the paper's α it can exceed the task loss
several times over (MM-IMDb, α = 6, β = 0.2), and the tiny model then collapses to a constant
predictor. :func:`first_step_ratio` measures ``ρ(α, β) = regulariser / task loss`` on the first
training batch under the initial weights; the JSON keeps ρ at the paper's selected (α, β) per
dataset and ``ρ1 = R(α=1, β=0) / task loss = mean_i D_i^2 / task loss`` (the regulariser per
unit α with β = 0), from which any other cell's ratio follows.

Recalibrate (one command; trains the baselines it needs, a few minutes on 2 cores)::

    python -m wma_core.calibrate                  # default profile, seeds 0 1, all datasets
    python -m wma_core.calibrate --datasets mosei --seeds 0
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import math
from pathlib import Path

import numpy as np
import torch

from . import checkpoint
from . import perturb as P
from .experiments import DATASETS, PAPER_SELECTED, ROOT, data_home, get_profile, prepare_data, run_configs
from .losses import WMAConfig, WMARegulariser, modality_pairs, pair_distances
from .results import ResultsStore, atomic_write_json, config_key
from .train import build_model, evaluate, fit, resolve_device, run_config, task_loss, to_device

#: Where the calibration lives (committed; the default profile reads it).
CALIBRATION_PATH = ROOT / "book" / "data" / "noise_calibration.json"
#: Relative amplitudes tried (log-spaced; the noise half-width is a × the embedding RMS).
AMPLITUDES = (0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 12.0, 20.0)
#: The smallest drop aimed at, in the headline metric's units (so that noise always hurts).
MIN_DROP = 0.01
MODALITIES = {"hateful_memes": ("text", "image"), "mmimdb": ("text", "image"),
              "ur_funny": ("text", "video", "audio"), "mosei": ("text", "video", "audio")}


# --------------------------------------------------------------------------- reading


def load_calibration(path: str | Path | None = None) -> dict:
    """The calibration file, validated: ``{"datasets": {ds: {m: {"amplitude": a, ...}}}, ...}``."""
    path = Path(path) if path is not None else CALIBRATION_PATH
    if not path.exists():
        raise FileNotFoundError(f"{path}: no noise calibration; make it with `python -m wma_core.calibrate`")
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
            f"(need {list(want)}, have {sorted(entry or {})}); run `python -m wma_core.calibrate --datasets {dataset}`"
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


# --------------------------------------------------------------------------- measuring


def _first_batch(cfg, train_ds):
    from data_prep.dataset import make_loader

    return next(iter(make_loader(train_ds, cfg.batch_size, shuffle=True, seed=cfg.seed, epoch=0)))


@torch.no_grad()
def first_step_ratio(cfg, alphas_betas) -> dict:
    """The regulariser against the task loss on the first training batch, initial weights.

    Returns ``{"task_loss": L, "d0": {pair: D0}, "rho1": mean_i D_i^2 / L (per pair, summed),
    "ratio": {"α,β": R(α, β) / L}}`` with ``R = α · sum_pairs mean_i (D_i − β·D0)^2`` exactly as
    training computes it (:class:`wma_core.losses.WMARegulariser`, D0 from the same batch).
    """
    from data_prep.dataset import PreparedDataset, task_info

    device = resolve_device(cfg.device)
    train_ds = PreparedDataset(cfg.data_dir, "train")
    task = task_info(train_ds.manifest)
    feature_len = train_ds.arrays[task.modalities[0]].shape[1] if task.feature_dims else 0
    model = build_model(task, cfg, feature_len).to(device).eval()
    batch = to_device(_first_batch(cfg, train_ds), device)
    logits, out = model(batch)
    loss = float(task_loss(task.kind, logits, batch["labels"]))
    pairs = modality_pairs(model.modalities)
    dist = pair_distances(out, pairs, iters=cfg.ot_iters)
    res = {"task_loss": loss, "ratio": {}}
    for a, b in alphas_betas:
        reg = WMARegulariser(WMAConfig(alpha=float(a), beta=float(b)), pairs)
        res["d0"] = reg.calibrate(dist)
        r, _ = reg(dist)
        res["ratio"][f"{a:g},{b:g}"] = float(r) / loss
    reg1 = WMARegulariser(WMAConfig(alpha=1.0, beta=0.0), pairs, d0=res.get("d0") or {k: 0.0 for k in dist})
    res["rho1"] = float(reg1(dist)[0]) / loss
    return res


def _trained_baseline(cfg, store: ResultsStore):
    """Train (or reuse) one baseline, keeping its best checkpoint; return (record, model, task)."""
    from data_prep.dataset import PreparedDataset, task_info

    cfg = dataclasses.replace(cfg, keep_best=True)
    key = config_key(run_config(cfg))
    best = store.run_dir(key) / "best.pt"
    rec = fit(cfg, store, rerun=store.get(key) is not None and not best.exists())
    train_ds = PreparedDataset(cfg.data_dir, "train")
    task = task_info(train_ds.manifest)
    feature_len = train_ds.arrays[task.modalities[0]].shape[1] if task.feature_dims else 0
    device = resolve_device(cfg.device)
    model = build_model(task, cfg, feature_len).to(device)
    model.load_state_dict(checkpoint.load(store.run_dir(rec["key"]) / "best.pt"))
    return rec, model.eval(), task


def dev_drops(model, task, rec, cfg, amplitudes=AMPLITUDES) -> dict:
    """``{modality: {a: s * (dev normal - dev noise at a)}}`` and the normal dev metric, for one model."""
    from data_prep.dataset import PreparedDataset, make_loader
    from .report import greater_is_better

    device = resolve_device(cfg.device)
    dev_ds = PreparedDataset(cfg.data_dir, "dev")
    loader = make_loader(dev_ds, cfg.eval_batch_size)
    metric = rec["headline_metric"]
    s = 1.0 if greater_is_better(metric) else -1.0
    normal = evaluate(model, loader, task.kind, device=device, ot_iters=1)["metrics"][metric]
    out = {"normal": normal, "drops": {}}
    for m in task.modalities:
        out["drops"][m] = {}
        for a in amplitudes:
            p = P.Perturbation(kind="noise", modality=m, amplitude=float(a), mode="relative",
                               scale=float(rec["embedding_rms"][m]), seed=cfg.perturb_seed).for_split(len(dev_ds))
            noisy = evaluate(model, loader, task.kind, perturbation=p, device=device, ot_iters=1)["metrics"][metric]
            out["drops"][m][float(a)] = s * (normal - noisy)
    return out


def choose(drops_by_seed: list, target: float, amplitudes=AMPLITUDES) -> tuple[float, float]:
    """The amplitude whose mean drop over seeds is closest to ``target``; ``(a, mean drop)``.

    Ties go to the smaller amplitude."""
    means = {a: float(np.mean([d[a] for d in drops_by_seed])) for a in amplitudes}
    best = min(amplitudes, key=lambda a: (abs(means[a] - target), a))
    return float(best), means[best]


def calibrate_dataset(dataset: str, scale: str = "default", *, seeds=(0, 1), model: str | None = None,
                      amplitudes=AMPLITUDES, store: ResultsStore | None = None, progress: bool = True) -> dict:
    """Train the profile's baseline on ``dataset`` (``seeds``), measure dev drops, pick amplitudes."""
    store = store or ResultsStore(data_home() / "calibration")
    kw = {"model": model} if model else {}
    data_dir = prepare_data(dataset, scale, **kw)
    cfgs = run_configs(dataset, data_dir, scale, alphas=(0.0,), seeds=seeds, noise_mode="relative", amplitude=1.0, **kw)
    per_seed, d0s, rms = [], [], []
    for cfg in cfgs:
        rec, net, task = _trained_baseline(cfg, store)
        metric = rec["headline_metric"]
        per_seed.append(dev_drops(net, task, rec, cfg, amplitudes))
        d0s.append(rec["d0"])
        rms.append(rec["embedding_rms"])
        if progress:
            print(f"[calibrate] {dataset} seed {cfg.seed}: dev {rec['headline_metric']} {per_seed[-1]['normal']:.4f}, "
                  f"D0 {rec['d0']}, embedding RMS {rec['embedding_rms']}", flush=True)
    paper = paper_drops(dataset)
    result = {}
    for m in MODALITIES[dataset]:
        target = max(paper[m], MIN_DROP)
        a, drop = choose([d["drops"][m] for d in per_seed], target, amplitudes)
        result[m] = {
            "amplitude": a, "dev_drop": round(drop, 6), "paper_drop": paper[m], "target_drop": round(target, 6),
            "dev_drop_per_amplitude": {f"{x:g}": round(float(np.mean([d["drops"][m][x] for d in per_seed])), 6) for x in amplitudes},
            "embedding_rms": [round(float(r[m]), 6) for r in rms],
        }
    pa, pb = PAPER_SELECTED[dataset]
    ratio = first_step_ratio(cfgs[0], [(pa, pb)])
    extra = {
        "backbone": Path(cfgs[0].model).name if cfgs[0].model != "tiny" else "tiny",
        "headline_metric": metric,
        "dev_normal": [round(float(d["normal"]), 6) for d in per_seed],
        "d0": {k: [round(float(d[k]), 6) for d in d0s] for k in d0s[0]},
        "first_step": {"paper_alpha": pa, "paper_beta": pb, "task_loss": round(ratio["task_loss"], 6),
                       "ratio_at_paper_alpha_beta": round(ratio["ratio"][f"{pa:g},{pb:g}"], 6), "rho1": round(ratio["rho1"], 6)},
    }
    return {"modalities": result, **extra}


def calibrate(datasets=DATASETS, scale: str = "default", *, seeds=(0, 1), model: str | None = None,
              out: str | Path | None = None, amplitudes=AMPLITUDES, progress: bool = True) -> dict:
    """Calibrate every dataset of ``datasets`` and write (merge into) the calibration file."""
    out = Path(out) if out is not None else CALIBRATION_PATH
    backbone = model or get_profile(scale).model
    old = {}
    if out.exists():
        try:
            old = load_calibration(out)
        except (ValueError, FileNotFoundError):
            old = {}
    if old and (old.get("backbone"), old.get("scale")) != (backbone, scale):
        old = {}  # another backbone or scale: its amplitudes mean something else
    cal = {
        "description": ("Relative test-time noise amplitudes of the embedded default, chosen on dev so that the "
                        "baseline's drop under noise matches the paper's Table 1 baseline drop "
                        "(made by python -m wma_core.calibrate)"),
        "mode": "relative", "scale": scale, "backbone": backbone, "min_drop": MIN_DROP,
        "amplitudes_tried": list(amplitudes), "seeds": list(seeds), "split": "dev",
        "date": _dt.date.today().isoformat(),
        "datasets": dict(old.get("datasets", {})), "d0": dict(old.get("d0", {})),
        "first_step": dict(old.get("first_step", {})), "dev_normal": dict(old.get("dev_normal", {})),
        "backbone_folder": dict(old.get("backbone_folder", {})),
    }
    for ds in datasets:
        r = calibrate_dataset(ds, scale, seeds=seeds, model=model, amplitudes=amplitudes, progress=progress)
        cal["backbone_folder"][ds] = r["backbone"]
        cal["datasets"][ds] = r["modalities"]
        cal["d0"][ds] = r["d0"]
        cal["first_step"][ds] = r["first_step"]
        cal["dev_normal"][ds] = {"metric": r["headline_metric"], "values": r["dev_normal"]}
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out, cal)  # after every dataset: an interruption keeps what is done
    return cal


def summary_frame(cal: dict | None = None):
    """One row per (dataset, modality): amplitude, our dev drop, the paper's drop, the target."""
    import pandas as pd

    cal = cal or load_calibration()
    rows = []
    for ds, mods in cal["datasets"].items():
        for m, e in mods.items():
            rows.append({"dataset": ds, "modality": m, "amplitude": e["amplitude"], "dev drop": e["dev_drop"],
                         "paper drop": e["paper_drop"], "target drop": e["target_drop"]})
    return pd.DataFrame(rows)


def alpha_mapping_frame(cal: dict | None = None, alphas=None, betas=None):
    """Per dataset: the paper's selected (α, β), the first-step ratio R/L there, and the ratio
    the default grid's cells give (``ρ(α, β) ≈ α · ρ1 · (1 − β)^2`` with ``ρ1`` measured)."""
    import pandas as pd

    cal = cal or load_calibration()
    prof = get_profile(cal.get("scale", "default"))
    alphas = [a for a in (alphas or prof.alpha_grid) if a > 0]
    betas = list(betas or prof.beta_grid)
    rows = []
    for ds, f in cal.get("first_step", {}).items():
        row = {"dataset": ds, "paper (α, β)": f"{f['paper_alpha']:g}, {f['paper_beta']:g}", "task loss": f["task_loss"],
               "R/L at the paper's (α, β)": f["ratio_at_paper_alpha_beta"], "ρ1 = R(α=1, β=0)/L": f["rho1"]}
        for a in alphas:
            row[f"R/L, ours α={a:g}, β={min(betas):g}..{max(betas):g}"] = (
                f"{a * f['rho1'] * min((1 - b) ** 2 for b in betas):.3f}..{a * f['rho1'] * max((1 - b) ** 2 for b in betas):.3f}")
        rows.append(row)
    return pd.DataFrame(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m wma_core.calibrate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", default="default", choices=["smoke", "default"])
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--model", default=None, help="backbone (default: the profile's)")
    ap.add_argument("--out", default=None, help=f"calibration file (default: {CALIBRATION_PATH.relative_to(ROOT)})")
    args = ap.parse_args(argv)
    cal = calibrate(args.datasets, args.scale, seeds=args.seeds, model=args.model, out=args.out)
    print(summary_frame(cal).to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
