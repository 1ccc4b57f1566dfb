"""Golden outputs of the EnCodec 24 kHz decoder, from transformers' ``EncodecModel``.

The weights are drawn with NumPy (``random_codec_tensors``), not torch, so a test without torch can
redraw exactly the same weights; only the codes and the reference audio are stored:

    python tools/make_codec_goldens.py            # writes tests/goldens/codec.npz

``random_codec_tensors`` scales every layer by its fan-in so that activations, and the audio, are of
order 1 (with torch's own random init the audio is of order 0.01, which would make an absolute
tolerance meaningless). This module imports torch only inside the functions that need it.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "tests" / "goldens" / "codec.npz"
SEED = 1234
LENGTHS = (1, 2, 3, 7, 50, 123)  # frames; 1..3 exercise the short-input reflect padding
BATCH = (2, 20)  # one batched case: (B, T)


def random_codec_tensors(seed: int, config=None) -> dict[str, np.ndarray]:
    """Decoder weights in the converted names (weight norm folded), drawn from ``seed``.

    Shapes follow ``config`` (a barknp CodecConfig; default: the 24 kHz model). Conv weights are
    N(0, 1/fan_in), transposed convs by the taps that reach each output, LSTM weights as torch
    initialises them, biases N(0, 0.1^2), codebooks N(0, 1/8) so that their sum of 8 has unit scale.
    """
    sys.path.insert(0, str(REPO))
    from barknp.config import CodecConfig
    from barknp.convert.layout import codec_layer_names

    c = config or CodecConfig()
    names = codec_layer_names(c)
    rng = np.random.default_rng(seed)
    t: dict[str, np.ndarray] = {}

    def normal(shape, std):
        return (rng.standard_normal(shape) * std).astype(np.float32)

    def conv(prefix, c_in, c_out, k, gain=1.0):
        t[f"{prefix}.conv.weight"] = normal((c_out, c_in, k), gain / np.sqrt(c_in * k))
        t[f"{prefix}.conv.bias"] = normal((c_out,), 0.1)

    for q in range(8):
        t[f"quantizer.layers.{q}.codebook.embed"] = normal((c.codebook_size, c.codebook_dim), 1 / np.sqrt(8))
    width = 2 ** len(c.upsampling_ratios) * c.num_filters
    conv(names.first, c.hidden_size, width, c.kernel_size)
    bound = 1 / np.sqrt(width)
    for n in range(c.num_lstm_layers):
        for kind, cols in (("ih", width), ("hh", width)):
            t[f"{names.lstm}.weight_{kind}_l{n}"] = rng.uniform(-bound, bound, (4 * width, cols)).astype(np.float32)
            t[f"{names.lstm}.bias_{kind}_l{n}"] = rng.uniform(-bound, bound, (4 * width,)).astype(np.float32)
    for ratio, (up, blocks) in zip(c.upsampling_ratios, names.stages):
        k = 2 * ratio
        t[f"{up}.conv.weight"] = normal((width, width // 2, k), 1 / np.sqrt(width * k / ratio))
        t[f"{up}.conv.bias"] = normal((width // 2,), 0.1)
        width //= 2
        for block in blocks:
            hidden = width // c.compress
            conv(f"{block}.block.1", width, hidden, c.residual_kernel_size)
            conv(f"{block}.block.3", hidden, width, 1, gain=0.5)
            if c.use_conv_shortcut:
                conv(f"{block}.shortcut", width, width, 1, gain=0.8)
    conv(names.last, width, c.audio_channels, c.last_kernel_size)
    return t


def reference_model(tensors: dict[str, np.ndarray], **config):
    """A transformers EncodecModel (24 kHz config, changed by ``config``'s EncodecConfig fields)
    holding ``tensors``, weight norm removed."""
    import torch
    from torch.nn.utils import parametrize
    from transformers import EncodecConfig, EncodecModel

    model = EncodecModel(EncodecConfig(**config)).eval()
    for module in model.decoder.modules():
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight")
    state = model.state_dict()
    with torch.no_grad():
        for name, value in tensors.items():
            if name not in state or tuple(state[name].shape) != value.shape:
                raise KeyError(f"{name} {value.shape} does not fit the reference model")
            state[name].copy_(torch.from_numpy(value))
    return model


def reference_decode(model, codes: np.ndarray) -> np.ndarray:
    """codes (B, 8, T) int -> audio (B, 320 T) float32 with ``EncodecModel.decode``."""
    import torch

    with torch.no_grad():
        out = model.decode(torch.from_numpy(codes.astype(np.int64))[None], [None], return_dict=True)
    return out.audio_values[:, 0].numpy()  # (B, 1, L) -> (B, L)


def random_codes(rng: np.random.Generator, batch: int, frames: int) -> np.ndarray:
    """(batch, 8, frames) int64 codes: uniform, but each codebook drifts like real speech codes do."""
    base = rng.integers(0, 1024, (batch, 8, 1))
    steps = rng.integers(-40, 41, (batch, 8, frames)).cumsum(axis=2)
    jumps = rng.random((batch, 8, frames)) < 0.3  # a third of the frames jump anywhere
    codes = np.where(jumps, rng.integers(0, 1024, (batch, 8, frames)), base + steps)
    return np.mod(codes, 1024).astype(np.int64)


def make(seed: int = SEED) -> dict[str, np.ndarray]:
    model = reference_model(random_codec_tensors(seed))
    rng = np.random.default_rng(seed + 1)
    golden = {"seed": np.array(seed)}
    for frames in LENGTHS:
        codes = random_codes(rng, 1, frames)[0]  # (8, T)
        golden[f"codes_T{frames}"] = codes.astype(np.int16)
        golden[f"audio_T{frames}"] = reference_decode(model, codes[None])[0]
    B, frames = BATCH
    codes = random_codes(rng, B, frames)
    golden["codes_batch"] = codes.astype(np.int16)
    golden["audio_batch"] = reference_decode(model, codes)
    return golden


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--out", default=str(GOLDEN))
    args = ap.parse_args(argv)
    golden = make(args.seed)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    tmp = args.out + ".tmp"
    with open(tmp, "wb") as f:
        np.savez_compressed(f, **golden)
    os.replace(tmp, args.out)
    for name, value in golden.items():
        if name.startswith("audio"):
            print(f"{name}: shape {value.shape} std {value.std():.3f} max |x| {np.abs(value).max():.3f}")
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes)")


if __name__ == "__main__":
    main()
