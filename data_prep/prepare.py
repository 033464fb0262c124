"""`prepare`: raw layout -> prepared folder + manifest.json.

manifest.json (sorted keys, no timestamps):
    dataset, format_version
    splits            {"train": n, "dev": n, "test": n}   records stored per split
    raw_records       records found in the raw files per split (stored + dropped + unlabelled)
    dropped           {split: {reason: count}}            see issues.py for the policy
    unlabelled        {file: {"records", "split", "used_for_evaluation": false}}   (Hateful Memes)
    task              {"kind", "n_out", "label_names", "headline_metric"}
    modalities        ["text", "image"] or ["text", "video", "audio"]
    sources           {relative path: sha256}; a folder of per-record files (img/, dataset/, ...)
                      gets one combined digest over the files read (checksums.combined_digest)
    image + text datasets: image {image_size, patch_size, resample, max_height, max_width},
                      text {tokenizer, tokenizer_file, max_text_len, vocab_size, pad_id, ...;
                      tokenizer_sha256 for a pretrained tokenizer},
                      vocab_size, max_text_len
    feature datasets: feature_dims, time_steps, replaced {"audio -inf -> 0": {split: values}},
                      mask_rule, label_policy
    split_overlap     the split-integrity check (overlap.py): policy, what was compared, counts
Counts are checked: raw_records == splits + dropped + unlabelled for every split, or it is a bug.
Split integrity: a record in two splits (same id, or identical content) is a DataError naming
both, or with --allow-overlap a counted drop from the later split (test is kept, then dev).
"""

from __future__ import annotations

import hashlib
import json
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from . import text as text_mod
from .checksums import combined_digest
from .config import SPLITS, PrepareConfig
from .images import ImageStoreWriter, load_resized
from .issues import LOG_FILE, DataError, SkipLog
from .overlap import OverlapCheck
from .readers.hateful_memes import read_hateful_memes
from .readers.mmimdb import read_mmimdb
from .readers.multibench import SPLIT_KEYS, TEXT_ZERO_RULE, read_multibench
from .store import OutputDir, save_arrays, write_json
from .tasks import task_spec

FORMAT_VERSION = 1
LABEL_NAMES = {"hateful_memes": ["hateful"], "ur_funny": ["humor"], "mosei": ["sentiment"]}


def prepare(dataset: str, raw: str | Path, out: str | Path, config: PrepareConfig = PrepareConfig()) -> dict:
    """Convert RAW (the dataset's raw layout) into the prepared folder OUT; returns the manifest."""
    spec = task_spec(dataset)
    raw = Path(raw)
    if not raw.is_dir():
        raise DataError(f"{raw}: raw folder not found")
    with OutputDir(out) as work:
        if spec.is_image_text:
            manifest = _prepare_image_text(dataset, raw, work, config)
        else:
            manifest = _prepare_features(dataset, raw, work, config)
        write_json(work / "manifest.json", manifest)
    return manifest


def _task(dataset: str, label_names: list[str]) -> dict:
    spec = task_spec(dataset)
    n_out = len(label_names) if spec.kind == "multilabel" else 1
    return {"kind": spec.kind, "n_out": n_out, "label_names": label_names, "headline_metric": spec.headline_metric}


def _check_counts(raw_counts: dict, stored: dict, log: SkipLog, unlabelled: dict) -> None:
    for split in SPLITS:
        unl = sum(u["records"] for u in unlabelled.values() if u.get("split") == split)
        if raw_counts[split] != stored[split] + log.total(split) + unl:
            raise AssertionError(
                f"count mismatch in {split}: raw {raw_counts[split]} != stored {stored[split]} "
                f"+ dropped {log.total(split)} + unlabelled {unl}"
            )


def _images(records, config: PrepareConfig, desc: str, root: Path):
    """Yield ImageResult per record, in order, in-process or with a process pool."""
    args = [(str(r.image), config.image_size, config.patch_size, str(root)) for r in records]
    bar = dict(total=len(args), desc=desc, disable=not config.progress, leave=False)
    if config.workers <= 1 or len(args) < 64:
        yield from tqdm((load_resized(*a) for a in args), **bar)
        return
    with Pool(config.workers) as pool:
        yield from tqdm(pool.imap(_load_resized_star, args, chunksize=16), **bar)


def _load_resized_star(a):
    return load_resized(*a)


