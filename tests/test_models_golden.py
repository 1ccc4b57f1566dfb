"""barknp's three GPTs against logits stored from transformers (tests/goldens/gpt.npz).

Tolerance: float32, max |ours - ref| <= 1e-5 * max |ref|. The weights are redrawn from the seeds
in the golden file by tools/random_weights.py, so these tests need no torch.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import GOLDENS, num_threads
from parity import assert_close
from random_weights import random_gpt_tensors

from barknp.config import GPTConfig
from barknp.errors import BarkError
from barknp.models.fine import FineGPT
from barknp.models.gpt import CausalGPT

RTOL = 1e-5


@pytest.fixture(scope="module")
def golden():
    return dict(np.load(GOLDENS / "gpt.npz"))


def model_tensors(golden, stage):
    """The golden case's config and its random weights, by name."""
    case = dict(json.loads(str(golden["cases"]))[stage])
    seed = case.pop("seed")
    tensors = random_gpt_tensors(
        case["num_layers"], case["hidden_size"], case["input_vocab_size"], case["output_vocab_size"],
        seed=seed, fine=stage == "fine", bias=case["bias"],
    )
    return GPTConfig(**case), tensors


def build(golden, stage):
    config, tensors = model_tensors(golden, stage)
    if stage == "fine":
        return FineGPT(config, tensors)
    return CausalGPT(config, tensors, name=stage)


def test_semantic_unmerged_batch2(golden):
    model = build(golden, "semantic")
    assert_close(model.forward(golden["semantic_ids"]), golden["semantic_logits"], RTOL, "semantic")


def test_semantic_merged_context(golden):
    model = build(golden, "semantic")
    logits = model.forward(golden["semantic_merged_ids"], merge_context=True)
    assert logits.shape == (2, 257 + 3, 10_048)  # 513 + 3 ids occupy 257 + 3 positions
    assert_close(logits[:, -4:], golden["semantic_merged_logits_last4"], RTOL, "semantic merged")


@pytest.mark.parametrize("n_threads", [1, 2])
def test_many_rows_on_one_and_two_threads(golden, n_threads):
    """520 rows: with two threads the forward splits rows and heads over workers
    (barknp.threads.forward_workers); with one it runs inline. Both match the golden."""
    with num_threads(n_threads):
        logits = build(golden, "semantic").forward(golden["semantic_merged_ids"], merge_context=True)
    assert_close(logits[:, -4:], golden["semantic_merged_logits_last4"], RTOL, f"semantic merged, {n_threads} threads")


def test_semantic_merged_context_with_cache(golden):
    """Prompt in one call, then three single-token steps: the same logits as one long forward."""
    model = build(golden, "semantic")
    ids = golden["semantic_merged_ids"]
    cache = model.new_cache(batch=2)
    steps = [model.forward(ids[:, :513], cache, merge_context=True, last_only=True)]
    for t in range(513, 516):
        steps.append(model.forward(ids[:, t : t + 1], cache))
    assert cache.length == 260
    assert_close(np.concatenate(steps, axis=1), golden["semantic_merged_logits_last4"], RTOL, "cached")


def test_coarse_without_bias(golden):
    model = build(golden, "coarse")
    assert model.layers[0].attn.att_proj.bias is None  # this case was drawn with bias=False
    assert_close(model.forward(golden["coarse_ids"]), golden["coarse_logits"], RTOL, "coarse")


def test_coarse_cache_matches_full_forward(golden):
    model = build(golden, "coarse")
    ids = golden["coarse_ids"]
    cache = model.new_cache(batch=2)
    parts = [model.forward(ids[:, :2], cache), model.forward(ids[:, 2:3], cache), model.forward(ids[:, 3:], cache)]
    assert_close(np.concatenate(parts, axis=1), golden["coarse_logits"], RTOL, "coarse cached")


