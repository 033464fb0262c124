"""The book's build: it cannot hang, it fails naming the notebook and cell, and the whole book renders offline.

Fast tests (seconds, tiny notebooks in a temporary folder, ``build.py``'s own functions):
- a cell that sleeps forever fails at the per-cell time limit, and the error names the cell;
- a silent hang (the kernel idle while the execution client still waits for a reply that it
  lost, simulated by withholding nbclient's reply) is caught by the watchdog, retried once, and
  then fails naming the cell; a hang that does not recur passes on the retry;
- a notebook whose cell raises makes ``build.main`` exit 1, naming the notebook and the cell;
- the notebook list comes from ``_toc.yml``; the build-information page names the commit,
  packages and per-notebook times.

The slow part: ``book/build.py --scale smoke --jobs 2`` runs in a temporary build folder, with
the data and the results store in a temporary ``WMA_DATA``, so neither the repository's
``_build``/``_data`` nor the working tree is touched. The assertions: every notebook executed
without error (outputs present, no error output), the HTML of every page exists with its figures
and tables, the cross-page numbers are filled in, the OT explorer carries its static slider view,
no page loads a script or stylesheet from the network (MathJax is local), the bibliography and
build-information pages exist, no converter log line is on a page, and ``git status`` shows
nothing new. Then the documented papermill line runs from the repository root on the same data
(its training runs are reused from the build's store). That smoke run takes a few minutes on 2 cores.
"""

from __future__ import annotations

import html
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "book"))
import build  # noqa: E402  (book/build.py: the plan and the command line)
import render  # noqa: E402  (book/render.py: the build-information page and the HTML)
import runner  # noqa: E402  (book/runner.py; spawned build workers import it by this name too)

NOTEBOOKS = build.NOTEBOOKS  # the chapters of _toc.yml with a book/<name>.py source
MIN_FIGURES = {"01_method": 5, "02_hateful_memes": 4, "03_mmimdb": 4, "04_ur_funny": 4, "05_mosei": 4,
               "06_ablation": 8, "07_beta_curve": 13, "08_ot_explorer": 1, "09_performance": 2}



# ---------------------------------------------------------------------------------------------
# fast: tiny notebooks


def _notebook(folder: Path, name: str, *cells: str) -> Path:
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {name}")] + [nbformat.v4.new_code_cell(c) for c in cells]
    path = folder / f"{name}.ipynb"
    nbformat.write(nb, path)
    return path


def test_hung_cell_fails_at_the_time_limit_naming_the_cell(tmp_path):
    _notebook(tmp_path, "sleeper", "x = 1", "import time\ntime.sleep(10**6)  # never ends", "y = 2")
    t0 = time.monotonic()
    res = runner.execute("sleeper", {}, str(tmp_path / "out"), timeout=3, idle_timeout=60, src_dir=str(tmp_path))
    took = time.monotonic() - t0
    assert not res["ok"] and took < 60, (took, res)
    assert "cell 2 (`import time`)" in res["error"] and "timed out" in res["error"] and "after 3 seconds" in res["error"]
    assert res["attempts"] == 1  # a slow cell is not rerun


def _withhold_reply(monkeypatch, times: int):
    """Make nbclient miss the execute reply of cells marked ``# lost``, the first ``times`` times:
    the kernel finishes the cell and goes idle, the client waits for ever (the silent hang)."""
    import nbclient.client

    original = nbclient.client.NotebookClient._async_poll_for_reply
    left = [times]

    async def poll(self, msg_id, cell, timeout, *args, **kwargs):
        if "# lost" in cell.source and left[0] > 0:
            left[0] -= 1
            try:  # cancelled when the kernel dies; else, at the cell's time limit, the reply is found after all
                await asyncio.wait_for(asyncio.Event().wait(), timeout)
            except asyncio.TimeoutError:
                pass
        return await original(self, msg_id, cell, timeout, *args, **kwargs)

    monkeypatch.setattr(nbclient.client.NotebookClient, "_async_poll_for_reply", poll)


