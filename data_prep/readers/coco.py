"""COCO captions raw layout -> records, and the prepared caption store used for pretraining.

Raw layout (as the COCO 2017 captions release ships; 2014 names are read as well)::

    RAW/annotations/captions_train2017.json
    RAW/annotations/captions_val2017.json
    RAW/train2017/<file_name>          e.g. 000000391895.jpg
    RAW/val2017/<file_name>

Each annotation file is one JSON object with (other keys such as "info" and "licenses" ignored)::

    "images":      [{"id": int, "file_name": str, "width": int, "height": int, ...}, ...]
    "annotations": [{"id": int, "image_id": int, "caption": str}, ...]

An image has several captions (about five in COCO); every annotation is one (image, caption)
pair. Splits: train <- captions_train2017.json, dev <- captions_val2017.json (COCO has no
public test captions). ``file_name`` is joined to its image folder with
:func:`data_prep.paths.resolve_inside`, so a name cannot reach outside that folder.

Bad input: a file that is not JSON, lacks "images"/"annotations", an image or annotation record
without its keys or with a wrong type, a repeated image or annotation id, an annotation whose
image_id no image has, a ``file_name`` that leaves the folder: DataError naming the file, the
record (its index and id) and what was expected. A missing or corrupt image file is a counted skip
(all its captions are left out; ``--strict`` makes it an error), as for the other datasets.
The annotation files must be regular files inside RAW and the image folders folders inside RAW
(a ``train2017`` that is a symlink to another disk is refused: pass the folder that holds the real
files as RAW); an annotation file is opened once and its digest taken from the bytes parsed.
Split integrity: an image id, or an identical sample (the same image bytes with the same captions),
in both train and dev is a DataError naming both files, or with ``allow_overlap`` (``--allow-overlap``)
a counted drop from train; the manifest's ``split_overlap`` records the check.

Prepared layout (``python -m data_prep prepare coco_captions --raw RAW --out OUT``)::

    OUT/manifest.json       dataset "coco_captions", splits {train, dev}: captions stored,
                            images {train, dev}: images stored, raw_records, dropped, sources, text, image
    OUT/tokenizer.json      the tokenizer (fitted on the train captions, or --tokenizer NAME_OR_FOLDER)
    OUT/<split>/images.npy, image_shapes.npy, image_offsets.npy   one entry per image (images.py)
    OUT/<split>/input_ids.npy       int32 [N, L]  one row per caption
    OUT/<split>/attention_mask.npy  uint8 [N, L]
    OUT/<split>/image_index.npy     int64 [N]     the caption's image within the split's image store
    OUT/<split>/raw_ids.json        the N annotation ids;  image_ids.json: the stored images' COCO ids
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..checksums import combined_digest, sha256_bytes
from ..config import PrepareConfig
from ..images import ImageStoreWriter, load_resized
from ..issues import DataError, SkipLog
from ..overlap import OverlapCheck
from ..paths import PathEscape, UnsafeFile, folder_inside, open_inside, read_limited, resolve_inside
from ..store import OutputDir, save_arrays, write_json
from . import jsonfile

DATASET = "coco_captions"
FORMAT_VERSION = 1
SPLITS = ("train", "dev")
YEARS = ("2017", "2014")
RAW_SPLIT = {"train": "train", "dev": "val"}
IMAGE_KEYS = {"id": int, "file_name": str}
ANNOTATION_KEYS = {"id": int, "image_id": int, "caption": str}
ANNOTATIONS_MAX_BYTES = 512 << 20  # an annotations file larger than this is refused unread


@dataclass(frozen=True)
class CaptionImage:
    image_id: int
    path: Path         # resolved, inside the split's image folder
    file_name: str
    captions: tuple    # ((annotation id, caption), ...) in file order


def split_files(raw: Path, split: str) -> tuple[Path, Path]:
    """(annotation file, image folder) of a split: the 2017 names, else the 2014 ones."""
    name = RAW_SPLIT[split]
    for year in YEARS:
        ann, folder = raw / "annotations" / f"captions_{name}{year}.json", raw / f"{name}{year}"
        if os.path.lexists(ann):
            return ann, folder
    raise DataError(f"{raw}: no annotations/captions_{name}2017.json (or {name}2014) for the {split} split")


def _check(record, keys: dict, where: str) -> None:
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected an object with keys {sorted(keys)}, got {type(record).__name__}")
    for key, typ in keys.items():
        if key not in record:
            raise DataError(f"{where}: missing key {key!r}; expected keys {sorted(keys)}")
        value = record[key]
        if typ is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise DataError(f"{where}: {key} {value!r} is not an integer")
        if typ is str and not isinstance(value, str):
            raise DataError(f"{where}: {key} {value!r} is not a string")


def read_annotation_file(path: Path, image_dir: Path, data: bytes | None = None) -> list[CaptionImage]:
    """One COCO captions file -> images with their captions (images without a caption are left out).

    data: the file's bytes, when the caller has read them (from a checked open file)."""
    try:  # bounded in size and nesting (readers/jsonfile.py); COCO's train captions are ~90 MB
        if data is None:
            data = jsonfile.read_bounded(path, ANNOTATIONS_MAX_BYTES)
        doc = jsonfile.loads(data.decode("utf-8"), path.name)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path.name}: not a readable JSON file ({type(e).__name__}: {e})") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list) or not isinstance(doc.get("annotations"), list):
        raise DataError(f"{path.name}: expected an object with lists 'images' and 'annotations' (COCO captions layout)")
    images: dict[int, dict] = {}
    for k, rec in enumerate(doc["images"]):
        where = f"{path.name} images[{k}]"
        _check(rec, IMAGE_KEYS, where)
        where = f"{path.name} images[{k}] (id {rec['id']})"
        if rec["id"] in images:
            raise DataError(f"{where}: image id repeated; expected unique ids")
        try:
            resolved = resolve_inside(image_dir, rec["file_name"], what="file_name")
        except PathEscape as e:
            raise DataError(f"{where}: {e}") from None
        images[rec["id"]] = {"path": resolved, "file_name": rec["file_name"], "captions": []}
    seen = set()
    for k, rec in enumerate(doc["annotations"]):
        where = f"{path.name} annotations[{k}]"
        _check(rec, ANNOTATION_KEYS, where)
        where = f"{path.name} annotations[{k}] (id {rec['id']})"
        if rec["id"] in seen:
            raise DataError(f"{where}: annotation id repeated; expected unique ids")
        seen.add(rec["id"])
        if rec["image_id"] not in images:
            raise DataError(f"{where}: image_id {rec['image_id']} is not in 'images'")
        if not rec["caption"].strip():
            raise DataError(f"{where}: empty caption; expected text")
        images[rec["image_id"]]["captions"].append((rec["id"], rec["caption"].strip()))
    return [CaptionImage(i, v["path"], v["file_name"], tuple(v["captions"])) for i, v in images.items() if v["captions"]]


