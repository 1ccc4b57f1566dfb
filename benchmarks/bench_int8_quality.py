"""Quality of the reduced-precision options against float32: top-1 agreement and KL divergence,
teacher-forced.

    python benchmarks/bench_int8_quality.py [--model DIR] [--positions 600] [--sequences 4]

For the two stages that have them (semantic and coarse), each option reads the same token
sequences as the float32 model in one forward pass (teacher forcing: every position predicts the
next token from the true prefix, never from its own earlier choices), and the table compares their
next-token distributions at every position. The options: int8 weights; float16 weights; a float16
KV cache (the pass runs through a cache, whose keys and values attention reads back rounded, as
decoding does); int8 weights with it. For each:

* top-1 agreement: the share of positions where both pick the same most likely token;
* KL(float32 || int8) in nats, mean and worst position;
* the worst logit error, absolute and relative to the spread (standard deviation) of the logits;
* top-1 agreement and mean KL over the ids the stage actually samples from: the semantic ids and
  end-of-speech (10,001), or, for coarse, each codebook's 1,024 ids in turn (each position counted
  once per codebook). The whole-vocabulary figures include ids a sampler never sees.

``--model`` takes a converted model directory (the output of ``barknp convert``; its int8 files
are made if missing). Without it the models are the bark-small shape with random weights
(tools/random_weights.py), once for each ``--linear-std``, and the sequences are random tokens of
each stage's output range. That measures how the rounding error of int8 weights propagates
through the network, not the effect on real speech: a random network with large weights (0.1) is
chaotic, so that a 0.4 % change of any weight moves its logits a lot, while at GPT-2's
initialisation scale (0.02) it is not. Trained weights are what matter; real Bark weights could
not be downloaded where this was written, so run it with ``--model`` where they can.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))

import numpy as np  # noqa: E402
from random_weights import random_gpt_tensors  # noqa: E402

from barknp.config import GPTConfig  # noqa: E402
from barknp.constants import CODEBOOK_SIZE, SEMANTIC_VOCAB_SIZE  # noqa: E402
from barknp.convert.quantize import ensure_reduced, halve_tensors, quantize_tensors  # noqa: E402
from barknp.models.gpt import CausalGPT  # noqa: E402
from barknp.weights import stage_path  # noqa: E402

STAGES = ("semantic", "coarse")


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """(..., V) -> (..., V) float64 log-probabilities."""
    z = logits.astype(np.float64)
    z -= z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def kl_divergence(f32: np.ndarray, q8: np.ndarray) -> np.ndarray:
    """KL(softmax(f32) || softmax(q8)) per row, in nats: logits (N, V) -> (N,) float64."""
    lp, lq = log_softmax(f32), log_softmax(q8)
    return (np.exp(lp) * (lp - lq)).sum(axis=-1)


def compare(f32: np.ndarray, q8: np.ndarray, sampled: list[tuple[int, int]]) -> dict:
    """Logits (N, V) of both models at the same N positions -> the table's figures; ``sampled``:
    the id ranges (start, stop) the stage samples from, each compared on its own."""
    kl = kl_divergence(f32, q8)  # (N,)
    err = np.abs(f32 - q8)
    parts = [(f32[:, a:b], q8[:, a:b]) for a, b in sampled]  # each (N, b - a)
    return {
        "positions": f32.shape[0],
        "top1": float((f32.argmax(-1) == q8.argmax(-1)).mean()),
        "kl_mean": float(kl.mean()),
        "kl_max": float(kl.max()),
        "err_max": float(err.max()),
        "err_rel": float(err.max() / f32.std()),
        "top1_sampled": float(np.mean([(f.argmax(-1) == q.argmax(-1)).mean() for f, q in parts])),
        "kl_sampled": float(np.mean([kl_divergence(f, q).mean() for f, q in parts])),
    }


# (label, weights, KV cache dtype) of each option compared with float32
OPTIONS = (("int8", "int8", "float32"), ("f16 weights", "float16", "float32"), ("f16 KV", "float32", "float16"),
           ("int8+f16 KV", "int8", "float16"))
REDUCE = {"float32": dict, "int8": quantize_tensors, "float16": halve_tensors}


def random_models(stage: str, linear_std: float) -> dict:
    """The bark-small shape of ``stage`` with random weights: {"f32": model, option label: model}."""
    vocab = {"semantic": (129_600, 10_048), "coarse": (12_096, 12_096)}[stage]
    seed = {"semantic": 1, "coarse": 2}[stage]
    tensors = random_gpt_tensors(12, 768, *vocab, seed=seed, linear_std=linear_std)
    config = GPTConfig(12, 12, 768, *vocab)
    models = {"f32": CausalGPT(config, tensors, stage)}
    for label, weights, kv in OPTIONS:
        models[label] = CausalGPT(config, REDUCE[weights](tensors), stage, kv_cache=kv)
    return models


def saved_models(model_dir: str, stage: str) -> dict:
    """The same for a converted model directory (its int8 and float16 files made if missing)."""
    models = {"f32": CausalGPT.load(stage_path(model_dir, stage), stage)}
    for label, weights, kv in OPTIONS:
        path = stage_path(model_dir, stage) if weights == "float32" else ensure_reduced(model_dir, stage, weights)
        models[label] = CausalGPT.load(path, stage, kv_cache=kv)
    return models


def teacher_forced(model: CausalGPT, ids: np.ndarray) -> np.ndarray:
    """Logits (T, V) at every position of ids (1, T): through a cache when the model's is not
    float32 (so attention reads the rounded keys and values), else in one plain forward."""
    cache = model.new_cache() if model.kv_dtype != np.float32 else None
    return model.forward(ids, cache)[0]


def sampled_ranges(stage: str) -> list[tuple[int, int]]:
    """The output id ranges the stage's sampler draws from (see barknp/generation)."""
    if stage == "semantic":
        return [(0, SEMANTIC_VOCAB_SIZE + 1)]  # the semantic ids and end-of-speech
    first = SEMANTIC_VOCAB_SIZE
    return [(first, first + CODEBOOK_SIZE), (first + CODEBOOK_SIZE, first + 2 * CODEBOOK_SIZE)]


