"""Stage 3: codebooks 0..1 -> 0..7, as Suno's ``generate_fine``.

The fine GPT is non-causal and sees FINE_WINDOW (1024) frames at once. The input is the voice's
fine prompt (its last FINE_HISTORY frames), then the coarse codes with the missing codebooks set
to FINE_PAD_TOKEN, right-padded with FINE_PAD_TOKEN frames to at least 1024. Windows start every
FINE_STEP (512) frames; in each, codebooks n_coarse..7 are predicted one after the other (each
pass sees the codebooks before it), and every position from the window's fill start to its end
is re-predicted, padding included: later windows overwrite earlier ones' second halves.

Sampling draws one number per (window, codebook pass, position), positions in increasing order,
exactly where the original calls ``torch.multinomial``; ``temp`` None or 0 is argmax.
"""

from __future__ import annotations

import numpy as np

from ..constants import (
    CODEBOOK_SIZE,
    FINE_HISTORY,
    FINE_PAD_TOKEN,
    FINE_STEP,
    FINE_TEMP,
    FINE_WINDOW,
    N_FINE_CODEBOOKS,
)
from ..errors import BarkError
from .progress import progress
from .sampling import as_generator, check_sampling_args, draw_rows, softmax
from .voices import load_voice


def check_coarse(coarse) -> np.ndarray:
    """Validate coarse codes -> (N, T) int64 with 1 <= N < 8, T >= 1, values in [0, 1024)."""
    arr = np.asarray(coarse)
    if arr.ndim != 2 or not 1 <= arr.shape[0] <= N_FINE_CODEBOOKS - 1 or arr.shape[1] == 0:
        raise BarkError(
            f"coarse: expected codes of shape (N, T) with 1 <= N <= {N_FINE_CODEBOOKS - 1} and T >= 1, got {arr.shape}"
        )
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise BarkError(f"coarse: codes must be integers, got dtype {arr.dtype}")
    if arr.min() < 0 or arr.max() >= CODEBOOK_SIZE:
        raise BarkError(f"coarse: codes in [{arr.min()}, {arr.max()}], outside [0, {CODEBOOK_SIZE})")
    return arr.astype(np.int64)


class FineState:
    """One sequence's fine generation: every frame (L, 8) of the voice's fine history, the coarse
    codes with the missing codebooks FINE_PAD_TOKEN, and the right padding up to a window. The
    single loop keeps one, the batched loop (batch.py) one per item."""

    def __init__(self, coarse, voice: dict | None):
        coarse = check_coarse(coarse)  # (N, T)
        self.n_coarse, self.n_frames = coarse.shape
        codes = np.full((N_FINE_CODEBOOKS, self.n_frames), FINE_PAD_TOKEN, dtype=np.int64)  # (8, T)
        codes[: self.n_coarse] = coarse
        if voice is not None:
            history = voice["fine_prompt"][:, -FINE_HISTORY:].astype(np.int64)  # (8, H)
            codes = np.concatenate([history, codes], axis=1)  # (8, H + T)
        self.n_history = codes.shape[1] - self.n_frames
        n_pad = max(0, FINE_WINDOW - codes.shape[1])  # the model is non-causal: it needs a whole window
        codes = np.pad(codes, ((0, 0), (0, n_pad)), constant_values=FINE_PAD_TOKEN)  # (8, L), L >= 1024
        self.frames = np.ascontiguousarray(codes.T)  # (L, 8)
        self.n_loops = max(0, int(np.ceil((self.n_frames - (FINE_WINDOW - self.n_history)) / FINE_STEP))) + 1

    def window(self, n: int) -> tuple[int, int]:
        """Window n: (its first frame, the first position within it to (re)predict)."""
        length = self.frames.shape[0]
        start = min(n * FINE_STEP, length - FINE_WINDOW)
        return start, min(self.n_history + n * FINE_STEP, length - FINE_STEP) - start

    def codes(self) -> np.ndarray:
        """All eight codebooks of the sequence's own frames: (8, T) int64."""
        return np.ascontiguousarray(self.frames.T[:, self.n_history : self.n_history + self.n_frames])


def generate_fine(model, coarse, voice=None, temp=FINE_TEMP, rng=None, silent=True, presets_dir=None) -> np.ndarray:
    """Coarse codes (N, T) int -> all codes (8, T) int64 in [0, CODEBOOK_SIZE); rows < N are the input.

    ``model`` is the fine GPT (``forward(codebook_idx, codes (B, T, 8), first, vocab)``, logits of
    frames ``first``.. over output ids ``vocab``). ``temp`` None or 0 is argmax; ``rng`` as in
    sampling.py. Silent by default, as the original's ``generate_fine`` (the other stages show a bar).
    """
    check_sampling_args(temp, allow_none_temp=True)
    state = FineState(coarse, load_voice(voice, presets_dir))
    greedy = temp is None or temp == 0
    rng = None if greedy else as_generator(rng)
    for n in progress(range(state.n_loops), silent=silent):
        start, rel = state.window(n)  # rel: the first window position to (re)predict
        window = state.frames[start : start + FINE_WINDOW]  # (1024, 8) view: writes land in the state
        for book in range(state.n_coarse, N_FINE_CODEBOOKS):
            logits = model.forward(book, window[None], first=rel, vocab=(0, CODEBOOK_SIZE))  # (1, 1024 - rel, 1024)
            relevant = np.asarray(logits[0], dtype=np.float32)  # (1024 - rel, 1024)
            if greedy:
                preds = np.argmax(relevant, axis=-1)  # (1024 - rel,)
            else:
                probs = softmax(relevant / np.float32(temp))  # (1024 - rel, 1024)
                preds = draw_rows(probs, rng.random(relevant.shape[0]))  # (1024 - rel,)
            window[rel:, book] = preds
    return state.codes()
