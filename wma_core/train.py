"""Fine-tuning with the WMA regulariser: fit, evaluate, every test case, resumable.

The recipe (paper §4.1 and ViLT's fine-tuning): all layers plus a task head trained with
AdamW (betas 0.9/0.98, weight decay 0.01, none on biases and norms), 10% linear warm-up then
linear decay, early stopping with patience 5 on the validation headline metric (a tie on the
metric goes to the lower validation loss), the best checkpoint restored and tested on every
test case (normal, noise and missing per modality).

Loss per batch::

    loss = task_loss + alpha * sum_pairs mean_i (D_i - beta * D0_pair)^2

with ``D0`` measured once on the first training batch under the initial weights
(:mod:`wma_core.losses`). Task losses: BCE with logits (binary, multi-label), L1 (regression,
whose headline metric is MAE, as MultiBench trains MOSEI).

Interruption: the full training state (weights, optimiser, scheduler, RNG, history, D0) is
saved atomically after every epoch in ``run_dir/last.pt``; calling :func:`fit` again with the
same configuration resumes after the last finished epoch, and gives the same result as an
uninterrupted run (same seed, CPU). The finished run is one record in the results store.
Checkpoints hold tensors and plain values only and load with ``weights_only=True``
(:mod:`wma_core.checkpoint`), so a results folder from elsewhere never runs code.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import platform
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from . import checkpoint
from . import perturb as P
from .losses import D_MAX, WMAConfig, WMARegulariser, modality_pairs, pair_distances, target_feasible
from .metrics import compute_metrics, headline_metric, is_better, prediction_summary
from .model import WMAClassifier, load_vilt
from .results import ResultsStore, config_key

# fields of TrainConfig that do not change results and so are not part of the run's key
_NOT_IN_KEY = ("data_dir", "device", "num_workers", "progress", "eval_batch_size", "keep_best", "pin_memory")


@dataclass
class TrainConfig:
    """One fine-tuning run. Defaults: the embedded default (tiny ViLT, synthetic twin, CPU).

    Attributes:
        dataset: dataset name (``hateful_memes``, ``mmimdb``, ``ur_funny``, ``mosei``).
        data_dir: a folder written by ``python -m data_prep prepare``.
        model: ``"tiny"``, a hub name (``dandelin/vilt-b32-mlm``) or a local folder.
        alpha, beta, target: the WMA regulariser (α = 0: baseline; α = 1, β = 0: minimise OT).
        lr: peak learning rate; batch_size: training batch; epochs: maximum epochs.
        patience: early-stopping patience (epochs without a better dev headline metric).
        warmup: share of steps with linear warm-up; weight_decay; adam_betas.
        seed: seeds initialisation (tiny model, head), data order and dropout.
        amp: ``None`` or ``"bf16"`` (autocast; the OT block always runs in float32).
        eval_amp: the autocast of evaluation (dev and test passes): ``"same"`` (as ``amp``),
            ``None`` or ``"bf16"``. The classification head runs in float32 either way, so
            predictions keep their ranks. On a CPU with native bf16 (AMX, AVX512-BF16) a bf16
            forward is about 1.7x faster than a float32 one; it changes test numbers by about
            the bf16 rounding of the tokens, so it is part of the run's key.
        attn: ``"sdpa"`` or ``"eager"`` attention; patch_order: ``"raster"`` or ``"hf"``.
        noise_mode, amplitude, missing_rate, perturb_seed: the test-time perturbations
            (:mod:`wma_core.perturb`); ``amplitude`` is one number for every modality or
            ``{modality: a}``; with ``noise_mode="relative"`` it multiplies each modality's
            embedding RMS, measured with D0 and stored in the record as ``embedding_rms``.
        ot_iters: IPOT iterations.
        max_train_samples: use only the first N training samples (None: all).
        head_bias: the start of the head's output bias for the BCE tasks (binary, multi-label):
            ``"zero"`` (ViLT's initialisation) or ``"prior"``, the log-odds of each label's rate
            in the training split (:func:`prior_logit`), so that the first step already predicts
            the label prior. AdamW moves a bias by about ``lr`` per step, so from zero a rare
            label (5 %, log-odds -2.9) costs thousands of steps of learning the prior before the
            features matter; with 23 such labels this is most of a short schedule.
    """

    dataset: str = "hateful_memes"
    data_dir: str = "_data/prepared/hateful_memes"
    model: str = "tiny"
    alpha: float = 0.0
    beta: float = 1.0
    target: str = "init"
    lr: float = 1e-3
    batch_size: int = 32
    epochs: int = 10
    patience: int = 5
    warmup: float = 0.1
    weight_decay: float = 0.01
    adam_betas: tuple = (0.9, 0.98)
    seed: int = 0
    amp: str | None = None
    eval_amp: str | None = "same"
    attn: str = "sdpa"
    patch_order: str = "raster"
    noise_mode: str = "symmetric"
    amplitude: float | dict = 3.0
    missing_rate: float = 0.5
    perturb_seed: int = 0
    ot_iters: int = 50
    max_train_samples: int | None = None
    head_bias: str = "zero"
    # not part of the key
    device: str = "auto"
    num_workers: int = 0
    pin_memory: bool = False
    eval_batch_size: int = 256
    progress: bool = True
    keep_best: bool = False

    @property
    def eval_autocast(self) -> str | None:
        return self.amp if self.eval_amp == "same" else self.eval_amp

    @property
    def wma(self) -> WMAConfig:
        return WMAConfig(alpha=self.alpha, beta=self.beta, target=self.target, iters=self.ot_iters)

    @property
    def method(self) -> str:
        return self.wma.method


def manifest_digest(data_dir) -> str:
    p = Path(data_dir) / "manifest.json"
    if not p.exists():
        raise FileNotFoundError(f"{p} not found: prepare the data first (python -m data_prep prepare ...)")
    return hashlib.sha256(p.read_bytes()).hexdigest()[:16]


_CODE = ("ot.py", "ot_fused.py", "losses.py", "perturb.py", "model.py", "train.py", "metrics.py")


def code_digest() -> str:
    """A digest of the source files that decide a run's numbers (part of every run's key, so a
    change to the method's code never reuses records computed by the old code)."""
    here = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for p in [here / n for n in _CODE] + [here.parent / "data_prep" / "dataset.py"]:
        if p.exists():
            h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()[:16]


def run_config(cfg: TrainConfig) -> dict:
    """The part of the configuration that defines a run (its results-store key)."""
    d = dataclasses.asdict(cfg)
    for k in _NOT_IN_KEY:
        d.pop(k)
    d["adam_betas"] = list(d["adam_betas"])
    d["method"] = cfg.method
    d["data"] = manifest_digest(cfg.data_dir)
    d["code"] = code_digest()
    d["model"] = model_identity(cfg.model)
    return d


def model_identity(model: str) -> str:
    """What a run's key records of its backbone: a hub name or ``"tiny"`` as it is; a local
    folder by its content, not its path (so a moved or re-cloned data home keeps its records):
    ``"pretrained:<key>"`` for a checkpoint of :mod:`wma_core.pretrain` (its key covers its
    configuration and code), else ``"folder:<sha256 of its config, weights and tokenizer files>"``.
    A folder's digest is computed once per state of its files (name, size, modification time),
    since every run key of a sweep asks for it and ViLT-B/32's weights are about 450 MB."""
    folder = Path(model)
    if not folder.is_dir():
        return model
    done = folder / "pretrain.json"
    if done.is_file():
        import json

        key = json.loads(done.read_text(encoding="utf-8")).get("key")
        if isinstance(key, str) and key:
            return f"pretrained:{key}"
    files = tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in sorted(folder.iterdir())
                  if f.is_file() and f.suffix in _IDENTITY_SUFFIXES)
    return _folder_digest(str(folder.resolve()), files)


