"""Plain containers passed from the readers to `prepare`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class ImageTextRecord:
    """One image+text sample before its image is decoded.

    raw_id: the dataset's own id (string).
    image: absolute path of the raw image file.
    text: the text to tokenise.
    label: float32 [] (binary) or [C] (multi-label 0/1).
    where: "<file> <record>" naming the record in messages.
    """

    raw_id: str
    image: Path
    text: str
    label: np.ndarray
    where: str


@dataclass
class ImageTextRaw:
    """Everything an image+text reader found.

    splits: split -> records in file order.
    raw_counts: split -> records seen in the raw files (before any skip).
    image_root: folder whose files get one combined digest in the manifest (e.g. "img/").
    sources: relative path -> sha256 of the metadata files read (jsonl, split.json).
    meta_digests: per-record metadata files (MM-IMDb json) -> sha256, for the combined digest.
    extra: dataset-specific manifest fields (label policy, unlabelled files, dropped genres).
    """

    splits: dict[str, list[ImageTextRecord]]
    raw_counts: dict[str, int]
    image_root: str
    sources: dict[str, str] = field(default_factory=dict)
    meta_digests: dict[str, str] = field(default_factory=dict)
    extra: dict = field(default_factory=dict)


@dataclass
class FeatureSplit:
    """One split of a MultiBench dataset after the loader rules.

    features: modality -> float32 [N, T, d] (text, video, audio).
    mask: uint8 [N, T], 1 on valid time steps (shared by all modalities).
    labels: float32 [N].
    raw_ids: N strings.
    raw_count: samples in the pickle before drops.
    replaced_neg_inf: audio values that were -inf and became 0.
    neg_inf_per_sample: int64 [N], those values per stored sample (None: not known).
    raw_rows: int64 [N], each stored sample's record number in the pickle (None: not known).
    """

    features: dict[str, np.ndarray]
    mask: np.ndarray
    labels: np.ndarray
    raw_ids: list[str]
    raw_count: int
    replaced_neg_inf: int
    neg_inf_per_sample: np.ndarray | None = None
    raw_rows: np.ndarray | None = None

    def select(self, rows: np.ndarray) -> "FeatureSplit":
        """The samples `rows` only (raw_count unchanged: the others count as dropped)."""
        per = self.neg_inf_per_sample
        return FeatureSplit(
            features={m: a[rows] for m, a in self.features.items()}, mask=self.mask[rows], labels=self.labels[rows],
            raw_ids=[self.raw_ids[i] for i in rows], raw_count=self.raw_count,
            replaced_neg_inf=int(per[rows].sum()) if per is not None else self.replaced_neg_inf,
            neg_inf_per_sample=per[rows] if per is not None else None,
            raw_rows=self.raw_rows[rows] if self.raw_rows is not None else None,
        )
