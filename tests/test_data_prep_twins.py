"""Twins end to end: synthesise, prepare, load; compare with independent readings of the raw files."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import PreTrainedTokenizerFast

from data_prep.config import MMIMDB_GENRES, PrepareConfig, SynthConfig
from data_prep.dataset import PreparedDataset, make_loader, read_manifest, task_info
from data_prep.prepare import prepare
from data_prep.synth import synthesize

TINY = PrepareConfig.tiny(progress=False)
N = 160


def vilt_size(h: int, w: int, size: int, patch: int) -> tuple[int, int]:
    """ViLT's resize rule written out independently of transformers' helper."""
    longer = int(1333 / 800 * size)
    scale = size / min(h, w)
    nh, nw = (size, scale * w) if h < w else (scale * h, size)
    if max(nh, nw) > longer:
        s = longer / max(nh, nw)
        nh, nw = nh * s, nw * s
    nh, nw = int(nh + 0.5), int(nw + 0.5)
    return nh // patch * patch, nw // patch * patch


@pytest.fixture(scope="module")
def twins(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """dataset -> (raw folder, prepared folder); MM-IMDb in both layouts."""
    root = tmp_path_factory.mktemp("twins")
    out = {}
    for name, dataset, options in [
        ("hateful_memes", "hateful_memes", {}), ("mmimdb", "mmimdb", {}),
        ("mmimdb_images_labels", "mmimdb", {"layout": "images+labels"}),
        ("ur_funny", "ur_funny", {}), ("mosei", "mosei", {}),
    ]:
        raw, prepared = root / f"raw_{name}", root / f"prep_{name}"
        synthesize(dataset, raw, SynthConfig(n=N, seed=1, steps=10), **options)
        prepare(dataset, raw, prepared, TINY)
        out[name] = (raw, prepared)
    return out


def test_vilt_size_rule_known_cases():
    assert vilt_size(500, 375, 384, 32) == (512, 384)
    assert vilt_size(100, 200, 384, 32) == (320, 608)  # longer side capped at 639, then floored
    from data_prep.images import vilt_output_size

    for h, w in [(64, 64), (128, 64), (77, 121), (500, 375), (100, 200), (33, 300)]:
        for size, patch in [(384, 32), (64, 16)]:
            assert vilt_output_size(h, w, size, patch) == vilt_size(h, w, size, patch)


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_hateful_memes_counts_labels_text_images(twins):
    raw, prepared = twins["hateful_memes"]
    manifest = read_manifest(prepared)
    tok = PreTrainedTokenizerFast(tokenizer_file=str(prepared / "tokenizer.json"))
    for split, name in [("train", "train.jsonl"), ("dev", "dev_seen.jsonl"), ("test", "test_seen.jsonl")]:
        records = _jsonl(raw / name)
        ds = PreparedDataset(prepared, split)
        assert len(ds) == len(records) == manifest["splits"][split]
        assert json.loads((prepared / split / "raw_ids.json").read_text()) == [str(r["id"]) for r in records]
        np.testing.assert_array_equal(ds.labels, [r["label"] for r in records])
        enc = tok([r["text"] for r in records], padding="max_length", truncation=True, max_length=40)
        for i in (0, len(ds) // 2, len(ds) - 1):
            sample = ds[i]
            assert sample["input_ids"].tolist() == enc["input_ids"][i]
            assert sample["attention_mask"].tolist() == enc["attention_mask"][i]
            img = Image.open(raw / records[i]["img"]).convert("RGB")
            h, w = vilt_size(img.height, img.width, 64, 16)
            expected = np.asarray(img.resize((w, h), Image.Resampling.BICUBIC)).transpose(2, 0, 1)
            np.testing.assert_array_equal(sample["pixel_values"].numpy(), expected)
    unseen = _jsonl(raw / "test_unseen.jsonl")
    assert all("label" not in r for r in unseen)
    assert manifest["unlabelled"] == {"test_unseen.jsonl": {"records": len(unseen), "split": None, "used_for_evaluation": False}}
    assert manifest["dropped"] == {}
    assert manifest["task"] == {"kind": "binary", "n_out": 1, "label_names": ["hateful"], "headline_metric": "auroc"}
    assert manifest["image"]["image_size"] == 64 and manifest["image"]["patch_size"] == 16
    assert set(manifest["sources"]) == {"img/", "train.jsonl", "dev_seen.jsonl", "test_seen.jsonl", "test_unseen.jsonl"}
    vocab = json.loads((prepared / "tokenizer.json").read_text())["model"]["vocab"]
    assert manifest["vocab_size"] == len(vocab) and vocab["[PAD]"] == manifest["text"]["pad_id"] == 0


@pytest.mark.parametrize("name,meta_dir", [("mmimdb", "dataset"), ("mmimdb_images_labels", "labels")])
def test_mmimdb_labels_longest_plot_and_genre_counts(twins, name, meta_dir):
    raw, prepared = twins[name]
    manifest = read_manifest(prepared)
    split_ids = json.loads((raw / "split.json").read_text())
    tok = PreTrainedTokenizerFast(tokenizer_file=str(prepared / "tokenizer.json"))
    unknown = {}
    for split in ("train", "dev", "test"):
        metas = [json.loads((raw / meta_dir / f"{i}.json").read_text()) for i in split_ids[split]]
        ds = PreparedDataset(prepared, split)
        assert len(ds) == len(split_ids[split])  # every twin movie has at least one known genre
        expected = np.array([[g in m["genres"] for g in MMIMDB_GENRES] for m in metas], np.float32)
        np.testing.assert_array_equal(ds.labels, expected)
        for m in metas:
            for g in m["genres"]:
                if g not in MMIMDB_GENRES:
                    unknown.setdefault(split, {}).setdefault(f"unknown genre {g}", 0)
                    unknown[split][f"unknown genre {g}"] += 1
        longest = [sorted(m["plot"], key=lambda p: -len(p))[0] for m in metas]
        enc = tok(longest, padding="max_length", truncation=True, max_length=40)
        np.testing.assert_array_equal(np.load(prepared / split / "input_ids.npy"), enc["input_ids"])
        assert any(len(m["plot"]) > 1 for m in metas)
    assert manifest["dropped_genres"] == unknown
    assert manifest["task"]["n_out"] == 23 and manifest["task"]["label_names"] == list(MMIMDB_GENRES)
    assert manifest["task"]["headline_metric"] == "f1_macro"
    assert "longest" in manifest["plot_policy"]


def _multibench_reference(part: dict, binary: bool):
    """MultiBench's loader rules, written out on the raw pickle."""
    keep = np.array([np.abs(t).sum() > 0 for t in part["text"]])
    vision, audio, text = (np.array(part[k][keep], np.float32) for k in ("vision", "audio", "text"))
    audio[audio == -np.inf] = 0.0
    labels = np.asarray(part["labels"]).reshape(-1)[keep]
    if binary:
        labels = (labels > 0).astype(np.float32)
    mask = np.zeros(text.shape[:2], np.int64)
    for i, t in enumerate(text):
        start = np.nonzero(np.abs(t).sum(axis=1))[0][0]
        mask[i, start:] = 1
    return {"text": text, "video": vision, "audio": audio}, mask, labels, int((~keep).sum())


