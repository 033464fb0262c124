"""Every kind of bad raw input: a clear error naming file and record, or a counted skip (--strict: error)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from data_prep.__main__ import main
from data_prep.config import MMIMDB_GENRES, PrepareConfig, SynthConfig
from data_prep.dataset import PreparedDataset, read_manifest
from data_prep.issues import DataError
from data_prep.prepare import prepare
from data_prep.synth import synthesize
from data_prep.synth.mmimdb import EXTRA_GENRES

TINY = PrepareConfig.tiny(progress=False)
STRICT = PrepareConfig.tiny(progress=False, strict=True)


def _twin(dataset: str, tmp_path: Path, **options) -> Path:
    raw = tmp_path / "raw"
    synthesize(dataset, raw, SynthConfig(n=40, seed=2, steps=6), **options)
    return raw


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _write_lines(path: Path, records: list) -> None:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n")


# --- images -------------------------------------------------------------------------------------

@pytest.mark.parametrize("damage,reason", [
    (lambda p: p.unlink(), "missing image"),
    (lambda p: p.write_bytes(b"this is not a png"), "corrupt image"),
    (lambda p: p.write_bytes(p.read_bytes()[:200]), "corrupt image"),  # truncated file
])
def test_bad_image_is_skipped_and_counted_or_strict_error(tmp_path, damage, reason):
    raw = _twin("hateful_memes", tmp_path)
    records = _lines(raw / "train.jsonl")
    victim = records[5]
    damage(raw / victim["img"])
    manifest = prepare("hateful_memes", raw, tmp_path / "out", TINY)
    assert manifest["dropped"] == {"train": {reason: 1}}
    assert manifest["splits"]["train"] == len(records) - 1 == manifest["raw_records"]["train"] - 1
    ids = json.loads((tmp_path / "out" / "train" / "raw_ids.json").read_text())
    assert str(victim["id"]) not in ids and len(ids) == len(PreparedDataset(tmp_path / "out", "train"))
    with pytest.raises(DataError, match=rf"train\.jsonl line 6 \(id {victim['id']}\).*{victim['img']}.*{reason}"):
        prepare("hateful_memes", raw, tmp_path / "strict", STRICT)
    assert not (tmp_path / "strict").exists()  # a failed run leaves nothing behind


def test_missing_mmimdb_poster_is_counted(tmp_path):
    raw = _twin("mmimdb", tmp_path)
    movie = json.loads((raw / "split.json").read_text())["dev"][0]
    (raw / "dataset" / f"{movie}.jpeg").unlink()
    manifest = prepare("mmimdb", raw, tmp_path / "out", TINY)
    assert manifest["dropped"] == {"dev": {"missing image": 1}}
    # The twin, like the real files, lists a few genres outside the 23: admit them so that
    # --strict stops at the missing poster.
    strict = PrepareConfig.tiny(progress=False, strict=True, genres=MMIMDB_GENRES + EXTRA_GENRES)
    with pytest.raises(DataError, match=rf"dataset/{movie}\.json \(id {movie}\).*dataset/{movie}\.jpeg.*missing image"):
        prepare("mmimdb", raw, tmp_path / "strict", strict)


# --- jsonl --------------------------------------------------------------------------------------

def test_malformed_jsonl_line_is_counted_or_strict_error(tmp_path):
    raw = _twin("hateful_memes", tmp_path)
    records = _lines(raw / "dev_seen.jsonl")
    broken = [*records[:2], '{"id": 1, "img": "img/1.png", "label": 0, "text": "unterminated', *records[2:],
              {"id": 7, "label": 1}]  # the last one lacks img and text
    _write_lines(raw / "dev_seen.jsonl", broken)
    manifest = prepare("hateful_memes", raw, tmp_path / "out", TINY)
    assert manifest["dropped"] == {"dev": {"malformed json line": 1, "malformed record": 1}}
    assert manifest["splits"]["dev"] == len(records) and manifest["raw_records"]["dev"] == len(records) + 2
    with pytest.raises(DataError, match=r"dev_seen\.jsonl line 3 .*malformed json line"):
        prepare("hateful_memes", raw, tmp_path / "strict", STRICT)


def test_hateful_label_out_of_range_is_an_error(tmp_path):
    raw = _twin("hateful_memes", tmp_path)
    records = _lines(raw / "test_seen.jsonl")
    records[3]["label"] = 2
    _write_lines(raw / "test_seen.jsonl", records)
    with pytest.raises(DataError, match=rf"test_seen\.jsonl line 4 \(id {records[3]['id']}\): label 2 out of range"):
        prepare("hateful_memes", raw, tmp_path / "out", TINY)


def test_unlabelled_records_and_phase_one_file_names(tmp_path):
    raw = _twin("hateful_memes", tmp_path)
    (raw / "dev_seen.jsonl").rename(raw / "dev.jsonl")
    test = _lines(raw / "test_seen.jsonl")
    (raw / "test_seen.jsonl").unlink()
    _write_lines(raw / "test.jsonl", [{k: v for k, v in r.items() if k != "label"} for r in test[:5]] + test[5:])
    manifest = prepare("hateful_memes", raw, tmp_path / "out", TINY)
    assert manifest["split_files"] == {"train": "train.jsonl", "dev": "dev.jsonl", "test": "test.jsonl"}
    assert manifest["splits"]["test"] == len(test) - 5
    assert manifest["unlabelled"]["test.jsonl"] == {"records": 5, "split": "test", "used_for_evaluation": False}
    (raw / "train.jsonl").unlink()
    with pytest.raises(DataError, match="no train.jsonl"):
        prepare("hateful_memes", raw, tmp_path / "out2", TINY)


# --- MM-IMDb ------------------------------------------------------------------------------------

def test_unknown_genre_is_dropped_and_counted_or_strict_error(tmp_path):
    raw = _twin("mmimdb", tmp_path, layout="images+labels")
    split = json.loads((raw / "split.json").read_text())
    a, b = split["train"][0], split["train"][1]
    meta_a = json.loads((raw / "labels" / f"{a}.json").read_text())
    meta_a["genres"] = ["Drama", "Space-Opera"]
    (raw / "labels" / f"{a}.json").write_text(json.dumps(meta_a))
    meta_b = json.loads((raw / "labels" / f"{b}.json").read_text())
    meta_b["genres"] = ["Space-Opera"]
    (raw / "labels" / f"{b}.json").write_text(json.dumps(meta_b))
    manifest = prepare("mmimdb", raw, tmp_path / "out", TINY)
    assert manifest["layout"] == "images+labels"
    assert manifest["dropped_genres"]["train"]["unknown genre Space-Opera"] == 2
    assert manifest["dropped"] == {"train": {"no known genre": 1}}
    ds = PreparedDataset(tmp_path / "out", "train")
    ids = json.loads((tmp_path / "out" / "train" / "raw_ids.json").read_text())
    assert b not in ids and ds.labels[ids.index(a)].tolist() == [1.0] + [0.0] * 22
    with pytest.raises(DataError, match=rf"labels/{a}\.json \(id {a}\): unknown genre Space-Opera"):
        prepare("mmimdb", raw, tmp_path / "strict", STRICT)
    custom = PrepareConfig.tiny(progress=False, genres=("Drama", "Space-Opera"))
    manifest = prepare("mmimdb", raw, tmp_path / "custom", custom)
    assert manifest["task"]["n_out"] == 2 and "unknown genre Space-Opera" not in str(manifest["dropped_genres"])


def test_bad_mmimdb_metadata(tmp_path):
    raw = _twin("mmimdb", tmp_path)
    ids = json.loads((raw / "split.json").read_text())["test"]
    (raw / "dataset" / f"{ids[0]}.json").write_text("{broken")
    (raw / "dataset" / f"{ids[1]}.json").write_text(json.dumps({"genres": ["Drama"], "plot": []}))
    (raw / "dataset" / f"{ids[2]}.json").unlink()
    manifest = prepare("mmimdb", raw, tmp_path / "out", TINY)
    assert manifest["dropped"] == {"test": {"malformed json": 1, "no plot": 1, "missing metadata": 1}}
    assert manifest["splits"]["test"] == len(ids) - 3
    split = json.loads((raw / "split.json").read_text())
    del split["dev"]
    (raw / "split.json").write_text(json.dumps(split))
    with pytest.raises(DataError, match=r"split\.json: no id list under 'dev'"):
        prepare("mmimdb", raw, tmp_path / "out2", TINY)


# --- MultiBench pickles -------------------------------------------------------------------------

def _pickle(raw: Path, name: str) -> dict:
    with open(raw / name, "rb") as f:
        return pickle.load(f)


def _repickle(raw: Path, name: str, data) -> None:
    with open(raw / name, "wb") as f:
        pickle.dump(data, f)


def test_nan_features_are_skipped_or_strict_error(tmp_path):
    raw = _twin("ur_funny", tmp_path)
    data = _pickle(raw, "humor.pkl")
    data["train"]["vision"][4, -1, 7] = np.nan
    data["train"]["text"][9, -1, 0] = np.inf
    data["train"]["audio"][11, -1, 0] = -np.inf  # the MultiBench rule: becomes 0, not a skip
    _repickle(raw, "humor.pkl", data)
    manifest = prepare("ur_funny", raw, tmp_path / "out", TINY)
    dropped = manifest["dropped"]["train"]
    assert dropped["non-finite video features"] == 1 and dropped["non-finite text features"] == 1
    ids = json.loads((tmp_path / "out" / "train" / "raw_ids.json").read_text())
    assert data["train"]["id"][4] not in ids and data["train"]["id"][11] in ids
    video = np.load(tmp_path / "out" / "train" / "video.npy")
    assert np.isfinite(video).all() and np.isfinite(np.load(tmp_path / "out" / "train" / "audio.npy")).all()
    with pytest.raises(DataError, match=rf"humor\.pkl\['train'\] record 4 \(id {data['train']['id'][4]}\): non-finite video"):
        prepare("ur_funny", raw, tmp_path / "strict", STRICT)


def test_non_finite_values_on_padded_steps_keep_the_sample(tmp_path):
    """Only valid time steps count: MultiBench's loader cuts the padding off, so NaN/inf there is
    neither a skip nor stored (padding is stored as 0)."""
    raw = tmp_path / "raw"
    synthesize("ur_funny", raw, SynthConfig(n=60, seed=2, steps=20))  # 12..20 valid of 20 steps
    data = _pickle(raw, "humor.pkl")
    text = data["train"]["text"]
    nonzero = np.abs(text).sum(axis=2) > 0  # [N, T], written out here, independent of the reader
    padded = [i for i in range(len(text)) if nonzero[i].any() and not nonzero[i, 0]]
    a, b = padded[:2]
    first_b = int(np.argmax(nonzero[b]))
    data["train"]["vision"][a, 0, 3] = np.nan  # padding: kept
    data["train"]["audio"][a, 0, 1] = np.inf
    data["train"]["vision"][b, first_b, 3] = np.nan  # first valid step: skipped
    _repickle(raw, "humor.pkl", data)
    manifest = prepare("ur_funny", raw, tmp_path / "out", TINY)
    assert manifest["dropped"]["train"].get("non-finite video features") == 1
    ids = json.loads((tmp_path / "out" / "train" / "raw_ids.json").read_text())
    assert data["train"]["id"][a] in ids and data["train"]["id"][b] not in ids
    row = ids.index(data["train"]["id"][a])
    video = np.load(tmp_path / "out" / "train" / "video.npy")
    mask = np.load(tmp_path / "out" / "train" / "mask.npy")
    assert np.isfinite(video).all() and np.isfinite(np.load(tmp_path / "out" / "train" / "audio.npy")).all()
    np.testing.assert_array_equal(mask[row], (np.arange(20) >= np.argmax(nonzero[a])).astype(np.uint8))
    assert (video[row][mask[row] == 0] == 0).all()
    np.testing.assert_array_equal(video[row][mask[row] == 1], data["train"]["vision"][a][mask[row] == 1])


def test_data_summary_says_how_non_finite_features_differ_from_multibench(tmp_path):
    from wma_study.figures import data_summary

    raw = _twin("ur_funny", tmp_path)
    data = _pickle(raw, "humor.pkl")
    data["train"]["vision"][4, -1, 7] = np.nan
    _repickle(raw, "humor.pkl", data)
    table = data_summary(prepare("ur_funny", raw, tmp_path / "out", TINY))
    row = dict(zip(table[""], table["value"]))
    assert "dropped and counted (1 here); MultiBench keeps them" in row["non-finite features"]
    image_text = data_summary(prepare("hateful_memes", _twin("hateful_memes", tmp_path / "hm"), tmp_path / "hm-out", TINY))
    assert "non-finite features" not in set(image_text[""])


@pytest.mark.parametrize("edit,message", [
    (lambda d: d.pop("valid"), r"humor\.pkl: missing split keys \['valid'\]"),
    (lambda d: d["test"].pop("audio"), r"humor\.pkl\['test'\]: missing keys \['audio'\]"),
    (lambda d: d["train"].update(vision=d["train"]["vision"][:, :, :35]), r"humor\.pkl\['train'\]\['vision'\].*shape \(\d+, 6, 35\).*\(N, T, 371\)"),
    (lambda d: d["train"].update(audio=d["train"]["audio"][:, :5]), r"humor\.pkl\['train'\]\['audio'\]: shape .* disagrees"),
    (lambda d: d["valid"].update(labels=d["valid"]["labels"][:-1]), r"humor\.pkl\['valid'\]\['labels'\]: shape"),
    (lambda d: d["train"].update(text=d["train"]["text"][..., 0]), r"humor\.pkl\['train'\]\['text'\]"),
])
def test_wrong_pickle_keys_or_shapes_are_errors(tmp_path, edit, message):
    raw = _twin("ur_funny", tmp_path)
    data = _pickle(raw, "humor.pkl")
    edit(data)
    _repickle(raw, "humor.pkl", data)
    with pytest.raises(DataError, match=message):
        prepare("ur_funny", raw, tmp_path / "out", TINY)


def test_unreadable_or_missing_pickle(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    with pytest.raises(DataError, match="mosei_senti_data.pkl: file not found"):
        prepare("mosei", raw, tmp_path / "out", TINY)
    (raw / "mosei_senti_data.pkl").write_bytes(b"\x80\x04garbage")
    with pytest.raises(DataError, match="mosei_senti_data.pkl: not a readable pickle"):
        prepare("mosei", raw, tmp_path / "out", TINY)


@pytest.mark.parametrize("dataset,raw_file,value,expected", [
    ("mosei", "mosei_senti_data.pkl", 3.5, r"in \[-3, 3\]"),
    ("mosei", "mosei_senti_data.pkl", np.nan, r"in \[-3, 3\]"),
    ("ur_funny", "humor.pkl", 0.5, "0/1 or -1/\\+1"),
])
def test_multibench_label_out_of_range(tmp_path, dataset, raw_file, value, expected):
    raw = _twin(dataset, tmp_path)
    data = _pickle(raw, raw_file)
    labels = data["test"]["labels"]
    labels.reshape(-1)[3] = value
    _repickle(raw, raw_file, data)
    with pytest.raises(DataError, match=rf"{raw_file}\['test'\] record 3 \(id {data['test']['id'][3]}\): label .*{expected}"):
        prepare(dataset, raw, tmp_path / "out", TINY)


def test_minus_one_plus_one_humor_labels_map_to_binary(tmp_path):
    raw = _twin("ur_funny", tmp_path)
    data = _pickle(raw, "humor.pkl")
    for part in data.values():
        part["labels"] = part["labels"] * 2 - 1
    _repickle(raw, "humor.pkl", data)
    prepare("ur_funny", raw, tmp_path / "out", TINY)
    ds = PreparedDataset(tmp_path / "out", "train")
    keep = np.abs(data["train"]["text"]).reshape(len(data["train"]["text"]), -1).sum(axis=1) > 0
    np.testing.assert_array_equal(ds.labels, (data["train"]["labels"].reshape(-1)[keep] > 0).astype(np.float32))


# --- folders, tokenizer, CLI --------------------------------------------------------------------

def test_refuses_to_overwrite_an_unrelated_folder(tmp_path):
    raw = _twin("mosei", tmp_path)
    out = tmp_path / "precious"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="not a prepared folder"):
        prepare("mosei", raw, out, TINY)
    assert (out / "notes.txt").read_text() == "keep me"


def test_unloadable_tokenizer_is_a_clear_error(tmp_path):
    raw = _twin("hateful_memes", tmp_path)
    config = PrepareConfig.tiny(progress=False, tokenizer=str(tmp_path / "no" / "such" / "tokenizer"))
    with pytest.raises(DataError, match="could not load tokenizer .*--tokenizer train"):
        prepare("hateful_memes", raw, tmp_path / "out", config)


def test_local_pretrained_tokenizer_folder(tmp_path):
    from transformers import PreTrainedTokenizerFast

    from data_prep.text import fit_wordpiece

    folder = tmp_path / "tok"
    hf = PreTrainedTokenizerFast(tokenizer_object=fit_wordpiece(["a small local vocabulary of words"] * 3, 100),
                                 pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    hf.save_pretrained(folder)
    raw = _twin("hateful_memes", tmp_path)
    manifest = prepare("hateful_memes", raw, tmp_path / "out", PrepareConfig.tiny(progress=False, tokenizer=str(folder), max_text_len=16))
    assert manifest["text"]["tokenizer"] == str(folder) and manifest["vocab_size"] == hf.vocab_size
    assert np.load(tmp_path / "out" / "train" / "input_ids.npy").shape[1] == 16


def test_cli_synth_prepare_info_and_error_exit(tmp_path, capsys):
    raw, out = tmp_path / "raw", tmp_path / "out"
    assert main(["synth", "mosei", "--out", str(raw), "--n", "40", "--steps", "6"]) == 0
    assert main(["prepare", "mosei", "--raw", str(raw), "--out", str(out), "--quiet"]) == 0
    assert read_manifest(out)["dataset"] == "mosei"
    assert main(["info", str(out)]) == 0
    assert '"dataset": "mosei"' in capsys.readouterr().out
    assert main(["prepare", "ur_funny", "--raw", str(raw), "--out", str(tmp_path / "o2"), "--quiet"]) == 2
    assert "humor.pkl: file not found" in capsys.readouterr().err
