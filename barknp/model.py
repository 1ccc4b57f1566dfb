"""A loaded Bark model: the four stage networks, the tokenizer and the voice presets.

    model = barknp.load("suno/bark-small")          # converts into the cache on first use
    semantic = model.text_to_semantic("Hello!", voice="v2/en_speaker_6", rng=0)   # (T,) int64
    coarse = model.semantic_to_coarse(semantic, voice="v2/en_speaker_6", rng=1)  # (2, T') int64
    fine = model.coarse_to_fine(coarse, voice="v2/en_speaker_6", rng=2)          # (8, T') int64
    audio = model.codec.decode(fine)                                             # (T' * 320,) float32

Each stage lives in its own module; this class only wires them together. It holds no hidden
state between calls: every generation takes its random generator explicitly.
"""

from __future__ import annotations

import os
import time

import numpy as np

from .constants import (
    COARSE_SLIDING_WINDOW_LEN,
    FINE_TEMP,
    MAX_COARSE_HISTORY,
    MIN_EOS_P,
    TEXT_TEMP,
    WAVEFORM_TEMP,
)
from .convert.hub import DEFAULT_MODEL
from .convert.quantize import REDUCED_WEIGHTS, ensure_reduced
from .errors import BarkError, NoSpeechError
from .generation.batch import generate_batch
from .generation.coarse import generate_coarse
from .generation.fine import generate_fine
from .generation.sampling import as_generator
from .generation.semantic import generate_semantic
from .generation.tokenizer import load_tokenizer
from .generation.voices import list_voices, load_voice
from .models.codec import Codec
from .models.fine import FineGPT
from .models.gpt import CausalGPT
from .nn.half import kv_dtype
from .weights import stage_path


class Bark:
    """Bark's pipeline over explicit weights. Build with :func:`barknp.load`."""

    def __init__(self, semantic: CausalGPT, coarse: CausalGPT, fine: FineGPT, codec: Codec,
                 tokenizer, voices_dir: str | None = None, path: str | None = None):
        self.semantic = semantic
        self.coarse = coarse
        self.fine = fine
        self.codec = codec
        self.tokenizer = tokenizer
        self.voices_dir = voices_dir
        self.path = path

    @classmethod
    def from_dir(cls, model_dir: str, weights: str = "float32", kv_cache: str = "float32") -> "Bark":
        """Load a converted model directory (the layout of weights/README.md).

        ``weights="int8"`` (or ``"float16"``) decodes the semantic and coarse stages with int8 (or
        float16) weights, writing their files into ``model_dir`` on first use.
        ``kv_cache="float16"`` keeps their KV caches in float16 (half the bytes a decode step reads
        from them; keys and values rounded).
        """
        check_load_options("cpu", weights, kv_cache)  # fails before anything loads

        def causal(stage):
            path = stage_path(model_dir, stage) if weights == "float32" else ensure_reduced(model_dir, stage, weights)
            return CausalGPT.load(path, stage, kv_cache=kv_cache)

        return cls(
            semantic=causal("semantic"),
            coarse=causal("coarse"),
            fine=FineGPT.load(stage_path(model_dir, "fine")),
            codec=Codec.load(stage_path(model_dir, "codec")),
            tokenizer=load_tokenizer(os.path.join(model_dir, "tokenizer")),
            voices_dir=os.path.join(model_dir, "voices"),
            path=model_dir,
        )

    def __repr__(self) -> str:
        c = self.semantic.config
        return f"Bark({self.path!r}, {c.num_layers} layers, width {c.hidden_size})"

    # --- voices ---------------------------------------------------------------------------

    def voices(self) -> list[str]:
        """Names of the voice presets shipped with this model."""
        return list_voices(self.voices_dir)

    def voice(self, voice) -> dict | None:
        """Resolve a voice (None, preset name, .npz path or dict) to checked arrays."""
        return load_voice(voice, self.voices_dir)

    # --- the stages -----------------------------------------------------------------------

    def text_to_semantic(self, text, voice=None, temp=TEXT_TEMP, top_k=None, top_p=None, min_eos_p=MIN_EOS_P,
                         max_gen_duration_s=None, allow_early_stop=True, rng=None, silent=False) -> np.ndarray:
        """Stage 1: text -> semantic tokens (T,) int64 in [0, 10000)."""
        return generate_semantic(
            self.semantic, self.tokenizer, text, voice=self.voice(voice), temp=temp, top_k=top_k,
            top_p=top_p, min_eos_p=min_eos_p, max_gen_duration_s=max_gen_duration_s,
            allow_early_stop=allow_early_stop, rng=rng, silent=silent,
        )

    def semantic_to_coarse(self, semantic, voice=None, temp=WAVEFORM_TEMP, top_k=None, top_p=None,
                           max_coarse_history=MAX_COARSE_HISTORY, sliding_window_len=COARSE_SLIDING_WINDOW_LEN,
                           rng=None, silent=False) -> np.ndarray:
        """Stage 2: semantic tokens (T,) -> coarse codes (2, T') int64 in [0, 1024)."""
        return generate_coarse(
            self.coarse, semantic, voice=self.voice(voice), temp=temp, top_k=top_k, top_p=top_p,
            max_coarse_history=max_coarse_history, sliding_window_len=sliding_window_len, rng=rng,
            silent=silent,
        )

    def coarse_to_fine(self, coarse, voice=None, temp=FINE_TEMP, rng=None, silent=False) -> np.ndarray:
        """Stage 3: coarse codes (2, T') -> all eight codebooks (8, T') int64 in [0, 1024)."""
        return generate_fine(self.fine, coarse, voice=self.voice(voice), temp=temp, rng=rng, silent=silent)

    def generate(self, text, voice=None, text_temp=TEXT_TEMP, waveform_temp=WAVEFORM_TEMP, fine_temp=FINE_TEMP,
                 min_eos_p=MIN_EOS_P, max_gen_duration_s=None, rng=None, silent=False, output_full=False,
                 batch_size=None, timings=None, on_stage=None):
        """Text -> 24 kHz float32 audio (N,), all four stages with one random generator.

        With ``output_full`` returns ``(full_generation, audio)`` where full_generation holds
        semantic_prompt (T,), coarse_prompt (2, T') and fine_prompt (8, T') int64, reusable as a
        voice. Raises NoSpeechError (a BarkError) when the semantic stage ends before its first
        token. ``timings`` (a dict) accumulates the seconds of each stage under its name
        (constants.STAGES), and ``on_stage(name)`` is called as each stage starts.

        ``text`` may be a list: the texts run as batches of up to ``batch_size`` and a list comes
        back, each item at its own length. ``voice`` and ``max_gen_duration_s`` are then one for
        all or one per text; ``rng`` is a list of one per text, or a seed or Generator whose
        ``spawn(n)`` gives item i its generator. Item i equals ``generate(texts[i], voice_i,
        rng=generator_i)`` (see barknp/generation/batch.py).
        """
        if isinstance(text, (list, tuple)):
            if timings is not None or on_stage is not None:
                raise BarkError("timings and on_stage: given for one text only, not for a list")
            return generate_batch(
                self, list(text), voice, text_temp=text_temp, waveform_temp=waveform_temp, fine_temp=fine_temp,
                min_eos_p=min_eos_p, max_gen_duration_s=max_gen_duration_s, rng=rng, batch_size=batch_size,
                silent=silent, output_full=output_full,
            )
        rng = as_generator(rng)
        voice = self.voice(voice)

        def stage(name, fn, *args, **kwargs):
            if on_stage is not None:
                on_stage(name)
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            if timings is not None:
                timings[name] = timings.get(name, 0.0) + time.perf_counter() - t0
            return out

        semantic = stage("semantic", self.text_to_semantic, text, voice, temp=text_temp, min_eos_p=min_eos_p,
                         max_gen_duration_s=max_gen_duration_s, rng=rng, silent=silent)  # (T,)
        if semantic.size == 0:
            raise NoSpeechError()
        coarse = stage("coarse", self.semantic_to_coarse, semantic, voice, temp=waveform_temp, rng=rng,
                       silent=silent)  # (2, T')
        fine = stage("fine", self.coarse_to_fine, coarse, voice, temp=fine_temp, rng=rng, silent=silent)  # (8, T')
        audio = stage("codec", self.codec.decode, fine)  # (T' * 320,) float32
        if output_full:
            return {"semantic_prompt": semantic, "coarse_prompt": coarse, "fine_prompt": fine}, audio
        return audio


