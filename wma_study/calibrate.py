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
    mean(a)       = mean over seeds of s * (dev normal - dev m_noise at amplitude a)
    drop(a)       = the non-decreasing least-squares fit of mean(a) in a (isotonic regression)
    hurts         = the candidates a with drop(a) >= MIN_DROP
    a*[m]         = the candidate in hurts whose drop(a) is closest to target[m]
                    (none hurts: the candidate with the largest drop, recorded as "hurts": false)

``MIN_DROP`` keeps every modality's noise harmful: MOSEI's printed audio drop is 0.000 and its
text and video drops are below 0.01. The drop is not monotone in ``a``: on the MM-IMDb twin, text
noise of a few RMS *raises* the baseline's macro-F1 on dev (more rare genres cross the 0.5
threshold), so the closest raw mean could pick an amplitude that helps, and the closest of 17
noisy means is a winner's curse: on 100 dev samples and 2 seeds, the MM-IMDb text amplitude gave a
dev drop of 0.063 and a test drop of 0.0015. Hence at least 250 dev samples (the profile's
``twin_splits``), 3 seeds, and the monotone fit before choosing; the test split is read once,
afterwards, and only reported (``--check-test``). The result, with the
measured and the paper's drops, the backbone, the seeds and the date, is written to
``book/data/noise_calibration.json``, which the ``default`` and ``smoke`` profiles read
(:func:`wma_study.experiments.run_configs`). The paper scale keeps the paper's absolute ``U(-3, 3)``.

The same file records what the calibration runs measured on their first training batch: D0
per modality pair (the range over seeds: the default β grid must keep ``β·D0 <= 2``, the
largest OT distance) and the first-step ratio of the regulariser to the task loss (below).

**α.** On the first training batch, D0 is the batch's own mean D, so the regulariser there is
exactly ``R(α, β) = α · sum_pairs [var_i D_i + (1 − β)^2 · D0^2]``. With the paper's α it can
exceed the task loss ``L`` several times over (MM-IMDb, α = 6, β = 0.2), and the tiny model then
collapses to a constant predictor. :func:`first_step_terms` measures ``L``, D0 and ``var_i D_i``
under the initial weights and the JSON keeps them (``first_step``), so the ratio
``ρ(α, β) = R / L`` (:func:`wma_study.calibration.first_step_ratio`) of any cell follows. The default α grid is chosen
by that ratio (:data:`wma_study.experiments.PROFILES`); :func:`alpha_mapping_frame` tabulates the
ratio at the paper's α and at ours, which is how the two map onto each other.

Recalibrate (one command; trains the baselines it needs, a few minutes on 2 cores)::

    python -m wma_study.calibrate                  # default profile, seeds 0 1 2, all datasets
    python -m wma_study.calibrate --datasets mosei --seeds 0
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
from pathlib import Path

import numpy as np
import torch

from wma_core import checkpoint
from wma_core import perturb as P
from .calibration import (CALIBRATION_PATH, MIN_DROP, MODALITIES, alpha_mapping_frame, load_calibration, paper_drops,
                          summary_frame)
from .profiles import ROOT
from .experiments import DATASETS, data_home, get_profile, prepare_data, run_configs
from wma_core.losses import modality_pairs, pair_distances
from wma_core.store import ResultsStore, atomic_write_json, config_key
from wma_core.device import resolve_device, to_device
from wma_core.evaluate import evaluate
from wma_core.losses import task_loss
from wma_core.record import run_config
from wma_core.train import build_model, fit

#: Training seeds of the calibration's baselines (at least 3: one seed's dev drop is too noisy to aim with).
SEEDS = (0, 1, 2)
#: Relative amplitudes tried (log-spaced; the noise half-width is a × the embedding RMS).
AMPLITUDES = (0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 12.0, 20.0, 30.0, 50.0, 80.0)

# --------------------------------------------------------------------------- measuring


