"""Building blocks: each fast function against its plain reference on random inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from parity import assert_close, assert_elementwise_close, assert_sums_close

from barknp.nn.attention import (
    QUERY_BLOCK,
    KVCache,
    attend,
    attend_reference,
    masked_softmax,
    masked_softmax_reference,
)
from barknp.nn.gemv import rows_matmul, rows_matmul_reference
from barknp.nn.mathf import apply32, erf32, exp32, sigmoid32, tanh32
from barknp.nn.quant import quantize_rows
from barknp.nn.ops import LayerNorm, gelu, gelu_reference, layer_norm, layer_norm_reference

WEIGHTS = ("float32", "int8", "float16")  # the weight dtypes a decode step's products take

shapes = st.tuples(st.integers(1, 3), st.integers(1, 17), st.integers(1, 40))


@settings(deadline=None, max_examples=40)
@given(shape=shapes, seed=st.integers(0, 2**31), scale=st.sampled_from([0.1, 1.0, 8.0]))
def test_gelu_kernel_matches_reference(shape, seed, scale):
    x = (scale * np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)
    expected = gelu_reference(x)
    got = gelu(x.copy())
    # the kernel evaluates in float32 (as torch does), the reference in float64; for negative x,
    # 1 + erf(x) cancels, so the bound is absolute there: a few float32 ulps of the input's scale
    assert_elementwise_close(got, expected, 1e-6 * scale, 1e-5, f"gelu {shape} scale {scale}")


def test_gelu_handles_non_contiguous_input():
    x = np.random.default_rng(0).standard_normal((6, 8)).astype(np.float32)[:, ::2]
    assert_elementwise_close(gelu(x), gelu_reference(x), 1e-6, 1e-5, "gelu of a strided view")


def test_gelu_reference_is_exact_erf_gelu():
    for v in (-3.0, -0.5, 0.0, 0.7, 2.5):
        want = 0.5 * v * (1 + math.erf(v / math.sqrt(2)))
        got = float(gelu_reference(np.array([v], dtype=np.float32))[0])
        assert got == pytest.approx(want, rel=1e-6, abs=1e-7)


def layer_norm_loop_reference(x, w, b, eps=1e-5):
    """Row by row in float64, the textbook formula."""
    x = x.astype(np.float64)
    out = np.empty_like(x)
    for idx in np.ndindex(x.shape[:-1]):
        row = x[idx]
        out[idx] = (row - row.mean()) / math.sqrt(row.var() + eps) * w + (0 if b is None else b)
    return out


@settings(deadline=None, max_examples=30)
@given(shape=shapes, seed=st.integers(0, 2**31), with_bias=st.booleans())
def test_layer_norm_matches_reference(shape, seed, with_bias):
    rng = np.random.default_rng(seed)
    x = (3 * rng.standard_normal(shape) + 1).astype(np.float32)
    w = (1 + 0.1 * rng.standard_normal(shape[-1])).astype(np.float32)
    b = (0.1 * rng.standard_normal(shape[-1])).astype(np.float32) if with_bias else None
    want = layer_norm_loop_reference(x, w, b)
    # float32 rounds the mean to ~6e-8 of |mean|, and normalising divides that by sqrt(var + eps):
    # a row whose spread is tiny beside its mean (hypothesis finds C = 2 rows that differ by 2e-4)
    # keeps an error of that size, in torch too. Judge each element against that magnitude.
    x64 = x.astype(np.float64)
    spread = np.sqrt(x64.var(axis=-1, keepdims=True) + 1e-5)  # (..., 1)
    magnitude = (1 + np.abs(x64.mean(axis=-1, keepdims=True)) / spread) * np.abs(w) + (0 if b is None else np.abs(b))
    assert_sums_close(layer_norm(x, LayerNorm(w, b)), want, magnitude, 1e-5, "layer_norm")
    assert_sums_close(layer_norm_reference(x, LayerNorm(w, b)), want, magnitude, 1e-5, "layer_norm_reference")


def attend_loop_reference(q, k, v, causal_offset, key_start=None):
    """Loop over every query: softmax of its visible scores times the values, in float64."""
    B, H, T, D = q.shape
    out = np.zeros(q.shape)
    for b, h, t in np.ndindex(B, H, T):
        first = 0 if key_start is None else key_start[b]
        visible = k.shape[2] if causal_offset is None else causal_offset + t + 1
        if visible <= first:
            continue  # a query inside the padding sees nothing
        s = k[b, h, first:visible].astype(np.float64) @ q[b, h, t] / math.sqrt(D)
        p = np.exp(s - s.max())
        out[b, h, t] = (p / p.sum()) @ v[b, h, first:visible]
    return out


@settings(deadline=None, max_examples=40)
@given(
    B=st.integers(1, 2), H=st.integers(1, 3), T=st.integers(1, 9), past=st.integers(0, 5),
    D=st.integers(1, 9), causal=st.booleans(), padded=st.booleans(), spare=st.integers(0, 3),
    half=st.booleans(), seed=st.integers(0, 2**31),
)
def test_attend_matches_reference(B, H, T, past, D, causal, padded, spare, half, seed):
    """Both paths (fused rows for T <= 4, BLAS blocks beyond), with padding and unused cache tail,
    keys and values float32 or float16 (a float16 cache: the reference takes their float32 values)."""
    rng = np.random.default_rng(seed)
    S = T + past if causal else T
    q = rng.standard_normal((B, H, T, D)).astype(np.float32)
    dtype = np.float16 if half else np.float32
    k = rng.standard_normal((B, H, S + spare, D)).astype(dtype)  # a cache's buffer: S valid
    v = rng.standard_normal((B, H, S + spare, D)).astype(dtype)
    offset = past if causal else None
    starts = rng.integers(0, S, B) if padded else None
    k32, v32 = k[:, :, :S].astype(np.float32), v[:, :, :S].astype(np.float32)  # (B, H, S, D)
    want = attend_loop_reference(q, k32, v32, offset, starts)
    # Rounding follows the values averaged and the scores' terms, not the output, which can cancel
    # to ~0 (a weighted mean of values of both signs): bound it by max|v| (1 + max_s |q| . |k_s|).
    score_terms = np.abs(q) @ np.abs(k32).transpose(0, 1, 3, 2)  # (B, H, T, S)
    magnitude = np.abs(v32).max(axis=(2, 3))[:, :, None, None] * (1 + score_terms.max(-1, keepdims=True))
    magnitude = np.broadcast_to(magnitude, want.shape)  # (B, H, T, D)
    assert_sums_close(attend(q, k, v, offset, starts, length=S), want, magnitude, 1e-5, "attend")
    assert_sums_close(attend_reference(q, k[:, :, :S], v[:, :, :S], offset, starts), want, magnitude, 1e-5, "attend_reference")


@pytest.mark.parametrize("causal", [True, False])
def test_attend_blocks_of_queries_join_up(causal):
    """More queries than one block (QUERY_BLOCK), a cache continued by 37, one padded sequence."""
    rng = np.random.default_rng(7)
    T, past, H, D = QUERY_BLOCK + 45, 37, 2, 16
    S = T + past
    q = rng.standard_normal((2, H, T, D)).astype(np.float32)
    k = rng.standard_normal((2, H, S, D)).astype(np.float32)
    v = rng.standard_normal((2, H, S, D)).astype(np.float32)
    offset = past if causal else None
    starts = np.array([0, 150])
    want = attend_loop_reference(q, k, v, offset, starts)
    assert_close(attend(q, k, v, offset, starts), want, 1e-5, "attend (blocked)")


def test_kv_cache_is_preallocated_and_resettable():
    cache = KVCache(n_layer=2, batch=3, n_head=4, max_len=16, head_dim=8)
    assert cache.keys.shape == (2, 3, 4, 16, 8) and cache.length == 0
    assert cache.batch == 3 and cache.max_len == 16
    cache.length = 5
    cache.truncate(3)  # positions 3 and 4 forgotten; the buffers are untouched
    assert cache.length == 3
    with pytest.raises(ValueError, match="truncate"):
        cache.truncate(4)  # cannot grow
    cache.reset()
    assert cache.length == 0
    half = KVCache(n_layer=1, batch=2, n_head=1, max_len=4, head_dim=2, dtype="float16")
    assert half.keys.dtype == np.float16 and half.keep_rows([1]).values.dtype == np.float16


@pytest.mark.reference
def test_blocks_match_torch_functions():
    torch = pytest.importorskip("torch", reason="torch is the reference for this test")
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 5, 24)).astype(np.float32)
    w = (1 + 0.1 * rng.standard_normal(24)).astype(np.float32)
    b = (0.1 * rng.standard_normal(24)).astype(np.float32)
    ref_ln = torch.nn.functional.layer_norm(torch.from_numpy(x), (24,), torch.from_numpy(w), torch.from_numpy(b), 1e-5)
    assert_close(layer_norm(x, LayerNorm(w, b)), ref_ln.numpy(), 1e-5, "layer_norm vs torch")
    ref_gelu = torch.nn.GELU()(torch.from_numpy(x)).numpy()
    assert_close(gelu(x.copy()), ref_gelu, 1e-6, "gelu vs torch")


@settings(deadline=None, max_examples=40)
@given(
    B=st.integers(1, 3), H=st.integers(1, 2), T=st.integers(1, 9), extra=st.integers(0, 6),
    causal=st.booleans(), padded=st.booleans(), seed=st.integers(0, 2**31),
    scale=st.sampled_from([0.125, 1.0, 3.0]),
)
def test_masked_softmax_kernel_matches_reference(B, H, T, extra, causal, padded, seed, scale):
    rng = np.random.default_rng(seed)
    S = T + extra
    scores = (4 * rng.standard_normal((B, H, T, S))).astype(np.float32)
    offset = extra if causal else None
    starts = rng.integers(0, S, B) if padded else np.zeros(B, dtype=np.int64)
    want = masked_softmax_reference(scores, scale, offset, starts)
    got = masked_softmax(scores.copy(), np.float32(scale), -1 if offset is None else offset, starts)
    assert_close(got, want, 1e-6, "masked_softmax")
    for b in range(B):
        assert (got[b, ..., : starts[b]] == 0).all()  # padding keys get no weight
    if causal:
        assert (got[..., np.arange(S)[None, :] > (extra + np.arange(T))[:, None]] == 0).all()


def test_float16_conversions_are_numpys_bit_for_bit():
    """half_to_float over all 65 536 bit patterns, float_to_half over random, tiny, huge and
    special float32 values, through a kernel, against NumPy's float16 casts (NaNs as NaNs)."""
    import numba

    from barknp.nn.half import half_to_float, to_cache, widen

    @numba.njit
    def widen_all(bits, out):
        for i in range(bits.shape[0]):
            out[i] = half_to_float(bits[i])

    @numba.njit
    def narrow(x, like, out):
        for i in range(x.shape[0]):
            out[i] = to_cache(x[i], like)

    bits = np.arange(1 << 16, dtype=np.uint16)
    got = np.empty(bits.shape, dtype=np.float32)
    widen_all(bits, got)
    want = bits.view(np.float16).astype(np.float32)
    nan = np.isnan(want)  # the hardware quiets signalling NaNs, NumPy keeps their payload: NaN either way
    np.testing.assert_array_equal(np.isnan(got), nan)
    np.testing.assert_array_equal(got[~nan].view(np.uint32), want[~nan].view(np.uint32))
    rng = np.random.default_rng(0)
    x = np.concatenate([
        rng.standard_normal(4096) * 10.0 ** rng.integers(-9, 6, 4096),  # normals, subnormals, overflow
        [0.0, -0.0, np.inf, -np.inf, 65504.0, 65520.0, 6e-8, 2.98e-8, 1.0 + 2.0**-11, 1.0 + 3 * 2.0**-11],
    ]).astype(np.float32)
    out = np.empty(x.shape, dtype=np.uint16)
    narrow(x, out, out)
    with np.errstate(over="ignore"):  # beyond 65504: infinity, as the hardware rounds too
        np.testing.assert_array_equal(out, x.astype(np.float16).view(np.uint16))
    # the pure-Python forms (what a reader can call) agree
    assert np.isnan(widen(np.uint16(0x7E00))) and widen(np.uint16(0x3C00)) == 1.0
    assert widen(np.float32(2.5)) == 2.5 and widen(np.int8(-3)) == -3.0
    assert to_cache(np.float32(1.0), out) == 0x3C00 and to_cache(np.float32(1.5), got) == 1.5


