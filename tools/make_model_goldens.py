"""Write tests/goldens/gpt.npz: logits of transformers' Bark GPTs on NumPy-drawn weights.

    python tools/make_model_goldens.py

The weights come from tools/random_weights.py and a seed, so only the inputs and the reference
logits are stored. tests/test_models_golden.py redraws the weights and compares barknp's logits.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from random_weights import random_gpt_tensors  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "goldens", "gpt.npz")

# Small widths but the real vocabularies, whose special tokens the algorithm indexes.
CASES = {
    "semantic": dict(num_layers=2, hidden_size=32, num_heads=4, input_vocab_size=129_600,
                     output_vocab_size=10_048, bias=True, seed=11),
    "coarse": dict(num_layers=2, hidden_size=32, num_heads=4, input_vocab_size=12_096,
                   output_vocab_size=12_096, bias=False, seed=12),
    "fine": dict(num_layers=2, hidden_size=32, num_heads=4, input_vocab_size=1_056,
                 output_vocab_size=1_056, bias=True, seed=13, n_codes_total=8, n_codes_given=1),
}


def tensors_for(stage: str) -> dict[str, np.ndarray]:
    c = dict(CASES[stage])
    c.pop("num_heads")
    return random_gpt_tensors(**c, fine=stage == "fine")


def reference_model(stage: str):
    from transformers.models.bark import configuration_bark as cb
    from transformers.models.bark import modeling_bark as mb

    c = {k: v for k, v in CASES[stage].items() if k != "seed"}
    cls, cfg = {
        "semantic": (mb.BarkSemanticModel, cb.BarkSemanticConfig),
        "coarse": (mb.BarkCoarseModel, cb.BarkCoarseConfig),
        "fine": (mb.BarkFineModel, cb.BarkFineConfig),
    }[stage]
    model = cls(cfg(**c)).eval()
    state = {k: torch.from_numpy(v.copy()) for k, v in tensors_for(stage).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected, unexpected
    assert all(k.endswith("attn.bias") for k in missing), missing
    return model


@torch.no_grad()
def main() -> None:
    rng = np.random.default_rng(2024)
    out: dict[str, np.ndarray] = {"cases": np.array(json.dumps(CASES))}

    sem = reference_model("semantic")
    ids = rng.integers(0, 129_600, size=(2, 5))
    out["semantic_ids"] = ids
    out["semantic_logits"] = sem(input_ids=torch.from_numpy(ids)).logits.numpy()
    # merged context: text block, voice-history block, infer token, then 3 generated tokens
    merged = np.concatenate([
        rng.integers(10_048, 129_595, size=(2, 256)),
        rng.integers(0, 10_001, size=(2, 256)),
        np.full((2, 1), 129_599),
        rng.integers(0, 10_000, size=(2, 3)),
    ], axis=1)
    t = torch.from_numpy(merged)
    wte = sem.input_embeds_layer
    embeds = torch.cat([wte(t[:, :256]) + wte(t[:, 256:512]), wte(t[:, 512:])], dim=1)
    out["semantic_merged_ids"] = merged
    out["semantic_merged_logits_last4"] = sem(inputs_embeds=embeds).logits[:, -4:].numpy()

    coarse = reference_model("coarse")
    ids = rng.integers(0, 12_096, size=(2, 5))
    out["coarse_ids"] = ids
    out["coarse_logits"] = coarse(input_ids=torch.from_numpy(ids)).logits.numpy()

    fine = reference_model("fine")
    codes = rng.integers(0, 1_056, size=(2, 6, 8))
    out["fine_codes"] = codes
    out["fine_logits"] = np.stack(
        [fine(k, input_ids=torch.from_numpy(codes)).logits.numpy() for k in range(1, 8)]
    )  # (7, B, T, V)

    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    tmp = OUT + ".tmp"
    with open(tmp, "wb") as f:  # a file object: savez would add ".npz" to a name
        np.savez_compressed(f, **out)
    os.replace(tmp, OUT)  # never a half-written golden file
    print(f"wrote {os.path.normpath(OUT)} ({os.path.getsize(OUT) / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
