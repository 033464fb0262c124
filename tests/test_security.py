"""Files from elsewhere are data, never code, and never reach outside their folder.

Each test builds the hostile input itself: a pickle or checkpoint whose unpickling would create a
file, records naming files outside the raw folder (absolute, through "..", through a symlink), a
decompression bomb, a jsonl line of many megabytes, a deeply nested record, run keys that are
paths. Files opened by the converters are recorded with an audit hook (`sys.addaudithook`), so
"the outside file is never opened" is checked on what Python actually opened.
"""

from __future__ import annotations

import builtins
import json
import os
import pickle
import struct
import subprocess
import sys
import tracemalloc
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from data_prep.config import MMIMDB_GENRES, PrepareConfig, SynthConfig
from data_prep.issues import DataError, SkipLog
from data_prep.prepare import prepare
from data_prep.synth import synthesize
from data_prep.synth.mmimdb import EXTRA_GENRES

TINY = PrepareConfig.tiny(progress=False, workers=1)  # in-process, so the audit hook sees every open
STRICT = PrepareConfig.tiny(progress=False, workers=1, strict=True)

# --- helpers ------------------------------------------------------------------------------------

_OPENED: list[list[str]] = []


def _audit(event, args):
    if event == "open" and _OPENED and isinstance(args[0], (str, bytes, os.PathLike)):
        _OPENED[-1].append(os.path.realpath(os.fsdecode(args[0])))


sys.addaudithook(_audit)


@contextmanager
def opened_files():
    """Collects the real paths of every file opened in this process inside the block."""
    seen: list[str] = []
    _OPENED.append(seen)
    try:
        yield seen
    finally:
        _OPENED.pop()


def _evil_payloads(marker: Path):
    """(object whose unpickling creates `marker`, the global it calls as pickle names it)."""

    class System:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    class Popen:
        def __reduce__(self):
            return subprocess.call, (["touch", str(marker)],)

    class Exec:
        def __reduce__(self):
            return builtins.exec, (f"open({str(marker)!r}, 'w').close()",)

    return {"os.system": (System(), f"{os.system.__module__}.system"),
            "subprocess.call": (Popen(), "subprocess.call"),
            "builtins.exec": (Exec(), "builtins.exec")}


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _write_lines(path: Path, records: list) -> None:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n")


def _png_1bit(path: Path, width: int, height: int) -> None:
    """A valid all-black 1-bit greyscale PNG of width x height, written without decoding it."""
    row = b"\x00" + bytes((width + 7) // 8)  # filter byte 0 + packed bits

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(row * height, 9))
                     + chunk(b"IEND", b""))


# --- 1. MultiBench pickles ----------------------------------------------------------------------

@pytest.mark.parametrize("payload", ["os.system", "subprocess.call", "builtins.exec"])
def test_pickle_that_runs_code_is_refused_before_it_runs(tmp_path, payload):
    raw, marker = tmp_path / "raw", tmp_path / "EXECUTED"
    raw.mkdir()
    evil, global_name = _evil_payloads(marker)[payload]
    (raw / "humor.pkl").write_bytes(pickle.dumps({"train": evil, "valid": {}, "test": {}}, protocol=2))
    with pytest.raises(DataError, match=rf"humor\.pkl: refused .*{global_name.replace('.', r'[.]')}"):
        prepare("ur_funny", raw, tmp_path / "out", TINY)
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


