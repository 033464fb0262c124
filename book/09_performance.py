# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: -papermill,-execution
#     formats: ipynb,py:percent
#     notebook_metadata_filter: -papermill,-widgets
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Performance
#
# What WMA costs. The regulariser solves one batched optimal-transport problem per modality pair
# and training step (50 IPOT iterations over the token sets of every sample), so its price is
# the OT solve plus the cosine cost matrix and their backward pass. Two benchmark scripts measure
# it (see `benchmarks/README.md`, which also gives the commands for the GPU runs):
#
# - `bench_ipot.py`: one batched IPOT solve at ViLT-B/32's shapes: the reference PyTorch loop,
#   `torch.compile` of it, the fused Triton kernel (CUDA only) and POT's exact solver;
# - `bench_step.py`: one full training step (forward, loss, backward, AdamW), baseline and WMA,
#   transformers' ViLT and ours.
#
# This chapter reads whatever result files are in `benchmarks/results/` and shows each with the
# machine it was measured on. It runs nothing itself: timings taken while the book's training
# runs share the machine would not mean much.

# %% tags=["parameters"]
scale: str = "default"  # "smoke" | "default" | "paper": not used here (the benchmarks run separately)
results_glob: str = "benchmarks/results/*.json"  # benchmark result files, relative to the repository root

# %% tags=["hide-input"]
import json

import numpy as np
import pandas as pd
from IPython.display import Markdown, display
from myst_nb import glue

from wma_core import figures
from wma_core.experiments import ROOT, results_dir

NB = "09_performance"
publish = figures.Publisher(NB)
files = sorted(ROOT.glob(results_glob))
results = {}
for f in files:
    try:
        results[f.name] = json.loads(f.read_text())
    except (OSError, json.JSONDecodeError) as err:
        print(f"skipped {f.name}: {err}")


def machine_text(r):
    m = r.get("machine", {})
    dev = m.get("gpu") or f"{m.get('cpu', '?')} CPU, {m.get('cpu_count', '?')} cores"
    load = m.get("loadavg_1_5_15")
    return dev + (f" (load {load[0]:.1f} at start)" if load else "")


overview = pd.DataFrame([{
    "file": name, "benchmark": r.get("benchmark"), "measured on": r.get("measured_on", r.get("device")),
    "machine": machine_text(r), "torch": r.get("machine", {}).get("torch"),
    "shape": ", ".join(f"{k}={v}" for k, v in (r.get("shape") or {}).items() if not isinstance(v, (dict, list)))[:120],
    "dtype": r.get("dtype", "fp32"), "timing": (r.get("timing") or {}).get("clock"),
} for name, r in results.items()])
n_gpu = int((overview["measured on"] == "gpu").sum()) if len(overview) else 0
status = (f"{len(results)} result files, {n_gpu} of them measured on a GPU." if n_gpu else
          f"{len(results)} result files, **none measured on a GPU: no GPU numbers exist yet.** The files below "
          "come from a CPU machine; they show how the scripts behave and orders of magnitude, not the GPU speed "
          "the fused kernel was written for. `benchmarks/README.md` lists the commands to run on a GPU; their "
          "files will appear here on the next build.")
glue("gpu_status", status.replace("**", ""), display=False)
display(Markdown(status))
if len(overview):
    display(figures.show_table(overview, caption="Benchmark result files"))

# %% [markdown]
# ## One batched IPOT solve
#
# Median time per call of each method (the machine of each file is in the table above).
# `speedup vs eager` compares with the reference loop on the same machine; the relative error is
# that of the distance against the exact EMD.

# %%
rows = []
for name, r in results.items():
    if r.get("benchmark") != "ipot":
        continue
    err = r.get("rel_err_vs_emd") or {}
    for method, v in (r.get("methods") or {}).items():
        if not isinstance(v, dict):
            continue
        rows.append({"file": name, "method": method, "ms": v.get("ms"),
                     "speedup vs eager": v.get("speedup_vs_eager"), "compile s": v.get("compile_s"),
                     "rel. error vs EMD (mean)": (err.get(method) or {}).get("mean"), "error": v.get("error")})
ipot_df = pd.DataFrame(rows)
if len(ipot_df):
    if ipot_df["error"].isna().all():
        ipot_df = ipot_df.drop(columns=["error"])
    display(figures.show_table(ipot_df, caption="Batched IPOT solve (ViLT-B/32 shapes), median ms per call", precision=3))
else:
    print("no IPOT benchmark files")

# %% tags=["hide-input", "remove-output"]
if len(ipot_df) and ipot_df["ms"].notna().any():
    labels = [f"{m}  [{f.removesuffix('.json')}]" for m, f in zip(ipot_df["method"], ipot_df["file"])]
    colors = ["#1f77b4" if "gpu" in str(results[f].get("measured_on")) else "#7f7f7f" for f in ipot_df["file"]]
    fig = figures.timing_bars(labels, ipot_df["ms"], colors, unit="call", legend="grey: CPU, blue: GPU")