def read_coco_captions(raw: str | Path) -> dict:
    """-> {"splits": {split: [CaptionImage]}, "raw_counts": {split: captions}, "sources", "files"}."""
    raw = Path(raw)
    if not raw.is_dir():
        raise DataError(f"{raw}: raw folder not found")
    out = {"splits": {}, "raw_counts": {}, "sources": {}, "files": {}}
    for split in SPLITS:
        ann, folder = split_files(raw, split)
        rel = ann.relative_to(raw).as_posix()
        try:
            folder = folder_inside(raw, folder.name, what="image folder")
            with open_inside(raw, rel, what="annotation file", max_bytes=ANNOTATIONS_MAX_BYTES) as f:
                data = read_limited(f, ANNOTATIONS_MAX_BYTES)
        except FileNotFoundError:
            raise DataError(f"{raw}: image folder {folder.name}/ for {ann.name} not found") from None
        except UnsafeFile as e:
            raise DataError(f"{raw}: {e}; expected a regular file / folder inside the raw folder") from None
        images = read_annotation_file(ann, folder, data)
        out["splits"][split] = images
        out["raw_counts"][split] = sum(len(im.captions) for im in images)
        out["sources"][rel] = sha256_bytes(data)
        out["files"][split] = {"annotations": ann.relative_to(raw).as_posix(), "images": folder.name + "/"}
    return out


