"""Metrics against hand computations; the results store's keys, atomic records and frame."""

from __future__ import annotations

import json

import numpy as np
import pytest

from wma_core.metrics import compute_metrics, headline_metric, is_better
from wma_core.store import ResultsStore, config_key


def _auroc_by_pairs(y, score):
    """AUROC as the share of (positive, negative) pairs ranked right, ties counting 1/2."""
    pos, neg = score[y == 1], score[y == 0]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return wins / (len(pos) * len(neg))


def test_binary_auroc_and_accuracy():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    logits = rng.normal(size=200) + y
    m = compute_metrics("binary", y, logits)
    assert m["auroc"] == pytest.approx(_auroc_by_pairs(y, logits))
    assert m["accuracy"] == pytest.approx(np.mean((logits >= 0) == y))
    # a [N, 1] head output is the same thing
    assert compute_metrics("binary", y, logits[:, None])["auroc"] == pytest.approx(m["auroc"])


def test_binary_one_class_is_nan_with_warning():
    with pytest.warns(UserWarning, match="only one class"):
        m = compute_metrics("binary", np.ones(5), np.arange(5.0))
    assert np.isnan(m["auroc"])


def _f1(tp, fp, fn):
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def test_multilabel_f1_averages_by_hand():
    y = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]])
    logits = np.array([[2.0, -1, -1], [1, 1, -1], [1, -2, -3], [-1, -1, 4]])
    pred = (logits >= 0).astype(int)
    per_label = []
    for c in range(3):
        tp = int(((pred[:, c] == 1) & (y[:, c] == 1)).sum())
        fp = int(((pred[:, c] == 1) & (y[:, c] == 0)).sum())
        fn = int(((pred[:, c] == 0) & (y[:, c] == 1)).sum())
        per_label.append((tp, fp, fn))
    macro = np.mean([_f1(*t) for t in per_label])
    micro = _f1(*np.sum(per_label, axis=0))
    weighted = np.average([_f1(*t) for t in per_label], weights=y.sum(0))
    samples = np.mean([
        _f1(int((p & t).sum()), int((p & (1 - t)).sum()), int(((1 - p) & t).sum())) for p, t in zip(pred, y)
    ])
    m = compute_metrics("multilabel", y, logits)
    assert m["f1_macro"] == pytest.approx(macro)
    assert m["f1_micro"] == pytest.approx(micro)
    assert m["f1_weighted"] == pytest.approx(weighted)
    assert m["f1_samples"] == pytest.approx(samples)


def _average_precision_by_hand(y, score):
    """Mean over the positives of the precision among the samples scored at least as high (no ties)."""
    order = np.argsort(-score)
    hits = y[order]
    return np.mean([hits[: k + 1].mean() for k in range(len(hits)) if hits[k] == 1])


def test_multilabel_macro_auroc_and_map_skip_labels_without_both_classes():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, size=(60, 4))
    y[:, 3] = 0  # a label absent from the split: no AUROC, no AP
    logits = rng.normal(size=(60, 4)) + 1.5 * y
    m = compute_metrics("multilabel", y, logits)
    assert m["auroc_macro"] == pytest.approx(np.mean([_auroc_by_pairs(y[:, c], logits[:, c]) for c in range(3)]))
    assert m["map_macro"] == pytest.approx(np.mean([_average_precision_by_hand(y[:, c], logits[:, c]) for c in range(3)]))
    # threshold-free: a constant shift of the logits changes F1 at 0.5 but not these
    shifted = compute_metrics("multilabel", y, logits - 3.0)
    assert shifted["auroc_macro"] == pytest.approx(m["auroc_macro"]) and shifted["map_macro"] == pytest.approx(m["map_macro"])
    assert shifted["f1_macro"] < m["f1_macro"]
    assert np.isnan(compute_metrics("multilabel", np.zeros((5, 2)), np.zeros((5, 2)))["auroc_macro"])


def test_regression_mae_corr_acc2():
    y = np.array([-2.0, -0.5, 0.0, 1.0, 3.0])
    p = np.array([-1.0, 0.5, -0.2, 1.5, 2.0])
    m = compute_metrics("regression", y, p)
    assert m["mae"] == pytest.approx(np.abs(y - p).mean())
    yc, pc = y - y.mean(), p - p.mean()
    assert m["corr"] == pytest.approx((yc * pc).sum() / np.sqrt((yc**2).sum() * (pc**2).sum()))
    assert m["acc2"] == pytest.approx(np.mean((y >= 0) == (p >= 0)))


