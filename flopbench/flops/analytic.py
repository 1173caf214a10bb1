"""Closed-form parameter and FLOP counts for a `ModelConfig`: no model is built.

Conventions (README, "Conventions"): one multiply-add = 2 FLOPs, so a product of an (H x D) and a
(D x W) matrix costs 2·H·D·W (Kaplan et al. 2020, §2.1, Table 1); attention scores are counted over all
T x T positions ("full", as PaLM App. B and FlopCounterMode count them), T x min(T, W) in a sliding-window
layer; a mixture-of-experts layer counts the top_k experts each token uses; backward = 2 x forward; the
headline numbers are matmul FLOPs only. Every figure is per *step* of `batch_size` sequences of
`seq_len` tokens, unless a name says "per token". The published estimates (2N, 6N, PaLM, ...) live in
`flops.estimates`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..model.config import FP8_DIM_MULTIPLE, ModelConfig

# --------------------------------------------------------------------------------------------------
# The weight matrices of a block: the one place their shapes are written down
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Matrix:
    """One weight matrix of a block, d_in x d_out, of which a layer holds `copies` (the `n_experts` routed
    experts) and each token passes through `used` (their `top_k`); its bias, when `bias`, has d_out entries."""

    name: str  # the component-table row of its matmul
    part: str  # "attention" or "mlp" (the router and the experts included)
    d_in: int
    d_out: int
    formula: str  # its forward FLOPs per step, 2·B·T·d_in·d_out·used, in symbols
    bias: bool = False
    copies: int = 1
    used: int = 1

    @property
    def params(self) -> int:
        """Weights and bias of every copy."""
        return (self.d_in + int(self.bias)) * self.d_out * self.copies

    @property
    def active_params(self) -> int:
        """Weights and bias of the copies one token passes through."""
        return (self.d_in + int(self.bias)) * self.d_out * self.used

    @property
    def matmul_params(self) -> int:
        return self.d_in * self.d_out * self.copies

    @property
    def active_matmul_params(self) -> int:
        return self.d_in * self.d_out * self.used


def _mlp_matrices(cfg: ModelConfig, prefix: str, width: int, width_symbol: str, copies: int = 1, used: int = 1,
                  bias: bool | None = None) -> list[Matrix]:
    """An MLP of width `width`: up and down, and a gate for SwiGLU / GeGLU."""
    d, b = cfg.d_model, cfg.bias if bias is None else bias
    times = "" if used == 1 else "top_k·"
    mats = [Matrix(f"{prefix}_gate", "mlp", d, width, f"2·B·T·{times}d·{width_symbol}", b, copies, used)] \
        if cfg.mlp in ("swiglu", "geglu") else []
    return mats + [Matrix(f"{prefix}_up", "mlp", d, width, f"2·B·T·{times}d·{width_symbol}", b, copies, used),
                   Matrix(f"{prefix}_down", "mlp", width, d, f"2·B·T·{times}{width_symbol}·d", b, copies, used)]


def block_matrices(cfg: ModelConfig, moe: bool = False) -> list[Matrix]:
    """The weight matrices of one block (a mixture-of-experts block when `moe`), in the order the forward
    uses them.

    - Attention: Q, K, V in one matrix d x (n_head + 2·n_kv_head)·head_dim, which is d x 3d for multi-head
      attention (Vaswani et al. 2017); grouped-query and multi-query attention (Ainslie et al. 2023)
      shrink only K and V; Gemma and Qwen3 set head_dim apart from d / n_head. Output projection
      n_head·head_dim x d.
    - MLP: GELU (GPT-2, Radford et al. 2019): up d x d_ff, down d_ff x d. SwiGLU (Shazeer 2020, eq. 6;
      Touvron et al. 2023) and GeGLU (Shazeer 2020, eq. 5; Gemma): gate and up d x d_ff, down d_ff x d.
    - Mixture of experts (Fedus et al. 2022, §2.1; Jiang et al. 2024): the router d x n_experts (every
      token: 2·d·E FLOPs), then the MLP of each expert, width d_ff_expert, n_experts copies of which each
      token uses top_k; shared experts (Dai et al. 2024) as one MLP of width n_shared_experts·d_ff_shared,
      used by every token.
    """
    d, kv, q = cfg.d_model, cfg.kv_dim, cfg.q_dim
    qkv = "2·B·T·d·3d" if kv == d == q else "2·B·T·d·(H + 2·H_kv)·d_h"
    mats = [Matrix("qkv_proj", "attention", d, q + 2 * kv, qkv, cfg.bias or cfg.qkv_bias),
            Matrix("attn_out_proj", "attention", q, d, "2·B·T·d²" if q == d else "2·B·T·H·d_h·d",
                   cfg.bias)]
    if not moe:
        return mats + _mlp_matrices(cfg, "mlp", cfg.d_ff, "d_ff")
    mats.append(Matrix("router", "mlp", d, cfg.n_experts, "2·B·T·d·n_experts"))
    if cfg.n_shared_experts:
        mats += _mlp_matrices(cfg, "shared", cfg.n_shared_experts * cfg.d_ff_shared, "n_shared·d_ff_shared")
    return mats + _mlp_matrices(cfg, "expert", cfg.d_ff_expert, "d_ff_expert", cfg.n_experts, cfg.top_k)


def block_matmul_params(cfg: ModelConfig, moe: bool = False) -> int:
    """Weights of one block that take part in a matmul (biases and norms excluded), every expert included."""
    return sum(m.matmul_params for m in block_matrices(cfg, moe))


def active_matmul_params(cfg: ModelConfig) -> int:
    """Matmul weights one token passes through in all the blocks: the router, the top_k routed and the
    shared experts of a mixture-of-experts layer, everything of a dense one (LM head excluded)."""
    return sum(n * m.active_matmul_params for (_, moe), n in cfg.layer_kinds().items()
               for m in block_matrices(cfg, moe))


def gpt_block_matmul_params(d_model: int, d_ff: int) -> int:
    """The same for a GPT block with multi-head attention and a two-matrix MLP: 4·d² + 2·d·d_ff, the
    block that Kaplan et al. 2020 (Table 1), Hoffmann et al. 2022 (App. F) and, with d_ff = 4·d (12·d²),
    Narayanan et al. 2021 and Korthikanti et al. 2022 write their formulas for."""
    return 4 * d_model * d_model + 2 * d_model * d_ff


def recomputed_with_early_stop(cfg: ModelConfig, matrix: Matrix) -> bool:
    """Whether torch's non-reentrant checkpoint re-runs `matrix`'s matmul under its (default) early stop.

    The recompute ends with the last op whose result backward needs. In a pre-norm dense block that is
    the input of the MLP down-projection (GELU: gelu(up(x)); SwiGLU / GeGLU: act(gate(x))·up(x)): the
    down-projection's output only meets the residual add, which saves nothing, so it is not re-run. A
    norm after the MLP ("sandwich", "post") saves that output, and a mixture-of-experts layer multiplies
    each expert's output by its routing weight (which saves it), so there every matmul is re-run.
    Checked with FlopCounterMode for every mix of fields (tests/flops)."""
    return not (matrix.name == "mlp_down" and cfg.norm_position == "pre")


# --------------------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------------------


def norms_per_block(cfg: ModelConfig) -> int:
    """2 norms per block (pre-norm, post-norm) or 4 ("sandwich": before and after attention and MLP)."""
    return 4 if cfg.norm_position == "sandwich" else 2


def param_breakdown(cfg: ModelConfig) -> dict[str, int]:
    """Parameters by component, in total over all layers; `lm_head` is 0 when tied to `token_embedding`,
    `position_embedding` is 0 with rope (rotary positions have no parameters; Su et al. 2021). `mlp`
    holds the routers and every expert; `norms` the QK-norm weights too."""
    kinds = cfg.layer_kinds()

    def part(name: str) -> int:
        return sum(n * m.params for (_, moe), n in kinds.items() for m in block_matrices(cfg, moe) if m.part == name)

    # LayerNorm: weight (+ bias); RMSNorm: weight only (Zhang & Sennrich 2019).
    norm = cfg.d_model * (1 + int(cfg.bias) if cfg.norm == "layernorm" else 1)
    qk_norm = {"none": 0, "head": 2 * cfg.head_dim, "proj": cfg.q_dim + cfg.kv_dim}[cfg.qk_norm]
    return {
        "token_embedding": cfg.vocab_size * cfg.d_model,
        "position_embedding": cfg.max_seq_len * cfg.d_model if cfg.positions == "learned" else 0,
        "attention": part("attention"),
        "mlp": part("mlp"),
        "norms": cfg.n_layer * (norms_per_block(cfg) * norm + qk_norm) + norm,
        "lm_head": 0 if cfg.tie_embeddings else cfg.d_model * cfg.vocab_size,
    }


@dataclass(frozen=True)
class ParamCounts:
    """The N's (README, "Which N"), named precisely. Without experts, active = total and
    active_matmul = matmul."""

    total: int  # every distinct parameter (a tied LM head counted once)
    non_embedding: int  # total - token embedding - position embedding
    matmul: int  # weights that take part in a matmul, LM head included whether tied or not
    active: int  # total without the routed experts a token does not use (n_experts - top_k per MoE layer)
    active_matmul: int  # matmul weights one token passes through: what 2N / 6N / 8N count


def param_counts(cfg: ModelConfig) -> ParamCounts:
    parts = param_breakdown(cfg)
    total = sum(parts.values())
    kinds = cfg.layer_kinds()
    unused = sum(n * (m.params - m.active_params) for (_, moe), n in kinds.items() for m in block_matrices(cfg, moe))
    lm_head = cfg.d_model * cfg.vocab_size
    return ParamCounts(
        total=total,
        non_embedding=total - parts["token_embedding"] - parts["position_embedding"],
        matmul=sum(n * block_matmul_params(cfg, moe) for (_, moe), n in kinds.items()) + lm_head,
        active=total - unused,
        active_matmul=active_matmul_params(cfg) + lm_head,
    )


# --------------------------------------------------------------------------------------------------
# Per-component forward FLOPs
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Component:
    """One row of the per-component table: forward FLOPs of one occurrence, and how many there are."""

    name: str
    flops: int  # forward FLOPs of one occurrence, per step
    count: int  # occurrences: the layers it is in (per_layer), else 1
    per_layer: bool  # True: once in each of `count` blocks; False: once per model
    matmul: bool  # False: non-matmul work, kept out of the headline numbers
    recomputed_early_stop: bool  # re-run by torch's checkpoint with early stop (`recompute_flops`)
    formula: str

    @property
    def total(self) -> int:
        return self.flops * self.count


#: The T x T products of attention (full and sliding layers), the part of the forward that grows with T².
ATTENTION_SCORE_ROWS = ("attn_scores", "attn_values", "attn_scores_sliding", "attn_values_sliding")


def keys_per_query(cfg: ModelConfig, seq_len: int, layer_type: str) -> int:
    """Keys each query is scored against, under the full-square convention: T in a full layer, min(T, W)
    in a sliding one (Beltagy et al. 2020, §3.1: a window of W costs O(T·W), not O(T²))."""
    return seq_len if layer_type == "full" or cfg.sliding_window is None else min(seq_len, cfg.sliding_window)


def components(cfg: ModelConfig, batch_size: int, seq_len: int) -> list[Component]:
    """The forward pass of one step, component by component; rows of work that no layer has are left out.

    Formulas are written with H = n_head, H_kv = n_kv_head, d_h = head_dim, W = sliding_window.
    Matmul rows cost 2·M·K·N per (M x K) by (K x N) product (Kaplan et al. 2020, Table 1;
    Hoffmann et al. 2022, App. F) over the weight matrices of `block_matrices`, with attention over the
    full T x T square (PaLM App. B) — over T x min(T, W) in a sliding layer (`keys_per_query`). QK^T and
    AV run once per *query* head, so they cost 2·B·T·keys·n_head·head_dim each whatever n_kv_head is (a
    K/V head is shared by its group, not skipped; Ainslie et al. 2023). A routed expert's rows count the
    top_k experts each token uses: 2·B·T·top_k·d·d_ff_expert per matrix, however the router spreads them.
    Non-matmul rows are rough operation counts, for scale only: embedding lookups 4·d per token
    (Kaplan et al. 2020, Table 1, "Embed"), LayerNorm 5 per element (fvcore / DeepSpeed profiler
    convention), RMSNorm 4 per element (square, mean, scale, weight), softmax 3 per score (Hoffmann et
    al. 2022, App. F), GELU 1 per element, SwiGLU / GeGLU 2 (activation, gating product), residual adds
    1 per element (DeepSpeed profiler convention), RoPE 3 per rotated element of Q and K (x·cos +
    rot(x)·sin), softcapping 3 per element (divide, tanh, multiply), the router's softmax and top-k 3 per
    expert score.
    """
    B, T, d, H, V = batch_size, seq_len, cfg.d_model, cfg.n_head, cfg.vocab_size
    BT, L, q = B * T, cfg.n_layer, cfg.q_dim
    n_moe = cfg.count_layers(moe=True)
    by_type = {t: cfg.count_layers(t) for t in ("full", "sliding")}
    rows: list[Component] = []

    def row(name, flops, count, matmul, recomputed, formula, per_layer=True):
        if count:
            rows.append(Component(name, flops, count, per_layer, matmul, recomputed, formula))

    def matmul_rows(mats: list[Matrix], count: int) -> None:
        for m in mats:
            row(m.name, 2 * BT * m.d_in * m.d_out * m.used, count, True, recomputed_with_early_stop(cfg, m),
                m.formula)

    dense_mats, moe_mats = block_matrices(cfg), (block_matrices(cfg, moe=True) if n_moe else [])
    qkv, out_proj = dense_mats[:2]
    matmul_rows([qkv], L)
    for layer_type, suffix in (("full", ""), ("sliding", "_sliding")):
        keys = keys_per_query(cfg, T, layer_type)
        square = "2·B·T²" if layer_type == "full" else "2·B·T·min(T,W)"
        head = "d" if q == d else "H·d_h"
        row(f"attn_scores{suffix}", 2 * BT * keys * q, by_type[layer_type], True, True, f"QK^T: {square}·{head}")
        row(f"attn_values{suffix}", 2 * BT * keys * q, by_type[layer_type], True, True, f"AV: {square}·{head}")
    matmul_rows([out_proj], L)
    matmul_rows(dense_mats[2:], L - n_moe)
    matmul_rows(moe_mats[2:], n_moe)
    row("lm_head", 2 * BT * d * V, 1, True, False, "2·B·T·d·V", per_layer=False)
    row("embedding_lookups", 4 * BT * d, 1, False, False, "4·d per token", per_layer=False)
    per_norm, kind = (5, "layernorm") if cfg.norm == "layernorm" else (4, "rmsnorm")
    k = norms_per_block(cfg)
    row(f"{kind}s", k * per_norm * BT * d, L, False, True, f"{k} norms x {per_norm}·B·T·d")
    if cfg.qk_norm != "none":
        row("qk_norms", 4 * BT * (q + cfg.kv_dim), L, False, True, "4·B·T·(H + H_kv)·d_h")
    row(f"final_{kind}", per_norm * BT * d, 1, False, False, f"{per_norm}·B·T·d", per_layer=False)
    if cfg.positions == "rope":
        row("rope", 3 * BT * (q + cfg.kv_dim), L, False, True, "3·B·T·(H + H_kv)·d_h")
    for layer_type, suffix in (("full", ""), ("sliding", "_sliding")):
        keys = keys_per_query(cfg, T, layer_type)
        row(f"softmax{suffix}", 3 * B * H * T * keys, by_type[layer_type], False, True,
            "3·B·H·T²" if layer_type == "full" else "3·B·H·T·min(T,W)")
        if cfg.attn_softcap:
            row(f"attn_softcap{suffix}", 3 * B * H * T * keys, by_type[layer_type], False, True,
                "3 per attention score")
    act, per = ("gelu", 1) if cfg.mlp == "gelu" else (cfg.mlp, 2)
    row(act, per * BT * cfg.d_ff, L - n_moe, False, True, f"{per}·B·T·d_ff")
    if n_moe:
        width = cfg.top_k * cfg.d_ff_expert + cfg.n_shared_experts * (cfg.d_ff_shared or 0)
        row(f"expert_{act}", per * BT * width, n_moe, False, True, f"{per}·B·T·(top_k·d_ff_expert + shared)")
        row("router_softmax_topk", 3 * BT * cfg.n_experts, n_moe, False, True, "3·B·T·n_experts")
    if cfg.final_softcap:
        row("final_softcap", 3 * BT * V, 1, False, False, "3·B·T·V", per_layer=False)
    row("residual_adds", 2 * BT * d, L, False, False, "2·B·T·d")
    return rows


def masked_square_flops(cfg: ModelConfig, batch_size: int, seq_len: int) -> int:
    """Forward FLOPs a mask-based attention kernel executes beyond `components`' count: it scores every
    query against all T keys and masks the ones outside the window, so a sliding layer runs QK^T and AV
    over the full T x T square, not T x min(T, W): 4·B·T·(T − min(T, W))·n_head·head_dim per sliding layer.
    torch's FlopCounterMode (and flopbench's model, which passes SDPA a mask) count that square."""
    T = seq_len
    sliding = cfg.count_layers("sliding")
    return 4 * batch_size * T * (T - keys_per_query(cfg, T, "sliding")) * cfg.q_dim * sliding if sliding else 0


# --------------------------------------------------------------------------------------------------
# Exact matmul FLOPs: forward, backward, training, training with recomputation
# --------------------------------------------------------------------------------------------------


def forward_flops(cfg: ModelConfig, batch_size: int, seq_len: int) -> int:
    """Forward matmul FLOPs of one step = 2·N_active_matmul·B·T + 4·B·T·keys·n_head·head_dim per layer
    (Kaplan et al. 2020, Table 1, with attention over the full square as in PaLM App. B; keys = T, or
    min(T, W) in a sliding layer), for any mix of the `ModelConfig` fields (N_active_matmul holds the
    smaller K/V, the third SwiGLU / GeGLU matrix, the router and the top_k experts a token uses; the
    attention term does not depend on n_kv_head)."""
    return sum(c.total for c in components(cfg, batch_size, seq_len) if c.matmul)


def backward_flops(cfg: ModelConfig, batch_size: int, seq_len: int) -> int:
    """Backward = 2 x forward: each matmul needs one product for the input gradient and one for the
    weight gradient (Kaplan et al. 2020, §2.1)."""
    return 2 * forward_flops(cfg, batch_size, seq_len)


def train_flops(cfg: ModelConfig, batch_size: int, seq_len: int) -> int:
    """Model FLOPs of a training step: forward + backward = 3 x forward (Kaplan et al. 2020, §2.1: C ≈ 6NT;
    here exact, attention included)."""
    return forward_flops(cfg, batch_size, seq_len) + backward_flops(cfg, batch_size, seq_len)


def recompute_flops(cfg: ModelConfig, batch_size: int, seq_len: int, early_stop: bool = True,
                    checkpointing: str = "full") -> int:
    """Forward FLOPs that activation checkpointing runs a second time.

    Full (every block): without early stop every block's forward runs again: forward + backward +
    recomputed forward, the factor 4 of Narayanan et al. 2021, Eq. 3 (96 = 4 x 24).
    torch's non-reentrant `checkpoint` stops recomputing by default once every tensor saved for
    backward is rebuilt (`torch.utils.checkpoint.set_checkpoint_early_stop`); in a pre-norm dense block
    the last such tensor is the input of the MLP down-projection, so that matmul is not recomputed
    (`recomputed_with_early_stop`; measured with FlopCounterMode on 4 GPT-2 blocks, d=512, T=256: 3.69 x
    forward, not 4.00). The LM head is outside the blocks and never recomputed.

    Selective (Korthikanti et al. 2022, §4.1): only the attention core — QK^T, softmax, AV — of every
    block is recomputed: the attention-score rows once more, whatever `early_stop` (flopbench's policy keeps
    the projections and recomputes the rest of core + output projection, and the projection needs the
    core's output, so a kernel that is one op or several recomputes the same).
    """
    rows = components(cfg, batch_size, seq_len)
    if checkpointing == "selective":
        return sum(c.total for c in rows if c.name in ATTENTION_SCORE_ROWS)
    return sum(c.total for c in rows if c.matmul and c.per_layer and (c.recomputed_early_stop or not early_stop))


def train_recompute_flops(cfg: ModelConfig, batch_size: int, seq_len: int, early_stop: bool = True,
                          checkpointing: str = "full") -> int:
    """Hardware FLOPs of a training step with activation checkpointing ("full" or "selective"): training +
    the recomputed forward FLOPs."""
    return train_flops(cfg, batch_size, seq_len) + recompute_flops(cfg, batch_size, seq_len, early_stop,
                                                                   checkpointing)


#: The block matrices flopbench's float8 training converts (`model.fp8.converts`): every Linear layer of a
#: block but the router; the routed experts' stacked weights are no Linear layers.
FP8_MATRICES = ("qkv_proj", "attn_out_proj", "mlp_gate", "mlp_up", "mlp_down", "shared_gate", "shared_up",
                "shared_down")


def fp8_matrix(matrix: Matrix) -> bool:
    """Whether float8 training runs `matrix`'s matmuls in float8: one of `FP8_MATRICES` with both dimensions
    multiples of 16 (`model.config.FP8_DIM_MULTIPLE`: what `torch._scaled_mm` takes)."""
    return matrix.name in FP8_MATRICES and matrix.d_in % FP8_DIM_MULTIPLE == 0 and matrix.d_out % FP8_DIM_MULTIPLE == 0


def fp8_forward_flops(cfg: ModelConfig, batch_size: int, seq_len: int) -> int:
    """Forward FLOPs of the matmuls float8 training runs in float8 (`fp8_matrix`): the `components` rows of
    those matrices. A training step runs each three times (forward, input and weight gradients: each of a
    float8 layer's three matmuls takes float8 operands, torchao's "float8" README) and a full checkpoint's
    recompute once more, the down-projection included: the float8 layer casts its input inside its own autograd
    function and saves the cast, so torch's early stop must re-run that layer (`recomputed_with_early_stop`
    does not apply to it). Selective checkpointing keeps the projections' outputs: no recompute."""
    names = {m.name for moe in (False, True) if cfg.count_layers(moe=moe) for m in block_matrices(cfg, moe)
             if fp8_matrix(m)}
    return sum(c.total for c in components(cfg, batch_size, seq_len) if c.name in names)


