"""Tests of wma_core.losses against Eq. 9 / Eq. 10 written out by hand in numpy."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from wma_core.losses import WMAConfig, WMARegulariser, modality_pairs, pair_distances, pair_key
from wma_core.ot import ot_distance


def dist(D, valid=None):
    D = torch.as_tensor(D, dtype=torch.float32)
    valid = torch.ones(len(D), dtype=torch.bool) if valid is None else torch.as_tensor(valid)
    return D, valid


def eq9_numpy(D, valid, alpha, beta, d0):
    D, valid = np.asarray(D, np.float64), np.asarray(valid, bool)
    return alpha * np.mean((D[valid] - beta * d0) ** 2)


PAIR = [("text", "image")]


def test_pairs_and_keys():
    assert modality_pairs(["text", "image"]) == [("text", "image")]
    assert modality_pairs(["text", "video", "audio"]) == [("text", "video"), ("text", "audio"), ("video", "audio")]
    assert pair_key(("text", "image")) == "text-image"


def test_calibrate_stores_masked_mean():
    reg = WMARegulariser(WMAConfig(alpha=1.0, beta=1.0), PAIR)
    D0, v0 = [0.2, 0.4, 9.0, 0.9], [True, True, False, True]
    d0 = reg.calibrate({"text-image": dist(D0, v0)})
    assert d0 == reg.d0
    assert d0["text-image"] == pytest.approx(np.mean([0.2, 0.4, 0.9]), abs=1e-7)


@pytest.mark.parametrize("alpha,beta", [(0.1, 0.4), (1.0, 1.2), (5.0, 2.0), (0.2, 10.0)])
def test_eq9_init_target(alpha, beta):
    rng = np.random.default_rng(int(alpha * 10 + beta))
    D0 = rng.uniform(0.3, 1.2, 16)
    D = rng.uniform(0.3, 1.2, 16)
    valid = rng.random(16) > 0.2
    reg = WMARegulariser(WMAConfig(alpha=alpha, beta=beta, target="init"), PAIR)
    reg.calibrate({"text-image": dist(D0)})
    loss, stats = reg({"text-image": dist(D, valid)})
    assert loss.shape == ()
    assert float(loss) == pytest.approx(eq9_numpy(D, valid, alpha, beta, D0.mean()), rel=1e-5)
    assert stats["text-image"] == pytest.approx(D[valid].mean(), rel=1e-6)


def test_eq9_batch_target():
    rng = np.random.default_rng(1)
    D = rng.uniform(0.3, 1.2, 12)
    valid = np.ones(12, bool)
    valid[[2, 5]] = False
    alpha, beta = 0.7, 0.4
    reg = WMARegulariser(WMAConfig(alpha=alpha, beta=beta, target="batch"), PAIR)  # no calibrate needed
    loss, _ = reg({"text-image": dist(D, valid)})
    assert float(loss) == pytest.approx(eq9_numpy(D, valid, alpha, beta, D[valid].mean()), rel=1e-5)


def test_eq10_three_pairs_each_with_own_d0():
    rng = np.random.default_rng(2)
    mods = ["text", "video", "audio"]
    pairs = modality_pairs(mods)
    keys = [pair_key(p) for p in pairs]
    first = {k: rng.uniform(0.1, 1.5, 10) for k in keys}
    now = {k: rng.uniform(0.1, 1.5, 10) for k in keys}
    valid = {k: rng.random(10) > 0.3 for k in keys}
    alpha, beta = 1.0, 0.6
    reg = WMARegulariser(WMAConfig(alpha=alpha, beta=beta), pairs)
    d0 = reg.calibrate({k: dist(first[k]) for k in keys})
    assert len(set(d0.values())) == 3
    loss, stats = reg({k: dist(now[k], valid[k]) for k in keys})
    ref = sum(eq9_numpy(now[k], valid[k], alpha, beta, first[k].mean()) for k in keys)
    assert float(loss) == pytest.approx(ref, rel=1e-5)
    # using one D0 for all pairs would give a different value
    wrong = sum(eq9_numpy(now[k], valid[k], alpha, beta, first[keys[0]].mean()) for k in keys)
    assert abs(ref - wrong) > 1e-3
    assert set(stats) == set(keys)


def test_alpha_zero_and_min_ot():
    D = dist([0.3, 0.8, 1.1], [True, False, True])
    reg0 = WMARegulariser(WMAConfig(alpha=0.0, beta=1.0), PAIR, d0={"text-image": 0.5})
    assert float(reg0({"text-image": D})[0]) == 0.0
    reg = WMARegulariser(WMAConfig(alpha=1.0, beta=0.0), PAIR, d0={"text-image": 0.5})
    assert float(reg({"text-image": D})[0]) == pytest.approx((0.3**2 + 1.1**2) / 2, rel=1e-6)
    regb = WMARegulariser(WMAConfig(alpha=1.0, beta=0.0, target="batch"), PAIR)
    assert float(regb({"text-image": D})[0]) == pytest.approx((0.3**2 + 1.1**2) / 2, rel=1e-6)


def test_invalid_samples_excluded():
    D = [0.5, 0.7, 0.0, 0.6]
    valid = [True, True, False, True]  # sample 2: a side without tokens, D = 0
    reg = WMARegulariser(WMAConfig(alpha=2.0, beta=1.0), PAIR)
    reg.calibrate({"text-image": dist(D, valid)})
    assert reg.d0["text-image"] == pytest.approx(0.6, abs=1e-7)
    loss, stats = reg({"text-image": dist(D, valid)})
    assert float(loss) == pytest.approx(2.0 * np.mean([0.01, 0.01, 0.0]), rel=1e-5)
    assert stats["text-image"] == pytest.approx(0.6, abs=1e-7)
    # a batch without any valid sample contributes 0, not NaN
    loss0, _ = reg({"text-image": dist([0.0, 0.0], [False, False])})
    assert float(loss0) == 0.0


def test_init_without_calibrate_raises():
    reg = WMARegulariser(WMAConfig(alpha=1.0, beta=1.0, target="init"), PAIR)
    with pytest.raises(RuntimeError, match="calibrate"):
        reg({"text-image": dist([0.5])})


def test_gradient_init_target():
    D = torch.tensor([0.3, 0.9, 0.5, 0.7], requires_grad=True)
    valid = torch.tensor([True, True, False, True])
    reg = WMARegulariser(WMAConfig(alpha=0.5, beta=1.5), PAIR, d0={"text-image": 0.4})
    reg({"text-image": (D, valid)})[0].backward()
    Dn = D.detach().numpy()
    ref = 0.5 * 2 * (Dn - 1.5 * 0.4) / 3 * valid.numpy()
    np.testing.assert_allclose(D.grad.numpy(), ref, rtol=1e-5, atol=1e-7)


def test_gradient_batch_target_does_not_flow_through_target():
    alpha, beta = 0.8, 0.7
    D = torch.tensor([0.3, 0.9, 0.5, 0.7, 0.2], requires_grad=True)
    valid = torch.tensor([True, True, False, True, True])
    reg = WMARegulariser(WMAConfig(alpha=alpha, beta=beta, target="batch"), PAIR)
    reg({"text-image": (D, valid)})[0].backward()
    # manual computation with the target detached
    D2 = D.detach().clone().requires_grad_()
    v = valid.float()
    target = (beta * (D2 * v).sum() / v.sum()).detach()
    (alpha * (((D2 - target) ** 2) * v).sum() / v.sum()).backward()
    torch.testing.assert_close(D.grad, D2.grad)
    # and it is not the gradient with the target attached
    D3 = D.detach().clone().requires_grad_()
    target3 = beta * (D3 * v).sum() / v.sum()
    (alpha * (((D3 - target3) ** 2) * v).sum() / v.sum()).backward()
    assert (D3.grad - D.grad).abs().max() > 1e-3


def test_config_method_names_and_validation():
    assert WMAConfig().method == "baseline"
    assert WMAConfig(alpha=0.0, beta=0.0).method == "baseline"
    assert WMAConfig(alpha=1.0, beta=0.0).method == "min_ot"
    assert WMAConfig(alpha=0.1, beta=1.2).method == "wma"
    assert WMAConfig().target == "init" and WMAConfig().iters == 50 and WMAConfig().step == 0.5
    with pytest.raises(ValueError):
        WMAConfig(target="mean")
    with pytest.raises(ValueError):
        WMAConfig(alpha=-1.0)
    with pytest.raises(ValueError):
        WMAConfig(beta=-0.1)


def test_pair_distances_on_model_like_output():
    g = torch.Generator().manual_seed(0)
    tokens = {m: torch.randn(3, L, 8, generator=g) for m, L in [("text", 6), ("image", 9)]}
    masks = {"text": torch.ones(3, 6, dtype=torch.bool), "image": torch.ones(3, 9, dtype=torch.bool)}
    masks["text"][1] = False  # a sample without text tokens
    masks["image"][2, 4:] = False
    out = SimpleNamespace(tokens=tokens, token_masks=masks)
    res = pair_distances(out, PAIR, iters=30)
    D, valid = res["text-image"]
    assert pair_distances(out, [("image", "text")], iters=30)["image-text"][0].tolist() == D.tolist()  # same roles
    # ViLT's order: image on the x side (updated first), text on the y side (initialised)
    torch.testing.assert_close(D, ot_distance(tokens["image"], tokens["text"], masks["image"], masks["text"], iters=30))
    assert valid.tolist() == [True, False, True]


# --------------------------------------------------------------------------- ViLT's IPOT order


def vilt_ipot_distance(txt, img, txt_valid, img_valid, *, beta=0.5, iterations=50, k=1):
    """ViLT's word-patch-alignment distance for one sample, written from its published algorithm
    (dandelin/ViLT, ``vilt/modules/objectives.py``: ``cost_matrix_cosine``, ``ipot``, ``trace``),
    in float64 numpy, one sample at a time.

    ViLT keeps the plan as ``T [n_img, m_txt]``, starts from the text scaling ``sigma = 1/m``,
    and in each iteration updates the image scaling ``delta`` first, then ``sigma``::

        A = exp(-C^T / beta);  T = 1;  sigma = 1/m
        repeat: Q = A * T;  (k times: delta = 1 / (n * Q sigma);  sigma = 1 / (m * Q^T delta));
                T = diag(delta) Q diag(sigma)
        D = trace(C T) = sum(C^T * T)
    """
    x = np.asarray(txt, np.float64)[np.asarray(txt_valid, bool)]
    y = np.asarray(img, np.float64)[np.asarray(img_valid, bool)]
    xn = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-5)
    yn = y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-5)
    C = 1.0 - xn @ yn.T  # [m_txt, n_img]
    m, n = C.shape
    A = np.exp(-C.T / beta)  # [n, m]
    T = np.ones((n, m))
    sigma = np.full(m, 1.0 / m)
    for _ in range(iterations):
        Q = A * T
        for _ in range(k):
            delta = 1.0 / (n * (Q @ sigma))
            sigma = 1.0 / (m * (delta @ Q))
        T = delta[:, None] * Q * sigma[None, :]
    return float(np.sum(C.T * T))


def _nearly_aligned(seed, B=4, n_img=10, m_txt=7, d=16):
    """Text tokens close to some image tokens (the case where the update order matters most)."""
    g = torch.Generator().manual_seed(seed)
    img = torch.randn(B, n_img, d, generator=g)
    txt = img[:, torch.randperm(n_img, generator=g)[:m_txt]] + 0.05 * torch.randn(B, m_txt, d, generator=g)
    txt_valid = torch.ones(B, m_txt, dtype=torch.bool)
    img_valid = torch.ones(B, n_img, dtype=torch.bool)
    txt_valid[1, 5:] = False  # padding, and a [SEP] dropped mid-row
    txt_valid[2, 3] = False
    img_valid[3, 6:] = False
    return txt, img, txt_valid, img_valid


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pair_distances_follow_vilt_ipot_order(seed):
    txt, img, tv, iv = _nearly_aligned(seed)
    out = SimpleNamespace(tokens={"text": txt, "image": img}, token_masks={"text": tv, "image": iv})
    D, _ = pair_distances(out, PAIR)["text-image"]  # defaults: step 0.5, 50 iterations
    ref = np.array([vilt_ipot_distance(txt[b], img[b], tv[b], iv[b]) for b in range(len(txt))])
    np.testing.assert_allclose(D.numpy(), ref, atol=2e-6, rtol=0)
    # the other order is measurably different here (well beyond the tolerance above), so the
    # comparison can tell the two orders apart
    other = ot_distance(txt, img, tv, iv).numpy()
    assert np.max(np.abs(other - ref)) > 20 * 2e-6


def test_three_modality_pairs_put_text_then_video_in_vilts_text_role():
    g = torch.Generator().manual_seed(3)
    base = torch.randn(2, 9, 8, generator=g)
    tokens = {m: base[:, :L] + 0.05 * torch.randn(2, L, 8, generator=g) for m, L in [("text", 5), ("video", 9), ("audio", 7)]}
    masks = {m: torch.ones(2, t.shape[1], dtype=torch.bool) for m, t in tokens.items()}
    masks["audio"][1, 4:] = False
    out = SimpleNamespace(tokens=tokens, token_masks=masks)
    # text in ViLT's text role, then video (typed here), whatever order the pairs are listed in
    text_role = {frozenset(("text", "video")): "text", frozenset(("text", "audio")): "text", frozenset(("video", "audio")): "video"}
    for order in (["text", "video", "audio"], ["audio", "text", "video"]):  # e.g. modalities sorted by name
        res = pair_distances(out, modality_pairs(order))
        assert list(res) == ["-".join(p) for p in modality_pairs(order)]
        for key, (D, _) in res.items():
            t = text_role[frozenset(key.split("-"))]
            o = next(m for m in key.split("-") if m != t)
            ref = [vilt_ipot_distance(tokens[t][b], tokens[o][b], masks[t][b], masks[o][b]) for b in range(2)]
            np.testing.assert_allclose(D.numpy(), ref, atol=2e-6, rtol=0)


def test_target_feasibility():
    from wma_core.losses import D_MAX, target_feasible

    assert D_MAX == 2.0  # cosine cost in [0, 2]
    d0 = {"text-video": 0.5, "text-audio": 0.9, "video-audio": 0.2}
    # beta = 3: 1.5 and 0.6 reachable, 2.7 not (computed by hand)
    assert target_feasible(WMAConfig(alpha=1.0, beta=3.0), d0) == {"text-video": True, "text-audio": False, "video-audio": True}
    assert target_feasible(WMAConfig(alpha=1.0, beta=4.0), d0) == {"text-video": True, "text-audio": False, "video-audio": True}
    assert target_feasible(WMAConfig(alpha=1.0, beta=2.0 / 0.9), {"p": 0.9}) == {"p": True}  # exactly 2 is reachable
    assert target_feasible(WMAConfig(alpha=1.0, beta=2.3), {"p": 0.9}) == {"p": False}
    assert target_feasible(WMAConfig(alpha=0.0, beta=4.0), d0) == {}  # the baseline has no target
    assert target_feasible(WMAConfig(alpha=1.0, beta=4.0, target="batch"), d0) == {}


def test_three_pairs_in_one_solve_give_each_pairs_distance_and_gradient():
    """The pairs of three modalities are solved in one padded batch: each D and its gradient
    equal a separate ot_distance call per pair (ragged lengths and masks)."""
    g = torch.Generator().manual_seed(7)
    lengths = {"text": 6, "video": 4, "audio": 8}
    tokens = {m: torch.randn(3, L, 5, generator=g, requires_grad=True) for m, L in lengths.items()}
    masks = {m: torch.ones(3, L, dtype=torch.bool) for m, L in lengths.items()}
    masks["text"][0, 3:] = False
    masks["audio"][2, 1:] = False  # one valid token
    pairs = modality_pairs(["text", "video", "audio"])
    out = SimpleNamespace(tokens=tokens, token_masks=masks)
    res = pair_distances(out, pairs, iters=40)
    joint = torch.autograd.grad(sum((D * (k + 1)).sum() for k, (D, _) in enumerate(res.values())), list(tokens.values()))
    ref_D, total = {}, 0
    for k, (a, b) in enumerate(pairs):
        t = "text" if "text" in (a, b) else "video"
        o = b if t == a else a
        ref_D[pair_key((a, b))] = D = ot_distance(tokens[o], tokens[t], masks[o], masks[t], iters=40)
        total = total + (D * (k + 1)).sum()
    ref = torch.autograd.grad(total, list(tokens.values()))
    for key, (D, _) in res.items():
        torch.testing.assert_close(D, ref_D[key], atol=1e-6, rtol=0)
    for a, b in zip(joint, ref):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
