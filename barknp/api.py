"""Drop-in replacements for Suno's ``bark`` module functions.

Code written for Suno's bark runs by changing only its import:

    # from bark import SAMPLE_RATE, generate_audio, preload_models
    from barknp.api import SAMPLE_RATE, generate_audio, preload_models

    preload_models()                                   # suno/bark, as Suno's default
    audio = generate_audio("Hello!", history_prompt="v2/en_speaker_6")   # (N,) float32, 24 kHz

Same names, parameters, defaults and return values as bark 0.1.5's ``bark.api`` and
``bark.generation.preload_models`` (fine-stage temperature 0.5, ``min_eos_p`` 0.2, the models
loaded on first use if ``preload_models`` was not called). Differences:

- Randomness comes from an explicit numpy generator, not torch's global RNG: pass ``rng`` (an int
  seed or a ``numpy.random.Generator``) for reproducible audio; None draws fresh entropy.
- ``preload_models``'s GPU flags are accepted and ignored: its models run on the CPU (for the GPU,
  ``preload_models(model=barknp.load(..., device="cuda"))``). Calling it
  again with other ``*_use_small`` choices switches models (Suno's keeps the first ones unless
  ``force_reload``). It honours ``SUNO_USE_SMALL_MODELS`` like Suno's, read when it runs.
- Models are the converted transformers checkpoints: "small" is suno/bark-small and the default is
  suno/bark, converted into barknp's cache (``$BARKNP_HOME``, ``~/.cache/barknp``) on first use.
- Bad input raises ``barknp.BarkError`` (a ValueError) where Suno's asserts, and also for values
  Suno's code runs with but which make no sense (a top_p outside (0, 1], a min_eos_p above 1, a
  negative duration or temperature, tokens of a float dtype).
- ``save_as_prompt`` checks the three prompts, writes them as int64 (Suno's keeps their dtypes and
  any other keys) and replaces the file atomically.
- ``silent=False`` shows a progress bar for the fine stage too (Suno's has none there).
- Sampling is in float32 throughout; Suno's, on a GPU with bfloat16, samples from logits computed
  under bfloat16 autocast.

Extensions, all keyword-only: ``rng`` everywhere; ``min_eos_p`` and ``max_gen_duration_s`` (as
Suno's ``generate_text_semantic``) on ``text_to_semantic`` and ``generate_audio``;
``preload_models(model=...)`` to load any repo id, directory or ``Bark``; and
``generate_long_audio`` for texts longer than one generation (see barknp/longform.py).

The object API (``barknp.load(...)`` -> ``Bark``) holds no hidden state; this module keeps exactly
one piece: ``DEFAULT_MODELS``, the model ``preload_models`` loaded.
"""

from __future__ import annotations

import os
import threading

import numpy as np

from .constants import FINE_TEMP, MIN_EOS_P, SAMPLE_RATE, TEXT_TEMP, WAVEFORM_TEMP
from .convert.hub import LARGE_REPO, SMALL_REPO
from .errors import BarkError
from .generation.sampling import as_generator
from .generation.voices import save_voice
from .longform import DEFAULT_GAP_S, DEFAULT_MAX_LEN, generate_long

__all__ = [
    "DEFAULT_MODELS",
    "SAMPLE_RATE",
    "generate_audio",
    "generate_long_audio",
    "preload_models",
    "save_as_prompt",
    "semantic_to_waveform",
    "text_to_semantic",
]



class DefaultModels:
    """The model the drop-in functions of this module generate with: this module's only state.

    Suno's bark keeps its models in a module-level dict filled by ``preload_models`` (or on first
    use); this is barknp's equivalent, one instance (``DEFAULT_MODELS``) made explicit. ``get()``
    returns the loaded ``Bark``, loading Suno's default on first use; ``set(model)`` installs one;
    ``clear()`` forgets it (the next call loads again). ``key`` records what was loaded, so that
    ``preload_models`` reloads only when asked for something else. ``lock`` makes threads that
    call a drop-in function at once load the model once.
    """

    def __init__(self):
        self.model = None
        self.key = None
        self.lock = threading.RLock()

    def get(self):
        with self.lock:
            if self.model is None:
                preload_models()
            return self.model

    def set(self, model, key=None) -> None:
        self.model, self.key = model, key

    def clear(self) -> None:
        self.model, self.key = None, None


