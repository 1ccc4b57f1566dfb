"""Stage 2: semantic tokens -> codebooks 0 and 1, as Suno's ``generate_coarse(use_kv_caching=True)``.

The coarse GPT reads, per window, 256 semantic tokens (right-padded with
COARSE_SEMANTIC_PAD_TOKEN), COARSE_INFER_TOKEN, then up to ``max_coarse_history`` coarse tokens
of history, and generates ``sliding_window_len`` more before the window slides and the KV cache
is rebuilt (the original rebuilds it from scratch; here the positions at the window's start that
the cache already holds, the same ids at the same positions, are kept). Once the windows slide,
the next window's ids are known after this window's first step, all but the tokens this window
has still to draw: a model that can (``prefill_ahead``: the CPU model, float32 weights, two or
more threads) prefills them into a second cache beside this window's other decode steps, and the
next window feeds only the tokens drawn meanwhile. Coarse tokens interleave
the two codebooks frame by frame (c0[0], c1[0], c0[1], ...) and live in the model's vocabulary at
SEMANTIC_VOCAB_SIZE + code (codebook 0) and SEMANTIC_VOCAB_SIZE + CODEBOOK_SIZE + code
(codebook 1); at each step only the 1024 logits of the codebook whose turn it is are sampled.

With a voice, its semantic and coarse prompts are trimmed to matching lengths (at most
``max_coarse_history`` coarse tokens, an even number of semantic tokens) and the coarse history
then loses its last two tokens: the original's "time alignment" hack, kept as is.
"""

from __future__ import annotations

import contextlib

import numpy as np

from ..constants import (
    BLOCK_SIZE,
    CODEBOOK_SIZE,
    COARSE_INFER_TOKEN,
    COARSE_SEMANTIC_PAD_TOKEN,
    COARSE_SEMANTIC_WINDOW,
    COARSE_SLIDING_WINDOW_LEN,
    MAX_COARSE_HISTORY,
    MIN_COARSE_HISTORY,
    N_COARSE_CODEBOOKS,
    SEMANTIC_TO_COARSE_RATIO,
    SEMANTIC_VOCAB_SIZE,
    WAVEFORM_TEMP,
)
from ..errors import BarkError, check_number
from .progress import progress
from .sampling import as_generator, check_sampling_args, sample
from .voices import load_voice


def check_semantic(semantic) -> np.ndarray:
    """Validate semantic tokens -> (T,) int64, T >= 1, values in [0, SEMANTIC_VOCAB_SIZE)."""
    arr = np.asarray(semantic)
    if arr.ndim != 1 or arr.size == 0:
        raise BarkError(f"semantic: expected a non-empty 1-D token array, got shape {arr.shape}")
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise BarkError(f"semantic: tokens must be integers, got dtype {arr.dtype}")
    if arr.min() < 0 or arr.max() >= SEMANTIC_VOCAB_SIZE:
        raise BarkError(
            f"semantic: tokens in [{arr.min()}, {arr.max()}], outside [0, {SEMANTIC_VOCAB_SIZE})"
        )
    return arr.astype(np.int64)


def fresh_cache(model, cache):
    """An empty cache for one sequence: ``cache`` emptied when it can be, else a new one.

    A model's cache is whatever its ``new_cache`` makes; one with ``reset`` and ``truncate`` (as
    KVCache) is reused and cut back, any other (the tests' scripted models) made afresh.
    """
    if cache is not None and hasattr(cache, "reset"):
        cache.reset()
        return cache
    return model.new_cache(1)


def flatten_codebooks(codes: np.ndarray) -> np.ndarray:
    """(N, T) codes -> (N*T,) int64 frame-major, codebook n shifted by n*CODEBOOK_SIZE."""
    shifted = codes.astype(np.int64) + (np.arange(codes.shape[0], dtype=np.int64) * CODEBOOK_SIZE)[:, None]  # (N, T)
    return shifted.T.reshape(-1)  # (T*N,) c0[0], c1[0], c0[1], ...


