"""Long texts: split at sentence boundaries, generate each chunk, join them with short silences.

One Bark generation holds at most MAX_SEMANTIC_STEPS semantic tokens (768 / 49.9 Hz = 15.4 s of
speech), and the semantic stage reads at most MAX_TEXT_TOKENS (256) BERT tokens of text, cutting
the rest. Past ~13 s the models also start to ramble or trail off. So a long text is cut into
chunks that each fit one generation:

    chunks = split_text(text)                         # list[str], each <= DEFAULT_MAX_LEN units
    audio = generate_long(model, text, voice="v2/en_speaker_6", rng=0)   # (N,) float32, 24 kHz

``generate_long`` runs ``Bark.generate`` once per chunk, all chunks drawing from one generator.
"""

from __future__ import annotations

import re
import unicodedata
import warnings

import numpy as np

from .constants import SAMPLE_RATE
from .errors import BarkError, NoSpeechError, check_number
from .generation.coarse import semantic_history_len, voice_histories
from .generation.sampling import as_generator
from .generation.semantic import normalize_text

# --- product defaults (not algorithm constants: nothing in the checkpoints depends on them) ------
# Chunk length, in "speech units" (see speech_length): one per Latin-script character, three per
# CJK / kana / hangul character. Read aloud, English runs at ~14-16 characters per second (150 words
# a minute, ~6 characters a word with its space) and Bark's speakers talk at about that rate, so
# 180 units is ~12-13 s: inside the ~13 s Suno recommends per generation, with room for slower
# voices and pauses before the hard 15.4 s cap. Mandarin runs at ~4-5 characters a second and
# Japanese or Korean at ~6-7, so weighting a wide character as 3 units gives 60 characters, ~13 s.
# 180 units of Latin text are ~50-60 BERT tokens, far from the 256-token text limit.
DEFAULT_MAX_LEN = 180
DEFAULT_GAP_S = 0.25  # silence between chunks: a pause between sentences, not a break in speech

# Sentence ends. Latin-script ends must be followed by whitespace (or the end), so "3.14",
# "example.com" and "U.S.A" do not split; CJK ends split wherever they stand, since CJK text has no
# spaces. Closing quotes and brackets after an end stay with their sentence.
_CLOSERS = "\"'\u201d\u2019\u00bb)]}\u300d\u300f\u3011\uff09"
_LATIN_END = re.compile(rf"[.!?\u2026]+[{re.escape(_CLOSERS)}]*(?=\s|$)")
_CJK_END = re.compile(rf"[\u3002\uff01\uff1f\uff0e]+[{re.escape(_CLOSERS)}]*")
# Clause ends, for sentences too long for one chunk: , ; : (Latin: before a space) and their
# full-width forms, the ideographic comma, and dashes (spaced " - ", or en/em dashes).
_CLAUSE_END = re.compile(r"[,;:](?=\s)|[\uff0c\u3001\uff1b\uff1a]|[\u2013\u2014]|(?<=\s)-(?=\s)")
_WORD = re.compile(r"\S+")
# Words after which a period does not end the sentence (compared lower-cased, without the period).
ABBREVIATIONS = frozenset(
    """mr mrs ms dr prof sr jr st mt ft vs etc e.g i.e cf al approx dept est fig inc ltd co corp
    no nos vol vols pp ch sec jan feb mar apr jun jul aug sep sept oct nov dec gen col lt sgt capt
    rev hon gov sen rep pres ph.d m.d b.a m.a u.s u.k a.m p.m""".split()
)


def _is_wide(ch: str) -> bool:
    return unicodedata.east_asian_width(ch) in ("W", "F")


def speech_length(text: str) -> int:
    """Rough length of ``text`` as speech: 1 unit per character, 3 per wide (CJK) character."""
    return sum(3 if _is_wide(ch) else 1 for ch in text)


def _is_abbreviation(text: str, dot: int) -> bool:
    """Whether the '.' at ``text[dot]`` closes an abbreviation or an initial rather than a sentence."""
    start = dot
    while start > 0 and not text[start - 1].isspace():
        start -= 1
    word = text[start:dot].lstrip(_CLOSERS + "(").lower()
    if word in ABBREVIATIONS or (len(word) == 1 and word.isalpha()):  # "Dr.", "J. Smith"
        return True
    # "U.S." style dotted initials
    if re.fullmatch(r"(?:[^\W\d_]\.)+[^\W\d_]", word):
        return True
    # a sentence does not go on in lower case: "etc. and so on", "approx. five"
    rest = text[dot + 1 :].lstrip(_CLOSERS + " ")
    return bool(rest) and rest[0].islower()


