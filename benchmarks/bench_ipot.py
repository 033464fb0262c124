"""Time one batched IPOT solve: eager PyTorch, torch.compile, the fused Triton kernel, POT's exact EMD.

Usage (from the repository root)::

    python benchmarks/bench_ipot.py                       # batch 64, 39 x 144 tokens, 50 iterations
    python benchmarks/bench_ipot.py --batch 128 --iters 50 --out benchmarks/results/ipot-h100.json
    python benchmarks/bench_ipot.py --num-warps 4 8 16    # sweep the fused kernel's warps (GPU)

The input is the ViLT-B/32 case: cosine costs between 39 text tokens (40 minus CLS; a random
number of them valid per sample, as with padded captions) and 144 image patches (384 x 384 at
patch 32, all valid), from random ``--dim``-dimensional features. Prints one JSON object:
the machine, the shapes, the median milliseconds per call of each method (``ms``), its speed-up
over the eager loop (``speedup_vs_eager`` = eager ms / method ms), the fused kernel's max
absolute plan difference from the eager one, and each method's relative error against POT's
exact ``ot.emd2`` (the reference). The fused kernel runs on CUDA only; POT runs on the CPU,
one ``emd2`` per sample. GPU timings use CUDA events after warm-up; CPU timings use
``time.perf_counter``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wma_core import ot_fused  # noqa: E402
from wma_core.ot import cosine_cost, ipot_eager  # noqa: E402


def machine() -> dict:
    d = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        if names:
            d["cpu"] = names[0]
    except OSError:
        pass
    try:  # other work on the machine skews CPU timings: record how busy it was
        d["loadavg_1_5_15"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    if torch.cuda.is_available():
        d["gpu"] = torch.cuda.get_device_name()
        d["cuda"] = torch.version.cuda
    try:
        import triton

        d["triton"] = triton.__version__
    except ImportError:
        d["triton"] = None
    return d


def _summary(times: list) -> dict:
    return {"ms": statistics.median(times), "ms_min": min(times), "ms_max": max(times), "repeats": len(times)}


def time_all(fns: dict, device: torch.device, warmup: int, repeats: int, interleave: bool | None = None) -> dict:
    """Milliseconds per call of each ``fns[name]()``: median, min and max over ``repeats``.

    On CUDA each function is timed with CUDA events, one after the other. On a CPU the calls
    are interleaved (round robin over the functions, ``repeats`` rounds) so that load from
    other processes hits every method alike; ``ms_min`` is then the least disturbed call.
    """
    gpu = device.type == "cuda"
    interleave = (not gpu) if interleave is None else interleave
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    if gpu:
        torch.cuda.synchronize()
    times = {name: [] for name in fns}

    def one(name):
        fn = fns[name]
        if gpu:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times[name].append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t0) * 1e3)

    if interleave:
        for _ in range(repeats):
            for name in fns:
                one(name)
    else:
        for name in fns:
            for _ in range(repeats):
                one(name)
    return {name: _summary(t) for name, t in times.items()}


def make_inputs(batch, n, m, dim, device, seed=0, full_masks=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, n, dim, generator=g)
    y = torch.randn(batch, m, dim, generator=g) + 0.1 * torch.randn(1, 1, dim, generator=g)
    xm = torch.ones(batch, n, dtype=torch.bool)
    ym = torch.ones(batch, m, dtype=torch.bool)
    if not full_masks:  # captions of random length (>= 3 tokens), image fully valid
        lengths = torch.randint(min(3, n), n + 1, (batch,), generator=g)
        xm = torch.arange(n)[None, :] < lengths[:, None]
    C = cosine_cost(x, y)
    return C.to(device), xm.to(device), ym.to(device)


def emd_reference(C, xm, ym, solver: str = "pot"):
    """Exact EMD per sample over its valid tokens: POT's ``ot.emd2`` (``solver="pot"``), or the
    same linear programme through ``scipy.optimize.linprog`` (HiGHS; ``"scipy"``, for machines
    without POT)."""
    if solver == "pot":
        import ot

        def emd2(a, b, M):
            return ot.emd2(a, b, M)
    else:
        from scipy.optimize import linprog

        def emd2(a, b, M):
            n, m = M.shape
            rows = np.kron(np.eye(n), np.ones((1, m)))  # sum_q T[p, q] = a[p]
            cols = np.kron(np.ones((1, n)), np.eye(m))  # sum_p T[p, q] = b[q]
            r = linprog(M.ravel(), A_eq=np.vstack([rows, cols]), b_eq=np.concatenate([a, b]),
                        bounds=(0, None), method="highs")
            if not r.success:
                raise RuntimeError(f"linprog: {r.message}")
            return r.fun

    Cc, xc, yc = C.double().cpu().numpy(), xm.cpu().numpy(), ym.cpu().numpy()
    out = np.zeros(C.shape[0])
    for b in range(C.shape[0]):
        n, m = int(xc[b].sum()), int(yc[b].sum())
        if n and m:
            out[b] = emd2(np.full(n, 1 / n), np.full(m, 1 / m), Cc[b][xc[b]][:, yc[b]])
    return out


def emd_solver() -> str | None:
    """``"pot"`` where POT is installed, else ``"scipy"`` where SciPy is, else ``None``."""
    for name, module in (("pot", "ot"), ("scipy", "scipy.optimize")):
        try:
            __import__(module)
            return name
        except ImportError:
            pass
    return None


def rel_err(D, exact) -> dict:
    D = D.double().cpu().numpy()
    ok = exact > 0
    r = np.abs(D[ok] - exact[ok]) / exact[ok]
    return {"mean": float(r.mean()), "max": float(r.max())}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--n", type=int, default=39, help="x tokens (ViLT-B/32 text: 40 - CLS)")
    p.add_argument("--m", type=int, default=144, help="y tokens (ViLT-B/32 image: 12 x 12 patches)")
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--step", type=float, default=0.5)
    p.add_argument("--device", default="auto", help="auto (cuda if available), cuda or cpu")
    p.add_argument("--warmup", type=int, default=None, help="default 10 on GPU, 3 on CPU")
    p.add_argument("--repeats", type=int, default=None, help="default 50 on GPU, 10 on CPU")
    p.add_argument("--full-masks", action="store_true", help="all tokens valid (default: random caption lengths)")
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile(ipot_eager)")
    p.add_argument("--no-pot", action="store_true", help="skip POT's exact emd2")
    p.add_argument("--emd-samples", type=int, default=None,
                   help="exact EMD on the first N samples only (default: all); without POT, SciPy's linprog solves it")
    p.add_argument("--num-warps", type=int, nargs="*", default=None, help="fused kernel warps to sweep (GPU)")
    p.add_argument("--layouts", nargs="*", default=["split", "pow2"], help="fused kernel tile layouts (GPU)")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    p.add_argument("--note", default=None, help="free text stored in the JSON (e.g. what else ran on the machine)")
    p.add_argument("--fused-on-cpu", action="store_true",
                   help="also run the fused kernel on the CPU (needs TRITON_INTERPRET=1; checks this script, times nothing useful)")
    args = p.parse_args(argv)

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          (args.device if args.device != "auto" else "cpu"))
    gpu = device.type == "cuda"
    warmup = args.warmup if args.warmup is not None else (10 if gpu else 3)
    repeats = args.repeats if args.repeats is not None else (50 if gpu else 10)
    C, xm, ym = make_inputs(args.batch, args.n, args.m, args.dim, device, full_masks=args.full_masks)
    kw = dict(step=args.step, iters=args.iters)

    res = {
        "benchmark": "ipot",
        "machine": machine(),
        "device": str(device),
        "measured_on": "gpu" if gpu else "cpu",
        "shape": {"batch": args.batch, "n": args.n, "m": args.m, "dim": args.dim, "iters": args.iters,
                  "step": args.step, "inner": 1, "full_masks": args.full_masks,
                  "valid_x_tokens_mean": float(xm.float().sum(1).mean()), "valid_y_tokens_mean": float(ym.float().sum(1).mean())},
        "timing": {"warmup": warmup, "repeats": repeats,
                   "clock": "cuda events, one method after the other" if gpu else "time.perf_counter, methods interleaved"},
        "methods": {},
    }
    methods = res["methods"]
    fns = {}  # name -> callable, timed together below
    info = {}  # name -> extra fields

    T_eager = ipot_eager(C, xm, ym, **kw)
    D_eager = (C * T_eager).sum((1, 2))
    fns["eager"] = lambda: ipot_eager(C, xm, ym, **kw)

    if not args.no_compile:
        try:
            compiled = torch.compile(ipot_eager)
            t0 = time.perf_counter()
            T_c = compiled(C, xm, ym, **kw)
            if gpu:
                torch.cuda.synchronize()
            fns["torch_compile"] = lambda: compiled(C, xm, ym, **kw)
            info["torch_compile"] = {"compile_s": time.perf_counter() - t0,
                                     "max_abs_diff_vs_eager": float((T_c - T_eager).abs().max())}
        except Exception as err:  # noqa: BLE001 - report, do not stop the benchmark
            methods["torch_compile"] = {"error": f"{type(err).__name__}: {err}"[:2000],
                                        "traceback_tail": traceback.format_exc()[-1500:]}

    T_f = None
    if (gpu or args.fused_on_cpu) and ot_fused.available(C):
        tile = {lay: ot_fused.padded_size(args.n, args.m, lay) for lay in args.layouts}
        res["fused_tiles"] = {lay: {"blocks": ot_fused.blocks(args.n, args.m, lay), "slots": s,
                                    "useful_fraction": args.n * args.m / s} for lay, s in tile.items()}
        for lay in args.layouts:
            for w in args.num_warps or [ot_fused.default_num_warps(tile[lay])]:
                name = f"fused_{lay}_w{w}"
                try:
                    T = ot_fused.ipot_fused(C, xm, ym, layout=lay, num_warps=w, **kw)
                    fns[name] = lambda lay=lay, w=w: ot_fused.ipot_fused(C, xm, ym, layout=lay, num_warps=w, **kw)
                    info[name] = {"max_abs_diff_vs_eager": float((T - T_eager).abs().max()),
                                  "default": lay == "split" and w == ot_fused.default_num_warps(tile[lay])}
                except Exception as err:  # noqa: BLE001
                    methods[name] = {"error": f"{type(err).__name__}: {err}"[:2000]}
        T_f = ot_fused.ipot_fused(C, xm, ym, **kw)
        res["fused_max_abs_diff_vs_eager"] = float((T_f - T_eager).abs().max())
    else:
        res["fused_note"] = "the fused Triton kernel runs on CUDA only (not timed on this machine)"

    exact = None
    solver = None if args.no_pot else emd_solver()
    k = args.batch if args.emd_samples is None else max(1, min(args.batch, args.emd_samples))
    if not args.no_pot and solver is None:
        methods["pot_emd2_loop_cpu"] = {"error": "POT (ot) is not installed, nor SciPy"}
    elif solver is not None:
        if solver != "pot":
            methods["pot_emd2_loop_cpu"] = {"error": "POT (ot) is not installed: the exact EMD is SciPy's linprog (HiGHS)"}
        exact = emd_reference(C[:k], xm[:k], ym[:k], solver)
        Cc, xmc, ymc = C[:k].cpu(), xm[:k].cpu(), ym[:k].cpu()
        res["emd_reference"] = {"solver": "ot.emd2" if solver == "pot" else "scipy.optimize.linprog (highs)",
                                "samples": k}
        res["rel_err_vs_emd"] = {"eager": rel_err(D_eager[:k], exact)}
        if T_f is not None:
            res["rel_err_vs_emd"]["fused"] = rel_err((C[:k] * T_f[:k]).sum((1, 2)), exact)

    for name, r in time_all(fns, device, warmup, repeats).items():
        methods[name] = {**r, **info.get(name, {})}
    if exact is not None:  # on the CPU whatever the device; a few calls (it is the slow reference)
        key = "pot_emd2_loop_cpu" if solver == "pot" else "scipy_linprog_emd_loop_cpu"
        cpu_fns = {key: lambda: emd_reference(Cc, xmc, ymc, solver)}
        methods.update(time_all(cpu_fns, torch.device("cpu"), 1, repeats if not gpu else 5))
    fused = [k for k in methods if k.startswith("fused_") and "ms" in methods[k]]
    if fused:
        res["fused_best"] = min(fused, key=lambda k: methods[k]["ms"])

    if hasattr(os, "getloadavg"):
        res["machine"]["loadavg_1_5_15_end"] = [round(x, 2) for x in os.getloadavg()]
    eager = methods["eager"]
    for r in methods.values():
        if "ms" in r:
            r["speedup_vs_eager"] = eager["ms"] / r["ms"]
            r["speedup_vs_eager_min"] = eager["ms_min"] / r["ms_min"]
    if args.note:
        res["note"] = args.note
    text = json.dumps(res, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return res


if __name__ == "__main__":
    main()
