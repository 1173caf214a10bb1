"""Read a Hugging Face `config.json` into a `ModelConfig`: offline, the file only (no hub, no weights).

One small function per `model_type` (`MAPPERS`) reads its keys by their transformers names; a key that is
absent takes the value transformers gives it (transformers 5 spellings included: `rope_parameters`,
`layer_types`). Each function's docstring says what the family is: gpt2, llama, mistral (every layer
sliding, default window 4096), mixtral (experts), qwen2 (Q/K/V biases), qwen3 (QK-norm, head_dim 128),
qwen3_moe (Qwen3 attention, experts with dense `mlp_only_layers`), gemma / gemma2 / gemma3_text (GeGLU, scaled
embeddings, sandwich norms, windows, soft caps), phi3 (fused projections: the same matmuls), olmo2
(post-norms, QK-norm over the projections), smollm3 (Llama-like).

Sliding windows follow each family's transformers 5 code (`configuration_<family>.py` and the attention
module of `modeling_<family>.py`, read in 5.24), key by key; a 0 or false is a value, never "absent":

| model_type | which layers slide, over `sliding_window` |
|---|---|
| gpt2, llama, gemma, olmo2 | none: a `sliding_window` key is not read |
| mistral | every layer (default window 4096; null = none) |
| mixtral, phi3 | every layer when `sliding_window` is set (default none) |
| qwen2, qwen3 | only if `use_sliding_window` (default false; window default 4096): the `layer_types` entries, \
else layers i >= `max_window_layers` (default 28) |
| qwen3_moe | every layer if `use_sliding_window` (window default 4096); transformers 5 reads no \
`max_window_layers` and no `layer_types` here (4.x slid only layers i >= `max_window_layers`) |
| gemma2 | `layer_types`, else even layers i (default window 4096; null = none) |
| gemma3_text | `layer_types`, else all but every `sliding_window_pattern`-th layer (default 6; 1 to \
num_hidden_layers; `_sliding_window_pattern` is not read); `use_bidirectional_attention` is refused |
| smollm3 | only if `use_sliding_window` (window default none): the `layer_types` entries, else the \
no-RoPE layers (`no_rope_layers` 0, else every `no_rope_layer_interval`-th layer, default 4) |

A `layer_types` is checked in every family as transformers' `PreTrainedConfig.validate_layer_type` checks
it (a list, one entry per layer), and must hold full or sliding attention only, even where the family
does not read it.

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


def _listed_layer_types(read: Reader, n_layer: int) -> tuple[str, ...] | None:
    """The file's `layer_types` as flopbench's "full" / "sliding" (None when absent), checked in every family
    as transformers' `PreTrainedConfig.validate_layer_type` checks it: a list (an object is refused), one
    entry per layer; an entry flopbench does not model is refused."""
    listed = read("layer_types", list)
    if listed is None:
        return None
    unknown = sorted({str(t) for t in listed if not isinstance(t, str) or t not in _LAYER_TYPES})
    if unknown:
        raise UsageError(f"not modelled: layer_types {', '.join(map(repr, unknown))} (flopbench models "
                         f"{', '.join(_LAYER_TYPES)})")
    if len(listed) != n_layer:
        raise UsageError(f"layer_types has {len(listed)} entries for num_hidden_layers={n_layer}: "
                         f"give one per layer")
    return tuple(_LAYER_TYPES[t] for t in listed)


def _windowed(fields: dict, window: int | None, types) -> dict:
    """`fields` with each layer's attention: `types` (a tuple cycled over the layers, or a function giving
    the tuple, called only when there is a window). A sliding layer without a window is full attention, as
    in transformers (its attention module passes sliding_window=None)."""
    types = types() if callable(types) else types
    if window is None or "sliding" not in types:
        return dict(fields, layer_types=("full",), sliding_window=None)
    return dict(fields, layer_types=types if len(set(types)) > 1 else types[:1], sliding_window=window)


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
    fields["layer_types"] = _listed_layer_types(read, fields["n_layer"])
    return fields


def _gpt2(read: Reader) -> dict:
    """GPT-2 (Radford et al. 2019): always biases, LayerNorm, learned positions, GELU."""
    fields = dict(n_layer=read("n_layer", int, _REQUIRED), d_model=read("n_embd", int, _REQUIRED, "d_model"),
                  n_head=read("n_head", int, _REQUIRED), d_ff=read("n_inner", int, None, "d_ff"),
                  vocab_size=read("vocab_size", int, _REQUIRED),
                  max_seq_len=read("n_positions", int, _REQUIRED, "max_seq_len"),
                  tie_embeddings=read("tie_word_embeddings", bool, True, "tie_embeddings"), bias=True)
    read.check_missing()
    _listed_layer_types(read, fields["n_layer"])  # checked, not read: GPT-2 has no window
    return fields


def _llama(read: Reader, **common) -> dict:
    """Llama 2 / 3 (Touvron et al. 2023): no window (transformers' Llama reads no `sliding_window` or
    `layer_types`). One bias flag covers attention and MLP."""
    fields = _common(read, **common)
    mlp_bias = read("mlp_bias", bool, False)
    if fields["bias"] != mlp_bias:
        raise UsageError(f"attention_bias={fields['bias']!r} and mlp_bias={mlp_bias!r} differ: flopbench has one "
                         f"bias flag for every linear layer (both must be true or both false)")
    return dict(fields, layer_types=("full",))


def _every_layer(read: Reader, fields: dict, default: int | None) -> dict:
    """Every layer slides over `sliding_window` (`default` when absent, none when null): transformers'
    Mistral, Mixtral and Phi-3 pass config.sliding_window to every layer's attention."""
    return _windowed(fields, read("sliding_window", int, default), ("sliding",))


