"""wma_study.sweep: the results store makes sweeps resumable and reruns free.

- ``executor="local"``: two smoke trials write their records; a rerun trains nothing and leaves
  every record file byte-identical (same mtime).
- ``executor="ray"`` in this process: a failing trial is retried in a Ray worker process, then
  reported in a ``SweepError`` while the good trial is stored; Ray is shut down afterwards.
- Kill and resume: the CLI runs a smoke sweep on its own local Ray instance in a
  subprocess; the whole process session (driver, Ray's GCS/raylet and workers) is SIGKILLed as
  soon as the first record exists; the CLI is rerun to completion, then once more. Checked:
  one record per trial, none lost, records that existed before the kill untouched, and — from
  the ``WMA_TRIAL_LOG`` start log — no trial finished before the kill started again.

- A lost node: a real two-node Ray cluster on this machine (``ray.cluster_utils.Cluster``),
  trials on both nodes, the worker node killed while a trial trains there. Checked: the sweep
  finishes with every record, each stored once, and only the trials lost with the node start
  again (once, on the surviving node).

Training starts are counted with ``WMA_TRIAL_LOG`` (one ``start <key> <pid> <time> <node>`` line
per trial started, written by the trial wrapper inside the worker).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

from wma_study import experiments
from wma_core.store import ResultsStore, config_key
from wma_study.sweep import SweepError, run_trials
from wma_core.record import run_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("wma_data")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WMA_DATA", str(home))  # before prepare_data: the twin goes to the temp folder
        data_dir = experiments.prepare_data("hateful_memes", "smoke")
    assert data_dir.is_relative_to(home)
    return home, data_dir


def snapshot(records_dir: Path) -> dict:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(records_dir.glob("*.json"))}


def started(log: Path) -> list[str]:
    if not log.exists():
        return []
    return [line.split()[1] for line in log.read_text().splitlines() if line.startswith("start ")]


def keys_of(configs) -> list[str]:
    return [config_key(run_config(c)) for c in configs]


def test_local_executor_writes_records_and_rerun_changes_nothing(data_home, tmp_path, monkeypatch):
    home, data_dir = data_home
    monkeypatch.setenv("WMA_DATA", str(home))
    log = tmp_path / "trials.log"
    monkeypatch.setenv("WMA_TRIAL_LOG", str(log))
    configs = experiments.run_configs("hateful_memes", data_dir, "smoke", alphas=(0.0, 1.0), betas=(1.0,), seeds=(0,))
    assert len(configs) == 2
    results = tmp_path / "results"
    torch.set_num_threads(2)
    recs = run_trials(configs, results, executor="local", cpus_per_trial=1, progress=False)
    assert torch.get_num_threads() == 2  # the caller's thread count is restored
    keys = keys_of(configs)
    assert [r["key"] for r in recs] == keys, [r["config"] for r in recs]
    assert [r["config"]["method"] for r in recs] == ["baseline", "wma"]
    store = ResultsStore(results)
    assert sorted(p.stem for p in store.records_dir.glob("*.json")) == sorted(keys)
    assert sorted(started(log)) == sorted(keys)
    for r in recs:
        assert store.get(r["key"]) == r
        assert set(r["metrics"]) == {"normal", "text_noise", "image_noise", "text_missing", "image_missing"}
    before = snapshot(store.records_dir)
    time.sleep(0.05)  # a rewrite would show in mtime_ns

    again = run_trials(configs + configs[:1], results, executor="local", progress=False)
    assert [r["key"] for r in again] == keys + keys[:1]
    assert again[:2] == recs
    assert snapshot(store.records_dir) == before
    assert sorted(started(log)) == sorted(keys)  # nothing started a second time


def test_failed_trial_is_retried_then_reported_local(data_home, tmp_path, monkeypatch):
    home, data_dir = data_home
    log = tmp_path / "trials.log"
    monkeypatch.setenv("WMA_TRIAL_LOG", str(log))
    good = experiments.run_configs("hateful_memes", data_dir, "smoke", seeds=(0,))[0]
    # fit refuses a config whose dataset is not the prepared folder's
    bad = experiments.run_configs("mmimdb", data_dir, "smoke", seeds=(3,))[0]
    with pytest.raises(SweepError) as info:
        run_trials([bad, good], tmp_path / "results", executor="local", max_retries=2, progress=False)
    err = info.value
    assert "mmimdb baseline α=0 β=1 lr=0.001 seed=3: ValueError" in str(err)
    assert [c for c, _ in err.failures] == [bad]
    gk, bk = keys_of([good, bad])
    assert list(err.records) == [gk]
    assert ResultsStore(tmp_path / "results").get(gk) is not None
    assert started(log).count(bk) == 3 and started(log).count(gk) == 1


@pytest.fixture
def ray_tmpdir():
    # short: Ray's unix socket paths must stay under ~107 characters
    d = tempfile.mkdtemp(prefix="wr", dir="/tmp")
    yield d
    kill_ray_processes(d)
    shutil.rmtree(d, ignore_errors=True)


def _pids():
    for d in os.listdir("/proc"):
        if d.isdigit() and int(d) != os.getpid():
            yield int(d)


def _alive(pid: int) -> bool:
    """Running (a zombie, dead and waiting for its parent, does not count)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def _ours(pid: int, tmpdir: str | None, sid: int | None) -> bool:
    try:
        if sid is not None and os.getsid(pid) == sid:
            return True
        if tmpdir is None:
            return False
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f"RAY_TMPDIR={tmpdir}".encode() in f.read().split(b"\0")
    except OSError:
        return False


