"""Hateful Memes raw layout -> records.

Layout (as the dataset ships): RAW/img/<id>.png and jsonl files whose lines are
{"id", "img": "img/<id>.png", "label": 0|1, "text"}.
Split files: train <- train.jsonl; dev <- dev_seen.jsonl, else dev.jsonl; test <- test_seen.jsonl,
else test.jsonl. Records without "label" (phase-1 test.jsonl, test_unseen.jsonl) cannot be used for
evaluation: they are not stored, and the manifest's "unlabelled" section lists them per file. Other
*.jsonl files (e.g. test_unseen.jsonl, dev_unseen.jsonl) are checksummed and listed, never used.

Bad input: a line that is not JSON, or a record without id/img/text -> counted skip
("malformed json line", "malformed record"); a label other than 0/1 -> DataError naming file, line
and id. Missing or corrupt images are found later, when `prepare` decodes them.
An "img" path must resolve inside RAW (data_prep/paths.py): an absolute path, one leaving RAW
through "..", or one through a symlink leading out of RAW is a counted skip ("image path outside
the raw folder (<reason>)"), and that file is never opened. A line over 1 MiB or a record nested
deeper than 64 levels is a DataError naming file and line (readers/jsonfile.py), and so is a key
repeated in a record, an integer of more than 100 digits or a lone surrogate escape.
The jsonl files themselves must be regular files inside RAW (a symlink leading out of RAW, a FIFO
or a file over `MAX_JSONL_BYTES` is a DataError naming it); each is opened once, and its manifest
digest is taken from that open file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..checksums import sha256_fileobj
from ..issues import DataError, SkipLog
from ..paths import PathEscape, UnsafeFile, open_inside, resolve_inside
from . import jsonfile
from .records import ImageTextRaw, ImageTextRecord

SPLIT_FILES = {
    "train": ("train.jsonl",),
    "dev": ("dev_seen.jsonl", "dev.jsonl"),
    "test": ("test_seen.jsonl", "test.jsonl"),
}
REQUIRED = ("id", "img", "text")
MAX_JSONL_BYTES = 1 << 30  # the real files are < 10 MB


def _label(value, where: str) -> np.ndarray:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value not in (0, 1):
        raise DataError(f"{where}: label {value!r} out of range; expected 0 or 1")
    return np.float32(value)


def open_raw_file(raw: Path, name: str, max_bytes: int):
    """A top-level raw file, opened once: a regular file inside raw, else DataError naming it."""
    try:
        return open_inside(raw, name, what="raw file", max_bytes=max_bytes)
    except FileNotFoundError:
        raise DataError(f"{raw}: {name} not found") from None
    except UnsafeFile as e:
        raise DataError(f"{name}: {e.reason}; expected a regular file inside the raw folder ({e})") from None


def read_jsonl(raw: Path, path: Path, split: str, log: SkipLog) -> tuple[list[ImageTextRecord], int, int, str]:
    """Parse one jsonl file -> (labelled records, raw record count, unlabelled record count, sha256)."""
    records, n_raw, n_unlabelled = [], 0, 0
    with open_raw_file(raw, path.name, MAX_JSONL_BYTES) as f:
        digest = sha256_fileobj(f)
        f.seek(0)
        for lineno, line in jsonfile.jsonl_lines(f, name=path.name):
            if not line.strip():
                continue  # blank lines are not records
            n_raw += 1
            where = f"{path.name} line {lineno}"
            try:
                obj = jsonfile.loads(line, where)
            except json.JSONDecodeError as e:
                log.skip(split, "malformed json line", f"{where} ({e.msg})")
                continue
            if not isinstance(obj, dict) or any(k not in obj for k in REQUIRED) or not isinstance(obj["text"], str):
                log.skip(split, "malformed record", f"{where} (needs keys {list(REQUIRED)}, text a string)")
                continue
            where = f"{path.name} line {lineno} (id {obj['id']})"
            if "label" not in obj:
                n_unlabelled += 1
                continue
            label = _label(obj["label"], where)
            try:
                image = resolve_inside(raw, str(obj["img"]), what="image path")
            except PathEscape as e:
                log.skip(split, f"image path outside the raw folder ({e.reason})", f"{where}: {e}")
                continue
            records.append(ImageTextRecord(raw_id=str(obj["id"]), image=image, text=obj["text"], label=label, where=where))
    return records, n_raw, n_unlabelled, digest


def _exists(path: Path) -> bool:
    return os.path.lexists(path)  # a FIFO or a dangling symlink is found, then refused by name


def read_hateful_memes(raw: str | Path, log: SkipLog) -> ImageTextRaw:
    raw = Path(raw)
    splits, raw_counts, sources, unlabelled, used = {}, {}, {}, {}, set()
    for split, candidates in SPLIT_FILES.items():
        path = next((raw / c for c in candidates if _exists(raw / c)), None)
        if path is None:
            raise DataError(f"{raw}: no {' or '.join(candidates)} for the {split} split")
        used.add(path.name)
        records, n_raw, n_unl, sources[path.name] = read_jsonl(raw, path, split, log)
        splits[split], raw_counts[split] = records, n_raw
        if n_unl:
            unlabelled[path.name] = {"records": n_unl, "split": split, "used_for_evaluation": False}
    unused = {}
    for path in sorted(raw.glob("*.jsonl")):
        if path.name in used:
            continue
        records, n_raw, n_unl, sources[path.name] = read_jsonl(raw, path, path.name, SkipLog(strict=False))
        unused[path.name] = {"records": n_raw, "labelled": len(records)}
        if n_unl:
            unlabelled[path.name] = {"records": n_unl, "split": None, "used_for_evaluation": False}
    extra = {
        "split_files": {s: sorted(used & set(c))[0] for s, c in SPLIT_FILES.items()},
        "unlabelled": unlabelled,
        "unused_files": unused,
        "label_policy": "label 1 = hateful, 0 = not hateful (as in the jsonl files)",
    }
    return ImageTextRaw(splits=splits, raw_counts=raw_counts, image_root="img", sources=sources, extra=extra)
