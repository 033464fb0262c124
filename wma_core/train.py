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

import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from . import checkpoint
from . import perturb as P
from .device import autocast, environment, resolve_device, seed_everything, to_device
from .evaluate import evaluate, mean_valid
from .losses import D_MAX, L2SP, WMAConfig, WMARegulariser, modality_pairs, pair_distances, target_feasible, task_loss
from .metrics import headline_metric, is_better, prediction_summary
from .model import READOUTS, WMAClassifier, load_vilt
from .optim import configure_optimizer, warmup_schedule
from .record import NO_COUNTS, perturbation_digest, run_config, timings
from .store import ResultsStore, config_key, touch_heartbeat


@dataclass
class TrainConfig:
    """One fine-tuning run. Defaults: the embedded default (tiny ViLT, synthetic twin, CPU).

    Attributes:
        dataset: dataset name (``hateful_memes``, ``mmimdb``, ``ur_funny``, ``mosei``).
        data_dir: a folder written by ``python -m data_prep prepare``.
        model: ``"tiny"``, a hub name (``dandelin/vilt-b32-mlm``) or a local folder.
        alpha, beta, target: the WMA regulariser (α = 0: baseline; α = 1, β = 0: minimise OT).
        lr: peak learning rate; batch_size: training batch; epochs: maximum epochs.
        head_lr_mult: the task head's learning rate is ``lr * head_lr_mult`` (the backbone keeps
            ``lr``): the new head starts from scratch while the backbone starts from pretrained
            weights, as in ViLT's own fine-tuning (its ``lr_mult`` of 10 on the VQA and NLVR2
            classifiers). 1: one learning rate for every parameter.
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
        preregistration: the digest of the study's pre-registration file the run was made under
            (:mod:`wma_study.preregistration`), copied into the record; not part of the key.
        feature_norm: a LayerNorm after each feature projection (feature-sequence tasks,
            :class:`wma_core.embeddings.FeatureEmbedding`); ``False`` is the earlier wiring.
        backbone: which replicated backbone ``model`` is (``"b0"``, ``"b1"``...: one
            independent pretraining of the miniature, the unit of replication above the seed);
            ``""`` where the model is not replicated (random init, a hub checkpoint).
        readout: what the task head reads (:class:`wma_core.model.WMAClassifier`): ``"pooler"``
            (ViLT's pooler on the first token) or ``"mean"`` (the mean of every real output token).
        l2sp: the L2-SP strength λ (:class:`wma_core.losses.L2SP`, a penalty towards the
            starting weights; 0: none). A third method beside the baseline and WMA; it cannot
            be combined with WMA (``alpha > 0``).
    """

    dataset: str = "hateful_memes"
    data_dir: str = "_data/prepared/hateful_memes"
    model: str = "tiny"
    alpha: float = 0.0
    beta: float = 1.0
    target: str = "init"
    lr: float = 1e-3
    head_lr_mult: float = 1.0
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
    feature_norm: bool = True
    backbone: str = ""
    l2sp: float = 0.0
    readout: str = "pooler"
    # not part of the key
    device: str = "auto"
    num_workers: int = 0
    pin_memory: bool = False
    eval_batch_size: int = 256
    progress: bool = True
    keep_best: bool = False
    preregistration: str = ""

    @property
    def eval_autocast(self) -> str | None:
        return self.amp if self.eval_amp == "same" else self.eval_amp

    @property
    def wma(self) -> WMAConfig:
        return WMAConfig(alpha=self.alpha, beta=self.beta, target=self.target, iters=self.ot_iters)

    def __post_init__(self):
        if not self.head_lr_mult > 0:
            raise ValueError(f"head_lr_mult must be > 0, got {self.head_lr_mult}")
        if self.readout not in READOUTS:
            raise ValueError(f"readout must be one of {READOUTS}, got {self.readout!r}")
        if not self.l2sp >= 0:
            raise ValueError(f"l2sp must be >= 0, got {self.l2sp}")
        if self.l2sp > 0 and self.alpha > 0:
            raise ValueError(f"L2-SP (l2sp={self.l2sp:g}) is a method of its own: it cannot be combined with WMA "
                             f"(alpha={self.alpha:g}); set one of them to 0")

    @property
    def method(self) -> str:
        """``baseline``, ``wma``, ``min_ot`` (:attr:`WMAConfig.method`) or ``l2sp``."""
        return "l2sp" if self.l2sp > 0 else self.wma.method


