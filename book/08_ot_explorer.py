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
# # OT explorer
#
# What does β actually do to the modalities inside the transformer? Every training run of the
# β-curve grid recorded D0 (the mean OT distance of each modality pair on the first training batch
# before any update), the mean D per epoch on the training batches and the dev set, and the OT
# distance of every test sample under every test case. This page lets you move through the grid
# (dataset, α, β) and see, for one run at a time:
#
# 1. the per-sample OT distance on the unperturbed test set against D0 and the target β·D0;
# 2. the mean OT distance over the training epochs against the target;
# 3. the headline metric per test case, beside the baseline's.
#
# The runs are those of the β-curve chapter: this notebook calls the same configurations, so it
# reuses their records (or trains them, if that chapter has not run yet).

# %% tags=["parameters"]
from typing import Optional  # papermill reads Optional[...] annotations (not "X | None")

scale: str = "default"  # "smoke" | "default" | "paper": the experiment's size (wma_study.experiments.PROFILES)
data_roots: Optional[dict] = None  # {dataset: raw folder} (needed at scale "paper"); None: the synthetic twins
datasets: Optional[list] = None  # datasets to explore (None: all four)
alphas: Optional[list] = None  # α grid, α 0 is the baseline (None: the profile's alpha_grid, as the β-curve chapter)
betas: Optional[list] = None  # β grid (None: the profile's beta_grid, as the β-curve chapter)
seed: Optional[int] = None  # which training seed to show (None: the profile's first grid seed)
model: Optional[str] = None  # None: the profile's; "tiny", a local folder written by save_pretrained (weights + tokenizer) or a hub name; its tokenizer prepares the data
device: Optional[str] = None  # "cpu" | "cuda" | "auto" (None: the profile's)
lr: Optional[float] = None  # peak learning rate (None: the profile's)
epochs: Optional[int] = None  # maximum epochs (None: the profile's)
max_train_samples: Optional[int] = None  # train on the first N training samples only (None: all, the profile's)
executor: str = "ray"  # "ray" | "local": how missing training runs are executed
address: Optional[str] = None  # an existing Ray cluster to join (None: $RAY_ADDRESS, else a local instance)
dpi: int = 76  # resolution of the pre-rendered views embedded in the static page (about 720 px wide)
live: Optional[bool] = None  # the live ipywidgets view. None: only in an interactive session (JupyterLab), not under papermill; True/False force it

# %%
import base64

import matplotlib.pyplot as plt
from IPython.display import HTML, display

from wma_study import figures, plan
from wma_study.experiments import DATASETS, get_profile, results_dir
from wma_study.sweep import run_trials

NB = "08_ot_explorer"
publish = figures.Publisher(NB)
profile = get_profile(scale)
datasets = list(datasets or DATASETS)
alphas = [float(a) for a in (profile.alpha_grid if alphas is None else alphas)]
betas = [float(b) for b in (profile.beta_grid if betas is None else betas)]
seed = profile.grid_seeds[0] if seed is None else seed

configs = plan.explorer_runs(scale, data_roots, datasets=datasets, alphas=alphas, betas=betas, seed=seed, model=model,
                             lr=lr, epochs=epochs, device=device, max_train_samples=max_train_samples)
records = run_trials(configs, results_dir(), executor=executor, address=address, progress=False)
# (dataset, α, β) -> record; the baseline (α = 0) is filed under every β
by_cell = {}
for r in records:
    c = r["config"]
    for b in (betas if c["alpha"] == 0 else [c["beta"]]):
        by_cell[(c["dataset"], c["alpha"], b)] = r
print(f"{len(records)} runs across {len(datasets)} datasets")

# %% [markdown]
# ## OT distance against β
#
# Before exploring single runs: where did each run's modalities end up? For every grid cell, the
# mean test OT distance relative to D0, against β. A run that reached its target would sit on the
# dashed diagonal (D / D0 = β); the baseline shows where the task alone takes the distance.

