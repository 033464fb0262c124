"""Sweeps over (dataset, method, α, β, lr, seed) on Ray, resumable through the results store.

The results store (:mod:`wma_core.store`) is the source of truth: a trial whose record is in
the store is not submitted at all, so a killed sweep resumes where it stopped (a trial that was
interrupted mid-training resumes from its ``last.pt``, :func:`wma_core.train.fit`) and rerunning
a finished sweep changes nothing in the store.

Execution (:func:`run_trials`):

- ``executor="ray"``: one Ray task per trial (``num_cpus=cpus_per_trial``, one GPU per trial
  where the cluster has GPUs), run in Ray's worker processes (reused between trials: importing
  torch costs seconds). ``ray.init(address=...)`` when Ray is not initialised yet: ``None`` starts
  a local instance unless ``RAY_ADDRESS`` is set (or a cluster was started with ``ray start`` on
  this machine), in which case Ray joins it; a head address (``--address host:6379``) joins that
  cluster, so several GPUs or nodes are all used. On several nodes the results folder and the
  prepared data must be on a shared file system and ``wma_core`` installed on every node (the
  driver also writes each returned record into its own store when it is missing there).
- ``executor="local"``: the same, one trial after another in this process (tests, tiny runs).

A failed trial is retried ``max_retries`` times; trials that still fail are reported at the end
in a :class:`SweepError`, after every other trial finished and was stored.

Command line::

    python -m wma_study.sweep --dataset hateful_memes --alpha 0 1 --beta 0.5 1 2 --seeds 0 1 2 \\
        --results _data/results --scale default [--address HOST:PORT]
    python -m wma_study.sweep --dataset mmimdb --alpha 0 6 --beta 0.2 --seeds 0 1 2 3 4 \\
        --results _data/results --scale paper --data-root /data/mmimdb --model /models/vilt-b32-mlm

(``--model``: ``tiny``, a folder written by ``save_pretrained`` or a hub name; its tokenizer
prepares the data. A folder needs no network.)

(``--alpha 0`` is the baseline.) Progress is shown as trials finish; a summary table (mean ± 95%
CI over seeds of the headline metric per cell) is printed at the end.

A lost node does not lose trials: a trial whose worker, node or result object was lost (Ray's
system errors, not an exception of the trial itself) is submitted again, up to
:data:`LOST_RESUBMITS` times, without using up ``max_retries``; the new attempt resumes from the
trial's ``last.pt`` when the results folder is shared, or returns the stored record when the
trial had finished before its result was lost. Records are written once per key (atomic
rename of the same content), so a trial can never be stored twice.

A hung trial is told from a slow one by progress, not by wall time: every training step, dev
pass and test case touches the trial's heartbeat file in the store
(:meth:`wma_core.store.ResultsStore.heartbeat`). On Ray, a trial that has started and then
marked no progress for ``hang_after`` seconds (default :data:`HANG_AFTER`) is cancelled and
submitted once more (it resumes from its ``last.pt``); a second hang is reported by name in the
:class:`SweepError`. A trial waiting for a free CPU has not started and is never judged.

Set ``WMA_TRIAL_LOG=path`` to append one line ``start <key> <pid> <time> <node>`` per trial
started (``<node>``: the Ray node id, or ``local``; for tests and audits: a finished trial never
starts again). For tests of the hang watch, ``WMA_STALL=<key>:<n>[,...]`` (with the trial log
set) makes the first ``n`` attempts of that trial stop marking progress after they start.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import sys
import time
from pathlib import Path

from wma_core.store import ResultsStore, config_key, heartbeat_age, touch_heartbeat
from wma_core.record import run_config
from wma_core.train import TrainConfig, fit

TRIAL_LOG_ENV = "WMA_TRIAL_LOG"
STALL_ENV = "WMA_STALL"
#: Seconds without progress (no step, dev pass, test case or record) after which a started trial
#: is hung. A training step of the default scale takes well under a second, a dev pass or one
#: test case a few seconds; ten minutes of silence is a hang on any machine this book runs on.
HANG_AFTER = 600.0
#: How often a hung trial is submitted again before it is reported.
HANG_RETRIES = 1
#: How often one trial is submitted again after Ray lost it (worker, node or result object).
LOST_RESUBMITS = 3


class SweepError(RuntimeError):
    """Some trials failed after their retries; the others finished and are in the store.

    Attributes:
        failures: list of ``(TrainConfig, error message)``.
        records: ``{key: record}`` of the trials that are in the store (finished now or before).
    """

    def __init__(self, failures: list, records: dict | None = None):
        self.failures = list(failures)
        self.records = dict(records or {})
        lines = [f"{len(self.failures)} trial(s) failed after retries ({len(self.records)} others are in the store):"]
        lines += [f"  - {describe(cfg)}: {err}" for cfg, err in self.failures]
        super().__init__("\n".join(lines))


def describe(cfg: TrainConfig) -> str:
    """``hateful_memes wma α=1 β=0.5 lr=0.001 seed=0`` (``target`` shown when not ``init``;
    ``hateful_memes l2sp λ=0.01 lr=0.001 seed=0`` for L2-SP)."""
    what = f"λ={cfg.l2sp:g}" if cfg.method == "l2sp" else f"α={cfg.alpha:g} β={cfg.beta:g}"
    s = f"{cfg.dataset} {cfg.method} {what} lr={cfg.lr:g} seed={cfg.seed}"
    return s + (f" target={cfg.target}" if cfg.target != "init" else "")


def _log_start(path: str | None, key: str, node: str = "local") -> None:
    if not path:
        return
    line = f"start {key} {os.getpid()} {time.time():.3f} {node}\n"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def _trial(cfg: TrainConfig, results: str, threads: int, trial_log: str | None, in_ray: bool) -> dict:
    """One trial, in a worker process (Ray) or in this process (local): train or reuse, return the record."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, int(threads)))
    try:
        if in_ray and cfg.device == "auto":
            import ray

            # "auto" means CUDA only when this task was given a GPU
            if not ray.get_gpu_ids() or not torch.cuda.is_available():
                cfg = dataclasses.replace(cfg, device="cpu")
        cfg = dataclasses.replace(cfg, progress=False)
        node = "local"
        if in_ray:
            import ray

            node = ray.get_runtime_context().get_node_id()
        key = config_key(run_config(cfg))
        store = ResultsStore(results)
        _log_start(trial_log, key, node)
        touch_heartbeat(store.heartbeat(key))  # started: from now on the hang watch judges it
        if _stall_requested(key, trial_log):
            while True:  # a test of the hang watch: started, then silent
                time.sleep(3600)
        return fit(cfg, store)
    finally:
        if not in_ray:  # the local executor runs in the caller's process: leave it as it was
            torch.set_num_threads(previous)


