"""int8 weight-only linear layers: one float32 scale per output row.

Decoding one token is bound by reading the weights, so storing them as int8 reads a quarter of
the bytes. Activations stay float32; each row's weights are ``q * scale`` with q in [-127, 127].

Few rows of input (decoding) go through :func:`int8_matmul`, a Numba kernel that converts int8 to
float32 in registers; many rows (a prefill) are compute-bound, so the weights are dequantized once
per call and handed to BLAS.
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np

# Inputs with at most this many rows use the int8 kernel; beyond it a float32 GEMM wins.
KERNEL_MAX_ROWS = 16


class QLinear(NamedTuple):
    """A quantized ``nn.Linear``: weight (out, in) int8, scale (out,) float32, bias (out,) or None."""

    weight: np.ndarray
    scale: np.ndarray
    bias: np.ndarray | None


def quantize_rows(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """w (out, in) float32 -> (q (out, in) int8, scale (out,) float32), symmetric per row."""
    peak = np.abs(w).max(axis=1)  # (out,)
    scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)  # (out,)
    q = np.clip(np.rint(w / scale[:, None]), -127, 127).astype(np.int8)  # (out, in)
    return q, scale


def dequantize_rows(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """(out, in) int8 and (out,) float32 -> (out, in) float32."""
    return q.astype(np.float32) * scale[:, None]


def int8_matmul_reference(x: np.ndarray, q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """x (N, in) float32 @ (q * scale).T -> (N, out) float32: the specification of the kernel."""
    return x @ dequantize_rows(q, scale).T


@numba.njit(parallel=True, fastmath=True, cache=True)
def int8_matmul(x, q, scale):  # x (N, in) f32, q (out, in) i8, scale (out,) f32 -> (N, out) f32
    n, k = x.shape
    out = np.empty((n, q.shape[0]), dtype=np.float32)
    for o in numba.prange(q.shape[0]):
        row = q[o]
        for r in range(n):
            acc = np.float32(0.0)
            for i in range(k):
                acc += x[r, i] * np.float32(row[i])
            out[r, o] = acc * scale[o]
    return out


def qlinear(x: np.ndarray, layer: QLinear) -> np.ndarray:
    """x (..., in) float32 -> (..., out) float32 through int8 weights."""
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1])  # (N, in)
    if x2.shape[0] <= KERNEL_MAX_ROWS:
        y = int8_matmul(np.ascontiguousarray(x2, dtype=np.float32), layer.weight, layer.scale)
    else:
        y = x2 @ dequantize_rows(layer.weight, layer.scale).T  # (N, out)
    if layer.bias is not None:
        y += layer.bias
    return y.reshape(*lead, -1)
