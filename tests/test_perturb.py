"""Tests of wma_core.perturb: test-case names, noise statistics, seeding, missing sets.

The references are the definitions in DESIGN.md §1 (``U(-3, 3)``, ``3·U(0, 1)``, 50% of the
split's samples missing, CLS row and other modalities untouched) and invariances that must
hold whatever the implementation: a sample's noise depends on (seed, sample id, canonical
token index) only.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wma_core import perturb as P


def noise_of(p, ids, L, D=16, canon=None, modality=None):
    """The noise ``apply`` adds to an all-zero embedding ``[B, 1 + L, D]`` (rows 1:)."""
    emb = torch.zeros(len(ids), 1 + L, D)
    out = P.apply(p, modality or p.modality, emb, torch.as_tensor(ids), canon)
    assert torch.equal(out[:, 0], emb[:, 0])  # CLS row untouched
    return out[:, 1:]


def test_test_case_names():
    cases = P.test_cases(["text", "image"])
    assert set(cases) == {"normal", "text_noise", "image_noise", "text_missing", "image_missing"}
    assert cases["normal"] is None
    for name, p in cases.items():
        if p is not None:
            assert p.name == name and f"{p.modality}_{p.kind}" == name
            assert p.amplitude == 3.0 and p.rate == 0.5 and p.mode == "symmetric"
    three = P.test_cases(["text", "video", "audio"], seed=5, mode="positive")
    assert len(three) == 7 and all(p.seed == 5 and p.mode == "positive" for p in three.values() if p)


def test_invalid_arguments():
    with pytest.raises(ValueError):
        P.Perturbation(kind="blur", modality="image")
    with pytest.raises(ValueError):
        P.Perturbation(kind="noise", modality="image", mode="gaussian")
    with pytest.raises(ValueError):
        P.Perturbation(kind="missing", modality="image", rate=1.5)


@pytest.mark.parametrize(
    "mode,lo,hi,mean,var",
    [("symmetric", -3.0, 3.0, 0.0, 36 / 12), ("positive", 0.0, 3.0, 1.5, 9 / 12)],
)
def test_noise_distribution(mode, lo, hi, mean, var):
    p = P.Perturbation(kind="noise", modality="text", mode=mode, seed=1)
    n = noise_of(p, list(range(8)), L=40, D=64)  # 20480 draws
    assert n.min() >= lo and n.max() <= hi
    assert n.min() < lo + 0.01 and n.max() > hi - 0.01  # the whole range is used
    # sample mean within ~6 standard errors, variance within 5%
    se = (var / n.numel()) ** 0.5
    assert abs(float(n.mean()) - mean) < 6 * se
    assert abs(float(n.var()) - var) < 0.05 * var
    # no structure across tokens/dims: a 4x4 histogram of (u, next u) is flat
    u = (n.flatten() - lo) / (hi - lo)
    pairs = torch.stack([u[:-1:2], u[1::2]], 1)
    hist = torch.histogramdd(pairs, bins=[4, 4], range=[0.0, 1.0, 0.0, 1.0]).hist
    expected = pairs.shape[0] / 16
    assert ((hist - expected).abs() / expected).max() < 0.15


def test_amplitude_scales_noise():
    p3 = P.Perturbation(kind="noise", modality="text", seed=2)
    p1 = P.Perturbation(kind="noise", modality="text", seed=2, amplitude=1.0)
    torch.testing.assert_close(noise_of(p3, [0, 1], 5), 3.0 * noise_of(p1, [0, 1], 5))


def test_noise_is_added_and_other_modalities_untouched():
    p = P.Perturbation(kind="noise", modality="text", seed=0)
    emb = torch.randn(3, 6, 8)
    out = P.apply(p, "text", emb, torch.tensor([0, 1, 2]))
    assert torch.equal(out[:, 0], emb[:, 0])
    assert not torch.equal(out[:, 1:], emb[:, 1:])
    torch.testing.assert_close(out[:, 1:] - emb[:, 1:], noise_of(p, [0, 1, 2], 5, 8), atol=1e-6, rtol=0)
    assert out is not emb and emb.isfinite().all()  # input not modified in place
    # another modality, or no perturbation: returned as is
    assert P.apply(p, "image", emb, torch.tensor([0, 1, 2])) is emb
    assert P.apply(None, "text", emb, None) is emb
    with pytest.raises(ValueError, match="sample ids"):
        P.apply(p, "text", emb, None)


def test_noise_independent_of_batch_composition_and_padding():
    p = P.Perturbation(kind="noise", modality="image", seed=3)
    a = noise_of(p, [4, 9, 17], L=10)
    b = noise_of(p, [17, 2, 4], L=10)  # other order, another sample
    torch.testing.assert_close(a[0], b[2], atol=0, rtol=0)
    torch.testing.assert_close(a[2], b[0], atol=0, rtol=0)
    single = noise_of(p, [9], L=10)
    torch.testing.assert_close(a[1], single[0], atol=0, rtol=0)
    # a longer padded length keeps the first tokens' noise
    longer = noise_of(p, [4, 9, 17], L=25)
    torch.testing.assert_close(longer[:, :10], a, atol=0, rtol=0)
    # samples and tokens get different noise
    assert not torch.equal(a[0], a[1]) and not torch.equal(a[0, 0], a[0, 1])


def test_noise_follows_canonical_indices():
    """Token k gets the noise of its canonical index, wherever it sits; -1 (padding) gets none."""
    p = P.Perturbation(kind="noise", modality="image", seed=4)
    ids = [0, 5]
    L = 12
    ref = noise_of(p, ids, L)  # canonical = position
    g = torch.Generator().manual_seed(0)
    canon = torch.stack([torch.randperm(L, generator=g) for _ in ids])
    canon[1, 7:] = -1  # sample 1 has 7 valid patches; its canonical indices are a subset
    canon[1, :7] = torch.tensor([6, 0, 3, 1, 5, 2, 4])
    n = noise_of(p, ids, L, canon=canon)
    for b in range(2):
        for k in range(L):
            c = int(canon[b, k])
            if c < 0:
                assert (n[b, k] == 0).all()
            else:
                assert torch.equal(n[b, k], ref[b, c])


def test_seeds_differ():
    a = noise_of(P.Perturbation(kind="noise", modality="text", seed=0), [0, 1], 8)
    b = noise_of(P.Perturbation(kind="noise", modality="text", seed=1), [0, 1], 8)
    assert (a - b).abs().mean() > 0.5


def _missing_ids(p, n_total, batch_size, order=None):
    """Iterate over the split in batches; return the ids whose rows 1: were zeroed."""
    ids = list(range(n_total)) if order is None else list(order)
    gone = set()
    for s in range(0, n_total, batch_size):
        chunk = torch.tensor(ids[s : s + batch_size])
        emb = torch.randn(len(chunk), 5, 4) + 10.0  # never zero by chance
        out = P.apply(p, p.modality, emb, chunk)
        assert torch.equal(out[:, 0], emb[:, 0])  # CLS row untouched
        zero = (out[:, 1:] == 0).all(dim=(1, 2))
        kept = (out[:, 1:] == emb[:, 1:]).all(dim=(1, 2))
        assert torch.all(zero ^ kept)  # each sample is either fully missing or untouched
        gone |= set(chunk[zero].tolist())
    return gone


@pytest.mark.parametrize("n_total", [100, 37, 3, 1])
def test_missing_set_size_and_stability(n_total):
    p = P.Perturbation(kind="missing", modality="text", seed=7).for_split(n_total)
    sets = [_missing_ids(p, n_total, bs) for bs in (1, 7, 32, n_total)]
    assert len(sets[0]) == round(0.5 * n_total)
    assert all(s == sets[0] for s in sets)
    reversed_order = _missing_ids(p, n_total, 5, order=reversed(range(n_total)))
    assert reversed_order == sets[0]
    mask = P.missing_samples(p, torch.arange(n_total))
    assert set(torch.nonzero(mask).flatten().tolist()) == sets[0]


def test_missing_depends_on_seed_and_split():
    a = _missing_ids(P.Perturbation(kind="missing", modality="image", seed=0).for_split(200), 200, 50)
    b = _missing_ids(P.Perturbation(kind="missing", modality="image", seed=1).for_split(200), 200, 50)
    assert len(a) == len(b) == 100 and a != b
    # not simply the first half
    assert a != set(range(100))


def test_missing_rate_parameter():
    p = P.Perturbation(kind="missing", modality="text", rate=0.3).for_split(50)
    assert len(_missing_ids(p, 50, 16)) == 15


def test_missing_needs_n_total():
    p = P.Perturbation(kind="missing", modality="text")
    with pytest.raises(ValueError, match="n_total"):
        P.apply(p, "text", torch.zeros(2, 3, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="n_total"):
        P.missing_samples(p, torch.tensor([0]))
    assert p.for_split(10).n_total == 10 and p.n_total is None  # frozen, a new object


# --------------------------------------------------------------------------- relative noise


def test_relative_noise_is_amplitude_times_rms():
    """mode="relative": n ~ U(-a * r, a * r) with r the modality's embedding RMS."""
    a, r = 0.4, 2.5
    p = P.Perturbation(kind="noise", modality="image", amplitude=a, mode="relative", scale=r, seed=1)
    assert p.half_width == pytest.approx(1.0)
    n = noise_of(p, list(range(8)), L=40, D=64)
    assert float(n.abs().max()) <= a * r + 1e-6 and float(n.abs().max()) > a * r - 0.01
    var = (2 * a * r) ** 2 / 12  # variance of U(-a r, a r)
    assert abs(float(n.var()) - var) < 0.05 * var
    assert abs(float(n.mean())) < 6 * (var / n.numel()) ** 0.5
    # the same draws as symmetric noise of amplitude a * r (one random stream per sample)
    sym = P.Perturbation(kind="noise", modality="image", amplitude=a * r, seed=1)
    torch.testing.assert_close(n, noise_of(sym, list(range(8)), L=40, D=64), atol=1e-6, rtol=0)


