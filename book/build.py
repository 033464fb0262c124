"""Build the book: execute every notebook with papermill, then render the HTML with Jupyter Book.

    python book/build.py [--jobs N] [--scale default|smoke|paper] [--only NAMES...] [--no-html]
                         [--build-dir _build] [--executor ray|local] [--timeout SECONDS]
                         [--idle-timeout SECONDS] [--html-only]

1. One local Ray instance is started for the whole build (``--jobs`` CPUs, in a helper process
   that owns it) and its address is exported as ``RAY_ADDRESS``, so the training trials of every
   notebook share the same ``--jobs`` slots. It is always shut down at the end (also on Ctrl-C or
   SIGTERM, which stop the running notebooks too; and if this process is killed outright, the
   helper exits when its stdin closes). Finished training runs stay in the results store, so the
   next build resumes.
2. The notebooks are the chapters of ``_toc.yml`` that have a ``book/<name>.py`` source
   (:func:`toc_notebooks`). They run with papermill in ``--jobs`` worker processes, with
   ``cwd=book/``; executed copies go to ``<build-dir>/executed/<name>.ipynb`` (never into
   ``book/*.ipynb``). A notebook waits for the notebooks whose runs it reuses (:data:`DEPENDS`);
   among the ready ones the longest starts first. ``-p scale`` is passed when not ``default``, and
   ``-p live False`` to the notebooks that declare ``live`` (their interactive widgets are for
   JupyterLab; the book shows their static view).
3. No notebook can hang the build:
   - every cell has a time limit (``--timeout``, default :data:`CELL_TIMEOUT` s: longer than any
     training cell at the default scale; ``0`` = none). A cell that runs past it fails the build.
   - a watchdog (:class:`Watchdog`) listens to each kernel's status messages. When the kernel has
     been idle for ``--idle-timeout`` seconds while papermill still waits for it (the silent hang of
     an execution client that lost a reply), it ends that kernel and runs the notebook once more
     (finished training runs are cached, so a retry is cheap). A second hang fails the build.
   A failed notebook fails the build: its name, the cell (index in the notebook, counting from 0,
   and its first line) and the error are printed, and the exit status is 1.
4. A source tree is staged in ``<build-dir>/stage/`` (``_config.yml``, ``_toc.yml``, the
   Markdown pages, the bibliography, the executed notebooks and a generated build-information
   page, :func:`write_build_info`) and ``jupyter-book build -W -n --keep-going`` renders it; the
   HTML ends up in ``<build-dir>/html``. Jupyter Book does not execute anything
   (``execute_notebooks: "off"``), and any warning fails the build.
5. Timings per notebook and in total are printed (and written to ``<build-dir>/timings.json``:
   ``notebooks`` {name: seconds}, ``notebook_runs`` {name: seconds, ok, attempts, build}).

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
import platform
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

BOOK = Path(__file__).resolve().parent
ROOT = BOOK.parent
TOC = ROOT / "_toc.yml"
BUILD_INFO = "build_info"  # the generated page (book/build_info.md in the stage folder; listed in _toc.yml)
CELL_TIMEOUT = 1800  # s per cell by default: the longest training cell at the default scale takes a few minutes
IDLE_TIMEOUT = 120  # s of an idle kernel while papermill still waits: the watchdog's signal of a silent hang


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


def _timed(fn, *args):
    """``(fn(*args), seconds it took)``."""
    t = time.perf_counter()
    return fn(*args), time.perf_counter() - t


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


def pretrain_step(scale: str, timeout: int | None) -> float | None:
    """Build (or reuse) the pretrained miniature the profile fine-tunes from, once, before any
    notebook starts: ``python -m wma_core.pretrain`` with every core. Returns its seconds, or
    ``None`` when the profile fine-tunes from something else (the paper scale's hub model)."""
    from wma_core.experiments import PRETRAINED, get_profile

    if get_profile(scale).model != PRETRAINED:
        return None
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "wma_core.pretrain", "--scale", "smoke" if scale == "smoke" else "default", "--quiet"]
    print(f"[build] pretrain the miniature ({' '.join(cmd[1:])})", flush=True)
    proc = subprocess.run(cmd, cwd=ROOT, text=True, capture_output=True, timeout=timeout)
    if proc.returncode != 0:
        raise SystemExit(f"[build] pretraining failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    lines = proc.stdout.strip().splitlines()
    seconds = time.perf_counter() - t0
    print(f"[build] pretrained {seconds:.0f} s: {lines[-2] if len(lines) > 1 else ''}\n        -> {lines[-1]}", flush=True)
    return seconds


def declared_parameters(path: Path) -> set:
    import papermill

    return set(papermill.inspect_notebook(str(path)))


# ---------------------------------------------------------------------------------------------
# one notebook, with a watchdog


def _cell_label(index, source: str) -> str:
    first = next((ln.strip() for ln in (source or "").splitlines() if ln.strip()), "")
    first = first if len(first) <= 70 else first[:67] + "..."
    return f"cell {index} (`{first}`)"


class Watchdog(threading.Thread):
    """Ends a kernel that sits idle while the execution client still waits for it.

    Subscribes to the kernel's IOPub channel (a second client, which sends nothing but a
    ``kernel_info`` probe on the control channel to confirm its subscription before the first
    cell) and tracks the kernel's ``status`` messages. A kernel is ``busy`` for the whole of a
    request (a cell also while it sleeps or waits for Ray), so a kernel that has been ``idle`` for
    ``idle_timeout`` seconds while papermill has not returned means that the client missed the
    end of a request. The watchdog then kills the kernel; the client notices the dead kernel
    within a second and raises, and :func:`execute` runs the notebook once more. ``hang`` then
    describes what was seen.
    """

    def __init__(self, idle_timeout: float, poll: float = 0.5):
        super().__init__(daemon=True)
        self.idle_timeout, self.poll = idle_timeout, poll
        self.km = None
        self.cell = None  # (index, source) of the cell papermill started last
        self.hang: str | None = None
        self.ready = threading.Event()  # set once the IOPub subscription is confirmed
        self._stop_event = threading.Event()

    def kernel_started(self, km) -> None:
        self.km = km

    def cell_started(self, cell, cell_index, **_) -> None:
        self.cell = (cell_index, cell.get("source", ""))

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=10)

    def run(self) -> None:
        from queue import Empty

        from jupyter_client import BlockingKernelClient

        while self.km is None or not self.km.has_kernel:
            if self._stop_event.wait(self.poll):
                return
        kc = BlockingKernelClient()
        kc.load_connection_file(self.km.connection_file)
        kc.start_channels(shell=False, iopub=True, stdin=False, hb=False, control=True)
        own = kc.session.session  # our probes' status messages are not the notebook's
        state, since = "idle", time.monotonic()
        try:
            while not self._stop_event.is_set():
                if not self.ready.is_set():  # probe until a status reply shows the subscription works
                    kc.control_channel.send(kc.session.msg("kernel_info_request"))
                try:
                    msg = kc.get_iopub_msg(timeout=self.poll)
                except Empty:
                    msg = None
                if msg is not None and msg["msg_type"] == "status":
                    if msg["parent_header"].get("session") == own:
                        if not self.ready.is_set():
                            self.ready.set()
                            state, since = "idle", time.monotonic()
                    else:
                        new = msg["content"].get("execution_state")
                        if new in ("busy", "idle") and new != state:
                            state, since = new, time.monotonic()
                if self.ready.is_set() and state == "idle" and time.monotonic() - since > self.idle_timeout:
                    where = _cell_label(*self.cell) if self.cell else "before the first cell"
                    self.hang = (f"the kernel was idle for {self.idle_timeout:.0f} s while papermill still waited "
                                 f"(last cell started: {where}); the kernel was ended")
                    self._kill()
                    return
        finally:
            self.ready.set()
            kc.stop_channels()

    def _kill(self) -> None:
        prov = getattr(self.km, "provisioner", None)
        pid = getattr(getattr(prov, "process", None), "pid", None) or getattr(prov, "pid", None)
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _kernel_manager_class(watchdog: Watchdog, log_path: Path | None = None):
    """nbclient's default kernel manager; its kernel starts under ``watchdog``'s eye.

    With ``log_path``, the kernel process's own output (its start-up warnings, a crash) is
    appended to that file instead of the build's terminal; cell outputs go to the notebook as usual.
    """
    import asyncio

    from jupyter_client.manager import AsyncKernelManager

    class WatchedKernelManager(AsyncKernelManager):
        async def start_kernel(self, **kw):
            if log_path is not None:
                log_path.parent.mkdir(parents=True, exist_ok=True)
                log = open(log_path, "a", encoding="utf-8")  # noqa: SIM115 - the kernel process keeps it
                kw.setdefault("stdout", log)
                kw.setdefault("stderr", log)
                self.wma_log = log
            await super().start_kernel(**kw)
            watchdog.kernel_started(self)
            deadline = time.monotonic() + 60  # the watchdog confirms its subscription (or gives up) first
            while not watchdog.ready.is_set() and watchdog.is_alive() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)

    return WatchedKernelManager


