"""Every twin, and the pretraining corpus, has disjoint splits by id and by content, checked
directly on the prepared data (not only through the converters' own overlap check).

For each twin the prepared splits' ids are compared, and so are the samples themselves (text
token ids with the image pixels, or the feature arrays, hashed per sample): no id and no sample
may be in two splits. The converter's check must have compared every record and found nothing.
"""

from __future__ import annotations

import hashlib
import itertools
import json

import numpy as np
import pytest

from data_prep.config import PrepareConfig, SynthConfig
from data_prep.dataset import PreparedDataset
from data_prep.prepare import prepare
from data_prep.store import read_manifest
from data_prep.synth import synthesize

SPLITS = ("train", "dev", "test")


def _sample_digests(ds: PreparedDataset) -> list[str]:
    """One sha256 per sample over every array the sample holds (labels excluded)."""
    out = []
    for i in range(len(ds)):
        item = ds[i]
        h = hashlib.sha256()
        for k in sorted(item):
            if k in ("id", "label"):  # the index within the split and the label are not the sample
                continue
            v = item[k]
            for kk, vv in sorted(v.items()) if isinstance(v, dict) else [("", v)]:
                h.update(f"{k}{kk}".encode())
                h.update(np.ascontiguousarray(np.asarray(vv)).tobytes())
        out.append(h.hexdigest())
    return out


@pytest.mark.parametrize("dataset", ["hateful_memes", "mmimdb", "ur_funny", "mosei"])
def test_twin_splits_are_disjoint_by_id_and_content(dataset, tmp_path):
    synthesize(dataset, tmp_path / "raw", SynthConfig(n=120, seed=5, steps=6))
    prepare(dataset, tmp_path / "raw", tmp_path / "prep", PrepareConfig(image_size=32, patch_size=16, progress=False))
    man = read_manifest(tmp_path / "prep")
    check = man["split_overlap"]
    assert check["policy"] == "error" and not check["found"] and not check["dropped"]
    assert sum(check["records_compared"].values()) >= sum(man["splits"].values())
    sets = {s: PreparedDataset(tmp_path / "prep", s) for s in SPLITS}
    ids = {s: set(map(str, json.loads((tmp_path / "prep" / s / "raw_ids.json").read_text()))) for s in SPLITS}
    digests = {s: set(_sample_digests(d)) for s, d in sets.items()}
    for a, b in itertools.combinations(SPLITS, 2):
        assert not ids[a] & ids[b], f"{dataset}: ids in {a} and {b}"
        assert not digests[a] & digests[b], f"{dataset}: identical samples in {a} and {b}"
    assert all(len(digests[s]) == len(ids[s]) == man["splits"][s] > 0 for s in SPLITS)


def test_caption_corpus_splits_are_disjoint(tmp_path):
    from data_prep.readers.coco import prepare_captions
    from data_prep.synth.captions import synth_captions

    synth_captions(tmp_path / "raw", SynthConfig(n=60, seed=7))
    prepare_captions(tmp_path / "raw", tmp_path / "prep", PrepareConfig(image_size=32, patch_size=16, progress=False))
    check = read_manifest(tmp_path / "prep")["split_overlap"]
    assert not check["found"] and not check["dropped"] and sum(check["records_compared"].values()) > 0


def test_the_data_summary_shows_the_check(tmp_path):
    from wma_study.figures import data_summary

    synthesize("ur_funny", tmp_path / "raw", SynthConfig(n=60, seed=2, steps=4))
    prepare("ur_funny", tmp_path / "raw", tmp_path / "prep", PrepareConfig(progress=False))
    man = read_manifest(tmp_path / "prep")
    def rows(m):
        df = data_summary(m)
        return dict(zip(df.iloc[:, 0], df["value"]))

    text = rows(man)
    n = sum(man["split_overlap"]["records_compared"].values())
    assert text["records in two splits (same id or content)"] == f"none among {n} compared"
    man["split_overlap"].update(found={"dev-test": {"id": 1, "content": 1}}, dropped={"dev": 2},
                                policy="drop from the later split (--allow-overlap)")
    assert rows(man)["records in two splits (same id or content)"] == (
        "2 found, 2 dropped (drop from the later split (--allow-overlap))")
