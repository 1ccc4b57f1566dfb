"""Converting a transformers-layout Bark checkpoint into barknp's layout (see weights/README.md).

The source is a directory holding ``config.json``, the weights (``model.safetensors`` or
``pytorch_model.bin``, possibly sharded), the tokenizer files and the voice prompts listed in
``speaker_embeddings_path.json``. Everything in it is treated as untrusted: pickles are read by a
restricted unpickler, voice paths may not leave the directory, and every tensor is checked against
the shape its config implies before anything is written.

The output is assembled in a temporary sibling directory and renamed into place only when complete,
so an interrupted or failed conversion never leaves a directory that loads.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import shutil
import zipfile

import numpy as np

from ..config import CodecConfig, GPTConfig, config_from_dict, config_to_json
from ..errors import BarkError
from ..generation.voices import VOICE_KEYS, check_prompt
from ..weights import FORMAT, STAGES, read_header, save_stage, stage_path
from . import layout
from .unpickle import load_torch_state_dict

MODEL_JSON = "barknp.json"
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json")
SPEAKER_JSON = "speaker_embeddings_path.json"

# stage -> (checkpoint prefix, key of its sub-config in config.json)
PREFIXES = {
    "semantic": ("semantic.", "semantic_config"),
    "coarse": ("coarse_acoustics.", "coarse_acoustics_config"),
    "fine": ("fine_acoustics.", "fine_acoustics_config"),
    "codec": ("codec_model.", "codec_config"),
}

_MASK = re.compile(r"^layers\.\d+\.attn\.bias$")  # causal-mask buffer, not a learned bias
_CODEBOOK_STATS = re.compile(r"^quantizer\.layers\.\d+\.codebook\.(inited|cluster_size|embed_avg)$")
_VOICE_NAME = re.compile(r"^[A-Za-z0-9_\-]+(/[A-Za-z0-9_\-]+)*$")


# --- reading the source --------------------------------------------------------------------------

_ST_DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2"),
    "BOOL": np.dtype("?"), "U8": np.dtype("u1"), "I8": np.dtype("i1"), "I16": np.dtype("<i2"),
    "I32": np.dtype("<i4"), "I64": np.dtype("<i8"),
}


def read_safetensors(path: str) -> dict[str, np.ndarray]:
    """Read any safetensors file into {name: array}; bfloat16 becomes float32. Arrays are copies."""
    header, _, data_start = read_header(path)
    out = {}
    with open(path, "rb") as f:
        for name, entry in header.items():
            try:
                dtype = _ST_DTYPES[entry["dtype"]]
                shape = tuple(int(s) for s in entry["shape"])
                begin, end = (int(x) for x in entry["data_offsets"])
            except (KeyError, TypeError, ValueError):
                raise BarkError(f"{path}: corrupt safetensors entry for {name!r:.60}") from None
            count = int(np.prod(shape, dtype=np.int64))
            if begin < 0 or end - begin != count * dtype.itemsize:
                raise BarkError(f"{path}: tensor {name} has {end - begin} bytes for shape {shape}")
            f.seek(data_start + begin)
            raw = f.read(end - begin)
            if len(raw) != end - begin:
                raise BarkError(f"{path}: truncated: tensor {name} runs past the end of the file")
            arr = np.frombuffer(raw, dtype=dtype).reshape(shape)
            if entry["dtype"] == "BF16":
                arr = (arr.astype(np.uint32) << 16).view(np.float32)
            out[name] = arr
    return out


def _inside(path: str, roots: list[str]) -> bool:
    real = os.path.realpath(path)
    return any(os.path.commonpath([real, r]) == r for r in roots)


def _trusted_roots(src: str) -> list[str]:
    """Folders a file named by the source may resolve into.

    The source itself; and when it is a hub cache snapshot (``.../models--x--y/snapshots/<rev>``),
    the repo's cache folder too, because there every file is a symlink into its ``blobs/``.
    """
    roots = [os.path.realpath(src)]
    parent = os.path.dirname(roots[0])
    if os.path.basename(parent) == "snapshots" and os.path.basename(os.path.dirname(parent)).startswith("models--"):
        roots.append(os.path.dirname(parent))
    return roots


def _source_file(src: str, rel: str, what: str) -> str:
    """``src/rel`` for an untrusted relative path ``rel``; refuses one that leaves ``src``.

    Needed for names read from files inside the source (voice prompts, weight shards): those are
    the checkpoint author's choice. Fixed names (config.json, ...) are looked up in the directory the
    user chose, symlinks and all.
    """
    if not isinstance(rel, str) or not rel or "\x00" in rel:
        raise BarkError(f"{what}: not a file path: {rel!r:.80}")
    norm = os.path.normpath(rel)
    if os.path.isabs(rel) or norm == ".." or norm.startswith(".." + os.sep) or rel.startswith(("/", "\\")):
        raise BarkError(f"{what}: path {rel!r:.80} leaves the model directory; refusing it")
    path = os.path.join(src, norm)
    if not _inside(path, _trusted_roots(src)):
        raise BarkError(f"{what}: path {rel!r:.80} resolves outside the model directory; refusing it")
    return path


def _read_json(path: str):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except OSError as e:
        raise BarkError(f"{path}: cannot read: {e.strerror}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BarkError(f"{path}: not valid JSON ({e})") from None


def read_weights(src: str) -> dict[str, np.ndarray]:
    """All tensors of the checkpoint in ``src``: safetensors preferred, then the torch ``.bin``."""
    for single, index, reader in (
        ("model.safetensors", "model.safetensors.index.json", read_safetensors),
        ("pytorch_model.bin", "pytorch_model.bin.index.json", load_torch_state_dict),
    ):
        if os.path.isfile(os.path.join(src, single)):
            return reader(os.path.join(src, single))
        if os.path.isfile(os.path.join(src, index)):
            weight_map = _read_json(os.path.join(src, index)).get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                raise BarkError(f"{os.path.join(src, index)}: no weight_map")
            tensors = {}
            for shard in sorted(set(weight_map.values())):
                tensors.update(reader(_source_file(src, shard, index)))
            return tensors
    raise BarkError(
        f"{src}: no weights found (expected model.safetensors or pytorch_model.bin, or their .index.json)"
    )


# --- turning checkpoint tensors into stage tensors -----------------------------------------------

def _fold(g: np.ndarray, v: np.ndarray, name: str) -> np.ndarray:
    """Weight norm: w = g * v / ||v||, the norm over every axis of v but the first."""
    if v.ndim < 2 or g.size != v.shape[0]:
        raise BarkError(f"weight norm of {name}: gain of shape {g.shape} does not fit direction {v.shape}")
    v64 = v.astype(np.float64)
    norm = np.sqrt(np.square(v64).reshape(v.shape[0], -1).sum(axis=1))  # (out,)
    scale = g.astype(np.float64).reshape(-1) / norm  # (out,)
    return (v64 * scale.reshape((-1,) + (1,) * (v.ndim - 1))).astype(np.float32)


def fold_weight_norm(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Replace both spellings of weight norm (weight_g/weight_v, parametrizations.weight.original0/1)
    by one plain ``weight``. Returns a new dict; other tensors are passed through."""
    spellings = ((".weight_g", ".weight_v"), (".parametrizations.weight.original0", ".parametrizations.weight.original1"))
    out = {}
    for name, value in tensors.items():
        for g_suffix, v_suffix in spellings:
            if name.endswith(g_suffix) or name.endswith(v_suffix):
                base = name[: -len(g_suffix)] if name.endswith(g_suffix) else name[: -len(v_suffix)]
                g, v = tensors.get(base + g_suffix), tensors.get(base + v_suffix)
                if g is None or v is None:
                    raise BarkError(f"weight norm of {base}: {base + (v_suffix if g is not None else g_suffix)} is missing")
                if base + ".weight" in tensors:
                    raise BarkError(f"{base}: both a plain weight and a weight-norm pair")
                if name.endswith(g_suffix):
                    out[base + ".weight"] = _fold(g, v, base)
                break
        else:
            out[name] = value
    return out


