"""One optimiser recipe for fine-tuning and pretraining: AdamW with weight decay on weight
matrices only, and a linear warm-up then linear decay (nanoGPT's ``configure_optimizers``:
one place for the weight-decay rule, taking plain values)."""

from __future__ import annotations

import torch
from torch import nn


def param_groups(model: nn.Module, weight_decay: float, *, decay_rows: bool = False) -> list[dict]:
    """Two AdamW groups: ``weight_decay`` on weight matrices, none on biases and norms.

    ``decay_rows=False`` (fine-tuning) also spares the CLS rows and position tables of the
    feature embeddings (names containing ``.cls`` or ending in ``.pos``) and skips frozen
    parameters; ``decay_rows=True`` is ViLT's pretraining rule, which decays every tensor of
    two or more dimensions."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not decay_rows and not p.requires_grad:
            continue
        rows = not decay_rows and (".cls" in name or name.endswith(".pos"))
        if p.ndim < 2 or "norm" in name.lower() or name.endswith(".bias") or rows:
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def configure_optimizer(model: nn.Module, *, weight_decay: float, lr: float, betas, device_type: str | None = None,
                        decay_rows: bool = False) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups`. With ``device_type`` ``"cpu"`` or ``"cuda"`` the fused
    update (one kernel for all parameters): the same step as the per-parameter loop to float
    rounding, and on the CPU about a tenth of its time; ``None`` keeps the per-parameter loop."""
    fused = device_type in ("cpu", "cuda")
    return torch.optim.AdamW(param_groups(model, weight_decay, decay_rows=decay_rows), lr=lr, betas=tuple(betas),
                             **({"fused": True} if fused else {}))


def warmup_linear(total_steps: int, warmup: float):
    """LambdaLR factor: linear 0 -> 1 over ``warmup * total`` steps, then linear 1 -> 0."""
    n_warm = max(1, int(round(warmup * total_steps)))

    def f(step: int) -> float:
        if step < n_warm:
            return (step + 1) / n_warm
        return max(0.0, (total_steps - step) / max(1, total_steps - n_warm))

    return f


def warmup_schedule(opt: torch.optim.Optimizer, total_steps: int, warmup: float) -> torch.optim.lr_scheduler.LambdaLR:
    """:func:`warmup_linear` as a scheduler stepped once per optimiser step."""
    return torch.optim.lr_scheduler.LambdaLR(opt, warmup_linear(total_steps, warmup))
