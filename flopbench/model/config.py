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

from ..errors import UsageError, check_int

#: The choices of the architecture fields (the first of each is the GPT-2 default).
MLP_KINDS = ("gelu", "swiglu", "geglu")
NORM_KINDS = ("layernorm", "rmsnorm")
POSITION_KINDS = ("learned", "rope")
#: Where a block's norms sit: "pre" (GPT-2, Llama: x + f(norm(x)), two per block), "sandwich" (Gemma 2 / 3:
#: x + norm(f(norm(x))), four per block), "post" (OLMo 2: x + norm(f(x)), two per block).
NORM_POSITIONS = ("pre", "sandwich", "post")
#: RMSNorm on queries and keys before attention: "none"; "head" (over each head's head_dim, weights shared
#: by the heads: Qwen3, Gemma 3); "proj" (over the whole Q and K projections: OLMo 2).
QK_NORMS = ("none", "head", "proj")
#: Attention of one layer: over every earlier position ("full") or the last `sliding_window` ("sliding").
LAYER_TYPES = ("full", "sliding")

#: Activation checkpointing: none; full (every block, torch's non-reentrant `checkpoint`); selective (only
#: the attention core QK^T, softmax, AV of every block: Korthikanti et al. 2022, §4.1).
CHECKPOINTING = ("none", "full", "selective")
#: The checkpointing `profile` offers for any module: none, or the whole module call (it cannot know where
#: a module's attention core is, so "selective" needs flopbench's own model).
MODULE_CHECKPOINTING = ("none", "full")
#: What `run --checkpointing` takes: one of those; both (none and full, each timed); all (all three).
CHECKPOINTING_CHOICES = (*CHECKPOINTING, "both", "all")


def checkpointing_modes(choice: str) -> tuple[str, ...]:
    """The checkpointing modes one of `CHECKPOINTING_CHOICES` stands for."""
    return {"both": ("none", "full"), "all": CHECKPOINTING}.get(choice, (choice,))
#: The steps `run` times: a forward without autograd; forward + backward; forward + backward + AdamW.
MODES = ("forward", "fwd_bwd", "train_step")
#: How `run` computes the attention core (`model.attention`): SDPA (torch picks the kernel) or FlexAttention.
ATTENTION = ("sdpa", "flex")
#: Where `run` measures: auto = cuda if available, else cpu.
DEVICES = ("auto", "cuda", "cpu")
#: Compute dtypes, which are also the columns of the peak table (tf32 = float32 matmuls on tensor cores).
DTYPES = ("fp32", "tf32", "bf16", "fp16", "fp8")
#: float8 training recipes (torchao's `Float8LinearConfig.from_recipe_name`): one scale per tensor
#: ("tensorwise"), or one per row of each operand ("rowwise"); the first is the default.
FP8_RECIPES = ("tensorwise", "rowwise")
#: A float8 matmul (`torch._scaled_mm`) needs both dimensions of its weight to be multiples of 16, so only such
#: Linear layers are converted (torchao's own filters skip the others too).
FP8_DIM_MULTIPLE = 16


def base_dtype(dtype: str) -> str:
    """The dtype everything but the float8 matmuls runs in: "bf16" for "fp8" (the weights under bf16 autocast,
    the LM head, the attention core, the norms), the dtype itself otherwise."""
    return "bf16" if dtype == "fp8" else dtype

#: The most timed steps and untimed warm-up steps one `run` (or sweep grid point) takes: far above what a
#: stable median needs (10 steps by default), and a bound on how long a typo such as `--iters 10000000` can run.
MAX_ITERS = 10_000
MAX_WARMUP = 1_000
#: At most this many steps recorded by torch.profiler (`flopbench explain`): each is synchronized and kept in memory.
MAX_PROFILE_STEPS = 100


