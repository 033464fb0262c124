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
deeper than 64 levels is a DataError naming file and line (readers/jsonfile.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..checksums import sha256_file
from ..issues import DataError, SkipLog
from ..paths import PathEscape, resolve_inside
from . import jsonfile
from .records import ImageTextRaw, ImageTextRecord

SPLIT_FILES = {
    "train": ("train.jsonl",),
    "dev": ("dev_seen.jsonl", "dev.jsonl"),
    "test": ("test_seen.jsonl", "test.jsonl"),
}
REQUIRED = ("id", "img", "text")


def _label(value, where: str) -> np.ndarray:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value not in (0, 1):
        raise DataError(f"{where}: label {value!r} out of range; expected 0 or 1")
    return np.float32(value)


def read_jsonl(raw: Path, path: Path, split: str, log: SkipLog) -> tuple[list[ImageTextRecord], int, int]:
    """Parse one jsonl file -> (labelled records, raw record count, unlabelled record count)."""
    records, n_raw, n_unlabelled = [], 0, 0
    for lineno, line in jsonfile.jsonl_lines(path):
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
    return records, n_raw, n_unlabelled


def read_hateful_memes(raw: str | Path, log: SkipLog) -> ImageTextRaw:
    raw = Path(raw)
    splits, raw_counts, sources, unlabelled, used = {}, {}, {}, {}, set()
    for split, candidates in SPLIT_FILES.items():
        path = next((raw / c for c in candidates if (raw / c).is_file()), None)
        if path is None:
            raise DataError(f"{raw}: no {' or '.join(candidates)} for the {split} split")
        used.add(path.name)
        sources[path.name] = sha256_file(path)
        records, n_raw, n_unl = read_jsonl(raw, path, split, log)
        splits[split], raw_counts[split] = records, n_raw
        if n_unl:
            unlabelled[path.name] = {"records": n_unl, "split": split, "used_for_evaluation": False}
    unused = {}
    for path in sorted(raw.glob("*.jsonl")):
        if path.name in used:
            continue
        sources[path.name] = sha256_file(path)
        records, n_raw, n_unl = read_jsonl(raw, path, path.name, SkipLog(strict=False))
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
