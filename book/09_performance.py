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
# What WMA costs. The regulariser solves one batched optimal-transport problem per training step
# (50 IPOT iterations over the token sets of every sample; the three pairs of a three-modality
# task in one batch), so its price is the OT solve plus the cosine cost matrix and their backward
# pass. Two benchmark scripts measure it (see `benchmarks/README.md`, which also gives the
# commands for the GPU runs):
#
# - `bench_ipot.py`: one batched IPOT solve at ViLT-B/32's shapes: the reference PyTorch loop,
#   `torch.compile` of it, the fused Triton kernel (CUDA only) and POT's exact solver;
# - `bench_step.py`: one full training step (forward, loss, backward, AdamW), baseline and WMA,
#   transformers' ViLT and ours.
#
# A third, `bench_ragged.py`, times the step on a batch of images of different shapes, with each
# sample's valid patches packed first against the padded grid (under "Other benchmarks").
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

from wma_study import budget, figures
from wma_study.experiments import ROOT, data_home, results_dir
from wma_core.store import ResultsStore

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
# ## Where this build's CPU time went
#
# The whole default book is a budget of CPU-seconds. Every training run records its own clock
# (seconds in training steps, in the per-epoch dev evaluations and in the test cases), its
# samples and steps, and a dense FLOP estimate (6 N T per training sample, 2 N T per evaluated
# sample, N the parameters outside the embedding tables, T the sequence length). The build
# trains every run in its sweep step before any notebook starts, so a chapter's time below is
# what it takes to read its records and draw; the sweep step's wall time and the time per kind
# of run are on the {doc}`build_info` page. Chapter times come from the executed notebooks of
# this build, pretraining from its checkpoint folders (`wma_study.budget` reads them all). These are the runs of this build (synthetic twins
# and the tiny model at the default scale), measured while other runs shared the machine, so
# read them as what the book cost, not as benchmarks. Seconds are per process: runs that
# trained side by side add up to more than the wall time.

# %%
chapters = budget.chapter_seconds(figures.build_dir())
if len(chapters):
    display(figures.show_table(chapters, caption="Wall time per chapter (s)", precision=0))
else:
    print("no executed chapters in this build folder yet")
pre = budget.pretraining_seconds(data_home())
if len(pre):
    display(figures.show_table(pre, caption="Pretraining (s, per checkpoint folder)", precision=0))
else:
    print("no pretraining checkpoint in the data folder")
runs = budget.runs_frame(ResultsStore(results_dir()).records())
glue("n_runs", len(runs), display=False)
if len(runs):
    per = (runs.groupby(["dataset", "method"], dropna=False)
           .agg(runs=("total_s", "size"), train_s=("train_s", "sum"), dev_eval_s=("dev_eval_s", "sum"),
                test_s=("test_s", "sum"), total_s=("total_s", "sum"), median_run_s=("total_s", "median"),
                train_samples_per_s=("train_samples_per_s", "median"), eval_samples_per_s=("eval_samples_per_s", "median"))
           .reset_index())
    display(figures.show_table(per, caption="Training runs per dataset and method: process-seconds (sums) and median "
                               "throughput per process (samples/s)", precision=1))
    tot = runs[["train_s", "dev_eval_s", "test_s"]].sum()
    share = tot / tot.sum() if tot.sum() > 0 else tot
    glue("train_share", f"{100 * share['train_s']:.0f}%", display=False)
    display(Markdown(
        f"**{len(runs)} runs, {tot.sum():.0f} process-seconds**: {tot['train_s']:.0f} s training steps "
        f"({100 * share['train_s']:.0f}%), {tot['dev_eval_s']:.0f} s dev evaluations ({100 * share['dev_eval_s']:.0f}%), "
        f"{tot['test_s']:.0f} s test cases ({100 * share['test_s']:.0f}%)"
        + (f"; pretraining {pre[['corpus_s', 'train_s', 'eval_s']].sum().sum():.0f} s." if len(pre) else ".")))
else:
    print("the results store holds no runs yet")

# %% tags=["hide-input", "remove-output"]
if len(runs) and runs["total_s"].notna().any():
    fig = budget.time_bars(per, colors=(figures.COLORS["baseline"], "#9ecae1", "#fdae6b"))
else:
    fig = figures.placeholder("no training records with timings")
publish(fig, "fig_budget")

# %% [markdown]
# ```{glue:figure} fig_budget
# :name: fig-perf-budget
#
# Process-seconds of this build's training runs per dataset and method, split into training
# steps, the per-epoch dev evaluations and the test cases of the best checkpoint.
# ```
#
# ## Achieved rate against the machine's own
#
# The same records give the achieved FLOP/s of each run. The machine's rate is the reference
# GEMM of the training-step benchmark (a square fp32 matrix product at its thread count); a run
# with one thread can reach at most about its per-thread share.

# %%
rate = budget.machine_rate(results)
if len(runs) and runs["train_gflops_per_s"].notna().any():
    ach = (runs.groupby(["dataset", "threads"], dropna=False)
           .agg(runs=("train_s", "size"), train_samples_per_s=("train_samples_per_s", "median"),
                train_gflops_per_s=("train_gflops_per_s", "median"), eval_samples_per_s=("eval_samples_per_s", "median"),
                eval_gflops_per_s=("eval_gflops_per_s", "median"))
           .reset_index())
    # a forward pass is about a third of a training step's work: ideally about 3x the samples/s
    ach["eval / train samples/s"] = ach["eval_samples_per_s"] / ach["train_samples_per_s"]
    if rate:
        per_thread = rate["gflops_per_s"] / max(1, int(rate["threads"] or 1))
        ach["share of GEMM rate per thread"] = ach["train_gflops_per_s"] / (per_thread * ach["threads"].fillna(1))
    display(figures.show_table(ach, caption="Achieved throughput per process (medians over runs)", precision=2))
    if rate:
        display(Markdown(f"Reference GEMM: {rate['gflops_per_s']:.0f} GFLOP/s with {rate['threads']} threads on "
                         f"{rate['cpu']} (`{rate['file']}`)" + ("" if rate["same_cpu"] else
                         "; measured by the benchmark, which may have run on another machine than this build") + "."))
    else:
        print("no benchmark file with a reference GEMM: run benchmarks/bench_step.py")
else:
    print("no training records with FLOP estimates yet")
