"""A linear probe of a prepared folder: is the task learnable, and does every modality matter?

Per-modality summaries (no transformer):
- text of image+text datasets: bag of word-piece counts (specials and padding excluded);
- image: a 4 x 4 x 4 RGB colour histogram (fractions of pixels) plus the mean colour;
- feature sequences: the mean of each modality over valid time steps.
Model: logistic regression (binary; one-vs-rest for multi-label) or ridge regression, on
standardised summaries; the regularisation strength is chosen on dev, the headline metric is
reported on test for every subset of modalities. Chance: AUROC 0.5; macro-F1 of predicting every
label positive; MAE of predicting the train median.

    python -m data_prep probe OUT
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import f1_score, mean_absolute_error, roc_auc_score
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from .dataset import PreparedDataset
from .images import read_image

STRENGTHS = (0.01, 0.1, 1.0)  # C for logistic regression; alpha = 1 / C for ridge


def text_counts(ds: PreparedDataset) -> sp.csr_matrix:
    """[N, vocab] word-piece counts without specials and padding."""
    text = ds.manifest["text"]
    ids = np.asarray(ds.arrays["input_ids"], dtype=np.int64)
    specials = {text[k] for k in ("pad_id", "cls_id", "sep_id", "unk_id", "mask_id") if text.get(k) is not None}
    rows, cols = np.nonzero(~np.isin(ids, list(specials)))
    data = np.ones(len(rows), np.float32)
    return sp.csr_matrix((data, (rows, ids[rows, cols])), shape=(len(ds), text["vocab_size"]))


def colour_summary(ds: PreparedDataset) -> np.ndarray:
    """[N, 67]: 64-bin RGB histogram (fractions) and mean RGB / 255."""
    a = ds.arrays
    out = np.zeros((len(ds), 67), np.float32)
    for i in range(len(ds)):
        px = read_image(a["images"], a["image_shapes"], a["image_offsets"], i).reshape(3, -1)
        bins = (px[0] // 64) * 16 + (px[1] // 64) * 4 + px[2] // 64
        out[i, :64] = np.bincount(bins, minlength=64) / px.shape[1]
        out[i, 64:] = px.mean(axis=1) / 255.0
    return out


def sequence_means(ds: PreparedDataset) -> dict[str, np.ndarray]:
    mask = np.asarray(ds.arrays["mask"], dtype=np.float32)[..., None]  # [N, T, 1]
    steps = np.maximum(mask.sum(axis=1), 1.0)
    return {m: (np.asarray(ds.arrays[m]) * mask).sum(axis=1) / steps for m in ds.modalities}


def summaries(ds: PreparedDataset) -> dict:
    if ds.is_image_text:
        return {"text": text_counts(ds), "image": colour_summary(ds)}
    return sequence_means(ds)


def _model(kind: str, strength: float):
    if kind == "regression":
        est = Ridge(alpha=1.0 / strength)
    else:
        est = LogisticRegression(C=strength, max_iter=3000)
        if kind == "multilabel":
            est = OneVsRestClassifier(est)
    return make_pipeline(StandardScaler(with_mean=False), est)


def _predict(model, kind: str, x):
    if kind == "regression":
        return model.predict(x)
    if kind == "binary":
        return model.predict_proba(x)[:, 1]
    return model.predict_proba(x)


def score(metric: str, y: np.ndarray, pred: np.ndarray) -> float:
    if metric == "auroc":
        return float(roc_auc_score(y, pred))
    if metric == "f1_macro":
        return float(f1_score(y, (pred >= 0.5).astype(int), average="macro", zero_division=0))
    return float(mean_absolute_error(y, pred))


def chance(metric: str, y_train: np.ndarray, y_test: np.ndarray) -> float:
    if metric == "auroc":
        return 0.5
    if metric == "f1_macro":
        return score(metric, y_test, np.ones_like(y_test))
    return score(metric, y_test, np.full_like(y_test, np.median(y_train)))


def _stack(parts: list):
    return sp.hstack(parts, format="csr") if any(sp.issparse(p) for p in parts) else np.hstack(parts)


def probe(prepared_dir: str | Path) -> dict:
    """-> {"metric", "higher_is_better", "chance", "scores": {"text+image": .., "text": .., ...}}."""
    sets = {s: PreparedDataset(prepared_dir, s) for s in ("train", "dev", "test")}
    kind, metric = sets["train"].manifest["task"]["kind"], sets["train"].manifest["task"]["headline_metric"]
    feats = {s: summaries(ds) for s, ds in sets.items()}
    y = {s: ds.labels for s, ds in sets.items()}
    better = (lambda a, b: a < b) if metric == "mae" else (lambda a, b: a > b)
    modalities = sets["train"].modalities
    scores = {}
    for r in range(len(modalities), 0, -1):
        for subset in itertools.combinations(modalities, r):
            x = {s: _stack([feats[s][m] for m in subset]) for s in sets}
            best = None
            for strength in STRENGTHS:
                model = _model(kind, strength).fit(x["train"], y["train"])
                dev = score(metric, y["dev"], _predict(model, kind, x["dev"]))
                if best is None or better(dev, best[0]):
                    best = (dev, model)
            scores["+".join(subset)] = score(metric, y["test"], _predict(best[1], kind, x["test"]))
    return {"dataset": sets["train"].manifest["dataset"], "metric": metric, "higher_is_better": metric != "mae",
            "chance": chance(metric, y["train"], y["test"]), "scores": scores}
