"""Voice prompts: names, paths, dicts, validation of Suno's 272 files, atomic saving."""

import os
from pathlib import Path

import numpy as np
import pytest

from barknp.errors import BarkError
from barknp.generation.voices import PRESET_NAMES, list_voices, load_voice, save_voice

VOICES = Path(__file__).resolve().parents[2] / "shared" / "data" / "bark-voices"


def need_voices():
    if not (VOICES / "announcer.npz").is_file():
        pytest.skip(f"Suno's voice prompts not found at {VOICES}")


def good_voice(t=10):
    rng = np.random.default_rng(0)
    return {
        "semantic_prompt": rng.integers(0, 10_000, t),
        "coarse_prompt": rng.integers(0, 1024, (2, 3 * t // 2)),
        "fine_prompt": rng.integers(0, 1024, (8, 3 * t // 2)),
    }


def test_all_suno_voices_load_and_validate():
    need_voices()
    paths = sorted(VOICES.rglob("*.npz"))
    assert len(paths) >= 261  # announcer + 13 languages x 10 speakers x (v1, v2)
    for p in paths:
        v = load_voice(str(p))
        assert set(v) == {"semantic_prompt", "coarse_prompt", "fine_prompt"}, p
        for k, a in v.items():
            assert a.dtype == np.int64, (p, k)
        raw = np.load(p)
        for k in v:
            assert np.array_equal(v[k], raw[k]), (p, k)
        assert v["coarse_prompt"].shape[0] == 2 and v["fine_prompt"].shape[0] == 8


def test_every_preset_name_resolves_in_the_presets_folder():
    need_voices()
    names = list_voices(VOICES)
    assert PRESET_NAMES <= set(names), sorted(PRESET_NAMES - set(names))[:5]
    for name in sorted(PRESET_NAMES):
        v = load_voice(name, presets_dir=VOICES)
        assert np.array_equal(v["semantic_prompt"], np.load(VOICES / f"{name}.npz")["semantic_prompt"])


def test_preset_name_wins_over_a_file_of_that_name(tmp_path, monkeypatch):
    """As in the original: a preset name loads the preset even where the working directory has a
    file of that name; an existing file under another name, or a Path object, is read as a file."""
    presets = tmp_path / "presets"
    (presets / "v2").mkdir(parents=True)
    np.savez(presets / "v2" / "en_speaker_1.npz", **good_voice(10))
    work = tmp_path / "work"
    (work / "v2").mkdir(parents=True)
    (work / "v2" / "en_speaker_1").write_bytes(b"not a voice")
    np.savez(work / "mine.npz", **good_voice(12))
    os.replace(work / "mine.npz", work / "mine")  # a voice file without the .npz suffix
    monkeypatch.chdir(work)
    assert load_voice("v2/en_speaker_1", presets_dir=presets)["semantic_prompt"].shape == (10,)
    assert load_voice("mine", presets_dir=presets)["semantic_prompt"].shape == (12,)
    with pytest.raises(BarkError):  # a Path is a file: this one is no voice
        load_voice(Path("v2/en_speaker_1"), presets_dir=presets)


def test_none_and_dict():
    assert load_voice(None) is None
    v = load_voice(good_voice())
    assert v["fine_prompt"].shape == (8, 15)


def test_unknown_name_lists_valid_names(tmp_path):
    with pytest.raises(BarkError) as e:
        load_voice("en_speaker_11", presets_dir=tmp_path)
    msg = str(e.value)
    assert "en_speaker_11" in msg and "announcer" in msg and "v2/" in msg and "zh" in msg
    assert "\n" not in msg and len(msg) < 300


def test_preset_name_without_folder_or_file(tmp_path):
    with pytest.raises(BarkError, match="no presets folder"):
        load_voice("v2/en_speaker_1")
    with pytest.raises(BarkError, match="not in"):
        load_voice("v2/en_speaker_1", presets_dir=tmp_path)


def test_missing_npz_path(tmp_path):
    with pytest.raises(BarkError, match="no such file"):
        load_voice(str(tmp_path / "nope.npz"))


def test_not_an_npz(tmp_path):
    p = tmp_path / "bad.npz"
    p.write_bytes(b"not a zip file")
    with pytest.raises(BarkError, match="cannot read"):
        load_voice(str(p))


@pytest.mark.parametrize("key", ["semantic_prompt", "coarse_prompt", "fine_prompt"])
def test_missing_key(tmp_path, key):
    v = good_voice()
    del v[key]
    p = tmp_path / "v.npz"
    np.savez(p, **v)
    with pytest.raises(BarkError, match=key):
        load_voice(str(p))


@pytest.mark.parametrize("key,value,problem", [
    ("semantic_prompt", np.zeros((2, 5), np.int64), "shape"),
    ("semantic_prompt", np.zeros(0, np.int64), "empty"),
    ("semantic_prompt", np.array([1, 10_000]), "outside"),
    ("semantic_prompt", np.array([-1, 3]), "outside"),
    ("semantic_prompt", np.array([1.0, 2.0]), "integers"),
    ("coarse_prompt", np.zeros((3, 15), np.int64), "shape"),
    ("coarse_prompt", np.zeros(15, np.int64), "shape"),
    ("coarse_prompt", np.full((2, 15), 1024), "outside"),
    ("fine_prompt", np.zeros((7, 15), np.int64), "shape"),
    ("fine_prompt", np.full((8, 15), 2000, np.int32), "outside"),
    ("fine_prompt", np.zeros((8, 15), bool), "integers"),
])
def test_bad_arrays(key, value, problem):
    v = good_voice()
    v[key] = value
    with pytest.raises(BarkError) as e:
        load_voice(v)
    assert key in str(e.value) and problem in str(e.value), str(e.value)


def test_save_voice_roundtrip_and_atomic(tmp_path):
    v = good_voice()
    p = tmp_path / "mine.npz"
    save_voice(p, v)
    back = load_voice(str(p))
    for k in v:
        assert np.array_equal(back[k], v[k])
    assert sorted(os.listdir(tmp_path)) == ["mine.npz"], "a temporary file was left behind"
    assert list_voices(tmp_path) == ["mine"]
    assert load_voice("mine", presets_dir=tmp_path)["semantic_prompt"].shape == (10,)


def test_save_voice_rejects_bad_input_and_keeps_old_file(tmp_path):
    p = tmp_path / "mine.npz"
    save_voice(p, good_voice())
    before = p.read_bytes()
    bad = good_voice()
    bad["coarse_prompt"] = bad["coarse_prompt"] + 5000
    with pytest.raises(BarkError):
        save_voice(p, bad)
    with pytest.raises(BarkError, match=".npz"):
        save_voice(tmp_path / "mine.txt", good_voice())
    assert p.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["mine.npz"]
