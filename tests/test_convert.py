"""`barknp convert`: transformers-layout Bark checkpoints -> barknp layout (weights/README.md).

The reference tests build one random-weight tiny BarkModel (tools/reference.py), save it in all four
source spellings (weight norm old/new x safetensors/bin), and check every converted tensor against the
torch module. The rest (atomicity, path escapes, hub errors, CLI) reuse those directories.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import barknp.convert as bconvert
from parity import assert_elementwise_close
from barknp.convert import core as convert_mod
from barknp.convert import convert, locate
from barknp.errors import BarkError
from barknp.weights import STAGES, load_stage, stage_path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
TOL = 1e-6  # folded weight norm vs torch's own: float64 fold rounded once to float32
COMBOS = [("new", "safetensors"), ("new", "bin"), ("old", "safetensors"), ("old", "bin")]


def _reference():
    torch = pytest.importorskip("torch", reason="the reference model needs torch")
    pytest.importorskip("transformers", reason="the reference model needs transformers")
    sys.path.insert(0, str(REPO / "tools"))
    import reference

    return torch, reference


def _shared(name):
    path = SHARED / name
    return path if path.is_dir() else None


@pytest.fixture(scope="module")
def ref():
    torch, reference = _reference()
    return reference.build_bark("tiny", seed=0)


@pytest.fixture(scope="module")
def sources(ref, tmp_path_factory):
    """combo -> transformers-layout directory of the tiny reference model."""
    _, reference = _reference()
    root = tmp_path_factory.mktemp("src")
    out = {}
    for wn, fmt in COMBOS:
        out[(wn, fmt)] = reference.save_transformers_dir(
            ref, root / f"{wn}-{fmt}", weight_norm=wn, fmt=fmt,
            voices_from=_shared("bark-voices"), tokenizer_from=_shared("bert-base-multilingual-cased"),
        )
        if _shared("bert-base-multilingual-cased") is None:  # still need a tokenizer file to convert
            (out[(wn, fmt)] / "vocab.txt").write_text("[PAD]\n[UNK]\n")
    return out


@pytest.fixture(scope="module")
def converted(sources, tmp_path_factory):
    root = tmp_path_factory.mktemp("out")
    return {c: Path(convert(str(src), str(root / f"{c[0]}-{c[1]}"), progress=False)) for c, src in sources.items()}


def _expected(model, stage):
    """{name: float32 array} the converted stage must hold, taken from the torch modules."""
    sub = {"semantic": model.semantic, "coarse": model.coarse_acoustics, "fine": model.fine_acoustics,
           "codec": model.codec_model}[stage]
    out = {}
    for name, t in sub.state_dict().items():
        if stage == "codec" and (name.startswith("encoder.") or name.split(".")[-1] in ("inited", "cluster_size", "embed_avg")):
            continue
        if name.endswith(".attn.bias") and t.dtype.is_floating_point is False:
            continue
        if name.endswith("original0"):
            continue
        if name.endswith("original1"):
            module = name[: -len(".parametrizations.weight.original1")]
            name, t = module + ".weight", sub.get_submodule(module).weight  # torch's own weight-norm result
        out[name] = t.detach().float().numpy()
    return out


def _assert_close(name, got, want, tol=TOL):
    """|got - want| <= tol (1 + |want|) everywhere (parity.assert_elementwise_close)."""
    assert_elementwise_close(got, want, tol, tol, name)


@pytest.mark.reference
@pytest.mark.parametrize("combo", COMBOS, ids=["-".join(c) for c in COMBOS])
def test_converted_tensors_equal_reference(ref, converted, combo):
    out = converted[combo]
    for stage in STAGES:
        config, tensors = load_stage(stage_path(str(out), stage), stage)
        want = _expected(ref, stage)
        assert sorted(tensors) == sorted(want), stage
        for name in want:
            assert tensors[name].dtype == np.float32
            _assert_close(f"{stage}.{name}", tensors[name], want[name])
        if stage != "codec":
            sub = {"semantic": ref.config.semantic_config, "coarse": ref.config.coarse_acoustics_config,
                   "fine": ref.config.fine_acoustics_config}[stage]
            for key in ("num_layers", "num_heads", "hidden_size", "input_vocab_size", "output_vocab_size", "block_size"):
                assert config[key] == getattr(sub, key), (stage, key)
            assert config["bias"] is True
    # tied fine heads: both spellings written, equal (the safetensors source stored only one)
    _, fine = load_stage(stage_path(str(out), "fine"), "fine")
    for i in range(7):
        np.testing.assert_array_equal(fine[f"lm_heads.{i}.weight"], fine[f"input_embeds_layers.{i + 1}.weight"])
    info = json.loads((out / "barknp.json").read_text())
    assert info["format"] == "barknp/1" and info["stages"]["codec"] == "codec.safetensors"
    if _shared("bark-voices"):
        assert info["voices"] == ["announcer", "en_speaker_0", "v2/de_speaker_1", "v2/en_speaker_6"]
        voice = np.load(out / "voices" / "v2" / "en_speaker_6.npz")
        orig = np.load(_shared("bark-voices") / "v2" / "en_speaker_6.npz")
        for key in ("semantic_prompt", "coarse_prompt", "fine_prompt"):
            np.testing.assert_array_equal(voice[key], orig[key])
            assert voice[key].dtype == orig[key].dtype
    if _shared("bert-base-multilingual-cased"):
        assert (out / "tokenizer" / "vocab.txt").read_bytes() == (_shared("bert-base-multilingual-cased") / "vocab.txt").read_bytes()
        assert info["tokenizer"] == ["tokenizer.json", "vocab.txt"]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.reference
def test_all_source_spellings_give_identical_output(converted):
    first = _files(converted[COMBOS[0]])
    first.pop("barknp.json")  # records the source path
    for combo in COMBOS[1:]:
        other = _files(converted[combo])
        other.pop("barknp.json")
        assert sorted(other) == sorted(first), combo
        for name in first:
            assert other[name] == first[name], f"{combo}: {name} differs"


@pytest.mark.reference
def test_conversion_is_reproducible_and_replaces_atomically(sources, converted, tmp_path, capsys):
    src = sources[("old", "bin")]
    out = tmp_path / "again"
    convert(str(src), str(out), progress=True)
    printed = capsys.readouterr().out
    assert "semantic.safetensors" in printed and "voices/" in printed and "in total" in printed
    assert _files(out) == _files(converted[("old", "bin")])  # byte for byte, barknp.json included
    # the reproducible writer still writes files the safetensors library itself reads
    from safetensors import safe_open
    from safetensors.numpy import load_file

    theirs = load_file(str(out / "fine.safetensors"))
    _, ours = load_stage(str(out / "fine.safetensors"), "fine")
    assert sorted(theirs) == sorted(ours) and all(np.array_equal(theirs[k], ours[k]) for k in ours)
    with safe_open(str(out / "fine.safetensors"), "np") as f:
        assert f.metadata()["stage"] == "fine" and json.loads(f.metadata()["config"])["bias"] is True
    (out / "semantic.safetensors").write_bytes(b"stale")
    convert(str(src), str(out), progress=False)  # over an existing barknp model: replaced
    assert _files(out) == _files(converted[("old", "bin")])
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


@pytest.mark.reference
def test_bias_false_detected(tmp_path):
    torch, reference = _reference()
    from transformers import BarkModel

    model = reference.randomize_(BarkModel(reference.bark_config("tiny", bias=False)).eval(), 3)
    src = reference.save_transformers_dir(model, tmp_path / "src", weight_norm="old", fmt="bin")
    (src / "vocab.txt").write_text("[PAD]\n")
    out = convert(str(src), str(tmp_path / "out"), progress=False)
    for stage in ("semantic", "coarse", "fine"):
        config, tensors = load_stage(stage_path(out, stage), stage)
        assert config["bias"] is False, stage
        want = _expected(model, stage)
        assert sorted(tensors) == sorted(want), stage
        assert "layers.0.attn.att_proj.bias" not in tensors
        for name in want:
            _assert_close(f"{stage}.{name}", tensors[name], want[name])
    # the fine GPT's layer norms keep their bias whatever `bias` says (plain torch LayerNorms)
    _, fine = load_stage(stage_path(out, "fine"), "fine")
    assert "layers.0.layernorm_1.bias" in fine and "layernorm_final.bias" in fine
    _, sem = load_stage(stage_path(out, "semantic"), "semantic")
    assert "layers.0.layernorm_1.bias" not in sem


# --- manifests --------------------------------------------------------------------------------------

def _make_manifests():
    _reference()
    import make_manifests

    return make_manifests


@pytest.mark.reference
def test_committed_manifests_are_current():
    mm = _make_manifests()
    for path, text in mm.expected_files().items():
        assert path.is_file(), f"{path} missing: run python tools/make_manifests.py"
        assert path.read_text() == text, f"{path} is stale: run python tools/make_manifests.py"
    small = json.loads((REPO / "weights" / "manifests" / "suno--bark-small.json").read_text())
    assert small["bias"] is False and "layers.0.attn.att_proj.bias" not in small["stages"]["semantic"]
    assert small["stages"]["semantic"]["layers.11.attn.att_proj.weight"]["shape"] == [2304, 768]


@pytest.mark.reference
@pytest.mark.parametrize("size", ["small", "large"])
def test_config_layout_agrees_with_transformers_modules(size):
    """barknp.convert.layout (from the config) and the manifest (from torch modules) list the same."""
    mm = _make_manifests()
    from barknp.config import CodecConfig, GPTConfig, config_from_dict
    from barknp.convert import layout

    manifest = mm.manifest_for(size)
    cfg = _reference()[1].bark_config(size, bias=manifest["bias"]).to_dict()
    for stage, key in (("semantic", "semantic_config"), ("coarse", "coarse_acoustics_config"), ("fine", "fine_acoustics_config")):
        gpt = config_from_dict(GPTConfig, {**cfg[key], "bias": manifest["bias"]})
        want = {n: e["shape"] for n, e in manifest["stages"][stage].items()}
        assert {n: list(s) for n, s in layout.gpt_tensors(gpt, stage == "fine").items()} == want, stage
    codec = config_from_dict(CodecConfig, cfg["codec_config"])
    got = layout.codec_tensors(codec, layout.num_quantizers(codec, cfg["codec_config"]["target_bandwidths"]))
    assert {n: list(s) for n, s in got.items()} == {n: e["shape"] for n, e in manifest["stages"]["codec"].items()}


@pytest.mark.reference
def test_manifest_check(sources):
    mm = _make_manifests()
    config = json.loads((sources[("new", "bin")] / "config.json").read_text())
    stages = convert_mod.split_stages(convert_mod.read_weights(str(sources[("new", "bin")])), config)
    tiny = mm.manifest_for("tiny", bias=True)
    convert_mod.check_manifest(stages, tiny, "tiny")  # passes
    bad = json.loads(json.dumps(tiny))
    bad["stages"]["coarse"]["lm_head.weight"]["shape"] = [12096, 64]
    with pytest.raises(BarkError, match="coarse: tensor lm_head.weight .* manifest"):
        convert_mod.check_manifest(stages, bad, "bad")
    bad = json.loads(json.dumps(tiny))
    del bad["stages"]["codec"]["quantizer.layers.31.codebook.embed"]
    with pytest.raises(BarkError, match="not in manifest"):
        convert_mod.check_manifest(stages, bad, "bad")
    # an official repo id is checked against its shipped manifest: a tiny model is not suno/bark-small
    small = json.loads((REPO / "weights" / "manifests" / "suno--bark-small.json").read_text())
    with pytest.raises(BarkError, match="suno--bark-small"):
        convert_mod.check_manifest(stages, small, "suno--bark-small.json")


# --- failures leave nothing behind --------------------------------------------------------------

@pytest.mark.reference
@pytest.mark.parametrize("exc", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_failure_mid_write_leaves_nothing(sources, converted, tmp_path, monkeypatch, exc):
    calls = []
    real = convert_mod.save_stage

    def failing(path, *args):
        calls.append(path)
        if len(calls) == 3:
            raise exc
        return real(path, *args)

    monkeypatch.setattr(convert_mod, "save_stage", failing)
    out = tmp_path / "model"
    with pytest.raises(type(exc)):
        convert(str(sources[("new", "safetensors")]), str(out), progress=False)
    assert len(calls) == 3
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    # over an existing model: the old one survives intact
    shutil.copytree(converted[("new", "safetensors")], out)
    calls.clear()
    with pytest.raises(type(exc)):
        convert(str(sources[("new", "safetensors")]), str(out), progress=False)
    assert _files(out) == _files(converted[("new", "safetensors")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


@pytest.mark.reference
def test_refuses_to_overwrite_foreign_out(sources, tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep")
    with pytest.raises(BarkError, match="not a barknp model directory"):
        convert(str(sources[("new", "bin")]), str(foreign), progress=False)
    assert (foreign / "precious.txt").read_text() == "keep"
    afile = tmp_path / "file"
    afile.write_text("x")
    with pytest.raises(BarkError, match="refusing to overwrite"):
        convert(str(sources[("new", "bin")]), str(afile), progress=False)


# --- untrusted sources ------------------------------------------------------------------------------

def _linked_copy(src: Path, dst: Path) -> Path:
    """A cheap copy of a source directory: weights symlinked, small files copied."""
    dst.mkdir()
    for p in src.iterdir():
        if p.is_dir():
            shutil.copytree(p, dst / p.name)
        elif p.suffix in (".bin", ".safetensors"):
            (dst / p.name).symlink_to(p)
        else:
            shutil.copyfile(p, dst / p.name)
    return dst


def _set_voice_path(src: Path, voice: str, key: str, value: str):
    index = json.loads((src / "speaker_embeddings_path.json").read_text())
    index[voice][key] = value
    (src / "speaker_embeddings_path.json").write_text(json.dumps(index))


@pytest.mark.reference
def test_voice_paths_may_not_escape(sources, tmp_path):
    if _shared("bark-voices") is None:
        pytest.skip(f"no voices at {SHARED / 'bark-voices'}")
    base = sources[("new", "bin")]
    secret = tmp_path / "secret.npy"
    np.save(secret, np.arange(5))
    cases = {
        "dotdot": "../secret.npy",
        "absolute": str(secret),
        "nested_dotdot": "speaker_embeddings/../../secret.npy",
    }
    for label, value in cases.items():
        src = _linked_copy(base, tmp_path / label)
        _set_voice_path(src, "announcer", "semantic_prompt", value)
        with pytest.raises(BarkError, match="leaves the model directory"):
            convert(str(src), str(tmp_path / f"out-{label}"), progress=False)
        assert not (tmp_path / f"out-{label}").exists()
    src = _linked_copy(base, tmp_path / "symlink")
    (src / "speaker_embeddings" / "link.npy").symlink_to(secret)
    _set_voice_path(src, "announcer", "semantic_prompt", "speaker_embeddings/link.npy")
    with pytest.raises(BarkError, match="resolves outside"):
        convert(str(src), str(tmp_path / "out-symlink"), progress=False)


@pytest.mark.reference
def test_voice_arrays_are_validated(sources, tmp_path):
    if _shared("bark-voices") is None:
        pytest.skip(f"no voices at {SHARED / 'bark-voices'}")
    base = sources[("new", "bin")]
    bad = {"float": np.zeros(10, np.float32), "ndim": np.zeros((2, 10), np.int64),
           "range": np.full(10, 20000, np.int64)}
    for label, arr in bad.items():
        src = _linked_copy(base, tmp_path / label)
        np.save(src / "speaker_embeddings" / "bad.npy", arr)
        _set_voice_path(src, "announcer", "semantic_prompt", "speaker_embeddings/bad.npy")
        with pytest.raises(BarkError, match="voice announcer: semantic_prompt"):
            convert(str(src), str(tmp_path / f"out-{label}"), progress=False)
    src = _linked_copy(base, tmp_path / "pickled")
    np.save(src / "speaker_embeddings" / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    _set_voice_path(src, "announcer", "fine_prompt", "speaker_embeddings/obj.npy")
    with pytest.raises(BarkError, match="voice announcer: cannot read"):
        convert(str(src), str(tmp_path / "out-pickled"), progress=False)


@pytest.mark.reference
def test_malicious_bin_is_refused_not_run(sources, tmp_path):
    import pickle
    import zipfile

    sentinel = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (eval, (f"open({str(sentinel)!r}, 'w').write('x')",))

    src = tmp_path / "src"
    src.mkdir()
    shutil.copyfile(sources[("new", "bin")] / "config.json", src / "config.json")
    (src / "vocab.txt").write_text("[PAD]\n")
    with zipfile.ZipFile(src / "pytorch_model.bin", "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({"semantic.x": Evil()}, protocol=2))
    with pytest.raises(BarkError, match=r"(__builtin__|builtins)\.eval"):
        convert(str(src), str(tmp_path / "out"), progress=False)
    assert not sentinel.exists()
    assert not (tmp_path / "out").exists()


@pytest.mark.reference
@pytest.mark.parametrize("fmt", ["bin", "safetensors"])
def test_truncated_weights(sources, tmp_path, fmt):
    src = _linked_copy(sources[("old", fmt)], tmp_path / "src")
    name = "pytorch_model.bin" if fmt == "bin" else "model.safetensors"
    raw = (src / name).read_bytes()
    (src / name).unlink()
    (src / name).write_bytes(raw[: len(raw) * 2 // 3])
    with pytest.raises(BarkError, match="truncated|corrupt"):
        convert(str(src), str(tmp_path / "out"), progress=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.reference
def test_checkpoint_not_matching_config(sources, tmp_path):
    src = _linked_copy(sources[("new", "safetensors")], tmp_path / "src")
    config = json.loads((src / "config.json").read_text())
    config["coarse_acoustics_config"]["num_layers"] = 3
    (src / "config.json").write_text(json.dumps(config))
    with pytest.raises(BarkError, match="coarse: tensor layers.2.* is missing"):
        convert(str(src), str(tmp_path / "out"), progress=False)


# --- hub, cache, locate -------------------------------------------------------------------------------

def _fake_hub_cache(cache: Path, repo: str, src: Path, revision="0123456789abcdef0123456789abcdef01234567"):
    """A Hugging Face cache entry for ``repo`` as snapshot_download leaves it: blobs + symlinks."""
    entry = cache / ("models--" + repo.replace("/", "--"))
    snap = entry / "snapshots" / revision
    (entry / "refs").mkdir(parents=True)
    (entry / "refs" / "main").write_text(revision)
    (entry / "blobs").mkdir()
    for i, p in enumerate(sorted(q for q in src.rglob("*") if q.is_file())):
        blob = entry / "blobs" / f"blob{i}"
        if p.suffix in (".bin", ".safetensors"):
            blob.symlink_to(p)  # big files: stand-in for a blob
        else:
            shutil.copyfile(p, blob)
        link = snap / p.relative_to(src)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    return snap


@pytest.mark.reference
def test_hub_repo_from_offline_cache_and_locate(sources, converted, tmp_path, monkeypatch):
    cache = tmp_path / "hf"
    _fake_hub_cache(cache, "tester/bark-tiny", sources[("new", "bin")])
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("BARKNP_HOME", str(tmp_path / "home"))
    out = locate("tester/bark-tiny", progress=False)
    assert out == str(tmp_path / "home" / "tester--bark-tiny")
    info = json.loads((Path(out) / "barknp.json").read_text())
    assert info["source"] == {"repo": "tester/bark-tiny", "revision": "0123456789abcdef0123456789abcdef01234567"}
    mine, ref_files = _files(Path(out)), _files(converted[("new", "bin")])
    mine.pop("barknp.json"), ref_files.pop("barknp.json")
    assert mine == ref_files
    # second call: found, not converted again; a converted dir is returned as is
    monkeypatch.setattr(convert_mod, "split_stages", lambda *a: pytest.fail("converted twice"))
    assert locate("tester/bark-tiny", progress=False) == out
    assert locate(out) == out
    # official ids are checked against their manifest: this tiny model is not suno/bark-small
    monkeypatch.undo()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    _fake_hub_cache(cache, "suno/bark-small", sources[("new", "bin")])
    with pytest.raises(BarkError, match="manifest suno--bark-small.json"):
        convert("suno/bark-small", str(tmp_path / "small"), offline=True, progress=False)
    assert not (tmp_path / "small").exists()


def test_offline_without_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BarkError, match=r"suno/bark-small: not in the Hugging Face cache and offline mode is on"):
        convert("suno/bark-small", str(tmp_path / "out"), progress=False)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with pytest.raises(BarkError, match="not in the Hugging Face cache"):
        convert("suno/bark-small", str(tmp_path / "out"), offline=True, progress=False)
    assert not (tmp_path / "out").exists()


def test_repo_not_found_and_unknown_src(tmp_path, monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import RepositoryNotFoundError

    seen = {}

    def fake_snapshot(repo_id, **kw):
        seen.update(kw, repo_id=repo_id)
        import types

        raise RepositoryNotFoundError("404 Client Error", response=types.SimpleNamespace(headers={}, request=None))

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot)
    with pytest.raises(BarkError, match="nobody/nothing: no such model on the Hugging Face hub"):
        convert("nobody/nothing", str(tmp_path / "out"), offline=False, progress=False)
    assert seen["repo_id"] == "nobody/nothing" and seen["local_files_only"] is False
    assert "config.json" in seen["allow_patterns"] and "*.pt" not in seen["allow_patterns"]
    for bad in (str(tmp_path / "no" / "such" / "dir"), "not a repo", "a/b/c", "../no-such-barknp-dir"):
        with pytest.raises(BarkError, match="not a directory and not a Hugging Face repo id"):
            convert(bad, str(tmp_path / "out"), progress=False)
    empty = tmp_path / "emptydir"
    empty.mkdir()
    with pytest.raises(BarkError, match="no config.json"):
        convert(str(empty), str(tmp_path / "out"), progress=False)


def test_default_home_read_at_call_time(monkeypatch, tmp_path):
    monkeypatch.setenv("BARKNP_HOME", str(tmp_path / "a"))
    assert bconvert.default_home() == str(tmp_path / "a")
    monkeypatch.delenv("BARKNP_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "h"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert bconvert.default_home() == str(tmp_path / "h" / ".cache" / "barknp")


# --- the command line -------------------------------------------------------------------------------

def _cli(*args, env=None):
    import barknp

    pkg_parent = str(Path(barknp.__file__).resolve().parents[1])
    env = {**os.environ, **(env or {}), "PYTHONPATH": pkg_parent}
    return subprocess.run([sys.executable, "-m", "barknp.cli", *args], capture_output=True, text=True, env=env,
                          timeout=120)


def test_cli_errors_are_one_line(tmp_path):
    r = _cli("convert", str(tmp_path / "nowhere" / "x"), str(tmp_path / "out"))
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("barknp: error: "), r.stderr
    assert "not a directory and not a Hugging Face repo id" in lines[0]
    assert "Traceback" not in r.stderr and r.stdout == ""
    r = _cli("convert", "suno/bark-small", str(tmp_path / "out"), "--offline",
             env={"HF_HUB_CACHE": str(tmp_path / "empty")})
    assert r.returncode != 0 and r.stderr.count("\n") == 1 and "offline mode is on" in r.stderr, r.stderr


def test_cli_interrupt_and_oserror_in_process(monkeypatch, capsys):
    from barknp import cli

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(bconvert, "convert", interrupted)
    assert cli.main(["convert", "a", "b"]) == 130
    # a leading newline ends any half-drawn progress bar; the message is still one line
    assert capsys.readouterr().err.lstrip("\n") == "barknp: error: interrupted\n"

    def oserror(*a, **k):
        raise PermissionError(13, "Permission denied", "/root/x")

    monkeypatch.setattr(bconvert, "convert", oserror)
    assert cli.main(["convert", "a", "b"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("barknp: error: ") and "Permission denied" in err and err.count("\n") == 1


@pytest.mark.reference
def test_cli_success_lists_files(sources, tmp_path):
    r = _cli("convert", str(sources[("new", "safetensors")]), str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    for name in ("barknp.json", "semantic.safetensors", "coarse.safetensors", "fine.safetensors", "codec.safetensors"):
        assert name in r.stdout
    assert r.stdout.strip().splitlines()[-1].startswith("wrote ")
    assert (tmp_path / "out" / "barknp.json").is_file()


def test_packaging_lists_every_package_and_carries_the_manifests():
    """pyproject.toml lists barknp's packages by hand (so that weights/manifests can travel as
    barknp.convert.manifests): every folder with an __init__.py must be listed, and the manifests'
    mapping must point at files that exist."""
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11's tomllib")
    root = Path(__file__).resolve().parent.parent
    config = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {
        ".".join(p.parent.relative_to(root).parts) for p in (root / "barknp").rglob("__init__.py")
    }
    listed = set(config["packages"])
    assert found <= listed, f"packages missing from pyproject.toml: {sorted(found - listed)}"
    manifests = root / config["package-dir"]["barknp.convert.manifests"]
    assert sorted(p.name for p in manifests.glob("*.json")) == ["suno--bark-small.json", "suno--bark.json"]


@pytest.mark.parametrize("header", [
    [1, 2], {"a": 5}, {"a": {"dtype": "F32"}}, {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, "x"]}},
    {"a": {"dtype": 4, "shape": [2], "data_offsets": [0, 8]}}, {"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}},
    {"__metadata__": 3},
])
def test_a_malformed_header_is_a_one_line_error(tmp_path, header):
    import json
    import struct

    from barknp.weights import read_header

    raw = json.dumps(header).encode()
    path = tmp_path / "bad.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(8))
    with pytest.raises(BarkError, match="corrupt safetensors header"):
        read_header(str(path))
    with pytest.raises(BarkError, match="corrupt safetensors header"):
        load_stage(str(path), "fine")


@pytest.mark.reference
def test_an_unwritable_target_is_a_one_line_error(sources, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(BarkError, match="cannot write the converted model") as e:
        convert(str(sources[("old", "bin")]), str(blocker / "model"), progress=False)
    assert "\n" not in str(e.value)
