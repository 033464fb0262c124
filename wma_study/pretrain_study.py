"""What pretraining buys: the study helpers of the pretraining chapter.

- :func:`loss_curves`: the three pretraining losses per step (from ``pretrain.json``);
- :func:`held_out_table`: held-out ITM accuracy, masked colour/noun-word accuracy with and
  without the image, WPA distance of matched and mismatched pairs, pretrained vs random weights;
- :func:`twin_gap`: mean D(mismatched) - D(matched) on a twin's test split, pretrained vs random
  weights of the same configuration (D = ``ot_distance(image, text)``, ViLT's order);
- :func:`d0_table`: D0 (mean D on the first training batch under the initial weights) per dataset,
  and the same on shuffled pairs (:func:`shuffled_pairs`);
- :func:`finetune_table`: baselines fine-tuned from the checkpoint against random initialisation,
  and :func:`transfer_table`, the seed-paired gain of pretraining per dataset (and per backbone);
- :func:`backbone_folders`, :func:`held_out_by_backbone`: the replicated backbones of the profile
  (:func:`wma_core.pretrain.replicate`) and their held-out metrics side by side;
  :func:`check_itm_floor` stops the build when one is under the profile's hard-ITM floor.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from wma_core import pretrain as PT
from wma_core.ot import ot_distance
from wma_core.store import atomic_write_json, config_key


def _cached(name: str, folder, params: dict, data_dirs, compute) -> pd.DataFrame:
    """``compute()`` once per (table, parameters, checkpoint, prepared data, code); later calls
    read ``<data home>/results/pretrain_study/<key>.json``. The key holds the checkpoint's own
    key, the manifest digest of every prepared folder the table reads, the method's code digest
    and this module's source, so any change recomputes the table."""
    import hashlib

    from .experiments import results_dir
    from wma_core.record import code_digest, manifest_digest

    key = config_key({"table": name, "params": params, "checkpoint": PT.read_record(folder)["key"],
                      "data": [manifest_digest(d) for d in data_dirs], "code": code_digest(),
                      "study": hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]})
    path = results_dir() / "pretrain_study" / f"{name}-{key}.json"
    if path.exists():
        return pd.DataFrame(json.loads(path.read_text(encoding="utf-8")))
    df = compute()
    atomic_write_json(path, df.to_dict(orient="records"))
    return df


def loss_curves(folder, window: int = 20) -> pd.DataFrame:
    """Per-step losses (``mlm``, ``itm``, ``wpa``, ``itm_acc``) and their running means."""
    steps = pd.DataFrame(PT.read_record(folder)["history"]["steps"])
    steps.index.name = "step"
    for k in ("mlm", "itm", "wpa", "itm_acc"):
        steps[f"{k}_smooth"] = steps[k].rolling(window, min_periods=1).mean()
    return steps


def held_out_table(folder) -> pd.DataFrame:
    """Held-out metrics of the checkpoint and of its initial (random) weights."""
    rec = PT.read_record(folder)
    rows = {k: {"pretrained": v, "random init": rec["random_init_metrics"][k]}
            for k, v in rec["metrics"].items() if not k.startswith("n_")}
    return pd.DataFrame(rows).T


def backbone_folders(scale: str = "default") -> dict:
    """``{"b0": folder, "b1": folder, ...}``: the profile's replicated backbones (each pretrained
    on first use)."""
    from .experiments import get_profile, resolve_model
    from .profiles import backbone_label

    return {backbone_label(b): Path(resolve_model("pretrained", scale, backbone=b)) for b in get_profile(scale).backbones}


class BelowFloor(RuntimeError):
    """A pretrained backbone does not reach the profile's held-out hard-negative ITM floor."""


def check_itm_floor(scale: str = "default") -> dict:
    """``{label: held-out hard-negative ITM accuracy}`` of the profile's backbones; raises
    :class:`BelowFloor` naming each backbone (and its folder) under ``Profile.itm_floor``.

    Hard negatives are pictures of the most similar caption (:func:`wma_core.pretrain.swap_images`):
    a backbone under the floor tells scenes apart without reading what the words name, and fine-
    tuning from it cannot test whether an alignment is kept."""
    from .experiments import get_profile

    floor = get_profile(scale).itm_floor
    folders = backbone_folders(scale)
    acc = {label: float(PT.read_record(f)["metrics"]["itm_accuracy_hard"]) for label, f in folders.items()}
    low = {label: a for label, a in acc.items() if floor is not None and a < floor}
    if low:
        raise BelowFloor("held-out hard-negative ITM below the floor " f"{floor:g}: "
                         + "; ".join(f"{label} {a:.3f} ({folders[label]})" for label, a in low.items()))
    return acc


