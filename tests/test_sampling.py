"""The sampler: rng handling, top-k, top-p, temperature and the documented inverse-CDF draw."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from barknp.errors import BarkError
from barknp.generation import sampling
from barknp.generation.sampling import (
    apply_top_k,
    apply_top_p,
    as_generator,
    check_sampling_args,
    draw,
    draw_rows,
    sample,
    softmax,
)


def naive_draw(probs, u):
    """The rule in words: walk the cumulative sum in float64, stop at the first entry above u*total."""
    total = 0.0
    for p in probs:
        total += float(p)
    target = u * total
    running = 0.0
    last_live = max(i for i, p in enumerate(probs) if p > 0)
    for i, p in enumerate(probs):
        running += float(p)
        if running > target:
            return i
    return last_live


def probs_of(size):
    """Non-negative float32 vectors with at least one positive entry (the last one is forced
    positive when all are zero)."""
    def fix(p):
        if not p.sum() > 0:
            p = p.copy()
            p[-1] = 0.5
        return p
    return arrays(np.float32, size, elements=st.floats(0, 1, width=32)).map(fix)


probs_strategy = probs_of(st.integers(1, 40))


@settings(max_examples=200, deadline=None)
@given(probs_strategy, st.floats(0, 1, exclude_max=True))
def test_draw_matches_the_written_rule(probs, u):
    got = draw(probs, u)
    assert got == naive_draw(probs, u), (probs, u, got)
    assert probs[got] > 0, "a zero-probability token was drawn"


@settings(max_examples=100, deadline=None)
@given(st.lists(probs_of(7), min_size=1, max_size=6),
       st.lists(st.floats(0, 1, exclude_max=True), min_size=6, max_size=6))
def test_draw_rows_is_draw_per_row(rows, us):
    probs = np.stack(rows)  # (N, 7)
    u = np.array(us[: len(rows)], dtype=np.float64)
    got = draw_rows(probs, u)
    want = [draw(p, x) for p, x in zip(probs, u)]
    assert got.tolist() == want


def test_draw_never_picks_zero_probability_edges():
    probs = np.array([0, 0.5, 0, 0.5, 0], dtype=np.float32)
    assert draw(probs, 0.0) == 1
    assert draw(probs, 0.4999) == 1
    assert draw(probs, 0.5) == 3
    assert draw(probs, np.nextafter(1.0, 0.0)) == 3


def test_generator_random_n_equals_n_calls():
    """fine.py draws a whole window's numbers with rng.random(n); that must equal n single draws."""
    a = np.random.default_rng(7).random(1000)
    g = np.random.default_rng(7)
    b = np.array([g.random() for _ in range(1000)])
    assert np.array_equal(a, b)


def test_as_generator():
    g = np.random.default_rng(3)
    assert as_generator(g) is g
    assert as_generator(5).random() == np.random.default_rng(5).random()
    assert isinstance(as_generator(None), np.random.Generator)
    for bad in (-1, 1.5, "3", True):
        with pytest.raises(BarkError):
            as_generator(bad)


@pytest.mark.parametrize("kwargs", [
    dict(temp=-0.1), dict(temp=float("nan")), dict(temp=float("inf")), dict(temp=None),
    dict(temp=0.7, top_p=0.0), dict(temp=0.7, top_p=1.01), dict(temp=0.7, top_p=-0.5),
    dict(temp=0.7, top_p=float("nan")), dict(temp=0.7, top_k=0), dict(temp=0.7, top_k=2.5),
])
def test_bad_sampling_args(kwargs):
    with pytest.raises(BarkError) as e:
        check_sampling_args(**kwargs)
    assert "\n" not in str(e.value)


def test_good_sampling_args():
    check_sampling_args(0, top_k=1, top_p=1.0)
    check_sampling_args(None, allow_none_temp=True)


def original_top_p(logits, top_p):
    """Suno's top-p lines, restated with scipy as the original calls it."""
    from scipy.special import softmax as sp_softmax

    logits = logits.astype(np.float32).copy()
    sorted_indices = np.argsort(logits)[::-1]
    cumulative_probs = np.cumsum(sp_softmax(logits[sorted_indices]))
    remove = cumulative_probs > top_p
    remove[1:] = remove[:-1].copy()
    remove[0] = False
    logits[sorted_indices[remove]] = -np.inf
    return logits


