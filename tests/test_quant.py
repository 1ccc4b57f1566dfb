"""Reduced-precision weights: int8 layers (the kernel against its reference), int8 and float16
stage files."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from conftest import num_threads
from parity import assert_close
from random_weights import random_gpt_tensors

from barknp.config import GPTConfig, config_to_json
from barknp.convert.quantize import (
    ensure_int8,
    ensure_reduced,
    halve_tensors,
    int8_stage_path,
    quantize_tensors,
    reduced_stage_path,
)
from barknp.errors import BarkError
from barknp.models.gpt import CausalGPT
from barknp.nn.ops import Linear, linear
from barknp.nn.gemv import MAX_ROWS
from barknp.nn.quant import QLinear, _dequantize_into, dequantize_rows, quantize_rows
from barknp.weights import save_stage, stage_path


@settings(deadline=None, max_examples=30)
@given(rows=st.integers(1, 9), k=st.integers(1, 70), seed=st.integers(0, 2**31))
def test_dequantize_kernel_matches_reference(rows, k, seed):
    q, scale = quantize_rows(np.random.default_rng(seed).standard_normal((rows, k)).astype(np.float32))
    got = _dequantize_into(q, scale, np.empty((rows, k), dtype=np.float32))
    np.testing.assert_array_equal(got, dequantize_rows(q, scale))  # the same two roundings: exact


def test_quantization_error_is_at_most_half_a_step():
    w = np.random.default_rng(0).standard_normal((64, 48)).astype(np.float32)
    w[3] = 0.0  # an all-zero row must not divide by zero
    q, scale = quantize_rows(w)
    assert q.dtype == np.int8 and scale.dtype == np.float32 and np.abs(q).max() <= 127
    err = np.abs(dequantize_rows(q, scale) - w)
    assert (err <= scale[:, None] / 2 + 1e-7).all()
    assert (dequantize_rows(q, scale)[3] == 0).all()


@pytest.mark.parametrize("rows", [1, MAX_ROWS, MAX_ROWS + 1, 200])
def test_linear_dispatches_int8_on_both_paths(rows):
    rng = np.random.default_rng(rows)
    w = rng.standard_normal((20, 12)).astype(np.float32)
    b = rng.standard_normal(20).astype(np.float32)
    q, scale = quantize_rows(w)
    x = rng.standard_normal((1, rows, 12)).astype(np.float32)
    got = linear(x, QLinear(q, scale, b))
    want = linear(x, Linear(dequantize_rows(q, scale), b))
    assert got.shape == (1, rows, 20)
    assert_close(got, want, 1e-5, f"qlinear rows={rows}")


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("T", [3, MAX_ROWS + 9])
def test_int8_block_matches_its_dequantized_float32_block(T, n_threads):
    """Decode rows use int8 weights in rows_matmul; a many-row call dequantizes the layer once and
    shares it among the workers (block.float32_block). Both equal the float32 block built from
    the same dequantized weights."""
    from barknp.nn.block import block_forward, float32_block, read_block
    from barknp.threads import forward_workers

    tensors = random_gpt_tensors(1, 32, 100, 100, seed=9)
    q_tensors = quantize_tensors(tensors)
    q_block = read_block(q_tensors, "layers.0")
    f_block = float32_block(q_block)
    assert isinstance(q_block.mlp.in_proj, QLinear) and isinstance(f_block.mlp.in_proj, Linear)
    in_proj = q_block.mlp.in_proj
    np.testing.assert_array_equal(f_block.mlp.in_proj.weight, dequantize_rows(in_proj.weight, in_proj.scale))
    x = np.random.default_rng(T).standard_normal((1, T, 32)).astype(np.float32)
    with num_threads(n_threads), forward_workers(T, MAX_ROWS) as workers:
        got = block_forward(x, q_block, 4, workers=workers)
    assert_close(got, block_forward(x, f_block, 4), 1e-5, f"int8 block T={T} threads={n_threads}")


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


def test_float16_stage_file_is_written_once_and_loads(model_dir):
    """The float16 file: linear weights rounded to float16 (everything else as it was), made once;
    its logits within float16's rounding of float32's, on many rows and on decode steps."""
    path = ensure_reduced(model_dir, "coarse", "float16")
    assert path == reduced_stage_path(model_dir, "coarse", "float16") and path.endswith("coarse.f16.safetensors")
    mtime = os.path.getmtime(path)
    assert ensure_reduced(model_dir, "coarse", "float16") == path and os.path.getmtime(path) == mtime
    f16 = CausalGPT.load(path, "coarse")
    f32 = CausalGPT.load(stage_path(model_dir, "coarse"), "coarse")
    w32 = f32.layers[1].mlp.in_proj.weight
    np.testing.assert_array_equal(f16.layers[1].mlp.in_proj.weight, w32.astype(np.float16))
    assert f16.lm_head.weight.dtype == np.float16 and f16.input_embeds_layer.dtype == np.float32
    ids = np.random.default_rng(1).integers(0, 12_096, (1, 20))
    assert_close(f16.forward(ids), f32.forward(ids), 2e-3, "float16 vs float32 logits, 20 rows")
    c16, c32 = f16.new_cache(), f32.new_cache()
    f16.forward(ids[:, :19], c16)
    f32.forward(ids[:, :19], c32)
    assert_close(f16.forward(ids[:, 19:], c16), f32.forward(ids[:, 19:], c32), 2e-3, "float16 vs float32, decode step")


def test_reduced_weights_only_for_decoding_stages(model_dir):
    with pytest.raises(BarkError, match="only semantic, coarse"):
        ensure_int8(model_dir, "fine")
    with pytest.raises(BarkError, match="only semantic, coarse"):
        ensure_reduced(model_dir, "fine", "float16")
    with pytest.raises(BarkError, match="reduced-precision weights are int8 or float16"):
        ensure_reduced(model_dir, "coarse", "int4")


def test_halve_tensors_rounds_linear_weights_only():
    t = random_gpt_tensors(1, 16, 100, 100, seed=0)
    h = halve_tensors(t)
    for name, value in h.items():
        linear = name.endswith(("att_proj.weight", "out_proj.weight", "in_proj.weight")) or name == "lm_head.weight"
        assert value.dtype == (np.float16 if linear else np.float32), name
        if linear:
            np.testing.assert_array_equal(value, t[name].astype(np.float16))


def test_quantize_tensors_keeps_embeddings_and_norms_float():
    t = quantize_tensors(random_gpt_tensors(1, 16, 100, 100, seed=0))
    assert t["layers.0.attn.att_proj.weight"].dtype == np.int8
    assert t["layers.0.attn.att_proj.weight_scale"].shape == (48,)
    assert t["input_embeds_layer.weight"].dtype == np.float32
    assert t["layers.0.layernorm_1.weight"].dtype == np.float32


def test_reduced_weight_models_prefill_nothing_ahead(model_dir):
    """int8 and float16 decode steps convert their weights in registers: the coarse loop's prefill
    beside them is off for those weights (CausalGPT.prefill_ahead), and on for float32 at two
    threads."""
    from conftest import num_threads

    from barknp import threads

    if threads.get_num_threads()["blas"] is None:
        pytest.skip("NumPy's BLAS library was not found, so its threads cannot be set")
    ids = np.random.default_rng(0).integers(0, 12_096, (1, 24))
    with num_threads(2):
        for path, runs in [(ensure_int8(model_dir, "coarse"), False),
                           (ensure_reduced(model_dir, "coarse", "float16"), False),
                           (stage_path(model_dir, "coarse"), True)]:
            model = CausalGPT.load(path, "coarse")
            cache = model.new_cache()
            model.forward(ids[:, :5], cache)
            with model.prefill_ahead(ids, cache) as job:
                pass
            assert (job is not None) == runs
            if runs:  # the cache given is emptied and refilled
                assert job.result() is cache and cache.length == 24
            else:  # nothing computed, the cache left as it was
                assert cache.length == 5
