"""The whole Bark pipeline, stage by stage: barknp against Suno's original, transformers and the floor.

    python benchmarks/bench_pipeline.py [--size small|large] [--semantic-tokens 300] [--threads 2]
                                        [--int8] [--f16] [--kv16] [--no-voice] [--skip-torch] [--skip-suno]
                                        [--skip-cold] [--quick] [--profile] [--repeat N]
                                        [--workdir DIR] [--json OUT.json]

Every engine runs the same fixed workload with the same weights:

* weights: drawn once with NumPy (tools/random_weights.py for the GPTs, tools/make_codec_goldens.py
  for the codec) at the bark-small (or bark) shape and written as barknp stage files into
  ``--workdir``; barknp memory-maps them, Suno's original GPT/FineGPT and transformers' Bark models
  are filled from the same arrays;
* workload: text -> exactly N semantic tokens (``allow_early_stop=False`` and
  ``max_gen_duration_s = (N - 0.5) / 49.9``: both loops stop after the token that pushes the
  counted duration past the limit), voice ``v2/en_speaker_6`` when ../shared/data has it (none
  with ``--no-voice``), then
  the coarse, fine and codec work that follows, sampled with one seeded numpy Generator;
* ``--int8`` and ``--f16`` add barknp with int8 or float16 weights for the causal stages, and
  ``--kv16`` barknp with int8 weights and float16 KV caches: reduced-precision options (their
  error against float32: benchmarks/bench_int8_quality.py);
* each engine runs in its own fresh process (so its peak RSS is its own), after a short warm-up
  (Numba compilation), with ``--threads`` threads for BLAS, Numba and torch;
* ``--repeat N`` runs every engine N times, interleaved, and reports each row's median and the
  end-to-end times and ratios of every round: on a shared machine one round's ratio moves by 20 %.

Timings come from wrappers around each model's forward call: time to first token is the time
from the stage's start to the second forward call (prefill plus the first draw); decode ms/token
is the rest of the stage divided by the decode calls (forward, draw and loop overhead included).

The floor of a row is max(FLOPs / sgemm rate, bytes read / GEMV bandwidth), both rates measured
in this run (benchmarks/floors.py, before and after the engines; the best of the two is used).
Formulas (L layers, width C, output vocabulary V, S cached positions, T positions):

    decode bytes/token  = linear weights + the V LM-head rows sampled (float32: 4 B each, int8: 1 B
                          + 4 B per row) + biases + layer norms + 2 embedding rows
                          + KV read 2 * 4 * L * S * C               (V: semantic 10,001, coarse 1,024)
    decode FLOPs/token  = 2 * (12 L C^2 + V C) + 4 L S C
    causal prefill FLOPs= 2 T * 12 L C^2 + 2 L T (T + 1) C + 2 V C          (LM head: last position)
    fine pass FLOPs     = (L - 1) (2 T * 12 C^2 + 4 T^2 C)                  (T = 1024 frames, of which
                          + 6 T C^2 + 4 n T C + 18 n C^2 + 2 n V C            the last n are predicted,
                                                                              V = 1024 head rows)
    codec FLOPs/s audio = benchmarks/bench_codec.decoder_flops_per_second (convs, LSTM, transposed convs)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))
sys.path.insert(0, str(REPO / "benchmarks"))

import numpy as np  # noqa: E402
from floors import peak_rss_mb  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
TOKENIZER_DIR = SHARED / "bert-base-multilingual-cased"
VOICE_NPZ = SHARED / "bark-voices" / "v2" / "en_speaker_6.npz"
TEXT = "Hello, my name is Suno. And, uh, I like pizza. [laughs] But I also have other interests."
SIZES = {"small": (12, 768, 12), "large": (24, 1024, 16)}  # (layers, width, heads)
VOCABS = {"semantic": (129_600, 10_048), "coarse": (12_096, 12_096), "fine": (1_056, 1_056)}
# LM-head rows a decode step needs: the semantic ids and end-of-speech; one codebook's ids
HEAD_ROWS = {"semantic": 10_001, "coarse": 1_024}
SEEDS = {"semantic": 101, "coarse": 102, "fine": 103, "codec": 104}
SAMPLING_SEED = 7
FRAME_RATE = 75
SAMPLE_RATE = 24_000


# --- weights --------------------------------------------------------------------------------


def gpt_config(size: str, stage: str):
    from barknp.config import GPTConfig

    layers, width, heads = SIZES[size]
    vin, vout = VOCABS[stage]
    # Suno's checkpoints have no linear biases (weights/manifests); the fine model's layer norms
    # carry biases all the same, which random_gpt_tensors(fine=True) draws
    return GPTConfig(num_layers=layers, num_heads=heads, hidden_size=width, input_vocab_size=vin,
                     output_vocab_size=vout, block_size=1024, bias=False)


def draw_signature(size: str) -> str:
    """What the stage files in a workdir were drawn from: files from another draw are redrawn."""
    bias = {stage: gpt_config(size, stage).bias for stage in VOCABS}
    return json.dumps({"size": size, "seeds": SEEDS, "bias": bias, "drawn_by": "bench_pipeline/2"}, sort_keys=True)


# stage file name suffix of each weights option
SUFFIX = {"float32": "", "int8": ".int8", "float16": ".f16"}


def prepare_weights(workdir: Path, size: str, reduced: tuple[str, ...] = ()) -> None:
    """Draw the four stages' weights once and write barknp stage files (atomically) into workdir,
    with the reduced-precision files of ``reduced`` ("int8", "float16") for the causal stages."""
    from barknp.config import CodecConfig, config_to_json
    from barknp.convert.quantize import halve_tensors, quantize_tensors
    from barknp.weights import save_stage
    from make_codec_goldens import random_codec_tensors
    from random_weights import random_gpt_tensors

    workdir.mkdir(parents=True, exist_ok=True)
    mark = workdir / "draw.json"
    signature = draw_signature(size)
    if not mark.is_file() or mark.read_text() != signature:  # another draw's files (or unknown): redraw all
        for old in workdir.glob("*.safetensors"):
            old.unlink()

    def write(name: str, stage: str, config_json: str, tensors) -> None:
        path = workdir / f"{name}.safetensors"
        if path.exists():
            return
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        save_stage(str(tmp), stage, config_json, tensors() if callable(tensors) else tensors)
        os.replace(tmp, path)

    for stage in ("semantic", "coarse", "fine"):
        c = gpt_config(size, stage)
        wanted = [""] + ([SUFFIX[w] for w in reduced] if stage != "fine" else [])
        if all((workdir / f"{stage}{suffix}.safetensors").exists() for suffix in wanted):
            continue
        t = random_gpt_tensors(c.num_layers, c.hidden_size, c.input_vocab_size, c.output_vocab_size,
                               SEEDS[stage], fine=stage == "fine", bias=c.bias)
        write(stage, stage, config_to_json(c), t)
        if stage != "fine":
            for weights in reduced:
                reduce = quantize_tensors if weights == "int8" else halve_tensors
                write(f"{stage}{SUFFIX[weights]}", stage, config_to_json(c), lambda t=t, reduce=reduce: reduce(t))
        del t
    write("codec", "codec", config_to_json(CodecConfig()), lambda: random_codec_tensors(SEEDS["codec"]))
    tmp = mark.with_name(f"draw.json.tmp-{os.getpid()}")
    tmp.write_text(signature)
    os.replace(tmp, mark)


def stage_tensors(workdir: Path, stage: str, weights: str = "float32") -> dict:
    from barknp.weights import load_stage

    return load_stage(str(workdir / f"{stage}{SUFFIX[weights]}.safetensors"), stage)[1]


# --- the workload's shape (no model needed) -------------------------------------------------


def max_duration(n_tokens: int) -> float:
    """The max_gen_duration_s that stops both semantic loops after exactly n_tokens tokens."""
    return (n_tokens - 0.5) / 49.9


def load_voice_dict(args):
    """The workload's voice (v2/en_speaker_6) as a dict, or None with --no-voice or without the data."""
    if args.no_voice or not VOICE_NPZ.is_file():
        return None
    with np.load(VOICE_NPZ) as z:
        return {k: np.asarray(z[k]) for k in ("semantic_prompt", "coarse_prompt", "fine_prompt")}


