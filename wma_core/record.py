"""What identifies a fine-tuning run, and the record it leaves in the results store.

A run's key (:func:`run_config`, hashed by :func:`wma_core.store.config_key`) covers every
configuration field that changes its numbers, a digest of the prepared data's manifest, a
digest of the method's source files (:func:`code_digest`) and the backbone's identity
(:func:`model_identity`): a change to any of them never reuses a record computed before it.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import perturb as P

#: fields of TrainConfig that do not change results and so are not part of the run's key
NOT_IN_KEY = ("data_dir", "device", "num_workers", "progress", "eval_batch_size", "keep_best", "pin_memory",
              "preregistration")

#: the method's source files whose bytes decide a run's numbers (beside data_prep/dataset.py)
CODE = ("_ot_common.py", "ot.py", "ot_fused.py", "losses.py", "perturb.py", "embeddings.py", "model.py", "optim.py",
        "device.py", "evaluate.py", "record.py", "train.py", "metrics.py")


def manifest_digest(data_dir) -> str:
    """16 hex digits of the sha256 of a prepared folder's ``manifest.json``."""
    p = Path(data_dir) / "manifest.json"
    if not p.exists():
        raise FileNotFoundError(f"{p} not found: prepare the data first (python -m data_prep prepare ...)")
    return hashlib.sha256(p.read_bytes()).hexdigest()[:16]


def code_digest() -> str:
    """A digest of the source files that decide a run's numbers (part of every run's key, so a
    change to the method's code never reuses records computed by the old code)."""
    here = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for p in [here / n for n in CODE] + [here.parent / "data_prep" / "dataset.py"]:
        if p.exists():
            h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()[:16]


def run_config(cfg) -> dict:
    """The part of a :class:`wma_core.train.TrainConfig` that defines a run (its results-store key)."""
    d = dataclasses.asdict(cfg)
    for k in NOT_IN_KEY:
        d.pop(k)
    d["adam_betas"] = list(d["adam_betas"])
    d["method"] = cfg.method
    d["data"] = manifest_digest(cfg.data_dir)
    d["code"] = code_digest()
    d["model"] = model_identity(cfg.model)
    return d


def model_identity(model: str) -> str:
    """What a run's key records of its backbone: a hub name or ``"tiny"`` as it is; a local
    folder by its content, not its path or what a file in it claims (so a moved or re-cloned data
    home keeps its records, and two folders that differ can never share an identity):
    ``"folder:<sha256 of its config, weights and tokenizer files>"``. ``pretrain.json`` (the
    record of :mod:`wma_core.pretrain`, with machine-dependent timings) is not part of the digest.
    A folder's digest is computed once per state of its files (name, size, modification time),
    since every run key of a sweep asks for it and ViLT-B/32's weights are about 450 MB."""
    folder = Path(model)
    if not folder.is_dir():
        return model
    files = tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in sorted(folder.iterdir())
                  if f.is_file() and not f.is_symlink() and f.suffix in _IDENTITY_SUFFIXES and f.name != "pretrain.json")
    return _folder_digest(str(folder.resolve()), files)


_IDENTITY_SUFFIXES = (".json", ".safetensors", ".bin", ".txt", ".model")


@functools.lru_cache(maxsize=32)
def _folder_digest(folder: str, files: tuple) -> str:
    """``folder:<sha256>`` of the named files' names and bytes (``files``: the state it is cached by)."""
    h = hashlib.sha256()
    for name, _, _ in files:
        h.update(name.encode())
        with (Path(folder) / name).open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return f"folder:{h.hexdigest()[:16]}"


def perturbation_digest(pert: P.Perturbation | None, n_total: int, hidden: int, *, tokens: int = 2, chunk: int = 512) -> str:
    """A digest of what a test case does to every sample of a split (16 hex digits of a sha256).

    :func:`wma_core.perturb.apply` is run on all-ones embedding features ``[n, 1 + tokens, hidden]``
    of the split's sample ids ``0..n_total-1``: the result holds the noise added to the first
    ``tokens`` tokens of every sample, or which samples are zeroed. It does not depend on the
    model, so every method and every training seed must record the same digest for a test case
    (``"none"`` for the unperturbed ``normal`` case).
    """
    if pert is None:
        return "none"
    h = hashlib.sha256()
    for start in range(0, n_total, chunk):
        ids = torch.arange(start, min(n_total, start + chunk))
        out = P.apply(pert, pert.modality, torch.ones(len(ids), 1 + tokens, hidden), ids)
        h.update(out.numpy().astype(np.float32).tobytes())
    return h.hexdigest()[:16]


def model_flops_per_sample(model: nn.Module, tokens: int, *, backward: bool = True) -> int:
    """Dense FLOP estimate: ``6 N T`` for a training step (forward + backward), ``2 N T`` for a
    forward pass, with ``N`` the parameters outside embedding tables and position / CLS rows and
    ``T`` the number of tokens (a sequence length, or summed over samples; padding included: it
    is computed). Attention scores and the OT solve are not counted."""
    skip = set()
    for mod in model.modules():
        if isinstance(mod, nn.Embedding):
            skip.update(id(p) for p in mod.parameters())
    for name, p in model.named_parameters():
        if name.endswith(("position_embeddings", "cls_token", ".pos", ".cls")):
            skip.add(id(p))
    n = sum(p.numel() for p in model.parameters() if id(p) not in skip)
    return (6 if backward else 2) * n * int(tokens)


#: the work counters a run keeps in its training state (and so across a resume)
NO_COUNTS = {"steps": 0, "train_samples": 0, "train_tokens": 0, "eval_seconds": 0.0, "eval_samples": 0, "eval_tokens": 0}


def timings(state: dict, model: nn.Module, test_seconds: float, test_samples: int, test_tokens: int) -> dict:
    """Where a run's time went (seconds of this process; a resumed run counts every attempt's
    finished epochs) and the dense FLOP estimate of :func:`model_flops_per_sample`."""
    counts = {**NO_COUNTS, **(state.get("counts") or {})}
    eval_samples, eval_tokens = counts["eval_samples"] + test_samples, counts["eval_tokens"] + test_tokens
    return {
        "train_seconds": state["train_seconds"],  # training steps only
        "dev_eval_seconds": counts["eval_seconds"],  # the per-epoch dev evaluations
        "test_seconds": test_seconds,  # every test case on the best checkpoint
        "steps": counts["steps"],
        "train_samples": counts["train_samples"],
        "eval_samples": eval_samples,
        "train_tokens": counts["train_tokens"],  # sum over steps of batch x sequence length
        "eval_tokens": eval_tokens,
        "train_flops": model_flops_per_sample(model, counts["train_tokens"]),
        "eval_flops": model_flops_per_sample(model, eval_tokens, backward=False),
        "train_samples_per_second": counts["train_samples"] / max(state["train_seconds"], 1e-9),
        "eval_samples_per_second": eval_samples / max(counts["eval_seconds"] + test_seconds, 1e-9),
        "threads": torch.get_num_threads(),
    }
