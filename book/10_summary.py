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
# # Summary: what reproduced, and what our experiment can say
#
# Every claim of the paper we test, with our verdict, the evidence and the scale it was measured
# at. The verdicts use one fixed vocabulary, defined before any run was read (the dataset
# chapters declare the primary endpoints):
#
# - **detected**: our 95% interval excludes 0 in the paper's direction (*detected (opposite
#   sign)*: in the other direction);
# - **ruled out at the paper's size**: our interval contains 0 and ends before the paper's gain;
# - **inconclusive**: neither, with the reason, usually that our minimum detectable effect (MDE,
#   80% power) exceeds the paper's gain;
# - **collapsed run**: a run predicts one output for every test sample, a failed fit that measures
#   nothing about the method; **never left the prior**: the one output each such run predicts is
#   the label prior of the training split (it learned nothing from the inputs).
#
# This page trains nothing: it reads the runs the chapters stored (same prepared data, same code).
# A verdict is a statement about *our* experiment at its scale. With the default parameters that
# is a synthetic twin of each dataset and a miniature ViLT on a CPU, so a verdict there tests the
# method's mechanics on a task of the same shape, not the paper's numbers.

# %% tags=["parameters"]
from typing import Optional  # papermill reads Optional[...] annotations (not "X | None")

scale: str = "default"  # "smoke" | "default" | "paper": the experiment's size (wma_study.experiments.PROFILES)
data_roots: Optional[dict] = None  # {dataset: raw folder} (needed at scale "paper"); None: the synthetic twins
model: Optional[str] = None  # None: the profile's; the model the chapters ran (its tokenizer prepared the data)

# %% tags=["hide-input"]
import pandas as pd
from IPython.display import display
from myst_nb import glue

from wma_study import chapters, figures, paper_grids, report
from wma_study.experiments import DATASETS, PAPER_SELECTED, chapter_selection, get_profile, model_identities, prepare_data, results_dir
from wma_core.record import code_digest

NB = "10_summary"
publish = figures.Publisher(NB)
profile = get_profile(scale)
runs = {}
backbones = model_identities(model, scale)  # one per replicated backbone of the pretrained miniature
for ds in DATASETS:
    data_dir = prepare_data(ds, scale, (data_roots or {}).get(ds), model=model)
    # these backbones' runs only: UR-FUNNY's and MOSEI's prepared data do not depend on the model,
    # so the random-initialisation baselines of the pretraining chapter share their folder
    runs[ds] = report.runs_frame(results_dir(), data_dir=data_dir, code=code_digest(), model=backbones)
n_bb = len(backbones)
scale_text = (f"{scale} scale, model {model or profile.model}, {len(profile.seeds)} seeds per method"
              + (f" nested in {n_bb} backbones" if n_bb > 1 else ""))
print(scale_text, {ds: r["key"].nunique() for ds, r in runs.items()})


# %% tags=["hide-input"]
def wma_of(ds):
    a, b = chapter_selection(ds, scale)  # the dataset chapter's WMA
    return {"method": "wma", "alpha": a, "beta": b, "target": "init"}


ep1 = {ds: report.endpoints(r, ds, a={"method": "baseline"}, b=wma_of(ds), paper_table=1) for ds, r in runs.items() if len(r)}
ep2 = {ds: report.endpoints(r, ds, a={"method": "min_ot"}, b=wma_of(ds), paper_table=2) for ds, r in runs.items() if len(r)}
t1 = chapters.claim_rows(ep1, "WMA beats the baseline", table=1)
t2 = chapters.claim_rows(ep2, "WMA beats minimise-OT", table=2)
ep3 = {ds: report.endpoints(r, ds, a={"method": "l2sp"}, b=wma_of(ds), paper_table=1) for ds, r in runs.items()
       if len(r) and (r["method"] == "l2sp").any()}
t3 = chapters.claim_rows(ep3, "WMA beats L2-SP", table=0)
avg = chapters.pooled_claims(report.pooled(ep1))

# %% [markdown]
# ## The claims of Table 1: WMA against the baseline
#
# Four datasets times three primary endpoints (normal; mean over the noise cases; mean over the
# missing-modality cases). Gains are seed-paired, positive = WMA better (MOSEI's MAE flipped).

# %% tags=["hide-input"]
display(figures.claims_table(t1, f"Table 1 claims: WMA vs the baseline, primary endpoints ({scale_text})"))