def test_exp32_within_three_ulps_over_its_whole_range():
    x = np.linspace(-87.3, 88.3, 400_001, dtype=np.float32)
    want = np.exp(x.astype(np.float64))
    rel = np.abs(apply32(exp32, x) - want) / want
    worst = int(rel.argmax())
    assert rel[worst] < 3 * 2.0**-23, f"exp32({x[worst]}): relative error {rel[worst]:.3g}"
    edge = apply32(exp32, np.array([-np.inf, -1e4, -88.0, 0.0], dtype=np.float32))
    assert edge.tolist() == [0.0, 0.0, 0.0, 1.0]  # a masked -inf score gets no weight


def erf_reference(x: np.ndarray) -> np.ndarray:
    return np.vectorize(math.erf, otypes=[np.float64])(x.astype(np.float64))


def sigmoid_reference(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x.astype(np.float64)))


def test_erf32_and_sigmoid32_within_their_bounds_over_the_whole_range():
    x = np.linspace(-10, 10, 400_001, dtype=np.float32)
    err = np.abs(apply32(erf32, x) - erf_reference(x))
    worst = int(err.argmax())
    assert err[worst] < 4e-7, f"erf32({x[worst]}): error {err[worst]:.3g}"
    x = np.linspace(-100, 100, 400_001, dtype=np.float32)
    err = np.abs(apply32(sigmoid32, x) - sigmoid_reference(x))
    worst = int(err.argmax())
    assert err[worst] < 2e-7, f"sigmoid32({x[worst]}): error {err[worst]:.3g}"


