"""Write weights/manifests/*.json: every converted tensor of the official Bark models (a tool: needs torch).

    python tools/make_manifests.py            # rewrite the manifests
    python tools/make_manifests.py --check    # exit 1 if the files differ from what would be written

The tensor list is taken from the modules transformers builds for each size (on the meta device: no
memory, no weights), renamed as the converter renames: weight norm folded into ``weight``, mask
buffers, the codec encoder and the codebooks' training statistics dropped, stage prefix removed.
This is deliberately independent of barknp.convert.layout, which derives the same list from the
config: a test checks that the two agree.

Both official checkpoints (suno/bark-small, suno/bark) have no GPT biases (``bias: false``); see
REAL_BIAS.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reference  # noqa: E402

MANIFEST_DIR = Path(__file__).resolve().parents[1] / "weights" / "manifests"
MODELS = {"suno/bark-small": "small", "suno/bark": "large"}
# The published checkpoints were trained with bias-free linears (and bias-free causal layer norms).
REAL_BIAS = {"small": False, "large": False}
PREFIXES = {"semantic": "semantic.", "coarse": "coarse_acoustics.", "fine": "fine_acoustics.", "codec": "codec_model."}


def converted_names(state: dict) -> dict[str, dict[str, dict]]:
    """{stage: {name: {"dtype", "shape"}}} that conversion of a state dict with these keys yields."""
    out = {stage: {} for stage in PREFIXES}
    for key, t in state.items():
        stage = next(s for s, p in PREFIXES.items() if key.startswith(p))
        name = key[len(PREFIXES[stage]):]
        if re.fullmatch(r"layers\.\d+\.attn\.bias", name) or name.startswith("encoder."):
            continue
        if re.fullmatch(r"quantizer\.layers\.\d+\.codebook\.(inited|cluster_size|embed_avg)", name):
            continue
        if name.endswith(".parametrizations.weight.original0"):
            continue  # the gain folds into the direction's entry
        name = name.replace(".parametrizations.weight.original1", ".weight")
        out[stage][name] = {"dtype": "F32", "shape": list(t.shape)}
    return {stage: dict(sorted(names.items())) for stage, names in out.items()}


def manifest_for(size: str, bias: bool | None = None, model: str | None = None) -> dict:
    """The manifest of one reference size (real bias for small/large unless ``bias`` is given)."""
    from transformers import BarkModel

    bias = REAL_BIAS.get(size, True) if bias is None else bias
    with torch.device("meta"):
        m = BarkModel(reference.bark_config(size, bias=bias))
    return {"format": "barknp/1", "model": model or size, "bias": bias, "stages": converted_names(m.state_dict())}


def render(manifest: dict) -> str:
    """JSON text: one line per tensor, so a diff shows which tensor changed."""
    lines = ["{", f' "format": {json.dumps(manifest["format"])},', f' "model": {json.dumps(manifest["model"])},',
             f' "bias": {json.dumps(manifest["bias"])},', ' "stages": {']
    stages = list(manifest["stages"].items())
    for i, (stage, names) in enumerate(stages):
        lines.append(f"  {json.dumps(stage)}: {{")
        items = list(names.items())
        for j, (name, entry) in enumerate(items):
            lines.append(f"   {json.dumps(name)}: {json.dumps(entry, sort_keys=True)}" + ("," if j < len(items) - 1 else ""))
        lines.append("  }" + ("," if i < len(stages) - 1 else ""))
    lines += [" }", "}"]
    return "\n".join(lines) + "\n"


def expected_files() -> dict[Path, str]:
    return {MANIFEST_DIR / (repo.replace("/", "--") + ".json"): render(manifest_for(size, model=repo))
            for repo, size in MODELS.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args(argv)
    stale = []
    for path, text in expected_files().items():
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path}")
    for path in stale:
        print(f"stale: {path} (run python tools/make_manifests.py)")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
