"""The one world that the caption corpus and the image+text twins are drawn from.

A scene is a grid of *slots*, each ``SLOT x SLOT`` pixels (2 x 2 patches of 16 px), holding at
most one object: a noun's glyph (:data:`NOUNS`; each glyph is one texture of 4 x 4-pixel
cells repeated in its four patches, :data:`GLYPHS`), drawn in black inside a frame in one of
:data:`COLOURS`; empty slots are grey. Image sides are slot multiples (64 or 96 px), so ViLT's resize
at ``image_size=64`` is the identity and a glyph covers exactly its 2 x 2 patches.

Words name what particular patches show: "a red lion at the top left" names the noun of one
slot, its colour and where it is (:func:`where`). The pretraining corpus describes such scenes
(:mod:`.captions`); the Hateful Memes twin attacks or praises a noun that is or is not depicted
(:mod:`.hateful_memes`); MM-IMDb posters show their genres' iconic nouns (:mod:`.mmimdb`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SLOT = 32                      # pixels per slot side: 2 x 2 patches of 16 px
#: Nouns of the world, each a glyph: none is a filler, signal or genre word of the twins.
NOUNS = ("lion", "kite", "anchor", "drum", "crown", "tree", "fish", "star", "apple", "cactus",
         "heart", "sword", "guitar", "rocket", "umbrella")
#: Colours of the world, well apart in RGB.
COLOURS = {"red": (215, 40, 40), "blue": (40, 80, 225), "green": (35, 165, 60),
           "yellow": (235, 205, 30), "purple": (145, 50, 185), "orange": (245, 135, 25)}
COLOUR_NAMES = tuple(COLOURS)
#: Slot grids (rows, cols): 64 x 64, 64 x 96 (landscape) and 96 x 64 (portrait) pixels.
LAYOUTS = ((2, 2), (2, 3), (3, 2))
_GLYPH_SEED = 20260303
MIN_PATCH_DIFF = 38  # pixels by which any two nouns' glyphs differ in each patch
FRAME = 3  # pixels of the object's colour around its slot (no ink covers it)


@dataclass(frozen=True)
class Obj:
    """One object of a scene: ``noun`` drawn in ``colour`` in slot (``row``, ``col``)."""

    noun: str
    colour: str
    row: int
    col: int


@dataclass(frozen=True)
class Scene:
    """A grid of ``rows x cols`` slots and the objects in some of them."""

    rows: int
    cols: int
    objects: tuple

    @property
    def nouns(self) -> set:
        return {o.noun for o in self.objects}


def frame_mask() -> np.ndarray:
    """bool ``[SLOT, SLOT]``: the frame that shows an object's colour."""
    m = np.ones((SLOT, SLOT), bool)
    m[FRAME:-FRAME, FRAME:-FRAME] = False
    return m


def _textures() -> list[np.ndarray]:
    """bool ``[SLOT, SLOT]`` per noun: one 16 x 16 texture repeated in the slot's four quarters
    (inside the frame), a pattern of 4 x 4-pixel cells, half of them ink, drawn with a
    fixed seed so that any two nouns' slots differ in at least :data:`MIN_PATCH_DIFF` pixels in
    *each* of their four patches (the frame excluded): every patch of a glyph tells its noun."""
    rng = np.random.default_rng(_GLYPH_SEED)
    inside = ~frame_mask()
    quarters = [(slice(r * 16, (r + 1) * 16), slice(c * 16, (c + 1) * 16)) for r in (0, 1) for c in (0, 1)]
    chosen: list[np.ndarray] = []  # slot masks
    while len(chosen) < len(NOUNS):
        cells = rng.permutation(16) < 8
        slot = np.tile(np.kron(cells.reshape(4, 4), np.ones((4, 4), bool)), (2, 2)) & inside
        if all(min(int((slot ^ other)[q].sum()) for q in quarters) >= MIN_PATCH_DIFF for other in chosen):
            chosen.append(slot)
    return chosen


def _make_glyphs() -> dict[str, np.ndarray]:
    """bool ``[SLOT, SLOT]`` per noun: its texture (:func:`_textures`) in each 16-pixel quarter,
    so each of the glyph's 2 x 2 patches shows the same noun; the frame stays coloured."""
    return dict(zip(NOUNS, _textures()))


