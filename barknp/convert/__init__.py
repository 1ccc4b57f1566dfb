"""Turning a Bark checkpoint (hub repo id or local transformers-layout directory) into barknp's layout.

    convert("suno/bark-small", "/tmp/bark-small")      # -> "/tmp/bark-small"
    locate("suno/bark-small")                          # -> "~/.cache/barknp/suno--bark-small", converted once

See weights/README.md for the layout written.
"""

from __future__ import annotations

import hashlib
import os
import sys

from ..errors import BarkError
from .core import MODEL_JSON, convert_dir, find_manifest
from .hub import LARGE_REPO, SMALL_REPO, cache_name, default_home, fetch, is_repo_id

__all__ = ["cache_location", "convert", "locate", "default_home", "BarkError"]

OFFICIAL = (SMALL_REPO, LARGE_REPO)  # the models weights/manifests/ lists


def _unknown(src: str) -> BarkError:
    return BarkError(
        f"{src}: not a directory and not a Hugging Face repo id; pass a local transformers-layout Bark "
        "directory or a repo id such as suno/bark-small"
    )


def convert(src: str, out: str, *, offline: bool | None = None, progress: bool = True) -> str:
    """Convert ``src`` (a local directory or a hub repo id) into the barknp layout at ``out``.

    A repo id is fetched through the Hugging Face cache (``offline`` None follows HF_HUB_OFFLINE).
    Returns the absolute path of ``out``. Raises BarkError for anything wrong with the source or
    the target.
    """
    src = os.fspath(src)
    if os.path.isdir(src):
        path = os.path.abspath(src)
        return _write(path, out, source={"path": path}, progress=progress)
    if not is_repo_id(src):
        raise _unknown(src)
    snapshot = fetch(src, offline=offline, progress=progress)
    source = {"repo": src, "revision": os.path.basename(os.path.normpath(snapshot))}
    manifest = find_manifest(src)
    if manifest is None and src in OFFICIAL:
        print(f"barknp: warning: no manifest for {src} installed; checking shapes against its config only",
              file=sys.stderr)
    return _write(snapshot, out, source=source, manifest=manifest, progress=progress)


def _write(src_dir: str, out: str, **kwargs) -> str:
    """``convert_dir``, with a failure to write the target (a full disk, a read-only folder) as a BarkError."""
    try:
        return convert_dir(src_dir, out, **kwargs)
    except OSError as e:
        raise BarkError(f"{out}: cannot write the converted model: {e.strerror or e}") from None


def cache_location(path_or_repo: str, *, home: str | None = None) -> tuple[str, bool]:
    """(converted model directory for ``path_or_repo``, whether it is converted already); converts nothing.

    A directory that already is a converted model (it has barknp.json) is itself. A repo id maps to
    ``<home>/<owner>--<name>``; another local directory to ``<home>/local--<name>--<hash>``.
    ``home`` defaults to $BARKNP_HOME or ~/.cache/barknp, read at call time.
    """
    src = os.fspath(path_or_repo)
    home = os.path.abspath(home) if home else default_home()
    if os.path.isdir(src):
        path = os.path.abspath(src)
        if os.path.isfile(os.path.join(path, MODEL_JSON)):
            return path, True
        digest = hashlib.sha256(path.encode("utf-8", "surrogateescape")).hexdigest()[:12]
        dest = os.path.join(home, f"local--{os.path.basename(path) or 'model'}--{digest}")
    elif is_repo_id(src):
        dest = os.path.join(home, cache_name(src))
    else:
        raise _unknown(src)
    return dest, os.path.isfile(os.path.join(dest, MODEL_JSON))


def locate(path_or_repo: str, *, home: str | None = None, offline: bool | None = None, progress: bool = True) -> str:
    """The converted model directory for ``path_or_repo`` (see :func:`cache_location`), converting
    into ``home`` on first use."""
    src = os.fspath(path_or_repo)
    dest, ready = cache_location(src, home=home)
    if ready:
        return dest
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    try:
        return convert(src, dest, offline=offline, progress=progress)
    except BarkError:
        # Another process may have finished the same conversion first: its result is as good.
        if os.path.isfile(os.path.join(dest, MODEL_JSON)):
            return dest
        raise
