"""Helpers shared by the eager IPOT (:mod:`wma_core.ot`) and the fused kernel (:mod:`wma_core.ot_fused`)."""

from __future__ import annotations

import torch

_TINY = 1e-30  # floor of every denominator; far below any value a valid plan produces


def _check_masks(name: str, mask: torch.Tensor | None, batch: int, length: int, device) -> torch.Tensor:
    if mask is None:
        return torch.ones(batch, length, dtype=torch.bool, device=device)
    if mask.shape != (batch, length):
        raise ValueError(f"{name} has shape {tuple(mask.shape)}, expected {(batch, length)}")
    return mask.to(device=device, dtype=torch.bool)