def _mistral(read: Reader) -> dict:
    """Mistral 7B (Jiang et al. 2023): Llama with every layer sliding over `sliding_window` (transformers'
    default 4096)."""
    return _every_layer(read, _llama(read), 4096)


def _smollm3(read: Reader) -> dict:
    """SmolLM3: Llama-like, tied. Its no-RoPE layers change no matmul; they are the layers that slide, and
    only when `use_sliding_window` is true (transformers' SmolLM3Attention: config.sliding_window if
    use_sliding_window and layer_types[i] is sliding; SmolLM3Config builds layer_types from no_rope_layers,
    else from no_rope_layer_interval)."""
    fields = _llama(read, tie=True, theta=2e6)
    n, listed = fields["n_layer"], _listed_layer_types(read, fields["n_layer"])
    use = read("use_sliding_window", bool, False)
    window = read("sliding_window", int, None)
    no_rope = read("no_rope_layers", list, None)
    interval = read("no_rope_layer_interval", int, 4)
    if no_rope is not None and (len(no_rope) != n or any(
            type(v) is not int or v not in (0, 1) for v in no_rope)):
        raise UsageError(f"no_rope_layers={no_rope!r} is not allowed: give one 0 or 1 per layer "
                         f"(num_hidden_layers={n}; 0 = no RoPE)")
    if no_rope is None and interval < 1:
        raise UsageError(f"no_rope_layer_interval={interval} is not allowed: it must be >= 1 (every "
                         f"interval-th layer has no RoPE)")

    def types():
        if listed is not None:
            return listed
        if no_rope is not None:
            return tuple("full" if v else "sliding" for v in no_rope)
        return tuple("full" if (i + 1) % interval else "sliding" for i in range(_listable(min(interval, n),
                                                                                     "no_rope_layer_interval")))

    return _windowed(fields, window if use else None, types)


def _qwen(read: Reader, **extra) -> dict:
    """Qwen2 (Q/K/V biases only) and Qwen3 (QK-norm per head, head_dim 128 by default, no biases). Qwen3-MoE
    has Qwen3's attention, but transformers 5's Qwen3MoeConfig has no head_dim default: hidden / heads."""
    qwen2 = read.model_type == "qwen2"
    fields = _common(read, head_dim=128 if read.model_type == "qwen3" else None, **extra)
    if qwen2:
        fields.update(bias=False, qkv_bias=True)
    else:
        fields.update(qk_norm="head")
        if fields["bias"]:
            raise UsageError("attention_bias=True is not modelled for Qwen3 (biases on the attention projections "
                             "only): flopbench has one bias flag for every linear layer")
    return fields


