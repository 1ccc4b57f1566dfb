"""Bark on NVIDIA GPUs through numba.cuda.

    import barknp
    from barknp.cuda import to_cuda
    model = to_cuda(barknp.load("suno/bark-small"))     # BarkError on a machine without a GPU
    audio = model.generate("Hello!", voice="v2/en_speaker_6", rng=0)

Importing this package does not import ``numba.cuda``; the first CUDA call does.
"""

from __future__ import annotations

import functools

from ..errors import BarkError
from .kernels import KernelConfig


def cuda_available() -> bool:
    """Whether numba.cuda sees a usable GPU (or runs its simulator)."""
    try:
        from .kernels import cuda_module

        return bool(cuda_module().is_available())
    except Exception:  # a broken driver install is "not available", reported by require_cuda
        return False


def _one_line(e: Exception) -> str:
    """An exception's first sentence on one line (driver and compiler errors span several)."""
    detail = " ".join(str(e).split()) or type(e).__name__
    return detail.split(". ")[0][:160]


@functools.lru_cache(maxsize=1)
def _kernel_problem() -> str | None:
    """Compile and launch a one-thread kernel: a GPU can be visible while numba still cannot build
    kernels for it (libNVVM or libdevice missing, a driver older than the toolkit). Once per process."""
    import numpy as np

    from .kernels import cuda_module

    cuda = cuda_module()
    try:
        @cuda.jit
        def probe(x):
            x[0] = 1.0

        x = cuda.to_device(np.zeros(1, dtype=np.float32))
        probe[1, 1](x)
        if x.copy_to_host()[0] != 1.0:
            return "a test kernel ran but wrote nothing"
    except Exception as e:  # noqa: BLE001 - any failure here means no usable CUDA path
        return f"numba cannot compile or launch a kernel: {_one_line(e)}"
    return None


def cuda_problem() -> str | None:
    """Why the CUDA path cannot run here, in one line; None when it can (a GPU, or the simulator,
    that compiles and runs a kernel)."""
    if not cuda_available():
        reason = "numba.cuda found no usable GPU"
        try:
            from .kernels import cuda_module

            cuda_module().current_context()
        except Exception as e:  # the driver's own account of why
            reason = _one_line(e)
        return f"no CUDA GPU is usable ({reason})"
    return _kernel_problem()


def require_cuda() -> None:
    """Raise BarkError, one line, when the CUDA path cannot run (see ``cuda_problem``)."""
    problem = cuda_problem()
    if problem is not None:
        raise BarkError(f"device 'cuda' requested but {problem}; use device='cpu'")


def to_cuda(model, config: KernelConfig | None = None):
    """A ``Bark`` whose semantic, coarse, fine and codec networks run on the GPU.

    The weights are copied to the device once; the tokenizer and voices are shared with ``model``.
    ``config`` sets the kernels' block and tile sizes (default: ``KernelConfig()``).
    """
    require_cuda()
    from ..model import Bark
    from .kernels import Device
    from .models import CUDACausalGPT, CUDACodec, CUDAFineGPT  # their constructors refuse int8 weights


    dev = Device(config or KernelConfig())
    return Bark(
        semantic=CUDACausalGPT(model.semantic, dev),
        coarse=CUDACausalGPT(model.coarse, dev),
        fine=CUDAFineGPT(model.fine, dev),
        codec=CUDACodec(model.codec, dev),
        tokenizer=model.tokenizer,
        voices_dir=model.voices_dir,
        path=model.path,
    )


__all__ = ["KernelConfig", "cuda_available", "cuda_problem", "require_cuda", "to_cuda"]
