"""Speed and memory of the EnCodec decoder: barknp against transformers' EncodecModel.

    python benchmarks/bench_codec.py [--seconds 10] [--threads 2] [--repeat 3] [--rss-seconds 60]

Both decode the same codes with the same (random, NumPy-drawn) weights. Prints seconds of compute
per second of audio for each, the floor (the decoder's FLOPs per second of audio divided by this
machine's sgemm rate, measured in the same run with one large np.matmul), the ratios, and the peak
RSS of a fresh process decoding ``--rss-seconds`` of audio.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))
sys.path.insert(0, str(REPO / "benchmarks"))

import numpy as np  # noqa: E402
from floors import peak_rss_mb, sgemm_gflops  # noqa: E402

FRAME_RATE = 75  # codec frames per second of audio


def decoder_flops_per_second(config) -> float:
    """Multiply-adds x 2 of the decoder for one second of audio (75 frames); elementwise work excluded."""
    c = config
    rate = FRAME_RATE
    width = 2 ** len(c.upsampling_ratios) * c.num_filters
    flops = 2 * c.hidden_size * width * c.kernel_size * rate  # first conv
    flops += c.num_lstm_layers * 2 * (2 * 4 * width * width) * rate  # LSTM: input and recurrent products
    for ratio in c.upsampling_ratios:
        flops += 2 * width * (width // 2) * 2 * ratio * rate  # transposed conv, at the input rate
        rate *= ratio
        width //= 2
        hidden = width // c.compress
        for _ in range(c.num_residual_layers):
            flops += 2 * rate * (width * hidden * c.residual_kernel_size + hidden * width + width * width)
    flops += 2 * width * c.audio_channels * c.last_kernel_size * rate
    return float(flops)


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def rss_child(seconds: float, threads: int) -> dict:
    """Run in a fresh process: build the codec, decode ``seconds`` of audio, report peak RSS."""
    from barknp.config import CodecConfig
    from barknp.models.codec import Codec
    from barknp.threads import set_num_threads
    from make_codec_goldens import random_codec_tensors, random_codes

    set_num_threads(threads)
    codec = Codec.from_tensors(CodecConfig(), random_codec_tensors(0))
    codes = random_codes(np.random.default_rng(0), 1, int(seconds * FRAME_RATE))
    codec.decode(codes[:, :, :8])  # compile and warm up
    before = peak_rss_mb()
    t = _timed(lambda: codec.decode(codes))
    after = peak_rss_mb()
    return {"peak_mb_before_decode": before, "peak_mb": after, "seconds": t,
            "audio_mb": codes.shape[2] * 320 * 4 / 2**20}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0, help="audio decoded per timed run")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3, help="timed runs; the best is reported")
    ap.add_argument("--rss-seconds", type=float, default=60.0, help="audio decoded by the peak-RSS child")
    ap.add_argument("--no-torch", action="store_true", help="skip transformers")
    ap.add_argument("--rss-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.rss_child:
        print(json.dumps(rss_child(args.rss_seconds, args.threads)))
        return

    from barknp.config import CodecConfig
    from barknp.models.codec import Codec
    from barknp.threads import set_num_threads
    from make_codec_goldens import random_codec_tensors, random_codes

    set_num_threads(args.threads)
    config = CodecConfig()
    tensors = random_codec_tensors(0)
    codec = Codec.from_tensors(config, tensors)
    frames = int(args.seconds * FRAME_RATE)
    codes = random_codes(np.random.default_rng(0), 1, frames)
    codec.decode(codes[:, :, :8])  # compile Numba kernels, warm caches

    def best(**kwargs) -> float:
        return min(_timed(lambda: codec.decode(codes, **kwargs)) for _ in range(args.repeat)) / args.seconds

    rows = []  # (label, seconds per second of audio)
    rows.append((f"barknp ({args.threads} workers, BLAS 1)", best()))  # the default
    if args.threads > 1:
        rows.append((f"barknp (1 worker, BLAS {args.threads})", best(workers=1)))
        set_num_threads(1)
        rows.append(("barknp (1 thread)", best()))
        set_num_threads(args.threads)
    ours = min(t for _, t in rows)

    theirs = None
    if not args.no_torch:
        try:
            import torch

            from make_codec_goldens import reference_decode, reference_model
        except ImportError:
            print("transformers/torch not installed: skipping the reference")
        else:
            torch.set_num_threads(args.threads)
            model = reference_model(tensors)
            reference_decode(model, codes[:, :, :8])
            theirs = min(_timed(lambda: reference_decode(model, codes)) for _ in range(args.repeat)) / args.seconds

    gflops = sgemm_gflops()
    flops = decoder_flops_per_second(config)
    floor = flops / (gflops * 1e9)

    child = subprocess.run(
        [sys.executable, __file__, "--rss-child", "--rss-seconds", str(args.rss_seconds), "--threads", str(args.threads)],
        capture_output=True, text=True, check=True,
    )
    rss = json.loads(child.stdout.strip().splitlines()[-1])

    print(f"EnCodec 24 kHz decoder, {args.seconds:g} s of audio ({frames} frames), {args.threads} threads, "
          f"best of {args.repeat}; {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}")
    print(f"decoder work: {flops / 1e9:.2f} GFLOP per second of audio; sgemm here: {gflops:.1f} GFLOP/s")
    print()
    print(f"{'':34s} {'s / s audio':>12s} {'x floor':>9s} {'x best barknp':>14s}")
    print(f"{'floor (FLOPs / sgemm rate)':34s} {floor:12.4f} {1.0:9.2f} {floor / ours:14.2f}")
    for label, t in rows:
        print(f"{label:34s} {t:12.4f} {t / floor:9.2f} {t / ours:14.2f}")
    if theirs is not None:
        print(f"{'transformers EncodecModel':34s} {theirs:12.4f} {theirs / floor:9.2f} {theirs / ours:14.2f}")
    print()
    print(f"peak RSS decoding {args.rss_seconds:g} s in a fresh process: {rss['peak_mb']:.0f} MB "
          f"({rss['peak_mb_before_decode']:.0f} MB before decoding; the audio itself is {rss['audio_mb']:.1f} MB; "
          f"decode took {rss['seconds']:.2f} s)")


if __name__ == "__main__":
    main()
