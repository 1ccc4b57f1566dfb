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
    A model's forward pass writes the new positions and then advances ``length``.
    """

    def __init__(self, n_layer: int, batch: int, n_head: int, max_len: int, head_dim: int):
        shape = (n_layer, batch, n_head, max_len, head_dim)
        self.keys = np.zeros(shape, dtype=np.float32)
        self.values = np.zeros(shape, dtype=np.float32)
        self.length = 0

    @property
    def batch(self) -> int:
        return self.keys.shape[1]

    @property
    def max_len(self) -> int:
        return self.keys.shape[3]

    def reset(self) -> None:
        """Forget every position; the buffers are reused."""
        self.length = 0


def split_heads(x: np.ndarray, n_head: int) -> np.ndarray:
    """(B, T, C) -> (B, n_head, T, C // n_head)."""
    B, T, C = x.shape
    return x.reshape(B, T, n_head, C // n_head).transpose(0, 2, 1, 3)


def merge_heads(x: np.ndarray) -> np.ndarray:
    """(B, n_head, T, D) -> (B, T, n_head * D)."""
    B, H, T, D = x.shape
    return x.transpose(0, 2, 1, 3).reshape(B, T, H * D)


def masked_softmax_reference(scores: np.ndarray, scale: float, causal_offset: int | None) -> np.ndarray:
    """Softmax over the last axis of ``scores * scale`` with future keys masked.

    scores (..., T, S) float32 -> probabilities of the same shape. Query t sits at absolute
    position ``causal_offset + t`` and sees keys 0 .. causal_offset + t; ``None``: no mask.
    """
    T, S = scores.shape[-2:]
    scores = scores * np.float32(scale)
    if causal_offset is not None:
        future = np.arange(S)[None, :] > (causal_offset + np.arange(T))[:, None]  # (T, S)
        scores[..., future] = -np.inf
    return softmax(scores)


@numba.njit(parallel=True, cache=True)
def masked_softmax(scores, scale, causal_offset):  # scores (N, T, S) float32, overwritten
    """The kernel of :func:`masked_softmax_reference`, one pass per row, rows over threads.

    ``causal_offset`` < 0 means no mask. Masked entries become exactly 0.
    """
    N, T, S = scores.shape
    for r in numba.prange(N * T):
        row = scores[r // T, r % T]
        visible = S if causal_offset < 0 else min(S, causal_offset + r % T + 1)
        peak = -np.inf
        for j in range(visible):
            peak = max(peak, row[j] * scale)
        total = 0.0
        for j in range(visible):
            e = math.exp(row[j] * scale - peak)
            row[j] = e
            total += e
        inv = 1.0 / total
        for j in range(visible):
            row[j] *= inv
        for j in range(visible, S):
            row[j] = 0.0
    return scores


def attend(q: np.ndarray, k: np.ndarray, v: np.ndarray, causal_offset: int | None) -> np.ndarray:
    """Scaled dot-product attention.

    q (B, H, T, D), k and v (B, H, S, D) float32 -> (B, H, T, D) float32.
    ``causal_offset`` is the absolute position of q's first row within k (S - T for a causal
    model continuing a cache); ``None`` means non-causal, every query sees every key.
    """
    B, H, T, D = q.shape
    scale = 1.0 / math.sqrt(D)
    scores = q @ k.transpose(0, 1, 3, 2)  # (B, H, T, S)
    if T == 1:  # a decode step: one short row per head, cheaper in NumPy than a kernel launch
        probs = masked_softmax_reference(scores, scale, None)
    else:
        offset = -1 if causal_offset is None else causal_offset
        probs = masked_softmax(scores.reshape(B * H, T, -1), np.float32(scale), offset).reshape(scores.shape)
    return probs @ v  # (B, H, T, D)


def self_attention(
    x: np.ndarray,
    attn: Attention,
    n_head: int,
    cache: KVCache | None = None,
    layer: int = 0,
    causal: bool = True,
) -> np.ndarray:
    """One attention sub-layer: x (B, T, C) float32 -> (B, T, C) float32.

    With a cache, this layer's keys and values for the T new positions are written at
    ``cache.length`` and the query attends over everything cached so far. The caller advances
    ``cache.length`` once all layers have run.
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
    y = attend(q, k, v, causal_offset=past if causal else None)  # (B, H, T, D)
    return linear(merge_heads(y), attn.out_proj)  # (B, T, C)
