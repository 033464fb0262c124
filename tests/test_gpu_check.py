"""benchmarks/gpu_check.sh, the one unattended GPU check, in its CPU dry run.

``DRY_RUN=1`` runs every step of the GPU check on the CPU at tiny sizes (the fused Triton IPOT
under ``TRITON_INTERPRET=1``, a random-init ViLT folder written with ``save_pretrained``,
chapter 02 at ``scale="paper"`` through papermill, a 4-trial Ray sweep), so these tests check
the script itself: every step writes its JSON with sane content, a step that fails (made to
fail on purpose with ``GPU_CHECK_FAIL``) does not stop the later ones, and the fallbacks for
packages the GPU machine may lack (``GPU_CHECK_HIDE``: papermill, Ray) say so and go on.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
STEPS = ["env", "ipot", "ipot_compile", "setup", "step", "step_compile", "paper", "sweep"]

pytestmark = pytest.mark.slow


def _run(base: Path, **env) -> dict:
    out, work = base / "out", base / "work"
    full = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "GPU_CHECK_STEPS", "GPU_CHECK_FAIL",
                                                              "GPU_CHECK_HIDE", "GPU_CHECK_BUDGET_S")}
    full.update(DRY_RUN="1", OUT=str(out), GPU_CHECK_WORK=str(work), **env)
    t0 = time.perf_counter()
    proc = subprocess.run(["bash", str(SCRIPT)], cwd=ROOT, env=full, capture_output=True, text=True, timeout=900)
    seconds = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "gpu_check-summary.json").read_text())
    results = {p.name: json.loads(p.read_text()) for p in (out / "results").glob("*.json")}
    by_step = {r["gpu_check"]["step"]: r for r in results.values()}
    return {"out": out, "work": work, "proc": proc, "seconds": seconds, "summary": summary, "results": results,
            "by_step": by_step, "status": {s["step"]: s for s in summary["steps"]}}


@pytest.fixture(scope="module")
def dry(tmp_path_factory):
    """The whole dry run, with step_compile made to fail on purpose."""
    return _run(tmp_path_factory.mktemp("gpu_check"), GPU_CHECK_FAIL="step_compile")


@pytest.fixture(scope="module")
def fallbacks(tmp_path_factory):
    """The chapter and the sweep as on a machine without papermill and Ray."""
    return _run(tmp_path_factory.mktemp("gpu_check_fallbacks"), GPU_CHECK_STEPS="setup,paper,sweep",
                GPU_CHECK_HIDE="papermill,ray")


def test_every_step_ran_and_wrote_its_json(dry):
    s = dry["summary"]
    print(f"dry run: {dry['seconds']:.0f} s (script's own count {s['seconds']} s)")
    assert [st["step"] for st in s["steps"]] == STEPS
    assert s["device"] == "cpu" and s["dry_run"] is True
    # the results, in benchmarks/results/ form, named after the machine, marked with the device
    names = sorted(dry["results"])
    assert len(names) == 6, names
    for prefix in ("env-", "ipot-", "paper-path-", "sweep-"):
        assert sum(n.startswith(prefix) for n in names) == 1, (prefix, names)
    assert sum(n.startswith("step-") for n in names) == 2 and any(n.endswith("-compile.json") for n in names)
    assert all("-dryrun" in n for n in names)
    for name, r in dry["results"].items():
        assert r["device"] == "cpu" and r["dry_run"] is True and "machine" in r, name
        assert r["gpu_check"]["timeout_s"] > 0 and r["gpu_check"]["seconds"] >= 0, name
        assert "DRY_RUN=1" in (r.get("note") or ""), name
    # a runner that collects $OUT may take at most 8 files, no more than 2 folders down
    files = [p for p in dry["out"].rglob("*") if p.is_file()]
    assert len(files) <= 8 and all(len(p.relative_to(dry["out"]).parts) <= 3 for p in files), files
    assert (dry["out"] / "gpu_check-logs.tar.gz").stat().st_size > 0
    # generated data went to the scratch folder (WMA_DATA), not the repository's _data
    assert (dry["work"] / "data" / "prepared").is_dir() and (dry["work"] / "data" / "results" / "records").is_dir()


def test_a_failed_step_does_not_stop_the_later_ones(dry):
    st, s = dry["status"], dry["summary"]
    assert s["failed"] == ["step_compile"], {n: dry["by_step"].get(n, {}).get("log_tail") for n in s["failed"]}
    assert st["step_compile"]["rc"] == 97 and st["step_compile"]["status"] == "failed"
    assert "on purpose" in st["step_compile"]["error"]
    failed = dry["by_step"]["step_compile"]
    assert failed["status"] == "failed" and "on purpose" in failed["log_tail"]
    for later in ("paper", "sweep"):
        assert st[later]["status"] == "ok" and st[later]["rc"] == 0, st[later]
    assert all(st[n]["status"] == "ok" for n in STEPS if n != "step_compile")


def test_environment_and_ipot(dry):
    env = dry["by_step"]["env"]
    assert "torch" in env["packages"] and "triton" in env["packages"] and isinstance(env["missing"], list)
    assert env["cuda_available"] is False and env["sweep_module"]
    ipot = dry["by_step"]["ipot"]
    m = ipot["methods"]
    assert ipot["benchmark"] == "ipot" and ipot["shape"]["batch"] == 4
    assert m["eager"]["ms"] > 0
    fused = [k for k in m if k.startswith("fused_")]
    assert fused and ipot["fused_best"] in fused  # the Triton kernel ran, interpreted
    assert ipot["fused_max_abs_diff_vs_eager"] < 1e-5
    assert ipot["emd_reference"]["samples"] == 2
    for method in ("eager", "fused"):
        err = ipot["rel_err_vs_emd"][method]
        assert 0 <= err["mean"] <= err["max"] < 0.5, (method, err)
    # the compile run, merged in
    assert ipot["compile_run"]["status"] == "ok"
    assert m["torch_compile"]["ms"] > 0 and m["torch_compile"]["max_abs_diff_vs_eager"] < 1e-4


def test_training_step(dry):
    step = dry["by_step"]["step"]
    assert step["benchmark"] == "train_step" and step["dtype"] == "bf16" and step["config"] == "folder"
    assert Path(step["model_path"]).name == "vilt-tiny-random"
    assert step["ot"]["backend"] == "triton"  # the fused kernel, under the interpreter
    assert step["model"]["patch_size"] == 32 and step["shape"]["batch"] == 4
    for key in ("ours/baseline", "ours/wma", "transformers/baseline", "transformers/wma", "ours/eval"):
        assert step["results"][key]["ms"] > 0, key
    assert math.isfinite(step["results"]["ours/wma"]["loss"]) and step["results"]["ours/wma"]["d0"]
    goals = dry["summary"]["goals"]
    assert goals["step_ms_batch64"]["value"] == step["results"]["ours/baseline"]["ms"]
    assert goals["wma_over_baseline"]["value"] > 0 and goals["fused_ipot_ms"]["value"] > 0
    assert all(g["met"] is None for k, g in goals.items() if k != "note")  # no verdicts from a CPU


def test_paper_path_through_papermill(dry):
    p = dry["by_step"]["paper"]
    assert p["status"] == "ok", p.get("log_tail")
    assert p["mode"] == "papermill" and p["notebook_executed"] is True
    assert p["notebook"]["errors"] == [] and len(p["notebook"]["tables"]) == 3
    assert {"fig_table1.png", "fig_d_hist.png"} <= set(p["figures"])
    assert p["methods"] == ["baseline", "min_ot", "wma"]
    for run in p["runs"]:
        assert run["amp"] == "bf16" and run["epochs"] == 1 and run["batch_size"] == 128  # the paper profile
        assert run["model"].startswith("folder:") and len(run["test_cases"]) == 5
        assert math.isfinite(run["test_normal"]) and all(math.isfinite(v) for v in run["d0"].values())
        assert run["timings"]["steps"] >= 1


def test_sweep_on_ray(dry):
    s = dry["by_step"]["sweep"]
    assert s["status"] == "ok", s.get("log_tail")
    assert s["executor"] == "ray" and s["gpus_per_trial"] == 0
    assert len(s["trials"]) == 4 and len(s["trial_starts"]) == 4
    assert sorted((t["method"], t["seed"]) for t in s["trials"]) == [("baseline", 0), ("baseline", 1), ("wma", 0), ("wma", 1)]
    assert all(t["node"] != "local" for t in s["trial_starts"])  # Ray workers, not the local executor
    assert "--executor ray" in s["command"] and "--scale paper" in s["command"]


def test_fallbacks_without_papermill_and_ray(fallbacks):
    st, res = fallbacks["status"], fallbacks["by_step"]
    assert [s["step"] for s in fallbacks["summary"]["steps"] if s.get("status") != "not_selected"] == ["setup", "paper", "sweep"]
    p = res["paper"]
    assert p["status"] == "ok" and p["mode"] == "sweep_cli_local" and p["notebook_executed"] is False
    assert "papermill" in p["missing"] and p["methods"] == ["baseline", "min_ot", "wma"]
    sw = res["sweep"]
    assert sw["status"] == "missing_dependency" and sw["missing"] == ["ray"] and "ray" in sw["error"]
    assert st["sweep"]["status"] == "missing_dependency" and fallbacks["summary"]["failed"] == ["sweep"]