def test_silent_hang_is_ended_retried_once_then_fails_naming_the_cell(tmp_path, monkeypatch):
    _withhold_reply(monkeypatch, times=2)
    _notebook(tmp_path, "silent", "x = 1", "y = 2  # lost", "z = 3")
    t0 = time.monotonic()
    res = runner.execute("silent", {}, str(tmp_path / "out"), timeout=30, idle_timeout=2, src_dir=str(tmp_path))
    took = time.monotonic() - t0
    assert not res["ok"] and res["attempts"] == 2 and took < 60, (took, res)
    assert "hung 2 times" in res["error"] and "cell 2 (`y = 2  # lost`)" in res["error"], res["error"]
    assert "kernel was idle for 2 s" in res["error"]


def test_silent_hang_that_does_not_recur_passes_on_the_retry(tmp_path, monkeypatch):
    _withhold_reply(monkeypatch, times=1)
    _notebook(tmp_path, "once", "x = 1", "y = 2  # lost", "print(x + y)")
    res = runner.execute("once", {}, str(tmp_path / "out"), timeout=30, idle_timeout=2, src_dir=str(tmp_path))
    assert res["ok"] and res["attempts"] == 2, res
    nb = json.loads((tmp_path / "out" / "once.ipynb").read_text())
    assert "".join(nb["cells"][-1]["outputs"][0]["text"]) == "3\n"  # the retry ran the notebook to its end


def test_failing_notebook_fails_the_build_naming_it(tmp_path, monkeypatch, capsys):
    _notebook(tmp_path, "good", "x = 1")
    _notebook(tmp_path, "bad", "x = 1", "1 / 0")
    monkeypatch.setattr(build, "BOOK", tmp_path)
    monkeypatch.setattr(build, "NOTEBOOKS", ["good", "bad"])
    monkeypatch.setattr(build, "TRAINING", [])
    monkeypatch.setattr(build, "DEPENDS", {})
    monkeypatch.setenv("WMA_DATA", str(tmp_path / "data"))
    code = build.main(["--no-html", "--executor", "local", "--jobs", "2", "--timeout", "60",
                       "--build-dir", str(tmp_path / "b")])
    err = capsys.readouterr().err
    assert code == 1
    assert "FAILED: bad" in err and "cell 2 (`1 / 0`)" in err and "ZeroDivisionError" in err, err
    assert "good" not in err.split("FAILED:", 1)[1].splitlines()[0]
    timings = json.loads((tmp_path / "b" / "timings.json").read_text())
    assert timings["ok"] is False and timings["notebook_runs"]["bad"]["ok"] is False and timings["notebook_runs"]["good"]["ok"]
    assert all(isinstance(v, float) for v in timings["notebooks"].values())  # {name: seconds}, as other readers expect


def test_notebooks_are_the_toc_chapters_with_a_source(tmp_path):
    toc = tmp_path / "_toc.yml"
    toc.write_text("format: jb-book\nroot: book/index\nchapters:\n  - file: book/02_hateful_memes\n"
                   "  - file: book/bibliography\n  - file: book/01_method\n  - file: book/build_info\n")
    assert build.toc_notebooks(toc) == ["02_hateful_memes", "01_method"]
    sources = sorted(p.stem for p in (ROOT / "book").glob("[0-9][0-9]_*.py"))
    assert sorted(build.NOTEBOOKS) == sources


