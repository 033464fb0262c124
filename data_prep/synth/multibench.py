"""UR-FUNNY and CMU-MOSEI twins: MultiBench pickles (humor.pkl, mosei_senti_data.pkl).

Same keys, dtypes and shapes as MultiBench: {"train", "valid", "test"} -> {"vision" float32
[N, T, dv], "audio" float32 [N, T, da], "text" float32 [N, T, 300], "labels", "id" [N] str};
UR-FUNNY labels float32 [N, 1] in {0, 1}, MOSEI labels float32 [N, 1, 1] in [-3, 3] (steps of
1/3). Sequences are word-aligned and left zero-padded (min(12, T)..T valid steps).

Latents z_shared, z_text, z_video, z_audio drive score = z_shared + 0.8 * (z_text + z_video + z_audio)
+ 0.8 * z_text * z_video + noise: additive parts that each modality shows alone, and an
interaction that only text and video together show (the product of their own latents); UR-FUNNY
label = score > 0, MOSEI label = clip(round(3 * (0.6 + 0.75 score)) / 3, -3, 3).
- Text: words with fixed GloVe-like vectors; 6 words expressing z_shared and 6 expressing z_text
  (each from the + list with probability sigmoid(1.5 z), else from the - list), the rest filler.
- Video and audio: per valid step, Gaussian noise (sd 0.5) plus a*(z_shared + e) * u_shared +
  a*(z_m + e') * u_m, with fixed random unit directions u and per-sample noise e, e' ~ N(0, 0.6).
In every split about 1 % of samples (at least one) have all-zero text, which MultiBench drops, and
about 2 % (at least one) carry a few -inf audio values, which MultiBench sets to 0.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from ..config import SynthConfig
from ..tasks import task_spec
from .latent import sample_latents, sigmoid, split_sizes, write_world
from .words import FILLER, HUMOR_SHARED, HUMOR_TEXT, SENTIMENT_SHARED, SENTIMENT_TEXT, word_vector

SIGNALS = {"ur_funny": (HUMOR_SHARED, HUMOR_TEXT), "mosei": (SENTIMENT_SHARED, SENTIMENT_TEXT)}
TEXT_WORDS, SHARPNESS, AMPLITUDE, STEP_NOISE, EXPRESSION_NOISE = 6, 1.5, 0.5, 0.5, 0.6
INTERACTION = 0.8  # weight of z_text * z_video in the score


def _unit(rng: np.random.Generator, d: int) -> np.ndarray:
    v = rng.standard_normal(d)
    return (v / np.linalg.norm(v)).astype(np.float32)


def _text(rng, n, steps, lengths, lat, shared_words, text_words) -> np.ndarray:
    vocab = sorted(set(FILLER) | {w for g in (*shared_words, *text_words) for w in g})
    table = np.stack([word_vector(w) for w in vocab])  # [V, 300]
    index = {w: k for k, w in enumerate(vocab)}
    filler = np.array([index[w] for w in FILLER])
    text = np.zeros((n, steps, table.shape[1]), np.float32)
    for i in range(n):
        length = int(lengths[i])
        words = filler[rng.integers(len(filler), size=length)]
        slots = rng.permutation(length)[:2 * TEXT_WORDS]
        for k, pos in enumerate(slots):
            group, z = (shared_words, lat.shared[i]) if k < TEXT_WORDS else (text_words, lat.unique["text"][i])
            side = group[0] if rng.random() < sigmoid(SHARPNESS * z) else group[1]
            words[pos] = index[side[rng.integers(len(side))]]
        text[i, steps - length:] = table[words]
    return text


def _signal(rng, n, steps, dim, lengths, z_shared, z_own) -> np.ndarray:
    u_shared, u_own = _unit(rng, dim), _unit(rng, dim)
    obs_shared = z_shared + EXPRESSION_NOISE * rng.standard_normal(n)
    obs_own = z_own + EXPRESSION_NOISE * rng.standard_normal(n)
    mean = AMPLITUDE * (obs_shared[:, None] * u_shared + obs_own[:, None] * u_own)  # [N, d]
    x = STEP_NOISE * rng.standard_normal((n, steps, dim), dtype=np.float32) + mean[:, None, :].astype(np.float32)
    x[np.arange(steps)[None, :] < (steps - lengths)[:, None]] = 0.0  # left padding
    return x


def _labels(dataset: str, score: np.ndarray) -> np.ndarray:
    if dataset == "ur_funny":
        return (score > 0).astype(np.float32).reshape(-1, 1)
    return np.clip(np.round(3 * (0.6 + 0.75 * score)) / 3, -3, 3).astype(np.float32).reshape(-1, 1, 1)


def synth_multibench(dataset: str, out: str | Path, cfg: SynthConfig = SynthConfig()) -> dict:
    """Write RAW/<humor.pkl | mosei_senti_data.pkl> and the latents of every sample in
    RAW/world.json (:data:`.latent.WORLD_FILE`; chapter 00's ceilings); returns the written dict (for tests)."""
    spec = task_spec(dataset)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(cfg.seed)
    n, steps, dims = cfg.n, cfg.steps, spec.feature_dims
    lat = sample_latents(rng, n, ("text", "video", "audio"))
    lengths = rng.integers(min(2 * TEXT_WORDS, steps), steps + 1, size=n)
    shared_words, text_words = SIGNALS[dataset]
    text = _text(rng, n, steps, lengths, lat, shared_words, text_words)
    video = _signal(rng, n, steps, dims["video"], lengths, lat.shared, lat.unique["video"])
    audio = _signal(rng, n, steps, dims["audio"], lengths, lat.shared, lat.unique["audio"])
    labels = _labels(dataset, lat.score + INTERACTION * lat.unique["text"] * lat.unique["video"])
    ids = np.array([f"{dataset}_{k:05d}" for k in range(n)])
    sizes = split_sizes(n, cfg.splits)
    data, start = {}, 0
    for split, key in (("train", "train"), ("dev", "valid"), ("test", "test")):
        sl = slice(start, start + sizes[split])
        start += sizes[split]
        # In every split: ~1 % all-zero text (dropped by MultiBench), ~2 % with a few -inf audio values.
        rows = rng.permutation(np.arange(sl.start, sl.stop))
        n_zero, n_inf = max(1, round(0.01 * len(rows))), max(1, round(0.02 * len(rows)))
        text[rows[:n_zero]] = 0.0
        for i in rows[n_zero:n_zero + n_inf]:
            t = rng.integers(steps - lengths[i], steps, size=int(rng.integers(1, 4)))
            audio[i, t, rng.integers(dims["audio"], size=len(t))] = -np.inf
        data[key] = {"vision": video[sl], "audio": audio[sl], "text": text[sl], "labels": labels[sl], "id": ids[sl]}
    with open(out / spec.raw_file, "wb") as f:
        pickle.dump(data, f, protocol=4)
    split_of = np.repeat(["train", "dev", "test"], [sizes["train"], sizes["dev"], sizes["test"]])
    world = {str(ids[i]): {"split": str(split_of[i]), "z_shared": float(lat.shared[i]),
                           **{f"z_{m}": float(lat.unique[m][i]) for m in ("text", "video", "audio")},
                           "label": float(labels[i].reshape(-1)[0])} for i in range(n)}
    write_world(out, world)
    return data