def test_relative_noise_needs_a_scale():
    with pytest.raises(ValueError, match="embedding RMS"):
        P.Perturbation(kind="noise", modality="text", mode="relative")
    with pytest.raises(ValueError, match="embedding RMS"):
        P.Perturbation(kind="noise", modality="text", mode="relative", scale=float("nan"))
    with pytest.raises(ValueError, match="amplitude"):
        P.Perturbation(kind="noise", modality="text", amplitude=-1.0)
    # missing cases need no scale; test_cases hands each modality its own scale and amplitude
    cases = P.test_cases(["text", "image"], amplitude={"text": 0.5, "image": 2.0}, scales={"text": 1.0, "image": 0.1},
                         mode="relative")
    assert cases["text_noise"].half_width == pytest.approx(0.5) and cases["image_noise"].half_width == pytest.approx(0.2)
    assert cases["text_missing"].scale is None
    with pytest.raises(ValueError, match="embedding RMS of 'image'"):
        P.test_cases(["text", "image"], scales={"text": 1.0}, mode="relative")
    with pytest.raises(ValueError, match="amplitude"):
        P.test_cases(["text", "image"], amplitude={"text": 1.0})
    # symmetric and positive modes ignore scales and stay as they were
    assert P.test_cases(["text"], scales={"text": 9.0})["text_noise"].half_width == 3.0