def causal_attention_flops(cfg: ModelConfig, batch_size: int, seq_len: int) -> int:
    """Forward QK^T + AV FLOPs that a causal kernel computes: per layer 4·B·n_head·head_dim·(T·k − k²/2)
    with k = min(T, W) keys per query (k = T in a full layer: half the square, Megatron-LM's causal
    convention; in a sliding layer the band of width W under the diagonal), so a full layer counts half of
    its `components` rows, a sliding one T·k − k²/2 of T·k."""
    B, T = batch_size, seq_len
    return sum(n * 2 * B * cfg.q_dim * (2 * T * k - k * k)
               for k, n in ((keys_per_query(cfg, T, t), n) for (t, _), n in cfg.layer_kinds().items()))


def flex_block_scores(seq_len: int, window: int | None, block_size: int = 128) -> int:
    """Scores (query, key pairs) in the non-empty blocks of a causal FlexAttention block mask, within
    `window` keys when given: what the kernel computes (torch.nn.attention.flex_attention: the scores are
    tiled into blocks of block_size x block_size, 128 by default; a block with no allowed pair is skipped,
    a partly allowed one computed whole and masked). Query block i (rows i·b .. min((i+1)·b, T) − 1) meets
    key blocks j_lo .. i, where j_lo is the first whose last key, (j+1)·b − 1, is within the window of
    the block's first query, i·b − W + 1: j_lo = max(0, ceil((i·b − W + 2 − b) / b)); 0 when causal only.
    Scores are counted over real positions (a block past T is cut at T)."""
    T, b = seq_len, block_size
    total = 0
    for i in range(-(-T // b)):
        end = min(T, (i + 1) * b)
        first = 0 if window is None else max(0, -(-(i * b - window + 2 - b) // b))
        total += (end - i * b) * (end - first * b)
    return total


def flex_attention_flops(cfg: ModelConfig, batch_size: int, seq_len: int, block_size: int = 128) -> int:
    """Forward QK^T + AV FLOPs of FlexAttention with a causal block mask (the sliding window's band in a
    sliding layer): 4·B·n_head·head_dim per computed score (`flex_block_scores`), every layer. torch's
    FlopCounterMode cannot count it here: eager flex does not run under a dispatch mode in torch 2.13, and
    its flex formula counts the whole square."""
    return sum(n * 4 * batch_size * cfg.q_dim * flex_block_scores(seq_len, cfg.sliding_window if t == "sliding"
                                                                  else None, block_size)
               for (t, _), n in cfg.layer_kinds().items())


def non_matmul_flops(cfg: ModelConfig, batch_size: int, seq_len: int) -> int:
    """Rough forward non-matmul operations (softmax, norms, GELU / SwiGLU, RoPE, adds, lookups): not in
    the headline."""
    return sum(c.total for c in components(cfg, batch_size, seq_len) if not c.matmul)
