"""The house rules, read from the source: imports point down (book -> wma_study -> wma_core ->
data_prep), no import circle anywhere, the method package stays thin, no long functions.

Every ``import`` statement counts, also those inside functions (a lazy import is still an arrow).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: a package may import only packages of the same or a lower rank
RANK = {"data_prep": 0, "wma_core": 1, "wma_study": 2, "book": 3}
#: where each tree of modules lives
TREES = ("data_prep", "wma_core", "wma_study", "book", "benchmarks")
#: the one function allowed to be longer than MAX_LINES: the Triton kernel, one body by nature
LONG_OK = {("wma_core/ot_fused.py", "_ipot_kernel")}
MAX_LINES = 100


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def sources() -> dict[str, Path]:
    out = {}
    for tree in TREES:
        for p in sorted((ROOT / tree).rglob("*.py")):
            if "_build" in p.parts or ".ipynb_checkpoints" in p.parts:
                continue
            out[module_name(p)] = p
    return out


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules ``name`` imports (relative imports resolved, ``from pkg import mod``
    counted as the module ``pkg.mod`` when that is one)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_pkg = path.name == "__init__.py"
    base = name.split(".") if is_pkg else name.split(".")[:-1]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                stem = base[: len(base) - (node.level - 1)]
                mod = ".".join(stem + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            # `from pkg import mod` is an arrow to the module; `from mod import name`, to mod
            subs = [f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in known]
            targets = subs + ([mod] if len(subs) < len(node.names) else [])
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def import_graph() -> dict[str, set[str]]:
    src = sources()
    known = set(src)
    return {name: imports_of(name, path, known) for name, path in src.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph`` as a list of modules (first = last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (c := visit(m)):
                return c
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (c := visit(n)):
            return c
    return None


def _package(module: str) -> str:
    return module.split(".")[0]


def test_cycle_finder_finds_a_circle():
    """The checker itself can fail: a toy graph with a circle through a package __init__."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_relative_imports_are_resolved(tmp_path):
    p = tmp_path / "m.py"
    p.write_text("from . import x\nfrom ..y import z\n\ndef f():\n    from .w import v\n")
    got = imports_of("pkg.sub.m", p, {"pkg.sub", "pkg.sub.x", "pkg.y", "pkg.sub.w"})
    assert got == {"pkg.sub.x", "pkg.y", "pkg.sub.w"}  # `from . import x`: the module x, not the package


def test_imports_point_down():
    bad = []
    for mod, deps in import_graph().items():
        pkg = _package(mod)
        for d in deps:
            dp = _package(d)
            if pkg == "benchmarks":
                ok = dp in ("benchmarks", "wma_core", "data_prep")
            else:
                ok = RANK.get(dp, -1) <= RANK[pkg]
            if not ok:
                bad.append(f"{mod} imports {d}")
    assert not bad, "imports that point up:\n" + "\n".join(sorted(bad))


def test_the_method_never_imports_the_study():
    bad = [f"{m} -> {d}" for m, deps in import_graph().items() if m.startswith("wma_core")
           for d in deps if d.startswith(("wma_study", "book"))]
    assert not bad, bad


def test_no_import_circle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_the_method_package_is_thin():
    lines = sum(len(p.read_text(encoding="utf-8").splitlines()) for p in (ROOT / "wma_core").rglob("*.py"))
    assert lines < 4000, f"wma_core has {lines} lines"


@pytest.mark.parametrize("tree", ["wma_core", "wma_study", "data_prep", "book"])
def test_no_long_functions(tree):
    long = []
    for p in sorted((ROOT / tree).rglob("*.py")):
        rel = str(p.relative_to(ROOT))
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_LINES and (rel, node.name) not in LONG_OK:
                    long.append(f"{rel}:{node.lineno} {node.name} ({n} lines)")
    assert not long, "functions over 100 lines:\n" + "\n".join(long)
