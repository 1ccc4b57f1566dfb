"""The transformer block shared by all three Bark GPTs, and reading it from checkpoint tensors.

Pre-norm, as in GPT-2:  x + attn(ln_1(x)),  then  x + mlp(ln_2(x)),  with an exact-erf GELU MLP
of width 4C.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..errors import BarkError
from ..threads import SERIAL, Workers
from .attention import Attention, KVCache, attend_qkv
from .gemv import MAX_ROWS
from .ops import LayerNorm, Linear, gelu, layer_norm, linear
from .quant import QLinear, dequantized_weight


class MLP(NamedTuple):
    in_proj: Linear  # weight (4C, C)
    out_proj: Linear  # weight (C, 4C)


class Block(NamedTuple):
    """One ``layers.N`` module, attribute names as in the checkpoint."""

    layernorm_1: LayerNorm
    attn: Attention
    layernorm_2: LayerNorm
    mlp: MLP


def block_forward(
    x: np.ndarray,
    block: Block,
    n_head: int,
    cache: KVCache | None = None,
    layer: int = 0,
    causal: bool = True,
    pad: np.ndarray | None = None,
    workers: Workers = SERIAL,
    scratch: dict | None = None,
    out_rows: int | None = None,
) -> np.ndarray:
    """x (B, T, C) float32 -> (B, n, C) float32, the last n = ``out_rows`` (default T) positions;
    ``pad`` (B,) counts left-padding keys.

    Everything but attention treats positions independently, so ``workers`` take those parts a
    chunk of rows each, and attention a share of the heads each. (A causal model's decode step of
    one sequence uses :func:`~barknp.nn.fused.decode_block` instead, which computes the same.)
    ``scratch``: a dict the caller keeps across its layers, where a many-row call of an int8 block
    keeps the buffers of its float32 weights (see :func:`float32_block`). ``out_rows``: a model's
    last block, when only the last positions' logits are wanted, still caches every position's keys
    and values but skips the other positions' attention, projection and MLP (6–15 % of a coarse
    prefill: benchmarks/NOTES.md, session 5).
    """
    B, T, C = x.shape
    n = T if out_rows is None else out_rows
    rows = x.reshape(B * T, C)
    if B * T > MAX_ROWS:
        block = float32_block(block, workers, scratch)

    def qkv_rows(r):  # (n, C) -> (n, 3C)
        return linear(layer_norm(r, block.layernorm_1), block.attn.att_proj)

    def rest_rows(r, attended):  # the residual stream after attention and after the MLP: (n, C)
        r = r + linear(attended, block.attn.out_proj)
        r += linear(gelu(linear(layer_norm(r, block.layernorm_2), block.mlp.in_proj)), block.mlp.out_proj)
        return r

    qkv = workers.map_rows(qkv_rows, 3 * C, rows).reshape(B, T, 3 * C)  # (B, T, 3C)
    attended = attend_qkv(qkv, n_head, cache, layer, causal, pad, workers, queries=n)  # (B, n, C)
    kept = rows if n == T else x[:, T - n :].reshape(B * n, C)  # (B n, C)
    return workers.map_rows(rest_rows, C, kept, attended.reshape(B * n, C)).reshape(B, n, C)


def float32_block(block: Block, workers: Workers = SERIAL, scratch: dict | None = None) -> Block:
    """The block with any int8 or float16 linear converted to float32, for a many-row call:
    compute-bound there, BLAS on float32 beats reduced weights, and converting once per call lets
    every worker share the result (each converting per row chunk did the work twice). The float32
    weights go into ``scratch`` (by role, reused by the next layer's call), or into new arrays
    without one."""
    scratch = {} if scratch is None else scratch

    def f32(role, layer):
        if layer.weight.dtype == np.float32:
            return layer
        buffer = scratch.get(role)
        if buffer is None or buffer.shape != layer.weight.shape:
            buffer = scratch[role] = np.empty(layer.weight.shape, dtype=np.float32)
        return Linear(dequantized_weight(layer, workers, out=buffer), layer.bias)

    attn, mlp = block.attn, block.mlp
    return Block(
        layernorm_1=block.layernorm_1,
        attn=Attention(att_proj=f32("att_proj", attn.att_proj), out_proj=f32("out_proj", attn.out_proj)),
        layernorm_2=block.layernorm_2,
        mlp=MLP(in_proj=f32("in_proj", mlp.in_proj), out_proj=f32("mlp_out_proj", mlp.out_proj)),
    )


def tensor(tensors: dict, name: str) -> np.ndarray:
    """``tensors[name]``, or a BarkError naming the missing tensor."""
    try:
        return tensors[name]
    except KeyError:
        raise BarkError(f"weights: missing tensor {name!r}") from None


def read_linear(tensors: dict, prefix: str) -> Linear | QLinear:
    """A float32 Linear, or a QLinear where the file stores int8 weights with ``.weight_scale``."""
    weight = tensor(tensors, prefix + ".weight")
    if weight.dtype == np.int8:
        return QLinear(weight, tensor(tensors, prefix + ".weight_scale"), tensors.get(prefix + ".bias"))
    return Linear(weight, tensors.get(prefix + ".bias"))


def read_layer_norm(tensors: dict, prefix: str) -> LayerNorm:
    return LayerNorm(tensor(tensors, prefix + ".weight"), tensors.get(prefix + ".bias"))


def read_block(tensors: dict, prefix: str) -> Block:
    """The block stored under ``prefix`` (for example ``layers.3``)."""
    return Block(
        layernorm_1=read_layer_norm(tensors, prefix + ".layernorm_1"),
        attn=Attention(
            att_proj=read_linear(tensors, prefix + ".attn.att_proj"),
            out_proj=read_linear(tensors, prefix + ".attn.out_proj"),
        ),
        layernorm_2=read_layer_norm(tensors, prefix + ".layernorm_2"),
        mlp=MLP(
            in_proj=read_linear(tensors, prefix + ".mlp.in_proj"),
            out_proj=read_linear(tensors, prefix + ".mlp.out_proj"),
        ),
    )
