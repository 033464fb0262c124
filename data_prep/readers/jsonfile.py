"""JSON from dataset files, read with bounds: no line or file of unbounded size, no deep nesting.

A jsonl file from elsewhere may hold a line of gigabytes (a plain `for line in f` would hold it in
memory whole) or a record nested thousands of levels deep (`json.loads` then raises
RecursionError, or exhausts the stack). Both are refused with a DataError naming the file, the
line and the limit:
- `jsonl_lines(path)` yields (line number, text) and reads at most `MAX_LINE_BYTES` + 1 bytes of
  a line before refusing it, so memory stays bounded whatever the file holds;
- `loads(text, where)` checks the nesting depth (brackets outside strings, at most `MAX_DEPTH`)
  before `json.loads`, and turns a RecursionError into a DataError as well;
- `read_bounded(path, limit)` reads a whole json file of at most `limit` bytes.
The limits are far above the real files (a Hateful Memes line is < 1 KB, an MM-IMDb movie json
< 100 KB, split.json < 1 MB, nesting depth <= 4).
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Iterator

from ..issues import DataError

MAX_LINE_BYTES = 1 << 20  # 1 MiB per jsonl line
MAX_FILE_BYTES = 64 << 20  # 64 MiB per json file
MAX_DEPTH = 64
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_BRACKET = re.compile(r"[\[\]{}]")


def jsonl_lines(path: Path, max_bytes: int = MAX_LINE_BYTES) -> Iterator[tuple[int, str]]:
    """(line number from 1, decoded line) for every line of `path`; DataError on an overlong line."""
    with open(path, "rb") as f:
        for lineno in itertools.count(1):
            raw = f.readline(max_bytes + 1)
            if not raw:
                return
            if len(raw) > max_bytes and not raw.endswith(b"\n"):
                raise DataError(f"{path.name} line {lineno}: longer than {max_bytes} bytes; refused "
                                f"(a record of this dataset is far shorter)")
            try:
                yield lineno, raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{path.name} line {lineno}: not UTF-8 text ({e})") from e


def nesting_depth(text: str, limit: int = MAX_DEPTH) -> int:
    """Deepest bracket nesting of JSON `text` (brackets inside strings ignored), stopping past `limit`."""
    depth = deepest = 0
    for m in _BRACKET.finditer(_STRING.sub('""', text)):
        depth += 1 if m.group() in "[{" else -1
        if depth > deepest:
            deepest = depth
            if deepest > limit:
                break
    return deepest


def loads(text: str, where: str, max_depth: int = MAX_DEPTH):
    """json.loads(text) after a depth check; DataError naming `where` for a too-deep record.

    Malformed JSON still raises json.JSONDecodeError (the readers count it as a skip).
    """
    if nesting_depth(text, max_depth) > max_depth:
        raise DataError(f"{where}: JSON nested deeper than {max_depth} levels; refused")
    try:
        return json.loads(text)
    except RecursionError:
        raise DataError(f"{where}: JSON nested too deeply to parse; refused") from None


def read_bounded(path: Path, limit: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of `path` if it holds at most `limit` bytes, else DataError (reads <= limit + 1)."""
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise DataError(f"{path.name}: larger than {limit} bytes; refused (the real file is far smaller)")
    return data
