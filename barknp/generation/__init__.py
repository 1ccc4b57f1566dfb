"""Text to tokens: Bark's three generation loops, as Suno's original code (bark 0.1.5) runs them.

    tokenizer.py  text -> BERT ids (bert-base-multilingual-cased, no special tokens)
    semantic.py   text -> semantic tokens (T,)            generate_text_semantic, KV-cached
    coarse.py     semantic -> codebooks 0..1 (2, T')      generate_coarse, KV-cached
    fine.py       codebooks 0..1 -> 0..7 (8, T')          generate_fine
    sampling.py   the rng, top-k / top-p / temperature and the one documented draw rule
    voices.py     voice prompts: load, validate, list, save
    batch.py      the three loops over several texts at once, each item as if alone
    progress.py   the progress bars (stderr, silenced with ``silent``)

The loops reproduce the original token for token: given the same logits and the same stream of
uniform numbers (one per sampled token, see sampling.py), barknp picks the same tokens as the
original run with ``use_kv_caching=True`` whose ``torch.multinomial`` draws by the same rule.
barknp adds only: ``temp == 0`` (greedy; the original would divide by zero), validation that
raises BarkError where the original asserts and also where it runs on values that make no sense
(top_p outside (0, 1], min_eos_p above 1, negative durations or temperatures, float-typed tokens,
a voice prompt malformed in a part the stage does not read), Unicode composition of the text
(tokenizer.py), and an explicit numpy ``rng``. It computes less where the
result is the same: the coarse stage's logits for the sampled codebook's 1 024 ids only, and a
coarse window's keys and values only past the positions the cache already holds with the same
ids (the original rebuilds the cache for every window; keys and values agree to float32
rounding, tested in tests/test_generation.py). And it computes some of it earlier: once the
coarse windows slide, a window's prefill, all but the tokens the window before it draws, runs
beside that window's decode steps (coarse.py).

Differences from transformers
-----------------------------
transformers' ``BarkModel.generate`` (and the sub-models' ``generate``) is a port whose defaults
and details differ from the original. barknp follows the original; where they differ:

1. **Default decoding.** transformers' generation configs default to ``do_sample=False``: greedy
   decoding in the semantic and coarse stages, where the original samples at temp 0.7. Its fine
   stage takes the argmax whenever ``temperature`` is None *or 1.0* (its default), so by default
   transformers' fine stage is greedy, where the original samples at temp 0.5; asking
   transformers for fine temperature 1.0 cannot sample.
2. **min_eos_p.** The original stops the semantic stage when the probability of EOS is
   ``>= min_eos_p`` (default 0.2), measured on the *temperature-scaled, top-k/top-p filtered*
   distribution. transformers' ``BarkEosPrioritizerLogitsProcessor`` measures it on the raw
   softmax (before temperature, top-k, top-p), uses ``>``, and ``BarkModel.generate`` passes
   ``min_eos_p=None`` unless given, so by default only a drawn EOS stops it. When the threshold
   fires, transformers forces EOS as the next token (it is still sampled); the original breaks
   with the step's draw consumed.
3. **Where EOS sits.** The original samples from the 10 000 semantic logits plus the EOS logit
   appended as an 10 001st entry (only with ``allow_early_stop``). transformers keeps the whole
   10 048-entry head and suppresses ids 10 001..10 047 to -inf, EOS staying at id 10 000; the
   distributions agree, but transformers' output *includes* the EOS token (and pads a batch with
   it), which its coarse stage maps to COARSE_SEMANTIC_PAD_TOKEN; the original's output never
   holds EOS. transformers has no ``allow_early_stop=False`` and no ``max_gen_duration_s``.
4. **top-k / top-p order and rule.** The original applies top-p, then top-k, to the *raw* logits
   and then divides by the temperature; its top-p keeps the tokens up to and including the one
   whose descending cumulative probability first exceeds ``top_p`` (float32, NumPy argsort
   order). transformers applies temperature first, then top-k, then top-p, and its top-p removes
   tokens whose ascending cumulative probability is ``<= 1 - top_p``; results differ near the
   boundary and whenever temperature != 1.
5. **Text handling.** The original collapses whitespace (``\\s+`` -> one space, stripped) before
   tokenizing and warns when text exceeds 256 tokens. ``BarkProcessor`` tokenizes the raw text
   (BERT's own whitespace splitting makes this matter only for unusual characters) and pads
   with an attention mask; text past 256 tokens is cut by ``BarkSemanticModel.generate``
   silently.
6. **Voices.** The original checks the voice (ranges, shapes, and that the coarse prompt is
   ~1.5 frames per semantic token) and casts it to integers; transformers only checks that the
   three keys exist with the right number of dimensions.
7. **Coarse windows.** Both slide 60-token windows over 630 tokens of history and keep the
   ``[:-2]`` alignment hack; transformers runs each window through ``GenerationMixin.generate``
   with an ``AlternatingCodebooksLogitsProcessor`` instead of the original's 1 024-logit slice.
   That processor masks everything *below* codebook 1's ids on its turn but nothing above, so
   ids 12 048..12 095 (COARSE_SEMANTIC_PAD_TOKEN, COARSE_INFER_TOKEN and spares) stay
   selectable: transformers can emit a "code" >= 1024 (seen with random weights, greedy), the
   original cannot. With those ids suppressed and greedy decoding, the two agree token for token
   (tests/test_generation.py). With sampling, transformers' top-k/top-p also see the masked
   12 096-entry vector (see 4).
8. **Random numbers.** The original draws with ``torch.multinomial`` (torch's global RNG);
   transformers too. barknp draws from an explicit numpy Generator with the rule in
   sampling.py, so barknp and the original agree token for token only when the original's
   multinomial is given the same rule and numbers (tools/suno_reference.py does that).
"""

from .coarse import generate_coarse
from .fine import generate_fine
from .sampling import as_generator
from .semantic import generate_semantic
from .tokenizer import Tokenizer, load_tokenizer
from .voices import list_voices, load_voice, save_voice

__all__ = [
    "Tokenizer",
    "as_generator",
    "generate_coarse",
    "generate_fine",
    "generate_semantic",
    "list_voices",
    "load_tokenizer",
    "load_voice",
    "save_voice",
]