def _sentence_spans(text: str, lo: int, hi: int) -> list[tuple[int, int]]:
    """Spans (start, end) of the sentences of ``text[lo:hi]``, spaces between them excluded."""
    cuts = set()
    for m in _LATIN_END.finditer(text, lo, hi):
        dot = m.group().rstrip(_CLOSERS)
        if dot.endswith(".") and len(dot) == 1 and _is_abbreviation(text, m.start()):
            continue
        cuts.add(m.end())
    cuts.update(m.end() for m in _CJK_END.finditer(text, lo, hi))
    return _spans_between(text, lo, hi, sorted(cuts))


def _clause_spans(text: str, lo: int, hi: int) -> list[tuple[int, int]]:
    # cut after the mark: a comma or dash ends the clause before it
    return _spans_between(text, lo, hi, [m.end() for m in _CLAUSE_END.finditer(text, lo, hi)])


def _word_spans(text: str, lo: int, hi: int) -> list[tuple[int, int]]:
    return [(m.start(), m.end()) for m in _WORD.finditer(text, lo, hi)]


def _spans_between(text: str, lo: int, hi: int, cuts: list[int]) -> list[tuple[int, int]]:
    """Cut ``text[lo:hi]`` at the positions ``cuts``; each piece stripped of surrounding spaces."""
    spans = []
    start = lo
    for cut in cuts + [hi]:
        if not lo < cut <= hi or cut <= start:
            continue
        s, e = start, cut
        while s < e and text[s].isspace():
            s += 1
        while e > s and text[e - 1].isspace():
            e -= 1
        if e > s:
            spans.append((s, e))
        start = cut
    return spans


def _char_spans(text: str, lo: int, hi: int, max_len: int, length) -> list[tuple[int, int]]:
    """Last resort for one unbroken run longer than a chunk: cut it into pieces of <= max_len."""
    spans = []
    start = lo
    while start < hi:
        end = start + 1
        while end < hi and length(text[start : end + 1]) <= max_len:
            end += 1
        spans.append((start, end))
        start = end
    return spans


def _chunk_spans(text: str, lo: int, hi: int, max_len: int, length, level: int = 0) -> list[tuple[int, int]]:
    """Chunks of ``text[lo:hi]`` as spans, each within max_len.

    Cuts as coarsely as possible (sentences, then clauses, then words, then characters) and packs
    neighbouring pieces of one level while they fit. The pieces of an over-long piece are packed
    among themselves only, so a chunk boundary always falls at the coarsest boundary available.
    """
    if length(text[lo:hi]) <= max_len:
        return [(lo, hi)]
    splitters = (_sentence_spans, _clause_spans, _word_spans)
    if level >= len(splitters):
        return _char_spans(text, lo, hi, max_len, length)
    spans = splitters[level](text, lo, hi)
    if len(spans) <= 1:  # nothing to cut at this level: try the next
        return _chunk_spans(text, lo, hi, max_len, length, level + 1)
    out: list[tuple[int, int]] = []
    current = None  # (start, end) of the chunk being packed
    for s, e in spans:
        if length(text[s:e]) > max_len:
            if current is not None:
                out.append(current)
                current = None
            out.extend(_chunk_spans(text, s, e, max_len, length, level + 1))
        elif current is not None and length(text[current[0] : e]) <= max_len:
            current = (current[0], e)
        else:
            if current is not None:
                out.append(current)
            current = (s, e)
    if current is not None:
        out.append(current)
    return out


