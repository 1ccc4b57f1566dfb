"""Live parity at the full bark-small shape: transformers' models vs barknp, through the converter.

Random weights at 12 layers, width 768, 12 heads and the real vocabularies (semantic 129,600 in /
10,048 out, coarse 12,096, fine 1,056), saved in the transformers layout, converted by barknp's
converter and loaded from the converted files. Tolerance: max |ours - ref| <= 1e-5 * max |ref|.
"""

from __future__ import annotations

import numpy as np
import pytest
from parity import assert_close as _assert_close

pytestmark = pytest.mark.reference
torch = pytest.importorskip("torch", reason="the live reference needs torch and transformers")
pytest.importorskip("transformers", reason="the live reference needs transformers")

RTOL = 1e-5


def assert_close(ours, ref, rtol, what):
    """Check, and print the measured error (shown with pytest -s) for the README's table."""
    rel = _assert_close(ours, ref, rtol, what)
    print(f"\n{what}: max abs error {np.abs(ours - ref).max():.2g}, scale {np.abs(ref).max():.2g}, relative {rel:.2g}")


@pytest.fixture(scope="module")
def pair(tmp_path_factory, shared_data):
    """(transformers BarkModel, converted model directory) at the bark-small shape."""
    from reference import build_bark, save_transformers_dir

    from barknp.convert import convert

    torch.set_num_threads(2)
    ref = build_bark("small", seed=5)
    src = save_transformers_dir(ref, tmp_path_factory.mktemp("small-src"), fmt="safetensors",
                                tokenizer_from=shared_data / "bert-base-multilingual-cased")
    out = convert(str(src), str(tmp_path_factory.mktemp("small") / "model"), progress=False)
    return ref, out


def test_semantic_merged_context_then_cache(pair):
    from barknp.models.gpt import CausalGPT

    ref, out = pair
    model = CausalGPT.load(f"{out}/semantic.safetensors", "semantic")
    c = model.config
    assert (c.num_layers, c.hidden_size, c.num_heads, c.input_vocab_size, c.output_vocab_size) == (
        12, 768, 12, 129_600, 10_048)
    rng = np.random.default_rng(0)
    ids = np.concatenate([
        rng.integers(10_048, 129_595, (2, 256)), rng.integers(0, 10_001, (2, 256)),
        np.full((2, 1), 129_599), rng.integers(0, 10_000, (2, 2)),
    ], axis=1)  # (2, 515): batch of two, merged prompt plus two generated tokens
    cache = model.new_cache(batch=2)
    ours = np.concatenate([
        model.forward(ids[:, :513], cache, merge_context=True),
        model.forward(ids[:, 513:514], cache),
        model.forward(ids[:, 514:], cache),
    ], axis=1)  # (2, 259, V)
    with torch.no_grad():
        t = torch.from_numpy(ids)
        wte = ref.semantic.input_embeds_layer
        embeds = torch.cat([wte(t[:, :256]) + wte(t[:, 256:512]), wte(t[:, 512:])], dim=1)
        want = ref.semantic(inputs_embeds=embeds).logits.numpy()
    assert_close(ours, want, RTOL, "semantic bark-small")


def test_coarse_unmerged_with_cache(pair):
    from barknp.models.gpt import CausalGPT

    ref, out = pair
    model = CausalGPT.load(f"{out}/coarse.safetensors", "coarse")
    ids = np.random.default_rng(1).integers(0, 12_096, (1, 300))
    cache = model.new_cache()
    ours = np.concatenate([model.forward(ids[:, :299], cache), model.forward(ids[:, 299:], cache)], axis=1)
    with torch.no_grad():
        want = ref.coarse_acoustics(input_ids=torch.from_numpy(ids)).logits.numpy()
    assert_close(ours, want, RTOL, "coarse bark-small")


@pytest.mark.parametrize("codebook_idx", range(1, 8))
def test_fine_every_codebook(pair, codebook_idx):
    from barknp.models.fine import FineGPT

    ref, out = pair
    model = FineGPT.load(f"{out}/fine.safetensors")
    codes = np.random.default_rng(codebook_idx).integers(0, 1_025, (2, 96, 8))
    with torch.no_grad():
        want = ref.fine_acoustics(codebook_idx, input_ids=torch.from_numpy(codes)).logits.numpy()
    assert_close(model.forward(codebook_idx, codes), want, RTOL, f"fine bark-small codebook {codebook_idx}")
