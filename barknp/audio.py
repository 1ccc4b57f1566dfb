"""Writing generated audio to a WAV file."""

from __future__ import annotations

import os
import secrets

import numpy as np

from .constants import SAMPLE_RATE
from .errors import BarkError

_SUBTYPES = ("PCM_16", "FLOAT")


def save_wav(path, audio, sample_rate: int = SAMPLE_RATE, subtype: str = "PCM_16") -> None:
    """Write mono audio (N,) float (nominally in [-1, 1]) to ``path`` as a WAV file.

    ``subtype`` "PCM_16" (16-bit integers; samples beyond [-1, 1] are clipped) or "FLOAT" (32-bit
    float, unclipped). The file is written under a temporary name in the same folder and renamed
    into place, so ``path`` never holds a half-written file. Raises BarkError for bad audio, an
    unknown subtype, or a path that cannot be written.
    """
    import soundfile

    if subtype not in _SUBTYPES:
        raise BarkError(f"save_wav: subtype must be one of {_SUBTYPES}, got {subtype!r}")
    if not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise BarkError(f"save_wav: sample_rate must be a positive integer, got {sample_rate!r}")
    audio = np.asarray(audio)
    if audio.dtype.kind not in "fiu":
        raise BarkError(f"save_wav: audio must be numeric, got dtype {audio.dtype}")
    if audio.ndim != 1:
        raise BarkError(f"save_wav: audio must be one-dimensional (N,), got shape {audio.shape}")
    if audio.size == 0:
        raise BarkError("save_wav: audio is empty")
    audio = audio.astype(np.float32)
    if not np.isfinite(audio).all():
        raise BarkError("save_wav: audio contains NaN or infinite samples")
    if subtype == "PCM_16":
        audio = np.clip(audio, -1.0, 1.0)

    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise BarkError(f"save_wav: {path} is a directory")
    # a fresh name beside the target (so the rename stays on one file system), opened with mode
    # 0o666 so that the umask gives the file the permissions any new file would get
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as e:
        raise BarkError(f"save_wav: cannot write to {folder}: {e.strerror}") from None
    try:
        try:
            # libsndfile writes the descriptor itself: through a Python file object it would call
            # back into Python, where a Ctrl-C is swallowed and surfaces as a failed assertion
            with soundfile.SoundFile(fd, "w", int(sample_rate), 1, subtype, format="WAV", closefd=False) as out:
                out.write(audio)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except (OSError, RuntimeError, soundfile.LibsndfileError) as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise BarkError(f"save_wav: cannot write {path}: {e}") from None
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
