"""barknp's three GPT workloads alone, at the bark-small shape with random weights, by thread count.

    python benchmarks/bench_stages.py [--threads 1 2] [--tokens 40]

Prints, for each thread count: semantic decode ms/token (after the 513-id merged prefill), one
coarse window prefill (887 positions: 256 semantic + infer + 630 history) and one fine pass
(1024 frames), each beside its floor from benchmarks/floors.py measured in the same run. Decode
is the median of ``--tokens`` steps (the first five dropped); the prefill and the fine pass are one
timed run each, after one untimed run. The floor counts the work a forward must do: for the causal
prefill, each query's visible keys only.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))
sys.path.insert(0, str(REPO / "benchmarks"))

import numpy as np  # noqa: E402
from floors import gemv_bandwidth_gbs, sgemm_gflops  # noqa: E402
from random_weights import random_gpt_tensors  # noqa: E402

from barknp.config import GPTConfig  # noqa: E402
from barknp.models.fine import FineGPT  # noqa: E402
from barknp.models.gpt import CausalGPT  # noqa: E402
from barknp.threads import set_num_threads  # noqa: E402

L, C, H = 12, 768, 12


def forward_flops(T: int, causal: bool, vocab: int) -> float:
    """A T-position forward from an empty cache: linear layers (12 C^2 multiply-adds per position
    per layer), attention (a query and a value product per visible key: 2 T (T + 1) C per layer
    when causal, 4 T^2 C when every key is visible), and ``vocab`` head outputs for one position."""
    attention = 2 * T * (T + 1) * C if causal else 4 * T * T * C
    return L * (2 * 12 * C * C * T + attention) + 2 * C * vocab


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--tokens", type=int, default=40)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    semantic = CausalGPT(GPTConfig(L, H, C, 129_600, 10_048), random_gpt_tensors(L, C, 129_600, 10_048, seed=1), "semantic")
    coarse = CausalGPT(GPTConfig(L, H, C, 12_096, 12_096), random_gpt_tensors(L, C, 12_096, 12_096, seed=2), "coarse")
    fine = FineGPT(GPTConfig(L, H, C, 1_056, 1_056), random_gpt_tensors(L, C, 1_056, 1_056, seed=3, fine=True))
    prompt = np.concatenate([rng.integers(10_048, 129_595, (1, 512)), [[129_599]]], axis=1)  # (1, 513)
    window = rng.integers(0, 12_096, (1, 887))  # (1, 887)
    codes = rng.integers(0, 1_024, (1, 1024, 8))  # (1, 1024, 8)

    decode_bytes = sum(a.nbytes for b in semantic.layers for m in (b.attn.att_proj, b.attn.out_proj,
                       b.mlp.in_proj, b.mlp.out_proj) for a in (m.weight,)) + semantic.lm_head.weight.nbytes
    gbs, gflops = gemv_bandwidth_gbs(), sgemm_gflops()
    floors = {
        "semantic decode, ms/token": decode_bytes / (gbs * 1e9) * 1e3,
        "coarse prefill 887, ms": forward_flops(887, True, 12_096) / (gflops * 1e9) * 1e3,
        "fine pass 1024, ms": (forward_flops(1024, False, 0) + 2 * 1024 * C * 1_056) / (gflops * 1e9) * 1e3,
    }
    results = {}
    for n in args.threads:
        set_num_threads(n)
        cache = semantic.new_cache()
        semantic.forward(prompt, cache, merge_context=True, last_only=True)
        steps = []
        for _ in range(args.tokens):
            t0 = time.perf_counter()
            semantic.forward(np.array([[7]]), cache, last_only=True)
            steps.append(time.perf_counter() - t0)
        results.setdefault("semantic decode, ms/token", []).append(1e3 * float(np.median(steps[5:])))
        coarse.forward(window, coarse.new_cache(), last_only=True)  # warm-up (Numba compiles)
        t0 = time.perf_counter()
        coarse.forward(window, coarse.new_cache(), last_only=True)
        results.setdefault("coarse prefill 887, ms", []).append(1e3 * (time.perf_counter() - t0))
        fine.forward(2, codes)
        t0 = time.perf_counter()
        fine.forward(3, codes)
        results.setdefault("fine pass 1024, ms", []).append(1e3 * (time.perf_counter() - t0))
    print(f"bark-small shape, random weights; floors: GEMV {gbs:.1f} GB/s, sgemm {gflops:.1f} GFLOP/s")
    head = "".join(f"{f'{n} thread' + ('s' if n > 1 else ''):>12}" for n in args.threads)
    print(f"{'workload':<28}{head}{'floor':>10}{'best/floor':>12}")
    for name, values in results.items():
        row = "".join(f"{v:>12.1f}" for v in values)
        print(f"{name:<28}{row}{floors[name]:>10.1f}{min(values) / floors[name]:>12.2f}")


if __name__ == "__main__":
    main()