def _execute_once(src: Path, out: Path, params: dict, cwd: Path, timeout: int | None, idle_timeout: float) -> dict:
    import papermill as pm

    dog = Watchdog(idle_timeout)
    dog.start()
    log = out.parent.parent / "logs" / f"{out.stem}.kernel.log"  # <build-dir>/logs/<name>.kernel.log
    t0 = time.perf_counter()
    res = {"ok": True, "hung": False}
    try:
        pm.execute_notebook(
            str(src), str(out), parameters=params, cwd=str(cwd), kernel_name="python3",
            progress_bar=False, log_output=False, execution_timeout=timeout or None,
            kernel_manager_class=_kernel_manager_class(dog, log), on_cell_start=dog.cell_started,
        )
    except Exception as err:  # noqa: BLE001 - reported by name, the build fails
        dog.stop()
        where = (f"\n(the executed copy: {out})" if out.exists() else "") + (f"\n(the kernel's log: {log})" if log.exists() else "")
        res = {"ok": False, "hung": bool(dog.hang), "error": (dog.hang or _describe(err, dog.cell)) + where}
    finally:
        dog.stop()
        if getattr(dog.km, "wma_log", None) is not None:
            dog.km.wma_log.close()
    return {**res, "seconds": time.perf_counter() - t0}


