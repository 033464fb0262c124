"""Pretraining the tiny ViLT the way ViLT was pretrained: MLM, ITM and word-patch alignment.

ViLT's objectives (dandelin/ViLT, ``vilt/modules/objectives.py``), on transformers' ViLT modules:

- **MLM**: 15% of the text tokens (not [CLS], [SEP], [PAD]) are chosen; of those 80% become
  [MASK], 10% a random token, 10% stay (BERT). ``ViltForMaskedLM``'s ``mlm_score`` head predicts
  the chosen tokens from the text output tokens, on the matched image (cross-entropy).
- **ITM**: half of each batch gets another sample's image (one showing a different picture);
  a linear head ``Linear(h, 2)`` on the pooled output classifies matched (1) / not matched (0).
  ViLT draws that image at random; ``itm_hard`` > 0 draws a share of them as hard negatives (the
  picture of the closest caption, :func:`swap_images`). The held-out metrics report both kinds.
- **WPA**: on that ITM batch, ``D_i = ot_distance(image_i, text_i)`` (:func:`wma_core.ot.ot_distance`,
  cosine cost, IPOT 0.5 / 50 / 1, ViLT's argument order: image first) between the image tokens
  (image CLS dropped) and the text tokens (CLS and [SEP] dropped)::

      L_wpa = (sum_{i matched} D_i - sum_{i not matched} D_i) / B

- ``loss = L_mlm + L_itm + wpa_weight * L_wpa`` (ViLT's weight is 0.1; the default scale's 0.3 was
  chosen on the corpus alone, :data:`SCALES`); AdamW (weight decay 0.01, none on biases and norms),
  linear warm-up then linear decay; text length 40. As in ViLT, MLM runs its own forward pass
  (masked text, true images) and ITM + WPA another (full text, half the images swapped).

The corpus is the label-free caption set of :mod:`data_prep.synth.captions`, written in COCO
captions' layout and prepared by :mod:`data_prep.readers.coco`; a WordPiece tokenizer is fitted on
its train captions. The checkpoint folder holds ``ViltForMaskedLM.save_pretrained`` (config.json,
model.safetensors), the tokenizer (``PreTrainedTokenizerFast.save_pretrained``), the ITM head
(``itm_head.pt``) and ``pretrain.json`` (configuration, key, curves, timings, held-out metrics),
so it loads exactly like ``dandelin/vilt-b32-mlm``: ``wma_core.model.load_vilt(folder)`` and
``python -m data_prep prepare ... --tokenizer folder``.

Reuse and resume: the folder is keyed by the configuration and the source of the code that
decides its numbers (:func:`pretrain_key`); a finished folder (``pretrain.json`` present) is
reused. A checkpoint (``last.pt``, loadable with ``torch.load(weights_only=True)``, RNG states as
tensors) is written after every epoch; a new call resumes after the last finished epoch and
gives the same weights as an uninterrupted run (CPU).

Replication: :func:`replicate` gives backbone ``k`` of a configuration, an independent draw of
the corpus and of every pretraining seed, tokenized with backbone 0's tokenizer.

CLI: ``python -m wma_core.pretrain --scale smoke|default [--backbone K] [--out DIR]`` prints the
folder last.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from data_prep.sources import import_closure

from . import checkpoint as ck
from . import perturb as P
from .model import TINY_CONFIG, WMAVilt
from .optim import configure_optimizer, warmup_schedule
from .ot import ot_distance
from .store import atomic_write_json, config_key, data_home, file_lock, touch_heartbeat

IGNORE = -100  # label of tokens MLM does not predict (cross_entropy's ignore_index)
DONE = "pretrain.json"
LAST = "last.pt"
ITM_HEAD = "itm_head.pt"
EPOCH_EVAL_BATCHES = 4  # the per-epoch held-out curve reads the first 4 x 64 held-out captions
_HERE = Path(__file__).resolve().parent
#: the corpus' own code (its digest names the corpus folder): the caption generator, the COCO
#: reader and the tokenizer's fit, and every data_prep module they import
_CORPUS_CODE = import_closure([_HERE.parent / "data_prep" / f for f in ("synth/captions.py", "readers/coco.py", "text.py")])
#: everything whose bytes decide a pretrained checkpoint (its key)
_CODE = tuple(_HERE / f for f in ("pretrain.py", "model.py", "embeddings.py", "perturb.py", "optim.py", "ot.py",
                                  "_ot_common.py")) + _CORPUS_CODE


@dataclass(frozen=True)
class PretrainConfig:
    """One pretraining run.

    Attributes:
        corpus_n: images in the corpus (about 10% go to val2017, the held-out split).
        corpus_seed: the corpus' seed (its stream is disjoint from every twin's).
        image_size, patch_size, max_text_len, vocab_size: as ``python -m data_prep prepare``.
        arch: ``ViltConfig`` fields of the model (vocab_size is the tokenizer's).
        epochs, batch_size, lr, weight_decay, warmup, adam_betas: the optimisation.
        mlm_prob: share of text tokens MLM predicts; itm_neg: share of swapped images;
            itm_hard: share of those that get a hard negative (:func:`swap_images`; 0 is ViLT's
            random negatives).
        wpa_weight: weight of the word-patch alignment loss; ot_iters: IPOT iterations.
        seed: initialisation, data order, masks and swaps.
        tokenizer_seed: the corpus seed whose fitted tokenizer this corpus is tokenized with
            (``None``: its own). Replicated backbones (:func:`replicate`) draw their own corpus
            but share the first one's tokenizer, as every ViLT shares BERT's: so one prepared
            twin serves them all and their token ids mean the same words.
        eval_epochs: evaluate on part of the held-out split after every epoch (the chapter's
            curves; the full split is evaluated at the end).
        attn: ``"sdpa"`` or ``"eager"`` attention.
    """

    corpus_n: int = 3000
    corpus_seed: int = 0
    image_size: int = 64
    patch_size: int = 16
    max_text_len: int = 40
    vocab_size: int = 2000
    arch: dict = field(default_factory=lambda: {k: v for k, v in TINY_CONFIG.items() if k != "vocab_size"})
    epochs: int = 5
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: float = 0.1
    adam_betas: tuple = (0.9, 0.98)
    mlm_prob: float = 0.15
    itm_neg: float = 0.5
    itm_hard: float = 0.0
    wpa_weight: float = 0.1
    ot_iters: int = 50
    seed: int = 0
    tokenizer_seed: int | None = None
    attn: str = "sdpa"
    eval_epochs: bool = True


SCALES = {
    "smoke": PretrainConfig(corpus_n=90, image_size=32, epochs=2, batch_size=16, lr=1e-3,
                            arch={**{k: v for k, v in TINY_CONFIG.items() if k != "vocab_size"},
                                  "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                                  "intermediate_size": 64}),
    # chosen on the corpus alone (held-out hard ITM, masked-noun grounding, D matched vs hard
    # mismatched; no twin, no fine-tuning): half the swapped images hard, WPA weight 0.3
    "default": PretrainConfig(epochs=8, itm_hard=0.5, wpa_weight=0.3),
}


def replicate(cfg: PretrainConfig, backbone: int) -> PretrainConfig:
    """The configuration of replicated backbone ``backbone`` (0, 1, ...): backbone 0 is ``cfg``
    itself; backbone ``k`` draws its own corpus (``corpus_seed + k``: other scenes and captions
    from the same world) and its own initialisation, data order, masks and negatives
    (``seed + k``), and is tokenized with backbone 0's tokenizer (``tokenizer_seed``). The
    backbones are independent draws of the whole pretraining, the unit the book replicates
    over (seeds of fine-tuning are nested in them)."""
    k = int(backbone)
    if k < 0:
        raise ValueError(f"backbone must be >= 0, got {backbone}")
    if k == 0:
        return cfg
    return dataclasses.replace(cfg, corpus_seed=cfg.corpus_seed + k, seed=cfg.seed + k, tokenizer_seed=cfg.corpus_seed)


def pretrain_code_digest(files=_CODE) -> str:
    """A digest of the source files that decide the checkpoint's numbers."""
    h = hashlib.sha256()
    for p in files:
        if p.exists():
            h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()[:16]


def pretrain_key(cfg: PretrainConfig) -> str:
    """The folder's key: a hash of the configuration and of the code that decides its numbers."""
    d = dataclasses.asdict(cfg)
    d["adam_betas"] = list(d["adam_betas"])
    return config_key({"pretrain": d, "code": pretrain_code_digest()})


def default_dir(cfg: PretrainConfig) -> Path:
    """``<data home>/pretrained/<key>`` (the data home is ``$WMA_DATA`` or ``_data``)."""
    return data_home() / "pretrained" / pretrain_key(cfg)


# -- the corpus ---------------------------------------------------------------------------------
def corpus_dir(cfg: PretrainConfig, home: Path) -> Path:
    """Prepare (once) and return the corpus' prepared caption folder under ``home``."""
    from data_prep.config import PrepareConfig, SynthConfig
    from data_prep.readers.coco import prepare_captions
    from data_prep.synth.captions import synth_captions

    shared = cfg.tokenizer_seed is not None and cfg.tokenizer_seed != cfg.corpus_seed
    tokenizer = "train"
    if shared:  # the tokenizer fitted on another corpus of the world (saved once as a folder)
        source = corpus_dir(dataclasses.replace(cfg, corpus_seed=cfg.tokenizer_seed, tokenizer_seed=None), home)
        tok_dir = home / "tokenizers" / source.name
        with file_lock(home / "locks" / f"tokenizer-{source.name}.lock"):
            if not (tok_dir / "tokenizer.json").exists():
                _tokenizer(source).save_pretrained(tok_dir)
        tokenizer = str(tok_dir)
    blob = json.dumps([cfg.corpus_n, cfg.corpus_seed, cfg.image_size, cfg.patch_size, cfg.max_text_len,
                       cfg.vocab_size, pretrain_code_digest(_CORPUS_CODE)]
                      + ([cfg.tokenizer_seed] if shared else []))  # the corpus' own code only
    tag = f"coco_captions-n{cfg.corpus_n}-s{cfg.corpus_seed}-{hashlib.sha256(blob.encode()).hexdigest()[:8]}"
    raw, out = home / "raw" / tag, home / "prepared" / tag
    with file_lock(home / "locks" / f"{tag}.lock"):
        if not (raw / ".complete").exists():
            if raw.exists():
                shutil.rmtree(raw)
            synth_captions(raw, SynthConfig(n=max(20, cfg.corpus_n), seed=cfg.corpus_seed))
            (raw / ".complete").touch()
        if not (out / "manifest.json").exists():
            prepare_captions(raw, out, PrepareConfig(image_size=cfg.image_size, patch_size=cfg.patch_size,
                                                     max_text_len=cfg.max_text_len, vocab_size=cfg.vocab_size,
                                                     tokenizer=tokenizer, progress=False))
    return out


class CaptionSplit:
    """One split of a prepared caption folder, in memory.

    ``input_ids`` int64 [N, L], ``attention_mask`` int64 [N, L], ``image_index`` int64 [N],
    ``images``: list of uint8 [3, H, W] tensors (one per image).
    """

    def __init__(self, folder: str | Path, split: str):
        from data_prep.images import read_image
        from data_prep.store import read_manifest

        folder = Path(folder)
        self.manifest = read_manifest(folder)
        if self.manifest.get("dataset") != "coco_captions":
            raise ValueError(f"{folder}: holds {self.manifest.get('dataset')!r}, expected a coco_captions folder")
        d = folder / split
        self.input_ids = torch.from_numpy(np.load(d / "input_ids.npy").astype(np.int64))
        self.attention_mask = torch.from_numpy(np.load(d / "attention_mask.npy").astype(np.int64))
        self.image_index = torch.from_numpy(np.load(d / "image_index.npy"))
        arrays = [np.load(d / f"{n}.npy", mmap_mode="r") for n in ("images", "image_shapes", "image_offsets")]
        self.images = [torch.from_numpy(read_image(*arrays, i)) for i in range(len(arrays[1]))]

    def __len__(self) -> int:
        return len(self.input_ids)

    def batches(self, batch_size: int, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """Caption indices per batch. Images of every kind and shape share a batch, as in ViLT
        (a batch's images are padded to its largest one, :meth:`batch`), so that a swapped image
        is a random one of the corpus. With ``generator``: shuffled captions; without: file
        order. Batches of one caption are dropped (ITM needs another image)."""
        n = len(self)
        order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
        out = [order[k:k + batch_size] for k in range(0, n, batch_size)]
        return [b for b in out if len(b) >= 2]

    def batch(self, idx: torch.Tensor) -> dict:
        """``input_ids``/``attention_mask`` [B, L] (trailing padding cut), ``pixel_values`` uint8
        [B, 3, H, W] zero-padded to the batch's largest image, ``pixel_mask`` [B, H, W] (1 on
        pixels), ``image_ids`` [B]."""
        mask = self.attention_mask[idx]
        length = max(int(mask.sum(1).max()), 1)
        imgs = [self.images[int(self.image_index[i])] for i in idx]
        H, W = max(im.shape[1] for im in imgs), max(im.shape[2] for im in imgs)
        pixels = torch.zeros(len(imgs), 3, H, W, dtype=imgs[0].dtype)
        pmask = torch.zeros(len(imgs), H, W, dtype=torch.long)
        for k, im in enumerate(imgs):
            pixels[k, :, :im.shape[1], :im.shape[2]] = im
            pmask[k, :im.shape[1], :im.shape[2]] = 1
        return {"input_ids": self.input_ids[idx, :length], "attention_mask": mask[:, :length],
                "pixel_values": pixels, "pixel_mask": pmask, "image_ids": self.image_index[idx]}


# -- the three objectives --------------------------------------------------------------------
def mask_tokens(input_ids, attention_mask, special_ids, vocab_size: int, generator: torch.Generator,
                prob: float = 0.15, mask_id: int = 4):
    """BERT's masking. Returns ``(masked_ids [B, L], labels [B, L])``.

    Each valid token that is not special is chosen with probability ``prob``; a chosen token
    becomes ``mask_id`` with probability 0.8, a random non-special token with 0.1, and stays
    with 0.1. ``labels`` holds the original id at chosen positions, :data:`IGNORE` elsewhere.
    """
    candidates = attention_mask.bool() & ~torch.isin(input_ids, torch.as_tensor(list(special_ids)))
    chosen = (torch.rand(input_ids.shape, generator=generator) < prob) & candidates
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE))
    u = torch.rand(input_ids.shape, generator=generator)
    ordinary = torch.tensor([t for t in range(vocab_size) if t not in set(special_ids)])
    rand_tok = ordinary[torch.randint(len(ordinary), input_ids.shape, generator=generator)]
    masked = torch.where(chosen & (u < 0.8), torch.full_like(input_ids, mask_id), input_ids)
    masked = torch.where(chosen & (u >= 0.8) & (u < 0.9), rand_tok, masked)
    return masked, labels


