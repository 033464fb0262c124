"""Time one training step (forward + backward + AdamW step) of ViLT with and without the WMA loss.

Usage (from the repository root)::

    python benchmarks/bench_step.py                                    # tiny config, CPU, < 1 minute
    python benchmarks/bench_step.py --config vilt-b32 --batch 64 --dtype bf16 --out benchmarks/results/step-h100-bf16.json
    python benchmarks/bench_step.py --config vilt-b32 --batch 64 --dtype bf16 --compile

Four measurements at one shape: two implementations of the same model (same random weights)
x two losses.

- ``transformers``: transformers' ``ViltModel`` (random patch order via ``visual_embed``, its
  own attention) + the task head of :class:`wma_core.model.TaskHead`; for WMA its output is
  split into text tokens (CLS and [SEP] dropped) and image tokens (CLS dropped).
- ``ours``: :class:`wma_core.model.WMAClassifier` over ``load_vilt(..., patch_order="raster",
  attn="sdpa")`` (the fast path).
- ``baseline``: binary cross-entropy only; ``wma``: + :class:`wma_core.losses.WMARegulariser`
  (alpha = beta = 1, D0 calibrated once on the batch before timing) over
  :func:`wma_core.losses.pair_distances` (cosine cost, IPOT 50 iterations; the fused Triton
  kernel on CUDA unless ``--ot-backend eager``).

``--config vilt-b32`` is ``ViltConfig()`` (hidden 768, 12 layers, 12 heads, patch 32, text 40)
with random weights; ``tiny`` is :data:`wma_core.model.TINY_CONFIG` (hidden 128, 4 layers,
patch 16). Square ``--image`` pixels give ``(image / patch)^2`` patches (384 at patch 32: 144).
Prints one JSON object: median ms per step, samples/s, peak CUDA memory, model FLOPs per step
(``6 x non-embedding parameters x batch x tokens``: the usual dense estimate, attention scores
and the OT solve not counted), MFU against the peak named in the output (H100/H200 SXM bf16
dense 989 TFLOP/s; fp32 67 TFLOP/s, since PyTorch runs fp32 matmuls without TF32 by default;
none on CPU), and the ratios WMA / baseline and ours / transformers (time ratios: < 1 is faster).

On a CPU the machine's own rate is measured in the same run: a reference fp32 GEMM
(``torch.mm`` of square matrices, ``--gemm-sizes``, with the same thread count), timed in the
same round robin as the steps, so that load from other processes hits both alike. The step's
share of that rate (``step_share_of_gemm``: model FLOP/s of a step / the best GEMM FLOP/s) is
the CPU's counterpart of MFU. ``--eval-batch`` also times evaluation as
:func:`wma_core.evaluate.evaluate` runs it (forward under ``inference_mode`` plus the OT
distances of every pair, at the evaluation batch size) and reports its throughput per sample
against the training step's (``eval_over_train_samples_per_s``); ``--eval-dtype bf16`` times it
as the embedded default evaluates on a CPU with native bf16 (``TrainConfig.eval_amp``).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import statistics
import sys
import time
import traceback
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from transformers import ViltConfig  # noqa: E402

from bench_ipot import machine  # noqa: E402
from wma_core import ot_fused  # noqa: E402
from wma_core.losses import WMAConfig, WMARegulariser, modality_pairs, pair_distances  # noqa: E402
from wma_core.model import TINY_CONFIG, TaskHead, WMAClassifier, load_vilt, normalise_pixels  # noqa: E402

#: Dense peak TFLOP/s by (GPU name fragment, dtype); vendor datasheet numbers, SXM parts.
PEAK_TFLOPS = [
    ("H100 PCIe", {"bf16": 756.0, "fp32": 51.0}),
    ("H100", {"bf16": 989.4, "fp32": 66.9}),
    ("H200", {"bf16": 989.4, "fp32": 66.9}),
    ("A100", {"bf16": 312.0, "fp32": 19.5}),
]


def config_overrides(name: str) -> dict:
    if name == "tiny":
        return {}
    if name == "vilt-b32":
        base = ViltConfig()
        return {k: getattr(base, k) for k in TINY_CONFIG}  # every field tiny changes, back to ViltConfig()
    raise ValueError(f"--config must be tiny or vilt-b32, got {name!r}")


class HFClassifier(nn.Module):
    """transformers' ViltModel + TaskHead, with the per-modality token split WMA needs."""

    def __init__(self, vilt, n_out: int = 1):
        super().__init__()
        self.vilt = vilt
        self.head = TaskHead(vilt.config.hidden_size, n_out, vilt.config.initializer_range)
        self.modalities = ("text", "image")

    def forward(self, batch: dict):
        ids, am = batch["input_ids"], batch["attention_mask"]
        pix = normalise_pixels(batch["pixel_values"], self.vilt.embeddings.patch_embeddings.projection.weight.dtype)
        out = self.vilt(input_ids=ids, attention_mask=am, pixel_values=pix, pixel_mask=batch["pixel_mask"])
        h = out.last_hidden_state  # [B, Lt + 1 + Li, hidden]
        Lt = ids.shape[1]
        tm = am[:, 1:].bool().clone()  # text tokens without CLS
        last = am.sum(1) - 2  # [SEP] position among them
        rows = torch.nonzero(last >= 0).squeeze(1)
        tm[rows, last[rows]] = False
        img = h[:, Lt + 1 :]
        # full pixel masks and max_image_length = -1: every patch is kept, so all image tokens are valid
        split = SimpleNamespace(
            tokens={"text": h[:, 1:Lt], "image": img},
            token_masks={"text": tm, "image": torch.ones(img.shape[:2], dtype=torch.bool, device=h.device)},
        )
        return self.head(out.pooler_output), split


