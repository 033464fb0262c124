"""Words of the twins besides the world's nouns and colours."""

from __future__ import annotations

from .words import FILLER, GENRE_KEYWORDS, MEME_OPENERS, MEME_SHARED, MEME_TEXT

MEME_SUBJECTS = ("we", "i", "they", "people", "everyone")


def twin_vocabulary() -> tuple[str, ...]:
    """Every word a tokenized twin's text (Hateful Memes, MM-IMDb) can hold apart from the world's
    nouns and colours (sorted): the corpus carries them all, so the tokenizer fitted on it knows
    every twin word. The feature twins' words are vectors (:func:`.words.word_vector`), never
    tokens."""
    from .world import COLOUR_NAMES, NOUNS

    groups = [MEME_SHARED, MEME_TEXT]
    words = set(FILLER) | set(MEME_SUBJECTS) | {w for o in MEME_OPENERS for w in o.split()}
    words |= {w for pair in groups for side in pair for w in side}
    words |= {w for ws in GENRE_KEYWORDS.values() for w in ws}
    return tuple(sorted(words - set(NOUNS) - set(COLOUR_NAMES)))
