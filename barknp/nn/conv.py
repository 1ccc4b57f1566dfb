"""1-D convolutions of the EnCodec decoder, in time-major layout.

Every activation here is a single sequence laid out ``(L, C)``: time first, channels last. With that
layout the im2col rows of a stride-1 convolution are K slice copies of the padded input (bounded
to IM2COL_ROWS rows at a time), and the convolution is one matrix product per block; a transposed
convolution is the same thing over rows of ``stride`` output samples (see
``PackedConvTranspose1d``). No Python loop ever runs over samples.

Three pieces are Numba kernels, because NumPy would take several passes (or a Python-level loop
over taps) for what one compiled loop does in one: ``elu`` (float32 ``exp32``, vectorised), the
im2col copy (``im2col``: one pass writing each row's taps and its 1 for the bias), and the
single-output convolution (``conv1d_single_output``: the decoder's last layer, a dot product per
sample read straight from the input; im2col and a one-column matrix product took 3.4x as long).

Each fast function has a plain-NumPy reference beside it (``*_reference``) written the obvious way,
in the same layout; the tests compare the two, and the references against torch.

Weights keep the checkpoint layouts: ``Conv1d`` weight ``(C_out, C_in, K)``, ``ConvTranspose1d``
weight ``(C_in, C_out, K)``. The fast functions take them prepacked (``pack_conv1d``,
``pack_conv_transpose1d``) with the bias as an extra matrix row, so packing is paid once per model
and the bias costs no pass over the output.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numba
import numpy as np

from .mathf import exp32

# --- padding --------------------------------------------------------------------------------


def causal_padding(length: int, kernel_size: int, stride: int = 1, dilation: int = 1) -> tuple[int, int]:
    """(left, right) padding of EnCodec's causal ``Conv1d`` for an input of ``length`` samples.

    Left is the effective kernel minus the stride; right is the "extra" padding that makes the last
    window complete, so that no input sample is dropped (always 0 for stride 1).
    """
    k_eff = (kernel_size - 1) * dilation + 1
    padding_total = k_eff - stride
    n_frames = math.ceil((length - k_eff + padding_total) / stride + 1) - 1
    ideal_length = n_frames * stride + k_eff - padding_total
    return padding_total, ideal_length - length


def pad1d_reference(x: np.ndarray, left: int, right: int, mode: str = "reflect") -> np.ndarray:
    """Pad the time axis of x (L, C) -> (left + L + right, C), as EnCodec's ``_pad1d``.

    Reflection needs more samples than the padding; for a shorter input EnCodec first appends zeros
    (so the reflection reads zeros), reflects, and then drops those appended zeros again.
    """
    if mode != "reflect":
        return np.pad(x, ((left, right), (0, 0)), mode="constant")
    length = x.shape[0]
    max_pad = max(left, right)
    extra = max_pad - length + 1 if length <= max_pad else 0
    if extra:
        x = np.pad(x, ((0, extra), (0, 0)))  # (L + extra, C)
    padded = np.pad(x, ((left, right), (0, 0)), mode="reflect")
    return padded[: padded.shape[0] - extra]


def pad1d(x: np.ndarray, left: int, right: int, mode: str = "reflect") -> np.ndarray:
    """Fast ``pad1d_reference``: one preallocated output filled by three slice copies."""
    length, channels = x.shape
    out = np.empty((left + length + right, channels), dtype=x.dtype)  # (left + L + right, C)
    out[left : left + length] = x
    if mode != "reflect":
        out[:left] = 0
        out[left + length :] = 0
        return out
    # the source, with EnCodec's zero extension when it is too short to reflect
    n_src = max(length, max(left, right) + 1)
    if n_src > length:
        src = np.zeros((n_src, channels), dtype=x.dtype)
        src[:length] = x
    else:
        src = x
    if left:
        out[:left] = src[left:0:-1]  # src[left], ..., src[1]
    if right:
        # after x come the appended zeros (if any), then the reflection of src about its last
        # sample; EnCodec keeps the first ``right`` of those
        reflected = src[n_src - 1 - right : n_src - 1][::-1]  # src[n_src - 2], ..., src[n_src - 1 - right]
        out[left + length :] = np.concatenate([src[length:], reflected])[:right]
    return out


# --- stride-1 convolution -------------------------------------------------------------------


def conv1d_reference(
    x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, stride: int = 1, dilation: int = 1
) -> np.ndarray:
    """Unpadded ("valid") convolution: x (L, C_in), weight (C_out, C_in, K) -> (L_out, C_out).

    out[t, o] = bias[o] + sum_{c, k} x[t * stride + k * dilation, c] * weight[o, c, k]
    """
    c_out, c_in, k = weight.shape
    l_out = (x.shape[0] - (k - 1) * dilation - 1) // stride + 1
    index = np.arange(l_out)[:, None] * stride + np.arange(k)[None, :] * dilation  # (L_out, K)
    windows = x[index]  # (L_out, K, C_in)
    out = np.einsum("tkc,ock->to", windows.astype(np.float64), weight.astype(np.float64))
    if bias is not None:
        out += bias
    return out.astype(np.float32)


class PackedConv1d(NamedTuple):
    """A stride-1 ``Conv1d`` ready for ``conv1d``.

    matrix: (K * C_in + 1, C_out) float32: row k * C_in + c holds weight[:, c, k], and the last row
    holds the bias, so that one matrix product of the im2col rows [x[t], x[t + d], ..., 1] gives
    the biased output with no further pass over it.
    """

    matrix: np.ndarray
    kernel_size: int
    dilation: int

    @property
    def c_in(self) -> int:
        return (self.matrix.shape[0] - 1) // self.kernel_size

    @property
    def receptive(self) -> int:
        """Input samples before the current one that each output sees: the causal left padding."""
        return (self.kernel_size - 1) * self.dilation


def _bias_matrix(taps: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    """taps (K, C_in, C_out), bias (C_out,) -> (K * C_in + 1, C_out) contiguous float32."""
    k, c_in, c_out = taps.shape
    matrix = np.empty((k * c_in + 1, c_out), dtype=np.float32)
    matrix[:-1] = taps.reshape(k * c_in, c_out)
    matrix[-1] = 0 if bias is None else bias
    return matrix


def pack_conv1d(weight: np.ndarray, bias: np.ndarray | None, dilation: int = 1) -> PackedConv1d:
    """Checkpoint weight (C_out, C_in, K) and bias (C_out,) -> PackedConv1d."""
    weight = np.asarray(weight, dtype=np.float32)
    return PackedConv1d(_bias_matrix(weight.transpose(2, 1, 0), bias), weight.shape[2], dilation)


# rows of im2col per matrix product: bounds the buffer (rows * (K * C_in + 1) floats) for any length
IM2COL_ROWS = 8192


def im2col_reference(xpad: np.ndarray, kernel_size: int, dilation: int, t0: int, n: int) -> np.ndarray:
    """Rows t0 .. t0 + n - 1 of im2col: xpad (L + receptive, C_in) -> (n, K * C_in + 1) float32.

    Row t is [xpad[t], xpad[t + d], ..., xpad[t + (K - 1) d], 1]: the K taps that output t reads,
    and a 1 that multiplies the bias row of the packed matrix.
    """
    taps = [xpad[t0 + k * dilation : t0 + k * dilation + n] for k in range(kernel_size)]
    return np.concatenate(taps + [np.ones((n, 1), dtype=xpad.dtype)], axis=1).astype(np.float32)


@numba.njit(cache=True, nogil=True)
def _im2col(xpad, kernel_size, dilation, t0, n, cols):  # pragma: no cover - compiled
    """cols[:n] (rows, K * C_in + 1) <- im2col_reference(xpad, K, d, t0, n), in place."""
    c_in = xpad.shape[1]
    for t in range(n):
        for k in range(kernel_size):
            src = t0 + t + k * dilation
            for j in range(c_in):
                cols[t, k * c_in + j] = xpad[src, j]
        cols[t, kernel_size * c_in] = 1.0


def im2col(xpad: np.ndarray, kernel_size: int, dilation: int, t0: int, n: int, cols: np.ndarray) -> np.ndarray:
    """Fast ``im2col_reference`` into cols (>= n, K * C_in + 1) C-contiguous float32; returns cols[:n].

    One compiled pass: NumPy would take a strided slice copy per tap plus one for the ones column,
    each paying its own loop over rows (measured 1.4-2x slower at the decoder's K = 2 and 3).
    """
    _im2col(xpad, kernel_size, dilation, t0, n, cols)
    return cols[:n]


def conv1d_single_output_reference(xpad: np.ndarray, conv: PackedConv1d) -> np.ndarray:
    """``conv1d`` for C_out = 1, written as im2col then a matrix-vector product: -> (L, 1) float32."""
    length = xpad.shape[0] - conv.receptive
    cols = im2col_reference(xpad, conv.kernel_size, conv.dilation, 0, length)
    return (cols.astype(np.float64) @ conv.matrix.astype(np.float64)).astype(np.float32)


@numba.njit(cache=True, fastmath=True, nogil=True)
def _conv1d_single_output(xpad, weights, bias, kernel_size, dilation, out):  # pragma: no cover - compiled
    """out (L,) <- bias + sum_{k, c} xpad[t + k d, c] weights[k * C_in + c]; xpad (L + receptive, C_in)."""
    c_in = xpad.shape[1]
    for t in range(out.shape[0]):
        acc = np.float32(0.0)
        for k in range(kernel_size):
            src = t + k * dilation
            for j in range(c_in):  # a contiguous dot product: vectorised (fastmath lets it reassociate)
                acc += xpad[src, j] * weights[k * c_in + j]
        out[t] = acc + bias


def conv1d_single_output(xpad: np.ndarray, conv: PackedConv1d, out: np.ndarray | None = None) -> np.ndarray:
    """Fast ``conv1d_single_output_reference``: xpad (L + receptive, C_in) C-contiguous -> (L, 1).

    One dot product of length K * C_in per sample, read straight from xpad: im2col would write
    K * C_in floats per sample for one multiply-add each, and BLAS is slow at one column.
    """
    length = xpad.shape[0] - conv.receptive
    if out is None:
        out = np.empty((length, 1), dtype=np.float32)  # (L, 1)
    weights = np.ascontiguousarray(conv.matrix[:-1, 0])  # (K * C_in,)
    _conv1d_single_output(xpad, weights, conv.matrix[-1, 0], conv.kernel_size, conv.dilation, out[:, 0])
    return out


def conv1d(xpad: np.ndarray, conv: PackedConv1d, out: np.ndarray | None = None) -> np.ndarray:
    """Fast unpadded stride-1 ``conv1d_reference``: xpad (L + receptive, C_in) -> (L, C_out).

    Builds the im2col rows (each row the K taps of one output, and a 1 for the bias) in blocks of
    at most IM2COL_ROWS rows and multiplies each block once. A single output channel goes to
    ``conv1d_single_output`` instead.
    """
    xpad = np.ascontiguousarray(xpad, dtype=np.float32)
    if conv.matrix.shape[1] == 1:
        return conv1d_single_output(xpad, conv, out)
    k, d, c_in = conv.kernel_size, conv.dilation, conv.c_in
    length = xpad.shape[0] - conv.receptive
    if out is None:
        out = np.empty((length, conv.matrix.shape[1]), dtype=np.float32)  # (L, C_out)
    cols = np.empty((min(length, IM2COL_ROWS), k * c_in + 1), dtype=np.float32)  # (rows, K*C_in + 1)
    for t0 in range(0, length, IM2COL_ROWS):
        n = min(IM2COL_ROWS, length - t0)
        np.matmul(im2col(xpad, k, d, t0, n, cols), conv.matrix, out=out[t0 : t0 + n])
    return out


def causal_conv1d_reference(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None,
    stride: int = 1,
    dilation: int = 1,
    pad_mode: str = "reflect",
) -> np.ndarray:
    """EnCodec's causal ``Conv1d`` on a whole sequence: x (L, C_in) -> (ceil(L / stride), C_out)."""
    left, right = causal_padding(x.shape[0], weight.shape[2], stride, dilation)
    return conv1d_reference(pad1d_reference(x, left, right, pad_mode), weight, bias, stride, dilation)


def causal_conv1d(x: np.ndarray, conv: PackedConv1d, pad_mode: str = "reflect") -> np.ndarray:
    """Fast ``causal_conv1d_reference`` for stride 1: x (L, C_in) -> (L, C_out)."""
    left, right = causal_padding(x.shape[0], conv.kernel_size, 1, conv.dilation)
    return conv1d(pad1d(x, left, right, pad_mode), conv)


def conv1d_causal_step(
    x: np.ndarray,
    conv: PackedConv1d,
    history: np.ndarray | None,
    pad_mode: str = "reflect",
    elu_input: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """One chunk of a stride-1 causal conv: x (L, C_in) -> (L, C_out) and the new history.

    history (receptive, C_in) holds the last input samples of the previous chunks; None marks the
    first chunk, which is padded as EnCodec pads the start of the whole sequence. That padding
    reflects x[1 : receptive + 1], so the first chunk must be longer than ``receptive``; later
    chunks may have any length. Concatenating the outputs of the chunks equals ``causal_conv1d``.
    ``elu_input`` applies ELU to x first (fused into the copy that pads it).
    """
    r = conv.receptive
    length, c_in = x.shape
    if history is None:
        if length <= r:
            raise ValueError(f"first chunk of {length} samples is too short for padding {r}")
        xpad = pad1d(elu(x) if elu_input else x, r, 0, pad_mode)  # (r + L, C_in)
    else:
        xpad = np.empty((r + length, c_in), dtype=np.float32)  # (r + L, C_in)
        xpad[:r] = history
        if elu_input:
            elu(x, out=xpad[r:])
        else:
            xpad[r:] = x
    return conv1d(xpad, conv), xpad[length:].copy()


# --- transposed convolution -----------------------------------------------------------------


def conv_transpose1d_reference(
    x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, stride: int
) -> np.ndarray:
    """Untrimmed transposed convolution: x (L, C_in), weight (C_in, C_out, K) -> ((L-1)*stride + K, C_out).

    out[t * stride + k, o] += x[t, c] * weight[c, o, k], one tap at a time.
    """
    c_in, c_out, k = weight.shape
    length = x.shape[0]
    out = np.zeros(((length - 1) * stride + k, c_out), dtype=np.float64)
    x64 = x.astype(np.float64)
    for tap in range(k):
        out[tap : tap + (length - 1) * stride + 1 : stride] += x64 @ weight[:, :, tap].astype(np.float64)
    if bias is not None:
        out += bias
    return out.astype(np.float32)


def causal_trim(y: np.ndarray, kernel_size: int, stride: int, trim_right_ratio: float = 1.0) -> np.ndarray:
    """Drop EnCodec's fixed padding from a transposed convolution's output y (L_full, C)."""
    padding_total = kernel_size - stride
    right = math.ceil(padding_total * trim_right_ratio)
    left = padding_total - right
    return y[left : y.shape[0] - right]


class PackedConvTranspose1d(NamedTuple):
    """A ``ConvTranspose1d`` ready for ``conv_transpose1d``.

    Output sample t * stride + p (phase p < stride) receives x[t - j] through tap j * stride + p,
    for blocks j < M = ceil(K / stride). So, grouping the output in rows of ``stride`` samples,
    a transposed convolution is a stride-1 convolution of M taps over the input rows, whose
    output channels are (phase, C_out): ``rows`` is that convolution, taps zero padded to M * stride.
    """

    rows: PackedConv1d  # matrix (M * C_in + 1, stride * C_out)
    stride: int
    kernel_size: int
    c_out: int

    @property
    def blocks(self) -> int:
        return self.rows.kernel_size


def pack_conv_transpose1d(weight: np.ndarray, bias: np.ndarray | None, stride: int) -> PackedConvTranspose1d:
    """Checkpoint weight (C_in, C_out, K) and bias (C_out,) -> PackedConvTranspose1d."""
    c_in, c_out, k = weight.shape
    m = -(-k // stride)
    padded = np.zeros((c_in, c_out, m * stride), dtype=np.float32)
    padded[:, :, :k] = weight
    # taps[i] multiplies input row t + i of the left-padded input, i.e. x[t - (M - 1 - i)]: block M-1-i
    blocks = padded.reshape(c_in, c_out, m, stride).transpose(2, 0, 3, 1)  # (M, C_in, stride, C_out)
    taps = blocks[::-1].reshape(m, c_in, stride * c_out)
    row_bias = None if bias is None else np.tile(np.asarray(bias, dtype=np.float32), stride)
    rows = PackedConv1d(_bias_matrix(taps, row_bias), m, 1)
    return PackedConvTranspose1d(rows, stride, k, c_out)


def conv_transpose1d(x: np.ndarray, conv: PackedConvTranspose1d) -> np.ndarray:
    """Fast ``conv_transpose1d_reference``: x (L, C_in) -> ((L-1)*stride + K, C_out), untrimmed."""
    length, c_in = x.shape
    m, s = conv.blocks, conv.stride
    xpad = np.zeros((length + 2 * (m - 1), c_in), dtype=np.float32)  # (M-1 zeros, x, M-1 zeros)
    xpad[m - 1 : m - 1 + length] = x
    out = conv1d(xpad, conv.rows)  # (L + M - 1, stride * C_out)
    return out.reshape(-1, conv.c_out)[: (length - 1) * s + conv.kernel_size]


def conv_transpose1d_causal_step(
    x: np.ndarray, conv: PackedConvTranspose1d, history: np.ndarray | None, elu_input: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """One chunk of a causal transposed convolution trimmed with ``trim_right_ratio`` 1.

    x (L, C_in) -> (L * stride, C_out), and the new history (M - 1, C_in): the last input rows,
    which still reach the next chunk's first outputs. Start with history None (zeros: nothing came
    before). What the last chunk's history would add is exactly what EnCodec trims off the right,
    so concatenating the chunks' outputs equals ``causal_trim(conv_transpose1d(whole), K, stride)``.
    ``elu_input`` applies ELU to x first (fused into the copy that pads it).
    """
    length, c_in = x.shape
    m = conv.blocks
    xpad = np.empty((m - 1 + length, c_in), dtype=np.float32)  # (M - 1 + L, C_in)
    if history is None:
        xpad[: m - 1] = 0
    else:
        xpad[: m - 1] = history
    if elu_input:
        elu(x, out=xpad[m - 1 :])
    else:
        xpad[m - 1 :] = x
    out = conv1d(xpad, conv.rows)  # (L, stride * C_out)
    return out.reshape(length * conv.stride, conv.c_out), xpad[length:].copy()


# --- ELU ------------------------------------------------------------------------------------


def elu_reference(x: np.ndarray) -> np.ndarray:
    """ELU with alpha 1: x where x > 0, else exp(x) - 1 (computed as expm1, like torch)."""
    return np.where(x > 0, x, np.expm1(np.minimum(x, 0))).astype(x.dtype)


@numba.njit(inline="always", fastmath=True)
def elu32(v):
    """ELU of one float32, branch-free (so loops over it vectorise), for use inside Numba kernels.

    exp(v) - 1 >= v for all v, so max(v, exp(min(v, 0)) - 1) is v for v > 0 and exp(v) - 1
    otherwise; the max also clamps float32 rounding of exp(v) - 1 near 0 to the exact side.
    """
    return max(v, exp32(min(v, np.float32(0.0))) - np.float32(1.0))


@numba.njit(cache=True, fastmath=True, nogil=True)
def _elu(x, out):  # pragma: no cover - compiled
    """out (R, N) <- ELU(x (R, N)); out may be x. Vectorised (8 lanes) when both are C-contiguous."""
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            out[i, j] = elu32(x[i, j])


def elu(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Fast ``elu_reference``: float32 in, float32 out (of x's shape); ``out`` may be ``x`` itself.

    One compiled pass with the vectorisable ``exp32``, where NumPy would take four (minimum, exp,
    subtract, maximum) and its scalar ``expm1`` is ten times slower than ``exp``. exp(v) - 1 in
    float32 differs from expm1 by at most about one float32 step of 1 near 0 (1.2e-7 absolute).
    A 1-D or 2-D ``out`` may be a strided view (as a column block of a wider matrix).
    """
    x = np.asarray(x, dtype=np.float32)
    if out is None:
        out = np.empty(x.shape, dtype=np.float32)
    if out.shape != x.shape:
        raise ValueError(f"elu: out has shape {out.shape}, x has {x.shape}")
    if x.flags.c_contiguous and out.flags.c_contiguous:
        _elu(x.reshape(1, -1), out.reshape(1, -1))  # one long row: no per-row loop overhead
    elif x.ndim == 2:
        _elu(x, out)
    elif x.ndim == 1:
        _elu(x[None], out[None])
    else:
        raise ValueError("elu: arrays of more than 2 dimensions must be C-contiguous")
    return out
