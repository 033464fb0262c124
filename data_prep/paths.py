"""Paths and file names taken from input files stay inside their folder.

Dataset files name other files (Hateful Memes' `"img"`, MM-IMDb's ids in split.json) and the study
layer turns names (dataset ids, run keys) into file names. Such text is data from elsewhere: a
record saying `"img": "../../home/me/photo.png"` or `"/etc/passwd"`, or a symlink inside the raw
folder pointing out of it, must not make the book read (and copy into a prepared store) a file
outside the folder it was asked to read.

- `resolve_inside(root, relative)` -> the resolved path, or `PathEscape` with the reason.
- `safe_name(name)` -> `name` if it is a plain file name ([A-Za-z0-9._-], no leading dot), else
  ValueError.
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath, PureWindowsPath

MAX_NAME = 200
_NAME = re.compile(r"[A-Za-z0-9._-]+")


class PathEscape(ValueError):
    """A path from input text that would leave its folder.

    reason: short stable text for manifests ("absolute path", "leaves the folder through ..",
    "symlink leads outside", "invalid path", what); what: the `what` given to `resolve_inside`.
    """

    def __init__(self, message: str, reason: str, what: str = "path"):
        super().__init__(message)
        self.reason = reason
        self.what = what


def resolve_inside(root: Path, relative: str, *, what: str = "path") -> Path:
    """Resolve `relative` against `root`, following symlinks; raise PathEscape if it leaves root.

    root: the folder the input may name files in (resolved here, symlinks followed).
    relative: text from an input file, e.g. "img/42953.png".
    what: how messages name the path ("image path", "split.json id").
    Reasons (PathEscape.reason): "absolute path", "leaves the folder through ..",
    "symlink leads outside". The file need not exist (a missing file is the caller's skip).
    """
    text = str(relative)
    if "\x00" in text:
        raise PathEscape(f"{what} {text!r}: contains a NUL byte", "invalid path", what)
    if os.path.isabs(text) or PurePosixPath(text).is_absolute() or PureWindowsPath(text).drive or text.startswith("\\"):
        raise PathEscape(f"{what} {text!r}: absolute path; expected a path inside {root}", "absolute path", what)
    base = Path(root).resolve()
    parts = PurePosixPath(text.replace("\\", "/")).parts
    depth = 0
    for part in parts:
        depth = depth - 1 if part == ".." else depth + (part != ".")
        if depth < 0:
            raise PathEscape(f"{what} {text!r}: leaves the folder {base} through ..", "leaves the folder through ..", what)
    # Lexically inside; anything still outside after resolving went through a symlink.
    target = (base / text).resolve()
    if not target.is_relative_to(base):
        raise PathEscape(f"{what} {text!r}: a symlink leads outside {base} (to {target})", "symlink leads outside", what)
    return target


def safe_name(name: str, *, what: str) -> str:
    """`name` itself if it can be used as one file name; else ValueError naming `what`.

    Allowed: 1..200 characters of [A-Za-z0-9._-], not starting with a dot (so no "..", no hidden
    files) and with no separator, so `folder / safe_name(x)` is always a direct child of folder.
    """
    if not isinstance(name, str):
        raise ValueError(f"{what} {name!r}: expected a string")
    if not (0 < len(name) <= MAX_NAME) or not _NAME.fullmatch(name) or name.startswith("."):
        raise ValueError(
            f"{what} {name!r}: not usable as a file name; expected 1-{MAX_NAME} characters of "
            f"letters, digits, '.', '_', '-', not starting with '.'"
        )
    return name
