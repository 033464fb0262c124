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
# # Pretraining the miniature the way ViLT was pretrained
#
# The paper fine-tunes a *pretrained* ViLT. Its $D_0$ is the OT distance between the text and
# image tokens under the pretrained weights, and WMA keeps the fine-tuned model's distance near
# $\beta \cdot D_0$. A randomly initialised backbone has no alignment to keep: its tokens are
# nearly random, its $D_0$ is about 0.9 on every dataset, and fine-tuning builds the alignment
# from scratch. So the embedded default pretrains its tiny ViLT with ViLT's three objectives,
# twice over (two independent backbones, see *Replicated backbones* below), and every training
# chapter fine-tunes from those checkpoints.
#
# **The world.** One generator (`data_prep.synth.world`) draws every picture of the book: scenes
# of 15 nouns (lion, kite, anchor, …), each a *glyph*, one black texture repeated over its 2 × 2
# patches inside a frame of one of six colours, in the 32-pixel slots of a 64 × 64, 64 × 96 or
# 96 × 64 image. Image sides are patch multiples, so ViLT's resize leaves them as they are, and
# any single patch of a glyph tells its noun and its colour.
#
# **The corpus.** Label-free image–caption pairs in the layout of COCO captions
# (`annotations/captions_train2017.json`, `train2017/…jpg`), drawn from that world with seeds no
# twin uses. A caption names every object's colour, noun and place ("a red lion at the top left
# and a blue kite on the right"): the words name what particular patches show. There is one kind
# of scene, so a mismatched picture can only be told from the right one by reading what the
# caption names. About half the captions go on in a twin's own register, written by that twin's
# sentence generator about the same scene: a meme-like clause that names two of the shown nouns
# and takes a random stance towards one ("we mock the kite"), or a plot-like sentence with random
# genre keywords that names every shown object. Stances and genres are drawn apart from the scene,
# so nothing in the corpus is a label; but the twins' words are read in the contexts the twins
# write them in, and the tokenizer fitted on the corpus knows every word they use. `python -m data_prep prepare
# coco_captions` reads it, and would read the real COCO captions the same way.
#
# **The objectives** (`wma_core.pretrain`, as in ViLT's code):
#
# - masked language modelling: 15 % of the text tokens are hidden (80 % [MASK], 10 % a random
#   token, 10 % unchanged) and predicted from the text output tokens;
# - image–text matching: half of each batch gets another sample's image, and a linear head on the
#   pooled output says matched or not;
# - word–patch alignment: on that batch, $\ell_{wpa} = (\sum_{matched} D_i - \sum_{mismatched} D_i)/B$
#   with $D_i$ the OT distance between the image tokens and the text tokens (IPOT, cosine cost),
#   added with weight 0.3 (ViLT's is 0.1).
#
# Half of the swapped images are *hard* ones: the picture of the caption in the batch whose words
# overlap most with this one, so that matching has to read what the words name. The recipe (WPA
# weight 0.3, half the negatives hard, 8 epochs; `wma_core.pretrain.SCALES`) was chosen on the
# corpus alone, from held-out hard-negative ITM, masked-noun accuracy and the distances of
# matched and mismatched pairs, before any twin was fine-tuned. The build stops if a backbone's
# held-out hard-negative ITM is
# below 0.8 (`Profile.itm_floor`).
#
# The checkpoint is saved like `dandelin/vilt-b32-mlm` (model and WordPiece tokenizer with
# `save_pretrained`), so the training chapters load it through the same code path as the real
# one, and the twins are tokenised with its tokenizer.

# %% tags=["parameters"]
from typing import Optional  # papermill reads Optional[...] annotations (not "X | None")

scale: str = "default"  # "smoke" | "default": which pretraining configuration (wma_core.pretrain.SCALES)
seeds: Optional[list] = None  # fine-tuning seeds of the pretrained-vs-random comparison (None: two per backbone, wma_study.pretrain_study.transfer_seeds)
datasets: tuple = ("hateful_memes", "mmimdb", "ur_funny", "mosei")  # datasets of the D0 and fine-tuning tables
gap_datasets: tuple = ("hateful_memes", "mmimdb")  # image+text twins of the matched-vs-mismatched comparison and of the frozen-feature probes
finetune: bool = True  # run the fine-tuning comparison (records are shared with the other chapters)
executor: str = "ray"  # "ray" | "local": how the fine-tuning runs are executed
address: str = ""  # an existing Ray cluster to join ("": $RAY_ADDRESS, else a local instance)

