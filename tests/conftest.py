"""Shared test fixtures: where the repository, its tools and ../shared/data are."""

from __future__ import annotations

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


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, shared_data) -> str:
    """A converted random-weight tiny Bark (2 layers, width 32, real vocabularies, real codec),
    with the real tokenizer and a few of Suno's voices: built once per test session."""
    pytest.importorskip("torch", reason="building the random-weight model needs torch and transformers")
    from reference import build_bark, save_transformers_dir

    from barknp.convert import convert

    src = save_transformers_dir(
        build_bark("tiny", seed=0), tmp_path_factory.mktemp("tiny-src"),
        tokenizer_from=shared_data / "bert-base-multilingual-cased", voices_from=shared_data / "bark-voices",
    )
    return convert(str(src), str(tmp_path_factory.mktemp("tiny") / "model"), progress=False)