def execute(name: str, params: dict, out_dir: str, timeout: int | None, idle_timeout: float = IDLE_TIMEOUT,
            src_dir: str | None = None, retries: int = 1) -> dict:
    """Run one notebook with papermill (in a worker process); return its status and timing.

    ``src_dir`` holds ``<name>.ipynb`` and is the kernel's working directory (default: ``book/``).
    A silent hang (see :class:`Watchdog`) is retried ``retries`` times; any other failure is final.
    """
    src_dir = Path(src_dir) if src_dir else BOOK
    out = Path(out_dir) / f"{name}.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    t0, attempts = time.perf_counter(), 0
    while True:
        attempts += 1
        res = _execute_once(src_dir / f"{name}.ipynb", out, params, src_dir, timeout, idle_timeout)
        if res["ok"] or not res["hung"] or attempts > retries:
            break
        print(f"[build] retry  {name}: {res['error'].splitlines()[0]}", flush=True)
    res.update(name=name, attempts=attempts, seconds=time.perf_counter() - t0)
    if not res["ok"] and res["hung"]:
        res["error"] = f"hung {attempts} times; " + res["error"]
    return res


def _describe(err: BaseException, cell=None) -> str:
    """The failing cell (index and first line) and the error, without terminal colours."""
    ename, evalue = getattr(err, "ename", None), getattr(err, "evalue", None)
    if ename:  # papermill's PapermillExecutionError: the cell raised
        index = getattr(err, "cell_index", None)
        label = _cell_label(index, getattr(err, "source", "")) if index is not None else "a cell"
        tb = getattr(err, "traceback", None) or []
        tail = "\n".join(_strip_ansi(t) for t in tb[-3:])
        return f"{label} [In {getattr(err, 'exec_count', None)}]: {ename}: {evalue}\n{tail}"
    where = (_cell_label(*cell) + ": ") if cell else ""
    text = _strip_ansi(str(err)).strip()
    return f"{where}{type(err).__name__}: {text[:2000]}"