def workload_shape(n_tokens: int, voice) -> dict:
    """The coarse windows (prefill length, forward calls) and fine passes the workload implies,
    found by running barknp's loops over models that return zero logits (no weights involved)."""
    from barknp.generation.coarse import generate_coarse
    from barknp.generation.fine import generate_fine

    class ZeroCausal:
        def __init__(self):
            self.calls = []

        def new_cache(self, batch=1):
            return None

        def forward(self, ids, cache=None, merge_context=False, last_only=False, vocab=None):
            self.calls.append(ids.shape[1])
            start, stop = vocab or (0, VOCABS["coarse"][1])
            return np.zeros((1, 1, stop - start), np.float32)

    class ZeroFine:
        def __init__(self):
            self.passes: list[tuple[int, int]] = []  # (frames whose logits are wanted, head rows) per pass

        def forward(self, book, codes, first=0, vocab=None):
            start, stop = vocab or (0, VOCABS["fine"][1])
            self.passes.append((codes.shape[1] - first, stop - start))
            return np.zeros((1, codes.shape[1] - first, stop - start), np.float32)

    coarse_model = ZeroCausal()
    coarse = generate_coarse(coarse_model, np.zeros(n_tokens, np.int64), voice=voice, rng=0, silent=True)
    windows = []
    for n in coarse_model.calls:
        if n > 1:
            windows.append([n, 1])
        else:
            windows[-1][1] += 1
    fine_model = ZeroFine()
    generate_fine(fine_model, coarse, voice=voice, rng=0, silent=True)
    return {"windows": windows, "frames": int(coarse.shape[1]), "fine_passes": len(fine_model.passes),
            "fine_outputs": fine_model.passes}


# --- timing wrappers ------------------------------------------------------------------------


class Timed:
    """Wraps a model; records (start, duration, input length) of every forward / call."""

    def __init__(self, inner, method: str = "forward"):
        self._inner = inner
        self._method = getattr(inner, method) if method != "__call__" else inner
        self.calls: list[tuple[float, float, int]] = []
        self.ahead: list[int] = []  # ids of each prefill run ahead, beside decode steps
        if hasattr(inner, "prefill_ahead"):  # only where the model has it: the loop asks hasattr
            self.prefill_ahead = self._prefill_ahead

    @contextlib.contextmanager
    def _prefill_ahead(self, ids, cache=None):
        with self._inner.prefill_ahead(ids, cache) as job:
            yield job
        if job is not None:
            self.ahead.append(int(ids.shape[1]))

    def _timed(self, *args, **kwargs):
        t0 = time.perf_counter()
        out = self._method(*args, **kwargs)
        dt = time.perf_counter() - t0
        ids = args[0] if not isinstance(args[0], int) else args[1]
        self.calls.append((t0, dt, int(ids.shape[1])))
        return out

    forward = _timed
    __call__ = _timed

    def __getattr__(self, name):
        return getattr(self._inner, name)


