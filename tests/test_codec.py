"""The EnCodec decoder end to end, and save_wav.

Goldens (tests/goldens/codec.npz, made by tools/make_codec_goldens.py) hold codes and the audio
transformers' EncodecModel.decode made from them; the weights are redrawn here from the stored seed
with NumPy, so the golden tests need no torch. Live tests (marked ``reference``) rebuild the torch
model and compare at full size.

Tolerance: absolute 1e-5 on audio of order 1 (std about 0.3, peaks about 1.5); measured errors are
about 2e-6 (float32 rounding in another summation order through 16 layers and 250 LSTM steps).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from barknp.config import CodecConfig, config_to_json
from barknp.errors import BarkError
from barknp.models.codec import Codec

import make_codec_goldens as goldens  # tools/, put on sys.path by conftest
from parity import assert_elementwise_close

ATOL = 1e-5
GOLDEN_PATH = os.path.join(os.path.dirname(__file__), "goldens", "codec.npz")


def assert_audio_close(ours, ref, what, atol=ATOL):
    """|ours - ref| <= atol everywhere; prints the max error, and the worst element on failure."""
    ours, ref = np.asarray(ours), np.asarray(ref)
    assert ours.dtype == np.float32, f"{what}: dtype {ours.dtype}"
    error = assert_elementwise_close(ours, ref, atol, 0.0, what)
    print(f"{what}: max abs error {error:.3e}; reference std {ref.std():.3f}")


@pytest.fixture(scope="module")
def golden():
    with np.load(GOLDEN_PATH) as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def codec(golden):
    return Codec.from_tensors(CodecConfig(), goldens.random_codec_tensors(int(golden["seed"])))


# --- goldens (no torch) ----------------------------------------------------------------------


@pytest.mark.parametrize("frames", goldens.LENGTHS)
def test_decode_matches_golden(codec, golden, frames):
    codes = golden[f"codes_T{frames}"]  # (8, T) int16
    ref = golden[f"audio_T{frames}"]
    audio = codec.decode(codes)
    assert audio.shape == (frames * 320,)
    assert_audio_close(audio, ref, f"decode T={frames}")


def test_decode_batch_matches_golden(codec, golden):
    codes, ref = golden["codes_batch"], golden["audio_batch"]
    audio = codec.decode(codes)
    assert audio.shape == (codes.shape[0], codes.shape[2] * 320)
    assert_audio_close(audio, ref, "decode batch")
    # each item alone decodes to its row of the batch
    for b in range(codes.shape[0]):
        assert_audio_close(codec.decode(codes[b]), audio[b], f"batch item {b} alone", atol=1e-6)


@pytest.mark.parametrize("frames", [1, 3, 7, 50])
def test_decode_reference_matches_golden(codec, golden, frames):
    """The plain-NumPy reference path reproduces transformers too (it is what the fast path is held to)."""
    assert_audio_close(codec.decode_reference(golden[f"codes_T{frames}"]), golden[f"audio_T{frames}"],
                       f"decode_reference T={frames}")


@pytest.mark.parametrize("chunk_frames", [1, 2, 5, 24, 1000])
def test_chunking_does_not_change_audio(codec, golden, chunk_frames):
    codes, ref = golden["codes_T123"], golden["audio_T123"]
    assert_audio_close(codec.decode(codes, chunk_frames=chunk_frames), ref, f"chunk_frames={chunk_frames}")


@pytest.mark.parametrize("first_stage_frames,chunk_frames", [(1, 1), (7, 3), (10, 4), (96, 24)])
def test_first_stage_pieces_do_not_change_audio(codec, golden, monkeypatch, first_stage_frames, chunk_frames):
    """The first stage takes FIRST_STAGE_FRAMES at once and the later stages chunk_frames of its
    output at a time; ragged pieces at both levels give the same audio."""
    import barknp.models.codec as codec_module

    monkeypatch.setattr(codec_module, "FIRST_STAGE_FRAMES", first_stage_frames)
    codes, ref = golden["codes_T123"], golden["audio_T123"]
    audio = codec.decode(codes, chunk_frames=chunk_frames, workers=1)
    assert_audio_close(audio, ref, f"first stage {first_stage_frames} frames, chunks {chunk_frames}")
    assert_audio_close(codec.decode(codes, chunk_frames=chunk_frames, workers=3), ref, "and split over 3 workers")


@pytest.mark.parametrize("workers,chunk_frames", [(2, 5), (3, 7), (4, 30)])
def test_workers_split_time_exactly(codec, golden, workers, chunk_frames):
    """Stretches decoded apart rebuild their left context from warm-up frames: same audio."""
    codes, ref = golden["codes_T123"], golden["audio_T123"]
    audio = codec.decode(codes, chunk_frames=chunk_frames, workers=workers)
    assert_audio_close(audio, ref, f"workers={workers} chunk_frames={chunk_frames}")
    # chunk boundaries move, so float32 rounding differs; a wrong warm-up would be off by ~0.1
    assert_audio_close(audio, codec.decode(codes), "split vs unsplit", atol=5e-6)
    batch = codec.decode(golden["codes_batch"], chunk_frames=chunk_frames, workers=workers)
    assert_audio_close(batch, golden["audio_batch"], f"batch, workers={workers}")


def test_default_workers_follow_and_restore_blas_threads(codec, golden):
    from barknp import threads

    before = threads.get_num_threads()
    if before["blas"] is None:
        pytest.skip("NumPy's BLAS library was not found, so its threads cannot be set")
    try:
        threads.set_num_threads(2)
        audio = codec.decode(golden["codes_T123"], chunk_frames=8)  # 2 workers, BLAS at 1 meanwhile
        assert threads.get_num_threads()["blas"] == 2
        assert_audio_close(audio, golden["audio_T123"], "default workers with 2 threads")
    finally:
        threads.set_num_threads(before["blas"])


def test_context_frames_is_the_stacks_reach(codec):
    # transposed convs reach back one input row, the k3 convs 2 samples, the last conv 6 samples:
    # 1 + 2/8 + 1/8 + 2/40 + 1/40 + 2/160 + 1/160 + 2/320 + 6/320 = 1.49 frames -> 2
    assert codec.context_frames == 2


def test_bad_decode_options(codec, golden):
    with pytest.raises(BarkError, match="chunk_frames must be >= 1"):
        codec.decode(golden["codes_T7"], chunk_frames=0)
    with pytest.raises(BarkError, match="workers must be >= 1"):
        codec.decode(golden["codes_T7"], workers=0)


def test_codes_dtypes_accepted(codec, golden):
    codes = golden["codes_T7"]
    base = codec.decode(codes.astype(np.int64))
    for dtype in (np.int16, np.int32, np.uint16, np.uint32):
        np.testing.assert_array_equal(codec.decode(codes.astype(dtype)), base)
    np.testing.assert_array_equal(codec.decode(codes.tolist()), base)


# --- bad input -------------------------------------------------------------------------------


def _one_line_error(codec, codes, match):
    with pytest.raises(BarkError, match=match) as info:
        codec.decode(codes)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "codes,match",
    [
        (np.full((8, 5), 1024), r"in \[0, 1024\).*1024\]"),
        (np.full((8, 5), -1), r"in \[0, 1024\).*\[-1"),
        (np.zeros((7, 5), dtype=np.int64), "8 codebooks, got 7"),
        (np.zeros((2, 9, 5), dtype=np.int64), "8 codebooks, got 9"),
        (np.zeros((8, 0), dtype=np.int64), "empty codes"),
        (np.zeros((0, 8, 5), dtype=np.int64), "empty codes"),
        (np.zeros((8, 5), dtype=np.float32), "integer dtype, got float32"),
        (np.zeros((8, 5), dtype=bool), "integer dtype, got bool"),
        (np.zeros(5, dtype=np.int64), r"shape \(8, T\) or \(B, 8, T\), got shape \(5,\)"),
        (np.zeros((1, 1, 8, 5), dtype=np.int64), r"got shape \(1, 1, 8, 5\)"),
    ],
    ids=["too-high", "negative", "7-codebooks", "9-codebooks", "T=0", "B=0", "float", "bool", "1-d", "4-d"],
)
def test_bad_codes_raise(codec, codes, match):
    _one_line_error(codec, codes, match)


def test_bad_weights_raise():
    tensors = goldens.random_codec_tensors(0)
    del tensors["decoder.layers.6.conv.bias"]
    with pytest.raises(BarkError, match="missing tensor decoder.layers.6.conv.bias"):
        Codec.from_tensors(CodecConfig(), tensors)
    tensors = goldens.random_codec_tensors(0)
    tensors["decoder.layers.0.conv.weight"] = tensors["decoder.layers.0.conv.weight"][:, :, :5]
    with pytest.raises(BarkError, match=r"decoder.layers.0.conv.weight has shape \(512, 128, 5\)"):
        Codec.from_tensors(CodecConfig(), tensors)


def test_load_converted_file(tmp_path, codec, golden):
    from barknp.weights import load_stage, save_stage

    path = str(tmp_path / "codec.safetensors")
    save_stage(path, "codec", config_to_json(CodecConfig()), goldens.random_codec_tensors(int(golden["seed"])))
    loaded = Codec.load(path)
    np.testing.assert_array_equal(loaded.decode(golden["codes_T7"]), codec.decode(golden["codes_T7"]))
    with pytest.raises(BarkError, match="holds stage 'codec', expected 'fine'"):
        load_stage(path, "fine")
    with pytest.raises(BarkError, match="no such stage file"):
        Codec.load(str(tmp_path / "missing.safetensors"))


# --- live reference (torch) -----------------------------------------------------------------


@pytest.fixture(scope="module")
def live(golden):
    pytest.importorskip("torch", reason="the live EnCodec reference needs torch")
    pytest.importorskip("transformers", reason="the live EnCodec reference needs transformers")
    tensors = goldens.random_codec_tensors(7)
    return goldens.reference_model(tensors), Codec.from_tensors(CodecConfig(), tensors)


@pytest.mark.reference
@pytest.mark.parametrize("batch,frames", [(1, 150), (2, 37), (1, 4)])
def test_decode_matches_live_encodec(live, batch, frames):
    model, codec = live
    codes = goldens.random_codes(np.random.default_rng(frames), batch, frames)
    ref = goldens.reference_decode(model, codes)  # EncodecModel.decode(codes[None], [None])
    assert_audio_close(codec.decode(codes), ref, f"live EncodecModel.decode B={batch} T={frames}")


@pytest.mark.reference
def test_identity_shortcuts_match_live_encodec():
    """A decoder without shortcut convolutions (use_conv_shortcut=False) adds each residual
    block's input itself: the packed tail's identity rows, and the reference path's branch."""
    pytest.importorskip("torch", reason="the live EnCodec reference needs torch")
    pytest.importorskip("transformers", reason="the live EnCodec reference needs transformers")
    config = CodecConfig(use_conv_shortcut=False)
    tensors = goldens.random_codec_tensors(11, config)
    assert not any(".shortcut." in name for name in tensors)
    codec = Codec.from_tensors(config, tensors)
    codes = goldens.random_codes(np.random.default_rng(12), 1, 29)
    ref = goldens.reference_decode(goldens.reference_model(tensors, use_conv_shortcut=False), codes)
    assert_audio_close(codec.decode(codes), ref, "no shortcut convs, live EncodecModel")
    assert_audio_close(codec.decode_reference(codes), ref, "no shortcut convs, barknp's reference path")


