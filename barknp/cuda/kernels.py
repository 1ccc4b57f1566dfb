"""numba.cuda kernels of Bark's four networks, and the host wrappers that launch them.

Every wrapper takes and returns device arrays (float32, C-contiguous unless noted) and never copies
to the host. Layouts follow the CPU path: activations row-major ``(rows, channels)``, linear weights
``(out, in)`` as in the checkpoint, codec activations time-major ``(L, C)``.

Block and tile sizes are compile-time constants of each kernel, so the kernels are built by
``build_kernels(config)`` for one :class:`KernelConfig`; the default suits a data-centre GPU, and the
tests build a tiny one so that numba's CUDA simulator (which runs every GPU thread as a Python
thread) stays fast while still covering ragged edges and multi-block reductions.

Reductions use shared memory and ``syncthreads`` only (no warp shuffles): the simulator has no
shuffles, and a kernel the simulator cannot run is a kernel the tests cannot check.

The plain-NumPy specification of each kernel is the CPU path's own function, named in each
wrapper's docstring (``barknp.nn.ops``, ``barknp.nn.attention``, ``barknp.nn.conv``,
``barknp.nn.lstm``); the tests compare the two.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from types import SimpleNamespace

import numpy as np

from ..constants import LAYER_NORM_EPS
from ..errors import BarkError


@dataclasses.dataclass(frozen=True)
class KernelConfig:
    """Compile-time launch shapes of the kernels.

    tile_m, tile_n, tile_k: the shared-memory tile of a matrix product; each thread computes a
    ``micro`` x ``micro`` block of outputs, so a tile runs on (tile_m / micro) * (tile_n / micro)
    threads. threads: threads of the row kernels (layer norm, softmax, attention), a power of two.
    gemv_lanes x gemv_rows: threads of the small-batch product (each row of ``gemv_lanes`` threads
    reduces one output); gemv_max_m: the most input rows it takes (decode steps have 1).
    elementwise: threads per block of the elementwise and convolution kernels.
    row_blocks: the most blocks a row kernel launches; each block loops over rows (one block per
    row on a GPU; few in the simulator, where every block costs its threads' start-up).
    """

    tile_m: int = 64
    tile_n: int = 64
    tile_k: int = 16
    micro: int = 4
    threads: int = 128
    gemv_lanes: int = 32
    gemv_rows: int = 8
    gemv_max_m: int = 8
    elementwise: int = 256
    row_blocks: int = 65535

    def validate(self) -> "KernelConfig":
        """Raise BarkError for a configuration no launch could take (before any kernel runs)."""
        for name in ("tile_m", "tile_n", "tile_k", "micro", "threads", "gemv_lanes", "gemv_rows", "gemv_max_m",
                     "elementwise", "row_blocks"):
            if getattr(self, name) < 1:
                raise BarkError(f"KernelConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("threads", "gemv_lanes"):
            v = getattr(self, name)
            if v & (v - 1):
                raise BarkError(f"KernelConfig.{name} must be a power of two, got {v}")
        if self.tile_m % self.micro or self.tile_n % self.micro:
            raise BarkError("KernelConfig: tile_m and tile_n must be multiples of micro")
        per_block = {"tiled matmul": (self.tile_m // self.micro) * (self.tile_n // self.micro),
                     "gemv": self.gemv_lanes * self.gemv_rows, "rows": self.threads, "elementwise": self.elementwise}
        for what, n in per_block.items():
            if n > 1024:  # CUDA's limit of threads per block
                raise BarkError(f"KernelConfig: the {what} kernel would launch {n} threads per block (at most 1024)")
        return self


# The tests' configuration: few threads per block, odd tiles, so small shapes still span several
# blocks and every ragged edge.
TINY = KernelConfig(tile_m=8, tile_n=8, tile_k=4, micro=2, threads=8, gemv_lanes=4, gemv_rows=2,
                    gemv_max_m=3, elementwise=16, row_blocks=3)

# Whole models under the simulator: one thread per block wherever a kernel allows it, since the
# simulator's cost is a Python thread per GPU thread and a barrier wait per reduction step.
SERIAL = KernelConfig(tile_m=16, tile_n=16, tile_k=16, micro=16, threads=1, gemv_lanes=1, gemv_rows=16,
                      gemv_max_m=3, elementwise=512, row_blocks=1)


# ``numba.cuda``, bound on first use by ``cuda_module``: importing it fixes whether numba runs the
# real driver or its simulator, so it is imported only when a CUDA path is used. The kernels name
# it as a module global because the simulator swaps in its fake module through kernel globals.
cuda = None


def cuda_module():
    """``numba.cuda``, imported on first call (the CPU path never needs it)."""
    global cuda
    if cuda is None:
        from numba import cuda as module

        cuda = module
    return cuda


@functools.lru_cache(maxsize=None)
def build_kernels(config: KernelConfig = KernelConfig()) -> SimpleNamespace:
    """Compile-on-first-launch kernels for ``config``; one set per configuration."""
    config.validate()
    cuda_module()
    from numba import float32, float64

    BM, BN, BK, MU = config.tile_m, config.tile_n, config.tile_k, config.micro
    TX, TY = BN // MU, BM // MU  # threads of a tile along n and along m
    NT = TX * TY
    THREADS = config.threads
    LANES, ROWS, MAXM = config.gemv_lanes, config.gemv_rows, config.gemv_max_m
    SQRT_HALF = 1.0 / math.sqrt(2.0)

    # --- device functions -------------------------------------------------------------------

    @cuda.jit(device=True)
    def gelu_scalar(v):
        # in float64, as the CPU kernel computes it
        x = float64(v)
        return 0.5 * x * (1.0 + math.erf(x * SQRT_HALF))

    @cuda.jit(device=True)
    def elu_scalar(v):
        return v if v > 0 else math.expm1(v)

    @cuda.jit(device=True)
    def block_sum(sh, tid, v):
        """Sum of ``v`` over the block's THREADS threads; every thread gets it."""
        sh[tid] = v
        cuda.syncthreads()
        n = THREADS // 2
        while n > 0:
            if tid < n:
                sh[tid] += sh[tid + n]
            cuda.syncthreads()
            n //= 2
        total = sh[0]
        cuda.syncthreads()  # sh is reused by the next reduction
        return total

    @cuda.jit(device=True)
    def block_max(sh, tid, v):
        sh[tid] = v
        cuda.syncthreads()
        n = THREADS // 2
        while n > 0:
            if tid < n:
                sh[tid] = max(sh[tid], sh[tid + n])
            cuda.syncthreads()
            n //= 2
        total = sh[0]
        cuda.syncthreads()
        return total

    @cuda.jit(device=True)
    def epilogue(v, bias, has_bias, act, res, has_res, m, n):
        # the CPU order: (x @ W.T) + b, then GELU, then the residual added to it
        if has_bias:
            v += bias[n]
        if act == 1:
            v = float32(gelu_scalar(v))
        if has_res:
            v = res[m, n] + v
        return v

    # --- matrix products --------------------------------------------------------------------

    @cuda.jit
    def matmul_tiled(x, w, bias, has_bias, act, res, has_res, out):
        """out (M, N) = epilogue(x (M, K) @ w (N, K).T): one tile_m x tile_n tile per block."""
        a_s = cuda.shared.array((BK, BM), float32)
        b_s = cuda.shared.array((BK, BN), float32)
        acc = cuda.local.array((MU, MU), float32)
        a_r = cuda.local.array(MU, float32)
        b_r = cuda.local.array(MU, float32)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        tid = ty * TX + tx
        m0 = cuda.blockIdx.y * BM
        n0 = cuda.blockIdx.x * BN
        M, K = x.shape
        N = w.shape[0]
        for i in range(MU):
            for j in range(MU):
                acc[i, j] = 0.0
        for k0 in range(0, K, BK):
            # consecutive threads read consecutive k of one row: coalesced in the (rows, K) layouts
            for e in range(tid, BM * BK, NT):
                r = e // BK
                kk = e - r * BK
                a_s[kk, r] = x[m0 + r, k0 + kk] if (m0 + r < M and k0 + kk < K) else 0.0
            for e in range(tid, BN * BK, NT):
                r = e // BK
                kk = e - r * BK
                b_s[kk, r] = w[n0 + r, k0 + kk] if (n0 + r < N and k0 + kk < K) else 0.0
            cuda.syncthreads()
            for kk in range(BK):
                for i in range(MU):
                    a_r[i] = a_s[kk, ty + i * TY]
                for j in range(MU):
                    b_r[j] = b_s[kk, tx + j * TX]
                for i in range(MU):
                    for j in range(MU):
                        acc[i, j] += a_r[i] * b_r[j]
            cuda.syncthreads()
        for i in range(MU):
            m = m0 + ty + i * TY
            if m < M:
                for j in range(MU):
                    n = n0 + tx + j * TX
                    if n < N:
                        out[m, n] = epilogue(acc[i, j], bias, has_bias, act, res, has_res, m, n)

    @cuda.jit
    def gemv(x, w, bias, has_bias, act, res, has_res, out):
        """The same product for M <= gemv_max_m rows (a decode step): each row of LANES threads
        streams one weight row once and reduces its M dot products in shared memory."""
        red = cuda.shared.array((MAXM, ROWS, LANES), float32)
        acc = cuda.local.array(MAXM, float32)
        lane = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        n = cuda.blockIdx.x * ROWS + ty
        M, K = x.shape
        N = w.shape[0]
        for m in range(MAXM):
            acc[m] = 0.0
        if n < N:
            for k in range(lane, K, LANES):
                wv = w[n, k]
                for m in range(M):
                    acc[m] += x[m, k] * wv
        for m in range(MAXM):
            red[m, ty, lane] = acc[m]
        cuda.syncthreads()
        s = LANES // 2
        while s > 0:
            if lane < s:
                for m in range(M):
                    red[m, ty, lane] += red[m, ty, lane + s]
            cuda.syncthreads()
            s //= 2
        if lane == 0 and n < N:
            for m in range(M):
                out[m, n] = epilogue(red[m, ty, 0], bias, has_bias, act, res, has_res, m, n)

    # --- row kernels ------------------------------------------------------------------------

    @cuda.jit
    def layer_norm_rows(x, weight, bias, has_bias, eps, out):
        """One block per row of x (R, C): biased variance of the centred row, as the CPU."""
        sh = cuda.shared.array(THREADS, float32)
        tid = cuda.threadIdx.x
        R, C = x.shape
        for r in range(cuda.blockIdx.x, R, cuda.gridDim.x):  # uniform over the block: syncs are safe
            s = float32(0.0)
            for c in range(tid, C, THREADS):
                s += x[r, c]
            mean = block_sum(sh, tid, s) / C
            s = float32(0.0)
            for c in range(tid, C, THREADS):
                d = x[r, c] - mean
                s += d * d
            var = block_sum(sh, tid, s) / C
            inv = float32(1.0 / math.sqrt(float64(var) + eps))
            for c in range(tid, C, THREADS):
                v = (x[r, c] - mean) * inv * weight[c]
                if has_bias:
                    v += bias[c]
                out[r, c] = v

    @cuda.jit
    def softmax_rows(x, out):
        sh = cuda.shared.array(THREADS, float32)
        tid = cuda.threadIdx.x
        R, S = x.shape
        for r in range(cuda.blockIdx.x, R, cuda.gridDim.x):
            mx = -math.inf
            for s in range(tid, S, THREADS):
                mx = max(mx, x[r, s])
            mx = block_max(sh, tid, mx)
            t = float32(0.0)
            for s in range(tid, S, THREADS):
                e = math.exp(x[r, s] - mx)
                out[r, s] = e
                t += e
            total = block_sum(sh, tid, t)
            for s in range(tid, S, THREADS):
                out[r, s] = out[r, s] / total

    @cuda.jit
    def kv_write(qkv, keys, values, T, past, H, D):
        """Scatter the k and v parts of qkv (B*T, 3C) into keys/values (B, H, S, D) at ``past``."""
        i = cuda.grid(1)
        C = H * D
        B = qkv.shape[0] // T
        if i < B * T * C:
            row = i // C
            c = i - row * C
            b = row // T
            t = row - b * T
            h = c // D
            d = c - h * D
            keys[b, h, past + t, d] = qkv[row, C + c]
            values[b, h, past + t, d] = qkv[row, 2 * C + c]

    @cuda.jit
    def attention(qkv, keys, values, T, past, causal, key_start, has_start, H, D, scale, out):
        """One block per (b, h, t) query (blocks loop when fewer). q from qkv (B*T, 3C), keys/values
        (B, H, S, D) valid up to past + T; writes out (B*T, C) with the heads already merged.
        key_start (B,) int (with has_start): keys before key_start[b] are row b's left padding and
        invisible to it. A query that sees no key at all (one inside the padding) writes zeros, as
        the reference's all-zero probabilities give. Shared memory (dynamic): q (D floats), then
        the query's probabilities over its keys."""
        sh = cuda.shared.array(THREADS, float32)
        dyn = cuda.shared.array(0, float32)
        tid = cuda.threadIdx.x
        n_items = qkv.shape[0] * H
        for blk in range(cuda.blockIdx.x, n_items, cuda.gridDim.x):
            t = blk % T
            bh = blk // T
            h = bh % H
            b = bh // H
            row = b * T + t
            n_keys = past + t + 1 if causal else past + T  # one past the last visible key
            first = key_start[b] if has_start else 0  # the same for the whole block: syncs stay uniform
            for d in range(tid, D, THREADS):
                dyn[d] = qkv[row, h * D + d]
            cuda.syncthreads()
            mx = -math.inf
            for s in range(first + tid, n_keys, THREADS):
                a = float32(0.0)
                for d in range(D):
                    a += dyn[d] * keys[b, h, s, d]
                a *= scale
                dyn[D + s] = a
                mx = max(mx, a)
            mx = block_max(sh, tid, mx)
            z = float32(0.0)
            for s in range(first + tid, n_keys, THREADS):
                e = math.exp(dyn[D + s] - mx)
                dyn[D + s] = e
                z += e
            z = block_sum(sh, tid, z)  # block_sum synchronises, so every probability is written
            # no visible key: these loops are empty, so there is no 0/0 and the output is 0
            for s in range(first + tid, n_keys, THREADS):
                dyn[D + s] = dyn[D + s] / z
            cuda.syncthreads()
            for d in range(tid, D, THREADS):
                a = float32(0.0)
                for s in range(first, n_keys):
                    a += dyn[D + s] * values[b, h, s, d]
                out[row, h * D + d] = a
            cuda.syncthreads()  # the next item overwrites q and the probabilities

    # --- elementwise and gathers ------------------------------------------------------------

    @cuda.jit
    def gelu_inplace(x):  # x (N,)
        i = cuda.grid(1)
        if i < x.shape[0]:
            x[i] = gelu_scalar(x[i])

    @cuda.jit
    def elu_kernel(x, out):  # x, out (N,)
        i = cuda.grid(1)
        if i < x.shape[0]:
            out[i] = elu_scalar(x[i])

    @cuda.jit
    def add_kernel(a, b, out):  # (N,)
        i = cuda.grid(1)
        if i < a.shape[0]:
            out[i] = a[i] + b[i]

    @cuda.jit
    def embedding_sum(table, idx, pos, has_pos, T, pos_start, pad, has_pad, out):
        """out[n] = sum_j table[idx[n, j]] (idx < 0 skipped, summed in j order), + the position row
        pos[p]: p = pos_start + n % T, or with has_pad max(p - pad[n // T], 0) (each sequence's
        positions restart at 0 after its left padding; the padding itself takes row 0)."""
        i = cuda.grid(1)
        N, C = out.shape
        if i < N * C:
            n = i // C
            c = i - n * C
            v = table[idx[n, 0], c]
            for j in range(1, idx.shape[1]):
                r = idx[n, j]
                if r >= 0:
                    v += table[r, c]
            if has_pos:
                p = pos_start + n % T
                if has_pad:
                    p = max(p - pad[n // T], 0)
                v += pos[p, c]
            out[n, c] = v

    # --- codec ------------------------------------------------------------------------------

    @cuda.jit
    def conv1d(x, matrix, K, dilation, left, reflect, elu_in, res, has_res, out):
        """Causal stride-1 conv of x (L, C_in) -> out (L, C_out), padding done in the index.

        matrix: the CPU's packed conv (K * C_in + 1, C_out), bias in its last row. Input sample
        p = t + k * dilation - left; before the start it reflects (EnCodec's reflect pad) or is 0;
        past the end it is 0 (EnCodec's zero extension of inputs shorter than the padding).
        """
        i = cuda.grid(1)
        L, C_in = x.shape
        C_out = out.shape[1]
        if i < out.shape[0] * C_out:
            t = i // C_out
            o = i - t * C_out
            acc = float32(0.0)
            for k in range(K):
                p = t + k * dilation - left
                if p < 0:
                    if not reflect:
                        continue
                    p = -p
                if p >= L:
                    continue
                base = k * C_in
                for c in range(C_in):
                    v = x[p, c]
                    if elu_in:
                        v = elu_scalar(v)
                    acc += v * matrix[base + c, o]
            acc += matrix[K * C_in, o]
            if has_res:
                acc = res[t, o] + acc
            out[t, o] = acc

    @cuda.jit
    def conv_transpose1d(x, taps, bias, stride, elu_in, out):
        """Causal transposed conv, trimmed as EnCodec (trim_right_ratio 1): x (L, C_in) ->
        out (L * stride, C_out). taps (K, C_in, C_out): the checkpoint weight (C_in, C_out, K)
        moved so that threads along C_out read consecutive floats."""
        i = cuda.grid(1)
        L, C_in = x.shape
        K = taps.shape[0]
        C_out = out.shape[1]
        if i < out.shape[0] * C_out:
            p = i // C_out
            o = i - p * C_out
            acc = float32(0.0)
            k = p % stride
            while k < K and k <= p:
                t = (p - k) // stride
                if t < L:
                    for c in range(C_in):
                        v = x[t, c]
                        if elu_in:
                            v = elu_scalar(v)
                        acc += v * taps[k, c, o]
                k += stride
            out[p, o] = acc + bias[o]

    @cuda.jit
    def lstm_step(pre, t, w_hh, h_prev, c, out):
        """One time step of one LSTM sequence, torch gate order (i, f, g, o).

        pre (T, 4H): x_t @ W_ih.T + b_ih + b_hh for every step; h_prev (H,): the previous hidden
        state; c (H,): the cell, updated in place; out (T, H): row t receives the new hidden state.
        Each row of LANES threads computes the four recurrent dot products of one hidden unit.
        """
        red = cuda.shared.array((4, ROWS, LANES), float32)
        lane = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        j = cuda.blockIdx.x * ROWS + ty
        H = c.shape[0]
        a0 = float32(0.0)
        a1 = float32(0.0)
        a2 = float32(0.0)
        a3 = float32(0.0)
        if j < H:
            for k in range(lane, H, LANES):
                hv = h_prev[k]
                a0 += w_hh[j, k] * hv
                a1 += w_hh[H + j, k] * hv
                a2 += w_hh[2 * H + j, k] * hv
                a3 += w_hh[3 * H + j, k] * hv
        red[0, ty, lane] = a0
        red[1, ty, lane] = a1
        red[2, ty, lane] = a2
        red[3, ty, lane] = a3
        cuda.syncthreads()
        s = LANES // 2
        while s > 0:
            if lane < s:
                for g in range(4):
                    red[g, ty, lane] += red[g, ty, lane + s]
            cuda.syncthreads()
            s //= 2
        if lane == 0 and j < H:
            gi = float64(red[0, ty, 0] + pre[t, j])
            gf = float64(red[1, ty, 0] + pre[t, H + j])
            gg = float64(red[2, ty, 0] + pre[t, 2 * H + j])
            go = float64(red[3, ty, 0] + pre[t, 3 * H + j])
            cj = (1.0 / (1.0 + math.exp(-gf))) * c[j] + (1.0 / (1.0 + math.exp(-gi))) * math.tanh(gg)
            c[j] = cj
            out[t, j] = (1.0 / (1.0 + math.exp(-go))) * math.tanh(cj)

    return SimpleNamespace(**{k: v for k, v in locals().items() if hasattr(v, "__call__") and not k.startswith("_")},
                           config=config)


# --- host wrappers ------------------------------------------------------------------------------


class Device:
    """The kernels of one configuration, with launch helpers. Holds no model state.

    ``dummy``, ``dummy1`` and ``dummy_int`` are 1-element device arrays (2-D float, 1-D float,
    1-D int32) passed where a kernel's optional input is absent (numba kernels need an array in
    every array slot).
    """

    def __init__(self, config: KernelConfig = KernelConfig()):
        self.cuda = cuda_module()
        self.config = config
        self.k = build_kernels(config)
        self.dummy = self.cuda.to_device(np.zeros((1, 1), dtype=np.float32))
        self.dummy1 = self.cuda.to_device(np.zeros(1, dtype=np.float32))
        self.dummy_int = self.cuda.to_device(np.zeros(1, dtype=np.int32))

    # small helpers
    def empty(self, shape) -> object:
        return self.cuda.device_array(shape, dtype=np.float32)

    def upload(self, array: np.ndarray, dtype=np.float32):
        return self.cuda.to_device(np.ascontiguousarray(array, dtype=dtype))

    def _rows(self, n: int) -> int:
        return max(1, min(n, self.config.row_blocks))

    def _grid1(self, n: int) -> tuple[int, int]:
        e = self.config.elementwise
        return (n + e - 1) // e, e

    # --- products -----------------------------------------------------------------------------

    def linear(self, x, weight, bias=None, gelu: bool = False, residual=None, out=None):
        """x (M, K) @ weight (N, K).T + bias (N,), then exact GELU, then + residual (M, N).

        Reference: ``barknp.nn.ops.linear`` (and ``gelu``). ``out`` may be ``residual`` itself
        (each element is read before it is written, by the same thread).
        """
        M, K = x.shape
        N = weight.shape[0]
        if weight.shape[1] != K:
            raise ValueError(f"linear: x has {K} columns, weight is {weight.shape}")
        if out is None:
            out = self.empty((M, N))
        c = self.config
        args = (x, weight, self.dummy1 if bias is None else bias, bias is not None, 1 if gelu else 0,
                self.dummy if residual is None else residual, residual is not None, out)
        if M <= c.gemv_max_m:
            self.k.gemv[(N + c.gemv_rows - 1) // c.gemv_rows, (c.gemv_lanes, c.gemv_rows)](*args)
        else:
            grid = ((N + c.tile_n - 1) // c.tile_n, (M + c.tile_m - 1) // c.tile_m)
            self.k.matmul_tiled[grid, (c.tile_n // c.micro, c.tile_m // c.micro)](*args)
        return out

    # --- rows ---------------------------------------------------------------------------------

    def layer_norm(self, x, weight, bias=None, eps: float = LAYER_NORM_EPS, out=None):
        """x (R, C) -> (R, C); x may be a row-strided view. Reference: ``barknp.nn.ops.layer_norm``."""
        R, C = x.shape
        if out is None:
            out = self.empty((R, C))
        self.k.layer_norm_rows[self._rows(R), self.config.threads](
            x, weight, self.dummy1 if bias is None else bias, bias is not None, float(eps), out)
        return out

    def softmax(self, x, out=None):
        """Row-wise softmax of x (R, S). Reference: ``barknp.generation.sampling.softmax``."""
        if out is None:
            out = self.empty(x.shape)
        self.k.softmax_rows[self._rows(x.shape[0]), self.config.threads](x, out)
        return out

    def kv_write(self, qkv, keys, values, T: int, past: int, n_head: int):
        """Write qkv's keys and values (B*T, 3C) into keys/values (B, H, S, D) at position ``past``."""
        D = keys.shape[3]
        n = qkv.shape[0] * n_head * D
        self.k.kv_write[self._grid1(n)](qkv, keys, values, T, past, n_head, D)

    def attention(self, qkv, keys, values, T: int, past: int, causal: bool, n_head: int, key_start=None,
                  out=None):
        """Scaled dot-product attention of qkv's queries (B*T, 3C) against keys/values (B, H, S, D)
        valid up to past + T, query t at absolute position past + t; returns (B*T, C), heads merged.

        key_start: None, or (B,) int32 device array: keys before key_start[b] are row b's left
        padding, invisible to its queries; a query that sees no key gets 0.
        Reference: ``barknp.nn.attention.attend`` (``causal_offset=past`` or None, ``key_start``).
        A decode step is T = 1: one query per head against the cache's first past + 1 positions.
        """
        BT = qkv.shape[0]
        D = keys.shape[3]
        C = n_head * D
        if out is None:
            out = self.empty((BT, C))
        shared = 4 * (D + past + T)
        scale = float(np.float32(1.0 / np.sqrt(D)))
        self.k.attention[self._rows(BT * n_head), self.config.threads, 0, shared](
            qkv, keys, values, T, past, causal, self.dummy_int if key_start is None else key_start,
            key_start is not None, n_head, D, scale, out)
        return out

    # --- elementwise --------------------------------------------------------------------------

    def gelu_(self, x):
        """Exact GELU in place on any contiguous array. Reference: ``barknp.nn.ops.gelu_reference``."""
        flat = x.reshape(x.size)
        self.k.gelu_inplace[self._grid1(flat.shape[0])](flat)
        return x

    def elu(self, x, out=None):
        """ELU (alpha 1). Reference: ``barknp.nn.conv.elu_reference``."""
        if out is None:
            out = self.empty(x.shape)
        self.k.elu_kernel[self._grid1(x.size)](x.reshape(x.size), out.reshape(out.size))
        return out

    def add(self, a, b, out=None):
        if out is None:
            out = self.empty(a.shape)
        self.k.add_kernel[self._grid1(a.size)](a.reshape(a.size), b.reshape(b.size), out.reshape(out.size))
        return out

    def embedding_sum(self, table, idx, pos=None, T: int = 1, pos_start: int = 0, pad=None, out=None):
        """out (N, C) = sum_j table[idx[:, j]] (negative indices skipped) + pos[pos_start + n % T].

        table (R, C) float32, idx (N, J) int32 device array; the N = B * T rows are B sequences of
        T. pad: None, or (B,) int32 device array of left-padding counts: sequence b's position
        rows become max(pos_start + t - pad[b], 0), as ``CausalGPT.forward`` takes them with
        ``pad``. Reference: NumPy fancy indexing, as ``CausalGPT.embed`` / ``FineGPT.forward`` /
        ``Codec.embed`` sum them.
        """
        N = idx.shape[0]
        C = table.shape[1]
        if out is None:
            out = self.empty((N, C))
        self.k.embedding_sum[self._grid1(N * C)](
            table, idx, self.dummy if pos is None else pos, pos is not None, T, pos_start,
            self.dummy_int if pad is None else pad, pad is not None, out)
        return out

    # --- codec --------------------------------------------------------------------------------

    def conv1d(self, x, matrix, kernel_size: int, dilation: int = 1, reflect: bool = True,
               elu_input: bool = False, residual=None, out=None):
        """EnCodec causal stride-1 conv: x (L, C_in) -> (L, C_out). matrix: ``PackedConv1d.matrix``
        on the device. Reference: ``barknp.nn.conv.causal_conv1d_reference`` (of ELU(x) with
        ``elu_input``), plus ``residual``."""
        L = x.shape[0]
        C_out = matrix.shape[1]
        if out is None:
            out = self.empty((L, C_out))
        left = (kernel_size - 1) * dilation
        self.k.conv1d[self._grid1(L * C_out)](
            x, matrix, kernel_size, dilation, left, reflect, elu_input,
            self.dummy if residual is None else residual, residual is not None, out)
        return out

    def conv_transpose1d(self, x, taps, bias, stride: int, elu_input: bool = False, out=None):
        """EnCodec causal transposed conv: x (L, C_in) -> (L * stride, C_out); taps (K, C_in, C_out).
        Reference: ``causal_trim(conv_transpose1d_reference(x, w, b, stride), K, stride)``."""
        L = x.shape[0]
        C_out = taps.shape[2]
        if out is None:
            out = self.empty((L * stride, C_out))
        self.k.conv_transpose1d[self._grid1(L * stride * C_out)](x, taps, bias, stride, elu_input, out)
        return out

    def lstm_layer(self, x, w_ih, w_hh, bias):
        """One LSTM layer over one sequence: x (T, I) -> (T, H), zero initial state.

        bias: b_ih + b_hh (4H,). The input projection of all steps is one product; then one
        ``lstm_step`` launch per step. Reference: ``barknp.nn.lstm.lstm_layer_reference``.
        """
        T = x.shape[0]
        H = w_hh.shape[1]
        pre = self.linear(x, w_ih, bias)  # (T, 4H)
        out = self.empty((T, H))
        c = self.cuda.to_device(np.zeros(H, dtype=np.float32))
        h0 = self.cuda.to_device(np.zeros(H, dtype=np.float32))
        cfg = self.config
        grid = (H + cfg.gemv_rows - 1) // cfg.gemv_rows
        for t in range(T):  # sequential by nature
            self.k.lstm_step[grid, (cfg.gemv_lanes, cfg.gemv_rows)](pre, t, w_hh, h0 if t == 0 else out[t - 1], c, out)
        return out