# %%
import pandas as pd
from IPython.display import display

from wma_study import figures
from wma_study import pretrain_study as S
from wma_core.pretrain import read_record

NB = "00_pretraining"
publish = figures.Publisher(NB)
folder = S.checkpoint_folder(scale)  # pretrains on first use, then reuses the folder
record = read_record(folder)
timing = record["timings"]
print(f"checkpoint: {folder.name}  ({record['n_params']:,} parameters, {timing['steps']} steps, "
      f"{timing['train_seconds']:.0f} s of training on {timing['threads']} thread(s), "
      f"load average then {timing['load_average'][0]:.1f})")

# %% [markdown]
# ## The three losses
#
# Per step, with a running mean, and the held-out accuracies after each epoch. The masked-word loss falls first (word statistics); the matching
# loss stays at $\ln 2$ until the model starts to compare the caption with the picture, and the
# alignment loss turns negative as matched pairs move closer than mismatched ones.

# %% tags=["hide-input", "remove-output"]
epochs = pd.DataFrame(record["history"]["epochs"])
publish(figures.pretraining_curves(S.loss_curves(folder), epochs), "pretraining_losses")

# %% [markdown]
# ```{glue:figure} pretraining_losses
# :name: fig-pretraining-losses
#
# The three pretraining losses per step (thin: each step; thick: smoothed): masked
# language modelling, image–text matching and word–patch alignment. Bottom right: per epoch, on the
# first 256 held-out captions, image–text matching accuracy (random and hard swapped images, see
# below) and the accuracy of masked colour and noun words with the image and with the image
# missing.
# ```

# %% [markdown]
# ## Held-out checks
#
# On the corpus' held-out split (val2017), for the checkpoint and for its initial random weights:
# image–text matching accuracy (half the images swapped), the accuracy of masked colour and
# noun words predicted with the image and with the image missing (its embedding features set
# to zero), and the mean alignment distance of matched and mismatched pairs. Grounding shows as
# the gap between the "with" and "without" rows: with every colour and noun of a caption masked,
# the text alone cannot say which noun was there (1 in 15 by chance), the picture can.
#
# `itm_accuracy` swaps in random images (ViLT's protocol); in `itm_accuracy_hard` and
# `d_mismatched_hard` every swapped image is a *hard* one: the picture of the held-out caption
# whose words overlap most with this caption (Jaccard similarity of their token sets), which
# shares most of its nouns and colours. A model that only matched kinds of scene, or counted
# objects, would sit near 0.5 there.

# %%
held_out = S.held_out_table(folder)
display(figures.show_table(held_out.reset_index(names="metric"), caption="Held-out metrics (corpus val2017)"))

# %% [markdown]
# ## Replicated backbones
#
# One pretraining is one draw: another corpus from the same world, another initialisation and
# another order of batches, masks and negatives give another backbone. The book pretrains the
# miniature more than once (`Profile.backbones`, `wma_core.pretrain.replicate`: backbone $k$ draws
# corpus seed $k$ and pretraining seed $k$, tokenized with backbone 0's tokenizer so that every
# backbone reads the same prepared twins), and nests the fine-tuning seeds in the backbones: with
# the default profile seeds 0–3 fine-tune backbone `b0` and seeds 4–7 backbone `b1`. Every
# comparison in the book then averages its gain over the backbones and says, beside its verdict,
# whether the verdict holds on each backbone alone. The figures above are those of `b0`; the
# held-out metrics of every backbone are below.

# %%
display(figures.show_table(S.held_out_by_backbone(scale).reset_index(names="metric"),
                           caption="Held-out metrics of every replicated backbone (corpus val2017 of its own corpus)"))

# %% [markdown]
# ## Matched and mismatched pairs on the twins
#
# On the test split of the Hateful Memes and MM-IMDb twins, tokenised with the checkpoint's
# tokenizer: the mean OT distance between each text and its own image, and between each text and
# the next sample's image. Under random weights the two are the same. A gap under the pretrained
# weights means that the alignment learnt on the corpus tells a twin's own image from another
# one: the twins' texts name nouns of the same world (a meme's caption names two, a plot names
# some of the objects its poster shows), so this is the alignment WMA can keep or lose.

# %%
gap = S.twin_gap(folder, gap_datasets, scale)
display(figures.show_table(gap, caption="D(matched), D(mismatched) and their gap"))

# %% [markdown]
# ## What the twins ask for
#
# Each twin leaves the statistics it was drawn from beside its raw files (`world.json`). A
# logistic regression on them (linear regression for MOSEI's score, whose metric is the mean
# absolute error, lower is better) bounds what a model can reach from each view: the statistics
# the text expresses, those the image (for the feature twins, the video) expresses, all of them
# side by side (*additive*), and *full*, which adds the interaction the label is built on. On
# Hateful Memes a meme is hateful mostly when its caption attacks a noun **that the image
# shows**, and benign confounders pair the same caption with another picture, so only *full*
# scores well: a model has to relate the words to the picture. MM-IMDb has no interaction (its
# full row equals additive) but needs both modalities; UR-FUNNY and MOSEI add a text × video
# product to additive parts. These are ceilings on the generator's statistics, not on pixels and
# tokens.

# %%
from wma_study.ceilings import twin_ceilings

display(figures.show_table(twin_ceilings(scale, datasets), caption="Ceilings on each twin's test split: "
                           "regressions on the generating statistics, by view"))

# %% [markdown]
# ## D0 per dataset
#
# $D_0$ is what WMA anchors to: the mean distance on the first training batch under the initial
# weights. Beside it, the same batch with its modalities shuffled across samples
# (`d0_shuffled`): what of $D_0$ is the alignment of a sample's own modalities, rather than the
# geometry of the token spaces, is the difference between the two.
#
# UR-FUNNY and MOSEI reuse the pretrained transformer with new projections of their feature
# sequences (each followed by a LayerNorm, as ViLT's text embeddings are), as the paper does
# with ViLT. Their $D_0$ is the initial geometry of freshly projected features, not an alignment
# learnt in pretraining.

# %%
d0 = S.d0_table(folder, datasets, scale)
display(figures.show_table(d0.pivot_table(index=["dataset", "pair"], columns="weights", values=["d0", "d0_shuffled"]).reset_index(),
                           caption="D0 under pretrained and random weights, on the batch as it is and on shuffled pairs"))

# %% [markdown]
# ## What the frozen features carry
#
# Before any fine-tuning: how well can a linear head read each twin's own cues off the tokens as
# they are? For every layer (0: the embeddings that enter the encoder), each modality's valid
# tokens are averaged per sample, a logistic regression is fitted on the train split and scored
# on dev (AUROC; on MM-IMDb over the genres that modality reveals, `wma_study.probes`). The same
# is done for the same architecture at its random initialisation, the start the fine-tuning
# comparison below measures against.
#
# A random transformer of this size passes its input through almost unchanged: its curve is
# flat at what the embeddings already show. Where a pretrained curve falls below it in the upper
# layers, pretraining has made that modality's own cues harder to read: its text tokens have come
# to describe the scene the caption is about more than which words it holds, and fine-tuning has
# to undo that before it can use them. Where it rises above, pretraining has made a cue easier to
# read. This is a diagnostic of the starting point, not a forecast of the fine-tuned score.

# %% tags=["hide-input", "remove-output"]
from wma_study.probes import probe_table

probes = probe_table(gap_datasets, scale)
publish(figures.probe_curves(probes), "frozen_probes")

# %% [markdown]
# ```{glue:figure} frozen_probes
# :name: fig-frozen-probes
#
# Dev AUROC of a linear probe on each layer's mean text and image token, frozen weights: every
# replicated backbone (solid) against random initialisation (dotted grey). Each panel has its own
# vertical scale.
# ```

# %%
display(figures.show_table(probes.pivot_table(index=["dataset", "modality", "layer"], columns="weights",
                                              values="auroc", sort=False).reset_index(),
                           caption="Dev AUROC of linear probes on frozen features, per layer"))

# %% [markdown]
# ## Fine-tuning from the checkpoint against random initialisation
#
# The baseline (no regulariser) on every twin's normal test, per seed.

# %%
if finetune:
    seeds = S.transfer_seeds(scale) if seeds is None else tuple(seeds)
    ft = S.finetune_table(datasets, scale, seeds, executor=executor, address=address or None)
    display(figures.show_table(S.transfer_table(ft), caption=f"Baseline, normal test: pretrained against random "
                               f"initialisation ({len(seeds)} paired seeds; gain with its 95% interval, seeds nested "
                               f"in the backbones)"))