@pytest.mark.reference
def test_decode_matches_bark_reference_codec():
    """The codec of tools/reference.build_bark, its weight norm folded as the converter folds it."""
    torch = pytest.importorskip("torch", reason="the live reference needs torch")
    from reference import build_bark

    model = build_bark("tiny", seed=3).codec_model
    tensors = {}
    for name, module in model.named_modules():
        if name.startswith("decoder") and isinstance(module, (torch.nn.Conv1d, torch.nn.ConvTranspose1d)):
            tensors[f"{name}.weight"] = module.weight.detach().numpy().copy()  # g * v / ||v||
            tensors[f"{name}.bias"] = module.bias.detach().numpy().copy()
    for name, value in model.state_dict().items():
        if name.startswith("decoder.layers.1.lstm") or name.endswith("codebook.embed"):
            tensors[name] = value.numpy().copy()
    codec = Codec.from_tensors(CodecConfig(), tensors)
    codes = goldens.random_codes(np.random.default_rng(0), 1, 60)
    with torch.no_grad():
        ref = model.decode(torch.from_numpy(codes)[None], [None]).audio_values[:, 0].numpy()
    # this model's audio is much smaller than 1, so hold it to a relative bound of its scale
    scale = float(np.abs(ref).max())
    assert scale > 0
    assert_audio_close(codec.decode(codes), ref, f"bark reference codec (peak {scale:.3g})", atol=1e-5 * scale)


