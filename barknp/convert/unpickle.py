"""Reading a PyTorch ``torch.save`` state dict without PyTorch, and without running its pickle.

A ``.bin`` checkpoint (torch >= 1.6) is a zip archive: ``<root>/data.pkl`` is a pickle describing the
state dict and ``<root>/data/<key>`` hold the raw bytes of each storage. Unpickling normally imports
and calls whatever the pickle names, which lets a crafted file run any code. Here the unpickler only
resolves an allow-list of names (the few a state dict needs) and maps each to a harmless stand-in
written in NumPy; any other name raises BarkError before anything is called.
"""

from __future__ import annotations

import collections
import io
import pickle
import zipfile

import numpy as np

from ..errors import BarkError

# torch storage class name -> NumPy dtype of its elements ("bfloat16" is read as raw 16-bit words).
_STORAGE_DTYPES = {
    "FloatStorage": np.dtype("<f4"),
    "HalfStorage": np.dtype("<f2"),
    "BFloat16Storage": np.dtype("<u2"),
    "DoubleStorage": np.dtype("<f8"),
    "BoolStorage": np.dtype("?"),
    "ByteStorage": np.dtype("u1"),
    "CharStorage": np.dtype("i1"),
    "ShortStorage": np.dtype("<i2"),
    "IntStorage": np.dtype("<i4"),
    "LongStorage": np.dtype("<i8"),
}


class _StorageType:
    """Stands in for ``torch.FloatStorage`` and its siblings: only carries the element type."""

    def __init__(self, name: str):
        self.name = name

    @property
    def dtype(self) -> np.dtype:
        return _STORAGE_DTYPES[self.name]


class _Storage:
    """One storage's elements, as a flat read-only NumPy array."""

    def __init__(self, kind: _StorageType, data: np.ndarray):
        self.kind = kind
        self.data = data  # (numel,) in the storage's raw dtype


def _bf16_to_f32(words: np.ndarray) -> np.ndarray:
    """bfloat16 is the top half of a float32: widen the 16-bit words back into place."""
    return (words.astype(np.uint32) << 16).view(np.float32)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
    """The stand-in for ``torch._utils._rebuild_tensor_v2``: a strided view of a storage, copied.

    size and stride count elements, as torch's do. Returns a C-contiguous array of the storage's
    dtype (bfloat16 already widened to float32).
    """
    if not isinstance(storage, _Storage):
        raise BarkError("corrupt checkpoint: a tensor is not backed by a storage")
    try:
        size = tuple(int(s) for s in size)
        stride = tuple(int(s) for s in stride)
        offset = int(storage_offset)
    except (TypeError, ValueError):
        raise BarkError("corrupt checkpoint: tensor size/stride are not integers") from None
    if len(size) != len(stride) or offset < 0 or any(s < 0 for s in size) or any(s < 0 for s in stride):
        raise BarkError(f"corrupt checkpoint: bad tensor geometry size={size} stride={stride}")
    flat = storage.data
    if 0 in size:
        out = np.zeros(size, flat.dtype)
    else:
        last = offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= flat.size:
            raise BarkError(
                f"corrupt checkpoint: tensor of size {size} at offset {offset} runs past its storage "
                f"of {flat.size} elements"
            )
        item = flat.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            flat[offset:], shape=size, strides=tuple(s * item for s in stride), writeable=False
        )
        out = np.array(view, order="C")  # a copy; keeps 0-d tensors 0-d
    if storage.kind.name == "BFloat16Storage":
        out = _bf16_to_f32(out)
    return out


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    """The stand-in for ``torch._utils._rebuild_parameter``: a Parameter is just its tensor."""
    return data


