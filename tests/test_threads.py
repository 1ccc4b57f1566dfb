"""barknp.threads: the workers that split a many-row forward, and the thread counts they borrow."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import num_threads
from hypothesis import given, settings
from hypothesis import strategies as st

from barknp import threads
from barknp.nn.attention import head_shares
from barknp.threads import SERIAL, forward_workers


@pytest.fixture
def two_blas_threads():
    if threads.get_num_threads()["blas"] is None:
        pytest.skip("NumPy's BLAS library was not found, so its threads cannot be set")
    with num_threads(2):
        yield


@settings(deadline=None, max_examples=60)
@given(B=st.integers(1, 9), H=st.integers(1, 16), count=st.integers(1, 5))
def test_head_shares_cover_every_pair_once_in_at_most_count_shares(B, H, count):
    shares = head_shares(B, H, count)
    assert 1 <= len(shares) <= count
    pairs = [(b, h) for share in shares for b, heads in share for h in range(heads.start, heads.stop)]
    assert pairs == [(b, h) for b in range(B) for h in range(H)]  # in order, none twice
    sizes = [sum(heads.stop - heads.start for _, heads in share) for share in shares]
    assert max(sizes) == -(-B * H // count)  # no share bigger than an even split's


@settings(deadline=None, max_examples=60)
@given(n=st.integers(1, 200), count=st.integers(1, 5))
def test_row_shares_cover_every_row_once(n, count):
    shares = threads.Workers(object(), count).shares(n)  # any pool: shares only reads the count
    assert 1 <= len(shares) <= count
    assert [i for share in shares for i in range(share.start, share.stop)] == list(range(n))
    assert max(share.stop - share.start for share in shares) == -(-n // count)


def test_forward_workers_borrow_blas_threads_and_give_them_back(two_blas_threads):
    with forward_workers(rows=4, min_rows=16) as workers:
        assert workers is SERIAL and threads.get_num_threads()["blas"] == 2  # a decode step: untouched
    with forward_workers(rows=100, min_rows=16) as workers:
        assert workers.count == 2
        assert threads.get_num_threads()["blas"] == 1  # BLAS is single-threaded under the workers
    assert threads.get_num_threads() == {"numba": 2, "blas": 2}


@pytest.mark.parametrize("n", [1, 2, 3, 7, 100])
def test_map_rows_on_two_workers_equals_one_call(two_blas_threads, n):
    rng = np.random.default_rng(n)
    x = rng.standard_normal((n, 5)).astype(np.float32)
    y = rng.standard_normal((n, 3)).astype(np.float32)
    w = rng.standard_normal((8, 8)).astype(np.float32)

    def fn(a, b):  # row-independent: (k, 5), (k, 3) -> (k, 8)
        return np.concatenate([a, b], axis=1) @ w

    with forward_workers(rows=100, min_rows=16) as workers:
        got = workers.map_rows(fn, 8, x, y)
    np.testing.assert_allclose(got, fn(x, y), rtol=1e-6, atol=1e-6)


def test_a_workers_exception_reaches_the_caller(two_blas_threads):
    def fn(a):
        if a[0, 0] > 0:  # only the second chunk fails: it runs on a pool thread
            raise ValueError("second chunk")
        return a

    x = np.array([[-1.0], [-1.0], [1.0], [1.0]], dtype=np.float32)
    with forward_workers(rows=100, min_rows=16) as workers, pytest.raises(ValueError, match="second chunk"):
        workers.map_rows(fn, 1, x)
    assert threads.get_num_threads()["blas"] == 2


def test_freed_memory_is_kept_for_the_next_forward():
    """After keep_freed_memory (which every many-row forward calls), an array of a size just
    freed takes no fresh pages: the 16 MB below would otherwise cost hundreds of page faults."""
    import resource

    from barknp.allocator import keep_freed_memory

    def faults_of_a_recurring_array() -> int:
        a = np.ones(4 << 20, dtype=np.float32)  # 16 MB, like a prefill's MLP rows
        del a
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        b = np.ones(4 << 20, dtype=np.float32)  # the same size again, touched in full
        assert b[-1] == 1.0
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip(f"the C library is not glibc ({platform.libc_ver()}): malloc's thresholds cannot be set")
    assert keep_freed_memory() is True
    assert keep_freed_memory.cache_info().misses == 1  # mallopt once per process, then cached
    faults = [faults_of_a_recurring_array() for _ in range(3)]
    assert max(faults) <= 8, f"page faults re-allocating a freed 16 MB array: {faults}"


def test_many_row_forwards_keep_freed_memory(monkeypatch):
    calls = []
    monkeypatch.setattr(threads, "keep_freed_memory", lambda: calls.append(1))
    with forward_workers(3, 16):
        pass
    assert calls == []  # a decode step allocates nothing large
    with forward_workers(100, 16):
        pass
    assert calls == [1]


# --- run_ahead: a forward beside other work ------------------------------------------------


def test_shares_no_pool_thread_has_started_run_on_the_caller():
    """A pool with no thread free (run_ahead's, while its caller is busy): the calling thread
    takes its shares back and runs them itself, in order."""
    workers = threads.Workers(threads._HelpQueue(), 3)
    assert workers.map(lambda i: i * i, [1, 2, 3]) == [1, 4, 9]
    x = np.arange(12, dtype=np.float32).reshape(6, 2)
    np.testing.assert_array_equal(workers.map_rows(lambda a: a[:, ::-1] * 2, 2, x), x[:, ::-1] * 2)


def test_shares_taken_back_do_not_pile_up_in_the_queue():
    """Each holds its layer's arrays: a prefill of 12 layers kept them all alive (120 MB more
    peak RSS at bark-small) until the queue was next drained."""
    queue = threads._HelpQueue()
    workers = threads.Workers(queue, 2)
    for _ in range(12):
        assert workers.map(lambda a: float(a.sum()), [np.ones(4), np.ones(5)]) == [4.0, 5.0]
    assert len(queue._tasks) <= 1


def test_run_ahead_runs_beside_the_body_then_gives_the_threads_back(two_blas_threads):
    x = np.random.default_rng(0).standard_normal((64, 8)).astype(np.float32)
    seen = {}

    def forward(workers):  # what a prefill does with its workers: shares of rows
        seen["count"] = workers.count
        return workers.map_rows(lambda a: np.tanh(a) * 3, 8, x)

    with threads.run_ahead(forward) as job:
        assert job is not None
        inside = threads.get_num_threads()
        assert inside == {"numba": 1, "blas": 1}, inside  # the body and the forward: one thread each
    assert job.done() and seen["count"] == 2
    np.testing.assert_allclose(job.result(), np.tanh(x) * 3, rtol=1e-6)
    assert threads.get_num_threads() == {"numba": 2, "blas": 2}


def test_run_ahead_beyond_two_threads_serves_shares_from_more_pool_threads():
    if threads.get_num_threads()["blas"] is None:
        pytest.skip("NumPy's BLAS library was not found, so its threads cannot be set")
    x = np.random.default_rng(1).standard_normal((90, 4)).astype(np.float32)

    def forward(workers):  # three shares: the helper's, the pool thread's, the caller's when free
        return workers.count, workers.map_rows(lambda a: a * 2, 4, x)

    with num_threads(3):
        with threads.run_ahead(forward) as job:
            pass
        count, got = job.result()
        assert threads.get_num_threads()["blas"] == 3
    assert count == 3
    np.testing.assert_array_equal(got, x * 2)


def test_run_ahead_on_one_thread_computes_nothing():
    calls = []
    with num_threads(1), threads.run_ahead(calls.append) as job:
        assert job is None
    assert calls == []


def test_run_ahead_hands_the_forwards_error_to_the_caller(two_blas_threads):
    def forward(workers):
        raise ValueError("the forward failed")

    with threads.run_ahead(forward) as job:
        pass
    with pytest.raises(ValueError, match="the forward failed"):
        job.result()
    assert threads.get_num_threads() == {"numba": 2, "blas": 2}


def test_run_ahead_finishes_and_restores_through_a_ctrl_c(two_blas_threads, monkeypatch):
    """A Ctrl-C while the caller waits for the forward (the first wait raises KeyboardInterrupt, as
    a signal landing there would): the forward still finishes, the helper thread is gone, the
    thread counts are back, and the KeyboardInterrupt comes out once, after."""
    import threading

    help_once = threads._HelpQueue.help
    interrupted = []

    def help_then_interrupt(queue):
        if not interrupted:
            interrupted.append(True)
            raise KeyboardInterrupt
        return help_once(queue)

    monkeypatch.setattr(threads._HelpQueue, "help", help_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        with threads.run_ahead(lambda workers: sum(range(10**6))) as job:
            pass
    assert interrupted and job.done() and job.result() == sum(range(10**6))
    assert not [t for t in threading.enumerate() if t.name == "barknp-ahead"]
    assert threads.get_num_threads() == {"numba": 2, "blas": 2}


def test_pool_workers_run_numba_kernels_on_one_thread(two_blas_threads):
    """Numba's thread count belongs to each thread: the pool's workers set theirs to one, as BLAS is
    under them, so that a worker's share never spreads over threads the other shares are using."""
    import threading

    import numba

    pool_ran = threading.Event()

    def caller_share():  # waits until the pool's worker has run its share
        assert pool_ran.wait(10)

    def worker_share():
        pool_ran.set()
        return numba.get_num_threads()

    with forward_workers(rows=100, min_rows=16) as workers:
        _, seen = workers._run([caller_share, worker_share])
    assert seen == 1


@pytest.mark.parametrize("bad", [0, -2, "x", 1.5, None, True])
def test_set_num_threads_rejects_what_is_not_a_count(bad):
    from barknp import BarkError, set_num_threads

    with pytest.raises(BarkError, match="threads: must be"):
        set_num_threads(bad)


def test_set_num_threads_warns_once_where_numpys_blas_is_not_found(monkeypatch):
    from barknp import threads

    monkeypatch.setattr(threads, "_blas_function", lambda names: None)
    threads._warn_no_blas.cache_clear()
    before = threads.numba.get_num_threads()
    try:
        with pytest.warns(RuntimeWarning, match="applies to Numba's kernels only"):
            threads.set_num_threads(1)
        assert threads.numba.get_num_threads() == 1  # Numba's count is still set
    finally:
        threads.numba.set_num_threads(before)
        threads._warn_no_blas.cache_clear()
