"""The results store: one JSON record per training run, keyed by its configuration.

A record is written atomically (temporary file + rename) when a run finishes, at
``<root>/records/<key>.json``; ``key`` is a hash of the run's canonical configuration, so
the same configuration always maps to the same record, a rerun finds it and skips the work,
and a changed parameter makes a new record. Notebooks and sweeps read the store through
:meth:`ResultsStore.frame` (one row per run, test case and metric).

Record fields: ``key``, ``config`` (dict), ``d0`` ({pair: float}), ``d_trajectory``
(list of {epoch, split, pair: mean D}), ``history`` (per-epoch losses and dev metrics),
``best_epoch``, ``metrics`` ({test_case: {metric: value}}), ``dev_metrics``,
``distances`` ({test_case: {pair: [D per test sample]}}), ``timings``, ``environment``.

Keys become file names: a key that is not a plain file name (``data_prep.paths.safe_name``:
letters, digits, ``.``, ``_``, ``-``, no leading dot) is refused, so a record or key from
elsewhere cannot make the store write or read outside its folder.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from data_prep.paths import safe_name


def data_home() -> Path:
    """Where generated data and results live (``$WMA_DATA`` or ``<repo>/_data``)."""
    return Path(os.environ.get("WMA_DATA", Path(__file__).resolve().parents[1] / "_data")).resolve()


def config_key(config: dict) -> str:
    """A stable 16-hex-digit key for a JSON-serialisable configuration."""
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def open_new(path: Path):
    """A new, empty file at ``path`` for writing (binary): whatever stood there before (a
    leftover temporary file, or a symlink planted in its place) is removed first, and the file is
    created with ``O_EXCL | O_NOFOLLOW``, so no file elsewhere is ever written through it."""
    path = Path(path)
    try:
        os.unlink(path)  # a symlink is removed itself, its target untouched
    except FileNotFoundError:
        pass
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    return os.fdopen(fd, "wb")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` through a temporary file and a rename, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open_new(tmp) as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: Path, obj) -> None:
    """Write JSON so that readers never see a half-written file."""
    atomic_write_bytes(path, json.dumps(obj, indent=1, sort_keys=True, default=float).encode())


@contextmanager
def file_lock(path):
    """An exclusive ``flock`` on ``path``, shared by every process on this machine.

    The lock file is opened with ``O_NOFOLLOW`` and never truncated: a symlink planted in its
    place is refused, not followed, so no file elsewhere is created or emptied."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as err:
        raise OSError(f"{path}: cannot open the lock file ({err.strerror}; a symlink is refused)") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def touch_heartbeat(path: Path) -> None:
    """Mark progress: set ``path``'s modification time to now (created empty if missing, never
    through a symlink). Watchers (:func:`heartbeat_age`) tell a slow run from a silent one."""
    path = Path(path)
    try:
        os.utime(path, follow_symlinks=False)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644))
        except FileExistsError:
            pass


def heartbeat_age(path: Path) -> float | None:
    """Seconds since ``path`` last marked progress, or ``None`` if it never did."""
    try:
        return max(0.0, time.time() - os.lstat(path).st_mtime)
    except FileNotFoundError:
        return None


def _record_matches(rec, key: str) -> bool:
    """A record belongs to ``key`` when its ``key`` field and the key of its ``config`` are both ``key``."""
    return (isinstance(rec, dict) and rec.get("key") == key and isinstance(rec.get("config"), dict)
            and config_key(rec["config"]) == key)


class ResultsStore:
    """A folder of run records. ``ResultsStore(root)``; ``get(config)``, ``put(record)``, ``frame()``."""

    def __init__(self, root):
        self.root = Path(root)
        self.records_dir = self.root / "records"
        self.records_dir.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        return self.records_dir / f"{safe_name(key, what='run key')}.json"

    def run_dir(self, key: str) -> Path:
        """Where a run keeps its checkpoints while it trains."""
        return self.root / "runs" / safe_name(key, what="run key")

    def lock(self, key: str):
        """Held while a run trains, so that parallel notebooks or trials never train it twice."""
        return file_lock(self.root / "locks" / f"{safe_name(key, what='run key')}.lock")

    def heartbeat(self, key: str) -> Path:
        """The file a training run touches at every step (:func:`touch_heartbeat`)."""
        return self.root / "progress" / f"{safe_name(key, what='run key')}.beat"

    def get(self, config_or_key) -> dict | None:
        key = config_or_key if isinstance(config_or_key, str) else config_key(config_or_key)
        p = self.path(key)
        if not p.exists():
            return None
        try:
            with open(p) as f:
                rec = json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"results record {p} is not valid JSON ({err}); delete it to rerun that run") from err
        if not _record_matches(rec, key):
            warnings.warn(f"results record {p} does not hold the run {key} (its key or config differs): "
                          "ignored, and the run is trained again", stacklevel=2)
            return None
        return rec

    def put(self, record: dict) -> Path:
        if "key" not in record or "config" not in record:
            raise ValueError("a record needs 'key' and 'config'")
        if record["key"] != config_key(record["config"]):
            raise ValueError(f"record key {record['key']} does not match its config")
        p = self.path(record["key"])
        atomic_write_json(p, record)
        return p

    def records(self) -> list[dict]:
        out = []
        for p in sorted(self.records_dir.glob("*.json")):
            with open(p) as f:
                out.append(json.load(f))
        return out

    def __len__(self) -> int:
        return len(list(self.records_dir.glob("*.json")))

    def frame(self, where: dict | None = None) -> pd.DataFrame:
        """Long table: one row per (run, test case, metric), config fields as columns.

        ``where``: keep only runs whose config has these values (e.g. ``{"dataset": "mmimdb"}``).
        """
        rows = []
        for rec in self.records():
            cfg = rec["config"]
            if where and any(cfg.get(k) != v for k, v in where.items()):
                continue
            flat = {k: v for k, v in cfg.items() if not isinstance(v, (dict, list))}
            for case, metrics in rec.get("metrics", {}).items():
                for metric, value in metrics.items():
                    rows.append({**flat, "key": rec["key"], "test_case": case, "metric": metric, "value": value})
        return pd.DataFrame(rows)
