"""Model configuration: one frozen `ModelConfig` drives the model, the formulas and the counters.

`validate_config` and `validate_shapes` are the one place that decides whether a config (and a batch of
a given shape for it) is legal; everything else may assume it is.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from .errors import UsageError


#: The choices of the architecture fields (the first of each is the GPT-2 default).
MLP_KINDS = ("gelu", "swiglu")
NORM_KINDS = ("layernorm", "rmsnorm")
POSITION_KINDS = ("learned", "rope")


@dataclass(frozen=True)
class ModelConfig:
    """A pre-norm decoder-only transformer: GPT-2 by default, Llama-family with the fields below.

    - `mlp`: "gelu" (two matrices d -> d_ff -> d, GPT-2) or "swiglu" (three: gate and up d -> d_ff,
      down d_ff -> d; Shazeer 2020, "GLU Variants Improve Transformer"; Touvron et al. 2023).
    - `norm`: "layernorm" (weight, + bias when `bias`) or "rmsnorm" (weight only; Zhang & Sennrich 2019).
    - `positions`: "learned" (a max_seq_len x d_model table) or "rope" (rotary, no parameters;
      Su et al. 2021), with base `rope_theta`.
    - `n_kv_head`: key/value heads for grouped-query (1 < n_kv_head < n_head) or multi-query
      (n_kv_head = 1) attention (Ainslie et al. 2023); None = n_head (multi-head attention).
    - `bias`: biases in every linear layer and LayerNorm (the LM head never has one);
      `tie_embeddings`: the LM head shares the token embedding.
    """

    name: str = "custom"
    n_layer: int = 12
    d_model: int = 768
    n_head: int = 12
    d_ff: int | None = None  # None: 4 * d_model, as in GPT-2
    vocab_size: int = 50257
    max_seq_len: int = 1024
    bias: bool = True
    tie_embeddings: bool = True
    mlp: str = "gelu"
    norm: str = "layernorm"
    positions: str = "learned"
    n_kv_head: int | None = None  # None: n_head (multi-head attention)
    rope_theta: float = 10000.0  # RoPE base; only read when positions == "rope"

    def __post_init__(self) -> None:
        if self.d_ff is None and isinstance(self.d_model, int):
            object.__setattr__(self, "d_ff", 4 * self.d_model)
        validate_config(self)

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    @property
    def kv_heads(self) -> int:
        """Key/value heads: `n_kv_head`, or `n_head` when it is None."""
        return self.n_head if self.n_kv_head is None else self.n_kv_head

    @property
    def kv_dim(self) -> int:
        """Width of the K (and of the V) projection: kv_heads x head_dim (= d_model without GQA)."""
        return self.kv_heads * self.head_dim

    def replace(self, **changes) -> "ModelConfig":
        """A copy with `changes` applied (re-validated)."""
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


#: Config fields a user may override on top of a preset (CLI: --n-layer, --d-model, ...).
OVERRIDABLE = ("n_layer", "d_model", "n_head", "d_ff", "vocab_size", "max_seq_len", "n_kv_head")
_POSITIVE_INTS = ("n_layer", "d_model", "n_head", "d_ff", "vocab_size", "max_seq_len")
_CHOICES = {"mlp": MLP_KINDS, "norm": NORM_KINDS, "positions": POSITION_KINDS}
_BOOLS = ("bias", "tie_embeddings")


def _is_positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def validate_config(cfg: ModelConfig) -> None:
    """Raise `UsageError` naming the first bad value of `cfg` and what is allowed."""
    for field in _POSITIVE_INTS:
        value = getattr(cfg, field)
        if not _is_positive_int(value):
            raise UsageError(f"{field}={value!r} is not allowed: {field} must be a positive integer")
    if cfg.d_model % cfg.n_head:
        raise UsageError(
            f"n_head={cfg.n_head} does not divide d_model={cfg.d_model}: "
            f"d_model must be a multiple of n_head"
        )
    for field, allowed in _CHOICES.items():
        value = getattr(cfg, field)
        if value not in allowed:
            raise UsageError(f"{field}={value!r} is not allowed: choose one of {', '.join(allowed)}")
    for field in _BOOLS:
        value = getattr(cfg, field)
        if not isinstance(value, bool):
            raise UsageError(f"{field}={value!r} is not allowed: {field} must be true or false")
    if cfg.n_kv_head is not None:
        if not _is_positive_int(cfg.n_kv_head):
            raise UsageError(f"n_kv_head={cfg.n_kv_head!r} is not allowed: n_kv_head must be a positive integer "
                             f"(or None for n_kv_head = n_head)")
        if cfg.n_head % cfg.n_kv_head:
            raise UsageError(f"n_kv_head={cfg.n_kv_head} does not divide n_head={cfg.n_head}: each key/value "
                             f"head serves a whole group of query heads (n_kv_head must divide n_head)")
    if cfg.positions == "rope":
        if cfg.head_dim % 2:
            raise UsageError(f"head_dim={cfg.head_dim} (d_model={cfg.d_model} / n_head={cfg.n_head}) is odd: "
                             f"rope rotates pairs of dimensions, so head_dim must be even")
        theta = cfg.rope_theta
        if isinstance(theta, bool) or not isinstance(theta, (int, float)) or not 0 < theta < float("inf"):
            raise UsageError(f"rope_theta={theta!r} is not allowed: rope_theta must be a positive number")


def validate_shapes(cfg: ModelConfig, batch_size: int, seq_len: int) -> None:
    """Raise `UsageError` if a batch of `batch_size` x `seq_len` tokens cannot run on `cfg`."""
    for field, value in (("batch_size", batch_size), ("seq_len", seq_len)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise UsageError(f"{field}={value!r} is not allowed: {field} must be a positive integer")
    if seq_len > cfg.max_seq_len:
        raise UsageError(
            f"seq_len={seq_len} exceeds the model's {cfg.max_seq_len} positions: "
            f"use --seq-len <= {cfg.max_seq_len} (or raise --max-seq-len)"
        )


#: Llama-family architecture: SwiGLU MLP, RMSNorm, rotary positions, no biases, untied LM head
#: (Touvron et al. 2023, "Llama 2", section 2.2; the Llama 3 herd paper, Dubey et al. 2024, Table 3;
#: Jiang et al. 2023, "Mistral 7B", Table 1).
LLAMA_ARCH = dict(bias=False, tie_embeddings=False, mlp="swiglu", norm="rmsnorm", positions="rope")

PRESETS: dict[str, ModelConfig] = {
    "gpt2": ModelConfig("gpt2", n_layer=12, d_model=768, n_head=12),
    "gpt2-medium": ModelConfig("gpt2-medium", n_layer=24, d_model=1024, n_head=16),
    "gpt2-large": ModelConfig("gpt2-large", n_layer=36, d_model=1280, n_head=20),
    "gpt2-xl": ModelConfig("gpt2-xl", n_layer=48, d_model=1600, n_head=25),
    # A small model that trains a few steps on a laptop CPU in seconds: the default of `flopbench run`.
    "tiny": ModelConfig("tiny", n_layer=4, d_model=256, n_head=4, vocab_size=8192, max_seq_len=256),
    # Shapes of the published Hugging Face config.json files (meta-llama/Llama-2-7b-hf,
    # meta-llama/Meta-Llama-3-8B, meta-llama/Meta-Llama-3-70B, mistralai/Mistral-7B-v0.1).
    "llama2-7b": ModelConfig("llama2-7b", n_layer=32, d_model=4096, n_head=32, d_ff=11008, vocab_size=32000,
                             max_seq_len=4096, rope_theta=10000.0, **LLAMA_ARCH),
    "llama3-8b": ModelConfig("llama3-8b", n_layer=32, d_model=4096, n_head=32, n_kv_head=8, d_ff=14336,
                             vocab_size=128256, max_seq_len=8192, rope_theta=500000.0, **LLAMA_ARCH),
    "llama3-70b": ModelConfig("llama3-70b", n_layer=80, d_model=8192, n_head=64, n_kv_head=8, d_ff=28672,
                              vocab_size=128256, max_seq_len=8192, rope_theta=500000.0, **LLAMA_ARCH),
    "mistral-7b": ModelConfig("mistral-7b", n_layer=32, d_model=4096, n_head=32, n_kv_head=8, d_ff=14336,
                              vocab_size=32000, max_seq_len=32768, rope_theta=10000.0, **LLAMA_ARCH),
}


def _looks_like_path(model: str) -> bool:
    return model.endswith(".json") or "/" in model or "\\" in model or os.path.exists(model)


def resolve_config(model: str, **overrides) -> ModelConfig:
    """The preset named `model`, or the Hugging Face config.json at path `model` (a file, or a folder
    holding one), with `overrides` (fields of `OVERRIDABLE`, None = keep) applied."""
    unknown = set(overrides) - set(OVERRIDABLE)
    if unknown:
        raise UsageError(f"cannot override {sorted(unknown)}: overridable fields are {', '.join(OVERRIDABLE)}")
    if model in PRESETS:
        base = PRESETS[model]
    elif _looks_like_path(model):
        from .hf_config import load_hf_config

        base = load_hf_config(model)
    else:
        raise UsageError(f"unknown model {model!r}: choose one of {', '.join(PRESETS)}, "
                         f"or give the path of a Hugging Face config.json")
    changes = {k: v for k, v in overrides.items() if v is not None}
    if "d_model" in changes and "d_ff" not in changes and base.d_ff == 4 * base.d_model:
        changes["d_ff"] = 4 * changes["d_model"]  # keep the preset's 4x MLP ratio
    if changes:
        changes["name"] = f"{base.name}+custom"
    return base.replace(**changes)
