"""Suno's ORIGINAL generation code (bark 0.1.5) as a live reference (a tool: needs torch).

Three things, for the generation parity tests:

(a) ``suno_models_from_transformers(bark_model)``: Suno's own torch ``GPT`` / ``FineGPT``
    (bark/model.py, bark/model_fine.py) filled with the weights of a transformers ``BarkModel``;
(b) ``SunoCausal`` / ``SunoFine``: adapters exposing barknp's model interface
    (``forward``/``new_cache``) over those torch models, for developing the loops without barknp's
    models; ``barknp_models_from_transformers`` builds barknp's own models from the same weights;
(c) ``original_generation(models, tokenizer, rng)``: a context manager in which Suno's
    ``generate_text_semantic`` / ``generate_coarse`` / ``generate_fine`` run with those models
    injected and ``torch.multinomial`` replaced by barknp's documented draw from a numpy
    Generator (one ``rng.random()`` per call, inverse CDF in token-id order), so sampled runs can
    be compared token for token. The codec step is never run.

The original package is read from ``$BARK_ORIGINAL_DIR`` or /tmp/ref (the folder holding
``bark/``). Its imports of ``encodec`` and ``funcy`` are satisfied by stub modules: neither is
needed to generate tokens, and neither may be installed here.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import types

import numpy as np
import torch

DEFAULT_ORIGINAL_DIR = "/tmp/ref"


def import_original(original_dir: str | None = None):
    """Import Suno's ``bark.generation``, ``bark.model``, ``bark.model_fine`` (stubbing encodec/funcy)."""
    original_dir = original_dir or os.environ.get("BARK_ORIGINAL_DIR", DEFAULT_ORIGINAL_DIR)
    if not os.path.isfile(os.path.join(original_dir, "bark", "generation.py")):
        raise ImportError(f"Suno's original bark is not at {original_dir}/bark (set BARK_ORIGINAL_DIR)")
    if "encodec" not in sys.modules:
        stub = types.ModuleType("encodec")
        stub.EncodecModel = None  # only the codec step uses it, and that step is never run
        sys.modules["encodec"] = stub
    if "funcy" not in sys.modules:
        stub = types.ModuleType("funcy")
        stub.partial = functools.partial
        sys.modules["funcy"] = stub
    if original_dir not in sys.path:
        sys.path.insert(0, original_dir)
    import bark.generation as generation
    import bark.model as model
    import bark.model_fine as model_fine

    return generation, model, model_fine


# transformers' names -> Suno's names, per block and for the rest of a GPT
_BLOCK_NAMES = {
    "layernorm_1": "ln_1",
    "layernorm_2": "ln_2",
    "attn.att_proj": "attn.c_attn",
    "attn.out_proj": "attn.c_proj",
    "mlp.in_proj": "mlp.c_fc",
    "mlp.out_proj": "mlp.c_proj",
}


def _suno_name(name: str) -> str | None:
    """A transformers Bark GPT parameter name -> Suno's name (None for the causal-mask buffers)."""
    parts = name.split(".")
    if parts[0] == "layers":
        rest = ".".join(parts[2:-1])
        if rest == "attn" and parts[-1] == "bias":  # transformers' causal-mask buffer
            return None
        return f"transformer.h.{parts[1]}.{_BLOCK_NAMES[rest]}.{parts[-1]}"
    if name.startswith("input_embeds_layers."):
        return "transformer.wtes." + name[len("input_embeds_layers."):]
    fixed = {
        "input_embeds_layer.weight": "transformer.wte.weight",
        "position_embeds_layer.weight": "transformer.wpe.weight",
        "layernorm_final.weight": "transformer.ln_f.weight",
        "layernorm_final.bias": "transformer.ln_f.bias",
    }
    return fixed.get(name, name)  # lm_head.weight, lm_heads.N.weight keep their names


def _suno_state_dict(module: torch.nn.Module) -> dict:
    out = {}
    for name, value in module.state_dict().items():
        new = _suno_name(name)
        if new is not None:
            out[new] = value.detach().clone()
    return out


