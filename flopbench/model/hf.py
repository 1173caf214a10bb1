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
A key's value must have its JSON type: an integer (12, not 12.0, true or "12"), a boolean, or a number for
rope_theta; `_name_or_path`, if present, printable text. The file is read through `files.read_text` (a
regular file of bounded size: never a FIFO or /dev/zero). Every problem is a `UsageError` of one line
naming the file, the key, the bad value and what is allowed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import UsageError
from ..files import read_text
from .config import LLAMA_ARCH, ModelConfig, check_name

_REQUIRED = object()

#: Per model_type: ModelConfig field (or, for a key only checked, the key) -> (config.json key, JSON type,
#: default; _REQUIRED = the key must be present and not null). Defaults are those of `transformers`.
GPT2_KEYS = {
    "n_layer": ("n_layer", int, _REQUIRED), "d_model": ("n_embd", int, _REQUIRED),
    "n_head": ("n_head", int, _REQUIRED), "d_ff": ("n_inner", int, None),
    "vocab_size": ("vocab_size", int, _REQUIRED), "max_seq_len": ("n_positions", int, _REQUIRED),
    "tie_embeddings": ("tie_word_embeddings", bool, True),
}
LLAMA_KEYS = {
    "n_layer": ("num_hidden_layers", int, _REQUIRED), "d_model": ("hidden_size", int, _REQUIRED),
    "n_head": ("num_attention_heads", int, _REQUIRED), "n_kv_head": ("num_key_value_heads", int, None),
    "d_ff": ("intermediate_size", int, _REQUIRED), "vocab_size": ("vocab_size", int, _REQUIRED),
    "max_seq_len": ("max_position_embeddings", int, _REQUIRED),
    "tie_embeddings": ("tie_word_embeddings", bool, False), "bias": ("attention_bias", bool, False),
    "mlp_bias": ("mlp_bias", bool, False), "head_dim": ("head_dim", int, None),
    "rope_theta": ("rope_theta", float, 10000.0),
}

#: What each JSON type accepts (bool is a subclass of int in Python, so it is excluded by hand).
_TYPES = {
    int: (lambda v: isinstance(v, int) and not isinstance(v, bool), 'a JSON integer (e.g. 12; not 12.0, true or "12")'),
    bool: (lambda v: isinstance(v, bool), "true or false"),
    float: (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a JSON number"),
}


def _gpt2(values: dict) -> dict:
    return dict(values, bias=True)  # GPT-2 always has biases, LayerNorm, learned positions, GELU


def _llama(values: dict) -> dict:
    values = dict(values)
    d, heads, mlp_bias, head_dim = values["d_model"], values["n_head"], values.pop("mlp_bias"), values.pop("head_dim")
    if values["bias"] != mlp_bias:
        raise UsageError(f"attention_bias={values['bias']!r} and mlp_bias={mlp_bias!r} differ: flopbench has one "
                         f"bias flag for every linear layer (both must be true or both false)")
    if head_dim is not None and heads > 0 and head_dim * heads != d:
        raise UsageError(f"head_dim={head_dim!r} is not hidden_size / num_attention_heads = {d} / {heads}: "
                         f"flopbench supports only head_dim = hidden_size / num_attention_heads")
    if values["n_kv_head"] == heads:
        values["n_kv_head"] = None
    return {**LLAMA_ARCH, **values}


#: model_type -> (the keys read, the function mapping their values onto ModelConfig fields).
MAPPERS = {"gpt2": (GPT2_KEYS, _gpt2), "llama": (LLAMA_KEYS, _llama), "mistral": (LLAMA_KEYS, _llama)}


def _read_json(path: Path) -> dict:
    if not path.exists():
        raise UsageError(f"{path}: no such file (give a preset name or the path of a Hugging Face config.json)")
    text = read_text(path)  # a FIFO, a device, a folder or an oversized file is a UsageError naming the path
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"{path}: not JSON ({e.msg} at line {e.lineno} column {e.colno}); "
                         f"expected a Hugging Face config.json") from None
    except ValueError:  # an integer of more digits than Python converts
        raise UsageError(f"{path}: not JSON that flopbench reads (an integer of more than "
                         f"{sys.get_int_max_str_digits()} digits); expected a Hugging Face config.json") from None
    except RecursionError:
        raise UsageError(f"{path}: not JSON that flopbench reads (nested too deeply); "
                         f"expected a Hugging Face config.json") from None
    if not isinstance(raw, dict):
        raise UsageError(f"{path}: a JSON {type(raw).__name__}, not an object; expected a Hugging Face config.json")
    return raw


def _read_values(raw: dict, keys: dict, model_type: str) -> dict:
    """The value of each entry of `keys` (a `GPT2_KEYS`-like table) in `raw`, type-checked."""
    values, missing = {}, []
    for field, (key, kind, default) in keys.items():
        value = raw.get(key)
        if value is None:
            if default is _REQUIRED:
                missing.append(key)
            values[field] = None if default is _REQUIRED else default
            continue
        accepts, allowed = _TYPES[kind]
        if not accepts(value):
            raise UsageError(f"{field}={value!r} is not allowed: {key} must be {allowed}")
        values[field] = value
    if missing:
        raise UsageError(f"missing key(s) {', '.join(missing)} (needed for model_type {model_type!r})")
    return values


def load_hf_config(path: str | Path) -> ModelConfig:
    """The `ModelConfig` of the Hugging Face config.json at `path` (or in the folder `path`)."""
    path = Path(path)
    if path.is_dir():
        path = path / "config.json"
    raw = _read_json(path)
    model_type = raw.get("model_type")
    if not isinstance(model_type, str) or model_type not in MAPPERS:
        what = "has no model_type" if model_type is None else f"has model_type {model_type!r}"
        raise UsageError(f"{path} {what}: supported model types are {', '.join(MAPPERS)}")
    keys, mapper = MAPPERS[model_type]
    try:
        fields = mapper(_read_values(raw, keys, model_type))
        name_or_path = raw.get("_name_or_path")
        if name_or_path is not None:
            check_name(name_or_path, "_name_or_path")
        name = (name_or_path or "").rstrip("/").split("/")[-1] or f"{model_type}:{path.parent.name or path.stem}"
        return ModelConfig(name=name, **fields)
    except UsageError as e:
        raise UsageError(f"{path}: {e}") from None