def stage_metrics(sem: Timed, t_sem: tuple, coarse: Timed, t_coarse: tuple, fine: Timed, t_fine: tuple,
                  codec_s: float, frames: int) -> dict:
    s0, s1 = t_sem
    n_sem = len(sem.calls)
    ttft = (sem.calls[1][0] if n_sem > 1 else s1) - s0
    pre = [c for c in coarse.calls if c[2] > 1]
    dec = [c for c in coarse.calls if c[2] == 1]
    coarse_total = t_coarse[1] - t_coarse[0]
    audio_s = frames / FRAME_RATE
    e2e = (s1 - s0) + coarse_total + (t_fine[1] - t_fine[0]) + codec_s
    return {
        "semantic_tokens": n_sem,
        "semantic_ttft_s": ttft,
        "semantic_prefill_forward_s": sem.calls[0][1],
        "semantic_decode_s_per_token": (s1 - sem.calls[1][0]) / (n_sem - 1) if n_sem > 1 else float("nan"),
        "semantic_decode_forward_s_per_token": float(np.mean([c[1] for c in sem.calls[1:]])) if n_sem > 1 else float("nan"),
        "semantic_total_s": s1 - s0,
        "coarse_windows": len(pre),
        "coarse_prefill_mean_s": float(np.mean([c[1] for c in pre])),
        "coarse_prefill_mean_len": float(np.mean([c[2] for c in pre])),
        "coarse_decode_s_per_token": (coarse_total - sum(c[1] for c in pre)) / max(1, len(dec)),
        "coarse_decode_forward_s_per_token": float(np.mean([c[1] for c in dec])) if dec else float("nan"),
        "coarse_windows_ahead": len(coarse.ahead),
        "coarse_total_s": coarse_total,
        "fine_passes": len(fine.calls),
        "fine_pass_s": float(np.mean([c[1] for c in fine.calls])),
        "fine_total_s": t_fine[1] - t_fine[0],
        "codec_s": codec_s,
        "codec_s_per_s": codec_s / audio_s,
        "audio_s": audio_s,
        "e2e_s": e2e,
        "rtf": e2e / audio_s,
    }


# --- children: one engine each --------------------------------------------------------------


def load_barknp(workdir: Path, weights: str, stages=("semantic", "coarse", "fine", "codec"), kv_cache="float32"):
    from barknp.models.codec import Codec
    from barknp.models.fine import FineGPT
    from barknp.models.gpt import CausalGPT

    def causal(stage):
        return CausalGPT.load(str(workdir / f"{stage}{SUFFIX[weights]}.safetensors"), stage, kv_cache=kv_cache)

    out = {}
    for s in stages:
        if s in ("semantic", "coarse"):
            out[s] = causal(s)
        elif s == "fine":
            out[s] = FineGPT.load(str(workdir / "fine.safetensors"))
        else:
            out[s] = Codec.load(str(workdir / "codec.safetensors"))
    return out


def child_barknp(args) -> dict:
    import cProfile
    import io
    import pstats

    from barknp.generation.coarse import generate_coarse
    from barknp.generation.fine import generate_fine
    from barknp.generation.semantic import generate_semantic
    from barknp.generation.tokenizer import load_tokenizer
    from barknp.threads import set_num_threads

    set_num_threads(args.threads)
    workdir = Path(args.workdir)
    weights = "int8" if args.int8 else "float16" if args.f16 else "float32"
    m = load_barknp(workdir, weights, kv_cache="float16" if args.kv16 else "float32")
    tok = load_tokenizer(TOKENIZER_DIR)
    voice = load_voice_dict(args)

    # warm-up: compile every Numba kernel the timed run uses
    w = generate_semantic(m["semantic"], tok, TEXT, voice=voice, max_gen_duration_s=max_duration(4),
                          allow_early_stop=False, rng=0, silent=True)
    generate_coarse(m["coarse"], w, voice=voice, rng=0, silent=True)
    m["fine"].forward(1, np.zeros((1, 32, 8), np.int64))
    m["codec"].decode(np.zeros((8, 100), np.int64))

    sem, coarse, fine = Timed(m["semantic"]), Timed(m["coarse"]), Timed(m["fine"])
    rng = np.random.default_rng(SAMPLING_SEED)
    profiles = {}

    def run(name, fn):
        prof = cProfile.Profile() if args.profile else None
        t0 = time.perf_counter()
        if prof:
            prof.enable()
        out = fn()
        if prof:
            prof.disable()
            s = io.StringIO()
            pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(14)
            profiles[name] = s.getvalue()
        return out, (t0, time.perf_counter())

    semantic, t_sem = run("semantic", lambda: generate_semantic(
        sem, tok, TEXT, voice=voice, max_gen_duration_s=max_duration(args.semantic_tokens),
        allow_early_stop=False, rng=rng, silent=True))
    codes, t_coarse = run("coarse", lambda: generate_coarse(coarse, semantic, voice=voice, rng=rng, silent=True))
    full, t_fine = run("fine", lambda: generate_fine(fine, codes, voice=voice, rng=rng, silent=True))
    audio, t_codec = run("codec", lambda: m["codec"].decode(full))
    res = stage_metrics(sem, t_sem, coarse, t_coarse, fine, t_fine, t_codec[1] - t_codec[0], full.shape[1])
    res["peak_rss_mb"] = peak_rss_mb()
    res["tokens"] = {"semantic": semantic.tolist(), "coarse": codes.tolist(), "fine": full.tolist()}
    if profiles:
        res["profiles"] = profiles
    return res


def suno_models(workdir: Path, size: str) -> dict:
    """Suno's original torch GPT / FineGPT holding the stage files' weights."""
    import torch
    from suno_reference import _suno_name, import_original

    _, model_mod, fine_mod = import_original()
    out = {}
    for key, stage in (("text", "semantic"), ("coarse", "coarse"), ("fine", "fine")):
        c = gpt_config(size, stage)
        common = dict(block_size=c.block_size, input_vocab_size=c.input_vocab_size,
                      output_vocab_size=c.output_vocab_size, n_layer=c.num_layers, n_head=c.num_heads,
                      n_embd=c.hidden_size, dropout=0.0, bias=c.bias)
        with torch.device("meta"):  # no random init: every tensor is replaced by load_state_dict
            model = (fine_mod.FineGPT(fine_mod.FineGPTConfig(**common, n_codes_total=8, n_codes_given=1))
                     if stage == "fine" else model_mod.GPT(model_mod.GPTConfig(**common)))
        state = {_suno_name(k): torch.from_numpy(np.array(v)) for k, v in stage_tensors(workdir, stage).items()}
        model.load_state_dict(state, strict=stage != "fine", assign=True)
        if stage == "fine":  # the original ties head i to embedding i + 1
            for i, head in enumerate(model.lm_heads):
                head.weight = model.transformer.wtes[i + 1].weight
        if hasattr(model.transformer, "h"):
            for block in model.transformer.h:  # causal-mask buffers were left on the meta device
                attn = block.attn
                if hasattr(attn, "bias") and isinstance(attn.bias, torch.Tensor) and attn.bias.is_meta:
                    n = c.block_size
                    attn.bias = torch.tril(torch.ones(n, n)).view(1, 1, n, n)
        out[key] = model.eval()
    return out