def swap_images(image_ids: torch.Tensor, generator: torch.Generator, share: float = 0.5, *,
                input_ids: torch.Tensor | None = None, hard: float = 0.0,
                special_ids=()) -> tuple[torch.Tensor, torch.Tensor]:
    """ITM pairs. Returns ``(source [B] long, labels [B] long)``: sample i gets the image of
    sample ``source[i]``; ``floor(share * B)`` samples (at random) get another sample's image
    showing a different picture (label 0), the others their own (label 1).

    The other image is a random one (ViLT), or, for a share ``hard`` of the swapped samples, a
    *hard* one: the image of the caption whose word set is closest to sample i's (Jaccard
    similarity of the token sets of ``input_ids`` [B, L] without ``special_ids``, ties broken at
    random). Random negatives of a corpus with few kinds of scene mostly differ in kind, which a
    model can tell without reading the content; a caption of the same kind makes it look at what
    the words name."""
    B = len(image_ids)
    neg = torch.randperm(B, generator=generator)[: int(share * B)]
    score = torch.rand(B, B, generator=generator)
    if hard > 0:
        if input_ids is None:
            raise ValueError("hard negatives need the captions' input_ids")
        vocab = int(input_ids.max()) + 1
        bag = torch.zeros(B, vocab).scatter_(1, input_ids, 1.0)
        bag[:, [t for t in special_ids if t < vocab]] = 0.0
        inter = bag @ bag.T
        size = bag.sum(1)
        jaccard = inter / (size[:, None] + size[None, :] - inter).clamp_min(1.0)
        use_hard = torch.rand(B, generator=generator) < hard
        score = torch.where(use_hard[:, None], jaccard + 1e-3 * score, score)
    score = score.masked_fill(image_ids[:, None] == image_ids[None, :], -1.0)  # never the same picture
    other = score.argmax(1)
    source, labels = torch.arange(B), torch.ones(B, dtype=torch.long)
    ok = score.max(1).values >= 0
    neg = neg[ok[neg]]
    source[neg], labels[neg] = other[neg], 0
    return source, labels


