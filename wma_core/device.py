"""Where a run computes: the device, bf16 autocast, seeds, moving batches, the environment record."""

from __future__ import annotations

import os
import platform
import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(device: str) -> torch.device:
    """``"auto"``: CUDA where there is a GPU, else the CPU; anything else as torch reads it."""
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
    """A tensor, or a dict of them (nested), moved to ``device``; anything else as it is."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch


def autocast(device: torch.device, amp: str | None):
    """The autocast context of ``amp``: ``None`` (float32, autocast off) or ``"bf16"``."""
    if amp is None:
        return torch.autocast(device.type, enabled=False)
    if amp != "bf16":
        raise ValueError(f"amp must be None or 'bf16', got {amp!r}")
    return torch.autocast(device.type, dtype=torch.bfloat16)


def environment(device: torch.device) -> dict:
    """The versions and the machine a run record names."""
    import transformers

    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "machine": torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.machine()} CPU x{os.cpu_count()}",
    }