def _qwen_window(read: Reader) -> int | None:
    """`sliding_window` (default 4096) if `use_sliding_window` (default false), else none: Qwen2Config,
    Qwen3Config and Qwen3MoeConfig set sliding_window to None when use_sliding_window is false."""
    use = read("use_sliding_window", bool, False)
    window = read("sliding_window", int, 4096)
    return window if use else None


def _qwen_dense(read: Reader) -> dict:
    """Qwen2 and Qwen3: their window covers the `layer_types` entries that slide, else the layers from
    `max_window_layers` on (Qwen2Config / Qwen3Config: sliding if i >= max_window_layers)."""
    fields = _qwen(read)
    first = read("max_window_layers", int, 28)
    n, listed = fields["n_layer"], fields["layer_types"]
    return _windowed(fields, _qwen_window(read), lambda: listed or tuple(
        "sliding" if i >= first else "full" for i in range(_listable(n, "max_window_layers"))))


#: The most layers a per-layer pattern (Qwen's window from `max_window_layers` on, off-grid dense layers) is
#: listed for: far above any real model, and a bound on the list a typo such as 10**18 layers would build.
MAX_LISTED_LAYERS = 100_000


def _listable(count: int, what: str, key: str = "n_layer") -> int:
    """`count` if a per-layer list of that many entries may be built for `what` (at most `MAX_LISTED_LAYERS`),
    else a `UsageError` naming `key`."""
    if count > MAX_LISTED_LAYERS:
        raise UsageError(f"{key}={count} is too many layers for {what}, which flopbench lists layer by layer "
                         f"(up to {MAX_LISTED_LAYERS:,})")
    return count


def _n_experts(read: Reader, default: int) -> int:
    """`num_local_experts`, else `num_experts`, else `default`: transformers' Mixtral and Qwen3-MoE configs
    map num_experts onto num_local_experts (attribute_map), so the latter wins when both are given."""
    experts = read("num_local_experts", int, None, "n_experts")
    return read("num_experts", int, default, "n_experts") if experts is None else experts


def _qwen3_moe(read: Reader) -> dict:
    """Qwen3-MoE: Qwen3 attention, every layer sliding if `use_sliding_window` (transformers 5's
    Qwen3MoeAttention takes config.sliding_window in every layer). Every layer's MLP is a mixture of
    `num_experts` experts of width `moe_intermediate_size`, `num_experts_per_tok` per token (no shared
    experts), except the layers in `mlp_only_layers` and those off the `decoder_sparse_step` grid, which
    keep a dense MLP of width intermediate_size (transformers' Qwen3MoeDecoderLayer: experts where
    num_experts > 0 and (i + 1) % decoder_sparse_step == 0). `num_local_experts` is transformers' name for
    num_experts (its attribute_map), and wins when both are given; 0 experts is a dense model."""
    fields = _windowed(_qwen(read), _qwen_window(read), ("sliding",))
    experts = _n_experts(read, 128)
    step = read("decoder_sparse_step", int, 1)
    only = read("mlp_only_layers", list, [])
    top_k = read("num_experts_per_tok", int, 8, "top_k")
    width = read("moe_intermediate_size", int, 768, "d_ff_expert")
    if step < 1:
        raise UsageError(f"decoder_sparse_step={step} is not allowed: it must be >= 1 (experts in every "
                         f"step-th layer)")
    if any(isinstance(i, bool) or not isinstance(i, int) for i in only):
        raise UsageError(f"dense_layers={only!r} is not allowed: mlp_only_layers must be a list of layer indices")
    if experts == 0:
        return dict(fields, n_experts=0)
    n = fields["n_layer"]
    off_grid = {i for i in range(_listable(n, "decoder_sparse_step")) if (i + 1) % step} if step > 1 else set()
    dense = tuple(sorted({i for i in only if 0 <= i < n} | off_grid))
    return dict(fields, n_experts=experts, top_k=top_k, d_ff_expert=width, dense_layers=dense)


def _mixtral(read: Reader) -> dict:
    """Mixtral 8x7B (Jiang et al. 2024): Mistral attention (every layer sliding when `sliding_window` is
    set; transformers' default: none), every MLP a mixture of `num_local_experts` SwiGLU experts of width
    intermediate_size, `num_experts_per_tok` per token."""
    fields = _every_layer(read, _llama(read, theta=1e6), None)
    return dict(fields, n_experts=_n_experts(read, 8),
                top_k=read("num_experts_per_tok", int, 2, "top_k"), d_ff_expert=fields["d_ff"])


