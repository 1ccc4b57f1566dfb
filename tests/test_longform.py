"""Long-form: split_text's guarantees (property tests) and generate_long against hand-run chunks.

The generation tests use the tiny random-weight Bark (tools/reference.py, converted once per
session by conftest.tiny_model) with the semantic stage capped at a fraction of a second, so each
chunk is a few dozen tokens. Audio must match exactly: generate_long is defined as generate_one per
chunk with one shared generator, and the tests rebuild that by hand.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from barknp.constants import MAX_TEXT_TOKENS, SAMPLE_RATE
from barknp.errors import BarkError, NoSpeechError
from barknp.generation.semantic import normalize_text
from barknp.longform import DEFAULT_MAX_LEN, generate_long, speech_length, split_text

CAP_S = 0.2  # semantic seconds per generation: ~10 tokens, enough to exercise every stage


def assert_reassembles(text, chunks):
    """Chunks are consecutive pieces of the normalized text, separated by one space or nothing."""
    norm = normalize_text(text)
    pos = 0
    for i, chunk in enumerate(chunks):
        assert chunk and chunk == chunk.strip(), f"chunk {i} is empty or padded: {chunk!r}"
        if i and norm[pos : pos + 1] == " ":
            pos += 1
        assert norm.startswith(chunk, pos), f"chunk {i} {chunk!r} does not continue the text at {pos}: {norm[pos:pos + 40]!r}"
        pos += len(chunk)
    assert pos == len(norm), f"text left over after the last chunk: {norm[pos:]!r}"


# --- split_text -------------------------------------------------------------------------------

WORDS = st.sampled_from(
    ["Hello", "world", "Dr.", "Mr.", "e.g.", "U.S.", "3.14", "it's", "a", "supercalifragilisticexpialidocious",
     "[laughs]", "♪", "我们", "今天去公园", "こんにちは", "안녕하세요", "x" * 40, "—", "-", "...", "“quoted”"]
)
PUNCT = st.sampled_from(["", "", "", ".", ",", ";", ":", "!", "?", "。", "！", "？", "，", "、", "…", ".\"", "!)"])
SPACE = st.sampled_from([" ", " ", " ", "  ", "\n", "\t", "", " — ", " - "])
TEXTS = st.lists(st.tuples(WORDS, PUNCT, SPACE), max_size=80).map(lambda parts: "".join(a + b + c for a, b, c in parts))


@settings(max_examples=300, deadline=None)
@given(text=TEXTS, max_len=st.integers(3, 200))
def test_split_reassembles_and_respects_limit(text, max_len):
    chunks = split_text(text, max_len)
    assert_reassembles(text, chunks)
    for chunk in chunks:
        assert speech_length(chunk) <= max_len, f"chunk of {speech_length(chunk)} > {max_len}: {chunk!r}"


@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=400), max_len=st.integers(3, 60))
def test_split_any_unicode_with_plain_length(text, max_len):
    chunks = split_text(text, max_len, length=len)
    assert_reassembles(text, chunks)
    assert all(len(c) <= max_len for c in chunks)


def test_sentences_are_packed_and_kept_whole():
    text = "The cat sat.  The dog ran!\nDid it? Yes."
    assert split_text(text, 30) == ["The cat sat. The dog ran!", "Did it? Yes."]
    assert split_text(text, 1000) == [normalize_text(text)]
    assert split_text(text, 12) == ["The cat sat.", "The dog ran!", "Did it? Yes."]


def test_abbreviations_initials_and_numbers_do_not_end_sentences():
    text = "Dr. Smith met J. R. Ewing at 3.14 p.m. in the U.S. yesterday. They talked, e.g. about oil."
    assert split_text(text, 70) == [
        "Dr. Smith met J. R. Ewing at 3.14 p.m. in the U.S. yesterday.",
        "They talked, e.g. about oil.",
    ]


def test_cjk_sentence_punctuation_splits_without_spaces():
    text = "我们今天去公园。你好吗？很好！"
    assert split_text(text, 24) == ["我们今天去公园。", "你好吗？很好！"]
    # each wide character counts 3: 7 + 1 characters fit 24 units exactly
    assert speech_length("我们今天去公园。") == 24


def test_long_sentence_falls_back_to_clauses_then_words_then_characters():
    clauses = "First part of it, second part of it; third part — and the last part."
    assert split_text(clauses, 30) == ["First part of it,", "second part of it;", "third part —", "and the last part."]
    words = "one two three four five six seven eight nine ten"
    chunks = split_text(words, 15)
    assert chunks == ["one two three", "four five six", "seven eight", "nine ten"]
    assert split_text("a" * 25, 10) == ["a" * 10, "a" * 10, "a" * 5]
    assert split_text("字" * 7, 9) == ["字" * 3, "字" * 3, "字"]


def test_blank_text_and_bad_limits():
    assert split_text(" \n\t ") == []
    with pytest.raises(BarkError, match="max_len"):
        split_text("hello", 2)
    with pytest.raises(BarkError, match="text"):
        split_text(b"bytes")  # type: ignore[arg-type]


def test_default_chunk_fits_the_text_block():
    # A BERT token covers at least one character, and a character is at least one unit, so a
    # chunk of DEFAULT_MAX_LEN units is never cut by the semantic stage's 256-token text limit.
    assert DEFAULT_MAX_LEN <= MAX_TEXT_TOKENS


def test_default_chunks_stay_under_the_token_limit_with_the_real_tokenizer(shared_data):
    from barknp.generation.tokenizer import load_tokenizer

    tok = load_tokenizer(shared_data / "bert-base-multilingual-cased")
    text = ("It was the best of times, it was the worst of times, it was the age of wisdom. " * 6
            + "1,2,3,4,5,6,7,8,9,0 " * 20 + "我们今天去公园，你好吗？" * 10)
    chunks = split_text(text)
    assert len(chunks) > 3
    worst = max(len(tok.encode(c)) for c in chunks)
    assert worst <= MAX_TEXT_TOKENS, f"a chunk has {worst} BERT tokens"


# --- generate_long ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bark(tmp_path_factory):
    from conftest import one_thread, tiny_model

    import barknp

    _, converted = tiny_model(tmp_path_factory)
    with one_thread():
        yield barknp.load(str(converted))


TEXT = "The first sentence is here. A second one follows it. And a third closes."


def _by_hand(model, chunks, voice, seed, gap_s, continue_voice=False):
    rng = np.random.default_rng(seed)
    parts, prompt, fulls = [], voice, []
    for i, chunk in enumerate(chunks):
        full, audio = model.generate(chunk, prompt, rng=rng, silent=True, output_full=True, max_gen_duration_s=CAP_S)
        if i:
            parts.append(np.zeros(int(round(gap_s * SAMPLE_RATE)), np.float32))
        parts.append(audio)
        fulls.append(full)
        if continue_voice:
            prompt = full
    return fulls, np.concatenate(parts)


@pytest.mark.reference
def test_generate_long_is_bark_generate_per_chunk(bark):
    chunks = split_text(TEXT, 30)
    assert len(chunks) == 3
    seen = []
    timings = {}
    full, audio = generate_long(bark, TEXT, voice="v2/en_speaker_6", rng=7, gap_s=0.5, max_len=30, silent=True,
                                output_full=True, timings=timings, max_gen_duration_s=CAP_S,
                                on_chunk=lambda i, n, c: seen.append((i, n, c)))
    assert seen == [(i, 3, c) for i, c in enumerate(chunks)]
    fulls, want = _by_hand(bark, chunks, bark.voice("v2/en_speaker_6"), 7, 0.5)
    np.testing.assert_array_equal(audio, want)
    assert audio.dtype == np.float32
    # the gaps are there, and silent
    first = len(fulls[0]["fine_prompt"][0]) * 320
    assert np.all(audio[first : first + SAMPLE_RATE // 2] == 0)
    for key in ("semantic_prompt", "coarse_prompt", "fine_prompt"):
        np.testing.assert_array_equal(full[key], np.concatenate([f[key] for f in fulls], axis=-1))
    assert set(timings) == {"semantic", "coarse", "fine", "codec"} and all(t >= 0 for t in timings.values())


@pytest.mark.reference
def test_continue_voice_conditions_each_chunk_on_the_previous(bark):
    text = "The first sentence is here. A second one follows it."
    chunks = split_text(text, 30)
    assert len(chunks) == 2
    got = generate_long(bark, text, voice="announcer", continue_voice=True, rng=3, gap_s=0.1, max_len=30,
                        silent=True, max_gen_duration_s=CAP_S)
    _, want = _by_hand(bark, chunks, bark.voice("announcer"), 3, 0.1, continue_voice=True)
    np.testing.assert_array_equal(got, want)
    _, plain = _by_hand(bark, chunks, bark.voice("announcer"), 3, 0.1, continue_voice=False)
    assert got.shape != plain.shape or not np.array_equal(got, plain), "continue_voice changed nothing"


@pytest.mark.reference
def test_single_chunk_equals_bark_generate(bark):
    one = bark.generate("Just one.", "v2/en_speaker_6", rng=11, silent=True, max_gen_duration_s=CAP_S)
    long = generate_long(bark, "Just one.", "v2/en_speaker_6", rng=11, silent=True, max_gen_duration_s=CAP_S)
    np.testing.assert_array_equal(long, one)


@pytest.mark.reference
def test_chunk_without_speech_is_skipped_with_a_warning(bark, monkeypatch):
    original = bark.text_to_semantic

    def fake(text, *a, **k):
        if text.startswith("A second"):
            return np.zeros(0, np.int64)
        return original(text, *a, **k)

    monkeypatch.setattr(bark, "text_to_semantic", fake)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        audio = generate_long(bark, TEXT, rng=1, max_len=30, gap_s=0.0, silent=True, max_gen_duration_s=CAP_S)
    assert any(re.search(r"chunk 2 of 3 produced no speech", str(w.message)) for w in caught)
    a1 = bark.generate("The first sentence is here.", rng=np.random.default_rng(1), silent=True,
                       max_gen_duration_s=CAP_S)
    assert len(audio) > len(a1)  # chunks 1 and 3 made it
    monkeypatch.setattr(bark, "text_to_semantic", lambda *a, **k: np.zeros(0, np.int64))
    with pytest.raises(BarkError, match="no chunk"), pytest.warns(UserWarning, match="produced no speech"):
        generate_long(bark, TEXT, rng=1, max_len=30, silent=True)
    with pytest.raises(NoSpeechError, match="stopped before its first token"):
        generate_long(bark, "Only one chunk.", rng=1, silent=True)
    with pytest.raises(NoSpeechError, match="stopped before its first token"):
        bark.generate("Only one chunk.", rng=1, silent=True)


@pytest.mark.reference
def test_generate_long_rejects_bad_input_before_generating(bark):
    with pytest.raises(BarkError, match="gap_s"):
        generate_long(bark, TEXT, gap_s=-1)
    with pytest.raises(BarkError, match="empty"):
        generate_long(bark, "   ")
    with pytest.raises(BarkError, match="unknown voice"):
        generate_long(bark, TEXT, voice="no_such_voice")
