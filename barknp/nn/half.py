"""float16 storage for the KV cache and for weights, read and written inside Numba kernels.

Numba has no float16 type on the CPU, so a float16 array goes into a kernel as its ``uint16`` bit
pattern (``a.view(np.uint16)``), and these two intrinsics convert one value: LLVM's ``fpext`` and
``fptrunc`` through its ``half`` type, which compile to the F16C instructions ``vcvtph2ps`` and
``vcvtps2ph`` (eight lanes at a time in a vectorised loop) on every x86 CPU with AVX2. Rounding is
IEEE round-to-nearest-even, the same as NumPy's ``astype(np.float16)``: a cache written by NumPy and
one written by a kernel hold the same bits (the tests check both directions against NumPy; only a
signalling NaN's payload differs, which the hardware quiets).

``widen`` and ``to_cache`` let one kernel serve every dtype an array may have: ``widen`` reads a
float32, int8 or float16 (uint16 bits) element as float32 (nothing to do for float32, a conversion
otherwise), ``to_cache`` writes float32 into a float32 or float16 cache.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

from ..errors import BarkError

# The cache dtypes a model may use: float32 (exact) or float16 (half the bytes a decode step
# reads from the cache; a reduced-precision option, its error measured in benchmarks/).
KV_DTYPES = {"float32": np.dtype(np.float32), "float16": np.dtype(np.float16)}


@intrinsic
def half_to_float(typingctx, bits):
    """The float16 whose bit pattern is ``bits`` (uint16), as float32 (exact)."""
    if bits != types.uint16:
        return None

    def codegen(context, builder, signature, args):
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())

    return types.float32(types.uint16), codegen


@intrinsic
def float_to_half(typingctx, value):
    """float32 ``value`` rounded to the nearest float16, as its uint16 bit pattern."""
    if value != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(builder.fptrunc(args[0], ir.HalfType()), ir.IntType(16))

    return types.uint16(types.float32), codegen


def widen(value):
    """An element of a kernel's array (float32, int8, or float16 bits as uint16) -> float32."""
    if isinstance(value, np.uint16):
        return np.float32(np.array(value, dtype=np.uint16).view(np.float16))
    return np.float32(value)


def to_cache(value, like: np.ndarray):
    """float32 ``value`` as the element type of the cache array ``like`` (float32, or uint16 bits)."""
    if like.dtype == np.uint16:
        return np.array(value, dtype=np.float32).astype(np.float16).view(np.uint16)[()]
    return np.float32(value)


@overload(widen, inline="always")
def _widen(value):
    if value == types.uint16:
        return lambda value: half_to_float(value)
    return lambda value: np.float32(value)


@overload(to_cache, inline="always")
def _to_cache(value, like):
    if like.dtype == types.uint16:
        return lambda value, like: float_to_half(np.float32(value))
    return lambda value, like: value


def kernel_view(a: np.ndarray) -> np.ndarray:
    """An array as a kernel takes it: float16 as its uint16 bits (a view), any other as it is."""
    return a.view(np.uint16) if a.dtype == np.float16 else a


def kv_dtype(name) -> np.dtype:
    """The cache dtype named ``name`` ("float32" or "float16", or such a dtype) -> np.dtype."""
    try:
        key = name if isinstance(name, str) else np.dtype(name).name
    except TypeError:
        key = None
    if key not in KV_DTYPES:
        raise BarkError(f"kv cache dtype must be one of {sorted(KV_DTYPES)}, got {name!r}")
    return KV_DTYPES[key]