@settings(max_examples=100, deadline=None)
@given(arrays(np.float32, st.integers(1, 60), elements=st.floats(-8, 8, width=32)),
       st.floats(0.01, 1.0))
def test_top_p_is_the_original_rule(logits, top_p):
    pytest.importorskip("scipy", reason="the original's top-p uses scipy.special.softmax")
    got = apply_top_p(logits, top_p)
    want = original_top_p(logits, top_p)
    assert np.array_equal(got, want), (logits, top_p, got, want)
    assert np.isfinite(got).any()


@settings(max_examples=100, deadline=None)
@given(arrays(np.float32, st.integers(1, 60), elements=st.floats(-8, 8, width=32)),
       st.integers(1, 80))
def test_top_k_keeps_logits_at_least_kth_largest(logits, k):
    got = apply_top_k(logits, k)
    kth = np.sort(logits)[::-1][min(k, len(logits)) - 1]
    keep = logits >= kth
    assert np.array_equal(got[keep], logits[keep])
    assert np.all(np.isneginf(got[~keep]))
    assert keep.sum() >= min(k, len(logits))


@pytest.mark.reference
def test_top_k_torch_semantics():
    torch = pytest.importorskip("torch", reason="compares with torch.topk as the original uses it")
    rng = np.random.default_rng(0)
    logits = rng.normal(size=300).astype(np.float32)
    logits[::7] = logits[3]  # ties around the cut
    for k in (1, 5, 37, 299, 300, 500):
        t = torch.from_numpy(logits.copy())
        v, _ = torch.topk(t, min(k, t.size(-1)))
        t[t < v[-1]] = -float("inf")
        assert np.array_equal(apply_top_k(logits, k), t.numpy()), k


def test_softmax_zero_for_neg_inf():
    p = softmax(np.array([0.0, -np.inf, 1.0], dtype=np.float32))
    assert p.dtype == np.float32 and p[1] == 0 and abs(p.sum() - 1) < 1e-6


def test_temperature_zero_is_argmax_and_draws_nothing():
    logits = np.array([0.1, 3.0, 2.9, -1.0], dtype=np.float32)
    g = np.random.default_rng(0)
    state = g.bit_generator.state
    token, probs = sample(logits, 0, g, top_k=2, top_p=0.5)
    assert token == 1
    assert probs.tolist() == [0, 1, 0, 0]
    assert g.bit_generator.state == state, "temp == 0 consumed a random number"


def test_sample_consumes_exactly_one_number_and_uses_temperature():
    logits = np.log(np.array([0.1, 0.2, 0.3, 0.4], dtype=np.float32))
    g = np.random.default_rng(11)
    token, probs = sample(logits, 0.5, g)
    u = np.random.default_rng(11).random()
    want_probs = np.array([0.01, 0.04, 0.09, 0.16]) / 0.30  # softmax(log p / 0.5) = p^2 / sum
    np.testing.assert_allclose(probs, want_probs, rtol=1e-5)
    assert token == naive_draw(want_probs, u)
    assert g.random() == np.random.default_rng(11).random(2)[1]


def test_sampling_frequencies_follow_probs():
    logits = np.array([0.0, 1.0, 2.0], dtype=np.float32)
    g = np.random.default_rng(1)
    counts = np.bincount([sample(logits, 1.0, g)[0] for _ in range(6000)], minlength=3)
    want = sampling.softmax(logits) * 6000
    # 5 standard deviations of a binomial count: fails only if the draw is biased
    assert np.all(np.abs(counts - want) < 5 * np.sqrt(want)), (counts, want)


def test_softmax_rows_sum_to_one_and_survive_large_logits():
    x = np.array([[1000.0, 999.0, -np.inf], [0.0, 0.0, 0.0]], dtype=np.float32)
    p = softmax(x)
    np.testing.assert_allclose(p.sum(axis=-1), 1.0, rtol=1e-6)
    assert p[0, 2] == 0.0 and np.isfinite(p).all()
