"""The generation loops' bookkeeping and input checks, driven by small scripted models (no torch).

The scripted models return logits chosen by the test, so every assertion here is about the loop:
prompt layout, stop rules, windows, codebook offsets, random-number use, and bad input.
"""

import warnings

import numpy as np
import pytest

from barknp import constants as K
from barknp.errors import BarkError
from barknp.generation import generate_coarse, generate_fine, generate_semantic


class CharTokenizer:
    """One id per character: enough to drive the semantic stage's text handling."""

    def encode(self, text):
        return [ord(c) % 1000 for c in text]


class ScriptedCausal:
    """Causal-model interface; ``logits_fn(call_index, ids) -> (V,)`` gives the last position's logits."""

    def __init__(self, vocab, logits_fn):
        self.vocab = vocab
        self.logits_fn = logits_fn
        self.calls = []
        self.caches = 0

    def new_cache(self, batch=1):
        self.caches += 1
        return {"length": 0}

    def forward(self, ids, cache=None, merge_context=False, last_only=False, vocab=None):
        ids = np.asarray(ids)
        assert last_only and ids.ndim == 2 and ids.shape[0] == 1
        self.calls.append((ids.copy(), merge_context, cache))
        out = np.asarray(self.logits_fn(len(self.calls) - 1, ids), dtype=np.float32)
        start, stop = vocab or (0, len(out))
        return out[None, None, start:stop]  # (1, 1, V)


