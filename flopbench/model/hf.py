"""Read a Hugging Face `config.json` into a `ModelConfig`: offline, the file only (no hub, no weights).

One small function per `model_type` (`MAPPERS`) reads its keys by their transformers names; a key that is
absent takes the value transformers gives it (transformers 5 spellings included: `rope_parameters`,
`layer_types`). Each function's docstring says what the family is: gpt2, llama, mistral (every layer
sliding, default window 4096), mixtral (experts), qwen2 (Q/K/V biases), qwen3 and qwen3_moe (QK-norm,
head_dim 128, experts with dense `mlp_only_layers`), gemma / gemma2 / gemma3_text (GeGLU, scaled
embeddings, sandwich norms, windows, soft caps), phi3 (fused projections: the same matmuls), olmo2
(post-norms, QK-norm over the projections), smollm3 (Llama-like).

What does not change the FLOPs of a training step is not read (dropout, eps, rope scaling, init, Gemma's
query_pre_attn_scalar). What changes them in a way flopbench does not model is refused, never counted
wrong: an unknown `model_type`, the keys of `NOT_MODELLED` (e.g. DeepSeek's multi-head latent attention),
a `layer_types` entry other than full or sliding attention. A key's value must have its JSON type: an
integer (12, not 12.0, true or "12"), a boolean, or a number for rope_theta; `_name_or_path`, if present,
printable text. The file is read through `files.read_text` (a regular file of bounded size: never a FIFO
or /dev/zero). Every problem is a `UsageError` of one line naming the file, the key, the bad value and
what is allowed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import UsageError
from ..files import read_text
from .config import ModelConfig, check_name, check_size

_REQUIRED = object()

#: What each JSON type accepts (bool is a subclass of int in Python, so it is excluded by hand).
_TYPES = {
    int: (lambda v: isinstance(v, int) and not isinstance(v, bool), 'a JSON integer (e.g. 12; not 12.0, true or "12")'),
    bool: (lambda v: isinstance(v, bool), "true or false"),
    float: (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a JSON number"),
    list: (lambda v: isinstance(v, list), "a JSON list"),
    str: (lambda v: isinstance(v, str), "a JSON string"),
}

#: Keys whose explicit null means "none" rather than "the default" (a Mistral config.json that says
#: "sliding_window": null has no window, where an absent key takes transformers' default of 4096).
_NULL_IS_NONE = ("sliding_window",)

#: Keys of model types flopbench does not read that change the FLOPs: a file holding one is refused.
NOT_MODELLED = {
    "q_lora_rank": "multi-head latent attention (DeepSeek-V2/V3 low-rank Q/KV projections)",
    "kv_lora_rank": "multi-head latent attention (DeepSeek-V2/V3 low-rank Q/KV projections)",
    "shared_expert_intermediate_size": "a gated shared expert (Qwen2-MoE)",
    "moe_layer_freq": "mixture-of-experts layers at a frequency",
    "linear_attn_config": "linear attention layers",
}

#: The `layer_types` entries of transformers 5 config.json files that flopbench models.
_LAYER_TYPES = {"full_attention": "full", "sliding_attention": "sliding"}


class Reader:
    """The keys of one config.json, read with their JSON types checked and transformers' defaults."""

    def __init__(self, raw: dict, model_type: str):
        self.raw, self.model_type, self.missing = raw, model_type, []

    def __call__(self, key: str, kind: type, default=None, field: str | None = None):
        """The value of `key` (of JSON type `kind`); `default` when absent (or null; see `_NULL_IS_NONE`);
        `_REQUIRED` = it must be present. `field` names the ModelConfig field in messages (default `key`)."""
        value = self.raw.get(key)
        if value is None:
            if default is _REQUIRED:
                self.missing.append(key)
            if key in self.raw and key in _NULL_IS_NONE:
                return None
            return None if default is _REQUIRED else default
        accepts, allowed = _TYPES[kind]
        if not accepts(value):
            raise UsageError(f"{field or key}={value!r} is not allowed: {key} must be {allowed}")
        return value

    def check_missing(self) -> None:
        if self.missing:
            raise UsageError(f"missing key(s) {', '.join(self.missing)} (needed for model_type {self.model_type!r})")


