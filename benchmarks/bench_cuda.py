"""Speed of barknp's CUDA path against transformers' eager PyTorch Bark, on one GPU, same weights.

    python benchmarks/bench_cuda.py                  # bark-small and bark (large) shapes, all rows
    python benchmarks/bench_cuda.py --size small [--steps 64] [--context 300] [--batch 4]
                                    [--codec-seconds 10] [--e2e-seconds 4] [--no-torch]
                                    [--model suno/bark-small]   # also end to end on a converted model

Prints first the floors measured on this GPU:
  * memory bandwidth, from a device-to-device copy (read + write bytes / time);
  * fp32 matrix-product throughput, from one 4096^3 product (cuBLAS through torch with TF32 off,
    when torch has CUDA; and barknp's own tiled kernel); the floors use the faster;
then per size, one row per stage with barknp's time, its floor, transformers' time on the same
weights (eager fp32, TF32 off) and transformers / barknp:
  * semantic, coarse: ms per decoded token at a cache of --context positions (logits back on the
    host each step, as sampling needs); floor = weight bytes read per token / bandwidth (the KV
    cache's reads are left out: 22 MB, 6 % more, at 300 cached positions of bark-small);
  * coarse, --batch rows left-padded to one length (``pad=``, as batched coarse windows): ms per
    step / rows; floor = the same weight bytes / bandwidth / rows (one weight read serves all rows);
  * fine: ms per 1024-frame window, one codebook; floor = FLOPs / matmul throughput;
  * codec: seconds of compute per second of audio; floor = FLOPs / matmul throughput;
  * end to end: ``Bark.generate`` on the random weights (CharTokenizer for the text, so no
    tokenizer files are needed), --e2e-seconds of audio at most: seconds per second of audio
    (barknp only; transformers' generate needs a real checkpoint).
With --model, also ``generate`` end to end on a real converted model (a directory or, online, a
hub id). Exits 2 with one line on stderr when the CUDA path cannot run here.

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

from barknp.constants import SAMPLE_RATE  # noqa: E402
from cuda_parity import (  # noqa: E402
    SIZES,
    VOCABS,
    CharTokenizer,
    build_cpu_models,
    cuda_or_exit,
    gpu_name,
    left_padded,
)

FRAME_RATE = 75  # codec frames per second of audio (24 kHz / 320)
E2E_TEXT = "Hello, my name is Suno. And, uh, I like pizza."


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
    torch = torch_cuda()
    if torch is not None:
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
    return rates


def torch_cuda():
    """torch with fp32 kept fp32 (TF32 off for products and convolutions), or None without CUDA."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    return torch


def gpt_params(model) -> tuple[int, int]:
    """(parameters read per decoded token: blocks + head; the final norm and embedding rows are
    left out, a few thousand values; parameters of the blocks alone)."""
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


def codec_flops_per_frame(codec) -> int:
    """Multiply-adds x 2 of the decoder per codec frame (320 samples): every convolution at its
    own rate, the transposed convolutions per input step, and the LSTM's two products."""
    raw = codec.raw

    def conv(weight, rate):  # weight (C_out, C_in, K), ``rate`` outputs per frame
        return 2 * weight.size * rate

    flops = conv(raw["first"][0], 1)
    flops += sum(2 * (layer.w_ih.size + layer.w_hh.size) for layer in raw["lstm"])
    rate = 1
    for (w, _, stride), blocks in raw["stages"]:
        flops += 2 * w.size * rate  # w (C_in, C_out, K): each input step feeds K outputs
        rate *= stride
        for block in blocks:
            flops += sum(conv(c[0], rate) for c in block["convs"])
            if block["shortcut"] is not None:
                flops += conv(block["shortcut"][0], rate)
    return flops + conv(raw["last"][0], rate)


# --- timing helpers ---------------------------------------------------------------------------------


