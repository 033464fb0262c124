"""Hateful Memes twin: RAW/img/<id>.png, train.jsonl, dev_seen.jsonl, test_seen.jsonl, test_unseen.jsonl.

Latents: z_shared, z_text, z_image; label = 1 when score > 0.4 (about 40 % positive).
- Text (a meme caption of real English words): 4 words from MEME_SHARED[+] with probability
  sigmoid(2.5 z_shared) each (else from MEME_SHARED[-]), 4 from MEME_TEXT likewise with z_text.
- Image (PNG, 64-128 px per side, any aspect ratio): a grid of 16-px tiles with pixel noise; half of
  the tiles are red (else blue) with probability sigmoid(1.5 (z_shared + e)), the other half light
  (else dark) with probability sigmoid(1.5 (z_image + e')); e, e' ~ N(0, 0.6) per meme, so that
  the many tiles do not reveal the factors more exactly than the few words do.
test_unseen.jsonl holds extra memes (n // 20) without "label", like the phase-1 files.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from ..config import SynthConfig
from .drawing import tile_image
from .latent import sample_latents, sigmoid, split_sizes
from .words import MEME_OPENERS, MEME_SHARED, MEME_TEXT, insert_words, sentence

SPLIT_FILES = {"train": "train.jsonl", "dev": "dev_seen.jsonl", "test": "test_seen.jsonl"}
RED, BLUE, LIGHT, DARK = (205, 55, 50), (50, 60, 205), (225, 225, 215), (35, 35, 40)
TEXT_WORDS, TEXT_SHARPNESS = 4, 2.5
IMAGE_SHARPNESS, IMAGE_NOISE = 1.5, 0.6


def caption(rng: np.random.Generator, z_shared: float, z_text: float) -> str:
    signal = []
    for group, z in ((MEME_SHARED, z_shared), (MEME_TEXT, z_text)):
        for _ in range(TEXT_WORDS):
            side = group[0] if rng.random() < sigmoid(TEXT_SHARPNESS * z) else group[1]
            signal.append(side[rng.integers(len(side))])
    words = insert_words(rng, sentence(rng, int(rng.integers(3, 9))), signal)
    return " ".join([MEME_OPENERS[rng.integers(len(MEME_OPENERS))], *words])


def meme_image(rng: np.random.Generator, z_shared: float, z_image: float) -> np.ndarray:
    height, width = (int(v) for v in rng.integers(64, 129, size=2))
    rows, cols = max(1, height // 16), max(1, width // 16)
    is_shared = rng.random((rows, cols)) < 0.5
    z_shared, z_image = z_shared + IMAGE_NOISE * rng.standard_normal(), z_image + IMAGE_NOISE * rng.standard_normal()
    red = rng.random((rows, cols)) < sigmoid(IMAGE_SHARPNESS * z_shared)
    light = rng.random((rows, cols)) < sigmoid(IMAGE_SHARPNESS * z_image)
    colours = np.where(is_shared[..., None], np.where(red[..., None], RED, BLUE), np.where(light[..., None], LIGHT, DARK))
    return tile_image(rng, height, width, colours)


def synth_hateful_memes(out: str | Path, cfg: SynthConfig = SynthConfig()) -> dict:
    """Write the twin under `out`; returns {"labels": {split: [labels]}, "ids": {split: [ids]}}."""
    out = Path(out)
    (out / "img").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(cfg.seed)
    sizes = split_sizes(cfg.n, cfg.splits)
    n_unseen = max(2, cfg.n // 20)
    total = cfg.n + n_unseen
    lat = sample_latents(rng, total, ("text", "image"))
    labels = (lat.score > 0.4).astype(int)
    ids = rng.choice(np.arange(10000, 100000), size=total, replace=False)
    parts = {"train": range(0, sizes["train"]), "dev": range(sizes["train"], sizes["train"] + sizes["dev"]),
             "test": range(sizes["train"] + sizes["dev"], cfg.n), "unseen": range(cfg.n, total)}
    written = {"labels": {}, "ids": {}}
    for part, idx in parts.items():
        lines = []
        for i in idx:
            meme_id = int(ids[i])
            Image.fromarray(meme_image(rng, lat.shared[i], lat.unique["image"][i])).save(out / "img" / f"{meme_id}.png")
            record = {"id": meme_id, "img": f"img/{meme_id}.png", "text": caption(rng, lat.shared[i], lat.unique["text"][i])}
            if part != "unseen":
                record["label"] = int(labels[i])
            lines.append(json.dumps(record))
        name = SPLIT_FILES.get(part, "test_unseen.jsonl")
        (out / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
        written["labels"][part] = [int(labels[i]) for i in idx]
        written["ids"][part] = [str(int(ids[i])) for i in idx]
    return written