def child_suno(args) -> dict:
    import torch
    from barknp.generation.tokenizer import load_tokenizer
    from make_codec_goldens import reference_decode, reference_model
    from suno_reference import original_generation

    torch.set_num_threads(args.threads)
    workdir = Path(args.workdir)
    models = suno_models(workdir, args.size)
    codec = reference_model({k: np.array(v) for k, v in stage_tensors(workdir, "codec").items()})
    tok = load_tokenizer(TOKENIZER_DIR)
    voice = load_voice_dict(args)
    with original_generation(models, tok, np.random.default_rng(0)) as gen:  # warm-up
        w = gen.generate_text_semantic(TEXT, history_prompt=voice, max_gen_duration_s=max_duration(4),
                                       allow_early_stop=False, use_kv_caching=True, silent=True)
        gen.generate_coarse(w, history_prompt=voice, silent=True, use_kv_caching=True)
    reference_decode(codec, np.zeros((1, 8, 100), np.int64))

    timed = {k: Timed(v, "__call__") for k, v in models.items()}
    with original_generation(timed, tok, np.random.default_rng(SAMPLING_SEED)) as gen:
        t0 = time.perf_counter()
        semantic = gen.generate_text_semantic(
            TEXT, history_prompt=voice, max_gen_duration_s=max_duration(args.semantic_tokens),
            allow_early_stop=False, use_kv_caching=True, silent=True)
        t1 = time.perf_counter()
        codes = gen.generate_coarse(semantic, history_prompt=voice, silent=True, use_kv_caching=True)
        t2 = time.perf_counter()
        full = gen.generate_fine(codes, history_prompt=voice, silent=True)
        t3 = time.perf_counter()
    reference_decode(codec, full[None])
    t4 = time.perf_counter()
    res = stage_metrics(timed["text"], (t0, t1), timed["coarse"], (t1, t2), timed["fine"], (t2, t3),
                        t4 - t3, full.shape[1])
    res["peak_rss_mb"] = peak_rss_mb()
    res["tokens"] = {"semantic": semantic.tolist(), "coarse": codes.tolist(), "fine": full.tolist()}
    return res


def child_transformers(args) -> dict:
    """transformers' Bark GPTs run the same shapes: merged prefill then single-token steps through
    its DynamicCache, coarse windows of the same lengths, the fine passes, EncodecModel.decode.
    Tokens are picked by argmax (transformers' own generate() is another algorithm)."""
    import torch
    from make_codec_goldens import reference_decode, reference_model
    from transformers.models.bark import configuration_bark as cb
    from transformers.models.bark import modeling_bark as mb

    torch.set_num_threads(args.threads)
    workdir = Path(args.workdir)
    shape = json.loads(args.shape)

    def build(stage):
        c = gpt_config(args.size, stage)
        cls, cfg = {"semantic": (mb.BarkSemanticModel, cb.BarkSemanticConfig),
                    "coarse": (mb.BarkCoarseModel, cb.BarkCoarseConfig),
                    "fine": (mb.BarkFineModel, cb.BarkFineConfig)}[stage]
        kw = dict(num_layers=c.num_layers, hidden_size=c.hidden_size, num_heads=c.num_heads,
                  input_vocab_size=c.input_vocab_size, output_vocab_size=c.output_vocab_size,
                  block_size=c.block_size, bias=c.bias)
        if stage == "fine":
            kw.update(n_codes_total=8, n_codes_given=1)
        with torch.device("meta"):
            model = cls(cfg(**kw))
        state = {k: torch.from_numpy(np.array(v)) for k, v in stage_tensors(workdir, stage).items()}
        model.load_state_dict(state, strict=False, assign=True)
        for name, buf in list(model.named_buffers()):
            if buf.is_meta:  # causal-mask buffers
                n = c.block_size
                parent = model.get_submodule(name.rsplit(".", 1)[0])
                setattr(parent, name.rsplit(".", 1)[1], torch.tril(torch.ones(n, n, dtype=torch.bool)).view(1, 1, n, n))
        if stage == "fine":
            model.tie_weights()
        return model.eval()

    sem, coarse, fine = build("semantic"), build("coarse"), build("fine")
    codec = reference_model({k: np.array(v) for k, v in stage_tensors(workdir, "codec").items()})
    rng = np.random.default_rng(SAMPLING_SEED)
    n_tok = args.semantic_tokens

    @torch.no_grad()
    def semantic_run(n):
        ids = torch.from_numpy(rng.integers(10_048, 129_595, size=(1, 513)))
        wte = sem.input_embeds_layer
        embeds = torch.cat([wte(ids[:, :256]) + wte(ids[:, 256:512]), wte(ids[:, 512:])], dim=1)
        t0 = time.perf_counter()
        out = sem(inputs_embeds=embeds, use_cache=True)
        pkv, nxt = out.past_key_values, out.logits[:, -1:, :10_000].argmax(-1)
        t1 = time.perf_counter()
        for _ in range(n - 1):
            out = sem(input_ids=nxt, past_key_values=pkv, use_cache=True)
            pkv, nxt = out.past_key_values, out.logits[:, -1:, :10_000].argmax(-1)
        return t1 - t0, (time.perf_counter() - t1) / max(1, n - 1), time.perf_counter() - t0

    @torch.no_grad()
    def coarse_run(windows):
        prefills, decode_calls = [], 0
        t0 = time.perf_counter()
        for length, calls in windows:
            ids = torch.from_numpy(rng.integers(10_000, 12_048, size=(1, length)))
            tp = time.perf_counter()
            out = coarse(input_ids=ids, use_cache=True)
            pkv, nxt = out.past_key_values, out.logits[:, -1:, 10_000:11_024].argmax(-1) + 10_000
            prefills.append(time.perf_counter() - tp)
            for _ in range(calls - 1):
                out = coarse(input_ids=nxt, past_key_values=pkv, use_cache=True)
                pkv, nxt = out.past_key_values, out.logits[:, -1:, 10_000:11_024].argmax(-1) + 10_000
                decode_calls += 1
        total = time.perf_counter() - t0
        return float(np.mean(prefills)), (total - sum(prefills)) / max(1, decode_calls), total

    @torch.no_grad()
    def fine_run(passes):
        codes = torch.from_numpy(rng.integers(0, 1024, size=(1, 1024, 8)))
        times = []
        for p in range(passes):
            t = time.perf_counter()
            book = 2 + p % 6
            logits = fine(book, input_ids=codes).logits
            codes[0, :, book] = logits[0, :, :1024].argmax(-1)
            times.append(time.perf_counter() - t)
        return float(np.mean(times)), sum(times)

    semantic_run(3)  # warm-up
    coarse_run([[shape["windows"][0][0], 3]])
    ttft, dec, sem_total = semantic_run(n_tok)
    pre, cdec, coarse_total = coarse_run(shape["windows"])
    fpass, ftotal = fine_run(shape["fine_passes"])
    codes = rng.integers(0, 1024, size=(1, 8, shape["frames"]))
    t = time.perf_counter()
    reference_decode(codec, codes)
    codec_s = time.perf_counter() - t
    audio_s = shape["frames"] / FRAME_RATE
    e2e = sem_total + coarse_total + ftotal + codec_s
    return {"semantic_ttft_s": ttft, "semantic_decode_s_per_token": dec, "semantic_total_s": sem_total,
            "coarse_prefill_mean_s": pre, "coarse_decode_s_per_token": cdec, "coarse_total_s": coarse_total,
            "fine_pass_s": fpass, "fine_total_s": ftotal, "codec_s_per_s": codec_s / audio_s, "e2e_s": e2e,
            "rtf": e2e / audio_s, "peak_rss_mb": peak_rss_mb()}