# %% tags=["hide-input", "remove-output"]
publish(figures.d_vs_beta(records, title="Mean test OT distance / D0 against β (normal test case)"), "fig_d_vs_beta")

# %% [markdown]
# ```{glue:figure} fig_d_vs_beta
# :name: fig-explorer-d-vs-beta
#
# Mean OT distance on the unperturbed test set relative to D0, per dataset, against β, one line
# per α (marker and line style differ by α). Dotted: WMA's target β·D0; grey: the baseline;
# β = 0 is minimise-OT. The runs are those of the table below, which gives each run's key in the
# results store.
# ```
#
# The same numbers per run, with each run's headline metric on the unperturbed test set:

# %%
display(figures.show_table(figures.distance_table(records), caption="Where each run's OT distances ended (test set, normal)"))

# %% [markdown]
#
# ## Explore one run at a time
#
# Choose a dataset and move the α and β sliders. α = 0 is the baseline (β has no effect there).
# Top left: the per-sample OT distance on the test set, per modality pair, with D0 (dashed) and
# β·D0 (dotted). Top right: the mean D over the epochs (solid: dev set, dashed: training batches)
# and the target. Bottom: the headline metric per test case, the run beside the baseline. A link
# can open a given view, e.g. `08_ot_explorer.html#wma-explorer=mmimdb,1,2`.
#
# Every combination is pre-rendered below, so the sliders work in the static book without a
# Python kernel. In JupyterLab, a live ipywidgets version follows, redrawn from the records. It
# appears only in an interactive session (the `live` parameter): a notebook runner such as
# papermill has no widget frontend, and a page carrying widget state would have to load a widget
# manager from the network. The book is built with `live=False`.

# %%
images = {}
for (ds, a, b), rec in by_cell.items():
    if a == 0 and b != betas[0]:
        continue  # the baseline is stored once, under the first β
    base = by_cell.get((ds, 0.0, betas[0]))
    # drawn once per pair of records: a rebuild from the same records reads the PNG back
    png = figures.cached_png({"explorer": rec["key"], "baseline": base["key"] if base else None},
                             lambda: figures.explorer_panels(rec, base), dpi=dpi)
    images[figures.image_key(ds, a, b)] = base64.b64encode(png).decode("ascii")
display(HTML(figures.slider_html(images, datasets, {ds: alphas for ds in datasets}, {ds: betas for ds in datasets})))

# %% tags=["hide-input", "remove-output"]
import io  # noqa: E402

import ipywidgets as widgets  # noqa: E402
from IPython import get_ipython  # noqa: E402

if live is None:  # an interactive frontend lets the kernel ask for input; papermill and nbclient do not
    kernel = getattr(get_ipython(), "kernel", None)
    live = bool(kernel is not None and kernel.get_parent().get("content", {}).get("allow_stdin"))

if live:
    w_ds = widgets.Dropdown(options=[(figures.DATASET_LABELS[d], d) for d in datasets], description="dataset")
    w_a = widgets.SelectionSlider(options=alphas, description="α")
    w_b = widgets.SelectionSlider(options=betas, description="β")
    w_note = widgets.Label()
    w_img = widgets.Image(format="png")  # an image, not an Output widget: nothing is captured from the kernel

    def redraw(*_):
        rec = by_cell.get((w_ds.value, w_a.value, w_b.value))
        w_note.value = "" if rec is not None else "no run for this cell"
        if rec is None:
            return
        fig = figures.explorer_panels(rec, by_cell.get((w_ds.value, 0.0, betas[0])))
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
        plt.close(fig)
        w_img.value = buf.getvalue()

    for w in (w_ds, w_a, w_b):
        w.observe(redraw, names="value")
    redraw()
    display(widgets.VBox([widgets.HBox([w_ds, w_a, w_b]), w_note, w_img]))
else:
    print("live widgets off: the static view above shows every run")