def voice(t=40, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "semantic_prompt": rng.integers(0, 10_000, t),
        "coarse_prompt": rng.integers(0, 1024, (2, 3 * t // 2)),
        "fine_prompt": rng.integers(0, 1024, (8, 3 * t // 2)),
    }


def semantic_model(token=7, eos_logit=-50.0):
    def fn(i, ids):
        logits = np.full(10_048, -20.0)
        logits[token] = 10.0
        logits[K.SEMANTIC_PAD_TOKEN] = eos_logit
        return logits
    return ScriptedCausal(10_048, fn)


# --- semantic ---------------------------------------------------------------------------------


def test_semantic_prompt_layout_and_cache_use():
    m = semantic_model()
    v = voice(300)
    out = generate_semantic(m, CharTokenizer(), "  hi\n there ", voice=v, temp=0, max_gen_duration_s=3 / K.SEMANTIC_RATE_HZ - 1e-9, silent=True)
    assert out.tolist() == [7, 7, 7]
    first, merged, cache = m.calls[0]
    assert merged and first.shape == (1, 513)
    text = [ord(c) % 1000 + K.TEXT_ENCODING_OFFSET for c in "hi there"]  # whitespace collapsed
    assert first[0, : len(text)].tolist() == text
    assert np.all(first[0, len(text) : 256] == K.TEXT_PAD_TOKEN)
    assert np.array_equal(first[0, 256:512], v["semantic_prompt"][-256:])
    assert first[0, 512] == K.SEMANTIC_INFER_TOKEN
    for ids, merged, c in m.calls[1:]:
        assert ids.tolist() == [[7]] and not merged and c is cache
    assert m.caches == 1


def test_semantic_history_padding_without_and_with_short_voice():
    m = semantic_model()
    generate_semantic(m, CharTokenizer(), "a", temp=0, max_gen_duration_s=0, silent=True)
    assert np.all(m.calls[0][0][0, 256:512] == K.SEMANTIC_PAD_TOKEN)
    m = semantic_model()
    v = voice(10)
    generate_semantic(m, CharTokenizer(), "a", voice=v, temp=0, max_gen_duration_s=0, silent=True)
    assert np.array_equal(m.calls[0][0][0, 256:266], v["semantic_prompt"])
    assert np.all(m.calls[0][0][0, 266:512] == K.SEMANTIC_PAD_TOKEN)


def test_semantic_stops_at_the_768_cap():
    m = semantic_model()
    out = generate_semantic(m, CharTokenizer(), "a", temp=0, silent=True)
    assert out.shape == (K.MAX_SEMANTIC_STEPS,) and out.dtype == np.int64
    assert len(m.calls) == K.MAX_SEMANTIC_STEPS


def test_semantic_drawn_eos_stops_and_never_appears():
    m = semantic_model(eos_logit=30.0)
    assert generate_semantic(m, CharTokenizer(), "a", temp=0.7, rng=0, silent=True).shape == (0,)
    out = generate_semantic(m, CharTokenizer(), "a", temp=0.7, rng=0, allow_early_stop=False,
                            max_gen_duration_s=0.1, silent=True)
    assert len(out) == 5 and np.all(out == 7)  # EOS is not a candidate without early stop


def test_semantic_min_eos_p_uses_tempered_probs_and_consumes_the_draw():
    # EOS logit 10 - ln 3 beside one token at 10: at temp 1, p(EOS) = 1/4; at temp 0.5, 1/10.
    # The seed's first number is < 0.5, so the draw itself picks token 7, never EOS.
    seed = next(s for s in range(100) if np.random.default_rng(s).random() < 0.5)
    eos = 10.0 - np.log(3.0)
    for temp, min_eos_p, stops in [(1.0, 0.2499, True), (1.0, 0.26, False), (0.5, 0.11, False), (0.5, 0.099, True)]:
        m = semantic_model(eos_logit=eos)
        g = np.random.default_rng(seed)
        out = generate_semantic(m, CharTokenizer(), "a", temp=temp, min_eos_p=min_eos_p, rng=g,
                                max_gen_duration_s=0, silent=True)
        assert out.tolist() == ([] if stops else [7]), (temp, min_eos_p, out)
        # exactly one number drawn for the one step taken, whether or not it stopped there
        assert g.random() == np.random.default_rng(seed).random(2)[1]
    # min_eos_p=None: only a drawn EOS stops
    m = semantic_model(eos_logit=eos)
    out = generate_semantic(m, CharTokenizer(), "a", temp=1.0, min_eos_p=None, rng=seed, max_gen_duration_s=0, silent=True)
    assert out.tolist() == [7]


def test_semantic_max_duration():
    m = semantic_model()
    out = generate_semantic(m, CharTokenizer(), "a", temp=0, max_gen_duration_s=1.0, silent=True)
    assert len(out) == 50  # first n with n / 49.9 > 1.0


def test_semantic_truncates_long_text_with_warning():
    m = semantic_model()
    text = "ab" * 200  # 400 one-character tokens
    with pytest.warns(UserWarning, match=r"400 tokens.*last 36.0%"):
        generate_semantic(m, CharTokenizer(), text, temp=0, max_gen_duration_s=0, silent=True)
    first = m.calls[0][0][0]
    assert first[255] == ord("b") % 1000 + K.TEXT_ENCODING_OFFSET
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        generate_semantic(semantic_model(), CharTokenizer(), "x" * 256, temp=0, max_gen_duration_s=0, silent=True)


@pytest.mark.parametrize("text", ["", "   ", "\n\t \u3000"])
def test_semantic_empty_text(text):
    with pytest.raises(BarkError, match="empty"):
        generate_semantic(semantic_model(), CharTokenizer(), text, silent=True)


@pytest.mark.parametrize("kwargs,match", [
    (dict(temp=-1), "temp"), (dict(temp=float("nan")), "temp"), (dict(top_p=0), "top_p"),
    (dict(top_p=1.5), "top_p"), (dict(top_k=0), "top_k"), (dict(voice="klingon_speaker_1"), "valid names"),
    (dict(voice={"semantic_prompt": np.array([1, 2])}), "coarse_prompt"),
    (dict(voice={**voice(), "semantic_prompt": np.array([[1, 2]])}), "semantic_prompt"),
    (dict(voice={**voice(), "semantic_prompt": np.array([10_001])}), "outside"),
    (dict(min_eos_p=2.0), "min_eos_p"),
    # wrong types: one-line BarkErrors too, not numpy's or Python's own messages
    (dict(min_eos_p="x"), "min_eos_p: must be a finite number or None"),
    (dict(max_gen_duration_s=[5]), "max_gen_duration_s: must be a finite number or None"),
    (dict(max_gen_duration_s=-1), "max_gen_duration_s: must be >= 0"), (dict(temp="hot"), "temp"),
    (dict(temp=float("inf")), "temp"), (dict(top_k=2.0), "top_k: must be an integer"), (dict(top_p=True), "top_p"),
])
def test_semantic_bad_arguments(kwargs, match):
    with pytest.raises(BarkError, match=match) as e:
        generate_semantic(semantic_model(), CharTokenizer(), "hello", silent=True, **kwargs)
    assert "\n" not in str(e.value)


def test_semantic_voice_from_npz_with_bad_shape(tmp_path):
    v = voice()
    v["fine_prompt"] = v["fine_prompt"][:4]
    np.savez(tmp_path / "v.npz", **v)
    with pytest.raises(BarkError, match="fine_prompt.*shape"):
        generate_semantic(semantic_model(), CharTokenizer(), "hello", voice=str(tmp_path / "v.npz"), silent=True)


# --- coarse -----------------------------------------------------------------------------------


def coarse_model():
    """Codebook 0 always answers code 3, codebook 1 code 900 (shifted into each one's id range)."""
    def fn(i, ids):
        logits = np.zeros(12_096)
        logits[K.SEMANTIC_VOCAB_SIZE + 3] = 5.0
        logits[K.SEMANTIC_VOCAB_SIZE + K.CODEBOOK_SIZE + 900] = 5.0
        logits[K.SEMANTIC_VOCAB_SIZE + 900] = 4.0  # tempting, but in the wrong codebook's turn
        return logits
    return ScriptedCausal(12_096, fn)


def test_coarse_windows_offsets_and_shape():
    m = coarse_model()
    sem = np.arange(100) % 10_000
    out = generate_coarse(m, sem, temp=0, silent=True)
    n_frames = int(np.floor(100 * K.SEMANTIC_TO_COARSE_RATIO / 2))
    assert out.shape == (2, n_frames) and out.dtype == np.int64
    assert np.all(out[0] == 3) and np.all(out[1] == 900)
    n_windows = int(np.ceil(2 * n_frames / 60))
    first_calls = [c for c in m.calls if c[0].shape[1] > 1]
    assert len(first_calls) == n_windows
    ids0 = first_calls[0][0][0]
    assert np.array_equal(ids0[:100], sem) and np.all(ids0[100:256] == K.COARSE_SEMANTIC_PAD_TOKEN)
    assert ids0[256] == K.COARSE_INFER_TOKEN and len(ids0) == 257
    ids1 = first_calls[1][0][0]  # second window: 60 tokens of history, interleaved and offset
    hist = ids1[257:]
    assert len(hist) == 60
    assert np.all(hist[0::2] == 10_003) and np.all(hist[1::2] == 10_000 + 1024 + 900)
    # the semantic window slides with the coarse position (no voice: it starts at 0 until 209 is passed)
    assert np.array_equal(ids1[:100], sem)


def test_coarse_voice_history_trim_and_alignment_hack():
    m = coarse_model()
    v = voice(400)
    generate_coarse(m, np.arange(20), voice=v, temp=0, silent=True)
    ids0 = m.calls[0][0][0]
    n_sem = min(209, 400, int(np.floor(1200 / K.SEMANTIC_TO_COARSE_RATIO)))
    n_coarse = int(round(n_sem * K.SEMANTIC_TO_COARSE_RATIO))
    flat = (v["coarse_prompt"] + np.array([[0], [1024]])).T.reshape(-1) + 10_000
    assert np.array_equal(ids0[:n_sem], v["semantic_prompt"][-n_sem:])
    assert np.array_equal(ids0[n_sem : n_sem + 20], np.arange(20))
    assert ids0[256] == K.COARSE_INFER_TOKEN
    assert np.array_equal(ids0[257:], flat[-n_coarse:][:-2])


@pytest.mark.parametrize("semantic,match", [
    (np.array([], dtype=np.int64), "non-empty"), (np.zeros((2, 3), np.int64), "1-D"),
    (np.array([10_000]), "outside"), (np.array([0.5, 1.0]), "integers"),
])
def test_coarse_bad_semantic(semantic, match):
    with pytest.raises(BarkError, match=match):
        generate_coarse(coarse_model(), semantic, silent=True)


@pytest.mark.parametrize("kwargs,match", [
    (dict(max_coarse_history=59), "max_coarse_history"), (dict(max_coarse_history=631), "max_coarse_history"),
    (dict(sliding_window_len=200), "sliding_window_len"), (dict(sliding_window_len=0), "sliding_window_len"),
    (dict(max_coarse_history="630"), "max_coarse_history: must be an integer"),
    (dict(max_coarse_history=100.5), "max_coarse_history: must be an integer"),
    (dict(sliding_window_len=None), "sliding_window_len: must be an integer"),
    (dict(temp=-0.5), "temp"), (dict(top_p=0.0), "top_p"),
    (dict(voice={**voice(), "coarse_prompt": np.zeros((2, 3), np.int64)}), "frames"),
])
def test_coarse_bad_arguments(kwargs, match):
    with pytest.raises(BarkError, match=match):
        generate_coarse(coarse_model(), np.arange(10), silent=True, **kwargs)


# --- fine ------------------------------------------------------------------------------------


class ScriptedFine:
    """Fine-model interface: predicts code (book * 100 + position in window) % 1024 at every frame."""

    def __init__(self):
        self.calls = []

    def forward(self, codebook_idx, codes, first=0, vocab=None):
        codes = np.asarray(codes)
        self.calls.append((codebook_idx, codes.copy()))
        B, T, _ = codes.shape
        logits = np.zeros((B, T, 1056), dtype=np.float32)
        logits[0, np.arange(T), (codebook_idx * 100 + np.arange(T)) % 1024] = 1.0
        logits[0, :, 1030] = 9.0  # beyond the codebook: never picked where vocab keeps it out
        start, stop = vocab or (0, 1056)
        return logits[:, first:, start:stop]


def test_fine_windows_and_shapes():
    m = ScriptedFine()
    coarse = np.random.default_rng(0).integers(0, 1024, (2, 1500))
    out = generate_fine(m, coarse, temp=None)
    assert out.shape == (8, 1500) and out.dtype == np.int64
    assert np.array_equal(out[:2], coarse)
    # windows start at 0, 512, then the last full window (1500 - 1024 = 476)
    n_loops = int(np.ceil((1500 - 1024) / 512)) + 1
    assert len(m.calls) == 6 * n_loops == 12
    assert [c[0] for c in m.calls[:6]] == [2, 3, 4, 5, 6, 7]
    # the last window starts at frame 476 and fills from 512 (its position 36) on
    for book in range(2, 8):
        assert out[book, 1499] == (book * 100 + (1499 - 476)) % 1024
        assert out[book, 100] == (book * 100 + 100) % 1024
    # each pass sees the codebooks filled by the passes before it
    book3_input = m.calls[1][1][0]
    assert np.array_equal(book3_input[:, 2], (200 + np.arange(1024)) % 1024)
    assert np.all(m.calls[0][1][0][:, 3:] == K.FINE_PAD_TOKEN)


def test_fine_short_input_is_padded_and_history_prepended():
    m = ScriptedFine()
    v = voice(400)  # fine prompt of 600 frames: its last 512 are history
    coarse = np.zeros((2, 30), np.int64)
    out = generate_fine(m, coarse, voice=v, temp=0)
    assert out.shape == (8, 30)
    window = m.calls[0][1][0]  # (1024, 8)
    assert np.array_equal(window[:512], v["fine_prompt"][:, -512:].T)
    assert np.all(window[542:, :2] == K.FINE_PAD_TOKEN)
    assert out[2, 0] == (200 + 512) % 1024


def test_fine_sampling_draws_one_number_per_filled_position():
    m = ScriptedFine()
    g = np.random.default_rng(9)
    generate_fine(m, np.zeros((2, 100), np.int64), temp=0.5, rng=g)
    # no history: fill starts at 0, all 1024 positions of the one window, 6 codebooks
    g2 = np.random.default_rng(9)
    g2.random(6 * 1024)
    assert g.random() == g2.random()


@pytest.mark.parametrize("coarse,match", [
    (np.zeros((0, 5), np.int64), "shape"), (np.zeros((8, 5), np.int64), "shape"),
    (np.zeros((2, 0), np.int64), "shape"), (np.zeros(5, np.int64), "shape"),
    (np.full((2, 5), 1024), "outside"), (np.full((2, 5), -1), "outside"), (np.zeros((2, 5)), "integers"),
])
def test_fine_bad_coarse(coarse, match):
    with pytest.raises(BarkError, match=match):
        generate_fine(ScriptedFine(), coarse)


def test_fine_bad_temp_and_voice():
    with pytest.raises(BarkError, match="temp"):
        generate_fine(ScriptedFine(), np.zeros((2, 5), np.int64), temp=-1)
    v = voice()
    v["fine_prompt"] = np.full((8, 5), 5000)
    with pytest.raises(BarkError, match="fine_prompt"):
        generate_fine(ScriptedFine(), np.zeros((2, 5), np.int64), voice=v)


def test_progress_hides_without_importing_tqdm_and_shows_with_it():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from barknp.generation.progress import progress\n"
        "bar = progress(range(3), silent=True); bar.update(2); bar.close()\n"
        "assert list(bar) == [0, 1, 2] and 'tqdm' not in sys.modules\n"
        "shown = progress(range(3), silent=False)\n"
        "assert list(shown) == [0, 1, 2] and type(shown).__module__.startswith('tqdm')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
