"""Test-time perturbations of one modality: uniform noise and a missing modality.

A perturbation acts on a modality's *embedding features*: the output of its embedding
operation (text: word + position + segment embedding after the LayerNorm; image: patch
projection + position embedding; feature sequences: the projected features + positions),
before the modality-type embedding is added. The modality's CLS row (row 0) and every
attention mask are left unchanged.

- ``noise``: ``e <- e + n`` with ``n ~ U(-a, a)`` (``mode="symmetric"``, the default) or
  ``n ~ a * U(0, 1)`` (``mode="positive"``), amplitude ``a = 3``.
- ``missing``: a fixed ``rate`` (50%) of the split's samples, chosen by a seeded permutation
  of ``range(n_total)``, get ``e <- 0``.

Both are functions of ``(seed, sample id, token's canonical index)`` only, never of batch
composition or device, so every method is tested on the same samples with the same noise.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np
import torch

KINDS = ("noise", "missing")
NOISE_MODES = ("symmetric", "positive")


@dataclass(frozen=True)
class Perturbation:
    """One test-time perturbation of one modality.

    Attributes:
        kind: ``"noise"`` or ``"missing"``.
        modality: the modality name (``"text"``, ``"image"``, ``"video"``, ``"audio"``).
        amplitude: noise amplitude ``a`` (3).
        mode: ``"symmetric"`` for ``U(-a, a)``, ``"positive"`` for ``a * U(0, 1)``.
        rate: share of samples made missing (0.5).
        seed: the seed shared by every method.
        n_total: number of samples in the split (needed by ``missing``).
    """

    kind: str
    modality: str
    amplitude: float = 3.0
    mode: str = "symmetric"
    rate: float = 0.5
    seed: int = 0
    n_total: int | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"perturbation kind must be one of {KINDS}, got {self.kind!r}")
        if self.mode not in NOISE_MODES:
            raise ValueError(f"noise mode must be one of {NOISE_MODES}, got {self.mode!r}")
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"missing rate must be in [0, 1], got {self.rate}")

    @property
    def name(self) -> str:
        return f"{self.modality}_{self.kind}"

    def for_split(self, n_total: int) -> "Perturbation":
        """The same perturbation bound to a split of ``n_total`` samples."""
        return replace(self, n_total=int(n_total))


def test_cases(modalities, **kwargs) -> dict[str, Perturbation | None]:
    """``{"normal": None, "<m>_noise": ..., "<m>_missing": ...}`` for every modality ``m``."""
    cases: dict[str, Perturbation | None] = {"normal": None}
    for kind in KINDS:
        for m in modalities:
            p = Perturbation(kind=kind, modality=m, **kwargs)
            cases[p.name] = p
    return cases


@lru_cache(maxsize=32)
def _missing_set(seed: int, n_total: int, rate: float) -> frozenset:
    k = int(round(rate * n_total))
    return frozenset(np.random.default_rng([seed, 0xDEAD]).permutation(n_total)[:k].tolist())


def missing_samples(p: Perturbation, sample_ids: torch.Tensor) -> torch.Tensor:
    """``[B]`` bool: which of ``sample_ids`` are missing under ``p``."""
    if p.n_total is None:
        raise ValueError(f"perturbation {p.name} needs n_total (the split size): use p.for_split(len(dataset))")
    chosen = _missing_set(p.seed, p.n_total, p.rate)
    return torch.tensor([int(i) in chosen for i in sample_ids.tolist()], dtype=torch.bool)


def _sample_noise(p: Perturbation, sample_id: int, count: int, dim: int) -> np.ndarray:
    """``[count, dim]`` noise for one sample; row k is the noise of canonical token k.

    numpy's generator fills row-major from one stream, so the first rows do not depend on
    ``count``.
    """
    rng = np.random.default_rng([p.seed, 0xBEEF, int(sample_id)])
    u = rng.random((count, dim), dtype=np.float32)
    if p.mode == "symmetric":
        return (2.0 * u - 1.0) * p.amplitude
    return u * p.amplitude


def apply(
    p: Perturbation | None,
    modality: str,
    emb: torch.Tensor,
    sample_ids: torch.Tensor | None,
    canon_index: torch.Tensor | None = None,
) -> torch.Tensor:
    """Perturb the embedding features of one modality.

    Args:
        p: the perturbation (``None``, or one for another modality: ``emb`` is returned as is).
        modality: the name of the modality ``emb`` belongs to.
        emb: ``[B, 1 + L, D]`` embedding features, CLS row first.
        sample_ids: ``[B]`` ids of the samples within their split.
        canon_index: ``[B, L]`` long, the canonical index of each non-CLS token within its
            sample (position for sequences, ``row * width + col`` in the sample's own patch
            grid for images), ``-1`` on padding. Default: ``arange(L)`` for every sample.
    Returns:
        ``[B, 1 + L, D]``: a new tensor with rows ``1:`` perturbed; row 0 unchanged.
    """
    if p is None or p.modality != modality:
        return emb
    if sample_ids is None:
        raise ValueError(f"perturbation {p.name} needs the batch's sample ids ('ids' in the batch)")
    B, L1, D = emb.shape
    if p.kind == "missing":
        gone = missing_samples(p, sample_ids).to(emb.device)  # [B]
        keep = torch.ones(B, L1, 1, dtype=emb.dtype, device=emb.device)
        keep[gone, 1:] = 0
        return emb * keep
    L = L1 - 1
    if canon_index is None:
        canon_index = torch.arange(L).expand(B, L)
    canon = canon_index.cpu().numpy()
    noise = np.zeros((B, L, D), dtype=np.float32)
    for b, sid in enumerate(sample_ids.tolist()):
        valid = canon[b] >= 0
        if valid.any():
            table = _sample_noise(p, sid, int(canon[b][valid].max()) + 1, D)
            noise[b, valid] = table[canon[b][valid]]
    noise_t = torch.from_numpy(noise).to(device=emb.device, dtype=emb.dtype)
    return torch.cat([emb[:, :1], emb[:, 1:] + noise_t], dim=1)