def _as_float32(stage: str, name: str, value: np.ndarray) -> np.ndarray:
    if not np.issubdtype(value.dtype, np.floating):
        raise BarkError(f"{stage}: tensor {name} has dtype {value.dtype}, expected floating point")
    return np.ascontiguousarray(value, dtype=np.float32)


def split_stages(tensors: dict[str, np.ndarray], config: dict) -> dict[str, tuple]:
    """Checkpoint tensors -> {stage: (config dataclass, {name: float32 array})}, checked.

    ``config`` is the parsed ``config.json``. The GPT ``bias`` flag comes from the tensors present.
    """
    if not isinstance(config, dict):
        raise BarkError("config.json: not a JSON object")
    for _, key in PREFIXES.values():
        if not isinstance(config.get(key), dict):
            raise BarkError(f"config.json: no {key}: not a transformers Bark checkpoint")
    tensors = fold_weight_norm(tensors)
    by_stage: dict[str, dict] = {s: {} for s in STAGES}
    for name, value in tensors.items():
        for stage, (prefix, _) in PREFIXES.items():
            if name.startswith(prefix):
                by_stage[stage][name[len(prefix):]] = value
                break
        else:
            raise BarkError(f"unexpected tensor {name} in checkpoint (not part of any Bark stage)")

    stages = {}
    for stage in ("semantic", "coarse", "fine"):
        raw = {k: v for k, v in by_stage[stage].items() if not _MASK.match(k)}
        sub = config[PREFIXES[stage][1]]
        cfg = config_from_dict(GPTConfig, sub)
        cfg = dataclasses.replace(cfg, bias="layers.0.attn.att_proj.bias" in raw).validate()
        if stage == "fine":
            if not 0 < cfg.n_codes_given < cfg.n_codes_total:
                raise BarkError(f"config.json: fine model codes given/total {cfg.n_codes_given}/{cfg.n_codes_total}")
            for i in range(cfg.n_codes_total - cfg.n_codes_given):
                head, embed = f"lm_heads.{i}.weight", f"input_embeds_layers.{i + 1}.weight"
                if head not in raw and embed in raw:  # tied: transformers may save only one of the pair
                    raw[head] = raw[embed]
                elif embed not in raw and head in raw:
                    raw[embed] = raw[head]
        kept = {k: _as_float32(stage, k, v) for k, v in raw.items()}
        check_shapes(stage, kept, layout.gpt_tensors(cfg, fine=stage == "fine"))
        stages[stage] = (cfg, kept)

    sub = config["codec_config"]
    cfg = config_from_dict(CodecConfig, sub)
    bandwidths = sub.get("target_bandwidths") or layout.ENCODEC_TARGET_BANDWIDTHS
    raw = {
        k: v for k, v in by_stage["codec"].items()
        if not k.startswith("encoder.") and not _CODEBOOK_STATS.match(k)
    }
    kept = {k: _as_float32("codec", k, v) for k, v in raw.items()}
    try:
        expected = layout.codec_tensors(cfg, layout.num_quantizers(cfg, bandwidths))
    except (TypeError, ValueError, ZeroDivisionError) as e:
        raise BarkError(f"config.json: bad codec_config ({e})") from None
    check_shapes("codec", kept, expected)
    stages["codec"] = (cfg, kept)
    return stages


