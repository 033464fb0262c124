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
# # The method: optimal transport between modalities
#
# Wasserstein Modality Alignment (WMA) adds one term to the fine-tuning loss of a multimodal
# transformer. After the transformer, the output tokens of each modality form a point cloud
# $H^{m}$ (CLS and padding removed). The *OT distance* between the clouds of two modalities,
#
# $$D_i = \langle C, T^* \rangle, \qquad C_{pq} = 1 - \cos(h^{m_1}_p, h^{m_2}_q),$$
#
# with $T^*$ the optimal transport plan between uniform distributions on the two clouds, measures
# how far apart the modalities sit in the shared representation space. WMA does not minimise it.
# It pulls it towards a target (Eq. 9 of the paper):
#
# $$\ell = \ell_{task} + \alpha \cdot \operatorname{mean}_i \left(D_i - \beta D_0\right)^2,$$
#
# where $D_0$ is the mean D over the first training batch under the initial weights. β sets
# *where* the modalities should sit (β < 1 closer, β > 1 further apart than at the start), and
# α sets *how hard* they are pulled there against the task loss. β = 0 (with α = 1) is the
# paper's "minimise OT" ablation.
#
# This chapter builds that up on toy point clouds: the cost matrix, the plan that IPOT (the
# solver the paper uses) finds compared with the exact one, and what α and β do to the loss and
# its optimum. Everything here calls the library the training code uses:
# `wma_core.ot.ot_distance` and `wma_core.losses.WMARegulariser`.
# No model is trained; the chapter runs in seconds.

# %% tags=["parameters"]
from typing import Optional  # papermill reads Optional[...] annotations (not "X | None")

scale: str = "default"  # "smoke" | "default" | "paper": only the number of toy optimisation steps depends on it
seed: int = 0  # seed of the toy point clouds
n_x: int = 10  # points in the first cloud (think: text tokens)
n_y: int = 14  # points in the second cloud (think: image patches)
iters: int = 50  # IPOT outer iterations (the paper's and ViLT's value)
steps: Optional[int] = None  # toy optimisation steps (None: 60 at smoke scale, else 250)

# %%
import matplotlib.pyplot as plt
import numpy as np
import ot  # POT: the exact solver, used as the reference
import pandas as pd
import torch
from IPython.display import display

from wma_study import figures
from wma_core.losses import WMAConfig, WMARegulariser
from wma_core.ot import cosine_cost, ipot, ot_distance

NB = "01_method"
publish = figures.Publisher(NB)
steps = steps if steps is not None else (60 if scale == "smoke" else 250)
torch.manual_seed(seed)
rng = np.random.default_rng(seed)

# %% [markdown]
# ## Two point clouds and their cost matrix
#
# Two clouds in the plane stand for the output tokens of two modalities. The cost is the cosine
# distance used by WMA (and by ViLT's word-patch alignment): it compares *directions* only, so
# it lies in $[0, 2]$ and two tokens pointing the same way cost nothing whatever their length.


# %%
def cloud(n, angle_deg, spread_deg, rng):
    """n points around a direction (degrees), radii in [0.5, 1.5]."""
    a = np.deg2rad(angle_deg + spread_deg * rng.standard_normal(n))
    r = rng.uniform(0.5, 1.5, n)
    return np.stack([r * np.cos(a), r * np.sin(a)], axis=1).astype(np.float32)


x_np = cloud(n_x, 20, 25, rng)
y_np = cloud(n_y, 100, 35, rng)
x, y = torch.from_numpy(x_np)[None], torch.from_numpy(y_np)[None]  # [1, N, 2], [1, M, 2]
C = cosine_cost(x, y)[0]  # [N, M]

plan_ipot = ipot(C[None], iters=iters)[0].numpy()
mu, nu = np.full(n_x, 1 / n_x), np.full(n_y, 1 / n_y)
plan_exact = ot.emd(mu, nu, C.double().numpy())
d_ipot = float((C.numpy() * plan_ipot).sum())
d_exact = float(ot.emd2(mu, nu, C.double().numpy()))
print(f"D with IPOT ({iters} iterations): {d_ipot:.5f}   exact (POT emd2): {d_exact:.5f}   "
      f"relative difference {abs(d_ipot - d_exact) / d_exact:.2%}")

