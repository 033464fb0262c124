"""Tokenisation: a WordPiece tokenizer fitted on the train text, or a pretrained one.

Texts become int32 input_ids [N, L] ([CLS] ... [SEP] then [PAD]) and uint8 attention_mask [N, L].
The tokenizer is always saved as OUT/tokenizer.json (the `tokenizers` serialisation), loadable with
`transformers.PreTrainedTokenizerFast(tokenizer_file=...)` or `load_tokenizer(prepared_dir)`.

Fitting ("train"). `tokenizers`' WordPieceTrainer is not reproducible from run to run (its
continuing-subword ids follow hash-map order, which changes merge tie-breaks: huggingface/tokenizers
issue #1794), and prepared data must be byte-identical on re-runs. So the vocabulary is chosen
deterministically: the five specials, every character seen (as "c" and "##c"), then the most
frequent whole words (count descending, then alphabetical) up to `vocab_size`. Normalisation
(BERT, lowercase), pre-tokenisation (BERT), the WordPiece model (greedy longest match with "##"
continuations and [UNK]) and the [CLS]/[SEP] template are the `tokenizers` library's. Frequent
words are single tokens, rare ones fall back to characters.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from .issues import DataError

SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")  # ids 0..4
TOKENIZER_FILE = "tokenizer.json"


def _bert_pipeline(tok: Tokenizer) -> Tokenizer:
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    return tok


def fit_wordpiece(texts: list[str], vocab_size: int = 2000) -> Tokenizer:
    """A WordPiece tokenizer whose vocabulary is chosen deterministically from `texts`."""
    if vocab_size < len(SPECIALS) + 2:
        raise ValueError(f"vocab_size too small: {vocab_size}")
    probe = _bert_pipeline(Tokenizer(models.WordPiece({"[UNK]": 0}, unk_token="[UNK]")))
    counts: Counter[str] = Counter()
    for text in texts:
        norm = probe.normalizer.normalize_str(text)
        counts.update(word for word, _ in probe.pre_tokenizer.pre_tokenize_str(norm))
    chars = sorted({c for word in counts for c in word})
    vocab: dict[str, int] = {}
    for token in [*SPECIALS, *chars, *(f"##{c}" for c in chars)]:
        vocab.setdefault(token, len(vocab))
    for word, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        if len(vocab) >= vocab_size:
            break
        vocab.setdefault(word, len(vocab))
    tok = _bert_pipeline(Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100)))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    for special in SPECIALS:
        tok.add_special_tokens([special])
    return tok


def load_pretrained(name_or_path: str) -> Tokenizer:
    """The fast (Rust) tokenizer of a local folder or a hub checkpoint, e.g. dandelin/vilt-b32-mlm.

    A folder (written by ``save_pretrained``) is read with ``local_files_only=True``: no network.
    ``trust_remote_code=False`` always: a folder whose tokenizer_config.json has an ``auto_map``
    (custom code) never runs that code and never prompts; without a built-in class it is an error.
    A hub name comes from the hub cache, else from the hub; offline it fails at once with a
    message saying what to do (:func:`data_prep.checkpoints.load`). Every failure is a DataError
    whose message starts with ``could not load tokenizer``.
    """
    from transformers import AutoTokenizer

    from . import checkpoints

    folder = checkpoints.local_folder(name_or_path)
    hint = " (or fit a WordPiece vocabulary on the train text: --tokenizer train; in the book, model 'tiny')"
    try:
        if folder is not None:
            checkpoints.require_tokenizer(folder)
        hf = checkpoints.load(AutoTokenizer.from_pretrained, name_or_path, what="tokenizer", trust_remote_code=False)
    except checkpoints.CheckpointError as e:
        if "--tokenizer train" in str(e):
            raise
        raise checkpoints.CheckpointError(f"{e}{hint}") from e.__cause__
    except Exception as e:  # noqa: BLE001 - an unexpected failure of transformers: keep the cause
        raise DataError(
            f"could not load tokenizer {name_or_path!r} with transformers.AutoTokenizer "
            f"({type(e).__name__}: {e}). Without internet pass a local folder written by "
            f"save_pretrained{hint}."
        ) from e
    if not getattr(hf, "is_fast", False):
        raise DataError(f"could not load tokenizer {name_or_path!r}: it has no fast (tokenizers) version")
    return Tokenizer.from_str(hf.backend_tokenizer.to_str())


def special_ids(tok: Tokenizer) -> dict[str, int]:
    """pad/cls/sep/unk/mask ids of a BERT-style tokenizer."""
    ids = {name: tok.token_to_id(tokstr) for name, tokstr in
           [("pad", "[PAD]"), ("unk", "[UNK]"), ("cls", "[CLS]"), ("sep", "[SEP]"), ("mask", "[MASK]")]}
    missing = [k for k in ("pad", "cls", "sep") if ids[k] is None]
    if missing:
        raise DataError(f"tokenizer lacks BERT special tokens {missing}")
    return ids


def configure(tok: Tokenizer, max_len: int) -> Tokenizer:
    """Pad and truncate every encoding to exactly max_len tokens (incl. [CLS] and [SEP])."""
    pad = special_ids(tok)["pad"]
    tok.enable_truncation(max_length=max_len)
    tok.enable_padding(length=max_len, pad_id=pad, pad_token=tok.id_to_token(pad))
    return tok


def encode(tok: Tokenizer, texts: list[str], max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Tokenise texts -> input_ids int32 [N, max_len], attention_mask uint8 [N, max_len]."""
    configure(tok, max_len)
    encs = tok.encode_batch(list(texts)) if texts else []
    ids = np.array([e.ids for e in encs], dtype=np.int32).reshape(len(encs), max_len)
    mask = np.array([e.attention_mask for e in encs], dtype=np.uint8).reshape(len(encs), max_len)
    return ids, mask


def save(tok: Tokenizer, out_dir: str | Path) -> Path:
    path = Path(out_dir) / TOKENIZER_FILE
    tok.save(str(path), pretty=True)
    return path


def load_tokenizer(prepared_dir: str | Path):
    """The prepared data's tokenizer as a transformers PreTrainedTokenizerFast (specials set)."""
    from .paths import UnsafeFile, open_inside, read_limited

    try:  # a regular file inside the prepared folder, opened once
        with open_inside(prepared_dir, TOKENIZER_FILE, what="tokenizer file", max_bytes=256 << 20) as f:
            tok = Tokenizer.from_str(read_limited(f, 256 << 20, TOKENIZER_FILE).decode("utf-8"))
    except UnsafeFile as e:
        raise DataError(f"{Path(prepared_dir) / TOKENIZER_FILE}: {e.reason}; expected a regular file inside the prepared folder") from None
    return as_transformers(tok)


def as_transformers(tok: Tokenizer):
    """A BERT-style ``tokenizers`` tokenizer as transformers' PreTrainedTokenizerFast (specials set)."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
    )


def save_fitted(texts: list[str], folder: str | Path, vocab_size: int = 2000) -> None:
    """Fit a WordPiece vocabulary on ``texts`` (:func:`fit_wordpiece`) and save it into ``folder``
    with ``save_pretrained``, beside a model's weights: a checkpoint folder that loads like
    ``dandelin/vilt-b32-mlm`` when the hub's tokenizer cannot be had."""
    as_transformers(fit_wordpiece(texts, vocab_size)).save_pretrained(str(folder))
