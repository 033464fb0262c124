"""The book's notebooks as source files: pairing, clean .ipynb files, and their parameters cells.

- every ``book/NN_*.py`` (py:percent, the source of truth) has its ``.ipynb`` beside it, and both
  read to the same cells (jupytext's reading, ignoring the metadata the project's jupytext
  configuration filters out);
- the ``.ipynb`` files carry no outputs, no execution counts and no papermill or widget metadata;
- every notebook has exactly one cell tagged ``parameters``, whose assignments are all
  type-annotated, literal and commented, and which declares ``scale`` (the build passes it);
- the dataset chapters' β defaults are the paper's choices (``PAPER_SELECTED``), α the paper's capped for the miniature.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

jupytext = pytest.importorskip("jupytext")

from wma_study.experiments import PAPER_SELECTED, chapter_alpha  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
SOURCES = sorted(BOOK.glob("[0-9][0-9]_*.py"))
DATASET_NOTEBOOKS = {"02_hateful_memes": "hateful_memes", "03_mmimdb": "mmimdb", "04_ur_funny": "ur_funny", "05_mosei": "mosei"}
EXPECTED = ["00_pretraining", "01_method", "02_hateful_memes", "03_mmimdb", "04_ur_funny", "05_mosei", "06_ablation", "07_beta_curve",
            "08_ot_explorer", "09_performance", "10_summary"]
FILTERED_CELL_METADATA = {"papermill", "execution", "ExecuteTime", "collapsed", "scrolled"}


def _ids(paths):
    return [p.stem for p in paths]


def test_every_chapter_of_the_toc_has_a_source():
    assert _ids(SOURCES) == EXPECTED
    toc = (ROOT / "_toc.yml").read_text()
    for name in EXPECTED:
        assert f"book/{name}" in toc, f"{name} missing from _toc.yml"


def _cells(nb) -> list[tuple]:
    out = []
    for c in nb.cells:
        meta = {k: v for k, v in c.metadata.items() if k not in FILTERED_CELL_METADATA}
        out.append((c.cell_type, c.source.strip(), json.dumps(meta, sort_keys=True)))
    return out


@pytest.mark.parametrize("src", SOURCES, ids=_ids(SOURCES))
def test_py_and_ipynb_are_in_sync(src):
    ipynb = src.with_suffix(".ipynb")
    assert ipynb.exists(), f"{ipynb.name} missing: run `make sync` (jupytext --sync book/[0-9]*.py)"
    a = _cells(jupytext.read(src))
    b = _cells(jupytext.read(ipynb))
    assert len(a) == len(b), f"{src.name} has {len(a)} cells, {ipynb.name} {len(b)}: run `make sync`"
    for i, (ca, cb) in enumerate(zip(a, b)):
        assert ca == cb, f"cell {i} of {src.name} differs from {ipynb.name}: run `make sync`"


@pytest.mark.parametrize("src", SOURCES, ids=_ids(SOURCES))
def test_ipynb_has_no_outputs_or_run_metadata(src):
    nb = json.loads(src.with_suffix(".ipynb").read_text())
    assert "papermill" not in nb["metadata"] and "widgets" not in nb["metadata"]
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] == "code":
            assert cell.get("outputs") == [], f"cell {i} of {src.stem}.ipynb has outputs"
            assert cell.get("execution_count") is None, f"cell {i} of {src.stem}.ipynb has an execution count"
        assert not set(cell.get("metadata", {})) & {"papermill", "execution"}, f"cell {i} carries run metadata"
    assert nb["metadata"].get("kernelspec", {}).get("name") == "python3"


def _parameters_cell(src: Path) -> str:
    nb = jupytext.read(src)
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"{src.name} has {len(cells)} cells tagged 'parameters'"
    assert cells[0].cell_type == "code"
    return cells[0].source


@pytest.mark.parametrize("src", SOURCES, ids=_ids(SOURCES))
def test_parameters_cell_is_typed_and_commented(src):
    code = _parameters_cell(src)
    tree = ast.parse(code)
    lines = code.splitlines()
    names = []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module == "typing":
            continue  # `from typing import Optional` (papermill parses Optional[...] annotations)
        assert isinstance(node, ast.AnnAssign), f"{src.name}: line {node.lineno} of the parameters cell is not a typed assignment"
        assert isinstance(node.target, ast.Name) and node.value is not None
        ast.literal_eval(node.value)  # a literal default, so papermill can override it
        line = lines[node.lineno - 1]
        assert "#" in line and line.split("#", 1)[1].strip(), f"{src.name}: parameter {node.target.id} has no comment"
        # papermill's parser reads `name: Annotation = value  # comment`: no '|' in the annotation, no '=' in the comment
        assert re.fullmatch(r"[\w\[\], ]+", ast.get_source_segment(code, node.annotation)), f"{src.name}: {node.target.id}"
        assert "=" not in line.split("#", 1)[1], f"{src.name}: '=' in the comment of {node.target.id} breaks papermill's parser"
        names.append(node.target.id)
    assert "scale" in names, f"{src.name}: every notebook declares `scale` (the build passes it)"
    assert len(names) == len(set(names))


def test_papermill_sees_every_parameter():
    papermill = pytest.importorskip("papermill")
    for src in SOURCES:
        declared = set(papermill.inspect_notebook(str(src.with_suffix(".ipynb"))))
        tree = ast.parse(_parameters_cell(src))
        expected = {n.target.id for n in tree.body if isinstance(n, ast.AnnAssign)}
        assert declared == expected, f"{src.name}: papermill sees {sorted(declared)}, the cell declares {sorted(expected)}"


@pytest.mark.parametrize("name,dataset", sorted(DATASET_NOTEBOOKS.items()))
def test_dataset_defaults_are_the_papers_choice(name, dataset):
    tree = ast.parse(_parameters_cell(BOOK / f"{name}.py"))
    values = {n.target.id: ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.AnnAssign)}
    assert values["alpha"] is None and values["beta"] == PAPER_SELECTED[dataset][1]
    # α = None: the paper's α at the paper scale, capped for the miniature (PAPER_SELECTED is the
    # transcription of Tables 3-6, independent of chapter_alpha)
    assert chapter_alpha(dataset, "paper") == PAPER_SELECTED[dataset][0]
    # the default scales the paper's α down so that the regulariser is at most the task loss at
    # the first step: R/L = α · sum_pairs (var + ((1 - β) D0)^2) / L, from the calibration file
    a, b = PAPER_SELECTED[dataset]
    terms = json.loads((ROOT / "book/data/noise_calibration.json").read_text())["first_step"][dataset]
    rho = a * sum(t["var"] + ((1 - b) * t["d0"]) ** 2 for t in terms["pairs"].values()) / terms["task_loss"]
    assert chapter_alpha(dataset, "default") == pytest.approx(a if rho <= 1 else a / rho, rel=0.05)
    assert chapter_alpha(dataset, "default", 6.0) == 6.0
    for p in ("scale", "data_root", "model", "seeds", "device", "lr", "epochs", "executor", "address"):
        assert p in values, f"{name} lacks the parameter {p}"
    assert values["scale"] == "default" and values["data_root"] is None and values["model"] is None


def test_ablation_and_summary_compare_with_the_chapters_wma():
    """06 and 10 read WMA at the dataset chapter's (α, β), not at the paper's unscaled α."""
    from wma_study.experiments import chapter_selection

    for ds, (a, b) in PAPER_SELECTED.items():
        assert chapter_selection(ds, "default") == (chapter_alpha(ds, "default"), b)
        assert chapter_selection(ds, "paper") == (a, b)
    for name in ("06_ablation", "10_summary"):
        src = (BOOK / f"{name}.py").read_text()
        assert "chapter_selection(ds, scale)" in src and "a, b = PAPER_SELECTED[ds]" not in src


def test_study_layer_imports_without_transformers_or_sklearn():
    # a rebuild from cached records runs every chapter's import cell: transformers (about 3 s)
    # and scikit-learn (about 1 s) load only when a model is built or a metric computed
    import subprocess
    import sys

    code = ("import sys\n"
            "from wma_study import chapters, experiments, figures, report, sweep, budget\n"
            "import data_prep.prepare, data_prep.synth, data_prep.dataset\n"
            "print(sorted(m for m in ('transformers', 'sklearn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]", f"imported at module level: {out.stdout.strip()}"
