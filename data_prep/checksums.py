"""SHA-256 digests of the raw sources, recorded in the manifest."""

from __future__ import annotations

import hashlib
from pathlib import Path

_CHUNK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def combined_digest(entries: dict[str, str]) -> str:
    """One digest for a folder: SHA-256 of the sorted lines "<relative name> <sha256>\\n".

    entries: relative file name -> that file's sha256 (the files the converter read).
    """
    h = hashlib.sha256()
    for name in sorted(entries):
        h.update(f"{name} {entries[name]}\n".encode())
    return h.hexdigest()


def sha256_fileobj(f) -> str:
    """Digest of an open binary file from its current position to the end."""
    h = hashlib.sha256()
    while chunk := f.read(_CHUNK):
        h.update(chunk)
    return h.hexdigest()