DEFAULT_MODELS = DefaultModels()


def _env_flag(name: str) -> bool:
    # Suno's own parsing of its environment switches (convert/hub.py's follows huggingface_hub's)
    return os.environ.get(name, "False").lower() in ("true", "1", "t")


def _compose(sources: dict, home, offline, progress):
    """A Bark whose stages come from (possibly) different converted models.

    ``sources`` maps stage -> repo id or directory. The tokenizer and voices come with the text
    model; the codec is the same EnCodec in every Bark checkpoint.
    """
    from .convert import locate
    from .model import Bark

    dirs = {stage: locate(src, home=home, offline=offline, progress=progress) for stage, src in sources.items()}
    text = Bark.from_dir(dirs["semantic"])
    if len(set(dirs.values())) == 1:
        return text
    coarse = text if dirs["coarse"] == dirs["semantic"] else Bark.from_dir(dirs["coarse"])
    fine = {dirs["semantic"]: text, dirs["coarse"]: coarse}.get(dirs["fine"]) or Bark.from_dir(dirs["fine"])
    return Bark(text.semantic, coarse.coarse, fine.fine, text.codec, text.tokenizer,
                voices_dir=text.voices_dir, path=text.path)


def preload_models(
    text_use_gpu=True,
    text_use_small=False,
    coarse_use_gpu=True,
    coarse_use_small=False,
    fine_use_gpu=True,
    fine_use_small=False,
    codec_use_gpu=True,
    force_reload=False,
    *,
    model=None,
    home=None,
    offline=None,
    progress=True,
):
    """Load (converting on first use) the models the drop-in functions use; returns the ``Bark``.

    ``*_use_small`` pick suno/bark-small over suno/bark per stage (so do ``SUNO_USE_SMALL_MODELS``
    =1/true for all). The ``*_use_gpu`` flags are accepted and ignored. ``force_reload`` loads again
    even if the same models are loaded. Extensions: ``model`` (a repo id, a directory or a ``Bark``)
    overrides the ``*_use_small`` choice for every stage; ``home``, ``offline`` and ``progress`` go
    to ``barknp.load``.
    """
    del text_use_gpu, coarse_use_gpu, fine_use_gpu, codec_use_gpu  # the CPU; a CUDA Bark comes through model=
    from .model import Bark

    if isinstance(model, Bark):
        DEFAULT_MODELS.set(model, ("instance", id(model)))
        return model
    if model is not None:
        sources = dict.fromkeys(("semantic", "coarse", "fine"), os.fspath(model))
    else:
        all_small = _env_flag("SUNO_USE_SMALL_MODELS")
        sources = {
            stage: SMALL_REPO if (small or all_small) else LARGE_REPO
            for stage, small in (("semantic", text_use_small), ("coarse", coarse_use_small), ("fine", fine_use_small))
        }
    key = (tuple(sorted(sources.items())), home)
    with DEFAULT_MODELS.lock:
        if DEFAULT_MODELS.model is None or DEFAULT_MODELS.key != key or force_reload:
            DEFAULT_MODELS.set(_compose(sources, home, offline, progress), key)
        return DEFAULT_MODELS.model


def text_to_semantic(text, history_prompt=None, temp=TEXT_TEMP, silent=False, *, rng=None, min_eos_p=MIN_EOS_P,
                     max_gen_duration_s=None):
    """Text -> semantic tokens (T,) int64, to feed ``semantic_to_waveform``.

    ``history_prompt``: None, a preset name ("v2/en_speaker_6"), an .npz path or a dict of the
    three prompts. ``temp``: sampling temperature (0 is greedy).
    """
    model = DEFAULT_MODELS.get()
    return model.text_to_semantic(text, history_prompt, temp=temp, min_eos_p=min_eos_p,
                                  max_gen_duration_s=max_gen_duration_s, rng=as_generator(rng), silent=silent)