def shared_prefix(a: np.ndarray, b: np.ndarray) -> int:
    """How many leading ids two 1-D arrays share."""
    n = min(len(a), len(b))
    differ = np.flatnonzero(a[:n] != b[:n])
    return int(differ[0]) if differ.size else n


def semantic_history_len(max_coarse_history: int = MAX_COARSE_HISTORY) -> int:
    """Semantic tokens of history a coarse window keeps beside ``max_coarse_history`` coarse tokens,
    the same stretch of audio (the original's ``max_semantic_history``: 209 for 630; not the
    semantic stage's MAX_SEMANTIC_HISTORY)."""
    return int(np.floor(max_coarse_history / SEMANTIC_TO_COARSE_RATIO))


def voice_histories(voice: dict, max_semantic_history: int) -> tuple[np.ndarray, np.ndarray]:
    """The voice's trimmed semantic history (S,) and coarse history (C,) in model ids, int64."""
    sem = voice["semantic_prompt"]  # (T,)
    coarse = voice["coarse_prompt"]  # (2, T')
    # the original insists the prompts cover the same stretch of audio
    if round(coarse.shape[-1] / len(sem), 1) != round(SEMANTIC_TO_COARSE_RATIO / N_COARSE_CODEBOOKS, 1):
        raise BarkError(
            f"voice: coarse_prompt has {coarse.shape[-1]} frames for {len(sem)} semantic tokens; "
            f"expected about {SEMANTIC_TO_COARSE_RATIO / N_COARSE_CODEBOOKS:.1f} frames per token"
        )
    coarse_flat = flatten_codebooks(coarse) + SEMANTIC_VOCAB_SIZE  # (2*T',)
    n_sem = int(
        min(
            max_semantic_history,
            len(sem) - len(sem) % 2,
            int(np.floor(len(coarse_flat) / SEMANTIC_TO_COARSE_RATIO)),
        )
    )
    n_coarse = int(round(n_sem * SEMANTIC_TO_COARSE_RATIO))
    # n == 0 slices everything ([-0:]), exactly as the original does
    sem_hist = sem[-n_sem:].astype(np.int64)  # (S,)
    coarse_hist = coarse_flat[-n_coarse:][:-2]  # (C,) minus the alignment hack's two tokens
    return sem_hist, coarse_hist


def check_coarse_windows(max_coarse_history: int, sliding_window_len: int) -> None:
    """Raise BarkError unless the windows fit the block: the history within the original's bounds,
    at least one step per window, and history + steps beside the semantic block."""
    room = BLOCK_SIZE - COARSE_SEMANTIC_WINDOW
    check_number("max_coarse_history", max_coarse_history, MIN_COARSE_HISTORY, MAX_COARSE_HISTORY, integer=True)
    check_number("sliding_window_len", sliding_window_len, 1, integer=True)
    if max_coarse_history + sliding_window_len > room:
        raise BarkError(
            f"sliding_window_len: must be >= 1 with max_coarse_history + sliding_window_len <= "
            f"{room}, got {sliding_window_len} (+{max_coarse_history})"
        )


def codebook_start(n_step: int) -> int:
    """The first model id of the codebook whose turn step ``n_step`` is (they alternate 0, 1)."""
    return SEMANTIC_VOCAB_SIZE + (n_step % N_COARSE_CODEBOOKS) * CODEBOOK_SIZE