def child_first_token(args) -> dict:
    """From a fresh interpreter: import, load the semantic model, one semantic token. Prints the
    wall-clock time at that token; the parent subtracts the time it started this process."""
    t_import = time.time()
    if args.hide_scipy:
        hide_scipy()
    if args.engine == "suno":
        import torch
        from barknp.generation.tokenizer import load_tokenizer
        from suno_reference import original_generation

        torch.set_num_threads(args.threads)
        models = suno_models(Path(args.workdir), args.size)
        with original_generation(models, load_tokenizer(TOKENIZER_DIR), np.random.default_rng(0)) as gen:
            out = gen.generate_text_semantic(TEXT, history_prompt=load_voice_dict(args), max_gen_duration_s=max_duration(1),
                                             allow_early_stop=False, use_kv_caching=True, silent=True)
    else:
        from barknp.generation.semantic import generate_semantic
        from barknp.generation.tokenizer import load_tokenizer
        from barknp.threads import set_num_threads

        set_num_threads(args.threads)
        weights = {"barknp-int8": "int8", "barknp-f16": "float16"}.get(args.engine, "float32")
        model = load_barknp(Path(args.workdir), weights, stages=("semantic",))["semantic"]
        out = generate_semantic(model, load_tokenizer(TOKENIZER_DIR), TEXT, voice=load_voice_dict(args),
                                max_gen_duration_s=max_duration(1), allow_early_stop=False, rng=0, silent=True)
    assert len(out) == 1
    if args.hide_scipy:
        assert not any(name.split(".")[0] == "scipy" for name in sys.modules), "SciPy was imported"
    return {"t_first": time.time(), "after_imports_s": time.time() - t_import}


def hide_scipy() -> None:
    """Make ``import scipy`` fail in this process, as where only barknp's dependencies are
    installed. Numba imports SciPy's BLAS bindings, when SciPy is there, on the first load of a
    compiled function (numba.np.arraymath), and the references need SciPy here."""
    import importlib.abc

    class NoScipy(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] == "scipy":
                raise ModuleNotFoundError(f"No module named {name!r} (hidden)")
            return None

    sys.meta_path.insert(0, NoScipy())


# --- parent ---------------------------------------------------------------------------------


def spawn(args, kind: str, extra=(), env=None, timeout=3600) -> dict | None:
    cmd = [sys.executable, __file__, "--child", kind, "--workdir", str(args.workdir), "--size", args.size,
           "--semantic-tokens", str(args.semantic_tokens), "--threads", str(args.threads),
           *(["--no-voice"] if args.no_voice else []), *extra]
    t0 = time.time()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:  # this engine's column is lost, not the run
        print(f"[{kind}] timed out after {timeout} s", file=sys.stderr)
        return None
    if proc.returncode != 0:
        print(f"[{kind}] failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}", file=sys.stderr)
        return None
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["_spawned_at"] = t0
    print(f"[{kind}] done in {time.time() - t0:.1f} s", file=sys.stderr, flush=True)
    return res


def first_token_times(args, engine: str) -> dict | None:
    """Seconds from process start to the first semantic token: ``cold_s`` with an empty
    NUMBA_CACHE_DIR, ``warm_s`` reusing the cache the cold run wrote, and for barknp
    ``warm_noscipy_s``, warm again with SciPy hidden (:func:`hide_scipy`). The OS page cache is
    warm in all."""
    runs = [("cold_s", [])] + [("warm_s", [])] + ([("warm_noscipy_s", ["--hide-scipy"])] if engine != "suno" else [])
    out = {}
    with tempfile.TemporaryDirectory(prefix="bench-numba-") as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        for key, extra in runs:
            r = spawn(args, "first-token", ["--engine", engine, *extra], env=env)
            if r is None:
                return None
            out[key] = r["t_first"] - r["_spawned_at"]
    return out