def check_load_options(device: str, weights: str, kv_cache: str) -> None:
    """Raise BarkError for a device, weights or KV cache choice that cannot run (checked before
    anything is downloaded or converted)."""
    if device not in ("cpu", "cuda"):
        raise BarkError(f"device {device!r} is not supported; use 'cpu' or 'cuda'")
    if weights not in ("float32", *REDUCED_WEIGHTS):
        choices = ", ".join(repr(w) for w in ("float32", *REDUCED_WEIGHTS))
        raise BarkError(f"weights must be one of {choices}, got {weights!r}")
    half_cache = kv_dtype(kv_cache) != np.float32  # validates it too
    if device == "cuda" and weights != "float32":
        raise BarkError(f"{weights} weights run on the CPU only: choose the cpu device or float32 weights")
    if device == "cuda" and half_cache:
        raise BarkError("a float16 KV cache runs on the CPU only: choose the cpu device or a float32 cache")


def load(path_or_repo: str = DEFAULT_MODEL, *, home: str | None = None, offline: bool | None = None,
         device: str = "cpu", weights: str = "float32", kv_cache: str = "float32", progress: bool = True) -> Bark:
    """Load a Bark model from a converted directory, a transformers-layout directory or a hub repo id.

    Anything not yet converted is converted into ``home`` (default ``$BARKNP_HOME`` or
    ``~/.cache/barknp``) on first use. ``device`` is ``"cpu"`` or ``"cuda"`` (numba.cuda; a
    BarkError where no GPU is usable, never a silent fall back to the CPU). ``weights="int8"`` decodes
    the two causal stages with int8 weight-only quantization (per-row scales), ``weights="float16"``
    with their weights rounded to float16; ``kv_cache="float16"`` keeps their KV caches in float16.
    All three are reduced-precision options for the CPU; the README gives their measured speed and
    error.
    """
    from .convert import locate

    check_load_options(device, weights, kv_cache)
    if device == "cuda":
        from .cuda import require_cuda

        require_cuda()  # fail before converting or loading anything
    model = Bark.from_dir(locate(path_or_repo, home=home, offline=offline, progress=progress), weights=weights,
                          kv_cache=kv_cache)
    if device == "cuda":
        from .cuda import to_cuda

        model = to_cuda(model)
    return model