_IDENTITY_SUFFIXES = (".json", ".safetensors", ".bin", ".txt", ".model")


@functools.lru_cache(maxsize=32)
def _folder_digest(folder: str, files: tuple) -> str:
    """``folder:<sha256>`` of the named files' names and bytes (``files``: the state it is cached by)."""
    h = hashlib.sha256()
    for name, _, _ in files:
        h.update(name.encode())
        with (Path(folder) / name).open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return f"folder:{h.hexdigest()[:16]}"


def seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def native_bf16(device: str = "auto") -> bool:
    """Whether ``device`` multiplies bf16 matrices natively: a CUDA GPU, or a CPU with AMX or
    AVX512-BF16 (elsewhere oneDNN emulates bf16 and a bf16 forward is slower than float32)."""
    dev = resolve_device(device)
    if dev.type == "cuda":
        return True
    try:
        return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())
    except AttributeError:  # another torch: no probe, no bf16
        return False


def resolve_eval_amp(eval_amp: str | None, device: str = "auto") -> str | None:
    """``"auto"``: ``"bf16"`` where :func:`native_bf16`, else ``None``; anything else as it is."""
    if eval_amp == "auto":
        return "bf16" if native_bf16(device) else None
    return eval_amp


def to_device(batch, device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch


def build_model(task, cfg: TrainConfig, feature_len: int = 50) -> WMAClassifier:
    """Backbone + head for a dataset's :func:`data_prep.dataset.task_info`."""
    kw = dict(patch_order=cfg.patch_order, attn=cfg.attn, init_seed=cfg.seed)
    if cfg.model == "tiny":
        # the tiny model's vocabulary and image grid follow the prepared data
        if task.vocab_size:
            kw["vocab_size"] = task.vocab_size
        if task.max_text_len:
            kw["max_position_embeddings"] = max(40, task.max_text_len)
        if task.image_size:
            kw["image_size"] = task.image_size
            kw["patch_size"] = task.patch_size
    if task.feature_dims:
        kw["feature_dims"] = dict(task.feature_dims)
        kw["feature_len"] = feature_len
    backbone = load_vilt(cfg.model, **kw)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed + 1)
        return WMAClassifier(backbone, task.n_out)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on weight matrices only: none on biases, norms, CLS rows, positions."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim < 2 or "norm" in name.lower() or name.endswith(".bias") or ".cls" in name or name.endswith(".pos"):
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