def floors(args, shape: dict, gemv_gbs: float, sgemm: float, workdir: Path) -> dict:
    """Floor seconds of each row, float32 and int8 (see the module docstring for the formulas)."""
    from bench_codec import decoder_flops_per_second
    from barknp.config import CodecConfig

    L, C, _ = SIZES[args.size]
    n = args.semantic_tokens

    def decode_bytes(stage, weights):
        """A decode step's weight bytes: all but the embedding tables, of the LM head only the rows
        the stage samples (HEAD_ROWS), plus one token and one position embedding row."""
        t = stage_tensors(workdir, stage, weights)
        weights = sum(v.nbytes for k, v in t.items() if "embeds_layer" not in k and not k.startswith("lm_head."))
        head = sum(v.nbytes for k, v in t.items() if k.startswith("lm_head."))
        return weights + head * HEAD_ROWS[stage] / VOCABS[stage][1] + 2 * C * 4

    def floor(flops, nbytes):
        return max(flops / (sgemm * 1e9), nbytes / (gemv_gbs * 1e9))

    def fine_floor(n, V, nbytes, T=1024):
        """A T-frame fine pass that wants the logits (V of them) of its last n frames: every block
        over all frames but the last, whose attention output, projection and MLP skip the others."""
        body = (L - 1) * (2 * T * 12 * C**2 + 4 * T * T * C)
        last = 2 * T * 3 * C**2 + 4 * n * T * C + 2 * n * 9 * C**2
        return floor(body + last + 2 * n * V * C, nbytes)

    def prefill(T, V):
        flops = 2 * T * 12 * L * C**2 + 2 * L * T * (T + 1) * C + 2 * V * C
        return flops

    def decode(stage, S, weights):
        V = HEAD_ROWS[stage]
        return floor(2 * (12 * L * C**2 + V * C) + 4 * L * S * C, decode_bytes(stage, weights) + 2 * 4 * L * S * C)

    out = {}
    for key, weights, wanted in (("f32", "float32", True), ("int8", "int8", args.int8), ("f16", "float16", args.f16)):
        if not wanted:
            continue
        wbytes_sem = decode_bytes("semantic", weights)
        sem_prefill = floor(prefill(257, 10_048), wbytes_sem)
        sem_decode = [decode("semantic", 257 + i, weights) for i in range(1, n)]
        coarse_pre, coarse_dec = [], []
        wbytes_coarse = decode_bytes("coarse", weights)
        for length, calls in shape["windows"]:
            coarse_pre.append(floor(prefill(length, 12_096), wbytes_coarse))
            coarse_dec += [decode("coarse", length + i, weights) for i in range(1, calls)]
        fine_weights = sum(v.nbytes for k, v in stage_tensors(workdir, "fine").items() if "embeds_layer" not in k)
        fine_passes = [fine_floor(n, V, fine_weights) for n, V in shape["fine_outputs"]]
        fine_pass = float(np.mean(fine_passes))
        codec = decoder_flops_per_second(CodecConfig()) / (sgemm * 1e9)
        audio_s = shape["frames"] / FRAME_RATE
        e2e = sem_prefill + sum(sem_decode) + sum(coarse_pre) + sum(coarse_dec) + sum(fine_passes) + codec * audio_s
        out[key] = {
            "semantic_ttft_s": sem_prefill, "semantic_decode_s_per_token": float(np.mean(sem_decode)),
            "coarse_prefill_mean_s": float(np.mean(coarse_pre)),
            "coarse_decode_s_per_token": float(np.mean(coarse_dec)),
            "coarse_total_s": sum(coarse_pre) + sum(coarse_dec),
            "fine_pass_s": fine_pass, "fine_total_s": sum(fine_passes),
            "codec_s_per_s": codec, "e2e_s": e2e, "rtf": e2e / audio_s,
            "decode_bytes_semantic": wbytes_sem, "decode_bytes_coarse": wbytes_coarse,
        }
    return out


ROWS = [  # (label, key, unit scale, unit)
    ("semantic decode / token", "semantic_decode_s_per_token", 1e3, "ms"),
    ("semantic first token (prefill 513 ids)", "semantic_ttft_s", 1e3, "ms"),
    ("coarse decode / token", "coarse_decode_s_per_token", 1e3, "ms"),
    ("coarse window prefill (mean)", "coarse_prefill_mean_s", 1e3, "ms"),
    ("coarse stage total", "coarse_total_s", 1, "s"),
    ("fine pass (1024 frames, 1 codebook)", "fine_pass_s", 1e3, "ms"),
    ("fine stage total", "fine_total_s", 1, "s"),
    ("codec, per s of audio", "codec_s_per_s", 1, "s"),
    ("end to end", "e2e_s", 1, "s"),
    ("real-time factor (compute s / audio s)", "rtf", 1, "x"),
    ("peak RSS", "peak_rss_mb", 1, "MB"),
    ("first token, cold (barknp: empty Numba cache)", "cold_s", 1, "s"),
    ("first token, warm (second start)", "warm_s", 1, "s"),
    ("first token, warm, SciPy hidden", "warm_noscipy_s", 1, "s"),
]


def median_result(runs: list[dict]) -> dict:
    """One engine's rounds -> each numeric measurement's median; anything else (the tokens) from
    the first round."""
    out = dict(runs[0])
    for key, value in runs[0].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = float(np.median([r[key] for r in runs if isinstance(r.get(key), (int, float))]))
    return out


def fmt(v) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "-"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.3g}" if abs(v) < 1 else f"{v:.2f}"