def _strip_ansi(text: str) -> str:
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def _priority(name: str) -> int:
    return PRIORITY.index(name) if name in PRIORITY else len(PRIORITY)


def run_notebooks(names: list, params: dict, out_dir: Path, jobs: int, timeout: int | None,
                  idle_timeout: float = IDLE_TIMEOUT, src_dir: Path | None = None) -> list:
    """Execute ``names`` in ``jobs`` processes, respecting :data:`DEPENDS`; stop starting new ones after a failure."""
    src_dir = Path(src_dir) if src_dir else BOOK
    out_dir.mkdir(parents=True, exist_ok=True)
    declared = {n: declared_parameters(src_dir / f"{n}.ipynb") for n in names}
    pending = sorted(names, key=_priority)
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
                        fut = pool.submit(execute, n, p, str(out_dir), timeout, idle_timeout, str(src_dir))
                        running[fut] = n
                        pending.remove(n)
                        shown = {k: v for k, v in p.items() if k != "live"}
                        print(f"[build] start  {n}" + (f"  {shown}" if shown else ""), flush=True)
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
                    again = f"  (after {res['attempts'] - 1} retry)" if res.get("attempts", 1) > 1 else ""
                    print(f"[build] done   {n}  {res['seconds']:.0f} s{again}", flush=True)
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


def write_build_info(path: Path, timings: dict) -> None:
    """Write the book's build-information page (MyST Markdown) from ``timings`` (see ``timings.json``)."""
    from importlib import metadata

    scale = timings.get("scale", "default")
    try:
        sys.path.insert(0, str(ROOT))
        from wma_core.experiments import get_profile

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
    for n in NOTEBOOKS:
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
    lines += [
        "", (f"Pretraining the miniature before the notebooks: {timings['pretraining_s']:.1f} s "
             "(0 s when its checkpoint was already there). ") if timings.get("pretraining_s") is not None else "",
        f"Notebooks (wall clock, in parallel, pretraining included): {timings.get('notebooks_wall_s', 0):.1f} s. "
        "The HTML rendering and the total are in `timings.json` in the build folder (they end after this page is written).", "",
        "## Package versions", "", "| package | version |", "|---|---|",
        *[f"| {p} | {v} |" for p, v in versions], "",
    ]
    path.write_text("\n".join(lines))


# ---------------------------------------------------------------------------------------------
# rendering