def split_text(text: str, max_len: int = DEFAULT_MAX_LEN, length=speech_length) -> list[str]:
    """Cut ``text`` into chunks of at most ``max_len`` (as measured by ``length``), each fit for
    one Bark generation.

    Whitespace is first collapsed as the semantic stage does (``normalize_text``). Chunks end at
    sentence ends where possible (``. ! ? …`` before a space, ``。！？`` anywhere; not after common
    abbreviations, initials, or before a lower-case word), and consecutive sentences are packed
    into one chunk while they fit. A sentence too long for a chunk is cut at clauses (``, ; :``,
    dashes, ``，、``), then at spaces, and one unbroken run longer than a chunk at characters.

    The chunks are consecutive pieces of the normalized text: joining them back, with a space
    wherever the text had one between them, gives it exactly. Returns [] for blank text.
    """
    if not isinstance(text, str):
        raise BarkError(f"text: must be a str, got {type(text).__name__}")
    max_len = check_number("max_len", max_len, 3, integer=True)  # 3: one wide character
    text = normalize_text(text)
    if not text:
        return []
    return [text[s:e] for s, e in _chunk_spans(text, 0, len(text), int(max_len), length)]


# --- generation -----------------------------------------------------------------------------------

def _full(semantic, coarse, fine) -> dict:
    return {"semantic_prompt": semantic, "coarse_prompt": coarse, "fine_prompt": fine}


def usable_as_voice(full_generation: dict) -> bool:
    """Whether a generation is long and consistent enough to condition the next one.

    The coarse stage insists a voice's coarse prompt covers ~1.5 frames per semantic token; a
    generation of a few tokens can miss that after rounding.
    """
    try:
        voice_histories(full_generation, semantic_history_len())
    except BarkError:
        return False
    return True


def generate_long(model, text, voice=None, continue_voice=False, gap_s=DEFAULT_GAP_S, rng=None, silent=False,
                  max_len=DEFAULT_MAX_LEN, output_full=False, timings=None, on_chunk=None, on_stage=None,
                  **stage_kwargs):
    """Text of any length -> audio (N,) float32 at 24 kHz, one generation per chunk.

    The text is cut by ``split_text(text, max_len)``. Every chunk is conditioned on ``voice``; with
    ``continue_voice`` each chunk after the first is conditioned on the previous chunk's full
    generation instead (smoother prosody from chunk to chunk, but the voice may drift over a long
    text). Chunks are joined with ``gap_s`` seconds of silence. One generator (``rng``: None, a
    seed or a numpy Generator) serves all chunks, so a seed fixes the whole result.

    ``stage_kwargs`` go to ``Bark.generate`` (text_temp, waveform_temp, fine_temp, min_eos_p,
    max_gen_duration_s). ``timings`` accumulates seconds per stage; ``on_chunk(i, n, chunk)`` is
    called before chunk i of n (0-based) and ``on_stage(name)`` as each stage starts. A chunk whose
    semantic stage produces no tokens is skipped with a warning. With ``output_full`` returns
    ``(full_generation, audio)``, full_generation being the chunks' tokens concatenated.
    """
    gap_s = check_number("gap_s", gap_s, 0)
    chunks = split_text(text, max_len)
    if not chunks:
        raise BarkError("text: is empty (or only whitespace)")
    rng = as_generator(rng)
    base_voice = model.voice(voice)  # resolved (and checked) once, before any work
    gap = np.zeros(int(round(gap_s * SAMPLE_RATE)), dtype=np.float32)  # (G,)
    parts: list[np.ndarray] = []
    fulls: list[dict] = []
    prompt = base_voice
    for i, chunk in enumerate(chunks):
        if on_chunk is not None:
            on_chunk(i, len(chunks), chunk)
        try:
            full, audio = model.generate(chunk, prompt, rng=rng, silent=silent, output_full=True, timings=timings,
                                         on_stage=on_stage, **stage_kwargs)
        except NoSpeechError:
            if len(chunks) == 1:
                raise
            warnings.warn(f"chunk {i + 1} of {len(chunks)} produced no speech and is left out: {chunk[:60]!r}",
                          stacklevel=2)
            continue
        if parts:
            parts.append(gap)
        parts.append(audio)
        fulls.append(full)
        if continue_voice:
            # a too-short chunk cannot serve as a voice: keep the previous prompt then
            prompt = full if usable_as_voice(full) else prompt
    if not fulls:
        raise BarkError("no chunk of the text produced any speech; try another seed or a higher min_eos_p")
    audio = np.concatenate(parts)  # (N,)
    if not output_full:
        return audio
    full = _full(
        np.concatenate([f["semantic_prompt"] for f in fulls]),  # (sum T,)
        np.concatenate([f["coarse_prompt"] for f in fulls], axis=1),  # (2, sum T')
        np.concatenate([f["fine_prompt"] for f in fulls], axis=1),  # (8, sum T')
    )
    return full, audio
