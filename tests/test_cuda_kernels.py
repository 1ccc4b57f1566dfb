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
blocks, which covers ragged edges and multi-block reductions.

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
from hypothesis import given, settings
from hypothesis import strategies as st

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
    """Element-wise |ours - ref| <= atol + rtol |ref|; on failure name the worst element."""
    ours = np.asarray(ours, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert ours.shape == ref.shape, f"{what}: shape {ours.shape} != reference {ref.shape}"
    assert np.isfinite(ours).all(), f"{what}: non-finite values"
    excess = np.abs(ours - ref) - (atol + rtol * np.abs(ref))
    if ours.size and excess.max() > 0:
        i = np.unravel_index(np.argmax(excess), ours.shape)
        pytest.fail(f"{what}: max abs error {np.abs(ours - ref).max():.3e} > atol {atol} + rtol {rtol}; "
                    f"worst at {i}: ours {ours[i]!r} reference {ref[i]!r}")


def assert_rel(ours, ref, rtol=1e-4, what=""):
    """max |ours - ref| <= rtol * max |ref|, naming the worst element."""
    ours = np.asarray(ours, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert ours.shape == ref.shape, f"{what}: shape {ours.shape} != reference {ref.shape}"
    err = np.abs(ours - ref)
    i = np.unravel_index(int(err.argmax()), err.shape)
    scale = max(float(np.abs(ref).max()), 1e-30)
    assert err[i] <= rtol * scale, (f"{what}: relative error {err[i] / scale:.3g} > {rtol}; worst at {i}: "
                                    f"ours {ours[i]!r} reference {ref[i]!r}")


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


@pytest.fixture(scope="module")
def dev():
    from barknp.cuda.kernels import TINY, Device

    if IN_SIMULATOR:
        _thread_safe_simulator_shared_arrays()
    return Device(TINY)


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


# --- kernels ----------------------------------------------------------------------------------


@here
@HYP
@given(M=st.integers(1, 11), K=st.integers(1, 13), N=st.integers(1, 11), bias=st.booleans(),
       act=st.sampled_from(["none", "gelu", "residual"]), seed=st.integers(0, 2**16))
def test_linear(dev, M, K, N, bias, act, seed):
    """M <= 3 runs the small-batch kernel (gemv), larger M the tiled one."""
    from barknp.nn.ops import Linear, gelu_reference, linear

    rng = np.random.default_rng(seed)
    x, w = rand(rng, M, K), rand(rng, N, K)
    b = rand(rng, N) if bias else None
    res = rand(rng, M, N)
    ref = linear(x, Linear(w, b))
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
    from barknp.nn.ops import LayerNorm, layer_norm

    rng = np.random.default_rng(seed)
    x = rand(rng, R, 3, C) + 2.0  # an offset mean exercises the centring
    w, b = rand(rng, C), (rand(rng, C) if bias else None)
    d_x = dev.upload(x)
    rows = d_x[:, 1] if strided else d_x.reshape(R * 3, C)  # row-strided view, as last_only uses
    ref_in = x[:, 1] if strided else x.reshape(R * 3, C)
    out = dev.layer_norm(rows, dev.upload(w), None if b is None else dev.upload(b)).copy_to_host()
    assert_close(out, layer_norm(ref_in, LayerNorm(w, b)), what=f"layer_norm R={R} C={C}")


@here
@HYP
@given(R=st.integers(1, 4), S=st.integers(1, 21), seed=st.integers(0, 2**16))
def test_softmax(dev, R, S, seed):
    from barknp.nn.ops import softmax

    x = rand(np.random.default_rng(seed), R, S, scale=4.0)
    assert_close(dev.softmax(dev.upload(x)).copy_to_host(), softmax(x), what="softmax")


@here
@HYP
@given(B=st.integers(1, 2), H=st.integers(1, 2), D=st.integers(1, 5), T=st.integers(1, 5),
       past=st.integers(0, 4), causal=st.booleans(), seed=st.integers(0, 2**16))
def test_attention_with_cache(dev, B, H, D, T, past, causal, seed):
    """Prefill (T > 1) and decode (T = 1) against ``attend``, keys/values written into a cache."""
    from barknp.nn.attention import attend, merge_heads, split_heads

    rng = np.random.default_rng(seed)
    C = H * D
    S = past + T + 2  # room left over in the cache, never read
    qkv = rand(rng, B, T, 3 * C)
    keys, values = rand(rng, B, H, S, D), rand(rng, B, H, S, D)  # positions < past: the history
    d_keys, d_values = dev.upload(keys), dev.upload(values)
    d_qkv = dev.upload(qkv.reshape(B * T, 3 * C))
    dev.kv_write(d_qkv, d_keys, d_values, T, past, H)
    out = dev.attention(d_qkv, d_keys, d_values, T, past, causal, H).copy_to_host()
    keys[:, :, past : past + T] = split_heads(qkv[..., C : 2 * C], H)
    values[:, :, past : past + T] = split_heads(qkv[..., 2 * C :], H)
    assert_close(d_keys.copy_to_host()[:, :, : past + T], keys[:, :, : past + T], atol=0, rtol=0, what="kv_write")
    ref = attend(split_heads(qkv[..., :C], H), keys[:, :, : past + T], values[:, :, : past + T],
                 causal_offset=past if causal else None)  # (B, H, T, D)
    assert_close(out.reshape(B, T, C), merge_heads(ref), what=f"attention T={T} past={past} causal={causal}")


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
       pos_start=st.integers(0, 3), seed=st.integers(0, 2**16))
def test_embedding_sum(dev, N, J, C, T, pos_start, seed):
    """Rows summed in index order (idx < 0 skipped), then the position row: exactly as NumPy adds them."""
    rng = np.random.default_rng(seed)
    table, pos = rand(rng, 11, C), rand(rng, 7, C)
    idx = rng.integers(0, 11, size=(N, J)).astype(np.int32)
    idx[:, 1:][rng.random((N, J - 1)) < 0.3] = -1
    ref = table[idx[:, 0]]
    for j in range(1, J):
        ref = ref + np.where(idx[:, j : j + 1] >= 0, table[np.maximum(idx[:, j], 0)], np.float32(0))
    ref = ref + pos[pos_start + np.arange(N) % T]
    out = dev.embedding_sum(dev.upload(table), dev.upload(idx, np.int32), dev.upload(pos), T, pos_start)
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


def tiny_gpt(fine: bool = False, seed: int = 0):
    sys.path.insert(0, str(REPO / "tools"))
    from random_weights import random_gpt_tensors

    from barknp.config import GPTConfig
    from barknp.models.fine import FineGPT
    from barknp.models.gpt import CausalGPT

    vocab_in, vocab_out = (21, 21) if fine else (40, 13)
    config = GPTConfig(num_layers=1, num_heads=2, hidden_size=6, input_vocab_size=vocab_in,
                       output_vocab_size=vocab_out, block_size=600)
    tensors = random_gpt_tensors(1, 6, vocab_in, vocab_out, seed, fine=fine, block_size=600)
    return FineGPT(config, tensors) if fine else CausalGPT(config, tensors, name="semantic")


@here
def test_semantic_merged_context_and_cache(dev):
    """Merged 513+ id prompt, then two cached decode steps; and an uncached batch of 2."""
    from barknp.cuda.models import CUDACausalGPT

    cpu = tiny_gpt()
    gpu = CUDACausalGPT(cpu, dev)
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
