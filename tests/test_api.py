"""barknp.api: Suno's bark functions as drop-in replacements.

Signatures and defaults are checked against bark 0.1.5's (written out here: the original need not
be installed). Generation runs on the tiny random-weight Bark (conftest.tiny_model), installed as
the default model with ``preload_models(model=...)``, with the semantic stage capped so each run
takes a fraction of a second.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from barknp import api
from barknp.errors import BarkError
from barknp.longform import generate_long

CAP = dict(max_gen_duration_s=0.3)
TEXT = "Hello, my dog is cute."

# bark 0.1.5: bark/api.py and bark/generation.py, parameter names and defaults in order
SUNO_SIGNATURES = {
    "generate_audio": [("text", inspect.Parameter.empty), ("history_prompt", None), ("text_temp", 0.7),
                       ("waveform_temp", 0.7), ("silent", False), ("output_full", False)],
    "text_to_semantic": [("text", inspect.Parameter.empty), ("history_prompt", None), ("temp", 0.7),
                         ("silent", False)],
    "semantic_to_waveform": [("semantic_tokens", inspect.Parameter.empty), ("history_prompt", None), ("temp", 0.7),
                             ("silent", False), ("output_full", False)],
    "save_as_prompt": [("filepath", inspect.Parameter.empty), ("full_generation", inspect.Parameter.empty)],
    "preload_models": [("text_use_gpu", True), ("text_use_small", False), ("coarse_use_gpu", True),
                       ("coarse_use_small", False), ("fine_use_gpu", True), ("fine_use_small", False),
                       ("codec_use_gpu", True), ("force_reload", False)],
}


@pytest.mark.parametrize("name", sorted(SUNO_SIGNATURES))
def test_signatures_match_suno(name):
    params = list(inspect.signature(getattr(api, name)).parameters.values())
    positional = [(p.name, p.default) for p in params if p.kind == p.POSITIONAL_OR_KEYWORD]
    assert positional == SUNO_SIGNATURES[name]
    # anything barknp adds is keyword-only, so positional calls mean what they meant in bark
    assert all(p.kind == p.KEYWORD_ONLY for p in params[len(positional):])


def test_sample_rate():
    assert api.SAMPLE_RATE == 24_000


@pytest.fixture
def fake_compose(monkeypatch):
    """Record which checkpoint each stage would come from, instead of loading suno/bark."""
    calls = []

    def compose(sources, home, offline, progress):
        calls.append(dict(sources))
        return object()

    monkeypatch.setattr(api, "_compose", compose)
    monkeypatch.delenv("SUNO_USE_SMALL_MODELS", raising=False)
    api.DEFAULT_MODELS.clear()
    yield calls
    api.DEFAULT_MODELS.clear()


def test_preload_models_chooses_checkpoints_like_suno(fake_compose, monkeypatch):
    calls = fake_compose
    S, L = api.SMALL_REPO, api.LARGE_REPO
    first = api.preload_models()  # Suno's default: the large models; GPU flags are ignored
    assert calls == [{"semantic": L, "coarse": L, "fine": L}]
    assert api.preload_models(text_use_gpu=False, codec_use_gpu=False) is first and len(calls) == 1  # cached
    api.preload_models(force_reload=True)
    assert len(calls) == 2
    api.preload_models(text_use_small=True, fine_use_small=True)
    assert calls[-1] == {"semantic": S, "coarse": L, "fine": S}
    monkeypatch.setenv("SUNO_USE_SMALL_MODELS", "True")
    api.preload_models()
    assert calls[-1] == {"semantic": S, "coarse": S, "fine": S}
    api.preload_models(model="some/dir")
    assert calls[-1] == {"semantic": "some/dir", "coarse": "some/dir", "fine": "some/dir"}


def test_functions_load_the_default_model_on_first_use(fake_compose):
    assert api.DEFAULT_MODELS.model is None
    model = api.DEFAULT_MODELS.get()
    assert fake_compose == [{"semantic": api.LARGE_REPO, "coarse": api.LARGE_REPO, "fine": api.LARGE_REPO}]
    assert api.DEFAULT_MODELS.get() is model and len(fake_compose) == 1


# --- generation on the tiny model -------------------------------------------------------------

@pytest.fixture(scope="module")
def bark(tmp_path_factory):
    from conftest import one_thread, tiny_model

    _, converted = tiny_model(tmp_path_factory)
    with one_thread():
        model = api.preload_models(model=str(converted), progress=False)
        yield model
    api.DEFAULT_MODELS.clear()


@pytest.fixture
def default(bark):
    api.preload_models(model=bark)  # tests above may have cleared or replaced it
    return bark


@pytest.mark.reference
def test_same_seed_same_audio_and_equal_to_the_object_api(default):
    a = api.generate_audio(TEXT, history_prompt="v2/en_speaker_6", rng=5, silent=True, **CAP)
    b = api.generate_audio(TEXT, history_prompt="v2/en_speaker_6", rng=5, silent=True, **CAP)
    c = api.generate_audio(TEXT, history_prompt="v2/en_speaker_6", rng=6, silent=True, **CAP)
    assert a.dtype == np.float32 and a.ndim == 1 and len(a) > 0
    np.testing.assert_array_equal(a, b)
    assert a.shape != c.shape or not np.array_equal(a, c), "a different seed gave the same audio"
    d = default.generate(TEXT, "v2/en_speaker_6", rng=5, silent=True, **CAP)
    np.testing.assert_array_equal(a, d)


@pytest.mark.reference
def test_two_step_api_equals_generate_audio(default):
    rng = np.random.default_rng(9)
    semantic = api.text_to_semantic(TEXT, "announcer", temp=0.7, silent=True, rng=rng, **CAP)
    assert semantic.ndim == 1 and semantic.dtype == np.int64 and 0 < len(semantic) <= 0.3 * 49.9 + 1
    audio = api.semantic_to_waveform(semantic, "announcer", temp=0.7, silent=True, rng=rng)
    np.testing.assert_array_equal(audio, api.generate_audio(TEXT, "announcer", silent=True, rng=9, **CAP))


@pytest.mark.reference
def test_output_full_round_trips_through_save_as_prompt(default, tmp_path):
    full, audio = api.generate_audio(TEXT, "v2/en_speaker_6", silent=True, output_full=True, rng=1, **CAP)
    assert sorted(full) == ["coarse_prompt", "fine_prompt", "semantic_prompt"]
    assert full["coarse_prompt"].shape[0] == 2 and full["fine_prompt"].shape == (8, len(audio) // 320)
    np.testing.assert_array_equal(full["fine_prompt"][:2], full["coarse_prompt"])
    path = tmp_path / "prompt.npz"
    api.save_as_prompt(str(path), full)
    with np.load(path) as saved:
        for key in full:
            np.testing.assert_array_equal(saved[key], full[key])
    # the saved prompt works as a history_prompt as a path, as a dict, and as an opened np.load
    by_path = api.generate_audio("Again.", str(path), silent=True, rng=2, **CAP)
    by_dict = api.generate_audio("Again.", full, silent=True, rng=2, **CAP)
    with np.load(path) as opened:
        by_npz = api.generate_audio("Again.", opened, silent=True, rng=2, **CAP)
    np.testing.assert_array_equal(by_path, by_dict)
    np.testing.assert_array_equal(by_path, by_npz)
    assert list(tmp_path.iterdir()) == [path]  # written atomically: no temporaries left


@pytest.mark.reference
def test_code_written_for_bark_runs_with_only_the_import_changed(default, tmp_path):
    # Suno's README example, verbatim but for the import (and a seed and cap for the test)
    from barknp.api import SAMPLE_RATE, generate_audio, preload_models

    preload_models(model=default)
    text_prompt = """
         Hello, my name is Suno. And, uh — and I like pizza. [laughs]
    """
    audio_array = generate_audio(text_prompt, rng=0, silent=True, **CAP)
    assert SAMPLE_RATE == 24_000 and audio_array.ndim == 1 and np.isfinite(audio_array).all()


@pytest.mark.reference
def test_long_audio_through_the_api(default):
    text = "The first sentence is here. A second one follows it."
    got = api.generate_long_audio(text, "v2/en_speaker_6", silent=True, max_len=30, gap_s=0.1, rng=4, **CAP)
    want = generate_long(default, text, "v2/en_speaker_6", silent=True, max_len=30, gap_s=0.1, rng=4, **CAP)
    np.testing.assert_array_equal(got, want)


@pytest.mark.reference
def test_bad_input_raises_bark_error(default, tmp_path):
    with pytest.raises(BarkError, match="unknown voice"):
        api.generate_audio(TEXT, history_prompt="no_such_voice", rng=0, **CAP)
    with pytest.raises(BarkError, match="empty"):
        api.text_to_semantic("   ", rng=0)
    with pytest.raises(BarkError, match=r"\.npz"):
        api.save_as_prompt(str(tmp_path / "v.txt"), {"semantic_prompt": np.zeros(3, int),
                                                     "coarse_prompt": np.zeros((2, 4), int),
                                                     "fine_prompt": np.zeros((8, 4), int)})
    with pytest.raises(BarkError, match="dict"):
        api.save_as_prompt(str(tmp_path / "v.npz"), [1, 2, 3])
    assert list(tmp_path.iterdir()) == []
