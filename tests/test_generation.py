"""Generation parity: barknp's loops and models against Suno's ORIGINAL generation code.

All runs use the tiny random-weight Bark from ``tools/reference.build_bark("tiny", 0)``:
barknp's own models get its weights, and so do Suno's original torch GPT / FineGPT
(``tools/suno_reference.py``), driven by the original ``generate_text_semantic(use_kv_caching=
True)`` / ``generate_coarse(use_kv_caching=True)`` / ``generate_fine`` with ``torch.multinomial``
replaced by barknp's documented draw from the same numpy seed.

Tolerance: tokens must be identical (exact equality), at every stage. Logits of the two model
implementations agree to ~1e-5 relative, far below the random models' gaps between the top
logits and below what the inverse-CDF draw could feel except with probability ~1e-6 per token.
"""

import contextlib
import string
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the reference generation code runs on torch")
pytest.importorskip("transformers", reason="the reference weights come from a transformers BarkModel")

from conftest import num_threads  # noqa: E402
from parity import assert_close  # noqa: E402

from barknp import constants as K  # noqa: E402
from barknp.generation import generate_coarse, generate_fine, generate_semantic, load_tokenizer, load_voice  # noqa: E402

pytestmark = pytest.mark.reference

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
BERT_DIR = DATA / "bert-base-multilingual-cased"
VOICE_FILE = DATA / "bark-voices" / "v2" / "en_speaker_6.npz"
TEXT = "Hello, my dog is cute [laughs] and I need him in my life."


def assert_tokens_equal(ours, ref, what):
    ours, ref = np.asarray(ours), np.asarray(ref)
    assert ours.shape == ref.shape, f"{what}: shape {ours.shape} != reference {ref.shape}"
    diff = np.argwhere(ours != ref)
    assert diff.size == 0, (
        f"{what}: {len(diff)} tokens differ; first at {tuple(diff[0])}: "
        f"ours {ours[tuple(diff[0])]} vs reference {ref[tuple(diff[0])]}"
    )


@pytest.fixture(scope="module")
def bark():
    import reference

    torch.set_num_threads(1)  # the test machine's cores are shared
    return reference.build_bark("tiny", seed=0)


@pytest.fixture(scope="module")
def suno(bark):
    import suno_reference

    try:
        return suno_reference.suno_models_from_transformers(bark)
    except ImportError as e:
        pytest.skip(f"Suno's original bark code is not available: {e}")


@pytest.fixture(scope="module")
def ours(bark):
    import suno_reference

    return suno_reference.barknp_models_from_transformers(bark)


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    """(barknp tokenizer, tokenizer for the original): the real BERT vocabulary when present,
    else a small cased WordPiece vocabulary written here (tokenizer parity has its own tests)."""
    from transformers import BertTokenizer

    if (BERT_DIR / "vocab.txt").is_file():
        return load_tokenizer(BERT_DIR), BertTokenizer(str(BERT_DIR / "vocab.txt"), do_lower_case=False)
    d = tmp_path_factory.mktemp("vocab")
    chars = list(string.ascii_letters + string.digits + string.punctuation)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + chars + ["##" + c for c in chars]
    (d / "vocab.txt").write_text("\n".join(words) + "\n")
    return load_tokenizer(d), BertTokenizer(str(d / "vocab.txt"), do_lower_case=False)


@pytest.fixture(scope="module")
def voice():
    """A real Suno voice when ../shared/data has them, else a synthetic one of the same form."""
    if VOICE_FILE.is_file():
        return load_voice(str(VOICE_FILE))
    rng = np.random.default_rng(1)
    return {
        "semantic_prompt": rng.integers(0, 10_000, 300),
        "coarse_prompt": rng.integers(0, 1024, (2, 450)),
        "fine_prompt": rng.integers(0, 1024, (8, 450)),
    }


def n_tokens(n):
    """max_gen_duration_s that stops the semantic stage after exactly n tokens."""
    return (n - 0.5) / K.SEMANTIC_RATE_HZ


def run_original(suno, tokenizer, seed, argmax=False):
    import suno_reference

    return suno_reference.original_generation(suno, tokenizer, np.random.default_rng(seed), argmax=argmax)


