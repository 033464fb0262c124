"""Training step on a batch of images of different shapes: packed patches against the padded grid.

A batch of images of different shapes is zero-padded to its largest height and width. Our
raster path (``wma_core.model.WMAVilt``, ``patch_order="raster"``) packs each sample's valid
patches first and cuts the columns that are padding in every sample
(``wma_core.embeddings.pack_valid``), so the image part is as long as the largest valid grid, as in
transformers' ``visual_embed``. The reference in the same run is the unpacked padded grid (the
same model with the packing turned off): the same valid tokens, more masked ones.

The default batch mimics the Hateful Memes twin at the default scale (64-pixel shorter side,
patch 16): grids of 4x4, 4x5, 4x6, 5x4 and 6x4 patches padded to 6x6, captions of 12-21 tokens.
Both variants take the same batches, interleaved round robin so that load from other processes
hits both alike. Prints one JSON object (``--out FILE`` also writes it)::

    python benchmarks/bench_ragged.py [--batch 32] [--threads 1] [--repeats 20] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import wma_core.embeddings as E  # noqa: E402
from bench_ipot import machine  # noqa: E402
from wma_core.model import TINY_CONFIG, WMAClassifier, load_vilt  # noqa: E402

GRIDS = ((4, 4), (4, 5), (4, 6), (5, 4), (6, 4))  # (rows, cols) of patches, the HM twin's shapes


def ragged_batch(batch: int, patch: int, text_len: int, vocab: int, seed: int = 0) -> dict:
    """uint8 pixels ``[B, 3, 6p, 6p]`` with each sample's own grid valid in ``pixel_mask``."""
    g = torch.Generator().manual_seed(seed)
    side = max(max(r, c) for r, c in GRIDS) * patch
    pixels = torch.zeros(batch, 3, side, side, dtype=torch.uint8)
    pmask = torch.zeros(batch, side, side, dtype=torch.long)
    ids = torch.zeros(batch, text_len, dtype=torch.long)
    am = torch.zeros(batch, text_len, dtype=torch.long)
    for b in range(batch):
        r, c = GRIDS[b % len(GRIDS)]
        pixels[b, :, : r * patch, : c * patch] = torch.randint(0, 256, (3, r * patch, c * patch), generator=g, dtype=torch.uint8)
        pmask[b, : r * patch, : c * patch] = 1
        n = int(torch.randint(text_len - 9, text_len + 1, (1,), generator=g))
        ids[b, :n] = torch.randint(5, vocab, (n,), generator=g)
        ids[b, 0], ids[b, n - 1] = 2, 3
        am[b, :n] = 1
    return {"input_ids": ids, "attention_mask": am, "pixel_values": pixels, "pixel_mask": pmask,
            "labels": torch.randint(0, 2, (batch,), generator=g).float()}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--text-len", type=int, default=21)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = WMAClassifier(load_vilt("tiny", attn="sdpa", init_seed=0), 1).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    batch = ragged_batch(args.batch, TINY_CONFIG["patch_size"], args.text_len, TINY_CONFIG["vocab_size"])
    packed = E.pack_valid
    variants = {"packed": packed, "padded_grid": lambda t, v, c: (t, v, c)}
    tokens = {}

    def step():
        logits, out = model(batch)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.reshape(-1), batch["labels"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return out.attention_mask.shape[1]

    times = {k: [] for k in variants}
    info = machine()
    try:
        for rep in range(args.warmup + args.repeats):
            for name, fn in variants.items():  # round robin
                E.pack_valid = fn
                t0 = time.perf_counter()
                tokens[name] = step()
                if rep >= args.warmup:
                    times[name].append(time.perf_counter() - t0)
    finally:
        E.pack_valid = packed
    ms = {k: 1000 * statistics.median(v) for k, v in times.items()}
    res = {
        "benchmark": "ragged_step",
        "measured_on": "cpu",
        "machine": {**info, "loadavg_1_5_15_end": [round(x, 2) for x in os.getloadavg()]},
        "shape": {"batch": args.batch, "text_len": args.text_len, "grids": [list(g) for g in GRIDS],
                  "sequence_tokens": tokens},
        "timing": {"warmup": args.warmup, "repeats": args.repeats, "clock": "time.perf_counter", "interleaved": True},
        "ms": ms,
        "ms_min": {k: 1000 * min(v) for k, v in times.items()},
        "padded_over_packed_time": ms["padded_grid"] / ms["packed"],
    }
    text = json.dumps(res, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return res


if __name__ == "__main__":
    main()
