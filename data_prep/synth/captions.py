"""Pretraining corpus: label-free image-caption pairs in COCO captions' layout.

Written as the 2017 COCO captions release ships (see :mod:`data_prep.readers.coco`)::

    RAW/annotations/captions_train2017.json   {"info", "licenses", "images", "annotations"}
    RAW/annotations/captions_val2017.json
    RAW/train2017/<12-digit id>.jpg           (images of the train split)
    RAW/val2017/<12-digit id>.jpg

Every image has ``CAPTIONS_PER_IMAGE`` captions (COCO has about five). The scenes are the
twins' world (:mod:`.world`): one kind of scene, 1-3 coloured noun glyphs in the slots of a
64 x 64, 64 x 96 or 96 x 64 image, drawn with seeds disjoint from every twin (the generator is
seeded with ``[CORPUS_SEED_TAG, seed]``, a seed sequence no twin's integer seed can produce),
and carry no label. Since there is one kind of scene, any other image is a negative of the
same kind, and a caption can only be matched by reading what it names. A caption describes
every object's colour, noun and place ("a red lion at the top left and a blue kite at the
bottom right"): token-level grounding, the words name what particular patches show. As often
as not it goes on in one of the twins' own registers, written by their own sentence
generators and about this scene:

- meme-like (:func:`.hateful_memes.caption`): two depicted nouns (one depicted and one other
  if the scene has a single object), a stance towards one of them and two cue words, all
  drawn at random, so no stance or cue means anything here;
- plot-like (:func:`.mmimdb.plots`): filler sentences with the keywords of random genres that
  name every depicted object ("... finds the red lion ...").

Both name only what the image shows, so the twins' words are read in the contexts the twins
write them in, and a tokenizer fitted on the corpus knows every word the tokenized twins can
hold (:func:`.vocab.twin_vocabulary`). Neither carries a label: stances and genres are drawn
independently of the scene.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from ..config import SynthConfig
from . import world as W
from .hateful_memes import caption as meme_caption
from .mmimdb import pick_genres, plots

CORPUS_SEED_TAG = 0x434F434F  # "COCO": makes the corpus' seed sequence disjoint from the twins'
CAPTIONS_PER_IMAGE = 2
VAL_SHARE = 0.1
P_REGISTER = 0.5  # share of captions that go on in a twin's register
OPENERS = ("", "a picture of", "an image with", "there is", "here we see", "look at")


def corpus_rng(seed: int) -> np.random.Generator:
    """The corpus' generator: disjoint from every twin's ``default_rng(seed)`` stream."""
    return np.random.default_rng([CORPUS_SEED_TAG, int(seed)])


def describe(rng: np.random.Generator, scene: W.Scene) -> str:
    """Every object described, in a random order, after a random opener."""
    phrases = [W.describe(scene.objects[k], scene) for k in rng.permutation(len(scene.objects))]
    opener = OPENERS[rng.integers(len(OPENERS))]
    return " ".join(w for w in (opener, " and ".join(phrases)) if w)


def meme_like(rng: np.random.Generator, scene: W.Scene) -> str:
    """A Hateful Memes twin caption about two nouns the scene shows (one and another if it shows
    one), with a random stance towards a random one of them and random cue words."""
    shown = [o.noun for o in scene.objects]
    nouns = list(rng.choice(shown, size=2, replace=False)) if len(shown) > 1 else \
        [shown[0], [n for n in W.NOUNS if n != shown[0]][rng.integers(len(W.NOUNS) - 1)]]
    nouns = [str(n) for n in rng.permutation(nouns)]
    t = {"nouns": nouns, "target": nouns[rng.integers(2)], "attack": bool(rng.random() < 0.5),
         "z_text": float(rng.standard_normal())}
    return meme_caption(rng, t)


def plot_like(rng: np.random.Generator, scene: W.Scene) -> str:
    """The longest MM-IMDb twin plot of random genres, naming every object of the scene."""
    return max(plots(rng, pick_genres(rng), scene, p_name=1.0), key=len)


def caption(rng: np.random.Generator, scene: W.Scene) -> str:
    """A description, followed (with probability ``P_REGISTER``) by a meme-like or a plot-like
    text about the same scene, one or the other with equal odds."""
    text = describe(rng, scene)
    if rng.random() < P_REGISTER:
        text += " , " + (meme_like(rng, scene) if rng.random() < 0.5 else plot_like(rng, scene))
    return text


def scene(rng: np.random.Generator) -> tuple[np.ndarray, list[str], W.Scene]:
    """One image and ``CAPTIONS_PER_IMAGE`` captions of it."""
    sc = W.random_scene(rng, int(rng.integers(1, 4)))
    img = W.draw(rng, sc)
    return img, [caption(rng, sc) for _ in range(CAPTIONS_PER_IMAGE)], sc


def write_coco(out: Path, ids, splits: dict, draw) -> None:
    """Write ``RAW/annotations/captions_<split>2017.json`` and ``RAW/<split>2017/<id>.jpg``:
    ``splits`` maps ``"val"``/``"train"`` to sample indices, ``draw(i) -> (image, captions)``
    makes sample i's picture and captions (called in index order, split by split), ``ids[i]``
    is its image id."""
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    ann_id = 0
    for split, idx in splits.items():
        folder = f"{split}2017"
        (out / folder).mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for i in idx:
            img, captions = draw(i)
            image_id = int(ids[i])
            name = f"{image_id:012d}.jpg"
            Image.fromarray(img).save(out / folder / name, quality=92)
            images.append({"id": image_id, "file_name": name, "height": int(img.shape[0]), "width": int(img.shape[1]),
                           "license": 0, "coco_url": "", "date_captured": ""})
            for text in captions:
                ann_id += 1
                annotations.append({"id": ann_id, "image_id": image_id, "caption": text})
        doc = {"info": {"description": "synthetic pretraining corpus in COCO captions' layout", "version": "1.0",
                        "year": 2017},
               "licenses": [{"id": 0, "name": "synthetic", "url": ""}], "images": images, "annotations": annotations}
        (out / "annotations" / f"captions_{folder}.json").write_text(json.dumps(doc), encoding="utf-8")


def synth_captions(out: str | Path, cfg: SynthConfig = SynthConfig()) -> dict:
    """Write ``cfg.n`` images (about 10 % in val2017) with their captions under ``out``.

    Returns ``{"train": n_images, "val": n_images, "kinds": {"scene": n}}``.
    """
    out = Path(out)
    rng = corpus_rng(cfg.seed)
    n_val = max(1, int(round(VAL_SHARE * cfg.n)))
    ids = rng.choice(np.arange(1, 10**6), size=cfg.n, replace=False)
    splits = {"val": range(0, n_val), "train": range(n_val, cfg.n)}
    write_coco(out, ids, splits, lambda i: scene(rng)[:2])
    return {"train": len(splits["train"]), "val": len(splits["val"]), "kinds": {"scene": cfg.n}}