# --- the models under the loops -------------------------------------------------------------


def test_models_match_suno_models(ours, suno, voice):
    """barknp's models and Suno's, filled with the same weights, give the same logits."""
    import suno_reference

    rng = np.random.default_rng(0)
    prompt = np.concatenate([rng.integers(10_048, 129_000, 256), voice["semantic_prompt"][-256:],
                             [K.SEMANTIC_INFER_TOKEN], rng.integers(0, 10_000, 5)])[None]
    ref = suno_reference.SunoCausal(suno["text"]).forward(prompt, merge_context=True)
    assert_close(ours["semantic"].forward(prompt, merge_context=True), ref, 1e-5, "semantic logits")
    ids = rng.integers(0, 12_096, (1, 300))
    ref = suno_reference.SunoCausal(suno["coarse"]).forward(ids)
    assert_close(ours["coarse"].forward(ids), ref, 1e-5, "coarse logits")
    codes = rng.integers(0, 1025, (1, 1024, 8))
    for book in (1, 4, 7):
        ref = suno_reference.SunoFine(suno["fine"]).forward(book, codes)
        assert_close(ours["fine"].forward(book, codes), ref, 1e-5, f"fine logits, codebook {book}")


# --- greedy: temp == 0 picks the reference argmax -------------------------------------------


def test_semantic_greedy_teacher_forced(bark, ours, tokenizers, voice):
    """Every token barknp picks at temp 0 is transformers' argmax given the same prefix."""
    tok = tokenizers[0]
    tokens = generate_semantic(ours["semantic"], tok, TEXT, voice=voice, temp=0,
                               max_gen_duration_s=n_tokens(120), silent=True)
    assert len(tokens) == 120
    text = np.full(256, K.TEXT_PAD_TOKEN)
    ids = np.asarray(tok.encode(TEXT)) + K.TEXT_ENCODING_OFFSET
    text[: len(ids)] = ids
    hist = np.full(256, K.SEMANTIC_PAD_TOKEN)
    hist[: min(256, len(voice["semantic_prompt"]))] = voice["semantic_prompt"][-256:]
    wte = bark.semantic.input_embeds_layer
    with torch.no_grad():
        embeds = torch.cat([wte(torch.tensor(text)[None]) + wte(torch.tensor(hist)[None]),
                            wte(torch.tensor(np.r_[K.SEMANTIC_INFER_TOKEN, tokens])[None])], dim=1)
        logits = bark.semantic(inputs_embeds=embeds, use_cache=False).logits[0].numpy()  # (257 + 120, 10048)
    # position 256 (the infer token) predicts token 0; semantic ids and EOS are the first 10 001
    want = logits[256:-1, : K.SEMANTIC_VOCAB_SIZE + 1].argmax(-1)
    assert_tokens_equal(tokens, want, "semantic greedy vs teacher-forced argmax")


@pytest.mark.parametrize("with_voice", [False, True])
def test_coarse_greedy_vs_original(ours, suno, tokenizers, voice, with_voice):
    v = voice if with_voice else None
    semantic = np.random.default_rng(3).integers(0, 10_000, 70)
    got = generate_coarse(ours["coarse"], semantic, voice=v, temp=0, silent=True)
    with run_original(suno, tokenizers[1], 0, argmax=True) as original:
        want = original.generate_coarse(semantic, history_prompt=v, temp=1.0, silent=True, use_kv_caching=True)
    assert got.shape == (2, 105)
    assert_tokens_equal(got, want, "coarse greedy")


@pytest.mark.parametrize("temp", [None, 0])
def test_fine_greedy_vs_original(ours, suno, tokenizers, voice, temp):
    coarse = np.random.default_rng(4).integers(0, 1024, (2, 700))
    got = generate_fine(ours["fine"], coarse, voice=voice, temp=temp)
    with run_original(suno, tokenizers[1], 0) as original:
        want = original.generate_fine(coarse, history_prompt=voice, temp=None, silent=True)
    assert_tokens_equal(got, want, "fine greedy")


# --- sampled: the same seed gives the original's tokens --------------------------------------