# %% [markdown]
# Evidence: the Table 1 sections of {doc}`02_hateful_memes`, {doc}`03_mmimdb`,
# {doc}`04_ur_funny` and {doc}`05_mosei` (tables per endpoint and per test case, and their
# figures).
#
# ## Table 2: WMA beats minimise-OT

# %% tags=["hide-input"]
display(figures.claims_table(t2, f"Table 2 claims: WMA vs minimise OT (α = 1, β = 0), primary endpoints ({scale_text})"))

# %% [markdown]
# Evidence: the Table 2 sections of the dataset chapters and {doc}`06_ablation`.
#
# ## WMA against L2-SP: keeping the alignment, or staying near the start?
#
# A regulariser that keeps the fine-tuned network near its starting weights also keeps its OT
# distance near $D_0$. L2-SP, $(\lambda/2)\,\lVert\theta-\theta_0\rVert^2$ over the backbone, does only
# that, at a strength chosen on its own dev runs (the pre-registration below). Where WMA beats the
# baseline but not L2-SP, our runs cannot tell WMA's alignment term from a pull towards the start.
# The paper has no such control, so there is no paper gain to compare with: the verdict says
# whether our interval excludes zero.

# %% tags=["hide-input"]
if len(t3):
    display(figures.claims_table(t3, f"WMA vs L2-SP, primary endpoints ({scale_text})"))
else:
    print("No L2-SP runs: their strength is pre-registered for the synthetic twins only (python -m wma_study.l2sp).")
#
# ## The headline averages: 0.9%, 2.5% and 2.1%
#
# The paper's abstract averages its relative gains over the four datasets: 0.9% on the normal
# test, 2.5% under modality noise, 2.1% with a missing modality (its Table 1 gives 0.7, 1.3, 1.0
# and 0.7% on the normal test). We pool our relative gains the same way, weighting each dataset by
# its precision (random effects); a dataset with a collapsed run is left out and named.

# %% tags=["hide-input"]
display(figures.claims_table(avg, f"The paper's headline averages: relative gain of WMA over the baseline, pooled over datasets ({scale_text})"))

# %% [markdown]
# ## Fig. 2: a task-dependent β
#
# The paper's Fig. 2 and Tables 3-6 say the best amount of alignment depends on the task (β = 2 on
# Hateful Memes, β = 0.2 on MM-IMDb). A best cell is only evidence for that if it stands out from
# what choosing the best of K cells gives when no cell differs (the selection null of
# {doc}`07_beta_curve`). Our verdict here: *detected* when at least two datasets have a best cell
# above the null's 95th percentile, at different β; otherwise *inconclusive*.

# %% tags=["hide-input"]
all_runs = pd.concat([r for r in runs.values() if len(r)], ignore_index=True) if any(len(r) for r in runs.values()) else None
sel = report.selection_table(all_runs, [ds for ds in DATASETS if len(runs[ds])]) if all_runs is not None else pd.DataFrame()
paper_sum = paper_grids.grid_summary()
rows = []
for r in sel.itertuples(index=False):
    ps = paper_sum[(paper_sum["dataset"] == r.dataset) & (paper_sum["test_case"] == "normal")].iloc[0]
    rows.append({"dataset": figures.DATASET_LABELS[r.dataset], "our best cell (test)": r.selected_test,
                 "its gain": r.selected_gain_test, "selection null 95th pct": r.null_q95,
                 "above the null": bool(r.null_q95 == r.null_q95 and r.selected_gain_test > r.null_q95),
                 "paper's cell": "α={:g}, β={:g}".format(*PAPER_SELECTED[r.dataset]), "paper's gain": ps["selected_gain"],
                 "paper: median cell": ps["median_gain"], "paper: cells above baseline": f"{ps['share_above']:.0%}"})
fig2 = pd.DataFrame(rows)
standing = fig2[fig2["above the null"]] if len(fig2) else fig2
betas = {c.split("β=")[-1] for c in standing["our best cell (test)"]} if len(standing) else set()
if len(fig2) == 0:
    fig2_verdict = "inconclusive (no grid runs at this scale)"
elif len(standing) >= 2 and len(betas) >= 2:
    fig2_verdict = "detected"
else:
    fig2_verdict = "inconclusive (best-of-K gains within the selection null)"
if len(fig2):
    display(figures.show_table(fig2, caption="Fig. 2: the best cell of each grid against the selection null, ours and the paper's"))
