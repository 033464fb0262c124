"""Task metrics: thin wrappers over scikit-learn.

- binary (Hateful Memes, UR-FUNNY): AUROC (headline), accuracy at 0.5.
- multi-label (MM-IMDb): F1 macro (headline), micro, samples, weighted at threshold 0.5; and,
  threshold-free, macro-AUROC and mAP (macro average precision) over the labels that have both
  a positive and a negative sample in the split (a label absent from the split has neither).
- regression (MOSEI): MAE (headline, lower is better), Pearson correlation, binary
  accuracy of the sentiment sign (non-negative vs negative, MOSEI's Acc-2).
"""

from __future__ import annotations

import warnings

import numpy as np

HEADLINE = {"binary": "auroc", "multilabel": "f1_macro", "regression": "mae"}
GREATER_IS_BETTER = {"auroc": True, "f1_macro": True, "mae": False}


def headline_metric(kind: str) -> str:
    if kind not in HEADLINE:
        raise ValueError(f"unknown task kind {kind!r}; expected one of {sorted(HEADLINE)}")
    return HEADLINE[kind]


def is_better(metric: str, new: float, old: float | None) -> bool:
    """Whether ``new`` improves on ``old`` for ``metric`` (NaN never improves)."""
    if new != new:  # NaN
        return False
    if old is None or old != old:
        return True
    return new > old if GREATER_IS_BETTER.get(metric, True) else new < old


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))


def compute_metrics(kind: str, y_true: np.ndarray, output: np.ndarray) -> dict:
    """Metrics of one evaluation.

    Args:
        kind: ``"binary"``, ``"multilabel"`` or ``"regression"``.
        y_true: ``[N]`` (binary 0/1, regression) or ``[N, C]`` (multi-label 0/1).
        output: the model's raw output: logits ``[N]``/``[N, 1]``/``[N, C]``, or predictions
            ``[N]`` for regression.
    """
    from sklearn.metrics import (accuracy_score, average_precision_score, f1_score, mean_absolute_error,  # 1 s to import
                                 roc_auc_score)

    y_true = np.asarray(y_true, dtype=np.float64)
    output = np.asarray(output, dtype=np.float64)
    if kind == "binary":
        y = y_true.reshape(-1)
        p = _sigmoid(output.reshape(-1))
        if len(np.unique(y)) < 2:
            warnings.warn("AUROC is undefined when only one class is present; reported as NaN")
            auroc = float("nan")
        else:
            auroc = float(roc_auc_score(y, p))
        return {"auroc": auroc, "accuracy": float(accuracy_score(y, p >= 0.5))}
    if kind == "multilabel":
        pred = (_sigmoid(output) >= 0.5).astype(int)
        y = y_true.astype(int)
        out = {
            f"f1_{avg}": float(f1_score(y, pred, average=avg, zero_division=0))
            for avg in ("macro", "micro", "samples", "weighted")
        }
        both = (y.min(axis=0) == 0) & (y.max(axis=0) == 1)  # labels with positives and negatives
        if both.any():
            out["auroc_macro"] = float(roc_auc_score(y[:, both], output[:, both], average="macro"))
            out["map_macro"] = float(average_precision_score(y[:, both], output[:, both], average="macro"))
        else:
            out["auroc_macro"] = out["map_macro"] = float("nan")
        return out
    if kind == "regression":
        y = y_true.reshape(-1)
        p = output.reshape(-1)
        corr = float(np.corrcoef(y, p)[0, 1]) if np.std(y) > 0 and np.std(p) > 0 else float("nan")
        return {
            "mae": float(mean_absolute_error(y, p)),
            "corr": corr,
            "acc2": float(accuracy_score(y >= 0, p >= 0)),
        }
    raise ValueError(f"unknown task kind {kind!r}; expected one of {sorted(HEADLINE)}")


def prediction_summary(kind: str, output: np.ndarray, prior=None) -> dict:
    """How varied a model's test predictions are, to tell a collapsed run (a constant predictor).

    Returns ``{"output_std", "distinct"}``: the standard deviation of the raw outputs over the
    test samples (the largest over the columns of a multi-label output), and the number of
    distinct predictions: distinct predicted label sets at threshold 0.5 (multi-label), distinct
    outputs rounded to 6 decimals (binary logits, regression). A run whose ``distinct`` is 1
    predicts the same thing for every sample.

    With ``prior`` also ``"prior_gap"``: how far the outputs are from the prior predictor's,
    ``mean over n, c of |output[n, c] - prior[c]|`` (in logits for binary / multi-label, in label
    units for regression), to tell a run that never left the prior from one that collapsed
    somewhere else.

    Args:
        kind: ``"binary"``, ``"multilabel"`` or ``"regression"``.
        output: the raw outputs on the test split, ``[N]``, ``[N, 1]`` or ``[N, C]`` (logits, or
            predictions for regression).
        prior: the prior predictor's raw output per output column, ``[C]`` (or a scalar / ``[1]``
            for a single column): the training split's label log-odds for binary / multi-label
            (:func:`wma_core.train.prior_logit`), the training label mean for regression. ``None``:
            no ``prior_gap``.
    """
    out = np.asarray(output, dtype=np.float64)
    if out.size == 0:
        res = {"output_std": float("nan"), "distinct": 0}
        return res if prior is None else {**res, "prior_gap": float("nan")}
    if kind == "multilabel":
        pred = (_sigmoid(out.reshape(len(out), -1)) >= 0.5)
        distinct = len(np.unique(pred, axis=0))
        std = float(out.reshape(len(out), -1).std(axis=0).max())
    elif kind in ("binary", "regression"):
        flat = out.reshape(-1)
        distinct = len(np.unique(np.round(flat, 6)))
        std = float(flat.std())
    else:
        raise ValueError(f"unknown task kind {kind!r}; expected one of {sorted(HEADLINE)}")
    res = {"output_std": std, "distinct": int(distinct)}
    if prior is not None:
        cols = out.reshape(len(out), -1)  # [N, C]
        p = np.asarray(prior, dtype=np.float64).reshape(-1)  # [C] (or [1])
        if p.size not in (1, cols.shape[1]):
            raise ValueError(f"prior has {p.size} columns, the output {cols.shape[1]}")
        res["prior_gap"] = float(np.abs(cols - p[None, :]).mean())
    return res