_FLOATS = dict(allow_nan=False, allow_infinity=False, width=32)


@settings(deadline=None, max_examples=50)
@given(exp_x=st.lists(st.floats(float(np.float32(-87.3)), float(np.float32(88.3)), **_FLOATS), min_size=1, max_size=40),
       x=st.lists(st.floats(-100.0, 100.0, **_FLOATS), min_size=1, max_size=40))
def test_mathf_functions_match_float64_on_random_inputs(exp_x, x):
    """The four vectorisable functions against NumPy / math in float64, at hypothesis' choice of
    points (the sweeps above cover the ranges evenly; this adds the edges and odd values)."""
    e = np.array(exp_x, dtype=np.float32)
    want = np.exp(e.astype(np.float64))
    rel = np.abs(apply32(exp32, e) - want) / want
    assert rel.max() < 3 * 2.0**-23, f"exp32({e[int(rel.argmax())]}): relative error {rel.max():.3g}"
    v = np.array(x, dtype=np.float32)
    for fn, ref, bound in [(erf32, erf_reference, 4e-7), (sigmoid32, sigmoid_reference, 2e-7),
                           (tanh32, lambda a: np.tanh(a.astype(np.float64)), 5e-7)]:
        err = np.abs(apply32(fn, v) - ref(v))
        worst = int(err.argmax())
        assert err[worst] < bound, f"{fn.__name__}({v[worst]}): error {err[worst]:.3g} > {bound:g}"


