"""Configurations of the four stages, as stored in each converted file's metadata.

The keys are those of transformers' Bark and EnCodec configs, so a converted file's metadata
reads like the ``config.json`` it came from. ``bias`` is decided at conversion from the tensors
actually present, never trusted from the source config.
"""

from __future__ import annotations

import dataclasses
import json

from .errors import BarkError


@dataclasses.dataclass(frozen=True)
class GPTConfig:
    """A Bark GPT: the causal semantic and coarse models, and the non-causal fine model."""

    num_layers: int
    num_heads: int
    hidden_size: int
    input_vocab_size: int
    output_vocab_size: int
    block_size: int = 1024
    bias: bool = True  # linears and causal layer norms carry a bias
    n_codes_total: int = 8  # fine model only: codebooks embedded
    n_codes_given: int = 1  # fine model only: codebooks never predicted

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    def validate(self) -> "GPTConfig":
        if self.num_layers < 1 or self.num_heads < 1 or self.hidden_size < 1:
            raise BarkError(f"config: sizes must be positive, got {self}")
        if self.hidden_size % self.num_heads:
            raise BarkError(
                f"config: hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}"
            )
        return self


@dataclasses.dataclass(frozen=True)
class CodecConfig:
    """The EnCodec 24 kHz decoder, in transformers' EncodecConfig keys."""

    hidden_size: int = 128
    num_filters: int = 32
    num_residual_layers: int = 1
    upsampling_ratios: tuple = (8, 5, 4, 2)
    kernel_size: int = 7
    last_kernel_size: int = 7
    residual_kernel_size: int = 3
    dilation_growth_rate: int = 2
    compress: int = 2
    num_lstm_layers: int = 2
    trim_right_ratio: float = 1.0
    codebook_size: int = 1024
    codebook_dim: int = 128
    audio_channels: int = 1
    sampling_rate: int = 24000
    use_causal_conv: bool = True
    pad_mode: str = "reflect"
    use_conv_shortcut: bool = True


def config_from_dict(cls, d: dict):
    """Build ``cls`` from a dict, keeping only the keys ``cls`` knows (transformers adds many)."""
    names = {f.name for f in dataclasses.fields(cls)}
    kept = {k: v for k, v in d.items() if k in names}
    if "upsampling_ratios" in kept:
        kept["upsampling_ratios"] = tuple(kept["upsampling_ratios"])
    if cls is CodecConfig and kept.get("codebook_dim") is None:
        kept["codebook_dim"] = kept.get("hidden_size", CodecConfig.hidden_size)
    try:
        return cls(**kept)
    except TypeError as e:  # a required key is missing
        raise BarkError(f"config: {e}") from None


def config_to_json(config) -> str:
    return json.dumps(dataclasses.asdict(config), sort_keys=True)