@pytest.mark.parametrize("codebook_idx", range(1, 8))
def test_fine_every_codebook(golden, codebook_idx):
    model = build(golden, "fine")
    ours = model.forward(codebook_idx, golden["fine_codes"])
    assert_close(ours, golden["fine_logits"][codebook_idx - 1], RTOL, f"fine codebook {codebook_idx}")


def test_float16_cache_stays_near_the_float32_logits(golden, capsys):
    """A coarse model with float16 caches (prefill, then one-call decode steps, batch 1) against the
    golden float32 logits: a reduced-precision option, so the bound is loose (1e-2 relative) and
    the measured error is printed; benchmarks/bench_int8_quality.py measures it on a real shape."""
    config, tensors = model_tensors(golden, "coarse")
    model = CausalGPT(config, tensors, name="coarse", kv_cache="float16")
    ids, want = golden["coarse_ids"][:1], golden["coarse_logits"][:1]  # (1, T), (1, T, V)
    cache = model.new_cache()
    assert cache.keys.dtype == np.float16
    parts = [model.forward(ids[:, :2], cache)]  # a prefill, then one-call decode steps
    parts += [model.forward(ids[:, t : t + 1], cache) for t in range(2, ids.shape[1])]
    err = assert_close(np.concatenate(parts, axis=1), want, 1e-2, "coarse logits, float16 cache")
    with capsys.disabled():
        print(f"\n  float16 KV cache: coarse logits within {err:.1e} (relative) of float32")
    with pytest.raises(BarkError, match="kv cache dtype"):
        CausalGPT(config, tensors, name="coarse", kv_cache="int8")


@pytest.mark.parametrize("first", [0, 1, 3])
def test_fine_frames_from_first_and_a_vocabulary_slice(golden, first):
    """``first`` skips the earlier frames in the last block and the head, ``vocab`` computes a
    slice of the head: the golden's numbers for those frames and ids, every frame still attended."""
    model = build(golden, "fine")
    want = golden["fine_logits"][2]  # codebook 3: (B, T, V)
    ours = model.forward(3, golden["fine_codes"], first=first, vocab=(2, 1024))
    assert ours.shape == (want.shape[0], want.shape[1] - first, 1022)
    assert_close(ours, want[:, first:, 2:1024], RTOL, f"fine codebook 3 from frame {first}")
    T = want.shape[1]
    for bad in [-1, T]:
        with pytest.raises(BarkError, match="first must be"):
            model.forward(3, golden["fine_codes"], first=bad)
    with pytest.raises(BarkError, match="vocab must be"):
        model.forward(3, golden["fine_codes"], vocab=(0, want.shape[2] + 1))


