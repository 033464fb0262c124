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
Reading a prepared folder (`read_manifest`, `load_npy`, dataset.py) opens every file once through
`paths.open_inside` rooted at the folder named: a manifest.json or an array that is a symlink
leading out of the folder, a FIFO or a device is refused, names taken from the manifest (modalities)
must be known names, and arrays holding Python objects are never loaded (allow_pickle=False).
Writes are deterministic (np.save, json with sorted keys, no timestamps): preparing the same raw
input twice gives byte-identical folders.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from .issues import DataError
from .paths import UnsafeFile, open_inside, read_limited

MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 64 << 20
#: names a manifest may give its modalities (they become file names: <split>/<name>.npy)
MODALITIES = ("text", "image", "video", "audio")


def write_json(path: str | Path, obj) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, sort_keys=True, indent=2, ensure_ascii=False)
        f.write("\n")


def read_manifest(prepared_dir: str | Path) -> dict:
    """The manifest of a prepared folder; a clear error when there is none, or when it is not a
    regular file inside the folder or names modalities that are not known names."""
    path = Path(prepared_dir) / MANIFEST
    try:
        with open_inside(prepared_dir, MANIFEST, what="manifest", max_bytes=MAX_MANIFEST_BYTES) as f:
            text = read_limited(f, MAX_MANIFEST_BYTES, "manifest").decode("utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} not found: run `python -m data_prep prepare <dataset> --raw RAW --out {prepared_dir}`") from None
    except UnsafeFile as e:
        raise DataError(f"{path}: {e.reason}; expected a regular file inside the prepared folder ({e})") from None
    try:
        manifest = json.loads(text)
    except ValueError as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(manifest, dict):
        raise DataError(f"{path}: expected a JSON object")
    modalities = manifest.get("modalities", [])
    if not isinstance(modalities, list) or any(m not in MODALITIES for m in modalities):
        raise DataError(f"{path}: modalities {modalities!r}; expected names among {list(MODALITIES)}")
    return manifest


def load_npy(prepared_dir: str | Path, relative: str, mmap: bool = False):
    """`relative` (e.g. "train/labels.npy") of a prepared folder as an array, memory-mapped with
    mmap=True; opened once, inside the folder (no symlink out, no FIFO), never unpickled."""
    try:
        f = open_inside(prepared_dir, relative, what="prepared array")
    except UnsafeFile as e:
        raise DataError(f"{Path(prepared_dir) / relative}: {e.reason}; expected a regular file inside the prepared folder ({e})") from None
    with f:
        try:
            version = np.lib.format.read_magic(f)
            shape, fortran, dtype = (np.lib.format.read_array_header_1_0(f) if version == (1, 0)
                                     else np.lib.format.read_array_header_2_0(f))
        except ValueError as e:
            raise DataError(f"{Path(prepared_dir) / relative}: not a .npy file ({e})") from None
        if dtype.hasobject:
            raise DataError(f"{Path(prepared_dir) / relative}: holds Python objects; expected numbers")
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        offset = f.tell()
        if offset + count * dtype.itemsize > os.fstat(f.fileno()).st_size:
            raise DataError(f"{Path(prepared_dir) / relative}: shorter than its header says ({shape}, {dtype})")
        if not mmap or count == 0:
            f.seek(0)
            return np.lib.format.read_array(f, allow_pickle=False)
        return np.memmap(f, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")


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
