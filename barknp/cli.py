"""The ``barknp`` command line.

    barknp say "Hello, world!" -o hello.wav              # text -> speech (suno/bark-small)
    barknp say -f lines.txt --out-dir clips/              # one WAV per line
    barknp voices                                         # list the voice presets
    barknp info suno/bark-small                           # what a converted model holds
    barknp convert suno/bark-small ./bark-small           # hub repo id or local directory -> barknp layout

Errors print one line, ``barknp: error: ...``, on stderr and exit non-zero; never a traceback
(set BARKNP_DEBUG=1 to see one for an unexpected error). Ctrl-C exits 130 and leaves no partial
WAV, voice or model behind: every file is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import secrets
import sys
import tempfile
import warnings

from .constants import FINE_TEMP, MIN_EOS_P, TEXT_TEMP, WAVEFORM_TEMP
from .convert.hub import DEFAULT_MODEL
from .errors import BarkError
from .longform import DEFAULT_GAP_S, DEFAULT_MAX_LEN



# --- argument types: a bad value is a usage error (argparse prints usage and exits 2) ----------

def _number(low=None, integer=False, what="a number"):
    def parse(text):
        try:
            value = int(text) if integer else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not integer and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        if low is not None and value < low:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


_TEMP = _number(0.0, what="a temperature >= 0")
_SECONDS = _number(0.0, what="seconds >= 0")
_PROB = _number(0.0, what="a probability in [0, 1]")
_SEED = _number(0, integer=True, what="a seed >= 0")
_THREADS = _number(1, integer=True, what="a thread count >= 1")
_BATCH = _number(1, integer=True, what="a batch size >= 1")
_CHUNK = _number(3, integer=True, what="a chunk length >= 3")


def _probability(text):
    value = _PROB(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"expected a probability in [0, 1], got {text!r}")
    return value


# --- where models are -------------------------------------------------------------------------

def _home(home: str | None) -> str:
    from .convert import default_home

    return os.path.abspath(home) if home else default_home()


def _cache_location(src: str, home: str | None) -> tuple[str, bool]:
    """barknp.convert.cache_location, with the unknown-model error worded for the CLI's --model."""
    from .convert import cache_location

    try:
        return cache_location(src, home=home)
    except BarkError:
        raise BarkError(
            f"unknown model {src!r}: not a directory and not a Hugging Face repo id; use suno/bark-small, "
            "suno/bark, or the path of a (converted or transformers-layout) model directory"
        ) from None


def _damaged(err: Exception, path: str, src: str, home: str | None) -> BarkError:
    """A model directory that does not load: say which file, and how to get a good one back."""
    msg = " ".join(str(err).split()) or type(err).__name__
    if os.path.commonpath([os.path.abspath(path), _home(home)]) == _home(home):
        fix = f"delete the folder {path} and run again to convert {src} afresh"
    else:
        fix = f"re-create it with `barknp convert SOURCE {path}`"
    return BarkError(f"{msg} (the converted model in {path} is damaged or incomplete: {fix})")


def _load_model(src: str, home: str | None, offline: bool, quiet: bool, weights: str = "float32",
                device: str = "cpu", kv_cache: str = "float32"):
    """Locate (converting on first use) and load a model, with errors a user can act on."""
    from .convert import locate
    from .convert.hub import hub_offline
    from .convert.quantize import UnwritableModelError
    from .model import Bark, check_load_options

    check_load_options(device, weights, kv_cache)
    if device == "cuda":
        from .cuda import require_cuda

        require_cuda()  # before minutes of converting
    dest, ready = _cache_location(src, home)
    if not ready and not quiet:
        print(f"barknp: {src} is not converted yet: converting it into {dest} (only this once)", file=sys.stderr)
    try:
        path = locate(src, home=home, offline=True if offline else None, progress=not quiet)
    except BarkError as e:
        if not ready and not os.path.isdir(src) and hub_offline(True if offline else None):
            raise BarkError(
                f"{' '.join(str(e).split())}. barknp needs {src} converted in {_home(home)}: run this once "
                f"without --offline, or run `barknp convert {src} DIR` where the model is available and pass "
                "--model DIR"
            ) from None
        raise
    try:
        model = Bark.from_dir(path, weights=weights, kv_cache=kv_cache)
    except UnwritableModelError:  # the folder, not the model, is the problem
        raise
    except (BarkError, OSError) as e:
        raise _damaged(e, path, src, home) from None
    if device == "cuda":
        from .cuda import to_cuda

        model = to_cuda(model)
    return model


