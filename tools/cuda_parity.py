"""Whole-model parity of the CUDA path against the CPU path, on a real GPU.

    python tools/cuda_parity.py [--size tiny|small|large] [--seed 0] [--codec-seconds 2]

Random weights (tools/random_weights.py for the GPTs, tools/make_codec_goldens.py for the codec),
the same inputs to both paths; prints the max absolute and relative (to the reference's max |value|)
error of: the semantic model (merged 513-id prompt, then cached decode steps), the coarse model
(a prompt, then cached decode steps), the fine model (one full window, codebooks 1 and 7) and the
codec (a few seconds of codes). Exits 1 if any relative error exceeds --rtol, 2 without a GPU.
"""

from __future__ import annotations

import argparse
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


def errors(ours: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    err = float(np.abs(ours.astype(np.float64) - ref).max())
    return err, err / max(float(np.abs(ref).max()), 1e-30)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", choices=sorted(SIZES), default="tiny")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=8, help="cached decode steps per causal model")
    p.add_argument("--codec-seconds", type=float, default=2.0)
    p.add_argument("--rtol", type=float, default=1e-4)
    p.add_argument("--coarse-prompt", type=int, default=300, help="coarse prompt length")
    p.add_argument("--fine-frames", type=int, default=1024, help="frames of the fine window")
    p.add_argument("--tiny-kernels", action="store_true",
                   help="tiny blocks (for a dry run under NUMBA_ENABLE_CUDASIM=1 with --size tiny)")
    args = p.parse_args(argv)

    from barknp.cuda import require_cuda
    from barknp.errors import BarkError

    try:
        require_cuda()
    except BarkError as e:
        print(f"cuda_parity: {e}", file=sys.stderr)
        return 2
    from barknp.cuda.kernels import TINY, Device, KernelConfig
    from barknp.cuda.models import CUDACausalGPT, CUDACodec, CUDAFineGPT

    t0 = time.perf_counter()
    cpu = build_cpu_models(args.size, args.seed)
    dev = Device(TINY if args.tiny_kernels else KernelConfig())
    gpu = {"semantic": CUDACausalGPT(cpu["semantic"], dev), "coarse": CUDACausalGPT(cpu["coarse"], dev),
           "fine": CUDAFineGPT(cpu["fine"], dev), "codec": CUDACodec(cpu["codec"], dev)}
    print(f"size {args.size}: models built and copied in {time.perf_counter() - t0:.1f} s")
    rng = np.random.default_rng(args.seed)
    worst = 0.0
    rows = []

    def check(what, ours, ref):
        nonlocal worst
        a, r = errors(ours, ref)
        worst = max(worst, r)
        rows.append((what, a, r))
        print(f"  {what:<40} max abs {a:.3e}  rel {r:.3e}", flush=True)

    for name, prompt_len, merge in (("semantic", 515, True), ("coarse", args.coarse_prompt, False)):
        vin = VOCABS[name][0]
        c_cpu, c_gpu = cpu[name].new_cache(1), gpu[name].new_cache(1)
        for step in range(args.steps + 1):
            ids = rng.integers(0, vin, size=(1, prompt_len if step == 0 else 1))
            ref = cpu[name].forward(ids, cache=c_cpu, merge_context=merge and step == 0, last_only=True)
            ours = gpu[name].forward(ids, cache=c_gpu, merge_context=merge and step == 0, last_only=True)
            if step in (0, 1, args.steps):
                check(f"{name} {'prompt' if step == 0 else f'step {step}'}", ours, ref)
        ids = rng.integers(0, vin, size=(2, min(64, args.coarse_prompt)))
        check(f"{name} uncached batch 2 x {ids.shape[1]}, all logits", gpu[name].forward(ids), cpu[name].forward(ids))
    codes = rng.integers(0, 1024, size=(1, args.fine_frames, 8))
    for book in (1, 7):
        check(f"fine codebook {book}, {args.fine_frames} frames", gpu["fine"].forward(book, codes), cpu["fine"].forward(book, codes))
    frames = max(1, int(args.codec_seconds * 75))
    codes = rng.integers(0, 1024, size=(8, frames))
    check(f"codec {frames} frames", gpu["codec"].decode(codes), cpu["codec"].decode(codes))
    status = "OK" if worst <= args.rtol else "FAIL"
    print(f"{status}: worst relative error {worst:.3e} (tolerance {args.rtol:g})")
    return 0 if status == "OK" else 1


if __name__ == "__main__":
    sys.exit(main())