def _stall_requested(key: str, trial_log: str | None) -> bool:
    """Whether ``WMA_STALL`` asks this attempt of ``key`` to stall (counted in the trial log)."""
    spec = os.environ.get(STALL_ENV, "")
    if not spec or not trial_log:
        return False
    wanted = dict(item.rsplit(":", 1) for item in spec.split(",") if ":" in item)
    if key not in wanted:
        return False
    with open(trial_log, encoding="utf-8") as f:
        starts = sum(1 for line in f if line.startswith(f"start {key} "))
    return starts <= int(wanted[key])


def _error_text(err: BaseException) -> str:
    cause = getattr(err, "cause", None)
    if isinstance(cause, BaseException):
        err = cause
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[-1] if text else ''}".rstrip(": ")


def _headline_text(rec: dict) -> str:
    m = rec.get("headline_metric")
    v = (rec.get("metrics") or {}).get("normal", {}).get(m)
    return f"{m}={v:.4f}" if isinstance(v, (int, float)) else ""


# --------------------------------------------------------------------------- Ray


def _auth_env_for_join(address: str | None) -> bool:
    """Joining a cluster by address: use token authentication when a token is available.

    ``ray start --head`` enables token authentication by default and writes the token to
    ``~/.ray/auth_token``; a driver that joins through an explicit address (argument or
    ``RAY_ADDRESS``) with ``RAY_AUTH_MODE`` unset does not send it and retries for a long time.
    Sending a token to a cluster without authentication works, so: token mode when one exists.
    Returns whether ``RAY_AUTH_MODE`` was set here.
    """
    if os.environ.get("RAY_AUTH_MODE") is not None:
        return False
    if not (address or os.environ.get("RAY_ADDRESS")):
        return False
    token_file = Path(os.environ.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token"))
    if os.environ.get("RAY_AUTH_TOKEN") or token_file.is_file():
        os.environ["RAY_AUTH_MODE"] = "token"
        return True
    return False


def init_ray(address: str | None = None) -> bool:
    """``ray.init`` quietly unless Ray is already initialised; returns whether this call started it.

    ``address=None`` follows Ray: ``RAY_ADDRESS`` if set, else a new local instance.
    """
    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage-stats prompt or network call
    changed = _auth_env_for_join(address)  # before importing ray, which reads RAY_AUTH_MODE once
    import ray

    if changed:
        try:  # ray was imported earlier: refresh its cached configuration, as Ray itself does
            from ray._raylet import Config

            Config.initialize("")
        except Exception:  # noqa: BLE001
            pass
    ray.init(
        address=address,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=True,
        logging_level=logging.ERROR,
    )
    return True


def _progress_bar(total: int, done: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=done, desc="sweep", unit="trial", disable=not enabled, dynamic_ncols=True)


def run_trials(
    configs: list[TrainConfig],
    results: str | Path,
    *,
    executor: str = "ray",
    address: str | None = None,
    cpus_per_trial: int = 1,
    gpus_per_trial: float | None = None,
    max_retries: int = 1,
    progress: bool = True,
    hang_after: float | None = HANG_AFTER,
) -> list[dict]:
    """Run every trial whose record is not yet in ``results``; return all records in ``configs`` order.

    Args:
        configs: the trials (e.g. :func:`wma_study.experiments.run_configs`); duplicates run once.
        results: the results store's folder (shared by every worker).
        executor: ``"ray"`` (Ray tasks, one process per trial slot) or ``"local"`` (sequential,
            in this process).
        address: Ray cluster to join (``None``: ``RAY_ADDRESS`` if set, else a new local instance).
        cpus_per_trial: CPUs per trial (also ``torch.set_num_threads`` inside the trial).
        gpus_per_trial: GPUs per trial; ``None``: 1 when the cluster has GPUs, else 0.
        max_retries: extra attempts of a failed trial before it is reported.
        progress: a progress bar advancing as trials finish.
        hang_after: seconds without progress after which a started Ray trial is hung (cancelled,
            submitted once more, then reported); ``None``: never.

    Raises:
        SweepError: some trials failed ``1 + max_retries`` times; raised after all other trials
            finished (their records are in the store).
    """
    if executor not in ("ray", "local"):
        raise ValueError(f"executor must be 'ray' or 'local', got {executor!r}")
    store = ResultsStore(results)
    results = str(store.root.resolve())
    keys = [config_key(run_config(c)) for c in configs]
    todo: dict[str, TrainConfig] = {}
    for k, c in zip(keys, configs):
        if k not in todo and not store.path(k).exists():
            # workers may run elsewhere: absolute paths (data_dir is not part of the key)
            todo[k] = dataclasses.replace(c, data_dir=str(Path(c.data_dir).resolve()))
    n_unique = len(set(keys))
    trial_log = os.environ.get(TRIAL_LOG_ENV) or None
    done: dict[str, dict] = {}
    failures: list = []
    bar = _progress_bar(n_unique, n_unique - len(todo), progress)

    def finished(key, rec):
        if store.get(key) is None:  # a worker on another node without a shared store
            store.put(rec)
        done[key] = rec
        bar.set_postfix_str(f"{describe(todo[key])} {_headline_text(rec)}")
        bar.update(1)

    def failed(key, err):
        failures.append((todo[key], _error_text(err)))
        bar.set_postfix_str(f"{describe(todo[key])} FAILED")
        bar.update(1)

    try:
        if executor == "local":
            for key, cfg in todo.items():
                for attempt in range(max_retries + 1):
                    try:
                        rec = _trial(cfg, results, cpus_per_trial, trial_log, False)
                    except Exception as err:  # noqa: BLE001 - reported in SweepError
                        if attempt == max_retries:
                            failed(key, err)
                    else:
                        finished(key, rec)
                        break
        elif todo:
            _run_ray(todo, results, address, cpus_per_trial, gpus_per_trial, max_retries, trial_log, finished, failed,
                     hang_after)
    finally:
        bar.close()
    if failures:
        stored = {k: done.get(k) or store.get(k) for k in dict.fromkeys(keys)}
        raise SweepError(failures, {k: r for k, r in stored.items() if r is not None})
    out = []
    for k in keys:
        rec = done.get(k) or store.get(k)
        if rec is None:
            raise RuntimeError(f"record {k} missing from {results} after the sweep")
        out.append(rec)
    return out


def _run_ray(todo, results, address, cpus_per_trial, gpus_per_trial, max_retries, trial_log, finished, failed,
             hang_after=HANG_AFTER):
    import ray

    started = init_ray(address)
    store = ResultsStore(results)
    pending: dict = {}
    try:
        if gpus_per_trial is None:
            gpus_per_trial = 1 if ray.cluster_resources().get("GPU", 0) > 0 else 0
        remote = ray.remote(_trial).options(
            num_cpus=cpus_per_trial,
            num_gpus=gpus_per_trial,
            max_retries=max_retries,
            retry_exceptions=True,
        )
        lost_errors = _lost_errors(ray)
        resubmits = dict.fromkeys(todo, 0)
        hangs = dict.fromkeys(todo, 0)

        def submit(key):
            store.heartbeat(key).unlink(missing_ok=True)  # not started yet (a stale beat is no progress)
            pending[remote.remote(todo[key], results, cpus_per_trial, trial_log, True)] = key

        for key in todo:
            submit(key)
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=None if hang_after is None else min(30.0, hang_after / 4))
            for ref, key in _hung(pending, store, hang_after) if not ready else ():
                del pending[ref]
                ray.cancel(ref, force=True)
                hangs[key] += 1
                if hangs[key] <= HANG_RETRIES:
                    print(f"[sweep] {describe(todo[key])}: no progress for {hang_after:g} s, submitted again",
                          file=sys.stderr, flush=True)
                    submit(key)
                else:
                    failed(key, RuntimeError(f"hung: no progress for {hang_after:g} s, {hangs[key]} times"))
            for ref in ready:
                key = pending.pop(ref)
                try:
                    rec = ray.get(ref)
                except lost_errors as err:  # the node, the worker or the result went away: not the trial's fault
                    if resubmits[key] < LOST_RESUBMITS:
                        resubmits[key] += 1
                        submit(key)
                    else:
                        failed(key, err)
                except Exception as err:  # noqa: BLE001 - RayTaskError (the trial raised) ...
                    failed(key, err)
                else:
                    finished(key, rec)
    finally:
        if pending:  # interrupted: stop what still runs (its last.pt lets it resume later)
            for ref in pending:
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001
                    pass
        if started:
            ray.shutdown()