# %% tags=["hide-input", "remove-output"]
fig, axes = plt.subplots(1, 4, figsize=(16, 3.8))
ax = axes[0]
for p in range(n_x):
    for q in range(n_y):
        if plan_ipot[p, q] > 0.05 / max(n_x, n_y):
            ax.plot([x_np[p, 0], y_np[q, 0]], [x_np[p, 1], y_np[q, 1]], color="#888", lw=40 * plan_ipot[p, q], alpha=0.6)
ax.scatter(*x_np.T, color="#1f77b4", label="cloud x (e.g. text)", zorder=3)
ax.scatter(*y_np.T, color="#ff7f0e", label="cloud y (e.g. image)", zorder=3)
ax.scatter([0], [0], marker="+", color="black")
ax.set_aspect("equal")
ax.legend(fontsize=7, loc="lower left")
ax.set_title("the clouds and the IPOT plan (line width = mass)", fontsize=9)
for ax, mat, title in ((axes[1], C.numpy(), "cost C = 1 − cos"), (axes[2], plan_ipot, f"IPOT plan ({iters} iterations)"),
                       (axes[3], plan_exact, "exact plan (POT ot.emd)")):
    im = ax.imshow(mat, cmap="viridis", aspect="auto")
    ax.set_xlabel("y token q")
    ax.set_ylabel("x token p")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, shrink=0.8)
fig.tight_layout()
publish(fig, "fig_plan")

# %% [markdown]
# ```{glue:figure} fig_plan
# :name: fig-method-plan
#
# Two toy clouds, their cosine cost matrix, the transport plan IPOT finds and the exact plan
# (the network simplex of POT {cite:p}`flamary2021pot`). The exact plan is sparse (a vertex of the transport polytope); IPOT's
# proximal iterations approach it from the uniform plan, and its transport *cost* D converges
# much faster than the plan itself.
# ```
#
# ## How fast IPOT converges
#
# IPOT {cite:p}`xie2019ipot` is a proximal point method: each of its outer iterations solves an
# entropy-regularised problem around the previous plan with one Sinkhorn step. The paper and
# ViLT use 50 iterations and a proximal step of 0.5. Below, the distance after $k$ iterations
# against the exact EMD, on the toy clouds and on a batch of random 768-dimensional token sets
# the size of ViLT-B/32's (39 text tokens, 144 patches).

# %%
ks = [1, 2, 5, 10, 20, 50, 100, 200, 500]
rows = []
tok_x = torch.randn(8, 39, 768, generator=torch.Generator().manual_seed(seed))
tok_y = torch.randn(8, 144, 768, generator=torch.Generator().manual_seed(seed + 1)) + 0.3 * tok_x.mean(1, keepdim=True)
C_big = cosine_cost(tok_x, tok_y)
exact_big = np.array([ot.emd2(np.full(39, 1 / 39), np.full(144, 1 / 144), c.double().numpy()) for c in C_big])
for k in ks:
    d_toy = float((C * ipot(C[None], iters=k)[0]).sum())
    d_big = (C_big * ipot(C_big, iters=k)).sum(dim=(1, 2)).numpy()
    rows.append({"iterations": k, "toy: |D − EMD| / EMD": abs(d_toy - d_exact) / d_exact,
                 "ViLT-sized: mean |D − EMD| / EMD": float(np.mean(np.abs(d_big - exact_big) / exact_big))})
conv = pd.DataFrame(rows)
display(figures.show_table(conv, precision=6, caption="Relative error of the IPOT distance against the exact EMD"))

# %% tags=["hide-input", "remove-output"]
fig, ax = plt.subplots(figsize=(6, 3.4))
for col, marker in zip(conv.columns[1:], "os"):
    ax.loglog(conv["iterations"], conv[col].clip(lower=1e-9), marker=marker, label=col)
ax.axvline(iters, color="#444", ls=":", lw=1)
ax.annotate(f"{iters} iterations (used for training)", (iters, ax.get_ylim()[1]), fontsize=7, ha="left", va="top")
ax.set_xlabel("IPOT outer iterations")
ax.set_ylabel("relative error of D")
ax.grid(alpha=0.3, which="both")
ax.legend(fontsize=7)
fig.tight_layout()
publish(fig, "fig_convergence")