def token_range(stage: str) -> tuple[int, int]:
    """Ids the stage itself produces, which is what its later positions read."""
    if stage == "semantic":
        return 0, SEMANTIC_VOCAB_SIZE
    return SEMANTIC_VOCAB_SIZE, SEMANTIC_VOCAB_SIZE + 2 * CODEBOOK_SIZE


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="a converted model directory (default: random bark-small weights)")
    ap.add_argument("--positions", type=int, default=600)
    ap.add_argument("--sequences", type=int, default=4)
    ap.add_argument("--linear-std", type=float, nargs="+", default=[0.02, 0.1],
                    help="random weights: standard deviations of the block linear weights")
    args = ap.parse_args(argv)
    what = args.model or "bark-small shape, random weights, random token sequences"
    print(f"reduced precision against float32, teacher-forced: {what}")
    print(f"{args.sequences} sequences x {args.positions} positions per stage\n")
    print(f"{'stage':16s} {'option':12s} {'positions':>9s} {'top-1 agree':>11s} {'KL mean':>9s} {'KL max':>9s} "
          f"{'max |dlogit|':>12s} {'/ logit std':>11s} {'top-1 sampled':>13s} {'KL sampled':>10s}")
    runs = [(s, None) for s in STAGES] if args.model else [(s, std) for std in args.linear_std for s in STAGES]
    for stage, std in runs:
        rng = np.random.default_rng(0)  # the same sequences for every model
        models = saved_models(args.model, stage) if args.model else random_models(stage, std)
        label = stage if args.model else f"{stage} std {std}"
        lo, hi = token_range(stage)
        seqs = [rng.integers(lo, hi, (1, args.positions)) for _ in range(args.sequences)]  # each (1, T)
        want = np.concatenate([teacher_forced(models["f32"], ids) for ids in seqs])  # (N, V)
        for option, _, _ in OPTIONS:
            got = np.concatenate([teacher_forced(models[option], ids) for ids in seqs])  # (N, V)
            r = compare(want, got, sampled_ranges(stage))
            print(f"{label:16s} {option:12s} {r['positions']:9d} {r['top1']:11.4f} {r['kl_mean']:9.2e} "
                  f"{r['kl_max']:9.2e} {r['err_max']:12.4f} {r['err_rel']:11.4f} {r['top1_sampled']:13.4f} "
                  f"{r['kl_sampled']:10.2e}")


if __name__ == "__main__":
    main()