# --- save_wav --------------------------------------------------------------------------------


def _tone(n=2400):
    return (0.5 * np.sin(np.arange(n) * 0.05)).astype(np.float32)


def test_save_wav_pcm16_round_trip(tmp_path):
    import soundfile

    from barknp.audio import save_wav

    audio = _tone()
    audio[10] = 3.0  # clipped to 1 in PCM_16
    path = tmp_path / "a.wav"
    save_wav(path, audio)
    data, rate = soundfile.read(str(path), dtype="float32")
    info = soundfile.info(str(path))
    assert rate == 24000 and info.subtype == "PCM_16" and info.channels == 1
    expected = np.clip(audio, -1, 1)
    assert np.abs(data - expected).max() <= 1.0 / 32768 + 1e-7
    assert list(tmp_path.iterdir()) == [path]  # no temporary left


def test_save_wav_float_round_trip_exact(tmp_path):
    import soundfile

    from barknp.audio import save_wav

    audio = _tone() * 2.5  # FLOAT keeps samples beyond [-1, 1]
    path = tmp_path / "b.wav"
    save_wav(str(path), audio, sample_rate=16000, subtype="FLOAT")
    data, rate = soundfile.read(str(path), dtype="float32")
    assert rate == 16000 and soundfile.info(str(path)).subtype == "FLOAT"
    np.testing.assert_array_equal(data, audio)


