"""MM-IMDb raw layouts -> records.

Two layouts are read:
- the official archive: RAW/split.json ({"train": [ids], "dev": [ids], "test": [ids]}) and
  RAW/dataset/<id>.jpeg + RAW/dataset/<id>.json;
- the layout of the missing-aware-prompts code (YiLunLee/missing_aware_prompts, DATA.md):
  RAW/images/<id>.jpeg, RAW/labels/<id>.json and RAW/split.json.
Each <id>.json has "plot" (a list of strings) and "genres" (a list of strings); the many other keys
of the real files are ignored.

Plot policy: a movie may have several plots; we take the longest (most characters; the first of
equal-length ones). Labels: multi-hot over `genres` (default: the 23 genres kept by every public
code base). A genre outside that set is dropped from the movie and counted under
"unknown genre <name>" in the manifest's "dropped_genres" (an error with --strict); a movie with no
known genre left is skipped ("no known genre"). A missing or unreadable json, or one without a plot
or genre list, is a counted skip; a missing split.json or split key is an error.

Paths: every file named through an id of split.json must resolve inside RAW (data_prep/paths.py).
An id whose json or poster would be absolute, leave RAW through "..", or go through a symlink
leading out of RAW is a counted skip ("metadata path outside the raw folder (<reason>)" or "image
path outside the raw folder (<reason>)"); that file is never opened. A movie json that is not a
regular file (a FIFO, a folder) is a counted skip ("metadata is not a regular file (FIFO)"), never
waited on. split.json and each movie json are read with size and nesting bounds, and a repeated
key, an integer of more than 100 digits or a lone surrogate is a DataError naming the file and the
line (readers/jsonfile.py). split.json must be a regular file inside RAW and the image / metadata
folders must be folders inside RAW (not symlinks leading out of it): otherwise a DataError.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..checksums import sha256_bytes
from ..config import SPLITS
from ..issues import DataError, SkipLog
from ..paths import FileTooLarge, PathEscape, UnsafeFile, folder_inside, open_inside, open_regular, read_limited, resolve_inside
from . import jsonfile
from .records import ImageTextRaw, ImageTextRecord

PLOT_POLICY = "longest plot of the 'plot' list (most characters; the first of equal-length ones)"


def detect_layout(raw: Path) -> tuple[str, str, str]:
    """-> (layout name, image folder, metadata folder), relative to raw; each a folder inside raw."""
    if os.path.lexists(raw / "dataset"):
        layout = ("archive", "dataset", "dataset")
    elif os.path.lexists(raw / "images") and os.path.lexists(raw / "labels"):
        layout = ("images+labels", "images", "labels")
    else:
        layout = None
    try:
        if layout is not None:
            for folder in set(layout[1:]):
                folder_inside(raw, folder, what="folder")
            return layout
    except UnsafeFile as e:
        raise DataError(f"{raw}: {e}; expected the folder itself inside the raw folder") from None
    except FileNotFoundError:
        pass
    raise DataError(
        f"{raw}: not an MM-IMDb folder; expected split.json with dataset/<id>.jpeg|json "
        f"(official archive) or images/<id>.jpeg + labels/<id>.json"
    )


def longest_plot(plots) -> str | None:
    """The longest non-empty string of `plots` (a list, or a single string), else None."""
    if isinstance(plots, str):
        plots = [plots]
    if not isinstance(plots, list):
        return None
    texts = [p for p in plots if isinstance(p, str) and p.strip()]
    return max(texts, key=len) if texts else None  # max keeps the first of equal lengths


def read_split_json(raw: Path, with_digest: bool = False):
    """split -> ids; with_digest=True: (that, sha256 of split.json as read)."""
    try:
        with open_inside(raw, "split.json", what="raw file", max_bytes=jsonfile.MAX_FILE_BYTES) as f:
            data = read_limited(f, jsonfile.MAX_FILE_BYTES)
    except FileNotFoundError:
        raise DataError(f"{raw}: no split.json") from None
    except UnsafeFile as e:
        raise DataError(f"split.json: {e.reason}; expected a regular file inside the raw folder ({e})") from None
    try:
        obj = jsonfile.loads(data.decode("utf-8"), "split.json")
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"split.json: not valid JSON ({e})") from e
    if not isinstance(obj, dict):
        raise DataError("split.json: expected an object with keys 'train', 'dev', 'test'")
    for split in SPLITS:
        if not isinstance(obj.get(split), list):
            raise DataError(f"split.json: no id list under {split!r} (keys: {sorted(obj)})")
    bad = next((i for split in SPLITS for i in obj[split] if not isinstance(i, (str, int)) or isinstance(i, bool)), None)
    if bad is not None:
        raise DataError(f"split.json: id {bad!r} is not a string or an integer")
    ids = {split: [str(i) for i in obj[split]] for split in SPLITS}
    return (ids, sha256_bytes(data)) if with_digest else ids


def read_mmimdb(raw: str | Path, log: SkipLog, genres: tuple[str, ...], genre_log: SkipLog) -> ImageTextRaw:
    """genre_log counts genres dropped from kept movies (manifest "dropped_genres")."""
    raw = Path(raw)
    layout, image_dir, meta_dir = detect_layout(raw)
    split_ids, split_digest = read_split_json(raw, with_digest=True)
    index = {g: k for k, g in enumerate(genres)}
    splits, raw_counts, meta_digests = {}, {}, {}
    for split in SPLITS:
        records = []
        for movie_id in split_ids[split]:
            rel = f"{meta_dir}/{movie_id}.json"
            where = f"{rel} (id {movie_id})"
            try:
                meta_path = resolve_inside(raw, rel, what="metadata path")
                image_path = resolve_inside(raw, f"{image_dir}/{movie_id}.jpeg", what="image path")
            except PathEscape as e:
                log.skip(split, f"{e.what} outside the raw folder ({e.reason})", f"{where}: {e}")
                continue
            try:
                with open_regular(meta_path, what="metadata", max_bytes=jsonfile.MAX_FILE_BYTES, root=raw) as f:
                    data = read_limited(f, jsonfile.MAX_FILE_BYTES)
            except FileTooLarge:
                raise DataError(f"{where}: larger than {jsonfile.MAX_FILE_BYTES} bytes; refused (the real file is far smaller)") from None
            except PathEscape as e:
                log.skip(split, f"metadata path outside the raw folder ({e.reason})", f"{where}: {e}")
                continue
            except UnsafeFile as e:
                log.skip(split, f"metadata is {e.reason}", f"{where}: {e}")
                continue
            except OSError:
                log.skip(split, "missing metadata", where)
                continue
            meta_digests[meta_path.relative_to(raw.resolve()).as_posix()] = sha256_bytes(data)
            try:
                meta = jsonfile.loads(data.decode("utf-8"), where)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                log.skip(split, "malformed json", f"{where} ({e})")
                continue
            if not isinstance(meta, dict):
                log.skip(split, "malformed json", f"{where} (not an object)")
                continue
            plot = longest_plot(meta.get("plot"))
            if plot is None:
                log.skip(split, "no plot", where)
                continue
            movie_genres = meta.get("genres")
            if not isinstance(movie_genres, list) or not all(isinstance(g, str) for g in movie_genres):
                log.skip(split, "no genre list", where)
                continue
            label = np.zeros(len(genres), np.float32)
            for g in dict.fromkeys(movie_genres):
                if g in index:
                    label[index[g]] = 1.0
                else:
                    genre_log.skip(split, f"unknown genre {g}", where)
            if not label.any():
                log.skip(split, "no known genre", where)
                continue
            records.append(ImageTextRecord(
                raw_id=movie_id, image=image_path, text=plot, label=label, where=where,
            ))
        splits[split], raw_counts[split] = records, len(split_ids[split])
    extra = {"layout": layout, "plot_policy": PLOT_POLICY}
    return ImageTextRaw(
        splits=splits, raw_counts=raw_counts, image_root=image_dir,
        sources={"split.json": split_digest}, meta_digests=meta_digests, extra=extra,
    )