#: the work counters a run keeps in its training state (and so across a resume)
_NO_COUNTS = {"steps": 0, "train_samples": 0, "train_tokens": 0, "eval_seconds": 0.0, "eval_samples": 0, "eval_tokens": 0}


def make_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW with :func:`param_groups`; the fused (one kernel for all parameters) update on CPU
    and CUDA, which gives the same step as the per-parameter loop to float rounding and on the
    CPU takes about a tenth of its time."""
    fused = device.type in ("cpu", "cuda")
    return torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=tuple(cfg.adam_betas),
                             **({"fused": True} if fused else {}))


def model_flops_per_sample(model: nn.Module, tokens: int, *, backward: bool = True) -> int:
    """Dense FLOP estimate: ``6 N T`` for a training step (forward + backward), ``2 N T`` for a
    forward pass, with ``N`` the parameters outside embedding tables and position / CLS rows and
    ``T`` the number of tokens (a sequence length, or summed over samples; padding included: it
    is computed). Attention scores and the OT solve are not counted."""
    skip = set()
    for mod in model.modules():
        if isinstance(mod, nn.Embedding):
            skip.update(id(p) for p in mod.parameters())
    for name, p in model.named_parameters():
        if name.endswith(("position_embeddings", "cls_token", ".pos", ".cls")):
            skip.add(id(p))
    n = sum(p.numel() for p in model.parameters() if id(p) not in skip)
    return (6 if backward else 2) * n * int(tokens)


def warmup_linear(total_steps: int, warmup: float):
    """LambdaLR factor: linear 0 -> 1 over ``warmup * total`` steps, then linear 1 -> 0."""
    n_warm = max(1, int(round(warmup * total_steps)))

    def f(step: int) -> float:
        if step < n_warm:
            return (step + 1) / n_warm
        return max(0.0, (total_steps - step) / max(1, total_steps - n_warm))

    return f


def prior_logit(labels: np.ndarray, eps: float = 1e-3) -> torch.Tensor:
    """``log(p / (1 - p))`` per label column of 0/1 ``labels`` ([N] or [N, C]), with the rate
    ``p`` clipped to ``[eps, 1 - eps]`` (a label never or always present stays finite)."""
    y = np.asarray(labels, dtype=np.float64)
    p = np.clip(y.reshape(len(y), -1).mean(0), eps, 1 - eps)
    return torch.from_numpy(np.log(p / (1 - p))).float()


def init_head_bias(model: WMAClassifier, mode: str, kind: str, labels) -> None:
    """Set the last layer's bias of ``model.head`` as :attr:`TrainConfig.head_bias` says."""
    if mode not in ("zero", "prior"):
        raise ValueError(f"head_bias must be 'zero' or 'prior', got {mode!r}")
    if mode == "zero" or kind not in ("binary", "multilabel"):
        return
    last = model.head[-1]
    with torch.no_grad():
        last.bias.copy_(prior_logit(labels).to(last.bias))


