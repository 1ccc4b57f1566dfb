"""The causal GPT of Bark's first two stages: the semantic model and the coarse model.

Both are the same network (GPT-2 style, learned positions, pre-norm blocks, an untied LM head);
only their vocabularies differ:

    semantic  in 129,600 (text ids + semantic ids + specials)  out 10,048
    coarse    in  12,096 (semantic ids + 2 codebooks + specials)  out 12,096

The semantic model also reads a *merged context*: its first 512 input ids are two blocks of 256,
the text and the voice's semantic history, whose embeddings are summed position by position, so
the 513-token prompt occupies only 257 positions.
"""

from __future__ import annotations

import contextlib
import functools

import numpy as np

from ..config import GPTConfig, config_from_dict
from ..constants import MAX_SEMANTIC_HISTORY, MAX_TEXT_TOKENS
from ..errors import BarkError
from ..nn.attention import KVCache
from ..nn.block import block_forward, read_block, read_layer_norm, read_linear, tensor
from ..nn.fused import decode_block, kernel_args
from ..nn.gemv import MAX_ROWS
from ..nn.half import kv_dtype
from ..nn.ops import layer_norm, linear, output_rows
from ..threads import Workers, forward_workers, run_ahead
from ..weights import load_stage

# ids of a merged semantic context: text block, history block, then the rest unmerged
MERGED_PREFIX = MAX_TEXT_TOKENS + MAX_SEMANTIC_HISTORY


def check_ids(ids, vocab_size: int, what: str) -> np.ndarray:
    """Validate an integer id array of any shape against ``[0, vocab_size)``; returns it as int64."""
    ids = np.asarray(ids)
    if ids.dtype.kind not in "iu":
        raise BarkError(f"{what}: ids must be integers, got dtype {ids.dtype}")
    if ids.size == 0:
        raise BarkError(f"{what}: ids are empty (shape {ids.shape})")
    lo, hi = int(ids.min()), int(ids.max())
    if lo < 0 or hi >= vocab_size:
        bad = lo if lo < 0 else hi
        raise BarkError(f"{what}: id {bad} is out of range [0, {vocab_size})")
    return ids.astype(np.int64, copy=False)


def check_causal_ids(name: str, config: GPTConfig, ids, past: int, merge_context: bool) -> np.ndarray:
    """Validate a causal forward's ids (B, T) given ``past`` cached positions; returns int64 ids."""
    ids = check_ids(ids, config.input_vocab_size, name)
    if ids.ndim != 2:
        raise BarkError(f"{name}: ids must have shape (B, T), got {ids.shape}")
    if merge_context:
        if ids.shape[1] <= MERGED_PREFIX:
            raise BarkError(f"{name}: a merged context needs more than {MERGED_PREFIX} ids, got {ids.shape[1]}")
        if past:
            raise BarkError(f"{name}: merge_context applies to the first call only, not a continued cache")
    return ids


def check_vocab(name: str, vocab: tuple[int, int] | None, V: int) -> tuple[int, int]:
    """The output ids (start, stop) a forward computes logits for: ``vocab``, or all V of them."""
    if vocab is None:
        return 0, V
    start, stop = (int(i) for i in vocab)
    if not 0 <= start < stop <= V:
        raise BarkError(f"{name}: vocab must be (start, stop) with 0 <= start < stop <= {V}, got {tuple(vocab)}")
    return start, stop


