"""Pretraining corpus: label-free image-caption pairs in COCO captions' layout.

Written as the 2017 COCO captions release ships (see :mod:`data_prep.readers.coco`)::

    RAW/annotations/captions_train2017.json   {"info", "licenses", "images", "annotations"}
    RAW/annotations/captions_val2017.json
    RAW/train2017/<12-digit id>.jpg           (images of the train split)
    RAW/val2017/<12-digit id>.jpg

Every image has ``CAPTIONS_PER_IMAGE`` captions (COCO has about five). The scenes come from the
twins' generative world, drawn with seeds disjoint from every twin (the generator is seeded with
``[CORPUS_SEED_TAG, seed]``, a seed sequence no twin's integer seed can produce), and carry no
label. Three kinds of scene, in equal shares:

- ``objects``: grey 16-pixel tiles with 1-3 coloured shapes (square, circle, cross, triangle) in
  tiles of their own. The caption names each shape's colour, shape and position ("a teal circle at
  the top left"): token-level grounding, the words name what particular tiles show.
- ``meme``: a Hateful Memes twin image (red/blue and light/dark tiles) with a twin caption drawn
  from the same latents, plus a grounding clause naming the majority colours and one tile ("mostly
  red and dark tiles, a light tile at the bottom right").
- ``poster``: an MM-IMDb twin poster (grey tiles with genre colours) and its longest plot, plus a
  clause naming one or two of the coloured tiles ("an olive tile at the top").

Colours are named by :data:`COLOUR_NAMES` (the MM-IMDb twin's 15 palette colours) and
:data:`MEME_COLOUR_NAMES`; positions on a 3 x 3 partition of the tile grid (:func:`position`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from ..config import SynthConfig
from . import hateful_memes as hm
from . import mmimdb as mm
from .drawing import tile_image
from .latent import sample_latents
from .words import FILLER_NOUNS

CORPUS_SEED_TAG = 0x434F434F  # "COCO": makes the corpus' seed sequence disjoint from the twins'
CAPTIONS_PER_IMAGE = 2
TILE = 16
SIZES = ((64, 64), (64, 96), (96, 64))  # (height, width) of the object scenes
VAL_SHARE = 0.1
KINDS = ("objects", "meme", "poster")

#: Names of the MM-IMDb twin's palette colours (same order as ``mmimdb.PALETTE``).
COLOUR_NAMES = ("crimson", "green", "yellow", "blue", "orange", "purple", "cyan", "magenta",
                "lime", "pink", "teal", "brown", "maroon", "navy", "olive")
OBJECT_COLOURS = (0, 1, 2, 3, 4, 5, 6, 7)  # palette indices the shapes are drawn in
SHAPES = ("square", "circle", "cross", "triangle")
MEME_COLOURS = {"red": hm.RED, "blue": hm.BLUE, "light": hm.LIGHT, "dark": hm.DARK}
MEME_COLOUR_NAMES = tuple(MEME_COLOURS)
OPENERS = ("", "a picture of", "an image with", "there is", "here we see", "look at")


def corpus_rng(seed: int) -> np.random.Generator:
    """The corpus' generator: disjoint from every twin's ``default_rng(seed)`` stream."""
    return np.random.default_rng([CORPUS_SEED_TAG, int(seed)])


def position(row: int, col: int, rows: int, cols: int) -> str:
    """Name of tile (row, col) on a 3 x 3 partition: 'top left', 'middle', 'bottom', 'right', ..."""
    v = ("top", "", "bottom")[min(2, 3 * row // rows)]
    h = ("left", "", "right")[min(2, 3 * col // cols)]
    return " ".join(w for w in (v, h) if w) or "middle"


def _where(pos: str) -> str:
    return "in the middle" if pos == "middle" else f"at the {pos}"


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def shape_mask(shape: str, size: int = TILE) -> np.ndarray:
    """bool [size, size]: where a shape covers its tile (a 2-pixel margin all around)."""
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    c, r = size / 2, size / 2 - 2
    if shape == "square":
        return (np.abs(yy - c) <= r) & (np.abs(xx - c) <= r)
    if shape == "circle":
        return (yy - c) ** 2 + (xx - c) ** 2 <= r ** 2
    if shape == "cross":
        arm = size / 8
        box = (np.abs(yy - c) <= r) & (np.abs(xx - c) <= r)
        return box & ((np.abs(yy - c) <= arm) | (np.abs(xx - c) <= arm))
    if shape == "triangle":
        top, bottom = c - r, c + r
        half = (yy - top) / (2 * r) * r  # half-width grows from the apex down
        return (yy >= top) & (yy <= bottom) & (np.abs(xx - c) <= half)
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def object_scene(rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """Grey tiles with 1-3 coloured shapes; the caption names each one's colour, shape, position."""
    height, width = SIZES[rng.integers(len(SIZES))]
    rows, cols = height // TILE, width // TILE
    grey = rng.integers(90, 171, size=(rows, cols))
    img = tile_image(rng, height, width, np.repeat(grey[..., None], 3, axis=2), noise=6.0).astype(np.int16)
    k = int(rng.integers(1, 4))
    cells = rng.choice(rows * cols, size=k, replace=False)
    phrases = []
    for cell in cells:
        row, col = divmod(int(cell), cols)
        colour = OBJECT_COLOURS[rng.integers(len(OBJECT_COLOURS))]
        shape = SHAPES[rng.integers(len(SHAPES))]
        tile = img[row * TILE:(row + 1) * TILE, col * TILE:(col + 1) * TILE]
        tile[shape_mask(shape)] = mm.PALETTE[colour]
        name = COLOUR_NAMES[colour]
        phrases.append(f"{_article(name)} {name} {shape} {_where(position(row, col, rows, cols))}")
    opener = OPENERS[rng.integers(len(OPENERS))]
    text = " and ".join(phrases)
    if rng.random() < 0.5:  # a few filler words from the twins' vocabulary
        text += f" near the {FILLER_NOUNS[rng.integers(len(FILLER_NOUNS))]}"
    return np.clip(img, 0, 255).astype(np.uint8), " ".join(w for w in (opener, text) if w)


