"""Command line: `python -m data_prep {synth,prepare,info,probe} ...` (see --help of each)."""

from __future__ import annotations

import argparse
import json
import sys
import time

from .config import DATASETS, MMIMDB_GENRES, PrepareConfig, SynthConfig
from .issues import DataError

CAPTIONS = "coco_captions"  # the pretraining corpus (data_prep/readers/coco.py)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m data_prep", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("synth", help="write a synthetic twin in the dataset's raw layout")
    s.add_argument("dataset", choices=DATASETS + (CAPTIONS,),
                   help=f"a twin, or {CAPTIONS} (the label-free pretraining corpus in COCO captions' layout)")
    s.add_argument("--out", required=True, help="raw folder to write")
    s.add_argument("--n", type=int, default=SynthConfig.n, help="labelled samples in total (default %(default)s)")
    s.add_argument("--seed", type=int, default=SynthConfig.seed)
    s.add_argument("--steps", type=int, default=SynthConfig.steps, help="time steps (MultiBench twins; default %(default)s)")
    s.add_argument("--layout", choices=("archive", "images+labels"), default="archive", help="MM-IMDb layout")

    d = PrepareConfig()
    q = sub.add_parser("prepare", help="convert a raw folder into the prepared format")
    q.add_argument("dataset", choices=DATASETS + (CAPTIONS,))
    q.add_argument("--raw", required=True, help="raw folder, as the dataset ships (or a twin)")
    q.add_argument("--out", required=True, help="prepared folder to write (replaced if it is one)")
    q.add_argument("--image-size", type=int, default=d.image_size,
                   help="ViLT shorter side (default %(default)s; the embedded tiny default uses 64)")
    q.add_argument("--patch-size", type=int, default=d.patch_size,
                   help="ViLT patch size (default %(default)s; the embedded tiny default uses 16)")
    q.add_argument("--max-text-len", type=int, default=d.max_text_len)
    q.add_argument("--tokenizer", default=d.tokenizer,
                   help="'train' (fit WordPiece on the train text) or a hub name / local folder, e.g. dandelin/vilt-b32-mlm")
    q.add_argument("--vocab-size", type=int, default=d.vocab_size, help="for --tokenizer train")
    q.add_argument("--genres", default=",".join(MMIMDB_GENRES), help="MM-IMDb label set, comma separated")
    q.add_argument("--strict", action="store_true", help="turn every counted skip into an error")
    q.add_argument("--allow-overlap", action="store_true",
                   help="a record in two splits (same id or identical content) is dropped from the later split "
                        "(kept in test, then dev) and counted, instead of being an error")
    q.add_argument("--workers", type=int, default=d.workers, help="processes for image resizing")
    q.add_argument("--quiet", action="store_true", help="no progress bars")

    i = sub.add_parser("info", help="print a prepared folder's manifest summary")
    i.add_argument("prepared")

    r = sub.add_parser("probe", help="linear probe: headline metric per modality subset")
    r.add_argument("prepared")
    r.add_argument("--json", help="also write the result to this file")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    start = time.perf_counter()
    try:
        if args.command == "synth" and args.dataset == CAPTIONS:
            from .synth.captions import synth_captions

            counts = synth_captions(args.out, SynthConfig(n=args.n, seed=args.seed, steps=args.steps))
            print(f"wrote the {CAPTIONS} corpus ({counts}) to {args.out} ({time.perf_counter() - start:.1f} s)")
        elif args.command == "synth":
            from .synth import synthesize

            options = {"layout": args.layout} if args.dataset == "mmimdb" else {}
            synthesize(args.dataset, args.out, SynthConfig(n=args.n, seed=args.seed, steps=args.steps), **options)
            print(f"wrote the {args.dataset} twin to {args.out} ({time.perf_counter() - start:.1f} s)")
        elif args.command == "prepare":
            from .prepare import prepare, summary

            config = PrepareConfig(
                image_size=args.image_size, patch_size=args.patch_size, max_text_len=args.max_text_len,
                tokenizer=args.tokenizer, vocab_size=args.vocab_size,
                genres=tuple(g.strip() for g in args.genres.split(",") if g.strip()),
                strict=args.strict, allow_overlap=args.allow_overlap, workers=args.workers, progress=not args.quiet,
            )
            if args.dataset == CAPTIONS:
                from .readers.coco import prepare_captions

                manifest = prepare_captions(args.raw, args.out, config)
            else:
                manifest = prepare(args.dataset, args.raw, args.out, config)
            print(summary(manifest))
            print(f"prepared {args.dataset} in {args.out} ({time.perf_counter() - start:.1f} s)")
        elif args.command == "info":
            from .prepare import summary
            from .store import read_manifest

            print(summary(read_manifest(args.prepared)))
        elif args.command == "probe":
            from .probe import probe

            result = probe(args.prepared)
            text = json.dumps(result, indent=2, sort_keys=True)
            print(text)
            if args.json:
                with open(args.json, "w") as f:
                    f.write(text + "\n")
    except (DataError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