def _first_batch(cfg, train_ds):
    from data_prep.dataset import make_loader

    return next(iter(make_loader(train_ds, cfg.batch_size, shuffle=True, seed=cfg.seed, epoch=0)))


@torch.no_grad()
def first_step_terms(cfg) -> dict:
    """What the regulariser is made of at the first step: the first training batch (the one
    D0 is measured on) under the initial weights.

    Returns ``{"task_loss": L, "pairs": {pair: {"d0": mean_i D_i, "var": var_i D_i}}}`` (means
    over the samples where both modalities have a valid token, as in training). Since D0 is
    the mean over this very batch, the regulariser there is exactly::

        R(α, β) = α · sum_pairs mean_i (D_i − β·D0)^2 = α · sum_pairs [var_i D_i + (1 − β)^2 · D0^2]
    """
    from data_prep.dataset import PreparedDataset, task_info

    device = resolve_device(cfg.device)
    train_ds = PreparedDataset(cfg.data_dir, "train")
    task = task_info(train_ds.manifest)
    feature_len = train_ds.arrays[task.modalities[0]].shape[1] if task.feature_dims else 0
    torch.manual_seed(cfg.seed)
    model = build_model(task, cfg, feature_len).to(device).eval()
    batch = to_device(_first_batch(cfg, train_ds), device)
    logits, out = model(batch)
    loss = float(task_loss(task.kind, logits, batch["labels"]))
    pairs = {}
    for k, (D, v) in pair_distances(out, modality_pairs(model.modalities), iters=cfg.ot_iters).items():
        d = D[v].double()
        pairs[k] = {"d0": float(d.mean()), "var": float(d.var(unbiased=False))}
    return {"task_loss": loss, "pairs": pairs}


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


def _calibration_baseline(cfg, store: ResultsStore):
    """The calibration's own trained baseline for ``cfg`` (the newest record with the same
    configuration up to the code digest, whose best checkpoint is kept), loaded; never retrains."""
    from data_prep.dataset import PreparedDataset, task_info

    want = run_config(dataclasses.replace(cfg, keep_best=True))
    fields = [k for k in want if k != "code"]
    found = [r for r in store.records() if all(r["config"].get(k, want[k]) == want[k] for k in fields)
             and (store.run_dir(r["key"]) / "best.pt").exists()]
    if not found:
        raise FileNotFoundError(
            f"{store.root}: no calibration baseline with a kept checkpoint for {cfg.dataset} seed {cfg.seed}; "
            "run `python -m wma_study.calibrate` first")
    rec = max(found, key=lambda r: (store.path(r["key"])).stat().st_mtime)
    train_ds = PreparedDataset(cfg.data_dir, "train")
    task = task_info(train_ds.manifest)
    feature_len = train_ds.arrays[task.modalities[0]].shape[1] if task.feature_dims else 0
    model = build_model(task, cfg, feature_len).to(resolve_device(cfg.device))
    model.load_state_dict(checkpoint.load(store.run_dir(rec["key"]) / "best.pt"))
    return rec, model.eval(), task


def dev_drops(model, task, rec, cfg, amplitudes=AMPLITUDES, split: str = "dev") -> dict:
    """``{modality: {a: s * (normal - noise at a)}}`` and the normal metric on ``split``, for one model."""
    from data_prep.dataset import PreparedDataset, make_loader
    from .report import greater_is_better

    device = resolve_device(cfg.device)
    dev_ds = PreparedDataset(cfg.data_dir, split)
    loader = make_loader(dev_ds, cfg.eval_batch_size)
    metric = rec["headline_metric"]
    s = 1.0 if greater_is_better(metric) else -1.0
    normal = evaluate(model, loader, task.kind, device=device, ot_iters=1)["metrics"][metric]
    out = {"normal": normal, "drops": {}}
    for m in task.modalities:
        out["drops"][m] = {}
        for a in (amplitudes[m] if isinstance(amplitudes, dict) else amplitudes):
            p = P.Perturbation(kind="noise", modality=m, amplitude=float(a), mode="relative",
                               scale=float(rec["embedding_rms"][m]), seed=cfg.perturb_seed).for_split(len(dev_ds))
            noisy = evaluate(model, loader, task.kind, perturbation=p, device=device, ot_iters=1)["metrics"][metric]
            out["drops"][m][float(a)] = s * (normal - noisy)
    return out


