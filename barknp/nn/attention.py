"""Multi-head self-attention and the key/value cache that causal decoding writes into.

The cache is preallocated for the whole block and written in place: decoding one token copies one
key and one value per layer and head, never the history.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numba
import numpy as np

from ..threads import SERIAL, Workers
from .half import kernel_view, kv_dtype, widen
from .mathf import exp32
from .ops import Linear


class Attention(NamedTuple):
    """A checkpoint ``attn`` module: the fused q/k/v projection and the output projection."""

    att_proj: Linear  # weight (3C, C): rows are q, then k, then v
    out_proj: Linear  # weight (C, C)


class KVCache:
    """Keys and values of every layer for up to ``max_len`` positions.

    keys, values: (n_layer, B, n_head, max_len, head_dim), valid up to ``length``; float32, or
    float16 (``dtype``), which halves what a decode step reads from the cache and rounds every key
    and value (a reduced-precision option: barknp/nn/half.py). A model's forward pass writes the
    new positions and then advances ``length``. ``pad`` (B,) int64, set by the first forward of a
    left-padded batch, counts each sequence's padding.
    """

    def __init__(self, n_layer: int, batch: int, n_head: int, max_len: int, head_dim: int, dtype=np.float32):
        shape = (n_layer, batch, n_head, max_len, head_dim)
        self.keys = np.zeros(shape, dtype=kv_dtype(dtype))
        self.values = np.zeros(shape, dtype=self.keys.dtype)
        self.length = 0
        self.pad: np.ndarray | None = None

    @property
    def dtype(self) -> np.dtype:
        return self.keys.dtype

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

    def truncate(self, length: int) -> None:
        """Forget every position from ``length`` on; positions before it stay valid."""
        if not 0 <= length <= self.length:
            raise ValueError(f"truncate: length must be in [0, {self.length}], got {length}")
        self.length = length

    def keep_rows(self, keep: list[int]) -> "KVCache":
        """A new cache holding only the rows ``keep`` of this one: its valid positions and pad.
        (``barknp.cuda.models.CUDAKVCache`` overrides it: device arrays take no list index.)"""
        n_layer, _, n_head, max_len, head_dim = self.keys.shape
        kept = KVCache(n_layer, len(keep), n_head, max_len, head_dim, self.dtype)
        n = self.length
        kept.keys[:, :, :, :n] = self.keys[:, keep, :, :n]  # (L, B', H, n, D)
        kept.values[:, :, :, :n] = self.values[:, keep, :, :n]
        kept.length = n
        kept.pad = None if self.pad is None else self.pad[keep]
        return kept


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


@numba.njit(cache=True, fastmath=True, error_model="numpy", nogil=True)
def masked_softmax(scores, scale, causal_offset, key_start):
    """The kernel of :func:`masked_softmax_reference`: scores (B, H, T, S) float32, overwritten.

    ``causal_offset`` < 0 means no causal mask; ``key_start`` (B,) int64. One pass per row; the
    float32 ``exp32`` keeps each pass eight lanes wide. Serial on purpose: it runs between two BLAS
    products (see barknp.threads).
    """
    B, H, T, S = scores.shape
    for r in range(B * H * T):
        b, h, t = r // (H * T), (r // T) % H, r % T
        row = scores[b, h, t]
        first = min(key_start[b], S)
        last = S if causal_offset < 0 else min(S, causal_offset + t + 1)  # one past the last visible
        row[:first] = 0.0
        row[max(first, last) :] = 0.0
        if last <= first:
            continue
        # Loops over a slice from 0: with indices that cannot be negative, LLVM drops Numba's
        # wraparound checks and vectorises (4x faster than looping from ``first``).
        seen = row[first:last]
        peak = np.float32(-np.inf)
        for j in range(seen.shape[0]):
            peak = max(peak, seen[j])
        total = np.float32(0.0)
        for j in range(seen.shape[0]):
            e = exp32((seen[j] - peak) * scale)
            seen[j] = e
            total += e
        inv = np.float32(1.0) / total
        for j in range(seen.shape[0]):
            seen[j] *= inv
    return scores


def attend_reference(
    q: np.ndarray, k: np.ndarray, v: np.ndarray, causal_offset: int | None, key_start: np.ndarray | None = None
) -> np.ndarray:
    """Scaled dot-product attention in plain NumPy: the specification of :func:`attend`.

    q (B, H, T, D) float32, k and v (B, H, S, D) float32 (or float16, taken at their float32
    values) -> (B, H, T, D) float32. Query t sits at absolute position ``causal_offset + t`` within
    k (``None``: non-causal, every key visible); ``key_start`` (B,) int hides each sequence's first
    keys (its left padding).
    """
    scores = q @ k.transpose(0, 1, 3, 2)  # (B, H, T, S)
    probs = masked_softmax_reference(scores, 1.0 / math.sqrt(q.shape[-1]), causal_offset, key_start)
    return (probs @ v).astype(np.float32)  # (B, H, T, D)


@numba.njit(inline="always", fastmath=True, error_model="numpy")
def attend_one(qt, keys, values, scale, scores, acc):
    """One query over its visible keys: qt (D,) float32, keys and values (n, D) float32 or float16
    bits (uint16, see barknp/nn/half.py) with n >= 1, scores (n,) float32 scratch -> acc (D,) float32
    = softmax(keys @ qt * scale) @ values. Loops run over arrays indexed from 0, so that LLVM
    vectorises them (see masked_softmax)."""
    D = qt.shape[0]
    peak = np.float32(-np.inf)
    for j in range(scores.shape[0]):
        kj = keys[j]
        s = np.float32(0.0)
        for d in range(D):
            s += qt[d] * widen(kj[d])
        scores[j] = s
        peak = max(peak, s)
    total = np.float32(0.0)
    for j in range(scores.shape[0]):
        e = exp32((scores[j] - peak) * scale)
        scores[j] = e
        total += e
    acc[:] = 0.0
    for j in range(scores.shape[0]):
        p = scores[j]
        vj = values[j]
        for d in range(D):
            acc[d] += p * widen(vj[d])
    inv = np.float32(1.0) / total
    for d in range(D):
        acc[d] *= inv


@numba.njit(parallel=True, cache=True, fastmath=True, error_model="numpy")
def attend_rows(q, k, v, length, scale, causal_offset, key_start, out):
    """:func:`attend_reference` fused for few query rows (decoding): scores, softmax and the
    weighted sum of values per (sequence, head), reading the keys and values where they lie.

    q (B, H, T, D) float32; k and v (B, H, S_max, D) float32 or float16 bits (uint16),
    C-contiguous (a cache's buffers), of which the first ``length`` positions are keys; scale
    float32; causal_offset int (< 0: non-causal); key_start (B,) int64 -> out (B, H, T, D) float32.
    """
    B, H, T, D = q.shape
    for r in numba.prange(B * H):
        b, h = r // H, r % H
        scores = np.empty(length, dtype=np.float32)
        for t in range(T):
            first = min(key_start[b], length)
            last = length if causal_offset < 0 else min(length, causal_offset + t + 1)
            if last <= first:  # a query inside the padding sees nothing: zeros
                out[b, h, t] = 0.0
                continue
            attend_one(q[b, h, t], k[b, h, first:last], v[b, h, first:last], scale, scores[: last - first], out[b, h, t])
    return out


# Query rows up to which the fused kernel beats BLAS products (a decode step has 1 row).
FUSED_MAX_ROWS = 4
# Query rows per block of the BLAS path: a block's scores (rows x keys) stay in L2 cache.
QUERY_BLOCK = 128


def attend(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    causal_offset: int | None,
    key_start: np.ndarray | None = None,
    length: int | None = None,
    workers: Workers = SERIAL,
) -> np.ndarray:
    """Scaled dot-product attention: the fast :func:`attend_reference`, same arguments and result.

    k and v may be longer than the keys: only their first ``length`` positions (default: all)
    count, so a cache's whole buffers can be passed, which the fused kernel reads fastest. They
    may be float16 (a float16 cache): the fused kernel reads them as they are, the BLAS path
    converts them to float32 first.

    Few query rows (decoding) go through the fused kernel :func:`attend_rows`. Many rows (a prefill,
    a fine pass) go through :func:`_attend_heads`, the heads shared among ``workers``
    (:func:`barknp.threads.forward_workers`): the products are small (K = head_dim), and whole
    heads per thread need no hand-off inside them.
    """
    B, H, T, D = q.shape
    length = k.shape[2] if length is None else length
    scale = np.float32(1.0 / math.sqrt(D))
    offset = -1 if causal_offset is None else int(causal_offset)
    starts = np.zeros(B, dtype=np.int64) if key_start is None else np.asarray(key_start, dtype=np.int64)
    out = np.empty((B, H, T, D), dtype=np.float32)
    if T <= FUSED_MAX_ROWS:
        if not (k.flags.c_contiguous and v.flags.c_contiguous):
            k, v = np.ascontiguousarray(k[:, :, :length]), np.ascontiguousarray(v[:, :, :length])
        q, k, v = np.ascontiguousarray(q), kernel_view(k), kernel_view(v)
        return attend_rows(q, k, v, length, scale, offset, starts, out)
    k, v = k[:, :, :length], v[:, :, :length]  # (B, H, S, D)
    if k.dtype != np.float32:  # a float16 cache: BLAS multiplies float32
        k, v = k.astype(np.float32), v.astype(np.float32)

    def run(share: list[tuple[int, slice]]) -> None:
        for b, heads in share:
            _attend_heads(q[b, heads], k[b, heads], v[b, heads], scale, offset, starts[b : b + 1], out[b, heads])

    workers.map(run, head_shares(B, H, workers.count))
    return out


def head_shares(B: int, H: int, count: int) -> list[list[tuple[int, slice]]]:
    """The B * H (sequence, head) pairs in ``count`` near-equal shares, each a list of
    (sequence, heads) runs: head_shares(1, 12, 2) == [[(0, slice(0, 6))], [(0, slice(6, 12))]]."""
    total = B * H
    step = -(-total // count)
    shares = []
    for start in range(0, total, step):
        end, share, unit = min(total, start + step), [], start
        while unit < end:
            b, h0 = divmod(unit, H)
            h1 = min(H, h0 + end - unit)
            share.append((b, slice(h0, h1)))
            unit += h1 - h0
        shares.append(share)
    return shares


def _attend_heads(q, k, v, scale, offset, key_start, out) -> None:
    """The BLAS path of :func:`attend` for one sequence's heads, a block of queries at a time.

    q (h, T, D), k and v (h, S, D) float32; key_start (1,) int64 -> out (h, T, D), written. A causal
    block multiplies only the keys its last query sees, which halves a prefill's attention work,
    and a block's scores stay in cache between the two products.
    """
    T, S = q.shape[1], k.shape[1]
    for t0 in range(0, T, QUERY_BLOCK):
        t1 = min(T, t0 + QUERY_BLOCK)
        last = S if offset < 0 else min(S, offset + t1)  # keys the block's last query sees
        scores = np.matmul(q[:, t0:t1], k[:, :last].transpose(0, 2, 1))  # (h, rows, last)
        masked_softmax(scores[None], scale, -1 if offset < 0 else offset + t0, key_start)
        np.matmul(scores, v[:, :last], out=out[:, t0:t1])  # (h, rows, D)


def attend_qkv(
    qkv: np.ndarray,
    n_head: int,
    cache: KVCache | None = None,
    layer: int = 0,
    causal: bool = True,
    pad: np.ndarray | None = None,
    workers: Workers = SERIAL,
    queries: int | None = None,
) -> np.ndarray:
    """The attention of one sub-layer between its two projections: qkv (B, T, 3C) float32, the
    fused q/k/v projection's output, -> heads merged (B, n, C) float32, before ``out_proj``, for
    the last n = ``queries`` (default T) positions; every position's key and value counts.

    With a cache, this layer's keys and values for the T new positions are written at
    ``cache.length`` and the queries attend over everything cached so far. The caller advances
    ``cache.length`` once all layers have run. ``pad`` (B,) int: keys before ``pad[b]`` are
    sequence b's left padding.
    """
    C = qkv.shape[-1] // 3
    q = split_heads(qkv[..., :C], n_head)  # (B, H, T, D)
    k = split_heads(qkv[..., C : 2 * C], n_head)  # (B, H, T, D)
    v = split_heads(qkv[..., 2 * C :], n_head)  # (B, H, T, D)
    T = q.shape[2]
    n = T if queries is None else queries
    q = q[:, :, T - n :]  # (B, H, n, D)
    past = 0
    if cache is not None:
        past = cache.length
        cache.keys[layer, :, :, past : past + T] = k
        cache.values[layer, :, :, past : past + T] = v
        k = cache.keys[layer]  # (B, H, max_len, D), valid up to past + T
        v = cache.values[layer]  # (B, H, max_len, D)
    offset = past + T - n if causal else None  # the first query's position
    y = attend(q, k, v, offset, pad, length=past + T, workers=workers)  # (B, H, n, D)
    return merge_heads(y)  # (B, n, C)
