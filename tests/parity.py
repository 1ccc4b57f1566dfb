"""Parity assertions that say where two arrays disagree most."""

from __future__ import annotations

import numpy as np


def assert_close(ours, ref, rtol: float = 1e-5, what: str = "") -> float:
    """Assert max|ours - ref| <= rtol * max|ref| (relative to the reference's scale).

    On failure the message names the worst element: its index, both values and the error.
    Returns the measured relative error so callers may report it.
    """
    ours = np.asarray(ours, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert ours.shape == ref.shape, f"{what}: shape {ours.shape} != reference {ref.shape}"
    assert np.isfinite(ours).all(), f"{what}: non-finite values in ours"
    err = np.abs(ours - ref)
    scale = max(float(np.abs(ref).max()), 1e-30)
    worst = np.unravel_index(int(err.argmax()), err.shape)
    rel = float(err[worst]) / scale
    assert rel <= rtol, (
        f"{what}: relative error {rel:.3g} > {rtol:g} (scale {scale:.3g}); worst at {worst}: "
        f"ours {ours[worst]!r} vs reference {ref[worst]!r}"
    )
    return rel
