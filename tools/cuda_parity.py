"""Whole-model parity of the CUDA path against the CPU path, on a real GPU.

    python tools/cuda_parity.py                       # bark-small and bark (large) shapes
    python tools/cuda_parity.py --size small [--seed 0] [--steps 8] [--codec-seconds 2] [--rtol 1e-4]

Random weights (tools/random_weights.py for the GPTs, tools/make_codec_goldens.py for the codec),
the same inputs to both paths; for each size, prints the max absolute and relative (to the
reference's max |value|) error of:
  * semantic: merged 515-id prompt, then cached decode steps; an uncached batch of 2, all its
    logits and a slice of the vocabulary (``vocab=``);
  * semantic batch: two merged prompts in one cache (as batched generation runs it), decode steps;
  * coarse: a prompt, then cached decode steps; an uncached batch of 2, all its logits and one
    codebook's 1024;
  * coarse padded batch: three prompts of different lengths left-padded to one (``pad=``, as
    batched coarse windows run), every position's logits, decode steps, then rows 2 and 0 kept
    (``keep_rows``, as rows finishing leave a batch) for one more step;
  * fine: one full window, codebooks 1 and 7;
  * codec: a few seconds of codes.
Exits 0 when every relative error is within --rtol, 1 when one is not, 2 when the CUDA path
cannot run here (one line on stderr saying why).

A dry run on a machine without a GPU, through numba's simulator (about 40 minutes on the 2-core
machine; every comparison within 1.5e-6 there):
    NUMBA_ENABLE_CUDASIM=1 python tools/cuda_parity.py --size tiny --simulator --steps 1 \
        --coarse-prompt 12 --fine-frames 16 --codec-seconds 0.1
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))

import numpy as np  # noqa: E402

# (layers, width, heads), as tools/reference.py's SIZES (not imported: that module needs torch)
SIZES = {"tiny": (2, 32, 2), "small": (12, 768, 12), "large": (24, 1024, 16)}
VOCABS = {"semantic": (129_600, 10_048), "coarse": (12_096, 12_096), "fine": (1_056, 1_056)}
MERGED_PROMPT = 515  # ids of a merged semantic prompt: 256 text + 256 history + 3, so 259 positions


def build_cpu_models(size: str, seed: int):
    """CPU semantic, coarse, fine GPTs with random weights of ``size``, and the 24 kHz codec."""
    from make_codec_goldens import random_codec_tensors
    from random_weights import random_gpt_tensors

    from barknp.config import CodecConfig, GPTConfig
    from barknp.models.codec import Codec
    from barknp.models.fine import FineGPT
    from barknp.models.gpt import CausalGPT

    n_layer, width, n_head = SIZES[size]
    models = {}
    for i, (name, (vin, vout)) in enumerate(VOCABS.items()):
        fine = name == "fine"
        config = GPTConfig(num_layers=n_layer, num_heads=n_head, hidden_size=width, input_vocab_size=vin,
                           output_vocab_size=vout)
        tensors = random_gpt_tensors(n_layer, width, vin, vout, seed + i, fine=fine)
        models[name] = FineGPT(config, tensors) if fine else CausalGPT(config, tensors, name=name)
    models["codec"] = Codec.from_tensors(CodecConfig(), random_codec_tensors(seed + 3))
    return models


class CharTokenizer:
    """Stands in for BERT where no tokenizer files are at hand (random-weight end-to-end runs and
    tests): one id per character, so any text gives a valid semantic prompt."""

    def encode(self, text: str) -> list[int]:
        return [ord(ch) % 1000 for ch in text]


def errors(ours: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """(max |ours - ref|, that over max |ref|); infinite where the shapes differ or ours holds a
    NaN or infinity, so that such a result can never pass."""
    ours = np.asarray(ours)
    if ours.shape != np.shape(ref) or not np.isfinite(ours).all():
        return math.inf, math.inf
    err = float(np.abs(ours.astype(np.float64) - ref).max())
    return err, err / max(float(np.abs(ref).max()), 1e-30)


def cuda_or_exit(tool: str) -> None:
    """Exit 2 with one line on stderr when the CUDA path cannot run here."""
    from barknp.cuda import cuda_problem

    problem = cuda_problem()
    if problem is not None:
        print(f"{tool}: needs a CUDA GPU that numba can use: {problem}", file=sys.stderr)
        sys.exit(2)


def gpu_name(cuda) -> str:
    """The current GPU's name (the driver may give bytes); the simulator has none."""
    get = getattr(cuda, "get_current_device", None)
    if get is None:
        return "numba's CUDA simulator"
    name = get().name
    return name.decode() if isinstance(name, bytes) else str(name)


