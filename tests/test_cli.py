"""The ``barknp`` command line, against a tiny random-weight Bark converted once per session.

Success paths run ``python -m barknp`` in a subprocess, as a user would; error paths mostly call
``barknp.cli.main`` in-process (same code, no interpreter start-up) and check what a user sees:
exactly one ``barknp: error: ...`` line on stderr, a non-zero exit, no traceback, and no output file
left behind. Generations are capped with ``--max-duration-s`` to a fraction of a second of speech.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from barknp import cli
from barknp.generation.voices import PRESET_NAMES
from conftest import one_thread, tiny_model
from parity import assert_elementwise_close

REPO = Path(__file__).resolve().parents[1]
CAP = ["--max-duration-s", "0.3", "--threads", "1"]  # ~15 semantic tokens per generation
STAGE_TIMES = re.compile(r"semantic (\d+\.\d+) s, coarse (\d+\.\d+) s, fine (\d+\.\d+) s, codec (\d+\.\d+) s")
TINY_VOICES = ["announcer", "en_speaker_0", "v2/de_speaker_1", "v2/en_speaker_6"]



@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    src, out = tiny_model(tmp_path_factory)
    with one_thread():
        yield src, out


@pytest.fixture
def env(tmp_path):
    """Environment for subprocesses: the checkout importable, no network, an empty model home."""
    e = dict(os.environ)
    e.update(PYTHONPATH=str(REPO) + os.pathsep + e.get("PYTHONPATH", ""), HF_HUB_OFFLINE="1",
             HF_HUB_CACHE=str(tmp_path / "hf-cache"), BARKNP_HOME=str(tmp_path / "home"),
             OPENBLAS_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    e.pop("BARKNP_DEBUG", None)
    return e


def run(env, *args, stdin=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "barknp", *map(str, args)], env=env, cwd=cwd, input=stdin,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def offline_env(monkeypatch, tmp_path):
    """The same isolation for in-process runs."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("BARKNP_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("BARKNP_DEBUG", raising=False)


def main(capsys, *argv, stdin=None, monkeypatch=None):
    """Run the CLI in-process -> (exit code, stdout, stderr)."""
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as e:  # argparse: --help, usage errors
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(code, err, *patterns, exit_code=1):
    assert code == exit_code, f"exit code {code}, stderr: {err!r}"
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("barknp: error: "), f"not one error line: {err!r}"
    assert "Traceback" not in err
    for p in patterns:
        assert re.search(p, lines[0]), f"{p!r} not in {lines[0]!r}"


