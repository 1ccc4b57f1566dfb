"""Bark's networks on an NVIDIA GPU: the CPU models' weights copied to the device once, run by the
kernels of ``barknp.cuda.kernels``.

The signatures, validation and error messages of the CPU classes (``barknp.models.gpt``,
``barknp.models.fine``, ``barknp.models.codec``), which they are built from and whose check
functions they call; the CPU's thread options (``workers``) are accepted and ignored, and the
coarse loop's ``prefill_ahead`` (two CPU threads side by side) has no device counterpart. Weights and the KV cache live on the device; ids and codes go up, logits and
audio come down. The generation loops sample on the host from the (B, 1, V) last-position logits
of each step, so one row of logits per step also crosses the bus.
"""

from __future__ import annotations

import numpy as np

from ..constants import MAX_TEXT_TOKENS
from ..errors import BarkError
from ..models.codec import DEFAULT_CHUNK_FRAMES, Codec
from ..models.fine import FineGPT, check_fine_inputs
from ..models.gpt import MERGED_PREFIX, CausalGPT, check_causal_ids, check_vocab
from ..nn.attention import KVCache
from ..nn.block import Block
from ..nn.conv import pack_conv1d
from ..nn.ops import output_rows
from .kernels import Device


def to_device(dev: Device, obj):
    """Copy every array inside ``obj`` (arrays, None, NamedTuples and lists of them) to the device,
    keeping the structure, so the CPU path's Block/Linear/LayerNorm types carry device arrays."""
    if obj is None:
        return None
    if isinstance(obj, np.ndarray):
        return dev.upload(obj)
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*(to_device(dev, v) for v in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(dev, v) for v in obj)
    raise TypeError(f"to_device: cannot copy {type(obj).__name__}")


class CUDAKVCache(KVCache):
    """``barknp.nn.attention.KVCache`` on the device.

    keys, values: (n_layer, B, n_head, max_len, head_dim) float32 device arrays, valid up to
    ``length``; a forward pass writes its positions and advances ``length``. ``pad`` (B,) int64 on
    the host, as the CPU cache keeps it (whoever sets it: the first forward, or a caller copying
    rows); setting it also sets ``device_pad``, its (B,) int32 copy that the kernels read, so a
    decode step uploads nothing for it.
    """

    def __init__(self, dev: Device, n_layer: int, batch: int, n_head: int, max_len: int, head_dim: int):
        self.dev = dev
        shape = (n_layer, batch, n_head, max_len, head_dim)
        self.keys = dev.empty(shape)
        self.values = dev.empty(shape)
        self.length = 0
        self.pad = None

    @property
    def pad(self) -> np.ndarray | None:
        return self._pad

    @pad.setter
    def pad(self, pad) -> None:
        self._pad = None if pad is None else np.asarray(pad, dtype=np.int64)
        self.device_pad = None if pad is None else self.dev.upload(self._pad, np.int32)

    def keep_rows(self, keep) -> "CUDAKVCache":
        """A new cache holding only the rows ``keep`` (list of int) of this one, its valid positions
        and pad: what batched decoding keeps when rows finish. Device arrays take no list index, so
        the rows are copied one slice at a time, on the device."""
        n_layer, _, n_head, max_len, head_dim = self.keys.shape
        kept = CUDAKVCache(self.dev, n_layer, len(keep), n_head, max_len, head_dim)
        n = self.length
        if n:
            for j, b in enumerate(keep):
                kept.keys[:, j, :, :n] = self.keys[:, b, :, :n]  # (L, H, n, D)
                kept.values[:, j, :, :n] = self.values[:, b, :, :n]
        kept.length = n
        kept.pad = None if self.pad is None else self.pad[list(keep)]
        return kept


def block_forward(dev: Device, x, block: Block, n_head: int, keys, values, T: int, past: int, causal: bool,
                  key_start=None):
    """One pre-norm block on the device, in place on x (B*T, C).

    keys/values (B, H, S, D): this layer's cache (or a scratch of S = T); the block writes its T new
    positions at ``past`` and attends over the first past + T. key_start: None or (B,) int32 device
    array, each row's left padding (``Device.attention``). Reference: ``barknp.nn.block.block_forward``.
    """
    ln1, attn, ln2, mlp = block
    h = dev.layer_norm(x, ln1.weight, ln1.bias)  # (BT, C)
    qkv = dev.linear(h, attn.att_proj.weight, attn.att_proj.bias)  # (BT, 3C)
    dev.kv_write(qkv, keys, values, T, past, n_head)
    y = dev.attention(qkv, keys, values, T, past, causal, n_head, key_start)  # (BT, C)
    dev.linear(y, attn.out_proj.weight, attn.out_proj.bias, residual=x, out=x)
    h = dev.layer_norm(x, ln2.weight, ln2.bias, out=h)  # (BT, C)
    m = dev.linear(h, mlp.in_proj.weight, mlp.in_proj.bias, gelu=True)  # (BT, 4C)
    dev.linear(m, mlp.out_proj.weight, mlp.out_proj.bias, residual=x, out=x)
    return x