def kill_ray_processes(tmpdir: str, sid: int | None = None) -> int:
    """SIGKILL the processes of one test's Ray instance: those in session ``sid`` or whose
    environment has ``RAY_TMPDIR=tmpdir`` (both: processes this test started). Returns how many."""
    victims = [pid for pid in _pids() if _alive(pid) and _ours(pid, tmpdir, sid)]
    for pid in victims:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(_alive(pid) for pid in victims):
        time.sleep(0.05)
    return len(victims)


def in_session(sid: int) -> list[int]:
    return [pid for pid in _pids() if _alive(pid) and _ours(pid, None, sid)]


@pytest.mark.slow
def test_ray_executor_retries_in_workers_and_reports(data_home, tmp_path, monkeypatch, ray_tmpdir):
    import ray

    home, data_dir = data_home
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_TMPDIR", ray_tmpdir)
    log = tmp_path / "trials.log"
    monkeypatch.setenv("WMA_TRIAL_LOG", str(log))
    good = experiments.run_configs("hateful_memes", data_dir, "smoke", alphas=(1.0,), betas=(0.5,), seeds=(1,))[0]
    bad = experiments.run_configs("mmimdb", data_dir, "smoke", seeds=(0,))[0]
    assert not ray.is_initialized()
    with pytest.raises(SweepError) as info:
        run_trials([good, bad], tmp_path / "results", executor="ray", max_retries=1, progress=False)
    assert not ray.is_initialized()  # this call started Ray, so it shut it down
    assert "mmimdb baseline α=0 β=1 lr=0.001 seed=0: ValueError" in str(info.value)
    gk, bk = keys_of([good, bad])
    assert ResultsStore(tmp_path / "results").get(gk)["config"]["method"] == "wma"
    lines = [line.split() for line in log.read_text().splitlines()]
    assert [l[1] for l in lines].count(bk) == 2  # first attempt + max_retries=1
    assert [l[1] for l in lines].count(gk) == 1
    assert all(int(l[2]) != os.getpid() for l in lines)  # trials ran in Ray worker processes


