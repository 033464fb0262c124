"""Dataset, collate and loader over a prepared folder: the API training code and notebooks use.

    ds = PreparedDataset(prepared_dir, "train")       # "train" | "dev" | "test"
    ds.manifest; len(ds); ds[i] -> one sample (dict)
    loader = make_loader(ds, batch_size, shuffle=True, seed=0, epoch=3, num_workers=2)

Batches (B samples):
  image+text   {"ids": int64 [B], "labels": float32 [B] or [B, C],
                "input_ids": int64 [B, L], "attention_mask": int64 [B, L]   (L: the batch's longest text),
                "pixel_values": uint8 [B, 3, H, W]  (zero-padded bottom/right to the batch's largest H, W),
                "pixel_mask": int64 [B, H, W]       (1 on real pixels)}
  features     {"ids", "labels",
                "features": {"text": float32 [B, T, 300], "video": [B, T, dv], "audio": [B, T, da]},
                "feature_masks": {"text": int64 [B, T], "video": ..., "audio": ...}}
"ids" is the index of the sample within its split. Files are opened inside the prepared folder only
(store.load_npy: no symlink out of it, no FIFO, no pickled objects). The arrays are memory-mapped and opened lazily
in each process, so the dataset pickles cheaply into DataLoader workers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .config import SPLITS
from .images import read_image
from .store import load_npy, read_manifest

__all__ = ["PreparedDataset", "TaskInfo", "collate", "make_loader", "read_manifest", "task_info"]


@dataclass(frozen=True)
class TaskInfo:
    """What a model needs to know about a prepared dataset (from its manifest)."""

    kind: str                      # "binary" | "multilabel" | "regression"
    n_out: int                     # head outputs
    label_names: tuple[str, ...]
    headline_metric: str           # "auroc" | "f1_macro" | "mae"
    modalities: tuple[str, ...]    # ("text", "image") or ("text", "video", "audio")
    feature_dims: dict | None      # {"text": 300, "video": dv, "audio": da} or None
    vocab_size: int | None
    max_text_len: int | None
    image_size: int | None
    patch_size: int | None


def task_info(manifest: dict) -> TaskInfo:
    task, image = manifest["task"], manifest.get("image") or {}
    return TaskInfo(
        kind=task["kind"], n_out=int(task["n_out"]), label_names=tuple(task["label_names"]),
        headline_metric=task["headline_metric"], modalities=tuple(manifest["modalities"]),
        feature_dims=dict(manifest["feature_dims"]) if manifest.get("feature_dims") else None,
        vocab_size=manifest.get("vocab_size"), max_text_len=manifest.get("max_text_len"),
        image_size=image.get("image_size"), patch_size=image.get("patch_size"),
    )


class PreparedDataset(Dataset):
    """One split of a prepared folder.

    ds[i] (image+text): {"id": int, "label": float32 [] or [C], "input_ids": int64 [L],
                         "attention_mask": int64 [L], "pixel_values": uint8 [3, H, W]}
    ds[i] (features):   {"id": int, "label": float32 [], "features": {m: float32 [T, d_m]},
                         "feature_masks": {m: int64 [T]}}
    ds.labels: float32 [N] or [N, C], the whole split's labels (numpy).
    """

    def __init__(self, prepared_dir: str | Path, split: str):
        self.root = Path(prepared_dir)
        self.manifest = read_manifest(self.root)
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.split = split
        self.dir = self.root / split
        if not os.path.lexists(self.dir / "labels.npy"):
            raise FileNotFoundError(f"{self.dir}: split {split!r} missing from the prepared folder {self.root}")
        self.modalities = tuple(self.manifest["modalities"])  # known names only (store.read_manifest)
        self.is_image_text = "image" in self.modalities
        self.labels = load_npy(self.root, f"{split}/labels.npy")
        if len(self.labels) != self.manifest["splits"][split]:
            raise ValueError(f"{self.dir}: {len(self.labels)} labels but the manifest says {self.manifest['splits'][split]}")
        self._arrays: dict[str, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_arrays"] = None  # each worker process opens its own mmaps
        return state

    @property
    def arrays(self) -> dict[str, np.ndarray]:
        if self._arrays is None:
            names = (["input_ids", "attention_mask", "images", "image_shapes", "image_offsets"]
                     if self.is_image_text else [*self.modalities, "mask"])
            self._arrays = {n: load_npy(self.root, f"{self.split}/{n}.npy", mmap=True) for n in names}
        return self._arrays

    def __getitem__(self, i: int) -> dict:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {self.split} split of size {n}")
        i = int(i) % n
        a = self.arrays
        sample = {"id": i, "label": torch.from_numpy(np.array(self.labels[i], dtype=np.float32))}
        if self.is_image_text:
            sample["input_ids"] = torch.from_numpy(np.array(a["input_ids"][i], dtype=np.int64))
            sample["attention_mask"] = torch.from_numpy(np.array(a["attention_mask"][i], dtype=np.int64))
            sample["pixel_values"] = torch.from_numpy(read_image(a["images"], a["image_shapes"], a["image_offsets"], i))
        else:
            mask = torch.from_numpy(np.array(a["mask"][i], dtype=np.int64))
            sample["features"] = {m: torch.from_numpy(np.array(a[m][i], dtype=np.float32)) for m in self.modalities}
            sample["feature_masks"] = {m: mask for m in self.modalities}
        return sample


def _collate_images(samples: list[dict]) -> dict:
    b = len(samples)
    h = max(s["pixel_values"].shape[1] for s in samples)
    w = max(s["pixel_values"].shape[2] for s in samples)
    pixels = torch.zeros(b, 3, h, w, dtype=torch.uint8)
    pixel_mask = torch.zeros(b, h, w, dtype=torch.int64)
    for k, s in enumerate(samples):
        _, hk, wk = s["pixel_values"].shape
        pixels[k, :, :hk, :wk] = s["pixel_values"]
        pixel_mask[k, :hk, :wk] = 1
    input_ids = torch.stack([s["input_ids"] for s in samples])
    attention_mask = torch.stack([s["attention_mask"] for s in samples])
    # Trailing padding common to the whole batch is cut: positions are absolute and padding is
    # masked, so the model's outputs on real tokens are unchanged and short texts train faster.
    length = max(int(attention_mask.sum(1).max()), 1)
    return {
        "input_ids": input_ids[:, :length].contiguous(),
        "attention_mask": attention_mask[:, :length].contiguous(),
        "pixel_values": pixels, "pixel_mask": pixel_mask,
    }


def collate(samples: list[dict]) -> dict:
    """Samples of one kind -> the batch dict of that kind (see the module docstring)."""
    batch = {
        "ids": torch.tensor([s["id"] for s in samples], dtype=torch.int64),
        "labels": torch.stack([s["label"] for s in samples]),
    }
    if "pixel_values" in samples[0]:
        batch.update(_collate_images(samples))
    else:
        mods = samples[0]["features"].keys()
        batch["features"] = {m: torch.stack([s["features"][m] for s in samples]) for m in mods}
        batch["feature_masks"] = {m: torch.stack([s["feature_masks"][m] for s in samples]) for m in mods}
    return batch


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The shuffled order of epoch `epoch`: randperm seeded with seed * 100003 + epoch."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100003 + epoch)).tolist()


def make_loader(
    ds: PreparedDataset, batch_size: int, *, shuffle: bool = False, seed: int = 0, epoch: int = 0,
    num_workers: int = 0, pin_memory: bool = False, drop_last: bool = False,
) -> DataLoader:
    """A DataLoader over `ds` with `collate`; the same (seed, epoch) always gives the same order."""
    order = epoch_order(len(ds), seed, epoch) if shuffle else list(range(len(ds)))
    return DataLoader(
        ds, batch_size=batch_size, sampler=order, collate_fn=collate, num_workers=num_workers,
        pin_memory=pin_memory, drop_last=drop_last,
    )
