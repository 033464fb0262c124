"""A planted data home: lock files, temporary files and heartbeats are never followed through a
symlink, a forged record is not trusted, and a file cannot claim a backbone's identity.

Each test fails on the code before this guard for the stated reason: the lock was opened with
``open(path, "w")`` (truncating a symlinked target), the temporary checkpoint was written with
``torch.save(obj, path)`` (overwriting a symlinked target), and a record was returned by key alone.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
import torch

from wma_core import checkpoint
from wma_core.store import ResultsStore, atomic_write_json, config_key, touch_heartbeat


def _precious(tmp_path: Path) -> Path:
    p = tmp_path / "outside" / "precious.txt"
    p.parent.mkdir(parents=True)
    p.write_text("do not touch")
    return p


def test_a_symlinked_lock_file_is_refused_and_its_target_untouched(tmp_path):
    target = _precious(tmp_path)
    store = ResultsStore(tmp_path / "results")
    lock = tmp_path / "results" / "locks" / "abc.lock"
    lock.parent.mkdir(parents=True)
    lock.symlink_to(target)
    with pytest.raises(OSError, match=r"abc\.lock: cannot open the lock file"):
        with store.lock("abc"):
            pass
    assert target.read_text() == "do not touch"


def test_temporary_files_are_never_written_through_a_symlink(tmp_path):
    target = _precious(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    (run / ".last.pt.tmp").symlink_to(target)
    checkpoint.save({"w": torch.ones(2)}, run / "last.pt")
    assert target.read_text() == "do not touch"
    assert torch.equal(checkpoint.load(run / "last.pt")["w"], torch.ones(2))
    assert not (run / ".last.pt.tmp").exists()

    rec = tmp_path / "r" / "x.json"
    rec.parent.mkdir()
    (rec.parent / f".x.json.{os.getpid()}.tmp").symlink_to(target)
    atomic_write_json(rec, {"a": 1})
    assert target.read_text() == "do not touch" and rec.read_text().startswith("{")


def test_a_heartbeat_symlink_never_touches_its_target(tmp_path):
    target = _precious(tmp_path)
    os.utime(target, (1_000_000, 1_000_000))
    beat = tmp_path / "progress" / "k.beat"
    beat.parent.mkdir()
    beat.symlink_to(target)
    touch_heartbeat(beat)
    assert target.stat().st_mtime == 1_000_000 and target.read_text() == "do not touch"


def test_a_forged_record_is_ignored_and_the_run_trained(hm_twin, tmp_path):
    from wma_core.record import run_config
    from wma_core.train import TrainConfig, fit

    cfg = TrainConfig(dataset="hateful_memes", data_dir=str(hm_twin(40, 3)), epochs=1, batch_size=16, progress=False,
                      device="cpu", ot_iters=5)
    key = config_key(run_config(cfg))
    store = ResultsStore(tmp_path / "results")
    other = {**run_config(cfg), "seed": 99}
    forged = {"key": key, "config": other, "metrics": {"normal": {"auroc": 1.0}}}  # claims the key, holds another run
    atomic_write_json(store.path(key), forged)
    with pytest.warns(UserWarning, match=r"does not hold the run .*its key or config differs"):
        assert store.get(key) is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        rec = fit(cfg, store)
    assert rec["key"] == key == config_key(rec["config"]) and rec["metrics"]["normal"]["auroc"] != 1.0
    assert store.get(key)["config"]["seed"] == cfg.seed