def wpa_loss(distance: torch.Tensor, itm_labels: torch.Tensor) -> torch.Tensor:
    """``(sum D[matched] - sum D[not matched]) / B`` (ViLT's ot_loss)."""
    sign = itm_labels.float() * 2 - 1  # +1 matched, -1 not matched
    return (sign * distance).sum() / len(distance)


class Pretrainer(nn.Module):
    """``ViltForMaskedLM`` (backbone + MLM head) seen through :class:`WMAVilt`, plus the ITM head."""

    def __init__(self, mlm: ViltForMaskedLM, attn: str = "sdpa"):
        super().__init__()
        self.mlm = mlm
        self.backbone = WMAVilt(mlm.vilt, attn=attn)
        self.itm = nn.Linear(mlm.config.hidden_size, 2)
        nn.init.normal_(self.itm.weight, std=mlm.config.initializer_range)
        nn.init.zeros_(self.itm.bias)

    def encode(self, batch: dict, input_ids=None, source=None, perturbation=None, sample_ids=None):
        """The backbone on ``batch``; ``source`` [B]: sample i sees the image of sample source[i]."""
        pixels, pmask = batch["pixel_values"], batch.get("pixel_mask")
        if source is not None:
            pixels, pmask = pixels[source], None if pmask is None else pmask[source]
        return self.backbone(input_ids=batch["input_ids"] if input_ids is None else input_ids,
                             attention_mask=batch["attention_mask"], pixel_values=pixels, pixel_mask=pmask,
                             perturbation=perturbation, sample_ids=sample_ids)

    def mlm_logits(self, out, length: int) -> torch.Tensor:
        """``[B, Lt, V]`` MLM logits on the text part of the sequence (CLS row included)."""
        return self.mlm.mlm_score(out.last_hidden_state[:, :length])

    def losses(self, batch: dict, generator: torch.Generator, special_ids, mask_id: int, cfg: PretrainConfig) -> dict:
        ids = batch["input_ids"]
        masked, labels = mask_tokens(ids, batch["attention_mask"], special_ids, self.mlm.config.vocab_size,
                                     generator, cfg.mlm_prob, mask_id)
        out = self.encode(batch, input_ids=masked)
        logits = self.mlm_logits(out, ids.shape[1])
        n_mlm = int((labels != IGNORE).sum())
        mlm = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE) \
            if n_mlm else logits.sum() * 0.0
        source, itm_labels = swap_images(batch["image_ids"], generator, cfg.itm_neg, input_ids=ids,
                                         hard=cfg.itm_hard, special_ids=special_ids)
        out = self.encode(batch, source=source)
        itm_logits = self.itm(out.pooler_output)
        itm = F.cross_entropy(itm_logits, itm_labels)
        D = ot_distance(out.tokens["image"], out.tokens["text"], out.token_masks["image"], out.token_masks["text"],
                        iters=cfg.ot_iters)
        wpa = wpa_loss(D, itm_labels)
        return {"loss": mlm + itm + cfg.wpa_weight * wpa, "mlm": mlm, "itm": itm, "wpa": wpa,
                "itm_acc": (itm_logits.argmax(1) == itm_labels).float().mean()}


