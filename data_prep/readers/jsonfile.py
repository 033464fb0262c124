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
Every file is opened once with `paths.open_regular` (a FIFO, device or symlink is refused, never
waited on) and its size is checked on the opened descriptor before it is read.
`loads` refuses, with a DataError naming `where` and the line, what `json.loads` would resolve
silently or fail on without naming anything: a key repeated in one object (Python keeps the last),
an integer literal of more than `MAX_INT_DIGITS` digits (Python refuses > 4300 digits with an error
naming no file), and a lone surrogate escape ("\ud800", not Unicode text: writing or tokenising it
fails later).
The limits are far above the real files (a Hateful Memes line is < 1 KB, an MM-IMDb movie json
< 100 KB, split.json < 1 MB, nesting depth <= 4).
"""

from __future__ import annotations

import itertools
import json
import json.decoder
import json.scanner
import re
from pathlib import Path
from typing import BinaryIO, Iterator

from ..issues import DataError
from ..paths import FileTooLarge, UnsafeFile, open_regular, read_limited

MAX_INT_DIGITS = 100  # ids and labels of these datasets have < 20 digits
MAX_LINE_BYTES = 1 << 20  # 1 MiB per jsonl line
MAX_FILE_BYTES = 64 << 20  # 64 MiB per json file
MAX_DEPTH = 64
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_BRACKET = re.compile(r"[\[\]{}]")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


class BadJSON(DataError):
    """JSON text refused by `loads` (repeated key, huge integer, lone surrogate, too deep)."""


class _Refused(Exception):
    def __init__(self, message: str, key=None):
        super().__init__(message)
        self.key = key


def _pairs(pairs):
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen = set()
        key = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise _Refused(f"key {key!r} repeated in one object; expected each key once", key)
    return obj


def _int(text: str):
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise _Refused(f"integer of {len(text.lstrip('-'))} digits; expected at most {MAX_INT_DIGITS}")
    return int(text)


def _line(text: str, pos: int) -> int:
    return text.count("\n", 0, max(pos, 0)) + 1


def _blank_strings(text: str) -> str:
    """`text` with every JSON string's content blanked (same length, so positions stay)."""
    return _STRING.sub(lambda m: '"' + " " * (len(m.group()) - 2) + '"', text)


def _duplicate_position(text: str) -> int:
    """Where the second occurrence of the first repeated key is (-1: not found). The pure-Python
    scanner says where each object starts and ends; the key is then looked for at that object's
    own level (brackets of strings blanked)."""
    found = []

    def parse_object(s_and_end, strict, scan_once, object_hook, object_pairs_hook, memo=None):
        pairs, end = json.decoder.JSONObject(s_and_end, strict, scan_once, None, list, memo)
        keys = [k for k, _ in pairs]
        if len(set(keys)) != len(keys) and not found:
            seen = set()
            found.append((s_and_end[1] - 1, end, next(k for k in keys if k in seen or seen.add(k))))
        return dict(pairs), end

    decoder = json.JSONDecoder(parse_int=lambda t: 0)
    decoder.parse_object = parse_object
    decoder.scan_once = json.scanner.py_make_scanner(decoder)
    try:
        decoder.decode(text)
    except (ValueError, RecursionError):
        pass
    if not found:
        return -1
    start, end, key = found[0]
    blank = _blank_strings(text)
    hits = []
    for literal in {json.dumps(key), json.dumps(key, ensure_ascii=False)}:
        for m in re.finditer(re.escape(literal) + r"\s*:", text[:end]):
            if m.start() > start and blank[m.start()] == '"' and len(blank[m.start():].split('"', 2)[1]) == len(literal) - 2:
                inner = blank[start + 1:m.start()]
                if sum(inner.count(c) for c in "[{") == sum(inner.count(c) for c in "]}"):
                    hits.append(m.start())
    hits.sort()
    return hits[1] if len(hits) > 1 else start


