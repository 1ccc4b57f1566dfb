"""Matrix products of a few input rows with a large weight: the products of a decode step.

A decode step multiplies one row per sequence (x (N, in), N the batch) by every weight of the
model, so its time is the time to stream the weights from memory. BLAS packs the weight before a
matrix product with N > 1, which reads and writes it once more; this kernel instead walks the
weight four rows at a time, straight from the array, and multiplies each group with the input rows,
two at a time, while it sits in L1. A batch of 8 then costs about 1.5 times a batch of 1. A single
input row takes one weight row at a time instead, the access pattern memory streams fastest.

The weight is float32, float16 (a reduced-precision option: half the bytes, widened to float32
in registers by F16C's ``vcvtph2ps``), or int8 with one float32 scale per row (converted to
float32 in registers, so an int8 weight streams a quarter of the bytes).
"""

from __future__ import annotations

import numba
import numpy as np

from .half import kernel_view, widen

# Input rows up to which the kernel beats BLAS (decode batches; a prefill has hundreds).
MAX_ROWS = 16
_NO_SCALE = np.empty(0, dtype=np.float32)


def rows_matmul_reference(x: np.ndarray, w: np.ndarray, scale: np.ndarray | None = None) -> np.ndarray:
    """x (N, in) float32 @ (w * scale[:, None]).T -> (N, out) float32, in plain NumPy.

    w (out, in) float32, float16 or int8; scale (out,) float32 or None (no scaling).
    """
    weight = w.astype(np.float32)
    if scale is not None:
        weight = weight * scale[:, None]
    return x @ weight.T


@numba.njit(inline="always", fastmath=True)
def _dot(x, w):  # x (K,) float32, w (K,) float32, int8 or float16 bits (uint16) -> float32
    acc = np.float32(0.0)
    for i in range(x.shape[0]):
        acc += x[i] * widen(w[i])
    return acc


@numba.njit(parallel=True, fastmath=True, cache=True, error_model="numpy")
def _rows_matmul(x, w, scale, out):  # x (N, K) f32, w (O, K) f32|i8|f16 bits, scale (O,)|(0,) f32 -> out (N, O)
    n, k = x.shape
    O = w.shape[0]
    if n == 1:
        # One input row (a decode step of one sequence): each weight row is read as one sequential
        # stream. Four rows side by side, as in the tile below, are four short streams (768 bytes
        # per int8 row), on which the hardware prefetcher falls behind: measured over a decode
        # step's 49 int8 weights (93 MB, from DRAM), 17 GB/s this way against 10 GB/s.
        xa = x[0]
        for o in numba.prange(O):
            acc = _dot(xa, w[o])
            out[0, o] = acc * scale[o] if scale.shape[0] else acc
        return out
    for g in numba.prange((O + 3) // 4):
        o0 = g * 4
        if o0 + 4 <= O:
            # A 4 x 2 tile: four weight rows against two input rows per pass, eight running sums.
            # Each load of a weight vector feeds two multiply-adds and each load of x four, which
            # keeps the loop off the load ports' limit (measured at N = 8: 1.9x a 4 x 1 tile).
            w0, w1, w2, w3 = w[o0], w[o0 + 1], w[o0 + 2], w[o0 + 3]  # (K,) each
            for r in range(0, n - 1, 2):
                xa, xb = x[r], x[r + 1]  # (K,) each
                a0 = a1 = a2 = a3 = b0 = b1 = b2 = b3 = np.float32(0.0)
                for i in range(k):
                    u, v = xa[i], xb[i]
                    p0, p1, p2, p3 = widen(w0[i]), widen(w1[i]), widen(w2[i]), widen(w3[i])
                    a0 += u * p0
                    a1 += u * p1
                    a2 += u * p2
                    a3 += u * p3
                    b0 += v * p0
                    b1 += v * p1
                    b2 += v * p2
                    b3 += v * p3
                out[r, o0], out[r, o0 + 1], out[r, o0 + 2], out[r, o0 + 3] = a0, a1, a2, a3
                out[r + 1, o0], out[r + 1, o0 + 1], out[r + 1, o0 + 2], out[r + 1, o0 + 3] = b0, b1, b2, b3
            if n % 2:  # the last input row of an odd batch (3, 5, ...): four weight rows side by side
                r = n - 1
                xa = x[r]
                a0 = a1 = a2 = a3 = np.float32(0.0)
                for i in range(k):
                    u = xa[i]
                    a0 += u * widen(w0[i])
                    a1 += u * widen(w1[i])
                    a2 += u * widen(w2[i])
                    a3 += u * widen(w3[i])
                out[r, o0], out[r, o0 + 1], out[r, o0 + 2], out[r, o0 + 3] = a0, a1, a2, a3
        else:  # the last, partial group of weight rows
            for o in range(o0, O):
                for r in range(n):
                    out[r, o] = _dot(x[r], w[o])
        if scale.shape[0]:
            for o in range(o0, min(O, o0 + 4)):
                for r in range(n):
                    out[r, o] *= scale[o]
    return out


def rows_matmul(x: np.ndarray, w: np.ndarray, scale: np.ndarray | None = None) -> np.ndarray:
    """The kernel of :func:`rows_matmul_reference`: x (N, in) float32 -> (N, out) float32."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    out = np.empty((x.shape[0], w.shape[0]), dtype=np.float32)
    return _rows_matmul(x, kernel_view(w), _NO_SCALE if scale is None else scale, out)