def stage_and_render(build_dir: Path, executed: Path, timings: dict) -> float:
    """Stage the sources with the executed notebooks and build the HTML into ``<build_dir>/html``."""
    t0 = time.perf_counter()
    stage = build_dir / "stage"
    shutil.rmtree(stage, ignore_errors=True)
    (stage / "book").mkdir(parents=True)
    for f in ("_config.yml", "_toc.yml"):
        shutil.copy2(ROOT / f, stage / f)
    for pattern in ("*.md", "*.bib"):
        for f in BOOK.glob(pattern):
            shutil.copy2(f, stage / "book" / f.name)
    if (BOOK / "_static").is_dir():  # Jupyter Book loads every CSS file in <root>/_static
        shutil.copytree(BOOK / "_static", stage / "_static")
    missing = [n for n in NOTEBOOKS if not (executed / f"{n}.ipynb").exists()]
    if missing:
        raise SystemExit(f"[build] no executed copy of {missing} in {executed}: run them first (without --only)")
    for n in NOTEBOOKS:
        shutil.copy2(executed / f"{n}.ipynb", stage / "book" / f"{n}.ipynb")
    write_build_info(stage / "book" / f"{BUILD_INFO}.md", timings)
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 2), help="notebooks run at once, and Ray's CPU slots for training trials (default: the core count)")
    ap.add_argument("--scale", default="default", choices=["smoke", "default", "paper"])
    ap.add_argument("--only", nargs="+", metavar="NAME", help="execute only these notebooks (others: reuse earlier executed copies)")
    ap.add_argument("--no-html", action="store_true", help="execute only, do not render")
    ap.add_argument("--html-only", action="store_true", help="render only, from the executed copies of an earlier build")
    ap.add_argument("--build-dir", default=str(ROOT / "_build"), help="where executed notebooks, figures and HTML go")
    ap.add_argument("--executor", default="ray", choices=["ray", "local"], help="'local': no Ray, trials run inside each notebook")
    ap.add_argument("--timeout", type=int, default=CELL_TIMEOUT,
                    help="per-cell time limit in seconds (default %(default)s; 0: none; raise it at scale 'paper')")
    ap.add_argument("--idle-timeout", type=float, default=IDLE_TIMEOUT,
                    help="seconds a kernel may sit idle while papermill waits before the notebook is rerun (default %(default)s)")
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
    head, t_pretrain, starting = None, None, None
    try:
        if args.executor == "ray" and any(n in TRAINING for n in names):
            # Ray starts (about 4 s) while the pretraining step runs or finds its checkpoint
            starting = cf.ThreadPoolExecutor(1)
            ray_future = starting.submit(_timed, RayHead, args.jobs)
        if any(n in TRAINING for n in names):
            t_pretrain = pretrain_step(args.scale, args.timeout or None)
        if starting is not None:
            head, ray_s = ray_future.result()
            os.environ.update(head.env)
            os.environ["RAY_ADDRESS"] = head.address
            print(f"[build] Ray at {head.address} ({args.jobs} CPUs, {ray_s:.0f} s to start, beside the pretraining step)", flush=True)
        results = run_notebooks(names, params, executed, args.jobs, args.timeout or None, args.idle_timeout)
    except KeyboardInterrupt:
        print("[build] interrupted: finished training runs are in the results store, a rebuild resumes", flush=True)
        return 130
    finally:
        if starting is not None:
            starting.shutdown(wait=True)
            if head is None and ray_future.exception() is None:
                head = ray_future.result()[0]  # started while the pretraining step failed
        if head is not None:
            head.stop()
    t_exec = time.perf_counter() - t0
    ok = all(r["ok"] for r in results)
    build_dir.mkdir(parents=True, exist_ok=True)
    runs = _merge_timings(build_dir, results)
    timings = {"scale": args.scale, "jobs": args.jobs, "executor": args.executor, "timeout": args.timeout,
               "notebooks": {n: t["seconds"] for n, t in runs.items()}, "notebook_runs": runs,
               "notebooks_wall_s": t_exec, "pretraining_s": t_pretrain, "ok": ok,
               "finished": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")}
    t_html = 0.0
    if ok and not args.no_html:
        t_html = stage_and_render(build_dir, executed, timings)
    total = time.perf_counter() - t0

    print("\n[build] timings")
    for r in sorted(results, key=lambda r: NOTEBOOKS.index(r["name"]) if r["name"] in NOTEBOOKS else len(NOTEBOOKS)):
        print(f"  {r['name']:<18} {r['seconds']:7.1f} s  {'ok' if r['ok'] else 'FAILED'}")
    if t_pretrain is not None:
        print(f"  {'pretraining':<18} {t_pretrain:7.1f} s")
    print(f"  {'notebooks (wall)':<18} {t_exec:7.1f} s")
    if not args.no_html and ok:
        print(f"  {'html':<18} {t_html:7.1f} s   -> {build_dir / 'html' / 'index.html'}")
    print(f"  {'total':<18} {total:7.1f} s")
    (build_dir / "timings.json").write_text(json.dumps(
        {**timings, "html_s": t_html, "total_s": total, "loadavg_end": list(os.getloadavg())}, indent=1))
    if not ok:
        bad = [r for r in results if not r["ok"]]
        print("\n[build] FAILED: " + ", ".join(r["name"] for r in bad), file=sys.stderr)
        for r in bad:
            print(f"--- {r['name']}: {r['error']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
