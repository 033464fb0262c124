"""The frozen-feature probes of the pretraining chapter (wma_study.probes).

Layer features are checked against transformers' own ``ViltModel(output_hidden_states=True)``
with the same weights (mean pooling is order-free, so ViltModel's random patch order does not
matter); the probe against data whose answer is known by construction."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from test_model import LT, SMALL, TEXT_LENS, make_batch, randomise
from wma_core.model import load_vilt
from wma_study.probes import layer_features, probe_auroc, revealed


def full_image_batches(n_batches: int = 2):
    """Batches of make_batch with every pixel valid (no ragged image) and a label per sample."""
    out = []
    for s in range(n_batches):
        b = make_batch(seed=s)
        b["pixel_mask"] = torch.ones_like(b["pixel_mask"])
        b["labels"] = torch.arange(len(TEXT_LENS), dtype=torch.float32) + s
        out.append(b)
    return out


def test_layer_features_match_vilt_model_hidden_states():
    model = randomise(load_vilt("tiny", **SMALL)).eval()
    batches = full_image_batches()
    feats, labels = layer_features(model, batches)
    assert sorted({k for k, _ in feats}) == list(range(SMALL["num_hidden_layers"] + 1))
    np.testing.assert_array_equal(labels, torch.cat([b["labels"] for b in batches]).numpy())
    row = 0
    for b in batches:
        with torch.no_grad():
            ref = model.vilt(input_ids=b["input_ids"], attention_mask=b["attention_mask"], pixel_values=b["pixel_values"],
                             pixel_mask=b["pixel_mask"], output_hidden_states=True).hidden_states
        for i, n in enumerate(TEXT_LENS):
            for k, h in enumerate(ref):
                image = h[i, LT + 1:].double().mean(0).numpy()  # every patch valid, image CLS left out
                np.testing.assert_allclose(feats[(k, "image")][row + i], image, atol=1e-5)
                if n > 2:  # [CLS] and [SEP] left out
                    np.testing.assert_allclose(feats[(k, "text")][row + i], h[i, 1:n - 1].double().mean(0).numpy(), atol=1e-5)
                else:  # no word token at all: a zero vector, not nan
                    assert not feats[(k, "text")][row + i].any()
        row += len(TEXT_LENS)


def test_probe_reads_a_linear_cue_and_not_noise():
    rng = np.random.default_rng(0)
    n, h = 400, 6
    y = rng.integers(0, 2, size=(2 * n, 2))
    x = rng.standard_normal((2 * n, h)) * 5.0 + 100.0  # far from standardised: the probe must scale it
    x[:, 0] += 20.0 * y[:, 0]  # column 0 is in the features, column 1 is not
    cue = probe_auroc(x[:n], y[:n], x[n:], y[n:], [0])
    noise = probe_auroc(x[:n], y[:n], x[n:], y[n:], [1])
    assert cue > 0.9
    assert abs(noise - 0.5) < 0.08
    assert probe_auroc(x[:n], y[:n], x[n:], y[n:], [0, 1]) == pytest.approx((cue + noise) / 2)


def test_probe_skips_single_class_columns():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((100, 3))
    y = np.zeros((100, 1), int)
    assert np.isnan(probe_auroc(x[:50], y[:50], x[50:], y[50:], [0]))


def test_revealed_genres_follow_the_mmimdb_twin():
    from data_prep.config import MMIMDB_GENRES

    both = ["Drama", "Comedy", "Romance", "Thriller", "Crime", "Action", "Adventure", "Horror"]
    text_only = ["Documentary", "Mystery", "Sci-Fi", "Fantasy", "Family", "Biography", "War", "History"]
    image_only = ["Music", "Animation", "Musical", "Western", "Sport", "Short", "Film-Noir"]
    names = list(MMIMDB_GENRES)
    assert [names[k] for k in revealed("mmimdb", "text", names)] == [g for g in names if g in both + text_only]
    assert [names[k] for k in revealed("mmimdb", "image", names)] == [g for g in names if g in both + image_only]
    assert revealed("hateful_memes", "text", ["label"]) == [0]