def test_save_wav_replaces_existing_file(tmp_path):
    import soundfile

    from barknp.audio import save_wav

    path = tmp_path / "c.wav"
    path.write_bytes(b"old")
    save_wav(path, _tone(100), subtype="FLOAT")
    np.testing.assert_array_equal(soundfile.read(str(path), dtype="float32")[0], _tone(100))


def test_save_wav_failure_leaves_nothing(tmp_path, monkeypatch):
    import soundfile

    from barknp.audio import save_wav

    path = tmp_path / "d.wav"
    path.write_bytes(b"previous")

    def broken(*args, **kwargs):
        raise soundfile.LibsndfileError(0, "simulated failure")

    monkeypatch.setattr(soundfile.SoundFile, "write", broken)  # the write save_wav makes
    with pytest.raises(BarkError, match="cannot write"):
        save_wav(path, _tone())
    assert [p.name for p in tmp_path.iterdir()] == ["d.wav"]  # the temporary is gone
    assert path.read_bytes() == b"previous"  # the old file untouched


def test_save_wav_unwritable_path(tmp_path):
    from barknp.audio import save_wav

    with pytest.raises(BarkError, match="cannot write") as info:
        save_wav(tmp_path / "no" / "such" / "dir" / "x.wav", _tone())
    assert "\n" not in str(info.value)
    with pytest.raises(BarkError, match="is a directory"):
        save_wav(tmp_path, _tone())


@pytest.mark.parametrize(
    "audio,kwargs,match",
    [
        (np.zeros((2, 10), np.float32), {}, r"one-dimensional \(N,\), got shape \(2, 10\)"),
        (np.zeros(0, np.float32), {}, "empty"),
        (np.array([0.0, np.nan], np.float32), {}, "NaN or infinite"),
        (np.array(["a", "b"]), {}, "numeric"),
        (np.zeros(10, np.float32), {"subtype": "PCM_24"}, "subtype must be one of"),
        (np.zeros(10, np.float32), {"sample_rate": 0}, "sample_rate must be a positive integer"),
    ],
    ids=["2-d", "empty", "nan", "strings", "subtype", "rate"],
)
def test_save_wav_bad_input(tmp_path, audio, kwargs, match):
    from barknp.audio import save_wav

    with pytest.raises(BarkError, match=match):
        save_wav(tmp_path / "e.wav", audio, **kwargs)
    assert list(tmp_path.iterdir()) == []
