"""The EnCodec 24 kHz decoder: codec codes (8 codebooks at 75 Hz) -> mono waveform at 24 kHz.

The decoder is transformers' ``EncodecModel`` quantizer-decode plus SEANet decoder:

    codes (B, 8, T) --sum of 8 codebook lookups--> (B, T, 128)
      --causal conv k7--> (T, 512) --2-layer LSTM, plus its input--> (T, 512)
      --4 x [ELU, causal transposed conv (x8, x5, x4, x2), residual block]--> (320 T, 32)
      --ELU, causal conv k7--> (320 T,) audio

Everything after the LSTM is causal, so it runs as a stream over chunks of frames: each layer keeps
the few samples of left context the next chunk needs (a transposed conv's overlap, a conv's
receptive field). The full-length activations (up to 24000 x 32 floats per second of audio) never
exist; per chunk they stay small enough to live in cache. Memory that grows with the duration is
the LSTM's: its input projections (T, 2048) and outputs (T, 512), 10 KB per frame, 45 MB for a
minute, beside the returned audio (1.3 KB per frame).

``decode_reference`` runs the same network with the plain-NumPy reference of every layer, on whole
sequences, as the authority the fast path is tested against.
"""

from __future__ import annotations

import threading
from typing import NamedTuple

import numba
import numpy as np

from ..config import CodecConfig, config_from_dict
from ..constants import N_FINE_CODEBOOKS
from ..convert.layout import codec_layer_names
from ..errors import BarkError
from ..nn.conv import (
    PackedConv1d,
    PackedConvTranspose1d,
    causal_conv1d,
    causal_conv1d_reference,
    causal_trim,
    conv1d_causal_step,
    conv_transpose1d_causal_step,
    conv_transpose1d_reference,
    elu32,
    elu_reference,
    pack_conv1d,
    pack_conv_transpose1d,
)
from ..nn.lstm import LSTMLayer, lstm, lstm_blocks, pack_lstm_layer
from ..threads import single_threaded_blas

# Frames of 75 Hz codes pushed through the upsampling stack at once. 24 frames make the widest
# chunk activation 7680 x 32 floats (about 1 MB): large enough for efficient matrix products,
# small enough to stay in cache. Any value >= 1 gives the same audio.
DEFAULT_CHUNK_FRAMES = 24
# Frames the first stage (transposed conv x8 and its residual block) takes at once, when that is
# more than ``chunk_frames``: its weights are the largest (1025 x 2048 floats), and OpenBLAS packs
# them on every product, so more rows per product run faster (24 -> 96 rows: 52 -> 66 GFLOP/s).
# The stages after it take its output ``chunk_frames`` at a time.
FIRST_STAGE_FRAMES = 96
# LSTM steps per block when the LSTM feeds upsampling threads as it goes.
LSTM_BLOCK_FRAMES = 32
# The LSTM's cost relative to all of the upsampling, single-threaded (measured: about 18 ms vs
# 40 ms per second of audio; 0.35 and 0.55 measured no different); only balances the threads'
# work, never changes the audio.
LSTM_SHARE = 0.45


class ResBlock(NamedTuple):
    """SEANet residual block, packed: ELU, ``conv`` (k, dilation), ELU, conv k1, plus a k1 shortcut.

    The second conv and the shortcut read different inputs but sum into one output, so they are
    one matrix product: [ELU(h), x, 1] @ ``tail``, with ``tail`` (hidden + C + 1, C) stacking the
    second conv's weight, the shortcut's weight (identity when the block has none) and both biases.
    """

    conv: PackedConv1d
    tail: np.ndarray


class UpStage(NamedTuple):
    """ELU, causal transposed conv (upsampling by ``stride``), residual blocks."""

    up: PackedConvTranspose1d
    blocks: tuple  # ResBlock


def _pack_res_block(block: dict) -> ResBlock:
    (w1, b1, dilation), (w2, b2, _) = block["convs"]
    hidden, width = w2.shape[1], w2.shape[0]
    tail = np.empty((hidden + width + 1, width), dtype=np.float32)
    tail[:hidden] = w2[:, :, 0].T
    if block["shortcut"] is None:
        tail[hidden:-1] = np.eye(width, dtype=np.float32)
        tail[-1] = b2
    else:
        ws, bs, _ = block["shortcut"]
        tail[hidden:-1] = ws[:, :, 0].T
        tail[-1] = b2 + bs
    return ResBlock(pack_conv1d(w1, b1, dilation), tail)