def tile_colours(img: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """float [rows, cols, 3]: the median colour of each tile of a :func:`tile_image` picture."""
    height, width, _ = img.shape
    r_idx = np.minimum(np.arange(height) * rows // height, rows - 1)
    c_idx = np.minimum(np.arange(width) * cols // width, cols - 1)
    out = np.zeros((rows, cols, 3))
    for r in range(rows):
        for c in range(cols):
            out[r, c] = np.median(img[r_idx == r][:, c_idx == c].reshape(-1, 3), axis=0)
    return out


def _nearest(colour: np.ndarray, table: np.ndarray) -> int:
    return int(np.argmin(((table - colour) ** 2).sum(-1)))


def meme_scene(rng: np.random.Generator, z_shared: float, z_text: float, z_image: float) -> tuple[np.ndarray, str]:
    """A Hateful Memes twin image and caption, plus a clause naming its tile colours."""
    img = hm.meme_image(rng, z_shared, z_image)
    text = hm.caption(rng, z_shared, z_text)
    rows, cols = max(1, img.shape[0] // TILE), max(1, img.shape[1] // TILE)
    table = np.array(list(MEME_COLOURS.values()), dtype=float)
    names = np.array([[MEME_COLOUR_NAMES[_nearest(t, table)] for t in row] for row in tile_colours(img, rows, cols)])
    major = [max(pair, key=lambda n: (names == n).sum()) for pair in (("red", "blue"), ("light", "dark"))]
    r, c = int(rng.integers(rows)), int(rng.integers(cols))
    clause = f"mostly {major[0]} and {major[1]} tiles, {_article(names[r, c])} {names[r, c]} tile {_where(position(r, c, rows, cols))}"
    return img, f"{text} , {clause}"


def poster_scene(rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """An MM-IMDb twin poster and its longest plot, plus a clause naming 1-2 coloured tiles."""
    genres = mm.pick_genres(rng)
    plot = max(mm.plots(rng, genres), key=len)
    img = mm.poster(rng, genres)
    grid = tile_colours(img, mm.ROWS, mm.COLS)
    table = mm.PALETTE.astype(float)
    coloured = [(r, c) for r in range(mm.ROWS) for c in range(mm.COLS)
                if np.ptp(grid[r, c]) > 40]  # grey tiles have equal channels
    clauses = []
    for idx in rng.permutation(len(coloured))[: int(rng.integers(1, 3))]:
        r, c = coloured[idx]
        name = COLOUR_NAMES[_nearest(grid[r, c], table)]
        clauses.append(f"{_article(name)} {name} tile {_where(position(r, c, mm.ROWS, mm.COLS))}")
    if not clauses:
        clauses.append("only grey tiles")
    return img, f"{plot.rstrip('.')} , {' and '.join(clauses)}"


def scene(rng: np.random.Generator, kind: str, z: tuple[float, float, float]) -> tuple[np.ndarray, list[str]]:
    """One image and ``CAPTIONS_PER_IMAGE`` captions of it (the grounding re-drawn per caption)."""
    img, first = {"objects": lambda: object_scene(rng), "meme": lambda: meme_scene(rng, *z),
                  "poster": lambda: poster_scene(rng)}[kind]()
    captions = [first]
    for _ in range(CAPTIONS_PER_IMAGE - 1):
        captions.append(_recaption(rng, kind, first))
    return img, captions


def _recaption(rng: np.random.Generator, kind: str, first: str) -> str:
    """Another caption of the same image: the grounding clauses in a new order with a new opener."""
    if kind == "objects":
        body = first
        for o in OPENERS[1:]:
            if body.startswith(o + " "):
                body = body[len(o) + 1:]
        near = ""
        if " near the " in body:
            body, near = body.split(" near the ", 1)
            near = f" near the {near}"
        parts = body.split(" and ")
        parts = [parts[k] for k in rng.permutation(len(parts))]
        opener = OPENERS[rng.integers(len(OPENERS))]
        return " ".join(w for w in (opener, " and ".join(parts) + near) if w)
    head, clause = first.rsplit(" , ", 1)
    words = head.split()
    words = [words[k] for k in rng.permutation(len(words))][: max(3, len(words) - 2)]
    return f"{' '.join(words)} , {clause}"


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

    Returns ``{"train": n_images, "val": n_images, "kinds": {kind: n}}``.
    """
    out = Path(out)
    rng = corpus_rng(cfg.seed)
    n_val = max(1, int(round(VAL_SHARE * cfg.n)))
    lat = sample_latents(rng, cfg.n, ("text", "image"))
    ids = rng.choice(np.arange(1, 10**6), size=cfg.n, replace=False)
    counts = {k: 0 for k in KINDS}
    splits = {"val": range(0, n_val), "train": range(n_val, cfg.n)}

    def draw(i):
        kind = KINDS[i % len(KINDS)]
        counts[kind] += 1
        return scene(rng, kind, (lat.shared[i], lat.unique["text"][i], lat.unique["image"][i]))

    write_coco(out, ids, splits, draw)
    return {"train": len(splits["train"]), "val": len(splits["val"]), "kinds": counts}
