"""Peak memory of each stage alone, against the bytes it must hold: weights plus activations.

    python benchmarks/bench_memory.py [--int8] [--threads 2] [--audio-seconds 6]

Each stage runs in its own fresh process, bark-small shape with random weights (the stage files of
bench_pipeline.py, drawn once, memory-mapped as ``Bark.from_dir`` does):

    semantic  the 513-id merged prefill, then 20 cached decode steps
    coarse    one 887-position window prefill, then 20 cached decode steps while the next window's
              827 known ids prefill into a second cache beside them (as the coarse loop does once
              its windows slide; not with int8 weights), then that window's 60 drawn ids
    fine      one 1024-frame pass
    codec     ``--audio-seconds`` of audio

The table gives each process's peak RSS, the same for a process that only imports barknp and
NumPy (the interpreter and libraries, paid once whatever runs), and the bytes the stage needs: its
weights, its KV cache (preallocated for the whole block) and its largest live activations. The
last column is (peak - baseline) / needed; the issue's bound is 1.25.

Two effects of the platform show in the figures. Weights are memory-mapped, so they count in RSS
as file pages once touched; on a kernel whose page cache uses large folios, touching a few rows of
an embedding table maps most of it (measured here: 512 random 3 KB reads of a 772 MB file mapped
510 MB), so the semantic stage's row shows its whole 398 MB input table. And loading compiled
Numba code from the on-disk cache costs about 70 MB whatever the input's size, which dominates the
codec's small figure.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))
sys.path.insert(0, str(REPO / "benchmarks"))

L, C, H, BLOCK = 12, 768, 12, 1024
VOCAB = {"semantic": (129_600, 10_048), "coarse": (12_096, 12_096), "fine": (1_056, 1_056)}
STAGES = ("semantic", "coarse", "fine", "codec")


def activation_bytes(stage: str, audio_seconds: float, int8: bool = False, threads: int = 2) -> int:
    """The largest activations alive at once, as counted from the code (float32 bytes). The coarse
    loop keeps a second cache only where it prefills ahead: float32 weights, two or more threads."""
    f = 4

    def live(T: int) -> int:  # a T-row forward's largest temporaries: MLP hidden (and GELU copy), qkv, a score block
        return T * 4 * C * f * 2 + T * 3 * C * f + H * 128 * T * f

    kv = 2 * L * BLOCK * C * f  # a preallocated cache
    layer_copy = 12 * C * C * f if int8 else 0  # a prefill's float32 copy of one int8 layer (nn/block.py)
    if stage == "semantic":
        return kv + live(257) + VOCAB[stage][1] * f + layer_copy
    if stage == "coarse":  # prefilling ahead: two windows at once, each with its cache (see child())
        if int8 or threads < 2:
            return kv + layer_copy + live(887) + 1024 * f
        return 2 * kv + live(887) + 1024 * f  # the two prefills run one after the other
    if stage == "fine":
        return live(1024) + 1024 * VOCAB["fine"][1] * f
    frames = int(75 * audio_seconds)
    return frames * (4 * 512 + 512) * f + frames * 320 * f  # LSTM projections and outputs, audio


def child(args) -> dict:
    import numpy as np

    from barknp.threads import set_num_threads
    from floors import peak_rss_mb

    set_num_threads(args.threads)
    folder = Path(args.workdir)
    if args.stage == "baseline":
        import barknp  # noqa: F401

        return {"peak_rss_mb": peak_rss_mb(), "weights_mb": 0.0}
    rng = np.random.default_rng(0)
    if args.stage in ("semantic", "coarse"):
        from barknp.models.gpt import CausalGPT

        name = f"{args.stage}.int8.safetensors" if args.int8 else f"{args.stage}.safetensors"
        model = CausalGPT.load(str(folder / name), args.stage)
        cache = model.new_cache()
        if args.stage == "semantic":
            ids = np.concatenate([rng.integers(10_048, 129_595, (1, 512)), [[129_599]]], axis=1)
            model.forward(ids, cache, merge_context=True, last_only=True)
            for _ in range(20):
                model.forward(rng.integers(0, 10_000, (1, 1)), cache, last_only=True)
        else:  # a window once they slide: its prefill and decode steps beside the next window's prefill
            vocab = (10_000, 11_024)  # one codebook's logits, as the coarse loop asks
            model.forward(rng.integers(10_000, 12_048, (1, 887)), cache, last_only=True, vocab=vocab)
            with model.prefill_ahead(rng.integers(10_000, 12_048, (1, 827))) as job:
                for _ in range(20):
                    model.forward(rng.integers(10_000, 12_048, (1, 1)), cache, last_only=True, vocab=vocab)
            if job is not None:
                model.forward(rng.integers(10_000, 12_048, (1, 60)), job.result(), last_only=True, vocab=vocab)
        weights = sum(a.nbytes for a in _arrays(model))
    elif args.stage == "fine":
        from barknp.models.fine import FineGPT

        model = FineGPT.load(str(folder / "fine.safetensors"))
        model.forward(2, rng.integers(0, 1024, (1, 1024, 8)))
        weights = sum(a.nbytes for a in _arrays(model))
    else:
        from barknp.models.codec import Codec

        model = Codec.load(str(folder / "codec.safetensors"))
        model.decode(rng.integers(0, 1024, (8, int(75 * args.audio_seconds))))
        weights = (folder / "codec.safetensors").stat().st_size
    return {"peak_rss_mb": peak_rss_mb(), "weights_mb": weights / 1e6}


def _arrays(model):
    """Every distinct weight array a model object holds (NamedTuples and lists walked)."""
    import numpy as np

    seen, out, todo = set(), [], [vars(model)]
    while todo:
        obj = todo.pop()
        items = obj.values() if isinstance(obj, dict) else obj
        for v in items:
            if isinstance(v, np.ndarray):
                if id(v) not in seen:
                    seen.add(id(v))
                    out.append(v)
            elif isinstance(v, (list, tuple, dict)):
                todo.append(v)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--int8", action="store_true", help="int8 weights for semantic and coarse")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--audio-seconds", type=float, default=6.0)
    ap.add_argument("--workdir", help="stage files (drawn here if missing; default: a temporary folder)")
    ap.add_argument("--stage", help=argparse.SUPPRESS)  # child mode
    args = ap.parse_args(argv)
    if args.stage:
        print(json.dumps(child(args)))
        return
    with tempfile.TemporaryDirectory(prefix="barknp-mem-") as tmp:
        folder = Path(args.workdir or tmp)
        from bench_pipeline import prepare_weights

        prepare_weights(folder, "small", args.int8)
        rows = {}
        for stage in ("baseline",) + STAGES:
            cmd = [sys.executable, __file__, "--stage", stage, "--workdir", str(folder), "--threads", str(args.threads),
                   "--audio-seconds", str(args.audio_seconds)] + (["--int8"] if args.int8 else [])
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            rows[stage] = json.loads(out.strip().splitlines()[-1])
    base = rows["baseline"]["peak_rss_mb"]
    kind = "int8 semantic/coarse" if args.int8 else "float32"
    print(f"Peak RSS per stage, each in a fresh process: bark-small shape, random weights, {kind}, {args.threads} threads")
    print(f"baseline (python + numpy + numba + barknp imported): {base:.0f} MB\n")
    print(f"{'stage':10s} {'peak RSS':>9s} {'- base':>8s} {'weights':>8s} {'activ.+KV':>9s} {'needed':>8s} {'ratio':>6s}")
    for stage in STAGES:
        r = rows[stage]
        act = activation_bytes(stage, args.audio_seconds, args.int8, args.threads) / 1e6
        need = r["weights_mb"] + act
        extra = r["peak_rss_mb"] - base
        print(f"{stage:10s} {r['peak_rss_mb']:9.0f} {extra:8.0f} {r['weights_mb']:8.0f} {act:9.0f} {need:8.0f} {extra / need:6.2f}")
    print("\n(MB = 1e6 bytes; activations counted from the code: KV cache, MLP hidden, qkv, one score block, logits;"
          "\n int8: a prefill's float32 copy of one layer)")


if __name__ == "__main__":
    main()