# %% [markdown]
# ```{glue:figure} fig_convergence
# :name: fig-method-convergence
#
# Relative error of the IPOT distance against the exact EMD as the number of outer iterations
# grows. At 50 iterations it lies around a percent: enough to steer training, since WMA uses D
# only through the squared gap to β·D0, and the plan is computed without gradient (the
# gradient of D flows through the cost only, as in ViLT).
# ```
#
# ## What α and β do to the loss
#
# For one sample the regulariser is $\alpha (D - \beta D_0)^2$: a parabola in D with its minimum
# at β·D0 and curvature α. Its gradient $2\alpha(D - \beta D_0)$ pushes the modalities apart
# when D is below the target and together when it is above. β = 0 always pulls them together
# (the "minimise OT" ablation); β = 1 keeps them where the pretrained model put them.

# %% tags=["hide-input", "remove-output"]
D0 = d_exact
D = np.linspace(0, 2, 400)
fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
for beta, color in zip([0.0, 0.5, 1.0, 2.0], ["#d62728", "#ff7f0e", "#2ca02c", "#1f77b4"]):
    axes[0].plot(D, 1.0 * (D - beta * D0) ** 2, color=color, label=f"β = {beta:g} (target {beta * D0:.2f})")
    axes[0].axvline(beta * D0, color=color, ls=":", lw=1)
for alpha, ls in zip([0.2, 1.0, 5.0], [":", "--", "-"]):
    axes[1].plot(D, alpha * (D - D0) ** 2, "k", ls=ls, label=f"α = {alpha:g}")
axes[0].set_title("α = 1: β moves the minimum", fontsize=9)
axes[1].set_title("β = 1: α scales the penalty", fontsize=9)
for ax in axes:
    ax.axvline(D0, color="#555", ls="--", lw=0.8)
    ax.set_xlabel("OT distance D (D0 = toy clouds' distance)")
    ax.set_ylabel("regulariser α(D − β·D0)²")
    ax.set_ylim(0, 3)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
fig.tight_layout()
publish(fig, "fig_penalty")

# %% [markdown]
# ```{glue:figure} fig_penalty
# :name: fig-method-penalty
#
# The WMA penalty for one sample as a function of its OT distance D.
# ```
#
# ## A toy fine-tuning: a stand-in task loss against the alignment term
#
# To see α and β at work, let the second cloud of each of 8 toy samples move freely and
# minimise
#
# $$\ell = \underbrace{\tfrac{1}{n}\lVert y - y^{(0)} \rVert^2}_{\text{stand-in task loss}} +
# \alpha \cdot \operatorname{mean}_i (D_i - \beta D_0)^2$$
#
# with Adam, where the first term keeps the clouds where they started (as a task loss keeps the
# representation useful) and the second is `wma_core.losses.WMARegulariser`, D0
# calibrated on the starting clouds. The mean D settles between D0 (where the task term wants
# it) and β·D0 (where WMA wants it), the closer to β·D0 the larger α.

# %%
B = 8
xs = torch.from_numpy(np.stack([cloud(n_x, 20 + 15 * i, 25, rng) for i in range(B)]))
ys0 = torch.from_numpy(np.stack([cloud(n_y, 100 + 10 * i, 35, rng) for i in range(B)]))


def toy_finetune(alpha, beta, target="init", n_steps=steps, lr=0.02):
    """Mean D per step when y moves under task + WMA (target 'init': β·D0; 'batch': β·batch mean)."""
    y = ys0.clone().requires_grad_(True)
    reg = WMARegulariser(WMAConfig(alpha=alpha, beta=beta, target=target), [("x", "y")])
    with torch.no_grad():
        reg.calibrate({"x-y": (ot_distance(xs, y), torch.ones(B, dtype=torch.bool))})
    opt = torch.optim.Adam([y], lr=lr)
    trace = []
    for _ in range(n_steps):
        Dv = ot_distance(xs, y)
        task = ((y - ys0) ** 2).sum(-1).mean()
        loss_reg, stats = reg({"x-y": (Dv, torch.ones(B, dtype=torch.bool))})
        opt.zero_grad()
        (task + loss_reg).backward()
        opt.step()
        trace.append(stats["x-y"])
    return np.array(trace), reg.d0["x-y"]


