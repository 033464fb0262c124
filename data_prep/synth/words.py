"""A small real-English vocabulary for the synthetic twins.

FILLER_* words carry no label signal; the SIGNAL groups below (and the MM-IMDb genre keywords) do.
No filler word appears in any signal group (checked by the tests).
"""

from __future__ import annotations

import hashlib

import numpy as np

FILLER_NOUNS = """
man woman girl boy friend teacher doctor farmer driver student neighbour stranger captain king
queen village city town river mountain island road house garden school office market station
forest desert ocean bridge castle tower street kitchen window door table letter phone car train
boat plane horse dog cat bird bottle box book song picture camera coat hat shoe ring key map
clock lamp chair bed wall roof field farm shop bank hotel church museum park beach lake hill
valley winter summer morning evening night week year day moment story plan job money time
""".split()
FILLER_VERBS = """
finds meets leaves returns discovers follows visits helps watches builds opens carries brings
loses keeps sells buys writes reads calls asks tells moves drives walks waits learns remembers
forgets decides tries hides shows joins starts stops changes plays sings paints cooks cleans
""".split()
FILLER_ADJECTIVES = """
young old small big tall short quiet loud early late new long strange simple busy empty full
bright dark cold hot wet dry heavy light rich poor local famous distant hidden open narrow wide
green blue red yellow white black brown round flat deep clever lucky tired hungry
""".split()
FILLER_FUNCTION = """
the a an his her their this that one some every another with from into near after before under
over behind across during about for to in on at by and but then so while when
""".split()

# Hateful Memes twin: a factor shared by text and image, and one unique to the text.
MEME_SHARED = (
    ("nasty", "rotten", "filthy", "vile", "gross", "creepy", "sick", "foul"),          # + side
    ("lovely", "gentle", "kind", "sweet", "warm", "calm", "cheerful", "polite"),       # - side
)
MEME_TEXT = (
    ("mock", "sneer", "jeer", "taunt", "scorn", "ridicule", "insult", "smear"),
    ("praise", "cheer", "thank", "hug", "greet", "welcome", "admire", "respect"),
)
MEME_OPENERS = ("when", "me", "nobody", "that moment when", "my", "you", "look at", "so apparently")

# MultiBench twins: word-aligned sequences; the text expresses the shared and the text factor.
HUMOR_SHARED = (("funny", "laugh", "joke", "silly", "crazy", "weird"),
                ("serious", "data", "research", "problem", "policy", "evidence"))
HUMOR_TEXT = (("actually", "imagine", "suddenly", "apparently"),
              ("therefore", "however", "furthermore", "consequently"))
SENTIMENT_SHARED = (("great", "love", "amazing", "excellent", "enjoy", "wonderful"),
                    ("terrible", "hate", "awful", "boring", "worst", "horrible"))
SENTIMENT_TEXT = (("recommend", "definitely", "fun", "happy"),
                  ("waste", "disappointed", "annoying", "sad"))

# MM-IMDb twin: keywords of the genres the plot can reveal.
GENRE_KEYWORDS = {
    "Drama": ("tragedy", "struggle", "grief"), "Comedy": ("hilarious", "prank", "clumsy"),
    "Romance": ("love", "kiss", "wedding"), "Thriller": ("chase", "suspense", "hostage"),
    "Crime": ("robbery", "detective", "gangster"), "Action": ("explosion", "fight", "mission"),
    "Adventure": ("journey", "treasure", "expedition"), "Horror": ("ghost", "haunted", "monster"),
    "Documentary": ("interviews", "footage", "archive"), "Mystery": ("clue", "riddle", "secret"),
    "Sci-Fi": ("spaceship", "robot", "alien"), "Fantasy": ("wizard", "dragon", "magic"),
    "Family": ("kids", "parents", "puppy"), "Biography": ("memoir", "legend", "portrait"),
    "War": ("soldier", "battle", "army"), "History": ("empire", "ancient", "revolution"),
}

FILLER = FILLER_NOUNS + FILLER_VERBS + FILLER_ADJECTIVES + FILLER_FUNCTION


def sentence(rng: np.random.Generator, n_words: int) -> list[str]:
    """n_words filler words in a loose 'the adj noun verbs the noun ...' rhythm."""
    pools = (FILLER_FUNCTION, FILLER_ADJECTIVES, FILLER_NOUNS, FILLER_VERBS, FILLER_FUNCTION, FILLER_NOUNS)
    return [pools[k % len(pools)][rng.integers(len(pools[k % len(pools)]))] for k in range(n_words)]


def insert_words(rng: np.random.Generator, words: list[str], extra: list[str]) -> list[str]:
    """Insert `extra` words at random positions of `words` (returns a new list)."""
    out = list(words)
    for w in extra:
        out.insert(int(rng.integers(len(out) + 1)), w)
    return out


def word_vector(word: str, dim: int = 300) -> np.ndarray:
    """A fixed GloVe-like float32 [dim] vector per word (seeded by the word's SHA-256)."""
    seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], "little")
    return (np.random.default_rng(seed).standard_normal(dim) * 0.35).astype(np.float32)