def build_model(task, cfg: TrainConfig, feature_len: int = 50) -> WMAClassifier:
    """Backbone + head for a dataset's :func:`data_prep.dataset.task_info`."""
    kw = dict(patch_order=cfg.patch_order, attn=cfg.attn, init_seed=cfg.seed, feature_norm=cfg.feature_norm)
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
        return WMAClassifier(backbone, task.n_out, readout=cfg.readout)


def prior_logit(labels: np.ndarray, eps: float = 1e-3) -> torch.Tensor:
    """``log(p / (1 - p))`` per label column of 0/1 ``labels`` ([N] or [N, C]), with the rate
    ``p`` clipped to ``[eps, 1 - eps]`` (a label never or always present stays finite)."""
    y = np.asarray(labels, dtype=np.float64)
    p = np.clip(y.reshape(len(y), -1).mean(0), eps, 1 - eps)
    return torch.from_numpy(np.log(p / (1 - p))).float()


def prior_output(kind: str, labels) -> np.ndarray:
    """The prior predictor's raw output per output column, ``[C]`` (``[1]`` for one column): the
    label log-odds of ``labels`` (:func:`prior_logit`, what ``head_bias="prior"`` starts the head
    at) for binary / multi-label, the label mean for regression. What
    :func:`wma_core.metrics.prediction_summary` measures ``prior_gap`` against."""
    if kind in ("binary", "multilabel"):
        return prior_logit(labels).double().numpy()
    y = np.asarray(labels, dtype=np.float64)
    return y.reshape(len(y), -1).mean(0)


def init_head_bias(model: WMAClassifier, mode: str, kind: str, labels) -> None:
    """Set the last layer's bias of ``model.head`` as :attr:`TrainConfig.head_bias` says."""
    if mode not in ("zero", "prior"):
        raise ValueError(f"head_bias must be 'zero' or 'prior', got {mode!r}")
    if mode == "zero" or kind not in ("binary", "multilabel"):
        return
    last = model.head[-1]
    with torch.no_grad():
        last.bias.copy_(prior_logit(labels).to(last.bias))


