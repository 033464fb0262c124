"""Test-time perturbations of one modality: uniform noise and a missing modality.

A perturbation acts on a modality's *embedding features*: the output of its embedding
operation (text: word + position + segment embedding after the LayerNorm; image: patch
projection + position embedding; feature sequences: the projected features + positions),
before the modality-type embedding is added. The modality's CLS row (row 0) and every
attention mask are left unchanged.

- ``noise``: ``e <- e + n`` with ``n ~ U(-a, a)`` (``mode="symmetric"``, the default),
  ``n ~ a * U(0, 1)`` (``mode="positive"``), amplitude ``a = 3`` (the paper's), or
  ``n ~ U(-a * r, a * r)`` (``mode="relative"``) where ``r`` is the RMS of that modality's
  embedding features, ``r = sqrt(mean over valid non-CLS tokens t and dims k of e[t, k]^2)``,
  measured on the first training batch under the initial weights (:class:`EmbeddingRMS`) and
  stored with the run. ``relative`` makes one amplitude mean the same corruption whatever the
  backbone's embedding scale (on the tiny model the text embedding's RMS is ~1 after its
  LayerNorm, the image embedding's ~0.3, the projected feature sequences' ~0.1-0.2).
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
NOISE_MODES = ("symmetric", "positive", "relative")


@dataclass(frozen=True)
class Perturbation:
    """One test-time perturbation of one modality.

    Attributes:
        kind: ``"noise"`` or ``"missing"``.
        modality: the modality name (``"text"``, ``"image"``, ``"video"``, ``"audio"``).
        amplitude: noise amplitude ``a`` (3).
        mode: ``"symmetric"`` for ``U(-a, a)``, ``"positive"`` for ``a * U(0, 1)``,
            ``"relative"`` for ``U(-a * scale, a * scale)``.
        rate: share of samples made missing (0.5).
        seed: the seed shared by every method.
        n_total: number of samples in the split (needed by ``missing``).
        scale: the modality's embedding RMS ``r`` (needed by ``relative`` noise).
    """

    kind: str
    modality: str
    amplitude: float = 3.0
    mode: str = "symmetric"
    rate: float = 0.5
    seed: int = 0
    n_total: int | None = None
    scale: float | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"perturbation kind must be one of {KINDS}, got {self.kind!r}")
        if self.mode not in NOISE_MODES:
            raise ValueError(f"noise mode must be one of {NOISE_MODES}, got {self.mode!r}")
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"missing rate must be in [0, 1], got {self.rate}")
        if not (np.isfinite(self.amplitude) and self.amplitude >= 0):
            raise ValueError(f"noise amplitude must be finite and >= 0, got {self.amplitude}")
        if self.kind == "noise" and self.mode == "relative":
            if self.scale is None or not (np.isfinite(self.scale) and self.scale >= 0):
                raise ValueError(
                    f"relative noise on {self.modality!r} needs scale = that modality's embedding RMS "
                    f"(finite, >= 0; measured on the first training batch), got {self.scale!r}"
                )

    @property
    def half_width(self) -> float:
        """The noise's largest magnitude: ``a`` (symmetric, positive) or ``a * scale`` (relative)."""
        return self.amplitude * self.scale if self.mode == "relative" else self.amplitude

    @property
    def name(self) -> str:
        return f"{self.modality}_{self.kind}"

    def for_split(self, n_total: int) -> "Perturbation":
        """The same perturbation bound to a split of ``n_total`` samples."""
        return replace(self, n_total=int(n_total))