@pytest.mark.parametrize("dataset,raw_file,dims", [
    ("ur_funny", "humor.pkl", {"text": 300, "video": 371, "audio": 81}),
    ("mosei", "mosei_senti_data.pkl", {"text": 300, "video": 35, "audio": 74}),
])
def test_multibench_features_follow_loader_rules(twins, dataset, raw_file, dims):
    raw, prepared = twins[dataset]
    with open(raw / raw_file, "rb") as f:
        data = pickle.load(f)
    assert set(data) == {"train", "valid", "test"}
    manifest = read_manifest(prepared)
    assert manifest["feature_dims"] == dims and manifest["modalities"] == ["text", "video", "audio"]
    n_inf, n_zero = 0, 0
    for split, key in [("train", "train"), ("dev", "valid"), ("test", "test")]:
        part = data[key]
        assert part["vision"].shape[2] == dims["video"] and part["audio"].shape[2] == dims["audio"]
        n_inf += int(np.isneginf(part["audio"]).sum())
        feats, mask, labels, dropped = _multibench_reference(part, dataset == "ur_funny")
        n_zero += dropped
        ds = PreparedDataset(prepared, split)
        assert len(ds) == len(labels) == len(part["labels"]) - dropped
        assert manifest["dropped"].get(split, {}).get("text all zero (MultiBench drop rule)", 0) == dropped
        np.testing.assert_array_equal(ds.labels, labels)
        batch = next(iter(make_loader(ds, batch_size=len(ds))))
        for m in dims:
            torch.testing.assert_close(batch["features"][m], torch.from_numpy(feats[m]), rtol=0, atol=0)
            assert torch.equal(batch["feature_masks"][m], torch.from_numpy(mask))
    assert n_zero > 0 and n_inf > 0, "the twin must exercise both MultiBench rules"
    assert sum(manifest["replaced"]["audio -inf -> 0"].values()) <= n_inf
    if dataset == "mosei":
        assert data["train"]["labels"].shape[1:] == (1, 1)
        assert np.abs(data["train"]["labels"]).max() <= 3
    else:
        assert set(np.unique(data["train"]["labels"])) == {0.0, 1.0}