alphas, betas = [0.2, 1.0, 5.0], [0.0, 0.5, 1.0, 1.5]
traces = {(a, b): toy_finetune(a, b) for a in alphas for b in betas}
d0_toy = traces[(alphas[0], betas[0])][1]
final = pd.DataFrame([{"α": f"{a:g}", "β": f"{b:g}", "target β·D0": b * d0_toy, "final mean D": tr[-1], "final D / D0": tr[-1] / d0_toy}
                      for (a, b), (tr, _) in traces.items()])
display(figures.show_table(final, caption=f"Toy fine-tuning: where the mean OT distance settles (D0 = {d0_toy:.3f})"))

# %% tags=["hide-input", "remove-output"]
fig, axes = plt.subplots(1, len(alphas), figsize=(4.2 * len(alphas), 3.3), sharey=True)
colors = ["#d62728", "#ff7f0e", "#2ca02c", "#1f77b4"]
for ax, a in zip(axes, alphas):
    for b, color in zip(betas, colors):
        ax.plot(traces[(a, b)][0], color=color, label=f"β = {b:g}")
        ax.axhline(b * d0_toy, color=color, ls=":", lw=1)
    ax.set_title(f"α = {a:g}", fontsize=9)
    ax.set_xlabel("optimisation step")
    ax.grid(alpha=0.3)
axes[0].set_ylabel("mean OT distance D")
axes[0].legend(fontsize=7)
fig.tight_layout()
publish(fig, "fig_toy_alpha_beta")

# %% [markdown]
# ```{glue:figure} fig_toy_alpha_beta
# :name: fig-method-toy
#
# Mean OT distance of the toy batch during the toy fine-tuning, for several α (panels) and β
# (colours; dotted: the target β·D0). β chooses the direction, α how far the alignment term
# wins against the stand-in task loss.
# ```
#
# ## The target: first-batch D0 or the current batch mean?
#
# Eq. 9 of the paper, read literally, uses the *current* batch mean as the basis
# ($\beta \cdot \frac{1}{bs}\sum_j D_j$), while its text says the basis is the mean over the first
# batch at initialisation. The library implements both (`target="init"`, the default, and
# `target="batch"`, with the batch mean detached). With the batch mean the target moves with D:
# for β < 1 every step asks for less than the current mean, for β > 1 for more, whatever D already
# is, so D keeps moving until something else stops it (here the stand-in task term, in general
# also the cosine cost's ceiling of 2) and ends further from D0 than under the fixed target. At
# β = 1 the two readings differ only in that the batch one merely shrinks the spread of D around
# its current mean. The ablation chapter measures this on the real training runs.

# %% tags=["hide-input", "remove-output"]
fig, ax = plt.subplots(figsize=(7, 3.4))
for b, color in zip([0.5, 1.0, 1.5], ["#ff7f0e", "#2ca02c", "#1f77b4"]):
    tr_init, _ = toy_finetune(1.0, b, "init")
    tr_batch, _ = toy_finetune(1.0, b, "batch")
    ax.plot(tr_init, color=color, label=f"β = {b:g}, init target")
    ax.plot(tr_batch, color=color, ls="--", label=f"β = {b:g}, batch target")
ax.set_xlabel("optimisation step")
ax.set_ylabel("mean OT distance D")
ax.set_title("α = 1: fixed target β·D0 (solid) vs moving target β·batch mean (dashed)", fontsize=9)
ax.grid(alpha=0.3)
ax.legend(fontsize=7, ncol=2)
fig.tight_layout()
publish(fig, "fig_targets")

# %% [markdown]
# ```{glue:figure} fig_targets
# :name: fig-method-targets
#
# The two readings of the target on the toy problem. With the fixed target the distance settles
# near β·D0 (as far as the task term lets it); with the moving batch-mean target it drifts until the
# task term balances it, further from D0 (much further for β = 1.5), except at β = 1.
# ```
#
# ## From the toy to the transformer
#
# In the training code (`wma_core.train.fit`) the clouds are the transformer's output tokens of
# each modality (text tokens without CLS and without ViLT's `[SEP]`, image patches without CLS,
# padding masked out), D0 is measured once on the first training batch before any update and
# stored with the run, and for three modalities (UR-FUNNY, MOSEI) the three pairwise terms are
# summed, each with its own D0 (Eq. 10). The dataset chapters that follow train the baseline,
# WMA at the paper's (α, β) and the minimise-OT ablation on each dataset.
