"""The constants of Bark's algorithm, each defined once.

Every number here is fixed by the trained checkpoints or by Suno's original generation code
(bark 0.1.5, ``bark/generation.py``); changing one changes what the models were trained to see.
"""

# The pipeline's four networks, in order; also the names of a converted model's weight files.
STAGES = ("semantic", "coarse", "fine", "codec")

# --- audio ---------------------------------------------------------------------------------
SAMPLE_RATE = 24_000  # EnCodec 24 kHz: the rate of the waveform the codec decoder emits
CODEC_HOP_LENGTH = 320  # product of the decoder's upsampling ratios 8*5*4*2: samples per codec frame
CODEBOOK_SIZE = 1024  # entries per EnCodec codebook
N_COARSE_CODEBOOKS = 2  # codebooks the coarse GPT predicts
N_FINE_CODEBOOKS = 8  # codebooks in total at 6 kbps, the bandwidth Bark was trained on
COARSE_RATE_HZ = 75  # codec frames per second (24000 / 320)

# --- semantic stage (text -> semantic tokens) ------------------------------------------------
SEMANTIC_VOCAB_SIZE = 10_000  # real semantic tokens are [0, 10000)
SEMANTIC_RATE_HZ = 49.9  # semantic tokens per second of speech, as the original counts duration
SEMANTIC_PAD_TOKEN = 10_000  # pads the voice history; as an output it doubles as end-of-sequence
TEXT_ENCODING_OFFSET = 10_048  # BERT ids are shifted past the semantic/eos range of the input vocab
TEXT_PAD_TOKEN = 129_595  # pads the text block up to MAX_TEXT_TOKENS
SEMANTIC_INFER_TOKEN = 129_599  # marks where the model should start speaking
MAX_TEXT_TOKENS = 256  # the text block's fixed length; longer text is truncated with a warning
MAX_SEMANTIC_HISTORY = 256  # the voice history block's fixed length (its last 256 tokens are kept)
MAX_SEMANTIC_STEPS = 768  # hard cap on generated semantic tokens (block 1024 - 256 context blocks)

# --- coarse stage (semantic -> first two codebooks) -----------------------------------------
COARSE_SEMANTIC_PAD_TOKEN = 12_048  # pads the semantic part of a coarse window to 256 tokens
COARSE_INFER_TOKEN = 12_050  # separates the semantic context from the coarse codes
COARSE_SEMANTIC_WINDOW = 256  # semantic tokens visible to each coarse window
MAX_COARSE_HISTORY = 630  # default (and maximum) coarse tokens of history per window
MIN_COARSE_HISTORY = 60  # smallest history the original accepts
COARSE_SLIDING_WINDOW_LEN = 60  # coarse tokens generated per window before the cache is rebuilt
# coarse tokens (both codebooks interleaved) per semantic token: 75 / 49.9 * 2
SEMANTIC_TO_COARSE_RATIO = COARSE_RATE_HZ / SEMANTIC_RATE_HZ * N_COARSE_CODEBOOKS

# --- fine stage (first two codebooks -> all eight) ------------------------------------------
FINE_PAD_TOKEN = CODEBOOK_SIZE  # one past the last code: marks codebook entries still to be predicted
FINE_WINDOW = 1024  # frames the non-causal fine GPT sees at once (its block size)
FINE_HISTORY = 512  # frames of voice history prepended, at most
FINE_STEP = 512  # window stride; each window re-predicts its second half

# --- Suno's sampling defaults (its generate_audio, generate_text_semantic, generate_fine) ----------
TEXT_TEMP = 0.7  # semantic-stage temperature
WAVEFORM_TEMP = 0.7  # coarse-stage temperature
FINE_TEMP = 0.5  # fine-stage temperature: lower, since it only refines the codebooks below
MIN_EOS_P = 0.2  # end the speech once the end-of-sequence token is this likely, even if not drawn

# --- the transformers ---------------------------------------------------------------------
BLOCK_SIZE = 1024  # positions in every Bark GPT's position embedding
LAYER_NORM_EPS = 1e-5  # torch's LayerNorm default, used by every Bark layer norm