def check_steps(warmup: int, iters: int) -> None:
    """Refuse step counts outside 0..`MAX_WARMUP` warm-up and 1..`MAX_ITERS` timed steps: a UsageError."""
    check_int("warmup", warmup, 0)
    check_int("iters", iters, 1)
    if iters > MAX_ITERS or warmup > MAX_WARMUP:
        raise UsageError(f"iters={iters}, warmup={warmup}: at most {MAX_ITERS:,} timed and {MAX_WARMUP:,} warm-up "
                         f"steps (MAX_ITERS, MAX_WARMUP; a larger value would run for days)")

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
    """A decoder-only transformer: GPT-2 by default; Llama, Mistral, Qwen, Gemma, Phi-3, OLMo 2 and
    mixture-of-experts models with the fields below.

    - `mlp`: "gelu" (two matrices d -> d_ff -> d, GPT-2), "swiglu" (three: gate and up d -> d_ff, down
      d_ff -> d; Shazeer 2020, "GLU Variants Improve Transformer"; Touvron et al. 2023) or "geglu" (the
      same three matrices with a GELU gate: Shazeer 2020, eq. 5; Gemma).
    - `norm`: "layernorm" (weight, + bias when `bias`) or "rmsnorm" (weight only; Zhang & Sennrich 2019);
      `norm_position`: see `NORM_POSITIONS`; `qk_norm`: see `QK_NORMS`.
    - `positions`: "learned" (a max_seq_len x d_model table) or "rope" (rotary, no parameters;
      Su et al. 2021), with base `rope_theta`.
    - `n_kv_head`: key/value heads for grouped-query (1 < n_kv_head < n_head) or multi-query
      (n_kv_head = 1) attention (Ainslie et al. 2023); None = n_head (multi-head attention).
    - `head_dim`: the width of one head; None = d_model / n_head. Gemma and Qwen3 set it apart, so the
      query projection is d_model x n_head·head_dim, not d_model x d_model.
    - `bias`: biases in every linear layer and LayerNorm (the LM head never has one); `qkv_bias`: a bias
      on the Q, K, V projection only (Qwen2); `tie_embeddings`: the LM head shares the token embedding.
    - Sliding-window attention (Beltagy et al. 2020; Jiang et al. 2023, "Mistral 7B", §2): `layer_types`
      gives each layer's attention, cycled over the layers (("sliding",) = every layer, Mistral;
      ("sliding", "full") alternating, Gemma 2; five sliding to one full, Gemma 3); a sliding layer's
      query sees its last `sliding_window` positions (itself included).
    - Mixture of experts (Shazeer et al. 2017; Fedus et al. 2022; Jiang et al. 2024, "Mixtral of Experts"):
      `n_experts` > 0 replaces the MLP of every layer not in `dense_layers` by a router (d x n_experts, no
      bias), `n_experts` expert MLPs of width `d_ff_expert` (None = d_ff), of which each token uses
      `top_k`, and `n_shared_experts` experts of width `d_ff_shared` (None = d_ff_expert) that every token
      uses (Dai et al. 2024, DeepSeekMoE). Layers in `dense_layers` keep the dense MLP of width d_ff.
    - `attn_softcap`, `final_softcap`: c·tanh(x / c) on the attention scores and on the logits
      (Gemma 2); `embed_scale`: the token embeddings times sqrt(d_model) (Gemma). No matmul FLOPs.
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
    head_dim: int | None = None  # None: d_model // n_head
    qkv_bias: bool = False
    qk_norm: str = "none"
    norm_position: str = "pre"
    layer_types: tuple[str, ...] = ("full",)
    sliding_window: int | None = None
    n_experts: int = 0
    top_k: int = 0
    d_ff_expert: int | None = None
    n_shared_experts: int = 0
    d_ff_shared: int | None = None
    dense_layers: tuple[int, ...] = ()
    attn_softcap: float | None = None
    final_softcap: float | None = None
    embed_scale: bool = False

    def __post_init__(self) -> None:
        if self.d_ff is None and _is_positive_int(self.d_model):
            object.__setattr__(self, "d_ff", 4 * self.d_model)
        # JSON has lists only: a config read back from a results file gives its tuples as lists.
        for field in ("layer_types", "dense_layers"):
            if isinstance(getattr(self, field), list):
                object.__setattr__(self, field, tuple(getattr(self, field)))
        if self.n_experts and self.d_ff_expert is None:
            object.__setattr__(self, "d_ff_expert", self.d_ff)
        if self.n_shared_experts and self.d_ff_shared is None:
            object.__setattr__(self, "d_ff_shared", self.d_ff_expert)
        if (self.head_dim is None and _is_positive_int(self.d_model) and _is_positive_int(self.n_head)
                and self.d_model % self.n_head == 0):
            object.__setattr__(self, "head_dim", self.d_model // self.n_head)
        validate_config(self)

    @property
    def kv_heads(self) -> int:
        """Key/value heads: `n_kv_head`, or `n_head` when it is None."""
        return self.n_head if self.n_kv_head is None else self.n_kv_head

    @property
    def q_dim(self) -> int:
        """Width of the Q projection and of the attention output: n_head x head_dim (= d_model unless
        head_dim is set apart)."""
        return self.n_head * self.head_dim

    @property
    def kv_dim(self) -> int:
        """Width of the K (and of the V) projection: kv_heads x head_dim (= d_model without GQA)."""
        return self.kv_heads * self.head_dim

    @property
    def is_moe(self) -> bool:
        return self.n_experts > 0

    def layer_type(self, layer: int) -> str:
        """"full" or "sliding": the attention of layer `layer` (`layer_types`, cycled)."""
        return self.layer_types[layer % len(self.layer_types)]

    def layer_is_moe(self, layer: int) -> bool:
        """Whether layer `layer` has the mixture-of-experts MLP (else the dense MLP)."""
        return self.is_moe and layer not in self.dense_layers

    def layer_kinds(self) -> dict[tuple[str, bool], int]:
        """How many layers of each kind, (attention type, mixture of experts?), the model has, in the order
        the kinds first appear. Counted from the pattern, not layer by layer: n_layer may be huge."""
        cycle, n = self.layer_types, self.n_layer
        whole, rest = divmod(n, len(cycle))
        by_type: dict[str, int] = {}
        for i, t in enumerate(cycle):
            by_type[t] = by_type.get(t, 0) + whole + (i < rest)
        dense: dict[str, int] = {}
        for i in (self.dense_layers if self.is_moe else ()):
            dense[self.layer_type(i)] = dense.get(self.layer_type(i), 0) + 1
        kinds: dict[tuple[str, bool], int] = {}
        for t, count in by_type.items():
            for moe, k in ((self.is_moe, count - dense.get(t, 0)), (False, dense.get(t, 0) if self.is_moe else 0)):
                if k:
                    kinds[(t, moe)] = kinds.get((t, moe), 0) + k
        return kinds

    def count_layers(self, layer_type: str | None = None, moe: bool | None = None) -> int:
        """How many layers have attention `layer_type` ("full" / "sliding") and a mixture-of-experts MLP or
        not (`moe`); None matches either."""
        return sum(n for (t, m), n in self.layer_kinds().items()
                   if layer_type in (None, t) and moe in (None, m))

    def uniform(self, kind: tuple[str, bool], n_layer: int) -> "ModelConfig":
        """This model with `n_layer` layers, all of `kind` (a `layer_kinds` entry): what the counters
        measure to count a model whose layers differ (`flops.counter.extrapolate_layers`)."""
        layer_type, moe = kind
        return self.replace(n_layer=n_layer, layer_types=(layer_type,),
                            dense_layers=() if moe or not self.is_moe else tuple(range(n_layer)))

    def replace(self, **changes) -> "ModelConfig":
        """A copy with `changes` applied (re-validated). A head_dim that was derived from d_model / n_head
        (not set apart) follows new values of either; dense layers past a smaller n_layer are dropped."""
        if ({"d_model", "n_head"} & set(changes) and "head_dim" not in changes
                and self.head_dim * self.n_head == self.d_model):
            changes["head_dim"] = None
        if "n_layer" in changes and "dense_layers" not in changes and _is_positive_int(changes["n_layer"]):
            changes["dense_layers"] = tuple(i for i in self.dense_layers if i < changes["n_layer"])
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


#: Config fields a user may override on top of a preset (CLI: --n-layer, --d-model, ...).
OVERRIDABLE = ("n_layer", "d_model", "n_head", "d_ff", "vocab_size", "max_seq_len", "n_kv_head", "head_dim",
               "sliding_window", "n_experts", "top_k", "d_ff_expert")
_POSITIVE_INTS = ("n_layer", "d_model", "n_head", "d_ff", "vocab_size", "max_seq_len")
_CHOICES = {"mlp": MLP_KINDS, "norm": NORM_KINDS, "positions": POSITION_KINDS, "norm_position": NORM_POSITIONS,
            "qk_norm": QK_NORMS}
_BOOLS = ("bias", "tie_embeddings", "qkv_bias", "embed_scale")


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


def _check_optional_positive_int(field: str, value, none_means: str) -> None:
    if value is not None and not _is_positive_int(value):
        raise UsageError(f"{field}={_show(value)} is not allowed: {field} must be a positive integer "
                         f"(or None for {none_means})")
    if value is not None:
        check_size(field, value)


def _check_optional_positive_number(field: str, value) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                              or not 0 < value <= 1e300):
        raise UsageError(f"{field}={_show(value)} is not allowed: {field} must be a positive number "
                         f"up to 1e300 (or None for none)")


def _validate_attention(cfg: ModelConfig) -> None:
    if cfg.head_dim is None:
        raise UsageError(f"n_head={cfg.n_head} does not divide d_model={cfg.d_model}: d_model must be a "
                         f"multiple of n_head (or give head_dim)")
    if not _is_positive_int(cfg.head_dim):
        raise UsageError(f"head_dim={_show(cfg.head_dim)} is not allowed: head_dim must be a positive integer "
                         f"(or None for d_model / n_head)")
    check_size("head_dim", cfg.head_dim)
    _check_optional_positive_int("n_kv_head", cfg.n_kv_head, "n_kv_head = n_head")
    if cfg.n_kv_head is not None and cfg.n_head % cfg.n_kv_head:
        raise UsageError(f"n_kv_head={cfg.n_kv_head} does not divide n_head={cfg.n_head}: each key/value "
                         f"head serves a whole group of query heads (n_kv_head must divide n_head)")
    types = cfg.layer_types
    if not isinstance(types, tuple) or not types or any(t not in LAYER_TYPES for t in types):
        raise UsageError(f"layer_types={_show(types)} is not allowed: give a non-empty list of "
                         f"{' / '.join(LAYER_TYPES)} (cycled over the layers)")
    _check_optional_positive_int("sliding_window", cfg.sliding_window, "no sliding window")
    if "sliding" in types and cfg.sliding_window is None:
        raise UsageError(f"layer_types={list(types)} has sliding layers but sliding_window is None: "
                         f"give the window (positions each query sees)")
    _check_optional_positive_number("attn_softcap", cfg.attn_softcap)
    _check_optional_positive_number("final_softcap", cfg.final_softcap)


def _validate_experts(cfg: ModelConfig) -> None:
    E = cfg.n_experts
    if isinstance(E, bool) or not isinstance(E, int) or E < 0:
        raise UsageError(f"n_experts={_show(E)} is not allowed: n_experts must be an integer >= 0 (0 = dense)")
    check_size("n_experts", E)
    if not E:
        for field, off in (("top_k", 0), ("d_ff_expert", None), ("n_shared_experts", 0), ("d_ff_shared", None),
                           ("dense_layers", ())):
            if getattr(cfg, field) != off:
                raise UsageError(f"{field}={_show(getattr(cfg, field))} needs experts: set n_experts > 0 "
                                 f"(or {field}={off!r})")
        return
    if not _is_positive_int(cfg.top_k) or cfg.top_k > E:
        raise UsageError(f"top_k={_show(cfg.top_k)} is not allowed: each token uses 1 to n_experts={E} experts")
    _check_optional_positive_int("d_ff_expert", cfg.d_ff_expert, "d_ff")
    shared = cfg.n_shared_experts
    if isinstance(shared, bool) or not isinstance(shared, int) or shared < 0:
        raise UsageError(f"n_shared_experts={_show(shared)} is not allowed: must be an integer >= 0")
    check_size("n_shared_experts", shared)
    _check_optional_positive_int("d_ff_shared", cfg.d_ff_shared, "d_ff_expert")
    dense = cfg.dense_layers
    if (not isinstance(dense, tuple) or len(set(dense)) != len(dense)
            or any(isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < cfg.n_layer for i in dense)):
        raise UsageError(f"dense_layers={_show(dense)} is not allowed: give distinct layer indices "
                         f"0 .. n_layer - 1 = {cfg.n_layer - 1}")


def validate_config(cfg: ModelConfig) -> None:
    """Raise `UsageError` naming the first bad value of `cfg` and what is allowed."""
    check_name(cfg.name)
    for field in _POSITIVE_INTS:
        value = getattr(cfg, field)
        if not _is_positive_int(value):
            raise UsageError(f"{field}={_show(value)} is not allowed: {field} must be a positive integer")
        check_size(field, value)
    for field, allowed in _CHOICES.items():
        value = getattr(cfg, field)
        if value not in allowed:
            raise UsageError(f"{field}={value!r} is not allowed: choose one of {', '.join(allowed)}")
    for field in _BOOLS:
        value = getattr(cfg, field)
        if not isinstance(value, bool):
            raise UsageError(f"{field}={value!r} is not allowed: {field} must be true or false")
    _validate_attention(cfg)
    _validate_experts(cfg)
    if cfg.positions == "rope":
        if cfg.head_dim % 2:
            derived = f" (d_model={cfg.d_model} / n_head={cfg.n_head})" if cfg.q_dim == cfg.d_model else ""
            raise UsageError(f"head_dim={cfg.head_dim}{derived} is odd: rope rotates pairs of dimensions, so "
                             f"head_dim must be even")
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
    widths = (cfg.d_model, cfg.d_ff, cfg.vocab_size, cfg.q_dim + 2 * cfg.kv_dim, cfg.d_ff_expert or 0,
              cfg.n_shared_experts * (cfg.d_ff_shared or 0))
    B, T, width = batch_size, seq_len, max(widths)
    products = (
        (f"batch_size x seq_len x the widest layer = {B} x {T} x {width}", B * T * width),
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
