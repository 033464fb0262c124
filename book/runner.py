"""The build's runner: a local Ray instance for the training trials, the pretraining step, and
each notebook executed by papermill under a watchdog that tells a silent kernel from a busy one
(see :mod:`build` for the plan and the command line)."""

from __future__ import annotations

import concurrent.futures as cf
import json
import multiprocessing as mp
import os
import secrets
import signal
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from wma_core.store import heartbeat_age

BOOK = Path(__file__).resolve().parent
ROOT = BOOK.parent
IDLE_TIMEOUT = 120  # s of an idle kernel while papermill still waits: the watchdog's signal of a silent hang


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


#: seconds without progress after which the pretraining step counts as hung (it marks every step)
HANG_AFTER = 600.0


class StepFailed(RuntimeError):
    """A build step (pretraining, the sweep) failed; the message says why."""


def run_watched(cmd: list, *, log: Path | None = None, heartbeat: Path | None = None,
                hang_after: float = HANG_AFTER, retries: int = 1, env: dict | None = None) -> dict:
    """Run ``cmd`` (from the repository root) to its end, however long it takes, unless it stops
    marking progress: with ``heartbeat``, a run whose heartbeat file (or, before the first beat,
    whose start) is older than ``hang_after`` seconds is killed and started once more
    (``retries``), then reported hung. No limit depends on how fast the machine is.

    Output goes to ``log`` (``None``: to this terminal, e.g. the sweep's progress bar). Returns
    ``{"returncode", "attempts", "hung", "tail"}`` (``tail``: the last lines of the log)."""
    attempts, hung = 0, False
    while True:
        attempts += 1
        if heartbeat is not None:
            Path(heartbeat).unlink(missing_ok=True)
        out = open(log, "a") if log is not None else None  # noqa: SIM115 - closed below
        started = time.time()
        try:
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT if out else None,
                                    env={**os.environ, **(env or {})}, start_new_session=True)
            try:
                hung = False
                while proc.poll() is None:
                    time.sleep(1.0)
                    if heartbeat is None:
                        continue
                    age = heartbeat_age(heartbeat)  # None before the first beat: judged from the start
                    if (time.time() - started if age is None else age) > hang_after:
                        hung = True
                        os.killpg(proc.pid, signal.SIGKILL)
                        proc.wait()
            except BaseException:  # Ctrl-C: stop the step with the build
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGTERM)
                    try:
                        proc.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        os.killpg(proc.pid, signal.SIGKILL)
                raise
        finally:
            if out is not None:
                out.close()
        if not hung or attempts > retries:
            break
        print(f"[build] {cmd[2]}: no progress for {hang_after:g} s, started again", flush=True)
    tail = Path(log).read_text(errors="replace").strip().splitlines()[-40:] if log is not None and Path(log).exists() else []
    return {"returncode": proc.returncode, "attempts": attempts, "hung": hung, "tail": tail}