class CoarseState:
    """One sequence's coarse generation, in model ids: its semantic tokens behind the voice's
    semantic history, and the coarse tokens so far behind the voice's coarse history. The
    single loop keeps one, the batched loop (batch.py) one per item."""

    def __init__(self, semantic, voice: dict | None, max_coarse_history: int):
        semantic = check_semantic(semantic)  # (T,)
        self.max_coarse_history = max_coarse_history
        self.max_semantic_history = semantic_history_len(max_coarse_history)
        if voice is not None:
            sem_hist, coarse_hist = voice_histories(voice, self.max_semantic_history)  # (S,), (C,)
        else:
            sem_hist = coarse_hist = np.zeros(0, dtype=np.int64)
        self.n_steps = int(
            round(np.floor(len(semantic) * SEMANTIC_TO_COARSE_RATIO / N_COARSE_CODEBOOKS) * N_COARSE_CODEBOOKS)
        )
        if self.n_steps <= 0:
            raise BarkError(f"semantic: {len(semantic)} token(s) is too short to make one coarse frame")
        self.all_semantic = np.concatenate([sem_hist, semantic])  # (S + T,)
        self.base = len(sem_hist)  # where the new semantic tokens start
        self.n_history = len(coarse_hist)
        self.coarse = list(coarse_hist)  # grows by one model id per step
        self.n_step = 0

    def window_ids(self, ahead: int = 0) -> np.ndarray:
        """The prompt of the window starting at the current step: (257 + H,) int64, the 256-token
        semantic block (right-padded), COARSE_INFER_TOKEN, then H <= max_coarse_history ids of history.

        ``ahead`` > 0: the window starting that many steps from now, as far as it is known now: its
        history's last ``ahead`` ids are not generated yet, so they are left off.
        """
        semantic_idx = self.base + int(round((self.n_step + ahead) / SEMANTIC_TO_COARSE_RATIO))
        window = self.all_semantic[max(0, semantic_idx - self.max_semantic_history) :][:COARSE_SEMANTIC_WINDOW]
        block = np.full(COARSE_SEMANTIC_WINDOW, COARSE_SEMANTIC_PAD_TOKEN, dtype=np.int64)  # (256,)
        block[: len(window)] = window
        total = len(self.coarse) + ahead
        history = self.coarse[total - min(total, self.max_coarse_history) :]  # its known part
        return np.concatenate([block, [COARSE_INFER_TOKEN], history]).astype(np.int64)

    def codes(self) -> np.ndarray:
        """The generated tokens as codes (2, T') int64 in [0, CODEBOOK_SIZE)."""
        generated = np.asarray(self.coarse[self.n_history :], dtype=np.int64) - SEMANTIC_VOCAB_SIZE  # (n_steps,)
        codes = generated.reshape(-1, N_COARSE_CODEBOOKS).T  # (2, T'): c0[0], c1[0], c0[1], ... split
        return codes - (np.arange(N_COARSE_CODEBOOKS, dtype=np.int64) * CODEBOOK_SIZE)[:, None]


