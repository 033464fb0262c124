"""Resume checkpoints that hold tensors and plain values only, loaded without running code.

A ``.pt`` file is a pickle: ``torch.load(path, weights_only=False)`` imports and calls whatever
the file names, so a results folder copied from elsewhere (or shared across a cluster) could run
code when a run resumes. Here a checkpoint holds only what ``torch.load(weights_only=True)``
accepts: tensors, dicts, lists, tuples, str, int, float, bool and None. So:

- every random-number generator is stored as tensors and ints (:func:`rng_state`): torch's CPU
  generator, every CUDA device's generator when CUDA is available, numpy's global MT19937
  (624 keys + position + cached Gaussian) and Python's ``random`` (its 625-word state);
- the training state is turned into plain Python values by :func:`plain` (numpy scalars -> int /
  float, arrays -> lists) before saving;
- :func:`load` always uses ``weights_only=True`` (on the CPU; ``load_state_dict`` moves tensors
  to the model's device) and turns a refused file into a ``CheckpointError`` naming it.
"""

from __future__ import annotations

import os
import pickle
import random
import re
from pathlib import Path

import numpy as np
import torch

from .store import open_new


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded safely (it names objects other than tensors and plain values)."""


def rng_state() -> dict:
    """The state of every RNG a run draws from, as tensors and ints (see :func:`set_rng_state`)."""
    py_version, py_words, py_gauss = random.getstate()
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    if np_kind != "MT19937":
        raise ValueError(f"numpy's global generator is {np_kind}, expected MT19937")
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_keys.astype(np.int64)), "pos": int(np_pos),
                  "has_gauss": int(np_has_gauss), "gauss": float(np_gauss)},
        "python": {"version": int(py_version), "words": torch.tensor(py_words, dtype=torch.int64),
                   "gauss": None if py_gauss is None else float(py_gauss)},
    }
    if torch.cuda.is_available():
        state["cuda"] = [s.cpu() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state) -> None:
    """Restore what :func:`rng_state` saved (a bare tensor: a torch CPU state from older checkpoints)."""
    if isinstance(state, torch.Tensor):
        torch.set_rng_state(state)
        return
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(w) for w in p["words"].tolist()), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        if len(state["cuda"]) != torch.cuda.device_count():
            raise CheckpointError(f"checkpoint has CUDA RNG states of {len(state['cuda'])} devices, "
                                  f"this machine has {torch.cuda.device_count()}")
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def plain(obj):
    """``obj`` with numpy scalars and arrays turned into Python numbers and lists (dicts, lists,
    tuples walked), so that ``torch.load(weights_only=True)`` accepts it."""
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(plain(v) for v in obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj


def save(obj, path: str | Path) -> None:
    """``torch.save`` through a temporary file and a rename, so a crash never leaves half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open_new(tmp) as f:  # never through a symlink planted at the temporary name
        torch.save(obj, f)
    os.replace(tmp, path)


def load(path: str | Path):
    """``torch.load(path, weights_only=True)`` on the CPU; a refused file is a :class:`CheckpointError`."""
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        named = re.search(r"GLOBAL ([\w.]+)", str(err))
        what = f"it names {named.group(1)}" if named else f"it holds objects other than tensors and plain values ({err})"
        raise CheckpointError(
            f"{path}: refused to load: {what}, and loading that could run code. Checkpoints hold "
            f"tensors and plain values only; delete the file to start the run afresh."
        ) from None