def monotone_drops(means: dict) -> dict:
    """``{a: fitted drop}``: the least-squares non-decreasing fit of the mean drop in the amplitude
    (isotonic regression, pool-adjacent-violators, :class:`sklearn.isotonic.IsotonicRegression`).

    More noise cannot make a model better in expectation; a dip between two amplitudes is
    sampling noise of a small dev split. Pooling it away before choosing stops the rule from
    picking the one amplitude that was lucky on dev (the winner's curse: the closest of 17 noisy
    means is biased toward the target, and the test drop then falls short of it).
    """
    from sklearn.isotonic import IsotonicRegression

    amps = sorted(means)
    fitted = IsotonicRegression(increasing=True).fit_transform(np.log(amps), [means[a] for a in amps])
    return {a: float(f) for a, f in zip(amps, fitted)}


def choose(drops_by_seed: list, target: float, amplitudes=AMPLITUDES,
           min_drop: float = MIN_DROP, fit: str = "isotonic") -> tuple[float, float, bool]:
    """The amplitude for one modality: ``(a, drop, hurts)``.

    ``drop(a)`` is the mean drop over seeds, made monotone in ``a`` first (``fit="isotonic"``,
    :func:`monotone_drops`) or taken as it is (``fit="raw"``). Among the amplitudes whose drop is
    at least ``min_drop`` (the noise hurts), the one whose drop is closest to ``target``; ties go
    to the smaller amplitude (on a plateau of the fit: the first amplitude that reaches it). When
    no amplitude hurts that much, the one with the largest drop, and ``hurts`` is False."""
    if fit not in ("isotonic", "raw"):
        raise ValueError(f"fit must be 'isotonic' or 'raw', got {fit!r}")
    means = {a: float(np.mean([d[a] for d in drops_by_seed])) for a in amplitudes}
    if fit == "isotonic":
        means = monotone_drops(means)
    hurting = [a for a in amplitudes if means[a] >= min_drop]
    if not hurting:
        best = max(amplitudes, key=lambda a: (means[a], -a))
        return float(best), means[best], False
    best = min(hurting, key=lambda a: (abs(means[a] - target), a))
    return float(best), means[best], True


def calibrate_dataset(dataset: str, scale: str = "default", *, seeds=SEEDS, model: str | None = None,
                      amplitudes=AMPLITUDES, store: ResultsStore | None = None, progress: bool = True,
                      epochs: int | None = None) -> dict:
    """Train the profile's baseline on ``dataset`` (``seeds``; ``epochs``: None keeps the
    profile's), measure dev drops, pick amplitudes."""
    store = store or ResultsStore(data_home() / "calibration")
    kw = {"model": model} if model else {}
    data_dir = prepare_data(dataset, scale, **kw)
    cfgs = run_configs(dataset, data_dir, scale, alphas=(0.0,), seeds=seeds, epochs=epochs, noise_mode="relative",
                       amplitude=1.0, **kw)
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
        a, drop, hurts = choose([d["drops"][m] for d in per_seed], target, amplitudes)
        raw = float(np.mean([d["drops"][m][a] for d in per_seed]))
        result[m] = {
            "amplitude": a, "dev_drop": round(raw, 6), "dev_drop_fitted": round(drop, 6), "hurts": hurts,
            "paper_drop": paper[m],
            "target_drop": round(target, 6),
            "dev_drop_per_amplitude": {f"{x:g}": round(float(np.mean([d["drops"][m][x] for d in per_seed])), 6) for x in amplitudes},
            "embedding_rms": [round(float(r[m]), 6) for r in rms],
        }
    terms = first_step_terms(cfgs[0])
    extra = {
        "backbone": Path(cfgs[0].model).name if cfgs[0].model != "tiny" else "tiny",
        "headline_metric": metric,
        "epochs": cfgs[0].epochs,
        "dev_normal": [round(float(d["normal"]), 6) for d in per_seed],
        "d0": {k: [round(float(d[k]), 6) for d in d0s] for k in d0s[0]},
        "first_step": terms,
    }
    return {"modalities": result, **extra}