def task_loss(kind: str, output: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    output = output.float()
    if kind == "binary":
        return nn.functional.binary_cross_entropy_with_logits(output.reshape(-1), labels.float().reshape(-1))
    if kind == "multilabel":
        return nn.functional.binary_cross_entropy_with_logits(output, labels.float())
    if kind == "regression":
        return nn.functional.l1_loss(output.reshape(-1), labels.float().reshape(-1))
    raise ValueError(f"unknown task kind {kind!r}")


def _autocast(device: torch.device, amp: str | None):
    if amp is None:
        return torch.autocast(device.type, enabled=False)
    if amp != "bf16":
        raise ValueError(f"amp must be None or 'bf16', got {amp!r}")
    return torch.autocast(device.type, dtype=torch.bfloat16)


@torch.inference_mode()  # cheaper than no_grad: no version counters, no autograd metadata
def evaluate(
    model: WMAClassifier,
    loader,
    kind: str,
    *,
    perturbation: P.Perturbation | None = None,
    device: torch.device | str = "cpu",
    amp: str | None = None,
    ot_iters: int = 50,
    progress: bool = False,
    desc: str = "eval",
) -> dict:
    """Metrics and per-sample OT distances of one pass over ``loader``.

    Returns ``{"metrics": {...}, "loss": task loss (float), "distances": {pair: np.ndarray [N]},
    "valid": {pair: [N] bool}, "output": np.ndarray, "labels": np.ndarray, "token_samples": int}``
    in loader order
    (``token_samples``: the sum of batch x sequence length, for the FLOP estimate).
    """
    device = torch.device(device)
    model.eval()
    pairs = modality_pairs(model.modalities)
    outs, labels, dists, valids = [], [], {}, {}
    token_samples = 0
    for batch in tqdm(loader, desc=desc, leave=False, disable=not progress):
        batch = to_device(batch, device)
        with _autocast(device, amp):
            logits, out = model(batch, perturbation)
        token_samples += out.attention_mask.numel()  # batch x sequence length (padding included)
        for k, (D, v) in pair_distances(out, pairs, iters=ot_iters).items():
            dists.setdefault(k, []).append(D.cpu().numpy())
            valids.setdefault(k, []).append(v.cpu().numpy())
        outs.append(logits.float().cpu().numpy())
        labels.append(batch["labels"].float().cpu().numpy())
    output = np.concatenate(outs)
    y = np.concatenate(labels)
    return {
        "metrics": compute_metrics(kind, y, output),
        "loss": float(task_loss(kind, torch.from_numpy(output), torch.from_numpy(y))),
        "distances": {k: np.concatenate(v) for k, v in dists.items()},
        "valid": {k: np.concatenate(v) for k, v in valids.items()},
        "output": output,
        "labels": y,
        "token_samples": token_samples,
    }


def _mean_valid(d: np.ndarray, v: np.ndarray) -> float:
    return float(d[v].mean()) if v.any() else float("nan")


def perturbation_digest(pert: P.Perturbation | None, n_total: int, hidden: int, *, tokens: int = 2, chunk: int = 512) -> str:
    """A digest of what a test case does to every sample of a split (16 hex digits of a sha256).

    :func:`wma_core.perturb.apply` is run on all-ones embedding features ``[n, 1 + tokens, hidden]``
    of the split's sample ids ``0..n_total-1``: the result holds the noise added to the first
    ``tokens`` tokens of every sample, or which samples are zeroed. It does not depend on the
    model, so every method and every training seed must record the same digest for a test case
    (``"none"`` for the unperturbed ``normal`` case).
    """
    if pert is None:
        return "none"
    h = hashlib.sha256()
    for start in range(0, n_total, chunk):
        ids = torch.arange(start, min(n_total, start + chunk))
        out = P.apply(pert, pert.modality, torch.ones(len(ids), 1 + tokens, hidden), ids)
        h.update(out.numpy().astype(np.float32).tobytes())
    return h.hexdigest()[:16]


def _environment(device) -> dict:
    import transformers

    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "machine": torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.machine()} CPU x{os.cpu_count()}",
    }