def check_shapes(stage: str, tensors: dict[str, np.ndarray], expected: dict[str, tuple]) -> None:
    """Every expected tensor present with its shape, and nothing else; else one-line BarkError."""
    missing = sorted(set(expected) - set(tensors))
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise BarkError(f"{stage}: tensor {missing[0]} is missing{more}; the checkpoint does not match its config")
    extra = sorted(set(tensors) - set(expected))
    if extra:
        more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
        raise BarkError(f"{stage}: unexpected tensor {extra[0]}{more}; the checkpoint does not match its config")
    for name in sorted(expected):
        if tuple(tensors[name].shape) != tuple(expected[name]):
            raise BarkError(
                f"{stage}: tensor {name} has shape {tuple(tensors[name].shape)}, its config implies "
                f"{tuple(expected[name])}"
            )


def manifest_of(stages: dict[str, tuple]) -> dict:
    """{stage: {name: {"dtype", "shape"}}} of converted stages: what a manifest file lists."""
    return {
        stage: {name: {"dtype": "F32", "shape": list(arr.shape)} for name, arr in sorted(tensors.items())}
        for stage, (_, tensors) in stages.items()
    }


def check_manifest(stages: dict[str, tuple], manifest: dict, label: str) -> None:
    """Compare converted stages against a manifest's names, shapes and dtypes."""
    listed = manifest.get("stages")
    if not isinstance(listed, dict):
        raise BarkError(f"manifest {label}: no stages")
    ours = manifest_of(stages)
    for stage in STAGES:
        want, have = listed.get(stage, {}), ours.get(stage, {})
        for name in sorted(set(want) | set(have)):
            if name not in have:
                raise BarkError(f"{stage}: tensor {name} listed in manifest {label} is missing")
            if name not in want:
                raise BarkError(f"{stage}: tensor {name} is not in manifest {label}")
            if want[name] != have[name]:
                raise BarkError(f"{stage}: tensor {name} is {have[name]}, manifest {label} says {want[name]}")


