"""Tests of wma_core.model against transformers' ViltModel (the reference implementation).

A small random ViLT (hidden 32, 2 layers, 2 heads) keeps this fast. ViltModel's image
embedding visits patches in a random order, so image tokens are compared as a set (Hungarian
matching on pairwise distances) and text tokens token for token. The perturbation hooks are
checked by building the perturbed embeddings by hand and running transformers' own modules.
"""

from __future__ import annotations

import copy
import os
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist
from torch import nn
from transformers import ViltConfig, ViltForMaskedLM, ViltModel

from wma_core import perturb as P
from wma_core.embeddings import visual_embed_raster
from wma_core.model import TaskHead, WMAClassifier, WMAVilt, load_vilt

SMALL = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    image_size=64,
    patch_size=16,
    max_position_embeddings=40,
    vocab_size=100,
    max_image_length=-1,
)
PATCH = 16
CLS_ID, SEP_ID = 1, 2
TEXT_LENS = [7, 4, 2]  # with [CLS] and [SEP]; the last sample has no word token at all
LT = 8
IMAGE_HW = [(64, 64), (32, 96), (48, 32)]  # pixels; batch canvas 64 x 96 -> grid 4 x 6
H, W = 64, 96
ATOL = 1e-5


def randomise(module: nn.Module, seed: int = 0) -> nn.Module:
    """Random values for every weight, including those ViLT initialises to zero (CLS token,
    image position embeddings), so that no comparison passes because a term is zero."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if "layernorm" in name.lower() and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * noise)
            else:
                p.copy_(0.3 * noise)
    return module


@pytest.fixture(scope="module")
def model() -> WMAVilt:
    return randomise(load_vilt("tiny", **SMALL)).eval()


def make_batch(seed: int = 0, uint8: bool = False):
    g = torch.Generator().manual_seed(seed)
    B = len(TEXT_LENS)
    input_ids = torch.zeros(B, LT, dtype=torch.long)
    attention_mask = torch.zeros(B, LT, dtype=torch.long)
    for b, n in enumerate(TEXT_LENS):
        input_ids[b, :n] = torch.randint(3, SMALL["vocab_size"], (n,), generator=g)
        input_ids[b, 0], input_ids[b, n - 1] = CLS_ID, SEP_ID
        attention_mask[b, :n] = 1
    if uint8:
        pixel_values = torch.randint(0, 256, (B, 3, H, W), generator=g, dtype=torch.uint8)
    else:
        pixel_values = torch.randn(B, 3, H, W, generator=g)
    pixel_mask = torch.zeros(B, H, W, dtype=torch.long)
    for b, (h, w) in enumerate(IMAGE_HW):
        pixel_mask[b, :h, :w] = 1
    return dict(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values, pixel_mask=pixel_mask)


def n_patches(b: int) -> int:
    h, w = IMAGE_HW[b]
    return (h // PATCH) * (w // PATCH)


def assert_same_set(a: torch.Tensor, b: torch.Tensor, atol: float = ATOL):
    """Every row of ``a`` [n, h] matches a distinct row of ``b`` [n', h >= n] within ``atol``."""
    a, b = a.detach().double().numpy(), b.detach().double().numpy()
    assert a.shape[0] <= b.shape[0]
    r, c = linear_sum_assignment(cdist(a, b))
    assert len(r) == a.shape[0]
    err = np.abs(a[r] - b[c]).max()
    assert err <= atol, f"image tokens differ as sets by {err}"


def compare_with_reference(out, ref_hidden, batch, atol=ATOL):
    """Our output vs ViltModel's: text token for token, image CLS, image tokens as a set."""
    Lt = batch["input_ids"].shape[1]
    torch.testing.assert_close(out.last_hidden_state[:, :Lt], ref_hidden[:, :Lt], atol=atol, rtol=0)
    torch.testing.assert_close(out.last_hidden_state[:, Lt], ref_hidden[:, Lt], atol=atol, rtol=0)
    for b in range(ref_hidden.shape[0]):
        ours = out.last_hidden_state[b, Lt + 1 :][out.attention_mask[b, Lt + 1 :].bool()]
        assert ours.shape[0] == n_patches(b)
        assert_same_set(ours, ref_hidden[b, Lt + 1 :], atol)


# -- equality with ViltModel ----------------------------------------------------------------
@torch.no_grad()
def test_matches_vilt_model_ragged_batch(model):
    batch = make_batch(0)
    out = model(**batch)
    ref = model.vilt(**batch)
    compare_with_reference(out, ref.last_hidden_state, batch)
    torch.testing.assert_close(out.pooler_output, ref.pooler_output, atol=ATOL, rtol=0)
    # the image part of ViltModel is max(h_i * w_i) long, and so is ours: each sample's valid
    # patches come first, and the columns of the 4 x 6 grid that are padding in every sample are cut
    assert ref.last_hidden_state.shape[1] == LT + 1 + max(n_patches(b) for b in range(3))
    assert out.last_hidden_state.shape == ref.last_hidden_state.shape
    for b in range(3):
        pad = out.attention_mask.shape[1] - LT - 1 - n_patches(b)
        assert out.attention_mask[b, LT + 1:].tolist() == [1] * n_patches(b) + [0] * pad
    assert torch.equal(out.attention_mask[:, :LT], batch["attention_mask"])


@torch.no_grad()
def test_matches_vilt_model_uint8_pixels(model):
    batch = make_batch(1, uint8=True)
    out = model(**batch)
    ref_batch = dict(batch, pixel_values=(batch["pixel_values"].float() / 255.0 - 0.5) / 0.5)
    compare_with_reference(out, model.vilt(**ref_batch).last_hidden_state, batch)
    # and the same as feeding the normalised floats to our model
    torch.testing.assert_close(model(**ref_batch).last_hidden_state, out.last_hidden_state, atol=1e-6, rtol=0)


@torch.no_grad()
def test_hf_patch_order_token_for_token(model):
    hf = WMAVilt(model.vilt, patch_order="hf").eval()
    batch = make_batch(2)
    torch.manual_seed(123)
    out = hf(**batch)
    torch.manual_seed(123)
    ref = model.vilt(**batch)
    torch.testing.assert_close(out.last_hidden_state, ref.last_hidden_state, atol=ATOL, rtol=0)
    assert out.token_masks["image"].sum(1).tolist() == [n_patches(b) for b in range(3)]
    # raster order gives the same tokens as a set
    compare_with_reference(model(**batch), ref.last_hidden_state, batch)


@torch.no_grad()
def test_sdpa_matches_eager(model):
    sdpa = WMAVilt(model.vilt, attn="sdpa").eval()
    batch = make_batch(3)
    a, b = model(**batch), sdpa(**batch)
    torch.testing.assert_close(b.last_hidden_state, a.last_hidden_state, atol=ATOL, rtol=0)
    torch.testing.assert_close(b.pooler_output, a.pooler_output, atol=ATOL, rtol=0)


def test_constructor_errors(model):
    with pytest.raises(ValueError):
        WMAVilt(model.vilt, patch_order="random")
    with pytest.raises(ValueError):
        WMAVilt(model.vilt, attn="flash")
    with pytest.raises(ValueError):
        model(input_ids=make_batch()["input_ids"])  # no pixels


# -- token split --------------------------------------------------------------------------
@pytest.mark.parametrize("drop_sep", [True, False])
@torch.no_grad()
def test_token_split(model, drop_sep):
    m = WMAVilt(model.vilt, drop_sep=drop_sep).eval()
    batch = make_batch(4)
    out = m(**batch)
    h = SMALL["hidden_size"]
    n_img = max(n_patches(b) for b in range(3))  # valid patches first, the shared padding cut
    assert out.tokens["text"].shape == (3, LT - 1, h) and out.token_masks["text"].shape == (3, LT - 1)
    assert out.tokens["image"].shape == (3, n_img, h) and out.token_masks["image"].shape == (3, n_img)
    assert out.token_masks["text"].dtype == torch.bool and out.token_masks["image"].dtype == torch.bool
    lhs = out.last_hidden_state
    assert torch.equal(out.tokens["text"], lhs[:, 1:LT]) and torch.equal(out.cls["text"], lhs[:, 0])
    assert torch.equal(out.tokens["image"], lhs[:, LT + 1 :]) and torch.equal(out.cls["image"], lhs[:, LT])
    # text: position k of tokens is sequence position k + 1; CLS, padding and (optionally) SEP off
    for b, n in enumerate(TEXT_LENS):
        end = n - 1 if drop_sep else n  # exclusive end of the kept sequence positions
        expected = [k + 1 < end for k in range(LT - 1)]
        assert out.token_masks["text"][b].tolist() == expected
        ids = batch["input_ids"][b, 1:][out.token_masks["text"][b]]
        assert CLS_ID not in ids.tolist() and 0 not in ids.tolist()
        assert (SEP_ID in ids.tolist()) == (not drop_sep and n >= 2)
    assert out.token_masks["text"].sum(1).tolist() == [n - (2 if drop_sep else 1) for n in TEXT_LENS]
    assert out.token_masks["image"].sum(1).tolist() == [n_patches(b) for b in range(3)]


# -- perturbations through the model ----------------------------------------------------------
@contextmanager
def text_hook(vilt: ViltModel, fn):
    """Apply ``fn`` to the output of ViltModel's text embedding (after its LayerNorm)."""
    handle = vilt.embeddings.text_embeddings.register_forward_hook(lambda mod, inp, out: fn(out))
    try:
        yield
    finally:
        handle.remove()


def missing_and_kept(p, n_total):
    gone = P.missing_samples(p, torch.arange(n_total))
    return torch.nonzero(gone).flatten().tolist(), torch.nonzero(~gone).flatten().tolist()


@torch.no_grad()
def test_text_noise_changes_output_and_matches_manual_embedding(model):
    batch = make_batch(5)
    ids = torch.tensor([11, 3, 7])
    p = P.Perturbation(kind="noise", modality="text", seed=0)
    normal = model(**batch)
    noisy = model(**batch, perturbation=p, sample_ids=ids)
    assert (noisy.last_hidden_state - normal.last_hidden_state).abs().max() > 1e-2
    assert (noisy.tokens["image"] - normal.tokens["image"]).abs().max() > 1e-3  # attention mixes
    # reference: transformers' ViltModel with the noise added after the text LayerNorm
    noise = P.apply(p, "text", torch.zeros(3, LT, SMALL["hidden_size"]), ids)
    assert torch.equal(noise[:, 0], torch.zeros(3, SMALL["hidden_size"]))
    with text_hook(model.vilt, lambda e: e + noise):
        ref = model.vilt(**batch).last_hidden_state
    compare_with_reference(noisy, ref, batch)


@torch.no_grad()
def test_text_missing_matches_manual_and_spares_other_samples(model):
    n_total = 10
    p = P.Perturbation(kind="missing", modality="text", seed=1).for_split(n_total)
    gone, kept = missing_and_kept(p, n_total)
    ids = torch.tensor([kept[0], gone[0], kept[1]])
    batch = make_batch(6)
    normal = model(**batch)
    pert = model(**batch, perturbation=p, sample_ids=ids)
    for b in (0, 2):  # not in the missing set: unchanged
        torch.testing.assert_close(pert.last_hidden_state[b], normal.last_hidden_state[b], atol=1e-6, rtol=0)
    assert (pert.last_hidden_state[1] - normal.last_hidden_state[1]).abs().max() > 1e-2

    def zero_rows(e):
        e = e.clone()
        e[1, 1:] = 0.0
        return e

    with text_hook(model.vilt, zero_rows):
        ref = model.vilt(**batch).last_hidden_state
    compare_with_reference(pert, ref, batch)


def _hf_image_embeds(model, batch, seed):
    """ViltModel's own image embedding and the canonical index (row * w_i + col) of each patch."""
    torch.manual_seed(seed)
    x, x_mask, (patch_index, _) = model.vilt.embeddings.visual_embed(
        batch["pixel_values"], batch["pixel_mask"], max_image_length=-1
    )
    w = torch.tensor([w // PATCH for _, w in IMAGE_HW])
    canon = patch_index[..., 0] * w[:, None] + patch_index[..., 1]
    canon = torch.where(x_mask[:, 1:].bool(), canon, torch.full_like(canon, -1))
    return x, x_mask, canon


@pytest.mark.parametrize("kind", ["noise", "missing"])
@torch.no_grad()
def test_image_perturbation_matches_manual_embedding(model, kind):
    batch = make_batch(7)
    n_total = 10
    p = P.Perturbation(kind=kind, modality="image", seed=2).for_split(n_total)
    gone, kept = missing_and_kept(p, n_total)
    ids = torch.tensor([gone[0], kept[0], gone[1]])
    out = model(**batch, perturbation=p, sample_ids=ids)
    normal = model(**batch)
    assert (out.last_hidden_state - normal.last_hidden_state).abs().max() > 1e-2
    # reference: perturb ViltModel's embedding (random patch order) at the patch's canonical
    # index, then run ViltModel on it through its image_embeds input
    x, x_mask, canon = _hf_image_embeds(model, batch, seed=11)
    if kind == "noise":
        x = x + P.apply(p, "image", torch.zeros_like(x), ids, canon)
    else:
        x = x.clone()
        for b, i in enumerate(ids.tolist()):
            if i in gone:
                x[b, 1:] = 0.0
    ref = model.vilt(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], image_embeds=x, pixel_mask=x_mask
    ).last_hidden_state
    compare_with_reference(out, ref, batch)


@pytest.mark.parametrize("modality", ["text", "image"])
@torch.no_grad()
def test_perturbation_keeps_cls_rows_and_other_modality(model, modality):
    batch = make_batch(8)
    ids = torch.tensor([0, 1, 2])
    for kind in ("noise", "missing"):
        p = P.Perturbation(kind=kind, modality=modality, rate=1.0).for_split(3)
        e0, m0, spans = model.embed_image_text(**batch)
        e1, m1, _ = model.embed_image_text(**batch, perturbation=p, sample_ids=ids)
        assert torch.equal(m0, m1)  # masks unchanged
        s, e = spans[modality]
        other = spans["image" if modality == "text" else "text"]
        assert torch.equal(e1[:, s], e0[:, s])  # the perturbed modality's CLS row
        assert torch.equal(e1[:, other[0] : other[1]], e0[:, other[0] : other[1]])
        assert (e1[:, s + 1 : e] - e0[:, s + 1 : e]).abs().amin(dim=-1).gt(0).any()
        if kind == "missing":
            # features zeroed before the modality-type embedding: what is left is that row
            type_row = model.vilt.embeddings.token_type_embeddings.weight[0 if modality == "text" else 1]
            torch.testing.assert_close(e1[:, s + 1 : e], type_row.expand_as(e1[:, s + 1 : e]), atol=0, rtol=0)


# -- feature-sequence modalities ----------------------------------------------------------------
FEATS = {"text": 300, "video": 35, "audio": 74}


@pytest.fixture(scope="module")
def feature_model():
    return load_vilt("tiny", feature_dims=FEATS, feature_len=50, **SMALL).eval()


def make_features(seed=0, T=12, lens=(12, 5)):
    g = torch.Generator().manual_seed(seed)
    B = len(lens)
    feats = {m: torch.randn(B, T, d, generator=g) for m, d in FEATS.items()}
    masks = {m: (torch.arange(T)[None, :] < torch.tensor(lens)[:, None]) for m in FEATS}
    masks["audio"] = masks["audio"].clone()
    masks["audio"][1, 3:] = False  # modalities may have different valid lengths
    return feats, masks


def test_feature_modality_type_table(feature_model):
    table = feature_model.vilt.embeddings.token_type_embeddings.weight
    assert table.shape == (3, SMALL["hidden_size"])
    assert torch.equal(table[2], table[1]) and not torch.equal(table[0], table[1])
    plain = load_vilt("tiny", **SMALL)  # same init_seed: rows 0 and 1 are the pretrained ones
    torch.testing.assert_close(table[:2], plain.vilt.embeddings.token_type_embeddings.weight, atol=0, rtol=0)
    assert feature_model.modalities == ("text", "video", "audio")


@torch.no_grad()
@pytest.mark.parametrize("order", [("text", "video", "audio"), ("audio", "text", "video"), ("video", "audio", "text")])
def test_feature_type_rows_go_by_name_not_position(order):
    """The first layer's input, built by hand: LN(proj + CLS + positions) + the row named for the modality."""
    dims = {m: FEATS[m] for m in order}
    model = load_vilt("tiny", feature_dims=dims, feature_len=50, attn="eager", **SMALL).eval()
    plain = load_vilt("tiny", **SMALL).vilt.embeddings.token_type_embeddings.weight  # pretrained rows 0, 1
    expected_row = {"text": plain[0], "video": plain[1], "audio": plain[1]}  # audio: a new row copied from 1
    feats, masks = make_features()
    seen = {}
    hook = model.vilt.encoder.layer[0].register_forward_pre_hook(lambda mod, args: seen.setdefault("h", args[0]))
    model(features=feats, feature_masks=masks)
    hook.remove()
    B, T = feats["text"].shape[:2]
    start = 0
    for m in order:
        emb = model.features[m]
        x = torch.cat([emb.cls.expand(B, 1, -1), feats[m] @ emb.proj.weight.T + emb.proj.bias], dim=1) + emb.pos[:, : T + 1]
        mu, var = x.mean(-1, keepdim=True), x.var(-1, unbiased=False, keepdim=True)
        x = (x - mu) / torch.sqrt(var + model.config.layer_norm_eps) * emb.norm.weight + emb.norm.bias
        torch.testing.assert_close(seen["h"][:, start : start + T + 1], x + expected_row[m], rtol=1e-5, atol=1e-5,
                                   msg=f"{m} in order {order}")
        start += T + 1
    rows = model.vilt.embeddings.token_type_embeddings.weight
    assert rows.shape[0] == 3 and torch.equal(rows[2], plain[1])


@torch.no_grad()
def test_feature_tokens_enter_at_the_text_tokens_scale():
    """With the LayerNorm, a feature token has the norm of a text embedding token (about sqrt(h)), not
    the projection's small one; without it (``feature_norm=False``) it stays far below."""
    feats, _ = make_features()
    h = SMALL["hidden_size"]
    with_ln = load_vilt("tiny", feature_dims=FEATS, **SMALL).features["video"](feats["video"])
    without = load_vilt("tiny", feature_dims=FEATS, feature_norm=False, **SMALL).features["video"](feats["video"])
    ids = torch.randint(5, 100, (2, 12), generator=torch.Generator().manual_seed(0))
    text = load_vilt("tiny", **SMALL).vilt.embeddings.text_embeddings(input_ids=ids)
    n_with, n_without, n_text = (t[:, 1:].norm(dim=-1).mean().item() for t in (with_ln, without, text))
    assert abs(n_with - h ** 0.5) < 0.05 * h ** 0.5 and abs(n_text - n_with) < 0.2 * n_text
    assert n_without < 0.25 * n_text


@torch.no_grad()
def test_feature_spans_and_masks(feature_model):
    feats, masks = make_features()
    T, h = 12, SMALL["hidden_size"]
    out = feature_model(features=feats, feature_masks=masks)
    assert out.last_hidden_state.shape == (2, 3 * (1 + T), h)
    for i, m in enumerate(FEATS):
        s = i * (1 + T)
        assert torch.equal(out.cls[m], out.last_hidden_state[:, s])
        assert torch.equal(out.tokens[m], out.last_hidden_state[:, s + 1 : s + 1 + T])
        assert torch.equal(out.token_masks[m], masks[m])  # no [SEP] dropped for feature text
        assert torch.equal(out.attention_mask[:, s], torch.ones(2, dtype=torch.long))
    with pytest.raises(ValueError):
        feature_model(features={m: torch.randn(1, 51, d) for m, d in FEATS.items()})
    with pytest.raises(KeyError):
        feature_model(features={"text": feats["text"]}, feature_masks=masks)


@torch.no_grad()
def test_feature_padding_does_not_influence_valid_outputs(feature_model):
    feats, masks = make_features(1)
    out = feature_model(features=feats, feature_masks=masks)
    g = torch.Generator().manual_seed(5)
    garbage = {m: torch.where(masks[m][..., None], f, 1e3 * torch.randn(f.shape, generator=g)) for m, f in feats.items()}
    out2 = feature_model(features=garbage, feature_masks=masks)
    assert not torch.allclose(out.last_hidden_state, out2.last_hidden_state)  # padded rows did change
    valid = out.attention_mask.bool()
    torch.testing.assert_close(out2.last_hidden_state[valid], out.last_hidden_state[valid], atol=ATOL, rtol=0)
    torch.testing.assert_close(out2.pooler_output, out.pooler_output, atol=ATOL, rtol=0)


@torch.no_grad()
def test_feature_perturbation(feature_model):
    feats, masks = make_features(2)
    ids = torch.tensor([0, 1])
    p = P.Perturbation(kind="noise", modality="video")
    e0, _, spans = feature_model.embed_features(feats, masks)
    e1, _, _ = feature_model.embed_features(feats, masks, perturbation=p, sample_ids=ids)
    s, e = spans["video"]
    assert torch.equal(e1[:, : s + 1], e0[:, : s + 1]) and torch.equal(e1[:, e:], e0[:, e:])
    assert (e1[:, s + 1 : e] - e0[:, s + 1 : e]).abs().max() > 0.5
    out = feature_model(features=feats, feature_masks=masks, perturbation=p, sample_ids=ids)
    assert (out.tokens["text"] - feature_model(features=feats, feature_masks=masks).tokens["text"]).abs().max() > 1e-3


# -- loading --------------------------------------------------------------------------------
@torch.no_grad()
def test_load_from_save_pretrained_folder(tmp_path):
    vm = randomise(ViltModel(ViltConfig(**SMALL)), seed=3).eval()
    vm.save_pretrained(tmp_path)
    loaded = load_vilt(str(tmp_path)).eval()
    ours, theirs = loaded.vilt.state_dict(), vm.state_dict()
    assert set(ours) == set(theirs)
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    batch = make_batch(9)
    out = loaded(**batch)
    torch.testing.assert_close(out.last_hidden_state, WMAVilt(vm)(**batch).last_hidden_state, atol=0, rtol=0)
    compare_with_reference(out, vm(**batch).last_hidden_state, batch)


def test_load_from_task_checkpoint_folder(tmp_path):
    mlm = ViltForMaskedLM(ViltConfig(**SMALL))
    mlm.save_pretrained(tmp_path)
    loaded = load_vilt(str(tmp_path))
    ours, theirs = loaded.vilt.state_dict(), mlm.vilt.state_dict()
    assert set(ours) == set(theirs) and all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_hub_name_offline_raises_oserror(tmp_path, monkeypatch):
    import huggingface_hub.constants as hub_constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    name = "dandelin/vilt-b32-mlm"
    with pytest.raises(OSError, match=name):
        load_vilt(name, cache_dir=str(tmp_path / "empty_cache"))
    assert os.environ["HF_HUB_OFFLINE"] == "1"


def test_init_seed_is_deterministic():
    a = load_vilt("tiny", init_seed=1, feature_dims={"text": 7, "audio": 5}, feature_len=4, **SMALL)
    b = load_vilt("tiny", init_seed=1, feature_dims={"text": 7, "audio": 5}, feature_len=4, **SMALL)
    c = load_vilt("tiny", init_seed=2, feature_dims={"text": 7, "audio": 5}, feature_len=4, **SMALL)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa if k.endswith("weight"))
    assert any(not torch.equal(sa[k], sc[k]) for k in sa if k.startswith("features."))


# -- heads and precision ---------------------------------------------------------------------
def test_task_head_structure():
    head = TaskHead(32, 5)
    kinds = [type(m) for m in head]
    assert kinds == [nn.Linear, nn.LayerNorm, nn.GELU, nn.Linear]
    assert (head[0].in_features, head[0].out_features) == (32, 64)
    assert head[1].normalized_shape == (64,)
    assert (head[3].in_features, head[3].out_features) == (64, 5)


@pytest.mark.parametrize("n_out", [1, 23])
@torch.no_grad()
def test_classifier_shapes(model, feature_model, n_out):
    clf = WMAClassifier(model, n_out).eval()
    batch = dict(make_batch(10), ids=torch.tensor([0, 1, 2]))
    logits, out = clf(batch)
    assert logits.shape == (3, n_out) and torch.isfinite(logits).all()
    torch.testing.assert_close(logits, clf.head(out.pooler_output))
    assert clf.modalities == ("text", "image")
    logits_p, _ = clf(batch, P.Perturbation(kind="noise", modality="image"))
    assert not torch.allclose(logits_p, logits)
    feats, masks = make_features(3)
    fclf = WMAClassifier(feature_model, n_out).eval()
    flogits, _ = fclf({"features": feats, "feature_masks": masks, "ids": torch.tensor([0, 1])})
    assert flogits.shape == (2, n_out)


@torch.no_grad()
def test_mean_readout_matches_vilt_model_real_tokens(model):
    """``readout="mean"``: the head reads the mean of ViltModel's own output over the tokens its
    own embedding marks as real (text without padding, image CLS, valid patches)."""
    clf = WMAClassifier(model, 3, readout="mean").eval()
    batch = make_batch(6)
    masks = []
    hook = model.vilt.embeddings.register_forward_hook(lambda mod, args, out: masks.append(out[1]))
    try:
        ref = model.vilt(**batch)
    finally:
        hook.remove()
    (ref_mask,) = masks
    assert ref_mask.shape == ref.last_hidden_state.shape[:2]
    ref_mean = torch.stack([ref.last_hidden_state[b][ref_mask[b].bool()].mean(0) for b in range(3)])
    logits, out = clf(dict(batch, ids=torch.tensor([0, 1, 2])))
    torch.testing.assert_close(logits, clf.head(ref_mean), atol=1e-4, rtol=0)
    # and not the pooler's read-out of the same tokens
    assert not torch.allclose(logits, clf.head(out.pooler_output), atol=1e-3)


@torch.no_grad()
def test_mean_readout_ignores_padding(model):
    """Padded text ids and pixels outside the pixel mask move no logit; a real word does."""
    clf = WMAClassifier(model, 1, readout="mean").eval()
    batch = dict(make_batch(7), ids=torch.tensor([0, 1, 2]))
    logits, _ = clf(batch)
    padded = dict(batch, input_ids=batch["input_ids"].clone(), pixel_values=batch["pixel_values"].clone())
    pad_text = batch["attention_mask"] == 0
    padded["input_ids"][pad_text] = 5
    padded["pixel_values"][~batch["pixel_mask"].bool().unsqueeze(1).expand_as(batch["pixel_values"])] = 9.0
    torch.testing.assert_close(clf(padded)[0], logits, atol=1e-5, rtol=0)
    word = dict(batch, input_ids=batch["input_ids"].clone())
    word["input_ids"][0, 2] = (int(batch["input_ids"][0, 2]) + 1) % SMALL["vocab_size"]
    assert not torch.allclose(clf(word)[0][0], logits[0], atol=1e-5)


def test_unknown_readout_is_refused(model):
    with pytest.raises(ValueError, match="readout"):
        WMAClassifier(model, 1, readout="cls")


@torch.no_grad()
def test_head_runs_in_float32_under_bf16_autocast(model):
    # bf16 logits would tie samples that differ by less than 2^-8 relative, and ties move AUROC
    clf = WMAClassifier(model, 1).eval()
    batch = dict(make_batch(12), ids=torch.tensor([0, 1, 2]))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, out = clf(batch)
    assert out.pooler_output.dtype == torch.bfloat16  # the backbone did run in bf16
    assert logits.dtype == torch.float32
    torch.testing.assert_close(logits, clf.head(out.pooler_output.float()))
    ref, _ = clf(batch)  # float32 throughout: bf16 moves the logits by the tokens' rounding only
    torch.testing.assert_close(logits, ref, atol=0.05, rtol=0.05)


@torch.no_grad()
def test_bf16_copy_is_finite(model, feature_model):
    mb = copy.deepcopy(model).to(torch.bfloat16)
    for uint8 in (False, True):
        batch = make_batch(11, uint8=uint8)
        out = mb(**batch)
        assert out.last_hidden_state.dtype == torch.bfloat16
        assert torch.isfinite(out.last_hidden_state).all() and torch.isfinite(out.pooler_output).all()
        ref = model(**batch)
        err = (out.last_hidden_state.float() - ref.last_hidden_state).abs().max()
        assert err < 0.25 * ref.last_hidden_state.abs().max()  # same function, coarser numbers
    fb = copy.deepcopy(feature_model).to(torch.bfloat16)
    feats, masks = make_features(4)
    fout = fb(features=feats, feature_masks=masks)
    assert torch.isfinite(fout.last_hidden_state).all()


@torch.no_grad()
def test_raster_patches_are_packed_in_raster_order(model):
    """Each sample's valid patches come first, in raster order of its own grid (canonical index
    0..n_b-1), then padding (-1); the image part is as long as the largest valid grid."""
    batch = make_batch(5)
    pixels = batch["pixel_values"].float()
    emb, mask, canon = visual_embed_raster(model.vilt.embeddings, model.config, pixels, batch["pixel_mask"])
    n_max = max(n_patches(b) for b in range(3))
    assert emb.shape[1] == 1 + n_max and mask.shape == (3, 1 + n_max) and canon.shape == (3, n_max)
    for b in range(3):
        n = n_patches(b)
        assert canon[b].tolist() == list(range(n)) + [-1] * (n_max - n)
        assert mask[b].tolist() == [1] * (1 + n) + [0] * (n_max - n)
    # a batch of one shape keeps the whole grid, untouched
    same = dict(batch, pixel_mask=torch.ones_like(batch["pixel_mask"]))
    _, mask1, canon1 = visual_embed_raster(model.vilt.embeddings, model.config, pixels, same["pixel_mask"])
    assert canon1.shape == (3, (H // PATCH) * (W // PATCH)) and bool(mask1.all())
