"""MultiBench affect pickles (UR-FUNNY humor.pkl, CMU-MOSEI mosei_senti_data.pkl) -> clean splits.

Layout: a pickle {"train", "valid", "test"} -> {"vision": [N, T, dv], "audio": [N, T, da],
"text": [N, T, 300], "labels": [N] | [N, 1] | [N, 1, 1], optional "id": [N]}; T = 50 time steps,
word-aligned, left zero-padded. Our names: text, video (= MultiBench "vision"), audio; "valid" is
our dev split.

MultiBench loader rules, applied per split in this order:
1. samples whose text features are all zero are dropped (counted: "text all zero (MultiBench drop
   rule)"; a rule, so --strict does not make it an error);
2. audio values equal to -inf become 0 (counted in the manifest's "replaced");
3. valid time steps start at the first step whose text features are not all zero (MultiBench's
   aligned loader cuts every modality there); the uint8 mask [N, T] is shared by all modalities.
   This equals "text not all zero" per step except for zero vectors inside a sentence
   (out-of-vocabulary words), which MultiBench keeps and so do we.
Labels: MOSEI sentiment must lie in [-3, 3] (kept as float). UR-FUNNY labels must be 0/1 or -1/+1
and are mapped to 1 where label > 0, else 0.

Bad input: a pickle that does not load, missing keys, wrong ranks, feature sizes or sample counts,
non-finite or out-of-range labels -> DataError naming file, split, key or record. NaN/+inf on a
valid time step, or -inf there outside audio -> the sample is skipped and counted ("non-finite
<modality> features"; MultiBench itself keeps such samples); --strict makes that an error naming
the record. Padded steps (before the first valid one) are stored as 0 whatever they held:
MultiBench's loader cuts them off.

The pickle is read by `SafeNumpyUnpickler` (readers/safe_pickle.py): only the globals numpy
arrays need are resolved, and to stand-ins that build plain numeric/str/object arrays from
validated bytes, so a pickle that would call anything else (os.system, exec, ...) is refused with
a DataError naming the file and the global, before any of it runs, and one that would make numpy
rebuild an array from raw state (a dtype hiding an object field, an array left uninitialised, a
zero-size dtype) is refused naming what it asked for. The file must be a regular file inside the
raw folder (no symlink out of it, no FIFO) of at most `MAX_PICKLE_BYTES`; its digest is taken from
the same open file. Ids must be short strings or numbers (at most `MAX_ID_CHARS` characters, valid
Unicode); a feature stored as a list of per-record arrays of different shapes (ragged sequences)
and a split left empty by the drop rule are DataErrors naming the split, the key and the record.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import numpy as np

from ..checksums import sha256_fileobj
from ..issues import DataError, SkipLog
from ..paths import UnsafeFile, open_regular, resolve_inside
from ..tasks import MULTIBENCH_KEYS
from .records import FeatureSplit
from .safe_pickle import PickleRefused, RefusedGlobal, SafeNumpyUnpickler

SPLIT_KEYS = {"train": "train", "dev": "valid", "test": "test"}
TEXT_ZERO_RULE = "text all zero (MultiBench drop rule)"


MAX_PICKLE_BYTES = 64 << 30
MAX_ID_CHARS = 1000
NumpyOnlyUnpickler = SafeNumpyUnpickler  # the name of the first pass


def open_pickle(path: Path, root: Path | None = None) -> tuple[BinaryIO, str]:
    """(open file, sha256) of the pickle at `path` (a regular file inside `root`, if given)."""
    try:
        if root is not None:
            resolve_inside(root, path.name, what="raw file")
        f = open_regular(path, what="raw file", max_bytes=MAX_PICKLE_BYTES, root=root)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except UnsafeFile as e:
        raise DataError(f"{path.name}: {e.reason}; expected a regular file inside the raw folder ({e})") from None
    digest = sha256_fileobj(f)
    f.seek(0)
    return f, digest


def load_pickle(path: Path, root: Path | None = None, *, with_digest: bool = False):
    """Read a MultiBench pickle with `SafeNumpyUnpickler` (never runs code from the file).

    encoding="latin1" reads the Python 2 pickles some MultiBench files are (numpy's advice for
    Python 2 arrays); it changes nothing for pickles written by Python 3.
    -> the dict, or (dict, sha256 of the file) with with_digest=True.
    """
    path = Path(path)
    f, digest = open_pickle(path, root)
    try:
        with f:
            data = SafeNumpyUnpickler(f).load()
    except RefusedGlobal as e:
        raise DataError(
            f"{path.name}: refused to load: the pickle calls {e.args[0]}, which numpy arrays do not need "
            f"(a pickle can run code; only numpy arrays, dicts, lists, strings and numbers are read)"
        ) from None
    except PickleRefused as e:
        raise DataError(
            f"{path.name}: refused to load: {e.args[0]} (only plain numeric, string and object numpy arrays "
            f"built from data of the right size are read)"
        ) from None
    except MemoryError:
        raise DataError(f"{path.name}: not a readable pickle (out of memory while reading it)") from None
    except Exception as e:  # truncated, not a pickle
        raise DataError(f"{path.name}: not a readable pickle ({type(e).__name__}: {e})") from e
    if not isinstance(data, dict):
        raise DataError(f"{path.name}: expected a dict with keys 'train', 'valid', 'test', got {type(data).__name__}")
    missing = [k for k in SPLIT_KEYS.values() if k not in data]
    if missing:
        raise DataError(f"{path.name}: missing split keys {missing}; found {sorted(map(str, data))[:20]}")
    return (data, digest) if with_digest else data


def _id_str(x, where: str) -> str:
    """One id as text: a string, bytes, a number, or a small array / list of those ("a/b")."""
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, bytes):
        text = x[: 4 * MAX_ID_CHARS + 4].decode("utf-8", "replace")
    elif isinstance(x, str):
        text = x
        try:
            x.encode("utf-8")
        except UnicodeEncodeError:
            raise DataError(f"{where}: id {x[:40]!r} is not valid Unicode (lone surrogate); expected text") from None
    elif isinstance(x, int) and not isinstance(x, bool):
        if abs(x).bit_length() > 200:
            raise DataError(f"{where}: id is an integer of about {int(abs(x).bit_length() * 0.30103)} digits; "
                            f"expected at most {MAX_ID_CHARS} characters")
        text = str(x)
    elif isinstance(x, (float, bool, type(None))):
        text = str(x)
    elif isinstance(x, np.ndarray) and x.ndim > 0 and x.size <= 16:
        text = "/".join(_id_str(v, where) for v in x.ravel())
    elif isinstance(x, np.ndarray) and x.ndim == 0:
        text = _id_str(x[()], where)
    elif isinstance(x, (list, tuple)) and len(x) <= 16 and all(
            isinstance(v, (str, bytes, int, float, np.generic)) for v in x):
        for v in x:
            _id_str(v, where)
        text = str(x)
    else:
        size = getattr(x, "size", None) or (len(x) if hasattr(x, "__len__") else "?")
        raise DataError(f"{where}: id of type {type(x).__name__} ({size} items); expected a string, a number "
                        f"or a few of those")
    if len(text) > MAX_ID_CHARS:
        raise DataError(f"{where}: id of {len(text)} characters; expected at most {MAX_ID_CHARS}")
    return text


def _ids(part: dict, where: str, n: int) -> list[str]:
    if "id" not in part:
        return [f"{where}[{i}]" for i in range(n)]
    raw = part["id"]
    count = (raw.shape[0] if raw.ndim else None) if isinstance(raw, np.ndarray) else (
        len(raw) if isinstance(raw, (list, tuple)) else None)
    if count is None:
        raise DataError(f"{where}['id']: {type(raw).__name__}; expected one id per sample")
    if count != n:
        raise DataError(f"{where}['id']: {count} ids for {n} samples")
    return [_id_str(x, f"{where}['id'] record {i}") for i, x in enumerate(raw)]


def _feature_array(value, where: str, d: int) -> np.ndarray:
    """A numeric [N, T, d] array; a clear DataError for ragged sequences and other shapes."""
    if isinstance(value, np.ndarray) and value.dtype.kind in "fiu":
        a = value
    elif isinstance(value, (list, tuple)) or (isinstance(value, np.ndarray) and value.dtype.kind == "O"):
        items = list(value) if isinstance(value, (list, tuple)) else list(value.reshape(-1)) if value.ndim == 1 else None
        if items is None:
            raise DataError(f"{where}: object array of shape {value.shape}; expected numbers of shape (N, T, {d})")
        shapes = [np.shape(x) if isinstance(x, (np.ndarray, list, tuple)) else None for x in items]
        for i, (x, shape) in enumerate(zip(items, shapes)):
            if shape is None or not isinstance(x, np.ndarray) or x.dtype.kind not in "fiu" or len(shape) != 2:
                raise DataError(f"{where} record {i}: {type(x).__name__} {shape or ''}; expected a numeric (T, {d}) array")
            if shape != shapes[0]:
                raise DataError(f"{where} record {i}: shape {shape} but record 0 has {shapes[0]} (ragged sequences); "
                                f"expected every record of shape (T, {d}) with the same T")
        a = np.stack(items) if items else np.zeros((0, 0, d), np.float32)
    else:
        kind = f"{value.dtype} array of shape {value.shape}" if isinstance(value, np.ndarray) else type(value).__name__
        raise DataError(f"{where}: {kind}; expected numbers of shape (N, T, {d})")
    if a.ndim != 3 or a.shape[2] != d:
        raise DataError(f"{where}: {a.dtype} array of shape {a.shape}; expected numbers of shape (N, T, {d})")
    return a


def _check_arrays(part, where: str, dims: dict[str, int]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Validate keys, ranks and sizes of one split -> (features by our modality name, labels [N])."""
    if not isinstance(part, dict):
        raise DataError(f"{where}: expected a dict of arrays, got {type(part).__name__}")
    needed = [MULTIBENCH_KEYS[m] for m in dims] + ["labels"]
    missing = [k for k in needed if k not in part]
    if missing:
        raise DataError(f"{where}: missing keys {missing}; found {sorted(map(str, part))}")
    feats = {}
    for m, d in dims.items():
        key = MULTIBENCH_KEYS[m]
        feats[m] = _feature_array(part[key], f"{where}['{key}']", d)
    n, t = feats["text"].shape[:2]
    for m, a in feats.items():
        if a.shape[:2] != (n, t):
            raise DataError(f"{where}['{MULTIBENCH_KEYS[m]}']: shape {a.shape} disagrees with text {feats['text'].shape} on (N, T)")
    labels = part["labels"]
    if not isinstance(labels, np.ndarray):
        raise DataError(f"{where}['labels']: {type(labels).__name__}; expected an array of N = {n} numbers")
    if labels.shape not in ((n,), (n, 1), (n, 1, 1)) or labels.dtype.kind not in "fiub":
        raise DataError(f"{where}['labels']: shape {labels.shape}; expected (N,), (N, 1) or (N, 1, 1) numbers with N = {n}")
    return feats, labels.reshape(n).astype(np.float64)


