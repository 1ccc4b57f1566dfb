"""int8 weight-only copies of the decoding stages, kept beside the float32 files.

``semantic.int8.safetensors`` and ``coarse.int8.safetensors`` hold the same tensors as their
float32 files, except that every linear weight of the blocks and the LM head is stored as int8
(``name``) with one float32 scale per output row (``name_scale``). Embeddings, layer norms and
biases stay float32: they are a small share of the bytes a decoding step reads.

The fine model and the codec are compute-bound, so they gain nothing from int8 weights and keep
float32 only.
"""

from __future__ import annotations

import os
import re

import numpy as np

from ..errors import BarkError
from ..nn.quant import quantize_rows
from ..weights import load_stage, read_header, save_stage, stage_path

QUANTIZED_STAGES = ("semantic", "coarse")
# linear weights of a causal GPT: the four per block and the LM head
_LINEAR = re.compile(r"^(layers\.\d+\.(attn\.att_proj|attn\.out_proj|mlp\.in_proj|mlp\.out_proj)|lm_head)\.weight$")


def int8_stage_path(model_dir: str, stage: str) -> str:
    return os.path.join(model_dir, f"{stage}.int8.safetensors")


def quantize_tensors(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """float32 stage tensors -> the same names with linear weights int8 plus ``*_scale``."""
    out = {}
    for name, value in tensors.items():
        if _LINEAR.match(name):
            out[name], out[name + "_scale"] = quantize_rows(np.asarray(value, dtype=np.float32))
        else:
            out[name] = value
    return out


class UnwritableModelError(BarkError):
    """A model's int8 files were missing and its folder could not take them."""


def ensure_int8(model_dir: str, stage: str) -> str:
    """The int8 file of ``stage`` in ``model_dir``, written (atomically) from float32 if missing;
    UnwritableModelError where the folder cannot take it."""
    if stage not in QUANTIZED_STAGES:
        raise BarkError(f"int8: only {', '.join(QUANTIZED_STAGES)} have int8 weights, not {stage!r}")
    path = int8_stage_path(model_dir, stage)
    if os.path.isfile(path):
        read_header(path)  # a truncated or corrupt file is reported, not silently used
        return path
    _, metadata, _ = read_header(stage_path(model_dir, stage))
    _, tensors = load_stage(stage_path(model_dir, stage), stage)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        save_stage(tmp, stage, metadata["config"], quantize_tensors(tensors))
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(e, OSError):
            raise UnwritableModelError(f"int8: cannot write {path}: {e.strerror or e} (int8 weights are made once, into the "
                            "model's folder, which must be writable then)") from None
        raise
    return path