class WindowCaches:
    """The coarse loop's KV caches: the window's own, and a spare one the next window may be
    prefilled into ahead; each with the ids whose keys and values it holds, in order.

    The original rebuilds the cache for every window. Positions count from the window's start,
    so where a window begins with ids a cache holds, their keys and values are those already
    there: until the history reaches max_coarse_history and the semantic block starts to slide (no
    voice: the first ~10 windows), a window's ids are the last window's plus its tokens, and only
    the last token is new. Once the block slides, a window shares nothing with the last one, but
    all of it except the tokens the last window had still to draw was known at that window's first
    step: prefilled beside its other decode steps (~93 % of a window's work, on a model with
    ``prefill_ahead``), it leaves only those tokens to feed.
    """

    def __init__(self, model):
        self.model = model
        self.cache = self.spare = None
        self.held = self.spare_held = np.zeros(0, dtype=np.int64)  # (L,) and (L',) ids

    def start(self, window: np.ndarray) -> int:
        """Ready the window's cache for window (T,) ids: -> how many leading ids it holds already (< T)."""
        if shared_prefix(self.spare_held, window) > shared_prefix(self.held, window):  # prefilled ahead
            self.cache, self.spare, self.held, self.spare_held = self.spare, self.cache, self.spare_held, self.held
        keep = min(shared_prefix(self.held, window), len(window) - 1) if hasattr(self.cache, "truncate") else 0
        if keep:
            self.cache.truncate(keep)
        else:
            self.cache = fresh_cache(self.model, self.cache)
        self.held = self.held[:keep]
        return keep

    def forward(self, ids: np.ndarray, vocab: tuple[int, int]) -> np.ndarray:
        """Feed ids (1, n) to the window's cache: -> the last one's logits over ``vocab``, (1, 1, V)."""
        logits = self.model.forward(ids, cache=self.cache, last_only=True, vocab=vocab)
        self.held = np.concatenate([self.held, ids[0]])
        return logits

    @contextlib.contextmanager
    def ahead(self, upcoming: np.ndarray | None):
        """Prefill ``upcoming`` (T,), the next window's known ids, into the spare cache while the
        body runs (barknp.threads.run_ahead), where the model can and the next window would not
        simply extend this one; None: nothing to prefill."""
        wanted = (upcoming is not None and hasattr(self.model, "prefill_ahead")
                  and shared_prefix(self.held, upcoming) < len(self.held))
        if wanted:  # the prefill empties the spare cache first: it holds nothing until it succeeds
            self.spare_held = self.spare_held[:0]
        ahead = self.model.prefill_ahead(upcoming[None], self.spare) if wanted else contextlib.nullcontext()
        with ahead as job:  # job: a Future of the refilled spare, or None where nothing runs ahead
            yield
        if job is not None:
            self.spare, self.spare_held = job.result(), upcoming  # the prefill's error, if it failed, is raised here


def generate_coarse(
    model,
    semantic,
    voice=None,
    temp=WAVEFORM_TEMP,
    top_k=None,
    top_p=None,
    max_coarse_history=MAX_COARSE_HISTORY,
    sliding_window_len=COARSE_SLIDING_WINDOW_LEN,
    rng=None,
    silent=False,
    presets_dir=None,
) -> np.ndarray:
    """Semantic tokens (T,) int -> coarse codes (2, T') int64 in [0, CODEBOOK_SIZE).

    T' = floor(T * SEMANTIC_TO_COARSE_RATIO / 2). ``model`` is the causal coarse GPT.
    ``temp == 0`` is greedy; ``rng`` as in sampling.py.
    """
    check_sampling_args(temp, top_k, top_p)
    check_coarse_windows(max_coarse_history, sliding_window_len)
    state = CoarseState(semantic, load_voice(voice, presets_dir), max_coarse_history)
    rng = as_generator(rng)
    n_windows = int(np.ceil(state.n_steps / sliding_window_len))
    caches = WindowCaches(model)

    def step(ids: np.ndarray) -> np.ndarray:
        """Feed ids (1, n) to the window's cache and draw the next token: -> its id (1, 1)."""
        start = codebook_start(state.n_step)
        vocab = (start, start + CODEBOOK_SIZE)  # this codebook's ids: its logits alone are sampled
        logits = caches.forward(ids, vocab)  # (1, 1, 1024)
        code, _ = sample(np.asarray(logits[0, -1], dtype=np.float32), temp, rng, top_k=top_k, top_p=top_p)
        state.coarse.append(start + code)
        state.n_step += 1
        return np.array([[start + code]], dtype=np.int64)

    for _ in progress(range(n_windows), silent=silent):
        window = state.window_ids()  # (257 + H,)
        keep = caches.start(window)
        steps = min(sliding_window_len, state.n_steps - state.n_step)
        ids = step(window[None, keep:])  # the window's new ids, on every thread
        # the next window's ids as far as they are known now, if there is a next window
        upcoming = state.window_ids(ahead=steps - 1) if state.n_step + steps - 1 < state.n_steps else None
        with caches.ahead(upcoming):
            for _ in range(steps - 1):
                ids = step(ids)
    return state.codes()