else:
    fig = figures.placeholder("no IPOT benchmark results")
publish(fig, "fig_ipot")

# %% [markdown]
# ```{glue:figure} fig_ipot
# :name: fig-perf-ipot
#
# Time of one batched IPOT solve per method and result file. Each file's machine is in the first
# table.
# ```
#
# ## One training step
#
# Forward, loss, backward and optimiser step of the whole model, with the task loss only
# (`baseline`) and with the WMA regulariser (`wma`), for transformers' ViLT and for ours. The WMA
# overhead is the ratio of the two; MFU is reported only where a peak throughput is known for the
# device.

# %%
rows, overhead = [], []
for name, r in results.items():
    if r.get("benchmark") != "train_step":
        continue
    for key, v in (r.get("results") or {}).items():
        if not isinstance(v, dict):
            continue
        rows.append({"file": name, "config": r.get("config"), "dtype": r.get("dtype"), "compile": r.get("compile"),
                     "batch": (r.get("shape") or {}).get("batch"), "impl/loss": key, "ms": v.get("ms"),
                     "samples/s": v.get("samples_per_s"), "first step s": v.get("first_step_s"),
                     "peak MiB": v.get("peak_mem_mb", np.nan),
                     "MFU": v.get("mfu")})
    for impl, ratio in (r.get("wma_over_baseline_time") or {}).items():
        overhead.append({"file": name, "config": r.get("config"), "implementation": impl,
                         "WMA step time / baseline step time": ratio})
step_df = pd.DataFrame(rows)
if len(step_df):
    step_df = step_df.dropna(axis=1, how="all")
    display(figures.show_table(step_df, caption="One training step, median over repeats"))
    display(figures.show_table(pd.DataFrame(overhead), caption="The regulariser's overhead per training step"))
else:
    print("no training-step benchmark files")

# %% tags=["hide-input", "remove-output"]
if len(step_df) and step_df["ms"].notna().any():
    labels = [f"{k}  [{f.removesuffix('.json')}]" for k, f in zip(step_df["impl/loss"], step_df["file"])]
    colors = [figures.COLORS["wma"] if k.endswith("wma") else figures.COLORS["baseline"] for k in step_df["impl/loss"]]
    fig = figures.timing_bars(labels, step_df["ms"], colors, unit="training step", legend="blue: with WMA")
else:
    fig = figures.placeholder("no training-step benchmark results")
publish(fig, "fig_step")

# %% [markdown]
# ```{glue:figure} fig_step
# :name: fig-perf-step
#
# Time of one training step per implementation and loss, per result file.
# ```
#
# ## Other benchmarks
#
# Result files of other benchmarks (for instance the data loader's) are listed with their scalar
# results as they are.

# %%
known = {"ipot", "train_step"}
for name, r in results.items():
    if r.get("benchmark") in known:
        continue
    flat = {}
    for k, v in r.items():
        if k in ("machine", "benchmark"):
            continue
        if isinstance(v, dict):
            flat.update({f"{k}.{kk}": vv for kk, vv in v.items() if not isinstance(vv, (dict, list))})
        elif not isinstance(v, list):
            flat[k] = v
    table = pd.DataFrame({"result": list(flat), "value": [str(v) for v in flat.values()]})
    display(figures.show_table(table, caption=f"{name}: benchmark '{r.get('benchmark')}' on {machine_text(r)}"))
if all(r.get("benchmark") in known for r in results.values()):
    print("no other benchmark files")

# %% [markdown]
# ## Training throughput of this book's runs
#
# Every training record also stores its own timings and the machine it ran on. These are the
# runs of this build (synthetic twins and the tiny model at the default scale), measured while
# other runs shared the machine, so read them as what the book cost, not as benchmarks.

# %%
rows = []
for p in sorted((results_dir() / "records").glob("*.json")):
    rec = json.loads(p.read_text())
    c, t = rec["config"], rec.get("timings") or {}
    rows.append({"dataset": c["dataset"], "model": c["model"], "method": c["method"], "batch": c["batch_size"],
                 "machine": (rec.get("environment") or {}).get("machine"), "train s": t.get("train_seconds"),
                 "samples/s": t.get("train_samples_per_second")})
runs_t = pd.DataFrame(rows)
if len(runs_t):
    summary = (runs_t.groupby(["dataset", "model", "batch", "machine", "method"], dropna=False)
               .agg(runs=("samples/s", "size"), samples_per_s=("samples/s", "median"), train_s=("train s", "median"))
               .reset_index().rename(columns={"samples_per_s": "median samples/s", "train_s": "median train s"}))
    display(figures.show_table(summary, caption="Training runs in the results store: median throughput", precision=1))
else:
    print("the results store holds no runs yet")
