"""The world (data_prep.synth): its glyphs, its corpus and its image+text twins, and what each twin asks for.

References are the written files themselves (pixels, captions, records) and scikit-learn fits on
the generating statistics; nothing is compared with numbers taken from the generators' code.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from data_prep.config import SynthConfig
from data_prep.synth import WORLD_FILE, synthesize
from data_prep.synth import world as W

N = 600


@pytest.fixture(scope="module")
def raws(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    out = {}
    for ds in ("hateful_memes", "mmimdb"):
        out[ds] = root / ds
        synthesize(ds, out[ds], SynthConfig(n=N, seed=3, steps=12, splits=(400, 50, 150)))
    return out


def test_glyphs_are_distinct_in_every_patch_and_one_texture_each():
    """Each glyph covers its 2 x 2 patches with one texture, and any two nouns differ in each of
    the four patches by at least 38 pixels: one patch token alone can tell the noun."""
    masks = {n: W.glyph_mask(n) for n in W.NOUNS}
    assert 12 <= len(masks) <= 15 and all(m.shape == (32, 32) for m in masks.values())
    inner = np.zeros((32, 32), bool)
    inner[3:-3, 3:-3] = True  # inside the 3-pixel colour frame (stated here, not read from the module)
    quarters = lambda m: [m[r:r + 16, c:c + 16] for r in (0, 16) for c in (0, 16)]  # noqa: E731
    for a in W.NOUNS:
        assert not (masks[a] & ~inner).any()  # no ink on the frame
        assert all(q.any() for q in quarters(masks[a]))  # ink on each of its 4 patches
        # one texture: the top-left quarter shifted onto the others agrees wherever both are inside
        ref = masks[a][3:16, 3:16]
        assert (masks[a][19:32 - 3, 3:16] == ref[:10]).all() and (masks[a][3:16, 19:29] == ref[:, :10]).all()
        for b in W.NOUNS:
            if a < b:
                differ = [int((qa != qb).sum()) for qa, qb in zip(quarters(masks[a]), quarters(masks[b]))]
                assert min(differ) >= 38, (a, b, differ)
    with pytest.raises(ValueError, match="unknown noun"):
        W.glyph_mask("unicorn")


def test_corpus_captions_name_what_their_slots_show(tmp_path):
    """Token-level grounding: every 'a <colour> <noun> <where>' phrase of a caption names a slot
    at that place whose frame has that colour and whose ink is that noun's glyph."""
    import re

    from data_prep.synth.captions import synth_captions

    synth_captions(tmp_path / "coco", SynthConfig(n=40, seed=1))
    doc = json.loads((tmp_path / "coco" / "annotations" / "captions_train2017.json").read_text())
    names = {im["id"]: im["file_name"] for im in doc["images"]}
    phrase = re.compile(r"an? (%s) (%s) (at the [a-z ]+?|on the \w+|in the middle)(?= and| ,|$)"
                        % ("|".join(W.COLOUR_NAMES), "|".join(W.NOUNS)))
    checked = 0
    for a in doc["annotations"]:
        found = phrase.findall(a["caption"])
        assert found, a["caption"]
        img = np.asarray(Image.open(tmp_path / "coco" / "train2017" / names[a["image_id"]]).convert("RGB")).astype(float)
        rows, cols = img.shape[0] // 32, img.shape[1] // 32
        for colour, noun, place in found:
            slots = [(r, c) for r in range(rows) for c in range(cols) if W.where(r, c, rows, cols) == place]
            assert len(slots) == 1, (place, rows, cols)
            r, c = slots[0]
            slot = img[r * 32:(r + 1) * 32, c * 32:(c + 1) * 32]
            frame = np.median(slot[W.frame_mask()], axis=0)
            assert min(W.COLOURS, key=lambda k: np.abs(frame - W.COLOURS[k]).sum()) == colour
            ink = slot.max(-1) < 100
            assert min(W.NOUNS, key=lambda n: (ink != W.glyph_mask(n)).sum()) == noun, a["caption"]
            checked += 1
    assert checked >= 40


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
            ink = slot.max(-1) < 100  # black ink on the light inside
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
    from data_prep.synth.mmimdb import ICONS

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

    from data_prep.synth.captions import synth_captions
    from data_prep.synth.vocab import twin_vocabulary

    synth_captions(tmp_path / "coco", SynthConfig(n=1500, seed=0))
    doc = json.loads((tmp_path / "coco" / "annotations" / "captions_train2017.json").read_text())
    seen = {w for a in doc["annotations"] for w in re.findall(r"[a-z]+", a["caption"].lower())}
    missing = (set(twin_vocabulary()) | set(W.NOUNS) | set(W.COLOUR_NAMES)) - seen
    assert not missing, sorted(missing)[:20]


def test_feature_twins_need_text_and_video_together(tmp_path):
    """UR-FUNNY and MOSEI: additive parts that each modality shows and a text x video product that
    only both together show; the ceilings see it (full beats additive by a clear margin)."""
    from wma_study.ceilings import ceilings

    for ds, better in (("ur_funny", lambda a, b: a > b + 0.02), ("mosei", lambda a, b: a < b - 0.05)):
        synthesize(ds, tmp_path / ds, SynthConfig(n=N, seed=3, steps=12, splits=(400, 50, 150)))
        got = ceilings(ds, tmp_path / ds).set_index("view")["test"]
        assert better(got["full"], got["additive"]), (ds, got.to_dict())
        assert better(got["additive"], max(got["text only"], got["image only"])) or ds == "mosei", (ds, got.to_dict())


def test_the_build_stops_under_the_itm_floor(tmp_path, monkeypatch):
    """check_itm_floor names every backbone whose held-out hard-negative ITM is under the floor."""
    import dataclasses

    from wma_study import pretrain_study as S
    from wma_study import profiles

    folders = {}
    for label, acc in (("b0", 0.91), ("b1", 0.62)):
        folders[label] = tmp_path / label
        folders[label].mkdir()
        (folders[label] / "pretrain.json").write_text(json.dumps({"metrics": {"itm_accuracy_hard": acc}}))
    monkeypatch.setattr(S, "backbone_folders", lambda scale: folders)
    floored = dataclasses.replace(profiles.get_profile("default"), itm_floor=0.8)
    monkeypatch.setitem(profiles.PROFILES, "default", floored)
    with pytest.raises(S.BelowFloor, match=r"b1 0\.620") as err:
        S.check_itm_floor("default")
    assert "b0" not in str(err.value).split("floor 0.8:")[1]
    folders["b1"].joinpath("pretrain.json").write_text(json.dumps({"metrics": {"itm_accuracy_hard": 0.8}}))
    assert S.check_itm_floor("default") == {"b0": 0.91, "b1": 0.8}
