"""Batched generation (barknp/generation/batch.py): every row gives exactly what the single-item
loops give for that item with the same generator, at every stage."""

from __future__ import annotations

import numpy as np
import pytest

import barknp
from barknp.constants import SEMANTIC_VOCAB_SIZE
from barknp.errors import BarkError
from barknp.generation.batch import (
    decode_batch,
    generate_batch,
    generate_coarse_batch,
    generate_fine_batch,
    generate_semantic_batch,
    item_generators,
)
from barknp.generation.coarse import generate_coarse
from barknp.generation.fine import generate_fine
from barknp.generation.semantic import generate_semantic
from parity import assert_elementwise_close

SEED = 11
TEXTS = ["Hi.", "A somewhat longer sentence, with a clause or two in it.", "Medium length text here."]
VOICES = ["v2/en_speaker_6", None, "announcer"]
AUDIO_RTOL = 1e-4  # batched vs one-item codec products: float32 sums in other orders


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return barknp.load(tiny_model_dir)


def alone_generators(n, seed=SEED):
    """What rng=seed gives item i of a batch of n (the documented derivation)."""
    return np.random.default_rng(seed).spawn(n)


def assert_rows_equal(batched, alone, what):
    assert len(batched) == len(alone)
    for i, (b, a) in enumerate(zip(batched, alone)):
        assert b.shape == a.shape, f"{what} item {i}: batched shape {b.shape}, alone {a.shape}"
        bad = np.flatnonzero(b.reshape(-1) != a.reshape(-1))
        assert bad.size == 0, f"{what} item {i}: first difference at flat index {bad[0]}: {b.reshape(-1)[bad[0]]} vs {a.reshape(-1)[bad[0]]}"


def test_pipeline_rows_match_items_generated_alone(model):
    """Three texts, three voices (one None), three durations: tokens equal at every stage, audio
    at each item's own length, equal to decoding it alone within AUDIO_RTOL."""
    durations = [0.3, 1.3, 0.7]  # 15, 65, 35 tokens: 1, 4 and 2 coarse windows
    full = generate_batch(model, TEXTS, VOICES, max_gen_duration_s=durations, rng=SEED, silent=True, output_full=True)
    gens = alone_generators(3)
    for i, ((gen, audio), g) in enumerate(zip(full, gens)):
        alone, alone_audio = model.generate(TEXTS[i], VOICES[i], max_gen_duration_s=durations[i], rng=g, silent=True,
                                            output_full=True)
        for key in ("semantic_prompt", "coarse_prompt", "fine_prompt"):
            assert_rows_equal([gen[key]], [alone[key]], f"{key} of")
        assert audio.shape == (gen["fine_prompt"].shape[1] * 320,)
        scale = np.abs(alone_audio).max()
        worst = int(np.argmax(np.abs(audio - alone_audio)))
        assert np.abs(audio - alone_audio).max() <= AUDIO_RTOL * scale, (
            f"item {i}: audio differs most at sample {worst}: {audio[worst]} vs {alone_audio[worst]} (scale {scale})"
        )
    lengths = [len(gen["semantic_prompt"]) for gen, _ in full]
    assert len(set(lengths)) == 3, f"the rows should finish at different steps, got lengths {lengths}"


def test_batch_size_does_not_change_results(model):
    """Tokens equal exactly; audio within AUDIO_RTOL (the codec batch differs)."""
    kwargs = dict(max_gen_duration_s=0.2, rng=5, silent=True, output_full=True)
    whole = generate_batch(model, TEXTS[:2], VOICES[:2], **kwargs)
    split = generate_batch(model, TEXTS[:2], VOICES[:2], batch_size=1, **kwargs)
    assert len(whole) == len(split) == 2
    for (gen_a, a), (gen_b, b) in zip(whole, split):
        for key in gen_a:
            np.testing.assert_array_equal(gen_a[key], gen_b[key])
        assert_elementwise_close(a, b, AUDIO_RTOL * np.abs(b).max(), 0.0, "one batch against batches of one")


