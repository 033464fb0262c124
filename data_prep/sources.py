"""Which source files decide a generated artefact: a module and every ``data_prep`` module it
imports, followed transitively (relative imports, read with :mod:`ast`, so nothing is run).

A digest over that closure (:func:`source_digest`) names a folder of generated data (a twin, the
pretraining corpus): an edit to any file its bytes depend on gives it a new name, and an edit
elsewhere keeps it."""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


def _module_file(base: Path, parts: list[str]) -> Path | None:
    target = base.joinpath(*parts)
    for f in (target.with_suffix(".py"), target / "__init__.py"):
        if f.is_file():
            return f
    return None


def _imports(path: Path) -> set[Path]:
    """The ``data_prep`` files that ``path`` imports (relative imports, at any depth in the file,
    and the ``__init__`` of every package above it)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if not isinstance(node, ast.ImportFrom) or node.level == 0:
            continue
        base = path.parent
        for _ in range(node.level - 1):
            base = base.parent
        parts = node.module.split(".") if node.module else []
        module = _module_file(base, parts)
        if module is not None:
            found.add(module)
        for alias in node.names:  # ``from . import world``: the names may be modules themselves
            sub = _module_file(base, parts + [alias.name])
            if sub is not None:
                found.add(sub)
    # importing a module runs its packages' ``__init__`` first
    found.update(d / "__init__.py" for d in path.resolve().parents if d == PACKAGE or PACKAGE in d.parents)
    return {f.resolve() for f in found if f.is_file() and PACKAGE in f.resolve().parents}


def import_closure(files) -> tuple[Path, ...]:
    """``files`` and every ``data_prep`` file they import, transitively, sorted by path."""
    todo = [Path(f).resolve() for f in files]
    seen: set[Path] = set()
    while todo:
        f = todo.pop()
        if f in seen:
            continue
        seen.add(f)
        todo.extend(_imports(f) - seen)
    return tuple(sorted(seen))


def source_digest(files, n: int = 16) -> str:
    """The first ``n`` hex digits of the sha256 over the closure's files (each its path inside
    ``data_prep`` and its bytes)."""
    h = hashlib.sha256()
    for f in import_closure(files):
        h.update(f.relative_to(PACKAGE).as_posix().encode() + f.read_bytes())
    return h.hexdigest()[:n]