def merged_index(ids: np.ndarray, merge_context: bool) -> np.ndarray:
    """Embedding rows to sum per position: ids (B, T) -> (B * T', J) int32, -1 for none.

    Unmerged: J = 1, the ids themselves. Merged (``CausalGPT.embed``): position t < 256 sums the
    text id t and the history id 256 + t (in that order, as the CPU adds them); later positions
    take id 256 + t alone, so T' = T - 256.
    """
    if not merge_context:
        return ids.reshape(-1, 1).astype(np.int32)
    B, T = ids.shape
    idx = np.full((B, T - MAX_TEXT_TOKENS, 2), -1, dtype=np.int32)  # (B, T', 2)
    idx[:, :MAX_TEXT_TOKENS, 0] = ids[:, :MAX_TEXT_TOKENS]
    idx[:, :MAX_TEXT_TOKENS, 1] = ids[:, MAX_TEXT_TOKENS:MERGED_PREFIX]
    idx[:, MAX_TEXT_TOKENS:, 0] = ids[:, MERGED_PREFIX:]
    return idx.reshape(-1, 2)


class CUDACausalGPT:
    """``CausalGPT`` (semantic or coarse) on the device, built from a CPU model's weights."""

    resolve_pad = CausalGPT.resolve_pad  # the CPU's validation of left padding, its messages included

    kv_dtype = np.dtype(np.float32)  # the device cache is float32 only

    def __init__(self, cpu: CausalGPT, dev: Device):
        if not isinstance(cpu, CausalGPT):
            raise BarkError(f"CUDA: build from a CPU CausalGPT, got {type(cpu).__name__}")
        if cpu.lm_head.weight.dtype != np.float32:  # int8 (a QLinear) or float16
            raise BarkError("int8 and float16 weights run on the CPU only; load the model with weights='float32'")
        if cpu.kv_dtype != np.float32:
            raise BarkError("a float16 KV cache runs on the CPU only; load the model with kv_cache='float32'")
        self.dev = dev
        self.config = cpu.config
        self.name = cpu.name
        self.input_embeds_layer = dev.upload(cpu.input_embeds_layer)  # (V_in, C)
        self.position_embeds_layer = dev.upload(cpu.position_embeds_layer)  # (block_size, C)
        self.layers = [to_device(dev, block) for block in cpu.layers]
        self.layernorm_final = to_device(dev, cpu.layernorm_final)
        self.lm_head = to_device(dev, cpu.lm_head)  # weight (V_out, C)

    def new_cache(self, batch: int = 1, max_len: int | None = None) -> CUDAKVCache:
        """An empty device cache for ``batch`` sequences of up to ``max_len`` (default: block size) positions."""
        c = self.config
        return CUDAKVCache(self.dev, c.num_layers, batch, c.num_heads, max_len or c.block_size, c.head_dim)

    def forward(self, ids, cache: CUDAKVCache | None = None, merge_context: bool = False,
                last_only: bool = False, pad=None, vocab: tuple[int, int] | None = None, workers=None) -> np.ndarray:
        """As ``CausalGPT.forward``: ids (B, T) int -> float32 logits (B, T', V) (or (B, 1, V)),
        on the host, V = V_out or the ``vocab`` (start, stop) slice of it; ``cache`` (from
        ``new_cache``) is written on the device and advanced.

        pad: (B,) int left-padding counts (in positions after merging), given with the first call
        and kept by the cache, exactly as the CPU takes it: the padding is invisible to attention
        and each row's positions restart at 0 after it. ``workers`` (the CPU's threads) is ignored."""
        c = self.config
        dev = self.dev
        head = output_rows(self.lm_head, *check_vocab(self.name, vocab, self.lm_head.weight.shape[0]))  # before any write
        if cache is not None and not isinstance(cache, CUDAKVCache):
            raise BarkError(f"{self.name}: a CUDA model needs a cache from its own new_cache(), got {type(cache).__name__}")
        past = 0 if cache is None else cache.length
        ids = check_causal_ids(self.name, c, ids, past, merge_context)
        B = ids.shape[0]
        idx = merged_index(ids, merge_context)  # (B*T, J)
        T = idx.shape[0] // B
        if cache is not None and cache.batch != B:
            raise BarkError(f"{self.name}: cache holds batch {cache.batch}, ids have batch {B}")
        limit = c.block_size if cache is None else min(c.block_size, cache.max_len)
        if past + T > limit:
            raise BarkError(f"{self.name}: sequence of {past + T} positions exceeds the block size {limit}")
        pad = self.resolve_pad(pad, B, T, cache)  # (B,) int64 or None; a cache now holds it
        if pad is None:
            d_pad = None
        else:
            d_pad = dev.upload(pad, np.int32) if cache is None else cache.device_pad  # (B,) int32
        x = dev.embedding_sum(self.input_embeds_layer, dev.upload(idx, np.int32), self.position_embeds_layer,
                              T, past, d_pad)  # (B*T, C)
        if cache is None:
            scratch = CUDAKVCache(dev, 1, B, c.num_heads, T, c.head_dim)
        for i, block in enumerate(self.layers):
            kv = (cache.keys[i], cache.values[i]) if cache is not None else (scratch.keys[0], scratch.values[0])
            block_forward(dev, x, block, c.num_heads, kv[0], kv[1], T, past, causal=True, key_start=d_pad)
        if cache is not None:
            cache.length = past + T
        if last_only:
            x = x.reshape(B, T, c.hidden_size)[:, T - 1]  # (B, C), a row-strided view
            T = 1
        h = dev.layer_norm(x, self.layernorm_final.weight, self.layernorm_final.bias)  # (B*T, C)
        logits = dev.linear(h, head.weight, head.bias)  # (B*T, V)
        return logits.copy_to_host().reshape(B, T, -1)