def leftovers(folder: Path) -> list[str]:
    """Files in ``folder`` (recursively): temporaries or partial outputs that should not be there."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def read_wav(path):
    import soundfile

    audio, sr = soundfile.read(str(path), dtype="float32")
    return audio, sr


# --- success, in a subprocess -----------------------------------------------------------------

@pytest.mark.reference
def test_say_text_stdin_file_and_saved_voice(tiny, env, tmp_path):
    _, model = tiny
    common = ["--model", model, "--seed", 3, *CAP]
    first = run(env, "say", "Hello there.", "-o", tmp_path / "a.wav", "--voice", "v2/en_speaker_6",
                "--save-voice", tmp_path / "me.npz", *common)
    assert first.returncode == 0, first.stderr
    assert "Traceback" not in first.stderr
    audio, sr = read_wav(tmp_path / "a.wav")
    assert sr == 24_000 and audio.ndim == 1 and len(audio) > 0 and np.abs(audio).max() > 0
    assert f"wrote {tmp_path / 'a.wav'}: {len(audio) / sr:.2f} s of audio (seed 3)" in first.stdout
    times = STAGE_TIMES.search(first.stdout)
    assert times, first.stdout  # every stage's time is printed
    for stage in ("semantic", "coarse", "fine", "codec"):  # progress labels, not --silent
        assert f"barknp: {stage}" in first.stderr

    voice = np.load(tmp_path / "me.npz")
    assert sorted(voice.files) == ["coarse_prompt", "fine_prompt", "semantic_prompt"]
    assert voice["fine_prompt"].shape == (8, len(audio) // 320)

    # the same text on stdin, same seed and voice: the same file, byte for byte
    piped = run(env, "say", "-o", tmp_path / "b.wav", "--voice", "v2/en_speaker_6", "--silent", *common,
                stdin="Hello   there.\n")
    assert piped.returncode == 0, piped.stderr
    assert (tmp_path / "b.wav").read_bytes() == (tmp_path / "a.wav").read_bytes()
    assert "barknp: semantic" not in piped.stderr  # --silent

    # -f FILE with the saved voice
    (tmp_path / "text.txt").write_text("A voice of my own.\n", encoding="utf-8")
    reused = run(env, "say", "-f", tmp_path / "text.txt", "-o", tmp_path / "c.wav", "--voice", tmp_path / "me.npz",
                 "-q", *common)
    assert reused.returncode == 0, reused.stderr
    c, _ = read_wav(tmp_path / "c.wav")
    assert len(c) > 0
    assert leftovers(tmp_path) == ["a.wav", "b.wav", "c.wav", "me.npz", "text.txt"]


@pytest.mark.reference
def test_out_dir_writes_one_wav_per_line_with_seed_plus_index(tiny, env, tmp_path, capsys):
    _, model = tiny
    (tmp_path / "lines.txt").write_text("First line.\n\n   \nSecond line.\n", encoding="utf-8")
    r = run(env, "say", "-f", tmp_path / "lines.txt", "--out-dir", tmp_path / "clips", "--seed", 5, "--model",
            model, "-q", *CAP)
    assert r.returncode == 0, r.stderr
    assert leftovers(tmp_path / "clips") == ["001.wav", "002.wav"]
    assert "wrote 2 files to" in r.stdout
    assert len(re.findall(r"^  time: semantic", r.stdout, re.M)) == 2
    # line 2 used seed 5 + 1: the same as saying it alone with seed 6
    code, _, err = main(capsys, "say", "Second line.", "-o", tmp_path / "alone.wav", "--seed", 6, "--model", model,
                        "-q", *CAP)
    assert code == 0, err
    assert (tmp_path / "alone.wav").read_bytes() == (tmp_path / "clips" / "002.wav").read_bytes()


@pytest.mark.reference
def test_batch_size_writes_the_same_files_as_line_by_line(tiny, tmp_path, capsys):
    _, model = tiny
    (tmp_path / "lines.txt").write_text("First line.\nSecond line.\nThird one.\n", encoding="utf-8")
    for name, extra in (("one", []), ("batched", ["--batch-size", 2])):
        code, out, err = main(capsys, "say", "-f", tmp_path / "lines.txt", "--out-dir", tmp_path / name, "--seed", 9,
                              "--model", model, "-q", "--no-long-form", *extra, *CAP)
        assert code == 0, err
    assert "batch of 2" in out and "batch of 1" in out
    for f in ("001.wav", "002.wav", "003.wav"):
        one, _ = read_wav(tmp_path / "one" / f)
        batched, _ = read_wav(tmp_path / "batched" / f)
        assert one.shape == batched.shape
        # the same tokens; batched BLAS may round the waveform differently by ~1e-7, which can move
        # a sample across one 16-bit step of the WAV
        assert_elementwise_close(batched, one, 1.5 / 32768, 0.0, f"{f}: batched against one by one")


@pytest.mark.reference
def test_long_form_splits_and_joins_with_gaps(tiny, tmp_path, capsys, offline_env):
    _, model = tiny
    text = "The first sentence is here. A second one follows it. And a third closes."
    code, out, err = main(capsys, "say", text, "-o", tmp_path / "long.wav", "--model", model, "--seed", 1,
                          "--chunk-len", 30, "--gap-s", 0.5, *CAP)
    assert code == 0, err
    assert "chunk 3/3: codec" in err and "chunk 4/" not in err
    long, _ = read_wav(tmp_path / "long.wav")
    code, out, err = main(capsys, "say", text, "-o", tmp_path / "one.wav", "--model", model, "--seed", 1,
                          "--no-long-form", *CAP)
    assert code == 0, err
    assert "chunk" not in err
    one, _ = read_wav(tmp_path / "one.wav")
    # three capped generations plus two half-second gaps, against one capped generation
    assert len(long) >= 2 * 12_000 + 3 * 320 and len(long) > len(one) + 2 * 12_000 - 320


@pytest.mark.reference
def test_first_use_converts_into_home_and_voices_lists_presets(tiny, tmp_path, capsys, offline_env):
    src, _ = tiny
    home = tmp_path / "models"
    # before conversion: Suno's preset names, with a note
    code, out, err = main(capsys, "voices", "--model", src, "--home", home)
    assert code == 0 and out.split() == sorted(PRESET_NAMES) and "not converted yet" in err
    code, out, err = main(capsys, "say", "Hi.", "-o", tmp_path / "hi.wav", "--model", src, "--home", home, *CAP)
    assert code == 0, err
    assert "converting it into" in err
    (converted,) = home.iterdir()
    assert converted.name.startswith("local--src--") and (converted / "barknp.json").is_file()
    code, out, err = main(capsys, "voices", "--model", src, "--home", home)
    assert code == 0 and out.split() == TINY_VOICES and err == ""


@pytest.mark.reference
def test_info_reports_stages_parameters_size_and_location(tiny, capsys):
    from barknp.weights import load_stage, stage_path

    _, model = tiny
    code, out, err = main(capsys, "info", model)
    assert code == 0, err
    assert f"location   {model}" in out and "float32" in out
    for stage in ("semantic", "coarse", "codec"):
        _, tensors = load_stage(stage_path(str(model), stage), stage)
        n = sum(t.size for t in tensors.values())
        assert re.search(rf"^{stage}\s+{n:,}\s+float32", out, re.M), (stage, n, out)
    _, fine = load_stage(stage_path(str(model), "fine"), "fine")
    n_fine = sum(t.size for k, t in fine.items() if not k.startswith("lm_heads."))  # tied heads once
    assert re.search(rf"^fine\s+{n_fine:,}\s", out, re.M), out
    disk = sum(p.stat().st_size for p in Path(model).rglob("*") if p.is_file())
    assert f"{disk / 1e6:.1f} MB on disk" in out
    assert "4 presets" in out


@pytest.mark.reference
def test_int8_weights_and_the_device_choice(tiny, tmp_path, capsys, offline_env):
    from barknp.cuda import cuda_available

    _, model = tiny
    own = tmp_path / "model"
    shutil.copytree(model, own)  # int8 files are written beside the model: keep the shared one as it is
    code, out, err = main(capsys, "say", "hi", "-o", tmp_path / "q.wav", "--model", own, "--weights", "int8",
                          "--kv-cache", "float16", "-q", *CAP)
    assert code == 0, err
    assert len(read_wav(tmp_path / "q.wav")[0]) > 0
    code, out, err = main(capsys, "say", "hi", "-o", tmp_path / "g.wav", "--model", own, "--device", "cuda",
                          "-q", *CAP)
    if cuda_available():
        assert code == 0, err
    else:  # refused at once, in one line, before loading anything
        assert_user_error(code, err, "no CUDA GPU")
        assert not (tmp_path / "g.wav").exists()
    # int8 weights or a float16 cache with the GPU: refused before any int8 file is made
    fresh = tmp_path / "fresh"
    shutil.copytree(model, fresh)
    for made in [*fresh.glob("*int8*"), *fresh.glob("*.f16.*")]:  # other tests may have made these files
        made.unlink()
    code, out, err = main(capsys, "say", "hi", "-o", tmp_path / "c.wav", "--model", fresh, "--device", "cuda",
                          "--weights", "int8", "-q", *CAP)
    assert_user_error(code, err, "int8 weights run on the CPU only")
    assert not list(fresh.glob("*int8*"))
    code, out, err = main(capsys, "say", "hi", "-o", tmp_path / "c.wav", "--model", fresh, "--device", "cuda",
                          "--weights", "float16", "-q", *CAP)
    assert_user_error(code, err, "float16 weights run on the CPU only")
    assert not list(fresh.glob("*.f16.*"))


@pytest.mark.reference
def test_int8_into_a_read_only_model_says_so(tiny, tmp_path, capsys, offline_env, monkeypatch):
    import barknp.convert.quantize as quantize

    def refuse(path, *args, **kwargs):  # what writing into a read-only folder raises (tests run as root here)
        raise PermissionError(13, "Permission denied", path)

    _, model = tiny
    own = tmp_path / "model"
    shutil.copytree(model, own)
    for made in own.glob("*int8*"):  # other tests may have made the shared model's int8 files
        made.unlink()
    monkeypatch.setattr(quantize, "save_stage", refuse)
    code, out, err = main(capsys, "say", "hi", "-o", tmp_path / "q.wav", "--model", own, "--weights", "int8",
                          "-q", *CAP)
    assert_user_error(code, err, "int8: cannot write", "Permission denied", "must be writable")
    assert "damaged" not in err  # the folder is the problem, not the model in it


@pytest.mark.parametrize("command", [[], ["say"], ["voices"], ["info"], ["convert"]])
def test_help_everywhere_has_examples(command, capsys):
    code, out, _ = main(capsys, *command, "--help")
    assert code == 0 and "examples:" in out and "barknp" in out


# --- errors -----------------------------------------------------------------------------------

@pytest.fixture
def no_model_load(monkeypatch):
    """Records whether the CLI got as far as loading a model (it must not, for bad arguments)."""
    calls = []
    original = cli._load_model
    monkeypatch.setattr(cli, "_load_model", lambda *a, **k: calls.append(a) or original(*a, **k))
    return calls


def test_empty_text_is_refused_before_loading(tmp_path, capsys, monkeypatch, no_model_load, offline_env):
    out = tmp_path / "x.wav"
    for argv, stdin in ((["  \n\t "], None), (["-"], "   \n"), ([], ""), (["-f", tmp_path / "empty.txt"], None)):
        (tmp_path / "empty.txt").write_text("\n \n")
        code, _, err = main(capsys, "say", *argv, "-o", out, stdin=stdin, monkeypatch=monkeypatch)
        assert_user_error(code, err, "empty")
    code, _, err = main(capsys, "say", "-f", tmp_path / "empty.txt", "--out-dir", tmp_path / "d")
    assert_user_error(code, err, "no non-empty lines")
    assert not no_model_load and not out.exists()


def test_conflicting_or_missing_arguments(tmp_path, capsys, monkeypatch, no_model_load, offline_env):
    (tmp_path / "t.txt").write_text("hi")
    cases = [
        (["say", "hi"], "-o OUT.wav"),
        (["say", "hi", "-o", tmp_path / "a.wav", "--out-dir", tmp_path / "d"], "exactly one"),
        (["say", "hi", "-f", tmp_path / "t.txt", "-o", tmp_path / "a.wav"], "not both"),
        (["say", "-f", tmp_path / "missing.txt", "-o", tmp_path / "a.wav"], "cannot read text file"),
        (["say", "-f", tmp_path / "t.txt", "--out-dir", tmp_path / "d", "--save-voice", tmp_path / "v.npz"],
         "--save-voice"),
        (["say", "hi", "-o", tmp_path / "a.wav", "--save-voice", tmp_path / "v.txt"], r"must end in \.npz"),
    ]
    for argv, pattern in cases:
        code, _, err = main(capsys, *argv)
        assert_user_error(code, err, pattern)
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe\x00bad")
    code, _, err = main(capsys, "say", "-f", tmp_path / "bad.txt", "-o", tmp_path / "a.wav")
    assert_user_error(code, err, "not UTF-8")
    assert not no_model_load and leftovers(tmp_path) == ["bad.txt", "t.txt"]
    # bad option values are usage errors (exit 2), never tracebacks
    code, _, err = main(capsys, "say", "hi", "-o", tmp_path / "a.wav", "--seed", "-1")
    assert code == 2 and "seed" in err and "Traceback" not in err


def test_unwritable_output_is_refused_before_any_work(tmp_path, capsys, no_model_load, offline_env):
    (tmp_path / "file").write_text("")
    (tmp_path / "adir").mkdir()
    cases = [
        (tmp_path / "missing" / "x.wav", "does not exist"),
        (tmp_path / "file" / "x.wav", "does not exist"),
        (tmp_path / "adir", "is a directory"),
    ]
    if Path("/proc").is_dir():  # a folder nobody, not even root, can create files in
        cases.append((Path("/proc/barknp-test.wav"), "cannot write to folder /proc"))
    for path, pattern in cases:
        code, _, err = main(capsys, "say", "hi", "-o", path, "--model", "suno/bark-small")
        assert_user_error(code, err, pattern)
    code, _, err = main(capsys, "say", "hi", "--out-dir", tmp_path / "file" / "sub")
    assert_user_error(code, err, "--out-dir")
    code, _, err = main(capsys, "say", "hi", "-o", tmp_path / "ok.wav", "--save-voice", tmp_path / "no" / "v.npz")
    assert_user_error(code, err, "--save-voice", "does not exist")
    assert not no_model_load and leftovers(tmp_path) == ["file"]


@pytest.mark.reference
def test_bad_voice(tiny, tmp_path, capsys, offline_env):
    _, model = tiny
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    np.savez(tmp_path / "partial.npz", semantic_prompt=np.zeros(10, np.int64))
    cases = [
        ("no_such_speaker", "unknown voice 'no_such_speaker'"),
        ("v2/xx_speaker_1", "unknown voice"),
        (str(tmp_path / "missing.npz"), "no such file"),
        (str(tmp_path / "junk.npz"), "cannot read"),
        (str(tmp_path / "partial.npz"), "missing key"),
    ]
    for voice, pattern in cases:
        code, _, err = main(capsys, "say", "hi", "-o", tmp_path / "x.wav", "--model", model, "--voice", voice,
                            "-q", *CAP)
        assert_user_error(code, err, "voice", pattern)
    assert not (tmp_path / "x.wav").exists()


def test_unknown_model_and_model_missing_offline(tmp_path, capsys, offline_env):
    code, _, err = main(capsys, "say", "hi", "-o", tmp_path / "x.wav", "--model", "./no/such/dir/../x y")
    assert_user_error(code, err, "unknown model")
    code, _, err = main(capsys, "say", "hi", "-o", tmp_path / "x.wav", "--model", "suno/bark-small", "--offline",
                        "--home", tmp_path / "home", "-q")
    assert_user_error(code, err, "suno/bark-small", "offline", "barknp convert suno/bark-small DIR")
    code, _, err = main(capsys, "info", "suno/bark-small", "--home", tmp_path / "home")
    assert_user_error(code, err, "not converted yet")
    # a voice no hub model has is refused before trying to fetch or convert anything
    code, _, err = main(capsys, "say", "hi", "-o", tmp_path / "x.wav", "--voice", "v2/en_speaker_99",
                        "--home", tmp_path / "home2")
    assert_user_error(code, err, "unknown voice 'v2/en_speaker_99'")
    assert not (tmp_path / "home2").exists()
    assert leftovers(tmp_path) == []


@pytest.mark.reference
def test_corrupt_cache_entry_names_the_file_and_the_fix(tiny, tmp_path, capsys, offline_env):
    _, model = tiny
    home = tmp_path / "home"
    entry = home / "suno--bark-small"
    shutil.copytree(model, entry)
    semantic = entry / "semantic.safetensors"
    with open(semantic, "r+b") as f:
        f.truncate(semantic.stat().st_size // 2)
    code, _, err = main(capsys, "say", "hi", "-o", tmp_path / "x.wav", "--home", home, "-q")
    assert_user_error(code, err, "semantic.safetensors", "truncated", f"delete the folder {re.escape(str(entry))}")
    code, _, err = main(capsys, "info", "suno/bark-small", "--home", home)
    assert_user_error(code, err, "semantic.safetensors", "delete the folder")
    # a damaged directory of the user's own: never advise deleting it, advise re-converting
    code, _, err = main(capsys, "say", "hi", "-o", tmp_path / "x.wav", "--model", entry, "--home", tmp_path / "h2")
    assert_user_error(code, err, "semantic.safetensors", "barknp convert")
    assert not (tmp_path / "x.wav").exists()


@pytest.mark.reference
def test_interrupt_during_conversion_leaves_no_half_model(tiny, tmp_path, capsys, monkeypatch, offline_env):
    from barknp.convert import core

    src, _ = tiny
    calls = []
    original = core.save_stage

    def interrupted(*a, **k):
        calls.append(a[1])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(*a, **k)

    monkeypatch.setattr(core, "save_stage", interrupted)
    home = tmp_path / "home"
    code, _, err = main(capsys, "say", "hi", "-o", tmp_path / "x.wav", "--model", src, "--home", home, "-q")
    assert code == 130 and "interrupted" in err and "Traceback" not in err
    assert calls == ["semantic", "coarse"]
    assert list(home.iterdir()) == []  # neither the model nor its temporary folder
    assert not (tmp_path / "x.wav").exists()


@pytest.mark.reference
def test_interrupt_during_generation_leaves_no_partial_wav(tiny, tmp_path, capsys, monkeypatch, offline_env):
    from barknp.model import Bark

    _, model = tiny

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(Bark, "coarse_to_fine", interrupted)
    code, _, err = main(capsys, "say", "hi", "-o", tmp_path / "x.wav", "--save-voice", tmp_path / "v.npz",
                        "--model", model, "-q", *CAP)
    assert code == 130 and "Traceback" not in err
    assert leftovers(tmp_path) == []


@pytest.mark.reference
def test_ctrl_c_in_a_real_process_exits_130_without_output(tiny, env, tmp_path):
    _, model = tiny
    proc = subprocess.Popen(
        [sys.executable, "-m", "barknp", "say", "A long one.", "-o", str(tmp_path / "x.wav"), "--model", str(model),
         "--max-duration-s", "15", "--threads", "1", "--seed", "0"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    reached = threading.Event()

    def watch():
        for line in proc.stderr:
            seen.append(line)
            if "barknp: coarse" in line:
                reached.set()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        assert reached.wait(120), f"never reached the coarse stage: {''.join(seen)}"
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
    watcher.join(10)
    err = "".join(seen).replace("\r", "\n")
    assert rc == 130, f"exit code {rc}; stderr: {err[-3000:]}"
    assert "Traceback" not in err and "barknp: error: interrupted" in err, err[-3000:]
    assert leftovers(tmp_path) == []


def test_unexpected_errors_are_one_line_too(tmp_path, capsys, monkeypatch, offline_env):
    def boom(args):
        raise RuntimeError("something\nunexpected")

    monkeypatch.setattr(cli, "_cmd_voices", boom)
    code, _, err = main(capsys, "voices")
    assert_user_error(code, err, "internal error", "RuntimeError: something unexpected", "BARKNP_DEBUG=1")


def test_a_real_process_reports_errors_in_one_line(env, tmp_path):
    r = run(env, "say", "", "-o", tmp_path / "x.wav")
    assert_user_error(r.returncode, r.stderr, "empty")
    assert r.stdout == ""