def fit(cfg: TrainConfig, store: ResultsStore | str | None = None, *, rerun: bool = False) -> dict:
    """Train, early-stop, restore the best epoch, test every test case; return the record.

    If ``store`` already holds a record for this configuration it is returned without
    training (unless ``rerun``). If the run was interrupted, it resumes from its last epoch.
    """

    if store is None:
        store = ResultsStore(Path(cfg.data_dir).parent.parent / "results")
    elif not isinstance(store, ResultsStore):
        store = ResultsStore(store)
    rcfg = run_config(cfg)
    key = config_key(rcfg)
    if not rerun and (rec := store.get(key)) is not None:
        return rec
    with store.lock(key):  # another process may be training this very run: wait, then reuse
        if not rerun and (rec := store.get(key)) is not None:
            return rec
        return _fit_locked(cfg, store, rcfg, key)


def _fit_locked(cfg: TrainConfig, store: ResultsStore, rcfg: dict, key: str) -> dict:
    from data_prep.dataset import PreparedDataset, make_loader, task_info

    device = resolve_device(cfg.device)
    train_ds = PreparedDataset(cfg.data_dir, "train")
    dev_ds = PreparedDataset(cfg.data_dir, "dev")
    test_ds = PreparedDataset(cfg.data_dir, "test")
    task = task_info(train_ds.manifest)
    if train_ds.manifest["dataset"] != cfg.dataset:
        raise ValueError(f"{cfg.data_dir} holds {train_ds.manifest['dataset']!r}, but the config says dataset={cfg.dataset!r}")
    feature_len = train_ds.arrays[task.modalities[0]].shape[1] if task.feature_dims else 0
    metric = headline_metric(task.kind)
    train_labels = train_ds.labels[: cfg.max_train_samples]  # the samples trained on (all when None)
    if cfg.max_train_samples is not None:
        train_ds = torch.utils.data.Subset(train_ds, range(min(cfg.max_train_samples, len(train_ds))))

    seed_everything(cfg.seed)
    model = build_model(task, cfg, feature_len).to(device)
    init_head_bias(model, cfg.head_bias, task.kind, train_labels)
    pairs = modality_pairs(model.modalities)
    reg = WMARegulariser(cfg.wma, pairs)
    opt = make_optimizer(model, cfg, device)
    loader_kw = dict(num_workers=cfg.num_workers, pin_memory=cfg.pin_memory)
    steps_per_epoch = len(make_loader(train_ds, cfg.batch_size, shuffle=True, seed=cfg.seed, epoch=0, drop_last=False))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_linear(cfg.epochs * steps_per_epoch, cfg.warmup))
    dev_loader = make_loader(dev_ds, cfg.eval_batch_size, **loader_kw)

    run_dir = store.run_dir(key)
    run_dir.mkdir(parents=True, exist_ok=True)
    last_path, best_path = run_dir / "last.pt", run_dir / "best.pt"
    state = {"epoch": 0, "best": None, "best_epoch": -1, "bad_epochs": 0, "history": [], "d_trajectory": [], "d0": None, "train_seconds": 0.0}
    if last_path.exists():
        ck = checkpoint.load(last_path)  # weights_only: a checkpoint from elsewhere never runs code
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        sched.load_state_dict(ck["sched"])
        checkpoint.set_rng_state(ck["rng"])
        state = ck["state"]
        reg.d0 = state["d0"]

    # D0: mean D over the first training batch under the initial weights, before any update
    if state["d0"] is None:
        first = to_device(next(iter(make_loader(train_ds, cfg.batch_size, shuffle=True, seed=cfg.seed, epoch=0))), device)
        model.eval()
        probe = P.EmbeddingRMS.from_batch(first)  # the same forward also measures the embedding scales
        with torch.no_grad(), _autocast(device, cfg.amp):
            _, out0 = model(first, probe)
            state["d0"] = reg.calibrate(pair_distances(out0, pairs, iters=cfg.ot_iters))
        state["emb_rms"] = probe.rms()
        state["d_trajectory"].append({"epoch": 0, "split": "train_first_batch", **state["d0"]})
    feasible = target_feasible(cfg.wma, state["d0"])
    if feasible and not all(feasible.values()):
        warnings.warn(
            f"{cfg.dataset} α={cfg.alpha:g} β={cfg.beta:g}: target β·D0 above the largest reachable OT distance "
            f"{D_MAX:g} for pairs {[k for k, ok in feasible.items() if not ok]} (D0 = {state['d0']}); "
            "the run is trained and recorded with infeasible=True",
            stacklevel=2,
        )

    epochs = tqdm(range(state["epoch"], cfg.epochs), desc=f"{cfg.dataset} {cfg.method}", disable=not cfg.progress, initial=state["epoch"], total=cfg.epochs)
    for epoch in epochs:
        if state["bad_epochs"] >= cfg.patience:
            break
        t0 = time.perf_counter()
        model.train()
        loader = make_loader(train_ds, cfg.batch_size, shuffle=True, seed=cfg.seed, epoch=epoch, **loader_kw)
        counts = state.setdefault("counts", {})
        for k, v in _NO_COUNTS.items():
            counts.setdefault(k, v)
        sums = {"loss": 0.0, "task": 0.0, "reg": 0.0, "n": 0}
        d_sums: dict = {}
        for batch in tqdm(loader, desc=f"epoch {epoch + 1}", leave=False, disable=not cfg.progress):
            batch = to_device(batch, device)
            with _autocast(device, cfg.amp):
                logits, out = model(batch)
            loss_task = task_loss(task.kind, logits, batch["labels"])
            loss = loss_task
            if cfg.alpha > 0:
                loss_reg, dstats = reg(pair_distances(out, pairs, iters=cfg.ot_iters))
                loss = loss + loss_reg
                sums["reg"] += float(loss_reg.detach())
                for k, v in dstats.items():
                    d_sums[k] = d_sums.get(k, 0.0) + v
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite loss at epoch {epoch + 1} (task {float(loss_task)}); lower lr={cfg.lr}?")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            sums["loss"] += float(loss.detach())
            sums["task"] += float(loss_task.detach())
            sums["n"] += 1
            counts["steps"] += 1
            counts["train_samples"] += int(logits.shape[0])
            counts["train_tokens"] += int(out.attention_mask.numel())
        n = max(1, sums["n"])
        t_eval = time.perf_counter()
        state["train_seconds"] += t_eval - t0
        dev = evaluate(model, dev_loader, task.kind, device=device, amp=cfg.eval_autocast, ot_iters=cfg.ot_iters)
        counts["eval_seconds"] += time.perf_counter() - t_eval
        counts["eval_samples"] += len(dev["labels"])
        counts["eval_tokens"] += dev["token_samples"]
        score = dev["metrics"][metric]
        if d_sums:
            state["d_trajectory"].append({"epoch": epoch + 1, "split": "train", **{k: v / n for k, v in d_sums.items()}})
        state["d_trajectory"].append(
            {"epoch": epoch + 1, "split": "dev", **{k: _mean_valid(d, dev["valid"][k]) for k, d in dev["distances"].items()}}
        )
        state["history"].append(
            {"epoch": epoch + 1, "loss": sums["loss"] / n, "task_loss": sums["task"] / n, "reg_loss": sums["reg"] / n,
             "lr": sched.get_last_lr()[0], "dev_loss": dev["loss"], **{f"dev_{k}": v for k, v in dev["metrics"].items()}}
        )
        # a tie on the headline metric goes to the lower dev loss: a multi-label model first
        # learns the label prior (macro-F1 0 at threshold 0.5 for a few epochs), and a tie that
        # counted as no progress stopped such runs before they learned anything
        tie = score == state["best"] and dev["loss"] < state.get("best_loss", float("inf"))
        if is_better(metric, score, state["best"]) or tie:
            state.update(best=score, best_loss=dev["loss"], best_epoch=epoch + 1, bad_epochs=0)
            checkpoint.save(model.state_dict(), best_path)
        else:
            state["bad_epochs"] += 1
        state["epoch"] = epoch + 1
        epochs.set_postfix({f"dev_{metric}": f"{score:.4f}"})
        checkpoint.save(
            {"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
             "rng": checkpoint.rng_state(), "state": checkpoint.plain(state)},
            last_path,
        )

    # test the best checkpoint on every test case
    if best_path.exists():
        model.load_state_dict(checkpoint.load(best_path))
    t0 = time.perf_counter()
    test_loader = make_loader(test_ds, cfg.eval_batch_size, **loader_kw)
    cases = P.test_cases(model.modalities, amplitude=cfg.amplitude, scales=state.get("emb_rms"), mode=cfg.noise_mode,
                         rate=cfg.missing_rate, seed=cfg.perturb_seed)
    metrics, distances, digests, predictions = {}, {}, {}, {}
    test_samples = test_tokens = 0
    for name, pert in tqdm(cases.items(), desc="test cases", leave=False, disable=not cfg.progress):
        pert = pert.for_split(len(test_ds)) if pert is not None else None
        digests[name] = perturbation_digest(pert, len(test_ds), model.backbone.config.hidden_size)
        res = evaluate(model, test_loader, task.kind, perturbation=pert, device=device, amp=cfg.eval_autocast, ot_iters=cfg.ot_iters)
        metrics[name] = res["metrics"]
        test_samples += len(res["labels"])
        test_tokens += res["token_samples"]
        predictions[name] = prediction_summary(task.kind, res["output"])  # a constant predictor = a collapsed run
        distances[name] = {k: [round(float(x), 6) for x in d] for k, d in res["distances"].items()}
    best = next((h for h in state["history"] if h["epoch"] == state["best_epoch"]), None)
    if best is not None:  # the dev pass of the best epoch saw these weights already
        dev_best = {k[4:]: v for k, v in best.items() if k.startswith("dev_") and k != "dev_loss"}
    else:
        dev_res = evaluate(model, dev_loader, task.kind, device=device, amp=cfg.eval_autocast, ot_iters=cfg.ot_iters)
        dev_best = dev_res["metrics"]
        test_samples += len(dev_res["labels"])
        test_tokens += dev_res["token_samples"]
    test_seconds = time.perf_counter() - t0
    counts = {**_NO_COUNTS, **(state.get("counts") or {})}
    eval_samples, eval_tokens = counts["eval_samples"] + test_samples, counts["eval_tokens"] + test_tokens
    record = {
        "key": key,
        "config": rcfg,
        "model_path": cfg.model,  # where the backbone was read (the key holds its identity)
        "d0": state["d0"],
        # WMA's target beta*D0 per pair against the largest reachable D (losses.D_MAX); {} for the baseline
        "target_feasible": feasible,
        "infeasible": bool(feasible) and not all(feasible.values()),
        "embedding_rms": state.get("emb_rms"),
        "noise": {p.modality: {"mode": p.mode, "amplitude": p.amplitude, "half_width": p.half_width}
                  for p in cases.values() if p is not None and p.kind == "noise"},
        "d_trajectory": state["d_trajectory"],
        "history": state["history"],
        "best_epoch": state["best_epoch"],
        "epochs_run": state["epoch"],
        "headline_metric": metric,
        "metrics": metrics,
        "predictions": predictions,
        "dev_metrics": dev_best,
        "distances": distances,
        # what each test case does to the test samples: identical for every method and seed
        "perturb_digest": digests,
        # where the run's time went (seconds of this process; a resumed run counts every attempt's
        # finished epochs) and the dense FLOP estimate of model_flops_per_sample
        "timings": {
            "train_seconds": state["train_seconds"],  # training steps only
            "dev_eval_seconds": counts["eval_seconds"],  # the per-epoch dev evaluations
            "test_seconds": test_seconds,  # every test case on the best checkpoint
            "steps": counts["steps"],
            "train_samples": counts["train_samples"],
            "eval_samples": eval_samples,
            "train_tokens": counts["train_tokens"],  # sum over steps of batch x sequence length
            "eval_tokens": eval_tokens,
            "train_flops": model_flops_per_sample(model, counts["train_tokens"]),
            "eval_flops": model_flops_per_sample(model, eval_tokens, backward=False),
            "train_samples_per_second": counts["train_samples"] / max(state["train_seconds"], 1e-9),
            "eval_samples_per_second": eval_samples / max(counts["eval_seconds"] + test_seconds, 1e-9),
            "threads": torch.get_num_threads(),
        },
        "n_params": sum(p.numel() for p in model.parameters()),
        "environment": _environment(device),
    }
    store.put(record)
    last_path.unlink(missing_ok=True)
    if not cfg.keep_best:
        best_path.unlink(missing_ok=True)
        try:
            run_dir.rmdir()
        except OSError:
            pass
    return record
