"""MM-IMDb twin: split.json + dataset/<id>.jpeg|json (or images/ + labels/ with layout="images+labels").

Every movie has 1-3 of the 23 genres (popular genres more often). Genres are revealed by:
- text and image ("both"): Drama, Comedy, Romance, Thriller, Crime, Action, Adventure, Horror;
- text only: Documentary, Mystery, Sci-Fi, Fantasy, Family, Biography, War, History;
- image only: Music, Animation, Musical, Western, Sport, Short, Film-Noir.
Text: the longest of 1-3 plots holds 2-3 keywords of each text-revealed genre (each genre shown
with probability 0.9, or 0.8 for "both" genres) and, with probability 0.15, one keyword of a
genre the movie does not have; the other plots are short and carry no keyword, so taking the
longest plot matters. Image (JPEG poster, portrait, 54-90 px wide): a 4 x 6 grid of grey tiles,
4-6 of which (as many as are free) take the colour of each image-revealed genre (same probabilities, and a distractor
colour with probability 0.15). About 2 % of movies also list a genre outside the 23
("Reality-TV", "News", "Talk-Show"), as the real files do.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from ..config import MMIMDB_GENRES, SynthConfig
from .drawing import tile_image
from .latent import split_sizes
from .words import GENRE_KEYWORDS, insert_words, sentence

BOTH = MMIMDB_GENRES[:8]
TEXT_ONLY = MMIMDB_GENRES[8:16]
IMAGE_ONLY = MMIMDB_GENRES[16:]
IMAGE_GENRES = BOTH + IMAGE_ONLY
# 15 well separated colours (one per image-revealed genre).
PALETTE = np.array([
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (170, 110, 40),
    (128, 0, 0), (0, 0, 128), (128, 128, 0),
])
EXTRA_GENRES = ("Reality-TV", "News", "Talk-Show")
P_SHOW, P_SHOW_BOTH, P_DISTRACT = 0.9, 0.8, 0.15
ROWS, COLS = 6, 4


def pick_genres(rng: np.random.Generator) -> list[str]:
    weights = np.linspace(3.0, 1.0, len(MMIMDB_GENRES))
    k = int(rng.choice([1, 2, 3], p=[0.35, 0.4, 0.25]))
    idx = rng.choice(len(MMIMDB_GENRES), size=k, replace=False, p=weights / weights.sum())
    return [MMIMDB_GENRES[i] for i in sorted(idx)]


def plots(rng: np.random.Generator, genres: list[str]) -> list[str]:
    keywords = []
    for g in genres:
        p = P_SHOW_BOTH if g in BOTH else P_SHOW
        if g in GENRE_KEYWORDS and rng.random() < p:
            keywords += list(rng.choice(GENRE_KEYWORDS[g], size=int(rng.integers(2, 4)), replace=False))
    if rng.random() < P_DISTRACT:
        other = [g for g in GENRE_KEYWORDS if g not in genres]
        g = other[rng.integers(len(other))]
        keywords.append(GENRE_KEYWORDS[g][rng.integers(3)])
    main = " ".join(insert_words(rng, sentence(rng, int(rng.integers(10, 18))), keywords)) + "."
    shorts = [" ".join(sentence(rng, int(rng.integers(4, 9)))) + "." for _ in range(int(rng.integers(0, 3)))]
    shorts = [s for s in shorts if len(s) < len(main)]
    order = rng.permutation(len(shorts) + 1)
    texts = [main, *shorts]
    return [texts[k].capitalize() for k in order]


def poster(rng: np.random.Generator, genres: list[str]) -> np.ndarray:
    width = int(rng.integers(54, 91))
    height = int(round(width * rng.uniform(1.35, 1.6)))
    grey = rng.integers(90, 171, size=(ROWS, COLS))
    colours = np.repeat(grey[..., None], 3, axis=2)
    free = list(rng.permutation(ROWS * COLS))
    shown = [g for g in genres if g in IMAGE_GENRES and rng.random() < (P_SHOW_BOTH if g in BOTH else P_SHOW)]
    if rng.random() < P_DISTRACT:
        other = [g for g in IMAGE_GENRES if g not in genres]
        shown.append(other[rng.integers(len(other))])
    for g in shown:
        for _ in range(int(rng.integers(4, 7))):
            if free:
                cell = free.pop()
                colours[cell // COLS, cell % COLS] = PALETTE[IMAGE_GENRES.index(g)]
    return tile_image(rng, height, width, colours, noise=8.0)


def _tile_content(rng: np.random.Generator, genres: list[str]):
    """This twin's plots and poster: ``(plots, draw_poster(rng) -> image, None)``."""
    return plots(rng, genres), lambda r: poster(r, genres), None


def synth_mmimdb(out: str | Path, cfg: SynthConfig = SynthConfig(), layout: str = "archive", content=_tile_content) -> dict:
    """Write the twin; returns {"genres": {split: [[genre, ...], ...]}, "ids", "longest_plot"} (and
    "world": {id: generating statistics} when ``content`` gives them).

    ``content(rng, genres) -> (plots, draw_poster, world_record | None)`` decides a movie's text and
    image (``draw_poster(rng)`` is called after the metadata is drawn); the grounded world
    (:mod:`data_prep.synth.grounded.mmimdb`) passes its own."""
    if layout not in ("archive", "images+labels"):
        raise ValueError(f"layout must be 'archive' or 'images+labels', got {layout!r}")
    out = Path(out)
    image_dir, meta_dir = ("dataset", "dataset") if layout == "archive" else ("images", "labels")
    (out / image_dir).mkdir(parents=True, exist_ok=True)
    (out / meta_dir).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(cfg.seed)
    sizes = split_sizes(cfg.n, cfg.splits)
    ids = [f"{k:07d}" for k in sorted(rng.choice(np.arange(1, 10**7), size=cfg.n, replace=False))]
    ids = [ids[k] for k in rng.permutation(cfg.n)]
    written = {"genres": {}, "ids": {}, "longest_plot": {}}
    world = {}
    start = 0
    for split in ("train", "dev", "test"):
        split_ids = ids[start:start + sizes[split]]
        start += sizes[split]
        written["ids"][split] = split_ids
        written["genres"][split] = []
        for movie_id in split_ids:
            genres = pick_genres(rng)
            movie_plots, draw_poster, record = content(rng, genres)
            listed = genres + ([EXTRA_GENRES[rng.integers(3)]] if rng.random() < 0.02 else [])
            meta = {"plot": movie_plots, "genres": listed, "title": " ".join(sentence(rng, 3)).title(),
                    "year": int(rng.integers(1920, 2017)), "imdb_id": movie_id, "director": "unknown"}
            (out / meta_dir / f"{movie_id}.json").write_text(json.dumps(meta), encoding="utf-8")
            Image.fromarray(draw_poster(rng)).save(out / image_dir / f"{movie_id}.jpeg", quality=92)
            if record is not None:
                world[movie_id] = {**record, "split": split}
            written["genres"][split].append(listed)
            written["longest_plot"][movie_id] = max(movie_plots, key=len)
    (out / "split.json").write_text(json.dumps({s: written["ids"][s] for s in ("train", "dev", "test")}), encoding="utf-8")
    if world:
        written["world"] = world
    return written