@pytest.mark.slow
def test_cli_killed_midway_resumes_without_rerunning(data_home, tmp_path, ray_tmpdir, monkeypatch):
    home, data_dir = data_home
    monkeypatch.setenv("WMA_DATA", str(home))  # the same pretrained miniature (and so run keys) as the CLI's
    results = tmp_path / "results"
    records_dir = results / "records"
    log = tmp_path / "trials.log"
    alphas, betas, seeds, epochs = ("0", "1"), ("0.5", "2"), ("0", "1"), 3
    cmd = [sys.executable, "-m", "wma_study.sweep", "--dataset", "hateful_memes", "--alpha", *alphas, "--beta", *betas,
           "--seeds", *seeds, "--results", str(results), "--scale", "smoke", "--epochs", str(epochs),
           "--executor", "ray", "--cpus-per-trial", "1", "--no-progress"]
    env = {**os.environ, "WMA_DATA": str(home), "RAY_TMPDIR": ray_tmpdir, "WMA_TRIAL_LOG": str(log), "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)  # our own local instance, never a cluster someone else runs
    configs = experiments.run_configs("hateful_memes", data_dir, "smoke", alphas=[float(a) for a in alphas],
                                      betas=[float(b) for b in betas], seeds=[int(s) for s in seeds], epochs=epochs)
    expected = set(keys_of(configs))
    assert len(expected) == 6  # 2 baselines + 2 x 2 WMA

    # 1. start, kill the whole session (driver, GCS, raylet, workers) once a record exists
    out1 = open(tmp_path / "run1.log", "w")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out1, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 150
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if any(records_dir.glob("*.json")):
                break
            time.sleep(0.05)
        assert proc.poll() is None, f"the sweep ended before it could be killed:\n{(tmp_path / 'run1.log').read_text()}"
        assert any(records_dir.glob("*.json")), "no record after 150 s"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        kill_ray_processes(ray_tmpdir, sid=proc.pid)
        proc.wait(timeout=30)
        out1.close()
    assert not in_session(proc.pid), "processes survived the kill"

    before = snapshot(records_dir)  # nothing can write any more: every process is gone
    finished_before = {Path(n).stem for n in before}
    started_before = started(log)
    assert 1 <= len(finished_before) < len(expected), "kill came too late: make the trials longer"
    assert finished_before <= expected
    interrupted = {p.parent.name for p in (results / "runs").glob("*/last.pt")} if (results / "runs").exists() else set()
    time.sleep(0.05)

    # 2. resume to completion
    res2 = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240, start_new_session=True)
    assert res2.returncode == 0, res2.stdout + res2.stderr
    after = snapshot(records_dir)
    assert set(Path(n).stem for n in after) == expected  # one record per trial, none lost
    for name, (data, mtime) in before.items():
        assert after[name] == (data, mtime), f"{name} was rewritten by the resumed sweep"
    resumed = started(log)[len(started_before):]
    why = f"finished before the kill: {sorted(finished_before)}\ntrial log:\n{log.read_text()}\nrun 2:\n{res2.stderr[-3000:]}"
    assert not set(resumed) & finished_before, "a trial finished before the kill was started again\n" + why
    assert sorted(resumed) == sorted(expected - finished_before), why  # each missing trial started exactly once
    store = ResultsStore(results)
    for key in expected:
        rec = store.get(key)
        assert rec["key"] == key == config_key(rec["config"])
        assert rec["epochs_run"] == epochs and len(rec["history"]) == epochs  # resumed runs have every epoch
    assert not list((results / "runs").glob("*/last.pt"))  # interrupted runs finished and cleaned up
    assert interrupted <= expected - finished_before
    assert "baseline" in res2.stdout and "wma" in res2.stdout and "±" in res2.stdout  # summary table

    # 3. rerunning the finished sweep changes nothing (and needs no Ray: nothing to submit)
    res3 = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, start_new_session=True)
    assert res3.returncode == 0, res3.stdout + res3.stderr
    assert snapshot(records_dir) == after
    assert started(log) == started_before + resumed, f"{why}\nrun 3:\n{res3.stderr[-3000:]}"


EPOCHS = 5  # long enough that the killed node is still training its trial when it dies (and <= patience, so no early stop)