def print_table(cols: dict, header: str) -> None:
    names = list(cols)
    ratio_specs = []
    if "barknp f32" in cols and "Suno original" in cols:
        ratio_specs.append(("f32/Suno", "barknp f32", "Suno original"))
    if "barknp f32" in cols and "floor f32" in cols:
        ratio_specs.append(("f32/floor", "barknp f32", "floor f32"))
    if "barknp int8" in cols and "floor int8" in cols:
        ratio_specs.append(("int8/fl8", "barknp int8", "floor int8"))
    if "barknp int8" in cols and "Suno original" in cols:
        ratio_specs.append(("int8/Suno", "barknp int8", "Suno original"))
    if "barknp f16" in cols and "Suno original" in cols:
        ratio_specs.append(("f16/Suno", "barknp f16", "Suno original"))
    if "barknp int8 kv16" in cols and "Suno original" in cols:
        ratio_specs.append(("kv16/Suno", "barknp int8 kv16", "Suno original"))
    if "barknp int8 kv16" in cols and "barknp f32" in cols:
        ratio_specs.append(("kv16/f32", "barknp int8 kv16", "barknp f32"))
    w0 = max(len(label) for label, *_ in ROWS) + 1
    widths = [max(12, len(n) + 1) for n in names]
    print(header)
    line = f"{'':{w0}s}{'unit':>5s} " + "".join(f"{n:>{w}s}" for n, w in zip(names, widths))
    line += "".join(f"{r[0]:>11s}" for r in ratio_specs)
    print(line)
    print("-" * len(line))
    for label, key, scale, unit in ROWS:
        vals = [cols[n].get(key) for n in names]
        if all(v is None for v in vals):
            continue
        s = f"{label:{w0}s}{unit:>5s} "
        s += "".join(f"{fmt(None if v is None else v * scale):>{w}s}" for v, w in zip(vals, widths))
        for _, a, b in ratio_specs:
            va, vb = cols[a].get(key), cols[b].get(key)
            s += f"{(fmt(va / vb) if va is not None and vb else '-'):>11s}"
        print(s)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=sorted(SIZES), default="small")
    ap.add_argument("--semantic-tokens", type=int, default=300, help="N: the semantic stage makes exactly N tokens")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--int8", action="store_true", help="add a barknp column with int8 semantic/coarse weights")
    ap.add_argument("--f16", action="store_true", help="add a barknp column with float16 semantic/coarse weights")
    ap.add_argument("--kv16", action="store_true",
                    help="add a barknp column with int8 weights and float16 KV caches (reduced precision)")
    ap.add_argument("--skip-torch", action="store_true", help="skip the transformers column")
    ap.add_argument("--skip-suno", action="store_true", help="skip Suno's original (torch)")
    ap.add_argument("--skip-cold", action="store_true", help="skip the cold/warm first-token processes")
    ap.add_argument("--repeat", type=int, default=1,
                    help="N rounds of every engine, interleaved; the table gives each row's median")
    ap.add_argument("--no-voice", action="store_true", help="no voice prompt (default: v2/en_speaker_6)")
    ap.add_argument("--quick", action="store_true", help="60 semantic tokens (unless --semantic-tokens is given)")
    ap.add_argument("--profile", action="store_true", help="also profile barknp float32 per stage (cProfile, separate run)")
    ap.add_argument("--workdir", default=None, help="stage files are drawn here once and reused (default: /tmp/barknp-bench-SIZE)")
    ap.add_argument("--json", default=None, help="also write every measurement to this JSON file")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--engine", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--shape", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--hide-scipy", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.quick and "--semantic-tokens" not in (argv if argv is not None else sys.argv[1:]):
        args.semantic_tokens = 60
    if args.semantic_tokens < 2:
        ap.error("--semantic-tokens must be at least 2")
    if args.repeat < 1:
        ap.error("--repeat must be at least 1")
    args.workdir = Path(args.workdir or f"/tmp/barknp-bench-{args.size}")

    if args.child:
        fn = {"barknp": child_barknp, "suno": child_suno, "transformers": child_transformers,
              "first-token": child_first_token}[args.child]
        print(json.dumps(fn(args)))
        return

    from barknp.threads import set_num_threads
    from floors import gemv_bandwidth_gbs, sgemm_gflops

    t_start = time.time()
    load0 = os.getloadavg()
    print(f"preparing weights in {args.workdir} ...", file=sys.stderr, flush=True)
    prepare_weights(args.workdir, args.size, (("int8",) if args.int8 or args.kv16 else ()) + (("float16",) if args.f16 else ()))
    voice = load_voice_dict(args)
    shape = workload_shape(args.semantic_tokens, voice)
    set_num_threads(args.threads)
    rates = [(gemv_bandwidth_gbs(), sgemm_gflops())]

    try:
        import torch  # noqa: F401

        have_torch = True
    except ImportError:
        have_torch = False
    engines = [("barknp f32", "barknp", [])]
    if args.int8:
        engines.append(("barknp int8", "barknp", ["--int8"]))
    if args.f16:
        engines.append(("barknp f16", "barknp", ["--f16"]))
    if args.kv16:
        engines.append(("barknp int8 kv16", "barknp", ["--int8", "--kv16"]))
    if have_torch and not args.skip_suno:
        engines.append(("Suno original", "suno", []))
    if have_torch and not args.skip_torch:
        engines.append(("transformers", "transformers", ["--shape", json.dumps(shape)]))
    rounds: dict[str, list[dict | None]] = {col: [] for col, _, _ in engines}  # None: that round failed
    for _ in range(args.repeat):  # engines interleaved, so a slow spell of the machine hits each
        for col, kind, extra in engines:
            rounds[col].append(spawn(args, kind, extra))
    results = {col: median_result([r for r in runs if r]) for col, runs in rounds.items() if any(runs)}
    if not args.skip_cold:
        engines = [("barknp f32", "barknp")] + ([("barknp int8", "barknp-int8")] if args.int8 else [])
        engines += [("barknp f16", "barknp-f16")] if args.f16 else []
        if have_torch and not args.skip_suno:
            engines.append(("Suno original", "suno"))
        for col, engine in engines:
            ct = first_token_times(args, engine)
            if ct and col in results:
                results[col].update(ct)
    profile = None
    if args.profile:
        profile = spawn(args, "barknp", ["--profile"])
    rates.append((gemv_bandwidth_gbs(), sgemm_gflops()))
    gemv_gbs = max(r[0] for r in rates)
    sgemm = max(r[1] for r in rates)
    fl = floors(args, shape, gemv_gbs, sgemm, args.workdir)
    cols = dict(results)
    cols["floor f32"] = fl["f32"]
    if "int8" in fl:
        cols["floor int8"] = fl["int8"]
    if "f16" in fl:
        cols["floor f16"] = fl["f16"]
    order = ["barknp f32", "barknp int8", "barknp f16", "barknp int8 kv16", "Suno original", "transformers",
             "floor f32", "floor int8", "floor f16"]
    cols = {k: cols[k] for k in order if k in cols}

    L, C, H = SIZES[args.size]
    load1 = os.getloadavg()
    header = [
        f"Bark pipeline benchmark: bark-{args.size} shape (L={L}, C={C}, heads={H}), random weights; "
        f"{args.semantic_tokens} semantic tokens -> {sum(c for _, c in shape['windows'])} coarse tokens in "
        f"{len(shape['windows'])} windows -> {shape['frames']} frames ({shape['frames'] / FRAME_RATE:.2f} s audio), "
        f"{shape['fine_passes']} fine passes; voice {'v2/en_speaker_6' if voice else 'none'}",
        f"{args.threads} threads (BLAS, Numba, torch); {os.cpu_count()} CPUs; load average "
        f"{load0[0]:.2f} at start, {load1[0]:.2f} at end: the machine is shared, timings are noisy",
        f"floors: GEMV {gemv_gbs:.1f} GB/s, sgemm {sgemm:.1f} GFLOP/s (best of "
        + ", ".join(f"{g:.1f} GB/s {s:.1f} GFLOP/s" for g, s in rates) + ")",
        f"decode bytes/token (weights, no KV): semantic {fl['f32']['decode_bytes_semantic'] / 1e6:.0f} MB, "
        f"coarse {fl['f32']['decode_bytes_coarse'] / 1e6:.0f} MB"
        + "".join(f"; {key}: {fl[key]['decode_bytes_semantic'] / 1e6:.0f} / {fl[key]['decode_bytes_coarse'] / 1e6:.0f} MB"
                  for key in ("int8", "f16") if key in fl),
    ]
    if "barknp f32" in results and "Suno original" in results:
        same = {k: results["barknp f32"]["tokens"][k] == results["Suno original"]["tokens"][k]
                for k in ("semantic", "coarse", "fine")}
        header.append("barknp f32 tokens identical to Suno's: " + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in same.items()))
        for stage in ("semantic", "coarse", "fine"):  # where the two first part, if they do
            ours, theirs = (np.array(results[e]["tokens"][stage]) for e in ("barknp f32", "Suno original"))
            if same[stage] or ours.shape[:-1] != theirs.shape[:-1]:
                continue
            n = min(ours.shape[-1], theirs.shape[-1])
            diff = ours[..., :n] != theirs[..., :n]
            first = np.argwhere(diff)[0] if diff.any() else [n]
            header.append(f"  {stage}: shapes {ours.shape} / {theirs.shape}, {int(diff.sum())} of {diff.size} differ, "
                          f"the first at index {tuple(int(i) for i in first)}")
    print()
    print_table(cols, "\n".join(header))
    if args.repeat > 1:
        print(f"\nmedians of {args.repeat} interleaved rounds; end to end by round, s: "
              + "; ".join(f"{col} " + " / ".join(f"{r['e2e_s']:.1f}" if r else "failed" for r in runs)
                          for col, runs in rounds.items()))
        for col in ("barknp f32", "barknp int8"):
            if col in rounds and "Suno original" in rounds:
                ratios = [f"{s['e2e_s'] / r['e2e_s']:.2f}x" if r and s else "-"
                          for r, s in zip(rounds[col], rounds["Suno original"])]
                print(f"{col} faster than Suno's by round: " + " / ".join(ratios))
    for col, c in cols.items():
        if c.get("coarse_windows_ahead"):
            print(f"\n{col}: {c['coarse_windows_ahead']:.0f} of {c['coarse_windows']:.0f} coarse windows were prefilled ahead, "
                  "beside the previous window's decode steps (one thread each): its coarse prefill row is the mean of "
                  "the other prefills and of each such window's last ids (those drawn meanwhile), its decode row the "
                  "rest of the stage per step; the stage total is the figure to compare.")
    barknp_windows = [c["coarse_windows"] for col, c in cols.items() if col.startswith("barknp")]
    if barknp_windows and min(barknp_windows) < len(shape["windows"]):
        print(f"\nbarknp prefilled {min(barknp_windows):.0f} of the {len(shape['windows'])} coarse windows: the others began "
              "with ids its cache held (no voice: the history is still short and the semantic block does not slide), "
              "so they fed one id. Its coarse prefill row is the mean of those it prefilled, not comparable with the "
              "other columns' (every window); the stage total is the figure to compare.")
    print("\nSuno's codec row is transformers' EncodecModel (the encodec package is not installed); transformers'"
          " rows: forward + argmax only.")
    print(f"(benchmark wall time {time.time() - t_start:.0f} s)")
    if profile and "profiles" in profile:
        print("\nbarknp float32, cProfile per stage (top functions by own time; profiling slows Python-heavy code):")
        for stage, text in profile["profiles"].items():
            print(f"\n=== {stage} ===")
            print(text.split("\n\n", 1)[-1] if "ncalls" in text else text)
    if args.json:
        for c in cols.values():
            c.pop("tokens", None)
        tmp = f"{args.json}.tmp-{os.getpid()}"
        with open(tmp, "w") as f:
            for runs in rounds.values():
                for r in filter(None, runs):
                    r.pop("tokens", None)
            json.dump({"args": {k: str(v) for k, v in vars(args).items()}, "shape": shape, "columns": cols,
                       "rounds": rounds, "rates": rates, "load": [load0, load1]}, f, indent=1)
        os.replace(tmp, args.json)


if __name__ == "__main__":
    main()