def make_batch(cfg: dict, batch: int, image: int, text_len: int, device, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    vocab = cfg["vocab_size"]
    lengths = torch.randint(max(3, text_len // 2), text_len + 1, (batch,), generator=g)
    am = (torch.arange(text_len)[None, :] < lengths[:, None]).long()
    ids = torch.randint(1, vocab, (batch, text_len), generator=g) * am
    b = {
        "ids": torch.arange(batch),
        "labels": torch.randint(0, 2, (batch,), generator=g).float(),
        "input_ids": ids,
        "attention_mask": am,
        "pixel_values": torch.randint(0, 256, (batch, 3, image, image), generator=g, dtype=torch.uint8),
        "pixel_mask": torch.ones(batch, image, image, dtype=torch.long),
    }
    return {k: v.to(device) for k, v in b.items()}


def non_embedding_params(model: nn.Module) -> int:
    skip = set()
    for mod in model.modules():
        if isinstance(mod, nn.Embedding):
            skip.update(id(p) for p in mod.parameters())
    for name, p in model.named_parameters():
        if name.endswith("position_embeddings") or name.endswith("cls_token") or name.endswith(".pos") or name.endswith(".cls"):
            skip.add(id(p))
    return sum(p.numel() for p in model.parameters() if id(p) not in skip)


def peak_tflops(device, dtype: str):
    if device.type != "cuda":
        return None, None
    name = torch.cuda.get_device_name(device)
    for frag, peaks in PEAK_TFLOPS:
        if frag in name:
            return peaks[dtype], f"{frag} {dtype} dense {peaks[dtype]} TFLOP/s (datasheet)"
    return None, None


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_opt(params, kind: str):
    """AdamW as ``plain`` (per-parameter loop), ``foreach`` or ``fused`` (wma_core.train's choice)."""
    kw = {"plain": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}[kind]
    return torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.98), weight_decay=0.01, **kw)


def prepare_eval(model, args, device, autocast_ctx):
    """An evaluation pass over one batch of ``args.eval_batch`` samples, as wma_core.evaluate.evaluate runs it."""
    pairs = modality_pairs(model.modalities)
    batch = args.eval_batch_dict

    def step():
        model.eval()
        with torch.inference_mode(), autocast_ctx():
            logits, out = model(batch)
            d = pair_distances(out, pairs, iters=args.ot_iters)
            res = logits.float().sum() + sum(D.sum() for D, _ in d.values())
        model.train()
        return res

    return step


def prepare_gemm(n: int, device):
    g = torch.Generator().manual_seed(n)
    a = torch.randn(n, n, generator=g).to(device)
    b = torch.randn(n, n, generator=g).to(device)

    def step():
        return torch.mm(a, b)[0, 0]

    return step


def prepare(model, use_wma, args, device, autocast_ctx):
    """Optimizer, (calibrated) regulariser and a ``step()`` closure for one measurement."""
    model.train()
    pairs = modality_pairs(model.modalities)
    opt = make_opt(model.parameters(), args.optimizer)
    reg = None
    if use_wma:
        reg = WMARegulariser(WMAConfig(alpha=1.0, beta=1.0, iters=args.ot_iters), pairs)
        with torch.no_grad(), autocast_ctx():
            _, out0 = model(args.batch_dict)
            reg.calibrate(pair_distances(out0, pairs, iters=args.ot_iters))
    fn = torch.compile(model) if args.compile else model

    def step():
        opt.zero_grad(set_to_none=True)
        with autocast_ctx():
            logits, out = fn(args.batch_dict)
            loss = F.binary_cross_entropy_with_logits(logits[:, 0].float(), args.batch_dict["labels"])
            if use_wma:
                r, _ = reg(pair_distances(out, pairs, iters=args.ot_iters))
                loss = loss + r
        loss.backward()
        opt.step()
        return loss

    return step, ({"d0": reg.d0} if use_wma else {})


def time_steps(steps: dict, args, device, interleave: bool) -> dict:
    """Per key: first-step seconds, then median/min/max ms over ``args.repeats`` steps after
    ``args.warmup``. ``interleave``: round robin over the keys (CPU: shared-machine load then
    hits all alike); else one key after the other, with CUDA peak memory per key."""
    res = {k: {"times": []} for k in steps}
    for k, step in steps.items():
        t0 = time.perf_counter()
        step()
        sync(device)
        res[k]["first_step_s"] = time.perf_counter() - t0
        for _ in range(args.warmup):
            step()
        sync(device)

    def one(k):
        sync(device)
        t0 = time.perf_counter()
        loss = steps[k]()
        sync(device)
        res[k]["times"].append((time.perf_counter() - t0) * 1e3)
        res[k]["loss"] = float(loss.detach())

    if interleave:
        for _ in range(args.repeats):
            for k in steps:
                one(k)
    else:
        for k in steps:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            for _ in range(args.repeats):
                one(k)
            if device.type == "cuda":
                res[k]["peak_mem_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    for k, r in res.items():
        t = r.pop("times")
        r.update(ms=statistics.median(t), ms_min=min(t), ms_max=max(t), repeats=len(t),
                 samples_per_s=args.batch / (statistics.median(t) / 1e3))
    return res


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="tiny", choices=["tiny", "vilt-b32"])
    p.add_argument("--model", default=None,
                   help="a local folder written by ViltModel.save_pretrained: its weights and configuration "
                        "instead of --config's random ones")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--image", type=int, default=None, help="square image side (default: the config's image_size: 64 tiny, 384 vilt-b32)")
    p.add_argument("--text-len", type=int, default=40)
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"], help="bf16: autocast (CUDA; CPU autocast elsewhere)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (not the optimizer)")
    p.add_argument("--device", default="auto")
    p.add_argument("--impl", nargs="*", default=["transformers", "ours"], choices=["transformers", "ours"])
    p.add_argument("--losses", nargs="*", default=["baseline", "wma"], choices=["baseline", "wma"])
    p.add_argument("--ot-backend", default="auto", choices=["auto", "eager"], help="eager sets WMA_DISABLE_TRITON=1")
    p.add_argument("--ot-iters", type=int, default=50)
    p.add_argument("--warmup", type=int, default=None, help="default 3 (+5 with --compile)")
    p.add_argument("--repeats", type=int, default=None, help="default 20 on GPU, 5 on CPU")
    p.add_argument("--peak-tflops", type=float, default=None, help="override the peak used for MFU")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--interleave", action=argparse.BooleanOptionalAction, default=None,
                   help="round robin over the measurements (default: on for CPU, off for CUDA, which reports peak memory per measurement)")
    p.add_argument("--optimizer", default="fused", choices=["fused", "foreach", "plain"],
                   help="AdamW implementation (fused: what wma_core.train uses on CPU and CUDA)")
    p.add_argument("--threads", type=int, nargs="*", default=None,
                   help="torch.set_num_threads (default: as torch starts); more than one value, e.g. 2 1: the "
                        "training steps are also timed with the other thread counts, in the same round robin "
                        "(keys <impl>/<loss>@<n>t), to compare 1 job x 2 threads with 2 jobs x 1 thread")
    p.add_argument("--gemm-sizes", type=int, nargs="*", default=[512, 1024, 2048],
                   help="square fp32 GEMMs timed in the same round robin (CPU; none: skip)")
    p.add_argument("--eval-dtype", default="same", choices=["same", "fp32", "bf16"],
                   help="autocast of the evaluation pass (TrainConfig.eval_amp; the embedded default uses bf16 "
                        "where the CPU has it natively)")
    p.add_argument("--eval-batch", type=int, default=256, help="evaluation batch (0: do not time evaluation)")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    p.add_argument("--note", default=None, help="free text stored in the JSON (e.g. what else ran on the machine)")
    args = p.parse_args(argv)

    if args.ot_backend == "eager":
        os.environ["WMA_DISABLE_TRITON"] = "1"
    if args.threads:
        torch.set_num_threads(args.threads[0])
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          (args.device if args.device != "auto" else "cpu"))
    gpu = device.type == "cuda"
    args.warmup = args.warmup if args.warmup is not None else 3 + (5 if args.compile else 0)
    args.repeats = args.repeats if args.repeats is not None else (20 if gpu else 5)
    overrides = config_overrides(args.config)
    cfg = {**TINY_CONFIG, **overrides}
    backbone = None
    if args.model:  # a save_pretrained folder: its configuration replaces --config's
        backbone = load_vilt(args.model, patch_order="raster", attn="sdpa", init_seed=args.seed)
        cfg = {k: getattr(backbone.vilt.config, k) for k in TINY_CONFIG}
    image = args.image or cfg["image_size"]
    if args.text_len > cfg["max_position_embeddings"]:
        raise SystemExit(f"--text-len {args.text_len} > max_position_embeddings {cfg['max_position_embeddings']}")
    patches = (image // cfg["patch_size"]) ** 2
    tokens = args.text_len + 1 + patches

    if backbone is None:
        backbone = load_vilt("tiny", patch_order="raster", attn="sdpa", init_seed=args.seed, **overrides)
    hf_vilt = copy.deepcopy(backbone.vilt)  # the same random weights
    models = {}
    torch.manual_seed(args.seed)
    if "ours" in args.impl:
        models["ours"] = WMAClassifier(backbone, 1).to(device)
    if "transformers" in args.impl:
        models["transformers"] = HFClassifier(hf_vilt, 1).to(device)
    batch = make_batch(cfg, args.batch, image, args.text_len, device, seed=args.seed)
    args.batch_dict = batch
    if args.eval_batch:
        args.eval_batch_dict = make_batch(cfg, args.eval_batch, image, args.text_len, device, seed=args.seed + 1)

    bf16 = args.dtype == "bf16"

    def autocast_ctx():
        if not bf16:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)

    some_model = next(iter(models.values()))
    n_params = non_embedding_params(some_model)
    flops = 6 * n_params * args.batch * tokens
    peak, peak_note = peak_tflops(device, args.dtype)
    if args.peak_tflops:
        peak, peak_note = args.peak_tflops, f"--peak-tflops {args.peak_tflops}"
    probe = torch.zeros(1, args.text_len, patches, device=device)
    res = {
        "benchmark": "train_step",
        "machine": machine(),
        "device": str(device),
        "measured_on": "gpu" if gpu else "cpu",
        "config": args.config if not args.model else "folder",
        "model_path": args.model,
        "model": {k: cfg[k] for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "patch_size")},
        "shape": {"batch": args.batch, "image": image, "patches": patches, "text_len": args.text_len, "tokens": tokens},
        "dtype": args.dtype,
        "compile": args.compile,
        "optimizer": f"AdamW ({args.optimizer})",
        "threads": torch.get_num_threads(),
        "eval_batch": args.eval_batch,
        "eval_dtype": args.dtype if args.eval_dtype == "same" else args.eval_dtype,
        "ot": {"iters": args.ot_iters, "backend": "triton" if ot_fused.available(probe) else "eager"},
        "timing": {"warmup": args.warmup, "repeats": args.repeats, "clock": "time.perf_counter + synchronize" if gpu else "time.perf_counter"},
        "non_embedding_params": n_params,
        "model_flops_per_step": flops,
        "flops_formula": "6 x non-embedding params x batch x tokens (attention scores and OT not counted)",
        "peak_tflops": peak,
        "peak_note": peak_note or "no peak known for this device: MFU not reported",
        "results": {},
    }
    steps, extra = {}, {}
    for impl, model in models.items():
        for loss in args.losses:
            key = f"{impl}/{loss}"
            try:
                steps[key], extra[key] = prepare(model, loss == "wma", args, device, autocast_ctx)
            except Exception as err:  # noqa: BLE001 - report and go on
                res["results"][key] = {"error": f"{type(err).__name__}: {err}"[:2000],
                                       "traceback_tail": traceback.format_exc()[-1500:]}
        if args.eval_batch:
            eval_bf16 = bf16 if args.eval_dtype == "same" else args.eval_dtype == "bf16"
            eval_ctx = (lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)) if eval_bf16 \
                else contextlib.nullcontext
            steps[f"{impl}/eval"] = prepare_eval(model, args, device, eval_ctx)
    base_threads = torch.get_num_threads()
    for n_threads in (args.threads or [])[1:]:
        for key in [k for k in steps if k.endswith(("/baseline", "/wma"))]:
            def with_threads(step=steps[key], n=n_threads):
                torch.set_num_threads(n)
                try:
                    return step()
                finally:
                    torch.set_num_threads(base_threads)

            steps[f"{key}@{n_threads}t"] = with_threads
    gemm_keys = {}
    if not gpu:
        for n in args.gemm_sizes:
            gemm_keys[f"gemm/{n}"] = n
            steps[f"gemm/{n}"] = prepare_gemm(n, device)
    interleave = args.interleave if args.interleave is not None else not gpu
    res["timing"]["interleaved"] = interleave
    try:
        timed = time_steps(steps, args, device, interleave)
    except Exception as err:  # noqa: BLE001 - one failing step (e.g. under --compile): time them one by one
        timed = {}
        for key, step in steps.items():
            try:
                timed.update(time_steps({key: step}, args, device, False))
            except Exception as err2:  # noqa: BLE001
                timed[key] = {"error": f"{type(err2).__name__}: {err2}"[:2000],
                              "traceback_tail": traceback.format_exc()[-1500:]}
        res["timing"]["note"] = f"timed one by one after {type(err).__name__}"
    eval_flops = 2 * n_params * args.eval_batch * tokens  # forward only
    for key, r in timed.items():
        if key in gemm_keys and "ms" in r:
            n = gemm_keys[key]
            r.update(flops=2 * n**3, gflops_per_s=2 * n**3 / (r["ms"] / 1e3) / 1e9,
                     gflops_per_s_best=2 * n**3 / (r["ms_min"] / 1e3) / 1e9)
            r.pop("samples_per_s", None)
            r.pop("loss", None)
            res.setdefault("gemm", {})[key] = r
            print(f"# {key}: {r['gflops_per_s']:.0f} GFLOP/s (best {r['gflops_per_s_best']:.0f})", file=sys.stderr)
            continue
        if key.endswith("/eval") and "ms" in r:
            r["samples_per_s"] = args.eval_batch / (r["ms"] / 1e3)
            r["samples_per_s_best"] = args.eval_batch / (r["ms_min"] / 1e3)
            r["model_tflops_per_s"] = eval_flops / (r["ms"] / 1e3) / 1e12
            r["flops_per_call"] = eval_flops
            r.pop("loss", None)
            print(f"# {key}: {r['ms']:.1f} ms per {args.eval_batch} samples (min {r['ms_min']:.1f})", file=sys.stderr)
            res["results"][key] = r
            continue
        if "ms" in r:
            r["samples_per_s_best"] = args.batch / (r["ms_min"] / 1e3)
            r["model_tflops_per_s"] = flops / (r["ms"] / 1e3) / 1e12
            r["mfu"] = r["model_tflops_per_s"] / peak if peak else None
            r.update(extra.get(key, {}))
            print(f"# {key}: {r['ms']:.1f} ms/step (min {r['ms_min']:.1f})", file=sys.stderr)
        res["results"][key] = r

    if hasattr(os, "getloadavg"):
        res["machine"]["loadavg_1_5_15_end"] = [round(x, 2) for x in os.getloadavg()]
    R = res["results"]

    def ratio(a, b, field="ms"):
        return R[a][field] / R[b][field] if field in R.get(a, {}) and field in R.get(b, {}) else None

    for field, suffix in (("ms", ""), ("ms_min", "_min")):
        res["wma_over_baseline_time" + suffix] = {impl: ratio(f"{impl}/wma", f"{impl}/baseline", field) for impl in models}
        res["ours_over_transformers_time" + suffix] = {
            loss: ratio(f"ours/{loss}", f"transformers/{loss}", field) for loss in args.losses}
    if res.get("gemm"):
        best = max(g["gflops_per_s"] for g in res["gemm"].values())
        best_min = max(g["gflops_per_s_best"] for g in res["gemm"].values())
        res["gemm_peak_gflops_per_s"] = best
        res["gemm_peak_gflops_per_s_best"] = best_min
        share, share_min = {}, {}
        for key, r in R.items():
            if "model_tflops_per_s" in r and not key.endswith("/eval"):
                share[key] = r["model_tflops_per_s"] * 1e3 / best
                share_min[key] = (flops / (r["ms_min"] / 1e3) / 1e9) / best_min
        res["step_share_of_gemm"] = share  # medians over medians
        res["step_share_of_gemm_min"] = share_min  # fastest step over fastest GEMM
    layout = {}
    for key, r in R.items():
        if "@" in key and "ms" in r and "ms" in R.get(key.split("@")[0], {}):
            base_key, n = key.split("@")[0], int(key.split("@")[1].rstrip("t"))
            b = R[base_key]
            # k jobs of n threads each on the base_threads cores: k = base_threads / n
            jobs = base_threads / n
            layout[key] = {"threads": n, "jobs": jobs, "step_ms": r["ms"], "base_step_ms": b["ms"],
                           "throughput_vs_base": jobs * b["ms"] / r["ms"],
                           "throughput_vs_base_min": jobs * b["ms_min"] / r["ms_min"]}
    if layout:
        res["thread_layout"] = layout  # > 1: that many jobs with fewer threads each give more samples/s
    res["eval_over_train_samples_per_s"] = {}
    res["eval_over_train_samples_per_s_min"] = {}
    for impl in models:
        ev = R.get(f"{impl}/eval", {})
        for loss in args.losses:
            tr = R.get(f"{impl}/{loss}", {})
            if "samples_per_s" in ev and "samples_per_s" in tr:
                res["eval_over_train_samples_per_s"][f"{impl}/{loss}"] = ev["samples_per_s"] / tr["samples_per_s"]
                res["eval_over_train_samples_per_s_min"][f"{impl}/{loss}"] = ev["samples_per_s_best"] / tr["samples_per_s_best"]
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