@pytest.mark.slow
def test_sweep_survives_losing_a_node(data_home, tmp_path, monkeypatch, ray_tmpdir):
    """A real two-node Ray cluster on this machine (``ray.cluster_utils.Cluster``: a head and a
    worker node, each with its own raylet and one CPU). Trials run on both nodes; the worker node
    is killed while a trial trains there. The sweep must finish with every record, each trial
    stored once, no trial that had finished started again, and only the trials that were running
    on the lost node started a second time (on the surviving node, resuming or reusing)."""
    import threading

    import ray
    from ray.cluster_utils import Cluster

    home, data_dir = data_home
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_TMPDIR", ray_tmpdir)
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    log = tmp_path / "trials.log"
    monkeypatch.setenv("WMA_TRIAL_LOG", str(log))
    configs = experiments.run_configs("hateful_memes", data_dir, "smoke", alphas=(0.0, 1.0), betas=(1.0,),
                                      seeds=(0, 1, 2), epochs=EPOCHS)
    expected = keys_of(configs)
    assert len(set(expected)) == 6
    results = tmp_path / "results"

    os.makedirs(os.path.join(ray_tmpdir, "ray"), exist_ok=True)  # where the Cluster writes its address file
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "temp_dir": ray_tmpdir})
    try:
        worker = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
        head_id = ray.get_runtime_context().get_node_id()
        worker_id = next(n["NodeID"] for n in ray.nodes() if n["Alive"] and n["NodeID"] != head_id)

        def lines():
            return [l.split() for l in log.read_text().splitlines()] if log.exists() else []

        killed = {}

        def kill_when_worker_trains():
            # a trial started on the worker node and is still training there (no record yet)
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline:
                on_worker = [l[1] for l in lines() if l[-1] == worker_id]
                if any(not (results / "records" / f"{k}.json").exists() for k in on_worker):
                    time.sleep(0.2)  # inside its training loop (EPOCHS keep it there for seconds)
                    cluster.remove_node(worker, allow_graceful=False)
                    # after the kill: nothing on the worker node can start or finish any more
                    killed["records"] = {p.stem for p in (results / "records").glob("*.json")}
                    killed["starts"] = lines()
                    return
                time.sleep(0.05)

        killer = threading.Thread(target=kill_when_worker_trains, daemon=True)
        killer.start()
        recs = run_trials(configs, results, executor="ray", cpus_per_trial=1, max_retries=0, progress=False)
        killer.join(timeout=60)
    finally:
        ray.shutdown()
        cluster.shutdown()

    assert "starts" in killed, f"the worker node never ran a trial:\n{log.read_text() if log.exists() else ''}"
    assert [r["key"] for r in recs] == expected  # every trial finished, although max_retries=0
    store = ResultsStore(results)
    assert sorted(p.stem for p in store.records_dir.glob("*.json")) == sorted(expected)
    for key in expected:
        rec = store.get(key)
        assert rec["key"] == key and rec["epochs_run"] == EPOCHS and len(rec["history"]) == EPOCHS
    all_starts = [l for l in (l.split() for l in log.read_text().splitlines())]
    nodes = {l[-1] for l in all_starts}
    assert {head_id, worker_id} <= nodes, nodes  # trials were placed on both nodes
    before = killed["starts"]
    on_lost = {l[1] for l in all_starts if l[-1] == worker_id} - killed["records"]  # training there when it died
    assert on_lost, "no trial was running on the killed node"
    counts = {k: [l[1] for l in all_starts].count(k) for k in expected}
    for k in expected:
        # only a trial lost with the node may start again, at most once, and then on the surviving
        # node. (On one machine a removed node's worker process can still write its record in the
        # moment before it dies; the sweep then reuses that record instead of training it again.)
        assert counts[k] in ((1, 2) if k in on_lost else (1,)), (k, counts, on_lost, all_starts)
    for k in on_lost:
        assert [l[-1] for l in all_starts if l[1] == k][-1] == (head_id if counts[k] == 2 else worker_id)
    assert not set(l[1] for l in all_starts[len(before):]) & killed["records"]  # finished: never started again
    assert not list((results / "runs").glob("*/last.pt"))