def build_pretrainer(cfg: PretrainConfig, vocab_size: int) -> Pretrainer:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        from transformers import ViltConfig, ViltForMaskedLM

        mlm = ViltForMaskedLM(ViltConfig(**{**cfg.arch, "vocab_size": vocab_size,
                                            "image_size": cfg.image_size, "patch_size": cfg.patch_size,
                                            "max_position_embeddings": cfg.max_text_len}))
        return Pretrainer(mlm, cfg.attn)


# -- training ------------------------------------------------------------------------------------
def pretrain(cfg: PretrainConfig = PretrainConfig(), out: str | Path | None = None, *, home: str | Path | None = None,
             progress: bool = True, stop_after: int | None = None, heartbeat: str | Path | None = None) -> Path:
    """Build (or reuse, or resume) the checkpoint folder of ``cfg``; returns it.

    out: the folder (default :func:`default_dir`); home: where the corpus is written (default:
    the data home). ``stop_after``: stop after that many epochs of this call (for tests of resume).
    ``heartbeat``: a file touched at every step (:func:`wma_core.store.touch_heartbeat`), so a
    watcher tells slow pretraining from a hung one.
    """
    out = Path(out) if out is not None else default_dir(cfg)
    key = pretrain_key(cfg)
    if _finished(out, key):
        return out
    if home is None:
        home = data_home()
    with file_lock(Path(home) / "locks" / f"pretrain-{key}.lock"):
        if _finished(out, key):
            return out
        _pretrain_locked(cfg, out, key, Path(home), progress, stop_after,
                         (lambda: touch_heartbeat(Path(heartbeat))) if heartbeat else (lambda: None))
    return out


