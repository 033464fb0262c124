"""Latent factors of a twin: one shared by every modality, one unique to each, plus noise.

score = w_shared * z_shared + w_unique * sum_m z_unique[m] + noise drives the label, so each
modality alone (which sees z_shared and its own z_unique) is informative, all together are better,
and losing one modality costs its unique share but not everything.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: every twin's generating statistics, one record per sample id, beside its raw files
WORLD_FILE = "world.json"


def write_world(out: str | Path, world: dict) -> Path:
    """Write a twin's generating statistics (``{sample id: {...}}``) to ``out/WORLD_FILE``."""
    path = Path(out) / WORLD_FILE
    path.write_text(json.dumps(world), encoding="utf-8")
    return path


@dataclass(frozen=True)
class Latents:
    shared: np.ndarray           # [N] standard normal
    unique: dict[str, np.ndarray]  # modality -> [N] standard normal
    score: np.ndarray            # [N]


def sample_latents(rng: np.random.Generator, n: int, modalities: tuple[str, ...],
                   w_shared: float = 1.0, w_unique: float = 0.8, noise: float = 0.3) -> Latents:
    shared = rng.standard_normal(n)
    unique = {m: rng.standard_normal(n) for m in modalities}
    score = w_shared * shared + w_unique * sum(unique.values()) + noise * rng.standard_normal(n)
    return Latents(shared, unique, score)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def split_sizes(n: int, splits: tuple | None = None) -> dict[str, int]:
    """About 70 / 10 / 20 percent, every split non-empty; or exactly ``splits = (train, dev, test)``."""
    if splits is not None:
        if sum(splits) != n:
            raise ValueError(f"split sizes {tuple(splits)} do not add up to n={n}")
        return dict(zip(("train", "dev", "test"), (int(x) for x in splits)))
    dev = max(1, round(0.1 * n))
    test = max(1, round(0.2 * n))
    return {"train": n - dev - test, "dev": dev, "test": test}
