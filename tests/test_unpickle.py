"""The restricted unpickler: reads torch state dicts without torch, and never runs a pickle.

Checkpoints here are crafted byte by byte (no torch needed), so each test controls exactly which
globals, storages and strides the file holds.
"""

from __future__ import annotations

import os
import pickle
import struct
import zipfile

import numpy as np
import pytest

from barknp.convert.unpickle import load_torch_state_dict
from barknp.errors import BarkError


# --- a tiny pickle writer: just the opcodes torch.save emits ----------------------------------------

class G:
    """A global reference, written as the GLOBAL opcode (module, name)."""

    def __init__(self, module, name):
        self.module, self.name = module, name


class Call:
    """``func(*args)``: written as func, args tuple, REDUCE."""

    def __init__(self, func, *args):
        self.func, self.args = func, args


class PersId:
    def __init__(self, pid):
        self.pid = pid


def _enc(obj) -> bytes:
    if isinstance(obj, bool):
        return pickle.NEWTRUE if obj else pickle.NEWFALSE
    if isinstance(obj, int):
        return pickle.LONG1 + bytes([8]) + struct.pack("<q", obj)
    if isinstance(obj, str):
        raw = obj.encode()
        return pickle.BINUNICODE + struct.pack("<I", len(raw)) + raw
    if isinstance(obj, tuple):
        return pickle.MARK + b"".join(_enc(x) for x in obj) + pickle.TUPLE
    if isinstance(obj, G):
        return pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode()
    if isinstance(obj, Call):
        return _enc(obj.func) + _enc(tuple(obj.args)) + pickle.REDUCE
    if isinstance(obj, PersId):
        return _enc(obj.pid) + pickle.BINPERSID
    if isinstance(obj, dict):
        body = b"".join(_enc(k) + _enc(v) for k, v in obj.items())
        return pickle.EMPTY_DICT + pickle.MARK + body + pickle.SETITEMS
    raise TypeError(obj)


def dumps(obj) -> bytes:
    return pickle.PROTO + bytes([2]) + _enc(obj) + pickle.STOP


def tensor(storage_type, key, numel, offset, size, stride):
    storage = PersId(("storage", G("torch", storage_type), key, "cpu", numel))
    hooks = Call(G("collections", "OrderedDict"))
    return Call(G("torch._utils", "_rebuild_tensor_v2"), storage, offset, tuple(size), tuple(stride), False, hooks)


def write_ckpt(path, state, storages: dict[str, bytes], root="archive"):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{root}/data.pkl", dumps(state))
        zf.writestr(f"{root}/byteorder", "little")
        for key, raw in storages.items():
            zf.writestr(f"{root}/data/{key}", raw)
        zf.writestr(f"{root}/version", "3\n")
    return str(path)


# --- reading ----------------------------------------------------------------------------------------

def test_dtypes_strides_offsets(tmp_path):
    f32 = np.arange(12, dtype="<f4") * 0.5 - 1.0
    f16 = (np.arange(6, dtype="<f2") - 2.5).astype("<f2")
    want_bf = np.array([1.0, -2.5, 3.140625, 0.0078125], dtype=np.float32)  # exactly representable in bf16
    bf16 = (want_bf.view(np.uint32) >> 16).astype("<u2")
    i64 = np.arange(5, dtype="<i8") * -3
    boolean = np.array([1, 0, 1, 1], dtype=np.uint8)
    state = {
        # a (3, 2) transposed view starting at element 2 of a 12-element storage
        "t": tensor("FloatStorage", "0", 12, 2, (3, 2), (1, 3)),
        "h": tensor("HalfStorage", "1", 6, 0, (2, 3), (3, 1)),
        "b": tensor("BFloat16Storage", "2", 4, 0, (4,), (1,)),
        "l": tensor("LongStorage", "3", 5, 1, (2,), (2,)),
        "m": tensor("BoolStorage", "4", 4, 0, (2, 2), (2, 1)),
        "shared": tensor("FloatStorage", "0", 12, 0, (12,), (1,)),  # a second view of storage 0
        "p": Call(G("torch._utils", "_rebuild_parameter"), tensor("FloatStorage", "0", 12, 0, (2,), (1,)), True,
                  Call(G("collections", "OrderedDict"))),
    }
    raw = {"0": f32.tobytes(), "1": f16.tobytes(), "2": bf16.tobytes(), "3": i64.tobytes(), "4": boolean.tobytes()}
    got = load_torch_state_dict(write_ckpt(tmp_path / "m.bin", state, raw))
    base = f32
    np.testing.assert_array_equal(got["t"], np.lib.stride_tricks.as_strided(base[2:], (3, 2), (4, 12)))
    assert got["t"].flags.c_contiguous and got["t"].dtype == np.float32
    np.testing.assert_array_equal(got["h"], f16.reshape(2, 3))
    assert got["h"].dtype == np.float16
    np.testing.assert_array_equal(got["b"], want_bf)
    assert got["b"].dtype == np.float32
    np.testing.assert_array_equal(got["l"], i64[[1, 3]])
    np.testing.assert_array_equal(got["m"], boolean.astype(bool).reshape(2, 2))
    np.testing.assert_array_equal(got["shared"], f32)
    np.testing.assert_array_equal(got["p"], f32[:2])


def test_view_past_storage_end_is_refused(tmp_path):
    state = {"t": tensor("FloatStorage", "0", 4, 2, (3,), (1,))}
    path = write_ckpt(tmp_path / "m.bin", state, {"0": np.zeros(4, "<f4").tobytes()})
    with pytest.raises(BarkError, match="runs past its storage"):
        load_torch_state_dict(path)


# --- refusing to run anything ---------------------------------------------------------------------