def _manifest_dirs() -> list[str]:
    here = os.path.dirname(os.path.realpath(__file__))
    return [os.path.join(here, "manifests"), os.path.join(os.path.dirname(os.path.dirname(here)), "weights", "manifests")]


def find_manifest(repo_id: str) -> str | None:
    """Path of the shipped manifest for an official model, or None."""
    name = repo_id.replace("/", "--") + ".json"
    for d in _manifest_dirs():
        if os.path.isfile(os.path.join(d, name)):
            return os.path.join(d, name)
    return None


# --- voices ---------------------------------------------------------------------------------------

def read_voices(src: str) -> dict[str, dict[str, np.ndarray]]:
    """{voice name: {prompt key: array}} from the source's ``speaker_embeddings_path.json``.

    The json maps each voice to the relative paths of its three ``.npy`` prompts; it is untrusted, so
    each path must stay inside ``src``. No json: no voices.
    """
    for rel in (SPEAKER_JSON, os.path.join("speaker_embeddings", SPEAKER_JSON)):
        if os.path.isfile(os.path.join(src, rel)):
            index_path = os.path.join(src, rel)
            break
    else:
        return {}
    index = _read_json(index_path)
    if not isinstance(index, dict):
        raise BarkError(f"{SPEAKER_JSON}: not a JSON object")
    voices = {}
    for name in sorted(index):
        if name == "repo_or_path":  # where transformers last saved it: not a voice
            continue
        entry = index[name]
        if not _VOICE_NAME.match(name) or not isinstance(entry, dict):
            raise BarkError(f"{SPEAKER_JSON}: bad voice entry {name!r:.80}")
        prompts = {}
        for key in VOICE_KEYS:
            if key not in entry:
                raise BarkError(f"{SPEAKER_JSON}: voice {name} has no {key}")
            path = _source_file(src, entry[key], f"{SPEAKER_JSON}: voice {name}")
            try:
                arr = np.load(path, allow_pickle=False)
            except FileNotFoundError:
                raise BarkError(f"voice {name}: {entry[key]} does not exist") from None
            except (OSError, ValueError, EOFError) as e:
                raise BarkError(f"voice {name}: cannot read {entry[key]} ({e})"[:300]) from None
            if not isinstance(arr, np.ndarray):
                raise BarkError(f"voice {name}: {entry[key]} is not a single .npy array")
            prompts[key] = np.ascontiguousarray(check_prompt(arr, key, f"voice {name}"))  # its dtype kept
        voices[name] = prompts
    return voices


