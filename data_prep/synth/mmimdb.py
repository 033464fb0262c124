"""MM-IMDb twin: split.json + dataset/<id>.jpeg|json (or images/ + labels/ with layout="images+labels").

Every movie has 1-3 of the 23 genres (popular genres more often). Genres are revealed by:
- text and image ("both"): Drama, Comedy, Romance, Thriller, Crime, Action, Adventure, Horror;
- text only: Documentary, Mystery, Sci-Fi, Fantasy, Family, Biography, War, History;
- image only: Music, Animation, Musical, Western, Sport, Short, Film-Noir.
Text: the longest of 1-3 plots holds 2-3 keywords of each text-revealed genre (each genre shown
with probability 0.9, or 0.8 for "both" genres) and, with probability 0.15, one keyword of a
genre the movie does not have; the other plots are short and carry no keyword, so taking the
longest plot matters. Image (JPEG poster, 96 x 64 px portrait, a scene of the world,
:mod:`.world`): each image-revealed genre has an iconic noun (:data:`ICONS`), drawn in a slot
of its own when the genre is shown (same probabilities, and a distractor icon with
probability 0.15). The longest plot also names each depicted object with probability 1/2
("... finds the red lion ..."), as real plots name what posters show. About 2 % of movies
also list a genre outside the 23 ("Reality-TV", "News", "Talk-Show"), as the real files do.
The generating statistics of every movie are returned (``"world"``) for chapter 00's ceilings.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from ..config import MMIMDB_GENRES, SynthConfig
from . import world as W
from .latent import split_sizes
from .words import GENRE_KEYWORDS, insert_words, sentence

BOTH = MMIMDB_GENRES[:8]
TEXT_ONLY = MMIMDB_GENRES[8:16]
IMAGE_ONLY = MMIMDB_GENRES[16:]
IMAGE_GENRES = BOTH + IMAGE_ONLY
EXTRA_GENRES = ("Reality-TV", "News", "Talk-Show")
P_SHOW, P_SHOW_BOTH, P_DISTRACT = 0.9, 0.8, 0.15
#: The iconic noun of each image-revealed genre (15 genres, the world's 15 nouns).
ICONS = dict(zip(IMAGE_GENRES, W.NOUNS))
P_NAME_OBJECT = 0.5
POSTER_LAYOUT = (3, 2)  # 96 x 64 pixels


def pick_genres(rng: np.random.Generator) -> list[str]:
    weights = np.linspace(3.0, 1.0, len(MMIMDB_GENRES))
    k = int(rng.choice([1, 2, 3], p=[0.35, 0.4, 0.25]))
    idx = rng.choice(len(MMIMDB_GENRES), size=k, replace=False, p=weights / weights.sum())
    return [MMIMDB_GENRES[i] for i in sorted(idx)]


def plots(rng: np.random.Generator, genres: list[str], scene: W.Scene | None = None,
          p_name: float = P_NAME_OBJECT) -> list[str]:
    """1-3 plots; the longest holds the genre keywords and names each of ``scene``'s objects
    with probability ``p_name``."""
    keywords = []
    for g in genres:
        p = P_SHOW_BOTH if g in BOTH else P_SHOW
        if g in GENRE_KEYWORDS and rng.random() < p:
            keywords += list(rng.choice(GENRE_KEYWORDS[g], size=int(rng.integers(2, 4)), replace=False))
    if rng.random() < P_DISTRACT:
        other = [g for g in GENRE_KEYWORDS if g not in genres]
        g = other[rng.integers(len(other))]
        keywords.append(GENRE_KEYWORDS[g][rng.integers(3)])
    if scene is not None:
        for o in scene.objects:
            if rng.random() < p_name:
                keywords.append(f"the {o.colour} {o.noun}")
    main = " ".join(insert_words(rng, sentence(rng, int(rng.integers(10, 18))), keywords)) + "."
    shorts = [" ".join(sentence(rng, int(rng.integers(4, 9)))) + "." for _ in range(int(rng.integers(0, 3)))]
    shorts = [s for s in shorts if len(s) < len(main)]
    order = rng.permutation(len(shorts) + 1)
    texts = [main, *shorts]
    return [texts[k].capitalize() for k in order]


def poster_scene(rng: np.random.Generator, genres: list[str]) -> W.Scene:
    """The icons of the shown image-revealed genres (and maybe a distractor), in free slots."""
    shown = [g for g in genres if g in IMAGE_GENRES and rng.random() < (P_SHOW_BOTH if g in BOTH else P_SHOW)]
    if rng.random() < P_DISTRACT:
        other = [g for g in IMAGE_GENRES if g not in genres]
        shown.append(other[rng.integers(len(other))])
    icons = [ICONS[g] for g in shown]
    return W.random_scene(rng, len(icons), layout=POSTER_LAYOUT, nouns=icons)


def synth_mmimdb(out: str | Path, cfg: SynthConfig = SynthConfig(), layout: str = "archive") -> dict:
    """Write the twin; returns {"genres": {split: [[genre, ...], ...]}, "ids", "longest_plot",
    "world": {id: generating statistics}}."""
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
    written = {"genres": {}, "ids": {}, "longest_plot": {}, "world": {}}
    start = 0
    for split in ("train", "dev", "test"):
        split_ids = ids[start:start + sizes[split]]
        start += sizes[split]
        written["ids"][split] = split_ids
        written["genres"][split] = []
        for movie_id in split_ids:
            genres = pick_genres(rng)
            scene = poster_scene(rng, genres)
            movie_plots = plots(rng, genres, scene)
            listed = genres + ([EXTRA_GENRES[rng.integers(3)]] if rng.random() < 0.02 else [])
            meta = {"plot": movie_plots, "genres": listed, "title": " ".join(sentence(rng, 3)).title(),
                    "year": int(rng.integers(1920, 2017)), "imdb_id": movie_id, "director": "unknown"}
            (out / meta_dir / f"{movie_id}.json").write_text(json.dumps(meta), encoding="utf-8")
            Image.fromarray(W.draw(rng, scene)).save(out / image_dir / f"{movie_id}.jpeg", quality=92)
            written["world"][movie_id] = {"genres": genres, "scene": W.scene_record(scene), "split": split}
            written["genres"][split].append(listed)
            written["longest_plot"][movie_id] = max(movie_plots, key=len)
    (out / "split.json").write_text(json.dumps({s: written["ids"][s] for s in ("train", "dev", "test")}), encoding="utf-8")
    return written