def _rope_theta(read: Reader, default: float) -> float:
    """RoPE's base: `rope_theta`, or transformers 5's `rope_parameters.rope_theta` (per layer type in
    Gemma 3: the full-attention layers' base). The base changes no FLOPs; the rope type (linear, yarn,
    llama3 scaling) neither, so it is not read."""
    theta = read("rope_theta", float)
    params = read.raw.get("rope_parameters")
    if theta is None and isinstance(params, dict):
        params = params.get("full_attention", params)
        theta = params.get("rope_theta") if isinstance(params, dict) else None
        accepts, allowed = _TYPES[float]
        if theta is not None and not accepts(theta):
            raise UsageError(f"rope_theta={theta!r} is not allowed: rope_parameters.rope_theta must be {allowed}")
    return default if theta is None else theta


def _layer_types(read: Reader, n_layer: int, window: int | None, pattern) -> tuple[str, ...]:
    """Each layer's attention: the file's `layer_types` where it has one, else `pattern` (a tuple cycled over
    the layers, or a function of the layer index). A sliding layer without a window is full attention,
    as in transformers."""
    listed = read("layer_types", list)
    unknown = sorted({str(t) for t in listed or ()} - set(_LAYER_TYPES))
    if unknown:
        raise UsageError(f"not modelled: layer_types {', '.join(map(repr, unknown))} (flopbench models "
                         f"{', '.join(_LAYER_TYPES)})")
    if window is None:  # a sliding layer without a window is full attention, as in transformers
        return ("full",)
    if listed is not None:
        types = tuple(_LAYER_TYPES[t] for t in listed)
        if len(types) != n_layer:
            raise UsageError(f"layer_types has {len(types)} entries for num_hidden_layers={n_layer}: "
                             f"give one per layer")
    else:
        types = pattern if isinstance(pattern, tuple) else tuple(
            pattern(i) for i in range(_listable(n_layer, "a per-layer attention pattern")))
    return types if len(set(types)) > 1 else types[:1]


def _common(read: Reader, bias_key: str = "attention_bias", tie: bool = False, theta: float = 10000.0,
            head_dim: int | None = None) -> dict:
    """The keys every Llama-like family shares (transformers names), as ModelConfig fields."""
    fields = dict(
        n_layer=read("num_hidden_layers", int, _REQUIRED, "n_layer"),
        d_model=read("hidden_size", int, _REQUIRED, "d_model"),
        n_head=read("num_attention_heads", int, _REQUIRED, "n_head"),
        n_kv_head=read("num_key_value_heads", int, None, "n_kv_head"),
        d_ff=read("intermediate_size", int, _REQUIRED, "d_ff"),
        vocab_size=read("vocab_size", int, _REQUIRED, "vocab_size"),
        max_seq_len=read("max_position_embeddings", int, _REQUIRED, "max_seq_len"),
        tie_embeddings=read("tie_word_embeddings", bool, tie, "tie_embeddings"),
        bias=read(bias_key, bool, False, "bias"),
        head_dim=read("head_dim", int, head_dim, "head_dim"),
        rope_theta=_rope_theta(read, theta),
        mlp="swiglu", norm="rmsnorm", positions="rope",
    )
    read.check_missing()
    return fields


def _gpt2(read: Reader) -> dict:
    """GPT-2 (Radford et al. 2019): always biases, LayerNorm, learned positions, GELU."""
    fields = dict(n_layer=read("n_layer", int, _REQUIRED), d_model=read("n_embd", int, _REQUIRED, "d_model"),
                  n_head=read("n_head", int, _REQUIRED), d_ff=read("n_inner", int, None, "d_ff"),
                  vocab_size=read("vocab_size", int, _REQUIRED),
                  max_seq_len=read("n_positions", int, _REQUIRED, "max_seq_len"),
                  tie_embeddings=read("tie_word_embeddings", bool, True, "tie_embeddings"), bias=True)
    read.check_missing()
    return fields