def held_out_by_backbone(scale: str = "default") -> pd.DataFrame:
    """The held-out metrics of every replicated backbone, one column each, beside backbone 0's
    random initialisation (:func:`held_out_table`)."""
    cols = {}
    for label, folder in backbone_folders(scale).items():
        t = held_out_table(folder)
        cols[label] = t["pretrained"]
        cols.setdefault("random init", t["random init"])
    return pd.DataFrame(cols)


def random_like(folder, seed: int = 0):
    """A backbone with the folder's configuration and random weights (the same init as ``tiny``)."""
    from transformers import ViltConfig, ViltModel

    from wma_core.model import WMAVilt

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return WMAVilt(ViltModel(ViltConfig.from_pretrained(folder)))


@torch.no_grad()
def pair_gap(backbone, data_dir, split: str = "test", batch_size: int = 64, max_batches: int | None = 8) -> dict:
    """Mean D of matched pairs and of mismatched ones (each text with the next sample's image)."""
    from data_prep.dataset import PreparedDataset, make_loader

    backbone.eval()
    loader = make_loader(PreparedDataset(data_dir, split), batch_size)
    pos, neg = [], []
    for k, b in enumerate(loader):
        if max_batches is not None and k >= max_batches:
            break
        for shift, acc in ((0, pos), (1, neg)):
            out = backbone(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                           pixel_values=b["pixel_values"].roll(shift, 0), pixel_mask=b["pixel_mask"].roll(shift, 0))
            acc += ot_distance(out.tokens["image"], out.tokens["text"], out.token_masks["image"],
                               out.token_masks["text"]).tolist()
    return {"d_matched": float(np.mean(pos)), "d_mismatched": float(np.mean(neg)),
            "gap": float(np.mean(neg) - np.mean(pos)), "n": len(pos)}


def twin_gap(folder, datasets=("hateful_memes", "mmimdb"), scale: str = "default") -> pd.DataFrame:
    """D(mismatched) - D(matched) on twins prepared with the checkpoint's tokenizer."""
    from .experiments import prepare_data
    from wma_core.model import load_vilt

    dirs = {ds: prepare_data(ds, scale, model=str(folder)) for ds in datasets}

    def compute():
        models = (("pretrained", load_vilt(str(folder))), ("random init", random_like(folder)))  # once, for every twin
        rows = []
        for ds, data_dir in dirs.items():
            for name, model in models:
                rows.append({"dataset": ds, "weights": name, **pair_gap(model, data_dir)})
        return pd.DataFrame(rows)

    return _cached("twin_gap", folder, {"datasets": list(datasets), "scale": scale}, dirs.values(), compute)


@torch.no_grad()
def d0_table(folder, datasets, scale: str = "default", seed: int = 0) -> pd.DataFrame:
    """D0 per dataset and modality pair under the checkpoint and under random initialisation
    (``"tiny"``: the same architecture, each model on data prepared with its own tokenizer)."""
    from data_prep.dataset import PreparedDataset, make_loader, task_info

    from .experiments import prepare_data, run_configs
    from wma_core.losses import modality_pairs, pair_distances
    from wma_core.record import run_config
    from wma_core.train import build_model

    plan = []  # (dataset, weights, data folder, run configuration)
    for ds in datasets:
        for name, model in (("pretrained", str(folder)), ("random init", "tiny")):
            data_dir = prepare_data(ds, scale, model=model)
            plan.append((ds, name, data_dir, run_configs(ds, data_dir, scale, seeds=(seed,), model=model)[0]))

    def compute():
        rows = []
        for ds, name, data_dir, cfg in plan:
            train = PreparedDataset(data_dir, "train")
            task = task_info(train.manifest)
            feature_len = train.arrays[task.modalities[0]].shape[1] if task.feature_dims else 0
            net = build_model(task, cfg, feature_len).eval()
            batch = next(iter(make_loader(train, cfg.batch_size, shuffle=True, seed=cfg.seed, epoch=0)))
            _, out = net(batch)
            _, out_shuffled = net(shuffled_pairs(batch, net.modalities))
            shuffled = pair_distances(out_shuffled, modality_pairs(net.modalities))
            for pair, (D, valid) in pair_distances(out, modality_pairs(net.modalities)).items():
                Ds, vs = shuffled[pair]
                rows.append({"dataset": ds, "weights": name, "pair": pair, "d0": float(D[valid].mean()),
                             "d0_shuffled": float(Ds[vs].mean())})
        return pd.DataFrame(rows)

    params = {"runs": [config_key(run_config(cfg)) for *_, cfg in plan]}
    return _cached("d0_table", folder, params, [p[2] for p in plan], compute)


