"""What a converted stage must hold: every tensor's name and shape, derived from its config.

These are the shapes of the modules transformers builds for Bark (``BarkCausalModel``,
``BarkFineModel``) and for EnCodec's decoder and quantizer, after conversion (weight norm folded into
``weight``, mask buffers and training statistics dropped). The converter checks its output against
them, so a checkpoint that does not fit its config fails at conversion, not at load.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from ..config import CodecConfig, GPTConfig


def gpt_tensors(config: GPTConfig, fine: bool) -> dict[str, tuple]:
    """{name: shape} of a Bark GPT. Causal: semantic/coarse; ``fine``: the non-causal fine GPT.

    ``bias`` governs the linears of both kinds, and the layer norms of the causal kind only: the fine
    GPT's layer norms always carry a bias (plain torch LayerNorms in both Suno's and transformers' code).
    """
    h, v_in, v_out = config.hidden_size, config.input_vocab_size, config.output_vocab_size
    norm_bias = config.bias or fine
    out: dict[str, tuple] = {"position_embeds_layer.weight": (config.block_size, h)}
    if fine:
        for i in range(config.n_codes_total):
            out[f"input_embeds_layers.{i}.weight"] = (v_in, h)
        for i in range(config.n_codes_total - config.n_codes_given):
            out[f"lm_heads.{i}.weight"] = (v_out, h)
    else:
        out["input_embeds_layer.weight"] = (v_in, h)
        out["lm_head.weight"] = (v_out, h)
    linears = {"attn.att_proj": (3 * h, h), "attn.out_proj": (h, h), "mlp.in_proj": (4 * h, h),
               "mlp.out_proj": (h, 4 * h)}
    for layer in range(config.num_layers):
        p = f"layers.{layer}."
        for norm in ("layernorm_1", "layernorm_2"):
            out[p + norm + ".weight"] = (h,)
            if norm_bias:
                out[p + norm + ".bias"] = (h,)
        for name, shape in linears.items():
            out[p + name + ".weight"] = shape
            if config.bias:
                out[p + name + ".bias"] = (shape[0],)
    out["layernorm_final.weight"] = (h,)
    if norm_bias:
        out["layernorm_final.bias"] = (h,)
    return out


# EnCodec 24 kHz's bandwidths (kbps), where a checkpoint's config does not list them.
ENCODEC_TARGET_BANDWIDTHS = (1.5, 3.0, 6.0, 12.0, 24.0)


class CodecLayerNames(NamedTuple):
    """Module names of EnCodec's decoder layers, numbered as transformers' EncodecDecoder numbers
    its ModuleList: 0 conv in, 1 LSTM, then per upsampling ratio an ELU, a transposed conv and
    ``num_residual_layers`` residual blocks; finally an ELU and the output conv."""

    first: str
    lstm: str
    stages: list  # per upsampling ratio: (transposed conv, [residual blocks])
    last: str


def codec_layer_names(config: CodecConfig) -> CodecLayerNames:
    index = 2
    stages = []
    for _ in config.upsampling_ratios:
        up = f"decoder.layers.{index + 1}"  # after the ELU at ``index``
        index += 2
        stages.append((up, [f"decoder.layers.{index + j}" for j in range(config.num_residual_layers)]))
        index += config.num_residual_layers
    return CodecLayerNames("decoder.layers.0", "decoder.layers.1.lstm", stages, f"decoder.layers.{index + 1}")


def num_quantizers(config: CodecConfig, target_bandwidths=ENCODEC_TARGET_BANDWIDTHS) -> int:
    """Codebooks of the residual quantizer: enough for the highest bandwidth (32 for EnCodec 24 kHz)."""
    hop = math.prod(config.upsampling_ratios)
    frame_rate = math.ceil(config.sampling_rate / hop)
    bits = math.ceil(math.log2(config.codebook_size))
    return int(1000 * max(target_bandwidths) // (frame_rate * bits))


def codec_tensors(config: CodecConfig, n_quantizers: int) -> dict[str, tuple]:
    """{name: shape} of EnCodec's decoder (names: :func:`codec_layer_names`) and codebooks.

    Convs are (out, in, kernel); transposed convs (in, out, kernel) as torch stores them.
    """
    out: dict[str, tuple] = {}
    names = codec_layer_names(config)
    width = config.num_filters * 2 ** len(config.upsampling_ratios)

    def conv(prefix, c_out, c_in, k, transposed=False):
        out[prefix + ".conv.weight"] = (c_in, c_out, k) if transposed else (c_out, c_in, k)
        out[prefix + ".conv.bias"] = (c_out,)

    conv(names.first, width, config.hidden_size, config.kernel_size)
    for i in range(config.num_lstm_layers):
        out[f"{names.lstm}.weight_ih_l{i}"] = (4 * width, width)
        out[f"{names.lstm}.weight_hh_l{i}"] = (4 * width, width)
        out[f"{names.lstm}.bias_ih_l{i}"] = (4 * width,)
        out[f"{names.lstm}.bias_hh_l{i}"] = (4 * width,)
    for ratio, (up, blocks) in zip(config.upsampling_ratios, names.stages):
        conv(up, width // 2, width, 2 * ratio, transposed=True)
        width //= 2
        for p in blocks:
            hidden = width // config.compress
            conv(p + ".block.1", hidden, width, config.residual_kernel_size)
            conv(p + ".block.3", width, hidden, 1)
            if config.use_conv_shortcut:
                conv(p + ".shortcut", width, width, 1)
    conv(names.last, config.audio_channels, width, config.last_kernel_size)
    for q in range(n_quantizers):
        out[f"quantizer.layers.{q}.codebook.embed"] = (config.codebook_size, config.codebook_dim)
    return out