def _say_batches(model, jobs, voice, seed: int, batch_size: int, quiet: bool, stage_kwargs: dict) -> int:
    """--out-dir with --batch-size N: lines run N at a time; line i keeps seed + i, so each file is
    the one an unbatched --no-long-form run writes (lines are not split into chunks here)."""
    import time

    from .audio import save_wav
    from .constants import SAMPLE_RATE
    from .generation.batch import generate_batch

    for lo in range(0, len(jobs), batch_size):
        part = jobs[lo : lo + batch_size]
        t0 = time.perf_counter()
        audios = generate_batch(model, [text for text, _ in part], voice,
                                rng=[seed + lo + k for k in range(len(part))], silent=quiet, **stage_kwargs)
        for k, ((_, out), audio) in enumerate(zip(part, audios)):
            save_wav(out, audio)
            print(f"wrote {out}: {_fmt_s(len(audio) / SAMPLE_RATE)} of audio (seed {seed + lo + k})")
        print(f"  batch of {len(part)}: {_fmt_s(time.perf_counter() - t0)}")
    return 0


def _fmt_s(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.1f} s"


# --- say --------------------------------------------------------------------------------------

def _read_file(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise BarkError(f"cannot read text file {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise BarkError(f"text file {path} is not UTF-8 text") from None


def _read_text(args) -> str:
    if args.text is not None and args.file is not None:
        raise BarkError("give the text as an argument or with -f FILE, not both")
    if args.file is not None:
        return _read_file(args.file)
    if args.text == "-":
        return sys.stdin.read()
    if args.text is not None:
        return args.text
    if sys.stdin is None or sys.stdin.isatty():
        raise BarkError('no text: give it as an argument (barknp say "Hello"), with -f FILE, or on stdin')
    return sys.stdin.read()


def _check_writable_folder(folder: str, what: str) -> None:
    """Fail now, not after minutes of generation, if files cannot be created in ``folder``."""
    if not os.path.isdir(folder):
        raise BarkError(f"{what}: folder {folder} does not exist")
    try:
        fd, probe = tempfile.mkstemp(prefix=".barknp-probe-", dir=folder)
    except OSError as e:
        raise BarkError(f"{what}: cannot write to folder {folder}: {e.strerror or e}") from None
    os.close(fd)
    os.unlink(probe)


def _check_output_file(path: str, what: str, suffix: str | None = None) -> str:
    if suffix and not path.endswith(suffix):
        raise BarkError(f"{what}: {path} must end in {suffix}")
    if os.path.isdir(path):
        raise BarkError(f"{what}: {path} is a directory")
    if os.path.lexists(path) and not os.path.isfile(path):
        raise BarkError(f"{what}: {path} exists and is not a regular file")
    _check_writable_folder(os.path.dirname(os.path.abspath(path)), what)
    return path


def _plan(args) -> list[tuple[str, str]]:
    """[(text, output path)] for this run; every problem with them raised before any work."""
    from .generation.semantic import normalize_text

    if (args.output is None) == (args.out_dir is None):
        raise BarkError("give -o OUT.wav (one file) or --out-dir DIR (one file per line of text), exactly one")
    if args.batch_size > 1 and args.out_dir is None:
        raise BarkError("--batch-size batches the lines of --out-dir: use it with --out-dir, not -o")
    if args.batch_size > 1 and args.continue_voice:
        raise BarkError("--continue-voice conditions a line's chunks on each other: batches do not split lines")
    text = _read_text(args)
    if args.output is not None:
        if not normalize_text(text):
            raise BarkError("the text is empty: nothing to say")
        _check_output_file(args.output, "output")
        if args.save_voice:
            _check_output_file(args.save_voice, "--save-voice", ".npz")
        if not args.output.lower().endswith(".wav"):
            print(f"barknp: warning: {args.output} will hold WAV audio whatever its name", file=sys.stderr)
        return [(text, args.output)]
    if args.save_voice:
        raise BarkError("--save-voice saves one generation: use it with -o, not --out-dir")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise BarkError("the text has no non-empty lines: nothing to say")
    try:
        os.makedirs(args.out_dir, exist_ok=True)
    except OSError as e:
        raise BarkError(f"--out-dir: cannot create {args.out_dir}: {e.strerror or e}") from None
    if not os.path.isdir(args.out_dir):
        raise BarkError(f"--out-dir: {args.out_dir} is not a directory")
    _check_writable_folder(args.out_dir, "--out-dir")
    width = max(3, len(str(len(lines))))
    return [(line, os.path.join(args.out_dir, f"{i + 1:0{width}d}.wav")) for i, line in enumerate(lines)]


def _cmd_say(args) -> int:
    from .audio import save_wav
    from .constants import SAMPLE_RATE, STAGES
    from .generation.voices import PRESET_NAMES, load_voice, save_voice
    from .longform import generate_long, usable_as_voice

    jobs = _plan(args)
    voice = args.voice
    if voice is not None and (voice.endswith(".npz") or os.path.isfile(voice)):
        voice = load_voice(voice)  # a voice file: checked before anything slow
    elif voice is not None and not os.path.isdir(args.model) and not _cache_location(args.model, args.home)[1]:
        # a hub model not converted yet ships Suno's presets only: refuse other names before converting
        if voice.replace("\\", "/").strip("/") not in PRESET_NAMES:
            load_voice(voice)  # raises the standard "unknown voice" message
    if args.threads is not None:
        from .threads import set_num_threads

        set_num_threads(args.threads)
    seed = args.seed if args.seed is not None else secrets.randbelow(2**31)
    quiet = args.silent

    model = _load_model(args.model, args.home, args.offline, quiet, weights=args.weights, device=args.device,
                        kv_cache=args.kv_cache)
    voice = model.voice(voice)  # an unknown preset name fails here, before generating
    stage_kwargs = dict(text_temp=args.text_temp, waveform_temp=args.waveform_temp, fine_temp=args.fine_temp,
                        min_eos_p=args.min_eos_p, max_gen_duration_s=args.max_duration_s)
    if args.batch_size > 1 and args.out_dir:
        return _say_batches(model, jobs, voice, seed, args.batch_size, quiet, stage_kwargs)
    totals = dict.fromkeys(STAGES, 0.0)
    total_audio = 0.0
    for i, (text, out) in enumerate(jobs):
        label = [f"{os.path.basename(out)}: " if len(jobs) > 1 else ""]

        def on_chunk(c, n, chunk, label=label, base=label[0]):
            label[0] = f"{base}chunk {c + 1}/{n}: " if n > 1 else base

        def on_stage(name, label=label):
            if not quiet:
                print(f"barknp: {label[0]}{name}", file=sys.stderr, flush=True)

        timings = dict.fromkeys(STAGES, 0.0)
        if args.long_form:
            full, audio = generate_long(model, text, voice, continue_voice=args.continue_voice, gap_s=args.gap_s,
                                        rng=seed + i, silent=quiet, max_len=args.chunk_len, output_full=True,
                                        timings=timings, on_chunk=on_chunk, on_stage=on_stage, **stage_kwargs)
        else:
            full, audio = model.generate(text, voice, rng=seed + i, silent=quiet, output_full=True, timings=timings,
                                         on_stage=on_stage, **stage_kwargs)
        save_wav(out, audio)
        if args.save_voice:
            save_voice(args.save_voice, full)
            if not usable_as_voice(full):
                print(f"barknp: warning: {args.save_voice} holds too short a generation to condition another "
                      "one reliably", file=sys.stderr)
        duration = len(audio) / SAMPLE_RATE
        total_audio += duration
        for k in STAGES:
            totals[k] += timings[k]
        spent = sum(timings.values())
        print(f"wrote {out}: {_fmt_s(duration)} of audio (seed {seed + i})")
        print("  time: " + ", ".join(f"{k} {_fmt_s(timings[k])}" for k in STAGES)
              + f"; total {_fmt_s(spent)} ({spent / max(duration, 1e-9):.1f} s per second of audio)")
        if args.save_voice:
            print(f"wrote voice {args.save_voice} (use it with --voice {args.save_voice})")
        sys.stdout.flush()
    if len(jobs) > 1:
        spent = sum(totals.values())
        print(f"wrote {len(jobs)} files to {args.out_dir}: {_fmt_s(total_audio)} of audio in {_fmt_s(spent)} ("
              + ", ".join(f"{k} {_fmt_s(totals[k])}" for k in STAGES) + ")")
    return 0


# --- voices, info -----------------------------------------------------------------------------

def _cmd_voices(args) -> int:
    from .generation.voices import PRESET_NAMES, list_voices

    dest, ready = _cache_location(args.model, args.home)
    if ready:
        names = list_voices(os.path.join(dest, "voices"))
        if not names:
            print(f"barknp: the model in {dest} has no voice presets; pass --voice FILE.npz", file=sys.stderr)
    else:
        names = sorted(PRESET_NAMES)
        print(f"barknp: {args.model} is not converted yet; these are Suno's preset names "
              "(barknp say converts the model, with its presets, on first use)", file=sys.stderr)
    for name in names:
        print(name)
    return 0


def _stage_summary(path: str, stage: str) -> tuple[str, int, str, int]:
    """(shape description, parameter count, dtypes, file bytes) of one converted stage file."""
    from .weights import read_header

    header, metadata, _ = read_header(path)
    try:
        config = json.loads(metadata["config"])
    except (KeyError, TypeError, json.JSONDecodeError):
        raise BarkError(f"{path}: missing or corrupt config in its metadata") from None
    count = 0
    for name, entry in header.items():
        if stage == "fine" and name.startswith("lm_heads."):
            continue  # tied to input_embeds_layers.N+1: stored twice, one set of parameters
        n = 1
        for dim in entry.get("shape", []):
            n *= int(dim)
        count += n
    dtypes = ",".join(sorted({str(e.get("dtype", "?")).lower() for e in header.values()}))
    dtypes = {"f32": "float32", "f16": "float16"}.get(dtypes, dtypes)
    if stage == "codec":
        shape = (f"EnCodec decoder, {config.get('num_lstm_layers')} LSTM layers, "
                 f"{config.get('codebook_size')}-entry codebooks, {config.get('sampling_rate')} Hz")
    else:
        shape = (f"{config.get('num_layers')} layers, {config.get('num_heads')} heads, width "
                 f"{config.get('hidden_size')}, vocab {config.get('input_vocab_size')}->"
                 f"{config.get('output_vocab_size')}")
    return shape, count, dtypes, os.path.getsize(path)


def _cmd_info(args) -> int:
    from .convert.core import MODEL_JSON, format_size
    from .generation.voices import list_voices
    from .weights import STAGES, stage_path

    dest, ready = _cache_location(args.model, args.home)
    if not ready:
        raise BarkError(
            f"{args.model} is not converted yet (looked in {dest}): run `barknp say --model {args.model} ...` "
            f"once, or `barknp convert {args.model} DIR`"
        )
    try:
        with open(os.path.join(dest, MODEL_JSON), encoding="utf-8") as f:
            meta = json.load(f)
        rows = [(stage, *_stage_summary(stage_path(dest, stage), stage)) for stage in STAGES]
    except (BarkError, OSError, ValueError) as e:
        raise _damaged(e, dest, args.model, args.home) from None
    disk = 0
    for root, _dirs, files in os.walk(dest):
        disk += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    source = meta.get("source", {})
    origin = (f"{source['repo']} (revision {source.get('revision', '?')})" if "repo" in source
              else source.get("path", "?"))
    voices = list_voices(os.path.join(dest, "voices"))
    print(f"model      {args.model}")
    print(f"location   {dest}")
    print(f"source     {origin}")
    print(f"format     {meta.get('format', '?')}")
    print(f"size       {format_size(disk)} on disk")
    print()
    print(f"{'stage':<9} {'parameters':>12}  {'dtype':<8} {'file':>9}  architecture")
    for stage, shape, count, dtypes, size in rows:
        print(f"{stage:<9} {count:>12,}  {dtypes:<8} {format_size(size):>9}  {shape}")
    print(f"{'total':<9} {sum(r[2] for r in rows):>12,}")
    print()
    print(f"tokenizer  {', '.join(meta.get('tokenizer', [])) or '?'}")
    print(f"voices     {len(voices)} presets (list them with: barknp voices --model {args.model})")
    return 0


def _cmd_convert(args) -> int:
    from .convert import convert

    convert(args.src, args.out, offline=True if args.offline else None, progress=not args.quiet)
    return 0


# --- the parser -------------------------------------------------------------------------------

_MAIN_EPILOG = """\
examples:
  barknp say "Hello, world!" -o hello.wav
  barknp say "Guten Tag!" --voice v2/de_speaker_1 --model suno/bark -o hallo.wav
  barknp say -f story.txt -o story.wav             # long text: split into sentences
  barknp say -f lines.txt --out-dir clips/         # one WAV per line
  barknp voices
  barknp info suno/bark-small
  barknp convert suno/bark-small ./bark-small

Models are converted once, on first use, into $BARKNP_HOME (default ~/.cache/barknp).
Run `barknp COMMAND --help` for each command's options.
"""

_SAY_EPILOG = """\
examples:
  barknp say "Hello, my name is Suno. [laughs]" -o hello.wav
  echo "Text from a pipe." | barknp say -o piped.wav
  barknp say -f chapter.txt -o chapter.wav --voice v2/en_speaker_6 --seed 7
  barknp say "Remember this voice." -o a.wav --save-voice me.npz
  barknp say "Same voice again." -o b.wav --voice me.npz
  barknp say -f lines.txt --out-dir clips/ --seed 1     # clips/001.wav, 002.wav, ...
  barknp say "Offline run." -o x.wav --offline --home /models/barknp

Text longer than one generation (~13 s of speech) is split at sentence ends, then at commas and
the like, then at spaces (--chunk-len), each chunk generated with the voice and the chunks joined
with --gap-s seconds of silence; --continue-voice conditions each chunk on the previous one.
With --out-dir, lines are generated one after another, line i with seed SEED+i.
The same --seed with the same options and model gives the same audio.
"""


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    ap = argparse.ArgumentParser(prog="barknp", description="Suno's Bark text-to-audio in NumPy.",
                                 epilog=_MAIN_EPILOG, formatter_class=fmt)
    from . import __version__

    ap.add_argument("--version", action="version", version=f"barknp {__version__}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    # say
    p = sub.add_parser("say", help="turn text into speech (a WAV file)", formatter_class=fmt, epilog=_SAY_EPILOG,
                       description="Generate speech for TEXT with Bark and write it as a 24 kHz WAV file.")
    p.add_argument("text", metavar="TEXT", nargs="?",
                   help='the text; "-" or nothing (with a pipe) reads stdin')
    p.add_argument("-f", "--file", metavar="FILE", help="read the text from FILE (UTF-8; - for stdin)")
    p.add_argument("-o", "--output", metavar="OUT.wav", help="the WAV file to write")
    p.add_argument("--out-dir", metavar="DIR", help="write one WAV per non-empty line of the text: DIR/001.wav, ...")
    p.add_argument("--batch-size", type=_BATCH, default=1, metavar="N",
                   help="with --out-dir: generate N lines at once; lines are not split into chunks, so each "
                   "file is the one --no-long-form writes with the same seed")
    p.add_argument("--model", default=DEFAULT_MODEL, metavar="MODEL",
                   help="suno/bark-small (default), suno/bark, or a model directory")
    p.add_argument("--voice", metavar="VOICE",
                   help="a preset (e.g. v2/en_speaker_6; see `barknp voices`) or a voice .npz file "
                   "(default: no voice, a random speaker)")
    p.add_argument("--seed", type=_SEED, metavar="N", help="random seed (default: a fresh one, printed)")
    p.add_argument("--text-temp", type=_TEMP, default=TEXT_TEMP, metavar="T",
                   help=f"semantic-stage temperature (default {TEXT_TEMP}; 0 is greedy)")
    p.add_argument("--waveform-temp", type=_TEMP, default=WAVEFORM_TEMP, metavar="T",
                   help=f"coarse-stage temperature (default {WAVEFORM_TEMP})")
    p.add_argument("--fine-temp", type=_TEMP, default=FINE_TEMP, metavar="T",
                   help=f"fine-stage temperature (default {FINE_TEMP})")
    p.add_argument("--min-eos-p", type=_probability, default=MIN_EOS_P, metavar="P",
                   help=f"end speech once its probability reaches P (default {MIN_EOS_P}; lower ends sooner)")
    p.add_argument("--max-duration-s", type=_SECONDS, metavar="S",
                   help="stop each generation's semantic stage after S seconds of speech (default: none)")
    p.add_argument("--save-voice", metavar="OUT.npz", help="also save the generation as a reusable voice")
    p.add_argument("--threads", type=_THREADS, metavar="N", help="threads for matrix products and kernels")
    p.add_argument("--weights", choices=("float32", "int8", "float16"), default="float32",
                   help="int8 or float16: semantic and coarse stages with int8 or float16 weights (faster, made "
                        "once beside the model; float16 is nearly exact, int8 the fastest)")
    p.add_argument("--kv-cache", choices=("float32", "float16"), default="float32",
                   help="float16: semantic and coarse KV caches in half precision (faster decoding, rounded)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to run (cuda needs a GPU)")
    p.add_argument("--long-form", action=argparse.BooleanOptionalAction, default=True,
                   help="split text too long for one generation into chunks (default: on)")
    p.add_argument("--continue-voice", action="store_true",
                   help="condition each chunk on the previous chunk (smoother; the voice may drift)")
    p.add_argument("--gap-s", type=_SECONDS, default=DEFAULT_GAP_S, metavar="S",
                   help=f"silence between chunks (default {DEFAULT_GAP_S})")
    p.add_argument("--chunk-len", type=_CHUNK, default=DEFAULT_MAX_LEN, metavar="N",
                   help=f"longest chunk, in characters, CJK counting 3 (default {DEFAULT_MAX_LEN}, ~13 s of speech)")
    p.add_argument("--home", metavar="DIR", help="where converted models live (default $BARKNP_HOME or ~/.cache/barknp)")
    p.add_argument("--offline", action="store_true", help="never download: use converted or cached models only")
    p.add_argument("-q", "--silent", action="store_true", help="no progress output (the summary is still printed)")
    p.set_defaults(func=_cmd_say)

    # voices
    p = sub.add_parser("voices", help="list the voice presets", formatter_class=fmt,
                       description="List the voice presets of a model, one per line.",
                       epilog="examples:\n  barknp voices\n  barknp voices --model suno/bark | grep v2/en\n")
    p.add_argument("--model", default=DEFAULT_MODEL, metavar="MODEL", help="suno/bark-small (default), suno/bark or a directory")
    p.add_argument("--home", metavar="DIR", help="where converted models live")
    p.set_defaults(func=_cmd_voices)

    # info
    p = sub.add_parser("info", help="describe a converted model", formatter_class=fmt,
                       description="Show a converted model's stages, parameter counts, dtype, size on disk and location.",
                       epilog="examples:\n  barknp info suno/bark-small\n  barknp info ./bark-small\n")
    p.add_argument("model", metavar="MODEL", nargs="?", default=DEFAULT_MODEL,
                   help="suno/bark-small (default), suno/bark or a directory")
    p.add_argument("--home", metavar="DIR", help="where converted models live")
    p.set_defaults(func=_cmd_info)

    # convert
    p = sub.add_parser(
        "convert",
        help="convert a Bark checkpoint into barknp's layout",
        formatter_class=fmt,
        description="Convert a transformers-layout Bark checkpoint (a Hugging Face repo id such as "
        "suno/bark-small, or a local directory) into barknp's layout at OUT.",
        epilog="examples:\n  barknp convert suno/bark-small ./bark-small\n"
        "  barknp convert ~/checkpoints/my-bark ./my-bark-np\n",
    )
    p.add_argument("src", metavar="SRC", help="hub repo id (suno/bark-small, suno/bark) or local directory")
    p.add_argument("out", metavar="OUT", help="directory to write (replaced if it is a barknp model)")
    p.add_argument("--offline", action="store_true", help="use only the Hugging Face cache (as HF_HUB_OFFLINE=1)")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    p.set_defaults(func=_cmd_convert)
    return ap


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"barknp: warning: {' '.join(str(message).split())}", file=sys.stderr)


def main(argv=None) -> int:
    """Run the command line; returns the exit code (0 on success)."""
    parser = build_parser()
    args = parser.parse_args(argv)  # argparse itself exits 2 with a usage line on bad arguments
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = _show_warning
        try:
            return args.func(args)
        except KeyboardInterrupt:
            print("\nbarknp: error: interrupted", file=sys.stderr)
            return 130
        except BrokenPipeError:  # e.g. `barknp voices | head`: the reader left, nothing to report
            try:
                sys.stdout = open(os.devnull, "w")
            except OSError:
                pass
            return 0
        except (BarkError, OSError) as e:
            msg = " ".join(str(e).split()) or type(e).__name__
            print(f"barknp: error: {msg}", file=sys.stderr)
            return 1
        except Exception as e:  # a bug: one line unless asked for the traceback
            if isinstance(e, SystemError) and isinstance(e.__cause__ or e.__context__, KeyboardInterrupt):
                # Ctrl-C inside a Numba kernel surfaces as "returned a result with an exception
                # set", caused by the KeyboardInterrupt: an interruption, not a bug
                print("\nbarknp: error: interrupted", file=sys.stderr)
                return 130
            if os.environ.get("BARKNP_DEBUG"):
                raise
            msg = " ".join(str(e).split())[:300]
            print(f"barknp: error: internal error ({type(e).__name__}: {msg}); "
                  "run again with BARKNP_DEBUG=1 for the traceback and please report it", file=sys.stderr)
            return 1


if __name__ == "__main__":
    sys.exit(main())
