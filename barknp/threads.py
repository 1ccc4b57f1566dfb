"""Thread count for both engines barknp computes with: the BLAS behind NumPy, and Numba.

NumPy exposes no call to set its BLAS threads, so this finds the OpenBLAS (or MKL) library NumPy
loaded and calls its own setter through ctypes, as threadpoolctl does, without the dependency.

The two engines' thread pools do not share cores politely: after a call returns, OpenBLAS's workers
(and the OpenMP workers behind Numba's parallel loops) keep spinning for a while, waiting for the
next call. A parallel Numba loop that starts right after a BLAS product therefore fights BLAS's
spinning worker for the second core; measured on 2 cores, a layer norm of 887 rows took 2-3.5 ms
that way against 0.6 ms serial, a softmax block 3.5-4 ms against 0.9. So the kernels that run
between BLAS products are serial, and only the decode step's kernels, which run with no BLAS call
between them (``rows_matmul``, ``attend_rows``), spread over threads.

A forward over many rows (a prefill, a fine pass) goes further and never lets BLAS thread at all:
:func:`forward_workers` sets BLAS to one thread and hands out independent work to Python threads
of its own (:class:`Workers`): chunks of rows for everything outside attention, heads for
attention. No engine's worker is left spinning while another computes, the small attention
products (K = head_dim) pay no per-call hand-off, and the serial kernels (released from the GIL)
run on both cores. Measured on the 2-core machine (medians of 15 alternating runs): coarse prefill
-3 %, fine pass -15 % (benchmarks/NOTES.md, session 4).

:func:`run_ahead` runs such a forward on a helper thread while the calling thread does something
else, one thread each (a coarse window's prefill beside the previous window's decode steps), and
the caller then helps finish it: its workers' pool is a queue from which a free thread takes the
shares nobody has started.

Both counts belong to the process, and barknp changes and restores them around the calls above:
run one generation per process at a time (two in threads of one process would undo each other's
settings and oversubscribe the cores), and use processes for parallel generations.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import functools
import glob
import os
import threading
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import numba
import numpy as np

from .allocator import keep_freed_memory
from .errors import check_number

# Setter symbols by library family, newest spellings first.
_SETTERS = (
    "scipy_openblas_set_num_threads64_",
    "scipy_openblas_set_num_threads",
    "openblas_set_num_threads64_",
    "openblas_set_num_threads",
    "MKL_Set_Num_Threads",
)
_GETTERS = (
    "scipy_openblas_get_num_threads64_",
    "scipy_openblas_get_num_threads",
    "openblas_get_num_threads64_",
    "openblas_get_num_threads",
    "MKL_Get_Max_Threads",
)


def _blas_libraries() -> list[ctypes.CDLL]:
    """The BLAS shared libraries NumPy may use: those bundled with its wheels (numpy.libs/ or
    numpy/.libs), then any BLAS or MKL library already loaded into the process (a distribution's
    or conda's NumPy links its BLAS from elsewhere; Linux's /proc/self/maps lists it)."""
    root = os.path.dirname(os.path.dirname(np.__file__))
    patterns = [os.path.join(root, "numpy.libs", "*blas*"), os.path.join(os.path.dirname(np.__file__), ".libs", "*blas*")]
    paths = [path for pattern in patterns for path in sorted(glob.glob(pattern))]
    try:
        with open("/proc/self/maps") as maps:
            loaded = {line.split()[-1] for line in maps if line.rstrip().endswith(".so") or ".so." in line}
        paths += sorted(p for p in loaded if "blas" in os.path.basename(p) or "mkl_rt" in os.path.basename(p))
    except OSError:  # not Linux: the bundled libraries only
        pass
    libs = []
    for path in dict.fromkeys(paths):
        try:
            libs.append(ctypes.CDLL(path))
        except OSError:
            continue
    return libs


@functools.lru_cache(maxsize=None)
def _blas_function(names: tuple[str, ...]):
    """The first of ``names`` that NumPy's BLAS exports, or None. Looked up once: attention switches
    BLAS threads per layer, and finding the library takes ~0.15 ms, the call itself microseconds."""
    for lib in _blas_libraries():
        for name in names:
            fn = getattr(lib, name, None)
            if fn is not None:
                return fn
    return None


@functools.lru_cache(maxsize=1)
def _warn_no_blas() -> None:  # once per process
    warnings.warn("barknp: NumPy's BLAS library (OpenBLAS or MKL) was not found, so the thread count "
                  "applies to Numba's kernels only", RuntimeWarning, stacklevel=3)


def _call_first(names, *args):
    fn = _blas_function(names)
    return None if fn is None else fn(*args)


def set_num_threads(n: int) -> None:
    """Use ``n`` threads for matrix products (BLAS) and for Numba's parallel kernels.

    BLAS's count belongs to the process, Numba's to the calling thread (a new thread starts at
    Numba's default, all cores): call it on the thread that generates."""
    n = check_number("threads", n, 1, integer=True)
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    if _blas_function(_SETTERS) is None:
        _warn_no_blas()
    _call_first(_SETTERS, ctypes.c_int(n))


def get_num_threads() -> dict[str, int | None]:
    """{'numba': threads, 'blas': threads or None if the BLAS could not be found}."""
    return {"numba": numba.get_num_threads(), "blas": _call_first(_GETTERS)}


@contextlib.contextmanager
def single_threaded_blas():
    """Run the body with BLAS on one thread (for code that runs its own worker threads); yields
    the BLAS thread count it had (1 if unknown) and restores both engines' counts afterwards."""
    before = get_num_threads()
    if not before["blas"] or before["blas"] <= 1:
        yield 1
        return
    set_num_threads(1)
    try:
        yield before["blas"]
    finally:
        set_num_threads(before["blas"])
        numba.set_num_threads(before["numba"])


class Workers:
    """Threads that share a many-row forward's independent work, or none (``count`` 1: run inline).

    Made by :func:`forward_workers`, which owns the pool; pass it down to the functions that split
    work. Results do not depend on the count beyond float32 rounding.
    """

    def __init__(self, pool: ThreadPoolExecutor | None = None, count: int = 1):
        self.pool = pool
        self.count = count if pool is not None else 1

    def map(self, fn: Callable, items: list) -> list:
        """[fn(item) for item in items]: the calling thread takes the first item, the pool's threads
        the rest (give ``count`` items for one each); a worker's exception is raised here."""
        if self.pool is None or len(items) <= 1:
            return [fn(item) for item in items]
        return self._run([functools.partial(fn, item) for item in items])

    def _run(self, calls: list[Callable[[], object]]) -> list:
        """Every call's result, in order: the first computed here, the others offered to the pool.
        A call no pool thread has started by the time this thread is free, it runs itself, so no
        share waits for a busy thread (the pool of :func:`run_ahead` may have none free)."""
        pending = [(self.pool.submit(call), call) for call in calls[1:]]
        results = [calls[0]()]
        for job, call in pending:
            results.append(call() if job.cancel() else job.result())
        return results

    def shares(self, n: int) -> list[slice]:
        """[0, n) cut into ``count`` (or fewer, when n is small) near-equal contiguous slices."""
        step = -(-n // self.count)
        return [slice(i, min(n, i + step)) for i in range(0, n, step)]

    def map_rows(self, fn: Callable[..., np.ndarray], width: int, *arrays: np.ndarray) -> np.ndarray:
        """fn applied to matching chunks of rows: arrays (N, ...) -> (N, width) float32.

        fn must treat rows independently: it gets chunks (n, ...) and returns (n, width). The
        calling thread computes the first chunk while the workers compute the others.
        """
        n = arrays[0].shape[0]
        if self.count == 1 or n < 2 * self.count:
            return fn(*arrays)
        out = np.empty((n, width), dtype=np.float32)
        chunks = self.shares(n)

        def run(chunk: slice) -> None:
            out[chunk] = fn(*(a[chunk] for a in arrays))

        self._run([functools.partial(run, chunk) for chunk in chunks])
        return out


SERIAL = Workers()  # no threads: work runs where it is called


@contextlib.contextmanager
def forward_workers(rows: int, min_rows: int, given: Workers | None = None) -> Iterator[Workers]:
    """Workers for a forward over ``rows`` rows: :data:`SERIAL`, with the thread counts untouched,
    up to ``min_rows`` (a decode step, whose Numba kernels thread themselves); beyond it, one
    Python thread per BLAS thread, BLAS single-threaded meanwhile (see the module docstring), and
    malloc told to keep freed memory (:func:`barknp.allocator.keep_freed_memory`). ``given``
    workers (those of :func:`run_ahead`) are used as they are, thread counts untouched."""
    if rows <= min_rows:
        yield SERIAL
        return
    keep_freed_memory()  # its temporaries come back every layer: no fresh pages for each
    if given is not None:
        yield given
        return
    with single_threaded_blas() as count:
        if count == 1:
            yield SERIAL
            return
        # The calling thread is one of the workers: it takes the first share of every split. Numba's
        # thread count belongs to each thread, and a new thread starts at the process default: a
        # worker's share (17-32 rows of a batch split in two reach the parallel decode kernels) runs
        # on one thread, as BLAS does.
        with ThreadPoolExecutor(count - 1, thread_name_prefix="barknp", initializer=numba.set_num_threads,
                                initargs=(1,)) as pool:
            yield Workers(pool, count)


class _HelpQueue:
    """The pool of :func:`run_ahead`'s workers: its tasks run on whichever thread calls
    :meth:`help`, or on the thread that submitted them once it is free (``Workers._run``)."""

    def __init__(self):
        self._tasks: collections.deque = collections.deque()
        self._cond = threading.Condition()
        self._closed = False

    def submit(self, call: Callable[[], object]) -> Future:
        job: Future = Future()
        with self._cond:
            # Shares their submitter took back stay queued until a helper pops them, and each holds
            # its layer's arrays: drop them now (they lead the queue), not at the next help().
            while self._tasks and self._tasks[0][0].cancelled():
                self._tasks.popleft()
            self._tasks.append((job, call))
            self._cond.notify()
        return job

    def close(self) -> None:
        """No more tasks will come: :meth:`help` returns once the queue is empty."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def help(self) -> None:
        """Run queued tasks (those their submitter has not taken back) until the queue is closed."""
        while True:
            with self._cond:
                while not self._tasks and not self._closed:
                    self._cond.wait()
                if not self._tasks:
                    return
                job, call = self._tasks.popleft()
            try:
                if job.set_running_or_notify_cancel():  # False: its submitter took it back
                    job.set_result(call())
            except BaseException as error:  # noqa: BLE001 - handed to the submitter, once it ran
                if not job.running():  # a Ctrl-C before it started: its submitter takes it back
                    raise
                job.set_exception(error)


@numba.njit(parallel=True, cache=True)
def _first_parallel_kernel(n):  # any parallel kernel: Numba picks its threading layer on the first
    total = 0
    for i in numba.prange(n):
        total += i
    return total


def _parallel_launches_are_thread_safe() -> bool:
    """Whether two threads may run Numba's parallel kernels at once: not on its 'workqueue'
    threading layer (the fallback without OpenMP or TBB), which aborts the process instead."""
    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet, so no layer is chosen
        _first_parallel_kernel(2)
        layer = numba.threading_layer()
    return layer != "workqueue"


@contextlib.contextmanager
def run_ahead(fn: Callable[[Workers], object]) -> Iterator[Future | None]:
    """Compute ``fn(workers)``, a many-row forward, on a helper thread while the body runs on this
    one; on leaving the body, this thread helps finish it. Yields a Future of fn's result, done
    once the block is left; or None, with fn never called, where it cannot run beside the body
    (BLAS on one thread: nothing to share; Numba's parallel kernels not safe from two threads).

    For a body of decode steps (memory-bound) and a forward that is compute-bound, the two share
    the cores better side by side, one thread each, than one after the other on all threads: on
    2 cores, 60 coarse decode steps run 1.6-1.7x faster on two threads than on one, an 827-id
    prefill 1.6x, and side by side neither measurably slows the other (benchmarks/NOTES.md,
    session 8). Meanwhile BLAS and this thread's Numba kernels run on one thread; the forward's
    shares of work (``fn``'s workers: as many as BLAS had threads) go to the helper, to
    ``count - 2`` more pool threads, and to this thread once the body is done. Both counts are
    restored on leaving. An error in the body still waits for the forward to finish.
    """
    before = get_num_threads()
    count = before["blas"] or 1
    if count < 2 or not _parallel_launches_are_thread_safe():
        yield None
        return
    queue, result = _HelpQueue(), Future()
    workers = Workers(queue, count)

    def helper() -> None:
        numba.set_num_threads(1)  # Numba's thread count is per thread: this one's kernels, serial
        try:
            if result.set_running_or_notify_cancel():  # False: the caller cancelled it
                try:
                    result.set_result(fn(workers))
                except BaseException as error:  # noqa: BLE001 - handed to the caller through the Future
                    result.set_exception(error)
        finally:
            queue.close()

    def serve() -> None:  # a further pool thread, beyond two cores
        numba.set_num_threads(1)
        queue.help()

    threads = [threading.Thread(target=helper, name="barknp-ahead", daemon=True)]
    threads += [threading.Thread(target=serve, name="barknp-ahead", daemon=True) for _ in range(count - 2)]
    started: list[threading.Thread] = []
    try:
        set_num_threads(1)  # BLAS for every thread, Numba for this one
        for thread in threads:
            thread.start()
            started.append(thread)
        yield result
    finally:
        try:
            if not started:  # no helper: nobody would run fn or close the queue
                result.cancel()
                queue.close()
            _finish(queue, started)
        finally:
            set_num_threads(count)
            numba.set_num_threads(before["numba"])


def _finish(queue: _HelpQueue, threads: list[threading.Thread]) -> None:
    """Help with the queue's remaining shares and wait for the threads, through any Ctrl-C, which is
    raised once they are done: leaving earlier would leave the helper computing, and the caller
    to restore thread counts the helper's forward still relies on."""
    interrupted = None
    while True:
        try:
            queue.help()  # this thread is free: it takes the forward's remaining shares
            for thread in threads:
                thread.join()
            break
        except KeyboardInterrupt as error:
            interrupted = error
    if interrupted is not None:
        raise interrupted
