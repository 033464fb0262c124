"""Untrusted files, second pass (issue 28): one test per class of attack that got through before.

Every hostile input is built here: pickles from crafted reduce tuples (a dtype hiding an object
field, an array never filled, a zero-size dtype, ids that reference one big string many times),
symlinks and FIFOs (os.mkfifo), EPS / TIFF / 16-bit / EXIF-rotated images made with PIL, tokenizer
folders with an auto_map. "Nothing outside is read" is checked with an audit hook that records every
file Python opens (`open` events, which os.open raises as well) and every process it starts.
"""

from __future__ import annotations

import builtins
import json
import os
import pickle
import struct
import subprocess
import sys
import threading
import time
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from numpy._core.multiarray import _reconstruct
from PIL import Image

from data_prep.config import PrepareConfig, SynthConfig
from data_prep.issues import DataError
from data_prep.prepare import prepare
from data_prep.synth import synthesize

TINY = PrepareConfig.tiny(progress=False, workers=1)  # in-process, so the audit hook sees every open
ROOT = Path(__file__).resolve().parents[1]

# --- helpers ------------------------------------------------------------------------------------

_SEEN: list[dict] = []


def _audit(event, args):
    if not _SEEN:
        return
    if event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
        _SEEN[-1]["open"].append(os.path.realpath(os.fsdecode(args[0])))
    elif event in ("subprocess.Popen", "os.posix_spawn", "os.exec", "os.system", "os.fork"):
        _SEEN[-1]["spawn"].append((event, repr(args)[:200]))


sys.addaudithook(_audit)


@contextmanager
def spy():
    """{"open": real paths opened, "spawn": processes started} inside the block."""
    seen = {"open": [], "spawn": []}
    _SEEN.append(seen)
    try:
        yield seen
    finally:
        _SEEN.pop()


