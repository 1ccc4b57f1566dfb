"""Fetching a transformers-layout Bark repository from the Hugging Face hub, and where models live.

Only the files conversion reads are downloaded: suno/bark also holds Suno's original multi-GB
``.pt`` checkpoints, which a plain snapshot would fetch too. The hub's own cache is used (its
environment variables are read at call time), so a second conversion downloads nothing.
"""

from __future__ import annotations

import os
import re

from ..errors import BarkError

SMALL_REPO = "suno/bark-small"  # 12 layers, 768 wide; Suno's "use_small" checkpoints (text.pt, coarse.pt, fine.pt)
LARGE_REPO = "suno/bark"  # 24 layers, 1024 wide; Suno's default checkpoints (text_2.pt, coarse_2.pt, fine_2.pt)
DEFAULT_MODEL = SMALL_REPO  # barknp's default (load, the command line): ~3x the large one's speed on a CPU

# The files of a transformers Bark repository that conversion needs.
HUB_PATTERNS = [
    "config.json",
    "model.safetensors",
    "model.safetensors.index.json",
    "model-*.safetensors",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
    "pytorch_model-*.bin",
    "tokenizer.json",
    "vocab.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "speaker_embeddings_path.json",
    "speaker_embeddings/*.npy",
]

_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.\-]{0,95}$")


def is_repo_id(text: str) -> bool:
    """Whether ``text`` reads as a hub repo id ("owner/name"), not a path."""
    return bool(_REPO_ID.match(text)) and ".." not in text and not text.endswith((".", "-"))


def _env_flag(name: str) -> bool:
    # huggingface_hub's parsing of its switches (api.py's follows Suno's for Suno's: they differ)
    return os.environ.get(name, "").strip().upper() in ("1", "ON", "YES", "TRUE")


def hub_offline(offline: bool | None = None) -> bool:
    """``offline`` if given, else HF_HUB_OFFLINE read now (huggingface_hub reads it at import)."""
    return _env_flag("HF_HUB_OFFLINE") if offline is None else bool(offline)


def default_home() -> str:
    """Where converted models live: $BARKNP_HOME, else $XDG_CACHE_HOME/barknp, else ~/.cache/barknp."""
    home = os.environ.get("BARKNP_HOME")
    if home:
        return os.path.abspath(os.path.expanduser(home))
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "barknp")


def cache_name(repo_id: str) -> str:
    """suno/bark-small -> suno--bark-small, as the hub's own cache spells it."""
    return repo_id.replace("/", "--")


def _hub_cache_dir() -> str | None:
    """The hub cache its environment names now; None leaves huggingface_hub's default."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return None


def fetch(repo_id: str, *, offline: bool | None = None, progress: bool = True, revision: str | None = None) -> str:
    """Download (or find in the hub cache) the files of ``repo_id`` conversion needs; return the folder."""
    try:
        import huggingface_hub
        from huggingface_hub import errors as hf_errors
    except ImportError:  # pragma: no cover - a declared dependency
        raise BarkError("huggingface_hub is not installed: pip install huggingface_hub") from None

    kwargs = dict(
        revision=revision,
        allow_patterns=HUB_PATTERNS,
        local_files_only=hub_offline(offline),
        cache_dir=_hub_cache_dir(),
    )
    if not progress:
        from tqdm.auto import tqdm

        class _Silent(tqdm):
            def __init__(self, *args, **kw):
                kw["disable"] = True
                super().__init__(*args, **kw)

        kwargs["tqdm_class"] = _Silent
    try:
        return huggingface_hub.snapshot_download(repo_id, **kwargs)
    except hf_errors.RepositoryNotFoundError:
        raise BarkError(
            f"{repo_id}: no such model on the Hugging Face hub (or it is private): check the name, "
            "or pass a local directory"
        ) from None
    except hf_errors.RevisionNotFoundError:
        raise BarkError(f"{repo_id}: revision {revision!r} not found on the hub") from None
    except hf_errors.LocalEntryNotFoundError:
        why = "offline mode is on (HF_HUB_OFFLINE)" if hub_offline(offline) else "the hub cannot be reached"
        raise BarkError(
            f"{repo_id}: not in the Hugging Face cache and {why}: connect to the internet once, or "
            "download the repository elsewhere and pass its directory"
        ) from None
    except (hf_errors.HfHubHTTPError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BarkError(f"{repo_id}: download failed: {first}"[:300]) from None
