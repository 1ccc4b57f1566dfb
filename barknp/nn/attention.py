"""Multi-head self-attention and the key/value cache that causal decoding writes into.

The cache is preallocated for the whole block and written in place: decoding one token copies one
key and one value per layer and head, never the history.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numba
import numpy as np

from .ops import Linear, linear, softmax


class Attention(NamedTuple):
    """A checkpoint ``attn`` module: the fused q/k/v projection and the output projection."""

    att_proj: Linear  # weight (3C, C): rows are q, then k, then v
    out_proj: Linear  # weight (C, C)


class KVCache:
    """Keys and values of every layer for up to ``max_len`` positions.

    keys, values: (n_layer, B, n_head, max_len, head_dim) float32, valid up to ``length``.
    A model's forward pass writes the new positions and then advances ``length``. ``pad`` (B,)
    int64, set by the first forward of a left-padded batch, counts each sequence's padding.
    """

    def __init__(self, n_layer: int, batch: int, n_head: int, max_len: int, head_dim: int):
        shape = (n_layer, batch, n_head, max_len, head_dim)
        self.keys = np.zeros(shape, dtype=np.float32)
        self.values = np.zeros(shape, dtype=np.float32)
        self.length = 0
        self.pad: np.ndarray | None = None

    @property
    def batch(self) -> int:
        return self.keys.shape[1]

    @property
    def max_len(self) -> int:
        return self.keys.shape[3]

    def reset(self) -> None:
        """Forget every position; the buffers are reused."""
        self.length = 0
        self.pad = None


def split_heads(x: np.ndarray, n_head: int) -> np.ndarray:
    """(B, T, C) -> (B, n_head, T, C // n_head)."""
    B, T, C = x.shape
    return x.reshape(B, T, n_head, C // n_head).transpose(0, 2, 1, 3)


def merge_heads(x: np.ndarray) -> np.ndarray:
    """(B, n_head, T, D) -> (B, T, n_head * D)."""
    B, H, T, D = x.shape
    return x.transpose(0, 2, 1, 3).reshape(B, T, H * D)


def masked_softmax_reference(
    scores: np.ndarray, scale: float, causal_offset: int | None, key_start: np.ndarray | None = None
) -> np.ndarray:
    """Softmax over the last axis of ``scores * scale`` with invisible keys masked.

    scores (B, H, T, S) float32 -> probabilities of the same shape. Query t sits at absolute
    position ``causal_offset + t`` and sees keys up to causal_offset + t (``None``: every key).
    ``key_start`` (B,) int hides each sequence's first keys (its left padding). A query that sees
    no key at all (one inside the padding) gets all-zero probabilities.
    """
    B, H, T, S = scores.shape
    scores = scores * np.float32(scale)
    keys = np.arange(S)
    hidden = np.zeros((B, 1, T, S), dtype=bool)
    if causal_offset is not None:
        hidden |= keys[None, None, None, :] > (causal_offset + np.arange(T))[None, None, :, None]
    if key_start is not None:
        hidden |= keys[None, None, None, :] < np.asarray(key_start)[:, None, None, None]
    scores = np.where(hidden, -np.inf, scores)
    peak = scores.max(axis=-1, keepdims=True)
    e = np.exp(scores - np.where(np.isfinite(peak), peak, 0.0))
    total = e.sum(axis=-1, keepdims=True)
    return (e / np.where(total > 0, total, 1.0)).astype(np.float32)


@numba.njit(parallel=True, cache=True)
def masked_softmax(scores, scale, causal_offset, key_start):
    """The kernel of :func:`masked_softmax_reference`: scores (B, H, T, S) float32, overwritten.

    ``causal_offset`` < 0 means no causal mask; ``key_start`` (B,) int64. One pass per row, rows
    over threads.
    """
    B, H, T, S = scores.shape
    for r in numba.prange(B * H * T):
        b, h, t = r // (H * T), (r // T) % H, r % T
        row = scores[b, h, t]
        first = key_start[b]
        last = S if causal_offset < 0 else min(S, causal_offset + t + 1)  # one past the last visible
        for j in range(first):
            row[j] = 0.0
        for j in range(max(first, last), S):
            row[j] = 0.0
        if last <= first:
            continue
        # float32 throughout (expf), as the reference: a float64 exp costs several times more
        peak = np.float32(-np.inf)
        for j in range(first, last):
            peak = max(peak, row[j] * scale)
        total = np.float32(0.0)
        for j in range(first, last):
            e = math.exp(row[j] * scale - peak)
            row[j] = e
            total += e
        inv = np.float32(1.0) / total
        for j in range(first, last):
            row[j] *= inv
    return scores


def attend(
    q: np.ndarray, k: np.ndarray, v: np.ndarray, causal_offset: int | None, key_start: np.ndarray | None = None
) -> np.ndarray:
    """Scaled dot-product attention.

    q (B, H, T, D), k and v (B, H, S, D) float32 -> (B, H, T, D) float32.
    ``causal_offset`` is the absolute position of q's first row within k (S - T for a causal
    model continuing a cache); ``None`` means non-causal, every query sees every key.
    ``key_start`` (B,) int: keys before it are padding, invisible to that sequence.
    """
    B, H, T, D = q.shape
    scale = 1.0 / math.sqrt(D)
    scores = q @ k.transpose(0, 1, 3, 2)  # (B, H, T, S)
    if T == 1 and key_start is None:  # a decode step: every cached key is visible
        scores *= np.float32(scale)
        probs = softmax(scores)
    elif T == 1:  # a padded batch's decode step: the reference's masking costs little at one row
        probs = masked_softmax_reference(scores, scale, None, key_start)
    elif causal_offset is None and key_start is None:
        # nothing to mask (the fine model): NumPy's SIMD float32 exp beats the kernel's scalar expf
        scores *= np.float32(scale)
        scores -= scores.max(axis=-1, keepdims=True)
        np.exp(scores, out=scores)
        scores /= scores.sum(axis=-1, keepdims=True)
        probs = scores
    else:
        starts = np.zeros(B, dtype=np.int64) if key_start is None else np.asarray(key_start, dtype=np.int64)
        offset = -1 if causal_offset is None else causal_offset
        probs = masked_softmax(scores, np.float32(scale), offset, starts)
    return probs @ v  # (B, H, T, D)


def self_attention(
    x: np.ndarray,
    attn: Attention,
    n_head: int,
    cache: KVCache | None = None,
    layer: int = 0,
    causal: bool = True,
    pad: np.ndarray | None = None,
) -> np.ndarray:
    """One attention sub-layer: x (B, T, C) float32 -> (B, T, C) float32.

    With a cache, this layer's keys and values for the T new positions are written at
    ``cache.length`` and the query attends over everything cached so far. The caller advances
    ``cache.length`` once all layers have run. ``pad`` (B,) int: keys before ``pad[b]`` are
    sequence b's left padding.
    """
    B, T, C = x.shape
    qkv = linear(x, attn.att_proj)  # (B, T, 3C)
    q = split_heads(qkv[..., :C], n_head)  # (B, H, T, D)
    k = split_heads(qkv[..., C : 2 * C], n_head)  # (B, H, T, D)
    v = split_heads(qkv[..., 2 * C :], n_head)  # (B, H, T, D)
    past = 0
    if cache is not None:
        past = cache.length
        cache.keys[layer, :, :, past : past + T] = k
        cache.values[layer, :, :, past : past + T] = v
        k = cache.keys[layer, :, :, : past + T]  # (B, H, past + T, D)
        v = cache.values[layer, :, :, : past + T]  # (B, H, past + T, D)
    y = attend(q, k, v, causal_offset=past if causal else None, key_start=pad)  # (B, H, T, D)
    return linear(merge_heads(y), attn.out_proj)  # (B, T, C)