SETTINGS = {
    "plain": dict(temp=0.7),
    "top_k_top_p": dict(temp=1.0, top_k=50, top_p=0.8),
    "hot_top_p": dict(temp=1.4, top_p=0.5),
}


@pytest.mark.parametrize("name,with_voice", [
    ("plain", False), ("plain", True), ("top_k_top_p", True), ("hot_top_p", False),
])
def test_sampled_stages_match_original(ours, suno, tokenizers, voice, with_voice, name):
    kw = SETTINGS[name]
    v = voice if with_voice else None
    sem = generate_semantic(ours["semantic"], tokenizers[0], TEXT, voice=v, rng=11,
                            max_gen_duration_s=n_tokens(60), silent=True, **kw)
    with run_original(suno, tokenizers[1], 11) as original:
        want = original.generate_text_semantic(TEXT, history_prompt=v, max_gen_duration_s=n_tokens(60),
                                               silent=True, use_kv_caching=True, **kw)
    assert_tokens_equal(sem, want, f"semantic ({name})")

    coarse = generate_coarse(ours["coarse"], sem, voice=v, rng=12, silent=True, **kw)
    with run_original(suno, tokenizers[1], 12) as original:
        want = original.generate_coarse(sem, history_prompt=v, silent=True, use_kv_caching=True, **kw)
    assert_tokens_equal(coarse, want, f"coarse ({name})")

    fine = generate_fine(ours["fine"], coarse, voice=v, temp=0.5, rng=13)
    with run_original(suno, tokenizers[1], 13) as original:
        want = original.generate_fine(coarse, history_prompt=v, temp=0.5, silent=True)
    assert_tokens_equal(fine, want, f"fine ({name})")


def test_semantic_eos_rules_match_original(ours, suno, tokenizers):
    """A high min_eos_p never fires and a tiny one fires at once, in both implementations."""
    for min_eos_p in (1e-9, 0.99):
        got = generate_semantic(ours["semantic"], tokenizers[0], TEXT, temp=0.7, min_eos_p=min_eos_p, rng=5,
                                max_gen_duration_s=n_tokens(30), silent=True)
        with run_original(suno, tokenizers[1], 5) as original:
            want = original.generate_text_semantic(TEXT, temp=0.7, min_eos_p=min_eos_p, silent=True,
                                                   max_gen_duration_s=n_tokens(30), use_kv_caching=True)
        assert_tokens_equal(got, want, f"semantic, min_eos_p={min_eos_p}")
        assert len(got) == (0 if min_eos_p < 1e-6 else 30)


def test_seeds(ours, tokenizers, voice):
    def run(seed):
        sem = generate_semantic(ours["semantic"], tokenizers[0], TEXT, voice=voice, rng=seed,
                                max_gen_duration_s=n_tokens(40), silent=True)
        coarse = generate_coarse(ours["coarse"], sem, voice=voice, rng=seed, silent=True)
        return sem, coarse, generate_fine(ours["fine"], coarse, voice=voice, rng=seed)

    a, b, c = run(1), run(1), run(2)
    for x, y, stage in zip(a, b, ("semantic", "coarse", "fine")):
        assert_tokens_equal(x, y, f"{stage}, same seed twice")
    assert not np.array_equal(a[0], c[0]), "different seeds gave the same semantic tokens"
    # with the same input, the later stages still differ by seed alone
    assert not np.array_equal(generate_coarse(ours["coarse"], a[0], rng=1, silent=True),
                              generate_coarse(ours["coarse"], a[0], rng=2, silent=True))
    assert not np.array_equal(generate_fine(ours["fine"], a[1], rng=1), generate_fine(ours["fine"], a[1], rng=2))
    # a Generator passed in is advanced, so two calls with it differ
    g = np.random.default_rng(0)
    assert not np.array_equal(generate_fine(ours["fine"], a[1], rng=g), generate_fine(ours["fine"], a[1], rng=g))


# --- greedy against transformers' generate ---------------------------------------------------