def test_tanh32_within_5e7_absolute():
    x = np.linspace(-30, 30, 400_001, dtype=np.float32)
    err = np.abs(apply32(tanh32, x) - np.tanh(x.astype(np.float64)))
    worst = int(err.argmax())
    assert err[worst] < 5e-7, f"tanh32({x[worst]}): error {err[worst]:.3g}"


@settings(deadline=None, max_examples=40)
@given(n=st.integers(1, 9), k=st.integers(1, 70), out=st.integers(1, 41), weights=st.sampled_from(WEIGHTS),
       seed=st.integers(0, 2**31))
def test_rows_matmul_kernel_matches_reference(n, k, out, weights, seed):
    """float32, int8 and float16 weights, every remainder of the kernel's groups of four rows."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((out, k)).astype(np.float32)
    w, scale = quantize_rows(w) if weights == "int8" else (w.astype(weights), None)
    x = rng.standard_normal((n, k)).astype(np.float32)
    # fastmath lets the kernel reorder its sums, so the two differ by float32 rounding, which scales
    # with the absolute terms (at most K * 2**-24 of them for each side, 8.4e-6 at K = 70): a dot
    # product that cancels to ~0 keeps its terms' error
    magnitude = np.abs(x) @ np.abs(w.astype(np.float32) * (1 if scale is None else scale[:, None])).T
    assert_sums_close(rows_matmul(x, w, scale), rows_matmul_reference(x, w, scale), magnitude, 1e-5, "rows_matmul")


@settings(deadline=None, max_examples=25)
@given(
    C=st.sampled_from([16, 32, 48]), H=st.sampled_from([1, 2, 4]), past=st.integers(0, 12),
    weights=st.sampled_from(WEIGHTS), bias=st.booleans(), seed=st.integers(0, 2**31),
)
def test_fused_decode_block_matches_the_general_block(C, H, past, weights, bias, seed):
    _check_decode_block(C, H, past, weights, bias, seed, np.float32, 1e-5)


@settings(deadline=None, max_examples=25)
@given(
    C=st.sampled_from([16, 32, 48]), H=st.sampled_from([1, 2, 4]), past=st.integers(0, 12),
    weights=st.sampled_from(WEIGHTS), seed=st.integers(0, 2**31),
)
def test_fused_decode_block_with_a_float16_cache(C, H, past, weights, seed):
    """The same checks with float16 caches. Each path rounds its own float32 key and value of the
    new position, which can differ by one float16 step (4.9e-4 relative) where the two float32
    values straddle a rounding boundary; that bounds the outputs' difference (2e-3)."""
    _check_decode_block(C, H, past, weights, True, seed, np.float16, 2e-3)


