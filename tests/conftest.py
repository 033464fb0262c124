"""Fixtures shared by the test files."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def hm_twin(tmp_path_factory):
    """``hm_twin(n, seed)``: the folder of a small Hateful Memes twin (32 px images, patch 16),
    synthesised and prepared once per ``(n, seed)`` for the whole session."""
    from data_prep.config import PrepareConfig, SynthConfig
    from data_prep.prepare import prepare
    from data_prep.synth import synthesize

    made = {}

    def make(n: int, seed: int):
        if (n, seed) not in made:
            root = tmp_path_factory.mktemp(f"hm_n{n}_s{seed}")
            synthesize("hateful_memes", root / "raw", SynthConfig(n=n, seed=seed))
            prepare("hateful_memes", root / "raw", root / "prep", PrepareConfig(image_size=32, patch_size=16, progress=False))
            made[n, seed] = root / "prep"
        return made[n, seed]

    return make