def _gemma(read: Reader) -> dict:
    """Gemma (Gemma Team 2024): GeGLU, head_dim 256, tied embeddings scaled by sqrt(d). Gemma 2 adds norms
    after attention and MLP, alternating sliding (4096) and full layers and soft caps (50 on attention
    scores, 30 on logits); Gemma 3 drops the caps, adds QK-norm and slides 5 layers in 6."""
    mt = read.model_type
    fields = _common(read, tie=True, head_dim=256)
    act = read("hidden_act" if mt == "gemma" else "hidden_activation", str, "gelu_pytorch_tanh")
    if not act.startswith("gelu"):
        raise UsageError(f"not modelled: hidden_activation={act!r} in a Gemma model (flopbench models GeGLU)")
    fields.update(mlp="geglu", embed_scale=True)
    if mt == "gemma":
        return dict(fields, layer_types=("full",))
    if read("use_bidirectional_attention", bool, False):
        raise UsageError("not modelled: use_bidirectional_attention=True (flopbench models causal attention)")
    listed = fields["layer_types"]
    fields.update(norm_position="sandwich", attn_softcap=read("attn_logit_softcapping", float, 50.0 if mt == "gemma2"
                                                               else None),
                  final_softcap=read("final_logit_softcapping", float, 30.0 if mt == "gemma2" else None))
    window = read("sliding_window", int, 4096)
    if mt == "gemma2":
        return _windowed(fields, window, listed or ("sliding", "full"))
    every, n = read("sliding_window_pattern", int, 6), fields["n_layer"]
    if listed is None:
        check_size("sliding_window_pattern", every)
    if listed is None and not 1 <= every <= n:
        raise UsageError(f"sliding_window_pattern={every} is not allowed: give 1 to num_hidden_layers="
                         f"{n} (one full-attention layer in every `pattern`; a layer_types list for others)")

    def pattern():  # Gemma3TextConfig: full where (i + 1) % sliding_window_pattern == 0
        return ("sliding",) * (_listable(every, "a Gemma 3 pattern", "sliding_window_pattern") - 1) + ("full",)

    return _windowed(dict(fields, qk_norm="head"), window, listed or pattern)


def _phi3(read: Reader) -> dict:
    """Phi-3 (Abdin et al. 2024): Llama-like with fused QKV and gate-up projections (the same matmuls);
    `sliding_window` over every layer when set (no window by default). `partial_rotary_factor` rotates
    fewer dimensions: no matmul."""
    return _every_layer(read, _common(read, bias_key="attention_bias"), None)


def _olmo2(read: Reader) -> dict:
    """OLMo 2 (OLMo et al. 2024): norms after attention and MLP (none before), QK-norm over the whole Q and K
    projections."""
    return dict(_common(read), norm_position="post", qk_norm="proj", layer_types=("full",))


#: model_type -> the function reading its keys onto ModelConfig fields. The order is the one messages list.
MAPPERS = {
    "gpt2": _gpt2, "llama": _llama, "mistral": _mistral, "mixtral": _mixtral, "qwen2": _qwen_dense,
    "qwen3": _qwen_dense, "qwen3_moe": _qwen3_moe, "gemma": _gemma, "gemma2": _gemma, "gemma3_text": _gemma,
    "phi3": _phi3, "olmo2": _olmo2, "smollm3": _smollm3,
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


def file_name(path: Path, model_type: str) -> str:
    """The name of a config read from `path` without a `_name_or_path`: "<model_type>:<file stem>"
    ("llama:llama3-8b" for cfgs/llama3-8b.json), or the folder's name for a file called config.json, which
    names nothing ("llama:some-model" for some-model/config.json, the layout of a model folder)."""
    stem = path.stem
    if stem == "config":
        stem = path.absolute().parent.name or stem
    return f"{model_type}:{stem}"


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
        name = (name_or_path or "").rstrip("/").split("/")[-1] or file_name(path, model_type)
        return ModelConfig(name=name, **fields)
    except UsageError as e:
        raise UsageError(f"{path}: {e}") from None
