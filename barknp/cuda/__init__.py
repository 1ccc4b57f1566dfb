"""Bark on NVIDIA GPUs through numba.cuda.

    import barknp
    from barknp.cuda import to_cuda
    model = to_cuda(barknp.load("suno/bark-small"))     # BarkError on a machine without a GPU
    audio = model.generate("Hello!", voice="v2/en_speaker_6", rng=0)

Importing this package does not import ``numba.cuda``; the first CUDA call does.
"""

from __future__ import annotations

from ..errors import BarkError
from .kernels import KernelConfig


def cuda_available() -> bool:
    """Whether numba.cuda sees a usable GPU (or runs its simulator)."""
    try:
        from .kernels import cuda_module

        return bool(cuda_module().is_available())
    except Exception:  # a broken driver install is "not available", reported by require_cuda
        return False


def require_cuda() -> None:
    """Raise BarkError, one line, when no CUDA GPU can be used."""
    if cuda_available():
        return
    reason = "numba.cuda found no usable GPU"
    try:
        from .kernels import cuda_module

        cuda_module().current_context()
    except Exception as e:  # the driver's own account of why, squeezed onto one line
        detail = " ".join(str(e).split())
        if detail:
            reason = detail.split(". ")[0][:160]
    raise BarkError(f"device 'cuda' requested but no CUDA GPU is usable ({reason}); use device='cpu'")


def to_cuda(model, config: KernelConfig | None = None):
    """A ``Bark`` whose semantic, coarse, fine and codec networks run on the GPU.

    The weights are copied to the device once; the tokenizer and voices are shared with ``model``.
    ``config`` sets the kernels' block and tile sizes (default: ``KernelConfig()``).
    """
    require_cuda()
    from ..model import Bark
    from .kernels import Device
    from .models import CUDACausalGPT, CUDACodec, CUDAFineGPT

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


__all__ = ["KernelConfig", "cuda_available", "require_cuda", "to_cuda"]