def _finished(out: Path, key: str) -> bool:
    done = out / DONE
    if not done.exists():
        return False
    rec = json.loads(done.read_text())
    if rec.get("key") != key:
        raise ValueError(f"{out} holds the pretrained checkpoint {rec.get('key')}, not {key}: choose another folder")
    return True


def _tokenizer(prepared: Path):
    from data_prep.text import load_tokenizer

    tok = load_tokenizer(prepared)
    tok.model_max_length = int(json.loads((prepared / "manifest.json").read_text())["max_text_len"])
    return tok


def _pretrain_locked(cfg, out: Path, key: str, home: Path, progress: bool, stop_after, beat) -> None:
    t_start = time.perf_counter()
    beat()
    prepared = corpus_dir(cfg, home)
    beat()
    t_corpus = time.perf_counter() - t_start
    tok = _tokenizer(prepared)
    specials = [tok.pad_token_id, tok.cls_token_id, tok.sep_token_id, tok.unk_token_id, tok.mask_token_id]
    train, dev = CaptionSplit(prepared, "train"), CaptionSplit(prepared, "dev")
    model = build_pretrainer(cfg, len(tok))
    opt = configure_optimizer(model, weight_decay=cfg.weight_decay, lr=cfg.lr, betas=cfg.adam_betas, decay_rows=True)
    steps_per_epoch = len(train.batches(cfg.batch_size, torch.Generator().manual_seed(0)))
    sched = warmup_schedule(opt, cfg.epochs * steps_per_epoch, cfg.warmup)
    gen = torch.Generator().manual_seed(cfg.seed + 1)  # masks and swaps
    state = {"epoch": 0, "steps": [], "epochs": [], "train_seconds": 0.0}
    out.mkdir(parents=True, exist_ok=True)
    if (out / LAST).exists():
        saved = ck.load(out / LAST)
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["opt"])
        sched.load_state_dict(saved["sched"])
        gen.set_state(saved["gen"])
        ck.set_rng_state(saved["rng"])
        state = saved["state"]
    done_now = 0
    bar = tqdm(total=cfg.epochs * steps_per_epoch, initial=state["epoch"] * steps_per_epoch, desc="pretraining",
               disable=not progress)
    for epoch in range(state["epoch"], cfg.epochs):
        if stop_after is not None and done_now >= stop_after:
            break
        t0 = time.perf_counter()
        model.train()
        sums = {"loss": 0.0, "mlm": 0.0, "itm": 0.0, "wpa": 0.0, "itm_acc": 0.0, "n": 0}
        for idx in train.batches(cfg.batch_size, torch.Generator().manual_seed(cfg.seed * 100003 + epoch)):
            parts = model.losses(train.batch(idx), gen, specials, tok.mask_token_id, cfg)
            if not torch.isfinite(parts["loss"]):
                raise FloatingPointError(f"non-finite pretraining loss at epoch {epoch + 1}: {parts}")
            opt.zero_grad(set_to_none=True)
            parts["loss"].backward()
            opt.step()
            sched.step()
            row = {k: float(v.detach()) for k, v in parts.items()}
            state["steps"].append(row)
            for k, v in row.items():
                sums[k] += v
            sums["n"] += 1
            bar.update(1)
            beat()
            bar.set_postfix(mlm=f"{row['mlm']:.2f}", itm=f"{row['itm']:.2f}", wpa=f"{row['wpa']:.3f}")
        n = max(1, sums.pop("n"))
        row = {"epoch": epoch + 1, **{k: v / n for k, v in sums.items()}, "lr": sched.get_last_lr()[0]}
        state["train_seconds"] += time.perf_counter() - t0
        if cfg.eval_epochs:  # held-out curve (fixed seeds: the training RNG streams are untouched)
            t1 = time.perf_counter()
            with torch.random.fork_rng(devices=[]):
                held = evaluate_heldout(model, dev, tok, cfg, max_batches=EPOCH_EVAL_BATCHES)
            row.update({f"dev_{k}": held[k] for k in ("itm_accuracy", "itm_accuracy_hard", "mlm_accuracy_with_image",
                                                       "mlm_accuracy_without_image", "d_matched", "d_mismatched")})
            state["eval_seconds"] = state.get("eval_seconds", 0.0) + time.perf_counter() - t1
        state["epochs"].append(row)
        state["epoch"] = epoch + 1
        done_now += 1
        ck.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                 "gen": gen.get_state(), "rng": ck.rng_state(), "state": ck.plain(state)}, out / LAST)
    bar.close()
    if state["epoch"] < cfg.epochs:
        return  # stopped early on request: last.pt holds the state
    t0 = time.perf_counter()
    metrics = evaluate_heldout(model, dev, tok, cfg)
    beat()
    random_metrics = evaluate_heldout(build_pretrainer(cfg, len(tok)), dev, tok, cfg)
    model.mlm.save_pretrained(out)
    tok.save_pretrained(out)
    torch.save(model.itm.state_dict(), out / ITM_HEAD)
    import platform

    atomic_write_json(out / DONE, {
        "key": key, "config": dataclasses.asdict(cfg), "code": pretrain_code_digest(), "corpus": str(prepared),
        "corpus_manifest": {k: json.loads((prepared / "manifest.json").read_text())[k] for k in ("splits", "images", "vocab_size")},
        "history": {"steps": state["steps"], "epochs": state["epochs"]},
        "metrics": metrics, "random_init_metrics": random_metrics,
        "timings": {"corpus_seconds": t_corpus, "train_seconds": state["train_seconds"],
                    "eval_seconds": time.perf_counter() - t0, "epoch_eval_seconds": state.get("eval_seconds", 0.0),
                    "steps": len(state["steps"]), "threads": torch.get_num_threads(),
                    "load_average": list(os.getloadavg())},
        "n_params": sum(p.numel() for p in model.mlm.parameters()),
        "environment": {"torch": torch.__version__, "python": platform.python_version(), "cpus": os.cpu_count()},
    })
    (out / LAST).unlink(missing_ok=True)


