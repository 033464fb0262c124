"""Hateful Memes twin: RAW/img/<id>.png, train.jsonl, dev_seen.jsonl, test_seen.jsonl, test_unseen.jsonl.

A meme is a caption and a scene of the world (:mod:`.world`). The caption names two nouns and
attacks or praises one of them, the *target* ("look at the lion and the kite , we mock the
kite , nasty gentle"); the image shows 1-3 noun glyphs, the target with probability 1/2.
As in the real set, a meme is hateful mostly when text and image together say so::

    hate  = attack and the target is depicted                       (needs both modalities)
    score = 3.0 hate + 0.7 z_text + 0.7 z_image - 1.6 + 0.4 e        label = score > 0

with weaker unimodal cues: z_text ~ N(0, 1) shown by 2 words from MEME_SHARED (the "nasty"
side with probability sigmoid(1.5 z_text) each), z_image ~ N(0, 1) by the slots' backgrounds
(each light with probability sigmoid(1.5 (z_image + e')), e' ~ N(0, 0.6), else dark).
*Benign confounders*: with probability 0.3 a meme is followed, in the same split, by one with
the same text and another image in which the target's presence is flipped, so that its label
flips too unless the weaker cues outweigh it.

Images are 64 x 64, 64 x 96 or 96 x 64 PNGs (slot multiples). test_unseen.jsonl holds extra
memes (n // 20) without "label", like the phase-1 files. The generating statistics of every
meme are returned (``"world"``) for the ceilings of chapter 00 (:func:`generating_statistics`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from ..config import SynthConfig
from . import world as W
from .latent import sigmoid, split_sizes
from .words import FILLER_FUNCTION, FILLER_VERBS, MEME_OPENERS, MEME_SHARED, MEME_TEXT
from .vocab import MEME_SUBJECTS

SPLIT_FILES = {"train": "train.jsonl", "dev": "dev_seen.jsonl", "test": "test_seen.jsonl"}
W_HATE, W_CUE, BIAS, LABEL_NOISE = 3.0, 0.7, -1.6, 0.4
CUE_WORDS, CUE_SHARPNESS, IMAGE_SHARPNESS, IMAGE_NOISE = 2, 1.5, 1.5, 0.6
P_CONFOUNDER = 0.3


def draw_text(rng: np.random.Generator) -> dict:
    """The caption's content: two nouns, a target among them, the stance and the text cue."""
    a, b = (W.NOUNS[i] for i in rng.choice(len(W.NOUNS), size=2, replace=False))
    return {"nouns": [a, b], "target": [a, b][rng.integers(2)], "attack": bool(rng.random() < 0.5),
            "z_text": float(rng.standard_normal())}


def caption(rng: np.random.Generator, t: dict) -> str:
    verbs = MEME_TEXT[0] if t["attack"] else MEME_TEXT[1]
    cues = [(MEME_SHARED[0] if rng.random() < sigmoid(CUE_SHARPNESS * t["z_text"]) else MEME_SHARED[1])
            for _ in range(CUE_WORDS)]
    cues = [side[rng.integers(len(side))] for side in cues]
    fill = [(FILLER_FUNCTION + FILLER_VERBS)[i] for i in rng.integers(len(FILLER_FUNCTION) + len(FILLER_VERBS),
                                                                       size=int(rng.integers(0, 3)))]
    words = [MEME_OPENERS[rng.integers(len(MEME_OPENERS))], "the", t["nouns"][0], "and", "the", t["nouns"][1], *fill,
             ",", MEME_SUBJECTS[rng.integers(len(MEME_SUBJECTS))], verbs[rng.integers(len(verbs))], "the",
             t["target"], ",", *cues]
    return " ".join(words)


def draw_image(rng: np.random.Generator, t: dict, depicted: bool) -> tuple[np.ndarray, dict]:
    """A scene with the target iff ``depicted``, the other named noun with probability 1/2, and
    random other nouns up to 1-3 objects; slot backgrounds carry the image cue."""
    other = [n for n in t["nouns"] if n != t["target"]][0]
    named = ([t["target"]] if depicted else []) + ([other] if rng.random() < 0.5 else [])
    k = max(len(named), int(rng.integers(1, 4)))
    avoid = () if depicted else (t["target"],)
    scene = W.random_scene(rng, k, nouns=named, avoid=tuple(avoid) + tuple(n for n in t["nouns"] if n not in named))
    z_image = float(rng.standard_normal())
    light = rng.random((scene.rows, scene.cols)) < sigmoid(IMAGE_SHARPNESS * (z_image + IMAGE_NOISE * rng.standard_normal()))
    return W.draw(rng, scene, light=light), {"scene": W.scene_record(scene), "z_image": z_image,
                                             "light_share": float(light.mean())}


def label_of(rng: np.random.Generator, t: dict, depicted: bool, z_image: float) -> tuple[int, bool]:
    hate = bool(t["attack"] and depicted)
    score = W_HATE * hate + W_CUE * t["z_text"] + W_CUE * z_image + BIAS + LABEL_NOISE * rng.standard_normal()
    return int(score > 0), hate


def synth_hateful_memes(out: str | Path, cfg: SynthConfig = SynthConfig()) -> dict:
    """Write the twin under `out`; returns ``{"labels": {split: [...]}, "ids": {split: [...]},
    "world": {id: generating statistics}}``."""
    out = Path(out)
    (out / "img").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(cfg.seed)
    sizes = split_sizes(cfg.n, cfg.splits)
    n_unseen = max(2, cfg.n // 20)
    total = cfg.n + n_unseen
    ids = rng.choice(np.arange(10000, 100000), size=total, replace=False)
    parts = {"train": sizes["train"], "dev": sizes["dev"], "test": sizes["test"], "unseen": n_unseen}
    written = {"labels": {}, "ids": {}, "world": {}}
    k = 0
    for part, n in parts.items():
        lines, labels, part_ids = [], [], []
        prev = None  # (text content, caption, depicted) of the meme before, for a confounder
        for _ in range(n):
            meme_id = int(ids[k])
            k += 1
            if prev is not None and rng.random() < P_CONFOUNDER:
                t, text, depicted = prev[0], prev[1], not prev[2]
                confounder_of = prev[3]
                prev = None  # a confounder is not confounded again
            else:
                t = draw_text(rng)
                text, depicted, confounder_of = caption(rng, t), bool(rng.random() < 0.5), None
                prev = (t, text, depicted, meme_id)
            img, stats = draw_image(rng, t, depicted)
            label, hate = label_of(rng, t, depicted, stats["z_image"])
            Image.fromarray(img).save(out / "img" / f"{meme_id}.png")
            record = {"id": meme_id, "img": f"img/{meme_id}.png", "text": text}
            if part != "unseen":
                record["label"] = label
            lines.append(json.dumps(record))
            labels.append(label)
            part_ids.append(str(meme_id))
            written["world"][str(meme_id)] = {**t, **stats, "depicted": depicted, "hate": hate, "label": label,
                                              "split": part, "confounder_of": confounder_of}
        name = SPLIT_FILES.get(part, "test_unseen.jsonl")
        (out / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
        written["labels"][part] = labels
        written["ids"][part] = part_ids
    return written