def calibrate(datasets=DATASETS, scale: str = "default", *, seeds=SEEDS, model: str | None = None,
              out: str | Path | None = None, amplitudes=AMPLITUDES, progress: bool = True,
              epochs: int | None = None) -> dict:
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
                        "(made by python -m wma_study.calibrate)"),
        "mode": "relative", "scale": scale, "backbone": backbone, "min_drop": MIN_DROP,
        "amplitudes_tried": list(amplitudes), "seeds": list(seeds), "split": "dev",
        "date": _dt.date.today().isoformat(),
        "datasets": dict(old.get("datasets", {})), "d0": dict(old.get("d0", {})),
        "first_step": dict(old.get("first_step", {})), "dev_normal": dict(old.get("dev_normal", {})),
        "backbone_folder": dict(old.get("backbone_folder", {})),
    }
    for ds in datasets:
        r = calibrate_dataset(ds, scale, seeds=seeds, model=model, amplitudes=amplitudes, progress=progress, epochs=epochs)
        cal["backbone_folder"][ds] = r["backbone"]
        cal["datasets"][ds] = r["modalities"]
        cal["d0"][ds] = r["d0"]
        cal["first_step"][ds] = r["first_step"]
        cal["dev_normal"][ds] = {"metric": r["headline_metric"], "values": r["dev_normal"], "epochs": r["epochs"]}
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out, cal)  # after every dataset: an interruption keeps what is done
    return cal


def check_on_test(out: str | Path | None = None, datasets=None, *, progress: bool = True) -> dict:
    """The baselines of the calibration, tested once at the chosen amplitudes: adds ``test_drop``
    (mean over the calibration's seeds) and ``test_drop_per_seed`` to every (dataset, modality) of
    the file. This is a check, never an input to the choice (made on dev only)."""
    out = Path(out) if out is not None else CALIBRATION_PATH
    cal = load_calibration(out)
    store = ResultsStore(data_home() / "calibration")
    model = cal["backbone"]
    for ds in datasets or list(cal["datasets"]):
        kw = {"model": model} if model != get_profile(cal["scale"]).model else {}
        cfgs = run_configs(ds, prepare_data(ds, cal["scale"], **kw), cal["scale"], alphas=(0.0,), seeds=cal["seeds"],
                           epochs=cal.get("dev_normal", {}).get(ds, {}).get("epochs"), noise_mode="relative", amplitude=1.0, **kw)
        amps = {m: [e["amplitude"]] for m, e in cal["datasets"][ds].items()}
        per_seed = []
        for cfg in cfgs:
            rec, net, task = _calibration_baseline(cfg, store)
            per_seed.append(dev_drops(net, task, rec, cfg, amps, split="test"))
        for m, e in cal["datasets"][ds].items():
            vals = [d["drops"][m][e["amplitude"]] for d in per_seed]
            e["test_drop"] = round(float(np.mean(vals)), 6)
            e["test_drop_per_seed"] = [round(float(v), 6) for v in vals]
        if progress:
            print(f"[calibrate] {ds} test drops: { {m: e['test_drop'] for m, e in cal['datasets'][ds].items()} }", flush=True)
        atomic_write_json(out, cal)
    return cal


