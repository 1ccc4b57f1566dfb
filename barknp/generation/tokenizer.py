"""Bark's text tokenizer: bert-base-multilingual-cased WordPiece, without special tokens.

Suno's original calls ``BertTokenizer.encode(text, add_special_tokens=False)``. barknp reads the
same vocabulary through the ``tokenizers`` library: ``vocab.txt`` with the cased BERT settings
(clean control characters, split CJK characters into single tokens, no lower-casing, no accent
stripping) when the folder has one, otherwise ``tokenizer.json``. Either way the ids are the
plain BERT ids; the semantic stage shifts them by ``TEXT_ENCODING_OFFSET``.

One step is added to the ``tokenizers`` pipeline: Unicode NFC composition after BERT's cleaning,
as the Python ``BertTokenizer`` of the transformers 4 releases Bark was written against does (its
``BasicTokenizer``; the tokenizers-backed class of transformers 5 skips it). Without it, text in
decomposed form (``"cafe\u0301"``, as macOS often pastes it) tokenizes to other ids, mostly [UNK].
"""

from __future__ import annotations

import os

from ..errors import BarkError


def _compose_after_cleaning(backend) -> None:
    """Append NFC to the backend's normalizer (BERT's cleaning first, as the reference orders them)."""
    from tokenizers import normalizers

    steps = [backend.normalizer] if backend.normalizer is not None else []
    backend.normalizer = normalizers.Sequence([*steps, normalizers.NFC()])


class Tokenizer:
    """Wraps a ``tokenizers.Tokenizer``; ``encode(text) -> list[int]`` of BERT ids, no [CLS]/[SEP]."""

    def __init__(self, backend, source: str):
        self._backend = backend
        self.source = source  # the file it was read from, for messages

    def encode(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise BarkError(f"tokenizer: text must be a str, got {type(text).__name__}")
        return list(self._backend.encode(text, add_special_tokens=False).ids)

    @property
    def vocab_size(self) -> int:
        return self._backend.get_vocab_size(with_added_tokens=True)

    def __repr__(self) -> str:
        return f"Tokenizer({self.source!r})"


def load_tokenizer(tokenizer_dir) -> Tokenizer:
    """Read the tokenizer in ``tokenizer_dir`` (vocab.txt, else tokenizer.json).

    vocab.txt first: it is what the reference (transformers' BertTokenizer, which Bark calls)
    reads, and building the WordPiece tokenizer from it takes ~0.1 s against ~0.25 s for parsing
    tokenizer.json, a tenth of the time to the first token. Both give the same ids (tested).
    Raises BarkError when the folder has neither file or the file cannot be parsed.
    """
    from tokenizers import Tokenizer as _HFTokenizer

    tokenizer_dir = os.fspath(tokenizer_dir)
    json_path = os.path.join(tokenizer_dir, "tokenizer.json")
    vocab_path = os.path.join(tokenizer_dir, "vocab.txt")
    if os.path.isfile(vocab_path):
        from tokenizers.implementations import BertWordPieceTokenizer

        try:
            backend = BertWordPieceTokenizer(
                vocab_path,
                clean_text=True,
                handle_chinese_chars=True,
                strip_accents=False,  # cased model: accents are part of the vocabulary
                lowercase=False,
            )
        except Exception as e:
            raise BarkError(f"{vocab_path}: cannot read vocabulary: {str(e).splitlines()[0]}") from None
        _compose_after_cleaning(backend)
        return Tokenizer(backend, vocab_path)
    if os.path.isfile(json_path):
        try:
            backend = _HFTokenizer.from_file(json_path)
        except Exception as e:  # tokenizers raises its own Exception type on a bad file
            raise BarkError(f"{json_path}: cannot parse tokenizer: {str(e).splitlines()[0]}") from None
        _compose_after_cleaning(backend)
        return Tokenizer(backend, json_path)
    raise BarkError(f"{tokenizer_dir}: no tokenizer.json or vocab.txt in the tokenizer folder")
