"""What a grounded twin asks for: ceilings of models that see the generating statistics.

A twin (:mod:`data_prep.synth`) leaves, beside its raw files, the statistics every sample was drawn from (``RAW/world.json``). A logistic regression
fitted on the train split's statistics and scored on the test split bounds what a model can
reach from each view of them:

- **text only** / **image only**: the statistics one modality expresses;
- **additive**: all of them, each entering on its own (a sum of one-modality functions);
- **full**: additive plus the interaction that the label is built on (Hateful Memes: "attack
  and its target is depicted"; UR-FUNNY and MOSEI: the product of the text and video latents).
  The MM-IMDb twin has no interaction, so its full model is the additive one.

The feature twins' "image only" row is their video (their third modality, audio, enters the
additive and full views).

The gap between *additive* and *full* is what only a model that relates the modalities can
gain; the gap between the best single modality and *additive* is what fusion alone gains. The
statistics are the generator's, not what a network sees through pixels and tokens, so these are
upper bounds.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from data_prep.synth import WORLD_FILE


def _world(raw: Path) -> dict:
    path = Path(raw) / WORLD_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no generating statistics (only the synthetic twins have them)")
    return json.loads(path.read_text(encoding="utf-8"))


def _hateful_memes(raw: Path):
    from data_prep.synth.world import NOUNS

    rows = [r for r in _world(raw).values() if r["split"] in ("train", "test")]
    idx = {n: k for k, n in enumerate(NOUNS)}

    def onehot(names):
        v = np.zeros(len(NOUNS))
        v[[idx[n] for n in names]] = 1.0
        return v

    text = np.stack([np.r_[r["attack"], r["z_text"], onehot([r["target"]]), onehot(r["nouns"])] for r in rows])
    shown = [{o[0] for o in r["scene"]["objects"]} for r in rows]
    image = np.stack([np.r_[onehot(s), r["z_image"]] for r, s in zip(rows, shown)])
    target_shown = np.array([[r["target"] in s] for r, s in zip(rows, shown)], float)
    attack = text[:, :1]
    views = {"text only": text, "image only": image, "additive": np.c_[text, image],
             "full": np.c_[text, image, target_shown, attack * target_shown]}
    y = np.array([r["label"] for r in rows])
    split = np.array([r["split"] for r in rows])
    return views, y, split, "binary"


def _mmimdb(raw: Path):
    from data_prep.config import MMIMDB_GENRES
    from data_prep.synth.words import GENRE_KEYWORDS
    from data_prep.synth.world import NOUNS

    world = _world(raw)
    meta_dir = "dataset" if (Path(raw) / "dataset").is_dir() else "labels"
    keyword_genres = list(GENRE_KEYWORDS)
    ids = [i for i, r in world.items() if r["split"] in ("train", "test")]
    text, image, y, split = [], [], [], []
    for i in ids:
        r = world[i]
        meta = json.loads((Path(raw) / meta_dir / f"{i}.json").read_text(encoding="utf-8"))
        words = re.findall(r"[a-z]+", max(meta["plot"], key=len).lower())
        text.append([sum(w in GENRE_KEYWORDS[g] for w in words) for g in keyword_genres] + [float(n in words) for n in NOUNS])
        shown = {o[0] for o in r["scene"]["objects"]}
        image.append([float(n in shown) for n in NOUNS])
        y.append([float(g in r["genres"]) for g in MMIMDB_GENRES])
        split.append(r["split"])
    text, image = np.array(text, float), np.array(image, float)
    both = np.c_[text, image]
    return ({"text only": text, "image only": image, "additive": both, "full": both},
            np.array(y), np.array(split), "multilabel")


def _multibench(raw: Path, dataset: str):
    rows = [r for r in _world(raw).values() if r["split"] in ("train", "test")]
    z = {k: np.array([r[f"z_{k}"] for r in rows]) for k in ("shared", "text", "video", "audio")}
    text, video = np.c_[z["shared"], z["text"]], np.c_[z["shared"], z["video"]]
    both = np.c_[z["shared"], z["text"], z["video"], z["audio"]]
    views = {"text only": text, "image only": video, "additive": both, "full": np.c_[both, z["text"] * z["video"]]}
    y = np.array([r["label"] for r in rows])
    return views, y, np.array([r["split"] for r in rows]), "binary" if dataset == "ur_funny" else "regression"


def ceilings(dataset: str, raw: str | Path) -> pd.DataFrame:
    """One row per view: ``dataset, view, metric, test`` (AUROC, macro-F1 at 0.5, or MOSEI's
    mean absolute error of a linear fit clipped to [-3, 3])."""
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.metrics import f1_score, mean_absolute_error, roc_auc_score
    from sklearn.multiclass import OneVsRestClassifier

    raw = Path(raw)
    if dataset == "hateful_memes":
        views, y, split, kind = _hateful_memes(raw)
    elif dataset == "mmimdb":
        views, y, split, kind = _mmimdb(raw)
    elif dataset in ("ur_funny", "mosei"):
        views, y, split, kind = _multibench(raw, dataset)
    else:
        raise ValueError(f"unknown dataset {dataset!r}")
    tr, te = split == "train", split == "test"
    rows = []
    for view, x in views.items():
        if kind == "binary":
            m = LogisticRegression(max_iter=2000).fit(x[tr], y[tr])
            value, metric = roc_auc_score(y[te], m.predict_proba(x[te])[:, 1]), "auroc"
        elif kind == "multilabel":
            keep = (y[tr].min(0) == 0) & (y[tr].max(0) == 1)  # labels with both classes in train
            m = OneVsRestClassifier(LogisticRegression(max_iter=2000)).fit(x[tr], y[tr][:, keep])
            pred = np.zeros_like(y[te])
            pred[:, keep] = m.predict(x[te])
            value, metric = f1_score(y[te], pred, average="macro", zero_division=0), "f1_macro"
        else:
            m = LinearRegression().fit(x[tr], y[tr])
            value, metric = mean_absolute_error(y[te], np.clip(m.predict(x[te]), -3, 3)), "mae"
        rows.append({"dataset": dataset, "view": view, "metric": metric, "test": float(value)})
    return pd.DataFrame(rows)


def twin_ceilings(scale: str = "default", datasets=("hateful_memes", "mmimdb", "ur_funny", "mosei"),
                  seed: int = 0) -> pd.DataFrame:
    """:func:`ceilings` of the profile's twin of every dataset (written on first use), one
    column per view: what the task asks for, before any network is trained."""
    from .experiments import write_twin

    frames = [ceilings(ds, write_twin(ds, scale, seed)) for ds in datasets]
    table = pd.concat(frames).pivot_table(index=["dataset", "metric"], columns="view", values="test", sort=False)
    return table[["text only", "image only", "additive", "full"]].reset_index()
