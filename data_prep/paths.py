"""Paths and file names taken from input files stay inside their folder.

Dataset files name other files (Hateful Memes' `"img"`, MM-IMDb's ids in split.json) and the study
layer turns names (dataset ids, run keys) into file names. Such text is data from elsewhere: a
record saying `"img": "../../home/me/photo.png"` or `"/etc/passwd"`, or a symlink inside the raw
folder pointing out of it, must not make the book read (and copy into a prepared store) a file
outside the folder it was asked to read.

- `resolve_inside(root, relative)` -> the resolved path, or `PathEscape` with the reason.
- `safe_name(name)` -> `name` if it is a plain file name ([A-Za-z0-9._-], no leading dot), else
  ValueError.
- `open_inside(root, relative)` -> a binary file object of a *regular* file inside root, opened once
  (O_NOFOLLOW | O_NONBLOCK) and checked on the opened descriptor (fstat: S_ISREG, size; on Linux
  /proc/self/fd: the real path is inside root). A FIFO, socket, device or folder is
  `NotRegularFile` (never blocks: O_NONBLOCK), a file over `max_bytes` is `FileTooLarge`, a path
  or a symlink leading out of root is `PathEscape`. `open_regular(path)` does the same for a path
  already resolved (e.g. by `resolve_inside`), `folder_inside(root, relative)` for folders.
All three are `UnsafeFile` (a ValueError) with a short stable `reason` for manifests and logs.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import BinaryIO

MAX_NAME = 200
_NAME = re.compile(r"[A-Za-z0-9._-]+")
# O_NOFOLLOW: the last component is never a symlink (resolve_inside already followed the others);
# O_NONBLOCK: opening a FIFO returns at once instead of waiting for a writer (fstat then refuses it).
_OPEN_FLAGS = (os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
               | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0))


class UnsafeFile(ValueError):
    """A file from elsewhere that is not read: outside its folder, not a regular file, too large.

    reason: short stable text for manifests ("symlink leads outside", "not a regular file (FIFO)",
    "file too large"); what: how the message names the file ("image path", "raw file").
    """

    def __init__(self, message: str, reason: str, what: str = "path"):
        super().__init__(message)
        self.reason = reason
        self.what = what


class NotRegularFile(UnsafeFile):
    """A FIFO, socket, device or folder where a regular file was expected."""


class FileTooLarge(UnsafeFile):
    """A regular file larger than the limit its reader allows."""


class PathEscape(UnsafeFile):
    """A path from input text that would leave its folder.

    reason: short stable text for manifests ("absolute path", "leaves the folder through ..",
    "symlink leads outside", "invalid path", what); what: the `what` given to `resolve_inside`.
    """


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
    try:
        os.fsencode(text)
    except UnicodeError:  # a lone surrogate: no file system can name it
        raise PathEscape(f"{what} {text!r}: not valid Unicode (lone surrogate)", "invalid path", what) from None
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
    try:
        target = (base / text).resolve()
    except (RuntimeError, OSError) as e:  # a symlink loop, a name too long
        raise PathEscape(f"{what} {text!r}: cannot be resolved ({e})", "invalid path", what) from None
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


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "FIFO"), (stat.S_ISDIR, "folder"), (stat.S_ISSOCK, "socket"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"), (stat.S_ISLNK, "symlink")):
        if test(mode):
            return name
    return "special file"


def _fd_path(fd: int) -> Path | None:
    """The real path of an open descriptor (Linux /proc), or None where the system cannot say."""
    try:
        return Path(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:
        return None


def open_regular(path: str | Path, *, what: str = "file", max_bytes: int | None = None,
                 root: str | Path | None = None) -> BinaryIO:
    """Open `path` for reading if it is a regular file (checked on the opened descriptor).

    path: usually the result of `resolve_inside` (no symlink left in it); a symlink as the last
        component is refused (O_NOFOLLOW), a FIFO does not block (O_NONBLOCK).
    max_bytes: refuse a larger file (st_size, before anything is read) with FileTooLarge.
    root: where given, the descriptor's real path must be inside root (PathEscape otherwise), so a
        folder swapped for a symlink after `resolve_inside` is caught too.
    Raises FileNotFoundError for a missing file, UnsafeFile subclasses as documented, OSError else.
    """
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as e:
        if e.errno == errno.ELOOP or (e.errno == errno.EMLINK and os.path.islink(path)):
            raise PathEscape(f"{what} {path}: is a symlink; expected a regular file", "symlink", what) from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = _kind(st.st_mode)
            raise NotRegularFile(f"{what} {path}: is a {kind}, not a regular file; refused", f"not a regular file ({kind})", what)
        if root is not None:
            real, base = _fd_path(fd), Path(root).resolve()
            if real is not None and real.is_absolute() and not real.is_relative_to(base):
                raise PathEscape(f"{what} {path}: the opened file is {real}, outside {base}", "symlink leads outside", what)
        if max_bytes is not None and st.st_size > max_bytes:
            raise FileTooLarge(f"{what} {path}: {st.st_size} bytes, more than the {max_bytes} allowed; refused",
                               "file too large", what)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def open_inside(root: str | Path, relative: str, *, what: str = "file", max_bytes: int | None = None) -> BinaryIO:
    """`open_regular(resolve_inside(root, relative))`, with the opened descriptor checked against root."""
    return open_regular(resolve_inside(root, relative, what=what), what=what, max_bytes=max_bytes, root=root)


def folder_inside(root: str | Path, relative: str, *, what: str = "folder") -> Path:
    """The resolved folder `root/relative`; PathEscape if it (or a symlink on the way) leaves root,
    NotRegularFile if it is not a folder, FileNotFoundError if it does not exist."""
    path = resolve_inside(root, relative, what=what)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} {relative!r}: not found in {Path(root)}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise NotRegularFile(f"{what} {relative!r}: is a {_kind(st.st_mode)}, not a folder", f"not a folder ({_kind(st.st_mode)})", what)
    return path


def read_limited(f: BinaryIO, limit: int, what: str = "file") -> bytes:
    """All bytes of an open file if there are at most `limit` (reads <= limit + 1), else FileTooLarge
    (a file may grow after its size was checked)."""
    data = f.read(limit + 1)
    if len(data) > limit:
        raise FileTooLarge(f"{what}: more than {limit} bytes; refused", "file too large", what)
    return data