def test_cases(modalities, *, amplitude=3.0, scales: dict | None = None, **kwargs) -> dict[str, Perturbation | None]:
    """``{"normal": None, "<m>_noise": ..., "<m>_missing": ...}`` for every modality ``m``.

    Args:
        amplitude: one amplitude for every modality, or ``{m: a_m}`` (one per modality).
        scales: ``{m: r_m}`` embedding RMS per modality (needed with ``mode="relative"``).
        **kwargs: further :class:`Perturbation` fields (``mode``, ``rate``, ``seed``).
    """
    amps = dict(amplitude) if isinstance(amplitude, dict) else {m: amplitude for m in modalities}
    missing = [m for m in modalities if m not in amps]
    if missing:
        raise ValueError(f"no noise amplitude for modalities {missing} (amplitudes given for {sorted(amps)})")
    cases: dict[str, Perturbation | None] = {"normal": None}
    for kind in KINDS:
        for m in modalities:
            scale = None
            if kind == "noise" and kwargs.get("mode") == "relative":
                if not scales or m not in scales:
                    raise ValueError(f"relative noise needs the embedding RMS of {m!r}; scales has {sorted(scales or {})}")
                scale = float(scales[m])
            p = Perturbation(kind=kind, modality=m, amplitude=float(amps[m]), scale=scale, **kwargs)
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
    if p.mode == "positive":
        return u * np.float32(p.amplitude)
    return (2.0 * u - 1.0) * np.float32(p.half_width)


class EmbeddingRMS:
    """A probe passed where a perturbation goes: it records, instead of perturbing, the RMS of
    each modality's embedding features.

    ``r_m = sqrt(sum e^2 / (n_valid_tokens * D))`` over the rows ``1:`` (CLS row excluded) that
    are valid: ``valid[m]`` ``[B, L]`` when given (text: the attention mask without its CLS
    column; feature sequences: their time-step masks), else the image rows with a canonical
    index ``>= 0``, else every row.

    Usage: ``probe = EmbeddingRMS.from_batch(batch); model(batch, probe); probe.rms()``.
    """

    def __init__(self, valid: dict | None = None):
        self.valid = dict(valid or {})
        self._sq: dict[str, float] = {}
        self._n: dict[str, int] = {}

    @classmethod
    def from_batch(cls, batch: dict) -> "EmbeddingRMS":
        """The valid-token masks of a collated batch (:mod:`data_prep.dataset`'s layout)."""
        valid = {}
        if batch.get("attention_mask") is not None:
            valid["text"] = batch["attention_mask"][:, 1:].bool()
        for m, mk in (batch.get("feature_masks") or {}).items():
            valid[m] = mk.bool()
        return cls(valid)

    @torch.no_grad()
    def observe(self, modality: str, emb: torch.Tensor, canon_index: torch.Tensor | None = None) -> None:
        rows = emb[:, 1:].float()  # [B, L, D]
        B, L, D = rows.shape
        if modality in self.valid:
            mask = self.valid[modality].to(rows.device).bool()
            if mask.shape != (B, L):
                raise ValueError(f"valid mask of {modality!r} has shape {tuple(mask.shape)}, expected {(B, L)}")
        elif canon_index is not None:
            mask = canon_index.to(rows.device) >= 0
        else:
            mask = torch.ones(B, L, dtype=torch.bool, device=rows.device)
        self._sq[modality] = self._sq.get(modality, 0.0) + float((rows.pow(2).sum(-1) * mask).sum())
        self._n[modality] = self._n.get(modality, 0) + int(mask.sum()) * D

    def rms(self) -> dict[str, float]:
        """``{modality: r_m}`` over everything observed (NaN for a modality with no valid token)."""
        return {m: (self._sq[m] / self._n[m]) ** 0.5 if self._n[m] else float("nan") for m in self._sq}


def apply(
    p: Perturbation | None,
    modality: str,
    emb: torch.Tensor,
    sample_ids: torch.Tensor | None,
    canon_index: torch.Tensor | None = None,
) -> torch.Tensor:
    """Perturb the embedding features of one modality.

    Args:
        p: the perturbation (``None``, or one for another modality: ``emb`` is returned as is;
            an :class:`EmbeddingRMS` probe records ``emb``'s scale and returns it as is).
        modality: the name of the modality ``emb`` belongs to.
        emb: ``[B, 1 + L, D]`` embedding features, CLS row first.
        sample_ids: ``[B]`` ids of the samples within their split.
        canon_index: ``[B, L]`` long, the canonical index of each non-CLS token within its
            sample (position for sequences, ``row * width + col`` in the sample's own patch
            grid for images), ``-1`` on padding. Default: ``arange(L)`` for every sample.
    Returns:
        ``[B, 1 + L, D]``: a new tensor with rows ``1:`` perturbed; row 0 unchanged.
    """
    if isinstance(p, EmbeddingRMS):
        p.observe(modality, emb, canon_index)
        return emb
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
