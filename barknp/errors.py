"""barknp's error type: one clear, one-line message naming what was wrong; and the checks of plain
numeric arguments that raise it."""

from __future__ import annotations

import math
import numbers


class BarkError(ValueError):
    """Bad input or a bad model file. The message is one line, fit to show a user as is."""


class NoSpeechError(BarkError):
    """The semantic stage ended (its end-of-speech token) before its first token: nothing to say.

    A normal sampling outcome, not a fault: another seed, or a higher min_eos_p (the
    end-of-speech probability at which it stops; 1 stops only on a drawn end token), usually speaks.
    """

    def __init__(self, message: str = "the semantic stage stopped before its first token, so there is no "
                                      "speech; try another seed or a higher min_eos_p"):
        super().__init__(message)


def check_number(name: str, value, low=None, high=None, *, integer: bool = False, optional: bool = False):
    """``value`` as a Python int (``integer``) or float, within [low, high] where given; None passes
    through when ``optional``. Anything else (a string, a list, a bool, NaN, infinity) raises BarkError."""
    if value is None and optional:
        return None
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind) or not math.isfinite(value):
        what = "an integer" if integer else "a finite number"
        raise BarkError(f"{name}: must be {what}{' or None' if optional else ''}, got {value!r}")
    value = int(value) if integer else float(value)
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"[{low}, {high}]" if low is not None and high is not None else (
            f">= {low}" if low is not None else f"<= {high}")
        raise BarkError(f"{name}: must be {bounds}, got {value!r}")
    return value