class CUDAFineGPT:
    """``FineGPT`` on the device. The eight embedding tables are stacked into one (8 V, C) table so
    that summing codebooks 0..n is one gather; a head equal to its tied table is a view of it."""

    def __init__(self, cpu: FineGPT, dev: Device):
        self.dev = dev
        self.config = c = cpu.config
        self.table_rows = V = cpu.input_embeds_layers[0].shape[0]  # codes per codebook, 1024 + specials
        self.input_embeds = dev.upload(np.concatenate(cpu.input_embeds_layers))  # (n_codes_total * V, C)
        self.position_embeds_layer = dev.upload(cpu.position_embeds_layer)
        self.layers = [to_device(dev, block) for block in cpu.layers]
        self.layernorm_final = to_device(dev, cpu.layernorm_final)
        self.lm_heads = []
        for i, head in enumerate(cpu.lm_heads):
            table = i + c.n_codes_given
            tied = head.shape == (V, c.hidden_size) and np.array_equal(head, cpu.input_embeds_layers[table])
            self.lm_heads.append(self.input_embeds[table * V : (table + 1) * V] if tied else dev.upload(head))

    def forward(self, codebook_idx: int, codes, first: int = 0, vocab: tuple[int, int] | None = None) -> np.ndarray:
        """As ``FineGPT.forward``: codes (B, T, n_codes_total) int -> float32 logits
        (B, T - first, V') on the host. The blocks run for every frame (no last-block trim here);
        the head computes only the ids ``vocab``, and for one sequence only the frames from ``first``
        (a batch's rows are not contiguous there, so the host drops their earlier frames)."""
        c = self.config
        dev = self.dev
        codebook_idx, codes, first = check_fine_inputs(c, codebook_idx, codes, first)
        B, T, _ = codes.shape
        head = self.lm_heads[codebook_idx - c.n_codes_given]  # (V, C) on the device
        start, stop = check_vocab("fine", vocab, head.shape[0])
        n = codebook_idx + 1
        idx = codes[:, :, :n] + np.arange(n) * self.table_rows  # (B, T, n): rows of the stacked table
        x = dev.embedding_sum(self.input_embeds, dev.upload(idx.reshape(B * T, n), np.int32),
                              self.position_embeds_layer, T, 0)  # (B*T, C)
        scratch = CUDAKVCache(dev, 1, B, c.num_heads, T, c.head_dim)
        for block in self.layers:
            block_forward(dev, x, block, c.num_heads, scratch.keys[0], scratch.values[0], T, 0, causal=False)
        h = dev.layer_norm(x, self.layernorm_final.weight, self.layernorm_final.bias)  # (B*T, C)
        skip = first if B == 1 else 0  # frames the head leaves out on the device
        logits = dev.linear(h[skip:], head[start:stop])  # (B*T - skip, V')
        return np.ascontiguousarray(logits.copy_to_host().reshape(B, T - skip, -1)[:, first - skip :])


