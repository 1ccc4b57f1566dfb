"""The CUDA path (barknp.cuda): every kernel against the CPU path's NumPy function, and whole tiny
models against the CPU models.

Where the tests run:
  * with a real GPU visible to numba: in this process, on the GPU;
  * otherwise: ``test_simulator_suite`` reruns this file in a child process under numba's CUDA
    simulator (NUMBA_ENABLE_CUDASIM=1 is set for the child only, before it imports numba, so no
    other test's numba is affected), and ``test_no_gpu_raises`` checks the no-GPU error here.
    To see the simulator cases one by one: NUMBA_ENABLE_CUDASIM=1 python -m pytest tests/test_cuda_kernels.py

The simulator runs each GPU thread as a Python thread, so the kernels are built with the tiny
``TINY`` configuration (a few threads per block) and the shapes are small but not multiples of the
blocks, which covers ragged edges and multi-block reductions. Two patches keep the simulator
honest (``_simulator_patches``): its shared arrays are allocated under a lock, and its device arrays
refuse list indices on the host, as a real GPU's do. ``test_batched_generation_on_gpu`` runs on a
real GPU only (the real vocabularies are too wide for the simulator).

Tolerance: float32 kernels against float32/float64 NumPy references with inputs of order 1:
|ours - ref| <= 2e-5 + 2e-5 |ref| element-wise (summation order differs); whole models: 1e-4
relative to the output's scale (a few layers of such differences).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from parity import assert_close as assert_scaled_close
from parity import assert_elementwise_close

from barknp.errors import BarkError

REPO = Path(__file__).resolve().parents[1]
IN_SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
if IN_SIMULATOR:
    # The simulator's syncthreads is a barrier across Python threads; with the default 5 ms GIL
    # switch interval each barrier waits out whole intervals. This is the child process only.
    sys.setswitchinterval(1e-4)


def _real_gpu() -> bool:
    if IN_SIMULATOR:
        return False
    from barknp.cuda import cuda_available

    return cuda_available()


RUN_HERE = IN_SIMULATOR or _real_gpu()
here = pytest.mark.skipif(not RUN_HERE, reason="no GPU here: these cases run in test_simulator_suite's child process")

ATOL = 2e-5
RTOL = 2e-5
HYP = settings(deadline=None, max_examples=6, derandomize=True)


def assert_close(ours, ref, atol=ATOL, rtol=RTOL, what=""):
    """parity.assert_elementwise_close at this file's tolerances."""
    assert_elementwise_close(ours, ref, atol, rtol, what)


def assert_rel(ours, ref, rtol=1e-4, what=""):
    """max |ours - ref| <= rtol * max |ref| (parity.assert_close), naming the worst element."""
    assert_scaled_close(ours, ref, rtol, what)


def _thread_safe_simulator_shared_arrays():
    """Numba's simulator allocates a static ``cuda.shared.array`` the first time any thread of a
    block reaches its line, with an unlocked check-then-insert: two threads arriving together can
    each get their own array, so a block's reduction silently splits (seen here as a flaky
    attention overflow). This puts the same lookup under a lock; the caller is still identified
    as the kernel line, two frames up, as the simulator does."""
    import sys as _sys
    import threading
    import traceback

    from numba.cuda.simulator import kernelapi
    from numba.np import numpy_support

    original = kernelapi.FakeCUDAShared.array
    if getattr(original, "thread_safe", False):
        return
    lock = threading.Lock()

    def array(self, shape, dtype):
        if shape == 0:
            return original(self, shape, dtype)
        if not isinstance(dtype, np.dtype):
            dtype = numpy_support.as_dtype(dtype) if hasattr(dtype, "key") else np.dtype(dtype)
        caller = traceback.extract_stack(_sys._getframe())[-2][0:2]
        with lock:
            res = self._allocations.get(caller)
            if res is None:
                res = self._allocations[caller] = np.empty(shape, dtype)
        return res

    array.thread_safe = True
    kernelapi.FakeCUDAShared.array = array


