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
# # Ablations: minimise OT, and which target
#
# Two questions about the regulariser itself, on every dataset:
#
# 1. **Minimise OT vs WMA** (the paper's Table 2). Is it the *target* β·D0 that helps, or would
#    simply pulling the modalities together (α = 1, β = 0, the usual alignment objective) do as
#    well? The paper reports that WMA beats minimise-OT in most test cases.
# 2. **Which basis for the target** (our extension). The paper's text says the target is β times
#    the mean D of the first batch at initialisation (`target="init"`, what every other chapter
#    uses); its Eq. 9, read literally, uses the current batch's mean (`target="batch"`). The
#    method chapter showed on a toy that the batch reading drifts unless β = 1; here we measure it
#    on the real training runs, at each dataset's selected (α, β).
#
# The baseline, WMA and minimise-OT runs are the dataset chapters' own (same configurations, so
# the records are reused); only the batch-target runs are new.

# %% tags=["parameters"]
from typing import Optional  # papermill reads Optional[...] annotations (not "X | None")

scale: str = "default"  # "smoke" | "default" | "paper": the experiment's size (wma_study.experiments.PROFILES)
data_roots: Optional[dict] = None  # {dataset: raw folder} (needed at scale "paper"); None: the synthetic twins
datasets: Optional[list] = None  # datasets to run (None: all four)
min_ot_alpha: float = 1.0  # α of the minimise-OT ablation (run with β 0), as in the paper's Table 2
seeds: Optional[list] = None  # training seeds (None: the profile's)
model: Optional[str] = None  # None: the profile's; "tiny", a local folder written by save_pretrained (weights + tokenizer) or a hub name; its tokenizer prepares the data
device: Optional[str] = None  # "cpu" | "cuda" | "auto" (None: the profile's)
lr: Optional[float] = None  # peak learning rate (None: the profile's)
epochs: Optional[int] = None  # maximum epochs (None: the profile's)
max_train_samples: Optional[int] = None  # train on the first N training samples only (None: all, the profile's)
executor: str = "ray"  # "ray" | "local": how the training runs are executed
address: Optional[str] = None  # an existing Ray cluster to join (None: $RAY_ADDRESS, else a local instance)

# %%
import pandas as pd
from IPython.display import Markdown, display
from myst_nb import glue

from wma_study import figures, plan, report
from wma_study.experiments import DATASETS, chapter_selection, results_dir
from wma_study.sweep import run_trials

NB = "06_ablation"
publish = figures.Publisher(NB)
datasets = list(datasets or DATASETS)
configs = plan.ablation_runs(scale, data_roots, datasets=datasets, min_ot_alpha=min_ot_alpha, model=model, seeds=seeds,
                             lr=lr, epochs=epochs, device=device, max_train_samples=max_train_samples)
records = run_trials(configs, results_dir(), executor=executor, address=address, progress=False)
runs = report.records_frame(records, results_dir())
print(f"{len(records)} runs over {len(datasets)} datasets")

# %% [markdown]
# ## Table 2: minimise OT vs WMA, every dataset
#
# Ours (mean over seeds, 95% CI, seed-paired gain) beside the paper's single numbers. A positive
# gain means WMA is better than minimising the OT distance.

# %%
t2 = []
for ds in datasets:
    a, b = chapter_selection(ds, scale)  # the dataset chapter's WMA
    cmp = report.comparison(runs, ds, a={"method": "min_ot"}, b={"method": "wma", "alpha": a, "beta": b, "target": "init"}, paper_table=2)
    t2.append(cmp.assign(dataset=ds))
t2 = pd.concat(t2, ignore_index=True)
display(figures.comparison_table(t2, a_label="min-OT", b_label="WMA", dataset_column=True,
                                 caption="Table 2: minimise OT (α=1, β=0) vs WMA at each dataset's (α, β)"))
live = t2[(t2["collapsed_a"] + t2["collapsed_b"]) == 0]  # a collapsed run is neither a win nor a loss
ours_w, paper_w = live["diff_mean"].dropna(), t2["paper_gain"].dropna()
glue("t2_wins", f"{int((ours_w > 0).sum())} of {len(ours_w)}", display=False)
glue("t2_paper_wins", f"{int((paper_w > 0).sum())} of {len(paper_w)}", display=False)
glue("t2_sig_wins", str(int(((live["diff_lo"] > 0)).sum())), display=False)
glue("t2_sig_losses", str(int(((live["diff_hi"] < 0)).sum())), display=False)
glue("t2_collapsed", str(int(len(t2) - len(live))), display=False)
if figures.collapse_note(t2, a_label="min-OT"):
    display(Markdown(figures.collapse_note(t2, a_label="min-OT")))