def left_padded(rng, vocab: int, lengths: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Random prompts of ``lengths`` left-padded to the longest: ids (B, T) int64, pad (B,) int64."""
    T = max(lengths)
    ids = rng.integers(0, vocab, size=(len(lengths), T))
    return ids, np.array([T - n for n in lengths], dtype=np.int64)


def check_size(size: str, args, dev, check) -> None:
    """Every comparison of one model size; ``check(what, ours, ref)`` records each."""
    from barknp.cuda.models import CUDACausalGPT, CUDACodec, CUDAFineGPT

    t0 = time.perf_counter()
    cpu = build_cpu_models(size, args.seed)
    gpu = {"semantic": CUDACausalGPT(cpu["semantic"], dev), "coarse": CUDACausalGPT(cpu["coarse"], dev),
           "fine": CUDAFineGPT(cpu["fine"], dev), "codec": CUDACodec(cpu["codec"], dev)}
    print(f"size {size} {SIZES[size]}: models built and copied in {time.perf_counter() - t0:.1f} s", flush=True)
    rng = np.random.default_rng(args.seed)
    reported = (0, 1, args.steps)

    # one sequence, then an uncached batch
    for name, prompt_len, merge in (("semantic", MERGED_PROMPT, True), ("coarse", args.coarse_prompt, False)):
        vin = VOCABS[name][0]
        c_cpu, c_gpu = cpu[name].new_cache(1), gpu[name].new_cache(1)
        for step in range(args.steps + 1):
            ids = rng.integers(0, vin, size=(1, prompt_len if step == 0 else 1))
            ref = cpu[name].forward(ids, cache=c_cpu, merge_context=merge and step == 0, last_only=True)
            ours = gpu[name].forward(ids, cache=c_gpu, merge_context=merge and step == 0, last_only=True)
            if step in reported:
                check(f"{name} {'prompt' if step == 0 else f'step {step}'}", ours, ref)
        ids = rng.integers(0, vin, size=(2, min(64, args.coarse_prompt)))
        check(f"{name} uncached batch 2 x {ids.shape[1]}, all logits", gpu[name].forward(ids), cpu[name].forward(ids))
        part = (10_000, 11_024) if name == "coarse" else (0, 1024)  # one coarse codebook; a semantic slice
        check(f"{name} uncached batch, logits {part[0]}-{part[1] - 1} only",
              gpu[name].forward(ids, vocab=part), cpu[name].forward(ids, vocab=part))

    # semantic: a batch of merged prompts in one cache
    vin = VOCABS["semantic"][0]
    c_cpu, c_gpu = cpu["semantic"].new_cache(2), gpu["semantic"].new_cache(2)
    for step in range(args.steps + 1):
        ids = rng.integers(0, vin, size=(2, MERGED_PROMPT if step == 0 else 1))
        ref = cpu["semantic"].forward(ids, cache=c_cpu, merge_context=step == 0, last_only=True)
        ours = gpu["semantic"].forward(ids, cache=c_gpu, merge_context=step == 0, last_only=True)
        if step in reported:
            check(f"semantic batch 2 {'prompt' if step == 0 else f'step {step}'}", ours, ref)

    # coarse: ragged prompts left-padded, then rows leaving the batch
    vin = VOCABS["coarse"][0]
    lengths = [args.coarse_prompt, max(1, args.coarse_prompt - 37), max(1, args.coarse_prompt // 3)]
    prompt, pad = left_padded(rng, vin, lengths)
    fed = [prompt] + [rng.integers(0, vin, size=(3, 1)) for _ in range(args.steps)]
    c_cpu, c_gpu = cpu["coarse"].new_cache(3), gpu["coarse"].new_cache(3)
    for step, ids in enumerate(fed):
        given = pad if step == 0 else None
        ref = cpu["coarse"].forward(ids, cache=c_cpu, pad=given)  # every position, padding included
        ours = gpu["coarse"].forward(ids, cache=c_gpu, pad=given)
        if step in reported:
            what = f"prompts {lengths}, pad {pad.tolist()}" if step == 0 else f"step {step}"
            check(f"coarse padded batch {what}", ours, ref)
    keep = [2, 0]
    c_gpu = c_gpu.keep_rows(keep)
    c_cpu = cpu["coarse"].new_cache(len(keep))  # the CPU replays the kept rows from their prompts
    for step, ids in enumerate(fed):
        cpu["coarse"].forward(ids[keep], cache=c_cpu, pad=pad[keep] if step == 0 else None, last_only=True)
    ids = rng.integers(0, vin, size=(len(keep), 1))
    check(f"coarse padded batch, rows {keep} kept", gpu["coarse"].forward(ids, cache=c_gpu, last_only=True),
          cpu["coarse"].forward(ids, cache=c_cpu, last_only=True))

    codes = rng.integers(0, 1024, size=(1, args.fine_frames, 8))
    for book in (1, 7):
        check(f"fine codebook {book}, {args.fine_frames} frames", gpu["fine"].forward(book, codes),
              cpu["fine"].forward(book, codes))
    half = args.fine_frames // 2
    check(f"fine codebook 2, frames from {half}, ids 0..1023", gpu["fine"].forward(2, codes, half, (0, 1024)),
          cpu["fine"].forward(2, codes, half, (0, 1024)))
    frames = max(1, int(args.codec_seconds * 75))
    codes = rng.integers(0, 1024, size=(8, frames))
    check(f"codec {frames} frames", gpu["codec"].decode(codes), cpu["codec"].decode(codes))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", choices=sorted(SIZES), nargs="+", default=["small", "large"],
                   help="model shapes: small = suno/bark-small, large = suno/bark (default: both)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=8, help="cached decode steps per causal case")
    p.add_argument("--codec-seconds", type=float, default=2.0)
    p.add_argument("--rtol", type=float, default=1e-4)
    p.add_argument("--coarse-prompt", type=int, default=300, help="coarse prompt length (the longest, batched)")
    p.add_argument("--fine-frames", type=int, default=1024, help="frames of the fine window")
    p.add_argument("--simulator", action="store_true",
                   help="one-thread blocks, for a dry run under NUMBA_ENABLE_CUDASIM=1 with --size tiny")
    args = p.parse_args(argv)

    cuda_or_exit("cuda_parity")
    from barknp.cuda.kernels import SERIAL, Device, KernelConfig

    dev = Device(SERIAL if args.simulator else KernelConfig())
    print(f"GPU: {gpu_name(dev.cuda)}; tolerance: relative error <= {args.rtol:g}")
    worst = (0.0, "")

    def check(what, ours, ref):
        nonlocal worst
        a, r = errors(ours, ref)
        if not r <= worst[0]:  # a NaN error (never <=) is the worst too
            worst = (r, f"{size}: {what}")
        print(f"  {what:<58} max abs {a:.3e}  rel {r:.3e}{'' if r <= args.rtol else '  <-- over'}", flush=True)

    for size in args.size:
        check_size(size, args, dev, check)
    status = "OK" if worst[0] <= args.rtol else "FAIL"  # False for a NaN
    print(f"{status}: worst relative error {worst[0]:.3e} ({worst[1]}), tolerance {args.rtol:g}")
    return 0 if status == "OK" else 1


if __name__ == "__main__":
    sys.exit(main())
