"""Many-row products of int8 weights: int16 activations times int8 weights, summed in int32.

A prefill of an int8 model is compute-bound, and float32 products (dequantize, then BLAS) reach
sgemm's rate at best. Integer multiply-adds do more per instruction: AVX2's ``vpmaddwd``
multiplies sixteen int16 pairs and adds neighbouring products into eight int32 lanes, twice the
multiplies of a float32 FMA. So each input row is quantized to int16 with its own scale (the
largest magnitude maps to ``ACT_MAX``: 15 bits, an error of at most 1.5e-5 of the row's largest
value, far under the int8 weights' own), the weight is packed as int16 pairs, and the sums are
exact integers until they are scaled back to float32. Measured on the 2-core development machine
(benchmarks/NOTES.md, session 7): 1.2-1.4x float32 sgemm on a prefill's shapes; the whole
prefill gains less (the products are ~70 % of it, and packing and quantizing cost ~3 %).

Numba emits no ``vpmaddwd`` from a loop, so the inner tile (:func:`_madd_tile`) is written as LLVM
IR through a Numba ``@intrinsic``: a sign extension of both int16 vectors, a multiply, and a sum of
the even and odd lanes, which LLVM's x86 back end turns into ``vpmaddwd`` (and other back ends
into their own instructions: nothing here is x86-only).

Layouts (every size padded with zeros, which add nothing to the sums):

* activations ``a``: (Mp, K2) int32, row m holding the int16 pairs (x[m, 2k], x[m, 2k + 1]);
  Mp rounds M up to ``TILE_ROWS``, K2 = ceil(K / 2);
* weight ``panels``: (NP, K2, 32) int16, panel p holding outputs p*16 .. p*16 + 15 as two vectors
  of eight: element [p, k, 16 v + 2 l + s] is q[16 p + 8 v + l, 2 k + s];
* a tile: ``TILE_ROWS`` input rows times one panel, twelve int32 vectors of running sums: each
  weight vector loaded feeds six multiply-adds, each broadcast input pair two.

:func:`qmatmul_reference` is the plain-NumPy specification (the same quantization, an exact
integer product); the tests compare the two on random shapes.
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

# The largest int16 magnitude an activation quantizes to (symmetric, so -32768 is never used).
ACT_MAX = 32767
# Outputs per packed panel: two vectors of eight int32 lanes.
PANEL = 16
# Input rows per tile: 6 x 2 running sums + 2 weight vectors + 1 broadcast fill the 16 registers.
TILE_ROWS = 6
# Panels swept together per chunk of pairs: 8 x 256 pairs x 64 bytes = 128 KB stay in L2 while
# every row's tile passes; a tile's own chunk (16 KB of panel, 6 KB of rows) stays in L1. (All of a
# panel's pairs per tile instead, its 24 KB at K = 768 beside the rows' 9 KB: ~35 % slower.)
PANEL_GROUP = 8
# Rows per block: the block's running sums (96 x N float32) stay in the L3 cache between chunks
# of pairs, where all rows' sums (3 MB and up) went back and forth to memory (measured 5-10 %).
ROW_BLOCK = 16 * TILE_ROWS
# Input pairs summed in int32 before the sum goes to float32: 256 pairs of products of at most
# 32767 x 127 in one lane stay below 2**31 (2 130 641 408), so no sum can overflow.
CHUNK_PAIRS = 256


class PackedQLinear(NamedTuple):
    """An int8 linear packed for many-row products (:func:`packed_linear` makes one): panels
    (NP, K2, 32) int16; scale and bias (16 NP,) float32, per output, zero past out_features."""

    panels: np.ndarray
    scale: np.ndarray
    bias: np.ndarray
    in_features: int
    out_features: int


def packed_linear(panels: np.ndarray, scale: np.ndarray, bias: np.ndarray | None, in_features: int) -> PackedQLinear:
    """The layer of packed ``panels`` (from :func:`pack_weight`), its (N,) float32 row scales and
    bias (or None), which are padded to whole panels so that every tile scales 16 outputs."""
    n = scale.shape[0]
    padded_scale = np.zeros(PANEL * panels.shape[0], dtype=np.float32)  # (16 NP,)
    padded_scale[:n] = scale
    padded_bias = np.zeros_like(padded_scale)  # (16 NP,)
    if bias is not None:
        padded_bias[:n] = bias
    return PackedQLinear(panels, padded_scale, padded_bias, in_features, n)


# --- the plain-NumPy specification ----------------------------------------------------------------


def quantize_activations_reference(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x (M, K) float32 -> (q (M, K) int16, scale (M,) float32), x ~ q * scale per row."""
    peak = np.abs(x).max(axis=1) if x.shape[1] else np.zeros(x.shape[0], np.float32)  # (M,)
    inv = np.where(peak > 0, np.float32(ACT_MAX) / np.where(peak > 0, peak, 1), 0).astype(np.float32)
    q = np.clip(np.rint(x * inv[:, None]), -ACT_MAX, ACT_MAX).astype(np.int16)  # (M, K)
    scale = np.where(peak > 0, peak / np.float32(ACT_MAX), 1).astype(np.float32)  # (M,)
    return q, scale


