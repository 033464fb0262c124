#!/usr/bin/env bash
# gpu_check.sh: the GPU path measured in one unattended run.
#
# On a GPU machine (one H200: at most 8 minutes), from the repository root:
#
#     OUT=/some/empty/folder bash benchmarks/gpu_check.sh
#
# Where a remote runner sets OUT and collects what is under it, the command is just
# `bash benchmarks/gpu_check.sh` (timeout_s about 540). Nothing is installed from the network.
# Python packages the machine lacks (POT, Ray, papermill, ...) are named in env-*.json and the
# steps that need them say so in their JSON and go on; wheels carried in GPU_CHECK_WHEELS (default
# .whl/ at the repository root, when it holds any) are installed with `pip --no-index` into a
# temporary folder first. The exact EMD falls back to SciPy's linprog where POT is missing.
#
# The CPU dry run: the same steps at tiny sizes, on the CPU, the Triton kernel under
# TRITON_INTERPRET=1, in about 3 minutes on 2 cores (tests/test_gpu_check.py runs it):
#
#     DRY_RUN=1 OUT=/tmp/gpu_check bash benchmarks/gpu_check.sh
#
# Steps, in order, each under its own `timeout`; a failed step does not stop the next ones:
#   env           nvidia-smi, torch / CUDA / Triton versions, which Python packages are there
#   ipot          bench_ipot.py: eager and fused IPOT at the ViLT-B/32 shape (batch 64, 40 text
#                 and 145 image tokens, CLS excluded: 39 x 144), warps swept, errors against the
#                 exact EMD on a subset of the batch
#   ipot_compile  bench_ipot.py with torch.compile (its own run and timeout: compiling the 50
#                 unrolled iterations is slow), merged into the ipot JSON as method torch_compile
#   setup         a Hateful Memes twin (python -m data_prep synth) and a random-init ViLT-B/32
#                 folder written with save_pretrained, with a WordPiece tokenizer fitted on the
#                 twin's text (the hub checkpoint cannot be downloaded)
#   step          bench_step.py on that folder: 384 px, batch 64, bf16 autocast, SDPA (ours) and
#                 transformers' ViltModel, baseline against WMA, and an evaluation pass
#   step_compile  the same (our implementation) with torch.compile
#   paper         chapter 02 through papermill at scale paper on the device, 1 epoch, one seed,
#                 executor local (where papermill, ipykernel or myst_nb is missing: the chapter's
#                 three training runs through the sweep command line, and the JSON says so)
#   sweep         4 trials (baseline and WMA x 2 seeds) of the sweep command line on Ray, one GPU
#                 per trial
#
# What it writes (8 files, no more than 2 folders down, so that a runner that collects at most 8 files gets them all):
#   $OUT/results/env-<machine>.json, ipot-<machine>-b64.json, step-<machine>-vilt-b32-bf16-b64.json,
#       step-<machine>-vilt-b32-bf16-b64-compile.json, paper-path-<machine>-hateful-memes.json,
#       sweep-<machine>-ray-4trials.json   (benchmarks/results/ form; each has "device",
#       "machine" and a "gpu_check" block: status, return code, seconds, timeout)
#   $OUT/gpu_check-summary.json   every step's status and the goals (step <= 20 ms at batch 64,
#       WMA <= 1.01 x baseline, fused IPOT <= 0.04 ms)
#   $OUT/gpu_check-logs.tar.gz    every step's log, the executed notebook
# A step that fails still writes its JSON ("status": "failed", the return code, the log's tail).
#
# Knobs (environment): DRY_RUN=1; PYTHON (default: .venv/bin/python where it exists, else python3);
# GPU_CHECK_BUDGET_S (whole run; default 470 on the GPU, 600 dry); GPU_CHECK_STEPS (comma list,
# default all); GPU_CHECK_FAIL (comma list of steps made to fail on purpose, to test the script);
# GPU_CHECK_HIDE (comma list of Python packages treated as missing, e.g. papermill,ray: the fallbacks);
# GPU_CHECK_HM_N (twin size; default 1000 on the GPU, 40 dry); GPU_CHECK_WORK (scratch folder,
# default a new one under /tmp, removed at the end unless KEEP_WORK=1); GPU_CHECK_WHEELS.

