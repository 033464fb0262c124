"""The prepared folder on disk: split arrays, JSON files and an all-or-nothing output directory.

Layout of OUT (everything little-endian .npy, loadable with np.load(mmap_mode="r")):
    manifest.json                 what the folder holds (see prepare.py)
    tokenizer.json                image+text datasets: the tokenizer (`tokenizers` format)
    <split>/labels.npy            float32 [N] (binary, regression) or [N, C] (multi-label 0/1)
    <split>/raw_ids.json          the N dataset ids, in order
  image+text datasets:
    <split>/input_ids.npy         int32 [N, L]   [CLS] ... [SEP] [PAD]...
    <split>/attention_mask.npy    uint8 [N, L]
    <split>/images.npy, image_shapes.npy, image_offsets.npy   (see images.py)
  feature-sequence datasets:
    <split>/text.npy, video.npy, audio.npy   float32 [N, T, d]
    <split>/mask.npy              uint8 [N, T]   1 on valid time steps, same for all modalities
Writes are deterministic (np.save, json with sorted keys, no timestamps): preparing the same raw
input twice gives byte-identical folders.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from .issues import DataError

MANIFEST = "manifest.json"


def write_json(path: str | Path, obj) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, sort_keys=True, indent=2, ensure_ascii=False)
        f.write("\n")


def read_manifest(prepared_dir: str | Path) -> dict:
    """The manifest of a prepared folder; a clear error when there is none."""
    path = Path(prepared_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run `python -m data_prep prepare <dataset> --raw RAW --out {prepared_dir}`")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def save_arrays(split_dir: str | Path, arrays: dict[str, np.ndarray]) -> None:
    split_dir = Path(split_dir)
    split_dir.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        np.save(split_dir / f"{name}.npy", np.ascontiguousarray(array), allow_pickle=False)


class OutputDir:
    """Build the prepared folder in OUT's sibling ".OUT.partial" and move it into place at the end.

    A failed run leaves OUT untouched. An existing OUT is replaced only if it is empty or holds a
    manifest.json (a previous prepared folder), so an unrelated folder is never deleted.
    """

    def __init__(self, out: str | Path):
        self.out = Path(out)
        if self.out.exists() and (not self.out.is_dir() or (any(self.out.iterdir()) and not (self.out / MANIFEST).is_file())):
            raise DataError(f"{self.out}: exists and is not a prepared folder (no {MANIFEST}); refusing to overwrite")
        self.work = self.out.parent / f".{self.out.name}.partial"

    def __enter__(self) -> Path:
        if self.work.exists():
            shutil.rmtree(self.work)
        self.work.mkdir(parents=True)
        return self.work

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            shutil.rmtree(self.work, ignore_errors=True)
            return False
        if self.out.exists():
            shutil.rmtree(self.out)
        self.work.rename(self.out)
        return False