def prepare_captions(raw: str | Path, out: str | Path, config: PrepareConfig = PrepareConfig()) -> dict:
    """Convert a COCO captions folder into the prepared caption store; returns the manifest."""
    from tqdm.auto import tqdm

    from .. import text as text_mod

    raw = Path(raw)
    found = read_coco_captions(raw)
    log = SkipLog(config.strict)
    pretrained = None if config.tokenizer == "train" else text_mod.load_pretrained(config.tokenizer)
    with OutputDir(out) as work:
        kept, digests, max_hw, image_counts = {}, {}, [0, 0], {}
        overlap = OverlapCheck(config.allow_overlap, order=("dev", "train"))
        for split in SPLITS:
            ann = found["files"][split]["annotations"]
            overlap.check_ids(split, [(str(im.image_id), f"{ann} image {im.image_id}") for im in found["splits"][split]])
        for split in ("dev", "train"):  # dev first: an image in both is kept in dev (--allow-overlap)
            writer, keep = ImageStoreWriter(work / split), []
            for im in tqdm(found["splits"][split], desc=f"captions {split} images", disable=not config.progress, leave=False):
                where = f"{found['files'][split]['annotations']} image {im.image_id}"
                if overlap.dropped(split, str(im.image_id)):
                    for _ in im.captions:
                        log.drop(split, overlap.reason_id(split, str(im.image_id)), where)
                    continue
                res = load_resized(im.path, config.image_size, config.patch_size, root=raw)
                rel = im.path.relative_to(raw.resolve()).as_posix()
                if res.sha256 is not None:
                    digests[rel] = res.sha256
                if res.problem:
                    for _ in im.captions:
                        log.skip(split, res.problem, f"{where}: {rel} ({res.detail})")
                    continue
                content = hashlib.sha256(json.dumps([res.sha256, sorted(c for _, c in im.captions)]).encode()).hexdigest()
                reason = overlap.check_content(split, content, where)
                if reason is not None:
                    for _ in im.captions:
                        log.drop(split, reason, where)
                    continue
                writer.add(res.pixels)
                max_hw = [max(max_hw[0], res.pixels.shape[1]), max(max_hw[1], res.pixels.shape[2])]
                keep.append(im)
            writer.close()
            kept[split], image_counts[split] = keep, len(keep)
        image_counts = {s: image_counts[s] for s in SPLITS}
        train_text = [c for im in kept["train"] for _, c in im.captions]
        tok = pretrained or text_mod.fit_wordpiece(train_text, config.vocab_size)
        stored = {}
        for split in SPLITS:
            pairs = [(a, c, k) for k, im in enumerate(kept[split]) for a, c in im.captions]
            ids, mask = text_mod.encode(tok, [c for _, c, _ in pairs], config.max_text_len)
            save_arrays(work / split, {"input_ids": ids, "attention_mask": mask,
                                       "image_index": np.array([k for *_, k in pairs], dtype=np.int64),
                                       "labels": np.zeros(len(pairs), np.float32)})
            write_json(work / split / "raw_ids.json", [a for a, _, _ in pairs])
            write_json(work / split / "image_ids.json", [im.image_id for im in kept[split]])
            stored[split] = len(pairs)
            if found["raw_counts"][split] != stored[split] + log.total(split):
                raise AssertionError(f"count mismatch in {split}: raw {found['raw_counts'][split]} != "
                                     f"stored {stored[split]} + dropped {log.total(split)}")
        text_mod.save(tok, work)
        sources = dict(found["sources"])
        for folder in sorted({rel.split("/")[0] for rel in digests}):
            sources[f"{folder}/"] = combined_digest({k: v for k, v in digests.items() if k.startswith(folder + "/")})
        special = text_mod.special_ids(tok)
        manifest = {
            "format_version": FORMAT_VERSION, "dataset": DATASET, "splits": stored, "images": image_counts,
            "raw_records": found["raw_counts"], "dropped": log.as_dict(), "unlabelled": {},
            "task": {"kind": "captions", "n_out": 0, "label_names": [], "headline_metric": None},
            "modalities": ["text", "image"], "sources": sources, "split_files": found["files"],
            "image": {"image_size": config.image_size, "patch_size": config.patch_size, "resample": "bicubic",
                      "max_height": max_hw[0], "max_width": max_hw[1], "layout": "uint8 CHW, one entry per image"},
            "text": {"tokenizer": config.tokenizer, "tokenizer_file": text_mod.TOKENIZER_FILE,
                     "max_text_len": config.max_text_len, "vocab_size": tok.get_vocab_size(),
                     **{f"{k}_id": v for k, v in special.items()}},
            "vocab_size": tok.get_vocab_size(), "max_text_len": config.max_text_len,
            "label_policy": "label-free: labels.npy holds zeros so that generic loaders work",
            "split_overlap": overlap.summary(),
        }
        write_json(work / "manifest.json", manifest)
    log.report()
    return manifest
