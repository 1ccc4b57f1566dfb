"""The codec's building blocks: each fast kernel against its plain-NumPy reference (hypothesis),
and the references against torch where torch is installed.

Tolerances: float32 kernels against float64-accumulating references, inputs of order 1:
absolute 2e-5 + relative 2e-5 (the fast paths round once per product and sum in another order).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from parity import assert_elementwise_close

from barknp.models.codec import res_tail_columns, res_tail_columns_reference
from barknp.nn.conv import (
    causal_conv1d,
    causal_conv1d_reference,
    causal_padding,
    causal_trim,
    conv1d,
    conv1d_causal_step,
    conv1d_reference,
    conv1d_single_output,
    conv1d_single_output_reference,
    conv_transpose1d,
    conv_transpose1d_causal_step,
    conv_transpose1d_reference,
    elu,
    elu_reference,
    im2col,
    im2col_reference,
    pack_conv1d,
    pack_conv_transpose1d,
    pad1d,
    pad1d_reference,
)
from barknp.nn.lstm import (
    LSTMLayer,
    PackedLSTMLayer,
    lstm,
    lstm_blocks,
    lstm_layer,
    lstm_layer_continue,
    lstm_layer_reference,
    pack_lstm_layer,
)

ATOL = 2e-5
RTOL = 2e-5
HYP = settings(deadline=None, max_examples=40)


def assert_close(ours, ref, atol=ATOL, rtol=RTOL, what=""):
    """parity.assert_elementwise_close at this file's tolerances."""
    assert_elementwise_close(ours, ref, atol, rtol, what)


