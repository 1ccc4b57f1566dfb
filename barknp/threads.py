"""Thread count for both engines barknp computes with: the BLAS behind NumPy, and Numba.

NumPy exposes no call to set its BLAS threads, so this finds the OpenBLAS (or MKL) library NumPy
loaded and calls its own setter through ctypes, as threadpoolctl does, without the dependency.

The two engines' thread pools do not share cores politely: after a call returns, OpenBLAS's workers
(and the OpenMP workers behind Numba's parallel loops) keep spinning for a while, waiting for the
next call. A parallel Numba loop that starts right after a BLAS product therefore fights BLAS's
spinning worker for the second core; measured on 2 cores, a layer norm of 887 rows took 2-3.5 ms
that way against 0.6 ms serial, a softmax block 3.5-4 ms against 0.9. So the kernels that run
between BLAS products in a prefill or a fine pass (layer norm, GELU, masked softmax) are serial,
and only the decode step's kernels, which run with no BLAS call between them (``rows_matmul``,
``attend_rows``), spread over threads.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import os

import numba
import numpy as np

# Setter symbols by library family, newest spellings first.
_SETTERS = (
    "scipy_openblas_set_num_threads64_",
    "scipy_openblas_set_num_threads",
    "openblas_set_num_threads64_",
    "openblas_set_num_threads",
    "MKL_Set_Num_Threads",
)
_GETTERS = (
    "scipy_openblas_get_num_threads64_",
    "scipy_openblas_get_num_threads",
    "openblas_get_num_threads64_",
    "openblas_get_num_threads",
    "MKL_Get_Max_Threads",
)


def _blas_libraries() -> list[ctypes.CDLL]:
    """The BLAS shared libraries bundled with NumPy (numpy.libs/ or numpy/.libs)."""
    root = os.path.dirname(os.path.dirname(np.__file__))
    patterns = [os.path.join(root, "numpy.libs", "*blas*"), os.path.join(os.path.dirname(np.__file__), ".libs", "*blas*")]
    libs = []
    for pattern in patterns:
        for path in sorted(glob.glob(pattern)):
            try:
                libs.append(ctypes.CDLL(path))
            except OSError:
                continue
    return libs


def _call_first(names, *args):
    for lib in _blas_libraries():
        for name in names:
            fn = getattr(lib, name, None)
            if fn is not None:
                return fn(*args)
    return None


def set_num_threads(n: int) -> None:
    """Use ``n`` threads for matrix products (BLAS) and for Numba's parallel kernels."""
    n = int(n)
    if n < 1:
        raise ValueError(f"threads: must be at least 1, got {n}")
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    _call_first(_SETTERS, ctypes.c_int(n))


def get_num_threads() -> dict[str, int | None]:
    """{'numba': threads, 'blas': threads or None if the BLAS could not be found}."""
    return {"numba": numba.get_num_threads(), "blas": _call_first(_GETTERS)}


@contextlib.contextmanager
def single_threaded_blas():
    """Run the body with BLAS on one thread (for code that runs its own worker threads); yields
    the BLAS thread count it had (1 if unknown) and restores both engines' counts afterwards."""
    before = get_num_threads()
    if not before["blas"] or before["blas"] <= 1:
        yield 1
        return
    set_num_threads(1)
    try:
        yield before["blas"]
    finally:
        set_num_threads(before["blas"])
        numba.set_num_threads(before["numba"])
