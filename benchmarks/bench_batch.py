"""Decode throughput of batched semantic generation at the bark-small shape.

    python benchmarks/bench_batch.py [--batches 1 2 4 8] [--tokens 48] [--threads N] [--size small]
                                     [--repeat 2] [--kv-cache float32|float16]

Random weights (tools/random_weights.py, bark-small: 12 layers, width 768, no linear biases),
drawn once in memory. For each batch size B the real batched loop,
``barknp.generation.batch.generate_semantic_batch``, makes exactly ``--tokens`` tokens per row
(``allow_early_stop=False`` and a duration limit that stops every row after the same token), and
a wrapper times its forward calls. Decode tokens/s = B * (tokens - 1) / (time from the start of
the first decode forward to the end of the loop): forward, per-row draws and loop overhead
included, the one 513-id prefill excluded (reported beside it). Prints a table and the
batch-8 / batch-1 ratio.

Why batching helps: a one-row decode step is a chain of matrix-VECTOR products that read every
weight (about 4 bytes x 12 x 12 C^2 = 340 MB at bark-small, plus a 31 MB LM head) for 2 flops per
weight: memory-bound. B rows read the weights once for 2B flops per weight, so until the
products become compute-bound a step costs little more than one row's.
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


class TimedModel:
    """A causal GPT whose forward calls are timed (start of each call, end of the last)."""

    def __init__(self, model):
        self.model = model
        self.starts: list[float] = []
        self.ends: list[float] = []

    def new_cache(self, *args, **kwargs):
        return self.model.new_cache(*args, **kwargs)

    def forward(self, *args, **kwargs):
        self.starts.append(time.perf_counter())
        out = self.model.forward(*args, **kwargs)
        self.ends.append(time.perf_counter())
        return out


class FixedTokenizer:
    """Stands in for BERT: every text becomes the same 24 ids (the text does not matter here)."""

    def encode(self, text):
        return list(range(1000, 1024))


def build_semantic(size: str, kv_cache: str = "float32"):
    from bench_pipeline import SEEDS, gpt_config
    from random_weights import random_gpt_tensors

    from barknp.models.gpt import CausalGPT

    c = gpt_config(size, "semantic")
    t = random_gpt_tensors(c.num_layers, c.hidden_size, c.input_vocab_size, c.output_vocab_size,
                           SEEDS["semantic"], bias=c.bias)
    return CausalGPT(c, t, name="semantic", kv_cache=kv_cache)


def measure(model, batch: int, tokens: int) -> tuple[float, float, float]:
    """(prefill seconds, decode tokens/s, share of decode time inside forward) for one batched
    run of ``tokens`` tokens per row."""
    from barknp.constants import SEMANTIC_RATE_HZ
    from barknp.generation.batch import generate_semantic_batch

    timed = TimedModel(model)
    t0 = time.perf_counter()
    out = generate_semantic_batch(
        timed, FixedTokenizer(), ["text"] * batch, temp=0.7, allow_early_stop=False,
        max_gen_duration_s=(tokens - 0.5) / SEMANTIC_RATE_HZ, rngs=list(range(batch)), silent=True,
    )
    end = time.perf_counter()
    assert all(len(o) == tokens for o in out), [len(o) for o in out]
    prefill = timed.ends[0] - t0
    decode = end - timed.starts[1]
    in_forward = sum(e - s for s, e in zip(timed.starts[1:], timed.ends[1:]))
    return prefill, batch * (tokens - 1) / decode, in_forward / decode


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--tokens", type=int, default=48, help="tokens per row (default 48)")
    p.add_argument("--threads", type=int, default=None, help="BLAS and Numba threads (default: as they are)")
    p.add_argument("--size", choices=["small", "large"], default="small")
    p.add_argument("--repeat", type=int, default=2, help="runs per batch size; the best is kept")
    p.add_argument("--kv-cache", choices=["float32", "float16"], default="float32",
                   help="the KV caches' dtype (float16: the reduced-precision option)")
    args = p.parse_args()

    from barknp import threads

    if args.threads:
        threads.set_num_threads(args.threads)
    model = build_semantic(args.size, args.kv_cache)
    measure(model, 1, 4)  # warm-up: Numba kernels, page faults of the weights
    print(f"semantic decode, bark-{args.size} shape, {args.kv_cache} KV cache, {args.tokens} tokens per row, "
          f"threads {threads.get_num_threads()}")
    print(f"{'batch':>5} {'prefill s':>10} {'tokens/s':>10} {'ms/step':>8} {'forward %':>9} {'x batch 1':>9}")
    rates = {}
    for b in args.batches:
        runs = [measure(model, b, args.tokens) for _ in range(args.repeat)]
        prefill = min(r[0] for r in runs)
        best = max(runs, key=lambda r: r[1])
        rates[b] = best[1]
        ratio = f"{rates[b] / rates[1]:>9.2f}" if 1 in rates else f"{'-':>9}"  # batch 1 not measured yet
        print(f"{b:>5} {prefill:>10.3f} {rates[b]:>10.1f} {1000 * b / rates[b]:>8.1f} {100 * best[2]:>9.1f} {ratio}")
    if 1 in rates and 8 in rates:
        print(f"batch-8 / batch-1 decode throughput: {rates[8] / rates[1]:.2f}x (target >= 5x)")


if __name__ == "__main__":
    main()
