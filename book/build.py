"""Build the book: execute every notebook with papermill, then render the HTML with Jupyter Book.

    python book/build.py [--jobs 2] [--scale default|smoke|paper] [--only NAMES...] [--no-html]
                         [--build-dir _build] [--executor ray|local] [--timeout SECONDS] [--html-only]

1. One local Ray instance is started for the whole build (``--jobs`` CPUs, in a helper process
   that owns it) and its address is exported as ``RAY_ADDRESS``, so the training trials of every
   notebook share the same ``--jobs`` slots. It is always shut down at the end (also on Ctrl-C or
   SIGTERM, which stop the running notebooks too; and if this process is killed outright, the
   helper exits when its stdin closes). Finished training runs stay in the results store, so the
   next build resumes.
2. The notebooks run with papermill in ``--jobs`` worker processes, with ``cwd=book/``; executed
   copies go to ``<build-dir>/executed/<name>.ipynb`` (never into ``book/*.ipynb``). A notebook
   waits for the notebooks whose runs it reuses (:data:`DEPENDS`); among the ready ones the
   longest starts first. ``-p scale`` is passed when not ``default``. A failed notebook fails the
   build: its name and the cell error are printed and the exit status is 1.
3. A source tree is staged in ``<build-dir>/stage/`` (``_config.yml``, ``_toc.yml``, the
   Markdown pages and the executed notebooks) and ``jupyter-book build -W -n --keep-going``
   renders it; the HTML ends up in ``<build-dir>/html``. Jupyter Book does not execute anything
   (``execute_notebooks: "off"``), and any warning fails the build.
4. Timings per notebook and in total are printed (and written to ``<build-dir>/timings.json``).

``--only`` executes some notebooks and renders with the earlier executed copies of the others;
``--html-only`` only renders; ``--no-html`` only executes.

Everything generated goes to the build folder and to the data folder (``_data/`` or
``$WMA_DATA``), both ignored by git: the working tree stays clean.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import multiprocessing as mp
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BOOK = Path(__file__).resolve().parent
ROOT = BOOK.parent
NOTEBOOKS = [
    "01_method", "02_hateful_memes", "03_mmimdb", "04_ur_funny", "05_mosei",
    "06_ablation", "07_beta_curve", "08_ot_explorer", "09_performance",
]
TRAINING = ["02_hateful_memes", "03_mmimdb", "04_ur_funny", "05_mosei", "06_ablation", "07_beta_curve", "08_ot_explorer"]
# a notebook starts only after the notebooks whose records it reuses (no slot waits on a lock)
DEPENDS = {
    "06_ablation": {"02_hateful_memes", "03_mmimdb", "04_ur_funny", "05_mosei"},
    "08_ot_explorer": {"07_beta_curve"},
    "09_performance": set(TRAINING),
}
# among the notebooks that are ready, the one expected to run longest starts first
PRIORITY = ["07_beta_curve", "02_hateful_memes", "03_mmimdb", "05_mosei", "04_ur_funny", "06_ablation",
            "08_ot_explorer", "01_method", "09_performance"]

_RAY_HELPER = r"""
import logging, os, signal, sys
import ray
ctx = ray.init(num_cpus=int(sys.argv[1]), include_dashboard=False, _temp_dir=sys.argv[2],
               object_store_memory=int(sys.argv[3]), logging_level=logging.ERROR, log_to_driver=False)
print(ctx.address_info["gcs_address"], flush=True)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
try:
    sys.stdin.read()  # until the build closes the pipe (or dies)
finally:
    ray.shutdown()