# -- evaluation on the held-out split ------------------------------------------------------------


def grounded_words() -> dict[str, tuple[str, ...]]:
    """Words of the corpus that name what patches show: the world's colours and nouns."""
    from data_prep.synth.world import COLOUR_NAMES, NOUNS

    return {"colour": tuple(COLOUR_NAMES), "noun": tuple(NOUNS)}


@torch.no_grad()
def evaluate_heldout(model: Pretrainer, split: CaptionSplit, tok, cfg: PretrainConfig, batch_size: int = 64,
             max_batches: int | None = None) -> dict:
    """Held-out metrics of a pretrainer.

    - ``itm_accuracy``: matched / not matched, half the images swapped for random ones (fixed
      seed, ViLT's protocol);
    - ``itm_accuracy_hard``: the same with every swapped image a hard one (the picture of the
      closest caption, :func:`swap_images`): whether the model reads what the caption names,
      rather than telling kinds of scene apart;
    - ``mlm_accuracy_{with,without}_image[_colour|_shape]``: every colour or shape word masked at
      once, predicted with the image and with the image missing (its embedding features set to
      zero, :mod:`wma_core.perturb`);
    - ``d_matched``, ``d_mismatched``, ``d_mismatched_hard``: mean WPA distance of matched
      pairs, of randomly swapped and of hard-swapped ones.

    ``max_batches``: only the first batches of the split (the per-epoch curve).
    """
    model.eval()
    words = grounded_words()
    ids_of = {kind: torch.tensor([i for w in ws if (i := tok.convert_tokens_to_ids(w)) not in (None, tok.unk_token_id)])
              for kind, ws in words.items()}
    gen = torch.Generator().manual_seed(12345)
    specials = [tok.pad_token_id, tok.cls_token_id, tok.sep_token_id, tok.unk_token_id, tok.mask_token_id]
    itm, itm_hard = [0, 0], [0, 0]  # [right, total]
    d_pos, d_neg, d_hard = [], [], []
    hits = {(kind, img): [0, 0] for kind in words for img in ("with", "without")}
    for k, idx in enumerate(split.batches(batch_size)):
        if max_batches is not None and k >= max_batches:
            break
        b = split.batch(idx)
        B = len(idx)
        ids = b["input_ids"]
        for hard, acc in ((0.0, itm), (1.0, itm_hard)):
            source, labels = swap_images(b["image_ids"], gen, cfg.itm_neg, input_ids=ids, hard=hard,
                                         special_ids=specials)
            out = model.encode(b, source=source)
            acc[0] += int((model.itm(out.pooler_output).argmax(1) == labels).sum())
            acc[1] += B
            D = ot_distance(out.tokens["image"], out.tokens["text"], out.token_masks["image"],
                            out.token_masks["text"], iters=cfg.ot_iters)
            if hard:
                d_hard += D[labels == 0].tolist()
            else:
                d_pos += D[labels == 1].tolist()
                d_neg += D[labels == 0].tolist()
        grounded = torch.isin(ids, torch.cat(list(ids_of.values())))
        masked = torch.where(grounded, torch.full_like(ids, tok.mask_token_id), ids)
        missing = P.Perturbation(kind="missing", modality="image", rate=1.0, n_total=B)
        for img, pert in (("with", None), ("without", missing)):
            o = model.encode(b, input_ids=masked, perturbation=pert, sample_ids=torch.arange(B) if pert else None)
            pred = model.mlm_logits(o, ids.shape[1]).argmax(-1)
            for kind, kid in ids_of.items():
                sel = torch.isin(ids, kid)
                hits[(kind, img)][0] += int((pred[sel] == ids[sel]).sum())
                hits[(kind, img)][1] += int(sel.sum())
    mean = lambda v: float(np.mean(v)) if v else float("nan")  # noqa: E731
    res = {"itm_accuracy": itm[0] / max(1, itm[1]), "itm_accuracy_hard": itm_hard[0] / max(1, itm_hard[1]),
           "d_matched": mean(d_pos), "d_mismatched": mean(d_neg), "d_mismatched_hard": mean(d_hard),
           "n_pairs": itm[1]}
    for img in ("with", "without"):
        tot = [sum(hits[(k, img)][j] for k in words) for j in (0, 1)]
        res[f"mlm_accuracy_{img}_image"] = tot[0] / max(1, tot[1])
        for kind in words:
            h, t = hits[(kind, img)]
            res[f"mlm_accuracy_{img}_image_{kind}"] = h / max(1, t)
    res["n_grounded_words"] = sum(hits[(k, "with")][1] for k in words)
    return res