def rand(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


seeds = st.integers(0, 2**31 - 1)


# --- fast vs NumPy reference ------------------------------------------------------------------


@HYP
@given(seed=seeds, length=st.integers(1, 12), channels=st.integers(1, 3), left=st.integers(0, 8),
       right=st.integers(0, 8), mode=st.sampled_from(["reflect", "constant"]))
def test_pad1d_matches_reference(seed, length, channels, left, right, mode):
    x = rand(np.random.default_rng(seed), length, channels)
    ours, ref = pad1d(x, left, right, mode), pad1d_reference(x, left, right, mode)
    assert ours.shape == (left + length + right, channels)
    np.testing.assert_array_equal(ours, ref)


def test_pad1d_short_input_reads_zeros():
    # EnCodec's rule for an input no longer than the padding: reflect as if zeros followed it
    x = np.array([[1.0], [2.0]], dtype=np.float32)
    np.testing.assert_array_equal(pad1d(x, 3, 0)[:, 0], [0, 0, 2, 1, 2])
    np.testing.assert_array_equal(pad1d_reference(x, 3, 0)[:, 0], [0, 0, 2, 1, 2])


@HYP
@given(seed=seeds, length=st.integers(1, 40), c_in=st.integers(1, 6), c_out=st.integers(1, 6),
       k=st.integers(1, 7), dilation=st.integers(1, 3))
def test_conv1d_matches_reference(seed, length, c_in, c_out, k, dilation):
    rng = np.random.default_rng(seed)
    w, b = rand(rng, c_out, c_in, k), rand(rng, c_out)
    xpad = rand(rng, length + (k - 1) * dilation, c_in)
    ours = conv1d(xpad, pack_conv1d(w, b, dilation))
    assert_close(ours, conv1d_reference(xpad, w, b, 1, dilation), what="conv1d")


@HYP
@given(seed=seeds, length=st.integers(1, 30), c_in=st.integers(1, 5), c_out=st.integers(1, 5),
       k=st.integers(1, 7), dilation=st.integers(1, 2))
def test_causal_conv1d_matches_reference(seed, length, c_in, c_out, k, dilation):
    rng = np.random.default_rng(seed)
    w, b = rand(rng, c_out, c_in, k), rand(rng, c_out)
    x = rand(rng, length, c_in)
    ours = causal_conv1d(x, pack_conv1d(w, b, dilation))
    assert ours.shape == (length, c_out)
    assert_close(ours, causal_conv1d_reference(x, w, b, 1, dilation), what="causal_conv1d")


def test_im2col_blocks_cover_long_inputs(monkeypatch):
    import barknp.nn.conv as conv_module

    monkeypatch.setattr(conv_module, "IM2COL_ROWS", 7)  # several blocks and a ragged last one
    rng = np.random.default_rng(3)
    w, b = rand(rng, 4, 3, 3), rand(rng, 4)
    xpad = rand(rng, 52, 3)
    assert_close(conv1d(xpad, pack_conv1d(w, b)), conv1d_reference(xpad, w, b), what="blocked conv1d")


@HYP
@given(seed=seeds, rows=st.integers(1, 30), c_in=st.integers(1, 9), k=st.integers(1, 7),
       dilation=st.integers(1, 3), t0=st.integers(0, 10), spare=st.integers(0, 3))
def test_im2col_matches_reference(seed, rows, c_in, k, dilation, t0, spare):
    rng = np.random.default_rng(seed)
    n = rows
    xpad = rand(rng, t0 + n + (k - 1) * dilation, c_in)
    cols = np.full((n + spare, k * c_in + 1), np.nan, dtype=np.float32)  # rows past n stay untouched
    ours = im2col(xpad, k, dilation, t0, n, cols)
    assert ours.shape == (n, k * c_in + 1)
    np.testing.assert_array_equal(ours, im2col_reference(xpad, k, dilation, t0, n))  # a copy: exact
    assert np.isnan(cols[n:]).all()


@HYP
@given(seed=seeds, length=st.integers(1, 60), c_in=st.integers(1, 40), k=st.integers(1, 8),
       dilation=st.integers(1, 3))
def test_conv1d_single_output_matches_reference(seed, length, c_in, k, dilation):
    rng = np.random.default_rng(seed)
    w, b = rand(rng, 1, c_in, k), rand(rng, 1)
    conv = pack_conv1d(w, b, dilation)
    xpad = rand(rng, length + conv.receptive, c_in)
    ours = conv1d_single_output(xpad, conv)
    assert ours.shape == (length, 1) and ours.dtype == np.float32
    assert_close(ours, conv1d_single_output_reference(xpad, conv), what="single-output conv")
    assert_close(ours, conv1d_reference(xpad, w, b, 1, dilation), what="single-output conv vs conv1d_reference")
    assert_close(conv1d(xpad, conv), ours, atol=0, rtol=0, what="conv1d dispatches C_out 1 to it")


@HYP
@given(seed=seeds, c_in=st.integers(1, 4), c_out=st.integers(1, 4), k=st.integers(1, 7),
       dilation=st.integers(1, 2), cuts=st.lists(st.integers(1, 9), min_size=1, max_size=5),
       elu_input=st.booleans())
def test_conv1d_causal_step_chunks_equal_whole(seed, c_in, c_out, k, dilation, cuts, elu_input):
    rng = np.random.default_rng(seed)
    w, b = rand(rng, c_out, c_in, k), rand(rng, c_out)
    conv = pack_conv1d(w, b, dilation)
    first = conv.receptive + 1  # the first chunk must be long enough to reflect
    sizes = [first + cuts[0]] + cuts[1:]
    x = rand(rng, sum(sizes), c_in)
    history, outs, t = None, [], 0
    for n in sizes:
        y, history = conv1d_causal_step(x[t : t + n], conv, history, elu_input=elu_input)
        outs.append(y)
        t += n
    whole = causal_conv1d_reference(elu_reference(x) if elu_input else x, w, b, 1, dilation)
    assert_close(np.concatenate(outs), whole, what="chunked causal conv")


@HYP
@given(seed=seeds, length=st.integers(1, 20), c_in=st.integers(1, 5), c_out=st.integers(1, 5),
       stride=st.integers(1, 5), extra=st.integers(0, 6))
def test_conv_transpose1d_matches_reference(seed, length, c_in, c_out, stride, extra):
    rng = np.random.default_rng(seed)
    k = stride + extra  # EnCodec's are 2 * stride; any K >= stride is a valid causal layer
    w, b = rand(rng, c_in, c_out, k), rand(rng, c_out)
    x = rand(rng, length, c_in)
    ours = conv_transpose1d(x, pack_conv_transpose1d(w, b, stride))
    assert ours.shape == ((length - 1) * stride + k, c_out)
    assert_close(ours, conv_transpose1d_reference(x, w, b, stride), what="conv_transpose1d")


@HYP
@given(seed=seeds, c_in=st.integers(1, 4), c_out=st.integers(1, 4), stride=st.integers(1, 5),
       extra=st.integers(0, 6), sizes=st.lists(st.integers(1, 7), min_size=1, max_size=5),
       elu_input=st.booleans())
def test_conv_transpose1d_causal_step_chunks_equal_trimmed_whole(seed, c_in, c_out, stride, extra, sizes, elu_input):
    rng = np.random.default_rng(seed)
    k = stride + extra
    w, b = rand(rng, c_in, c_out, k), rand(rng, c_out)
    conv = pack_conv_transpose1d(w, b, stride)
    x = rand(rng, sum(sizes), c_in)
    history, outs, t = None, [], 0
    for n in sizes:
        y, history = conv_transpose1d_causal_step(x[t : t + n], conv, history, elu_input=elu_input)
        assert y.shape == (n * stride, c_out)
        outs.append(y)
        t += n
    xin = elu_reference(x) if elu_input else x
    whole = causal_trim(conv_transpose1d_reference(xin, w, b, stride), k, stride, 1.0)
    assert_close(np.concatenate(outs), whole, what="chunked transposed conv")


@HYP
@given(seed=seeds, n=st.integers(1, 300), scale=st.sampled_from([1e-6, 1.0, 30.0]))
def test_elu_matches_reference(seed, n, scale):
    x = rand(np.random.default_rng(seed), n, scale=scale)
    assert_close(elu(x), elu_reference(x), atol=2e-7, rtol=1e-6, what="elu")


def test_elu_extremes_and_in_place():
    x = np.array([-1e4, -88.0, -1.0, -1e-30, 0.0, 1e-30, 1.0, 1e4], dtype=np.float32)
    expected = np.array([-1.0, -1.0, np.expm1(-1.0), -1e-30, 0.0, 1e-30, 1.0, 1e4], dtype=np.float32)
    assert_close(elu(x), expected, atol=2e-7, rtol=1e-6, what="elu extremes")
    y = x.copy()
    out = elu(y, out=y)
    assert out is y
    assert_close(y, expected, atol=2e-7, rtol=1e-6, what="elu in place")


@HYP
@given(seed=seeds, rows=st.integers(1, 20), cols=st.integers(1, 40), extra=st.integers(1, 5),
       scale=st.sampled_from([1e-3, 1.0, 30.0]))
def test_elu_strided_and_multidimensional(seed, rows, cols, extra, scale):
    rng = np.random.default_rng(seed)
    x = rand(rng, rows, cols, scale=scale)
    wide = np.full((rows, cols + extra), 7.0, dtype=np.float32)  # out a column block of a wider matrix
    out = elu(x, out=wide[:, :cols])
    assert out.base is wide or out.base is wide.base
    assert_close(wide[:, :cols], elu_reference(x), atol=2e-7, rtol=1e-6, what="elu into a column block")
    assert (wide[:, cols:] == 7.0).all()  # columns beyond the block untouched
    x3 = rand(rng, 2, rows, cols, scale=scale)
    assert_close(elu(x3), elu_reference(x3), atol=2e-7, rtol=1e-6, what="elu 3-d")
    assert_close(elu(x.T), elu_reference(x.T), atol=2e-7, rtol=1e-6, what="elu of a transposed view")


@HYP
@given(seed=seeds, length=st.integers(1, 30), hidden=st.integers(1, 20), width=st.integers(1, 40),
       scale=st.sampled_from([1e-3, 1.0, 30.0]))
def test_res_tail_columns_matches_reference(seed, length, hidden, width, scale):
    rng = np.random.default_rng(seed)
    h, x = rand(rng, length, hidden, scale=scale), rand(rng, length, width)
    ours = res_tail_columns(h, x)
    assert ours.shape == (length, hidden + width + 1) and ours.dtype == np.float32
    assert_close(ours, res_tail_columns_reference(h, x), atol=2e-7, rtol=1e-6, what="residual tail columns")


def random_lstm_layer(rng, n_in, hidden, scale=0.5):
    return LSTMLayer(rand(rng, 4 * hidden, n_in, scale=scale), rand(rng, 4 * hidden, hidden, scale=scale),
                     rand(rng, 4 * hidden, scale=0.3), rand(rng, 4 * hidden, scale=0.3))


@HYP
@given(seed=seeds, steps=st.integers(1, 12), batch=st.integers(1, 3), n_in=st.integers(1, 6),
       hidden=st.integers(1, 6))
def test_lstm_layer_matches_reference(seed, steps, batch, n_in, hidden):
    rng = np.random.default_rng(seed)
    layer = random_lstm_layer(rng, n_in, hidden)
    x = rand(rng, steps, batch, n_in)
    assert_close(lstm_layer(x, layer), lstm_layer_reference(x, layer), what="lstm layer")


@HYP
@given(seed=seeds, steps=st.integers(1, 10), batch=st.integers(1, 3), n_in=st.integers(1, 6),
       hidden=st.integers(1, 9))
def test_lstm_layer_continue_from_state_matches_reference(seed, steps, batch, n_in, hidden):
    rng = np.random.default_rng(seed)
    layer = random_lstm_layer(rng, n_in, hidden)
    x = rand(rng, steps, batch, n_in)
    h0, c0 = rand(rng, batch, hidden, scale=0.5), rand(rng, batch, hidden)
    saved = h0.copy(), c0.copy()
    out, (h, c) = lstm_layer_continue(x, pack_lstm_layer(layer), (h0, c0))
    assert_close(out, lstm_layer_reference(x, layer, (h0, c0)), what="lstm layer from a state")
    assert_close(h, out[-1], atol=0, rtol=0, what="final h is the last output")
    np.testing.assert_array_equal(h0, saved[0])  # the caller's state is not updated in place
    np.testing.assert_array_equal(c0, saved[1])
    np.testing.assert_array_equal(lstm_layer_continue(x, layer, (h0, c0))[0], out)  # packed or not: the same


def test_pack_lstm_layer():
    rng = np.random.default_rng(4)
    layer = random_lstm_layer(rng, 5, 3)
    packed = pack_lstm_layer(layer)
    assert isinstance(packed, PackedLSTMLayer) and pack_lstm_layer(packed) is packed
    assert packed.w_ih_t.shape == (5, 12) and packed.w_ih_t.flags.c_contiguous
    np.testing.assert_array_equal(packed.w_ih_t, layer.w_ih.T)
    np.testing.assert_array_equal(packed.bias, layer.b_ih + layer.b_hh)


def test_lstm_stack_matches_reference():
    rng = np.random.default_rng(5)
    layers = [random_lstm_layer(rng, 8, 8), random_lstm_layer(rng, 8, 8)]
    x = rand(rng, 30, 2, 8)
    assert_close(lstm(x, layers), lstm(x, layers, reference=True), what="lstm stack")


@pytest.mark.parametrize("block_steps", [1, 4, 7, 30, 100])
def test_lstm_blocks_equal_whole(block_steps):
    rng = np.random.default_rng(6)
    layers = [random_lstm_layer(rng, 5, 6), random_lstm_layer(rng, 6, 6)]
    x = rand(rng, 30, 2, 5)
    pieces = list(lstm_blocks(x, layers, block_steps))
    assert [p[0] for p in pieces] == list(range(0, 30, block_steps))
    assert pieces[-1][1] == 30
    assert_close(np.concatenate([p[2] for p in pieces]), lstm(x, layers), atol=1e-6, rtol=1e-6, what="blocks")


def test_causal_padding_rules():
    # stride 1: left K_eff - 1, never extra; stride 2, K 4, length 5: one extra sample completes the last window
    assert causal_padding(10, 7, 1, 1) == (6, 0)
    assert causal_padding(10, 3, 1, 2) == (4, 0)
    assert causal_padding(5, 4, 2, 1) == (2, 1)


# --- NumPy references vs torch ----------------------------------------------------------------


@pytest.mark.reference
@pytest.mark.parametrize("length,left,right", [(1, 6, 0), (3, 6, 0), (6, 6, 0), (7, 6, 0), (20, 2, 3), (2, 1, 4)])
def test_pad1d_reference_matches_encodec(length, left, right):
    torch = pytest.importorskip("torch", reason="the torch reference needs torch")
    from transformers.models.encodec.modeling_encodec import EncodecConv1d

    x = rand(np.random.default_rng(length), length, 3)
    ref = EncodecConv1d._pad1d(torch.from_numpy(x.T[None].copy()), (left, right), mode="reflect")[0].numpy().T
    np.testing.assert_array_equal(pad1d_reference(x, left, right), ref)
    np.testing.assert_array_equal(pad1d(x, left, right), ref)


@pytest.mark.reference
@pytest.mark.parametrize("stride,dilation,k", [(1, 1, 7), (1, 2, 3), (2, 1, 4), (3, 1, 5)])
@pytest.mark.parametrize("length", [1, 2, 5, 17])
def test_causal_conv1d_reference_matches_encodec_conv(stride, dilation, k, length):
    torch = pytest.importorskip("torch", reason="the torch reference needs torch")
    from torch.nn.utils import parametrize
    from transformers import EncodecConfig
    from transformers.models.encodec.modeling_encodec import EncodecConv1d

    rng = np.random.default_rng(k * 100 + length)
    layer = EncodecConv1d(EncodecConfig(), 3, 4, k, stride=stride, dilation=dilation).eval()
    parametrize.remove_parametrizations(layer.conv, "weight")
    w, b = rand(rng, 4, 3, k), rand(rng, 4)
    with torch.no_grad():
        layer.conv.weight.copy_(torch.from_numpy(w))
        layer.conv.bias.copy_(torch.from_numpy(b))
        x = rand(rng, length, 3)
        ref = layer(torch.from_numpy(x.T[None].copy()))[0].numpy().T
    assert_close(causal_conv1d_reference(x, w, b, stride, dilation), ref, what="EncodecConv1d")
    if stride == 1:
        assert_close(causal_conv1d(x, pack_conv1d(w, b, dilation)), ref, what="EncodecConv1d (fast)")


@pytest.mark.reference
def test_conv1d_reference_matches_torch():
    torch = pytest.importorskip("torch", reason="the torch reference needs torch")
    rng = np.random.default_rng(1)
    x, w, b = rand(rng, 25, 5), rand(rng, 6, 5, 4), rand(rng, 6)
    for stride, dilation in [(1, 1), (1, 3), (2, 1), (3, 2)]:
        ref = torch.nn.functional.conv1d(torch.from_numpy(x.T[None].copy()), torch.from_numpy(w),
                                         torch.from_numpy(b), stride=stride, dilation=dilation)[0].numpy().T
        assert_close(conv1d_reference(x, w, b, stride, dilation), ref, what=f"conv1d s{stride} d{dilation}")


@pytest.mark.reference
@pytest.mark.parametrize("stride,k", [(8, 16), (5, 10), (2, 4), (3, 5), (1, 3)])
def test_conv_transpose1d_reference_matches_torch(stride, k):
    torch = pytest.importorskip("torch", reason="the torch reference needs torch")
    rng = np.random.default_rng(stride)
    x, w, b = rand(rng, 9, 5), rand(rng, 5, 3, k), rand(rng, 3)
    ref = torch.nn.functional.conv_transpose1d(torch.from_numpy(x.T[None].copy()), torch.from_numpy(w),
                                               torch.from_numpy(b), stride=stride)[0].numpy().T
    assert_close(conv_transpose1d_reference(x, w, b, stride), ref, what="conv_transpose1d")
    assert_close(conv_transpose1d(x, pack_conv_transpose1d(w, b, stride)), ref, what="conv_transpose1d (fast)")


@pytest.mark.reference
def test_encodec_transposed_conv_trim_matches():
    torch = pytest.importorskip("torch", reason="the torch reference needs torch")
    from torch.nn.utils import parametrize
    from transformers import EncodecConfig
    from transformers.models.encodec.modeling_encodec import EncodecConvTranspose1d

    rng = np.random.default_rng(2)
    layer = EncodecConvTranspose1d(EncodecConfig(), 6, 4, kernel_size=10, stride=5).eval()
    parametrize.remove_parametrizations(layer.conv, "weight")
    w, b = rand(rng, 6, 4, 10), rand(rng, 4)
    x = rand(rng, 11, 6)
    with torch.no_grad():
        layer.conv.weight.copy_(torch.from_numpy(w))
        layer.conv.bias.copy_(torch.from_numpy(b))
        ref = layer(torch.from_numpy(x.T[None].copy()))[0].numpy().T
    assert ref.shape == (55, 4)
    assert_close(causal_trim(conv_transpose1d_reference(x, w, b, 5), 10, 5, 1.0), ref, what="trimmed")


@pytest.mark.reference
def test_elu_reference_matches_torch():
    torch = pytest.importorskip("torch", reason="the torch reference needs torch")
    x = rand(np.random.default_rng(0), 1000, scale=5.0)
    ref = torch.nn.functional.elu(torch.from_numpy(x)).numpy()
    assert_close(elu_reference(x), ref, atol=1e-7, rtol=1e-6, what="elu reference")
    assert_close(elu(x), ref, atol=2e-7, rtol=1e-6, what="elu")


@pytest.mark.reference
def test_lstm_reference_matches_torch():
    torch = pytest.importorskip("torch", reason="the torch reference needs torch")
    torch.manual_seed(0)
    module = torch.nn.LSTM(6, 6, num_layers=2).eval()
    sd = {k: v.numpy() for k, v in module.state_dict().items()}
    layers = [LSTMLayer(sd[f"weight_ih_l{n}"], sd[f"weight_hh_l{n}"], sd[f"bias_ih_l{n}"], sd[f"bias_hh_l{n}"])
              for n in range(2)]
    x = rand(np.random.default_rng(0), 17, 3, 6)
    with torch.no_grad():
        ref = module(torch.from_numpy(x))[0].numpy()
    assert_close(lstm(x, layers, reference=True), ref, what="lstm reference")
    assert_close(lstm(x, layers), ref, what="lstm")