def test_greedy_matches_transformers_generate(bark, ours, tokenizers, voice):
    """With greedy decoding and no min_eos_p the two algorithms agree (see the differences list
    in barknp/generation/__init__.py): transformers' sub-model generate() vs barknp at temp 0."""
    from transformers.models.bark.generation_configuration_bark import (
        BarkCoarseGenerationConfig,
        BarkFineGenerationConfig,
        BarkSemanticGenerationConfig,
    )

    sem_cfg, coarse_cfg, fine_cfg = (BarkSemanticGenerationConfig(), BarkCoarseGenerationConfig(),
                                     BarkFineGenerationConfig())
    history = {k: torch.from_numpy(v) for k, v in voice.items()}
    ids = tokenizers[0].encode(TEXT)
    input_ids = torch.zeros((1, 256), dtype=torch.long)
    input_ids[0, : len(ids)] = torch.tensor(ids)
    mask = torch.zeros((1, 256), dtype=torch.long)
    mask[0, : len(ids)] = 1
    n = 80
    with torch.no_grad():
        t_sem = bark.semantic.generate(input_ids, attention_mask=mask, semantic_generation_config=sem_cfg,
                                       history_prompt=history, do_sample=False, max_new_tokens=n)
        t_coarse = bark.coarse_acoustics.generate(t_sem.clone(), semantic_generation_config=sem_cfg,
                                                  coarse_generation_config=coarse_cfg, codebook_size=1024,
                                                  history_prompt=history, do_sample=False,
                                                  # transformers leaves ids 12048.. (pads, infer token)
                                                  # open on codebook 1's turn; the original cannot
                                                  # pick them (difference 7 in generation/__init__.py)
                                                  suppress_tokens=list(range(12_048, 12_096)))
        t_fine = bark.fine_acoustics.generate(t_coarse, semantic_generation_config=sem_cfg,
                                              coarse_generation_config=coarse_cfg, fine_generation_config=fine_cfg,
                                              codebook_size=1024, history_prompt=history)
    sem = generate_semantic(ours["semantic"], tokenizers[0], TEXT, voice=voice, temp=0, min_eos_p=None,
                            max_gen_duration_s=n_tokens(n), silent=True)
    assert_tokens_equal(sem, t_sem[0].numpy(), "semantic vs transformers")
    coarse = generate_coarse(ours["coarse"], sem, voice=voice, temp=0, silent=True)
    t_codes = t_coarse[0].numpy().reshape(-1, 2).T - K.SEMANTIC_VOCAB_SIZE - np.array([[0], [K.CODEBOOK_SIZE]])
    assert_tokens_equal(coarse, t_codes, "coarse vs transformers")
    fine = generate_fine(ours["fine"], coarse, voice=voice, temp=None)
    assert_tokens_equal(fine, t_fine[0].numpy(), "fine vs transformers (its temperature 1.0 is argmax)")


# --- a long run: the 768-token cap, 1154 coarse frames, several fine windows ------------------


def test_long_generation_matches_original(ours, suno, tokenizers, voice):
    kw = dict(temp=0.8, top_k=200)
    sem = generate_semantic(ours["semantic"], tokenizers[0], TEXT, voice=voice, allow_early_stop=False,
                            rng=21, silent=True, **kw)
    with run_original(suno, tokenizers[1], 21) as original:
        want = original.generate_text_semantic(TEXT, history_prompt=voice, allow_early_stop=False, silent=True,
                                               use_kv_caching=True, **kw)
    assert sem.shape == (K.MAX_SEMANTIC_STEPS,)
    assert_tokens_equal(sem, want, "semantic to the 768 cap")

    coarse = generate_coarse(ours["coarse"], sem, voice=voice, rng=22, silent=True, **kw)
    with run_original(suno, tokenizers[1], 22) as original:
        want = original.generate_coarse(sem, history_prompt=voice, silent=True, use_kv_caching=True, **kw)
    assert coarse.shape == (2, 1154)  # floor(768 * 75 / 49.9) frames: 39 coarse windows
    assert_tokens_equal(coarse, want, "long coarse")

    fine = generate_fine(ours["fine"], coarse, voice=voice, temp=0.5, rng=23)
    with run_original(suno, tokenizers[1], 23) as original:
        want = original.generate_fine(coarse, history_prompt=voice, temp=0.5, silent=True)
    assert fine.shape == (8, 1154)  # with 512 history frames: 3 fine windows
    assert_tokens_equal(fine, want, "long fine")