"""


class RayHead:
    """A local Ray instance owned by a helper process; ``stop()`` shuts it down."""

    def __init__(self, cpus: int):
        self.tmp = tempfile.mkdtemp(prefix="wmaray")  # short: Ray's socket paths are length-limited
        self.env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32), "RAY_USAGE_STATS_ENABLED": "0"}
        env = {**os.environ, **self.env}
        env.pop("RAY_ADDRESS", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _RAY_HELPER, str(cpus), self.tmp, str(256 * 2**20)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=self.tmp,
            start_new_session=True,  # Ctrl-C goes to the build, which then stops the helper in order
        )
        line = self.proc.stdout.readline().strip()
        if not line:
            err = self.proc.stderr.read()
            self.stop()
            raise RuntimeError(f"could not start Ray:\n{err[-3000:]}")
        self.address = line

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=60)
            except (subprocess.TimeoutExpired, OSError):
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
        shutil.rmtree(self.tmp, ignore_errors=True)


def declared_parameters(path: Path) -> set:
    import papermill

    return set(papermill.inspect_notebook(str(path)))


def execute(name: str, params: dict, out_dir: str, timeout: int | None) -> dict:
    """Run one notebook with papermill (in a worker process); return its status and timing."""
    import papermill as pm
    import zmq
    from traitlets.config import Config

    # CurveZMQ-encrypted kernel channels where pyzmq supports them (the kernelspec declares it)
    config = Config({"KernelManager": {"transport_encryption": "auto"}}) if zmq.has("curve") else Config()
    t0 = time.perf_counter()
    out = Path(out_dir) / f"{name}.ipynb"
    try:
        pm.execute_notebook(
            str(BOOK / f"{name}.ipynb"), str(out), parameters=params, cwd=str(BOOK), kernel_name="python3",
            progress_bar=False, log_output=False, execution_timeout=timeout, config=config,
        )
    except Exception as err:  # noqa: BLE001 - reported by name, the build fails
        where = f"\n(the executed copy with the error: {out})" if out.exists() else ""
        return {"name": name, "ok": False, "seconds": time.perf_counter() - t0, "error": _describe(err) + where}
    return {"name": name, "ok": True, "seconds": time.perf_counter() - t0}


def _describe(err: BaseException) -> str:
    ename, evalue = getattr(err, "ename", None), getattr(err, "evalue", None)
    if ename:
        cell = getattr(err, "exec_count", None)
        tb = getattr(err, "traceback", None) or []
        tail = "\n".join(_strip_ansi(t) for t in tb[-3:])
        return f"cell [{cell}]: {ename}: {evalue}\n{tail}"
    return f"{type(err).__name__}: {err}"


def _strip_ansi(text: str) -> str:
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def run_notebooks(names: list, params: dict, out_dir: Path, jobs: int, timeout: int | None) -> list:
    """Execute ``names`` in ``jobs`` processes, respecting :data:`DEPENDS`; stop starting new ones after a failure."""
    out_dir.mkdir(parents=True, exist_ok=True)
    declared = {n: declared_parameters(BOOK / f"{n}.ipynb") for n in names}
    pending = sorted(names, key=PRIORITY.index)
    done, failed, results, running = set(), False, [], {}
    ctx = mp.get_context("spawn")
    pool = cf.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx)
    try:
        while pending or running:
            if not failed:
                for n in list(pending):
                    if len(running) >= jobs:
                        break
                    if (DEPENDS.get(n, set()) & set(names)) <= done:
                        p = {k: v for k, v in params.items() if k in declared[n]}
                        running[pool.submit(execute, n, p, str(out_dir), timeout)] = n
                        pending.remove(n)
                        print(f"[build] start  {n}" + (f"  {p}" if p else ""), flush=True)
            elif not running:
                break
            if not running:  # nothing can start: unmet dependencies (a failed notebook)
                break
            finished, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
            for fut in finished:
                n = running.pop(fut)
                res = fut.result()
                results.append(res)
                if res["ok"]:
                    done.add(n)
                    print(f"[build] done   {n}  {res['seconds']:.0f} s", flush=True)
                else:
                    failed = True
                    print(f"[build] FAILED {n}  {res['seconds']:.0f} s\n{res['error']}", flush=True)
    except BaseException:  # Ctrl-C / SIGTERM: stop the notebooks now (their kernels exit with them)
        for proc in list(getattr(pool, "_processes", {}).values()):
            proc.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    for n in pending:
        results.append({"name": n, "ok": False, "seconds": 0.0, "error": "not run (an earlier notebook failed)"})
    return results


def stage_and_render(build_dir: Path, executed: Path) -> float:
    """Stage the sources with the executed notebooks and build the HTML into ``<build_dir>/html``."""
    t0 = time.perf_counter()
    stage = build_dir / "stage"
    shutil.rmtree(stage, ignore_errors=True)
    (stage / "book").mkdir(parents=True)
    for f in ("_config.yml", "_toc.yml"):
        shutil.copy2(ROOT / f, stage / f)
    for md in BOOK.glob("*.md"):
        shutil.copy2(md, stage / "book" / md.name)
    if (BOOK / "_static").is_dir():  # Jupyter Book loads every CSS file in <root>/_static
        shutil.copytree(BOOK / "_static", stage / "_static")
    missing = [n for n in NOTEBOOKS if not (executed / f"{n}.ipynb").exists()]
    if missing:
        raise SystemExit(f"[build] no executed copy of {missing} in {executed}: run them first (without --only)")
    for n in NOTEBOOKS:
        shutil.copy2(executed / f"{n}.ipynb", stage / "book" / f"{n}.ipynb")
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


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=2, help="notebooks run at once, and Ray's CPU slots for training trials")
    ap.add_argument("--scale", default="default", choices=["smoke", "default", "paper"])
    ap.add_argument("--only", nargs="+", metavar="NAME", help="execute only these notebooks (others: reuse earlier executed copies)")
    ap.add_argument("--no-html", action="store_true", help="execute only, do not render")
    ap.add_argument("--html-only", action="store_true", help="render only, from the executed copies of an earlier build")
    ap.add_argument("--build-dir", default=str(ROOT / "_build"), help="where executed notebooks, figures and HTML go")
    ap.add_argument("--executor", default="ray", choices=["ray", "local"], help="'local': no Ray, trials run inside each notebook")
    ap.add_argument("--timeout", type=int, default=None, help="per-cell execution timeout in seconds")
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
    os.environ["WMA_BUILD_DIR"] = str(build_dir)
    # SIGTERM (a scheduler, `kill`) unwinds like Ctrl-C, so Ray and the notebooks are stopped in order
    signal.signal(signal.SIGTERM, _interrupt)
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")  # no debugger warning from each kernel

    t0 = time.perf_counter()
    head = None
    try:
        if args.executor == "ray" and any(n in TRAINING for n in names):
            head = RayHead(args.jobs)
            os.environ.update(head.env)
            os.environ["RAY_ADDRESS"] = head.address
            print(f"[build] Ray at {head.address} ({args.jobs} CPUs, {time.perf_counter() - t0:.0f} s to start)", flush=True)
        results = run_notebooks(names, params, executed, args.jobs, args.timeout)
    except KeyboardInterrupt:
        print("[build] interrupted: finished training runs are in the results store, a rebuild resumes", flush=True)
        return 130
    finally:
        if head is not None:
            head.stop()
    t_exec = time.perf_counter() - t0
    ok = all(r["ok"] for r in results)
    t_html = 0.0
    if ok and not args.no_html:
        t_html = stage_and_render(build_dir, executed)
    total = time.perf_counter() - t0

    print("\n[build] timings")
    for r in sorted(results, key=lambda r: NOTEBOOKS.index(r["name"])):
        print(f"  {r['name']:<18} {r['seconds']:7.1f} s  {'ok' if r['ok'] else 'FAILED'}")
    print(f"  {'notebooks (wall)':<18} {t_exec:7.1f} s")
    if not args.no_html and ok:
        print(f"  {'html':<18} {t_html:7.1f} s   -> {build_dir / 'html' / 'index.html'}")
    print(f"  {'total':<18} {total:7.1f} s")
    build_dir.mkdir(parents=True, exist_ok=True)
    (build_dir / "timings.json").write_text(json.dumps(
        {"scale": args.scale, "jobs": args.jobs, "notebooks": {r["name"]: r["seconds"] for r in results},
         "notebooks_wall_s": t_exec, "html_s": t_html, "total_s": total, "ok": ok,
         "loadavg_end": list(os.getloadavg())}, indent=1))
    if not ok:
        bad = [r for r in results if not r["ok"]]
        print("\n[build] FAILED: " + ", ".join(r["name"] for r in bad), file=sys.stderr)
        for r in bad:
            print(f"--- {r['name']}: {r['error']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
