"""Everything random about Bark's generation: the rng, the logit filters, and the draw.

Suno's original code filters and samples each token in this order, and so does barknp:

1. **top-p** (if ``top_p`` is given), on the raw logits, *before* temperature: the logits (float32)
   are ordered by ``np.argsort(logits)[::-1]`` (NumPy's default sort, so ties fall as NumPy
   orders them), their softmax is accumulated in that order in float32, every position whose
   running sum exceeds ``top_p`` is marked, the marks are shifted one place later (so the token
   that crosses ``top_p`` stays) and the first token is always kept. Marked logits become -inf.
2. **top-k** (if ``top_k`` is given): logits strictly below the k-th largest (k capped at the
   vocabulary) become -inf; ties with the k-th largest all stay.
3. **temperature**: ``probs = softmax(logits / temp)`` in float32.
4. **the draw** (the rule that makes runs reproducible across implementations):

   - draw ONE float ``u = rng.random()`` from a ``numpy.random.Generator`` (in [0, 1));
   - ``cdf = cumsum(probs)`` in float64, over the probabilities in token-id order;
   - the token is the first index ``i`` with ``cdf[i] > u * cdf[-1]``
     (``np.searchsorted(cdf, u * cdf[-1], side="right")``).

   A token of probability 0 is never picked (its cdf equals its predecessor's). If rounding
   pushes the index past the end, the last token of non-zero probability is taken.

``temp == 0`` means greedy: the token is the argmax of the filtered logits (the first one on a
tie) and **no number is drawn**; the probabilities are then taken as one-hot on that token (the
limit of ``softmax(logits / temp)`` as ``temp`` goes to 0), which is what the semantic stage's
``min_eos_p`` test sees.

Exactly one ``u`` is consumed per sampled token, whatever the token turns out to be (the EOS
step of the semantic stage consumes one too), so a run is a pure function of its seed.
"""

from __future__ import annotations

import numpy as np

from ..errors import BarkError, check_number


def as_generator(rng=None) -> np.random.Generator:
    """None -> a fresh ``default_rng()`` (OS entropy); an int seed -> ``default_rng(seed)``;
    a ``numpy.random.Generator`` is used as is (and advanced by every draw)."""
    if rng is None:
        return np.random.default_rng()
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        if rng < 0:
            raise BarkError(f"rng: a seed must be non-negative, got {rng}")
        return np.random.default_rng(int(rng))
    raise BarkError(f"rng: expected None, an int seed or a numpy Generator, got {type(rng).__name__}")


def check_sampling_args(temp, top_k=None, top_p=None, allow_none_temp: bool = False) -> None:
    """Raise BarkError for a temperature, top_k or top_p the sampler cannot honour."""
    check_number("temp", temp, 0, optional=allow_none_temp)
    check_number("top_k", top_k, 1, integer=True, optional=True)
    if check_number("top_p", top_p, 0, 1, optional=True) == 0:
        raise BarkError("top_p: must be in (0, 1], got 0.0")


def softmax(logits: np.ndarray) -> np.ndarray:
    """(..., V) float -> (..., V) probabilities in the input's float dtype, max-shifted.

    -inf logits get probability exactly 0 (as long as one logit is finite).
    """
    shifted = logits - logits.max(axis=-1, keepdims=True)  # (..., V)
    e = np.exp(shifted)  # (..., V)
    return e / e.sum(axis=-1, keepdims=True)


def apply_top_p(logits: np.ndarray, top_p: float) -> np.ndarray:
    """(V,) float32 -> (V,) float32 copy with the tail beyond ``top_p`` set to -inf (rule 1 above)."""
    logits = np.array(logits, dtype=np.float32)  # (V,) own copy: the caller's array stays intact
    order = np.argsort(logits)[::-1]  # (V,) descending; NumPy's default kind, as the original
    cumulative = np.cumsum(softmax(logits[order]))  # (V,) float32
    remove = cumulative > top_p  # (V,)
    remove[1:] = remove[:-1].copy()  # keep the token whose mass crosses top_p
    remove[0] = False
    logits[order[remove]] = -np.inf
    return logits


def apply_top_k(logits: np.ndarray, top_k: int) -> np.ndarray:
    """(V,) float32 -> (V,) float32 copy keeping the logits >= the k-th largest (rule 2 above)."""
    logits = np.array(logits, dtype=np.float32)  # (V,)
    k = min(int(top_k), logits.shape[-1])
    kth = np.partition(logits, logits.shape[-1] - k)[logits.shape[-1] - k]
    logits[logits < kth] = -np.inf
    return logits


def filter_logits(logits: np.ndarray, top_k=None, top_p=None) -> np.ndarray:
    """(V,) -> (V,) float32: top-p then top-k, in the original's order."""
    logits = np.asarray(logits, dtype=np.float32)  # (V,)
    if top_p is not None:
        logits = apply_top_p(logits, top_p)
    if top_k is not None:
        logits = apply_top_k(logits, top_k)
    return logits


def draw(probs: np.ndarray, u: float) -> int:
    """The inverse-CDF pick of rule 4: probs (V,) float, u in [0, 1) -> token index."""
    cdf = np.cumsum(probs, dtype=np.float64)  # (V,)
    total = cdf[-1]
    if not total > 0:  # NaN or all-zero probabilities: nothing can be drawn
        raise BarkError("sampling: the probabilities are all zero or NaN (non-finite logits?)")
    i = int(np.searchsorted(cdf, u * total, side="right"))
    if i >= cdf.shape[0]:
        i = int(np.flatnonzero(np.asarray(probs) > 0)[-1])
    return i


def draw_rows(probs: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Rule 4 row by row: probs (N, V) float, u (N,) float64 -> (N,) int64 token indices."""
    cdf = np.cumsum(probs, axis=-1, dtype=np.float64)  # (N, V)
    total = cdf[:, -1]  # (N,)
    if not np.all(total > 0):
        raise BarkError("sampling: the probabilities are all zero or NaN (non-finite logits?)")
    picks = (cdf <= (u * total)[:, None]).sum(axis=-1)  # (N,) == searchsorted(side="right")
    over = picks >= cdf.shape[1]
    for row in np.flatnonzero(over):  # rounding at u ~ 1: fall back to the last live token
        picks[row] = np.flatnonzero(probs[row] > 0)[-1]
    return picks.astype(np.int64)


def sample(logits: np.ndarray, temp: float, rng: np.random.Generator, top_k=None, top_p=None):
    """Filter, temper and draw one token.

    logits (V,) float -> (token int, probs (V,) float32) where probs are what the token was drawn
    from (one-hot on the argmax when ``temp == 0``, and then nothing is drawn from ``rng``).
    """
    logits = filter_logits(logits, top_k=top_k, top_p=top_p)  # (V,) float32
    if temp == 0:
        token = int(np.argmax(logits))
        probs = np.zeros(logits.shape, dtype=np.float32)  # (V,)
        probs[token] = 1.0
        return token, probs
    probs = softmax(logits / np.float32(temp))  # (V,) float32
    return draw(probs, rng.random()), probs
