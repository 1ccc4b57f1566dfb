"""Elementwise and row-wise operations of a GPT block.

Two are jitted. ``gelu``: NumPy has no ``erf``, and a per-element ``math.erf`` through
``np.vectorize`` is hundreds of times slower; the kernel computes erf in float32 with the
vectorisable rational form of :mod:`.mathf`, and its plain reference, ``gelu_reference``, uses the
exact float64 ``math.erf``. ``layer_norm``: one compiled call instead of NumPy's ten per row, which
matters in a decode step; its reference is ``layer_norm_reference``. The tests compare each pair.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numba
import numpy as np

from ..constants import LAYER_NORM_EPS
from .gemv import MAX_ROWS, rows_matmul
from .mathf import erf32
from .quant import QLinear, qlinear

_SQRT_HALF = 1.0 / math.sqrt(2.0)
_NO_BIAS = np.empty(0, dtype=np.float32)


class Linear(NamedTuple):
    """A checkpoint ``nn.Linear``: weight (out, in) float32 (float16 with the reduced-precision
    option of barknp/convert/quantize.py), bias (out,) float32 or None."""

    weight: np.ndarray
    bias: np.ndarray | None


class LayerNorm(NamedTuple):
    """A checkpoint ``nn.LayerNorm``: weight (C,) float32, bias (C,) float32 or None."""

    weight: np.ndarray
    bias: np.ndarray | None


def linear(x: np.ndarray, layer: Linear | QLinear) -> np.ndarray:
    """x (..., in) float32 -> (..., out) float32, as ``x @ W.T + b``.

    A decode step's few rows go through :func:`~barknp.nn.gemv.rows_matmul`, which streams the
    weight once for all of them; more rows go to BLAS, through ``W.T``, a transposed view that it
    reads in place. An int8 layer (:class:`~barknp.nn.quant.QLinear`) goes through its own path;
    a float16 weight (the reduced-precision option) is widened in registers, or copied to float32
    for many rows.
    """
    if isinstance(layer, QLinear):
        return qlinear(x, layer)
    rows = x.size // x.shape[-1]
    if rows <= MAX_ROWS:
        y = rows_matmul(x.reshape(rows, -1), layer.weight).reshape(*x.shape[:-1], -1)  # (..., out)
    else:  # a float16 weight is widened first (prefills convert their blocks' once: nn/block.py)
        y = x @ layer.weight.astype(np.float32, copy=False).T  # (..., out)
    if layer.bias is not None:
        y += layer.bias
    return y


def output_rows(layer, start: int, stop: int):
    """The layer restricted to its outputs [start, stop): views of every per-output-row field
    (weight rows, bias, an int8 layer's scales): its outputs are those of the full layer."""
    return type(layer)._make(None if f is None else f[start:stop] for f in layer)


def layer_norm_reference(x: np.ndarray, norm: LayerNorm, eps: float = LAYER_NORM_EPS) -> np.ndarray:
    """Normalise the last axis: x (..., C) float32 -> (..., C) float32, biased variance as torch.
    Plain NumPy: the specification of :func:`layer_norm`."""
    mean = x.mean(axis=-1, keepdims=True)  # (..., 1)
    centred = x - mean  # (..., C)
    var = np.mean(centred * centred, axis=-1, keepdims=True)  # (..., 1)
    y = centred * (1.0 / np.sqrt(var + eps)).astype(x.dtype)  # (..., C)
    y *= norm.weight
    if norm.bias is not None:
        y += norm.bias
    return y


@numba.njit(inline="always", fastmath=True, error_model="numpy")
def norm_row(row, weight, bias, eps, y):  # row (C,) f32, bias (C,) or (0,) -> y (C,)
    C = row.shape[0]
    mean = np.float32(0.0)
    for j in range(C):
        mean += row[j]
    mean /= C
    var = np.float32(0.0)
    for j in range(C):
        d = row[j] - mean
        var += d * d
    inv = np.float32(1.0) / np.sqrt(var / C + eps)
    for j in range(C):
        y[j] = (row[j] - mean) * inv * weight[j]
    if bias.shape[0]:
        for j in range(C):
            y[j] += bias[j]


# Serial on purpose: see barknp.threads on kernels that run between BLAS calls.
@numba.njit(cache=True, fastmath=True, error_model="numpy", nogil=True)
def _layer_norm_rows(x, weight, bias, eps, out):  # x (R, C) f32, bias (C,) or (0,) -> out (R, C)
    for r in range(x.shape[0]):
        norm_row(x[r], weight, bias, eps, out[r])
    return out


def layer_norm(x: np.ndarray, norm: LayerNorm, eps: float = LAYER_NORM_EPS) -> np.ndarray:
    """The kernel of :func:`layer_norm_reference`: x (..., C) float32 -> (..., C) float32.

    One compiled call instead of NumPy's ten, whose per-call overheads added up where few rows are
    normalised per call (batched decode steps; the final norm of every step).
    """
    C = x.shape[-1]
    rows = np.ascontiguousarray(x).reshape(-1, C)  # (R, C)
    bias = _NO_BIAS if norm.bias is None else norm.bias
    out = np.empty_like(rows)
    return _layer_norm_rows(rows, norm.weight, bias, np.float32(eps), out).reshape(x.shape)


def gelu_reference(x: np.ndarray) -> np.ndarray:
    """Exact (erf) GELU, ``x * Phi(x)``, in plain NumPy: the specification of :func:`gelu`."""
    erf = np.vectorize(math.erf, otypes=[np.float64])
    return (0.5 * x * (1.0 + erf(x.astype(np.float64) * _SQRT_HALF))).astype(x.dtype)


@numba.njit(inline="always", fastmath=True, error_model="numpy")
def gelu32(v):  # float32 -> float32
    return np.float32(0.5) * v * (np.float32(1.0) + erf32(v * np.float32(0.70710677)))


# Serial, as the layer norm: see barknp.threads on kernels that run between BLAS calls.
@numba.njit(cache=True, fastmath=True, error_model="numpy", nogil=True)
def _gelu(flat):  # flat (N,) float32, overwritten
    for i in range(flat.shape[0]):
        flat[i] = gelu32(flat[i])


def gelu(x: np.ndarray) -> np.ndarray:
    """Exact (erf) GELU, as torch's ``nn.GELU()``, applied in place: x (...) float32 -> x."""
    if not x.flags.c_contiguous:
        x = np.ascontiguousarray(x)
    flat = x.reshape(-1)
    _gelu(flat)
    return x