def make_optimizer(model, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """The fine-tuning AdamW of ``cfg`` (:func:`wma_core.optim.configure_optimizer`, fused on CPU and CUDA).

    With ``cfg.head_lr_mult != 1`` the head's parameters leave their two groups (decay and no
    decay) for two of their own at ``lr * head_lr_mult``, with the same weight decay; the
    schedule then scales every group's own peak rate by the same factor per step."""
    opt = configure_optimizer(model, weight_decay=cfg.weight_decay, lr=cfg.lr, betas=cfg.adam_betas,
                              device_type=device.type)
    if cfg.head_lr_mult == 1.0:
        return opt
    head = {id(p) for p in model.head.parameters()}
    for group in list(opt.param_groups):
        mine = [p for p in group["params"] if id(p) in head]
        if mine:
            group["params"] = [p for p in group["params"] if id(p) not in head]
            opt.add_param_group({"params": mine, "weight_decay": group["weight_decay"], "lr": cfg.lr * cfg.head_lr_mult})
    opt.param_groups[:] = [g for g in opt.param_groups if g["params"]]
    return opt


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


@dataclass
class _Run:
    """What the steps of one run share: its data, model, optimiser and training state."""

    cfg: TrainConfig
    store: ResultsStore
    rcfg: dict
    key: str
    device: torch.device
    task: object
    train_ds: object
    dev_ds: object
    test_ds: object
    metric: str
    model: WMAClassifier
    pairs: list
    reg: WMARegulariser
    opt: torch.optim.Optimizer
    sched: object
    dev_loader: object
    loader_kw: dict
    run_dir: Path
    state: dict
    prior: np.ndarray | None = None  # the prior predictor's output per column (:func:`prior_output`)
    start: L2SP | None = None  # the starting backbone: L2-SP's penalty (cfg.l2sp > 0) and the weight shift

    @property
    def last_path(self) -> Path:
        return self.run_dir / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.run_dir / "best.pt"

    def beat(self) -> None:
        """Mark progress (every step, dev pass and test case): how a sweep tells a slow run from a hung one."""
        touch_heartbeat(self.store.heartbeat(self.key))


def _setup(cfg: TrainConfig, store: ResultsStore, rcfg: dict, key: str) -> _Run:
    """Data, model (head bias included), regulariser, optimiser and schedule, in the order that
    fixes the run's random streams."""
    from data_prep.dataset import PreparedDataset, make_loader, task_info

    device = resolve_device(cfg.device)
    train_ds = PreparedDataset(cfg.data_dir, "train")
    dev_ds = PreparedDataset(cfg.data_dir, "dev")
    test_ds = PreparedDataset(cfg.data_dir, "test")
    task = task_info(train_ds.manifest)
    if train_ds.manifest["dataset"] != cfg.dataset:
        raise ValueError(f"{cfg.data_dir} holds {train_ds.manifest['dataset']!r}, but the config says dataset={cfg.dataset!r}")
    feature_len = train_ds.arrays[task.modalities[0]].shape[1] if task.feature_dims else 0
    train_labels = train_ds.labels[: cfg.max_train_samples]  # the samples trained on (all when None)
    if cfg.max_train_samples is not None:
        train_ds = torch.utils.data.Subset(train_ds, range(min(cfg.max_train_samples, len(train_ds))))

    seed_everything(cfg.seed)
    model = build_model(task, cfg, feature_len).to(device)
    init_head_bias(model, cfg.head_bias, task.kind, train_labels)
    pairs = modality_pairs(model.modalities)
    reg = WMARegulariser(cfg.wma, pairs)
    # anchored before any resume: the start is the folder's weights (or the seed's initialisation)
    start = L2SP(model.backbone.parameters(), cfg.l2sp)
    opt = make_optimizer(model, cfg, device)
    loader_kw = dict(num_workers=cfg.num_workers, pin_memory=cfg.pin_memory)
    steps_per_epoch = len(make_loader(train_ds, cfg.batch_size, shuffle=True, seed=cfg.seed, epoch=0, drop_last=False))
    sched = warmup_schedule(opt, cfg.epochs * steps_per_epoch, cfg.warmup)
    dev_loader = make_loader(dev_ds, cfg.eval_batch_size, **loader_kw)
    run_dir = store.run_dir(key)
    run_dir.mkdir(parents=True, exist_ok=True)
    state = {"epoch": 0, "best": None, "best_epoch": -1, "bad_epochs": 0, "history": [], "d_trajectory": [], "d0": None, "train_seconds": 0.0}
    return _Run(cfg, store, rcfg, key, device, task, train_ds, dev_ds, test_ds, headline_metric(task.kind), model,
                pairs, reg, opt, sched, dev_loader, loader_kw, run_dir, state, prior_output(task.kind, train_labels), start)


def _resume(run: _Run) -> None:
    """Continue after the last finished epoch of an interrupted run (``last.pt``), if any."""
    if not run.last_path.exists():
        return
    ck = checkpoint.load(run.last_path)  # weights_only: a checkpoint from elsewhere never runs code
    run.model.load_state_dict(ck["model"])
    run.opt.load_state_dict(ck["opt"])
    run.sched.load_state_dict(ck["sched"])
    checkpoint.set_rng_state(ck["rng"])
    run.state = ck["state"]
    run.reg.d0 = run.state["d0"]


def _measure_d0(run: _Run) -> dict:
    """D0: mean D over the first training batch under the initial weights, before any update
    (the same forward measures the embedding scales of relative noise). Returns which pairs'
    targets β·D0 are reachable (:func:`wma_core.losses.target_feasible`), with a warning where not."""
    from data_prep.dataset import make_loader

    cfg, state = run.cfg, run.state
    if state["d0"] is None:
        first = to_device(next(iter(make_loader(run.train_ds, cfg.batch_size, shuffle=True, seed=cfg.seed, epoch=0))), run.device)
        run.model.eval()
        probe = P.EmbeddingRMS.from_batch(first)
        with torch.no_grad(), autocast(run.device, cfg.amp):
            _, out0 = run.model(first, probe)
            state["d0"] = run.reg.calibrate(pair_distances(out0, run.pairs, iters=cfg.ot_iters))
        state["emb_rms"] = probe.rms()
        state["d_trajectory"].append({"epoch": 0, "split": "train_first_batch", **state["d0"]})
    feasible = target_feasible(cfg.wma, state["d0"])
    if feasible and not all(feasible.values()):
        warnings.warn(
            f"{cfg.dataset} α={cfg.alpha:g} β={cfg.beta:g}: target β·D0 above the largest reachable OT distance "
            f"{D_MAX:g} for pairs {[k for k, ok in feasible.items() if not ok]} (D0 = {state['d0']}); "
            "the run is trained and recorded with infeasible=True",
            stacklevel=3,
        )
    return feasible


def _train_epoch(run: _Run, epoch: int) -> tuple[dict, dict]:
    """One epoch of steps: ``loss = task + α Σ_pairs mean_i (D_i − β D0)²`` (or ``task + R_sp``,
    :class:`wma_core.losses.L2SP`, for the ``l2sp`` method). Returns the sums
    of the losses (``n`` steps) and of the per-pair D statistics."""
    from data_prep.dataset import make_loader

    cfg, model, state = run.cfg, run.model, run.state
    model.train()
    loader = make_loader(run.train_ds, cfg.batch_size, shuffle=True, seed=cfg.seed, epoch=epoch, **run.loader_kw)
    counts = state.setdefault("counts", {})
    for k, v in NO_COUNTS.items():
        counts.setdefault(k, v)
    sums = {"loss": 0.0, "task": 0.0, "reg": 0.0, "n": 0}
    d_sums: dict = {}
    for batch in tqdm(loader, desc=f"epoch {epoch + 1}", leave=False, disable=not cfg.progress):
        batch = to_device(batch, run.device)
        with autocast(run.device, cfg.amp):
            logits, out = model(batch)
        loss_task = task_loss(run.task.kind, logits, batch["labels"])
        loss = loss_task
        if cfg.alpha > 0:
            loss_reg, dstats = run.reg(pair_distances(out, run.pairs, iters=cfg.ot_iters))
            loss = loss + loss_reg
            sums["reg"] += float(loss_reg.detach())
            for k, v in dstats.items():
                d_sums[k] = d_sums.get(k, 0.0) + v
        if cfg.l2sp > 0:
            loss_sp = run.start()
            loss = loss + loss_sp
            sums["reg"] += float(loss_sp.detach())
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss at epoch {epoch + 1} (task {float(loss_task)}); lower lr={cfg.lr}?")
        run.opt.zero_grad(set_to_none=True)
        loss.backward()
        run.opt.step()
        run.sched.step()
        run.beat()
        sums["loss"] += float(loss.detach())
        sums["task"] += float(loss_task.detach())
        sums["n"] += 1
        counts["steps"] += 1
        counts["train_samples"] += int(logits.shape[0])
        counts["train_tokens"] += int(out.attention_mask.numel())
    return sums, d_sums


def _dev_epoch(run: _Run, epoch: int, sums: dict, d_sums: dict) -> float:
    """The dev pass after an epoch: history, D trajectory, early-stopping state, ``best.pt``.
    Returns the dev headline metric."""
    cfg, state, counts = run.cfg, run.state, run.state["counts"]
    n = max(1, sums["n"])
    t_eval = time.perf_counter()
    dev = evaluate(run.model, run.dev_loader, run.task.kind, device=run.device, amp=cfg.eval_autocast, ot_iters=cfg.ot_iters)
    counts["eval_seconds"] += time.perf_counter() - t_eval
    counts["eval_samples"] += len(dev["labels"])
    counts["eval_tokens"] += dev["token_samples"]
    run.beat()
    score = dev["metrics"][run.metric]
    if d_sums:
        state["d_trajectory"].append({"epoch": epoch + 1, "split": "train", **{k: v / n for k, v in d_sums.items()}})
    state["d_trajectory"].append(
        {"epoch": epoch + 1, "split": "dev", **{k: mean_valid(d, dev["valid"][k]) for k, d in dev["distances"].items()}}
    )
    state["history"].append(
        {"epoch": epoch + 1, "loss": sums["loss"] / n, "task_loss": sums["task"] / n, "reg_loss": sums["reg"] / n,
         "lr": run.sched.get_last_lr()[0], "weight_shift": run.start.distance(), "dev_loss": dev["loss"], **{f"dev_{k}": v for k, v in dev["metrics"].items()}}
    )
    # a tie on the headline metric goes to the lower dev loss: a multi-label model first
    # learns the label prior (macro-F1 0 at threshold 0.5 for a few epochs), and a tie that
    # counted as no progress stopped such runs before they learned anything
    tie = score == state["best"] and dev["loss"] < state.get("best_loss", float("inf"))
    if is_better(run.metric, score, state["best"]) or tie:
        state.update(best=score, best_loss=dev["loss"], best_epoch=epoch + 1, bad_epochs=0)
        checkpoint.save(run.model.state_dict(), run.best_path)
    else:
        state["bad_epochs"] += 1
    state["epoch"] = epoch + 1
    return score


def _save_last(run: _Run) -> None:
    """The whole training state after an epoch, atomically: weights, optimiser, schedule, RNG."""
    checkpoint.save(
        {"model": run.model.state_dict(), "opt": run.opt.state_dict(), "sched": run.sched.state_dict(),
         "rng": checkpoint.rng_state(), "state": checkpoint.plain(run.state)},
        run.last_path,
    )


def _train(run: _Run) -> None:
    """Epochs from the last finished one until ``cfg.epochs`` or early stopping."""
    cfg, state = run.cfg, run.state
    epochs = tqdm(range(state["epoch"], cfg.epochs), desc=f"{cfg.dataset} {cfg.method}", disable=not cfg.progress,
                  initial=state["epoch"], total=cfg.epochs)
    for epoch in epochs:
        if state["bad_epochs"] >= cfg.patience:
            break
        t0 = time.perf_counter()
        sums, d_sums = _train_epoch(run, epoch)
        state["train_seconds"] += time.perf_counter() - t0
        score = _dev_epoch(run, epoch, sums, d_sums)
        epochs.set_postfix({f"dev_{run.metric}": f"{score:.4f}"})
        _save_last(run)


def _test_best(run: _Run) -> dict:
    """Every test case on the best checkpoint (restored from ``best.pt``), and the dev metrics
    of those weights."""
    from data_prep.dataset import make_loader

    cfg, model, state = run.cfg, run.model, run.state
    if run.best_path.exists():
        model.load_state_dict(checkpoint.load(run.best_path))
    t0 = time.perf_counter()
    test_loader = make_loader(run.test_ds, cfg.eval_batch_size, **run.loader_kw)
    cases = P.test_cases(model.modalities, amplitude=cfg.amplitude, scales=state.get("emb_rms"), mode=cfg.noise_mode,
                         rate=cfg.missing_rate, seed=cfg.perturb_seed)
    out = {"metrics": {}, "distances": {}, "perturb_digest": {}, "predictions": {}, "cases": cases}
    samples = tokens = 0
    for name, pert in tqdm(cases.items(), desc="test cases", leave=False, disable=not cfg.progress):
        pert = pert.for_split(len(run.test_ds)) if pert is not None else None
        out["perturb_digest"][name] = perturbation_digest(pert, len(run.test_ds), model.backbone.config.hidden_size)
        res = evaluate(model, test_loader, run.task.kind, perturbation=pert, device=run.device, amp=cfg.eval_autocast,
                       ot_iters=cfg.ot_iters)
        run.beat()
        out["metrics"][name] = res["metrics"]
        samples += len(res["labels"])
        tokens += res["token_samples"]
        # a constant predictor = a collapsed run; prior_gap tells one that never left the prior
        out["predictions"][name] = prediction_summary(run.task.kind, res["output"], run.prior)
        out["distances"][name] = {k: [round(float(x), 6) for x in d] for k, d in res["distances"].items()}
    best = next((h for h in state["history"] if h["epoch"] == state["best_epoch"]), None)
    if best is not None:  # the dev pass of the best epoch saw these weights already
        out["dev_metrics"] = {k[4:]: v for k, v in best.items() if k.startswith("dev_") and k != "dev_loss"}
    else:
        dev_res = evaluate(model, run.dev_loader, run.task.kind, device=run.device, amp=cfg.eval_autocast, ot_iters=cfg.ot_iters)
        out["dev_metrics"] = dev_res["metrics"]
        samples += len(dev_res["labels"])
        tokens += dev_res["token_samples"]
    out["timings"] = timings(state, model, time.perf_counter() - t0, samples, tokens)
    return out


def _record(run: _Run, feasible: dict, tested: dict) -> dict:
    """The run's record in the results store."""
    cfg, state = run.cfg, run.state
    return {
        "key": run.key,
        "config": run.rcfg,
        "model_path": cfg.model,  # where the backbone was read (the key holds its identity)
        "d0": state["d0"],
        # WMA's target beta*D0 per pair against the largest reachable D (losses.D_MAX); {} for the baseline
        "target_feasible": feasible,
        "infeasible": bool(feasible) and not all(feasible.values()),
        "embedding_rms": state.get("emb_rms"),
        "noise": {p.modality: {"mode": p.mode, "amplitude": p.amplitude, "half_width": p.half_width}
                  for p in tested["cases"].values() if p is not None and p.kind == "noise"},
        "d_trajectory": state["d_trajectory"],
        "history": state["history"],
        "best_epoch": state["best_epoch"],
        "epochs_run": state["epoch"],
        "headline_metric": run.metric,
        "metrics": tested["metrics"],
        "predictions": tested["predictions"],
        "preregistration": cfg.preregistration,
        "dev_metrics": tested["dev_metrics"],
        "distances": tested["distances"],
        # what each test case does to the test samples: identical for every method and seed
        "perturb_digest": tested["perturb_digest"],
        # where the run's time went (seconds of this process) and the dense FLOP estimate
        "timings": tested["timings"],
        "n_params": sum(p.numel() for p in run.model.parameters()),
        "environment": environment(run.device),
    }


def _fit_locked(cfg: TrainConfig, store: ResultsStore, rcfg: dict, key: str) -> dict:
    run = _setup(cfg, store, rcfg, key)
    run.beat()
    _resume(run)
    feasible = _measure_d0(run)
    _train(run)
    record = _record(run, feasible, _test_best(run))
    store.put(record)
    run.last_path.unlink(missing_ok=True)
    store.heartbeat(key).unlink(missing_ok=True)
    if not cfg.keep_best:
        run.best_path.unlink(missing_ok=True)
        try:
            run.run_dir.rmdir()
        except OSError:
            pass
    return record