glue("fig2_verdict", fig2_verdict, display=False)

# %% [markdown]
# Verdict on the task-dependent β: **{glue:text}`fig2_verdict`**. The paper's own grids already
# temper the claim: on Hateful Memes' normal test only 18% of its 56 cells beat its baseline and
# the median cell is 0.005 below it (the paper's-grid section of {doc}`07_beta_curve`).
#
# ## All claims at a glance

# %% tags=["hide-input", "remove-output"]
every = pd.concat([t1, t2, t3, avg], ignore_index=True)
every = every[every["verdict"].notna()]
publish(figures.claims_figure(every, title="Every claim: our gain (95% CI) and the paper's"), "fig_claims")
first_word = every["verdict"].map(report.verdict_category).str.split(" ").str[0]  # detected (either sign), ruled, ...
for w in ("detected", "ruled", "inconclusive", "collapsed", "never"):
    glue("n_" + w, str(int((first_word == w).sum())), display=False)
glue("n_claims", str(len(every) + 1), display=False)

# %% [markdown]
# ```{glue:figure} fig_claims
# :name: fig-summary-claims
#
# Every claim of Tables 1 and 2, of the L2-SP control and the headline averages: our gain with its 95% interval (marker
# shape = verdict) and the paper's gain (black ×).
# ```
#
# Of the {glue:text}`n_claims` claims (counting Fig. 2), verdicts on the primary endpoints and
# averages: {glue:text}`n_detected` detected (in either direction), {glue:text}`n_ruled` ruled out
# at the paper's size, {glue:text}`n_inconclusive` inconclusive, {glue:text}`n_collapsed`
# collapsed and {glue:text}`n_never` with runs that never left the prior.
#
# ## What was easy and what was hard to reproduce
#
# Easy:
#
# - **The method is short.** Eq. 9 is a squared distance between a batch's OT distances and a
#   fixed target, with IPOT as in ViLT's own word-patch alignment: a few dozen lines on top of a
#   ViLT fine-tuning loop ({doc}`01_method`).
# - **The paper prints its whole search.** Tables 3-6 give every grid cell, so the selection can
#   be analysed without training anything ({doc}`07_beta_curve`).
#
# Hard:
#
# - **No code released.** Every detail the text leaves open (which tokens enter the OT, the
#   argument order of IPOT, where a missing modality is zeroed, how noise is added) had to be
#   decided; the decisions are in {doc}`01_method` and the design brief.
# - **Eq. 9 against the text.** The text says the target is β times the mean D of the first batch
#   at initialisation; Eq. 9, read literally, uses the current batch. We default to the text and
#   compare both in {doc}`06_ablation`.
# - **Unreachable β values.** The cosine cost lies in [0, 2], so a target β·D0 above 2 cannot be
#   reached; several of the paper's grid cells (β up to 10) ask for that. Such cells are flagged
#   in {doc}`07_beta_curve`.
# - **Swapped columns.** MOSEI's Table 1 WMA row prints the selected Table 6 cell with its
#   text-missing and video-missing values swapped; those two cases are left out of the grid
#   analysis (the mean over missing cases is unaffected).
# - **25 vs 23 MM-IMDb genres.** The paper says 25 genres; every public code base keeps 23. We use
#   23 and make the genre set a parameter ({doc}`03_mmimdb`).
# - **Selection on the test set.** The reported (α, β) is the best cell of the test-set grid, and
#   one seed per cell: the selection null shows how much of such a gain selection alone explains.
#
# ## The pre-registration
#
# Every choice that could tilt a verdict (the world and its sizes, the pretraining and
# fine-tuning recipes, how α is scaled to the miniature, the noise amplitudes) is written in one
# committed file, `book/data/preregistration.json`, chosen on baseline runs and the pretraining
# corpus only, before any WMA run was read. Each run record carries the digest of the file it was
# made under; the second table counts this page's runs by that digest.

# %% tags=["hide-input"]
from wma_study import preregistration as prereg
from wma_core.store import ResultsStore

store = ResultsStore(results_dir())
page_records = [store.get(k) for frame in runs.values() for k in frame["key"].unique()]
display(figures.show_table(prereg.table(), caption=f"Pre-registered choices (book/data/preregistration.json, digest {prereg.digest()})"))
display(figures.show_table(prereg.check_records([r for r in page_records if r is not None]),
                           caption="This page's runs by the pre-registration they were made under"))