def test_fine_ignores_codebooks_above_the_predicted_one(golden):
    model = build(golden, "fine")
    codes = golden["fine_codes"].copy()
    before = model.forward(3, codes)
    codes[:, :, 4:] = 1024
    np.testing.assert_array_equal(model.forward(3, codes), before)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda m: m.forward(np.array([[0, 1]], dtype=np.float32)), "must be integers"),
        (lambda m: m.forward(np.array([[0, 129_600]])), "out of range"),
        (lambda m: m.forward(np.array([[-1, 3]])), "out of range"),
        (lambda m: m.forward(np.array([1, 2, 3])), "shape (B, T)"),
        (lambda m: m.forward(np.zeros((1, 1025), dtype=np.int64)), "exceeds the block size"),
        (lambda m: m.forward(np.zeros((1, 100), dtype=np.int64), merge_context=True), "merged context"),
        (lambda m: m.forward(np.zeros((2, 3), dtype=np.int64), m.new_cache(batch=1)), "cache holds batch"),
    ],
)
def test_causal_bad_input(golden, call, message):
    model = build(golden, "semantic")
    with pytest.raises(BarkError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call(model)


def test_cache_overflow_is_an_error(golden):
    model = build(golden, "coarse")
    cache = model.new_cache(batch=1, max_len=4)
    model.forward(np.zeros((1, 4), dtype=np.int64), cache)
    with pytest.raises(BarkError, match="exceeds the block size"):
        model.forward(np.zeros((1, 1), dtype=np.int64), cache)


@pytest.mark.parametrize(
    "idx, codes, message",
    [
        (0, np.zeros((1, 4, 8), dtype=np.int64), "codebook_idx"),
        (8, np.zeros((1, 4, 8), dtype=np.int64), "codebook_idx"),
        (2, np.zeros((1, 4, 7), dtype=np.int64), "shape"),
        (2, np.full((1, 4, 8), 1056), "out of range"),
        (2, np.zeros((1, 1025, 8), dtype=np.int64), "block size"),
    ],
)
def test_fine_bad_input(golden, idx, codes, message):
    with pytest.raises(BarkError, match=message):
        build(golden, "fine").forward(idx, codes)


def test_left_padded_batch_matches_each_row_alone(golden):
    """Two coarse sequences of lengths 5 and 3, left-padded into one batch, continued by cache."""
    model = build(golden, "coarse")
    ids = golden["coarse_ids"]  # (2, 5)
    batch = ids.copy()
    batch[1, :2] = 0  # row 1 is 3 ids long; its first two positions are padding
    cache = model.new_cache(batch=2)
    first = model.forward(batch, cache, pad=np.array([0, 2]))  # (2, 5, V)
    step = model.forward(ids[:, :1], cache)  # (2, 1, V): one more id for each row
    for row, pad in ((0, 0), (1, 2)):
        alone_ids = np.concatenate([ids[row : row + 1, pad:], ids[row : row + 1, :1]], axis=1)
        alone = model.forward(alone_ids)  # (1, 6 - pad, V)
        assert_close(first[row, pad:], alone[0, :-1], RTOL, f"padded row {row}")
        assert_close(step[row], alone[0, -1:], RTOL, f"padded row {row}, cached step")


def test_pad_is_validated(golden):
    model = build(golden, "coarse")
    with pytest.raises(BarkError, match="pad must be"):
        model.forward(np.zeros((2, 3), dtype=np.int64), pad=np.array([0, 3]))


@pytest.mark.parametrize("int8", [False, True])
def test_last_position_and_a_vocabulary_slice(golden, int8):
    """``last_only`` skips the other positions in the last block and ``vocab`` computes a slice of
    the LM head; both give the numbers of the full forward, in a prefill and in a decode step."""
    from barknp.convert.quantize import quantize_tensors

    model = build(golden, "coarse")
    if int8:  # against the same int8 model's full forward (int8 rounding is not the golden's)
        config, tensors = model_tensors(golden, "coarse")
        model = CausalGPT(config, quantize_tensors(tensors), name="coarse")
        want = model.forward(golden["coarse_ids"])
    else:
        want = golden["coarse_logits"]  # (2, 5, V)
    ids = golden["coarse_ids"]  # (2, 5)
    assert_close(model.forward(ids, last_only=True), want[:, -1:], RTOL, "last_only")
    assert_close(model.forward(ids, vocab=(100, 1124)), want[..., 100:1124], RTOL, "vocab slice")
    cache = model.new_cache(batch=1)
    prefill = model.forward(ids[:1, :4], cache, last_only=True, vocab=(7, 20))  # (1, 1, 13)
    step = model.forward(ids[:1, 4:], cache, last_only=True, vocab=(7, 20))  # the one-call decode step
    assert_close(prefill, want[:1, 3:4, 7:20], RTOL, "cached prefill, sliced")
    assert_close(step, want[:1, 4:5, 7:20], RTOL, "decode step, sliced")
    V = want.shape[-1]
    for bad in [(5, 5), (-1, 3), (0, V + 1)]:
        with pytest.raises(BarkError, match="vocab must be"):
            model.forward(ids, vocab=bad)