def _hung(pending: dict, store: ResultsStore, hang_after: float | None) -> list:
    """``(ref, key)`` of the started trials whose heartbeat is older than ``hang_after`` seconds."""
    if hang_after is None:
        return []
    out = []
    for ref, key in pending.items():
        age = heartbeat_age(store.heartbeat(key))
        if age is not None and age > hang_after:
            out.append((ref, key))
    return out


def _lost_errors(ray) -> tuple:
    """Ray's exceptions for work lost with a node or worker process (as opposed to a trial that raised)."""
    names = ("WorkerCrashedError", "NodeDiedError", "LocalRayletDiedError", "ObjectLostError",
             "OwnerDiedError", "ObjectReconstructionFailedError", "ObjectFetchTimedOutError")
    found = tuple(getattr(ray.exceptions, n) for n in names if isinstance(getattr(ray.exceptions, n, None), type))
    # RayTaskError wraps exceptions raised by the trial; make sure none of those count as lost
    return tuple(e for e in found if not issubclass(e, ray.exceptions.RayTaskError))


# --------------------------------------------------------------------------- command line


def summary_table(records: list[dict]):
    """Mean ± 95% CI over seeds of the headline metric (test, normal) per (method, α, β, lr)."""
    import pandas as pd

    from . import stats

    rows = []
    for rec in records:
        c = rec["config"]
        m = rec["headline_metric"]
        rows.append({
            "dataset": c["dataset"], "method": c["method"], "lr": c["lr"], "target": c["target"],
            "alpha": c["alpha"], "beta": c["beta"] if c["method"] != "baseline" else float("nan"),
            "metric": m, "value": rec["metrics"]["normal"][m], "seed": c["seed"],
        })
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    s = stats.summarize(df, ["dataset", "method", "lr", "target", "alpha", "beta", "metric"])
    s["mean ± CI"] = [f"{m:.4f} ± {(h - l) / 2:.4f}" if h == h else f"{m:.4f}" for m, l, h in zip(s["mean"], s["lo"], s["hi"])]
    return s


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m wma_study.sweep", description="α × β × seed sweeps, resumable, on Ray.")
    p.add_argument("--dataset", required=True, choices=["hateful_memes", "mmimdb", "ur_funny", "mosei"])
    p.add_argument("--alpha", type=float, nargs="+", required=True, help="α values; 0 = the baseline")
    p.add_argument("--beta", type=float, nargs="+", required=True, help="β values (β = 0: minimise OT)")
    p.add_argument("--seeds", type=int, nargs="+", required=True)
    p.add_argument("--results", required=True, help="results store folder")
    p.add_argument("--scale", default="default", choices=["smoke", "default", "paper"])
    p.add_argument("--address", default=None, help="Ray cluster to join (default: RAY_ADDRESS, else a local instance)")
    p.add_argument("--data-root", default=None, help="raw dataset folder (required at --scale paper)")
    p.add_argument("--model", default=None,
                   help="'tiny', a local folder written by save_pretrained (weights + tokenizer) or a hub name; "
                        "decides the tokenizer the data are prepared with (default: the profile's)")
    p.add_argument("--device", default=None, choices=["cpu", "cuda", "auto"], help="default: the profile's")
    p.add_argument("--max-train-samples", type=int, default=None, help="use only the first N training samples")
    p.add_argument("--lr", type=float, nargs="+", default=None, help="learning rates (default: the profile's)")
    p.add_argument("--target", default="init", choices=["init", "batch"])
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--executor", default="ray", choices=["ray", "local"])
    p.add_argument("--cpus-per-trial", type=int, default=1)
    p.add_argument("--gpus-per-trial", type=float, default=None)
    p.add_argument("--max-retries", type=int, default=1)
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv=None) -> int:
    from . import experiments

    args = build_parser().parse_args(argv)
    # SIGTERM (e.g. a scheduler stopping us) unwinds like Ctrl-C, so Ray is shut down cleanly
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        data_dir = experiments.prepare_data(args.dataset, args.scale, args.data_root, model=args.model)
    except (OSError, ValueError) as err:  # DataError, CheckpointError, a missing folder: say it, no traceback
        print(f"error: {err}", file=sys.stderr)
        return 2
    extra = {"model": args.model} if args.model else {}
    configs = []
    for lr in args.lr or [None]:
        configs += experiments.run_configs(
            args.dataset, data_dir, args.scale, alphas=args.alpha, betas=args.beta, seeds=args.seeds,
            target=args.target, lr=lr, epochs=args.epochs, device=args.device,
            max_train_samples=args.max_train_samples, **extra,
        )
    print(f"{len(configs)} trials on {data_dir} -> {args.results}", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    status = 0
    try:
        records = run_trials(
            configs, args.results, executor=args.executor, address=args.address, cpus_per_trial=args.cpus_per_trial,
            gpus_per_trial=args.gpus_per_trial, max_retries=args.max_retries, progress=not args.no_progress,
        )
    except SweepError as err:
        print(str(err), file=sys.stderr)
        store = ResultsStore(args.results)
        found = (store.get(config_key(run_config(c))) for c in configs)
        records, status = [r for r in found if r is not None], 1
    table = summary_table(records)
    if len(table):
        import pandas as pd

        with pd.option_context("display.width", 200, "display.max_rows", 500):
            print(table[["dataset", "method", "lr", "target", "alpha", "beta", "metric", "mean ± CI", "n"]].to_string(index=False))
    print(f"{len(records)} of {len(configs)} trials in the store ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    return status


if __name__ == "__main__":
    # run the importable module's main, so Ray pickles wma_study.sweep._trial by reference
    from wma_study import sweep as _sweep

    raise SystemExit(_sweep.main())
