"""float32 elementary functions that LLVM can vectorise, for use inside Numba kernels.

libm's ``expf`` and ``erff`` are opaque calls, so a Numba loop that uses them runs one element at
a time. These are branch-free polynomial (or rational) forms of the same functions, inlined into
the caller, so an elementwise loop over them compiles to AVX2 code eight lanes wide. Each is
accurate to a few float32 ulps, far inside the 1e-5 parity tolerance; tests compare them with
the float64 functions over their whole range.

Kernels that inline them compile with ``error_model="numpy"``: Numba's default ("python") guards
every float division with a zero check whose branch stops the loop vectorising (GELU measured
3.6 -> 0.8 ns per element).
"""

from __future__ import annotations

import numba
import numpy as np

# exp: x = n ln2 + r with |r| <= ln2/2, so exp(x) = 2^n exp(r). ln2 is split in a high part with
# few mantissa bits (n * _LN2_HI is exact) and a low correction, as in Cephes' expf.
_LOG2E = np.float32(1.44269504088896341)
_LN2_HI = np.float32(0.693359375)
_LN2_LO = np.float32(-2.12194440e-4)
# exp underflows to 0 below this and would overflow above the other; the clamp keeps 2^n a normal float.
_EXP_LO = np.float32(-87.33654)
_EXP_HI = np.float32(88.37626)


@numba.njit(inline="always", fastmath=True)
def exp32(x):
    """exp(x) for float32 x, within 2 ulp on [-87.3, 88.3]; 0 below (a masked score's -inf included)."""
    under = x < _EXP_LO
    x = min(max(x, _EXP_LO), _EXP_HI)
    n = np.float32(np.floor(x * _LOG2E + np.float32(0.5)))
    r = x - n * _LN2_HI - n * _LN2_LO  # |r| <= ln2 / 2
    # Cephes' minimax polynomial for exp(r) = 1 + r + r^2 p(r) on that interval
    p = np.float32(1.9875691500e-4)
    p = p * r + np.float32(1.3981999507e-3)
    p = p * r + np.float32(8.3334519073e-3)
    p = p * r + np.float32(4.1665795894e-2)
    p = p * r + np.float32(1.6666665459e-1)
    p = p * r + np.float32(5.0000001201e-1)
    e = p * r * r + r + np.float32(1.0)
    scale = np.int32((np.int32(n) + 127) << 23).view(np.float32)  # 2^n, built from its exponent bits
    return np.float32(0.0) if under else e * scale


@numba.njit(inline="always", fastmath=True)
def erf32(x):
    """erf in float32 as a rational function of x (Eigen's and XLA's fast erf): within 4e-7 of
    the exact value (measured, tests/test_nn.py) on [-4, 4], and saturated beyond, where
    |1 - |erf|| < 2e-8."""
    x = min(max(x, np.float32(-4.0)), np.float32(4.0))
    x2 = x * x
    p = x2 * np.float32(-2.72614225801306e-10) + np.float32(2.77068142495902e-08)
    p = p * x2 + np.float32(-2.10102402082508e-06)
    p = p * x2 + np.float32(-5.69250639462346e-05)
    p = p * x2 + np.float32(-7.34990630326855e-04)
    p = p * x2 + np.float32(-2.95459980854025e-03)
    p = p * x2 + np.float32(-1.60960333262415e-02)
    q = x2 * np.float32(-1.45660718464996e-05) + np.float32(-2.13374055278905e-04)
    q = q * x2 + np.float32(-1.68282697438203e-03)
    q = q * x2 + np.float32(-7.37332916720468e-03)
    q = q * x2 + np.float32(-1.42647390514189e-02)
    return x * p / q


@numba.njit(inline="always", fastmath=True)
def sigmoid32(x):
    """1 / (1 + exp(-x)) in float32, within 2e-7 absolute; saturates cleanly at both ends."""
    return np.float32(1.0) / (np.float32(1.0) + exp32(-x))


@numba.njit(inline="always", fastmath=True)
def tanh32(x):
    """tanh through the sigmoid, 2 sigmoid(2x) - 1: within 3e-7 absolute once vectorised (fastmath
    divides through a refined reciprocal estimate); an absolute bound suits its one use, an LSTM."""
    return np.float32(2.0) * sigmoid32(np.float32(2.0) * x) - np.float32(1.0)


@numba.njit(fastmath=True, error_model="numpy")
def apply32(fn, x):  # fn one of this module's functions, x (N,) float32 -> (N,) float32
    """``fn`` over every element, compiled as a kernel would inline it: the test entry point."""
    out = np.empty_like(x)
    for i in range(x.shape[0]):
        out[i] = fn(x[i])
    return out
