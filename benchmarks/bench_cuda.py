"""Speed of barknp's CUDA path against transformers' eager PyTorch Bark, on one GPU, same weights.

    python benchmarks/bench_cuda.py [--size small] [--steps 64] [--codec-seconds 10] [--no-torch]
                                    [--model suno/bark-small --text "Hello"]   # optional end to end

Prints first the floors measured on this GPU:
  * memory bandwidth, from a device-to-device copy (read + write bytes / time);
  * fp32 matrix-product throughput, from one large product (torch/cuBLAS with TF32 off when torch
    has CUDA, and barknp's own tiled kernel);
then, per stage: ms per decode step (semantic, coarse, at a cache of --context positions) with its
floor (weight bytes per token / bandwidth), ms per fine window (1024 frames, one codebook) with its
floor (FLOPs / throughput), the codec's real-time factor (compute seconds per second of audio),
the same for transformers on the same weights, and the ratios. With --model, also the end-to-end
time of ``generate`` on a real converted model.

Random weights come from tools/random_weights.py and tools/make_codec_goldens.py; the transformers
models are loaded with exactly those tensors (barknp keeps the checkpoint's names).
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

from cuda_parity import SIZES, VOCABS, build_cpu_models  # noqa: E402

FRAME_RATE = 75  # codec frames per second of audio


# --- floors ---------------------------------------------------------------------------------------


def gpu_time(cuda, fn, repeat: int = 5) -> float:
    """Best wall time of ``fn`` in seconds, measured with CUDA events around it."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        start, stop = cuda.event(), cuda.event()
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        best = min(best, cuda.event_elapsed_time(start, stop) / 1e3)
    return best


