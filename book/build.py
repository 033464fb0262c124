"""Build the book: execute every notebook with papermill, then render the HTML with Jupyter Book.

    python book/build.py [--jobs N] [--scale default|smoke|paper] [--only NAMES...] [--no-html]
                         [--build-dir _build] [--executor ray|local] [--timeout SECONDS]
                         [--idle-timeout SECONDS] [--html-only]

Plan, then train, then read:

1. **Pretraining.** The miniature every training chapter fine-tunes from is built (or found)
   first, with every core (``python -m wma_core.pretrain``).
2. **The sweep step.** Every chapter declares the runs it reads (:mod:`wma_study.plan`, the
   functions the chapters call themselves); their union is trained in one sweep on one local Ray
   instance (``--jobs`` CPUs), with one progress bar (runs done / total, time left from the
   measured runs). A run shared by two chapters is one key, trained once; finished runs are in
   the results store, so a killed or failed build resumes where it stopped.
3. **The notebooks** are the chapters of ``_toc.yml`` that have a ``book/<name>.py`` source
   (:func:`toc_notebooks`). They now only read records. They run with papermill in ``--jobs``
   worker processes, with ``cwd=book/``; executed copies go to ``<build-dir>/executed/<name>.ipynb``
   (never into ``book/*.ipynb``). A notebook waits for the notebooks whose output it reads
   (:data:`DEPENDS`); among the ready ones the longest starts first. ``-p scale`` is passed when
   not ``default``, and ``-p live False`` to the notebooks that declare ``live``.
4. **Nothing hangs, and no limit depends on the machine's speed.** Pretraining and every trial
   mark their progress (each step) in a heartbeat file; one that marks none for ten minutes is
   hung, killed and started once more, then named (:func:`runner.run_watched`,
   :mod:`wma_study.sweep`). Each notebook cell has a time limit (``--timeout``, default
   :data:`CELL_TIMEOUT` s), wide for notebooks that only read records, and a watchdog
   (:class:`runner.Watchdog`) reruns a notebook once whose kernel went silent while papermill
   waits for it.
5. **One failure stops only what depends on it.** A failed step fails the chapters that need it;
   a failed notebook, the notebooks that read what it makes. Every other notebook still runs,
   the pages that succeeded are rendered, each failed chapter gets a page saying why
   (:func:`render.failure_page`), and the build exits 1, ending with the command that resumes.
6. **Rendering.** A source tree is staged in ``<build-dir>/stage/`` (``_config.yml``,
   ``_toc.yml``, the Markdown pages, the bibliography, the executed notebooks and a generated
   build-information page, :func:`render.write_build_info`) and ``jupyter-book build -W -n
   --keep-going`` renders it into ``<build-dir>/html``. Jupyter Book executes nothing.
7. Timings per notebook, of the steps and in total are printed (and written to
   ``<build-dir>/timings.json``: ``notebooks`` {name: seconds}, ``notebook_runs`` {name: seconds,
   ok, attempts, build}, ``sweep_kinds`` {kind of run: runs, seconds}).

``--only`` executes some notebooks and renders with the earlier executed copies of the others;
``--html-only`` only renders; ``--no-html`` only executes.

Everything generated goes to the build folder and to the data folder (``_data/`` or
``$WMA_DATA``), both ignored by git: the working tree stays clean.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import signal
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # runner and render sit beside this file
from render import stage_and_render  # noqa: E402
from runner import IDLE_TIMEOUT, RayHead, StepFailed, _timed, pretrain_step, run_notebooks, sweep_step  # noqa: E402

BOOK = Path(__file__).resolve().parent
ROOT = BOOK.parent
TOC = ROOT / "_toc.yml"
CELL_TIMEOUT = 1800  # s per cell: the notebooks only read records (the sweep step trained them); a few seconds to a minute each
RESUME = "make book"  # what a user runs to resume a failed or interrupted build


def toc_notebooks(toc: Path = TOC) -> list[str]:
    """The notebook chapters of ``_toc.yml``, in order: entries ``book/<name>`` with a ``book/<name>.py`` source."""
    import yaml

    def files(node):
        if isinstance(node, dict):
            if isinstance(node.get("file"), str):
                yield node["file"]
            for v in node.values():
                yield from files(v)
        elif isinstance(node, list):
            for v in node:
                yield from files(v)

    names = []
    for f in files(yaml.safe_load(toc.read_text())):
        stem = Path(f).with_suffix("").name
        if Path(f).parent.name == BOOK.name and (BOOK / f"{stem}.py").exists():
            names.append(stem)
    return names


NOTEBOOKS = toc_notebooks()
TRAINING = ["00_pretraining", "02_hateful_memes", "03_mmimdb", "04_ur_funny", "05_mosei", "06_ablation", "07_beta_curve", "08_ot_explorer"]
# a notebook starts only after the notebooks whose records it reuses (no slot waits on a lock)
DEPENDS = {
    "06_ablation": {"02_hateful_memes", "03_mmimdb", "04_ur_funny", "05_mosei"},
    "08_ot_explorer": {"07_beta_curve"},
    # its fine-tuning comparison reuses the dataset chapters' pretrained baselines
    "00_pretraining": {"02_hateful_memes", "03_mmimdb", "04_ur_funny", "05_mosei"},
    "09_performance": set(TRAINING),
    # the summary reads the records of every comparison and of the grid
    "10_summary": {"02_hateful_memes", "03_mmimdb", "04_ur_funny", "05_mosei", "06_ablation", "07_beta_curve"},
}
# every training chapter fine-tunes from the pretrained miniature: the build makes it first, with
# every core (:func:`pretrain_step`), so no chapter waits for another to pretrain it
# among the notebooks that are ready, the one expected to run longest starts first (others: after these)
PRIORITY = ["00_pretraining", "07_beta_curve", "02_hateful_memes", "03_mmimdb", "05_mosei", "04_ur_funny", "06_ablation",
            "08_ot_explorer", "01_method", "09_performance", "10_summary"]

def _merge_timings(build_dir: Path, results: list) -> dict:
    """Per-notebook details (seconds, ok, attempts, build): this build's, and an earlier build's for
    the notebooks not run now (``timings.json``: ``notebooks`` {name: seconds}, ``notebook_runs`` the details)."""
    old = {}
    path = build_dir / "timings.json"
    if path.exists():
        try:
            data = json.loads(path.read_text())
            old = {n: {"seconds": float(t)} for n, t in (data.get("notebooks") or {}).items()}
            for n, t in (data.get("notebook_runs") or {}).items():
                old[n] = {**old.get(n, {}), **t}
        except (ValueError, AttributeError, TypeError):
            old = {}
    merged = {}
    for n, t in old.items():
        if "seconds" in t:
            merged[n] = {**t, "build": t.get("build") if t.get("build") not in (None, "this build") else "an earlier build"}
    for r in results:
        merged[r["name"]] = {"seconds": r["seconds"], "ok": r["ok"], "attempts": r.get("attempts", 1), "build": "this build"}
    return merged


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 2), help="notebooks run at once, and Ray's CPU slots for training trials (default: the core count)")
    ap.add_argument("--scale", default="default", choices=["smoke", "default", "paper"])
    ap.add_argument("--only", nargs="+", metavar="NAME", help="execute only these notebooks (others: reuse earlier executed copies)")
    ap.add_argument("--no-html", action="store_true", help="execute only, do not render")
    ap.add_argument("--html-only", action="store_true", help="render only, from the executed copies of an earlier build")
    ap.add_argument("--build-dir", default=str(ROOT / "_build"), help="where executed notebooks, figures and HTML go")
    ap.add_argument("--executor", default="ray", choices=["ray", "local"], help="'local': no Ray, one trial at a time")
    ap.add_argument("--timeout", type=int, default=CELL_TIMEOUT,
                    help="per-cell time limit in seconds of the notebooks, which only read records (default %(default)s; 0: none)")
    ap.add_argument("--idle-timeout", type=float, default=IDLE_TIMEOUT,
                    help="seconds a kernel may sit idle while papermill waits before the notebook is rerun (default %(default)s)")
    return ap


def _train(args, names: list, build_dir: Path) -> dict:
    """Pretraining, then every planned run in one sweep step, on one Ray instance. Returns
    ``{"pretraining_s", "sweep_s", "sweep", "failed": {chapter: why}}``; a failed step fails
    only the chapters that need it."""
    training = [n for n in names if n in TRAINING]
    out = {"pretraining_s": None, "sweep_s": None, "sweep": None, "failed": {}}
    if not training:
        return out
    head, starting = None, None
    try:
        if args.executor == "ray":  # Ray starts (about 4 s) while the pretraining step runs or finds its checkpoint
            starting = cf.ThreadPoolExecutor(1)
            ray_future = starting.submit(_timed, RayHead, args.jobs)
        try:
            out["pretraining_s"] = pretrain_step(args.scale, build_dir / "logs")
        except StepFailed as err:
            out["failed"] = {n: str(err) for n in training}
            return out
        if starting is not None:
            head, ray_s = ray_future.result()
            os.environ.update(head.env)
            os.environ["RAY_ADDRESS"] = head.address
            print(f"[build] Ray at {head.address} ({args.jobs} CPUs, {ray_s:.0f} s to start, beside the pretraining step)", flush=True)
        t0 = time.perf_counter()
        try:
            plan = sweep_step(args.scale, training, build_dir / "plan.json", head.address if head else None, args.executor)
        except StepFailed as err:
            out["failed"] = {n: str(err) for n in training}
            return out
        out["sweep_s"], out["sweep"] = time.perf_counter() - t0, plan
        for f in plan.get("failures", []):
            for n, keys in plan["chapters"].items():
                if f["key"] in keys:
                    out["failed"].setdefault(n, f"its run {f['run']} ({f['key']}) failed in the sweep step: {f['error']}")
        return out
    finally:
        if starting is not None:
            starting.shutdown(wait=True)
            if head is None and ray_future.exception() is None:
                head = ray_future.result()[0]  # started while the pretraining step failed
        if head is not None:
            head.stop()


def _print_timings(results: list, timings: dict, build_dir: Path, rendered: bool) -> None:
    print("\n[build] timings")
    for r in sorted(results, key=lambda r: NOTEBOOKS.index(r["name"]) if r["name"] in NOTEBOOKS else len(NOTEBOOKS)):
        print(f"  {r['name']:<18} {r['seconds']:7.1f} s  {'ok' if r['ok'] else 'FAILED'}")
    for label, key in (("pretraining", "pretraining_s"), ("sweep step", "sweep_s")):
        if timings.get(key) is not None:
            print(f"  {label:<18} {timings[key]:7.1f} s")
    print(f"  {'notebooks (wall)':<18} {timings['notebooks_wall_s']:7.1f} s")
    if rendered:
        print(f"  {'html':<18} {timings['html_s']:7.1f} s   -> {build_dir / 'html' / 'index.html'}")
    print(f"  {'total':<18} {timings['total_s']:7.1f} s")


def main(argv=None) -> int:
    ap = _parser()
    args = ap.parse_args(argv)
    names = NOTEBOOKS if not args.only else [n.removesuffix(".ipynb").removesuffix(".py") for n in args.only]
    if args.html_only:
        names = []
    unknown = [n for n in names if n not in NOTEBOOKS]
    if unknown:
        ap.error(f"unknown notebooks {unknown}; choose from {NOTEBOOKS}")
    build_dir = Path(args.build_dir).resolve()
    executed = build_dir / "executed"
    params = {"scale": args.scale} if args.scale != "default" else {}
    if args.executor != "ray":
        params["executor"] = args.executor
    params["live"] = False  # notebooks with live widgets show their static view (see 08_ot_explorer)
    os.environ["WMA_BUILD_DIR"] = str(build_dir)
    # SIGTERM (a scheduler, `kill`) unwinds like Ctrl-C, so Ray and the notebooks are stopped in order
    signal.signal(signal.SIGTERM, _interrupt)
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")  # no debugger warning from each kernel

    t0 = time.perf_counter()
    try:
        trained = _train(args, names, build_dir)
        # the notebooks only read records now (a chapter whose runs are missing still trains them itself)
        results = run_notebooks(names, params, executed, args.jobs, args.timeout or None, args.idle_timeout, BOOK,
                                depends=DEPENDS, priority=PRIORITY, failed=trained["failed"])
    except KeyboardInterrupt:
        print(f"[build] interrupted: finished training runs are in the results store; `{RESUME}` resumes", flush=True)
        return 130
    t_exec = time.perf_counter() - t0
    failures = {r["name"]: r["error"] for r in results if not r["ok"]}
    build_dir.mkdir(parents=True, exist_ok=True)
    runs = _merge_timings(build_dir, results)
    timings = {"scale": args.scale, "jobs": args.jobs, "executor": args.executor, "timeout": args.timeout,
               "notebooks": {n: t["seconds"] for n, t in runs.items()}, "notebook_runs": runs,
               "notebooks_wall_s": t_exec, "pretraining_s": trained["pretraining_s"], "sweep_s": trained["sweep_s"],
               "sweep_kinds": (trained["sweep"] or {}).get("kinds"), "ok": not failures,
               "finished": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")}
    timings["html_s"] = 0.0 if args.no_html else stage_and_render(build_dir, executed, timings, NOTEBOOKS, failures,
                                                                  root=ROOT, book=BOOK)
    timings["total_s"] = time.perf_counter() - t0
    _print_timings(results, timings, build_dir, rendered=not args.no_html)
    (build_dir / "timings.json").write_text(json.dumps({**timings, "loadavg_end": list(os.getloadavg())}, indent=1))
    if failures:
        print("\n[build] FAILED: " + ", ".join(failures), file=sys.stderr)
        for n, err in failures.items():
            print(f"--- {n}: {err}", file=sys.stderr)
        done = "the pages that succeeded are rendered, each failed one says why; " if not args.no_html else ""
        print(f"[build] {done}`{RESUME}` again resumes, reusing every finished run", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
