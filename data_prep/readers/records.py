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
    """

    features: dict[str, np.ndarray]
    mask: np.ndarray
    labels: np.ndarray
    raw_ids: list[str]
    raw_count: int
    replaced_neg_inf: int
