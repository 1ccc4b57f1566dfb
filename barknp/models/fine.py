"""The fine GPT of Bark's third stage: a non-causal transformer that fills in codebooks 2..7.

It sees a window of frames with all eight codebooks, each codebook with its own embedding table
(1,056 rows: 1,024 codes, the pad token 1,024, and spare rows). To predict codebook ``n`` it sums the
embeddings of codebooks 0..n at each frame, runs the non-causal blocks, and applies the head for
``n``. The original ties ``lm_heads[n - 1]`` to ``input_embeds_layers[n]``; the converted file
stores both.
"""

from __future__ import annotations

import numpy as np

from ..config import GPTConfig, config_from_dict
from ..errors import BarkError
from ..nn.block import block_forward, read_block, read_layer_norm, tensor
from ..nn.gemv import MAX_ROWS
from ..nn.ops import layer_norm
from ..threads import forward_workers
from ..weights import load_stage
from .gpt import check_ids, check_vocab


def check_fine_inputs(config: GPTConfig, codebook_idx, codes, first=0) -> tuple[int, np.ndarray, int]:
    """Validate a fine forward's arguments; returns (codebook_idx as int, codes as int64, first as int)."""
    c = config
    if not (c.n_codes_given <= int(codebook_idx) < c.n_codes_total):
        raise BarkError(f"fine: codebook_idx must be in [{c.n_codes_given}, {c.n_codes_total}), got {codebook_idx}")
    codes = check_ids(codes, c.input_vocab_size, "fine")
    if codes.ndim != 3 or codes.shape[2] != c.n_codes_total:
        raise BarkError(f"fine: codes must have shape (B, T, {c.n_codes_total}), got {codes.shape}")
    if codes.shape[1] > c.block_size:
        raise BarkError(f"fine: {codes.shape[1]} frames exceed the block size {c.block_size}")
    if not 0 <= int(first) < codes.shape[1]:
        raise BarkError(f"fine: first must be in [0, {codes.shape[1]}), got {first}")
    return int(codebook_idx), codes, int(first)


class FineGPT:
    """Bark's fine model over explicit weights.

    Attributes mirror the checkpoint: ``input_embeds_layers`` (n_codes_total of (V, C)),
    ``position_embeds_layer`` (block_size, C), ``layers``, ``layernorm_final``, ``lm_heads``
    (n_codes_total - n_codes_given of (V, C)).
    """

    def __init__(self, config: GPTConfig, tensors: dict[str, np.ndarray]):
        self.config = config.validate()
        n = config.n_codes_total
        self.input_embeds_layers = [tensor(tensors, f"input_embeds_layers.{i}.weight") for i in range(n)]
        self.position_embeds_layer = tensor(tensors, "position_embeds_layer.weight")
        self.layers = [read_block(tensors, f"layers.{i}") for i in range(config.num_layers)]
        self.layernorm_final = read_layer_norm(tensors, "layernorm_final")
        self.lm_heads = [
            tensor(tensors, f"lm_heads.{i}.weight") for i in range(n - config.n_codes_given)
        ]

    @classmethod
    def load(cls, path: str) -> "FineGPT":
        config, tensors = load_stage(path, "fine")
        return cls(config_from_dict(GPTConfig, config), tensors)

    def forward(self, codebook_idx: int, codes, first: int = 0, vocab: tuple[int, int] | None = None) -> np.ndarray:
        """Logits for codebook ``codebook_idx`` at frames ``first``..T-1, over the output ids
        ``vocab`` = (start, stop) (default: all V).

        codebook_idx: int in [n_codes_given, n_codes_total), i.e. 1..7 for Bark.
        codes: (B, T, n_codes_total) int in [0, V); codebooks above ``codebook_idx`` are ignored.
        first: int in [0, T). Every frame still attends and is attended to; only the last block's
        attention output, projection and MLP, and the head, skip the frames before ``first`` (a
        window re-predicts only its frames from its fill start: the second half, after the first).
        Returns float32 logits (B, T - first, stop - start).
        """
        c = self.config
        codebook_idx, codes, first = check_fine_inputs(c, codebook_idx, codes, first)
        B, T, _ = codes.shape
        n = T - first  # frames whose logits are wanted
        head = self.lm_heads[codebook_idx - c.n_codes_given]  # (V, C)
        head = head[slice(*check_vocab("fine", vocab, head.shape[0]))]  # (V', C) view
        x = self.input_embeds_layers[0][codes[:, :, 0]]  # (B, T, C)
        for i in range(1, codebook_idx + 1):
            x += self.input_embeds_layers[i][codes[:, :, i]]
        x += self.position_embeds_layer[:T]
        last = len(self.layers) - 1
        with forward_workers(B * T, MAX_ROWS) as workers:
            for i, block in enumerate(self.layers):
                out_rows = n if i == last else None  # (B, n, C) out of the last block
                x = block_forward(x, block, c.num_heads, causal=False, workers=workers, out_rows=out_rows)
            logits = workers.map_rows(
                lambda rows: layer_norm(rows, self.layernorm_final) @ head.T, head.shape[0], x.reshape(B * n, -1)
            )  # (B n, V')
        return logits.reshape(B, n, -1)  # (B, n, V')
