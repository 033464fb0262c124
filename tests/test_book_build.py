"""The whole book, smoke-sized: every notebook executes and every page renders.

``book/build.py --scale smoke --jobs 2`` runs in a temporary build folder, with the data and the
results store in a temporary ``WMA_DATA``, so neither the repository's ``_build``/``_data`` nor the
working tree is touched. The assertions: every notebook executed without error (outputs present,
no error output), the HTML of every page exists with its figures and tables, the cross-page
numbers are filled in, the OT explorer carries its static slider view, and ``git status`` shows
nothing new. Then the documented papermill line runs from the repository root on the same data
(its training runs are reused from the build's store).

This is the suite's smoke run of every notebook; it takes a few minutes on 2 cores.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ["01_method", "02_hateful_memes", "03_mmimdb", "04_ur_funny", "05_mosei", "06_ablation", "07_beta_curve",
             "08_ot_explorer", "09_performance"]
# figures each page shows at least (numbered glue figures; the explorer also embeds its views)
MIN_FIGURES = {"01_method": 5, "02_hateful_memes": 4, "03_mmimdb": 4, "04_ur_funny": 4, "05_mosei": 4,
               "06_ablation": 8, "07_beta_curve": 13, "08_ot_explorer": 1, "09_performance": 2}

pytestmark = [pytest.mark.slow]


def _git_status() -> set[str] | None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        return None
    out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=ROOT, capture_output=True, text=True)
    return set(out.stdout.splitlines()) if out.returncode == 0 else None


@pytest.fixture(scope="module")
def smoke_env(tmp_path_factory):
    base = tmp_path_factory.mktemp("book")
    env = {**os.environ, "WMA_DATA": str(base / "data"), "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    env.pop("WMA_BUILD_DIR", None)
    return base, env


@pytest.fixture(scope="module")
def built(smoke_env):
    base, env = smoke_env
    build_dir = base / "build"
    before = _git_status()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "book" / "build.py"), "--scale", "smoke", "--jobs", "2", "--build-dir", str(build_dir)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500,
    )
    after = _git_status()
    assert proc.returncode == 0, f"build failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}"
    return {"dir": build_dir, "stdout": proc.stdout, "before": before, "after": after}


def test_every_notebook_executed(built):
    executed = built["dir"] / "executed"
    for name in NOTEBOOKS:
        nb = json.loads((executed / f"{name}.ipynb").read_text())
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert code and all(c.get("execution_count") for c in code), f"{name}: not every cell ran"
        errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert not errors, f"{name}: error output {errors[0].get('ename')}: {errors[0].get('evalue')}"
        assert nb["metadata"]["papermill"]["parameters"].get("scale") == "smoke", name
    timings = json.loads((built["dir"] / "timings.json").read_text())
    assert timings["ok"] and set(timings["notebooks"]) == set(NOTEBOOKS)


def test_figures_saved_as_files(built):
    for name in NOTEBOOKS:
        pngs = list((built["dir"] / "figures" / name).glob("*.png"))
        assert len(pngs) >= MIN_FIGURES[name] - (1 if name == "08_ot_explorer" else 0), f"{name}: {len(pngs)} PNG files"


def test_every_page_renders_with_figures_and_tables(built):
    html_dir = built["dir"] / "html"
    assert (html_dir / "index.html").exists()
    index = (html_dir / "book" / "index.html").read_text()
    assert "Read these numbers for what they are" in index
    # every cross-page number was filled in (a missing glue key would have failed the -W build)
    assert index.count('class="pasted-text"') >= 4 * 4 + 4 * 4 + 2
    for name in NOTEBOOKS:
        page = (html_dir / "book" / f"{name}.html").read_text()
        imgs = re.findall(r"<img [^>]*src=\"([^\"]+)\"", page)
        files = [src for src in imgs if not src.startswith("data:")]
        assert len(imgs) >= MIN_FIGURES[name], f"{name}: {len(imgs)} images"
        for src in files:
            assert (html_dir / "book" / src).resolve().exists(), f"{name}: image {src} missing"
        assert name == "01_method" or "<table" in page, f"{name}: no table"
        assert "Traceback" not in page, f"{name}: a traceback is shown"
        if name not in ("01_method", "09_performance"):
            assert re.search(r'<figcaption>\s*<p><span class="caption-number">Fig\. \d+', page), f"{name}: no numbered figure"


def test_explorer_has_static_slider_view(built):
    page = (built["dir"] / "html" / "book" / "08_ot_explorer.html").read_text()
    assert 'class="wma-explorer"' in page
    assert page.count('type="range"') >= 2 and "<select" in page
    data = re.search(r'<script type="application/json" class="wma-data">(.*?)</script>', page, re.S)
    assert data, "the explorer's embedded data is missing"
    payload = json.loads(data.group(1))
    images = payload["images"]
    assert len(images) >= 4 * 2 and all(len(v) > 1000 for v in images.values())
    for ds, alphas in payload["alphas"].items():
        for a in alphas:
            for b in payload["betas"][ds]:
                if a != 0:
                    key = f"{ds}|{int(a) if float(a).is_integer() else a}|{int(b) if float(b).is_integer() else b}"
                    assert key in images, f"no view for {key}"


def check_performance_page(page: str, results: dict) -> None:
    """The performance page against the benchmark result files ``{file name: parsed JSON}``, whichever
    exist: every file is listed; GPU numbers are claimed exactly when a file was measured on a GPU,
    and then every such file names its GPU."""
    page = html.unescape(page)
    for name in results:
        assert name in page, f"benchmark file {name} is not listed on the performance page"
    gpu = {name: r for name, r in results.items() if r.get("measured_on") == "gpu"}
    if not gpu:
        assert "no GPU numbers exist yet" in page
        return
    assert "no GPU numbers exist yet" not in page, f"the page denies GPU numbers, but {sorted(gpu)} were measured on a GPU"
    for name, r in gpu.items():
        device = (r.get("machine") or {}).get("gpu")
        assert device, f"{name} is measured_on 'gpu' but names no GPU in machine.gpu"
        assert device in page, f"{name}: its GPU {device!r} is not named on the page"


def test_performance_page_is_honest_about_gpus(built):
    page = (built["dir"] / "html" / "book" / "09_performance.html").read_text()
    files = sorted((ROOT / "benchmarks" / "results").glob("*.json"))
    check_performance_page(page, {f.name: json.loads(f.read_text()) for f in files})


def test_working_tree_stays_clean(built):
    if built["before"] is None:
        pytest.skip("not a git checkout")
    new = built["after"] - built["before"]
    assert not new, f"the build left files in the working tree: {sorted(new)}"


def test_papermill_line_from_the_repository_root(smoke_env, built, tmp_path):
    """The README's line, at smoke scale and without Ray: `papermill book/03_mmimdb.ipynb out.ipynb -p beta 0.2`."""
    _, env = smoke_env
    env = {**env, "WMA_BUILD_DIR": str(tmp_path / "build")}
    out = tmp_path / "out.ipynb"
    papermill = Path(sys.executable).parent / "papermill"
    cmd = [str(papermill)] if papermill.exists() else [sys.executable, "-m", "papermill"]
    proc = subprocess.run(
        cmd + ["book/03_mmimdb.ipynb", str(out), "-p", "beta", "0.2", "-p", "scale", "smoke", "-p", "executor", "local"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    nb = json.loads(out.read_text())
    assert nb["metadata"]["papermill"]["parameters"] == {"beta": 0.2, "scale": "smoke", "executor": "local"}
    assert not [o for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert (tmp_path / "build" / "figures" / "03_mmimdb" / "fig_table1.png").exists()