class _Python2Pickler(pickle._Pickler):
    """Writes what Python 2 wrote for a dict of numpy arrays: bytes as (SHORT_)BINSTRING, numpy 1 names."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_bytes(self, obj):
        n = len(obj)
        self.write((pickle.SHORT_BINSTRING + bytes([n]) if n < 256 else pickle.BINSTRING + struct.pack("<i", n)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_bytes

    def save_global(self, obj, name=None):
        module = getattr(obj, "__module__", "")
        if module.startswith("numpy._core"):
            self.write(pickle.GLOBAL + f"numpy.core{module[len('numpy._core'):]}\n{name or obj.__name__}\n".encode())
            self.memoize(obj)
        else:
            super().save_global(obj, name)


@pytest.mark.parametrize("writer", ["python2", "protocol0", "protocol2", "protocol5"])
def test_real_pickle_flavours_still_load(tmp_path, writer):
    """The twin rewritten as Python 2 (latin1 strings, numpy.core names) and Python 3 protocols 0-5,
    with MOSEI-like object-array ids, loads to the same arrays as the protocol-4 twin."""
    raw = tmp_path / "raw"
    data = synthesize("mosei", raw, SynthConfig(n=40, seed=2, steps=6))
    reference = prepare("mosei", raw, tmp_path / "ref", TINY)
    for part in data.values():
        part["id"] = np.array([[i, "0"] for i in part["id"]], dtype=object)  # [N, 2] object ids
    if writer == "python2":
        import io

        buf = io.BytesIO()
        _Python2Pickler(buf, protocol=2).dump(data)
        blob = buf.getvalue()
        assert b"cnumpy.core.multiarray\n_reconstruct" in blob and b"_codecs" not in blob
    else:
        blob = pickle.dumps(data, protocol=int(writer[-1]))
    (raw / "mosei_senti_data.pkl").write_bytes(blob)
    manifest = prepare("mosei", raw, tmp_path / "out", TINY)
    assert manifest["splits"] == reference["splits"] and manifest["dropped"] == reference["dropped"]
    for name in ("text", "video", "audio", "labels", "mask"):
        np.testing.assert_array_equal(np.load(tmp_path / "out" / "test" / f"{name}.npy"),
                                      np.load(tmp_path / "ref" / "test" / f"{name}.npy"))
    ids = json.loads((tmp_path / "out" / "train" / "raw_ids.json").read_text())
    assert ids[0].endswith("/0") and ids[0].split("/")[0].startswith("mosei_")


# --- 2. paths from records stay inside the raw folder -------------------------------------------

def _outside_png(tmp_path: Path) -> Path:
    path = tmp_path / "outside_secret.png"
    Image.new("RGB", (48, 48), (7, 201, 99)).save(path)
    return path


def test_hateful_memes_image_paths_escaping_the_folder_are_skipped_unopened(tmp_path):
    raw = tmp_path / "raw"
    synthesize("hateful_memes", raw, SynthConfig(n=40, seed=2))
    secret = _outside_png(tmp_path)
    records = _lines(raw / "train.jsonl")
    records[1]["img"] = "../outside_secret.png"
    records[2]["img"] = str(secret)  # absolute
    (raw / records[3]["img"]).unlink()
    (raw / records[3]["img"]).symlink_to(secret)  # img/<id>.png -> outside
    records[4]["img"] = "img/../img/" + Path(records[4]["img"]).name  # ".." that stays inside: fine
    _write_lines(raw / "train.jsonl", records)
    with opened_files() as seen:
        manifest = prepare("hateful_memes", raw, tmp_path / "out", TINY)
    assert manifest["dropped"] == {"train": {
        "image path outside the raw folder (absolute path)": 1,
        "image path outside the raw folder (leaves the folder through ..)": 1,
        "image path outside the raw folder (symlink leads outside)": 1,
    }}
    assert str(secret) not in seen
    assert any(p.endswith(Path(records[4]["img"]).name) for p in seen)  # the hook does see image opens
    images = np.load(tmp_path / "out" / "train" / "images.npy")
    assert manifest["splits"]["train"] == len(records) - 3
    assert not (images.reshape(-1)[: images.size // 3 * 3].reshape(-1, 3) == (7, 201, 99)).all(axis=1).any()
    with pytest.raises(DataError, match=r"train\.jsonl line 2 \(id .*\): image path '\.\./outside_secret\.png': leaves"):
        prepare("hateful_memes", raw, tmp_path / "strict", STRICT)


@pytest.mark.parametrize("layout,meta_dir,image_dir", [("archive", "dataset", "dataset"),
                                                        ("images+labels", "labels", "images")])
def test_mmimdb_ids_escaping_the_folder_are_skipped_unopened(tmp_path, layout, meta_dir, image_dir):
    raw = tmp_path / "raw"
    synthesize("mmimdb", raw, SynthConfig(n=40, seed=2), layout=layout)
    split = json.loads((raw / "split.json").read_text())
    first = split["train"][0]
    secret_json = tmp_path / "outside.json"
    secret_json.write_text((raw / meta_dir / f"{first}.json").read_text())
    secret_jpeg = tmp_path / "outside.jpeg"
    Image.new("RGB", (48, 48), (7, 201, 99)).save(secret_jpeg)
    split["train"].append("../../outside")  # <meta_dir>/../../outside.json = the file above
    linked_meta, linked_image = split["train"][1], split["train"][2]
    (raw / meta_dir / f"{linked_meta}.json").unlink()
    (raw / meta_dir / f"{linked_meta}.json").symlink_to(secret_json)
    (raw / image_dir / f"{linked_image}.jpeg").unlink()
    (raw / image_dir / f"{linked_image}.jpeg").symlink_to(secret_jpeg)
    (raw / "split.json").write_text(json.dumps(split))
    # admit the twin's extra genres, so that only the escapes are dropped
    config = PrepareConfig.tiny(progress=False, workers=1, genres=MMIMDB_GENRES + EXTRA_GENRES)
    with opened_files() as seen:
        manifest = prepare("mmimdb", raw, tmp_path / "out", config)
    assert manifest["dropped"]["train"] == {
        "metadata path outside the raw folder (leaves the folder through ..)": 1,
        "metadata path outside the raw folder (symlink leads outside)": 1,
        "image path outside the raw folder (symlink leads outside)": 1,
    }
    assert str(secret_json) not in seen and str(secret_jpeg) not in seen
    assert manifest["splits"]["train"] == len(split["train"]) - 3


def test_wrong_layout_is_a_clear_error(tmp_path):
    raw = tmp_path / "raw"
    synthesize("mmimdb", raw, SynthConfig(n=40, seed=2), layout="images+labels")
    (raw / "labels").rename(raw / "metadata")
    with pytest.raises(DataError, match="not an MM-IMDb folder; expected split.json with dataset/"):
        prepare("mmimdb", raw, tmp_path / "out", TINY)
    split = json.loads((raw.parent / "raw" / "split.json").read_text())
    (raw / "metadata").rename(raw / "labels")
    split["dev"].append({"id": 1})
    (raw / "split.json").write_text(json.dumps(split))
    with pytest.raises(DataError, match=r"split\.json: id \{'id': 1\} is not a string or an integer"):
        prepare("mmimdb", raw, tmp_path / "out", TINY)


def test_resolve_inside_and_safe_name(tmp_path):
    from data_prep.paths import PathEscape, resolve_inside, safe_name

    root = tmp_path / "root"
    (root / "img").mkdir(parents=True)
    (root / "inner").symlink_to(root / "img")
    (root / "outer").symlink_to(tmp_path)
    assert resolve_inside(root, "img/a.png") == (root / "img" / "a.png").resolve()
    assert resolve_inside(root, "inner/a.png") == (root / "img" / "a.png").resolve()  # a link that stays inside
    assert resolve_inside(root, "img/../img/a.png") == (root / "img" / "a.png").resolve()
    for text, reason in [("/etc/passwd", "absolute path"), ("C:\\x.png", "absolute path"),
                         ("../x.png", "leaves the folder through .."), ("img/../../x.png", "leaves the folder through .."),
                         ("outer/x.png", "symlink leads outside"), ("a\x00b", "invalid path")]:
        with pytest.raises(PathEscape) as err:
            resolve_inside(root, text, what="image path")
        assert err.value.reason == reason and err.value.what == "image path"
    assert safe_name("3f2a9c_run-1.json", what="run key") == "3f2a9c_run-1.json"
    for bad in ["", ".", "..", ".hidden", "a/b", "a\\b", "/abs", "x" * 201, "sp ace", 42]:
        with pytest.raises(ValueError, match="run key"):
            safe_name(bad, what="run key")


# --- 3. checkpoints -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def hm_prepared(hm_twin):
    return hm_twin(40, 3)


@pytest.mark.parametrize("payload", ["os.system", "builtins.exec"])
def test_resume_checkpoint_that_runs_code_is_refused(hm_prepared, tmp_path, payload):
    from wma_core import train as T
    from wma_core.record import run_config
    from wma_core.store import config_key
    from wma_core.store import ResultsStore

    marker = tmp_path / "EXECUTED"
    evil, global_name = _evil_payloads(marker)[payload]
    cfg = T.TrainConfig(dataset="hateful_memes", data_dir=str(hm_prepared), epochs=1, batch_size=16,
                        progress=False, device="cpu", ot_iters=5)
    store = ResultsStore(tmp_path / "results")
    run_dir = store.run_dir(config_key(run_config(cfg)))
    run_dir.mkdir(parents=True)
    torch.save({"model": evil, "opt": {}, "sched": {}, "rng": torch.get_rng_state(), "state": {}}, run_dir / "last.pt")
    with pytest.raises(ValueError, match=rf"last\.pt: refused to load: it names \S*{global_name.split('.')[-1]},"):
        T.fit(cfg, store)
    assert not marker.exists()


def test_checkpoint_rng_state_round_trips_every_generator(tmp_path):
    import random

    from wma_core import checkpoint

    random.seed(5)
    np.random.seed(6)
    torch.manual_seed(7)
    np.random.standard_normal(3)  # an odd count leaves a cached Gaussian in numpy's state
    state = checkpoint.rng_state()
    expected = (random.random(), random.gauss(0, 1), np.random.standard_normal(5).tolist(), torch.rand(4).tolist())
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    checkpoint.save({"rng": state}, tmp_path / "rng.pt")
    loaded = torch.load(tmp_path / "rng.pt", weights_only=True)  # plain tensors and numbers only
    checkpoint.set_rng_state(loaded["rng"])
    got = (random.random(), random.gauss(0, 1), np.random.standard_normal(5).tolist(), torch.rand(4).tolist())
    assert got == expected


def test_checkpoint_plain_makes_numpy_values_loadable(tmp_path):
    from wma_core import checkpoint

    state = {"best": np.float64(0.75), "epoch": np.int64(3), "history": [{"dev_auroc": np.float32(0.5)}],
             "d0": {"text-image": 0.9}, "pair": ("a", np.bool_(True)), "arr": np.arange(3)}
    checkpoint.save(checkpoint.plain(state), tmp_path / "s.pt")
    loaded = torch.load(tmp_path / "s.pt", weights_only=True)
    assert loaded == {"best": 0.75, "epoch": 3, "history": [{"dev_auroc": 0.5}], "d0": {"text-image": 0.9},
                      "pair": ("a", True), "arr": [0, 1, 2]}
    assert type(loaded["best"]) is float and type(loaded["epoch"]) is int


def test_pretrained_weights_load_without_unpickling_code(tmp_path):
    """A local ViLT folder whose pytorch_model.bin would run code: load_vilt refuses it."""
    from transformers import ViltConfig, ViltModel

    from wma_core.model import TINY_CONFIG, load_vilt

    folder, marker = tmp_path / "vilt", tmp_path / "EXECUTED"
    ViltModel(ViltConfig(**TINY_CONFIG)).save_pretrained(folder)
    assert (folder / "model.safetensors").exists()
    assert load_vilt(str(folder)).vilt.config.hidden_size == TINY_CONFIG["hidden_size"]  # safetensors loads
    (folder / "model.safetensors").unlink()
    evil, _ = _evil_payloads(marker)["os.system"]
    torch.save({"embeddings.x": evil}, folder / "pytorch_model.bin")
    with pytest.raises(Exception):
        load_vilt(str(folder))
    assert not marker.exists()


# --- 4. other surfaces --------------------------------------------------------------------------

@pytest.mark.parametrize("side", [9500, 20000])  # 90 Mpx: PIL only warns; 400 Mpx: PIL raises
def test_decompression_bomb_is_a_counted_skip(tmp_path, side):
    raw = tmp_path / "raw"
    synthesize("hateful_memes", raw, SynthConfig(n=40, seed=2))
    victim = _lines(raw / "dev_seen.jsonl")[2]
    _png_1bit(raw / victim["img"], side, side)
    head = (raw / victim["img"]).read_bytes()
    assert len(head) < 200_000 and struct.unpack(">II", head[16:24]) == (side, side)  # small file, huge image
    manifest = prepare("hateful_memes", raw, tmp_path / "out", TINY)
    assert manifest["dropped"] == {"dev": {"image too large (decompression bomb)": 1}}


def test_jsonl_line_of_many_megabytes_is_refused_in_bounded_memory(tmp_path):
    from data_prep.readers.hateful_memes import read_hateful_memes

    raw = tmp_path / "raw"
    synthesize("hateful_memes", raw, SynthConfig(n=40, seed=2))
    records = _lines(raw / "train.jsonl")
    huge = json.dumps({"id": 1, "img": records[0]["img"], "label": 0, "text": "a" * (32 << 20)})
    _write_lines(raw / "train.jsonl", [records[0], huge, *records[1:]])
    del huge
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=r"train\.jsonl line 2: longer than \d+ bytes"):
            read_hateful_memes(raw, SkipLog())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"peak {peak / 2**20:.1f} MiB while reading a 32 MiB line"


def test_deeply_nested_json_is_a_clear_error(tmp_path):
    raw = tmp_path / "raw"
    synthesize("hateful_memes", raw, SynthConfig(n=40, seed=2))
    records = _lines(raw / "dev_seen.jsonl")
    deep = json.dumps({**records[0], "extra": 0}).replace("0}", "[" * 200_000 + "]" * 200_000 + "}")
    _write_lines(raw / "dev_seen.jsonl", [*records[:3], deep, *records[3:]])
    with pytest.raises(DataError, match=r"dev_seen\.jsonl line 4: JSON nested deeper than \d+ levels"):
        prepare("hateful_memes", raw, tmp_path / "out", TINY)
    # brackets inside strings are text, not nesting
    records[0]["text"] = "[[[[" * 1000
    _write_lines(raw / "dev_seen.jsonl", records)
    prepare("hateful_memes", raw, tmp_path / "ok", TINY)

    mm = tmp_path / "mm"
    synthesize("mmimdb", mm, SynthConfig(n=40, seed=2))
    movie = json.loads((mm / "split.json").read_text())["test"][1]
    meta = json.loads((mm / "dataset" / f"{movie}.json").read_text())
    (mm / "dataset" / f"{movie}.json").write_text(json.dumps(meta)[:-1] + ', "x": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(DataError, match=rf"dataset/{movie}\.json \(id {movie}\): JSON nested deeper"):
        prepare("mmimdb", mm, tmp_path / "mm-out", TINY)


@pytest.mark.parametrize("key", ["../../escape", "/tmp/abs", "a/b", ".hidden", ".."])
def test_run_keys_cannot_leave_the_results_folder(tmp_path, key):
    from wma_core.store import ResultsStore

    store = ResultsStore(tmp_path / "results")
    for use in (store.path, store.run_dir, store.lock, store.get):
        with pytest.raises(ValueError, match="run key"):
            use(key)
    assert store.path("0123abcd4567ef89").parent == store.records_dir


def test_unknown_dataset_ids_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset"):
        prepare("../hateful_memes", tmp_path, tmp_path / "out", TINY)
    with pytest.raises(ValueError, match="unknown dataset"):
        synthesize("../../x", tmp_path / "raw")


def test_each_bomb_guard_alone_refuses(tmp_path, monkeypatch):
    """Our header check and PIL's warning-turned-error each refuse an oversized image on their own."""
    from data_prep import images

    path = tmp_path / "a.png"
    Image.new("RGB", (60, 50), (1, 2, 3)).save(path)
    assert images.load_resized(path, 32, 16).problem is None
    monkeypatch.setattr(images, "MAX_PIXELS", 2999)  # header check: 3000 pixels > 2999
    assert images.load_resized(path, 32, 16).problem == "image too large (decompression bomb)"
    monkeypatch.setattr(images, "MAX_PIXELS", 10**9)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)  # PIL warns between 2000 and 4000 pixels
    res = images.load_resized(path, 32, 16)
    assert res.problem == "image too large (decompression bomb)" and "DecompressionBombWarning" in res.detail
