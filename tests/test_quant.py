"""int8 weight-only layers: the kernel against its reference, and int8 stage files."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from conftest import num_threads
from parity import assert_close, assert_sums_close
from random_weights import random_gpt_tensors

from barknp.config import GPTConfig, config_to_json
from barknp.convert.quantize import ensure_int8, int8_stage_path, quantize_tensors
from barknp.errors import BarkError
from barknp.models.gpt import CausalGPT
from barknp.nn.ops import Linear, linear
from barknp.nn.gemv import MAX_ROWS
from barknp.nn.qmatmul import (
    TILE_ROWS,
    PackedQLinear,
    _quantize_into,
    pack_weight,
    packed_linear,
    qmatmul,
    qmatmul_reference,
    quantize_activations_reference,
)
from barknp.nn.quant import QLinear, dequantize_rows, quantize_rows
from barknp.weights import save_stage, stage_path


def test_quantization_error_is_at_most_half_a_step():
    w = np.random.default_rng(0).standard_normal((64, 48)).astype(np.float32)
    w[3] = 0.0  # an all-zero row must not divide by zero
    q, scale = quantize_rows(w)
    assert q.dtype == np.int8 and scale.dtype == np.float32 and np.abs(q).max() <= 127
    err = np.abs(dequantize_rows(q, scale) - w)
    assert (err <= scale[:, None] / 2 + 1e-7).all()
    assert (dequantize_rows(q, scale)[3] == 0).all()


def _packed_layer(rng, n, k, bias):
    q, scale = quantize_rows(rng.standard_normal((n, k)).astype(np.float32))
    b = rng.standard_normal(n).astype(np.float32) if bias else None
    return q, scale, b, packed_linear(pack_weight(q), scale, b, k)


@settings(deadline=None, max_examples=40)
@given(
    m=st.integers(1, 20), k=st.integers(1, 1100), n=st.integers(1, 40), bias=st.booleans(),
    zero_row=st.booleans(), seed=st.integers(0, 2**31),
)
def test_qmatmul_kernel_matches_reference(m, k, n, bias, zero_row, seed):
    """Every remainder of the 6-row tiles, the 16-output panels, odd K and K past one 256-pair
    chunk; an all-zero input row. The activations quantize to the reference's int16 exactly, and
    the sums differ only by float32 rounding (1e-6 of the summed magnitude)."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((m, k)) * rng.uniform(0.01, 100)).astype(np.float32)
    if zero_row:
        x[m // 2] = 0.0
    q, scale, b, layer = _packed_layer(rng, n, k, bias)
    xq, xs = quantize_activations_reference(x)
    mp = -(-m // TILE_ROWS) * TILE_ROWS
    a16 = np.empty((mp, 2 * layer.panels.shape[1]), dtype=np.int16)
    got_scale = _quantize_into(x, a16, np.empty(m, dtype=np.float32))
    np.testing.assert_array_equal(a16[:m, :k], xq)
    np.testing.assert_array_equal(got_scale, xs)
    want = qmatmul_reference(x, q, scale) + (0 if b is None else b)
    magnitude = (np.abs(xq).astype(np.float64) @ np.abs(q).astype(np.float64).T) * xs[:, None] * scale + (0 if b is None else np.abs(b))
    assert_sums_close(qmatmul(x, layer), want, magnitude, 1e-6, f"qmatmul m={m} k={k} n={n}")


def test_qmatmul_largest_sums_do_not_overflow():
    """Every activation at the int16 limit times every weight at 127, over K = 4 096 (bark's MLP):
    each 256-pair chunk reaches 2.13e9 in a lane, just under 2**31, and the total is exact."""
    k = 4096
    x = np.full((7, k), -3.5, dtype=np.float32)
    x[1] = 3.5
    q = np.full((17, k), 127, dtype=np.int8)
    q[5] = -127
    scale = np.ones(17, dtype=np.float32)
    got = qmatmul(x, packed_linear(pack_weight(q), scale, None, k))
    want = qmatmul_reference(x, q, scale)
    assert_close(got, want, 1e-6, "saturated qmatmul")
    assert got[0, 0] == pytest.approx(-3.5 * 127 * k, rel=1e-6)


def test_int16_activations_cost_at_most_half_a_step_of_each_row():
    """Against float32 products with the same int8 weights, the error of each output is bounded
    by its row's half step times the weight row's absolute sum (plus float32 rounding)."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((50, 768)).astype(np.float32)
    x[:, 7] *= 40.0  # an outlier column: a large row scale is the case that costs most
    q, scale, _, layer = _packed_layer(rng, 64, 768, False)
    exact = x.astype(np.float64) @ dequantize_rows(q, scale).astype(np.float64).T  # (50, 64)
    _, xs = quantize_activations_reference(x)
    bound = 0.5 * xs[:, None] * (np.abs(q).sum(axis=1) * scale)[None, :]  # (50, 64)
    err = np.abs(qmatmul(x, layer) - exact)
    assert (err <= bound + 1e-5 * np.abs(x) @ np.abs(dequantize_rows(q, scale)).T).all()
    print(f"int16 activations: worst error {float((err / np.abs(exact).max()).max()):.2g} of the largest output")


@pytest.mark.parametrize("rows", [1, MAX_ROWS, MAX_ROWS + 1, 200])
def test_linear_dispatches_int8_on_both_paths(rows):
    """Decode rows: float32 activations times int8 weights (rows_matmul); many rows: int16
    activations (qmatmul). Each against its own reference."""
    rng = np.random.default_rng(rows)
    q, scale, b, _ = _packed_layer(rng, 20, 12, True)
    x = rng.standard_normal((1, rows, 12)).astype(np.float32)
    got = linear(x, QLinear(q, scale, b))
    assert got.shape == (1, rows, 20)
    if rows <= MAX_ROWS:
        want = linear(x, Linear(dequantize_rows(q, scale), b))
    else:
        want = qmatmul_reference(x[0], q, scale)[None] + b
    assert_close(got, want, 1e-5, f"qlinear rows={rows}")


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("T", [3, MAX_ROWS + 9])
def test_int8_block_matches_its_reference(T, n_threads):
    """Decode rows use int8 weights in rows_matmul, and equal the float32 block of the same
    dequantized weights. A many-row call packs each layer once, shared by the workers
    (block.packed_block), and equals the same block run on one thread, bit for bit (rows are
    independent), and the float32 block within the int16 activations' error (1e-4)."""
    from barknp.nn.block import block_forward, packed_block, read_block
    from barknp.threads import forward_workers

    tensors = random_gpt_tensors(1, 32, 100, 100, seed=9)
    q_tensors = quantize_tensors(tensors)
    q_block = read_block(q_tensors, "layers.0")
    f_tensors = {name: dequantize_rows(value, q_tensors[name + "_scale"]) if value.dtype == np.int8 else value
                 for name, value in q_tensors.items() if not name.endswith("_scale")}
    f_block = read_block(f_tensors, "layers.0")
    p_block = packed_block(q_block)
    assert isinstance(q_block.mlp.in_proj, QLinear) and isinstance(p_block.mlp.in_proj, PackedQLinear)
    x = np.random.default_rng(T).standard_normal((1, T, 32)).astype(np.float32)
    with num_threads(n_threads), forward_workers(T, MAX_ROWS) as workers:
        got = block_forward(x, q_block, 4, workers=workers)
    if T <= MAX_ROWS:
        assert_close(got, block_forward(x, f_block, 4), 1e-5, f"int8 block T={T} threads={n_threads}")
    else:
        np.testing.assert_array_equal(got, block_forward(x, q_block, 4))
        assert_close(got, block_forward(x, f_block, 4), 1e-4, f"int8 block T={T} threads={n_threads}")


@pytest.fixture
def model_dir(tmp_path):
    cfg = GPTConfig(num_layers=2, num_heads=2, hidden_size=32, input_vocab_size=12_096, output_vocab_size=12_096)
    tensors = random_gpt_tensors(2, 32, 12_096, 12_096, seed=4)
    save_stage(stage_path(str(tmp_path), "coarse"), "coarse", config_to_json(cfg), tensors)
    return str(tmp_path)


def test_int8_stage_file_is_written_once_and_loads(model_dir):
    path = ensure_int8(model_dir, "coarse")
    assert path == int8_stage_path(model_dir, "coarse") and os.path.isfile(path)
    assert not [f for f in os.listdir(model_dir) if ".tmp-" in f]
    mtime = os.path.getmtime(path)
    assert ensure_int8(model_dir, "coarse") == path and os.path.getmtime(path) == mtime
    q8 = CausalGPT.load(path, "coarse")
    f32 = CausalGPT.load(stage_path(model_dir, "coarse"), "coarse")
    assert isinstance(q8.layers[0].attn.att_proj, QLinear) and isinstance(q8.lm_head, QLinear)
    assert q8.input_embeds_layer.dtype == np.float32
    ids = np.random.default_rng(0).integers(0, 12_096, (1, 20))
    a, b = q8.forward(ids), f32.forward(ids)
    # int8 is an approximation: its error is measured, and bounded well below the logits' scale
    assert_close(a, b, 3e-2, "int8 vs float32 logits")
    assert (a.argmax(-1) == b.argmax(-1)).mean() >= 0.9


def test_int8_only_for_decoding_stages(model_dir):
    with pytest.raises(BarkError, match="only semantic, coarse"):
        ensure_int8(model_dir, "fine")


def test_quantize_tensors_keeps_embeddings_and_norms_float():
    t = quantize_tensors(random_gpt_tensors(1, 16, 100, 100, seed=0))
    assert t["layers.0.attn.att_proj.weight"].dtype == np.int8
    assert t["layers.0.attn.att_proj.weight_scale"].shape == (48,)
    assert t["input_embeds_layer.weight"].dtype == np.float32
    assert t["layers.0.layernorm_1.weight"].dtype == np.float32