def _strict_simulator_indexing():
    """Numba's simulator indexes a device array on the host as NumPy does, lists included, while a
    real DeviceNDArray takes ints and slices only. Make the simulator as strict, so that host code
    which passes here (a cache's row copy, say) does not fail on a GPU."""
    from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

    original_get, original_set = FakeCUDAArray.__getitem__, FakeCUDAArray.__setitem__
    if getattr(original_get, "strict", False):
        return

    def check(idx):
        for i in idx if isinstance(idx, tuple) else (idx,):
            if not isinstance(i, (int, np.integer, slice)):
                raise TypeError(f"a device array takes ints and slices only, got {type(i).__name__} (real GPU rule)")

    def getitem(self, idx):
        check(idx)
        return original_get(self, idx)

    def setitem(self, idx, value):
        check(idx)
        return original_set(self, idx, value)

    getitem.strict = True
    FakeCUDAArray.__getitem__, FakeCUDAArray.__setitem__ = getitem, setitem


def _simulator_patches():
    if IN_SIMULATOR:
        _thread_safe_simulator_shared_arrays()
        _strict_simulator_indexing()


@pytest.fixture(scope="module")
def dev():
    from barknp.cuda.kernels import TINY, Device

    _simulator_patches()
    return Device(TINY)


@pytest.fixture(scope="module")
def dev_serial():
    """One thread per block: for whole models over the semantic model's 257+ merged positions,
    where the simulator's cost is its barriers (threads x rows); the reductions themselves are
    covered by the kernel tests under ``TINY``."""
    from barknp.cuda.kernels import SERIAL, Device

    _simulator_patches()
    return Device(SERIAL)


