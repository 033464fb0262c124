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

The pickle is read by `NumpyOnlyUnpickler`: only the globals numpy arrays and scalars need are
resolved, so a pickle that would call anything else (os.system, exec, ...) is refused with a
DataError naming the file and the global, before any of it runs.
"""

from __future__ import annotations

import _compat_pickle
import codecs
import pickle
from pathlib import Path

import numpy as np

from ..issues import DataError, SkipLog
from ..tasks import MULTIBENCH_KEYS
from .records import FeatureSplit

SPLIT_KEYS = {"train": "train", "dev": "valid", "test": "test"}
TEXT_ZERO_RULE = "text all zero (MultiBench drop rule)"


class NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler that rebuilds numpy arrays, dicts, lists, tuples, strings and numbers only.

    A pickle is a small program: every global it names is imported and may be called, so a
    plain `pickle.load` of a downloaded file runs whatever that file says (os.system, exec, ...).
    This one resolves only the globals in `ALLOWED` (numpy's array/scalar/dtype constructors under
    both numpy 1 and numpy 2 module names, and `_codecs.encode`, which protocol-2 pickles written
    by Python 3 use for bytes); any other global raises `RefusedGlobal` before it is imported.
    Dicts, lists, tuples, str, bytes, int, float, bool and None need no global at all.
    """

    def find_class(self, module: str, name: str):
        # Python 2 names (__builtin__, commands, copy_reg, ...) -> what Python 3 would import
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        target = _allowed().get((module, name))
        if target is None:
            raise RefusedGlobal(f"{module}.{name}")
        return target


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle names a global that is not needed for numpy arrays (args[0]: "module.name")."""


def _allowed() -> dict[tuple[str, str], object]:
    """(module, name) -> object for every global a pickled numpy array or scalar needs."""
    core = np._core if hasattr(np, "_core") else np.core
    table = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
             ("_codecs", "encode"): codecs.encode}
    for package in ("numpy.core", "numpy._core"):  # pickles written by numpy 1 and numpy 2
        table[(f"{package}.multiarray", "_reconstruct")] = core.multiarray._reconstruct
        table[(f"{package}.multiarray", "scalar")] = core.multiarray.scalar
        table[(f"{package}.numeric", "_frombuffer")] = core.numeric._frombuffer  # protocol 5
    return table


def load_pickle(path: Path) -> dict:
    """Read a MultiBench pickle with `NumpyOnlyUnpickler` (never runs code from the file).

    encoding="latin1" reads the Python 2 pickles some MultiBench files are (numpy's advice for
    Python 2 arrays); it changes nothing for pickles written by Python 3.
    """
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        with open(path, "rb") as f:
            data = NumpyOnlyUnpickler(f, encoding="latin1").load()
    except RefusedGlobal as e:
        raise DataError(
            f"{path.name}: refused to load: the pickle calls {e.args[0]}, which numpy arrays do not need "
            f"(a pickle can run code; only numpy arrays, dicts, lists, strings and numbers are read)"
        ) from None
    except Exception as e:  # truncated, not a pickle
        raise DataError(f"{path.name}: not a readable pickle ({type(e).__name__}: {e})") from e
    if not isinstance(data, dict):
        raise DataError(f"{path.name}: expected a dict with keys 'train', 'valid', 'test', got {type(data).__name__}")
    missing = [k for k in SPLIT_KEYS.values() if k not in data]
    if missing:
        raise DataError(f"{path.name}: missing split keys {missing}; found {sorted(map(str, data))}")
    return data


def _id_str(x) -> str:
    if isinstance(x, bytes):
        return x.decode("utf-8", "replace")
    if isinstance(x, np.ndarray) and x.ndim > 0:
        return "/".join(_id_str(v) for v in x.ravel())
    return str(x.item() if isinstance(x, np.generic) else x)


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
        a = np.asarray(part[key])
        if a.dtype.kind not in "fiu" or a.ndim != 3 or a.shape[2] != d:
            raise DataError(f"{where}['{key}']: {a.dtype} array of shape {a.shape}; expected numbers of shape (N, T, {d})")
        feats[m] = a
    n, t = feats["text"].shape[:2]
    for m, a in feats.items():
        if a.shape[:2] != (n, t):
            raise DataError(f"{where}['{MULTIBENCH_KEYS[m]}']: shape {a.shape} disagrees with text {feats['text'].shape} on (N, T)")
    labels = np.asarray(part["labels"])
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
    ids = [_id_str(x) for x in part["id"]] if "id" in part else [f"{where}[{i}]" for i in range(n)]
    if len(ids) != n:
        raise DataError(f"{where}['id']: {len(ids)} ids for {n} samples")
    # 1. MultiBench drop rule.
    keep = np.any(feats["text"].reshape(n, -1) != 0, axis=1)
    log.rule(split, TEXT_ZERO_RULE, int(n - keep.sum()))
    rows = np.flatnonzero(keep)
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
    ok = {m: (np.isfinite(a) | ~valid).reshape(len(rows), -1).all(axis=1) for m, a in feats.items()}
    finite = np.logical_and.reduce(list(ok.values()))
    for i in np.flatnonzero(~finite):  # counted once, under its first non-finite modality
        m = next(m for m in feats if not ok[m][i])
        log.skip(split, f"non-finite {m} features", f"{where} record {int(rows[i])} (id {ids[i]})")
    sel = np.flatnonzero(finite)
    feats = {m: np.where(valid[sel], a[sel], np.float32(0.0)) for m, a in feats.items()}
    mask = mask[sel]
    return FeatureSplit(
        features=feats, mask=mask, labels=labels[sel], raw_ids=[ids[i] for i in sel],
        raw_count=n, replaced_neg_inf=int(neg_inf[sel].sum()),
    )


def read_multibench(path: str | Path, dims: dict[str, int], kind: str, log: SkipLog) -> dict[str, FeatureSplit]:
    """-> {"train", "dev", "test"} -> FeatureSplit (dev is MultiBench's "valid")."""
    path = Path(path)
    data = load_pickle(path)
    return {
        split: clean_split(data[key], f"{path.name}['{key}']", split, dims, kind, log)
        for split, key in SPLIT_KEYS.items()
    }
