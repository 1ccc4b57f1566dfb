"""Voice prompts ("history prompts"): Suno's .npz files that condition all three stages.

A voice is three integer arrays:

    semantic_prompt  (T,)      semantic tokens in [0, SEMANTIC_VOCAB_SIZE), T >= 1
    coarse_prompt    (2, T')   codes of codebooks 0..1 in [0, CODEBOOK_SIZE)
    fine_prompt      (8, T'')  codes of codebooks 0..7 in [0, CODEBOOK_SIZE)

``load_voice`` returns them as int64 arrays (Suno's files use int64, int32 or uint16). The
preset names are Suno's: ``announcer``, ``{lang}_speaker_{n}`` and ``v2/{lang}_speaker_{n}``;
the converted model keeps them as ``voices/<name>.npz``.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np

from ..constants import CODEBOOK_SIZE, N_COARSE_CODEBOOKS, N_FINE_CODEBOOKS, SEMANTIC_VOCAB_SIZE
from ..errors import BarkError

# The languages and speaker numbers of Suno's preset files (a naming convention, not an
# algorithm constant).
PRESET_LANGUAGES = ("en", "de", "es", "fr", "hi", "it", "ja", "ko", "pl", "pt", "ru", "tr", "zh")
PRESET_SPEAKERS = range(10)
PRESET_NAMES = frozenset(
    ["announcer"]
    + [f"{prefix}{lang}_speaker_{n}" for prefix in ("", "v2/") for lang in PRESET_LANGUAGES for n in PRESET_SPEAKERS]
)
_NAMES_HINT = "announcer, [v2/]{" + ",".join(PRESET_LANGUAGES) + "}_speaker_{0-9}"

VOICE_KEYS = ("semantic_prompt", "coarse_prompt", "fine_prompt")


def list_voices(presets_dir) -> list[str]:
    """Names of the .npz voices under ``presets_dir`` ('/'-separated, without '.npz'), sorted."""
    if presets_dir is None or not os.path.isdir(presets_dir):
        return []
    names = []
    for root, _dirs, files in os.walk(presets_dir):
        for f in files:
            if f.endswith(".npz"):
                rel = os.path.relpath(os.path.join(root, f), presets_dir)[: -len(".npz")]
                names.append(rel.replace(os.sep, "/"))
    return sorted(names)


# Per prompt: its number of axes, its rows (None: any), the bound of its values, its least length.
_PROMPT_SHAPES = {
    "semantic_prompt": (1, None, SEMANTIC_VOCAB_SIZE, 1),
    "coarse_prompt": (2, N_COARSE_CODEBOOKS, CODEBOOK_SIZE, 0),
    "fine_prompt": (2, N_FINE_CODEBOOKS, CODEBOOK_SIZE, 0),
}


def check_prompt(arr, key: str, where: str = "voice") -> np.ndarray:
    """One of a voice's three arrays, checked: integers, of the shape and range its stage reads.

    Returns it as an array of its own integer dtype; ``where`` starts the error messages.
    """
    ndim, rows, high, min_len = _PROMPT_SHAPES[key]
    arr = np.asarray(arr)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise BarkError(f"{where}: {key} must hold integers, got dtype {arr.dtype}")
    if arr.ndim != ndim or (rows is not None and arr.shape[0] != rows):
        want = f"({rows}, T)" if rows is not None else "(T,)"
        raise BarkError(f"{where}: {key} must have shape {want}, got {arr.shape}")
    if arr.shape[-1] < min_len:
        raise BarkError(f"{where}: {key} is empty")
    if arr.size and (arr.min() < 0 or arr.max() >= high):
        raise BarkError(f"{where}: {key} holds values in [{arr.min()}, {arr.max()}], outside [0, {high})")
    return arr


def validate_voice(voice) -> dict:
    """A dict with the three prompts -> a new dict of checked int64 arrays."""
    missing = [k for k in VOICE_KEYS if k not in voice]
    if missing:
        raise BarkError(f"voice: missing key(s) {', '.join(missing)} (needs {', '.join(VOICE_KEYS)})")
    return {key: check_prompt(voice[key], key).astype(np.int64) for key in VOICE_KEYS}


def _read_npz(path: str) -> dict:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except FileNotFoundError:
        raise BarkError(f"voice: no such file {path}") from None
    except (OSError, ValueError) as e:  # not a zip, truncated, or object arrays
        raise BarkError(f"voice: cannot read {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


def load_voice(voice, presets_dir=None) -> dict | None:
    """Resolve and check a voice.

    ``voice`` is None (no voice: returns None), a preset name looked up as
    ``presets_dir/<name>.npz``, a path to a Suno-style .npz, a dict of the three arrays, or an
    opened ``np.load(...)`` of an .npz.
    Returns {key: int64 array} with the shapes in the module docstring. Raises BarkError naming
    the problem (unknown name, missing file or key, wrong shape, dtype or range).
    """
    if voice is None:
        return None
    if isinstance(voice, dict):
        return validate_voice(voice)
    if isinstance(voice, np.lib.npyio.NpzFile):
        return validate_voice({k: voice[k] for k in voice.files})
    if isinstance(voice, os.PathLike):  # a path object is a file, whatever its name
        return validate_voice(_read_npz(os.fspath(voice)))
    if not isinstance(voice, str):
        raise BarkError(f"voice: expected a preset name, an .npz path, a dict or an np.load of an .npz, "
                        f"got {type(voice).__name__}")
    # As in the original, a name ending in .npz is a file and a preset name is a preset, even where
    # a file of that name happens to sit in the working directory; other existing files are read too.
    if voice.endswith(".npz"):
        return validate_voice(_read_npz(voice))
    name = voice.replace("\\", "/").strip("/")
    known = name in PRESET_NAMES or name in list_voices(presets_dir)
    if not known and os.path.isfile(voice):
        return validate_voice(_read_npz(voice))
    if not known or ".." in name.split("/"):
        raise BarkError(f"voice: unknown voice {voice!r}; valid names: {_NAMES_HINT}, or a path to an .npz")
    if presets_dir is None:
        raise BarkError(f"voice: {voice!r} is a preset name but no presets folder was given")
    path = os.path.join(presets_dir, *name.split("/")) + ".npz"
    if not os.path.isfile(path):
        raise BarkError(f"voice: preset {name!r} is not in {presets_dir} (was the model converted with its voices?)")
    return validate_voice(_read_npz(path))


def save_voice(path, full_generation: dict) -> None:
    """Write a voice .npz (keys semantic_prompt, coarse_prompt, fine_prompt) atomically.

    ``full_generation`` holds the three token arrays of a generation, as the stages return them.
    """
    path = os.fspath(path)
    if not path.endswith(".npz"):
        raise BarkError(f"voice: a voice file name must end in .npz, got {path!r}")
    arrays = validate_voice(full_generation)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".voice-", suffix=".npz.tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