def _llama(read: Reader, window_default: int | None = None, **common) -> dict:
    """Llama 2 / 3 (Touvron et al. 2023), Mistral 7B (Jiang et al. 2023: every layer slides over
    `sliding_window`, transformers' default 4096), SmolLM3 (Llama-like; its no-RoPE layers change no
    matmul). One bias flag covers attention and MLP."""
    fields = _common(read, **common)
    mlp_bias = read("mlp_bias", bool, False)
    if fields["bias"] != mlp_bias:
        raise UsageError(f"attention_bias={fields['bias']!r} and mlp_bias={mlp_bias!r} differ: flopbench has one "
                         f"bias flag for every linear layer (both must be true or both false)")
    window = read("sliding_window", int, window_default)
    return _windowed(read, fields, window, ("sliding",))


def _windowed(read: Reader, fields: dict, window: int | None, pattern) -> dict:
    types = _layer_types(read, fields["n_layer"] or 0, window, pattern)
    return dict(fields, layer_types=types, sliding_window=window if "sliding" in types else None)


def _qwen(read: Reader, **extra) -> dict:
    """Qwen2 (Q/K/V biases only) and Qwen3 (QK-norm per head, head_dim 128 by default, no biases); their
    optional sliding window covers the layers from `max_window_layers` on."""
    qwen2 = read.model_type == "qwen2"
    fields = _common(read, head_dim=None if qwen2 else 128, **extra)
    if qwen2:
        fields.update(bias=False, qkv_bias=True)
    else:
        fields.update(qk_norm="head")
        if fields["bias"]:
            raise UsageError("attention_bias=True is not modelled for Qwen3 (biases on the attention projections "
                             "only): flopbench has one bias flag for every linear layer")
    use_window = read("use_sliding_window", bool, False)
    window = read("sliding_window", int, 4096) if use_window else None
    first = read("max_window_layers", int, 28)
    return _windowed(read, fields, window, lambda i: "sliding" if i >= first else "full")


#: The most layers a per-layer pattern (Qwen's window from `max_window_layers` on, off-grid dense layers) is
#: listed for: far above any real model, and a bound on the list a typo such as 10**18 layers would build.
MAX_LISTED_LAYERS = 100_000


def _listable(n_layer: int, what: str) -> int:
    if n_layer > MAX_LISTED_LAYERS:
        raise UsageError(f"n_layer={n_layer} is too many layers for {what}, which flopbench lists layer by layer "
                         f"(up to {MAX_LISTED_LAYERS:,})")
    return n_layer


def _qwen3_moe(read: Reader) -> dict:
    """Qwen3-MoE: Qwen3 attention; every layer's MLP is a mixture of `num_experts` experts of width
    `moe_intermediate_size`, `num_experts_per_tok` per token (no shared experts), except the layers in
    `mlp_only_layers` and those off the `decoder_sparse_step` grid, which keep a dense MLP of width
    intermediate_size (transformers' Qwen3MoeDecoderLayer)."""
    fields = _qwen(read)
    experts = read("num_experts", int, None) or read("num_local_experts", int, 128, "n_experts")
    step = read("decoder_sparse_step", int, 1)
    only = read("mlp_only_layers", list, [])
    if any(isinstance(i, bool) or not isinstance(i, int) for i in only):
        raise UsageError(f"dense_layers={only!r} is not allowed: mlp_only_layers must be a list of layer indices")
    n = fields["n_layer"]
    off_grid = {i for i in range(_listable(n, "decoder_sparse_step")) if (i + 1) % step} if step > 1 else set()
    dense = tuple(sorted({i for i in only if 0 <= i < n} | off_grid))
    return dict(fields, n_experts=experts, top_k=read("num_experts_per_tok", int, 8, "top_k"),
                d_ff_expert=read("moe_intermediate_size", int, 768, "d_ff_expert"), dense_layers=dense)


def _mixtral(read: Reader) -> dict:
    """Mixtral 8x7B (Jiang et al. 2024): Mistral attention, every MLP a mixture of `num_local_experts`
    SwiGLU experts of width intermediate_size, `num_experts_per_tok` per token."""
    fields = _llama(read, theta=1e6)
    return dict(fields, n_experts=read("num_local_experts", int, 8, "n_experts"),
                top_k=read("num_experts_per_tok", int, 2, "top_k"), d_ff_expert=fields["d_ff"])


