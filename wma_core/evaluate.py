"""One pass of a fine-tuned model over a split: metrics, task loss and per-sample OT distances."""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from . import perturb as P
from .device import autocast, to_device
from .losses import modality_pairs, pair_distances, task_loss
from .metrics import compute_metrics


@torch.inference_mode()  # cheaper than no_grad: no version counters, no autograd metadata
def evaluate(
    model,
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
    """Metrics and per-sample OT distances of one pass of a :class:`wma_core.model.WMAClassifier`
    over ``loader``.

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
        with autocast(device, amp):
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


def mean_valid(d: np.ndarray, v: np.ndarray) -> float:
    """The mean of ``d`` over the samples ``v`` marks valid (NaN when none is)."""
    return float(d[v].mean()) if v.any() else float("nan")