def _check_labels(labels: np.ndarray, kind: str, where: str, ids: list[str], rows: np.ndarray) -> np.ndarray:
    """Raise on a non-finite or out-of-range label; -> float32 labels (binary mapped to 0/1)."""
    if kind == "regression":
        bad = ~(np.isfinite(labels) & (np.abs(labels) <= 3.0))
        expected = "a finite sentiment in [-3, 3]"
    else:
        bad = ~np.isin(labels, (-1.0, 0.0, 1.0))
        expected = "0/1 or -1/+1"
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"{where} record {int(rows[i])} (id {ids[i]}): label {labels[i]!r} out of range; expected {expected}")
    return (labels > 0).astype(np.float32) if kind == "binary" else labels.astype(np.float32)


def clean_split(part, where: str, split: str, dims: dict[str, int], kind: str, log: SkipLog) -> FeatureSplit:
    feats, labels = _check_arrays(part, where, dims)
    n, t = feats["text"].shape[:2]
    ids = _ids(part, where, n)
    # 1. MultiBench drop rule.
    keep = np.any(feats["text"].reshape(n, t * dims["text"]) != 0, axis=1)
    log.rule(split, TEXT_ZERO_RULE, int(n - keep.sum()))
    rows = np.flatnonzero(keep)
    if len(rows) == 0:
        raise DataError(f"{where}: no sample left: all {n} samples have text features that are all zero "
                        f"({TEXT_ZERO_RULE}); expected samples with text")
    feats = {m: np.array(a[rows], dtype=np.float32) for m, a in feats.items()}
    ids = [ids[i] for i in rows]
    labels = _check_labels(labels[rows], kind, where, ids, rows)
    # 2. -inf audio -> 0.
    neg_inf = np.isneginf(feats["audio"])
    feats["audio"][neg_inf] = 0.0
    # 3. Valid steps: from the first step with non-zero text on (a NaN counts as non-zero, as in
    # MultiBench's `text.nonzero()`).
    nonzero = np.any(feats["text"] != 0, axis=2)  # [N, T]
    first = np.argmax(nonzero, axis=1)
    mask = (np.arange(t)[None, :] >= first[:, None]).astype(np.uint8)
    # Remaining NaN/inf on valid steps: skip the sample (or raise with --strict). Padded steps are
    # cut off by MultiBench's loader, so whatever they hold is set to 0 and never reaches a model.
    valid = mask.astype(bool)[:, :, None]
    ok = {m: (np.isfinite(a) | ~valid).reshape(len(rows), t * a.shape[2]).all(axis=1) for m, a in feats.items()}
    finite = np.logical_and.reduce(list(ok.values()))
    for i in np.flatnonzero(~finite):  # counted once, under its first non-finite modality
        m = next(m for m in feats if not ok[m][i])
        log.skip(split, f"non-finite {m} features", f"{where} record {int(rows[i])} (id {ids[i]})")
    sel = np.flatnonzero(finite)
    if len(sel) == 0:
        raise DataError(f"{where}: no sample left: all {len(rows)} samples with text have non-finite features; "
                        f"expected finite features")
    feats = {m: np.where(valid[sel], a[sel], np.float32(0.0)) for m, a in feats.items()}
    mask = mask[sel]
    return FeatureSplit(
        features=feats, mask=mask, labels=labels[sel], raw_ids=[ids[i] for i in sel],
        raw_count=n, replaced_neg_inf=int(neg_inf[sel].sum()),
        neg_inf_per_sample=neg_inf[sel].reshape(len(sel), -1).sum(axis=1), raw_rows=rows[sel],
    )


def read_multibench(path: str | Path, dims: dict[str, int], kind: str, log: SkipLog,
                    root: Path | None = None, *, with_digest: bool = False):
    """-> {"train", "dev", "test"} -> FeatureSplit (dev is MultiBench's "valid");
    with_digest=True: (that, sha256 of the file read). root: the raw folder the file must be in."""
    path = Path(path)
    data, digest = load_pickle(path, root, with_digest=True)
    splits = {
        split: clean_split(data[key], f"{path.name}['{key}']", split, dims, kind, log)
        for split, key in SPLIT_KEYS.items()
    }
    return (splits, digest) if with_digest else splits
