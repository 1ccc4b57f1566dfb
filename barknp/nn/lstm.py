"""The EnCodec decoder's LSTM: a plain stack of torch-style LSTM layers, time-major.

The input projection of every step is one matrix product over the whole sequence; only the
recurrence is sequential. Each step multiplies the previous hidden state by ``W_hh`` (a BLAS call:
the 4 MB weight must stream from cache whatever runs it, and BLAS does that fastest, measured
against Numba loops) and then updates the cell with ``_lstm_cell``, a Numba kernel that fuses the
four gate nonlinearities and the state update into one pass.

``lstm_layer_reference`` is the same layer written plainly in NumPy, one step at a time.
Gate order is torch's: input, forget, cell (g), output.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numba
import numpy as np


class LSTMLayer(NamedTuple):
    """One ``nn.LSTM`` layer: w_ih (4H, I), w_hh (4H, H), b_ih (4H,), b_hh (4H,) float32."""

    w_ih: np.ndarray
    w_hh: np.ndarray
    b_ih: np.ndarray
    b_hh: np.ndarray


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def lstm_layer_reference(x: np.ndarray, layer: LSTMLayer) -> np.ndarray:
    """x (T, B, I) float32 -> hidden states (T, B, H) float32, from zero initial state."""
    T, B, _ = x.shape
    H = layer.w_hh.shape[1]
    h = np.zeros((B, H), dtype=np.float64)
    c = np.zeros((B, H), dtype=np.float64)
    w_ih, w_hh = layer.w_ih.astype(np.float64), layer.w_hh.astype(np.float64)
    out = np.empty((T, B, H), dtype=np.float32)
    for t in range(T):
        gates = x[t] @ w_ih.T + layer.b_ih + h @ w_hh.T + layer.b_hh  # (B, 4H)
        i, f, g, o = np.split(gates, 4, axis=1)  # each (B, H)
        c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
        h = _sigmoid(o) * np.tanh(c)
        out[t] = h
    return out


@numba.njit(cache=True, fastmath=False, nogil=True)
def _lstm_cell(gates, c, h):  # pragma: no cover - compiled
    """In place: gates (B, 4H) pre-activations -> c (B, H) and h (B, H) updated."""
    B = gates.shape[0]
    H = c.shape[1]
    for b in range(B):
        for j in range(H):
            i = 1.0 / (1.0 + math.exp(-gates[b, j]))
            f = 1.0 / (1.0 + math.exp(-gates[b, H + j]))
            g = math.tanh(gates[b, 2 * H + j])
            o = 1.0 / (1.0 + math.exp(-gates[b, 3 * H + j]))
            cj = f * c[b, j] + i * g
            c[b, j] = cj
            h[b, j] = o * math.tanh(cj)


def lstm_layer(x: np.ndarray, layer: LSTMLayer) -> np.ndarray:
    """Fast ``lstm_layer_reference``: x (T, B, I) float32 -> (T, B, H) float32."""
    return lstm_layer_continue(x, layer, None)[0]


def lstm_layer_continue(x: np.ndarray, layer: LSTMLayer, state: tuple | None) -> tuple[np.ndarray, tuple]:
    """Run the layer over x (T, B, I) from ``state`` (h, c), each (B, H) float32, or zeros if None.

    Returns (outputs (T, B, H) float32, final state). Running a sequence in consecutive pieces,
    each from the previous piece's final state, gives the outputs of running it whole.
    """
    T, B, _ = x.shape
    H = layer.w_hh.shape[1]
    # every step's input projection, and both biases, in one product
    pre = x.reshape(T * B, -1) @ layer.w_ih.T  # (T*B, 4H)
    pre += layer.b_ih + layer.b_hh
    pre = pre.reshape(T, B, 4 * H)
    w_hh_t = layer.w_hh.T  # (H, 4H): a transposed view, read in place by BLAS
    if state is None:
        h = np.zeros((B, H), dtype=np.float32)
        c = np.zeros((B, H), dtype=np.float32)
    else:
        h, c = state[0].copy(), state[1].copy()
    gates = np.empty((B, 4 * H), dtype=np.float32)
    out = np.empty((T, B, H), dtype=np.float32)
    for t in range(T):  # sequential by nature: one BLAS call and one kernel call per step
        np.matmul(h, w_hh_t, out=gates)
        gates += pre[t]
        _lstm_cell(gates, c, h)
        out[t] = h
    return out, (h, c)


def lstm(x: np.ndarray, layers: list[LSTMLayer], reference: bool = False) -> np.ndarray:
    """A stack of layers, each feeding the next: x (T, B, I) -> (T, B, H) float32."""
    run = lstm_layer_reference if reference else lstm_layer
    for layer in layers:
        x = run(x, layer)
    return x


def lstm_blocks(x: np.ndarray, layers: list[LSTMLayer], block_steps: int):
    """The stack run ``block_steps`` steps at a time, every layer per block, for consumers that
    start on the first outputs before the last exist.

    Yields (t0, t1, outputs (t1 - t0, B, H) float32) in order; together they equal ``lstm(x, layers)``.
    """
    states = [None] * len(layers)
    T = x.shape[0]
    for t0 in range(0, T, block_steps):
        t1 = min(T, t0 + block_steps)
        y = x[t0:t1]
        for n, layer in enumerate(layers):
            y, states[n] = lstm_layer_continue(y, layer, states[n])
        yield t0, t1, y