def qmatmul_reference(x: np.ndarray, q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """x (M, K) float32 times int8 weights q (N, K) with row scales (N,) -> (M, N) float32.

    Activations quantized per row to int16 (:func:`quantize_activations_reference`), the product
    summed exactly (int64), then scaled by both rows' scales."""
    xq, xs = quantize_activations_reference(x)
    exact = xq.astype(np.int64) @ q.astype(np.int64).T  # (M, N)
    return (exact.astype(np.float64) * xs[:, None] * scale[None, :]).astype(np.float32)


# --- packing ------------------------------------------------------------------------------------


@numba.njit(cache=True, nogil=True)
def _pack_into(q, panels):  # q (N, K) int8 -> panels (NP, K2, 32) int16, zero-padded
    N, K = q.shape
    NP, K2 = panels.shape[0], panels.shape[1]
    for p in range(NP):
        if p * PANEL + PANEL > N or 2 * K2 != K:  # a partial panel, or an odd K: zeros first
            panels[p] = 0
        for j in range(min(PANEL, N - p * PANEL)):  # output p * 16 + j sits at lane 2 j of its pair
            row = q[p * PANEL + j]
            for i in range(K):
                panels[p, i // 2, 2 * j + i % 2] = row[i]
    return panels


def packed_shape(weight_shape: tuple[int, int]) -> tuple[int, int, int]:
    """The panels' shape for an (N, K) weight: (ceil(N / 16), ceil(K / 2), 32)."""
    n, k = weight_shape
    return -(-n // PANEL), -(-k // 2), 2 * PANEL


def pack_weight(q: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """int8 weight (N, K) -> panels (ceil(N/16), ceil(K/2), 32) int16, into ``out`` when given."""
    if out is None:
        out = np.empty(packed_shape(q.shape), dtype=np.int16)
    return _pack_into(q, out)


@numba.njit(cache=True, nogil=True, fastmath=True)
def _row_peak(row):  # (K,) float32 -> max |row|: exact either way, and fastmath vectorises it
    peak = np.float32(0.0)
    for i in range(row.shape[0]):
        peak = max(peak, abs(row[i]))
    return peak


@numba.njit(cache=True, nogil=True)  # no fastmath: x / peak as a reciprocal could round differently
def _quantize_into(x, a16, scale):  # x (M, K) f32 -> a16 (Mp, 2 K2) int16 rows, scale (M,) f32
    M, K = x.shape
    a16[M:] = 0  # the padding rows and columns add nothing to the sums
    a16[:M, K:] = 0
    for m in range(M):
        row = x[m]  # (K,)
        peak = _row_peak(row)
        inv = np.float32(ACT_MAX) / peak if peak > 0 else np.float32(0.0)
        scale[m] = peak / np.float32(ACT_MAX) if peak > 0 else np.float32(1.0)
        for i in range(K):
            a16[m, i] = np.int16(min(max(np.rint(row[i] * inv), -ACT_MAX), ACT_MAX))
    return scale


# --- the tile, in LLVM IR -----------------------------------------------------------------------

_I16x16 = ir.VectorType(ir.IntType(16), 16)
_I32x16 = ir.VectorType(ir.IntType(32), 16)
_I32x8 = ir.VectorType(ir.IntType(32), 8)
_F32x8 = ir.VectorType(ir.FloatType(), 8)
_EVEN = ir.Constant(_I32x8, list(range(0, 16, 2)))
_ODD = ir.Constant(_I32x8, list(range(1, 16, 2)))
_SPLAT = ir.Constant(_I32x8, [0] * 8)


def _madd(builder, a, b):
    """Two <16 x i16> -> <8 x i32>, lane l = a[2l] b[2l] + a[2l+1] b[2l+1]: vpmaddwd on x86."""
    products = builder.mul(builder.sext(a, _I32x16), builder.sext(b, _I32x16))
    evens = builder.shuffle_vector(products, products, _EVEN)
    odds = builder.shuffle_vector(products, products, _ODD)
    return builder.add(evens, odds)


@intrinsic
def _madd_tile(typingctx, a, panels, m0, p, k0, k1, accumulate, out):
    """out[m0 : m0 + 6, 16 p : 16 p + 16] = (or, with ``accumulate``, +=) the integer sums over
    pairs [k0, k1) of a's rows times panel p, as float32. a (Mp, K2) int32, panels (NP, K2, 32)
    int16, out (Mp, 16 NP) float32, all C-contiguous; the caller keeps k1 - k0 <= CHUNK_PAIRS."""
    if accumulate != types.boolean:
        return None
    sig = types.none(a, panels, m0, p, k0, k1, accumulate, out)

    def codegen(context, builder, signature, args):
        a_arr = context.make_array(signature.args[0])(context, builder, args[0])
        w_arr = context.make_array(signature.args[1])(context, builder, args[1])
        o_arr = context.make_array(signature.args[7])(context, builder, args[7])
        m0, p, k0, k1 = args[2], args[3], args[4], args[5]
        i64 = ir.IntType(64)

        def const(v):
            return ir.Constant(i64, v)

        pairs = cgutils.unpack_tuple(builder, a_arr.shape, 2)[1]  # K2
        width = cgutils.unpack_tuple(builder, o_arr.shape, 2)[1]  # 16 NP
        sums = [[cgutils.alloca_once_value(builder, ir.Constant(_I32x8, None)) for _ in range(2)] for _ in range(TILE_ROWS)]
        for row in sums:
            for s in row:
                builder.store(ir.Constant(_I32x8, [0] * 8), s)
        a_rows = [builder.mul(builder.add(m0, const(i)), pairs) for i in range(TILE_ROWS)]
        panel = builder.mul(p, builder.mul(pairs, const(2 * PANEL)))
        with cgutils.for_range(builder, builder.sub(k1, k0)) as loop:
            k = builder.add(k0, loop.index)
            w_at = builder.add(panel, builder.mul(k, const(2 * PANEL)))
            w = [
                builder.load(builder.bitcast(builder.gep(w_arr.data, [builder.add(w_at, const(16 * v))]), _I16x16.as_pointer()), align=2)
                for v in range(2)
            ]
            for i in range(TILE_ROWS):
                pair = builder.load(builder.gep(a_arr.data, [builder.add(a_rows[i], k)]), align=4)
                splat = builder.insert_element(ir.Constant(_I32x8, None), pair, ir.Constant(ir.IntType(32), 0))
                x = builder.bitcast(builder.shuffle_vector(splat, splat, _SPLAT), _I16x16)
                for v in range(2):
                    builder.store(builder.add(builder.load(sums[i][v]), _madd(builder, x, w[v])), sums[i][v])
        for i in range(TILE_ROWS):
            for v in range(2):
                at = builder.add(builder.mul(builder.add(m0, const(i)), width), builder.add(builder.mul(p, const(PANEL)), const(8 * v)))
                ptr = builder.bitcast(builder.gep(o_arr.data, [at]), _F32x8.as_pointer())
                chunk = builder.sitofp(builder.load(sums[i][v]), _F32x8)
                total = builder.select(args[6], builder.fadd(builder.load(ptr, align=4), chunk), chunk)
                builder.store(total, ptr, align=4)
        return context.get_dummy_value()

    return sig, codegen


@numba.njit(cache=True, nogil=True, fastmath=True)
def _qmatmul_into(a, panels, row_scale, col_scale, bias, out):
    """a (Mp, K2) int32 pairs, panels (NP, K2, 32) int16, row_scale (Mp,), col_scale and bias
    (16 NP,) float32 -> out (Mp, 16 NP) float32, the scaled products plus bias."""
    Mp, K2 = a.shape
    NP = panels.shape[0]
    for r0 in range(0, Mp, ROW_BLOCK):
        for k0 in range(0, K2, CHUNK_PAIRS):
            k1 = min(K2, k0 + CHUNK_PAIRS)
            for g in range(0, NP, PANEL_GROUP):
                for m0 in range(r0, min(Mp, r0 + ROW_BLOCK), TILE_ROWS):
                    for p in range(g, min(NP, g + PANEL_GROUP)):
                        _madd_tile(a, panels, m0, p, k0, k1, k0 > 0, out)
                        if k1 == K2:  # the last chunk: scale while the tile is in L1
                            cols = slice(p * PANEL, p * PANEL + PANEL)
                            for i in range(m0, m0 + TILE_ROWS):
                                out[i, cols] = out[i, cols] * (row_scale[i] * col_scale[cols]) + bias[cols]
    return out


def qmatmul(x: np.ndarray, layer: PackedQLinear) -> np.ndarray:
    """x (M, K) float32 -> (M, N) float32: ``qmatmul_reference`` plus the layer's bias, on one
    thread (callers split rows among workers)."""
    M, K = x.shape
    if K != layer.in_features:
        raise ValueError(f"qmatmul: x has {K} columns, the layer takes {layer.in_features}")
    K2 = layer.panels.shape[1]
    Mp = -(-M // TILE_ROWS) * TILE_ROWS
    a16 = np.empty((Mp, 2 * K2), dtype=np.int16)  # (Mp, 2 K2): int16 pairs, zero-padded
    row_scale = np.zeros(Mp, dtype=np.float32)  # (Mp,)
    _quantize_into(np.ascontiguousarray(x, dtype=np.float32), a16, row_scale)
    out = np.empty((Mp, PANEL * layer.panels.shape[0]), dtype=np.float32)  # (Mp, 16 NP)
    _qmatmul_into(a16.view(np.int32), layer.panels, row_scale, layer.scale, layer.bias, out)
    return out[:M, : layer.out_features]  # (M, N)