@torch.no_grad()
def suno_models_from_transformers(bark_model, original_dir: str | None = None) -> dict:
    """Suno's torch models with a transformers BarkModel's weights: {"text", "coarse", "fine"}."""
    _, model_mod, fine_mod = import_original(original_dir)
    out = {}
    for key, sub in (("text", bark_model.semantic), ("coarse", bark_model.coarse_acoustics)):
        c = sub.config
        conf = model_mod.GPTConfig(
            block_size=c.block_size, input_vocab_size=c.input_vocab_size, output_vocab_size=c.output_vocab_size,
            n_layer=c.num_layers, n_head=c.num_heads, n_embd=c.hidden_size, dropout=0.0, bias=c.bias,
        )
        gpt = model_mod.GPT(conf)
        gpt.load_state_dict(_suno_state_dict(sub), strict=True)
        out[key] = gpt.eval()
    c = bark_model.fine_acoustics.config
    conf = fine_mod.FineGPTConfig(
        block_size=c.block_size, input_vocab_size=c.input_vocab_size, output_vocab_size=c.output_vocab_size,
        n_layer=c.num_layers, n_head=c.num_heads, n_embd=c.hidden_size, dropout=0.0, bias=c.bias,
        n_codes_total=c.n_codes_total, n_codes_given=c.n_codes_given,
    )
    fine = fine_mod.FineGPT(conf)
    fine.load_state_dict(_suno_state_dict(bark_model.fine_acoustics), strict=True)
    out["fine"] = fine.eval()
    return out


def barknp_models_from_transformers(bark_model) -> dict:
    """barknp's own CausalGPT / FineGPT from a transformers BarkModel: {"semantic", "coarse", "fine"}."""
    from barknp.config import GPTConfig
    from barknp.models.fine import FineGPT
    from barknp.models.gpt import CausalGPT

    def arrays(module):
        return {
            k: v.detach().cpu().numpy().astype(np.float32)
            for k, v in module.state_dict().items()
            if not (k.startswith("layers.") and k.endswith(".attn.bias"))
        }

    def config(c, fine=False):
        extra = dict(n_codes_total=c.n_codes_total, n_codes_given=c.n_codes_given) if fine else {}
        return GPTConfig(
            num_layers=c.num_layers, num_heads=c.num_heads, hidden_size=c.hidden_size,
            input_vocab_size=c.input_vocab_size, output_vocab_size=c.output_vocab_size,
            block_size=c.block_size, bias=c.bias, **extra,
        )

    return {
        "semantic": CausalGPT(config(bark_model.semantic.config), arrays(bark_model.semantic), "semantic"),
        "coarse": CausalGPT(config(bark_model.coarse_acoustics.config), arrays(bark_model.coarse_acoustics), "coarse"),
        "fine": FineGPT(config(bark_model.fine_acoustics.config, fine=True), arrays(bark_model.fine_acoustics)),
    }


# --- (b) adapters: barknp's model interface over Suno's torch models ---------------------------


class SunoCache:
    """Suno's past_kv tuple, held so that a forward call can advance it in place."""

    def __init__(self):
        self.past_kv = None

    @property
    def length(self) -> int:
        return 0 if self.past_kv is None else int(self.past_kv[0][0].shape[-2])

    def reset(self) -> None:
        self.past_kv = None

    def truncate(self, length: int) -> None:
        """Keep the first ``length`` positions, as ``KVCache.truncate``."""
        self.past_kv = tuple((k[..., :length, :], v[..., :length, :]) for k, v in self.past_kv) if length else None