class CUDACodec:
    """The EnCodec decoder on the device, over whole sequences (no chunking: the largest activations
    of a 10 s clip, (240000, 32) float32, are 31 MB each). Built from a CPU ``Codec``; its
    ``_check_codes`` validates."""

    def __init__(self, cpu: Codec, dev: Device):
        self.dev = dev
        self.cpu = cpu  # validation only; its weights are not used on the device path
        self.config = c = cpu.config
        n_q, size, dim = cpu.codebooks.shape
        self.codebook_size = size
        self.codebooks = dev.upload(cpu.codebooks.reshape(n_q * size, dim))  # (8 * 1024, 128)
        self.reflect = c.pad_mode == "reflect"
        raw = cpu.raw
        self.first = self._conv(*raw["first"])
        self.lstm_layers = [(dev.upload(l.w_ih), dev.upload(l.w_hh), dev.upload(l.b_ih + l.b_hh))
                            for l in raw["lstm"]]
        self.stages = []
        for (w, b, stride), blocks in raw["stages"]:
            taps = dev.upload(np.asarray(w, dtype=np.float32).transpose(2, 0, 1))  # (K, C_in, C_out)
            packed = [(self._conv(*blk["convs"][0]), self._conv(*blk["convs"][1]),
                       None if blk["shortcut"] is None else self._conv(*blk["shortcut"])) for blk in blocks]
            self.stages.append(((taps, dev.upload(b), stride), packed))
        self.last = self._conv(*raw["last"])

    def _conv(self, weight, bias, dilation):
        """(device packed matrix (K*C_in + 1, C_out), K, dilation) from a checkpoint Conv1d."""
        return self.dev.upload(pack_conv1d(weight, bias, dilation).matrix), weight.shape[2], dilation

    @property
    def hop_length(self) -> int:
        return int(np.prod(self.config.upsampling_ratios))

    def decode(self, codes, chunk_frames: int = DEFAULT_CHUNK_FRAMES, workers: int | None = None) -> np.ndarray:
        """As ``Codec.decode``: codes (B, 8, T) or (8, T) int -> audio (B, 320 T) or (320 T,) float32.
        ``chunk_frames`` is validated for compatibility and ``workers`` accepted; neither changes
        anything here (the device decodes whole sequences)."""
        codes, single = self.cpu._check_codes(codes)
        if chunk_frames < 1:
            raise BarkError(f"codec: chunk_frames must be >= 1, got {chunk_frames}")
        if workers is not None and workers < 1:
            raise BarkError(f"codec: workers must be >= 1, got {workers}")
        B, n_q, T = codes.shape
        audio = np.empty((B, T * self.hop_length), dtype=np.float32)
        for b in range(B):
            audio[b] = self._decode_one(codes[b])
        return audio[0] if single else audio

    def _decode_one(self, codes: np.ndarray) -> np.ndarray:
        """codes (8, T) int64 -> audio (320 T,) float32."""
        dev = self.dev
        n_q, T = codes.shape
        idx = (codes.T + np.arange(n_q) * self.codebook_size).astype(np.int32)  # (T, 8)
        x = dev.embedding_sum(self.codebooks, dev.upload(idx, np.int32))  # (T, 128)
        matrix, k, d = self.first
        h = dev.conv1d(x, matrix, k, d, self.reflect)  # (T, 512)
        y = h
        for w_ih, w_hh, bias in self.lstm_layers:
            y = dev.lstm_layer(y, w_ih, w_hh, bias)  # (T, 512)
        y = dev.add(y, h)  # the LSTM's skip connection
        for (taps, bias, stride), blocks in self.stages:
            y = dev.conv_transpose1d(y, taps, bias, stride, elu_input=True)  # (L * stride, C / 2)
            for conv1, conv2, shortcut in blocks:
                z = dev.conv1d(y, conv1[0], conv1[1], conv1[2], self.reflect, elu_input=True)  # (L, hidden)
                s = y if shortcut is None else dev.conv1d(y, shortcut[0], shortcut[1], shortcut[2], self.reflect)
                y = dev.conv1d(z, conv2[0], conv2[1], conv2[2], self.reflect, elu_input=True, residual=s)
        matrix, k, d = self.last
        y = dev.conv1d(y, matrix, k, d, self.reflect, elu_input=True)  # (320 T, 1)
        return y.copy_to_host()[:, 0]
