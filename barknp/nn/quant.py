"""int8 weight-only linear layers: one float32 scale per output row.

Decoding one token is bound by reading the weights, so storing them as int8 reads a quarter of
the bytes. Activations stay float32; each row's weights are ``q * scale`` with q in [-127, 127].

Few rows of input (decoding) go through :func:`~barknp.nn.gemv.rows_matmul`, which converts int8
to float32 in registers. Many rows (a prefill) are compute-bound, so they run on float32 weights
through BLAS: a transformer block dequantizes its layer's weights once per call
(:func:`dequantized_weight`, shared by the forward's workers, into buffers reused from layer to
layer; ~28 MB at the bark-small width),
and :func:`qlinear` on many rows elsewhere dequantizes blocks of weight rows into a reused buffer.
Never is a float32 copy of the whole model made.
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np

from ..threads import SERIAL, Workers
from .gemv import MAX_ROWS, rows_matmul

# Bytes of dequantized float32 weight per BLAS call of a prefill: large enough for an efficient
# product (512 KB blocks measured ~20 % slower), small enough to stay in the L3 cache.
DEQUANT_BLOCK_BYTES = 1 << 21


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


@numba.njit(cache=True, fastmath=True, error_model="numpy", nogil=True)
def _dequantize_into(q, scale, out):  # q (R, K) int8, scale (R,) f32 -> out (R, K) f32, one pass
    for r in range(q.shape[0]):
        s = scale[r]
        for i in range(q.shape[1]):
            out[r, i] = np.float32(q[r, i]) * s
    return out


def dequantize_rows(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """(out, in) int8 and (out,) float32 -> (out, in) float32: the plain-NumPy reference of
    :func:`dequantized_weight`."""
    return q.astype(np.float32) * scale[:, None]


def dequantized_weight(layer, workers: Workers = SERIAL, out: np.ndarray | None = None) -> np.ndarray:
    """The weight of a QLinear, or of a Linear stored as float16, as float32 (out, in), each worker
    converting a share of its rows, into ``out`` when given: a reused buffer, because writing 28 MB
    of fresh pages per layer cost more in page faults than the conversion itself (~180 against ~20
    ms per bark-small prefill)."""
    w = layer.weight
    out = np.empty(w.shape, dtype=np.float32) if out is None else out
    step = -(-w.shape[0] // workers.count)
    shares = [slice(i, i + step) for i in range(0, w.shape[0], step)]
    if isinstance(layer, QLinear):
        workers.map(lambda rows: _dequantize_into(w[rows], layer.scale[rows], out[rows]), shares)
    else:
        workers.map(lambda rows: np.copyto(out[rows], w[rows]), shares)
    return out


def qlinear(x: np.ndarray, layer: QLinear) -> np.ndarray:
    """x (..., in) float32 -> (..., out) float32 through int8 weights."""
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1])  # (N, in)
    if x2.shape[0] <= MAX_ROWS:
        y = rows_matmul(x2, layer.weight, layer.scale)  # (N, out)
    else:
        out_rows, k = layer.weight.shape
        step = max(1, DEQUANT_BLOCK_BYTES // (4 * k))  # weight rows per block
        block = np.empty((step, k), dtype=np.float32)  # reused: a fresh one per block page-faults
        y = np.empty((x2.shape[0], out_rows), dtype=np.float32)  # (N, out)
        for o in range(0, out_rows, step):
            rows = min(step, out_rows - o)
            _dequantize_into(layer.weight[o : o + rows], layer.scale[o : o + rows], block[:rows])
            np.matmul(x2, block[:rows].T, out=y[:, o : o + rows])
    if layer.bias is not None:
        y += layer.bias
    return y.reshape(*lead, -1)
