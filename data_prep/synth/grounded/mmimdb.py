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
("... finds the crimson lion ..."), as real plots name what posters show. About 2 % of movies
also list a genre outside the 23 ("Reality-TV", "News", "Talk-Show"), as the real files do.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...config import SynthConfig
from . import world as W
from ..mmimdb import BOTH, IMAGE_GENRES, P_DISTRACT, P_SHOW, P_SHOW_BOTH
from ..mmimdb import synth_mmimdb as write_mmimdb
from ..words import GENRE_KEYWORDS, insert_words, sentence

#: The iconic noun of each image-revealed genre (15 genres, the world's 15 nouns).
ICONS = dict(zip(IMAGE_GENRES, W.NOUNS))
P_NAME_OBJECT = 0.5
POSTER_LAYOUT = (3, 2)  # 96 x 64 pixels


def plots(rng: np.random.Generator, genres: list[str], scene: W.Scene | None = None) -> list[str]:
    """1-3 plots; the longest holds the genre keywords and names some of ``scene``'s objects."""
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
            if rng.random() < P_NAME_OBJECT:
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


def poster(rng: np.random.Generator, scene: W.Scene) -> np.ndarray:
    return W.draw(rng, scene)


def _grounded_content(rng: np.random.Generator, genres: list[str]):
    """A poster scene of the genres' icons, plots that name some of its objects."""
    scene = poster_scene(rng, genres)
    return plots(rng, genres, scene), lambda r: poster(r, scene), {"genres": genres, "scene": W.scene_record(scene)}


def synth_mmimdb(out: str | Path, cfg: SynthConfig = SynthConfig(), layout: str = "archive") -> dict:
    """Write the twin in MM-IMDb's layout (:func:`data_prep.synth.mmimdb.synth_mmimdb`, with this
    world's posters and plots); returns what it returns, "world" included."""
    return write_mmimdb(out, cfg, layout, content=_grounded_content)
