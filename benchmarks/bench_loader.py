"""Images per second of the data path: transformers' processor vs our prepared uint8 store.

Usage (from the repository root)::

    python benchmarks/bench_loader.py                       # 384 px (paper scale), CPU
    python benchmarks/bench_loader.py --n 512 --workers 0 2 --out benchmarks/results/loader-cpu-2core.json

Three ways to turn the raw images of a Hateful Memes twin into a batch of ViLT pixels:

- ``processor``: transformers' ``ViltImageProcessor`` on decoded PIL images, every epoch
  (resize to shorter side 384, normalise, pad): what a naive loader pays per image.
- ``decode_only``: decoding the raw PNG files alone (a floor for any loader that re-reads them).
- ``prepared_w<k>``: ``data_prep``'s prepared store (resized once at prepare time, flat
  memory-mapped uint8) through ``make_loader`` with ``k`` worker processes; normalisation is
  left to the model on its device (``wma_core.embeddings.normalise_pixels``), so it is not counted.

Also prints the prepared store's bytes per image and the disk cost this implies at paper scale
for each dataset's image count. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_ipot import machine  # noqa: E402

#: images per dataset (train + dev + test as shipped): Hateful Memes' img/ folder, MM-IMDb's posters
IMAGES_AT_PAPER_SCALE = {"hateful_memes": 10_000, "mmimdb": 25_959}


def _rate(n: int, seconds: float) -> float:
    return round(n / seconds, 1)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=256, help="images in the twin")
    ap.add_argument("--image-size", type=int, default=384)
    ap.add_argument("--patch-size", type=int, default=32)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)

    import numpy as np
    from PIL import Image
    from transformers import ViltImageProcessor

    from data_prep.config import PrepareConfig, SynthConfig
    from data_prep.dataset import PreparedDataset, make_loader
    from data_prep.prepare import prepare
    from data_prep.synth import synthesize

    res = {"benchmark": "loader", "machine": machine(), "image_size": args.image_size, "batch": args.batch}
    with tempfile.TemporaryDirectory() as tmp:
        raw, out = Path(tmp) / "raw", Path(tmp) / "prep"
        synthesize("hateful_memes", raw, SynthConfig(n=args.n, seed=0))
        t = time.perf_counter()
        prepare("hateful_memes", raw, out, PrepareConfig(image_size=args.image_size, patch_size=args.patch_size, progress=False))
        res["prepare_seconds"] = round(time.perf_counter() - t, 2)
        files = sorted((raw / "img").glob("*.png"))

        t = time.perf_counter()
        images = [np.asarray(Image.open(f).convert("RGB")) for f in files]
        res["decode_only_images_per_s"] = _rate(len(files), time.perf_counter() - t)

        proc = ViltImageProcessor(size={"shortest_edge": args.image_size}, size_divisor=args.patch_size)
        t = time.perf_counter()
        for k in range(0, len(images), args.batch):
            proc(images[k : k + args.batch], return_tensors="pt")
        res["processor_images_per_s"] = _rate(len(images), time.perf_counter() - t)

        ds = PreparedDataset(out, "train")
        for w in args.workers:
            loader = make_loader(ds, args.batch, shuffle=True, num_workers=w)
            t = time.perf_counter()
            n = sum(b["pixel_values"].shape[0] for b in loader)
            res[f"prepared_w{w}_images_per_s"] = _rate(n, time.perf_counter() - t)
        n_img = len(ds)
        stored = np.load(out / "train" / "images.npy", mmap_mode="r").nbytes
        per_image = stored / n_img
        res["prepared_bytes_per_image"] = int(per_image)
        res["paper_scale_disk_gb"] = {k: round(v * per_image / 1e9, 1) for k, v in IMAGES_AT_PAPER_SCALE.items()}
        best = max(v for k, v in res.items() if k.startswith("prepared_w"))
        res["speedup_prepared_vs_processor"] = round(best / res["processor_images_per_s"], 1)
    print(json.dumps(res, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(res, indent=1) + "\n")
    return res


if __name__ == "__main__":
    main()