def _allowed() -> dict:
    """(module, name) -> the stand-in the unpickler hands out. Nothing else can be named.

    Fresh objects for every load, so that a pickle's BUILD opcode (which sets attributes on an
    object) cannot change what a later load sees.
    """

    def rebuild_tensor(*args, **kwargs):
        return _rebuild_tensor_v2(*args, **kwargs)

    def rebuild_parameter(*args, **kwargs):
        return _rebuild_parameter(*args, **kwargs)

    allowed = {
        ("torch._utils", "_rebuild_tensor_v2"): rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): rebuild_parameter,
        ("collections", "OrderedDict"): collections.OrderedDict,  # a C type: its attributes are fixed
    }
    allowed.update({("torch", name): _StorageType(name) for name in _STORAGE_DTYPES})
    return allowed


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, read_storage):
        super().__init__(file)
        self._read_storage = read_storage
        self._storages: dict[str, _Storage] = {}
        self._allowed = _allowed()

    def find_class(self, module, name):
        try:
            return self._allowed[(module, name)]
        except (KeyError, TypeError):
            raise BarkError(
                f"refusing to load checkpoint: its pickle references {module}.{name}, which a state "
                "dict never needs (the file may be malicious)"
            ) from None

    def persistent_load(self, pid):
        # torch writes ('storage', storage type, key, location, numel) for each storage it saved.
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise BarkError(f"corrupt checkpoint: unknown persistent id {pid!r:.80}")
        kind, key = pid[1], pid[2]
        if not isinstance(kind, _StorageType) or kind.name not in _STORAGE_DTYPES or not isinstance(key, str):
            raise BarkError(f"corrupt checkpoint: unknown persistent id {pid!r:.80}")
        if key not in self._storages:
            self._storages[key] = _Storage(kind, self._read_storage(key, kind.dtype))
        return self._storages[key]


def _find_pickle(names: list[str]) -> str:
    pkls = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
    if len(pkls) != 1:
        raise BarkError("not a PyTorch checkpoint: the zip has no single <root>/data.pkl")
    return pkls[0]


def load_torch_state_dict(path: str) -> dict[str, np.ndarray]:
    """Read a zip-format ``torch.save`` state dict into {name: C-contiguous array}.

    Arrays keep their stored dtype, except bfloat16, which becomes float32. Raises BarkError for a
    legacy (pre-1.6) or corrupt file, or a pickle naming anything outside the allow-list.
    """
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise BarkError(f"{path}: cannot read: {e.strerror}") from None
    if magic[:2] != b"PK":
        if magic[:1] == b"\x80":
            raise BarkError(
                f"{path}: legacy (torch < 1.6) checkpoint format is not supported; re-save it with a "
                "newer torch (torch.save(torch.load(p), p))"
            )
        raise BarkError(f"{path}: not a PyTorch zip checkpoint (corrupt or not a .bin state dict)")
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            pkl = _find_pickle(names)
            root = pkl[: -len("data.pkl")]
            byteorder = "little"
            if root + "byteorder" in names:
                byteorder = zf.read(root + "byteorder").decode("ascii", "replace").strip()
            if byteorder not in ("little", "big"):
                raise BarkError(f"{path}: corrupt checkpoint: byteorder {byteorder!r}")

            def read_storage(key: str, dtype: np.dtype) -> np.ndarray:
                name = f"{root}data/{key}"
                if "/" in key or name not in names:
                    raise BarkError(f"{path}: corrupt checkpoint: storage {key!r} is missing")
                raw = zf.read(name)
                if len(raw) % dtype.itemsize:
                    raise BarkError(f"{path}: corrupt checkpoint: storage {key!r} has a partial element")
                data = np.frombuffer(raw, dtype=dtype if byteorder == "little" else dtype.newbyteorder(">"))
                return data.astype(dtype) if byteorder == "big" else data  # (numel,)

            state = _RestrictedUnpickler(io.BytesIO(zf.read(pkl)), read_storage).load()
    except BarkError as e:
        msg = str(e)
        raise BarkError(msg if msg.startswith(path) else f"{path}: {msg}") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, pickle.UnpicklingError, ValueError,
            TypeError, AttributeError, IndexError, KeyError, OverflowError, MemoryError) as e:
        raise BarkError(f"{path}: corrupt or truncated checkpoint ({type(e).__name__}: {e})"[:300]) from None
    except OSError as e:
        raise BarkError(f"{path}: cannot read: {e.strerror or e}") from None
    if not isinstance(state, dict):
        raise BarkError(f"{path}: the checkpoint holds a {type(state).__name__}, not a state dict")
    out = {}
    for name, value in state.items():
        if not isinstance(name, str) or not isinstance(value, np.ndarray):
            raise BarkError(f"{path}: the checkpoint holds a non-tensor entry {name!r:.60}")
        out[name] = value
    return out