def _get(tensors: dict, name: str, shape: tuple) -> np.ndarray:
    if name not in tensors:
        raise BarkError(f"codec weights: missing tensor {name}")
    array = np.asarray(tensors[name])
    if array.shape != shape:
        raise BarkError(f"codec weights: {name} has shape {array.shape}, expected {shape}")
    return np.ascontiguousarray(array, dtype=np.float32)


def _conv(tensors: dict, prefix: str, c_in: int, c_out: int, k: int, dilation: int = 1) -> tuple:
    """Checkpoint (weight (C_out, C_in, K), bias (C_out,)) of an ``EncodecConv1d`` at ``prefix``."""
    return (
        _get(tensors, f"{prefix}.conv.weight", (c_out, c_in, k)),
        _get(tensors, f"{prefix}.conv.bias", (c_out,)),
        dilation,
    )


class Codec:
    """The EnCodec decoder over explicit weights. Build with ``from_tensors`` or ``load``."""

    def __init__(self, config: CodecConfig, codebooks: np.ndarray, raw: dict):
        """codebooks (8, codebook_size, codebook_dim) float32; raw: the layer weights in checkpoint
        layouts, as ``from_tensors`` gathers them (the reference path reads them directly)."""
        self.config = config
        self.codebooks = codebooks
        self.raw = raw
        self.first = pack_conv1d(*raw["first"])
        self.lstm_layers = [pack_lstm_layer(layer) for layer in raw["lstm"]]
        self.stages = tuple(
            UpStage(pack_conv_transpose1d(w, b, stride), tuple(_pack_res_block(block) for block in blocks))
            for (w, b, stride), blocks in raw["stages"]
        )
        self.last = pack_conv1d(*raw["last"])

    # --- construction ---------------------------------------------------------------------

    @classmethod
    def from_tensors(cls, config: CodecConfig, tensors: dict[str, np.ndarray]) -> "Codec":
        """Gather the decoder from converted tensors (names as in ``weights/README.md``)."""
        c = config
        if not c.use_causal_conv or c.trim_right_ratio != 1.0:
            raise BarkError("codec config: only the causal decoder with trim_right_ratio 1.0 is supported")
        if c.audio_channels != 1:
            raise BarkError(f"codec config: audio_channels must be 1, got {c.audio_channels}")
        codebooks = np.stack(
            [
                _get(tensors, f"quantizer.layers.{q}.codebook.embed", (c.codebook_size, c.codebook_dim))
                for q in range(N_FINE_CODEBOOKS)
            ]
        )  # (8, codebook_size, codebook_dim)
        if c.codebook_dim != c.hidden_size:
            raise BarkError("codec config: codebook_dim must equal hidden_size")

        names = codec_layer_names(c)  # the checkpoint's module names of each layer
        width = 2 ** len(c.upsampling_ratios) * c.num_filters
        raw = {"first": _conv(tensors, names.first, c.hidden_size, width, c.kernel_size)}
        raw["lstm"] = [
            LSTMLayer(
                _get(tensors, f"{names.lstm}.weight_ih_l{n}", (4 * width, width)),
                _get(tensors, f"{names.lstm}.weight_hh_l{n}", (4 * width, width)),
                _get(tensors, f"{names.lstm}.bias_ih_l{n}", (4 * width,)),
                _get(tensors, f"{names.lstm}.bias_hh_l{n}", (4 * width,)),
            )
            for n in range(c.num_lstm_layers)
        ]
        stages = []
        for ratio, (up_name, block_names) in zip(c.upsampling_ratios, names.stages):
            up = (
                _get(tensors, f"{up_name}.conv.weight", (width, width // 2, 2 * ratio)),
                _get(tensors, f"{up_name}.conv.bias", (width // 2,)),
                ratio,
            )
            width //= 2
            hidden = width // c.compress
            blocks = [
                {
                    "convs": (
                        _conv(tensors, f"{prefix}.block.1", width, hidden, c.residual_kernel_size,
                              c.dilation_growth_rate**j),
                        _conv(tensors, f"{prefix}.block.3", hidden, width, 1),
                    ),
                    "shortcut": _conv(tensors, f"{prefix}.shortcut", width, width, 1) if c.use_conv_shortcut else None,
                }
                for j, prefix in enumerate(block_names)
            ]
            stages.append((up, blocks))
        raw["stages"] = stages
        raw["last"] = _conv(tensors, names.last, width, c.audio_channels, c.last_kernel_size)
        return cls(c, codebooks, raw)

    @classmethod
    def load(cls, path: str) -> "Codec":
        """Load a converted ``codec.safetensors``."""
        from ..weights import load_stage

        config_dict, tensors = load_stage(path, "codec")
        return cls.from_tensors(config_from_dict(CodecConfig, config_dict), tensors)

    @property
    def hop_length(self) -> int:
        return int(np.prod(self.config.upsampling_ratios))

    # --- decoding -------------------------------------------------------------------------

    def _check_codes(self, codes) -> tuple[np.ndarray, bool]:
        """codes -> ((B, 8, T) int64 array, whether the input had no batch axis)."""
        codes = np.asarray(codes)
        if not np.issubdtype(codes.dtype, np.integer):
            raise BarkError(f"codec: codes must have an integer dtype, got {codes.dtype}")
        if codes.ndim not in (2, 3):
            raise BarkError(f"codec: codes must have shape (8, T) or (B, 8, T), got shape {codes.shape}")
        single = codes.ndim == 2
        if single:
            codes = codes[None]
        B, n_q, T = codes.shape
        if n_q != N_FINE_CODEBOOKS:
            raise BarkError(f"codec: codes must have {N_FINE_CODEBOOKS} codebooks, got {n_q} (shape {codes.shape})")
        if B == 0 or T == 0:
            raise BarkError(f"codec: empty codes (shape {codes.shape})")
        low, high = int(codes.min()), int(codes.max())
        if low < 0 or high >= self.config.codebook_size:
            raise BarkError(
                f"codec: code values must be in [0, {self.config.codebook_size}), got range [{low}, {high}]"
            )
        return codes.astype(np.int64, copy=False), single

    def embed(self, codes: np.ndarray) -> np.ndarray:
        """Quantizer decode: codes (B, 8, T) int -> (B, T, codebook_dim) float32.

        Summed codebook by codebook in order, in float32, as the reference does.
        """
        out = self.codebooks[0][codes[:, 0]]  # (B, T, D)
        for q in range(1, codes.shape[1]):
            out += self.codebooks[q][codes[:, q]]
        return out

    def decode(self, codes, chunk_frames: int = DEFAULT_CHUNK_FRAMES, workers: int | None = None) -> np.ndarray:
        """codes (B, 8, T) or (8, T) integer in [0, 1024) -> audio (B, T * 320) or (T * 320,) float32.

        ``chunk_frames`` (>= 1) trades speed for memory. ``workers`` threads share the work: one
        runs the LSTM while the others upsample the frames it has finished; None means as many
        as BLAS is set to use (``barknp.threads``). With more than one worker BLAS runs
        single-threaded for the call (and is restored after): the products here are small, and
        OpenBLAS's per-call thread hand-off costs more than it gains, and collapses when the
        cores are shared. ``workers=1`` leaves BLAS as it is. Neither option changes the result
        beyond float32 rounding.
        """
        codes, single = self._check_codes(codes)
        if chunk_frames < 1:
            raise BarkError(f"codec: chunk_frames must be >= 1, got {chunk_frames}")
        if workers is not None and workers < 1:
            raise BarkError(f"codec: workers must be >= 1, got {workers}")
        if workers == 1:
            return self._decode(codes, single, chunk_frames, 1)
        with single_threaded_blas() as blas_threads:
            return self._decode(codes, single, chunk_frames, workers or blas_threads)

    def _decode(self, codes: np.ndarray, single: bool, chunk_frames: int, workers: int) -> np.ndarray:
        B, _, T = codes.shape
        x = self.embed(codes)  # (B, T, 128)
        pad_mode = self.config.pad_mode
        h0 = np.stack([causal_conv1d(x[b], self.first, pad_mode) for b in range(B)], axis=1)  # (T, B, 512)
        audio = np.empty((B, T * self.hop_length), dtype=np.float32)  # (B, 320 T)
        if workers == 1 or T < 4 * chunk_frames:
            h = lstm(h0, self.lstm_layers) + h0  # (T, B, 512): the LSTM's skip connection
            h = np.ascontiguousarray(h.transpose(1, 0, 2))  # (B, T, 512)
            for b in range(B):
                self._upsample(h[b], audio[b], chunk_frames, 0, T)
        else:
            self._decode_parallel(h0, audio, chunk_frames, workers)
        return audio[0] if single else audio

    def _decode_parallel(self, h0: np.ndarray, audio: np.ndarray, chunk_frames: int, workers: int) -> None:
        """LSTM and upsampling on ``workers`` threads: h0 (T, B, 512) -> audio (B, 320 T), in place.

        The calling thread runs the LSTM block by block, publishing each block of frames, then
        upsamples the last stretch of every item; the other workers upsample the earlier stretches,
        each waiting for frames as it reaches them. Stretches start a few frames early to rebuild
        their layers' left context (``context_frames``), so each one's output is exact.
        The first stretch is sized so that both kinds of thread finish together (LSTM_SHARE).
        """
        from concurrent.futures import ThreadPoolExecutor

        T, B, _ = h0.shape
        h = np.empty((B, T, h0.shape[2]), dtype=np.float32)  # (B, T, 512), filled as the LSTM runs
        share = (1.0 + LSTM_SHARE) / workers  # of the upsampling, per waiting worker
        own = max(0.0, share - LSTM_SHARE)  # the calling thread's, after the LSTM
        cut = int(round(T * (1.0 - own)))
        bounds = np.linspace(0, cut, workers).round().astype(int)  # workers - 1 stretches before cut
        progress = _Progress()

        def run(jobs, wait):
            for b, start, stop in jobs:
                self._upsample(h[b], audio[b], chunk_frames, start, stop, wait)

        others = [
            [(b, int(start), int(stop)) for b in range(B)]
            for start, stop in zip(bounds[:-1], bounds[1:])
            if stop > start
        ]
        with ThreadPoolExecutor(max_workers=workers - 1) as pool:
            futures = [pool.submit(run, jobs, progress.wait) for jobs in others]
            try:
                for t0, t1, y in lstm_blocks(h0, self.lstm_layers, LSTM_BLOCK_FRAMES):
                    h[:, t0:t1] = (y + h0[t0:t1]).transpose(1, 0, 2)  # the LSTM's skip connection
                    progress.publish(t1)
                if cut < T:
                    run([(b, cut, T) for b in range(B)], None)
            except BaseException:
                progress.fail()
                raise
            for future in futures:
                future.result()

    @property
    def context_frames(self) -> int:
        """Frames of LSTM output before a frame that reach its audio: the upsampling stack's reach."""
        reach, upsampled = 0.0, 1
        for stage in self.stages:
            reach += (stage.up.blocks - 1) / upsampled
            upsampled *= stage.up.stride
            reach += sum(block.conv.receptive for block in stage.blocks) / upsampled
        reach += self.last.receptive / upsampled
        return int(np.ceil(reach))

    def _upsample(self, h: np.ndarray, out: np.ndarray, chunk_frames: int, start: int, stop: int,
                  wait=None) -> None:
        """h (T, 512) float32 -> out[320 start : 320 stop] float32, chunk by chunk through the causal stack.

        Starts ``context_frames + 1`` frames before ``start`` (or at 0), with the layers' state
        as at the start of a sequence, and drops the output of those warm-up frames. ``wait(f)``,
        if given, returns once frames [0, f) of h are written.
        """
        pad_mode = self.config.pad_mode
        hop = self.hop_length
        n_blocks = sum(len(stage.blocks) for stage in self.stages)
        up_histories = [None] * len(self.stages)  # each transposed conv's last input rows
        histories = [None] * (n_blocks + 1)  # each residual block's k>1 conv's, and the last conv's

        def stage_step(s: int, x: np.ndarray, n: int) -> tuple[np.ndarray, int]:
            """Stage s on one piece: x (rows, C) -> (rows * stride, C / 2); n: its first block's index."""
            stage = self.stages[s]
            x, up_histories[s] = conv_transpose1d_causal_step(x, stage.up, up_histories[s], elu_input=True)
            for block in stage.blocks:
                x, histories[n] = _res_block_step(x, block, histories[n], pad_mode)
                n += 1
            return x, n

        first = max(0, start - self.context_frames - 1)
        first_frames = max(chunk_frames, FIRST_STAGE_FRAMES)
        cuts = [first] + list(range(start, stop, first_frames)) + [stop]  # warm-up piece, then pieces
        for f0, f1 in zip(cuts[:-1], cuts[1:]):
            if f1 <= f0:
                continue
            if wait is not None:
                wait(f1)
            x, n_rest = stage_step(0, h[f0:f1], 0)  # (F * stride, C)
            rows = x.shape[0] // (f1 - f0)  # rows per frame
            for g0 in range(f0, f1, chunk_frames):  # the later stages, chunk_frames at a time
                g1 = min(f1, g0 + chunk_frames)
                y, n = x[(g0 - f0) * rows : (g1 - f0) * rows], n_rest
                for s in range(1, len(self.stages)):
                    y, n = stage_step(s, y, n)
                y, histories[n] = conv1d_causal_step(y, self.last, histories[n], pad_mode, elu_input=True)
                if f0 >= start:
                    out[g0 * hop : g1 * hop] = y[:, 0]  # y: (frames * 320, 1)

    def decode_reference(self, codes) -> np.ndarray:
        """``decode`` computed with the plain-NumPy reference layers on whole sequences: codes (B, 8, T)
        or (8, T) integer -> audio (B, T * 320) or (T * 320,) float32."""
        codes, single = self._check_codes(codes)
        B, _, T = codes.shape
        raw = self.raw
        pad_mode = self.config.pad_mode
        x = self.embed(codes)  # (B, T, 128)
        h = np.stack([causal_conv1d_reference(x[b], *raw["first"][:2], 1, 1, pad_mode) for b in range(B)], axis=1)
        h = lstm(h, raw["lstm"], reference=True) + h  # (T, B, 512)
        audio = []
        for b in range(B):
            y = h[:, b]  # (T, 512)
            for (w, bias, stride), blocks in raw["stages"]:
                y = conv_transpose1d_reference(elu_reference(y), w, bias, stride)
                y = causal_trim(y, w.shape[2], stride, self.config.trim_right_ratio)
                for block in blocks:
                    z = y
                    for weight, cb, dilation in block["convs"]:
                        z = causal_conv1d_reference(elu_reference(z), weight, cb, 1, dilation, pad_mode)
                    if block["shortcut"] is not None:
                        y = causal_conv1d_reference(y, *block["shortcut"][:2], 1, 1, pad_mode)
                    y = y + z
            y = causal_conv1d_reference(elu_reference(y), *raw["last"][:2], 1, 1, pad_mode)
            audio.append(y[:, 0])
        audio = np.stack(audio)  # (B, 320 T)
        return audio[0] if single else audio


class _Progress:
    """How many frames of LSTM output exist, for threads that wait on them."""

    def __init__(self):
        self._cond = threading.Condition()
        self._ready = 0
        self._failed = False

    def publish(self, frames: int) -> None:
        with self._cond:
            self._ready = frames
            self._cond.notify_all()

    def fail(self) -> None:
        with self._cond:
            self._failed = True
            self._cond.notify_all()

    def wait(self, frames: int) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._ready >= frames or self._failed)
            if self._failed:
                raise BarkError("codec: decoding stopped: the LSTM thread failed")


def res_tail_columns_reference(h: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The tail product's rows [ELU(h), x, 1]: h (L, hidden), x (L, C) -> (L, hidden + C + 1) float32."""
    ones = np.ones((x.shape[0], 1), dtype=np.float32)
    return np.concatenate([elu_reference(h), x, ones], axis=1).astype(np.float32)


@numba.njit(cache=True, fastmath=True, nogil=True)
def _res_tail_columns(h, x, cols):  # pragma: no cover - compiled
    """cols (L, hidden + C + 1) <- res_tail_columns_reference(h, x), in one pass."""
    hidden, width = h.shape[1], x.shape[1]
    for t in range(h.shape[0]):
        for j in range(hidden):
            cols[t, j] = elu32(h[t, j])
        for j in range(width):
            cols[t, hidden + j] = x[t, j]
        cols[t, hidden + width] = 1.0


def res_tail_columns(h: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Fast ``res_tail_columns_reference`` (h, x C-contiguous float32): one compiled pass instead of
    an ELU into a strided column block (which cannot vectorise) and two more strided copies."""
    cols = np.empty((x.shape[0], h.shape[1] + x.shape[1] + 1), dtype=np.float32)  # (L, hidden + C + 1)
    _res_tail_columns(h, x, cols)
    return cols


def _res_block_step(x: np.ndarray, block: ResBlock, history, pad_mode: str):
    """One chunk of a residual block: x (L, C) -> (L, C), and the new context of its first conv."""
    h, history = conv1d_causal_step(x, block.conv, history, pad_mode, elu_input=True)  # (L, hidden)
    return res_tail_columns(h, x) @ block.tail, history
