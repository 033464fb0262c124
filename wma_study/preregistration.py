"""The pre-registration: the study's choices, frozen before any WMA run is read.

``book/data/preregistration.json`` (committed) holds every choice that could tilt a verdict:
the world and its sizes, the pretraining recipe, the fine-tuning recipe, how α is scaled to the
miniature, and the noise amplitudes, each with the baseline-only evidence it was chosen on. Its
digest (:func:`digest`) is written into every run record (``record["preregistration"]``), so a
table can show that its runs were made under the frozen file, and a run made under another
version of it is named (:func:`check_records`). WMA results may not feed back into the file:
changing it after reading them is what it exists to show.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd

from .profiles import ROOT

PATH = ROOT / "book" / "data" / "preregistration.json"


def load(path: str | Path | None = None) -> dict:
    path = Path(path) if path is not None else PATH
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the pre-registration file is missing")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    for key in ("frozen", "rule", "choices"):
        if key not in doc:
            raise ValueError(f"{path}: no {key!r} entry (expected 'frozen', 'rule' and 'choices')")
    return doc


def digest(path: str | Path | None = None) -> str:
    """16 hex digits of the sha256 of the file's bytes (what every record carries)."""
    path = Path(path) if path is not None else PATH
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else ""


def table(path: str | Path | None = None) -> pd.DataFrame:
    """One row per choice: ``area, choice, value, chosen on``."""
    doc = load(path)
    rows = []
    for area, entries in doc["choices"].items():
        for name, e in entries.items():
            rows.append({"area": area, "choice": name, "value": json.dumps(e["value"]) if not isinstance(e["value"], str)
                         else e["value"], "chosen on": e.get("evidence", "")})
    return pd.DataFrame(rows)


def check_records(records: list, path: str | Path | None = None) -> pd.DataFrame:
    """How many of ``records`` carry the file's current digest, another one, or none."""
    want = digest(path)
    counts = {"this file": 0, "another version": 0, "none (made before pre-registration)": 0}
    for r in records:
        got = r.get("preregistration") or ""
        counts["this file" if got == want else ("another version" if got else "none (made before pre-registration)")] += 1
    return pd.DataFrame([{"records": k, "runs": v} for k, v in counts.items()])