set -u
export PYTHONUNBUFFERED=1

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 2
: "${OUT:?set OUT to the folder the results go to}"
mkdir -p "$OUT/results" || exit 2
OUT=$(cd "$OUT" && pwd)
DRY_RUN=${DRY_RUN:-0}
[ "$DRY_RUN" = 0 ] || DRY_RUN=1
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON=$ROOT/.venv/bin/python; else PYTHON=python3; fi
fi
WORK=${GPU_CHECK_WORK:-$(mktemp -d /tmp/gpu_check.XXXXXX)}
mkdir -p "$WORK/logs" "$WORK/status"
LOGS=$WORK/logs
T0=$(date +%s)

# Generated data, the built book's figures, the hub cache, Ray's files: all in the scratch folder
export WMA_DATA=$WORK/data WMA_BUILD_DIR=$WORK/build HF_HOME=$WORK/hf_home
# Ray's own folder: short (its socket paths must stay under 107 characters) and this run's alone
RAY_TMPDIR=$(mktemp -d /tmp/gc-ray.XXXXXX)
export RAY_TMPDIR
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 RAY_USAGE_STATS_ENABLED=0 MPLBACKEND=Agg
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-/tmp/torchinductor_gpu_check}
unset RAY_ADDRESS
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}

# Local wheels only (never the network)
WHEELS=${GPU_CHECK_WHEELS:-}
if [ -z "$WHEELS" ] && [ "$DRY_RUN" = 0 ] && [ -d "$ROOT/.whl" ]; then WHEELS=$ROOT/.whl; fi
if [ -n "$WHEELS" ] && ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    echo "# installing the wheels in $WHEELS into $WORK/site (no index)"
    if timeout 120 "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
            --target "$WORK/site" "$WHEELS"/*.whl >"$LOGS/wheels.log" 2>&1; then
        export PYTHONPATH=$WORK/site:$PYTHONPATH PATH=$WORK/site/bin:$PATH
    else
        echo "# the wheels did not install (see wheels.log); going on without them"
    fi
fi

# ----------------------------------------------------------------------------- sizes
if [ "$DRY_RUN" = 1 ]; then
    DEVICE=cpu
    MACHINE="cpu-$(nproc)core-dryrun"
    BUDGET=${GPU_CHECK_BUDGET_S:-600}
    HM_N=${GPU_CHECK_HM_N:-40}
    MODEL_SIZE=tiny
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
    INTERP=(env TRITON_INTERPRET=1)  # the fused kernel on the CPU: the ipot and step benchmarks only
    IPOT_ARGS=(--batch 4 --n 7 --m 16 --dim 32 --iters 5 --warmup 1 --repeats 2 --emd-samples 2
               --fused-on-cpu --layouts split)
    IPOT_COMPILE_ARGS=(--batch 4 --n 7 --m 16 --dim 32 --iters 2 --warmup 1 --repeats 2)
    STEP_ARGS=(--batch 4 --image 64 --text-len 8 --warmup 1 --repeats 2 --ot-iters 5 --gemm-sizes 128)
    STEP_EVAL=(--eval-batch 8)
    BATCH=4
    SWEEP_ARGS=(--gpus-per-trial 0 --cpus-per-trial 1)
    # limit, floor (seconds): the floor is what earlier steps leave to this one
    declare -A LIMIT=([env]=60 [ipot]=90 [ipot_compile]=150 [setup]=90 [step]=120 [step_compile]=150 [paper]=300 [sweep]=300)
    declare -A FLOOR=([env]=10 [ipot]=20 [ipot_compile]=20 [setup]=20 [step]=20 [step_compile]=20 [paper]=60 [sweep]=60)
else
    DEVICE=cuda
    gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)
    MACHINE=$(echo "${gpu:-gpu}" | tr 'A-Z' 'a-z' | awk '{print $NF}' | tr -c 'a-z0-9\n' '-')
    BUDGET=${GPU_CHECK_BUDGET_S:-470}
    HM_N=${GPU_CHECK_HM_N:-1000}
    MODEL_SIZE=vilt-b32
    INTERP=()
    IPOT_ARGS=(--batch 64 --n 39 --m 144 --dim 768 --iters 50 --emd-samples 16 --num-warps 2 4 8 16)
    IPOT_COMPILE_ARGS=(--batch 64 --n 39 --m 144 --dim 768 --iters 50 --layouts split)
    STEP_ARGS=(--batch 64 --image 384 --text-len 40)
    STEP_EVAL=(--eval-batch 256)
    BATCH=64
    SWEEP_ARGS=(--gpus-per-trial 1 --cpus-per-trial 2)
    declare -A LIMIT=([env]=30 [ipot]=75 [ipot_compile]=150 [setup]=60 [step]=100 [step_compile]=150 [paper]=180 [sweep]=150)
    declare -A FLOOR=([env]=10 [ipot]=30 [ipot_compile]=30 [setup]=20 [step]=40 [step_compile]=40 [paper]=100 [sweep]=80)
fi
STEPS=(env ipot ipot_compile setup step step_compile paper sweep)
RAW=$WORK/raw/hateful_memes
MODEL=$WORK/models/vilt-$MODEL_SIZE-random
R=$OUT/results
STEPVAR=$([ "$MODEL_SIZE" = tiny ] && echo tiny-folder || echo vilt-b32)
declare -A RESULT=(
    [env]=$R/env-$MACHINE.json
    [ipot]=$R/ipot-$MACHINE-b$BATCH.json
    [ipot_compile]=$WORK/ipot-compile.json
    [setup]=$WORK/setup.json
    [step]=$R/step-$MACHINE-$STEPVAR-bf16-b$BATCH.json
    [step_compile]=$R/step-$MACHINE-$STEPVAR-bf16-b$BATCH-compile.json
    [paper]=$R/paper-path-$MACHINE-hateful-memes.json
    [sweep]=$R/sweep-$MACHINE-ray-4trials.json
)
NOTE="benchmarks/gpu_check.sh$([ "$DRY_RUN" = 1 ] && echo ' DRY_RUN=1 (tiny sizes on the CPU: checks the script, measures nothing)')"

# ----------------------------------------------------------------------------- helpers
UTIL=$WORK/gc_util.py
cat >"$UTIL" <<'PY'
"""gpu_check.sh's Python side: environment, setup, the chapter, the sweep, statuses and the summary.
Talks to the project only through its command lines (data_prep, papermill, the sweep CLI)."""
import glob, importlib.util, json, os, platform, subprocess, sys, time
from pathlib import Path

ROOT = Path(os.environ["GC_ROOT"])
DRY = os.environ.get("DRY_RUN") == "1"
DEVICE = os.environ["GC_DEVICE"]
WORK = Path(os.environ["GC_WORK"])
MODULES = ["torch", "triton", "transformers", "tokenizers", "safetensors", "numpy", "scipy", "ot", "pandas",
           "sklearn", "statsmodels", "torchmetrics", "matplotlib", "seaborn", "PIL", "tqdm", "ray",
           "papermill", "nbclient", "ipykernel", "myst_nb", "IPython"]
NOTEBOOK_MODULES = ["papermill", "nbclient", "ipykernel", "myst_nb", "IPython"]


HIDE = {m for m in os.environ.get("GPU_CHECK_HIDE", "").split(",") if m}  # pretend these are missing (tests)


def have(name):
    if name.split(".")[0] in HIDE:
        return False
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def machine():
    d = {"platform": platform.platform(), "python": platform.python_version(), "executable": sys.executable,
         "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count()}
    try:
        names = [l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")]
        d["cpu"] = names[0] if names else d["cpu"]
    except OSError:
        pass
    try:
        d["loadavg_1_5_15"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    try:
        import torch
        d["torch"] = torch.__version__
        d["cuda"] = torch.version.cuda
        if torch.cuda.is_available():
            d["gpu"] = torch.cuda.get_device_name()
    except Exception as e:  # noqa: BLE001
        d["torch"] = f"not importable: {type(e).__name__}: {e}"
    try:
        import triton
        d["triton"] = triton.__version__
    except Exception:  # noqa: BLE001
        d["triton"] = None
    return d


def write(path, obj):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def read(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def tail(path, n=4000):
    try:
        return Path(path).read_text(errors="replace")[-n:]
    except OSError:
        return ""


def run(cmd, log, **kw):
    """Run a child with its output appended to ``log``; return its return code."""
    with open(log, "a") as f:
        f.write(f"\n$ {' '.join(map(str, cmd))}\n")
        f.flush()
        return subprocess.run([str(c) for c in cmd], stdout=f, stderr=subprocess.STDOUT, cwd=kw.pop("cwd", ROOT), **kw).returncode


def base(benchmark):
    return {"benchmark": benchmark, "device": DEVICE, "measured_on": "gpu" if DEVICE == "cuda" else "cpu",
            "dry_run": DRY, "machine": machine(), "note": os.environ.get("GC_NOTE")}


def sweep_module():
    return "wma_study.sweep" if have("wma_study") and have("wma_study.sweep") else None


def records(results):
    out = []
    for p in sorted(glob.glob(str(Path(results) / "records" / "*.json"))):
        rec = read(p)
        if rec:
            c, m = rec.get("config", {}), rec.get("headline_metric")
            t = rec.get("timings", {})
            out.append({
                "key": rec.get("key"), "method": c.get("method"), "alpha": c.get("alpha"), "beta": c.get("beta"),
                "seed": c.get("seed"), "amp": c.get("amp"), "batch_size": c.get("batch_size"),
                "epochs": c.get("epochs"), "model": c.get("model"), "machine": rec.get("environment", {}).get("machine"),
                "environment": rec.get("environment"), "d0": rec.get("d0"), "n_params": rec.get("n_params"),
                "headline_metric": m, "test_normal": (rec.get("metrics") or {}).get("normal", {}).get(m),
                "test_cases": sorted((rec.get("metrics") or {})), "timings": t,
                "train_ms_per_step": 1e3 * t["train_seconds"] / t["steps"] if t.get("steps") else None,
            })
    return out


# ------------------------------------------------------------------------- steps
def cmd_env(out):
    d = base("environment")
    try:
        d["nvidia_smi"] = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=30).stdout
        q = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                            "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
        d["gpus"] = [l.strip() for l in q.stdout.splitlines() if l.strip()]
    except (OSError, subprocess.SubprocessError) as e:
        d["nvidia_smi"] = f"not available: {type(e).__name__}: {e}"
        d["gpus"] = []
    versions, missing = {}, []
    try:
        from importlib.metadata import packages_distributions, version
        dists = packages_distributions()
    except Exception:  # noqa: BLE001
        dists = {}
    for name in MODULES:
        if not have(name):
            missing.append(name)
            continue
        try:
            versions[name] = version((dists.get(name) or [name])[0])
        except Exception:  # noqa: BLE001
            versions[name] = "present"
    d["packages"], d["missing"] = versions, missing
    try:
        import torch
        d["cuda_available"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            p = torch.cuda.get_device_properties(0)
            d["gpu_properties"] = {"name": p.name, "capability": f"{p.major}.{p.minor}", "sms": p.multi_processor_count,
                                   "memory_gib": round(p.total_memory / 2**30, 1)}
            d["cudnn"] = torch.backends.cudnn.version()
            d["bf16_supported"] = torch.cuda.is_bf16_supported()
    except Exception as e:  # noqa: BLE001
        d["torch_error"] = f"{type(e).__name__}: {e}"
    d["triton_interpret"] = os.environ.get("TRITON_INTERPRET")
    d["sweep_module"] = sweep_module()
    d["notebook_ready"] = not [m for m in NOTEBOOK_MODULES if m not in missing]
    d["git_head"] = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip() or None
    write(out, d)


def cmd_setup(out, raw, n, model, size):
    """The Hateful Memes twin (data_prep's CLI) and a random-init ViLT folder with its tokenizer."""
    log = WORK / "logs" / "setup.log"
    t0 = time.perf_counter()
    if not (Path(raw) / "train.jsonl").exists():
        rc = run([sys.executable, "-m", "data_prep", "synth", "hateful_memes", "--out", raw, "--n", n], log)
        if rc:
            sys.exit(rc)
    t_twin = time.perf_counter() - t0
    import torch
    from transformers import ViltConfig, ViltModel

    from data_prep.text import save_fitted

    torch.manual_seed(0)
    if size == "vilt-b32":
        config = ViltConfig()  # transformers' defaults are ViLT-B/32's: 768 hidden, 12 layers, patch 32, 384 px, text 40
    else:  # the dry run: B/32's patch, image and text sizes, a tiny width and depth
        config = ViltConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
                            vocab_size=1000)
    ViltModel(config).save_pretrained(model)
    texts = [json.loads(l)["text"] for l in (Path(raw) / "train.jsonl").read_text().splitlines() if l.strip()]
    save_fitted(texts, model, vocab_size=300)  # the hub tokenizer cannot be had: one fitted on the twin
    d = base("setup")
    d.update(raw=str(raw), twin_n=int(n), twin_s=t_twin, model=str(model), model_size=size,
             model_config={k: getattr(config, k) for k in ("hidden_size", "num_hidden_layers", "num_attention_heads",
                                                          "intermediate_size", "patch_size", "image_size",
                                                          "max_position_embeddings", "vocab_size")},
             model_files=sorted(p.name for p in Path(model).iterdir()), seconds=time.perf_counter() - t0)
    write(out, d)


def cmd_paper(out, raw, model, notebook_out):
    """Chapter 02 at scale paper through papermill (or, without papermill, its runs through the sweep CLI)."""
    log = WORK / "logs" / "paper.log"
    d = base("paper_path")
    d.update(chapter="02_hateful_memes", scale="paper", data_root=str(raw), model=str(model), epochs=1, seeds=[0],
             executor="local")
    results = Path(os.environ["WMA_DATA"]) / "results"
    missing = [m for m in NOTEBOOK_MODULES if not have(m)]
    t0 = time.perf_counter()
    if not Path(model, "config.json").exists():
        d.update(status="failed", error=f"no model folder {model} (the setup step failed)")
        write(out, d)
        sys.exit(3)
    if not missing:
        d["mode"] = "papermill"
        params = ["-p", "scale", "paper", "-p", "device", DEVICE, "-p", "data_root", str(raw), "-p", "model", str(model),
                  "-p", "epochs", "1", "-y", "seeds: [0]", "-p", "executor", "local"]
        rc = run([sys.executable, "-m", "papermill", "--cwd", ROOT / "book", "--log-output", "--no-progress-bar",
                  ROOT / "book" / "02_hateful_memes.ipynb", notebook_out] + params, log)
        d["notebook_executed"] = rc == 0
        nb = read(notebook_out)
        if nb:
            outs = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]
            html = "\n".join("".join(o.get("data", {}).get("text/html", "")) for o in outs)
            d["notebook"] = {"cells": len(nb["cells"]), "errors": [f"{o.get('ename')}: {o.get('evalue')}"[:500]
                                                                    for o in outs if o.get("output_type") == "error"],
                             "tables": [t for t in ("Table 1: baseline vs WMA", "Table 2: minimise OT", "Training runs")
                                        if t in html]}
        figs = Path(os.environ["WMA_BUILD_DIR"]) / "figures" / "02_hateful_memes"
        d["figures"] = sorted(p.name for p in figs.glob("*.png")) if figs.is_dir() else []
    else:
        mod = sweep_module()
        d.update(mode="sweep_cli_local", notebook_executed=False,
                 missing=missing, why=f"not installed here: {', '.join(missing)}; the chapter's three runs "
                                      f"(baseline, WMA, minimise OT) went through the sweep command line instead")
        rc = 3 if mod is None else run(
            [sys.executable, "-m", mod, "--dataset", "hateful_memes", "--alpha", "0", "1", "--beta", "0", "2",
             "--seeds", "0", "--results", results, "--scale", "paper", "--data-root", raw, "--model", model,
             "--device", DEVICE, "--epochs", "1", "--executor", "local", "--no-progress"], log)
    d["rc"] = rc
    d["seconds"] = time.perf_counter() - t0
    d["runs"] = records(results)
    d["methods"] = sorted({r["method"] for r in d["runs"]})
    d["status"] = "ok" if rc == 0 and d["runs"] else "failed"
    if d["status"] != "ok":
        d["log_tail"] = tail(log)
    write(out, d)
    sys.exit(0 if d["status"] == "ok" else (rc or 1))


def cmd_sweep(out, raw, model, *extra):
    """Four trials (baseline, WMA x seeds 0, 1) of the sweep command line on Ray."""
    log = WORK / "logs" / "sweep.log"
    d = base("sweep")
    results = WORK / "sweep_results"
    trial_log = WORK / "sweep_trials.log"
    mod = sweep_module()
    missing = [m for m in ("ray",) if not have(m)] + ([] if mod else ["wma_study.sweep"])
    cmd = [sys.executable, "-m", mod or "wma_study.sweep", "--dataset", "hateful_memes", "--alpha", "0", "1",
           "--beta", "1", "--seeds", "0", "1", "--results", results, "--scale", "paper", "--data-root", raw,
           "--model", model, "--device", DEVICE, "--epochs", "1", "--executor", "ray", "--address", "local",
           "--no-progress", *extra]
    d.update(executor="ray", trials_asked=4, command=" ".join(map(str, cmd)))
    if missing:
        d.update(status="missing_dependency", missing=missing, error=f"not installed here: {', '.join(missing)}")
        write(out, d)
        sys.exit(3)
    if not Path(model, "config.json").exists():
        d.update(status="failed", error=f"no model folder {model} (the setup step failed)")
        write(out, d)
        sys.exit(3)
    t0 = time.perf_counter()
    rc = run(cmd, log, env={**os.environ, "WMA_TRIAL_LOG": str(trial_log)})
    d["rc"], d["seconds"] = rc, time.perf_counter() - t0
    d["trials"] = records(results)
    starts = [l.split() for l in Path(trial_log).read_text().splitlines()] if Path(trial_log).exists() else []
    d["trial_starts"] = [{"key": s[1], "pid": s[2], "node": s[-1]} for s in starts if len(s) >= 4 and s[0] == "start"]
    d["worker_pids"] = sorted({s["pid"] for s in d["trial_starts"]})
    d["trial_devices"] = sorted({str(t["machine"]) for t in d["trials"]})
    d["gpus_per_trial"] = 1 if DEVICE == "cuda" else 0
    d["status"] = "ok" if rc == 0 and len(d["trials"]) == 4 else "failed"
    if d["status"] != "ok":
        d["log_tail"] = tail(log)
    write(out, d)
    sys.exit(0 if d["status"] == "ok" else (rc or 1))


def cmd_status(name, rc, start, end, limit, log, result):
    """After a step: its status file, and its result JSON annotated (or written, when it failed)."""
    rc, seconds = int(rc), float(end) - float(start)
    timed_out = rc in (124, 137)
    st = {"step": name, "rc": rc, "seconds": round(seconds, 2), "timeout_s": int(limit), "timed_out": timed_out,
          "result": result, "log": Path(log).name}
    res = read(result)
    if rc == 0 and res is not None:
        st["status"] = res.get("status", "ok")
    elif rc == 99:
        st["status"] = "skipped"
    else:
        st["status"] = "timed_out" if timed_out else (res or {}).get("status", "failed")
        if st["status"] == "ok":
            st["status"] = "failed"
    st["error"] = None if st["status"] == "ok" else (
        f"timed out after {limit} s" if timed_out else
        "skipped: too little of the run's time budget was left" if rc == 99 else
        (res or {}).get("error") or (tail(log, 600).strip().splitlines() or ["(no output)"])[-1])
    if res is None:  # the step wrote nothing: its JSON says why
        res = base(name)
        res.update(status=st["status"], error=st["error"], log_tail=tail(log))
    res["gpu_check"] = st
    res.setdefault("device", DEVICE)
    res.setdefault("dry_run", DRY)
    if res.get("note") is None:
        res["note"] = os.environ.get("GC_NOTE")
    write(result, res)
    write(WORK / "status" / f"{name}.json", st)


def cmd_merge_ipot(main, compiled):
    """The torch.compile run's entry goes into the ipot JSON as method torch_compile."""
    m, c = read(main) or {}, read(compiled) or {}
    entry = (c.get("methods") or {}).get("torch_compile")
    st = c.get("gpu_check", {})
    if entry is None:
        entry = {"error": st.get("error") or c.get("error") or "the compile run wrote nothing"}
    else:
        eager = (c.get("methods") or {}).get("eager", {})
        entry = {**entry, "measured_in": "its own run (step ipot_compile), against that run's eager loop",
                 "eager_ms_in_that_run": eager.get("ms")}
    m.setdefault("methods", {})["torch_compile"] = entry
    m["compile_run"] = st
    write(main, m)


def cmd_summary(out, t0):
    steps = {}
    for p in sorted((WORK / "status").glob("*.json")):
        s = read(p)
        steps[s["step"]] = s
    order = os.environ["GC_STEPS"].split()
    res = {s: (read(steps[s]["result"]) if s in steps else None) for s in order}
    goals = {}
    step = (res.get("step") or {}).get("results", {})
    ours_b, ours_w = step.get("ours/baseline", {}), step.get("ours/wma", {})
    if "ms" in ours_b:
        goals["step_ms_batch64"] = {"value": ours_b["ms"], "goal": 20.0, "met": ours_b["ms"] <= 20.0,
                                    "what": "ours/baseline, bf16, median ms per training step"}
    if "ms" in ours_b and "ms" in ours_w:
        r = ours_w["ms"] / ours_b["ms"]
        goals["wma_over_baseline"] = {"value": r, "goal": 1.01, "met": r <= 1.01, "what": "ours/wma over ours/baseline"}
    ipot = (res.get("ipot") or {})
    best = ipot.get("fused_best")
    if best and "ms" in ipot.get("methods", {}).get(best, {}):
        v = ipot["methods"][best]["ms"]
        goals["fused_ipot_ms"] = {"value": v, "goal": 0.04, "met": v <= 0.04, "what": f"{best}, median ms per batch"}
    comp = (res.get("step_compile") or {}).get("results", {}).get("ours/baseline", {})
    if "ms" in comp:
        goals["step_ms_batch64_compiled"] = {"value": comp["ms"], "goal": 20.0, "met": comp["ms"] <= 20.0,
                                             "what": "ours/baseline with torch.compile"}
    if DRY:
        for g in goals.values():
            g["met"] = None  # tiny sizes on the CPU: the goals are for the GPU
        goals["note"] = "dry run: the values are tiny CPU sizes; 'met' is left open"
    summary = {"benchmark": "gpu_check", "device": DEVICE, "dry_run": DRY, "machine": machine(),
               "seconds": round(time.time() - float(t0), 1), "budget_s": int(os.environ["GC_BUDGET"]),
               "steps": [steps.get(s, {"step": s, "status": "not_selected"}) for s in order],
               "failed": [s for s in order if steps.get(s, {}).get("status") not in ("ok", None)],
               "goals": goals, "note": os.environ.get("GC_NOTE")}
    write(out, summary)
    for st in summary["steps"]:
        print(f"# {st['step']:>13}: {st.get('status')} ({st.get('seconds', '-')} s)")
    print(json.dumps({k: summary[k] for k in ("seconds", "failed", "goals")}, indent=1, default=str))


if __name__ == "__main__":
    globals()["cmd_" + sys.argv[1]](*sys.argv[2:])
PY
export GC_ROOT=$ROOT GC_DEVICE=$DEVICE GC_WORK=$WORK GC_NOTE=$NOTE GC_BUDGET=$BUDGET DRY_RUN GC_STEPS="${STEPS[*]}"

selected() {  # is step $1 in GPU_CHECK_STEPS (default: all)?
    [ -z "${GPU_CHECK_STEPS:-}" ] && return 0
    [[ ",${GPU_CHECK_STEPS}," == *",$1,"* ]]
}

step_timeout() {  # this step's limit, cut so that every later selected step keeps its floor
    local name=$1 later=0 seen=0 s
    for s in "${STEPS[@]}"; do
        if [ "$seen" = 1 ] && selected "$s"; then later=$((later + FLOOR[$s])); fi
        [ "$s" = "$name" ] && seen=1
    done
    local left=$((BUDGET - ($(date +%s) - T0) - later))
    local t=${LIMIT[$name]}
    [ "$left" -lt "$t" ] && t=$left
    [ "$t" -lt "${FLOOR[$name]}" ] && t=$(( left > 5 ? left : 0 ))
    echo "$t"
}

run_step() {  # run_step NAME command...: under its timeout, output to logs/NAME.log, then its status
    local name=$1; shift
    selected "$name" || return 0
    local log=$LOGS/$name.log t rc start
    t=$(step_timeout "$name")
    start=$(date +%s.%N)
    echo "# [$(date +%T)] $name (timeout ${t} s)"
    if [ "$t" -le 0 ]; then
        echo "skipped: the run's budget of $BUDGET s is spent" >"$log"; rc=99
    elif [[ ",${GPU_CHECK_FAIL:-}," == *",$name,"* ]]; then
        timeout "$t" bash -c 'echo "GPU_CHECK_FAIL: step $0 made to fail on purpose" >&2; exit 97' "$name" >"$log" 2>&1
        rc=$?
    else
        timeout --kill-after=15 "$t" "$@" >"$log" 2>&1
        rc=$?
    fi
    "$PYTHON" "$UTIL" status "$name" "$rc" "$start" "$(date +%s.%N)" "$t" "$log" "${RESULT[$name]}" \
        || echo "# could not record the status of $name"
    echo "# [$(date +%T)] $name: rc $rc"
}

# ----------------------------------------------------------------------------- the steps
echo "# gpu_check: device $DEVICE, machine $MACHINE, budget $BUDGET s, results in $OUT, scratch in $WORK"

run_step env "$PYTHON" "$UTIL" env "${RESULT[env]}"

run_step ipot "${INTERP[@]}" "$PYTHON" benchmarks/bench_ipot.py --device "$DEVICE" --no-compile "${IPOT_ARGS[@]}" \
    --note "$NOTE" --out "${RESULT[ipot]}"

run_step ipot_compile "$PYTHON" benchmarks/bench_ipot.py --device "$DEVICE" --no-pot "${IPOT_COMPILE_ARGS[@]}" \
    --note "$NOTE" --out "${RESULT[ipot_compile]}"
if selected ipot_compile; then
    "$PYTHON" "$UTIL" merge_ipot "${RESULT[ipot]}" "${RESULT[ipot_compile]}" || echo "# could not merge the compile run"
fi

run_step setup "$PYTHON" "$UTIL" setup "${RESULT[setup]}" "$RAW" "$HM_N" "$MODEL" "$MODEL_SIZE"

# without the model folder (setup failed), bench_step's own random ViLT-B/32 of the same shape
if [ -f "$MODEL/config.json" ]; then STEP_MODEL=(--model "$MODEL"); else STEP_MODEL=(--config "$([ "$MODEL_SIZE" = tiny ] && echo tiny || echo vilt-b32)"); fi
run_step step "${INTERP[@]}" "$PYTHON" benchmarks/bench_step.py --device "$DEVICE" "${STEP_MODEL[@]}" --dtype bf16 \
    "${STEP_ARGS[@]}" "${STEP_EVAL[@]}" --note "$NOTE" --out "${RESULT[step]}"

run_step step_compile "$PYTHON" benchmarks/bench_step.py --device "$DEVICE" "${STEP_MODEL[@]}" --dtype bf16 \
    "${STEP_ARGS[@]}" --impl ours --compile --eval-batch 0 --note "$NOTE" --out "${RESULT[step_compile]}"

run_step paper "$PYTHON" "$UTIL" paper "${RESULT[paper]}" "$RAW" "$MODEL" "$WORK/logs/02_hateful_memes.paper.ipynb"

run_step sweep "$PYTHON" "$UTIL" sweep "${RESULT[sweep]}" "$RAW" "$MODEL" "${SWEEP_ARGS[@]}"

# ----------------------------------------------------------------------------- summary, logs
"$PYTHON" "$UTIL" summary "$OUT/gpu_check-summary.json" "$T0"
tar -czf "$OUT/gpu_check-logs.tar.gz" -C "$WORK" logs status $(cd "$WORK" && ls setup.json ipot-compile.json sweep_trials.log 2>/dev/null) \
    || echo "# could not pack the logs"
rm -rf "$RAY_TMPDIR"
if [ "${KEEP_WORK:-0}" = 1 ] || [ -n "${GPU_CHECK_WORK:-}" ]; then
    echo "# scratch kept in $WORK"
else
    rm -rf "$WORK"
fi
echo "# gpu_check done in $(( $(date +%s) - T0 )) s: $OUT"
exit 0
