"""Which training runs each chapter reads, declared once: the chapters call these functions,
and the book's build collects them all before any notebook runs.

Each ``*_runs`` function takes a chapter's parameters (``None``: the chapter's default) and
returns its :class:`wma_core.train.TrainConfig` list, the same list the chapter hands to
:func:`wma_study.sweep.run_trials`. :func:`book_runs` calls every chapter's function with its
defaults at one scale; ``python -m wma_study.plan`` trains their union in one sweep step (a run
shared by two chapters is one key, trained once) and writes which keys each chapter needs, so
the notebooks that follow only read records.

    python -m wma_study.plan --scale default [--address HOST:PORT] [--out plan.json]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from wma_core.record import run_config
from wma_core.store import atomic_write_json, config_key

from .experiments import (DATASETS, PAPER_SELECTED, chapter_alpha, chapter_selection, get_profile, method_configs,
                          prepare_data, results_dir, run_configs)


def _common(seeds=None, lr=None, epochs=None, device=None, max_train_samples=None, readout=None) -> dict:
    return dict(seeds=seeds, lr=lr, epochs=epochs, device=device, max_train_samples=max_train_samples, readout=readout)


def dataset_runs(dataset: str, scale: str = "default", data_root: str | None = None, *, model: str | None = None,
                 alpha: float | None = None, beta: float | None = None, l2sp: float | None = None, **common) -> list:
    """A dataset chapter (02-05): baseline, WMA at (α, β), minimise-OT and the L2-SP control, per seed.
    ``alpha=None``: :func:`wma_study.experiments.chapter_alpha`; ``beta=None``: the paper's;
    ``l2sp=None``: the pre-registered strength on the synthetic twins (:func:`wma_study.l2sp.strength`;
    none registered, or 0: no L2-SP runs). It was chosen on the miniature, so on the real data
    (``scale="paper"``) there is no L2-SP run unless ``l2sp`` gives a strength."""
    from .l2sp import strength

    alpha = chapter_alpha(dataset, scale, alpha)
    beta = PAPER_SELECTED[dataset][1] if beta is None else float(beta)
    if l2sp is None:
        l2sp = strength(dataset) if get_profile(scale).twin_n is not None else None
    else:
        l2sp = float(l2sp)
    data_dir = prepare_data(dataset, scale, data_root, model=model)
    return method_configs(dataset, data_dir, scale, alpha=alpha, beta=beta, l2sp=l2sp, model=model, **_common(**common))


def ablation_runs(scale: str = "default", data_roots: dict | None = None, *, datasets=None, min_ot_alpha: float = 1.0,
                  model: str | None = None, **common) -> list:
    """Chapter 06: per dataset the chapter's WMA, minimise-OT (α = ``min_ot_alpha``, β = 0) and
    WMA with the ``batch`` target, beside the baseline."""
    configs = []
    for ds in list(datasets or DATASETS):
        a, b = chapter_selection(ds, scale)
        data_dir = prepare_data(ds, scale, (data_roots or {}).get(ds), model=model)
        configs += method_configs(ds, data_dir, scale, alpha=a, beta=b, min_ot_alpha=min_ot_alpha, batch_target=True,
                                  model=model, **_common(**common))
    return configs


def grid_runs(scale: str = "default", data_roots: dict | None = None, *, datasets=None, alphas=None, betas=None,
              seeds=None, model: str | None = None, lr=None, epochs=None, device=None, max_train_samples=None) -> list:
    """Chapter 07: every (α > 0, β) cell with the grid seeds, then the baseline with every seed of
    the dataset chapters (the same runs: shared with them)."""
    profile = get_profile(scale)
    alphas = list(profile.alpha_grid if alphas is None else alphas)
    betas = list(profile.beta_grid if betas is None else betas)
    seeds = list(profile.grid_seeds if seeds is None else seeds)
    kw = dict(lr=lr, epochs=epochs, device=device, max_train_samples=max_train_samples, **({"model": model} if model else {}))
    configs = []
    for ds in list(datasets or DATASETS):
        data_dir = prepare_data(ds, scale, (data_roots or {}).get(ds), model=model)
        cells = run_configs(ds, data_dir, scale, alphas=[a for a in alphas if a > 0], betas=betas, seeds=seeds, **kw)
        bases = run_configs(ds, data_dir, scale, alphas=(0.0,), seeds=profile.seeds, **kw) if 0.0 in alphas else []
        configs += cells + bases  # baselines last
    return configs


def explorer_runs(scale: str = "default", data_roots: dict | None = None, *, datasets=None, alphas=None, betas=None,
                  seed: int | None = None, model: str | None = None, lr=None, epochs=None, device=None,
                  max_train_samples=None) -> list:
    """Chapter 08: the α × β grid of one seed (the β-curve chapter's cells)."""
    profile = get_profile(scale)
    alphas = [float(a) for a in (profile.alpha_grid if alphas is None else alphas)]
    betas = [float(b) for b in (profile.beta_grid if betas is None else betas)]
    seed = profile.grid_seeds[0] if seed is None else seed
    kw = dict(lr=lr, epochs=epochs, device=device, max_train_samples=max_train_samples, **({"model": model} if model else {}))
    configs = []
    for ds in list(datasets or DATASETS):
        data_dir = prepare_data(ds, scale, (data_roots or {}).get(ds), model=model)
        configs += run_configs(ds, data_dir, scale, alphas=alphas, betas=betas, seeds=[seed], **kw)
    return configs


def pretraining_runs(scale: str = "default", *, datasets=DATASETS, seeds=None) -> list:
    """Chapter 00: the baseline fine-tuned from the pretrained miniature and from random weights
    (``seeds=None``: :func:`wma_study.pretrain_study.transfer_seeds`)."""
    from .pretrain_study import finetune_configs

    return [cfg for _, cfg in finetune_configs(datasets, scale, seeds)]


#: every chapter that reads training runs, with its declaration (called with the scale alone)
CHAPTER_RUNS = {
    "00_pretraining": pretraining_runs,
    "02_hateful_memes": lambda scale: dataset_runs("hateful_memes", scale),
    "03_mmimdb": lambda scale: dataset_runs("mmimdb", scale),
    "04_ur_funny": lambda scale: dataset_runs("ur_funny", scale),
    "05_mosei": lambda scale: dataset_runs("mosei", scale),
    "06_ablation": ablation_runs,
    "07_beta_curve": grid_runs,
    "08_ot_explorer": explorer_runs,
}


def book_runs(scale: str = "default", chapters=None) -> dict:
    """``{chapter: [TrainConfig]}`` of the chapters (default: all of :data:`CHAPTER_RUNS`) at their defaults."""
    return {name: CHAPTER_RUNS[name](scale) for name in (chapters or CHAPTER_RUNS)}


def run_kind(cfg) -> str:
    """The kind of a run, for the time table: ``<dataset> <method>`` (``tiny`` for random weights)."""
    return f"{cfg.dataset} {cfg.method}" + (" (random init)" if cfg.model == "tiny" else "")


def main(argv=None) -> int:
    from .sweep import SweepError, run_trials

    ap = argparse.ArgumentParser(prog="python -m wma_study.plan", description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", default="default", choices=["smoke", "default", "paper"])
    ap.add_argument("--chapters", nargs="+", default=None, choices=sorted(CHAPTER_RUNS))
    ap.add_argument("--address", default=None, help="Ray cluster to join (default: RAY_ADDRESS, else a local instance)")
    ap.add_argument("--executor", default="ray", choices=["ray", "local"])
    ap.add_argument("--out", default=None, help="write {chapter: [keys]}, the failures and the time per kind of run here")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    plan = book_runs(args.scale, args.chapters)
    keys = {name: [config_key(run_config(c)) for c in cfgs] for name, cfgs in plan.items()}
    configs = list({config_key(run_config(c)): c for cfgs in plan.values() for c in cfgs}.values())
    n_all = sum(len(v) for v in keys.values())
    print(f"[plan] {len(configs)} runs for {len(plan)} chapters ({n_all - len(configs)} shared by two or more)",
          file=sys.stderr, flush=True)
    failures, status = [], 0
    try:
        records = run_trials(configs, results_dir(), executor=args.executor, address=args.address,
                             progress=not args.no_progress)
    except SweepError as err:
        print(str(err), file=sys.stderr, flush=True)
        records, status = list(err.records.values()), 1
        failures = [{"key": config_key(run_config(cfg)), "run": run_kind(cfg), "error": msg} for cfg, msg in err.failures]
    if args.out:
        by_key = {r["key"]: r for r in records}
        kinds: dict = {}
        for c in configs:
            rec = by_key.get(config_key(run_config(c)))
            if rec is not None:
                t = rec.get("timings", {})
                row = kinds.setdefault(run_kind(c), {"runs": 0, "seconds": 0.0})
                row["runs"] += 1
                row["seconds"] += t.get("train_seconds", 0.0) + t.get("dev_eval_seconds", 0.0) + t.get("test_seconds", 0.0)
        atomic_write_json(Path(args.out), {"scale": args.scale, "chapters": keys, "failures": failures,
                                           "kinds": kinds, "seconds": time.perf_counter() - t0})
    return status


if __name__ == "__main__":
    # run the importable modules, so Ray pickles wma_study.sweep._trial by reference
    from wma_study import plan as _plan

    raise SystemExit(_plan.main())
