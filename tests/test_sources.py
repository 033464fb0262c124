"""The digests that name generated folders cover every data_prep file their generators import."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from data_prep import sources
from data_prep.synth import code_digest

ROOT = Path(__file__).resolve().parents[1]


def _loaded(modules: list[str]) -> set[Path]:
    """The data_prep files a fresh interpreter has loaded after importing ``modules``."""
    code = ("import sys, json; " + "; ".join(f"import {m}" for m in modules)
            + "; print(json.dumps([m.__file__ for n, m in sys.modules.items()"
              " if n.split('.')[0] == 'data_prep' and getattr(m, '__file__', None)]))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True, timeout=120)
    return {Path(f).resolve() for f in json.loads(out.stdout)}


@pytest.mark.parametrize("roots", [["synth/captions.py", "readers/coco.py", "text.py"], ["synth/__init__.py"]])
def test_closure_holds_every_module_an_import_loads(roots):
    files = [sources.PACKAGE / r for r in roots]
    modules = ["data_prep." + r[:-3].replace("/", ".").removesuffix(".__init__") for r in roots]
    closure = set(sources.import_closure(files))
    assert _loaded(modules) <= closure
    assert sources.PACKAGE / "config.py" in closure


def test_the_corpus_key_and_the_twins_digest_follow_config_py(monkeypatch):
    from wma_core import pretrain

    assert sources.PACKAGE / "config.py" in pretrain._CORPUS_CODE
    before = (code_digest(), pretrain.pretrain_code_digest(pretrain._CORPUS_CODE))
    real = Path.read_bytes

    def edited(self):
        data = real(self)
        return data + b"\n# edited\n" if self.resolve() == sources.PACKAGE / "config.py" else data

    monkeypatch.setattr(Path, "read_bytes", edited)
    after = (code_digest(), pretrain.pretrain_code_digest(pretrain._CORPUS_CODE))
    assert before[0] != after[0] and before[1] != after[1]


def test_closure_follows_relative_imports_transitively(tmp_path, monkeypatch):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import x\nimport os\n")
    (pkg / "b.py").write_text("def x():\n    from .sub import c\n")
    (pkg / "sub" / "c.py").write_text("from .. import d\n")
    (pkg / "d.py").write_text("")
    (pkg / "unused.py").write_text("")
    monkeypatch.setattr(sources, "PACKAGE", pkg.resolve())
    got = {p.relative_to(pkg.resolve()).as_posix() for p in sources.import_closure([pkg / "a.py"])}
    assert got == {"a.py", "b.py", "sub/__init__.py", "sub/c.py", "__init__.py", "d.py"}
