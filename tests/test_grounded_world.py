"""The grounded world (opt-in, data_prep.synth.grounded): its corpus and twins, and what each twin asks for.

References are the written files themselves (pixels, captions, records) and scikit-learn fits on
the generating statistics; nothing is compared with numbers taken from the generators' code.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from data_prep.config import SynthConfig
from data_prep.synth.grounded import WORLD_FILE, synthesize
from data_prep.synth.grounded import world as W

N = 600


@pytest.fixture(scope="module")
def raws(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    out = {}
    for ds in ("hateful_memes", "mmimdb"):
        out[ds] = root / ds
        synthesize(ds, out[ds], SynthConfig(n=N, seed=3, steps=12, splits=(400, 50, 150)))
    return out


def test_glyphs_are_distinct_and_cover_two_by_two_patches():
    masks = {n: W.glyph_mask(n) for n in W.NOUNS}
    assert 12 <= len(masks) <= 15 and all(m.shape == (32, 32) for m in masks.values())
    quarters = lambda m: [m[r:r + 16, c:c + 16] for r in (0, 16) for c in (0, 16)]  # noqa: E731
    for a in W.NOUNS:
        assert all(q.any() and not q.all() for q in quarters(masks[a]))  # a pattern on each of its 4 patches
        for b in W.NOUNS:
            if a < b:  # at least 3 of the 4 patches differ, each by at least 30 of 256 pixels
                differ = [(qa != qb).sum() for qa, qb in zip(quarters(masks[a]), quarters(masks[b]))]
                assert sum(d >= 30 for d in differ) >= 3, (a, b, differ)
    with pytest.raises(ValueError, match="unknown noun"):
        W.glyph_mask("unicorn")


def test_every_slot_has_its_own_name():
    for rows, cols in W.LAYOUTS:
        names = {W.where(r, c, rows, cols) for r in range(rows) for c in range(cols)}
        assert len(names) == rows * cols


def test_images_are_patch_multiples_and_show_their_scene(raws):
    world = json.loads((raws["hateful_memes"] / WORLD_FILE).read_text())
    for meme_id, rec in list(world.items())[:40]:
        img = np.asarray(Image.open(raws["hateful_memes"] / "img" / f"{meme_id}.png").convert("RGB")).astype(float)
        assert img.shape[0] % 32 == 0 and img.shape[1] % 32 == 0
        for noun, colour, r, c in rec["scene"]["objects"]:
            slot = img[r * 32:(r + 1) * 32, c * 32:(c + 1) * 32]
            frame = np.median(slot[W.frame_mask()], axis=0)  # the object's colour, around the slot
            assert min(W.COLOURS, key=lambda k: np.abs(frame - W.COLOURS[k]).sum()) == colour
            ink = slot.max(-1) < 100  # black strokes on the light inside
            assert (ink == W.glyph_mask(noun)).mean() > 0.97


def test_hateful_memes_captions_name_their_target_and_confounders_flip_it(raws):
    world = json.loads((raws["hateful_memes"] / WORLD_FILE).read_text())
    texts = {}
    for name in ("train.jsonl", "dev_seen.jsonl", "test_seen.jsonl"):
        for line in (raws["hateful_memes"] / name).read_text().splitlines():
            r = json.loads(line)
            texts[str(r["id"])] = r
            w = world[str(r["id"])]
            assert w["label"] == r["label"]
            words = r["text"].split()
            assert w["target"] in words and all(n in words for n in w["nouns"])
            shown = {o[0] for o in w["scene"]["objects"]}
            assert w["depicted"] == (w["target"] in shown)
            assert w["hate"] == (w["attack"] and w["depicted"])
    pairs = [(k, w["confounder_of"]) for k, w in world.items() if w["confounder_of"] is not None and k in texts]
    assert len(pairs) > 0.1 * len(texts)
    for k, origin in pairs:
        a, b = world[k], world[str(origin)]
        assert texts[k]["text"] == texts[str(origin)]["text"] and a["split"] == b["split"]
        assert a["depicted"] != b["depicted"]  # the same text with an image that shows the target or not
    flipped = [world[k]["label"] != world[str(o)]["label"] for k, o in pairs if world[k]["attack"]]
    assert np.mean(flipped) > 0.6  # for an attack, the other image mostly flips the label


def test_mmimdb_posters_show_their_genres_icons_and_plots_name_some(raws):
    from data_prep.synth.grounded.mmimdb import ICONS

    world = json.loads((raws["mmimdb"] / WORLD_FILE).read_text())
    named = 0
    for movie_id, rec in world.items():
        shown = {o[0] for o in rec["scene"]["objects"]}
        assert shown <= set(ICONS.values())
        plot = max(json.loads((raws["mmimdb"] / "dataset" / f"{movie_id}.json").read_text())["plot"], key=len)
        named += any(f"the {o[1]} {o[0]}" in plot.lower() for o in rec["scene"]["objects"])
    icons_of_genres = [ICONS[g] in {o[0] for o in rec["scene"]["objects"]}
                       for rec in world.values() for g in rec["genres"] if g in ICONS]
    assert np.mean(icons_of_genres) > 0.7 and named > 0.2 * len(world)


def test_ceilings_say_the_labels_need_the_modalities_together(raws):
    from wma_study.ceilings import ceilings

    got = {ds: ceilings(ds, raws[ds]).set_index("view")["test"] for ds in raws}
    hm = got["hateful_memes"]
    assert hm["full"] > hm["additive"] + 0.08 and hm["additive"] >= max(hm["text only"], hm["image only"]) - 0.02
    mm = got["mmimdb"]
    assert mm["full"] == pytest.approx(mm["additive"]) and mm["additive"] > max(mm["text only"], mm["image only"])


def test_corpus_knows_every_twin_word(tmp_path):
    """The tokenizer is fitted on the corpus, so every word a twin writes must occur in it."""
    import re

    from data_prep.synth.grounded.captions import synth_captions
    from data_prep.synth.grounded.vocab import twin_vocabulary

    synth_captions(tmp_path / "coco", SynthConfig(n=1500, seed=0))
    doc = json.loads((tmp_path / "coco" / "annotations" / "captions_train2017.json").read_text())
    seen = {w for a in doc["annotations"] for w in re.findall(r"[a-z]+", a["caption"].lower())}
    missing = (set(twin_vocabulary()) | set(W.NOUNS) | set(W.COLOUR_NAMES)) - seen
    assert not missing, sorted(missing)[:20]