GLYPHS = _make_glyphs()


def glyph_mask(noun: str) -> np.ndarray:
    """bool ``[SLOT, SLOT]``: the pixels of a slot that ``noun``'s glyph covers (inside the frame)."""
    if noun not in GLYPHS:
        raise ValueError(f"unknown noun {noun!r}; the world's nouns are {NOUNS}")
    return GLYPHS[noun]


def random_scene(rng: np.random.Generator, k: int, *, layout: tuple | None = None, nouns=None,
                 avoid=()) -> Scene:
    """``k`` objects in distinct slots: the nouns ``nouns`` first (in order), then random nouns
    outside ``avoid`` and not yet used; random colours and slots."""
    rows, cols = layout if layout is not None else LAYOUTS[rng.integers(len(LAYOUTS))]
    k = min(k, rows * cols)
    picked = list(nouns or ())[:k]
    pool = [n for n in NOUNS if n not in picked and n not in avoid]
    extra = rng.choice(len(pool), size=k - len(picked), replace=False) if k > len(picked) else []
    picked += [pool[i] for i in extra]
    cells = rng.choice(rows * cols, size=len(picked), replace=False)
    objects = tuple(Obj(n, COLOUR_NAMES[rng.integers(len(COLOUR_NAMES))], int(c) // cols, int(c) % cols)
                    for n, c in zip(picked, cells))
    return Scene(rows, cols, objects)


PAPER, INK = 235, 20  # grey levels inside an object's frame and of its ink


def draw(rng: np.random.Generator, scene: Scene, noise: float = 8.0, light: np.ndarray | None = None) -> np.ndarray:
    """uint8 ``[rows*SLOT, cols*SLOT, 3]``.

    Empty slots are grey (level 95-160, or 175-215 where ``light`` [rows, cols] is True and 40-80
    where it is False). An object's slot is a ``FRAME``-pixel frame in its colour around a light
    square on which its glyph is drawn in black: the noun is read from black-on-white texture
    whatever the colour, and the colour from the frame, in each of the slot's four patches.
    Gaussian pixel noise of sd ``noise`` on everything."""
    if light is None:
        grey = rng.integers(95, 161, size=(scene.rows, scene.cols))
    else:
        grey = np.where(light, rng.integers(175, 216, size=light.shape), rng.integers(40, 81, size=light.shape))
    img = np.repeat(np.repeat(grey, SLOT, 0), SLOT, 1)[..., None].repeat(3, 2).astype(np.float32)
    for o in scene.objects:
        tile = img[o.row * SLOT:(o.row + 1) * SLOT, o.col * SLOT:(o.col + 1) * SLOT]
        tile[:] = COLOURS[o.colour]
        tile[FRAME:-FRAME, FRAME:-FRAME] = PAPER
        tile[glyph_mask(o.noun)] = INK
    img += rng.normal(0.0, noise, img.shape).astype(np.float32)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def where(row: int, col: int, rows: int, cols: int) -> str:
    """Where slot (row, col) is: "at the top left", "at the bottom", "on the right", "in the middle".

    Rows are named top / bottom (two rows) or top / middle / bottom (three); columns likewise
    left / right or left / middle / right. Each slot of a layout gets its own name."""
    v = ("top", "bottom") if rows == 2 else ("top", "middle", "bottom")
    h = ("left", "right") if cols == 2 else ("left", "middle", "right")
    vn, hn = v[row] if rows > 1 else "middle", h[col] if cols > 1 else "middle"
    if vn == "middle" and hn == "middle":
        return "in the middle"
    if hn == "middle":
        return f"at the {vn}"
    if vn == "middle":
        return f"on the {hn}"
    return f"at the {vn} {hn}"


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def describe(o: Obj, scene: Scene) -> str:
    """``"a red lion at the top left"``."""
    return f"{article(o.colour)} {o.colour} {o.noun} {where(o.row, o.col, scene.rows, scene.cols)}"


def scene_record(scene: Scene) -> dict:
    """A JSON-able record of a scene (the twins' generating statistics keep one per sample)."""
    return {"rows": scene.rows, "cols": scene.cols,
            "objects": [[o.noun, o.colour, o.row, o.col] for o in scene.objects]}