def _prepare_image_text(dataset: str, raw: Path, work: Path, config: PrepareConfig) -> dict:
    log, genre_log = SkipLog(config.strict), SkipLog(config.strict)
    if dataset == "hateful_memes":
        found = read_hateful_memes(raw, log)
        label_names = LABEL_NAMES[dataset]
    else:
        found = read_mmimdb(raw, log, tuple(config.genres), genre_log)
        label_names = list(config.genres)
    pretrained = None if config.tokenizer == "train" else text_mod.load_pretrained(config.tokenizer)

    folder_files = dict(found.meta_digests)  # relative path -> sha256, for combined digests
    kept, max_hw = {}, [0, 0]
    overlap = OverlapCheck(config.allow_overlap)
    for split in SPLITS:  # ids first: an overlap is reported before any image is decoded
        overlap.check_ids(split, [(r.raw_id, r.where) for r in found.splits[split]])
    for split in overlap.order:  # test first: a sample in two splits is kept in the earlier one
        writer, keep = ImageStoreWriter(work / split), []
        records = []
        for rec in found.splits[split]:
            if overlap.dropped(split, rec.raw_id):
                log.drop(split, overlap.reason_id(split, rec.raw_id), rec.where)
            else:
                records.append(rec)
        for rec, res in zip(records, _images(records, config, f"{dataset} {split} images", raw)):
            rel = rec.image.relative_to(raw.resolve()).as_posix()  # readers resolve inside raw
            if res.sha256 is not None:
                folder_files[rel] = res.sha256
            if res.problem:
                log.skip(split, res.problem, f"{rec.where}: {rel} ({res.detail})")
                continue
            content = hashlib.sha256(json.dumps([res.sha256, rec.text]).encode("utf-8")).hexdigest()
            reason = overlap.check_content(split, content, f"{rec.where}: {rel}")
            if reason is not None:
                log.drop(split, reason, f"{rec.where}: {rel}")
                continue
            writer.add(res.pixels)
            max_hw = [max(max_hw[0], res.pixels.shape[1]), max(max_hw[1], res.pixels.shape[2])]
            keep.append(rec)
        writer.close()
        kept[split] = keep

    tok = pretrained or text_mod.fit_wordpiece([r.text for r in kept["train"]], config.vocab_size)
    for split in SPLITS:
        recs = kept[split]
        input_ids, attention_mask = text_mod.encode(tok, [r.text for r in recs], config.max_text_len)
        labels = np.stack([r.label for r in recs]).astype(np.float32) if recs else \
            np.zeros((0,) + (() if dataset == "hateful_memes" else (len(label_names),)), np.float32)
        save_arrays(work / split, {"labels": labels, "input_ids": input_ids, "attention_mask": attention_mask})
        write_json(work / split / "raw_ids.json", [r.raw_id for r in recs])
    text_mod.save(tok, work)

    stored = {s: len(kept[s]) for s in SPLITS}
    unlabelled = found.extra.pop("unlabelled", {})
    _check_counts(found.raw_counts, stored, log, unlabelled)
    sources = dict(found.sources)
    for folder in sorted({rel.split("/")[0] for rel in folder_files}):
        sources[f"{folder}/"] = combined_digest({k: v for k, v in folder_files.items() if k.startswith(folder + "/")})
    ids = text_mod.special_ids(tok)
    text_info = {
        "tokenizer": config.tokenizer, "tokenizer_file": text_mod.TOKENIZER_FILE,
        "max_text_len": config.max_text_len, "vocab_size": tok.get_vocab_size(),
        **{f"{k}_id": v for k, v in ids.items()},
    }
    if pretrained is not None:  # what was used, whoever found it: the serialised tokenizer's digest
        text_info["tokenizer_sha256"] = hashlib.sha256(pretrained.to_str().encode()).hexdigest()
    if config.tokenizer == "train":
        text_info["vocabulary"] = ("deterministic WordPiece: specials, characters and ##characters, then the most "
                                   "frequent train-split words (see data_prep/text.py)")
    manifest = {
        "format_version": FORMAT_VERSION, "dataset": dataset, "splits": stored, "raw_records": found.raw_counts,
        "dropped": log.as_dict(), "unlabelled": unlabelled, "task": _task(dataset, label_names),
        "modalities": ["text", "image"], "sources": sources,
        "image": {"image_size": config.image_size, "patch_size": config.patch_size, "resample": "bicubic",
                  "max_height": max_hw[0], "max_width": max_hw[1], "layout": "uint8 CHW, one flat array per split"},
        "text": text_info, "vocab_size": text_info["vocab_size"], "max_text_len": config.max_text_len,
        "split_overlap": overlap.summary(),
        **found.extra,
    }
    if dataset == "mmimdb":
        manifest["dropped_genres"] = genre_log.as_dict()
    log.report(path=work / LOG_FILE)  # the full converter log; the counts are in the manifest
    genre_log.report(path=work / LOG_FILE, title="genre labels dropped from kept movies")
    return manifest


