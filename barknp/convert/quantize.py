"""Reduced-precision copies of the decoding stages' weights, kept beside the float32 files.

Two options, each a file per stage made once from the float32 one:

* int8 (``semantic.int8.safetensors``, ``coarse.int8.safetensors``): every linear weight of the
  blocks and the LM head as int8 (``name``) with one float32 scale per output row (``name_scale``):
  a quarter of the bytes a decode step reads;
* float16 (``semantic.f16.safetensors``, ``coarse.f16.safetensors``): the same weights rounded to
  float16: half the bytes, and a rounding error of at most 2^-11 of each weight (of magnitude
  above 6e-5, where float16 has full precision), against int8's ~0.4 % of each row's largest.

Embeddings, layer norms and biases stay float32: they are a small share of the bytes a decoding
step reads. The fine model and the codec are compute-bound, so they gain nothing from smaller
weights and keep float32 only.
"""

from __future__ import annotations

import os
import re

import numpy as np

from ..errors import BarkError
from ..nn.quant import quantize_rows
from ..weights import load_stage, read_header, save_stage, stage_path

QUANTIZED_STAGES = ("semantic", "coarse")
REDUCED_WEIGHTS = ("int8", "float16")  # the options, by the name barknp.load's ``weights`` takes
_SUFFIX = {"int8": "int8", "float16": "f16"}  # of each option's stage files
# linear weights of a causal GPT: the four per block and the LM head
_LINEAR = re.compile(r"^(layers\.\d+\.(attn\.att_proj|attn\.out_proj|mlp\.in_proj|mlp\.out_proj)|lm_head)\.weight$")


def reduced_stage_path(model_dir: str, stage: str, weights: str) -> str:
    """Where the ``weights`` ("int8" or "float16") file of ``stage`` lives in ``model_dir``."""
    return os.path.join(model_dir, f"{stage}.{_SUFFIX[weights]}.safetensors")


def int8_stage_path(model_dir: str, stage: str) -> str:
    return reduced_stage_path(model_dir, stage, "int8")


def quantize_tensors(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """float32 stage tensors -> the same names with linear weights int8 plus ``*_scale``."""
    out = {}
    for name, value in tensors.items():
        if _LINEAR.match(name):
            out[name], out[name + "_scale"] = quantize_rows(np.asarray(value, dtype=np.float32))
        else:
            out[name] = value
    return out


def halve_tensors(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """float32 stage tensors -> the same names with linear weights float16 (rounded to nearest)."""
    return {name: np.asarray(value, dtype=np.float16) if _LINEAR.match(name) else value
            for name, value in tensors.items()}


class UnwritableModelError(BarkError):
    """A model's int8 or float16 files were missing and its folder could not take them."""


def ensure_int8(model_dir: str, stage: str) -> str:
    """:func:`ensure_reduced` for int8 weights."""
    return ensure_reduced(model_dir, stage, "int8")


def ensure_reduced(model_dir: str, stage: str, weights: str) -> str:
    """The ``weights`` ("int8" or "float16") file of ``stage`` in ``model_dir``, written
    (atomically) from float32 if missing; UnwritableModelError where the folder cannot take it."""
    if weights not in REDUCED_WEIGHTS:
        raise BarkError(f"weights: reduced-precision weights are {' or '.join(REDUCED_WEIGHTS)}, not {weights!r}")
    if stage not in QUANTIZED_STAGES:
        raise BarkError(f"{weights}: only {', '.join(QUANTIZED_STAGES)} have {weights} weights, not {stage!r}")
    path = reduced_stage_path(model_dir, stage, weights)
    if os.path.isfile(path):
        read_header(path)  # a truncated or corrupt file is reported, not silently used
        return path
    _, metadata, _ = read_header(stage_path(model_dir, stage))
    _, tensors = load_stage(stage_path(model_dir, stage), stage)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        reduce = quantize_tensors if weights == "int8" else halve_tensors
        save_stage(tmp, stage, metadata["config"], reduce(tensors))
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(e, OSError):
            raise UnwritableModelError(f"{weights}: cannot write {path}: {e.strerror or e} ({weights} weights are made "
                                       "once, into the model's folder, which must be writable then)") from None
        raise
    return path