def bandwidth(cuda, n_bytes: int = 1 << 30) -> float:
    """Bytes per second of a device-to-device copy, counting the read and the write."""
    src = cuda.device_array(n_bytes // 4, dtype=np.float32)
    dst = cuda.device_array(n_bytes // 4, dtype=np.float32)
    return 2 * n_bytes / gpu_time(cuda, lambda: dst.copy_to_device(src))


def matmul_rates(dev, n: int = 4096) -> dict[str, float]:
    """fp32 FLOP/s of an n x n x n product: barknp's tiled kernel, and cuBLAS via torch if present."""
    rng = np.random.default_rng(0)
    a = dev.upload(rng.standard_normal((n, n), dtype=np.float32))
    b = dev.upload(rng.standard_normal((n, n), dtype=np.float32))
    out = dev.empty((n, n))
    rates = {"barknp tiled": 2 * n**3 / gpu_time(dev.cuda, lambda: dev.linear(a, b, out=out), repeat=3)}
    try:
        import torch

        if torch.cuda.is_available():
            torch.backends.cuda.matmul.allow_tf32 = False
            ta = torch.randn(n, n, device="cuda")
            tb = torch.randn(n, n, device="cuda")
            torch.cuda.synchronize()
            best = float("inf")
            for _ in range(5):
                t0 = time.perf_counter()
                ta @ tb
                torch.cuda.synchronize()
                best = min(best, time.perf_counter() - t0)
            rates["cuBLAS fp32 (torch)"] = 2 * n**3 / best
    except ImportError:
        pass
    return rates


def gpt_params(model) -> tuple[int, int]:
    """(parameters read per decoded token: blocks + final norm + head; embedding rows excluded,
    parameters of the blocks alone)."""
    blocks = sum(a.size for block in model.layers for a in _arrays(block))
    head = model.lm_head.weight.size if hasattr(model, "lm_head") else model.lm_heads[0].size
    return blocks + head, blocks


def _arrays(obj):
    if obj is None:
        return
    if isinstance(obj, np.ndarray):
        yield obj
    elif isinstance(obj, tuple):
        for v in obj:
            yield from _arrays(v)


# --- timing helpers ---------------------------------------------------------------------------------


def wall(fn, repeat: int = 3) -> float:
    fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def decode_ms(model, vin: int, context: int, steps: int, merge: bool) -> float:
    """ms per cached decode step after a prompt of ``context`` positions (logits back on the host)."""
    rng = np.random.default_rng(1)
    cache = model.new_cache(1)
    prompt = rng.integers(0, vin, size=(1, context + (256 if merge else 0)))
    model.forward(prompt, cache=cache, merge_context=merge, last_only=True)
    ids = rng.integers(0, vin, size=(steps, 1, 1))
    model.forward(ids[0], cache=cache, last_only=True)  # warm (compiles the decode shapes)
    t0 = time.perf_counter()
    for s in range(1, steps):
        model.forward(ids[s], cache=cache, last_only=True)
    return (time.perf_counter() - t0) / (steps - 1) * 1e3


# --- transformers ------------------------------------------------------------------------------------


def torch_models(size: str, cpu: dict):
    """transformers Bark semantic/coarse/fine models and EncodecModel on the GPU, with ``cpu``'s weights."""
    import torch
    from make_codec_goldens import random_codec_tensors, reference_model
    from transformers import BarkCoarseModel, BarkFineModel, BarkSemanticModel
    from transformers.models.bark.configuration_bark import (
        BarkCoarseConfig,
        BarkFineConfig,
        BarkSemanticConfig,
    )

    n_layer, width, n_head = SIZES[size]
    out = {}
    for name, cls, cfg_cls in (("semantic", BarkSemanticModel, BarkSemanticConfig),
                               ("coarse", BarkCoarseModel, BarkCoarseConfig),
                               ("fine", BarkFineModel, BarkFineConfig)):
        vin, vout = VOCABS[name]
        extra = dict(n_codes_total=8, n_codes_given=1) if name == "fine" else {}
        config = cfg_cls(num_layers=n_layer, hidden_size=width, num_heads=n_head, input_vocab_size=vin,
                         output_vocab_size=vout, block_size=1024, bias=True, **extra)
        model = cls(config).eval()
        state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in _gpt_tensors(cpu[name]).items()}
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [m for m in missing if not m.endswith("attn.bias")]  # the causal-mask buffer
        if missing or unexpected:
            raise RuntimeError(f"{name}: state dict mismatch, missing {missing[:3]}, unexpected {unexpected[:3]}")
        out[name] = model.to("cuda")
    out["codec"] = reference_model(random_codec_tensors(cpu["codec_seed"])).to("cuda").eval()
    return out


def _gpt_tensors(model) -> dict:
    """A barknp GPT's tensors back under their checkpoint names."""
    t = {"position_embeds_layer.weight": model.position_embeds_layer}
    if hasattr(model, "lm_head"):
        t["input_embeds_layer.weight"] = model.input_embeds_layer
        t["lm_head.weight"] = model.lm_head.weight
        if model.lm_head.bias is not None:
            t["lm_head.bias"] = model.lm_head.bias
    else:
        for i, w in enumerate(model.input_embeds_layers):
            t[f"input_embeds_layers.{i}.weight"] = w
        for i, w in enumerate(model.lm_heads):
            t[f"lm_heads.{i}.weight"] = w
    for n, block in enumerate(model.layers):
        for ln in ("layernorm_1", "layernorm_2"):
            norm = getattr(block, ln)
            t[f"layers.{n}.{ln}.weight"] = norm.weight
            if norm.bias is not None:
                t[f"layers.{n}.{ln}.bias"] = norm.bias
        for name, lin in (("attn.att_proj", block.attn.att_proj), ("attn.out_proj", block.attn.out_proj),
                          ("mlp.in_proj", block.mlp.in_proj), ("mlp.out_proj", block.mlp.out_proj)):
            t[f"layers.{n}.{name}.weight"] = lin.weight
            if lin.bias is not None:
                t[f"layers.{n}.{name}.bias"] = lin.bias
    if model.layernorm_final.bias is not None:
        t["layernorm_final.bias"] = model.layernorm_final.bias
    t["layernorm_final.weight"] = model.layernorm_final.weight
    return t


def torch_decode_ms(model, vin: int, context: int, steps: int) -> float:
    import torch

    rng = np.random.default_rng(1)
    with torch.no_grad():
        prompt = torch.from_numpy(rng.integers(0, vin, size=(1, context))).cuda()
        out = model(input_ids=prompt, use_cache=True)
        pkv = out.past_key_values
        ids = torch.from_numpy(rng.integers(0, vin, size=(steps, 1, 1))).cuda()
        out = model(input_ids=ids[0], past_key_values=pkv, use_cache=True)
        pkv = out.past_key_values
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for s in range(1, steps):
            out = model(input_ids=ids[s], past_key_values=pkv, use_cache=True)
            pkv = out.past_key_values
            out.logits[:, -1].cpu()  # the host needs the logits to sample, as in barknp
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / (steps - 1) * 1e3


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", choices=sorted(SIZES), default="small")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=64, help="decode steps timed per causal model")
    p.add_argument("--context", type=int, default=300, help="positions in the cache while decoding")
    p.add_argument("--codec-seconds", type=float, default=10.0)
    p.add_argument("--no-torch", action="store_true", help="skip the transformers comparison")
    p.add_argument("--model", help="a converted model or hub id, for an end-to-end generate timing")
    p.add_argument("--text", default="Hello, my name is Suno. And, uh, I like pizza.")
    args = p.parse_args(argv)

    from barknp.cuda import require_cuda
    from barknp.errors import BarkError

    try:
        require_cuda()
    except BarkError as e:
        print(f"bench_cuda: {e}", file=sys.stderr)
        return 2
    from barknp.cuda.kernels import Device
    from barknp.cuda.models import CUDACausalGPT, CUDACodec, CUDAFineGPT

    dev = Device()
    bw = bandwidth(dev.cuda)
    rates = matmul_rates(dev)
    print(f"GPU: {dev.cuda.get_current_device().name}")
    print(f"floor inputs: bandwidth {bw / 1e9:.0f} GB/s (device-to-device copy); fp32 matmul "
          + ", ".join(f"{k} {v / 1e12:.1f} TFLOP/s" for k, v in rates.items()))
    peak = max(rates.values())

    cpu = build_cpu_models(args.size, args.seed)
    cpu["codec_seed"] = args.seed + 3
    gpu = {"semantic": CUDACausalGPT(cpu["semantic"], dev), "coarse": CUDACausalGPT(cpu["coarse"], dev),
           "fine": CUDAFineGPT(cpu["fine"], dev), "codec": CUDACodec(cpu["codec"], dev)}
    tm = None
    if not args.no_torch:
        try:
            tm = torch_models(args.size, cpu)
        except Exception as e:  # noqa: BLE001 - the comparison is optional; say why it is missing
            print(f"transformers comparison unavailable: {type(e).__name__}: {e}")

    print(f"\nsize {args.size}; decode at a cache of {args.context} positions, {args.steps} steps")
    print(f"{'stage':<28}{'barknp':>12}{'floor':>12}{'transformers':>15}{'ratio':>8}")
    for name in ("semantic", "coarse"):
        per_token, _ = gpt_params(cpu[name])
        floor = 4 * per_token / bw * 1e3
        ours = decode_ms(gpu[name], VOCABS[name][0], args.context, args.steps, merge=False)
        ref = torch_decode_ms(tm[name], VOCABS[name][0], args.context, args.steps) if tm else float("nan")
        print(f"{name + ' ms/token':<28}{ours:>12.3f}{floor:>12.3f}{ref:>15.3f}{ref / ours:>8.2f}")
    # fine: one window of 1024 frames, one codebook
    fine = cpu["fine"]
    c = fine.config
    T = c.block_size
    _, blocks = gpt_params(fine)
    flops = 2 * T * (blocks + fine.lm_heads[0].size) + c.num_layers * 4 * T * T * c.hidden_size
    codes = np.random.default_rng(2).integers(0, 1024, size=(1, T, 8))
    ours = wall(lambda: gpu["fine"].forward(1, codes)) * 1e3
    ref = float("nan")
    if tm:
        import torch

        tcodes = torch.from_numpy(codes).cuda()

        def run():
            with torch.no_grad():
                tm["fine"](1, input_ids=tcodes).logits.cpu()
        ref = wall(run) * 1e3
    print(f"{'fine ms/window (1 book)':<28}{ours:>12.3f}{flops / peak * 1e3:>12.3f}{ref:>15.3f}{ref / ours:>8.2f}")
    # codec
    frames = int(args.codec_seconds * FRAME_RATE)
    codes = np.random.default_rng(3).integers(0, 1024, size=(8, frames))
    ours = wall(lambda: gpu["codec"].decode(codes), repeat=2) / args.codec_seconds
    ref = float("nan")
    if tm:
        import torch

        tcodes = torch.from_numpy(codes)[None, None].cuda()

        def run():
            with torch.no_grad():
                tm["codec"].decode(tcodes, [None])[0].cpu()
        ref = wall(run, repeat=2) / args.codec_seconds
    print(f"{'codec s per s of audio':<28}{ours:>12.4f}{'':>12}{ref:>15.4f}{ref / ours:>8.2f}")

    if args.model:
        import barknp
        from barknp.cuda import to_cuda

        model = to_cuda(barknp.load(args.model))
        model.generate(args.text, rng=0, silent=True)  # warm
        t0 = time.perf_counter()
        audio = model.generate(args.text, rng=0, silent=True)
        took = time.perf_counter() - t0
        seconds = audio.shape[0] / barknp.SAMPLE_RATE
        print(f"\nend to end ({args.model}): {took:.2f} s for {seconds:.2f} s of audio "
              f"(real-time factor {took / seconds:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
