"""Batched generation: several texts through the three stages at once, each row as if alone.

Every item has its own ``numpy.random.Generator`` and draws from it exactly where the
single-item loops (semantic.py, coarse.py, fine.py) would, so item ``i`` of a batch is the same
as generating it alone with generator ``i``:

    gens = np.random.default_rng(seed).spawn(len(texts))          # what rng=seed means here
    generate_batch(bark, texts, voices, rng=seed)[i]
        == bark.generate(texts[i], voices[i], rng=np.random.default_rng(seed).spawn(len(texts))[i])

(token for token; the audio to float32 rounding, see ``decode_batch``). Batching only changes how
the networks are called:

* semantic: every prompt is 513 ids, so one prefill covers the batch; each decode step feeds one
  token per live row through one KV cache. A row that stops (EOS, ``min_eos_p``, its duration or
  the step cap) leaves the batch: its cache row is dropped, so later steps cost only live rows.
* coarse: each window's prompt (semantic block + history) differs in length between rows, so the
  prompts are left-padded to the longest and the first forward of the window gets ``pad=``; the
  cache is rebuilt every window, unless no row is padded, now or in the cache, and every live
  row's window starts with what the cache holds for it (no voices: the first ~10 windows, ~4 s),
  where the shared positions are kept, as in the single loop. All live rows are at the same step of the
  same window (every window but a row's last is full), so they share the codebook whose turn it
  is. A row whose steps are done stops drawing (and leaves at the next window).
* fine: windows are always FINE_WINDOW frames, so window ``n`` of every row that has one goes
  through the network in one call.

The float results of a batched call can differ from a one-row call in the last bits (BLAS may
order a product's sums differently for other shapes); a sampled token changes only if the
uniform number falls within that rounding of a CDF boundary, which the tests have not seen.
"""

from __future__ import annotations

import numpy as np

from ..constants import (
    CODEBOOK_SIZE,
    CODEC_HOP_LENGTH,
    COARSE_SLIDING_WINDOW_LEN,
    FINE_TEMP,
    FINE_WINDOW,
    MAX_COARSE_HISTORY,
    MAX_SEMANTIC_STEPS,
    MIN_EOS_P,
    N_FINE_CODEBOOKS,
    SEMANTIC_INFER_TOKEN,
    SEMANTIC_RATE_HZ,
    SEMANTIC_VOCAB_SIZE,
    TEXT_TEMP,
    WAVEFORM_TEMP,
)
from ..errors import BarkError, check_number
from .coarse import CoarseState, check_coarse_windows, codebook_start, shared_prefix
from .fine import FineState
from .progress import progress
from .sampling import as_generator, check_sampling_args, draw_rows, sample, softmax
from .semantic import encode_text, history_block
from .voices import load_voice

# --- per-item arguments -----------------------------------------------------------------------


def batch_size_of(items, what: str) -> int:
    """The number of items in a non-empty list or tuple."""
    if not isinstance(items, (list, tuple)):
        raise BarkError(f"{what}: expected a list of items, got {type(items).__name__}")
    if not items:
        raise BarkError(f"{what}: the batch is empty")
    return len(items)


def per_item(value, n: int, what: str) -> list:
    """``value`` for every item: a list or tuple must have ``n`` entries, anything else is shared."""
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise BarkError(f"{what}: got {len(value)} entries for a batch of {n}")
        return list(value)
    return [value] * n


def item_generators(rng, n: int) -> list[np.random.Generator]:
    """One generator per item.

    A list or tuple gives them (each entry as ``as_generator`` takes it: None, a seed or a
    Generator, used as is). Anything else is one seed or Generator ``g`` (None: fresh entropy)
    and the items get ``as_generator(g).spawn(n)``: for an int seed that is
    ``np.random.default_rng(seed).spawn(n)``, the same list every time.
    """
    if isinstance(rng, (list, tuple)):
        return [as_generator(r) for r in per_item(rng, n, "rng")]
    return as_generator(rng).spawn(n)


def resolve_voices(voices, n: int, presets_dir) -> list:
    """One voice for all, or a list of n, each resolved and checked by ``load_voice``."""
    return [load_voice(v, presets_dir) for v in per_item(voices, n, "voices")]


def for_item(i: int, fn, *args):
    """``fn(*args)`` with a BarkError's message prefixed by the item it concerns."""
    try:
        return fn(*args)
    except BarkError as e:
        raise BarkError(f"item {i}: {e}") from None


