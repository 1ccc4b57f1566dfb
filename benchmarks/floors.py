"""This machine's two ceilings, measured the way barknp's work uses them.

* GEMV bandwidth: token-by-token decoding reads every weight once per token, so its floor is
  weight bytes / the bandwidth of a float32 matrix-vector product over a matrix far larger
  than the caches.
* sgemm throughput: prefills, fine windows and the codec are matrix products, so their floor is
  FLOPs / float32 GEMM throughput.

    python benchmarks/floors.py
"""

from __future__ import annotations

import time

import numpy as np


def _best(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def gemv_bandwidth_gbs(rows: int = 16_384, cols: int = 4_096, repeat: int = 7) -> float:
    """GB/s of ``x @ W.T`` with W (rows, cols) float32 (256 MiB by default, past any cache)."""
    w = np.random.default_rng(0).standard_normal((rows, cols), dtype=np.float32)
    x = np.ones((1, cols), dtype=np.float32)
    return w.nbytes / _best(lambda: x @ w.T, repeat) / 1e9


def sgemm_gflops(n: int = 2_048, repeat: int = 5) -> float:
    """GFLOP/s of an (n, n) @ (n, n) float32 product."""
    rng = np.random.default_rng(1)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    return 2 * n**3 / _best(lambda: a @ b, repeat) / 1e9


def peak_rss_mb() -> float:
    """This process's peak RSS in MB (1e6 bytes, as every other size the benchmarks print; VmHWM:
    getrusage's ru_maxrss would include the parent's peak inherited through fork and exec);
    getrusage where /proc is missing. Both count kB (1024 bytes)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024 / 1e6
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6


def main() -> None:
    print(f"{'ceiling':<24}{'measured':>12}")
    print(f"{'GEMV bandwidth':<24}{gemv_bandwidth_gbs():>9.1f} GB/s")
    print(f"{'sgemm throughput':<24}{sgemm_gflops():>9.1f} GFLOP/s")


if __name__ == "__main__":
    main()