@pytest.mark.parametrize("temp", [0.7, 0])
def test_semantic_rows_match(model, temp):
    durations = [0.2, 0.6, 0.4]
    batched = generate_semantic_batch(model.semantic, model.tokenizer, TEXTS, VOICES, temp=temp, max_gen_duration_s=durations,
                                      rngs=alone_generators(3), silent=True, presets_dir=model.voices_dir)
    alone = [
        generate_semantic(model.semantic, model.tokenizer, t, v, temp=temp, max_gen_duration_s=d, rng=g, silent=True,
                          presets_dir=model.voices_dir)
        for t, v, d, g in zip(TEXTS, VOICES, durations, alone_generators(3))
    ]
    assert_rows_equal(batched, alone, f"semantic temp={temp}")


class EosAfterMultipleOf:
    """The tiny semantic model, except that after a fed token divisible by ``k`` the EOS logit is
    huge, so the row stops (EOS drawn, and its probability past min_eos_p). A row's logits depend
    on its own tokens only, so batched and alone agree."""

    def __init__(self, model, k):
        self.model, self.k = model, k

    def new_cache(self, *args, **kwargs):
        return self.model.new_cache(*args, **kwargs)

    def forward(self, ids, *args, **kwargs):
        logits = self.model.forward(ids, *args, **kwargs).copy()  # (B, 1, V)
        fed = np.asarray(ids)[:, -1]  # (B,)
        logits[fed % self.k == 0, -1, SEMANTIC_VOCAB_SIZE] = 1e4
        return logits


@pytest.mark.parametrize("min_eos_p", [0.2, None])
def test_semantic_rows_stop_on_their_own_eos(model, min_eos_p):
    scripted = EosAfterMultipleOf(model.semantic, 7)
    texts = TEXTS + ["One more."]
    batched = generate_semantic_batch(scripted, model.tokenizer, texts, None, min_eos_p=min_eos_p,
                                      max_gen_duration_s=3.0, rngs=alone_generators(4), silent=True)
    alone = [generate_semantic(scripted, model.tokenizer, t, None, min_eos_p=min_eos_p, max_gen_duration_s=3.0, rng=g,
                               silent=True) for t, g in zip(texts, alone_generators(4))]
    assert_rows_equal(batched, alone, "semantic with EOS")
    for i, tokens in enumerate(batched):
        assert len(tokens) < 150, f"item {i} ran to the duration limit ({len(tokens)} tokens); EOS never fired"
        assert len(tokens) > 0 and tokens[-1] % 7 == 0, f"item {i} did not stop right after a multiple of 7"
    assert len({len(t) for t in batched}) > 1, "every row stopped at the same step; the test shows nothing"


@pytest.mark.parametrize("temp", [0.7, 0])
def test_coarse_rows_match(model, temp):
    """Semantic lengths giving 1, 2 and 4 windows, with and without voice histories."""
    rng = np.random.default_rng(0)
    semantics = [rng.integers(0, SEMANTIC_VOCAB_SIZE, n) for n in (12, 30, 75)]
    voices = ["en_speaker_0", None, "v2/de_speaker_1"]
    kwargs = dict(temp=temp, silent=True, presets_dir=model.voices_dir)
    batched = generate_coarse_batch(model.coarse, semantics, voices, rngs=alone_generators(3), **kwargs)
    alone = [generate_coarse(model.coarse, s, v, rng=g, **kwargs)
             for s, v, g in zip(semantics, voices, alone_generators(3))]
    assert_rows_equal(batched, alone, f"coarse temp={temp}")


@pytest.mark.parametrize("temp, frames", [(0.5, 600), (None, 100)])
def test_fine_rows_match(model, temp, frames):
    """Sampled: 1 window and 2 (600 frames after a voice's 512 history frames). Greedy: one each."""
    rng = np.random.default_rng(1)
    coarses = [rng.integers(0, 1024, (2, n)) for n in (40, frames)]
    voices = [None, "announcer"]
    kwargs = dict(temp=temp, presets_dir=model.voices_dir)
    batched = generate_fine_batch(model.fine, coarses, voices, rngs=alone_generators(2), **kwargs)
    alone = [generate_fine(model.fine, c, v, rng=g, **kwargs) for c, v, g in zip(coarses, voices, alone_generators(2))]
    assert_rows_equal(batched, alone, f"fine temp={temp}")


