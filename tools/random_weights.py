"""Random GPT weights drawn with NumPy alone, in barknp's tensor names.

The golden files in tests/goldens/ store only inputs and outputs; the weights behind them are
redrawn from a seed by this module, so the golden tests need neither torch nor stored weights.
"""

from __future__ import annotations

import numpy as np


def random_gpt_tensors(
    num_layers: int,
    hidden_size: int,
    input_vocab_size: int,
    output_vocab_size: int,
    seed: int,
    fine: bool = False,
    n_codes_total: int = 8,
    n_codes_given: int = 1,
    bias: bool = True,
    block_size: int = 1024,
    linear_std: float = 0.1,
) -> dict[str, np.ndarray]:
    """Every tensor of a causal (``fine=False``) or fine Bark GPT, float32, names without prefix.

    Layer-norm gains are drawn near 1 and every bias near 0, so no weight is trivially 0 or 1.
    Block linear weights have standard deviation ``linear_std``: the default 0.1 makes every layer
    change the residual stream a lot (a stiff test of parity); GPT-2's initialisation, 0.02, gives
    a calmer network.
    """
    rng = np.random.default_rng(seed)
    C = hidden_size

    def normal(*shape, std=0.02, mean=0.0):
        return (mean + std * rng.standard_normal(shape)).astype(np.float32)

    t: dict[str, np.ndarray] = {}
    if fine:
        for i in range(n_codes_total):
            t[f"input_embeds_layers.{i}.weight"] = normal(input_vocab_size, C)
    else:
        t["input_embeds_layer.weight"] = normal(input_vocab_size, C)
    t["position_embeds_layer.weight"] = normal(block_size, C)
    for n in range(num_layers):
        p = f"layers.{n}."
        for ln in ("layernorm_1", "layernorm_2"):
            t[p + ln + ".weight"] = normal(C, std=0.1, mean=1.0)
            if bias or fine:  # the fine model's layer norms always carry a bias
                t[p + ln + ".bias"] = normal(C)
        for name, (o, i) in {
            "attn.att_proj": (3 * C, C),
            "attn.out_proj": (C, C),
            "mlp.in_proj": (4 * C, C),
            "mlp.out_proj": (C, 4 * C),
        }.items():
            t[p + name + ".weight"] = normal(o, i, std=linear_std)
            if bias:
                t[p + name + ".bias"] = normal(o)
    t["layernorm_final.weight"] = normal(C, std=0.1, mean=1.0)
    if bias or fine:
        t["layernorm_final.bias"] = normal(C)
    if fine:
        for i in range(n_codes_total - n_codes_given):
            # the original ties head i to embedding table i + 1
            t[f"lm_heads.{i}.weight"] = t[f"input_embeds_layers.{i + n_codes_given}.weight"]
    else:
        t["lm_head.weight"] = normal(output_vocab_size, C, std=0.1)
    return t