def _gemma(read: Reader) -> dict:
    """Gemma (Gemma Team 2024): GeGLU, head_dim 256, tied embeddings scaled by sqrt(d). Gemma 2 adds norms
    after attention and MLP, alternating sliding (4096) and full layers and soft caps (50 on attention
    scores, 30 on logits); Gemma 3 drops the caps, adds QK-norm and slides 5 layers in 6."""
    mt = read.model_type
    fields = _common(read, tie=True, head_dim=256)
    act = read("hidden_activation", str) or read("hidden_act", str, "gelu_pytorch_tanh")
    if not act.startswith("gelu"):
        raise UsageError(f"not modelled: hidden_activation={act!r} in a Gemma model (flopbench models GeGLU)")
    fields.update(mlp="geglu", embed_scale=True)
    if mt == "gemma":
        return dict(fields, layer_types=("full",))
    fields.update(norm_position="sandwich", attn_softcap=read("attn_logit_softcapping", float, 50.0 if mt == "gemma2"
                                                               else None),
                  final_softcap=read("final_logit_softcapping", float, 30.0 if mt == "gemma2" else None))
    window = read("sliding_window", int, 4096)
    if mt == "gemma2":
        return _windowed(read, fields, window, ("sliding", "full"))
    every = read("sliding_window_pattern", int, None) or read("_sliding_window_pattern", int, 6)
    check_size("sliding_window_pattern", every)
    return _windowed(read, dict(fields, qk_norm="head"), window, ("sliding",) * (every - 1) + ("full",))


def _phi3(read: Reader) -> dict:
    """Phi-3 (Abdin et al. 2024): Llama-like with fused QKV and gate-up projections (the same matmuls);
    `sliding_window` over every layer when set (no window by default). `partial_rotary_factor` rotates
    fewer dimensions: no matmul."""
    fields = _common(read, bias_key="attention_bias")
    return _windowed(read, fields, read("sliding_window", int, None), ("sliding",))


def _olmo2(read: Reader) -> dict:
    """OLMo 2 (OLMo et al. 2024): norms after attention and MLP (none before), QK-norm over the whole Q and K
    projections."""
    return dict(_common(read), norm_position="post", qk_norm="proj")


#: model_type -> the function reading its keys onto ModelConfig fields. The order is the one messages list.
MAPPERS = {
    "gpt2": _gpt2, "llama": _llama, "mistral": lambda r: _llama(r, window_default=4096),
    "mixtral": _mixtral, "qwen2": _qwen, "qwen3": _qwen, "qwen3_moe": _qwen3_moe, "gemma": _gemma,
    "gemma2": _gemma, "gemma3_text": _gemma, "phi3": _phi3, "olmo2": _olmo2,
    "smollm3": lambda r: _llama(r, tie=True, theta=2e6),
}


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


def load_hf_config(path: str | Path) -> ModelConfig:
    """The `ModelConfig` of the Hugging Face config.json at `path` (or in the folder `path`)."""
    path = Path(path)
    if path.is_dir():
        path = path / "config.json"
    raw = _read_json(path)
    model_type = raw.get("model_type")
    if not isinstance(model_type, str) or model_type not in MAPPERS:
        what = "has no model_type" if model_type is None else f"has model_type {model_type!r} (not modelled)"
        raise UsageError(f"{path} {what}: supported model types are {', '.join(MAPPERS)}")
    try:
        for key, what in NOT_MODELLED.items():
            if raw.get(key) is not None:
                raise UsageError(f"not modelled: {key}={raw[key]!r}, {what}; flopbench would count it wrong")
        read = Reader(raw, model_type)
        fields = MAPPERS[model_type](read)
        if fields.get("n_kv_head") is not None and fields["n_kv_head"] == fields["n_head"]:
            fields["n_kv_head"] = None
        name_or_path = raw.get("_name_or_path")
        if name_or_path is not None:
            check_name(name_or_path, "_name_or_path")
        name = (name_or_path or "").rstrip("/").split("/")[-1] or f"{model_type}:{path.parent.name or path.stem}"
        return ModelConfig(name=name, **fields)
    except UsageError as e:
        raise UsageError(f"{path}: {e}") from None
