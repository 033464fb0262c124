"""The paper-scale path, end to end and offline: two chapters through papermill, then the sweep CLI.

What a researcher with the real data and a checkpoint saved with ``save_pretrained`` runs, as the
README says (``-p scale paper -p data_root ... -p model FOLDER -p device ...``), here on CPU:

- the model: a ViLT with the ViLT-B/32 configuration (hidden 768, 12 heads, intermediate 3072,
  patch 32, image side 384, text length 40, BERT's 30522-token vocabulary) reduced to one layer,
  random weights, saved with ``ViltModel.save_pretrained``, with a WordPiece tokenizer fitted by
  the ``tokenizers`` library on the twin's text and saved with
  ``PreTrainedTokenizerFast.save_pretrained`` into the same folder;
- the data: a Hateful Memes twin (prepared at the paper's image size: shorter side 384, longer
  side at most 640, multiples of 32) and a MOSEI twin with 50 time steps, in the raw layouts;
- no network: ``HF_HUB_OFFLINE=1``, ``TRANSFORMERS_OFFLINE=1``, and a ``sitecustomize`` on the
  ``PYTHONPATH`` of every child process (papermill, its kernels, the sweep CLI) that makes every
  name lookup and connection to a non-loopback address fail and writes it to a log; the test
  asserts the log stays empty, so a hidden hub call fails the test even where it is caught.

The smallest run the parameters allow: one seed, one epoch, 16 training samples.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
MODEL_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json")

pytestmark = pytest.mark.slow

#: makes the network unreachable in every Python process that has its folder on PYTHONPATH
BLOCK_NETWORK = textwrap.dedent('''
    """Test helper: no network. Name lookups and connections to non-loopback addresses raise and
    are logged to $WMA_NET_LOG (one line each)."""
    import importlib.machinery, importlib.util, os, socket, sys

    _LOG = os.environ.get("WMA_NET_LOG")
    _LOCAL = ("localhost", "127.", "::1", "0.0.0.0")

    def _local(host):
        return host is None or host in ("", b"") or str(host).startswith(_LOCAL)

    def _record(what):
        if _LOG:
            with open(_LOG, "a") as f:
                f.write(f"{os.getpid()} {' '.join(sys.argv)[:200]}: {what}\\n")

    _connect, _connect_ex, _getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _local(address[0]):
            _record(f"connect {address!r}")
            raise OSError(101, f"Network is unreachable (blocked by the test): {address!r}")
        return _connect(self, address)

    def connect_ex(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _local(address[0]):
            _record(f"connect_ex {address!r}")
            return 101
        return _connect_ex(self, address)

    def getaddrinfo(host, *args, **kwargs):
        if not _local(host):
            _record(f"getaddrinfo {host!r}")
            raise socket.gaierror(socket.EAI_NONAME, f"name lookup blocked by the test: {host!r}")
        return _getaddrinfo(host, *args, **kwargs)

    socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = connect, connect_ex, getaddrinfo

    # run the sitecustomize this one shadows, if any
    _here = os.path.dirname(os.path.abspath(__file__))
    for _d in sys.path:
        if os.path.abspath(_d or ".") != _here:
            _spec = importlib.machinery.PathFinder.find_spec("sitecustomize", [_d])
            if _spec is not None:
                _spec.loader.exec_module(importlib.util.module_from_spec(_spec))
                break
''')


def offline_env(base: Path) -> dict:
    """The environment of every child process: no network, data and figures under ``base``."""
    site = base / "offline_site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(BLOCK_NETWORK)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "HF_ENDPOINT")}
    env.update(
        PYTHONPATH=os.pathsep.join([str(site), str(ROOT)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])),
        WMA_NET_LOG=str(base / "network_attempts.log"),
        HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(base / "hf_home"),  # an empty hub cache
        WMA_DATA=str(base / "data"), WMA_BUILD_DIR=str(base / "build"), PYTHONUNBUFFERED="1",
        RAY_USAGE_STATS_ENABLED="0", MPLBACKEND="Agg",
    )
    return env


def _texts(raw: Path) -> dict[str, str]:
    """Hateful Memes raw texts by id, read from the jsonl files (the reference)."""
    out = {}
    for name in ("train.jsonl", "dev_seen.jsonl", "test_seen.jsonl"):
        for line in (raw / name).read_text().splitlines():
            if line.strip():
                rec = json.loads(line)
                out[str(rec["id"])] = rec["text"]
    return out


def save_b32_one_layer(folder: Path, train_texts: list[str]) -> None:
    """ViLT-B/32 reduced to one layer (random weights) + a WordPiece tokenizer, in one folder."""
    import torch
    from transformers import ViltConfig, ViltModel

    from data_prep.text import save_fitted

    torch.manual_seed(0)
    config = ViltConfig(num_hidden_layers=1)  # transformers' defaults are ViLT-B/32's
    assert (config.hidden_size, config.num_attention_heads, config.patch_size, config.image_size,
            config.max_position_embeddings, config.vocab_size) == (768, 12, 32, 384, 40, 30522)
    ViltModel(config).save_pretrained(folder)

    save_fitted(train_texts, folder, vocab_size=300)  # the hub tokenizer cannot be had: one fitted on the twin
    for name in MODEL_FILES:
        assert (folder / name).is_file(), name


@pytest.fixture(scope="module")
def paper_setup(tmp_path_factory):
    from data_prep.config import SynthConfig
    from data_prep.synth import synthesize

    base = tmp_path_factory.mktemp("paper_path")
    raw = {"hateful_memes": base / "raw" / "hateful_memes", "mosei": base / "raw" / "mosei"}
    synthesize("hateful_memes", raw["hateful_memes"], SynthConfig(n=40, seed=0))
    synthesize("mosei", raw["mosei"], SynthConfig(n=40, seed=0, steps=50))
    model = base / "models" / "vilt-b32-1layer"
    train_lines = (raw["hateful_memes"] / "train.jsonl").read_text().splitlines()
    save_b32_one_layer(model, [json.loads(line)["text"] for line in train_lines if line.strip()])
    return {"base": base, "raw": raw, "model": model, "env": offline_env(base), "timings": {}}


def _papermill(notebook: str, out: Path, params: list[str], env: dict) -> subprocess.CompletedProcess:
    papermill = Path(sys.executable).parent / "papermill"
    cmd = [str(papermill)] if papermill.exists() else [sys.executable, "-m", "papermill"]
    return subprocess.run(cmd + [f"book/{notebook}.ipynb", str(out)] + params, cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)


def _paper_params(data_root: Path, model: Path) -> list[str]:
    return ["-p", "scale", "paper", "-p", "data_root", str(data_root), "-p", "model", str(model), "-p", "device", "cpu",
            "-p", "epochs", "1", "-y", "seeds: [0]", "-p", "max_train_samples", "16", "-p", "executor", "local"]


def _outputs(nb: dict) -> tuple[list, str]:
    outs = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]
    html = "\n".join("".join(o.get("data", {}).get("text/html", "")) for o in outs)
    return outs, html


def _network_attempts(setup) -> str:
    log = Path(setup["env"]["WMA_NET_LOG"])
    return log.read_text() if log.exists() else ""


def _records(setup) -> list[dict]:
    from wma_core.store import ResultsStore

    return list(ResultsStore(setup["base"] / "data" / "results").records())


def test_children_cannot_reach_the_network(tmp_path):
    """The blocking itself: a child process with this environment cannot look up or reach a host,
    even with the hub's own client, and every attempt is logged."""
    env = offline_env(tmp_path)
    code = textwrap.dedent('''
        import socket, urllib.request
        for attempt in (lambda: socket.create_connection(("huggingface.co", 443), timeout=2),
                        lambda: socket.socket().connect(("93.184.216.34", 443)),
                        lambda: urllib.request.urlopen("https://huggingface.co", timeout=2)):
            try:
                attempt()
            except OSError as e:
                print("blocked", type(e).__name__)
            else:
                print("REACHED")
    ''')
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.stdout.split().count("blocked") == 3 and "REACHED" not in proc.stdout, proc.stdout + proc.stderr
    log = Path(env["WMA_NET_LOG"]).read_text().splitlines()
    assert len(log) == 3 and "huggingface.co" in log[0] and "93.184.216.34" in log[1], log
    local = subprocess.run([sys.executable, "-c", "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); "
                            "s.listen(); c = socket.create_connection(s.getsockname()); print('local ok')"],
                           env=env, capture_output=True, text=True, timeout=120)
    assert "local ok" in local.stdout, local.stderr  # loopback (the kernels' own channels) still works


