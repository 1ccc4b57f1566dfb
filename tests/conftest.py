"""Shared test fixtures: where the repository, its tools and ../shared/data are."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
GOLDENS = REPO / "tests" / "goldens"

# tools/ holds scripts, not a package; tests import its reference builders directly.
sys.path.insert(0, str(REPO / "tools"))
sys.path.insert(0, str(REPO / "tests"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data beside the checkout (real tokenizer and Suno's voices), or skip."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real test data not found at {SHARED_DATA} (../shared/data beside the checkout)")
    return SHARED_DATA


def tiny_model(tmp_path_factory) -> tuple[Path, Path]:
    """(transformers-layout source, converted directory) of tools/reference.build_bark("tiny", 0):
    2 layers, width 32, the real vocabularies and codec, the real tokenizer and four of Suno's
    voices. Built at most once per test session; skips without torch or ../shared/data."""
    if not (SHARED_DATA / "bert-base-multilingual-cased").is_dir() or not (SHARED_DATA / "bark-voices").is_dir():
        pytest.skip(f"real tokenizer and voices not found at {SHARED_DATA} (../shared/data beside the checkout)")
    pytest.importorskip("torch", reason="the tiny test model is built with torch (tools/reference.py)")
    pytest.importorskip("transformers", reason="the tiny test model is a transformers BarkModel")
    root = tmp_path_factory.getbasetemp() / "barknp-tiny-model"
    src, out = root / "src", root / "converted"
    if not (out / "barknp.json").is_file():
        import reference

        from barknp.convert import convert

        reference.save_transformers_dir(
            reference.build_bark("tiny", seed=0), src,
            tokenizer_from=SHARED_DATA / "bert-base-multilingual-cased", voices_from=SHARED_DATA / "bark-voices",
        )
        convert(str(src), str(out), progress=False)
    return src, out


@contextlib.contextmanager
def num_threads(n: int):
    """Run the body with ``n`` threads for BLAS and Numba (barknp.set_num_threads), then restore
    both engines' counts."""
    import numba

    from barknp.threads import get_num_threads, set_num_threads

    before = get_num_threads()
    set_num_threads(n)
    try:
        yield
    finally:
        set_num_threads(before["blas"] or before["numba"])
        numba.set_num_threads(before["numba"])


def one_thread():
    """Run in-process generations single-threaded (the test machine's two cores are shared: threads
    fighting over them make tiny matrix products ten times slower), then restore the setting."""
    return num_threads(1)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    """The converted tiny model's directory (see :func:`tiny_model`)."""
    return str(tiny_model(tmp_path_factory)[1])