def rand(rng, *shape, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(np.float32)


# --- parent process ---------------------------------------------------------------------------


@pytest.mark.skipif(IN_SIMULATOR, reason="this is the simulator child itself")
def test_simulator_suite():
    """Every case of this file under numba's CUDA simulator, in a child process."""
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", str(Path(__file__))],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    tail = (proc.stdout + proc.stderr)[-6000:]
    assert proc.returncode == 0, f"simulator suite failed:\n{tail}"
    assert " passed" in tail and "failed" not in tail, tail


@pytest.mark.skipif(IN_SIMULATOR or RUN_HERE, reason="a CUDA device (or the simulator) is available here")
def test_no_gpu_raises():
    from barknp.cuda import cuda_available, require_cuda, to_cuda

    assert not cuda_available()
    for call in (require_cuda, lambda: to_cuda(object())):
        with pytest.raises(BarkError) as info:
            call()
        message = str(info.value)
        assert "cuda" in message.lower() and "\n" not in message, message


@pytest.mark.skipif(IN_SIMULATOR or RUN_HERE, reason="a CUDA device (or the simulator) is available here")
@pytest.mark.parametrize("script", ["tools/cuda_parity.py", "benchmarks/bench_cuda.py"])
def test_gpu_scripts_say_why_without_a_gpu(script):
    """The GPU scripts exit 2 with one line on stderr, before building any model."""
    proc = subprocess.run([sys.executable, str(REPO / script), "--size", "small"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "CUDA GPU" in lines[0], (proc.returncode, proc.stderr)


def test_gpu_parity_script_fails_nan_and_shape_mismatch():
    """tools/cuda_parity.py's error measure: a NaN or infinity in the GPU's result, or a result of
    the wrong shape, is an infinite error, so the script cannot report OK for it."""
    sys.path.insert(0, str(REPO / "tools"))
    from cuda_parity import errors

    ref = np.array([1.0, -2.0], dtype=np.float32)
    assert errors(np.array([1.0, -2.2], dtype=np.float32), ref) == pytest.approx((0.2, 0.1), rel=1e-5)
    for bad in (np.array([1.0, np.nan]), np.array([np.inf, -2.0]), np.array([1.0, -2.0, 0.0]), np.ones((2, 1))):
        assert errors(bad, ref) == (np.inf, np.inf), bad


# --- kernels ----------------------------------------------------------------------------------


@here
@HYP
@given(M=st.integers(1, 11), K=st.integers(1, 13), N=st.integers(1, 11), bias=st.booleans(),
       act=st.sampled_from(["none", "gelu", "residual"]), seed=st.integers(0, 2**16))
@example(M=8, K=13, N=11, bias=True, act="gelu", seed=0)  # the tiled kernel with GELU, always
@example(M=5, K=7, N=3, bias=False, act="none", seed=0)  # the tiled kernel without a bias, always
@example(M=2, K=5, N=4, bias=False, act="gelu", seed=0)  # the small-batch kernel, GELU, no bias
def test_linear(dev, M, K, N, bias, act, seed):
    """M <= 3 runs the small-batch kernel (gemv), larger M the tiled one; the reference is the
    plain product x @ w.T (+ b) in NumPy."""
    from barknp.nn.ops import gelu_reference

    rng = np.random.default_rng(seed)
    x, w = rand(rng, M, K), rand(rng, N, K)
    b = rand(rng, N) if bias else None
    res = rand(rng, M, N)
    ref = x @ w.T if b is None else x @ w.T + b  # (M, N)
    if act == "gelu":
        ref = gelu_reference(ref)
    if act == "residual":
        ref = res + ref
    d_res = dev.upload(res)
    out = dev.linear(dev.upload(x), dev.upload(w), None if b is None else dev.upload(b), gelu=act == "gelu",
                     residual=d_res if act == "residual" else None, out=d_res if act == "residual" else None)
    assert_close(out.copy_to_host(), ref, what=f"linear M={M} K={K} N={N} {act}")


@here
@HYP
@given(R=st.integers(1, 4), C=st.integers(1, 19), bias=st.booleans(), strided=st.booleans(),
       seed=st.integers(0, 2**16))
def test_layer_norm(dev, R, C, bias, strided, seed):
    from barknp.nn.ops import LayerNorm, layer_norm_reference

    rng = np.random.default_rng(seed)
    x = rand(rng, R, 3, C) + 2.0  # an offset mean exercises the centring
    w, b = rand(rng, C), (rand(rng, C) if bias else None)
    d_x = dev.upload(x)
    rows = d_x[:, 1] if strided else d_x.reshape(R * 3, C)  # row-strided view, as last_only uses
    ref_in = x[:, 1] if strided else x.reshape(R * 3, C)
    out = dev.layer_norm(rows, dev.upload(w), None if b is None else dev.upload(b)).copy_to_host()
    assert_close(out, layer_norm_reference(ref_in, LayerNorm(w, b)), what=f"layer_norm R={R} C={C}")


@here
@HYP
@given(R=st.integers(1, 4), S=st.integers(1, 21), seed=st.integers(0, 2**16))
def test_softmax(dev, R, S, seed):
    from barknp.generation.sampling import softmax

    x = rand(np.random.default_rng(seed), R, S, scale=4.0)
    assert_close(dev.softmax(dev.upload(x)).copy_to_host(), softmax(x), what="softmax")


@here
@HYP
@given(B=st.integers(1, 3), H=st.integers(1, 2), D=st.integers(1, 5), T=st.integers(1, 5),
       past=st.integers(0, 4), causal=st.booleans(), padded=st.booleans(), seed=st.integers(0, 2**16))
@example(B=3, H=2, D=3, T=5, past=0, causal=True, padded=True, seed=0)  # a padded prefill, always
@example(B=3, H=2, D=3, T=1, past=4, causal=True, padded=True, seed=0)  # a padded decode step, always
def test_attention_with_cache(dev, B, H, D, T, past, causal, padded, seed):
    """Prefill (T > 1) and decode (T = 1) against ``attend_reference``, keys/values written into a cache.

    ``padded``: each row's key_start drawn in [0, past + T], so some queries (or whole rows) see
    no key at all; the reference gives those all-zero probabilities, hence a zero output."""
    from barknp.nn.attention import attend_reference, merge_heads, split_heads

    rng = np.random.default_rng(seed)
    C = H * D
    S = past + T + 2  # room left over in the cache, never read
    qkv = rand(rng, B, T, 3 * C)
    keys, values = rand(rng, B, H, S, D), rand(rng, B, H, S, D)  # positions < past: the history
    d_keys, d_values = dev.upload(keys), dev.upload(values)
    d_qkv = dev.upload(qkv.reshape(B * T, 3 * C))
    dev.kv_write(d_qkv, d_keys, d_values, T, past, H)
    key_start = rng.integers(0, past + T + 1, size=B) if padded else None  # (B,)
    d_start = None if key_start is None else dev.upload(key_start, np.int32)
    out = dev.attention(d_qkv, d_keys, d_values, T, past, causal, H, d_start).copy_to_host()
    keys[:, :, past : past + T] = split_heads(qkv[..., C : 2 * C], H)
    values[:, :, past : past + T] = split_heads(qkv[..., 2 * C :], H)
    assert_close(d_keys.copy_to_host()[:, :, : past + T], keys[:, :, : past + T], atol=0, rtol=0, what="kv_write")
    ref = attend_reference(split_heads(qkv[..., :C], H), keys[:, :, : past + T], values[:, :, : past + T],
                           causal_offset=past if causal else None, key_start=key_start)  # (B, H, T, D)
    assert_close(out.reshape(B, T, C), merge_heads(ref),
                 what=f"attention T={T} past={past} causal={causal} key_start={key_start}")


@here
@HYP
@given(n=st.integers(1, 40), seed=st.integers(0, 2**16))
def test_gelu_and_elu(dev, n, seed):
    from barknp.nn.conv import elu_reference
    from barknp.nn.ops import gelu_reference

    x = rand(np.random.default_rng(seed), n, scale=3.0)
    assert_close(dev.gelu_(dev.upload(x)).copy_to_host(), gelu_reference(x), what="gelu")
    assert_close(dev.elu(dev.upload(x)).copy_to_host(), elu_reference(x), what="elu")
    y = rand(np.random.default_rng(seed + 1), n)
    assert_close(dev.add(dev.upload(x), dev.upload(y)).copy_to_host(), x + y, atol=0, rtol=0, what="add")


@here
@HYP
@given(N=st.integers(1, 9), J=st.integers(1, 4), C=st.integers(1, 7), T=st.integers(1, 3),
       pos_start=st.integers(0, 3), padded=st.booleans(), with_pos=st.booleans(), seed=st.integers(0, 2**16))
@example(N=9, J=2, C=3, T=3, pos_start=1, padded=True, with_pos=True, seed=0)
@example(N=5, J=3, C=2, T=1, pos_start=0, padded=False, with_pos=False, seed=0)  # no position rows, always
def test_embedding_sum(dev, N, J, C, T, pos_start, padded, with_pos, seed):
    """Rows summed in index order (idx < 0 skipped), then the position row: exactly as NumPy adds
    them. ``padded``: per-sequence positions max(pos_start + t - pad[b], 0), as CausalGPT.forward."""
    rng = np.random.default_rng(seed)
    table, pos = rand(rng, 11, C), rand(rng, 7, C)
    idx = rng.integers(0, 11, size=(N, J)).astype(np.int32)
    idx[:, 1:][rng.random((N, J - 1)) < 0.3] = -1
    ref = table[idx[:, 0]]
    for j in range(1, J):
        ref = ref + np.where(idx[:, j : j + 1] >= 0, table[np.maximum(idx[:, j], 0)], np.float32(0))
    positions = pos_start + np.arange(N) % T  # (N,)
    pad = rng.integers(0, T + pos_start + 2, size=-(-N // T)) if padded else None  # (B,), past the end too
    if padded:
        positions = np.maximum(positions - pad[np.arange(N) // T], 0)
    if with_pos:
        ref = ref + pos[positions]
    out = dev.embedding_sum(dev.upload(table), dev.upload(idx, np.int32), dev.upload(pos) if with_pos else None,
                            T, pos_start, None if pad is None else dev.upload(pad, np.int32))
    assert_close(out.copy_to_host(), ref, atol=0, rtol=0, what="embedding_sum")


@here
@HYP
@given(L=st.integers(1, 9), C_in=st.integers(1, 4), C_out=st.integers(1, 5), K=st.sampled_from([1, 3, 7]),
       dilation=st.integers(1, 2), reflect=st.booleans(), elu_input=st.booleans(), residual=st.booleans(),
       seed=st.integers(0, 2**16))
def test_conv1d(dev, L, C_in, C_out, K, dilation, reflect, elu_input, residual, seed):
    """Causal padding in the kernel's index, including inputs shorter than the padding."""
    from barknp.nn.conv import causal_conv1d_reference, elu_reference, pack_conv1d

    rng = np.random.default_rng(seed)
    x, w, b, res = rand(rng, L, C_in), rand(rng, C_out, C_in, K), rand(rng, C_out), rand(rng, L, C_out)
    ref = causal_conv1d_reference(elu_reference(x) if elu_input else x, w, b, 1, dilation,
                                  "reflect" if reflect else "constant")
    if residual:
        ref = res + ref
    out = dev.conv1d(dev.upload(x), dev.upload(pack_conv1d(w, b, dilation).matrix), K, dilation, reflect,
                     elu_input, dev.upload(res) if residual else None)
    assert_close(out.copy_to_host(), ref, what=f"conv1d L={L} K={K} d={dilation} reflect={reflect}")


@here
@HYP
@given(L=st.integers(1, 6), C_in=st.integers(1, 4), C_out=st.integers(1, 4), stride=st.integers(1, 4),
       extra=st.integers(0, 3), elu_input=st.booleans(), seed=st.integers(0, 2**16))
def test_conv_transpose1d(dev, L, C_in, C_out, stride, extra, elu_input, seed):
    from barknp.nn.conv import causal_trim, conv_transpose1d_reference, elu_reference

    rng = np.random.default_rng(seed)
    K = stride + extra
    x, w, b = rand(rng, L, C_in), rand(rng, C_in, C_out, K), rand(rng, C_out)
    ref = causal_trim(conv_transpose1d_reference(elu_reference(x) if elu_input else x, w, b, stride), K, stride)
    out = dev.conv_transpose1d(dev.upload(x), dev.upload(w.transpose(2, 0, 1)), dev.upload(b), stride, elu_input)
    assert_close(out.copy_to_host(), ref, what=f"conv_transpose1d L={L} K={K} stride={stride}")


@here
@HYP
@given(T=st.integers(1, 4), I=st.integers(1, 5), H=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_lstm_layer(dev, T, I, H, seed):
    """The per-step kernel, run over a sequence, against the reference layer."""
    from barknp.nn.lstm import LSTMLayer, lstm_layer_reference

    rng = np.random.default_rng(seed)
    layer = LSTMLayer(rand(rng, 4 * H, I), rand(rng, 4 * H, H), rand(rng, 4 * H), rand(rng, 4 * H))
    x = rand(rng, T, I)
    out = dev.lstm_layer(dev.upload(x), dev.upload(layer.w_ih), dev.upload(layer.w_hh),
                         dev.upload(layer.b_ih + layer.b_hh))
    assert_close(out.copy_to_host(), lstm_layer_reference(x[:, None], layer)[:, 0], what="lstm")


# --- whole models -----------------------------------------------------------------------------


def tiny_gpt(fine: bool = False, seed: int = 0, int8: bool = False, kv_cache: str = "float32", half: bool = False):
    sys.path.insert(0, str(REPO / "tools"))
    from random_weights import random_gpt_tensors

    from barknp.config import GPTConfig
    from barknp.convert.quantize import halve_tensors, quantize_tensors
    from barknp.models.fine import FineGPT
    from barknp.models.gpt import CausalGPT

    vocab_in, vocab_out = (21, 21) if fine else (40, 13)
    config = GPTConfig(num_layers=1, num_heads=2, hidden_size=6, input_vocab_size=vocab_in,
                       output_vocab_size=vocab_out, block_size=600)
    tensors = random_gpt_tensors(1, 6, vocab_in, vocab_out, seed, fine=fine, block_size=600)
    if int8:
        tensors = quantize_tensors(tensors)
    if half:
        tensors = halve_tensors(tensors)
    return FineGPT(config, tensors) if fine else CausalGPT(config, tensors, name="semantic", kv_cache=kv_cache)


@here
def test_semantic_merged_context_and_cache(dev_serial):
    """Merged 513+ id prompt, then two cached decode steps; and an uncached batch of 2."""
    from barknp.cuda.models import CUDACausalGPT

    cpu = tiny_gpt()
    gpu = CUDACausalGPT(cpu, dev_serial)
    rng = np.random.default_rng(1)
    prompt = rng.integers(0, 40, size=(1, 515))
    c_cpu, c_gpu = cpu.new_cache(1), gpu.new_cache(1)
    for step in range(3):
        ids = prompt if step == 0 else rng.integers(0, 40, size=(1, 1))
        ref = cpu.forward(ids, cache=c_cpu, merge_context=step == 0, last_only=True)
        out = gpu.forward(ids, cache=c_gpu, merge_context=step == 0, last_only=True)
        assert_rel(out, ref, what=f"semantic step {step}")
        assert c_gpu.length == c_cpu.length == 259 + step
    ids = rng.integers(0, 40, size=(2, 5))
    assert_rel(gpu.forward(ids), cpu.forward(ids), what="uncached batch")
    assert_rel(gpu.forward(ids, vocab=(3, 9)), cpu.forward(ids)[..., 3:9], what="a slice of the vocabulary")
    with pytest.raises(BarkError, match="vocab must be"):
        gpu.forward(ids, vocab=(9, 3))
    with pytest.raises(BarkError, match="out of range"):
        gpu.forward(np.array([[40]]))
    with pytest.raises(BarkError, match="cache"):
        gpu.forward(ids[:, :1], cache=cpu.new_cache(2))
    with pytest.raises(BarkError, match="merged context"):
        gpu.forward(ids, merge_context=True)


@here
def test_fine_one_codebook(dev):
    from barknp.cuda.models import CUDAFineGPT

    cpu = tiny_gpt(fine=True)
    gpu = CUDAFineGPT(cpu, dev)
    assert gpu.lm_heads[1].shape == (21, 6)
    codes = np.random.default_rng(2).integers(0, 21, size=(1, 7, 8))
    assert_rel(gpu.forward(3, codes), cpu.forward(3, codes), what="fine codebook 3")
    assert_rel(gpu.forward(3, codes, first=4, vocab=(2, 9)), cpu.forward(3, codes)[:, 4:, 2:9],
               what="fine codebook 3, frames from 4, ids 2..8")
    pair = np.concatenate([codes, codes[:, ::-1]])  # (2, 7, 8): a batch keeps its rows' frames on the host
    assert_rel(gpu.forward(2, pair, first=3, vocab=(0, 5)), cpu.forward(2, pair)[:, 3:, :5],
               what="fine codebook 2, batch of 2, frames from 3, ids 0..4")
    with pytest.raises(BarkError, match="first must be"):
        gpu.forward(3, codes, first=7)
    with pytest.raises(BarkError, match="codebook_idx"):
        gpu.forward(0, codes)


@here
def test_codec_few_frames(dev):
    sys.path.insert(0, str(REPO / "tools"))
    from make_codec_goldens import random_codec_tensors

    from barknp.config import CodecConfig
    from barknp.cuda.models import CUDACodec
    from barknp.models.codec import Codec

    config = CodecConfig(hidden_size=4, num_filters=2, upsampling_ratios=(3, 2), codebook_size=16,
                         codebook_dim=4, num_lstm_layers=2)
    cpu = Codec.from_tensors(config, random_codec_tensors(5, config))
    gpu = CUDACodec(cpu, dev)
    rng = np.random.default_rng(3)
    for shape in ((8, 2), (2, 8, 5)):  # 2 frames: shorter than the first conv's padding
        codes = rng.integers(0, 16, size=shape)
        assert_rel(gpu.decode(codes), cpu.decode(codes), what=f"codec {shape}")
    with pytest.raises(BarkError, match="codebooks"):
        gpu.decode(np.zeros((7, 3), dtype=np.int64))


@here
def test_to_cuda_builds_cuda_stages(dev):
    from barknp.cuda import KernelConfig, to_cuda
    from barknp.cuda.kernels import TINY
    from barknp.cuda.models import CUDACausalGPT, CUDACodec, CUDAFineGPT
    from barknp.model import Bark

    sys.path.insert(0, str(REPO / "tools"))
    from make_codec_goldens import random_codec_tensors

    from barknp.config import CodecConfig
    from barknp.models.codec import Codec

    config = CodecConfig(hidden_size=4, num_filters=2, upsampling_ratios=(2,), codebook_size=16, codebook_dim=4)
    tokenizer = object()
    cpu = Bark(tiny_gpt(), tiny_gpt(seed=1), tiny_gpt(fine=True), Codec.from_tensors(config, random_codec_tensors(1, config)),
               tokenizer, voices_dir="voices", path="p")
    model = to_cuda(cpu, TINY)
    assert isinstance(model, Bark) and isinstance(model.semantic, CUDACausalGPT)
    assert isinstance(model.coarse, CUDACausalGPT) and isinstance(model.fine, CUDAFineGPT)
    assert isinstance(model.codec, CUDACodec)
    assert model.tokenizer is tokenizer and model.voices_dir == "voices"
    assert KernelConfig().validate() is not None


@here
def test_causal_padded_batch(dev):
    """A left-padded batch of ragged prompts (pad 0, 2 and 5 of 6 positions): every position's
    logits, uncached and as a cached prefill, then two cached decode steps, then rows 2 and 0 kept
    (``keep_rows``) for one more step; each against the CPU CausalGPT with the same pad (the kept
    rows: replayed on the CPU from their prompts). Queries inside the padding are compared too (the
    CPU gives them all-zero attention). Tolerance: ``assert_rel``'s 1e-4 of the logits' scale."""
    from barknp.cuda.models import CUDACausalGPT

    cpu = tiny_gpt(seed=2)
    gpu = CUDACausalGPT(cpu, dev)
    rng = np.random.default_rng(4)
    pad = np.array([0, 2, 5])
    prompt = rng.integers(0, 40, size=(3, 6))
    out = gpu.forward(prompt, pad=pad)  # (3, 6, 13)
    assert np.isfinite(out).all()
    assert_rel(out, cpu.forward(prompt, pad=pad), what="padded, uncached")
    assert_rel(out[1, 2:], gpu.forward(prompt[1:, 2:])[0], what="padded row 1 against that row alone")
    c_cpu, c_gpu = cpu.new_cache(3, 12), gpu.new_cache(3, 12)
    fed = [prompt] + [rng.integers(0, 40, size=(3, 1)) for _ in range(2)]  # (3, 6), (3, 1), (3, 1)
    for step, ids in enumerate(fed):
        given = pad if step == 0 else None
        ref = cpu.forward(ids, cache=c_cpu, pad=given)
        assert_rel(gpu.forward(ids, cache=c_gpu, pad=given), ref, what=f"padded batch step {step}")
    assert c_gpu.pad.tolist() == [0, 2, 5] and c_gpu.length == c_cpu.length == 8
    keep = [2, 0]
    c_gpu = c_gpu.keep_rows(keep)
    assert c_gpu.pad.tolist() == [5, 0] and c_gpu.length == 8 and c_gpu.batch == 2
    c_cpu = cpu.new_cache(2, 12)
    for step, ids in enumerate(fed):
        cpu.forward(ids[keep], cache=c_cpu, pad=pad[keep] if step == 0 else None)
    ids = rng.integers(0, 40, size=(2, 1))
    assert_rel(gpu.forward(ids, cache=c_gpu, last_only=True), cpu.forward(ids, cache=c_cpu, last_only=True),
               what="rows 2 and 0 kept")
    with pytest.raises(BarkError, match="pad must be"):
        gpu.forward(prompt, pad=[0, 6, 1])
    with pytest.raises(BarkError, match="first call only"):
        gpu.forward(ids, cache=c_gpu, pad=[0, 0])


@here
def test_semantic_merged_context_padded(dev_serial):
    """A merged 513-id prompt left-padded by 3 merged positions (its text and history blocks
    shifted right): every position's logits against the CPU with the same pad. One row, as the
    kernels see nothing of the merging (test_causal_padded_batch covers ragged rows) and the
    simulator's cost grows with the rows' squared length. Tolerance 1e-4 of the logits' scale."""
    from barknp.cuda.models import CUDACausalGPT

    cpu = tiny_gpt(seed=3)
    gpu = CUDACausalGPT(cpu, dev_serial)
    prompt = np.random.default_rng(5).integers(0, 40, size=(1, 513))
    ref = cpu.forward(prompt, merge_context=True, pad=[3])  # (1, 257, 13)
    assert_rel(gpu.forward(prompt, merge_context=True, pad=[3]), ref, what="merged, padded by 3")


@pytest.mark.skipif(IN_SIMULATOR or not RUN_HERE, reason="a real GPU only: the real vocabularies' logits "
                    "(10k-12k wide) take minutes per step under the simulator")
def test_batched_generation_on_gpu(dev):
    """barknp.generation.batch's three stages with CUDA models give the CPU models' tokens:
    semantic rows leaving at different steps (the cache's rows copied), coarse windows left-padded
    (voices with coarse histories of different lengths), fine windows batched. Narrow random
    networks with the real vocabularies; tokens must be equal (logits agree to ~1e-6, so a
    difference means a wrong mask, position or row, not rounding)."""
    from barknp.cuda.models import CUDACausalGPT, CUDAFineGPT
    from barknp.generation.batch import generate_coarse_batch, generate_fine_batch, generate_semantic_batch

    sys.path.insert(0, str(REPO / "tools"))
    from cuda_parity import CharTokenizer
    from random_weights import random_gpt_tensors

    from barknp.config import GPTConfig
    from barknp.models.fine import FineGPT
    from barknp.models.gpt import CausalGPT

    def config(vin, vout):
        return GPTConfig(num_layers=2, num_heads=2, hidden_size=16, input_vocab_size=vin, output_vocab_size=vout)

    semantic = CausalGPT(config(129_600, 10_048), random_gpt_tensors(2, 16, 129_600, 10_048, 7), name="semantic")
    coarse = CausalGPT(config(12_096, 12_096), random_gpt_tensors(2, 16, 12_096, 12_096, 8), name="coarse")
    fine = FineGPT(config(1_056, 1_056), random_gpt_tensors(2, 16, 1_056, 1_056, 9, fine=True))
    rng = np.random.default_rng(6)
    voices = [None] + [{"semantic_prompt": rng.integers(0, 10_000, n),  # 1.5 coarse frames per semantic token
                        "coarse_prompt": rng.integers(0, 1024, (2, 3 * n // 2)),
                        "fine_prompt": rng.integers(0, 1024, (8, 3 * n // 2))} for n in (40, 90)]
    texts = ["Hi.", "A longer text, with a clause.", "Medium text."]
    durations = [0.1, 0.4, 0.25]  # rows leave the semantic batch at different steps

    def run(sem, co, fi):
        s = generate_semantic_batch(sem, CharTokenizer(), texts, voices, max_gen_duration_s=durations, rngs=1,
                                    silent=True)
        c = generate_coarse_batch(co, s, voices, rngs=2, silent=True)
        return s, c, generate_fine_batch(fi, c, voices, rngs=3)

    ours = run(CUDACausalGPT(semantic, dev), CUDACausalGPT(coarse, dev), CUDAFineGPT(fine, dev))
    ref = run(semantic, coarse, fine)
    for stage, a, b in zip(("semantic", "coarse", "fine"), ours, ref):
        for i, (x, y) in enumerate(zip(a, b)):
            assert x.shape == y.shape and np.array_equal(x, y), (
                f"{stage} item {i}: CUDA {x.shape} vs CPU {y.shape}, first difference at "
                f"{np.flatnonzero(x.reshape(-1)[: y.size] != y.reshape(-1)[: x.size])[:1]}")


@here
def test_cache_truncate_and_reset_on_the_device(dev_serial):
    """The coarse loop keeps a cache's leading positions (truncate) and reuses a cache (reset); the
    device cache inherits both from KVCache, and after each the logits are the CPU's."""
    from barknp.cuda.models import CUDACausalGPT

    cpu = tiny_gpt()
    gpu = CUDACausalGPT(cpu, dev_serial)
    rng = np.random.default_rng(3)
    ids, more = rng.integers(0, 40, size=(1, 9)), rng.integers(0, 40, size=(1, 3))
    cache = gpu.new_cache(1)
    gpu.forward(ids, cache=cache)
    cache.truncate(5)
    after = gpu.forward(more, cache=cache, last_only=True)
    assert_rel(after, cpu.forward(np.concatenate([ids[:, :5], more], axis=1), last_only=True), what="after truncate")
    assert cache.length == 8
    cache.reset()
    assert_rel(gpu.forward(more, cache=cache, last_only=True), cpu.forward(more, last_only=True), what="after reset")
    with pytest.raises(BarkError, match="vocab must be"):  # checked before the cache is written
        gpu.forward(more, cache=cache, vocab=(9, 3))
    assert cache.length == 3


def test_cuda_models_refuse_what_runs_on_the_cpu_only():
    """int8 or float16 weights, a float16 cache, a model that is not a CPU one, or an impossible
    kernel configuration: one-line BarkErrors, raised before the device is touched."""
    from barknp.cuda.kernels import KernelConfig
    from barknp.cuda.models import CUDACausalGPT

    for model, match in [(tiny_gpt(int8=True), "int8 and float16 weights run on the CPU only"),
                         (tiny_gpt(half=True), "int8 and float16 weights run on the CPU only"),
                         (tiny_gpt(kv_cache="float16"), "float16 KV cache runs on the CPU only"),
                         (object(), "build from a CPU CausalGPT")]:
        with pytest.raises(BarkError, match=match):
            CUDACausalGPT(model, None)
    for bad, match in [(dict(micro=0), "micro must be >= 1"), (dict(threads=48), "power of two"),
                       (dict(tile_m=256, tile_n=256, micro=4), "threads per block")]:
        with pytest.raises(BarkError, match=match):
            KernelConfig(**bad).validate()