# %% [markdown]
# Across datasets and test cases, WMA's mean beats minimise-OT's in {glue:text}`t2_wins` cases in
# our runs (in the paper: {glue:text}`t2_paper_wins`). Its 95% interval lies entirely above zero in
# {glue:text}`t2_sig_wins` cases and entirely below in {glue:text}`t2_sig_losses`
# ({glue:text}`t2_collapsed` (dataset, test case) pairs with a collapsed run are left out of these
# counts). Each dataset chapter gives the verdicts on the primary endpoints of this comparison.
#
# ## Which target: first-batch D0 or the current batch mean
#
# Same α and β, two readings of Eq. 9. No paper numbers exist for the batch reading.

# %%
tm = []
for ds in datasets:
    a, b = chapter_selection(ds, scale)  # the dataset chapter's WMA
    sel = {"method": "wma", "alpha": a, "beta": b}
    cmp = report.comparison(runs, ds, a={**sel, "target": "init"}, b={**sel, "target": "batch"}, paper_table=2)
    tm.append(cmp.assign(dataset=ds))
tm = pd.concat(tm, ignore_index=True)
display(figures.comparison_table(tm, a_label="init target", b_label="batch target", paper=False, dataset_column=True,
                                 caption="WMA with the batch-mean target vs the first-batch D0 target (positive = batch better)"))
glue("tm_wins", f"{int((tm['diff_mean'].dropna() > 0).sum())} of {int(tm['diff_mean'].notna().sum())}", display=False)

# %% [markdown]
# The batch-mean target beats the first-batch target in {glue:text}`tm_wins` (dataset, test case)
# pairs. Where the two readings differ is in what they do to the OT distance, below.
#
# ## All four methods per dataset, and where their OT distances go

# %% tags=["hide-input", "remove-output"]
for ds in DATASETS:
    name = figures.DATASET_LABELS[ds]
    if ds not in datasets:
        publish(figures.placeholder(f"{name} was not part of this execution"), f"fig_methods_{ds}")
        publish(figures.placeholder(f"{name} was not part of this execution"), f"fig_targets_{ds}")
        continue
    a, b = chapter_selection(ds, scale)  # the dataset chapter's WMA
    summary = figures.method_summary(runs, ds, {
        "baseline": {"method": "baseline"},
        "minimise OT": {"method": "min_ot"},
        f"WMA α={a:g} β={b:g} (init)": {"method": "wma", "target": "init"},
        f"WMA α={a:g} β={b:g} (batch)": {"method": "wma", "target": "batch"},
    })
    publish(figures.methods_figure(summary, title=f"{name}: every method per test case (mean, 95% CI)"), f"fig_methods_{ds}")
    wma_recs = [r for r in records if r["config"]["dataset"] == ds and r["config"]["method"] in ("wma", "min_ot")]
    publish(figures.d_trajectory(wma_recs, title=f"{name}: OT distance during training, init vs batch target"), f"fig_targets_{ds}")

# %% [markdown]
# ```{glue:figure} fig_methods_hateful_memes
# :name: fig-ablation-methods-hm
#
# Hateful Memes: baseline, minimise-OT, and WMA with either target, per test case.
# ```
#
# ```{glue:figure} fig_targets_hateful_memes
# :name: fig-ablation-targets-hm
#
# Hateful Memes: mean OT distance during training for minimise-OT and WMA with both targets
# (solid: dev set; dashed: training batches; dotted: the fixed target β·D0).
# ```
#
# ```{glue:figure} fig_methods_mmimdb
# :name: fig-ablation-methods-mmimdb
#
# MM-IMDb: every method per test case.
# ```
#
# ```{glue:figure} fig_targets_mmimdb
# :name: fig-ablation-targets-mmimdb
#
# MM-IMDb: mean OT distance during training, init vs batch target.
# ```
#
# ```{glue:figure} fig_methods_ur_funny
# :name: fig-ablation-methods-urfunny
#
# UR-FUNNY: every method per test case.
# ```
#
# ```{glue:figure} fig_targets_ur_funny
# :name: fig-ablation-targets-urfunny
#
# UR-FUNNY: mean OT distance during training per modality pair, init vs batch target.
# ```
#
# ```{glue:figure} fig_methods_mosei
# :name: fig-ablation-methods-mosei
#
# CMU-MOSEI: every method per test case (MAE: lower is better).
# ```
#
# ```{glue:figure} fig_targets_mosei
# :name: fig-ablation-targets-mosei
#
# CMU-MOSEI: mean OT distance during training per modality pair, init vs batch target.
# ```
#
# What to look for: with β > 1 (Hateful Memes, MOSEI) the batch target asks every step for more
# distance than the batch has, with β < 1 (MM-IMDb, UR-FUNNY) for less, so the toy problem of the
# method chapter predicts that D drifts further under the batch target than under the fixed one,
# the more so the larger α and the longer training runs. The dashed (training-batch) curves show
# whether that happens in these runs; the bars whether it costs accuracy or robustness.