def _within(seconds: float, fn, *args, **kwargs):
    """fn(*args) in a thread; fails the test if it has not returned after `seconds` (a hang)."""
    out = {}

    def run():
        try:
            out["value"] = fn(*args, **kwargs)
        except BaseException as e:  # noqa: BLE001 - handed to the test
            out["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"still running after {seconds} s (hangs)"
    if "error" in out:
        raise out["error"]
    return out["value"]


class _Reduce:
    """Pickles as whatever reduce tuple it is given (how a crafted pickle is written)."""

    def __init__(self, *reduce):
        self.reduce = reduce

    def __reduce__(self):
        return self.reduce


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _write_lines(path: Path, records: list) -> None:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n")


def _twin(dataset: str, tmp_path: Path, **options) -> Path:
    raw = tmp_path / "raw"
    synthesize(dataset, raw, SynthConfig(n=40, seed=2, steps=6), **options)
    return raw


def _humor(raw: Path) -> dict:
    with open(raw / "humor.pkl", "rb") as f:
        return pickle.load(f)  # our own twin


def _write_humor(raw: Path, data, protocol: int = 4) -> None:
    (raw / "humor.pkl").write_bytes(pickle.dumps(data, protocol=protocol))


def _png_1bit(path: Path, width: int, height: int) -> None:
    row = b"\x00" + bytes((width + 7) // 8)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(row * height, 9))
                     + chunk(b"IEND", b""))


# --- 1. pickles: numpy never rebuilds an array from raw state ------------------------------------

def _hidden_object_dtype():
    """A dtype whose state declares an object field but clears the "has objects" flag (0)."""
    return _Reduce(np.dtype, ("V8", False, True), (3, "|", None, ("p",), {"p": (np.dtype("O"), 0)}, 8, 1, 0))


def test_dtype_hiding_an_object_field_is_refused_and_never_dereferenced(tmp_path):
    raw = _twin("ur_funny", tmp_path)
    data = _humor(raw)
    n = len(data["train"]["labels"])
    data["train"]["id"] = _Reduce(_reconstruct, (np.ndarray, (0,), b"b"),
                                  (1, (n,), _hidden_object_dtype(), False, struct.pack("<Q", 0x4141414141414141) * n))
    _write_humor(raw, data, protocol=2)
    # the attack is real: numpy's own unpickling then reads a pointer from the file (SIGSEGV)
    crash = subprocess.run([sys.executable, "-c", "import pickle, sys; a = pickle.load(open(sys.argv[1], 'rb'));"
                            "print(repr(a['train']['id'][0]))", str(raw / "humor.pkl")], capture_output=True, timeout=120)
    assert crash.returncode != 0
    # prepare refuses it before numpy sees the state (in a subprocess: a regression would crash pytest)
    run = subprocess.run([sys.executable, "-m", "data_prep", "prepare", "ur_funny", "--raw", str(raw),
                          "--out", str(tmp_path / "out"), "--quiet"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 2, run.stderr
    assert "humor.pkl: refused to load: dtype 'V8'" in run.stderr
    assert not (tmp_path / "out").exists()


def test_array_without_build_is_refused_not_left_uninitialised(tmp_path):
    raw = _twin("ur_funny", tmp_path)
    data = _humor(raw)
    n, t = data["test"]["text"].shape[:2]
    # _reconstruct(ndarray, shape, "f") allocates an uninitialised float32 buffer; no BUILD fills it
    data["test"]["text"] = _Reduce(_reconstruct, (np.ndarray, (n, t, 300), b"f"))
    _write_humor(raw, data)
    with pytest.raises(DataError, match=r"humor\.pkl: refused to load: an array without data \(_reconstruct with no BUILD"):
        prepare("ur_funny", raw, tmp_path / "out", TINY)


@pytest.mark.parametrize("attack", ["zero-size dtype", "huge shape", "short buffer", "structured", "datetime"])
def test_arrays_whose_size_does_not_match_their_data_are_refused(tmp_path, attack):
    raw = _twin("ur_funny", tmp_path)
    data = _humor(raw)
    f4 = _Reduce(np.dtype, ("f4", False, True), (3, "<", None, None, None, -1, -1, 0))
    state = {
        # a 0-byte item: 10**12 elements in 0 bytes (zero strides); iterating them never ends
        "zero-size dtype": (1, (10**12,), _Reduce(np.dtype, ("V0", False, True), (3, "|", None, None, None, 0, 1, 0)), False, b""),
        "huge shape": (1, (10**6, 10**6, 300), f4, False, b"\0" * 16),
        "short buffer": (1, (40, 6, 300), f4, False, b"\0" * 16),
        "structured": (1, (2,), _Reduce(np.dtype, ("V8", False, True), (3, "|", None, ("a",), {"a": (np.dtype("f8"), 0)}, 8, 1, 0)),
                       False, b"\0" * 16),
        "datetime": (1, (2,), _Reduce(np.dtype, ("M8", False, True), (4, "<", None, None, None, -1, -1, 0, {})), False, b"\0" * 16),
    }[attack]
    data["train"]["id"] = _Reduce(_reconstruct, (np.ndarray, (0,), b"b"), state)
    _write_humor(raw, data)
    start = time.perf_counter()
    with pytest.raises(DataError, match=r"humor\.pkl: refused to load: "):
        prepare("ur_funny", raw, tmp_path / "out", TINY)
    assert time.perf_counter() - start < 30


def test_pickle_limits_on_memory_nesting_and_cycles(tmp_path):
    """Shared buffers count every time they are used; deep nesting and self-reference are refused."""
    import io

    from data_prep.readers.safe_pickle import PickleRefused, SafeNumpyUnpickler

    data = bytes(1 << 20)  # 1 MiB, pickled once, the data of 64 different arrays (through the memo)
    arrays = [_Reduce(_reconstruct, (np.ndarray, (0,), b"b"), (1, (1 << 18,), np.dtype("f4"), False, data)) for _ in range(64)]
    blob = pickle.dumps(arrays, protocol=4)
    assert len(blob) < 2 << 20
    with pytest.raises(PickleRefused, match="arrays of more than"):
        SafeNumpyUnpickler(io.BytesIO(blob), max_array_bytes=32 << 20).load()
    assert len(SafeNumpyUnpickler(io.BytesIO(blob)).load()) == 64
    nested: list = []
    for _ in range(100):
        nested = [nested]
    with pytest.raises(PickleRefused, match="nested deeper"):
        SafeNumpyUnpickler(io.BytesIO(pickle.dumps(nested))).load()
    loop: list = []
    loop.append(loop)
    with pytest.raises(PickleRefused, match="contains itself"):
        SafeNumpyUnpickler(io.BytesIO(pickle.dumps(loop))).load()
    with pytest.raises(PickleRefused, match="opcodes"):
        SafeNumpyUnpickler(io.BytesIO(pickle.dumps(list(range(1000)))), max_ops=100).load()
    with pytest.raises(PickleRefused, match="integer of"):
        SafeNumpyUnpickler(io.BytesIO(pickle.dumps(1 << 80_000))).load()


def test_id_structure_that_would_exhaust_memory_is_refused(tmp_path):
    raw = _twin("ur_funny", tmp_path)
    data = _humor(raw)
    big = "x" * (1 << 20)
    ids = np.empty(len(data["valid"]["labels"]), dtype=object)
    for i in range(len(ids)):
        ids[i] = [big] * 2000  # 2 GB of text per id once printed; ~4 KB in the pickle (memo)
    data["valid"]["id"] = ids
    _write_humor(raw, data)
    assert (raw / "humor.pkl").stat().st_size < 8 << 20
    with pytest.raises(DataError, match=r"humor\.pkl\['valid'\]\['id'\] record 0: id of type list \(2000 items\)"):
        _within(60, prepare, "ur_funny", raw, tmp_path / "out", TINY)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_real_pickle_with_an_empty_array_loads(tmp_path, protocol):
    """Protocol 2 writes an empty array's data as `bytes()`: the first pass refused it as code."""
    raw = _twin("ur_funny", tmp_path)
    reference = prepare("ur_funny", raw, tmp_path / "ref", TINY)
    data = _humor(raw)
    for part in data.values():
        part["extra"] = np.zeros((0, 3), np.float32)
        part["empty_ids"] = np.array([], dtype=np.int64)
    _write_humor(raw, data, protocol=protocol)
    manifest = prepare("ur_funny", raw, tmp_path / "out", TINY)
    assert manifest["splits"] == reference["splits"]
    for name in ("text", "video", "audio", "labels", "mask"):
        assert (tmp_path / "out" / "train" / f"{name}.npy").read_bytes() == (tmp_path / "ref" / "train" / f"{name}.npy").read_bytes()


def test_ragged_sequences_and_emptied_splits_are_clear_errors(tmp_path):
    raw = _twin("ur_funny", tmp_path)
    data = _humor(raw)
    vision = data["train"]["vision"]
    data["train"]["vision"] = [vision[i] if i != 3 else vision[i][:4] for i in range(len(vision))]
    _write_humor(raw, data)
    with pytest.raises(DataError, match=r"humor\.pkl\['train'\]\['vision'\] record 3: shape \(4, 371\) but record 0 has \(6, 371\) \(ragged"):
        prepare("ur_funny", raw, tmp_path / "out", TINY)
    data = _humor(_twin("ur_funny", tmp_path / "b"))
    data["test"]["text"][:] = 0  # every sample dropped by MultiBench's rule
    _write_humor(tmp_path / "b" / "raw", data)
    with pytest.raises(DataError, match=r"humor\.pkl\['test'\]: no sample left: all \d+ samples have text features that are all zero"):
        prepare("ur_funny", tmp_path / "b" / "raw", tmp_path / "out", TINY)


# --- 2. images ----------------------------------------------------------------------------------

_EPS = b"""%!PS-Adobe-3.0 EPSF-3.0
%%BoundingBox: 0 0 48 48
%%EndComments
newpath 0 0 moveto 48 0 lineto 48 48 lineto closepath fill
showpage
%%EOF
"""


def test_eps_saved_as_png_never_runs_an_external_decoder(tmp_path):
    raw = _twin("hateful_memes", tmp_path)
    victim = _lines(raw / "train.jsonl")[4]
    (raw / victim["img"]).write_bytes(_EPS)
    assert Image.open(raw / victim["img"]).format == "EPS"  # what Pillow would pick on its own
    with spy() as seen:
        manifest = prepare("hateful_memes", raw, tmp_path / "out", TINY)
    assert seen["spawn"] == []  # no Ghostscript, no process at all
    assert manifest["dropped"] == {"train": {"unsupported image format": 1}}
    log = (tmp_path / "out" / "prepare.log").read_text()
    assert f"train.jsonl line 5 (id {victim['id']})" in log and "EPS file" in log


def test_high_bit_depth_and_float_images_are_scaled_not_clipped(tmp_path):
    from data_prep.images import load_resized, to_rgb

    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (48, 1))
    Image.fromarray(ramp).save(tmp_path / "grey16.png")
    assert Image.open(tmp_path / "grey16.png").mode.startswith("I")
    res = load_resized(tmp_path / "grey16.png", 32, 16)
    assert res.problem is None
    assert (res.pixels == 255).mean() < 0.1  # PIL's convert("RGB") clips: 99% of pixels at 255
    assert abs(res.pixels.mean() - 127.5) < 3
    rgb = np.asarray(to_rgb(Image.fromarray(ramp)))
    np.testing.assert_array_equal(rgb[..., 0], np.rint(ramp / 257.0).astype(np.uint8))
    # float images ("F", e.g. a float TIFF) hold 0..1: mapped to 0..255, not clipped to black
    f = np.tile(np.linspace(0, 1, 64, dtype=np.float32), (48, 1))
    out = np.asarray(to_rgb(Image.fromarray(f, mode="F")))
    assert out[0, -1, 0] == 255 and abs(out.mean() - 127.5) < 3
    # a float TIFF as a dataset image: TIFF is not decoded at all, a counted skip saying so
    Image.fromarray(f, mode="F").save(tmp_path / "float.tif")
    (tmp_path / "float.png").write_bytes((tmp_path / "float.tif").read_bytes())
    res = load_resized(tmp_path / "float.png", 32, 16)
    assert res.problem == "unsupported image format" and "TIFF" in res.detail


def test_exif_orientation_is_applied(tmp_path):
    from data_prep.images import load_resized

    img = np.zeros((40, 80, 3), np.uint8)
    img[:, :40] = (255, 0, 0)  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape; shown rotated 90 degrees clockwise
    Image.fromarray(img).save(tmp_path / "rotated.jpeg", exif=exif, quality=95)
    res = load_resized(tmp_path / "rotated.jpeg", 32, 16)
    _, h, w = res.pixels.shape
    assert h > w  # portrait, as every viewer shows it
    top, bottom = res.pixels[:, : h // 4].mean(axis=(1, 2)), res.pixels[:, -h // 4:].mean(axis=(1, 2))
    assert top[0] > 200 and bottom[0] < 60  # the red half is on top after the rotation


def test_images_too_large_are_refused_before_reading_or_decoding(tmp_path):
    raw = _twin("hateful_memes", tmp_path)
    records = _lines(raw / "train.jsonl")
    _png_1bit(raw / records[2]["img"], 9000, 9000)  # 81 Mpx, ~10 KB: 2 GB per worker once decoded
    assert (raw / records[2]["img"]).stat().st_size < 200_000
    sparse = raw / records[3]["img"]
    head = sparse.read_bytes()
    with open(sparse, "r+b") as f:  # a valid PNG start, then a 1 GiB hole (no disk used)
        f.truncate(1 << 30)
    assert sparse.stat().st_size == 1 << 30 and head[:8] == b"\x89PNG\r\n\x1a\n"
    import tracemalloc

    tracemalloc.start()
    try:
        manifest = prepare("hateful_memes", raw, tmp_path / "out", TINY)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert manifest["dropped"] == {"train": {"image too large (decompression bomb)": 1, "image file too large": 1}}
    assert peak < 200 << 20


# --- 3. every file from elsewhere is a regular file inside its folder ----------------------------

def _outside(tmp_path: Path, name: str, source: Path) -> Path:
    target = tmp_path / "elsewhere" / name
    target.parent.mkdir(exist_ok=True)
    if source.is_dir():
        source.rename(target)
    else:
        target.write_bytes(source.read_bytes())
        source.unlink()
    source.symlink_to(target, target_is_directory=target.is_dir())
    return target


@pytest.mark.parametrize("dataset,name,message", [
    ("hateful_memes", "train.jsonl", r"train\.jsonl: symlink leads outside"),
    ("hateful_memes", "test_unseen.jsonl", r"test_unseen\.jsonl: symlink leads outside"),
    ("mmimdb", "split.json", r"split\.json: symlink leads outside"),
    ("mmimdb", "dataset", r"folder 'dataset': a symlink leads outside"),
    ("ur_funny", "humor.pkl", r"humor\.pkl: symlink leads outside"),
    ("coco_captions", "train2017", r"image folder 'train2017': a symlink leads outside"),
    ("coco_captions", "annotations/captions_val2017.json", r"annotation file .*captions_val2017\.json.*symlink leads outside"),
])
def test_raw_files_and_folders_symlinked_out_of_the_raw_folder_are_refused_unread(tmp_path, dataset, name, message):
    from data_prep.readers.coco import prepare_captions
    from data_prep.synth.captions import synth_captions

    raw = tmp_path / "raw"
    if dataset == "coco_captions":
        synth_captions(raw, SynthConfig(n=40, seed=2))
    else:
        synthesize(dataset, raw, SynthConfig(n=40, seed=2, steps=6))
    target = _outside(tmp_path, Path(name).name, raw / name)
    run = prepare_captions if dataset == "coco_captions" else lambda r, o, c: prepare(dataset, r, o, c)
    with spy() as seen:
        with pytest.raises(DataError, match=message):
            run(raw, tmp_path / "out", TINY)
    assert not any(p == str(target) or p.startswith(str(target) + os.sep) for p in seen["open"])
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("where", ["image", "jsonl", "movie json", "pickle"])
def test_a_fifo_in_place_of_a_file_never_hangs(tmp_path, where):
    dataset = {"image": "hateful_memes", "jsonl": "hateful_memes", "movie json": "mmimdb", "pickle": "ur_funny"}[where]
    raw = _twin(dataset, tmp_path)
    if where == "image":
        path = raw / _lines(raw / "dev_seen.jsonl")[1]["img"]
    elif where == "jsonl":
        path = raw / "dev_seen.jsonl"
    elif where == "movie json":
        path = raw / "dataset" / f"{json.loads((raw / 'split.json').read_text())['test'][0]}.json"
    else:
        path = raw / "humor.pkl"
    path.unlink()
    os.mkfifo(path)
    if where == "image":
        manifest = _within(120, prepare, dataset, raw, tmp_path / "out", TINY)
        assert manifest["dropped"] == {"dev": {"image is not a regular file (FIFO)": 1}}
    elif where == "movie json":
        from data_prep.config import MMIMDB_GENRES
        from data_prep.synth.mmimdb import EXTRA_GENRES

        config = PrepareConfig.tiny(progress=False, workers=1, genres=MMIMDB_GENRES + EXTRA_GENRES)
        manifest = _within(120, prepare, dataset, raw, tmp_path / "out", config)
        assert manifest["dropped"]["test"] == {"metadata is not a regular file (FIFO)": 1}
    else:
        with pytest.raises(DataError, match=rf"{path.name}: not a regular file \(FIFO\)"):
            _within(120, prepare, dataset, raw, tmp_path / "out", TINY)


def test_prepared_folder_names_and_symlinks_stay_inside(tmp_path, hm_twin):
    import shutil

    from data_prep.dataset import PreparedDataset

    prepared = tmp_path / "prep"
    shutil.copytree(hm_twin(40, 3), prepared)
    secret = tmp_path / "outside"
    (secret / "train").mkdir(parents=True)
    np.save(secret / "train" / "labels.npy", np.zeros(3, np.float32))
    manifest = json.loads((prepared / "manifest.json").read_text())
    bad = dict(manifest, modalities=["text", "../../outside/train/labels"])
    (prepared / "manifest.json").write_text(json.dumps(bad))
    with spy() as seen, pytest.raises(DataError, match=r"modalities .*expected names among"):
        PreparedDataset(prepared, "train")
    (prepared / "manifest.json").write_text(json.dumps(manifest))
    (prepared / "train" / "labels.npy").unlink()
    (prepared / "train" / "labels.npy").symlink_to(secret / "train" / "labels.npy")
    with spy() as seen2, pytest.raises(DataError, match=r"labels\.npy: symlink leads outside"):
        PreparedDataset(prepared, "train")
    assert not any(p.startswith(str(secret)) for p in seen["open"] + seen2["open"])
    (prepared / "train" / "labels.npy").unlink()
    os.mkfifo(prepared / "train" / "labels.npy")
    with pytest.raises(DataError, match=r"not a regular file \(FIFO\)"):
        _within(60, PreparedDataset, prepared, "train")


# --- 4. tokenizers ------------------------------------------------------------------------------

def test_tokenizer_folder_with_custom_code_is_neither_run_nor_asked_about(tmp_path, monkeypatch):
    from transformers import PreTrainedTokenizerFast

    from data_prep.text import fit_wordpiece

    folder, marker = tmp_path / "tok", tmp_path / "EXECUTED"
    hf = PreTrainedTokenizerFast(tokenizer_object=fit_wordpiece(["a small local vocabulary of words"] * 3, 100),
                                 pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    hf.save_pretrained(folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.update(tokenizer_class="EvilTokenizerFast", auto_map={"AutoTokenizer": [None, "evil.EvilTokenizerFast"]})
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    (folder / "evil.py").write_text(f"open({str(marker)!r}, 'w').close()\nfrom transformers import PreTrainedTokenizerFast\n"
                                    "class EvilTokenizerFast(PreTrainedTokenizerFast):\n    pass\n")

    asked, passed = [], []

    def no_questions(*args, **kwargs):  # transformers turns an error here into "custom code": record it
        asked.append(args)
        raise EOFError

    monkeypatch.setattr(builtins, "input", no_questions)
    from transformers import dynamic_module_utils
    from transformers.models.auto import tokenization_auto

    real = dynamic_module_utils.resolve_trust_remote_code

    def recording(trust_remote_code, *args, **kwargs):
        passed.append(trust_remote_code)
        return real(trust_remote_code, *args, **kwargs)

    monkeypatch.setattr(tokenization_auto, "resolve_trust_remote_code", recording)
    raw = _twin("hateful_memes", tmp_path)
    start = time.perf_counter()
    with pytest.raises(DataError, match="could not load tokenizer .*custom code"):
        prepare("hateful_memes", raw, tmp_path / "out", PrepareConfig.tiny(progress=False, tokenizer=str(folder)))
    assert time.perf_counter() - start < 15 and not marker.exists()
    assert asked == [] and passed and all(p is False for p in passed)  # never asked, never left undecided


# --- 5. split integrity -------------------------------------------------------------------------

def test_the_same_record_in_two_splits_is_an_error_or_a_counted_drop(tmp_path):
    raw = _twin("hateful_memes", tmp_path)
    train, test = _lines(raw / "train.jsonl"), _lines(raw / "test_seen.jsonl")
    _write_lines(raw / "test_seen.jsonl", test + [train[3]])  # the same id
    with pytest.raises(DataError, match=rf"test_seen\.jsonl line {len(test) + 1} \(id {train[3]['id']}\) and train\.jsonl "
                                        rf"line 4 \(id {train[3]['id']}\): the same id .* in the test and train splits"):
        prepare("hateful_memes", raw, tmp_path / "out", TINY)
    twin = dict(train[5], id=999_999)  # another id, the same image and text
    _write_lines(raw / "test_seen.jsonl", test + [twin])
    with pytest.raises(DataError, match=r"test_seen\.jsonl line .* \(id 999999\).* and train\.jsonl line 6 .*identical sample"):
        prepare("hateful_memes", raw, tmp_path / "out", TINY)
    _write_lines(raw / "test_seen.jsonl", test + [train[3], twin])
    manifest = prepare("hateful_memes", raw, tmp_path / "out", PrepareConfig.tiny(progress=False, allow_overlap=True))
    assert manifest["dropped"] == {"train": {"also in test (same id)": 1, "also in test (identical content)": 1}}
    assert manifest["splits"]["train"] == len(train) - 2 and manifest["splits"]["test"] == len(test) + 2
    assert manifest["split_overlap"]["found"] == {"test/train": {"same id": 1, "identical content": 1}}
    assert manifest["split_overlap"]["records_compared"]["test"] == len(test) + 2


def test_identical_multibench_samples_in_two_splits(tmp_path):
    raw = _twin("ur_funny", tmp_path)
    data = _humor(raw)
    test = data["test"]
    k = int(np.flatnonzero(np.abs(test["text"]).reshape(len(test["text"]), -1).sum(axis=1) > 0)[0])  # kept by the drop rule
    for key in ("vision", "audio", "text", "labels"):
        data["train"][key] = np.concatenate([data["train"][key], test[key][k:k + 1]])
    data["train"]["id"] = np.concatenate([data["train"]["id"], np.array(["copied"], dtype=data["train"]["id"].dtype)])
    _write_humor(raw, data)
    with pytest.raises(DataError, match=rf"humor\.pkl\['test'\] record {k} .* and humor\.pkl\['train'\] record \d+ \(id copied\): an identical sample"):
        prepare("ur_funny", raw, tmp_path / "out", TINY)
    manifest = prepare("ur_funny", raw, tmp_path / "out", PrepareConfig.tiny(progress=False, allow_overlap=True))
    assert manifest["dropped"]["train"]["also in test (identical content)"] == 1
    assert manifest["raw_records"]["train"] == len(data["train"]["labels"])


# --- 6. clear errors: duplicate keys, lone surrogates, huge integers -----------------------------

def test_duplicate_json_keys_are_errors_naming_file_and_line(tmp_path):
    raw = _twin("hateful_memes", tmp_path)
    lines = (raw / "dev_seen.jsonl").read_text().splitlines()
    lines[2] = lines[2][:-1] + ', "label": 1}' if '"label": 0' in lines[2] else lines[2][:-1] + ', "label": 0}'
    (raw / "dev_seen.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"dev_seen\.jsonl line 3: key 'label' repeated in one object"):
        prepare("hateful_memes", raw, tmp_path / "out", TINY)
    mm = _twin("mmimdb", tmp_path / "mm")
    split = json.loads((mm / "split.json").read_text())
    text = json.dumps(split, indent=1).replace('"test": [', '"test": [],\n "test": [', 1)
    (mm / "split.json").write_text(text)
    line = text[: text.index('"test": [],')].count("\n") + 2  # the second "test" key
    with pytest.raises(DataError, match=rf"split\.json line {line}: key 'test' repeated in one object"):
        prepare("mmimdb", mm, tmp_path / "out", TINY)


def test_lone_surrogates_and_huge_integers_name_the_file_and_record(tmp_path):
    raw = _twin("hateful_memes", tmp_path)
    lines = (raw / "train.jsonl").read_text().splitlines()
    original = list(lines)
    record = json.loads(lines[6])
    lines[6] = json.dumps(dict(record, text="bad \ud800 text"))  # json.dumps writes the escape \ud800
    (raw / "train.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"train\.jsonl line 7: a string holds a lone surrogate"):
        prepare("hateful_memes", raw, tmp_path / "out", TINY)
    lines = list(original)
    lines[8] = json.dumps(dict(json.loads(lines[8]), id=0)).replace('"id": 0', '"id": ' + "7" * 5000)
    (raw / "train.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"train\.jsonl line 9: integer of 5000 digits"):
        prepare("hateful_memes", raw, tmp_path / "out", TINY)

    fun = _twin("ur_funny", tmp_path / "fun")
    data = _humor(fun)
    for bad, message in [("odd \udc00 id", r"record 4: id 'odd \\udc00 id' is not valid Unicode"),
                         (10**5000 - 1, r"record 4: id is an integer of about \d+ digits")]:
        ids = data["test"]["id"].astype(object)
        ids[4] = bad
        _write_humor(fun, {**data, "test": {**data["test"], "id": ids}})
        with pytest.raises(DataError, match=rf"humor\.pkl\['test'\]\['id'\] {message}"):
            prepare("ur_funny", fun, tmp_path / "out", TINY)