class SunoCausal:
    """barknp's causal-model interface over Suno's torch ``GPT``."""

    def __init__(self, gpt):
        self.gpt = gpt

    def new_cache(self, batch: int = 1) -> SunoCache:
        return SunoCache()

    @torch.no_grad()
    def forward(self, ids, cache=None, merge_context=False, last_only=False, vocab=None) -> np.ndarray:
        if vocab is not None:  # Suno's code slices the logits of the whole vocabulary
            return self.forward(ids, cache, merge_context, last_only)[..., vocab[0] : vocab[1]]
        idx = torch.from_numpy(np.asarray(ids, dtype=np.int64))  # (B, T)
        past = None if cache is None else cache.past_kv
        if last_only:
            if past is not None and idx.shape[1] > 1:  # Suno's GPT takes one token at a time with a cache
                for t in range(idx.shape[1]):
                    out = self.forward(idx[:, t : t + 1].numpy(), cache, last_only=True)
                return out
            logits, kv = self.gpt(idx, merge_context=merge_context, past_kv=past, use_cache=cache is not None)
        else:
            logits, kv = self._all_positions(idx, merge_context, past, cache is not None)
        if cache is not None:
            cache.past_kv = kv
        return logits.float().numpy()

    def _all_positions(self, idx, merge_context, past, use_cache):
        # Suno's forward applies lm_head to the last position only; the same modules, all positions
        g = self.gpt
        tr = g.transformer
        if merge_context:
            tok = torch.cat([tr.wte(idx[:, :256]) + tr.wte(idx[:, 256:512]), tr.wte(idx[:, 512:])], dim=1)
        else:
            tok = tr.wte(idx)
        past_len = 0 if past is None else past[0][0].shape[-2]
        pos = torch.arange(past_len, past_len + tok.shape[1])[None]
        x = tok + tr.wpe(pos)
        if past is not None and tok.shape[1] != 1:
            raise ValueError("SunoCausal: a continued cache takes one token per call")
        new_kv = []
        for i, block in enumerate(tr.h):
            x, kv = block(x, past_kv=None if past is None else past[i], use_cache=use_cache)
            new_kv.append(kv)
        return g.lm_head(tr.ln_f(x)), (tuple(new_kv) if use_cache else None)


class SunoFine:
    """barknp's fine-model interface over Suno's torch ``FineGPT``."""

    def __init__(self, fine):
        self.fine = fine

    @torch.no_grad()
    def forward(self, codebook_idx, codes, first=0, vocab=None) -> np.ndarray:
        x = torch.from_numpy(np.asarray(codes, dtype=np.int64))  # (B, T, 8)
        logits = self.fine(int(codebook_idx), x).float().numpy()  # (B, T, V)
        start, stop = vocab or (0, logits.shape[2])
        return logits[:, first:, start:stop]


# --- (c) the original generation functions, seeded ------------------------------------------


def reference_draw(probs: np.ndarray, u: float) -> int:
    """barknp's draw rule, restated: first i with cumsum(probs)[i] > u * total (float64)."""
    cdf = np.cumsum(np.asarray(probs, dtype=np.float64))
    i = int(np.searchsorted(cdf, u * cdf[-1], side="right"))
    return min(i, int(np.flatnonzero(np.asarray(probs) > 0)[-1]))


class _BertLike:
    """What the original wants of a tokenizer: ``encode(text, add_special_tokens=False)``."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def encode(self, text, add_special_tokens=False):
        assert add_special_tokens is False
        if hasattr(self.tokenizer, "_backend"):  # a barknp Tokenizer
            return self.tokenizer.encode(text)
        return self.tokenizer.encode(text, add_special_tokens=False)


@contextlib.contextmanager
def original_generation(suno_models: dict, tokenizer, rng, argmax: bool = False, original_dir: str | None = None):
    """Run Suno's generation functions with ``suno_models`` and a seeded multinomial.

    Yields the ``bark.generation`` module. ``tokenizer``: a transformers BertTokenizer or a
    barknp Tokenizer. ``rng``: the numpy Generator every ``torch.multinomial`` call draws one
    number from. ``argmax=True`` makes the multinomial return the most probable index instead
    (greedy decoding through the original's loops; nothing is drawn).
    """
    generation, _, _ = import_original(original_dir)
    saved_models = dict(generation.models)
    saved_multinomial = torch.multinomial

    def seeded_multinomial(probs, num_samples=1, replacement=False, *, generator=None, out=None):
        assert num_samples == 1 and probs.dim() == 1, "the original draws one token from a 1-D distribution"
        p = probs.detach().cpu().float().numpy()
        i = int(np.argmax(p)) if argmax else reference_draw(p, rng.random())
        return torch.tensor([i], dtype=torch.long)

    generation.models.clear()
    generation.models.update(
        {"text": {"model": suno_models["text"], "tokenizer": _BertLike(tokenizer)},
         "coarse": suno_models["coarse"], "fine": suno_models["fine"]}
    )
    torch.multinomial = seeded_multinomial
    try:
        yield generation
    finally:
        torch.multinomial = saved_multinomial
        generation.models.clear()
        generation.models.update(saved_models)
