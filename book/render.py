"""The build's last steps: the build-information page, then the staged sources rendered into
HTML by Jupyter Book (which executes nothing: papermill already did)."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

BOOK = Path(__file__).resolve().parent
ROOT = BOOK.parent
BUILD_INFO = "build_info"  # the generated page (book/build_info.md in the stage folder; listed in _toc.yml)


# ---------------------------------------------------------------------------------------------
# the build-information page


def _git(*args) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gpus() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
        if out.returncode == 0 and out.stdout.strip():
            return "; ".join(out.stdout.strip().splitlines())
    except (OSError, subprocess.TimeoutExpired):
        pass
    return "none (the notebooks ran on the CPU)"


PACKAGES = ["torch", "transformers", "POT", "numpy", "scipy", "scikit-learn", "pandas", "statsmodels", "matplotlib",
            "ray", "papermill", "nbclient", "ipykernel", "jupytext", "jupyter-book", "myst-nb", "sphinx",
            "sphinxcontrib-bibtex", "sphinx-mathjax-offline", "ipywidgets"]


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|")


def write_build_info(path: Path, timings: dict, notebooks: list) -> None:
    """Write the book's build-information page (MyST Markdown) from ``timings`` (see ``timings.json``),
    one row per chapter of ``notebooks``."""
    from importlib import metadata

    scale = timings.get("scale", "default")
    try:
        sys.path.insert(0, str(ROOT))
        from wma_study.experiments import get_profile

        prof = get_profile(scale)
        seeds = f"{', '.join(map(str, prof.seeds))} (the dataset chapters); {', '.join(map(str, prof.grid_seeds))} (the α × β grid)"
    except Exception as err:  # noqa: BLE001 - the page says so instead of failing the build
        seeds = f"not available ({type(err).__name__}: {err})"
    commit = _git("rev-parse", "HEAD") or "not a git checkout"
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    if dirty and commit != "not a git checkout":
        commit += " (with uncommitted changes)"
    versions = []
    for p in PACKAGES:
        try:
            versions.append((p, metadata.version(p)))
        except metadata.PackageNotFoundError:
            pass
    rows = [
        ("commit", f"`{commit}`"), ("built (UTC)", timings.get("finished", "")),
        ("scale", f"`{scale}`"), ("seeds", seeds), ("notebooks at once / Ray CPUs", timings.get("jobs", "")),
        ("executor", timings.get("executor", "ray")),
        ("per-cell time limit", f"{timings['timeout']} s" if timings.get("timeout") else "none"),
        ("Python", platform.python_version()), ("CPU", f"{_cpu_model()} ({os.cpu_count()} logical cores)"),
        ("GPU", _gpus()), ("operating system", platform.platform()),
    ]
    lines = [
        "# Build information", "",
        "This page is written by `book/build.py` each time the book is built: what was built, where, and how long "
        "each notebook took. Times are wall-clock seconds on the machine below, with the other notebooks running "
        "beside it (`--jobs`); a notebook whose training runs were already in the results store takes far less "
        "than one that trains them.", "",
        "| | |", "|---|---|", *[f"| {k} | {_md_escape(v)} |" for k, v in rows], "",
        "## Time per notebook", "",
        "| notebook | seconds | status | built in |", "|---|---:|---|---|",
    ]
    for n in notebooks:
        t = timings.get("notebook_runs", {}).get(n)
        if t is None and n in timings.get("notebooks", {}):
            t = {"seconds": float(timings["notebooks"][n])}
        if t is None:
            lines.append(f"| {{doc}}`{n}` | – | no executed copy | – |")
            continue
        status = "ok" if t.get("ok", True) else "FAILED"
        if t.get("attempts", 1) > 1:
            status += f" (after {t['attempts'] - 1} retry)"
        lines.append(f"| {{doc}}`{n}` | {t['seconds']:.1f} | {status} | {t.get('build', 'this build')} |")
    kinds = timings.get("sweep_kinds") or {}
    if kinds:
        lines += ["", "## Time per kind of training run", "",
                  "Recorded training, dev and test seconds of the runs the chapters read, summed per kind "
                  "(a run trained by an earlier build counts with the time it took then).", "",
                  "| run | runs | seconds |", "|---|---:|---:|",
                  *[f"| {_md_escape(k)} | {v['runs']} | {v['seconds']:.0f} |" for k, v in sorted(kinds.items())]]
    lines += [
        "", (f"Pretraining the miniature before the notebooks: {timings['pretraining_s']:.1f} s "
             "(0 s when its checkpoint was already there). ") if timings.get("pretraining_s") is not None else "",
        (f"The sweep step, which trained every run the chapters read before any notebook started: "
         f"{timings['sweep_s']:.1f} s. ") if timings.get("sweep_s") is not None else "",
        f"Pretraining, the sweep step and the notebooks (wall clock): {timings.get('notebooks_wall_s', 0):.1f} s. "
        "The HTML rendering and the total are in `timings.json` in the build folder (they end after this page is written).", "",
        "## Package versions", "", "| package | version |", "|---|---|",
        *[f"| {p} | {v} |" for p, v in versions], "",
    ]
    path.write_text("\n".join(lines))


# ---------------------------------------------------------------------------------------------
# rendering


def failure_page(name: str, why: str) -> str:
    """The page of a chapter that did not build: what went wrong and how to resume."""
    fence = "`" * max(3, 1 + max((len(r) for r in re.findall(r"`+", why)), default=0))
    return (f"# {name}: not built\n\n"
            "This chapter did not build this time; the other chapters did not need it and are complete. "
            "Run `make book` again to resume: every finished training run is reused, so only what is "
            "missing is computed.\n\n"
            f"{fence}text\n{why.strip()}\n{fence}\n")


def stage_and_render(build_dir: Path, executed: Path, timings: dict, notebooks: list, failures: dict | None = None,
                     root: Path = ROOT, book: Path = BOOK) -> float:
    """Stage the sources with the executed ``notebooks`` and build the HTML into ``<build_dir>/html``.

    A chapter in ``failures`` ({name: why}), or without an executed copy, gets a page that says it
    did not build and why (:func:`failure_page`), so every chapter that did build renders."""
    t0 = time.perf_counter()
    failures = dict(failures or {})
    stage = build_dir / "stage"
    shutil.rmtree(stage, ignore_errors=True)
    (stage / "book").mkdir(parents=True)
    for f in ("_config.yml", "_toc.yml"):
        shutil.copy2(root / f, stage / f)
    for pattern in ("*.md", "*.bib"):
        for f in book.glob(pattern):
            shutil.copy2(f, stage / "book" / f.name)
    if (book / "_static").is_dir():  # Jupyter Book loads every CSS file in <root>/_static
        shutil.copytree(book / "_static", stage / "_static")
    for n in notebooks:
        if n not in failures and not (executed / f"{n}.ipynb").exists():
            failures[n] = f"no executed copy in {executed}: it has not been run yet (run the build without --only)"
        if n in failures:
            (stage / "book" / f"{n}.md").write_text(failure_page(n, failures[n]))
        else:
            shutil.copy2(executed / f"{n}.ipynb", stage / "book" / f"{n}.ipynb")
    write_build_info(stage / "book" / f"{BUILD_INFO}.md", timings, notebooks)
    cmd = [str(Path(sys.executable).parent / "jupyter-book"), "build", str(stage), "--path-output", str(stage),
           "-W", "-n", "--keep-going", "--all"]
    if not Path(cmd[0]).exists():
        cmd[0:1] = [sys.executable, "-m", "jupyter_book.cli.main"]
    print("[build] render " + " ".join(cmd[1:]), flush=True)
    proc = subprocess.run(cmd, cwd=stage, text=True, capture_output=True)
    if proc.returncode != 0:
        print(proc.stdout[-8000:], proc.stderr[-8000:], sep="\n")
        raise SystemExit(f"[build] jupyter-book failed (exit {proc.returncode}); warnings are errors")
    html = build_dir / "html"
    shutil.rmtree(html, ignore_errors=True)
    shutil.copytree(stage / "_build" / "html", html)
    return time.perf_counter() - t0