def shuffled_pairs(batch: dict, modalities) -> dict:
    """The batch with the k-th modality's samples rolled by k (k = 0, 1, ...): every sample's
    modalities then come from different samples, and D on it is the distance of unrelated pairs.
    D0 minus this is what of D0 is alignment of a sample's own modalities rather than geometry."""
    out = dict(batch)
    if "pixel_values" in batch:
        out["pixel_values"], out["pixel_mask"] = batch["pixel_values"].roll(1, 0), batch["pixel_mask"].roll(1, 0)
        return out
    out["features"] = {m: batch["features"][m].roll(k, 0) for k, m in enumerate(modalities)}
    if batch.get("feature_masks") is not None:
        out["feature_masks"] = {m: batch["feature_masks"][m].roll(k, 0) for k, m in enumerate(modalities)}
    return out


def transfer_seeds(scale: str = "default", per_backbone: int = 2) -> tuple:
    """The seeds of chapter 00's transfer comparison: the first ``per_backbone`` seeds nested in
    each backbone of the profile (0, 1, 4, 5 with the default 2 × 4 design), so every backbone
    is in it; one backbone: its first ``2 * per_backbone`` seeds (at most all of them)."""
    from .experiments import get_profile
    from .profiles import backbone_of

    prof = get_profile(scale)
    if len(prof.backbones) == 1:
        return tuple(prof.seeds[: 2 * per_backbone])
    out = []
    for b in prof.backbones:
        out += [s for s in prof.seeds if backbone_of(prof, s) == b][:per_backbone]
    return tuple(out)


def finetune_configs(datasets, scale: str = "default", seeds=None) -> list:
    """``[((dataset, "pretrained" | "random init", seed), TrainConfig)]``: the baseline from the
    checkpoint and from random weights (:func:`finetune_table`, :func:`wma_study.plan.pretraining_runs`);
    ``seeds=None``: :func:`transfer_seeds`."""
    from .experiments import prepare_data, run_configs

    seeds = transfer_seeds(scale) if seeds is None else seeds
    out = []
    for ds in datasets:
        for name, model in (("pretrained", "pretrained"), ("random init", "tiny")):
            data_dir = prepare_data(ds, scale, model=model)
            out += [((ds, name, cfg.seed), cfg) for cfg in run_configs(ds, data_dir, scale, seeds=seeds, model=model)]
    return out


def finetune_table(datasets, scale: str = "default", seeds=None, *, executor: str = "ray",
                   address: str | None = None) -> pd.DataFrame:
    """The baseline (α = 0) fine-tuned from the checkpoint and from random initialisation: the
    headline metric on the normal test, per dataset and seed. The runs go through
    :func:`wma_study.sweep.run_trials` (in parallel under Ray; records are reused from the store,
    and the pretrained baselines are the dataset chapters' own)."""
    from .experiments import results_dir
    from .sweep import run_trials

    labelled = finetune_configs(datasets, scale, seeds)
    records = run_trials([cfg for _, cfg in labelled], results_dir(), executor=executor, address=address, progress=False)
    rows = []
    for ((ds, name, seed), cfg), rec in zip(labelled, records):
        metric = rec["headline_metric"]
        rows.append({"dataset": ds, "init": name, "seed": seed, "backbone": cfg.backbone, "metric": metric,
                     "value": rec["metrics"]["normal"][metric]})
    return pd.DataFrame(rows)


def transfer_table(ft: pd.DataFrame) -> pd.DataFrame:
    """What pretraining buys per dataset: the seed-paired gain of the pretrained baseline over the
    randomly initialised one on the normal test (positive = pretrained better; MAE sign-flipped),
    with the seeds nested in the backbones (:func:`wma_study.stats.blocked_paired_test`) and the
    gain on each backbone alone. Columns ``dataset, metric, pretrained, random init, gain, lo, hi,
    seeds, per backbone``."""
    from . import stats
    from .report.runs import greater_is_better

    rows = []
    for (ds, metric), g in ft.groupby(["dataset", "metric"], sort=False):
        p = g[g["init"] == "pretrained"].set_index("seed")
        r = g[g["init"] == "random init"].set_index("seed")
        seeds = sorted(set(p.index) & set(r.index))
        sign = 1.0 if greater_is_better(metric) else -1.0
        xa, xb = r.loc[seeds, "value"].to_numpy(float), p.loc[seeds, "value"].to_numpy(float)
        blocks = p.loc[seeds, "backbone"].fillna("").tolist()
        t = stats.blocked_paired_test(sign * xa, sign * xb, blocks)
        per = "; ".join(f"{k}: {v['diff_mean']:+.3f}" for k, v in t["blocks"].items() if k)
        rows.append({"dataset": ds, "metric": metric, "pretrained": float(np.mean(xb)), "random init": float(np.mean(xa)),
                     "gain": t["diff_mean"], "lo": t["diff_lo"], "hi": t["diff_hi"], "seeds": len(seeds),
                     "per backbone": per})
    return pd.DataFrame(rows)


def checkpoint_folder(scale: str) -> Path:
    """The pretrained checkpoint of ``scale`` (built on first use; see ``experiments.resolve_model``)."""
    from .experiments import resolve_model

    return Path(resolve_model("pretrained", scale))
