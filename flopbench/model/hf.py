"""Read a Hugging Face `config.json` into a `ModelConfig`: offline, the file only (no hub, no weights).

Supported `model_type`s and the keys read (Hugging Face `transformers` names; a key marked "default"
may be absent and takes the value `transformers` gives it):

- `gpt2`: n_embd, n_layer, n_head, n_positions, vocab_size; n_inner (default null = 4·n_embd),
  tie_word_embeddings (default true). GPT-2 always has biases, LayerNorm, learned positions, GELU.
- `llama`, `mistral`: hidden_size, num_hidden_layers, num_attention_heads, intermediate_size,
  vocab_size, max_position_embeddings; num_key_value_heads (default num_attention_heads),
  tie_word_embeddings (default false), attention_bias and mlp_bias (default false), rope_theta
  (default 10000), head_dim (default hidden_size / num_attention_heads; another value is refused).
  Both are SwiGLU, RMSNorm, RoPE.

What does not change the FLOPs of a training step is not read (dropout, eps, rope_scaling, init).
Mistral's `sliding_window` is not modelled: flopbench counts (and its model runs) full causal attention.
Every problem is a `UsageError` of one line naming the file, the bad value and what is allowed.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import UsageError
from .config import LLAMA_ARCH, ModelConfig


def _gpt2(get) -> dict:
    d = get("n_embd")
    return dict(n_layer=get("n_layer"), d_model=d, n_head=get("n_head"), d_ff=get("n_inner", None),
                vocab_size=get("vocab_size"), max_seq_len=get("n_positions"),
                tie_embeddings=get("tie_word_embeddings", True), bias=True)


def _llama(get) -> dict:
    d, heads = get("hidden_size"), get("num_attention_heads")
    kv_heads = get("num_key_value_heads", None)
    attention_bias, mlp_bias = get("attention_bias", False), get("mlp_bias", False)
    if attention_bias != mlp_bias:
        raise UsageError(f"attention_bias={attention_bias!r} and mlp_bias={mlp_bias!r} differ: flopbench has one "
                         f"bias flag for every linear layer (both must be true or both false)")
    head_dim = get("head_dim", None)
    if head_dim is not None and isinstance(d, int) and isinstance(heads, int) and heads and head_dim * heads != d:
        raise UsageError(f"head_dim={head_dim!r} is not hidden_size / num_attention_heads = {d} / {heads}: "
                         f"flopbench supports only head_dim = hidden_size / num_attention_heads")
    return dict(LLAMA_ARCH, n_layer=get("num_hidden_layers"), d_model=d, n_head=heads,
                n_kv_head=None if kv_heads == heads else kv_heads, d_ff=get("intermediate_size"),
                vocab_size=get("vocab_size"), max_seq_len=get("max_position_embeddings"),
                tie_embeddings=get("tie_word_embeddings", False), bias=attention_bias,
                rope_theta=get("rope_theta", 10000.0))


#: model_type -> the function mapping its keys (read through `get(key[, default])`) onto ModelConfig fields.
MAPPERS = {"gpt2": _gpt2, "llama": _llama, "mistral": _llama}

_MISSING = object()


def _read_json(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file (give a preset name or the path of a Hugging Face config.json)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{path}: cannot read it ({e.__class__.__name__}: {e})") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"{path}: not JSON ({e.msg} at line {e.lineno} column {e.colno}); "
                         f"expected a Hugging Face config.json") from None
    if not isinstance(raw, dict):
        raise UsageError(f"{path}: a JSON {type(raw).__name__}, not an object; expected a Hugging Face config.json")
    return raw


def load_hf_config(path: str | Path) -> ModelConfig:
    """The `ModelConfig` of the Hugging Face config.json at `path` (or in the folder `path`)."""
    path = Path(path)
    if path.is_dir():
        path = path / "config.json"
    raw = _read_json(path)
    model_type = raw.get("model_type")
    supported = ", ".join(MAPPERS)
    if model_type not in MAPPERS:
        what = "has no model_type" if model_type is None else f"has model_type {model_type!r}"
        raise UsageError(f"{path} {what}: supported model types are {supported}")
    missing: list[str] = []

    def get(key: str, default=_MISSING):
        if key in raw and raw[key] is not None:
            return raw[key]
        if default is _MISSING:
            missing.append(key)
        return None if default is _MISSING else default

    try:
        fields = MAPPERS[model_type](get)
    except UsageError as e:
        raise UsageError(f"{path}: {e}") from None
    if missing:
        raise UsageError(f"{path}: missing key(s) {', '.join(missing)} (needed for model_type {model_type!r})")
    name = str(raw.get("_name_or_path") or "").rstrip("/").split("/")[-1] or f"{model_type}:{path.parent.name or path.stem}"
    try:
        return ModelConfig(name=name, **fields)
    except UsageError as e:
        raise UsageError(f"{path}: {e}") from None
