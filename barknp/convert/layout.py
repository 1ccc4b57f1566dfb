"""What a converted stage must hold: every tensor's name and shape, derived from its config.

These are the shapes of the modules transformers builds for Bark (``BarkCausalModel``,
``BarkFineModel``) and for EnCodec's decoder and quantizer, after conversion (weight norm folded into
``weight``, mask buffers and training statistics dropped). The converter checks its output against
them, so a checkpoint that does not fit its config fails at conversion, not at load.
"""

from __future__ import annotations

import math

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


def num_quantizers(config: CodecConfig, target_bandwidths=(1.5, 3.0, 6.0, 12.0, 24.0)) -> int:
    """Codebooks of the residual quantizer: enough for the highest bandwidth (32 for EnCodec 24 kHz)."""
    hop = math.prod(config.upsampling_ratios)
    frame_rate = math.ceil(config.sampling_rate / hop)
    bits = math.ceil(math.log2(config.codebook_size))
    return int(1000 * max(target_bandwidths) // (frame_rate * bits))


def codec_tensors(config: CodecConfig, n_quantizers: int) -> dict[str, tuple]:
    """{name: shape} of EnCodec's decoder and codebooks, indexed as transformers' EncodecDecoder.

    decoder.layers: 0 conv in, 1 LSTM, then per upsampling ratio an ELU, a transposed conv and
    ``num_residual_layers`` residual blocks; finally an ELU and the output conv. Convs are
    (out, in, kernel); transposed convs (in, out, kernel) as torch stores them.
    """
    out: dict[str, tuple] = {}
    width = config.num_filters * 2 ** len(config.upsampling_ratios)

    def conv(prefix, c_out, c_in, k, transposed=False):
        out[prefix + ".conv.weight"] = (c_in, c_out, k) if transposed else (c_out, c_in, k)
        out[prefix + ".conv.bias"] = (c_out,)

    conv("decoder.layers.0", width, config.hidden_size, config.kernel_size)
    for i in range(config.num_lstm_layers):
        p = "decoder.layers.1.lstm."
        out[p + f"weight_ih_l{i}"] = (4 * width, width)
        out[p + f"weight_hh_l{i}"] = (4 * width, width)
        out[p + f"bias_ih_l{i}"] = (4 * width,)
        out[p + f"bias_hh_l{i}"] = (4 * width,)
    index = 2
    for ratio in config.upsampling_ratios:
        index += 1  # the ELU before the upsampling conv
        conv(f"decoder.layers.{index}", width // 2, width, 2 * ratio, transposed=True)
        index += 1
        width //= 2
        for _ in range(config.num_residual_layers):
            hidden = width // config.compress
            p = f"decoder.layers.{index}"
            conv(p + ".block.1", hidden, width, config.residual_kernel_size)
            conv(p + ".block.3", width, hidden, 1)
            if config.use_conv_shortcut:
                conv(p + ".shortcut", width, width, 1)
            index += 1
    index += 1  # the final ELU
    conv(f"decoder.layers.{index}", config.audio_channels, width, config.last_kernel_size)
    for q in range(n_quantizers):
        out[f"quantizer.layers.{q}.codebook.embed"] = (config.codebook_size, config.codebook_dim)
    return out
