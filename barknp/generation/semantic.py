"""Stage 1: text -> semantic tokens, as Suno's ``generate_text_semantic(use_kv_caching=True)``.

The model sees one 513-token prompt whose first two 256-blocks are *summed* position-wise
(``merge_context``): the text block (BERT ids + TEXT_ENCODING_OFFSET, padded with TEXT_PAD_TOKEN)
and the voice-history block (the voice's last 256 semantic tokens, padded with
SEMANTIC_PAD_TOKEN), followed by SEMANTIC_INFER_TOKEN. So the first forward covers 257
positions, and each later step feeds the one new token through the KV cache.

End of sequence: when ``allow_early_stop`` the EOS logit (output id SEMANTIC_PAD_TOKEN) is
appended to the 10 000 semantic logits and takes part in top-p, top-k and temperature like any
token; generation stops when EOS is drawn, or when its temperature-scaled probability is at
least ``min_eos_p`` (in which case the token drawn at that step is discarded). Either way that
step's random number is consumed. Generation also stops after ``max_gen_duration_s`` seconds of
tokens (counted at SEMANTIC_RATE_HZ) and at MAX_SEMANTIC_STEPS tokens.
"""

from __future__ import annotations

import re
import warnings

import numpy as np

from ..constants import (
    MAX_SEMANTIC_HISTORY,
    MIN_EOS_P,
    MAX_SEMANTIC_STEPS,
    MAX_TEXT_TOKENS,
    SEMANTIC_INFER_TOKEN,
    SEMANTIC_PAD_TOKEN,
    SEMANTIC_RATE_HZ,
    SEMANTIC_VOCAB_SIZE,
    TEXT_ENCODING_OFFSET,
    TEXT_PAD_TOKEN,
    TEXT_TEMP,
)
from ..errors import BarkError, check_number
from .progress import progress
from .sampling import as_generator, check_sampling_args, sample
from .voices import load_voice


def normalize_text(text: str) -> str:
    """Collapse every run of whitespace to one space and strip the ends, as the original does."""
    return re.sub(r"\s+", " ", text).strip()


def encode_text(tokenizer, text: str) -> np.ndarray:
    """text -> (MAX_TEXT_TOKENS,) int64 text block: offset BERT ids, truncated (with a warning)
    and right-padded with TEXT_PAD_TOKEN."""
    if not isinstance(text, str):
        raise BarkError(f"text: must be a str, got {type(text).__name__}")
    text = normalize_text(text)
    if not text:
        raise BarkError("text: is empty (or only whitespace)")
    ids = np.asarray(tokenizer.encode(text), dtype=np.int64) + TEXT_ENCODING_OFFSET  # (n,)
    if len(ids) > MAX_TEXT_TOKENS:
        dropped = round((len(ids) - MAX_TEXT_TOKENS) / len(ids) * 100, 1)
        warnings.warn(
            f"text too long: {len(ids)} tokens, only the first {MAX_TEXT_TOKENS} are kept "
            f"(the last {dropped}% is dropped)",
            stacklevel=3,
        )
        ids = ids[:MAX_TEXT_TOKENS]
    block = np.full(MAX_TEXT_TOKENS, TEXT_PAD_TOKEN, dtype=np.int64)  # (256,)
    block[: len(ids)] = ids
    return block


def history_block(voice: dict | None) -> np.ndarray:
    """The voice's last MAX_SEMANTIC_HISTORY semantic tokens, right-padded: (256,) int64."""
    block = np.full(MAX_SEMANTIC_HISTORY, SEMANTIC_PAD_TOKEN, dtype=np.int64)  # (256,)
    if voice is not None:
        hist = np.asarray(voice["semantic_prompt"], dtype=np.int64)[-MAX_SEMANTIC_HISTORY:]  # (<=256,)
        block[: len(hist)] = hist
    return block


def generate_semantic(
    model,
    tokenizer,
    text,
    voice=None,
    temp=TEXT_TEMP,
    top_k=None,
    top_p=None,
    min_eos_p=MIN_EOS_P,
    max_gen_duration_s=None,
    allow_early_stop=True,
    rng=None,
    silent=False,
    presets_dir=None,
) -> np.ndarray:
    """Text -> semantic tokens (T,) int64 in [0, SEMANTIC_VOCAB_SIZE), 0 <= T <= 768.

    ``model`` is the causal semantic GPT (``forward``/``new_cache``), ``tokenizer`` has
    ``encode``. ``voice`` is anything ``load_voice`` accepts (``presets_dir`` resolves names).
    ``temp == 0`` is greedy. ``rng``: None, an int seed or a numpy Generator (see sampling.py).
    """
    check_sampling_args(temp, top_k, top_p)
    check_number("min_eos_p", min_eos_p, 0, 1, optional=True)
    check_number("max_gen_duration_s", max_gen_duration_s, 0, optional=True)
    text_block = encode_text(tokenizer, text)  # (256,)
    voice = load_voice(voice, presets_dir)
    rng = as_generator(rng)

    prompt = np.concatenate(
        [text_block, history_block(voice), np.array([SEMANTIC_INFER_TOKEN], dtype=np.int64)]
    )[None]  # (1, 513)
    n_logits = SEMANTIC_VOCAB_SIZE + 1 if allow_early_stop else SEMANTIC_VOCAB_SIZE
    cache = model.new_cache(1)
    generated: list[int] = []
    duration_s = 0.0
    # progress is shown in percent of the step cap, since where EOS falls is unknown
    pbar = progress(total=100, silent=silent)
    shown = 0
    ids = prompt
    for step in range(MAX_SEMANTIC_STEPS):
        logits = model.forward(ids, cache=cache, merge_context=step == 0, last_only=True)  # (1, 1, V)
        # semantic tokens are output ids [0, 10000); EOS is output id 10000
        relevant = np.asarray(logits[0, -1, :n_logits], dtype=np.float32)  # (10000 or 10001,)
        token, probs = sample(relevant, temp, rng, top_k=top_k, top_p=top_p)
        if allow_early_stop and (
            token == SEMANTIC_VOCAB_SIZE or (min_eos_p is not None and probs[-1] >= min_eos_p)
        ):
            break
        generated.append(token)
        ids = np.array([[token]], dtype=np.int64)  # (1, 1)
        duration_s += 1 / SEMANTIC_RATE_HZ
        if max_gen_duration_s is not None and duration_s > max_gen_duration_s:
            break
        wanted = min(100, int(round(100 * step / MAX_SEMANTIC_STEPS)))
        if wanted > shown:
            pbar.update(wanted - shown)
            shown = wanted
    pbar.update(100 - shown)
    pbar.close()
    return np.array(generated, dtype=np.int64)