@pytest.mark.parametrize("notebook,dataset,n_cases", [("02_hateful_memes", "hateful_memes", 5), ("05_mosei", "mosei", 7)])
def test_chapter_at_paper_scale_offline(paper_setup, notebook, dataset, n_cases):
    s = paper_setup
    out = s["base"] / f"{notebook}.ipynb"
    t0 = time.perf_counter()
    proc = _papermill(notebook, out, _paper_params(s["raw"][dataset], s["model"]), s["env"])
    s["timings"][notebook] = time.perf_counter() - t0
    assert _network_attempts(s) == "", "a process tried to reach the network"
    assert proc.returncode == 0, proc.stderr[-6000:]
    nb = json.loads(out.read_text())
    assert nb["metadata"]["papermill"]["parameters"]["scale"] == "paper"
    outs, html = _outputs(nb)
    assert not [o for o in outs if o.get("output_type") == "error"]
    # the tables and the figures came out
    assert "Table 1: baseline vs WMA" in html and "Table 2: minimise OT" in html and "Training runs" in html
    for fig in ("fig_table1", "fig_table2", "fig_d_trajectory", "fig_d_hist"):
        path = s["base"] / "build" / "figures" / notebook / f"{fig}.png"
        assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path

    # the runs: the paper profile with the local model, one seed, the cap, every test case
    recs = [r for r in _records(s) if r["config"]["dataset"] == dataset]
    assert sorted(r["config"]["method"] for r in recs) == ["baseline", "min_ot", "wma"]
    from wma_study.experiments import PROFILES

    for r in recs:
        c = r["config"]
        assert r["model_path"] == str(s["model"]) and c["model"].startswith("folder:")  # keyed by content
        assert c["amp"] == "bf16" and c["seed"] == 0 and c["epochs"] == 1
        assert c["batch_size"] == PROFILES["paper"].batch_size[dataset] and c["max_train_samples"] == 16
        assert len(r["metrics"]) == n_cases and r["environment"]["machine"].endswith(f"CPU x{os.cpu_count()}")
        assert all(np.isfinite(v) for v in r["d0"].values())
    # the hidden size of a ViLT-B/32 layer: 12 * 768^2 (attention + MLP) ... at least 7M parameters
    assert recs[0]["n_params"] > 7_000_000