def test_build_info_page(tmp_path):
    from importlib import metadata

    page = tmp_path / "build_info.md"
    timings = {"scale": "smoke", "jobs": 2, "timeout": 1800, "finished": "2026-01-02 03:04:05", "notebooks_wall_s": 12.5,
               "pretraining_s": 55.0, "notebooks": {build.NOTEBOOKS[0]: 3.25},
               "notebook_runs": {build.NOTEBOOKS[0]: {"seconds": 3.25, "ok": True, "attempts": 2, "build": "this build"}}}
    render.write_build_info(page, timings, build.NOTEBOOKS)
    text = page.read_text()
    assert text.startswith("# Build information")
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    if commit:
        assert commit in text
    assert "`smoke`" in text and "2026-01-02 03:04:05" in text and "1800 s" in text
    assert f"| {{doc}}`{build.NOTEBOOKS[0]}` | 3.2 | ok (after 1 retry) | this build |" in text
    for other in build.NOTEBOOKS[1:]:
        assert f"| {{doc}}`{other}` | – | no executed copy | – |" in text
    assert f"| torch | {metadata.version('torch')} |" in text
    assert "Pretraining the miniature before the notebooks: 55.0 s" in text
    assert "Pretraining, the sweep step and the notebooks (wall clock): 12.5 s" in text


# ---------------------------------------------------------------------------------------------
# slow: the whole book at smoke scale


def _git_status() -> set[str] | None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        return None
    out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=ROOT, capture_output=True, text=True)
    return set(out.stdout.splitlines()) if out.returncode == 0 else None


@pytest.fixture(scope="module")
def smoke_env(tmp_path_factory):
    base = tmp_path_factory.mktemp("book")
    env = {**os.environ, "WMA_DATA": str(base / "data"), "PYTHONUNBUFFERED": "1", "WMA_TRIAL_LOG": str(base / "trials.log")}
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
    return {"dir": build_dir, "stdout": proc.stdout, "before": before, "after": after, "trials": base / "trials.log"}


@pytest.mark.slow
def test_the_sweep_step_trains_every_run_and_the_notebooks_only_read(built):
    """Plan, then train, then read: every run started during the build is one the plan declared,
    and each started once (a notebook that trained would start a run the sweep step did not)."""
    plan = json.loads((built["dir"] / "plan.json").read_text())
    declared = {k for keys in plan["chapters"].values() for k in keys}
    started = [ln.split()[1] for ln in built["trials"].read_text().splitlines() if ln.startswith("start ")]
    assert started and set(started) <= declared and len(started) == len(set(started)) == len(declared)
    assert not plan["failures"] and "[build] sweep step" in built["stdout"]
    assert sum(len(v) for v in plan["chapters"].values()) > len(declared)  # shared runs: one key, trained once


@pytest.mark.slow
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


@pytest.mark.slow
def test_figures_saved_as_files(built):
    for name in NOTEBOOKS:
        pngs = list((built["dir"] / "figures" / name).glob("*.png"))
        assert len(pngs) >= MIN_FIGURES.get(name, 0) - (1 if name == "08_ot_explorer" else 0), f"{name}: {len(pngs)} PNG files"


@pytest.mark.slow
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
        assert len(imgs) >= MIN_FIGURES.get(name, 0), f"{name}: {len(imgs)} images"
        for src in files:
            assert (html_dir / "book" / src).resolve().exists(), f"{name}: image {src} missing"
        assert name == "01_method" or "<table" in page, f"{name}: no table"
        assert "Traceback" not in page, f"{name}: a traceback is shown"
        if name not in ("01_method", "09_performance"):
            assert re.search(r'<figcaption>\s*<p><span class="caption-number">Fig\. \d+', page), f"{name}: no numbered figure"


class _Resources(HTMLParser):
    """The URLs a page loads: ``<script src>``, ``<link href>`` of stylesheets (and preloads), ``<img src>``."""

    def __init__(self):
        super().__init__()
        self.urls: list[tuple[str, str]] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "script" and a.get("src"):
            self.urls.append(("script", a["src"]))
        elif tag == "link" and a.get("href") and set((a.get("rel") or "").split()) & {"stylesheet", "preload", "modulepreload"}:
            self.urls.append(("link", a["href"]))
        elif tag == "img" and a.get("src"):
            self.urls.append(("img", a["src"]))


