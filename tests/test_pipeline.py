"""The whole pipeline through the public surface: barknp.load, Bark.generate, save_wav."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile

import barknp
from parity import assert_elementwise_close

@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return barknp.load(tiny_model_dir)


def short_generate(model, rng, voice="v2/en_speaker_6"):
    """All four stages on ~0.4 s of semantic tokens (a random tiny model never says EOS)."""
    rng = np.random.default_rng(rng)
    sem = model.text_to_semantic("Hello there.", voice=voice, max_gen_duration_s=0.4, rng=rng, silent=True)
    coarse = model.semantic_to_coarse(sem, voice=voice, rng=rng, silent=True)
    fine = model.coarse_to_fine(coarse, voice=voice, rng=rng, silent=True)
    return sem, coarse, fine, model.codec.decode(fine)


def test_load_exposes_the_four_stages(model):
    assert model.semantic.config.input_vocab_size == 129_600
    assert model.coarse.config.output_vocab_size == 12_096
    assert model.fine.config.n_codes_total == 8
    assert "v2/en_speaker_6" in model.voices()


def test_stages_chain_with_consistent_shapes(model):
    sem, coarse, fine, audio = short_generate(model, 0)
    assert sem.ndim == 1 and 0 < len(sem) <= 21 and sem.max() < 10_000
    assert coarse.shape[0] == 2 and fine.shape == (8, coarse.shape[1])
    assert coarse.max() < 1024 and fine.max() < 1024
    np.testing.assert_array_equal(fine[:2], coarse)  # the fine stage never rewrites the coarse codebooks
    assert audio.dtype == np.float32 and audio.shape == (fine.shape[1] * 320,)


def test_same_seed_same_audio_and_different_seed_differs(model):
    a = short_generate(model, 7)
    b = short_generate(model, 7)
    c = short_generate(model, 8)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])


def test_generate_output_full_is_a_reusable_voice(model, tmp_path):
    from barknp.generation.voices import save_voice

    full, audio = model.generate("Hi.", voice="announcer", max_gen_duration_s=0.3, rng=3, silent=True,
                                 output_full=True)
    assert set(full) == {"semantic_prompt", "coarse_prompt", "fine_prompt"}
    path = tmp_path / "mine.npz"
    save_voice(str(path), full)
    again = model.text_to_semantic("Again.", voice=str(path), max_gen_duration_s=0.2, rng=1, silent=True)
    assert len(again) > 0
    barknp.save_wav(str(tmp_path / "out.wav"), audio)
    data, rate = soundfile.read(str(tmp_path / "out.wav"))
    assert rate == barknp.SAMPLE_RATE and len(data) == len(audio)


def test_generate_times_and_announces_each_stage_and_equals_the_stages_chained(model):
    import time

    seen, timings = [], {}
    t0 = time.perf_counter()
    audio = model.generate("Hello there.", voice="v2/en_speaker_6", max_gen_duration_s=0.4, rng=5, silent=True,
                           timings=timings, on_stage=seen.append)
    wall = time.perf_counter() - t0
    assert seen == list(barknp.constants.STAGES) and set(timings) == set(seen)
    assert all(t >= 0 for t in timings.values()) and sum(timings.values()) <= wall  # parts of the call's time
    np.testing.assert_array_equal(audio, short_generate(model, 5)[3])  # one generator, drawn in stage order
    with pytest.raises(barknp.BarkError, match="one text only"):
        model.generate(["a", "b"], timings={})


def test_generate_without_speech_raises_no_speech_error(model, monkeypatch):
    monkeypatch.setattr(model, "text_to_semantic", lambda *a, **k: np.zeros(0, np.int64))
    with pytest.raises(barknp.NoSpeechError, match="before its first token"):
        model.generate("Hello there.", rng=1, silent=True)


def test_int8_weights_load_and_generate(tiny_model_dir):
    model = barknp.load(tiny_model_dir, weights="int8")
    from barknp.nn.quant import QLinear

    assert isinstance(model.semantic.lm_head, QLinear) and isinstance(model.coarse.lm_head, QLinear)
    sem, coarse, fine, audio = short_generate(model, 0)
    assert len(audio) == fine.shape[1] * 320


def test_float16_weights_load_and_generate(tiny_model_dir):
    """weights="float16": both causal stages read float16 files (made beside the model), the fine
    stage stays float32, and the pipeline runs through."""
    model = barknp.load(tiny_model_dir, weights="float16")
    assert model.semantic.lm_head.weight.dtype == np.float16 and model.coarse.layers[0].mlp.in_proj.weight.dtype == np.float16
    assert model.fine.layers[0].mlp.in_proj.weight.dtype == np.float32
    sem, coarse, fine, audio = short_generate(model, 0)
    assert len(audio) == fine.shape[1] * 320 and np.isfinite(audio).all()


def test_float16_kv_caches_load_and_generate(tiny_model_dir):
    """int8 weights with float16 caches: both causal stages make float16 caches (the fine stage
    has none), and the pipeline runs through."""
    model = barknp.load(tiny_model_dir, weights="int8", kv_cache="float16")
    assert model.semantic.new_cache().keys.dtype == np.float16 and model.coarse.new_cache().dtype == np.float16
    sem, coarse, fine, audio = short_generate(model, 0)
    assert len(audio) == fine.shape[1] * 320 and np.isfinite(audio).all()


def test_bad_device_and_weights_are_clear_errors(tiny_model_dir, monkeypatch):
    with pytest.raises(barknp.BarkError, match="weights must be"):
        barknp.load(tiny_model_dir, weights="int4")
    from barknp import convert

    with monkeypatch.context() as m:  # refused before any download or conversion starts
        m.setattr(convert, "locate", lambda *a, **k: pytest.fail("load located the model first"))
        with pytest.raises(barknp.BarkError, match="weights must be"):
            barknp.load("suno/bark", weights="int4")
    with pytest.raises(barknp.BarkError, match="kv cache dtype must be one of"):
        barknp.load(tiny_model_dir, kv_cache="bfloat16")
    with pytest.raises(barknp.BarkError, match="float16 KV cache runs on the CPU only"):
        barknp.load(tiny_model_dir, device="cuda", kv_cache="float16")
    with pytest.raises(barknp.BarkError, match="not supported"):
        barknp.load(tiny_model_dir, device="tpu")
    from barknp.cuda import cuda_available

    if not cuda_available():  # asking for a GPU that is not there is an error, never a CPU fall back
        with pytest.raises(barknp.BarkError, match="no CUDA GPU"):
            barknp.load(tiny_model_dir, device="cuda")


def test_generate_a_list_runs_as_a_batch_with_one_generator_per_item(model):
    texts = ["One.", "Two words."]
    batch = model.generate(texts, voice="announcer", max_gen_duration_s=0.3, rng=[4, 5], silent=True)
    assert isinstance(batch, list) and len(batch) == 2
    for text, seed, audio in zip(texts, (4, 5), batch):
        alone = model.generate(text, voice="announcer", max_gen_duration_s=0.3, rng=seed, silent=True)
        assert audio.shape == alone.shape
        assert_elementwise_close(audio, alone, 1e-4 * float(np.abs(alone).max()), 0.0, f"batched item seed {seed}")
