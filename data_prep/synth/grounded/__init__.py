"""The grounded world: an opt-in world for the corpus and the image+text twins (not the book's default yet).

One world (:mod:`.world`) of 15 nouns, each a glyph of 2 x 2 patches drawn in black inside a
frame of one of six colours, on images whose sides are slot multiples. Its corpus
(:mod:`.captions`, COCO layout) names every object's colour, noun and place; its Hateful Memes
twin (:mod:`.hateful_memes`) is hateful mostly when the caption attacks a noun that the image
shows, with benign confounders; its MM-IMDb twin (:mod:`.mmimdb`) shows each genre's iconic noun
and names some of them in the plot. Each writes the real raw layout and leaves its generating
statistics in ``RAW/world.json`` (:func:`wma_study.ceilings.ceilings` reads them).

Why it is not the default: measured on a 2-core AMD EPYC, a miniature pretrained on its corpus
(8 epochs, half the swapped images hard, WPA weight 0.25, 267 s) reaches held-out hard-negative
ITM 0.91 and masked colour/noun accuracy 0.27 with the image against 0.075 without, but its
token geometry collapses (held-out D 0.09 matched against 1.80 mismatched; D0 1.66-1.74 on the
twins), and baselines fine-tuned from it did not learn (MM-IMDb dev macro-F1 0.03 after 20
epochs; Hateful Memes dev AUROC 0.47-0.66 after 4 epochs, 0.82 after 8 with random init at
0.81 after 5). A WPA weight and schedule that keep the geometry and pass the ITM floor is the
open step.
"""

from __future__ import annotations

import json
from pathlib import Path

from ...config import SynthConfig
from .captions import synth_captions
from .hateful_memes import synth_hateful_memes
from .mmimdb import synth_mmimdb

WORLD_FILE = "world.json"


def synthesize(dataset: str, out: str | Path, cfg: SynthConfig = SynthConfig(), **options) -> dict:
    """Write the grounded twin of ``hateful_memes`` or ``mmimdb`` under ``out`` and its
    generating statistics in ``out/world.json``; returns what was written."""
    if dataset == "hateful_memes":
        written = synth_hateful_memes(out, cfg)
    elif dataset == "mmimdb":
        written = synth_mmimdb(out, cfg, **options)
    else:
        raise ValueError(f"the grounded world has Hateful Memes and MM-IMDb twins, not {dataset!r}")
    (Path(out) / WORLD_FILE).write_text(json.dumps(written["world"]), encoding="utf-8")
    return written


__all__ = ["WORLD_FILE", "synth_captions", "synth_hateful_memes", "synth_mmimdb", "synthesize"]