def semantic_to_waveform(semantic_tokens, history_prompt=None, temp=WAVEFORM_TEMP, silent=False, output_full=False,
                         *, rng=None):
    """Semantic tokens (T,) -> audio (N,) float32 at SAMPLE_RATE (coarse at ``temp``, fine at FINE_TEMP).

    With ``output_full`` returns ``(full_generation, audio)``; full_generation (semantic_prompt,
    coarse_prompt (2, T'), fine_prompt (8, T')) can be saved with ``save_as_prompt``.
    """
    model = DEFAULT_MODELS.get()
    rng = as_generator(rng)
    voice = model.voice(history_prompt)
    coarse = model.semantic_to_coarse(semantic_tokens, voice, temp=temp, rng=rng, silent=silent)  # (2, T')
    fine = model.coarse_to_fine(coarse, voice, temp=FINE_TEMP, rng=rng, silent=silent)  # (8, T')
    audio = model.codec.decode(fine)  # (T' * 320,)
    if output_full:
        full = {"semantic_prompt": np.asarray(semantic_tokens), "coarse_prompt": coarse, "fine_prompt": fine}
        return full, audio
    return audio


def save_as_prompt(filepath, full_generation) -> None:
    """Write a full generation (from ``output_full=True``) as a voice .npz, usable as history_prompt."""
    if not isinstance(full_generation, dict):
        raise BarkError(f"save_as_prompt: full_generation must be a dict, got {type(full_generation).__name__}")
    save_voice(filepath, full_generation)


def generate_audio(text, history_prompt=None, text_temp=TEXT_TEMP, waveform_temp=WAVEFORM_TEMP, silent=False,
                   output_full=False, *, rng=None, min_eos_p=MIN_EOS_P, max_gen_duration_s=None):
    """Text -> audio (N,) float32 at SAMPLE_RATE: ``text_to_semantic`` then ``semantic_to_waveform``,
    drawing from one generator, which is ``Bark.generate``: ``rng=seed`` reproduces the audio
    exactly. With ``output_full`` returns ``(full_generation, audio)``. Raises NoSpeechError (a
    BarkError) when the semantic stage ends before its first token.
    """
    if not isinstance(text, str):  # Bark.generate would take a list as a batch
        raise BarkError(f"text: must be a str, got {type(text).__name__}")
    return DEFAULT_MODELS.get().generate(
        text, history_prompt, text_temp=text_temp, waveform_temp=waveform_temp, fine_temp=FINE_TEMP,
        min_eos_p=min_eos_p, max_gen_duration_s=max_gen_duration_s, rng=rng, silent=silent, output_full=output_full,
    )


def generate_long_audio(text, history_prompt=None, text_temp=TEXT_TEMP, waveform_temp=WAVEFORM_TEMP, silent=False,
                        output_full=False, *, continue_voice=False, gap_s=DEFAULT_GAP_S, max_len=DEFAULT_MAX_LEN,
                        rng=None, min_eos_p=MIN_EOS_P, max_gen_duration_s=None):
    """``generate_audio`` for text of any length: split at sentences, one generation per chunk.

    See ``barknp.longform.generate_long``: every chunk uses ``history_prompt`` (or, with
    ``continue_voice``, the previous chunk's generation); chunks are joined by ``gap_s`` seconds
    of silence. ``output_full`` returns the chunks' tokens concatenated.
    """
    return generate_long(DEFAULT_MODELS.get(), text, voice=history_prompt, continue_voice=continue_voice,
                         gap_s=gap_s, rng=rng, silent=silent, max_len=max_len, output_full=output_full,
                         text_temp=text_temp, waveform_temp=waveform_temp, min_eos_p=min_eos_p,
                         max_gen_duration_s=max_gen_duration_s)
