"""Model configuration: one frozen `ModelConfig` drives the model, the formulas and the counters.

`validate_config` and `validate_shapes` are the one place that decides whether a config (and a batch of
a given shape for it) is legal; everything else may assume it is.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .errors import UsageError


@dataclass(frozen=True)
class ModelConfig:
    """A GPT-2-style decoder-only transformer (pre-LN, learned positions, GELU MLP)."""

    name: str = "custom"
    n_layer: int = 12
    d_model: int = 768
    n_head: int = 12
    d_ff: int | None = None  # None: 4 * d_model, as in GPT-2
    vocab_size: int = 50257
    max_seq_len: int = 1024
    bias: bool = True
    tie_embeddings: bool = True

    def __post_init__(self) -> None:
        if self.d_ff is None and isinstance(self.d_model, int):
            object.__setattr__(self, "d_ff", 4 * self.d_model)
        validate_config(self)

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    def replace(self, **changes) -> "ModelConfig":
        """A copy with `changes` applied (re-validated)."""
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


#: Config fields a user may override on top of a preset (CLI: --n-layer, --d-model, ...).
OVERRIDABLE = ("n_layer", "d_model", "n_head", "d_ff", "vocab_size", "max_seq_len")
_POSITIVE_INTS = ("n_layer", "d_model", "n_head", "d_ff", "vocab_size", "max_seq_len")


def validate_config(cfg: ModelConfig) -> None:
    """Raise `UsageError` naming the first bad value of `cfg` and what is allowed."""
    for field in _POSITIVE_INTS:
        value = getattr(cfg, field)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise UsageError(f"{field}={value!r} is not allowed: {field} must be a positive integer")
    if cfg.d_model % cfg.n_head:
        raise UsageError(
            f"n_head={cfg.n_head} does not divide d_model={cfg.d_model}: "
            f"d_model must be a multiple of n_head"
        )


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


PRESETS: dict[str, ModelConfig] = {
    "gpt2": ModelConfig("gpt2", n_layer=12, d_model=768, n_head=12),
    "gpt2-medium": ModelConfig("gpt2-medium", n_layer=24, d_model=1024, n_head=16),
    "gpt2-large": ModelConfig("gpt2-large", n_layer=36, d_model=1280, n_head=20),
    "gpt2-xl": ModelConfig("gpt2-xl", n_layer=48, d_model=1600, n_head=25),
    # A small model that trains a few steps on a laptop CPU in seconds: the default of `flopbench run`.
    "tiny": ModelConfig("tiny", n_layer=4, d_model=256, n_head=4, vocab_size=8192, max_seq_len=256),
}

def resolve_config(model: str, **overrides) -> ModelConfig:
    """The preset named `model` with `overrides` (fields of `OVERRIDABLE`, None = keep) applied."""
    if model not in PRESETS:
        raise UsageError(f"unknown model {model!r}: choose one of {', '.join(PRESETS)}")
    unknown = set(overrides) - set(OVERRIDABLE)
    if unknown:
        raise UsageError(f"cannot override {sorted(unknown)}: overridable fields are {', '.join(OVERRIDABLE)}")
    base = PRESETS[model]
    changes = {k: v for k, v in overrides.items() if v is not None}
    if "d_model" in changes and "d_ff" not in changes and base.d_ff == 4 * base.d_model:
        changes["d_ff"] = 4 * changes["d_model"]  # keep the preset's 4x MLP ratio
    if changes:
        changes["name"] = f"{base.name}+custom"
    return base.replace(**changes)