def pretrain_step(scale: str, logs: Path, hang_after: float = HANG_AFTER) -> float | None:
    """Build (or reuse) the pretrained miniature the profile fine-tunes from, every replicated
    backbone of it (``Profile.backbones``), before any notebook starts: one
    ``python -m wma_core.pretrain --backbone K`` per backbone, side by side with the cores shared
    out between them (a backbone's checkpoint does not depend on the thread count but for float
    rounding), each watched by its heartbeat (:func:`run_watched`). Returns the step's seconds,
    or ``None`` when the profile fine-tunes from something else (the paper scale's hub model);
    raises :class:`StepFailed` naming the backbone whose pretraining failed, or whose held-out
    hard-negative ITM is under ``Profile.itm_floor`` (:func:`wma_study.pretrain_study.check_itm_floor`)."""
    from wma_study.experiments import PRETRAINED, get_profile

    profile = get_profile(scale)
    if profile.model != PRETRAINED:
        return None
    t0 = time.perf_counter()
    logs.mkdir(parents=True, exist_ok=True)
    backbones = list(profile.backbones)
    threads = max(1, (os.cpu_count() or 1) // len(backbones))

    def one(k: int) -> tuple[int, dict, float, str]:
        t_k = time.perf_counter()
        name = "pretraining" if k == 0 else f"pretraining-b{k}"
        beat = logs / f"{name}.beat"
        cmd = [sys.executable, "-m", "wma_core.pretrain", "--scale", "smoke" if scale == "smoke" else "default",
               "--backbone", str(k), "--quiet", "--heartbeat", str(beat)]
        env = {"OMP_NUM_THREADS": str(threads)} if len(backbones) > 1 else None
        res = run_watched(cmd, log=logs / f"{name}.log", heartbeat=beat, hang_after=hang_after, env=env)
        beat.unlink(missing_ok=True)
        return k, res, time.perf_counter() - t_k, name

    print(f"[build] pretrain the miniature: {len(backbones)} backbone(s) "
          f"(python -m wma_core.pretrain --backbone K, {threads} thread(s) each)", flush=True)
    with cf.ThreadPoolExecutor(max_workers=len(backbones)) as pool:
        done = list(pool.map(one, backbones))
    for k, res, seconds, name in done:
        if res["returncode"] != 0:
            why = f"hung {res['attempts']} times (no progress for {hang_after:g} s)" if res["hung"] else f"exit {res['returncode']}"
            raise StepFailed(f"pretraining of backbone {k} failed ({why}); its log: {logs / (name + '.log')}\n"
                             + "\n".join(res["tail"][-15:]))
        lines = res["tail"]
        print(f"[build] pretrained backbone {k} in {seconds:.0f} s: {lines[-2] if len(lines) > 1 else ''}\n"
              f"        -> {lines[-1] if lines else ''}", flush=True)
    from wma_study.pretrain_study import BelowFloor, check_itm_floor

    try:
        check_itm_floor(scale)
    except BelowFloor as e:  # fine-tuning from a backbone that does not ground would test nothing
        raise StepFailed(f"pretraining did not ground: {e}") from None
    return time.perf_counter() - t0


def sweep_step(scale: str, chapters: list, plan_out: Path, address: str | None, executor: str = "ray") -> dict:
    """Train every run the ``chapters`` read, in one sweep (``python -m wma_study.plan``: one
    progress bar, runs done / total and the time left); trials that stop marking progress are
    retried once there. Returns the plan file's content (``chapters`` {name: [keys]},
    ``failures``, ``kinds``), or raises :class:`StepFailed` when the step itself broke."""
    cmd = [sys.executable, "-m", "wma_study.plan", "--scale", scale, "--out", str(plan_out), "--executor", executor,
           "--chapters", *chapters] + (["--address", address] if address else [])
    print(f"[build] sweep step: the training runs of {len(chapters)} chapters", flush=True)
    plan_out.unlink(missing_ok=True)
    res = run_watched(cmd, retries=0)
    if not plan_out.exists():
        raise StepFailed(f"the sweep step ended (exit {res['returncode']}) without its plan file {plan_out}")
    return json.loads(plan_out.read_text())


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


def run_notebooks(names: list, params: dict, out_dir: Path, jobs: int, timeout: int | None,
                  idle_timeout: float = IDLE_TIMEOUT, src_dir: Path | None = None, *, depends: dict | None = None,
                  priority: list | None = None, failed: dict | None = None) -> list:
    """Execute ``names`` in ``jobs`` processes; a notebook starts once the notebooks it
    ``depends`` on have finished, the earliest in ``priority`` first among the ready ones.

    A failure stops only what depends on it: a notebook whose dependency failed (or is named in
    ``failed``, ``{name: why}``, e.g. the chapters whose runs the sweep step could not train) is
    reported as not run, with the reason; every other notebook still runs."""
    src_dir = Path(src_dir) if src_dir else BOOK
    depends, priority = depends or {}, list(priority or [])
    out_dir.mkdir(parents=True, exist_ok=True)
    bad = dict(failed or {})  # name -> why it did not run or failed
    results = [{"name": n, "ok": False, "seconds": 0.0, "error": why} for n, why in bad.items() if n in names]
    todo = [n for n in names if n not in bad]
    declared = {n: declared_parameters(src_dir / f"{n}.ipynb") for n in todo}
    pending = sorted(todo, key=lambda n: priority.index(n) if n in priority else len(priority))
    done, running = set(), {}
    ctx = mp.get_context("spawn")
    pool = cf.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx)
    try:
        while pending or running:
            for n in list(pending):
                deps = depends.get(n, set()) & set(names)
                if deps & set(bad):  # a dependency failed: this one is not run, the others go on
                    pending.remove(n)
                    why = f"not run: it reads what {', '.join(sorted(deps & set(bad)))} makes, which failed"
                    bad[n] = why
                    results.append({"name": n, "ok": False, "seconds": 0.0, "error": why})
                    print(f"[build] skip   {n}: {why}", flush=True)
                elif len(running) < jobs and deps <= done:
                    p = {k: v for k, v in params.items() if k in declared[n]}
                    fut = pool.submit(execute, n, p, str(out_dir), timeout, idle_timeout, str(src_dir))
                    running[fut] = n
                    pending.remove(n)
                    shown = {k: v for k, v in p.items() if k != "live"}
                    print(f"[build] start  {n}" + (f"  {shown}" if shown else ""), flush=True)
            if not running:
                if pending:  # cannot happen with an acyclic DEPENDS; say so rather than wait for ever
                    raise RuntimeError(f"notebooks {pending} wait on each other (DEPENDS has a circle)")
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
                    bad[n] = res["error"]
                    print(f"[build] FAILED {n}  {res['seconds']:.0f} s\n{res['error']}", flush=True)
    except BaseException:  # Ctrl-C / SIGTERM: stop the notebooks now (their kernels exit with them)
        for proc in list(getattr(pool, "_processes", {}).values()):
            proc.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return results
