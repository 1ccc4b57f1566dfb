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


def assert_sums_close(ours, ref, magnitude, rtol: float = 1e-5, what: str = "") -> float:
    """Assert |ours - ref| <= rtol * magnitude element-wise, for results that are sums of products.

    magnitude is the sum of the absolute terms (|x| @ |w|.T for a matrix product): the scale that
    float32 rounding errors follow whatever order the terms are added in. A sum that cancels to
    nearly zero keeps the error of its large terms, so it cannot be judged by its own size.
    Returns the worst error as a fraction of its element's magnitude.
    """
    ours = np.asarray(ours, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert ours.shape == ref.shape, f"{what}: shape {ours.shape} != reference {ref.shape}"
    assert np.isfinite(ours).all(), f"{what}: non-finite values in ours"
    rel = np.abs(ours - ref) / np.maximum(np.asarray(magnitude, dtype=np.float64), 1e-30)
    worst = np.unravel_index(int(rel.argmax()), rel.shape)
    assert rel[worst] <= rtol, (
        f"{what}: error {rel[worst]:.3g} of the summed magnitude > {rtol:g}; worst at {worst}: "
        f"ours {ours[worst]!r} vs reference {ref[worst]!r}"
    )
    return float(rel[worst])


def assert_elementwise_close(ours, ref, atol: float, rtol: float, what: str = "") -> float:
    """Assert |ours - ref| <= atol + rtol |ref| element by element, with every value of ours finite.

    For outputs whose elements each have their own scale (audio, converted weights, one kernel's
    output against its reference). On failure the message names the worst element: its index,
    both values and the error. Returns the largest absolute error.
    """
    ours = np.asarray(ours, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert ours.shape == ref.shape, f"{what}: shape {ours.shape} != reference {ref.shape}"
    assert np.isfinite(ours).all(), f"{what}: non-finite values in ours at {np.argwhere(~np.isfinite(ours))[:3].tolist()}"
    if not ours.size:
        return 0.0
    err = np.abs(ours - ref)
    excess = err - (atol + rtol * np.abs(ref))
    worst = np.unravel_index(int(excess.argmax()), excess.shape)
    assert excess[worst] <= 0, (
        f"{what}: error {err[worst]:.3e} > atol {atol:g} + rtol {rtol:g} x |reference|; worst at {worst}: "
        f"ours {ours[worst]!r} vs reference {ref[worst]!r} (largest error anywhere {err.max():.3e})"
    )
    return float(err.max())
