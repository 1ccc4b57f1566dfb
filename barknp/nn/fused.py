"""A transformer block's decode step for one sequence, as one compiled call.

A decode step's work per block is a few small pieces (two layer norms, four weight products, one
query's attention, GELU, two residuals), and driving them from Python cost ~1 ms per token at the
bark-small size, about 6 % of a float32 step and 12 % of an int8 one: a NumPy or Numba call's fixed
cost is microseconds, and a step makes ~30 of them per block. :func:`decode_block` makes one, and
spreads each weight product and the heads over Numba's threads inside it.

The pieces are the same inline kernels the general path uses (``norm_row``, ``gelu32``, ``_dot``
of ``rows_matmul``, ``attend_one``). :func:`decode_block_reference` is its plain-NumPy
specification, and the tests compare the kernel with it and with the general path of
:func:`barknp.nn.block.block_forward`.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from ..constants import LAYER_NORM_EPS
from .attention import KVCache, attend_one, attend_reference
from .gemv import _NO_SCALE, _dot, rows_matmul_reference
from .half import kernel_view, to_cache
from .ops import _NO_BIAS, gelu32, gelu_reference, layer_norm_reference, norm_row
from .quant import QLinear


@numba.njit(parallel=True, fastmath=True, cache=True, error_model="numpy")
def _decode_block(
    x, ln1_w, ln1_b, qkv_w, qkv_s, qkv_b, proj_w, proj_s, proj_b, ln2_w, ln2_b,
    in_w, in_s, in_b, out_w, out_s, out_b, keys, values, pos, eps, y,
):  # fmt: skip
    """x (C,) float32 -> y (C,) float32, writing this position's key and value at ``pos`` of keys
    and values (H, max_len, D) float32 or float16 bits (uint16: barknp/nn/half.py). Weights
    (out, in) float32, float16 bits, or int8 with scales (out,) ((0,) otherwise); biases (out,) or
    (0,)."""
    C = x.shape[0]
    H, _, D = keys.shape
    h = np.empty(C, dtype=np.float32)
    norm_row(x, ln1_w, ln1_b, eps, h)
    qkv = np.empty(3 * C, dtype=np.float32)  # (3C,): q, then k, then v
    for o in numba.prange(3 * C):
        acc = _dot(h, qkv_w[o])
        if qkv_s.shape[0]:
            acc *= qkv_s[o]
        qkv[o] = acc + qkv_b[o] if qkv_b.shape[0] else acc
    for head in range(H):  # this position's key and value, in the cache's dtype
        for d in range(D):
            keys[head, pos, d] = to_cache(qkv[C + head * D + d], keys)
            values[head, pos, d] = to_cache(qkv[2 * C + head * D + d], values)
    attended = np.empty(C, dtype=np.float32)  # (H D,), heads merged
    scale = np.float32(1.0 / math.sqrt(D))
    for head in numba.prange(H):
        scores = np.empty(pos + 1, dtype=np.float32)
        attend_one(qkv[head * D : (head + 1) * D], keys[head, : pos + 1], values[head, : pos + 1], scale,
                   scores, attended[head * D : (head + 1) * D])
    x2 = np.empty(C, dtype=np.float32)  # the residual stream after attention
    for o in numba.prange(C):
        acc = _dot(attended, proj_w[o])
        if proj_s.shape[0]:
            acc *= proj_s[o]
        x2[o] = x[o] + (acc + proj_b[o] if proj_b.shape[0] else acc)
    norm_row(x2, ln2_w, ln2_b, eps, h)
    wide = np.empty(in_w.shape[0], dtype=np.float32)  # (4C,)
    for o in numba.prange(in_w.shape[0]):
        acc = _dot(h, in_w[o])
        if in_s.shape[0]:
            acc *= in_s[o]
        wide[o] = gelu32(acc + in_b[o] if in_b.shape[0] else acc)
    for o in numba.prange(C):
        acc = _dot(wide, out_w[o])
        if out_s.shape[0]:
            acc *= out_s[o]
        y[o] = x2[o] + (acc + out_b[o] if out_b.shape[0] else acc)
    return y


def decode_block_reference(x: np.ndarray, block, cache: KVCache, layer: int) -> np.ndarray:
    """:func:`decode_block` in plain NumPy, from the references of its pieces: x (1, 1, C) float32
    -> (1, 1, C) float32, writing the position's key and value into ``cache`` at ``cache.length``."""

    def lin(v, layer_):  # (C_in,) -> (C_out,)
        scale = layer_.scale if isinstance(layer_, QLinear) else None
        y = rows_matmul_reference(v[None], layer_.weight, scale)[0]
        return y if layer_.bias is None else y + layer_.bias

    keys, values = cache.keys[layer, 0], cache.values[layer, 0]  # (H, max_len, D)
    H, _, D = keys.shape
    pos, C = cache.length, x.shape[-1]
    x = x.reshape(C)
    qkv = lin(layer_norm_reference(x, block.layernorm_1), block.attn.att_proj)  # (3C,)
    keys[:, pos] = qkv[C : 2 * C].reshape(H, D)
    values[:, pos] = qkv[2 * C :].reshape(H, D)
    q = qkv[:C].reshape(1, H, 1, D)  # (B, H, T, D)
    attended = attend_reference(q, keys[None, :, : pos + 1], values[None, :, : pos + 1], pos).reshape(C)
    x2 = x + lin(attended, block.attn.out_proj)  # (C,)
    wide = gelu_reference(lin(layer_norm_reference(x2, block.layernorm_2), block.mlp.in_proj))  # (4C,)
    return (x2 + lin(wide, block.mlp.out_proj)).reshape(1, 1, C)


_EPS = np.float32(LAYER_NORM_EPS)


def _linear_args(layer) -> tuple:
    """(weight, scale or (0,), bias or (0,)) of a Linear or QLinear, as the kernel takes them (a
    float16 weight as its uint16 bits)."""
    scale = layer.scale if isinstance(layer, QLinear) else _NO_SCALE
    return kernel_view(layer.weight), scale, _NO_BIAS if layer.bias is None else layer.bias


def kernel_args(block) -> tuple:
    """A block's weights in the kernel's argument order (17 arrays; absent biases and float32
    scales as empty arrays). A model computes them once per block, not once per token."""
    ln1, ln2 = block.layernorm_1, block.layernorm_2
    return (
        ln1.weight, _NO_BIAS if ln1.bias is None else ln1.bias,
        *_linear_args(block.attn.att_proj), *_linear_args(block.attn.out_proj),
        ln2.weight, _NO_BIAS if ln2.bias is None else ln2.bias,
        *_linear_args(block.mlp.in_proj), *_linear_args(block.mlp.out_proj),
    )  # fmt: skip


def decode_block(x: np.ndarray, args: tuple, cache: KVCache, layer: int) -> np.ndarray:
    """One decode step of a block for one sequence: x (1, 1, C) float32 -> (1, 1, C) float32;
    ``args``: the block's :func:`kernel_args`.

    The position's key and value go into ``cache`` at ``cache.length`` (the caller advances it
    once all layers have run), as in :func:`barknp.nn.block.block_forward`, which gives the same
    result; the query attends over the cache's positions 0..length, so no padding.
    """
    y = np.empty(x.shape[-1], dtype=np.float32)
    x = np.ascontiguousarray(x.reshape(-1))
    keys, values = kernel_view(cache.keys[layer, 0]), kernel_view(cache.values[layer, 0])  # (H, max_len, D)
    _decode_block(x, *args, keys, values, cache.length, _EPS, y)
    return y.reshape(1, 1, -1)
