"""Synthetic twins and the pretraining corpus: generators that write each dataset's raw layout
(see DESIGN.md section 2); ``prepare`` ingests a twin exactly like the real data.

One world (:mod:`.world`) of 15 nouns, each a glyph of one texture over 2 x 2 patches inside a
frame of one of six colours, on images whose sides are slot multiples (so ViLT's resize is the
identity). Its corpus (:mod:`.captions`, COCO layout, label-free) names every object's colour,
noun and place; its Hateful Memes twin (:mod:`.hateful_memes`) is hateful mostly when the
caption attacks a noun that the image shows, with benign confounders; its MM-IMDb twin
(:mod:`.mmimdb`) shows each genre's iconic noun and names some of them in the plot. The feature
twins (:mod:`.multibench`) are drawn from unimodal latents and a text-video interaction. Every
twin leaves its generating statistics in ``RAW/world.json`` (:func:`wma_study.ceilings.twin_ceilings`
reads them).
"""

from __future__ import annotations

from pathlib import Path

from ..config import SynthConfig
from ..sources import source_digest
from ..tasks import task_spec
from .hateful_memes import synth_hateful_memes
from .latent import WORLD_FILE, write_world
from .mmimdb import synth_mmimdb
from .multibench import synth_multibench


def synthesize(dataset: str, out: str | Path, cfg: SynthConfig = SynthConfig(), **options) -> dict:
    """Write the twin of `dataset` in its raw layout under `out`; returns what was written.

    options: layout="archive" | "images+labels" for mmimdb.
    """
    task_spec(dataset)
    if dataset not in ("hateful_memes", "mmimdb"):
        return synth_multibench(dataset, out, cfg)  # writes its latents with write_world itself
    written = synth_hateful_memes(out, cfg) if dataset == "hateful_memes" else synth_mmimdb(out, cfg, **options)
    write_world(out, written["world"])
    return written


def code_digest() -> str:
    """A digest of the generators' source: a twin folder made by other code is not reused.

    Every ``synth/*.py`` file and every ``data_prep`` module they import
    (:func:`data_prep.sources.import_closure`: the twins' sizes and MM-IMDb's genre list in
    ``config.py``, each dataset's modalities in ``tasks.py``)."""
    return source_digest(sorted(Path(__file__).parent.glob("*.py")), n=8)


__all__ = ["WORLD_FILE", "write_world", "code_digest", "synthesize", "synth_hateful_memes", "synth_mmimdb", "synth_multibench"]