def write_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
    """np.savez, but byte-reproducible: fixed member timestamps (savez stamps the current time)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for key in sorted(arrays):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arrays[key]), allow_pickle=False)
            info = zipfile.ZipInfo(key + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue())


# --- writing ----------------------------------------------------------------------------------------

def _copy_tokenizer(src: str, dst: str) -> list[str]:
    present = [n for n in TOKENIZER_FILES if os.path.isfile(os.path.join(src, n))]
    if "tokenizer.json" not in present and "vocab.txt" not in present:
        raise BarkError(f"{src}: no tokenizer (tokenizer.json or vocab.txt)")
    os.makedirs(dst)
    for n in present:
        shutil.copyfile(os.path.join(src, n), os.path.join(dst, n))
    return present


def _is_model_dir(path: str) -> bool:
    return os.path.isfile(os.path.join(path, MODEL_JSON))


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)


def format_size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return ""


def report(out: str) -> list[str]:
    """One line per file written (path relative to ``out`` and size), then the total."""
    rows = []
    for root, dirs, files in os.walk(out):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            rows.append((os.path.relpath(path, out).replace(os.sep, "/"), os.path.getsize(path)))
    width = max((len(r) for r, _ in rows), default=0)
    lines = [f"  {rel:<{width}}  {format_size(size):>9}" for rel, size in rows]
    lines.append(f"wrote {len(rows)} files, {format_size(sum(s for _, s in rows))} in total, to {out}")
    return lines


def convert_dir(src: str, out: str, *, source: dict, manifest: str | None = None, progress: bool = True) -> str:
    """Convert the transformers-layout directory ``src`` into ``out`` (atomically). Returns ``out``.

    ``source`` is recorded in barknp.json; ``manifest`` (a manifest file) is checked when given.
    """
    out = os.path.abspath(out)
    if os.path.lexists(out) and not (os.path.isdir(out) and (_is_model_dir(out) or not os.listdir(out))):
        raise BarkError(f"{out}: exists and is not a barknp model directory; refusing to overwrite it")
    if not os.path.isfile(os.path.join(src, "config.json")):
        raise BarkError(f"{src}: no config.json; not a transformers Bark checkpoint directory")
    config = _read_json(os.path.join(src, "config.json"))
    tmp = f"{out}.tmp-{os.getpid()}"
    old = f"{out}.old-{os.getpid()}"
    _remove(tmp)
    try:
        stages = split_stages(read_weights(src), config)
        if manifest is not None:
            check_manifest(stages, _read_json(manifest), os.path.basename(manifest))
        voices = read_voices(src)
        os.makedirs(tmp)
        tokenizer = _copy_tokenizer(src, os.path.join(tmp, "tokenizer"))
        for stage in STAGES:
            cfg, tensors = stages[stage]
            save_stage(stage_path(tmp, stage), stage, config_to_json(cfg), tensors)
        del stages
        os.makedirs(os.path.join(tmp, "voices"))
        for name, prompts in voices.items():
            path = os.path.join(tmp, "voices", *name.split("/")) + ".npz"
            os.makedirs(os.path.dirname(path), exist_ok=True)
            write_npz(path, prompts)
        info = {
            "format": FORMAT,
            "source": source,
            "stages": {s: os.path.basename(stage_path(tmp, s)) for s in STAGES},
            "tokenizer": sorted(tokenizer),
            "voices": sorted(voices),
        }
        with open(os.path.join(tmp, MODEL_JSON), "w", encoding="utf-8") as f:
            f.write(json.dumps(info, indent=1, sort_keys=True) + "\n")
        # Swap into place. A directory cannot be renamed over a non-empty one, so an existing model is
        # first moved aside and deleted only once the new one is in place.
        if os.path.lexists(out):
            os.rename(out, old)
        os.rename(tmp, out)
    except BaseException:
        _remove(tmp)
        if os.path.lexists(old) and not os.path.lexists(out):
            os.rename(old, out)
        raise
    try:
        _remove(old)
    except KeyboardInterrupt:  # the new model is in place: finish removing the old one, then stop
        _remove(old)
        raise
    if progress:
        print("\n".join(report(out)), flush=True)
    return out
