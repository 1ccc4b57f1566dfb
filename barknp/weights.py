"""Reading and writing one converted stage file (``semantic.safetensors`` and its siblings).

The format is described in ``weights/README.md``. Reading memory-maps the file, so loading a model
costs no copy of its weights and several processes share one page cache.
"""

from __future__ import annotations

import json
import os
import struct

import numpy as np

from .constants import STAGES
from .errors import BarkError

FORMAT = "barknp/1"

_DTYPES = {"F32": np.float32, "F16": np.float16, "I8": np.int8, "I32": np.int32, "I64": np.int64}


def stage_path(model_dir: str, stage: str) -> str:
    return os.path.join(model_dir, f"{stage}.safetensors")


def read_header(path: str) -> tuple[dict, dict, int]:
    """Parse a safetensors header: (tensor entries, metadata, byte offset of the data block)."""
    try:
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) != 8:
                raise BarkError(f"{path}: truncated safetensors file (no header)")
            (n,) = struct.unpack("<Q", raw)
            size = os.fstat(f.fileno()).st_size
            if n > min(size - 8, 100 * 2**20):
                raise BarkError(f"{path}: corrupt safetensors header (claims {n} bytes)")
            header = json.loads(f.read(n))
    except OSError as e:
        raise BarkError(f"{path}: cannot read: {e.strerror}") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BarkError(f"{path}: corrupt safetensors header (not JSON)") from None
    data_start = 8 + n
    try:  # the structure: {name: {dtype, shape, data_offsets}}, plus an optional __metadata__ dict
        metadata = dict(header.pop("__metadata__", None) or {})
        ends = {name: _entry_end(entry) for name, entry in header.items()}
    except (AttributeError, KeyError, TypeError, ValueError):
        raise BarkError(f"{path}: corrupt safetensors header (entries are not name -> dtype, shape, "
                        "data_offsets)") from None
    for name, end in ends.items():
        if end > size - data_start:
            raise BarkError(f"{path}: truncated: tensor {name} runs past the end of the file")
    return header, metadata, data_start


def _entry_end(entry: dict) -> int:
    """A header entry's end offset, after checking its fields' types (raises on a malformed one)."""
    begin, end = (int(v) for v in entry["data_offsets"])
    negative_dim = any(int(d) < 0 for d in entry["shape"])
    if negative_dim or not isinstance(entry["dtype"], str) or not 0 <= begin <= end:
        raise ValueError("malformed entry")
    return end


def load_stage(path: str, stage: str) -> tuple[dict, dict[str, np.ndarray]]:
    """Memory-map one stage file.

    Returns (config dict, {name: read-only array}). Raises BarkError for a missing, truncated or
    corrupt file, or one that holds another stage.
    """
    if not os.path.isfile(path):
        raise BarkError(f"{path}: no such stage file")
    header, metadata, data_start = read_header(path)
    if metadata.get("format") != FORMAT:
        raise BarkError(f"{path}: not a barknp stage file (format {metadata.get('format')!r})")
    if metadata.get("stage") != stage:
        raise BarkError(f"{path}: holds stage {metadata.get('stage')!r}, expected {stage!r}")
    try:
        config = json.loads(metadata["config"])
    except (KeyError, json.JSONDecodeError):
        raise BarkError(f"{path}: missing or corrupt config in metadata") from None
    blob = np.memmap(path, dtype=np.uint8, mode="r")
    tensors = {}
    for name, entry in header.items():
        dtype = _DTYPES.get(entry["dtype"])
        if dtype is None:
            raise BarkError(f"{path}: tensor {name} has unsupported dtype {entry['dtype']}")
        begin, end = entry["data_offsets"]
        shape = tuple(entry["shape"])
        count = int(np.prod(shape, dtype=np.int64))
        if end - begin != count * np.dtype(dtype).itemsize:
            raise BarkError(f"{path}: tensor {name} has {end - begin} bytes for shape {shape}")
        tensors[name] = blob[data_start + begin : data_start + end].view(dtype).reshape(shape)
    return config, tensors


def save_stage(path: str, stage: str, config_json: str, tensors: dict[str, np.ndarray]) -> None:
    """Write one stage file at ``path`` (the caller picks a temporary name and renames).

    The header is written here, keys sorted, rather than by the safetensors library, whose
    metadata order varies run to run: converting twice must give identical bytes.
    """
    if stage not in STAGES:
        raise BarkError(f"unknown stage {stage!r}")
    codes = {np.dtype(v): k for k, v in _DTYPES.items()}
    header: dict = {"__metadata__": {"config": config_json, "format": FORMAT, "stage": stage}}
    arrays = {name: np.ascontiguousarray(tensors[name]) for name in sorted(tensors)}
    offset = 0
    for name, a in arrays.items():
        if a.dtype not in codes:
            raise BarkError(f"tensor {name}: unsupported dtype {a.dtype}")
        header[name] = {"dtype": codes[a.dtype], "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # align the data block, as safetensors does
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for a in arrays.values():
            a.astype(a.dtype.newbyteorder("<"), copy=False).tofile(f)
