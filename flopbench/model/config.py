"""Model configuration: one frozen `ModelConfig` drives the model, the formulas and the counters.

`validate_config` and `validate_shapes` are the one place that decides whether a config (and a batch of
a given shape for it) is legal; everything else may assume it is. This module also holds the one copy
of every choice list flopbench offers (architectures, checkpointing modes, timed modes, devices,
compute dtypes), so the CLI, the API, sweep specs and the peak table all name the same choices.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from ..errors import UsageError

#: The choices of the architecture fields (the first of each is the GPT-2 default).
MLP_KINDS = ("gelu", "swiglu")
NORM_KINDS = ("layernorm", "rmsnorm")
POSITION_KINDS = ("learned", "rope")

#: Activation checkpointing of every block: none, or full (torch's non-reentrant `checkpoint`).
CHECKPOINTING = ("none", "full")
#: What `run --checkpointing` takes: one of those, or both (each timed).
CHECKPOINTING_CHOICES = (*CHECKPOINTING, "both")
#: The steps `run` times: a forward without autograd; forward + backward; forward + backward + AdamW.
MODES = ("forward", "fwd_bwd", "train_step")
#: Where `run` measures: auto = cuda if available, else cpu.
DEVICES = ("auto", "cuda", "cpu")
#: Compute dtypes, which are also the columns of the peak table (tf32 = float32 matmuls on tensor cores).
DTYPES = ("fp32", "tf32", "bf16", "fp16")

#: The most timed steps and untimed warm-up steps one `run` (or sweep grid point) takes: far above what a
#: stable median needs (10 steps by default), and a bound on how long a typo such as `--iters 10000000` can run.
MAX_ITERS = 10_000
MAX_WARMUP = 1_000

#: The largest size flopbench accepts: each config field and batch dimension, the elements of any one
#: tensor a step builds and the parameter count. torch sizes are signed 64-bit integers and it refuses a
#: storage of 2**63 bytes or more ("Storage size calculation overflowed"): 2**60 elements leaves room for
#: 8-byte elements. It also keeps every FLOPs count far inside a float (below 1e100), so rates and ratios exist.
MAX_SIZE = 2**60

#: Llama-family architecture: SwiGLU MLP, RMSNorm, rotary positions, no biases, untied LM head
#: (Touvron et al. 2023, "Llama 2", section 2.2; the Llama 3 herd paper, Dubey et al. 2024, Table 3;
#: Jiang et al. 2023, "Mistral 7B", Table 1).
LLAMA_ARCH = dict(bias=False, tie_embeddings=False, mlp="swiglu", norm="rmsnorm", positions="rope")


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


def _show(value) -> str:
    """`repr(value)`, but an integer too long to read (Python will not even print one of over 4300 digits)
    as its size."""
    if isinstance(value, int) and value.bit_length() > 100:
        return f"an integer of about {int(value.bit_length() * math.log10(2)) + 1} digits"
    return repr(value)


def check_size(name: str, value: int) -> None:
    """Raise `UsageError` if the size `value` (a positive integer) is above `MAX_SIZE`."""
    if value > MAX_SIZE:
        raise UsageError(f"{name}={_show(value)} is above the limit of {MAX_SIZE:,} (2**60): torch cannot index "
                         f"tensors that large")


def check_name(value, key: str = "name") -> str:
    """`value` if it is printable text (no NUL, newline or other control character: names end up in file
    names and one-line messages), else a `UsageError` naming `key`."""
    if not isinstance(value, str) or not value.isprintable():
        raise UsageError(f"{key}={_show(value)} is not allowed: {key} must be printable text "
                         f"(no control characters)")
    return value


def validate_config(cfg: ModelConfig) -> None:
    """Raise `UsageError` naming the first bad value of `cfg` and what is allowed."""
    check_name(cfg.name)
    for field in _POSITIVE_INTS:
        value = getattr(cfg, field)
        if not _is_positive_int(value):
            raise UsageError(f"{field}={_show(value)} is not allowed: {field} must be a positive integer")
        check_size(field, value)
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
            raise UsageError(f"n_kv_head={_show(cfg.n_kv_head)} is not allowed: n_kv_head must be a positive "
                             f"integer (or None for n_kv_head = n_head)")
        if cfg.n_head % cfg.n_kv_head:
            raise UsageError(f"n_kv_head={cfg.n_kv_head} does not divide n_head={cfg.n_head}: each key/value "
                             f"head serves a whole group of query heads (n_kv_head must divide n_head)")
    if cfg.positions == "rope":
        if cfg.head_dim % 2:
            raise UsageError(f"head_dim={cfg.head_dim} (d_model={cfg.d_model} / n_head={cfg.n_head}) is odd: "
                             f"rope rotates pairs of dimensions, so head_dim must be even")
        theta = cfg.rope_theta
        if isinstance(theta, bool) or not isinstance(theta, (int, float)) or not 0 < theta <= 1e300:
            raise UsageError(f"rope_theta={_show(theta)} is not allowed: rope_theta must be a positive number "
                             f"up to 1e300 (the RoPE frequencies are computed in floating point)")


def validate_shapes(cfg: ModelConfig, batch_size: int, seq_len: int) -> None:
    """Raise `UsageError` if a batch of `batch_size` x `seq_len` tokens cannot run on `cfg`."""
    for field, value in (("batch_size", batch_size), ("seq_len", seq_len)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise UsageError(f"{field}={_show(value)} is not allowed: {field} must be a positive integer")
        check_size(field, value)
    if seq_len > cfg.max_seq_len:
        raise UsageError(
            f"seq_len={seq_len} exceeds the model's {cfg.max_seq_len} positions: "
            f"use --seq-len <= {cfg.max_seq_len} (or raise --max-seq-len)"
        )


def validate_tensor_sizes(cfg: ModelConfig, batch_size: int, seq_len: int, n_params: int) -> None:
    """Raise `UsageError` if a step of `batch_size` x `seq_len` tokens on `cfg` (with `n_params` parameters,
    `flops.analytic.param_counts(cfg).total`) would build a tensor of more than `MAX_SIZE` elements: the
    activations of the widest layer, B·T·max(d_model, d_ff, vocab_size); the attention scores, B·n_head·T²
    (materialized where attention has no fused kernel, as on a CPU); the parameters. Call it before building
    any tensor, even on the meta device: torch fails deep inside with "Storage size calculation overflowed"."""
    B, T, width = batch_size, seq_len, max(cfg.d_model, cfg.d_ff, cfg.vocab_size)
    products = (
        (f"batch_size x seq_len x max(d_model, d_ff, vocab_size) = {B} x {T} x {width}", B * T * width),
        (f"batch_size x n_head x seq_len^2 = {B} x {cfg.n_head} x {T}^2", B * cfg.n_head * T * T),
        ("the parameter count", n_params),
    )
    for what, elements in products:
        if elements > MAX_SIZE:
            raise UsageError(f"{what} = {elements:,} elements, above the limit of {MAX_SIZE:,} (2**60; torch sizes "
                             f"are 64-bit integers): lower --batch-size, --seq-len or the model's sizes")


def pad_vocab(cfg: ModelConfig, multiple: int) -> ModelConfig:
    """`cfg` with the vocabulary padded up to a multiple of `multiple` (nanoGPT pads 50257 to 50304 so the
    LM-head matmul tiles evenly). The padded rows are real matmul work, and every count uses them."""
    if isinstance(multiple, bool) or not isinstance(multiple, int) or multiple < 1:
        raise UsageError(f"--pad-vocab {multiple!r}: must be a positive integer (1 = no padding)")
    padded = -(-cfg.vocab_size // multiple) * multiple  # integer ceiling: exact for any vocabulary
    return cfg if padded == cfg.vocab_size else cfg.replace(vocab_size=padded, name=f"{cfg.name}+pad{multiple}")