def _loaded(page: Path) -> list[tuple[str, str]]:
    parser = _Resources()
    parser.feed(page.read_text())
    return parser.urls


@pytest.mark.slow
def test_pages_load_nothing_from_the_network(built):
    """Offline reading: no page loads a script, stylesheet or image from elsewhere; MathJax is local."""
    html_dir = built["dir"] / "html"
    pages = sorted(p for p in html_dir.rglob("*.html") if "_static" not in p.relative_to(html_dir).parts)  # not theme templates
    assert len(pages) >= len(NOTEBOOKS) + 3
    for page in pages:
        remote = [(kind, url) for kind, url in _loaded(page) if re.match(r"(https?:)?//", url)]
        assert not remote, f"{page.relative_to(html_dir)} loads {remote}"
        for kind, url in _loaded(page):
            if not url.startswith("data:"):
                target = (page.parent / url.split("?")[0].split("#")[0]).resolve()
                assert target.exists(), f"{page.relative_to(html_dir)}: {kind} {url} is missing"
    method = html_dir / "book" / "01_method.html"
    mathjax = [url for kind, url in _loaded(method) if kind == "script" and "mathjax" in url.lower()]
    assert mathjax, "01_method loads no MathJax"
    assert (method.parent / mathjax[0].split("?")[0]).resolve().stat().st_size > 100_000  # the real MathJax, not a stub
    explorer = (html_dir / "book" / "08_ot_explorer.html").read_text()
    assert "application/vnd.jupyter.widget-state+json" not in explorer and "require.js" not in explorer


@pytest.mark.slow
def test_bibliography_build_info_and_no_converter_logs(built):
    html_dir = built["dir"] / "html" / "book"
    bib = (html_dir / "bibliography.html").read_text()
    for title in ("Wasserstein Modality Alignment Makes Your Multimodal Transformer More Robust", "ViLT",
                  "MultiBench", "Gated Multimodal Units", "Hateful Memes", "UR-FUNNY", "CMU-MOSEI", "Python Optimal Transport",
                  "Proximal Point Method"):
        assert title.lower() in bib.lower(), f"the bibliography lacks {title}"
    assert "https://openreview.net/forum?id=dbaGuiYsTl" in bib and "10.18653/v1/P18-1208" in bib
    index = (html_dir / "index.html").read_text()
    assert index.count('href="bibliography.html#') >= 8, "the index cites the paper, ViLT, IPOT, POT and the datasets"
    info = (html_dir / "build_info.html").read_text()
    timings = json.loads((built["dir"] / "timings.json").read_text())
    assert "Build information" in info and "smoke" in info
    for name in NOTEBOOKS:
        assert f"{timings['notebooks'][name]:.1f}" in info, name
    for page in html_dir.glob("*.html"):
        assert "[data_prep]" not in page.read_text(), f"a converter log line is on {page.name}"


@pytest.mark.slow
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
        assert "no GPU numbers exist yet" in page, "no result file was measured on a GPU, and the page does not say so"
        return
    assert "no GPU numbers exist yet" not in page, f"the page denies GPU numbers, but {sorted(gpu)} were measured on a GPU"
    for name, r in gpu.items():
        device = (r.get("machine") or {}).get("gpu")
        assert device, f"{name} is measured_on 'gpu' but names no GPU in machine.gpu"
        assert device in page, f"{name}: its GPU {device!r} is not named on the page"


@pytest.mark.slow
def test_performance_page_is_honest_about_gpus(built):
    page = (built["dir"] / "html" / "book" / "09_performance.html").read_text()
    files = sorted((ROOT / "benchmarks" / "results").glob("*.json"))
    check_performance_page(page, {f.name: json.loads(f.read_text()) for f in files})


@pytest.mark.slow
def test_working_tree_stays_clean(built):
    if built["before"] is None:
        pytest.skip("not a git checkout")
    new = built["after"] - built["before"]
    assert not new, f"the build left files in the working tree: {sorted(new)}"


@pytest.mark.slow
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
