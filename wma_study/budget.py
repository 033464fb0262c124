"""Where a build's CPU time went: per chapter, per training run, training against evaluation,
pretraining, and the achieved throughput against the machine's own rate.

Everything is read from what the build itself wrote; nothing is timed here:

- per chapter: the executed notebooks' papermill metadata (``metadata.papermill.duration``
  in ``<build>/executed/<name>.ipynb``; the chapters of the build in progress that have
  finished), else the previous build's ``<build>/timings.json``;
- per run: each training record's ``timings`` (:func:`wma_core.train.fit`): seconds in
  training steps, in the per-epoch dev evaluations and in the test cases, samples, steps and
  the dense FLOP estimate ``6 N T`` per training sample and ``2 N T`` per evaluated sample
  (:func:`wma_core.record.model_flops_per_sample`);
- pretraining: ``pretrain.json`` of every finished checkpoint folder under
  ``<data home>/pretrained/`` (:mod:`wma_core.pretrain`);
- the machine's rate: the reference GEMM that ``benchmarks/bench_step.py`` times
  (``gemm_peak_gflops_per_s``, with the thread count it ran with).

Seconds are those of each process (a run's own clock), so with several runs in parallel
their sum exceeds the build's wall time.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd


def chapter_seconds(build_dir: str | Path) -> pd.DataFrame:
    """``name, seconds, source`` per executed chapter of ``build_dir`` (empty if none)."""
    build_dir = Path(build_dir)
    rows = {}
    timings = build_dir / "timings.json"
    if timings.exists():
        try:
            for name, sec in (json.loads(timings.read_text()).get("notebooks") or {}).items():
                rows[name] = {"chapter": name, "seconds": float(sec), "source": "previous build (timings.json)"}
        except (OSError, ValueError, AttributeError):
            pass
    for nb in sorted((build_dir / "executed").glob("*.ipynb")):
        try:
            meta = json.loads(nb.read_text()).get("metadata", {}).get("papermill", {})
        except (OSError, ValueError):
            continue
        if isinstance(meta.get("duration"), (int, float)):
            rows[nb.stem] = {"chapter": nb.stem, "seconds": float(meta["duration"]), "source": "this build (papermill)"}
    return pd.DataFrame(list(rows.values()), columns=["chapter", "seconds", "source"])


def runs_frame(records: list[dict]) -> pd.DataFrame:
    """One row per training record with its time split and throughput.

    Columns: dataset, method, alpha, beta, seed, model, batch, threads, train_s, dev_eval_s,
    test_s, total_s, steps, train_samples, eval_samples, train_samples_per_s,
    eval_samples_per_s, train_gflops_per_s, eval_gflops_per_s. Records written before the
    time split existed have NaN in the columns they lack.
    """
    rows = []
    for rec in records:
        c, t = rec.get("config", {}), rec.get("timings") or {}
        tr, dv, te = t.get("train_seconds"), t.get("dev_eval_seconds"), t.get("test_seconds")
        ev = (dv or 0.0) + (te or 0.0) if dv is not None else None
        row = {
            "dataset": c.get("dataset"), "method": c.get("method"), "alpha": c.get("alpha"), "beta": c.get("beta"),
            "seed": c.get("seed"), "model": c.get("model"), "batch": c.get("batch_size"), "threads": t.get("threads"),
            "train_s": tr, "dev_eval_s": dv, "test_s": te,
            "total_s": sum(x for x in (tr, dv, te) if x is not None) if tr is not None else None,
            "steps": t.get("steps"), "train_samples": t.get("train_samples"), "eval_samples": t.get("eval_samples"),
            "train_samples_per_s": t.get("train_samples_per_second"), "eval_samples_per_s": t.get("eval_samples_per_second"),
            "train_gflops_per_s": t["train_flops"] / tr / 1e9 if t.get("train_flops") and tr else None,
            "eval_gflops_per_s": t["eval_flops"] / ev / 1e9 if t.get("eval_flops") and ev else None,
        }
        rows.append(row)
    cols = ["dataset", "method", "alpha", "beta", "seed", "model", "batch", "threads", "train_s", "dev_eval_s", "test_s",
            "total_s", "steps", "train_samples", "eval_samples", "train_samples_per_s", "eval_samples_per_s",
            "train_gflops_per_s", "eval_gflops_per_s"]
    return pd.DataFrame(rows, columns=cols).astype({c: float for c in cols[8:]})


def pretraining_seconds(home: str | Path) -> pd.DataFrame:
    """``folder, corpus_s, train_s, eval_s, steps, threads`` per finished pretraining checkpoint."""
    rows = []
    for f in sorted(Path(home).glob("pretrained/*/pretrain.json")):
        try:
            t = json.loads(f.read_text()).get("timings") or {}
        except (OSError, ValueError):
            continue
        rows.append({"folder": f.parent.name, "corpus_s": t.get("corpus_seconds"), "train_s": t.get("train_seconds"),
                     "eval_s": t.get("eval_seconds"), "steps": t.get("steps"), "threads": t.get("threads")})
    return pd.DataFrame(rows, columns=["folder", "corpus_s", "train_s", "eval_s", "steps", "threads"])


def machine_rate(bench_results: dict, cpu: str | None = None) -> dict | None:
    """The best reference GEMM rate among CPU ``train_step`` benchmark files (``{file: result}``).

    Returns ``{"file", "gflops_per_s", "threads", "cpu"}`` (preferring files measured on a CPU
    named ``cpu``), or ``None`` when no file has a GEMM reference.
    """
    cands = []
    for name, r in bench_results.items():
        if r.get("benchmark") == "train_step" and r.get("gemm_peak_gflops_per_s"):
            m = r.get("machine") or {}
            cands.append((cpu is not None and m.get("cpu") == cpu, r["gemm_peak_gflops_per_s"], name, r))
    if not cands:
        return None
    same, rate, name, r = max(cands, key=lambda x: (x[0], x[1]))
    return {"file": name, "gflops_per_s": rate, "threads": r.get("threads") or (r.get("machine") or {}).get("torch_threads"),
            "cpu": (r.get("machine") or {}).get("cpu"), "same_cpu": same}


def time_bars(per: pd.DataFrame, colors=("#555555", "#9ecae1", "#fdae6b")):
    """Stacked horizontal bars of ``train_s``, ``dev_eval_s``, ``test_s`` per (dataset, method) row."""
    import matplotlib.pyplot as plt
    import numpy as np

    labels = [f"{d} {m}" for d, m in zip(per["dataset"], per["method"])]
    fig, ax = plt.subplots(figsize=(8, 0.6 + 0.35 * len(per)))
    left = np.zeros(len(per))
    for col, color, name in zip(("train_s", "dev_eval_s", "test_s"), colors, ("training steps", "dev evaluation", "test cases")):
        vals = per[col].fillna(0).to_numpy(dtype=float)
        ax.barh(labels, vals, left=left, color=color, label=name)
        left += vals
    ax.set_xlabel("process-seconds (sum over runs)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig
