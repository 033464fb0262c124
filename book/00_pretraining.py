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
# from scratch. So the embedded default pretrains its tiny ViLT once, with ViLT's three
# objectives, and every training chapter fine-tunes from that checkpoint.
#
# **The world.** The corpus and the image+text twins are drawn from one world
# (`data_prep.synth.world`): scenes of up to six 32-pixel slots, some holding one of 15 nouns
# ("lion", "kite", "anchor", …), each a fixed glyph that covers 2 × 2 patches, in one of six
# colours. Image sides are multiples of 32 pixels, so ViLT's resize at 64 pixels changes nothing
# and a glyph sits on exactly its four patches.
#
# **The corpus.** Label-free image–caption pairs in the layout of COCO captions
# (`annotations/captions_train2017.json`, `train2017/…jpg`), with seeds no twin uses. A caption
# names every object's colour, noun and place ("a red lion at the top left and a blue kite at
# the bottom right"): the words name what particular patches show. About half the captions end
# with words of the twins' vocabulary that name nothing in the picture, so the tokenizer fitted on
# the corpus knows every twin word. `python -m data_prep prepare coco_captions` reads it, and would
# read the real COCO captions the same way.
#
# **The objectives** (`wma_core.pretrain`, as in ViLT's code):
#
# - masked language modelling: 15 % of the text tokens are hidden (80 % [MASK], 10 % a random
#   token, 10 % unchanged) and predicted from the text output tokens;
# - image–text matching: half of each batch gets another sample's image, and a linear head on the
#   pooled output says matched or not; half of those swapped images are *hard* ones, the picture
#   of the batch's caption whose words overlap most with this one;
# - word–patch alignment: on that batch, $\ell_{wpa} = (\sum_{matched} D_i - \sum_{mismatched} D_i)/B$
#   with $D_i$ the OT distance between the image tokens and the text tokens (IPOT, cosine cost),
#   added with weight 0.1.
#
# The checkpoint is saved like `dandelin/vilt-b32-mlm` (model and WordPiece tokenizer with
# `save_pretrained`), so the training chapters load it through the same code path as the real
# one, and the twins are tokenised with its tokenizer.

# %% tags=["parameters"]
scale: str = "default"  # "smoke" | "default": which pretraining configuration (wma_core.pretrain.SCALES)
seeds: tuple = (0, 1, 2)  # fine-tuning seeds of the pretrained-vs-random comparison
datasets: tuple = ("hateful_memes", "mmimdb", "ur_funny", "mosei")  # datasets of the D0 and fine-tuning tables
gap_datasets: tuple = ("hateful_memes", "mmimdb")  # image+text twins on which matched and mismatched pairs are compared
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
# the gap between the "with" and "without" rows: without the image, a masked noun can only be
# guessed (one in 15).
#
# There is one kind of scene, so a swapped image differs only in what it shows. In
# `itm_accuracy_hard` and `d_mismatched_hard` every swapped image is a *hard* one: the picture
# of the held-out caption whose words overlap most with this caption (Jaccard similarity of their
# token sets), which often shares a noun or a colour. The build stops if `itm_accuracy_hard` is
# below 0.8 (`wma_core.pretrain.MIN_HARD_ITM`): below that, the checkpoint does not read what
# captions name, and there would be no alignment for fine-tuning to keep or lose.

# %%
held_out = S.held_out_table(folder)
display(figures.show_table(held_out.reset_index(names="metric"), caption="Held-out metrics (corpus val2017)"))

# %% [markdown]
# ## Matched and mismatched pairs on the twins
#
# On the test split of the Hateful Memes and MM-IMDb twins, tokenised with the checkpoint's
# tokenizer: the mean OT distance between each text and its own image, and between each text and
# the next sample's image. Under random weights the two are the same. A gap under the pretrained
# weights means that the alignment learnt on the corpus tells a twin's own image from another
# one: the twins' texts name the world's nouns (a meme attacks "the kite"; a plot mentions "the
# red lion"), and their images show them.

# %%
gap = S.twin_gap(folder, gap_datasets, scale)
display(figures.show_table(gap, caption="D(matched), D(mismatched) and their gap"))

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
# learnt in pretraining: shuffled and matched pairs give about the same distance there.

# %%
d0 = S.d0_table(folder, datasets, scale)
display(figures.show_table(d0.pivot_table(index=["dataset", "pair"], columns="weights", values=["d0", "d0_shuffled"]).reset_index(),
                           caption="D0 under pretrained and random weights, on the batch as it is and on shuffled pairs"))

# %% [markdown]
# ## What each twin asks for
#
# Each twin's generator keeps the statistics it drew every sample from. A logistic (MOSEI:
# linear) regression on them, fitted on train and scored on test, bounds what a model can reach
# from each view (`wma_study.ceilings`): one modality's statistics alone, all of them added up
# (each modality on its own), and the full model with the interaction the label is built on
# (Hateful Memes: an attack whose target the image shows; UR-FUNNY and MOSEI: text times
# video). The gap between *additive* and *full* is what only relating the modalities can gain;
# the MM-IMDb twin has no interaction, so its two rows agree.

# %%
ceil = S.ceilings_table(datasets, scale)
display(figures.show_table(ceil.pivot_table(index=["dataset", "metric"], columns="view", values="test").reset_index(),
                           caption="Ceilings on the generating statistics (test split)"))

# %% [markdown]
# ## Fine-tuning from the checkpoint against random initialisation
#
# The baseline (no regulariser) on every twin's normal test, per seed.

# %%
if finetune:
    ft = S.finetune_table(datasets, scale, seeds, executor=executor, address=address or None)
    summary = ft.pivot_table(index=["dataset", "metric"], columns="init", values="value", aggfunc=["mean", "std"])
    display(figures.show_table(summary.reset_index(), caption=f"Baseline, normal test ({len(seeds)} seeds)"))
