"""Random-weight PyTorch reference models, built with transformers (a tool: needs torch).

Every barknp parity check compares against models built here. Weights come from a seed, so a
golden file only needs to store inputs and outputs: the model is rebuilt bit for bit.

    python tools/reference.py --size tiny --out /tmp/bark-tiny   # a transformers-layout directory
    python tools/reference.py --size tiny --out /tmp/bark-tiny-old --weight-norm old --format bin
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch

# Real data beside the repository (never copied into it): tokenizer files and Suno's voice prompts.
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TOKENIZER_DIR = SHARED_DATA / "bert-base-multilingual-cased"
VOICES_DIR = SHARED_DATA / "bark-voices"
# A few of Suno's voices, in the three naming styles the hub's speaker_embeddings use.
SAMPLE_VOICES = ("announcer", "en_speaker_0", "v2/en_speaker_6", "v2/de_speaker_1")

# (num_layers, hidden_size, num_heads) of each size; "small" and "large" are suno/bark-small and
# suno/bark. Vocab sizes are always the real ones, because the algorithm's special tokens index them.
SIZES = {
    "tiny": (2, 32, 2),
    "small": (12, 768, 12),
    "large": (24, 1024, 16),
}
VOCABS = {
    "semantic_config": (129_600, 10_048),
    "coarse_acoustics_config": (12_096, 12_096),
    "fine_acoustics_config": (1_056, 1_056),
}


def bark_config(size: str = "tiny", bias: bool = True):
    """transformers BarkConfig for one of SIZES, with Bark's real vocabularies and codec."""
    from transformers import BarkConfig

    n_layer, width, n_head = SIZES[size]
    sub = {}
    for name, (vin, vout) in VOCABS.items():
        sub[name] = dict(
            num_layers=n_layer, hidden_size=width, num_heads=n_head,
            input_vocab_size=vin, output_vocab_size=vout, block_size=1024, bias=bias,
        )
    sub["fine_acoustics_config"].update(n_codes_total=8, n_codes_given=1)
    return BarkConfig(**sub, codec_config={})


@torch.no_grad()
def randomize_(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Refill every parameter from ``seed`` so that no weight is a trivial 0 or 1.

    Layer-norm gains are drawn near 1 and biases near 0; weight-norm gains keep the scale of their
    direction tensor so activations stay of order 1 through the codec.
    """
    g = torch.Generator().manual_seed(seed)
    params = dict(module.named_parameters())
    for name, p in sorted(params.items()):
        noise = torch.randn(p.shape, generator=g, dtype=torch.float32)
        if name.endswith("original0") or name.endswith("weight_g"):
            direction = params[name[: -len("original0")] + "original1"] if name.endswith("original0") \
                else params[name[: -len("weight_g")] + "weight_v"]
            norms = direction.flatten(1).norm(dim=1).reshape(p.shape)
            p.copy_(norms * (1.0 + 0.1 * noise))
        elif ("layernorm" in name or "norm" in name.split(".")[-2]) and name.endswith("weight"):
            p.copy_(1.0 + 0.1 * noise)
        elif name.endswith("bias") or "bias_" in name:
            p.copy_(0.02 * noise)
        elif "codebook" in name:
            p.copy_(noise)
        else:
            std = 0.02 if p.dim() == 2 else p.std().item() or 0.02
            p.copy_(std * noise)
    # codebooks are buffers, not parameters
    for name, b in module.named_buffers():
        if name.endswith("codebook.embed"):
            b.copy_(torch.randn(b.shape, generator=g))
    return module


def build_bark(size: str = "tiny", seed: int = 0, bias: bool = True):
    """A random-weight transformers BarkModel in eval mode."""
    from transformers import BarkModel

    torch.manual_seed(seed)
    model = BarkModel(bark_config(size, bias=bias)).eval()
    return randomize_(model, seed)


def transformers_state_dict(model, weight_norm: str = "new") -> dict:
    """The model's state dict with weight norm spelled the new way (``parametrizations.weight.
    original0/1``) or the old way (``weight_g``/``weight_v``, as transformers < 4.40 and the hub's
    ``pytorch_model.bin`` files have it). Tensors are independent contiguous copies."""
    if weight_norm not in ("new", "old"):
        raise ValueError(f"weight_norm must be 'new' or 'old', not {weight_norm!r}")
    out = {}
    for name, t in model.state_dict().items():
        if weight_norm == "old":
            name = name.replace(".parametrizations.weight.original0", ".weight_g")
            name = name.replace(".parametrizations.weight.original1", ".weight_v")
        out[name] = t.detach().clone().contiguous()
    return out


def save_transformers_dir(model, out, *, weight_norm: str = "new", fmt: str = "safetensors",
                          voices_from=None, tokenizer_from=None, voices=SAMPLE_VOICES) -> Path:
    """Save ``model`` as a transformers-layout Bark directory, as the hub holds one.

    ``fmt`` "safetensors" writes model.safetensors without the fine model's tied ``lm_heads.N``
    (as save_pretrained does: only one of a tied pair is stored); "bin" writes pytorch_model.bin with
    torch.save (zip format) holding both. ``tokenizer_from`` is a folder whose tokenizer files are
    copied; ``voices_from`` a folder of Suno .npz voices, of which ``voices`` are written in the hub's
    speaker_embeddings layout (one .npy per prompt, listed in speaker_embeddings_path.json).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(out)
    state = transformers_state_dict(model, weight_norm)
    if fmt == "safetensors":
        from safetensors.torch import save_file

        n_heads = model.config.fine_acoustics_config.n_codes_total - model.config.fine_acoustics_config.n_codes_given
        for i in range(n_heads):
            state.pop(f"fine_acoustics.lm_heads.{i}.weight", None)
        save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    elif fmt == "bin":
        torch.save(state, out / "pytorch_model.bin")
    else:
        raise ValueError(f"fmt must be 'safetensors' or 'bin', not {fmt!r}")
    if tokenizer_from is not None:
        for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
            if (Path(tokenizer_from) / name).is_file():
                shutil.copyfile(Path(tokenizer_from) / name, out / name)
    if voices_from is not None:
        import numpy as np

        index = {"repo_or_path": str(out)}
        for voice in voices:
            prompts = np.load(Path(voices_from) / f"{voice}.npz")
            index[voice] = {}
            for key in ("semantic_prompt", "coarse_prompt", "fine_prompt"):
                rel = f"speaker_embeddings/{voice}_{key}.npy"
                (out / rel).parent.mkdir(parents=True, exist_ok=True)
                np.save(out / rel, prompts[key], allow_pickle=False)
                index[voice][key] = rel
        (out / "speaker_embeddings_path.json").write_text(json.dumps(index, indent=1))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=sorted(SIZES), default="tiny")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-bias", action="store_true", help="GPT linears and causal layer norms without bias")
    ap.add_argument("--out", required=True)
    ap.add_argument("--weight-norm", choices=("new", "old"), default="new")
    ap.add_argument("--format", choices=("safetensors", "bin"), default="safetensors")
    args = ap.parse_args(argv)
    model = build_bark(args.size, args.seed, bias=not args.no_bias)
    save_transformers_dir(
        model, args.out, weight_norm=args.weight_norm, fmt=args.format,
        tokenizer_from=TOKENIZER_DIR if TOKENIZER_DIR.is_dir() else None,
        voices_from=VOICES_DIR if VOICES_DIR.is_dir() else None,
    )


if __name__ == "__main__":
    main()