def test_decode_batch_cuts_each_item_to_its_length(model):
    rng = np.random.default_rng(2)
    codes = [rng.integers(0, 1024, (8, n)) for n in (5, 17, 11, 7)]  # 5: shorter than the first kernel
    batched = decode_batch(model.codec, codes)
    assert len(batched) == len(codes)
    for c, audio in zip(codes, batched):
        alone = model.codec.decode(c)
        assert audio.shape == alone.shape == (c.shape[1] * 320,)
        assert_elementwise_close(audio, alone, AUDIO_RTOL * np.abs(alone).max(), 0.0, f"{c.shape[1]} frames")


def test_item_generators():
    a = [g.random() for g in item_generators(3, 2)]
    b = [g.random() for g in np.random.default_rng(3).spawn(2)]
    assert a == b and a[0] != a[1]
    given = [np.random.default_rng(0), 4]
    gens = item_generators(given, 2)
    assert gens[0] is given[0] and gens[1].random() == np.random.default_rng(4).random()


def test_bad_input(model):
    with pytest.raises(BarkError, match="texts: the batch is empty"):
        generate_batch(model, [])
    with pytest.raises(BarkError, match="texts: expected a list"):
        generate_batch(model, "just a string")
    with pytest.raises(BarkError, match="voice: got 1 entries for a batch of 2"):
        generate_batch(model, ["a", "b"], voice=["announcer"])
    with pytest.raises(BarkError, match="rng: got 3 entries for a batch of 2"):
        generate_batch(model, ["a", "b"], rng=[1, 2, 3])
    with pytest.raises(BarkError, match="max_gen_duration_s: got 1 entries"):
        generate_batch(model, ["a", "b"], max_gen_duration_s=[0.1])
    with pytest.raises(BarkError, match="batch_size"):
        generate_batch(model, ["a", "b"], batch_size=0)
    with pytest.raises(BarkError, match="item 1: text: is empty"):
        generate_batch(model, ["a", "  "], max_gen_duration_s=0.1, rng=0, silent=True)
    with pytest.raises(BarkError, match="item 0: semantic"):
        generate_coarse_batch(model.coarse, [np.array([], dtype=np.int64), np.array([1, 2])])
    with pytest.raises(BarkError, match="same number of codebooks"):
        generate_fine_batch(model.fine, [np.zeros((2, 4), np.int64), np.zeros((3, 4), np.int64)], temp=None)


class FeedRecorder:
    """A causal model that records how many ids each forward call feeds."""

    def __init__(self, model):
        self.model, self.fed = model, []

    def new_cache(self, batch=1):
        return self.model.new_cache(batch)

    def forward(self, ids, *args, **kwargs):
        self.fed.append(ids.shape[1])
        return self.model.forward(ids, *args, **kwargs)


@pytest.mark.parametrize("temp", [0.7, 0])
def test_coarse_rows_without_voices_keep_the_cached_window_start(model, temp):
    """No voices: every row's windows are the same length (no padding), so as in the single loop
    a window that starts with what the cache holds feeds only the new id, also after a row has
    finished (its cache row is dropped); the rows still match their items generated alone."""
    rng = np.random.default_rng(1)
    semantics = [rng.integers(0, SEMANTIC_VOCAB_SIZE, n) for n in (30, 75, 75)]  # 2, 4, 4 windows
    kwargs = dict(temp=temp, silent=True, presets_dir=model.voices_dir)
    recorder = FeedRecorder(model.coarse)
    batched = generate_coarse_batch(recorder, semantics, rngs=alone_generators(3), **kwargs)
    alone = [generate_coarse(model.coarse, s, rng=g, **kwargs) for s, g in zip(semantics, alone_generators(3))]
    assert_rows_equal(batched, alone, f"coarse without voices, temp={temp}")
    windows = recorder.fed[::60]  # each window's first call (60 steps per window)
    assert windows == [257, 1, 1, 1], windows