def load_pretrainer(folder: str | Path) -> Pretrainer:
    """The saved MLM model and ITM head of a checkpoint folder, as a :class:`Pretrainer`."""
    folder = Path(folder)
    from transformers import ViltForMaskedLM

    mlm = ViltForMaskedLM.from_pretrained(folder, local_files_only=True)
    model = Pretrainer(mlm)
    model.itm.load_state_dict(torch.load(folder / ITM_HEAD, map_location="cpu", weights_only=True))
    return model.eval()


def read_record(folder: str | Path) -> dict:
    """``pretrain.json`` of a finished checkpoint folder."""
    path = Path(folder) / DONE
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `python -m wma_core.pretrain` first")
    return json.loads(path.read_text())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m wma_core.pretrain", description=__doc__.split("\n\n")[0])
    p.add_argument("--scale", choices=sorted(SCALES), default="default")
    p.add_argument("--backbone", type=int, default=0,
                   help="which replicated backbone (0, 1, ...; see replicate): its own corpus draw and seeds")
    p.add_argument("--out", help="checkpoint folder (default: <data home>/pretrained/<key>)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--heartbeat", default=None, help="a file touched at every step (for a watcher of progress)")
    args = p.parse_args(argv)
    folder = pretrain(replicate(SCALES[args.scale], args.backbone), args.out, progress=not args.quiet, heartbeat=args.heartbeat)
    rec = read_record(folder)
    m = rec["metrics"]
    print(f"held-out ITM accuracy {m['itm_accuracy']:.3f} ({m['itm_accuracy_hard']:.3f} on hard negatives); masked colour/noun words "
          f"{m['mlm_accuracy_with_image']:.3f} with the image, {m['mlm_accuracy_without_image']:.3f} without; "
          f"train {rec['timings']['train_seconds']:.0f} s")
    print(folder)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
