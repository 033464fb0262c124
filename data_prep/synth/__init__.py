"""Synthetic twins: generators that write each dataset's raw layout (see DESIGN.md section 2).

Each twin is a real multimodal task: a latent factor shared by every modality and one unique to
each both drive the label, so each modality alone is informative, together they are better, and
losing one costs a share but not everything. `prepare` ingests a twin exactly like the real data.
"""

from __future__ import annotations

import hashlib
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
    if dataset == "hateful_memes":
        return synth_hateful_memes(out, cfg)
    if dataset == "mmimdb":
        return synth_mmimdb(out, cfg, **options)
    return synth_multibench(dataset, out, cfg)


def code_digest() -> str:
    """A digest of the generators' source: a twin folder made by other code is not reused."""
    h = hashlib.sha256()
    for p in sorted(Path(__file__).parent.glob("*.py")):
        h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()[:8]


__all__ = ["code_digest", "synthesize", "synth_hateful_memes", "synth_mmimdb", "synth_multibench"]
