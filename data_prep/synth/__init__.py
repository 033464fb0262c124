"""Synthetic twins: generators that write each dataset's raw layout (see DESIGN.md section 2).

The image+text twins and the pretraining corpus share one world (:mod:`.world`): scenes of
coloured noun glyphs that words name. Each twin's label needs its modalities together, as the
real datasets' do (Hateful Memes: an attack on a noun that the image shows; the feature twins:
an interaction of text and video besides additive parts), plus weaker unimodal cues.
`prepare` ingests a twin exactly like the real data. Every twin also leaves its
generating statistics in ``RAW/world.json``, which no reader reads (chapter 00's ceilings,
:func:`wma_study.ceilings.ceilings`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..config import SynthConfig
from ..tasks import task_spec
from .hateful_memes import synth_hateful_memes
from .mmimdb import synth_mmimdb
from .multibench import synth_multibench


def synthesize(dataset: str, out: str | Path, cfg: SynthConfig = SynthConfig(), **options) -> dict:
    """Write the twin of `dataset` in its raw layout under `out`; returns what was written.

    options: layout="archive" | "images+labels" for mmimdb.
    """
    task_spec(dataset)
    if dataset in ("ur_funny", "mosei"):
        return synth_multibench(dataset, out, cfg)  # writes its own world.json
    written = synth_hateful_memes(out, cfg) if dataset == "hateful_memes" else synth_mmimdb(out, cfg, **options)
    (Path(out) / WORLD_FILE).write_text(json.dumps(written["world"]), encoding="utf-8")
    return written


WORLD_FILE = "world.json"


def code_digest() -> str:
    """A digest of the generators' source: a twin folder made by other code is not reused."""
    h = hashlib.sha256()
    for p in sorted(Path(__file__).parent.glob("*.py")):
        h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()[:8]


__all__ = ["code_digest", "synthesize", "WORLD_FILE", "synth_hateful_memes", "synth_mmimdb", "synth_multibench"]