def transfer(out: str | Path | None, source: str, target: str, reason: str) -> dict:
    """Give ``target`` the amplitudes calibrated on ``source`` (same modalities), marked
    ``"calibrated": false`` with the reason, when ``target``'s own calibration could not be made."""
    out = Path(out) if out is not None else CALIBRATION_PATH
    cal = load_calibration(out)
    if MODALITIES[source] != MODALITIES[target]:
        raise ValueError(f"{source} and {target} have different modalities: {MODALITIES[source]} vs {MODALITIES[target]}")
    paper = paper_drops(target)
    own = cal["datasets"].get(target, {})
    cal["datasets"][target] = {
        m: {"amplitude": cal["datasets"][source][m]["amplitude"], "calibrated": False, "transferred_from": source,
            "reason": reason, "paper_drop": paper[m], "target_drop": round(max(paper[m], MIN_DROP), 6),
            "dev_drop": own.get(m, {}).get("dev_drop", float("nan")),
            "embedding_rms": own.get(m, {}).get("embedding_rms", [])}
        for m in MODALITIES[target]
    }
    atomic_write_json(out, cal)
    return cal


def merge(files, out: str | Path | None = None) -> dict:
    """Merge calibration files made in parallel (one per dataset, same backbone and scale) into ``out``."""
    cals = [load_calibration(f) for f in files]
    ids = {(c["backbone"], c["scale"], c["mode"]) for c in cals}
    if len(ids) != 1:
        raise ValueError(f"cannot merge calibrations of different backbones/scales: {sorted(ids)}")
    cal = dict(cals[0])
    for c in cals[1:]:
        for part in ("datasets", "d0", "first_step", "dev_normal", "backbone_folder"):
            cal[part] = {**cal.get(part, {}), **c.get(part, {})}
        cal["seeds"] = sorted(set(cal["seeds"]) | set(c["seeds"]))
        cal["date"] = max(cal["date"], c["date"])
    atomic_write_json(Path(out) if out is not None else CALIBRATION_PATH, cal)
    return cal


def measure_first_step(datasets=DATASETS, scale: str = "default", *, model: str | None = None,
                       out: str | Path | None = None, seed: int = 0) -> dict:
    """Only the first-step terms (one forward per dataset), merged into the calibration file."""
    out = Path(out) if out is not None else CALIBRATION_PATH
    cal = load_calibration(out)
    kw = {"model": model} if model else {}
    for ds in datasets:
        cfg = run_configs(ds, prepare_data(ds, scale, **kw), scale, alphas=(0.0,), seeds=(seed,),
                          noise_mode="relative", amplitude=1.0, **kw)[0]
        cal.setdefault("first_step", {})[ds] = first_step_terms(cfg)
    atomic_write_json(out, cal)
    return cal


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m wma_study.calibrate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", default="default", choices=["smoke", "default"])
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    ap.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    ap.add_argument("--model", default=None, help="backbone (default: the profile's)")
    ap.add_argument("--out", default=None, help=f"calibration file (default: {CALIBRATION_PATH.relative_to(ROOT)})")
    ap.add_argument("--epochs", type=int, default=None, help="training epochs of the baselines (default: the profile's)")
    ap.add_argument("--first-step-only", action="store_true",
                    help="only re-measure the regulariser / task-loss terms at the first step (no training)")
    ap.add_argument("--merge", nargs="+", metavar="FILE", help="merge these calibration files into --out and stop")
    ap.add_argument("--check-test", action="store_true",
                    help="test the calibration's baselines at the chosen amplitudes (adds test_drop) and stop")
    args = ap.parse_args(argv)
    if args.check_test:
        cal = check_on_test(args.out, None if args.datasets == list(DATASETS) else args.datasets)
        print(summary_frame(cal).to_string(index=False))
        return 0
    if args.merge:
        cal = merge(args.merge, args.out)
        print(summary_frame(cal).to_string(index=False))
        return 0
    if args.first_step_only:
        cal = measure_first_step(args.datasets, args.scale, model=args.model, out=args.out)
        print(alpha_mapping_frame(cal).to_string(index=False))
        return 0
    cal = calibrate(args.datasets, args.scale, seeds=args.seeds, model=args.model, out=args.out, epochs=args.epochs)
    print(summary_frame(cal).to_string(index=False))
    print(alpha_mapping_frame(cal).to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
