"""Pretraining losses and held-out distances recomputed from a tiny model's own outputs.

- the total loss is ``mlm + itm + wpa_weight * wpa``, each part recomputed here from
  transformers' ``ViltForMaskedLM`` forward (MLM loss, pooled output, hidden states), the ITM
  head, and :func:`wma_core.ot.ot_distance` on tokens cut out of the hidden states by hand;
  the batch swaps an unequal number of images so that a flipped WPA sign changes the total;
- the ITM labels say which pairs were swapped (1 = the sample's own image);
- the held-out ``d_matched`` / ``d_mismatched`` / ``d_mismatched_hard`` and ITM accuracies equal a
  recomputation from the swapped batches of the same fixed-seed protocol.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from wma_core import pretrain as PT
from wma_core.model import TINY_CONFIG
from wma_core.ot import ot_distance

torch.set_num_threads(1)
SMALL = {**{k: v for k, v in TINY_CONFIG.items() if k != "vocab_size"},
         "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
CFG = PT.PretrainConfig(corpus_n=30, image_size=32, patch_size=16, epochs=1, batch_size=8, lr=1e-3, arch=SMALL, ot_iters=20)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    prepared = PT.corpus_dir(CFG, home)
    tok = PT._tokenizer(prepared)
    specials = [tok.pad_token_id, tok.cls_token_id, tok.sep_token_id, tok.unk_token_id, tok.mask_token_id]
    return prepared, tok, specials


def _pixels(batch, source):
    pixels = (batch["pixel_values"].float() / 255 - 0.5) / 0.5
    return pixels[source], batch["pixel_mask"][source]


@torch.no_grad()
def _ref_distances(model, batch, source, cfg):
    """Per sample: D(image tokens without CLS, text tokens without CLS and [SEP]) from the
    hidden states of transformers' ViltModel, with the sample's (possibly swapped) image.
    Also returns the pooled output."""
    pixels, pmask = _pixels(batch, source)
    out = model.mlm.vilt(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                         pixel_values=pixels, pixel_mask=pmask)
    h = out.last_hidden_state
    L = batch["input_ids"].shape[1]
    ds = []
    for i in range(len(source)):
        n = int(batch["attention_mask"][i].sum())
        text = h[i, 1:n - 1]
        hh, ww = (int(x) for x in pmask[i].nonzero().max(0).values + 1)
        image = h[i, L + 1:L + 1 + (hh // cfg.patch_size) * (ww // cfg.patch_size)]  # valid patches come first
        ds.append(float(ot_distance(image[None], text[None], iters=cfg.ot_iters)[0]))
    return np.array(ds), out.pooler_output


def _own_image_labels(source, image_ids):
    """1 where the sample kept its own image, 0 where it got another one (of another picture)."""
    lab = (source == torch.arange(len(source))).long()
    assert (image_ids[source][lab == 0] != image_ids[lab == 0]).all()
    return lab


@pytest.mark.parametrize("itm_neg,wpa_weight", [(0.25, 0.5), (0.5, 0.1)])
def test_total_loss_is_mlm_plus_itm_plus_weighted_wpa(corpus, itm_neg, wpa_weight):
    prepared, tok, specials = corpus
    cfg = replace(CFG, itm_neg=itm_neg, wpa_weight=wpa_weight)
    split = PT.CaptionSplit(prepared, "train")
    batch = split.batch(split.batches(8)[0])
    model = PT.build_pretrainer(cfg, len(tok)).eval()
    g, g_copy = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    with torch.no_grad():
        parts = model.losses(batch, g, specials, tok.mask_token_id, cfg)
        masked, labels = PT.mask_tokens(batch["input_ids"], batch["attention_mask"], specials, len(tok), g_copy,
                                        cfg.mlm_prob, tok.mask_token_id)
        source, itm_labels = PT.swap_images(batch["image_ids"], g_copy, cfg.itm_neg, input_ids=batch["input_ids"],
                                            hard=cfg.itm_hard, special_ids=specials)
        lab = _own_image_labels(source, batch["image_ids"])
        assert torch.equal(itm_labels, lab)
        assert int((lab == 0).sum()) == int(itm_neg * len(lab))
        pix, pm = _pixels(batch, torch.arange(len(source)))
        mlm = float(model.mlm(input_ids=masked, attention_mask=batch["attention_mask"], pixel_values=pix,
                              pixel_mask=pm, labels=labels).loss)
        D, pooled = _ref_distances(model, batch, source, cfg)
        logp = torch.log_softmax(model.itm(pooled), -1)
        itm = float(-logp[torch.arange(len(lab)), lab].mean())
    sign = lab.numpy() * 2.0 - 1.0  # +1 matched, -1 swapped
    wpa = float((sign * D).sum() / len(D))
    assert float(parts["mlm"]) == pytest.approx(mlm, abs=1e-4)
    assert float(parts["itm"]) == pytest.approx(itm, abs=1e-4)
    assert float(parts["wpa"]) == pytest.approx(wpa, abs=1e-4)
    total = mlm + itm + cfg.wpa_weight * wpa
    assert float(parts["loss"]) == pytest.approx(total, abs=2e-4)
    if itm_neg != 0.5:  # unequal halves: the WPA term is far from 0, so its sign shows in the total
        assert abs(2 * cfg.wpa_weight * wpa) > 0.05
    acc = float((model.itm(pooled).argmax(1) == lab).float().mean())
    assert float(parts["itm_acc"]) == pytest.approx(acc)


def test_held_out_distances_and_itm_accuracy_recomputed(corpus):
    prepared, tok, specials = corpus
    cfg = CFG
    split = PT.CaptionSplit(prepared, "dev")
    model = PT.build_pretrainer(cfg, len(tok)).eval()
    with torch.no_grad():  # an ITM head that is not constant, so that accuracies depend on the labels
        model.itm.weight.normal_(0, 1.0, generator=torch.Generator().manual_seed(0))
    res = PT.evaluate_heldout(model, split, tok, cfg, batch_size=8)
    gen = torch.Generator().manual_seed(12345)  # the protocol's fixed seed
    pos, neg, hard_neg, right, right_hard, total = [], [], [], 0, 0, 0
    for idx in split.batches(8):
        b = split.batch(idx)
        for hard in (0.0, 1.0):
            source, labels = PT.swap_images(b["image_ids"], gen, cfg.itm_neg, input_ids=b["input_ids"], hard=hard,
                                            special_ids=specials)
            lab = _own_image_labels(source, b["image_ids"])
            assert torch.equal(labels, lab)
            D, pooled = _ref_distances(model, b, source, cfg)
            ok = int((model.itm(pooled).argmax(1) == lab).sum())
            m = lab.numpy() == 1
            if hard:
                hard_neg += list(D[~m])
                right_hard += ok
            else:
                pos += list(D[m])
                neg += list(D[~m])
                right += ok
                total += len(lab)
    assert res["n_pairs"] == total
    assert abs(np.mean(pos) - np.mean(neg)) > 1e-3, "matched and mismatched pairs must be told apart here"
    assert res["d_matched"] == pytest.approx(np.mean(pos), abs=1e-5)
    assert res["d_mismatched"] == pytest.approx(np.mean(neg), abs=1e-5)
    assert res["d_mismatched_hard"] == pytest.approx(np.mean(hard_neg), abs=1e-5)
    assert res["itm_accuracy"] == pytest.approx(right / total)
    assert res["itm_accuracy_hard"] == pytest.approx(right_hard / total)