@pytest.mark.parametrize("module,name", [("posix", "system"), ("os", "system"), ("builtins", "eval"),
                                         ("builtins", "exec"), ("subprocess", "call")])
def test_malicious_global_is_refused_and_not_run(tmp_path, module, name):
    sentinel = tmp_path / "pwned"
    if name in ("eval", "exec"):
        arg = f"open({str(sentinel)!r}, 'w').write('x')"
    elif module == "subprocess":
        arg = ("touch", str(sentinel))
    else:
        arg = f"touch {sentinel}"
    state = {"w": Call(G(module, name), arg)}
    path = write_ckpt(tmp_path / "evil.bin", state, {})
    with pytest.raises(BarkError, match=f"{module}\\.{name}"):
        load_torch_state_dict(path)
    assert not sentinel.exists(), "the pickle's payload ran"


def test_malicious_storage_type_is_refused(tmp_path):
    sentinel = tmp_path / "pwned"
    # the global sits where torch puts the storage class; it still may not be named
    evil = Call(G("builtins", "exec"), f"open({str(sentinel)!r}, 'w')")
    state = {"w": Call(G("torch._utils", "_rebuild_tensor_v2"), PersId(("storage", evil, "0", "cpu", 1)), 0, (1,),
                       (1,), False, Call(G("collections", "OrderedDict")))}
    path = write_ckpt(tmp_path / "evil.bin", state, {"0": b"\0\0\0\0"})
    with pytest.raises(BarkError, match="builtins.exec"):
        load_torch_state_dict(path)
    assert not sentinel.exists()


def test_real_malicious_pickle_via_reduce(tmp_path):
    """A pickle made the usual way (an object whose __reduce__ names os.system)."""
    sentinel = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {sentinel}",))

    with zipfile.ZipFile(tmp_path / "evil.bin", "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({"w": Evil()}, protocol=2))
    with pytest.raises(BarkError, match="system"):
        load_torch_state_dict(str(tmp_path / "evil.bin"))
    assert not sentinel.exists()


def test_unknown_storage_class_is_refused(tmp_path):
    state = {"t": tensor("ComplexFloatStorage", "0", 1, 0, (1,), (1,))}
    with pytest.raises(BarkError, match="torch.ComplexFloatStorage"):
        load_torch_state_dict(write_ckpt(tmp_path / "m.bin", state, {"0": b"\0" * 8}))


# --- broken files -----------------------------------------------------------------------------------

def _good(tmp_path):
    state = {"t": tensor("FloatStorage", "0", 256, 0, (256,), (1,))}
    return write_ckpt(tmp_path / "m.bin", state, {"0": np.arange(256, dtype="<f4").tobytes()})


def test_truncated_zip(tmp_path):
    path = _good(tmp_path)
    raw = open(path, "rb").read()
    open(path, "wb").write(raw[: len(raw) // 2])
    with pytest.raises(BarkError, match="m.bin"):
        load_torch_state_dict(path)


def test_corrupt_storage_bytes(tmp_path):
    path = _good(tmp_path)
    raw = bytearray(open(path, "rb").read())
    at = raw.find(np.arange(256, dtype="<f4").tobytes()[40:48])
    assert at > 0
    raw[at : at + 8] = b"\xff" * 8
    open(path, "wb").write(bytes(raw))
    with pytest.raises(BarkError, match="corrupt"):  # the zip's CRC catches it
        load_torch_state_dict(path)


def test_missing_storage(tmp_path):
    state = {"t": tensor("FloatStorage", "7", 2, 0, (2,), (1,))}
    with pytest.raises(BarkError, match="storage '7' is missing"):
        load_torch_state_dict(write_ckpt(tmp_path / "m.bin", state, {}))


def test_legacy_and_garbage(tmp_path):
    legacy = tmp_path / "legacy.bin"
    legacy.write_bytes(pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2) + b"rest")
    with pytest.raises(BarkError, match="legacy"):
        load_torch_state_dict(str(legacy))
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"hello world, not a checkpoint")
    with pytest.raises(BarkError, match="not a PyTorch zip checkpoint"):
        load_torch_state_dict(str(junk))
    with pytest.raises(BarkError, match="cannot read"):
        load_torch_state_dict(str(tmp_path / "absent.bin"))


def test_not_a_state_dict(tmp_path):
    with zipfile.ZipFile(tmp_path / "m.bin", "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps([1, 2, 3], protocol=2))
    with pytest.raises(BarkError, match="not a state dict"):
        load_torch_state_dict(str(tmp_path / "m.bin"))


# --- against real torch.save output ---------------------------------------------------------------

@pytest.mark.reference
def test_matches_torch_save(tmp_path):
    torch = pytest.importorskip("torch", reason="compares against torch.save's own output")
    g = torch.Generator().manual_seed(0)
    base = torch.randn(6, 5, generator=g)
    state = {
        "f32": base,
        "f32_t": base.t(),  # non-contiguous
        "f32_slice": base[2:, 1:4],  # offset into a shared storage
        "f16": base.half(),
        "bf16": base.bfloat16(),
        "i64": torch.arange(7),
        "i32": torch.arange(7, dtype=torch.int32)[::2],
        "mask": torch.tril(torch.ones(4, 4, dtype=torch.bool)),
        "param": torch.nn.Parameter(base[0].clone()),
        "scalar": torch.tensor(3.5),
    }
    torch.save(state, tmp_path / "m.bin")
    got = load_torch_state_dict(str(tmp_path / "m.bin"))
    assert set(got) == set(state)
    for name, t in state.items():
        want = (t.float() if t.dtype == torch.bfloat16 else t).detach().numpy()
        assert got[name].shape == want.shape, name
        assert got[name].dtype == want.dtype, name
        np.testing.assert_array_equal(got[name], want, err_msg=name)
