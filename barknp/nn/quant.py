"""int8 weight-only linear layers: one float32 scale per output row.

Decoding one token is bound by reading the weights, so storing them as int8 reads a quarter of
the bytes. Each row's weights are ``q * scale`` with q in [-127, 127].

Few rows of input (decoding) go through :func:`~barknp.nn.gemv.rows_matmul`, which converts int8
to float32 in registers: the activations stay float32. Many rows (a prefill) are compute-bound,
and go through :mod:`.qmatmul`: activations quantized per row to int16, integer multiply-adds
(~1.35x float32 sgemm here). The weight is packed for it per call (:func:`packed`; a transformer
block packs its layers once per call, shared by the forward's workers, into buffers reused from
layer to layer). Never is a float32 or int16 copy of the whole model kept.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..threads import SERIAL, Workers
from .gemv import MAX_ROWS, rows_matmul
from .qmatmul import PANEL, PackedQLinear, pack_weight, packed_linear, packed_shape, qmatmul


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


def packed(layer: QLinear, workers: Workers = SERIAL, out: np.ndarray | None = None) -> PackedQLinear:
    """The layer packed for many-row products (:func:`~barknp.nn.qmatmul.pack_weight`), each
    worker packing a share of its panels, into ``out`` when it has the right shape: a reused
    buffer, because fresh pages for every layer cost more in page faults than the packing."""
    q = layer.weight
    shape = packed_shape(q.shape)
    out = np.empty(shape, dtype=np.int16) if out is None or out.shape != shape else out
    step = -(-shape[0] // workers.count)  # panels per worker
    shares = [slice(p, min(shape[0], p + step)) for p in range(0, shape[0], step)]
    workers.map(lambda s: pack_weight(q[s.start * PANEL : s.stop * PANEL], out[s]), shares)
    return packed_linear(out, layer.scale, layer.bias, q.shape[1])


def qlinear(x: np.ndarray, layer: QLinear) -> np.ndarray:
    """x (..., in) float32 -> (..., out) float32 through int8 weights."""
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1])  # (N, in)
    if x2.shape[0] > MAX_ROWS:
        return qmatmul(x2, packed(layer)).reshape(*lead, -1)
    y = rows_matmul(x2, layer.weight, layer.scale)  # (N, out)
    if layer.bias is not None:
        y += layer.bias
    return y.reshape(*lead, -1)