def test_image_text_batches_and_shuffle_order(twins):
    ds = PreparedDataset(twins["hateful_memes"][1], "train")
    loader = make_loader(ds, batch_size=8, shuffle=True, seed=3, epoch=2)
    batch = next(iter(loader))
    order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(3 * 100003 + 2))
    assert torch.equal(batch["ids"], order[:8])
    assert batch["ids"].dtype == torch.int64 and batch["labels"].dtype == torch.float32
    assert batch["labels"].shape == (8,)
    # texts are cut to the batch's longest one; what is cut is padding in every sample
    longest = max(int(ds[int(i)]["attention_mask"].sum()) for i in batch["ids"])
    assert batch["input_ids"].dtype == torch.int64 and batch["input_ids"].shape == (8, longest) and longest < 40
    assert batch["attention_mask"].dtype == torch.int64
    for k, i in enumerate(batch["ids"].tolist()):
        full = ds[i]
        assert torch.equal(batch["input_ids"][k], full["input_ids"][:longest])
        assert not full["attention_mask"][longest:].any()
    pv, pm = batch["pixel_values"], batch["pixel_mask"]
    assert pv.dtype == torch.uint8 and pm.dtype == torch.int64 and pv.shape[1] == 3
    shapes = np.load(twins["hateful_memes"][1] / "train" / "image_shapes.npy")[batch["ids"].numpy()]
    assert pv.shape[2:] == tuple(shapes.max(axis=0))
    for k, (h, w) in enumerate(shapes):
        assert pm[k].sum() == h * w and pm[k, :h, :w].all()
        assert torch.equal(pv[k, :, :h, :w], ds[int(batch["ids"][k])]["pixel_values"])
        assert not pv[k, :, h:, :].any() and not pv[k, :, :, w:].any()
    again = next(iter(make_loader(ds, batch_size=8, shuffle=True, seed=3, epoch=2)))
    assert torch.equal(again["ids"], batch["ids"])
    other = next(iter(make_loader(ds, batch_size=8, shuffle=True, seed=3, epoch=3)))
    assert not torch.equal(other["ids"], batch["ids"])