def test_embedding_rms_probe_over_valid_rows():
    g = torch.Generator().manual_seed(0)
    text = torch.randn(3, 6, 4, generator=g) * 2.0
    image = torch.randn(3, 1 + 5, 4, generator=g) * 0.3
    attention = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 0, 0]])
    canon = torch.tensor([[0, 1, 2, 3, 4], [0, 1, 2, -1, -1], [0, 1, -1, -1, -1]])
    probe = P.EmbeddingRMS.from_batch({"attention_mask": attention})
    assert P.apply(probe, "text", text, None) is text  # observed, not changed
    assert P.apply(probe, "image", image, None, canon) is image
    t = text[:, 1:].numpy()[attention[:, 1:].numpy().astype(bool)]  # valid rows, CLS excluded
    i = image[:, 1:].numpy()[canon.numpy() >= 0]
    rms = probe.rms()
    assert rms["text"] == pytest.approx(float(np.sqrt(np.mean(t**2))), rel=1e-6)
    assert rms["image"] == pytest.approx(float(np.sqrt(np.mean(i**2))), rel=1e-6)


@pytest.fixture(scope="module")
def small_hm(hm_twin):
    return hm_twin(120, 4)


def test_relative_noise_rms_recorded_with_the_run(small_hm, tmp_path):
    """The run measures each modality's embedding RMS on its first training batch under the
    initial weights; here the same RMS is computed from transformers' own embedding modules."""
    from data_prep.dataset import PreparedDataset, make_loader, task_info
    from wma_core import train as T

    cfg = T.TrainConfig(dataset="hateful_memes", data_dir=str(small_hm), epochs=1, batch_size=16, seed=3, device="cpu",
                        progress=False, ot_iters=5, noise_mode="relative", amplitude={"text": 0.5, "image": 2.0})
    rec = T.fit(cfg, tmp_path / "store")
    ds = PreparedDataset(small_hm, "train")
    model = T.build_model(task_info(ds.manifest), cfg).eval()
    first = next(iter(make_loader(ds, cfg.batch_size, shuffle=True, seed=cfg.seed, epoch=0)))
    emb = model.backbone.vilt.embeddings
    with torch.no_grad():
        text = emb.text_embeddings(input_ids=first["input_ids"])[:, 1:]
        pixels = (first["pixel_values"].float() / 255.0 - 0.5) / 0.5
        image, image_mask, _ = emb.visual_embed(pixels, first["pixel_mask"], max_image_length=-1)
    t = text[first["attention_mask"][:, 1:].bool()]
    i = image[:, 1:][image_mask[:, 1:].bool()]
    want = {"text": float(t.pow(2).mean().sqrt()), "image": float(i.pow(2).mean().sqrt())}
    assert rec["embedding_rms"] == pytest.approx(want, rel=1e-5)
    for m, a in cfg.amplitude.items():
        assert rec["noise"][m] == {"mode": "relative", "amplitude": a, "half_width": pytest.approx(a * want[m], rel=1e-5)}
    assert set(rec["metrics"]) == {"normal", "text_noise", "image_noise", "text_missing", "image_missing"}