def wall(fn, repeat: int = 3) -> float:
    fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def decode_ms(model, vin: int, context: int, steps: int, batch: int = 1) -> float:
    """ms per cached decode step after prompts of ``context`` positions (logits back on the host).
    ``batch`` > 1: that many prompts of different lengths (context down to context / 2) left-padded."""
    rng = np.random.default_rng(1)
    cache = model.new_cache(batch)
    lengths = [context - (context // 2) * b // max(1, batch - 1) for b in range(batch)]
    prompt, pad = left_padded(rng, vin, lengths)
    model.forward(prompt, cache=cache, last_only=True, pad=pad if batch > 1 else None)
    ids = rng.integers(0, vin, size=(steps, batch, 1))
    model.forward(ids[0], cache=cache, last_only=True)  # warm (compiles the decode shapes)
    t0 = time.perf_counter()
    for s in range(1, steps):
        model.forward(ids[s], cache=cache, last_only=True)
    return (time.perf_counter() - t0) / (steps - 1) * 1e3


# --- transformers ------------------------------------------------------------------------------------


def torch_models(size: str, cpu: dict, codec_seed: int, device: str = "cuda"):
    """transformers Bark semantic/coarse/fine models and EncodecModel on ``device``, with ``cpu``'s weights."""
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
        out[name] = model.to(device)
    out["codec"] = reference_model(random_codec_tensors(codec_seed)).to(device).eval()
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


def _sync(torch, device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def torch_decode_ms(model, vin: int, context: int, steps: int, device: str = "cuda") -> float:
    import torch

    rng = np.random.default_rng(1)
    with torch.no_grad():
        prompt = torch.from_numpy(rng.integers(0, vin, size=(1, context))).to(device)
        out = model(input_ids=prompt, use_cache=True)
        pkv = out.past_key_values
        ids = torch.from_numpy(rng.integers(0, vin, size=(steps, 1, 1))).to(device)
        out = model(input_ids=ids[0], past_key_values=pkv, use_cache=True)
        pkv = out.past_key_values
        _sync(torch, device)
        t0 = time.perf_counter()
        for s in range(1, steps):
            out = model(input_ids=ids[s], past_key_values=pkv, use_cache=True)
            pkv = out.past_key_values
            out.logits[:, -1].cpu()  # the host needs the logits to sample, as in barknp
        _sync(torch, device)
    return (time.perf_counter() - t0) / (steps - 1) * 1e3


def torch_fine_ms(model, codes: np.ndarray, device: str = "cuda") -> float:
    import torch

    tcodes = torch.from_numpy(codes).to(device)

    def run():
        with torch.no_grad():
            model(1, input_ids=tcodes).logits.cpu()
    return wall(run) * 1e3


def torch_codec_rtf(model, codes: np.ndarray, seconds: float, device: str = "cuda") -> float:
    import torch

    tcodes = torch.from_numpy(codes)[None, None].to(device)  # (1, 1, 8, T)

    def run():
        with torch.no_grad():
            model.decode(tcodes, [None])[0].cpu()
    return wall(run, repeat=2) / seconds


# --- the run ------------------------------------------------------------------------------------------


def bench_size(size: str, args, dev, bw: float, peak: float, row) -> None:
    """Every row of one model size; ``row(label, ours, floor, ref)`` prints one."""
    from barknp.cuda.models import CUDACausalGPT, CUDACodec, CUDAFineGPT
    from barknp.model import Bark

    t0 = time.perf_counter()
    cpu = build_cpu_models(size, args.seed)
    gpu = {"semantic": CUDACausalGPT(cpu["semantic"], dev), "coarse": CUDACausalGPT(cpu["coarse"], dev),
           "fine": CUDAFineGPT(cpu["fine"], dev), "codec": CUDACodec(cpu["codec"], dev)}
    tm = None
    if not args.no_torch:
        try:
            if torch_cuda() is None:
                raise RuntimeError("torch is missing or has no CUDA")
            tm = torch_models(size, cpu, args.seed + 3)
        except Exception as e:  # noqa: BLE001 - the comparison is optional; say why it is missing
            print(f"transformers comparison unavailable: {type(e).__name__}: {' '.join(str(e).split())[:200]}")
    print(f"\nsize {size} {SIZES[size]}: built in {time.perf_counter() - t0:.0f} s; decode at a cache of "
          f"{args.context} positions, {args.steps} steps")
    print(f"{'stage':<34}{'barknp':>12}{'floor':>12}{'transformers':>15}{'ratio':>8}")
    for name in ("semantic", "coarse"):
        per_token, _ = gpt_params(cpu[name])
        ours = decode_ms(gpu[name], VOCABS[name][0], args.context, args.steps)
        ref = torch_decode_ms(tm[name], VOCABS[name][0], args.context, args.steps) if tm else float("nan")
        row(f"{name} ms/token", ours, 4 * per_token / bw * 1e3, ref)
    if args.batch > 1:
        per_token, _ = gpt_params(cpu["coarse"])
        ours = decode_ms(gpu["coarse"], VOCABS["coarse"][0], args.context, args.steps, args.batch) / args.batch
        row(f"coarse ms/token, batch {args.batch} padded", ours, 4 * per_token / bw * 1e3 / args.batch, float("nan"))
    # fine: one window of 1024 frames, one codebook
    fine = cpu["fine"]
    c = fine.config
    T = c.block_size
    _, blocks = gpt_params(fine)
    flops = 2 * T * (blocks + fine.lm_heads[0].size) + c.num_layers * 4 * T * T * c.hidden_size
    codes = np.random.default_rng(2).integers(0, 1024, size=(1, T, 8))
    ours = wall(lambda: gpu["fine"].forward(1, codes)) * 1e3
    ref = torch_fine_ms(tm["fine"], codes) if tm else float("nan")
    row("fine ms/window (1 book)", ours, flops / peak * 1e3, ref)
    # codec
    frames = int(args.codec_seconds * FRAME_RATE)
    codes = np.random.default_rng(3).integers(0, 1024, size=(8, frames))
    ours = wall(lambda: gpu["codec"].decode(codes), repeat=2) / args.codec_seconds
    ref = torch_codec_rtf(tm["codec"], codes, args.codec_seconds) if tm else float("nan")
    row("codec s per s of audio", ours, codec_flops_per_frame(cpu["codec"]) * FRAME_RATE / peak, ref)
    # end to end on the random weights
    if args.e2e_seconds > 0:
        bark = Bark(gpu["semantic"], gpu["coarse"], gpu["fine"], gpu["codec"], CharTokenizer())
        bark.generate(E2E_TEXT, rng=0, max_gen_duration_s=0.5, silent=True)  # warm: compiles every shape kind
        t0 = time.perf_counter()
        audio = bark.generate(E2E_TEXT, rng=0, max_gen_duration_s=args.e2e_seconds, silent=True)
        took = time.perf_counter() - t0
        seconds = audio.shape[0] / SAMPLE_RATE
        row(f"end to end s per s ({seconds:.1f} s audio)", took / seconds, float("nan"), float("nan"))
        if args.batch > 1:
            label = f"end to end, batch {args.batch}, s per s"
            t0 = time.perf_counter()
            try:
                audios = bark.generate([E2E_TEXT] * args.batch, rng=0, max_gen_duration_s=args.e2e_seconds,
                                       silent=True)
            except Exception as e:  # noqa: BLE001 - one failed row should not hide the rest of the table
                print(f"{label:<34} failed: {type(e).__name__}: {' '.join(str(e).split())[:160]}")
                return
            took = time.perf_counter() - t0
            seconds = sum(a.shape[0] for a in audios) / SAMPLE_RATE
            row(label, took / seconds, float("nan"), float("nan"))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", choices=sorted(SIZES), nargs="+", default=["small", "large"],
                   help="model shapes: small = suno/bark-small, large = suno/bark (default: both)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=64, help="decode steps timed per causal model")
    p.add_argument("--context", type=int, default=300, help="positions in the cache while decoding")
    p.add_argument("--batch", type=int, default=4, help="rows of the batched rows (1: none)")
    p.add_argument("--codec-seconds", type=float, default=10.0)
    p.add_argument("--e2e-seconds", type=float, default=4.0, help="audio cap of the end-to-end run (0: none)")
    p.add_argument("--no-torch", action="store_true", help="skip the transformers comparison")
    p.add_argument("--model", help="a converted model (or hub id), for an end-to-end generate timing")
    p.add_argument("--text", default=E2E_TEXT)
    args = p.parse_args(argv)
    if args.steps < 2:
        p.error("--steps must be >= 2 (the first step is a warm-up)")
    if args.context < 1 or args.context + args.steps > 1024:
        p.error("--context must be >= 1 and --context + --steps at most 1024 (the models' block size)")
    if args.batch < 1:
        p.error("--batch must be >= 1")

    cuda_or_exit("bench_cuda")
    from barknp.cuda.kernels import Device

    dev = Device()
    bw = bandwidth(dev.cuda)
    rates = matmul_rates(dev)
    print(f"GPU: {gpu_name(dev.cuda)}")
    print(f"floor inputs: bandwidth {bw / 1e9:.0f} GB/s (device-to-device copy); fp32 matmul "
          + ", ".join(f"{k} {v / 1e12:.1f} TFLOP/s" for k, v in rates.items()))
    peak = max(rates.values())

    def row(label, ours, floor, ref):
        print(f"{label:<34}{ours:>12.4g}{floor:>12.4g}{ref:>15.4g}{ref / ours:>8.2f}", flush=True)

    for size in args.size:
        bench_size(size, args, dev, bw, peak, row)

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