def test_multilabel_batch_and_worker_processes(twins):
    ds = PreparedDataset(twins["mmimdb"][1], "train")
    serial = list(make_loader(ds, batch_size=16))
    parallel = list(make_loader(ds, batch_size=16, num_workers=2))
    assert len(serial) == len(parallel) == -(-len(ds) // 16)
    for a, b in zip(serial, parallel):
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k])
    assert serial[0]["labels"].shape == (16, 23) and serial[0]["labels"].dtype == torch.float32
    assert len(list(make_loader(ds, batch_size=16, drop_last=True))) == len(ds) // 16


def test_feature_batch_shapes(twins):
    ds = PreparedDataset(twins["ur_funny"][1], "dev")
    batch = next(iter(make_loader(ds, batch_size=4)))
    assert batch["features"]["video"].shape == (4, 10, 371) and batch["features"]["audio"].shape == (4, 10, 81)
    assert batch["features"]["text"].dtype == torch.float32
    assert batch["feature_masks"]["text"].dtype == torch.int64 and batch["feature_masks"]["audio"].shape == (4, 10)
    assert batch["labels"].shape == (4,) and batch["ids"].tolist() == [0, 1, 2, 3]


def test_task_info_and_missing_split(twins, tmp_path):
    info = task_info(read_manifest(twins["mosei"][1]))
    assert (info.kind, info.n_out, info.headline_metric) == ("regression", 1, "mae")
    assert info.feature_dims == {"text": 300, "video": 35, "audio": 74} and info.image_size is None
    info = task_info(read_manifest(twins["hateful_memes"][1]))
    assert info.modalities == ("text", "image") and (info.image_size, info.patch_size, info.max_text_len) == (64, 16, 40)
    with pytest.raises(ValueError, match="split must be one of"):
        PreparedDataset(twins["mosei"][1], "valid")
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        PreparedDataset(tmp_path, "train")


@pytest.mark.parametrize("name,dataset", [("hateful_memes", "hateful_memes"), ("mmimdb", "mmimdb"), ("ur_funny", "ur_funny")])
def test_rerun_is_byte_identical(twins, tmp_path, name, dataset):
    raw, first = twins[name]
    second = tmp_path / "again"
    prepare(dataset, raw, second, TINY)
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    for rel in files:
        assert (first / rel).read_bytes() == (second / rel).read_bytes(), rel
    prepare(dataset, raw, second, TINY)  # replacing a prepared folder in place is allowed
    assert (second / "manifest.json").read_bytes() == (first / "manifest.json").read_bytes()


@pytest.mark.parametrize("name", ["hateful_memes", "mmimdb", "ur_funny", "mosei"])
def test_probe_beats_chance(twins, name, tmp_path):
    from data_prep.probe import probe

    folder = twins[name][1]
    if name == "mmimdb":  # 23 labels: 112 training movies leave most genres a handful of positives
        synthesize("mmimdb", tmp_path / "raw", SynthConfig(n=400, seed=1, steps=10))
        folder = tmp_path / "prep"
        prepare("mmimdb", tmp_path / "raw", folder, TINY)
    result = probe(folder)
    best = result["scores"]["+".join(read_manifest(folder)["modalities"])]
    if result["higher_is_better"]:
        assert best > result["chance"] + 0.1
    else:
        assert best < result["chance"] * 0.9


def test_twin_signal_words_are_not_filler():
    from data_prep.synth import words

    groups = [words.MEME_SHARED, words.MEME_TEXT, words.HUMOR_SHARED, words.HUMOR_TEXT,
              words.SENTIMENT_SHARED, words.SENTIMENT_TEXT]
    signal = {w for pair in groups for side in pair for w in side} | {w for ws in words.GENRE_KEYWORDS.values() for w in ws}
    assert not signal & set(words.FILLER)
    for pair in groups:
        assert not set(pair[0]) & set(pair[1])
    keywords = [w for ws in words.GENRE_KEYWORDS.values() for w in ws]
    assert len(keywords) == len(set(keywords))
