"""Checkpoint names: local folders never reach the network, hub names fail at once offline, and
the model decides the tokenizer the data are prepared with (data_prep.checkpoints,
wma_study.experiments.prepare_data, data_prep.text.load_pretrained, wma_core.model.load_vilt)."""

from __future__ import annotations

import json
import socket
import time

import numpy as np
import pytest
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

from data_prep import checkpoints
from data_prep.issues import DataError

TEXTS = ["the cat sat on the mat", "a dog ate my homework", "memes are hard to read"] * 5
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def save_tokenizer(folder, vocab_size=60, texts=TEXTS):
    """A BERT-style WordPiece tokenizer fitted with `tokenizers`, saved with save_pretrained."""
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIALS))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                 sep_token="[SEP]", mask_token="[MASK]")
    hf.save_pretrained(folder)
    return hf


@pytest.fixture
def no_network(monkeypatch):
    """Every name lookup / connection in this process fails and is recorded."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args[:1])
        raise OSError(101, "Network is unreachable (blocked by the test)")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", lambda self, address: refuse(address))
    return attempts


@pytest.fixture
def data_home(tmp_path, monkeypatch):
    monkeypatch.setenv("WMA_DATA", str(tmp_path / "data"))
    return tmp_path / "data"


def test_folder_without_tokenizer_files_is_a_clear_error(tmp_path, data_home, no_network):
    from transformers import ViltConfig, ViltModel

    from wma_study.experiments import prepare_data

    folder = tmp_path / "weights_only"
    ViltModel(ViltConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)).save_pretrained(folder)
    with pytest.raises(DataError) as err:
        prepare_data("hateful_memes", "smoke", model=str(folder))
    msg = str(err.value)
    assert str(folder) in msg and "tokenizer.json" in msg and "vocab.txt" in msg and "tokenizer_config.json" in msg
    assert "config.json" in msg  # what it found there
    assert not (data_home / "prepared").exists()  # failed before writing anything
    assert no_network == []


def test_missing_folder_is_local_and_offline(tmp_path, no_network):
    from data_prep.text import load_pretrained

    with pytest.raises(DataError, match="does not exist"):
        load_pretrained(str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="does not exist"):
        load_pretrained("./no/such/checkpoint")
    assert no_network == []


@pytest.mark.parametrize("how", ["env", "unreachable"])
def test_hub_name_fails_at_once_without_network(tmp_path, monkeypatch, no_network, how):
    """HF_HUB_OFFLINE=1 (set after huggingface_hub was imported), or no network at all: one clear
    message in about a second, no minute of retries."""
    from transformers import AutoTokenizer, ViltModel  # noqa: F401 - imports outside the timing

    from data_prep.text import load_pretrained
    from wma_core.model import load_vilt

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    if how == "env":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
        monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    name = "no-such-org/no-such-vilt"
    for load, what in ((load_pretrained, "tokenizer"), (lambda n: load_vilt(n, cache_dir=str(tmp_path / "c")), "ViLT weights")):
        t0 = time.perf_counter()
        with pytest.raises(checkpoints.CheckpointError) as err:
            load(name)
        seconds = time.perf_counter() - t0
        msg = str(err.value)
        assert f"could not load {what} {name!r}" in msg and "save_pretrained(FOLDER)" in msg and "-p model FOLDER" in msg
        assert ("HF_HUB_OFFLINE" in msg) if how == "env" else ("cannot be reached" in msg)
        assert isinstance(err.value, DataError) and isinstance(err.value, OSError)
        assert seconds < 3.0, f"{what}: {seconds:.1f} s"
    # offline: not even a lookup; unreachable: only the one probe per load (no retries)
    assert len(no_network) == (0 if how == "env" else 2), no_network


def test_the_model_decides_the_tokenizer(tmp_path, data_home, no_network):
    """Each tokenizer its own prepared folder, the data encoded with the model's tokenizer
    (reference: transformers' AutoTokenizer on the folder), the fitted one for "tiny"."""
    from transformers import AutoTokenizer

    from wma_study.experiments import prepare_data

    from data_prep.config import SynthConfig
    from data_prep.synth import synthesize

    raw, raw_mosei = tmp_path / "raw_hm", tmp_path / "raw_mosei"
    synthesize("hateful_memes", raw, SynthConfig(n=24, seed=0))
    synthesize("mosei", raw_mosei, SynthConfig(n=20, seed=0, steps=4))
    a, b = tmp_path / "model_a", tmp_path / "model_b"
    save_tokenizer(a, vocab_size=60)
    save_tokenizer(b, vocab_size=90)
    out_a = prepare_data("hateful_memes", "smoke", str(raw), model=str(a))
    out_b = prepare_data("hateful_memes", "smoke", str(raw), model=str(b))
    out_tiny = prepare_data("hateful_memes", "smoke", str(raw), model="tiny")
    assert len({out_a, out_b, out_tiny}) == 3 and "-tok" in out_a.name and "-tok" not in out_tiny.name
    assert prepare_data("hateful_memes", "smoke", str(raw), model=str(a)) == out_a  # reused
    texts = {}
    for line in (raw / "train.jsonl").read_text().splitlines():
        rec = json.loads(line)
        texts[str(rec["id"])] = rec["text"]
    ids = json.loads((out_a / "train" / "raw_ids.json").read_text())
    for folder, out in ((a, out_a), (b, out_b)):
        manifest = json.loads((out / "manifest.json").read_text())
        ref = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        assert manifest["text"]["tokenizer"] == str(folder) and manifest["vocab_size"] == ref.vocab_size
        expected = ref([texts[i] for i in ids], max_length=manifest["max_text_len"], padding="max_length", truncation=True)
        np.testing.assert_array_equal(np.load(out / "train" / "input_ids.npy"), np.array(expected["input_ids"]))
    assert json.loads((out_tiny / "manifest.json").read_text())["text"]["tokenizer"] == "train"
    # the feature datasets have no tokenizer: the model does not change their folder
    features = prepare_data("mosei", "smoke", str(raw_mosei), model=str(a))
    assert features == prepare_data("mosei", "smoke", str(raw_mosei), model="tiny")
    assert no_network == []


def test_tokenizer_larger_than_the_models_vocabulary(tmp_path, data_home):
    from transformers import ViltConfig, ViltModel

    from wma_study.experiments import prepare_data

    folder = tmp_path / "small_vocab"
    ViltModel(ViltConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                         vocab_size=20)).save_pretrained(folder)
    save_tokenizer(folder, vocab_size=60)
    with pytest.raises(ValueError, match="embeds only 20"):
        prepare_data("hateful_memes", "smoke", model=str(folder))


def test_path_rules(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "org" / "name").mkdir(parents=True)
    assert checkpoints.local_folder("org/name") == tmp_path / "org" / "name"  # exists: local
    assert checkpoints.local_folder("dandelin/vilt-b32-mlm") is None  # a hub name
    assert checkpoints.local_folder("./x") == tmp_path / "x" and checkpoints.local_folder("/abs/x") is not None
    assert checkpoints.local_folder("~/x") is not None


def test_cached_hub_name_loads_offline(tmp_path, monkeypatch, no_network):
    """A hub name already in the hub cache (its layout: models--org--name/refs/main ->
    snapshots/<sha>/) loads offline without one network call, weights identical."""
    import torch
    from transformers import ViltConfig, ViltModel

    from wma_core.model import load_vilt

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    sha = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "cache" / "models--some-org--tiny-vilt"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(sha)
    vm = ViltModel(ViltConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64))
    vm.save_pretrained(repo / "snapshots" / sha)
    loaded = load_vilt("some-org/tiny-vilt", cache_dir=str(tmp_path / "cache"))
    ours, theirs = loaded.vilt.state_dict(), vm.state_dict()
    assert set(ours) == set(theirs) and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert no_network == []