class CausalGPT:
    """A Bark causal GPT over explicit weights. Stateless: the KV cache is passed in.

    Attributes mirror the checkpoint: ``input_embeds_layer`` (V_in, C), ``position_embeds_layer``
    (block_size, C), ``layers`` (list of Block), ``layernorm_final``, ``lm_head`` (V_out, C).
    """

    def __init__(self, config: GPTConfig, tensors: dict[str, np.ndarray], name: str = "gpt", kv_cache="float32"):
        self.config = config.validate()
        self.name = name
        self.kv_dtype = kv_dtype(kv_cache)  # what new_cache makes: float32, or float16 (reduced precision)
        self.input_embeds_layer = tensor(tensors, "input_embeds_layer.weight")
        self.position_embeds_layer = tensor(tensors, "position_embeds_layer.weight")
        self.layers = [read_block(tensors, f"layers.{i}") for i in range(config.num_layers)]
        self.layernorm_final = read_layer_norm(tensors, "layernorm_final")
        self.lm_head = read_linear(tensors, "lm_head")
        self.decode_args = [kernel_args(block) for block in self.layers]  # for one-sequence decode steps

    @classmethod
    def load(cls, path: str, stage: str, kv_cache="float32") -> "CausalGPT":
        """Load ``semantic`` or ``coarse`` from a converted stage file; ``kv_cache``: the dtype of
        the caches :meth:`new_cache` makes ("float32" or "float16")."""
        config, tensors = load_stage(path, stage)
        return cls(config_from_dict(GPTConfig, config), tensors, name=stage, kv_cache=kv_cache)

    def new_cache(self, batch: int = 1, max_len: int | None = None) -> KVCache:
        """An empty cache for ``batch`` sequences of up to ``max_len`` (default: block size)
        positions, of the model's ``kv_dtype``."""
        c = self.config
        return KVCache(c.num_layers, batch, c.num_heads, max_len or c.block_size, c.head_dim, self.kv_dtype)

    def resolve_pad(self, pad, B: int, T: int, cache: KVCache | None) -> np.ndarray | None:
        """The left-padding counts (B,) int64 in force, or None: ``pad`` checked and stored in the
        cache on a first call, else what the cache kept."""
        if pad is None:
            return None if cache is None else cache.pad
        if cache is not None and cache.length:
            raise BarkError(f"{self.name}: pad is given with the first call only; the cache keeps it")
        pad = np.asarray(pad)
        if pad.shape != (B,) or pad.dtype.kind not in "iu" or pad.min() < 0 or pad.max() >= T:
            raise BarkError(f"{self.name}: pad must be {B} integers in [0, {T}), got {pad.tolist()}")
        pad = pad.astype(np.int64)
        if cache is not None:
            cache.pad = pad
        return pad

    def embed(self, ids: np.ndarray, merge_context: bool) -> np.ndarray:
        """ids (B, T) int64 -> token embeddings (B, T', C) float32; T' = T - 256 when merged."""
        wte = self.input_embeds_layer
        if not merge_context:
            return wte[ids]  # (B, T, C)
        text = wte[ids[:, :MAX_TEXT_TOKENS]]  # (B, 256, C)
        history = wte[ids[:, MAX_TEXT_TOKENS:MERGED_PREFIX]]  # (B, 256, C)
        rest = wte[ids[:, MERGED_PREFIX:]]  # (B, T - 512, C)
        return np.concatenate([text + history, rest], axis=1)  # (B, T - 256, C)

    def forward(
        self,
        ids,
        cache: KVCache | None = None,
        merge_context: bool = False,
        last_only: bool = False,
        pad=None,
        vocab: tuple[int, int] | None = None,
        workers: Workers | None = None,
    ) -> np.ndarray:
        """Logits for every position (or the last one), over the whole output vocabulary or the
        ids ``vocab`` = (start, stop) of it.

        ids: (B, T) int. cache: continues a sequence; it is written in place and advanced by the
        number of positions this call adds (T, or T - 256 with a merged context). merge_context:
        sum the embeddings of the first two 256-id blocks (semantic model; T >= 513; empty cache).
        pad: (B,) int, for a batch of sequences of different lengths, left-padded to one length:
        the number of padding positions at the start of each row (in positions after merging).
        Padding is invisible to attention and each row's positions start at 0 after its padding,
        so every row computes what it would alone. Given on the first call; a cache keeps it.
        Returns float32 logits (B, T', V), or (B, 1, V) with ``last_only``: V = V_out, or
        stop - start with ``vocab`` (the coarse model samples one codebook's 1024 ids of 12,096).
        workers: the threads a many-row call shares its work among, when the caller has them
        (:func:`barknp.threads.run_ahead`); by default the call takes its own.
        """
        c = self.config
        lm_head = self.output_head(vocab)
        past = 0 if cache is None else cache.length
        ids = check_causal_ids(self.name, c, ids, past, merge_context)
        x = self.embed(ids, merge_context)  # (B, T, C)
        B, T, _ = x.shape
        if cache is not None and cache.batch != B:
            raise BarkError(f"{self.name}: cache holds batch {cache.batch}, ids have batch {B}")
        limit = c.block_size if cache is None else min(c.block_size, cache.max_len)
        if past + T > limit:
            raise BarkError(f"{self.name}: sequence of {past + T} positions exceeds the block size {limit}")
        pad = self.resolve_pad(pad, B, T, cache)
        if pad is None:
            x = x + self.position_embeds_layer[past : past + T]  # (B, T, C)
        else:
            positions = np.maximum(past + np.arange(T)[None, :] - pad[:, None], 0)  # (B, T)
            x = x + self.position_embeds_layer[positions]  # (B, T, C)
        if cache is not None and B * T == 1 and pad is None:
            for i, args in enumerate(self.decode_args):  # a decode step: one compiled call per block
                x = decode_block(x, args, cache, i)
            cache.length = past + 1
            return self.head(x.reshape(1, -1), lm_head).reshape(1, 1, -1)  # (1, 1, V)
        scratch: dict = {}  # int8 weights' float32 copies, reused from layer to layer
        last = len(self.layers) - 1
        with forward_workers(B * T, MAX_ROWS, workers) as workers:
            for i, block in enumerate(self.layers):
                out_rows = 1 if last_only and i == last else None  # (B, 1, C) out of the last block
                x = block_forward(x, block, c.num_heads, cache, i, True, pad, workers, scratch, out_rows)
            if cache is not None:
                cache.length = past + T
            head = functools.partial(self.head, lm_head=lm_head)
            logits = workers.map_rows(head, lm_head.weight.shape[0], x.reshape(-1, c.hidden_size))  # (B T', V)
        return logits.reshape(B, x.shape[1], -1)  # (B, T', V)

    def prefill_ahead(self, ids, cache: KVCache | None = None):
        """``forward(ids, cache)``, its logits dropped, computed on a helper thread while a ``with``
        body runs (another window's decode steps), then finished by both threads on leaving it
        (:func:`barknp.threads.run_ahead`). ``cache`` is emptied and reused; None makes a new one.

        A context manager: yields a Future of the cache, holding ids (1, T)'s keys and values once
        the block is left; or None where the forward does not run beside the body (one thread;
        int8 or float16 weights): then nothing is computed, and no cache is made or emptied.

        Not with int8 weights: their decode steps are bound by converting the weights in
        registers, not by reading them, so on one thread they take twice as long (7.9 -> 15 ms per
        coarse step); beside the prefill they measured no gain (benchmarks/NOTES.md, session 8),
        so the second cache would be memory spent for nothing. float16 weights decline too: their
        steps also convert every weight in registers (benchmarks/NOTES.md, session 10).
        """
        if self.layers[0].attn.att_proj.weight.dtype != np.float32:  # int8 or float16 weights
            return contextlib.nullcontext()

        def prefill(workers) -> KVCache:
            filled = self.new_cache(ids.shape[0]) if cache is None else cache
            filled.reset()
            # Its logits are not wanted: one id's, and the head's other rows stay untouched on disk.
            self.forward(ids, filled, last_only=True, vocab=(0, 1), workers=workers)
            return filled

        return run_ahead(prefill)

    def output_head(self, vocab: tuple[int, int] | None):
        """The LM head, or its rows ``vocab`` = (start, stop) as views."""
        if vocab is None:
            return self.lm_head
        return output_rows(self.lm_head, *check_vocab(self.name, vocab, self.lm_head.weight.shape[0]))

    def head(self, x: np.ndarray, lm_head=None) -> np.ndarray:
        """The final layer norm and the LM head (or a slice of it, from :meth:`output_head`):
        x (N, C) float32 -> logits (N, V) float32."""
        return linear(layer_norm(x, self.layernorm_final), self.lm_head if lm_head is None else lm_head)