def test_prepared_at_paper_size_with_the_models_tokenizer(paper_setup, monkeypatch):
    """Hateful Memes as the chapter prepares it (the folder it made is reused when it ran): the
    checkpoint's tokenizer, not one fitted on the data, and ViLT-B/32's image size."""
    from transformers import AutoTokenizer

    from data_prep.dataset import PreparedDataset
    from wma_study.experiments import prepare_data

    s = paper_setup
    monkeypatch.setenv("WMA_DATA", s["env"]["WMA_DATA"])
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = prepare_data("hateful_memes", "paper", str(s["raw"]["hateful_memes"]), model=str(s["model"]))
    prepared = [p for p in (s["base"] / "data" / "prepared").iterdir() if p.name.startswith("hateful_memes-paper-")]
    assert prepared == [folder] and "-i384p32-tok" in folder.name, prepared
    manifest = json.loads((prepared[0] / "manifest.json").read_text())
    assert manifest["text"]["tokenizer"] == str(s["model"]) and "tokenizer_sha256" in manifest["text"]
    reference = AutoTokenizer.from_pretrained(str(s["model"]), local_files_only=True)
    texts = _texts(s["raw"]["hateful_memes"])
    ids = json.loads((prepared[0] / "train" / "raw_ids.json").read_text())
    stored = np.load(prepared[0] / "train" / "input_ids.npy")
    expected = reference([texts[i] for i in ids], max_length=40, padding="max_length", truncation=True)["input_ids"]
    np.testing.assert_array_equal(stored, np.array(expected))
    assert manifest["vocab_size"] == reference.vocab_size
    ds = PreparedDataset(prepared[0], "train")
    shapes = {tuple(ds[i]["pixel_values"].shape) for i in range(len(ds))}
    for c, h, w in shapes:
        assert c == 3 and h % 32 == 0 and w % 32 == 0 and min(h, w) <= 384 and max(h, w) <= 640, (h, w)
    assert any(min(h, w) == 384 for _, h, w in shapes) and any(max(h, w) > 384 for _, h, w in shapes)


def test_sweep_cli_at_paper_scale_offline(paper_setup):
    s = paper_setup
    results = s["base"] / "data" / "results"
    cmd = [sys.executable, "-m", "wma_study.sweep", "--dataset", "hateful_memes", "--alpha", "0.5", "--beta", "1",
           "--seeds", "0", "--results", str(results), "--scale", "paper", "--data-root", str(s["raw"]["hateful_memes"]),
           "--model", str(s["model"]), "--device", "cpu", "--epochs", "1", "--max-train-samples", "16",
           "--executor", "local", "--no-progress"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=s["env"], capture_output=True, text=True, timeout=600)
    s["timings"]["sweep"] = time.perf_counter() - t0
    assert _network_attempts(s) == "", "a process tried to reach the network"
    assert proc.returncode == 0, proc.stderr[-6000:]
    assert "1 of 1 trials in the store" in proc.stderr
    assert "-i384p32-tok" in proc.stderr  # the chapter's prepared folder, with the model's tokenizer
    rec = [r for r in _records(s) if r["config"]["dataset"] == "hateful_memes" and r["config"]["alpha"] == 0.5]
    assert len(rec) == 1 and rec[0]["model_path"] == str(s["model"]) and \
        rec[0]["config"]["model"].startswith("folder:") and rec[0]["config"]["amp"] == "bf16"
    assert "wma" in proc.stdout and "auroc" in proc.stdout
    print("paper-path timings (s):", {k: round(v, 1) for k, v in s["timings"].items()})
