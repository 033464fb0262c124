"""Configuration dataclasses and dataset constants.

`PrepareConfig` holds every knob of `prepare` (CLI flags map one-to-one onto its fields);
`SynthConfig` those of `synth`. Paper scale is the default of `PrepareConfig`; the embedded
default (tiny ViLT on CPU) is `PrepareConfig.tiny()`: 64-pixel shorter side, 16-pixel patches.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

DATASETS = ("hateful_memes", "mmimdb", "ur_funny", "mosei")
SPLITS = ("train", "dev", "test")

# The 23 genres every public MM-IMDb code base keeps (the paper says 25), in this order.
MMIMDB_GENRES = (
    "Drama", "Comedy", "Romance", "Thriller", "Crime", "Action", "Adventure", "Horror",
    "Documentary", "Mystery", "Sci-Fi", "Fantasy", "Family", "Biography", "War", "History",
    "Music", "Animation", "Musical", "Western", "Sport", "Short", "Film-Noir",
)


@dataclass(frozen=True)
class PrepareConfig:
    """Options of `prepare`.

    image_size:   ViLT's shorter side (384 at paper scale); the longer side is capped at
                  int(1333 / 800 * image_size) and both are floored to multiples of patch_size.
    patch_size:   ViLT's patch size (32 for ViLT-B/32).
    max_text_len: tokens per text including [CLS] and [SEP] (40 for ViLT).
    tokenizer:    "train" (fit a WordPiece vocabulary on the train split's text) or a hub name /
                  local folder for `transformers.AutoTokenizer.from_pretrained`.
    vocab_size:   vocabulary size when tokenizer == "train".
    genres:       MM-IMDb label set, in label order.
    strict:       turn every counted skip of bad input into an error.
    allow_overlap: a record (same id, or identical content) in two splits is dropped from the later
                  split (test is kept first, then dev) and counted, instead of being an error.
    workers:      processes for image decoding and resizing (1 = in-process).
    progress:     show tqdm progress bars.
    """

    image_size: int = 384
    patch_size: int = 32
    max_text_len: int = 40
    tokenizer: str = "train"
    vocab_size: int = 2000
    genres: tuple[str, ...] = MMIMDB_GENRES
    strict: bool = False
    allow_overlap: bool = False
    workers: int = 1
    progress: bool = True

    @classmethod
    def tiny(cls, **overrides) -> "PrepareConfig":
        """The embedded default: 64-pixel shorter side and 16-pixel patches."""
        return replace(cls(image_size=64, patch_size=16), **overrides)

    def __post_init__(self):
        if self.image_size < self.patch_size or self.patch_size < 1:
            raise ValueError(f"need image_size >= patch_size >= 1, got {self.image_size}, {self.patch_size}")
        if self.max_text_len < 3:
            raise ValueError(f"max_text_len must be >= 3 ([CLS] x [SEP]), got {self.max_text_len}")
        if len(set(self.genres)) != len(self.genres) or not self.genres:
            raise ValueError(f"genres must be a non-empty list without repeats, got {self.genres}")


@dataclass(frozen=True)
class SynthConfig:
    """Options of `synth`.

    n:      labelled samples in total (split about 70/10/20 into train/dev/test).
    seed:   seed of everything random in the twin.
    steps:  time steps per sequence for the MultiBench twins (50 as in MultiBench).
    splits: ``(train, dev, test)`` sizes instead of the 70/10/20 split of ``n``; ``n`` is then
            their sum (a larger test set costs evaluation time only, and sharpens every metric).
    """

    n: int = 2000
    seed: int = 0
    steps: int = 50
    splits: tuple | None = None

    def __post_init__(self):
        if self.splits is not None:
            sizes = tuple(int(x) for x in self.splits)
            if len(sizes) != 3 or min(sizes) < 1:
                raise ValueError(f"splits must be three positive sizes (train, dev, test), got {self.splits}")
            object.__setattr__(self, "splits", sizes)
            object.__setattr__(self, "n", sum(sizes))
        if self.n < 20:
            raise ValueError(f"n must be >= 20 so that every split gets samples, got {self.n}")
        if self.steps < 4:
            raise ValueError(f"steps must be >= 4, got {self.steps}")