def test_headline_and_direction():
    assert [headline_metric(k) for k in ("binary", "multilabel", "regression")] == ["auroc", "f1_macro", "mae"]
    assert is_better("auroc", 0.7, 0.6) and not is_better("auroc", 0.6, 0.7)
    assert is_better("mae", 0.5, 0.6) and not is_better("mae", 0.7, 0.6)
    assert is_better("mae", 0.7, None) and not is_better("auroc", float("nan"), 0.1)
    with pytest.raises(ValueError, match="unknown task kind"):
        compute_metrics("ranking", np.zeros(2), np.zeros(2))


def test_config_key_is_order_free_and_value_sensitive():
    a = {"alpha": 1.0, "beta": 2.0, "dataset": "mosei"}
    assert config_key(a) == config_key(dict(reversed(list(a.items()))))
    assert config_key(a) != config_key({**a, "beta": 2.5})
    assert len(config_key(a)) == 16


def test_store_roundtrip_and_frame(tmp_path):
    store = ResultsStore(tmp_path)
    cfg = {"dataset": "hateful_memes", "alpha": 1.0, "seed": 0, "betas": [0.9, 0.98]}
    rec = {"key": config_key(cfg), "config": cfg, "metrics": {"normal": {"auroc": 0.8}, "text_missing": {"auroc": 0.6}}}
    path = store.put(rec)
    assert json.loads(path.read_text()) == rec and store.get(cfg) == rec and len(store) == 1
    assert not list(tmp_path.rglob("*.tmp"))
    with pytest.raises(ValueError, match="does not match"):
        store.put({**rec, "key": "0" * 16})
    df = store.frame()
    assert sorted(df["test_case"]) == ["normal", "text_missing"] and "betas" not in df.columns
    assert df.set_index("test_case").loc["text_missing", "value"] == 0.6
    assert store.frame(where={"dataset": "mosei"}).empty
    (store.records_dir / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="bad.json"):
        store.get("bad")


# --------------------------------------------------------------------------- prior_gap


def test_prediction_summary_prior_gap_by_hand():
    from wma_core.metrics import prediction_summary

    # multi-label [N=2, C=2] against a per-column prior: |1-0.5|, |-2+1|, |3-0.5|, |0+1| -> mean 5/4
    got = prediction_summary("multilabel", np.array([[1.0, -2.0], [3.0, 0.0]]), prior=[0.5, -1.0])
    assert got["prior_gap"] == pytest.approx(1.25)
    # binary [N] logits against one prior logit: (0.5 + 0.5 + 1.5) / 3
    assert prediction_summary("binary", np.array([0.0, 1.0, -1.0]), prior=0.5)["prior_gap"] == pytest.approx(2.5 / 3)
    assert prediction_summary("binary", np.array([[0.0], [1.0], [-1.0]]), prior=[0.5])["prior_gap"] == pytest.approx(2.5 / 3)
    # regression [N, 1] against the label mean: (0.2 + 0.2 + 0.4) / 3
    assert prediction_summary("regression", np.array([[0.3], [0.3], [0.9]]), prior=0.5)["prior_gap"] == pytest.approx(0.8 / 3)
    # outputs equal to the prior: no gap; without a prior the old summary, key for key
    assert prediction_summary("multilabel", np.tile([-2.2, 0.4], (7, 1)), prior=[-2.2, 0.4])["prior_gap"] == 0.0
    assert set(prediction_summary("binary", np.array([0.1, 0.2]))) == {"output_std", "distinct"}
    assert np.isnan(prediction_summary("binary", np.array([]), prior=0.0)["prior_gap"])
    with pytest.raises(ValueError):
        prediction_summary("multilabel", np.zeros((4, 3)), prior=[0.0, 1.0])  # 2 prior columns for 3 outputs


def test_prior_output_is_the_label_log_odds_or_mean():
    from wma_core.train import prior_output

    np.testing.assert_allclose(prior_output("binary", np.array([1, 0, 0, 0])), [np.log(0.25 / 0.75)], rtol=1e-6)
    y = np.array([[1, 0, 1], [0, 0, 1], [1, 0, 1], [0, 1, 1]])  # rates 0.5, 0.25, 1 (clipped to 1 - 1e-3)
    np.testing.assert_allclose(prior_output("multilabel", y), [0.0, np.log(1 / 3), np.log(0.999 / 0.001)], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(prior_output("regression", np.array([0.5, -2.0, 3.0])), [0.5])