def _has_lone_surrogate(obj, depth: int = 0) -> bool:
    if isinstance(obj, str):
        try:
            obj.encode("utf-8")
            return False
        except UnicodeEncodeError:
            return True
    if depth > MAX_DEPTH:
        return False
    if isinstance(obj, dict):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v, depth + 1) for k, v in obj.items())
    if isinstance(obj, list):
        return any(_has_lone_surrogate(v, depth + 1) for v in obj)
    return False


def _open(path, what: str, max_bytes: int | None = None) -> BinaryIO:
    try:
        return open_regular(path, what=what, max_bytes=max_bytes)
    except UnsafeFile as e:
        raise DataError(f"{Path(path).name}: {e.reason}; expected a regular file ({e})") from None


def jsonl_lines(source: Path | BinaryIO, max_bytes: int = MAX_LINE_BYTES, name: str | None = None) -> Iterator[tuple[int, str]]:
    """(line number from 1, decoded line) for every line of `source` (a path, or a file opened by
    `paths.open_regular`); DataError on an overlong line or a line that is not UTF-8."""
    if isinstance(source, (str, Path)):
        name = name or Path(source).name
        with _open(source, "jsonl file") as f:
            yield from jsonl_lines(f, max_bytes, name)
        return
    f = source
    for lineno in itertools.count(1):
        raw = f.readline(max_bytes + 1)
        if not raw:
            return
        if len(raw) > max_bytes and not raw.endswith(b"\n"):
            raise DataError(f"{name} line {lineno}: longer than {max_bytes} bytes; refused "
                            f"(a record of this dataset is far shorter)")
        try:
            yield lineno, raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"{name} line {lineno}: not UTF-8 text ({e})") from e


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
    """json.loads(text) after a depth check; BadJSON (a DataError) naming `where` and the line for a
    too-deep record, a repeated key, an overlong integer or a lone surrogate.

    Malformed JSON still raises json.JSONDecodeError (the readers count it as a skip).
    """
    multiline = "\n" in text.rstrip("\r\n")

    def at(pos: int) -> str:
        return f"{where} line {_line(text, pos)}" if multiline and pos >= 0 else where

    if nesting_depth(text, max_depth) > max_depth:
        raise BadJSON(f"{where}: JSON nested deeper than {max_depth} levels; refused")
    try:
        obj = json.loads(text, object_pairs_hook=_pairs, parse_int=_int)
    except RecursionError:
        raise BadJSON(f"{where}: JSON nested too deeply to parse; refused") from None
    except _Refused as e:
        if e.key is not None:
            pos = _duplicate_position(text) if multiline else 0
        else:
            m = re.search(r"\d{%d,}" % (MAX_INT_DIGITS + 1), _blank_strings(text))
            pos = m.start() if m else -1
        raise BadJSON(f"{at(pos)}: {e}; refused") from None
    if _SURROGATE_ESCAPE.search(text) and _has_lone_surrogate(obj):
        m = next((m for m in _SURROGATE_ESCAPE.finditer(text) if _has_lone_surrogate(json.loads(f'"{m.group()}"'))), None)
        raise BadJSON(f"{at(m.start() if m else -1)}: a string holds a lone surrogate ({m.group() if m else 'escape'}), "
                      f"which is not Unicode text; refused")
    return obj


def read_bounded(path: Path, limit: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of `path` if it is a regular file of at most `limit` bytes, else DataError (the size
    is checked on the opened descriptor first; reads <= limit + 1)."""
    try:
        with open_regular(path, what="json file", max_bytes=limit) as f:
            return read_limited(f, limit)
    except FileTooLarge:
        raise DataError(f"{Path(path).name}: larger than {limit} bytes; refused (the real file is far smaller)") from None
    except UnsafeFile as e:
        raise DataError(f"{Path(path).name}: {e.reason}; expected a regular file ({e})") from None