def _prepare_features(dataset: str, raw: Path, work: Path, config: PrepareConfig) -> dict:
    spec = task_spec(dataset)
    log = SkipLog(config.strict)
    path = raw / spec.raw_file
    splits, digest = read_multibench(path, spec.feature_dims, spec.kind, log, root=raw, with_digest=True)
    overlap = OverlapCheck(config.allow_overlap)
    for split in SPLITS:
        overlap.check_ids(split, [(i, _feature_where(path, splits[split], split, k)) for k, i in enumerate(splits[split].raw_ids)])
    for split in overlap.order:
        fs, keep = splits[split], []
        for k, raw_id in enumerate(fs.raw_ids):
            where = _feature_where(path, fs, split, k)
            if overlap.dropped(split, raw_id):
                log.drop(split, overlap.reason_id(split, raw_id), where)
                continue
            h = hashlib.sha256()
            for m in sorted(fs.features):
                h.update(m.encode() + np.ascontiguousarray(fs.features[m][k]).tobytes())
            reason = overlap.check_content(split, h.hexdigest(), where)
            if reason is not None:
                log.drop(split, reason, where)
                continue
            keep.append(k)
        if len(keep) == 0:
            raise DataError(f"{path.name}['{SPLIT_KEYS[split]}']: no sample left after dropping the samples that are "
                            f"also in another split (--allow-overlap)")
        if len(keep) < len(fs.raw_ids):
            splits[split] = fs.select(np.asarray(keep, dtype=np.int64))
    for split, fs in tqdm(splits.items(), desc=f"{dataset} splits", disable=not config.progress, leave=False):
        save_arrays(work / split, {**fs.features, "mask": fs.mask, "labels": fs.labels})
        write_json(work / split / "raw_ids.json", fs.raw_ids)
    stored = {s: len(fs.labels) for s, fs in splits.items()}
    raw_counts = {s: fs.raw_count for s, fs in splits.items()}
    _check_counts(raw_counts, stored, log, {})
    label_policy = ("sentiment in [-3, 3], kept as is" if spec.kind == "regression"
                    else "raw labels 0/1 or -1/+1; stored as 1 where label > 0, else 0")
    manifest = {
        "format_version": FORMAT_VERSION, "dataset": dataset, "splits": stored, "raw_records": raw_counts,
        "dropped": log.as_dict(), "unlabelled": {}, "task": _task(dataset, LABEL_NAMES[dataset]),
        "modalities": list(spec.modalities), "feature_dims": dict(spec.feature_dims),
        "time_steps": int(splits["train"].mask.shape[1]),
        "sources": {spec.raw_file: digest},
        "split_keys": {"train": "train", "dev": "valid", "test": "test"},
        "replaced": {"audio -inf -> 0": {s: fs.replaced_neg_inf for s, fs in splits.items()}},
        "mask_rule": "valid from the first time step whose text features are not all zero (MultiBench aligned loader)",
        "drop_rule": TEXT_ZERO_RULE,
        "label_policy": label_policy,
        "vocab_size": None, "max_text_len": None,
        "split_overlap": overlap.summary(),
    }
    log.report(path=work / LOG_FILE)  # the full converter log; the counts are in the manifest
    return manifest


def _feature_where(path: Path, fs, split: str, k: int) -> str:
    row = int(fs.raw_rows[k]) if fs.raw_rows is not None else k
    return f"{path.name}['{SPLIT_KEYS[split]}'] record {row} (id {fs.raw_ids[k]})"


def summary(manifest: dict) -> str:
    """A short human-readable description of a manifest (for the CLI)."""
    keys = ["dataset", "splits", "dropped", "unlabelled", "task", "modalities", "vocab_size", "feature_dims", "image",
            "split_overlap"]
    return json.dumps({k: manifest[k] for k in keys if k in manifest}, indent=2, sort_keys=True)