def left_pad(rows: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Id rows of different lengths -> (B, T) int64 padded on the left with 0, and (B,) pad counts.

    The padding id is irrelevant: padded positions are invisible to attention.
    """
    longest = max(len(r) for r in rows)
    ids = np.zeros((len(rows), longest), dtype=np.int64)  # (B, T)
    for b, r in enumerate(rows):
        ids[b, longest - len(r) :] = r
    return ids, np.array([longest - len(r) for r in rows], dtype=np.int64)


# --- stage 1 ------------------------------------------------------------------------------------


def generate_semantic_batch(
    model,
    tokenizer,
    texts,
    voices=None,
    temp=TEXT_TEMP,
    top_k=None,
    top_p=None,
    min_eos_p=MIN_EOS_P,
    max_gen_duration_s=None,
    allow_early_stop=True,
    rngs=None,
    silent=False,
    presets_dir=None,
) -> list[np.ndarray]:
    """Texts -> a list of semantic token arrays (T_i,) int64, as ``generate_semantic`` per item.

    ``voices`` and ``max_gen_duration_s`` are one value for all items or a list of one per item;
    ``rngs`` as ``item_generators`` takes it. Row ``i`` draws from generator ``i`` only.
    """
    n = batch_size_of(texts, "texts")
    check_sampling_args(temp, top_k, top_p)
    check_number("min_eos_p", min_eos_p, 0, 1, optional=True)
    limits = [check_number("max_gen_duration_s", d, 0, optional=True) for d in per_item(max_gen_duration_s, n, "max_gen_duration_s")]
    voices = resolve_voices(voices, n, presets_dir)
    rngs = item_generators(rngs, n)
    prompts = np.stack(
        [
            np.concatenate([for_item(i, encode_text, tokenizer, t), history_block(v), [SEMANTIC_INFER_TOKEN]])
            for i, (t, v) in enumerate(zip(texts, voices))
        ]
    ).astype(np.int64)  # (B, 513)

    n_logits = SEMANTIC_VOCAB_SIZE + 1 if allow_early_stop else SEMANTIC_VOCAB_SIZE
    generated: list[list[int]] = [[] for _ in range(n)]
    duration_s = [0.0] * n
    live = list(range(n))  # the item of each batch row
    cache = model.new_cache(n)
    ids = prompts
    for step in progress(range(MAX_SEMANTIC_STEPS), silent=silent):
        logits = model.forward(ids, cache=cache, merge_context=step == 0, last_only=True)  # (B, 1, V)
        keep, fed = [], []
        for b, i in enumerate(live):
            relevant = np.asarray(logits[b, -1, :n_logits], dtype=np.float32)  # (10000 or 10001,)
            token, probs = sample(relevant, temp, rngs[i], top_k=top_k, top_p=top_p)
            if allow_early_stop and (
                token == SEMANTIC_VOCAB_SIZE or (min_eos_p is not None and probs[-1] >= min_eos_p)
            ):
                continue
            generated[i].append(token)
            duration_s[i] += 1 / SEMANTIC_RATE_HZ
            if limits[i] is not None and duration_s[i] > limits[i]:
                continue
            keep.append(b)
            fed.append(token)
        if not keep:
            break
        if len(keep) < len(live):  # finished rows leave: later steps compute only live rows
            cache = cache.keep_rows(keep)
            live = [live[b] for b in keep]
        ids = np.array(fed, dtype=np.int64)[:, None]  # (B', 1)
    return [np.array(g, dtype=np.int64) for g in generated]


# --- stage 2 ------------------------------------------------------------------------------------


def generate_coarse_batch(
    model,
    semantics,
    voices=None,
    temp=WAVEFORM_TEMP,
    top_k=None,
    top_p=None,
    max_coarse_history=MAX_COARSE_HISTORY,
    sliding_window_len=COARSE_SLIDING_WINDOW_LEN,
    rngs=None,
    silent=False,
    presets_dir=None,
) -> list[np.ndarray]:
    """Semantic token arrays -> a list of coarse codes (2, T'_i) int64, as ``generate_coarse`` per item."""
    n = batch_size_of(semantics, "semantics")
    check_sampling_args(temp, top_k, top_p)
    check_coarse_windows(max_coarse_history, sliding_window_len)
    voices = resolve_voices(voices, n, presets_dir)
    rngs = item_generators(rngs, n)
    rows = [for_item(i, CoarseState, s, v, max_coarse_history) for i, (s, v) in enumerate(zip(semantics, voices))]

    n_windows = max(int(np.ceil(r.n_steps / sliding_window_len)) for r in rows)
    cache, cached_rows = None, []
    held = np.zeros((0, 0), dtype=np.int64)  # (B, L): the ids the cache holds, one row per cached item
    for w in progress(range(n_windows), silent=silent):
        live = [i for i, r in enumerate(rows) if r.n_step < r.n_steps]  # each at step w * sliding_window_len
        ids, pad = left_pad([rows[i].window_ids() for i in live])  # (B, T), (B,)
        # As in the single loop: without padding, now or in the cache, positions line up, and the
        # positions every live row's window shares with what the cache holds for it are kept.
        keep = 0
        if held.shape[1] and not pad.any() and set(live) <= set(cached_rows) and hasattr(cache, "truncate"):
            kept = [cached_rows.index(i) for i in live]  # (B_live,): each live item's row in the cache
            keep = min(min(shared_prefix(held[k], ids[b]) for b, k in enumerate(kept)), ids.shape[1] - 1)
        if keep:
            cache = cache.keep_rows(kept) if len(kept) < len(cached_rows) else cache
            cache.truncate(keep)
            held = held[kept, :keep]
        else:
            cache = model.new_cache(len(live))
            held = np.zeros((len(live), 0), dtype=np.int64)
        tracking = not pad.any()  # a padded cache is never kept: its positions are shifted
        cached_rows = live
        ids = ids[:, keep:]  # (B, T - keep)
        for s in range(sliding_window_len):
            step = w * sliding_window_len + s  # every live row's (see the module docstring)
            drawing = [b for b, i in enumerate(live) if rows[i].n_step < rows[i].n_steps]
            if not drawing:
                break
            start = codebook_start(step)
            vocab = (start, start + CODEBOOK_SIZE)  # this codebook's ids: its logits alone are sampled
            first = s == 0 and not keep  # a fresh cache takes the padding with its first call
            logits = model.forward(ids, cache=cache, last_only=True, pad=pad if first else None, vocab=vocab)  # (B, 1, 1024)
            if tracking:
                held = np.concatenate([held, ids], axis=1)  # (B, L + fed)
            ids = np.full((len(live), 1), start, dtype=np.int64)  # (B, 1): rows done feed a dummy
            for b in drawing:
                row = rows[live[b]]
                relevant = np.asarray(logits[b, -1], dtype=np.float32)  # (1024,)
                code, _ = sample(relevant, temp, rngs[live[b]], top_k=top_k, top_p=top_p)
                row.coarse.append(start + code)
                row.n_step += 1
                ids[b, 0] = start + code
    return [r.codes() for r in rows]


# --- stage 3 ------------------------------------------------------------------------------------


def generate_fine_batch(model, coarses, voices=None, temp=FINE_TEMP, rngs=None, silent=True, presets_dir=None):
    """Coarse codes (N, T_i) -> a list of all codes (8, T_i) int64, as ``generate_fine`` per item.

    Every item must give the same number of codebooks N.
    """
    n = batch_size_of(coarses, "coarses")
    check_sampling_args(temp, allow_none_temp=True)
    voices = resolve_voices(voices, n, presets_dir)
    greedy = temp is None or temp == 0
    rngs = None if greedy else item_generators(rngs, n)
    rows = [for_item(i, FineState, c, v) for i, (c, v) in enumerate(zip(coarses, voices))]
    n_coarse = rows[0].n_coarse
    if any(r.n_coarse != n_coarse for r in rows):
        raise BarkError(f"coarses: every item must have the same number of codebooks, got {[r.n_coarse for r in rows]}")

    for n_loop in progress(range(max(r.n_loops for r in rows)), silent=silent):
        live = [i for i, r in enumerate(rows) if n_loop < r.n_loops]
        spans = [rows[i].window(n_loop) for i in live]  # (start, rel) per row
        windows = np.stack([rows[i].frames[s : s + FINE_WINDOW] for i, (s, _) in zip(live, spans)])  # (B, 1024, 8)
        first = min(rel for _, rel in spans)  # the first frame any row re-predicts
        for book in range(n_coarse, N_FINE_CODEBOOKS):
            logits = model.forward(book, windows, first=first, vocab=(0, CODEBOOK_SIZE))  # (B, 1024 - first, 1024)
            for b, (i, (_, rel)) in enumerate(zip(live, spans)):
                relevant = np.asarray(logits[b, rel - first :], dtype=np.float32)  # (1024 - rel, 1024)
                if greedy:
                    windows[b, rel:, book] = np.argmax(relevant, axis=-1)
                else:
                    probs = softmax(relevant / np.float32(temp))  # (1024 - rel, 1024)
                    windows[b, rel:, book] = draw_rows(probs, rngs[i].random(relevant.shape[0]))
        for b, (i, (s, _)) in enumerate(zip(live, spans)):
            rows[i].frames[s : s + FINE_WINDOW] = windows[b]
    return [r.codes() for r in rows]


# --- the codec and the whole pipeline -----------------------------------------------------------


def decode_batch(codec, codes: list[np.ndarray]) -> list[np.ndarray]:
    """A list of codes (8, T_i) -> a list of audio (T_i * 320,) float32, in one codec call.

    The codes are right-padded (with code 0) to the longest and each item's first T_i * 320
    samples cut out. The decoder is causal except at the very start, where its reflection
    padding reads the first ``kernel_size - 1`` frames ahead; so an item of at least
    ``kernel_size`` (7) frames gets the samples it would get alone, up to float32 rounding (the
    batched products sum in other orders). A shorter item is decoded alone, since the padding
    frames would stand where its reflection reads.
    """
    short = [b for b, c in enumerate(codes) if c.shape[1] < codec.config.kernel_size]
    if short:
        audio = [codec.decode(c) if b in short else None for b, c in enumerate(codes)]
        rest = [b for b in range(len(codes)) if b not in short]
        for b, a in zip(rest, decode_batch(codec, [codes[b] for b in rest]) if rest else []):
            audio[b] = a
        return audio
    longest = max(c.shape[1] for c in codes)
    batch = np.zeros((len(codes), N_FINE_CODEBOOKS, longest), dtype=np.int64)  # (B, 8, T)
    for b, c in enumerate(codes):
        batch[b, :, : c.shape[1]] = c
    audio = codec.decode(batch)  # (B, T * 320)
    return [audio[b, : c.shape[1] * CODEC_HOP_LENGTH].copy() for b, c in enumerate(codes)]


def generate_batch(
    bark,
    texts,
    voice=None,
    text_temp=TEXT_TEMP,
    waveform_temp=WAVEFORM_TEMP,
    fine_temp=FINE_TEMP,
    min_eos_p=MIN_EOS_P,
    max_gen_duration_s=None,
    rng=None,
    batch_size=None,
    silent=False,
    output_full=False,
):
    """Texts -> a list of 24 kHz float32 audio arrays (N_i,), each at its own length.

    ``bark`` is a loaded :class:`barknp.model.Bark`. ``voice`` is one voice for all or a list of
    one per text; ``max_gen_duration_s`` likewise. ``rng`` as ``item_generators`` takes it: item
    i uses generator i through all four stages, as ``bark.generate(texts[i], voice_i,
    rng=generator_i)`` would. ``batch_size`` (default: all) caps how many items run together;
    it changes speed and memory, not the results. With ``output_full`` returns a list of
    ``(full_generation, audio)`` pairs, as ``Bark.generate`` returns one.
    """
    n = batch_size_of(texts, "texts")
    if batch_size is None:
        batch_size = n
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise BarkError(f"batch_size: must be an integer >= 1 or None, got {batch_size!r}")
    voices = [bark.voice(v) for v in per_item(voice, n, "voice")]
    limits = per_item(max_gen_duration_s, n, "max_gen_duration_s")
    rngs = item_generators(rng, n)
    out = []
    for lo in range(0, n, batch_size):
        part = slice(lo, lo + batch_size)
        semantic = generate_semantic_batch(
            bark.semantic, bark.tokenizer, list(texts[part]), voices[part], temp=text_temp, min_eos_p=min_eos_p,
            max_gen_duration_s=limits[part], rngs=rngs[part], silent=silent,
        )
        coarse = generate_coarse_batch(bark.coarse, semantic, voices[part], temp=waveform_temp, rngs=rngs[part],
                                       silent=silent)
        fine = generate_fine_batch(bark.fine, coarse, voices[part], temp=fine_temp, rngs=rngs[part], silent=silent)
        audio = decode_batch(bark.codec, fine)
        if output_full:
            out += [({"semantic_prompt": s, "coarse_prompt": c, "fine_prompt": f}, a)
                    for s, c, f, a in zip(semantic, coarse, fine, audio)]
        else:
            out += audio
    return out
