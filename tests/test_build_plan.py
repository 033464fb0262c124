"""The planned build: chapters declare their runs, one sweep step trains them, a hung trial is
told apart from a slow one by its progress, a killed sweep step resumes, and one failing notebook
stops only what depends on it.

- the plan covers every training chapter, with the chapters' own defaults;
- a trial that stops marking progress is cancelled, submitted once more, then named (Ray);
- ``kill -9`` of the sweep step, then a build of the chapter: it finishes, and no run that had
  finished before the kill is started again (the ``WMA_TRIAL_LOG`` start log);
- a build with a failing notebook renders every notebook that does not depend on it, and a page
  saying why for the failed one and for the one that reads it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "book"))
import build  # noqa: E402
import runner  # noqa: E402

from wma_core.record import run_config  # noqa: E402
from wma_core.store import ResultsStore, config_key  # noqa: E402
from wma_study import experiments, plan  # noqa: E402
from wma_study.sweep import SweepError, run_trials  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import test_sweep as _ray_helpers  # noqa: E402  (its helpers that end a test's Ray instance)


def _started(log: Path) -> list[str]:
    return [ln.split()[1] for ln in log.read_text().splitlines() if ln.startswith("start ")] if log.exists() else []


def test_every_training_chapter_declares_its_runs():
    assert set(plan.CHAPTER_RUNS) == set(build.TRAINING)


def test_dataset_chapters_default_to_the_plan():
    """The plan calls each dataset chapter with its defaults: the notebook's β default must be
    the one the plan uses (the paper's), or the build would train other runs than the chapter reads."""
    import papermill

    for name in ("02_hateful_memes", "03_mmimdb", "04_ur_funny", "05_mosei"):
        params = papermill.inspect_notebook(str(ROOT / "book" / f"{name}.ipynb"))
        ds = name.split("_", 1)[1]
        assert float(params["beta"]["default"]) == experiments.PAPER_SELECTED[ds][1], name
        assert params["alpha"]["default"] == "None" and params["seeds"]["default"] == "None"


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    home = tmp_path_factory.mktemp("wma_data")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WMA_DATA", str(home))
        data_dir = experiments.prepare_data("hateful_memes", "smoke")
    return home, data_dir


@pytest.fixture
def ray_tmpdir():
    d = tempfile.mkdtemp(prefix="wr", dir="/tmp")  # short: Ray's socket paths are length-limited
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.mark.slow
def test_hung_trial_is_retried_once_then_named(home, tmp_path, monkeypatch, ray_tmpdir):
    home, data_dir = home
    monkeypatch.setenv("WMA_DATA", str(home))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_TMPDIR", ray_tmpdir)
    log = tmp_path / "trials.log"
    monkeypatch.setenv("WMA_TRIAL_LOG", str(log))
    good, slow = experiments.run_configs("hateful_memes", data_dir, "smoke", alphas=(0.0,), seeds=(0, 1))
    gk, sk = (config_key(run_config(c)) for c in (good, slow))

    # stalls once: cancelled after 20 s of silence, submitted again, finishes
    monkeypatch.setenv("WMA_STALL", f"{sk}:1")
    recs = run_trials([good, slow], tmp_path / "r1", executor="ray", progress=False, hang_after=20)
    assert [r["key"] for r in recs] == [gk, sk]
    assert _started(log).count(sk) == 2 and _started(log).count(gk) == 1

    # stalls every time: named after its one retry, the other trial is stored
    log.unlink()
    monkeypatch.setenv("WMA_STALL", f"{sk}:9")
    with pytest.raises(SweepError) as info:
        run_trials([good, slow], tmp_path / "r2", executor="ray", progress=False, hang_after=20)
    assert "hung: no progress for 20 s, 2 times" in str(info.value)
    assert "seed=1" in str(info.value) and list(info.value.records) == [gk]
    assert _started(log).count(sk) == 2


def test_watched_command_is_killed_and_retried_when_silent(tmp_path):
    """run_watched: a command that beats once then goes silent is killed after hang_after and
    started once more; one that is only slow (it keeps beating) runs to its end."""
    beat = tmp_path / "beat"
    silent = [sys.executable, "-c", f"import pathlib, time; pathlib.Path({str(beat)!r}).touch(); time.sleep(600)"]
    t0 = time.monotonic()
    res = runner.run_watched(silent, log=tmp_path / "a.log", heartbeat=beat, hang_after=2)
    assert res["hung"] and res["attempts"] == 2 and res["returncode"] != 0 and time.monotonic() - t0 < 60
    slow = [sys.executable, "-c",
            f"import pathlib, time\nfor _ in range(6):\n    pathlib.Path({str(beat)!r}).touch(); time.sleep(1)\nprint('done')"]
    res = runner.run_watched(slow, log=tmp_path / "b.log", heartbeat=beat, hang_after=2.5)
    assert not res["hung"] and res["attempts"] == 1 and res["returncode"] == 0 and res["tail"] == ["done"]


@pytest.mark.slow
def test_killed_sweep_step_then_build_finishes_without_training_twice(home, tmp_path, ray_tmpdir):
    home, _ = home
    log = tmp_path / "trials.log"
    env = {**os.environ, "WMA_DATA": str(home), "RAY_TMPDIR": ray_tmpdir, "WMA_TRIAL_LOG": str(log),
           "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    records = Path(home) / "results" / "records"
    before_any = {p.stem for p in records.glob("*.json")} if records.exists() else set()
    cmd = [sys.executable, "-m", "wma_study.plan", "--scale", "smoke", "--chapters", "02_hateful_memes",
           "--executor", "ray", "--no-progress"]
    out = open(tmp_path / "plan.log", "w")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if {p.stem for p in records.glob("*.json")} - before_any:
                break
            time.sleep(0.05)
        assert proc.poll() is None, (tmp_path / "plan.log").read_text()
        os.killpg(proc.pid, signal.SIGKILL)  # the sweep step
    finally:
        _ray_helpers.kill_ray_processes(ray_tmpdir, sid=proc.pid)  # and every process of its Ray instance
        proc.wait(timeout=60)
        out.close()
    assert not _ray_helpers.in_session(proc.pid), "processes survived the kill"
    finished = {p.stem for p in records.glob("*.json")}  # nothing can write any more
    starts_before = len(_started(log))
    res = subprocess.run([sys.executable, "book/build.py", "--scale", "smoke", "--only", "02_hateful_memes", "--no-html",
                          "--jobs", "2", "--build-dir", str(tmp_path / "b")], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=1200)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    again = _started(log)[starts_before:]
    assert not set(again) & finished, f"finished before the kill, started again: {set(again) & finished}"
    plan_file = json.loads((tmp_path / "b" / "plan.json").read_text())
    wanted = set(plan_file["chapters"]["02_hateful_memes"])
    store = ResultsStore(Path(home) / "results")
    assert all(store.get(k) is not None for k in wanted)
    assert sorted(again) == sorted(wanted - finished)  # each missing run trained once, in the sweep step
    assert "[build] sweep step" in res.stdout


def _text(page: Path) -> str:
    """The visible text of an HTML page (scripts and tags removed)."""
    import html
    import re

    t = re.sub(r"<(script|style).*?</\1>", " ", page.read_text(), flags=re.S)
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", t)))


def _notebook(folder: Path, name: str, *cells: str) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {name}")] + [nbformat.v4.new_code_cell(c) for c in cells]
    nbformat.write(nb, folder / f"{name}.ipynb")
    (folder / f"{name}.py").write_text("# source\n")


@pytest.mark.slow
def test_a_failing_notebook_stops_only_what_depends_on_it(tmp_path, monkeypatch, capsys):
    root = tmp_path / "root"
    book = root / "book"
    book.mkdir(parents=True)
    (root / "_config.yml").write_text('title: t\nauthor: a\nexecute:\n  execute_notebooks: "off"\n'
                                      "sphinx:\n  config:\n    suppress_warnings: ['mystnb.unknown_mime_type']\n")
    (root / "_toc.yml").write_text("format: jb-book\nroot: book/index\nchapters:\n  - file: book/good\n"
                                   "  - file: book/bad\n  - file: book/reader\n  - file: book/other\n  - file: book/build_info\n")
    (book / "index.md").write_text("# Index\n")
    _notebook(book, "good", "print('good output 41 + 1 =', 41 + 1)")
    _notebook(book, "bad", "x = 1", "1 / 0")
    _notebook(book, "reader", "print('reads bad')")
    _notebook(book, "other", "print('other output')")
    monkeypatch.setattr(build, "ROOT", root)
    monkeypatch.setattr(build, "BOOK", book)
    monkeypatch.setattr(build, "NOTEBOOKS", ["good", "bad", "reader", "other"])
    monkeypatch.setattr(build, "TRAINING", [])
    monkeypatch.setattr(build, "DEPENDS", {"reader": {"bad"}})
    monkeypatch.setattr(build, "PRIORITY", ["bad", "good", "reader", "other"])
    monkeypatch.setenv("WMA_DATA", str(tmp_path / "data"))
    code = build.main(["--executor", "local", "--jobs", "2", "--timeout", "120", "--build-dir", str(tmp_path / "b")])
    err = capsys.readouterr().err
    assert code == 1
    assert "FAILED: bad, reader" in err and "ZeroDivisionError" in err and "`make book` again resumes" in err, err
    html = tmp_path / "b" / "html"
    assert "good output 41 + 1 = 42" in _text(html / "book" / "good.html")
    assert "other output" in _text(html / "book" / "other.html")
    bad, reader = _text(html / "book" / "bad.html"), _text(html / "book" / "reader.html")
    assert "bad: not built" in bad and "ZeroDivisionError: division by zero" in bad and "Run make book again" in bad
    assert "reader: not built" in reader and "it reads what bad makes, which failed" in reader
    assert "did not build this time" not in _text(html / "book" / "good.html")
    timings = json.loads((tmp_path / "b" / "timings.json").read_text())
    assert timings["notebook_runs"]["good"]["ok"] and timings["notebook_runs"]["other"]["ok"]
    assert not timings["notebook_runs"]["reader"]["ok"]
