"""Where a pretrained checkpoint is, and loading it without a surprise trip to the network.

A checkpoint name (a tokenizer's or a model's) is a local folder or a hub name:

- **local folder**: a name that exists on disk, or that looks like a path (it starts with ``/``,
  ``./``, ``../`` or ``~``). It is loaded with ``local_files_only=True``: nothing goes to the
  network. A missing folder, or one without the expected files, is a :class:`CheckpointError`
  that names the folder and the files expected.
- **hub name** (``dandelin/vilt-b32-mlm``): first looked up in the local hub cache, whose
  snapshot folder then loads like a local folder. When it is not there and the hub is switched off
  (``HF_HUB_OFFLINE=1`` or ``TRANSFORMERS_OFFLINE=1``) or cannot be reached within
  :data:`CONNECT_TIMEOUT` seconds, a :class:`CheckpointError` says at once what to do (save the
  checkpoint to a folder with ``save_pretrained`` where there is a network, then pass the folder),
  instead of a minute of retries. Otherwise it is downloaded as usual.

Files in a checkpoint folder are data: only their names and bytes are read here (``config.json``
as JSON), and transformers loads them with ``trust_remote_code=False`` (always passed by
:func:`load`): a folder whose ``tokenizer_config.json`` / ``config.json`` has an ``auto_map``
(custom Python code) is never run and never makes transformers ask on the terminal; it is a
:class:`CheckpointError` unless a built-in class can read the folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse

from .issues import DataError

#: seconds allowed to open a connection to the hub before it counts as unreachable
CONNECT_TIMEOUT = 3.0
#: files a tokenizer can be loaded from: a fast tokenizer on its own, or a WordPiece vocabulary
#: with the configuration that says which tokenizer class reads it
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json")


class CheckpointError(DataError, OSError):
    """A checkpoint that cannot be loaded here; the message says which and what to do.

    Both a :class:`~data_prep.issues.DataError` (bad input) and an ``OSError`` (what
    transformers raises for a checkpoint it cannot find).
    """


def local_folder(name: str) -> Path | None:
    """The folder ``name`` points to when it is a path (existing or path-like), else ``None``."""
    name = str(name)
    path = Path(name).expanduser()
    looks_like_path = name.startswith(("/", "./", "../", "~")) or (os.sep != "/" and os.sep in name)
    if looks_like_path or path.exists():
        return path.resolve()
    return None


def hub_offline() -> bool:
    """Whether the hub is switched off: ``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE`` set now, or
    when ``huggingface_hub`` was imported."""
    if any(os.environ.get(v, "").strip().upper() in {"1", "ON", "YES", "TRUE"} for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")):
        return True
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - transformers depends on it
        return False
    return bool(constants.HF_HUB_OFFLINE)


def hub_endpoint() -> str:
    try:
        from huggingface_hub import constants

        return constants.ENDPOINT
    except ImportError:  # pragma: no cover
        return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


def hub_reachable(timeout: float = CONNECT_TIMEOUT) -> bool:
    """Whether a TCP connection to the hub's host opens within ``timeout`` seconds (name lookup
    included: it runs in a thread, so a hanging resolver cannot stall the caller)."""
    url = urlparse(hub_endpoint())
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme != "http" else 80)
    result: list[bool] = []

    def probe():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout + 1.0)
    return bool(result and result[0])


def cached_snapshot(name: str, cache_dir: str | None = None) -> Path | None:
    """The folder of hub checkpoint ``name`` (revision ``main``) in the local hub cache, or ``None``.

    Read from the file system only (``huggingface_hub.try_to_load_from_cache``): transformers'
    own ``local_files_only=True`` path still builds request headers, and the hub client may then
    fetch metadata over the network when its offline flag was not set at import.
    """
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover
        return None
    for filename in ("config.json", "tokenizer_config.json", "tokenizer.json"):
        try:
            found = try_to_load_from_cache(name, filename, cache_dir=cache_dir)
        except ValueError:  # not a valid hub name
            return None
        if isinstance(found, str):
            return Path(found).parent
    return None


def _save_hint(name: str) -> str:
    return (
        f"Where there is a network, save the checkpoint once to a folder, weights and tokenizer together: "
        f"`from transformers import AutoTokenizer, ViltModel; ViltModel.from_pretrained({name!r}).save_pretrained(FOLDER); "
        f"AutoTokenizer.from_pretrained({name!r}).save_pretrained(FOLDER)`, then pass FOLDER instead of {name!r} "
        f"(papermill `-p model FOLDER`, `python -m wma_study.sweep --model FOLDER`, `python -m data_prep prepare "
        f"--tokenizer FOLDER`). Or go without a pretrained checkpoint: model 'tiny' (`--tokenizer train` in "
        f"data_prep), a WordPiece vocabulary fitted on the train text."
    )


def load(loader: Callable, name: str, *, what: str, **kwargs):
    """``loader(name, **kwargs)`` (a ``from_pretrained``) without unexpected network traffic.

    Args:
        loader: e.g. ``AutoTokenizer.from_pretrained`` or ``ViltModel.from_pretrained``.
        name: a local folder or a hub name (see the module docstring).
        what: ``"tokenizer"`` or ``"ViLT weights"``, for messages.

    Raises:
        CheckpointError: a missing local folder, or a hub name that is neither cached nor
            reachable. Errors of ``loader`` on a local folder become a CheckpointError naming it.
    """
    kwargs["trust_remote_code"] = False  # never run code from a checkpoint, never ask (transformers' prompt)
    folder = local_folder(name)
    if folder is not None:
        if not folder.is_dir():
            raise CheckpointError(f"could not load {what} {name!r}: the folder {folder} does not exist")
        try:
            return loader(str(folder), local_files_only=True, **kwargs)
        except Exception as err:  # noqa: BLE001 - a broken folder: say which, keep the cause
            raise CheckpointError(f"could not load {what} from the folder {folder} ({type(err).__name__}: {err})") from err
    snapshot = cached_snapshot(name, kwargs.get("cache_dir"))
    if snapshot is not None:  # loaded as the folder it is, so that nothing asks the hub
        try:
            return loader(str(snapshot), local_files_only=True, **kwargs)
        except Exception:  # noqa: BLE001 - an incomplete cache entry: as if it were not cached
            pass
    if hub_offline():
        raise CheckpointError(
            f"could not load {what} {name!r}: it is not in the local hub cache and the hub is switched off "
            f"(HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE). {_save_hint(name)}"
        )
    if not hub_reachable():
        raise CheckpointError(
            f"could not load {what} {name!r}: it is not in the local hub cache and {hub_endpoint()} cannot be "
            f"reached (no network?). {_save_hint(name)}"
        )
    try:
        return loader(name, **kwargs)
    except OSError as err:
        raise CheckpointError(f"could not load {what} {name!r} from the hub ({type(err).__name__}: {err})") from err


def require_tokenizer(folder: str | Path) -> list[str]:
    """The tokenizer files in ``folder``; CheckpointError naming the folder and the files expected."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"could not load tokenizer {str(folder)!r}: the folder {folder} does not exist")
    present = [f for f in TOKENIZER_FILES if (folder / f).is_file()]
    has_config = (folder / "tokenizer_config.json").is_file() or (folder / "config.json").is_file()
    if "tokenizer.json" not in present and not ("vocab.txt" in present and has_config):
        raise CheckpointError(
            f"could not load tokenizer from the folder {folder}: it holds no tokenizer files "
            f"(found {sorted(p.name for p in folder.iterdir())[:12]}). Expected tokenizer.json "
            f"(+ tokenizer_config.json), or vocab.txt + tokenizer_config.json, as "
            f"PreTrainedTokenizerFast.save_pretrained / AutoTokenizer.save_pretrained write them. Save the "
            f"checkpoint's tokenizer into it: `AutoTokenizer.from_pretrained('dandelin/vilt-b32-mlm')"
            f".save_pretrained({str(folder)!r})`."
        )
    return present


def tokenizer_key(name: str) -> str:
    """A short digest naming a tokenizer: a local folder's resolved path and the bytes of its
    tokenizer files, or a hub name. Reads no network."""
    h = hashlib.sha256()
    folder = local_folder(name)
    if folder is None:
        h.update(f"hub:{name}".encode())
    else:
        h.update(f"folder:{folder}".encode())
        for f in require_tokenizer(folder):
            h.update(f.encode() + b"\0" + (folder / f).read_bytes())
    return h.hexdigest()[:10]


def model_vocab_size(name: str) -> int | None:
    """``vocab_size`` from a local model folder's ``config.json`` (``None``: not a local folder
    or no such entry)."""
    folder = local_folder(name)
    if folder is None or not (folder / "config.json").is_file():
        return None
    try:
        value = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("vocab_size")
    except (OSError, ValueError, AttributeError) as err:
        raise CheckpointError(f"{folder / 'config.json'}: not a JSON object ({err})") from err
    return int(value) if isinstance(value, int) else None
