"""Pretraining: the caption corpus and its reader, ViLT's three objectives, the checkpoint folder.

References are independent of the code under test: COCO's schema and the pixels of the written
images, binomial bounds for the masking rate, transformers' own ``ViltForMaskedLM`` forward
(MLM loss, hidden states), POT's exact EMD for the word-patch distances.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import ot as pot
import pytest
import torch
from PIL import Image
from scipy.stats import binom
from transformers import ViltForMaskedLM

from data_prep.config import PrepareConfig, SynthConfig
from data_prep.images import vilt_output_size
from data_prep.issues import DataError
from data_prep.readers.coco import prepare_captions, read_coco_captions
from data_prep.synth import captions as C
from wma_core import pretrain as PT
from wma_core.model import TINY_CONFIG, load_vilt

torch.set_num_threads(1)  # the machine is shared: one thread per test process
SMALL = {**{k: v for k, v in TINY_CONFIG.items() if k != "vocab_size"},
         "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
CFG = PT.PretrainConfig(corpus_n=30, image_size=32, patch_size=16, epochs=2, batch_size=8, lr=1e-3, arch=SMALL, ot_iters=20)


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("coco") / "raw"
    C.synth_captions(out, SynthConfig(n=30, seed=5))
    return out


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("home")


@pytest.fixture(scope="module")
def folder(home, tmp_path_factory) -> Path:
    return PT.pretrain(CFG, tmp_path_factory.mktemp("ck") / "model", home=home, progress=False)


# -- corpus ------------------------------------------------------------------------------------
def test_corpus_has_coco_layout(raw):
    n_images = 0
    for split, folder in (("train", "train2017"), ("val", "val2017")):
        doc = json.loads((raw / "annotations" / f"captions_{folder}.json").read_text())
        assert {"info", "licenses", "images", "annotations"} <= set(doc)
        ids = set()
        for im in doc["images"]:
            assert {"id", "file_name", "width", "height"} <= set(im) and isinstance(im["id"], int)
            assert re.fullmatch(r"\d{12}\.jpg", im["file_name"]) and int(im["file_name"][:12]) == im["id"]
            with Image.open(raw / folder / im["file_name"]) as img:
                assert img.format == "JPEG" and img.size == (im["width"], im["height"])
            ids.add(im["id"])
        n_images += len(ids)
        per_image = {}
        for a in doc["annotations"]:
            assert set(a) == {"id", "image_id", "caption"} and a["image_id"] in ids and a["caption"].strip()
            per_image[a["image_id"]] = per_image.get(a["image_id"], 0) + 1
        assert set(per_image.values()) == {C.CAPTIONS_PER_IMAGE} and set(per_image) == ids
    assert n_images == 30


def test_corpus_seeds_differ_from_the_twins():
    twin = np.random.default_rng(0).random(8)
    assert not np.allclose(C.corpus_rng(0).random(8), twin)


# -- reader ------------------------------------------------------------------------------------
def test_prepare_round_trip(raw, tmp_path):
    man = prepare_captions(raw, tmp_path / "p", PrepareConfig(image_size=32, patch_size=16, progress=False))
    doc = json.loads((raw / "annotations" / "captions_train2017.json").read_text())
    assert man["splits"]["train"] == len(doc["annotations"]) and man["images"]["train"] == len(doc["images"])
    from data_prep.text import load_tokenizer

    tok = load_tokenizer(tmp_path / "p")
    split = PT.CaptionSplit(tmp_path / "p", "train")
    image_ids = json.loads((tmp_path / "p" / "train" / "image_ids.json").read_text())
    by_id = {a["id"]: a for a in doc["annotations"]}
    sizes = {im["id"]: (im["height"], im["width"]) for im in doc["images"]}
    for k, ann_id in enumerate(json.loads((tmp_path / "p" / "train" / "raw_ids.json").read_text())):
        text = tok.decode(split.input_ids[k], skip_special_tokens=True)
        got, want = text.replace(" ", ""), by_id[ann_id]["caption"].lower().replace(" ", "")
        full = bool((split.input_ids[k] != tok.pad_token_id).all())  # cut at max_text_len
        assert got == want or (full and want.startswith(got)), (ann_id, got, want)
        img_id = image_ids[int(split.image_index[k])]
        assert img_id == by_id[ann_id]["image_id"]
        h, w = sizes[img_id]
        got = split.images[int(split.image_index[k])].shape[1:]
        assert tuple(got) == vilt_output_size(h, w, 32, 16)  # ViLT's resize rule


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["annotations"][0].pop("caption"), r"captions_train2017.json annotations\[0\]: missing key 'caption'"),
    (lambda d: d["annotations"][1].update(image_id=-7), r"annotations\[1\] \(id \d+\): image_id -7 is not in 'images'"),
    (lambda d: d["images"][2].update(file_name="../../etc/passwd"), r"images\[2\] \(id \d+\): .*leaves the folder"),
    (lambda d: d["images"][3].update(id=d["images"][0]["id"]), r"images\[3\] \(id \d+\): image id repeated"),
    (lambda d: d["images"][0].update(id="12"), r"images\[0\]: id '12' is not an integer"),
    (lambda d: d.pop("annotations"), r"expected an object with lists 'images' and 'annotations'"),
])
def test_reader_rejects_bad_records(raw, tmp_path, mutate, message):
    bad = tmp_path / "raw"
    shutil.copytree(raw, bad)
    path = bad / "annotations" / "captions_train2017.json"
    doc = json.loads(path.read_text())
    mutate(doc)
    path.write_text(json.dumps(doc))
    with pytest.raises(DataError, match=message):
        read_coco_captions(bad)


def test_missing_image_is_a_counted_skip(raw, tmp_path):
    bad = tmp_path / "raw"
    shutil.copytree(raw, bad)
    doc = json.loads((bad / "annotations" / "captions_train2017.json").read_text())
    (bad / "train2017" / doc["images"][0]["file_name"]).unlink()
    man = prepare_captions(bad, tmp_path / "p", PrepareConfig(image_size=32, patch_size=16, progress=False))
    assert man["dropped"] == {"train": {"missing image": C.CAPTIONS_PER_IMAGE}}
    with pytest.raises(DataError, match="missing image"):
        prepare_captions(bad, tmp_path / "q", PrepareConfig(image_size=32, patch_size=16, progress=False, strict=True))


# -- objectives --------------------------------------------------------------------------------
def test_mask_tokens_rate_and_split():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 300, (400, 40))
    mask = torch.ones_like(ids)
    mask[:, 30:] = 0
    ids[:, 0], ids[:, 29], ids[:, 30:] = 2, 3, 0  # [CLS] ... [SEP] [PAD]
    masked, labels = PT.mask_tokens(ids, mask, (0, 1, 2, 3, 4), 300, g, 0.15, 4)
    chosen = labels != PT.IGNORE
    n_cand = 400 * 28
    lo, hi = binom.ppf([1e-6, 1 - 1e-6], n_cand, 0.15)
    assert lo <= int(chosen.sum()) <= hi
    assert not chosen[:, [0, 29]].any() and not chosen[:, 30:].any()
    assert torch.equal(labels[chosen], ids[chosen]) and torch.equal(masked[~chosen], ids[~chosen])
    k = int(chosen.sum())
    as_mask = int((masked[chosen] == 4).sum())
    kept = int((masked[chosen] == ids[chosen]).sum())
    for count, p in ((as_mask, 0.8), (kept, 0.1 + 0.9 / 295)):
        lo, hi = binom.ppf([1e-6, 1 - 1e-6], k, p)
        assert lo <= count <= hi, (count, p, k)
    assert not torch.isin(masked[chosen & (masked != 4)], torch.tensor([0, 1, 2, 3])).any()


def test_swap_images_labels():
    g = torch.Generator().manual_seed(1)
    image_ids = torch.tensor([0, 0, 1, 2, 3, 3, 4, 5, 6, 7])
    for _ in range(20):
        source, labels = PT.swap_images(image_ids, g, 0.5)
        assert int((labels == 0).sum()) == 5
        assert torch.equal(source[labels == 1], torch.arange(10)[labels == 1])
        assert (image_ids[source[labels == 0]] != image_ids[labels == 0]).all()


def test_hard_negatives_are_the_closest_caption_of_another_picture():
    # token sets (0 = pad, 1 = CLS, 2 = SEP are special); the closest caption by Jaccard similarity
    # of another picture, computed here with Python sets
    captions = [[1, 5, 6, 7, 2], [1, 5, 6, 8, 2], [1, 9, 10, 11, 2, 0], [1, 9, 10, 12, 13, 2],
                [1, 5, 6, 7, 14, 2], [1, 20, 21, 2], [1, 20, 22, 23, 2], [1, 7, 24, 2]]
    L = max(map(len, captions))
    ids = torch.tensor([c + [0] * (L - len(c)) for c in captions])
    image_ids = torch.tensor([0, 1, 2, 3, 0, 4, 5, 6])  # captions 0 and 4 show the same picture
    sets = [set(c) - {0, 1, 2} for c in captions]

    def closest(i):
        cands = [j for j in range(len(sets)) if image_ids[j] != image_ids[i]]
        return max(cands, key=lambda j: len(sets[i] & sets[j]) / len(sets[i] | sets[j]))

    g = torch.Generator().manual_seed(0)
    for _ in range(10):
        source, labels = PT.swap_images(image_ids, g, 0.5, input_ids=ids, hard=1.0, special_ids=(0, 1, 2))
        negs = torch.nonzero(labels == 0).flatten().tolist()
        assert len(negs) == 4
        assert [int(source[i]) for i in negs] == [closest(i) for i in negs]
    with pytest.raises(ValueError, match="input_ids"):
        PT.swap_images(image_ids, g, 0.5, hard=1.0)


def _batch(folder_home: Path):
    prepared = PT.corpus_dir(CFG, folder_home)
    split = PT.CaptionSplit(prepared, "train")
    return split, split.batch(split.batches(8)[0]), PT._tokenizer(prepared)


def test_losses_against_independent_computations(home):
    split, batch, tok = _batch(home)
    cfg = replace(CFG, ot_iters=200)
    model = PT.build_pretrainer(cfg, len(tok))
    model.eval()
    specials = [tok.pad_token_id, tok.cls_token_id, tok.sep_token_id, tok.unk_token_id, tok.mask_token_id]
    g = torch.Generator().manual_seed(3)
    g_copy = torch.Generator().manual_seed(3)
    with torch.no_grad():
        parts = model.losses(batch, g, specials, tok.mask_token_id, cfg)
        masked, labels = PT.mask_tokens(batch["input_ids"], batch["attention_mask"], specials, len(tok), g_copy, 0.15, tok.mask_token_id)
        source, itm_labels = PT.swap_images(batch["image_ids"], g_copy, 0.5, input_ids=batch["input_ids"],
                                            hard=cfg.itm_hard, special_ids=specials)
        pixels = (batch["pixel_values"].float() / 255 - 0.5) / 0.5
        pmask = batch["pixel_mask"]
        assert (pmask == 0).any(), "the batch should mix image shapes (padding)"
        # MLM: transformers' own forward and loss on the same masked batch
        ref = model.mlm(input_ids=masked, attention_mask=batch["attention_mask"], pixel_values=pixels,
                        pixel_mask=pmask, labels=labels)
        assert float(parts["mlm"]) == pytest.approx(float(ref.loss), abs=1e-4)
        # ITM: transformers' pooled output, the head, cross-entropy by hand
        pooled = model.mlm.vilt(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                pixel_values=pixels[source], pixel_mask=pmask[source]).pooler_output
        logp = torch.log_softmax(model.itm(pooled), -1)
        assert float(parts["itm"]) == pytest.approx(float(-logp[torch.arange(len(source)), itm_labels].mean()), abs=1e-4)
        # WPA: exact EMD (POT) between image tokens (CLS dropped) and text tokens (CLS, [SEP] dropped)
        out = model.mlm.vilt(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                             pixel_values=pixels[source], pixel_mask=pmask[source])
    h = out.last_hidden_state.numpy().astype(np.float64)
    patch = CFG.patch_size
    L = batch["input_ids"].shape[1]
    total = 0.0
    for i in range(len(source)):
        n = int(batch["attention_mask"][i].sum())
        text = h[i, 1:n - 1]
        hh, ww = (int(x) for x in pmask[source[i]].nonzero().max(0).values + 1)
        image = h[i, L + 1:L + 1 + (hh // patch) * (ww // patch)]  # transformers puts the valid patches first
        cost = 1 - (image / np.linalg.norm(image, axis=1, keepdims=True)) @ (text / np.linalg.norm(text, axis=1, keepdims=True)).T
        d = pot.emd2(np.full(len(image), 1 / len(image)), np.full(len(text), 1 / len(text)), cost)
        total += d if itm_labels[i] == 1 else -d
    assert float(parts["wpa"]) == pytest.approx(total / len(source), abs=2e-3)
    assert 0 < int((itm_labels == 0).sum()) < len(source)


def test_held_out_itm_counts_random_and_hard_negatives(folder, home):
    """A head that always says "matched" is right exactly on the matched half of every batch,
    for random and for hard negatives alike; D of hard negatives is the mean over swapped pairs."""
    prepared = PT.corpus_dir(CFG, home)
    split, tok = PT.CaptionSplit(prepared, "dev"), PT._tokenizer(prepared)
    model = PT.load_pretrainer(folder)
    with torch.no_grad():
        model.itm.weight.zero_()
        model.itm.bias.copy_(torch.tensor([-5.0, 5.0]))
    res = PT.evaluate_heldout(model, split, tok, CFG, batch_size=8)
    sizes = [len(b) for b in split.batches(8)]
    positives = sum(n - int(0.5 * n) for n in sizes) / sum(sizes)
    assert res["n_pairs"] == sum(sizes)
    assert res["itm_accuracy"] == pytest.approx(positives) and res["itm_accuracy_hard"] == pytest.approx(positives)
    assert 0 < res["d_mismatched_hard"] <= 2 and np.isfinite(res["d_matched"])


# -- the checkpoint folder ---------------------------------------------------------------------
def test_folder_loads_like_vilt_b32_mlm(folder):
    rec = PT.read_record(folder)
    assert rec["key"] == PT.pretrain_key(CFG) and len(rec["history"]["steps"]) > 0
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", PT.ITM_HEAD):
        assert (folder / name).exists(), name
    ours = load_vilt(str(folder), attn="eager")
    ref = ViltForMaskedLM.from_pretrained(folder, local_files_only=True).eval()
    ours.eval()
    torch.manual_seed(0)
    ids = torch.randint(5, ref.config.vocab_size, (3, 9))
    ids[:, 0], ids[:, -1] = 2, 3
    pixels = torch.rand(3, 3, 32, 48) * 2 - 1
    with torch.no_grad():
        a = ours(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=pixels).last_hidden_state
        b = ref.vilt(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=pixels).last_hidden_state
    assert torch.allclose(a[:, :9], b[:, :9], atol=1e-5)
    ia, ib = a[:, 9:], b[:, 9:]  # image tokens: raster vs transformers' random order, same set
    d = torch.cdist(ia, ib).amin(2)
    assert float(d.max()) < 1e-4
    # the saved MLM head is the trained one: its logits match the folder's model
    pre = PT.load_pretrainer(folder)
    with torch.no_grad():
        out = pre.encode({"input_ids": ids, "attention_mask": torch.ones_like(ids), "pixel_values": pixels})
        assert torch.allclose(pre.mlm_logits(out, 9), ref(input_ids=ids, pixel_values=pixels).logits, atol=1e-4)


def test_folder_tokenizer_prepares_a_twin(folder, tmp_path):
    from data_prep.__main__ import main
    from data_prep.store import read_manifest

    assert main(["synth", "hateful_memes", "--out", str(tmp_path / "raw"), "--n", "20"]) == 0
    assert main(["prepare", "hateful_memes", "--raw", str(tmp_path / "raw"), "--out", str(tmp_path / "p"),
                 "--image-size", "32", "--patch-size", "16", "--tokenizer", str(folder), "--quiet"]) == 0
    man = read_manifest(tmp_path / "p")
    assert man["vocab_size"] == ViltForMaskedLM.from_pretrained(folder, local_files_only=True).config.vocab_size


def test_reuse_by_key(folder, home):
    stamp = (folder / PT.DONE).stat().st_mtime_ns
    assert PT.pretrain(CFG, folder, home=home, progress=False) == folder
    assert (folder / PT.DONE).stat().st_mtime_ns == stamp
    assert PT.pretrain_key(replace(CFG, lr=2e-3)) != PT.pretrain_key(CFG)
    with pytest.raises(ValueError, match="holds the pretrained checkpoint"):
        PT.pretrain(replace(CFG, lr=2e-3), folder, home=home, progress=False)


def test_resume_is_exact(folder, home, tmp_path):
    part = tmp_path / "resumed"
    PT.pretrain(CFG, part, home=home, progress=False, stop_after=1)
    assert not (part / PT.DONE).exists()
    saved = torch.load(part / PT.LAST, weights_only=True)  # tensors and plain values only
    assert saved["state"]["epoch"] == 1
    PT.pretrain(CFG, part, home=home, progress=False)
    a = ViltForMaskedLM.from_pretrained(folder, local_files_only=True).state_dict()
    b = ViltForMaskedLM.from_pretrained(part, local_files_only=True).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert PT.read_record(part)["history"] == PT.read_record(folder)["history"]


def test_mixed_shape_batches_are_padded_and_masked(home):
    """Images of different shapes share a batch (as in ViLT); padding changes no valid output."""
    split, batch, tok = _batch(home)
    shapes = {tuple(split.images[int(j)].shape) for j in batch["image_ids"]}
    assert len(shapes) > 1
    seen = torch.cat(split.batches(8, torch.Generator().manual_seed(0))).tolist()
    assert len(seen) == len(set(seen)) and len(split) - len(seen) <= 1  # each caption once (a lone last one dropped)
    model = PT.build_pretrainer(CFG, len(tok)).eval()
    with torch.no_grad():
        out = model.encode(batch)
        for i in range(len(batch["input_ids"])):
            img = split.images[int(batch["image_ids"][i])]
            h, w = img.shape[1:]
            assert int(batch["pixel_mask"][i].sum()) == h * w
            assert torch.equal(batch["pixel_values"][i, :, :h, :w], img)
            n = int(batch["attention_mask"][i].sum())
            alone = model.encode({"input_ids": batch["input_ids"][i:i + 1, :n],
                                  "attention_mask": batch["attention_mask"][i:i + 1, :n],
                                  "pixel_values": img[None]})
            assert torch.allclose(out.pooler_output[i], alone.pooler_output[0], atol=1e-5)
            valid = out.token_masks["image"][i].bool()
            assert int(valid.sum()) == (h // CFG.patch_size) * (w // CFG.patch_size)
            assert torch.allclose(out.tokens["image"][i][valid], alone.tokens["image"][0], atol=1e-5)


def test_backbone_load_is_quiet_about_the_mlm_head_only(folder, tmp_path):
    """The MLM head of a pretraining checkpoint is dropped silently; a missing backbone weight warns."""
    import shutil
    import warnings

    from safetensors.torch import load_file, save_file

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_vilt(str(folder))
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    weights = load_file(broken / "model.safetensors")
    gone = next(k for k in weights if "pooler" in k)
    save_file({k: v for k, v in weights.items() if k != gone}, broken / "model.safetensors", metadata={"format": "pt"})
    with pytest.warns(UserWarning, match="missing"):
        load_vilt(str(broken))


def test_study_tables_are_computed_once_per_checkpoint_data_and_parameters(tmp_path, monkeypatch):
    """Chapter 00's tables (twin gap, D0) are cached: the same inputs read the file, other inputs recompute."""
    import pandas as pd

    from wma_study import pretrain_study as S

    monkeypatch.setenv("WMA_DATA", str(tmp_path / "home"))
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "pretrain.json").write_text(json.dumps({"key": "k1"}))
    data = tmp_path / "data"
    data.mkdir()
    (data / "manifest.json").write_text(json.dumps({"dataset": "x", "splits": {"train": 3}}))
    calls = []

    def compute():
        calls.append(1)
        return pd.DataFrame([{"dataset": "x", "gap": 0.25, "n": 3}])

    a = S._cached("t", ckpt, {"p": 1}, [data], compute)
    b = S._cached("t", ckpt, {"p": 1}, [data], compute)
    assert len(calls) == 1 and b.to_dict(orient="records") == a.to_dict(orient="records") == [{"dataset": "x", "gap": 0.25, "n": 3}]
    S._cached("t", ckpt, {"p": 2}, [data], compute)
    assert len(calls) == 2
    (data / "manifest.json").write_text(json.dumps({"dataset": "x", "splits": {"train": 4}}))
    S._cached("t", ckpt, {"p": 2}, [data], compute)
    assert len(calls) == 3
    (ckpt / "pretrain.json").write_text(json.dumps({"key": "k2"}))
    S._cached("t", ckpt, {"p": 2}, [data], compute)
    assert len(calls) == 4