# --- the coarse cache kept across windows -------------------------------------------------


class FromScratch:
    """A causal model whose every forward is checked against a forward from an empty cache over
    the whole sequence the cache then holds (what the original computes for each window)."""

    def __init__(self, model):
        self.model = model
        self.fed = []  # ids per call
        self.ahead = []  # ids per prefill_ahead call
        self.held: dict[int, np.ndarray] = {}

    def new_cache(self, batch=1):
        return self.model.new_cache(batch)

    def forward(self, ids, cache=None, last_only=False, vocab=None):
        before = self.held.get(id(cache), np.zeros(0, np.int64))[: cache.length]
        sequence = np.concatenate([before, ids[0]])  # what the cache holds after this call
        self.held[id(cache)] = sequence
        got = self.model.forward(ids, cache=cache, last_only=last_only, vocab=vocab)
        want = self.model.forward(sequence[None], last_only=True, vocab=vocab)
        assert_close(got, want, 1e-5, f"forward at position {len(sequence) - 1} vs a fresh prefill")
        self.fed.append(ids.shape[1])
        return got

    @contextlib.contextmanager
    def prefill_ahead(self, ids, cache=None):
        """The model's, recorded: the ids the cache holds once it is done (the next forward on
        that cache then checks them against a fresh prefill)."""
        with self.model.prefill_ahead(ids, cache) as job:
            yield job
        if job is not None:
            self.held[id(job.result())] = ids[0]
            self.ahead.append(ids.shape[1])


def test_coarse_windows_keep_the_positions_the_cache_holds(ours):
    """No voice: the semantic block stays put for the first windows and the history grows, so each
    window after the first starts with what the cache holds and feeds one new id; once the block
    slides (semantic index past max_semantic_history), windows prefill in full again."""
    model = FromScratch(ours["coarse"])
    semantic = np.random.default_rng(5).integers(0, 10_000, 40)  # 60 frames: 120 steps
    generate_coarse(model, semantic, max_coarse_history=60, sliding_window_len=12, rng=1, silent=True)
    windows = model.fed[::12]  # each window's first call: 10 windows of 12 steps
    # max_semantic_history = floor(60 / 3.006) = 19; the semantic index moves 4 per window (0, 4,
    # .., 16, then 20: the block slides from the sixth window on)
    assert windows[:5] == [257, 1, 1, 1, 1], windows
    assert all(n > 1 for n in windows[5:]), windows
    assert all(n == 1 for i, n in enumerate(model.fed) if i % 12)  # decode steps in between


@pytest.mark.parametrize("n_threads", [1, 2])
def test_sliding_coarse_windows_are_prefilled_during_the_window_before(ours, n_threads):
    """Once the semantic block slides, each window's ids but its last 11 (tokens the previous
    window had still to draw after its first step) are prefilled beside the previous window's
    decode steps, on two threads: the window then feeds only those 11. Every forward is checked
    against a fresh prefill (FromScratch), and the codes are those of one thread, where nothing
    runs ahead."""
    semantic = np.random.default_rng(5).integers(0, 10_000, 40)
    kwargs = dict(max_coarse_history=60, sliding_window_len=12, rng=1, silent=True)
    model = FromScratch(ours["coarse"])
    with num_threads(n_threads):
        codes = generate_coarse(model, semantic, **kwargs)
    windows = model.fed[::12]
    assert windows[:5] == [257, 1, 1, 1, 1], windows
    if n_threads == 1:
        assert all(n > 11 for n in windows[5:]), windows
    else:
        # the sixth window on: 257 + 60 - 11 ids computed ahead by the window before, 11 fed
        assert model.ahead == [257 + 49] * 5 and windows[5:] == [11] * 5, (model.ahead, windows)
    if n_threads > 1:  # at one thread the run is the plain loop itself: FromScratch's checks are the test
        with num_threads(1):
            alone = generate_coarse(ours["coarse"], semantic, **kwargs)
        np.testing.assert_array_equal(codes, alone)