def test_fused_decode_block_rounds_its_cache_writes_as_numpy():
    """The kernel's float16 key and value are its float32 ones rounded by NumPy's rule, bit for bit."""
    from barknp.nn.attention import KVCache
    from barknp.nn.block import read_block
    from barknp.nn.fused import decode_block, kernel_args
    from random_weights import random_gpt_tensors

    C, H, past = 32, 2, 5
    args = kernel_args(read_block(random_gpt_tensors(1, C, 50, 50, seed=4), "layers.0"))
    x = np.random.default_rng(4).standard_normal((1, 1, C)).astype(np.float32)
    wide, half = KVCache(1, 1, H, 8, C // H), KVCache(1, 1, H, 8, C // H, np.float16)
    wide.length = half.length = past  # earlier positions: zeros in both
    y32, y16 = decode_block(x, args, wide, 0), decode_block(x, args, half, 0)
    for name in ("keys", "values"):
        got, want = getattr(half, name)[0, 0, :, past], getattr(wide, name)[0, 0, :, past].astype(np.float16)
        np.testing.assert_array_equal(got.view(np.uint16), want.view(np.uint16), err_msg=name)
    assert_close(y16, y32, 2e-3, "output, float16 cache against float32")


def _check_decode_block(C, H, past, weights, bias, seed, dtype, rtol):
    """decode_block (one compiled call) against its NumPy reference and against block_forward's
    general path, which a batch of two takes (row 0 is the fused call's sequence). Same output,
    same cache writes, caches of ``dtype``; ``weights`` one of WEIGHTS."""
    from barknp.convert.quantize import halve_tensors, quantize_tensors
    from barknp.nn.attention import KVCache
    from barknp.nn.block import block_forward, read_block
    from barknp.nn.fused import decode_block, decode_block_reference, kernel_args
    from random_weights import random_gpt_tensors

    tensors = random_gpt_tensors(1, C, 50, 50, seed=seed % 1000, bias=bias)
    reduce = {"float32": dict, "int8": quantize_tensors, "float16": halve_tensors}[weights]
    block = read_block(reduce(tensors), "layers.0")
    rng = np.random.default_rng(seed)
    history = rng.standard_normal((2, past + 1, C)).astype(np.float32)  # (B, S, C): row 1 is filler
    one, two = KVCache(1, 1, H, past + 3, C // H, dtype), KVCache(1, 2, H, past + 3, C // H, dtype)
    if past:
        block_forward(history[:1, :past], block, H, one)
        block_forward(history[:, :past], block, H, two)
        one.length = two.length = past
    x = history[:, past:]  # (2, 1, C)
    spec = KVCache(1, 1, H, past + 3, C // H, dtype)
    spec.keys[:], spec.values[:], spec.length = one.keys, one.values, past
    got = decode_block(x[:1], kernel_args(block), one, 0)  # (1, 1, C)
    assert_close(got, decode_block_reference(x[:1], block, spec, 0), rtol, "decode_block vs reference")
    assert_close(spec.keys[0, 0, :, : past + 1], one.keys[0, 0, :, : past + 1], rtol, "reference keys")
    assert_close(spec.values[0, 0, :, : past + 1], one.values[0, 0, :, : past + 1], rtol, "reference values")
    want = block_forward(x, block, H, two)[:1]  # the general path (B = 2)
    assert_close(got, want, rtol, "decode_block vs general path")
    n = past + 1
    assert_close(one.keys[0, 0, :, :n], two.keys[0, 0, :, :n], rtol, "cached keys")
    assert_close(one.values[0, 0, :, :n], two.values[0, 0, :, :n], rtol, "cached values")


@settings(deadline=None, max_examples=30)
@given(
    B=st.integers(1, 2), T=st.integers(1, 20), n=st.integers(1, 3), past=st.integers(0, 4),
    causal=st.booleans(), padded=st.booleans(), seed=st.integers(0, 2**31),
)
def test_block_out_rows_are_the_last_rows_of_the_full_block(B, T, n, past, causal, padded, seed):
    """``out_rows`` (a last block that only the last positions' logits need) returns the full
    block's last rows and writes the same keys and values; T > 16 takes the BLAS path."""
    from barknp.nn.block import block_forward, read_block
    from random_weights import random_gpt_tensors

    n = min(n, T)
    C, H = 16, 2
    block = read_block(random_gpt_tensors(1, C, 20, 20, seed=seed % 1000), "layers.0")
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, past + T, C)).astype(np.float32)  # (B, S, C)
    pad = rng.integers(0, past + 1, B) if padded and causal else None
    caches = [KVCache(1, B, H, past + T, C // H) for _ in range(2)]
    outs = []
    for cache, out_rows in zip(caches, [None, n]):
        if past:
            block_forward(x[:, :past], block, H, cache, causal=causal, pad=pad)
            cache.length = past
        outs.append(block_forward(x[:, past:], block, H, cache, causal=causal, pad=pad, out_rows=out_rows))
    full, last = outs
    assert last.shape == (B, n, C)
    assert_close(last, full[:, T - n :], 1e-5, "out_rows vs the full block")
    np.testing.assert_array_equal(caches[1].keys, caches[0].keys)
    np.testing.assert_array_equal(caches[1].values, caches[0].values)
