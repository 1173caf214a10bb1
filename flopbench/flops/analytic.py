"""Closed-form parameter and FLOP counts for a `ModelConfig`: no model is built.

Conventions (README, "Conventions"): one multiply-add = 2 FLOPs, so a product of an (H x D) and a
(D x W) matrix costs 2·H·D·W (Kaplan et al. 2020, §2.1, Table 1); attention scores are counted over all
T x T positions ("full", as PaLM App. B and FlopCounterMode count them); backward = 2 x forward; the
headline numbers are matmul FLOPs only. Every figure is per *step* of `batch_size` sequences of
`seq_len` tokens, unless a name says "per token". The published estimates (2N, 6N, PaLM, ...) live in
`flops.estimates`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..model.config import ModelConfig

# --------------------------------------------------------------------------------------------------
# The weight matrices of a block: the one place their shapes are written down
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Matrix:
    """One weight matrix of a block, d_in x d_out (its bias, when `cfg.bias`, has d_out entries)."""

    name: str  # the component-table row of its matmul
    part: str  # "attention" or "mlp"
    d_in: int
    d_out: int
    formula: str  # its forward FLOPs per step, 2·B·T·d_in·d_out, in symbols

    @property
    def params(self) -> int:
        return self.d_in * self.d_out


def block_matrices(cfg: ModelConfig) -> list[Matrix]:
    """The weight matrices of one block, in the order the forward uses them.

    - Attention: Q, K, V in one matrix d x (d + 2·kv_dim), kv_dim = n_kv_head·head_dim, which is d for
      multi-head attention (Vaswani et al. 2017) and d·n_kv_head/n_head for grouped-query or multi-query
      attention (Ainslie et al. 2023): only the K and V projections shrink. Output projection d x d.
    - MLP: GELU (GPT-2, Radford et al. 2019): up d x d_ff, down d_ff x d. SwiGLU (Shazeer 2020, eq. 6;
      Touvron et al. 2023): gate and up d x d_ff, down d_ff x d — three matrices.
    """
    d, f, kv = cfg.d_model, cfg.d_ff, cfg.kv_dim
    qkv = "2·B·T·d·3d" if kv == d else "2·B·T·d·(d + 2·n_kv_head·head_dim)"
    mats = [Matrix("qkv_proj", "attention", d, d + 2 * kv, qkv),
            Matrix("attn_out_proj", "attention", d, d, "2·B·T·d²")]
    if cfg.mlp == "swiglu":
        mats.append(Matrix("mlp_gate", "mlp", d, f, "2·B·T·d·d_ff"))
    mats += [Matrix("mlp_up", "mlp", d, f, "2·B·T·d·d_ff"),
             Matrix("mlp_down", "mlp", f, d, "2·B·T·d_ff·d")]
    return mats


def block_matmul_params(cfg: ModelConfig) -> int:
    """Weights of one block that take part in a matmul (biases and norms excluded)."""
    return sum(m.params for m in block_matrices(cfg))


def gpt_block_matmul_params(d_model: int, d_ff: int) -> int:
    """The same for a GPT block with multi-head attention and a two-matrix MLP: 4·d² + 2·d·d_ff, the
    block that Kaplan et al. 2020 (Table 1), Hoffmann et al. 2022 (App. F) and, with d_ff = 4·d (12·d²),
    Narayanan et al. 2021 and Korthikanti et al. 2022 write their formulas for."""
    return 4 * d_model * d_model + 2 * d_model * d_ff


#: Matmul rows that torch's non-reentrant checkpoint does not re-run with early stop. The last tensor a
#: block saves for backward is the input of its MLP down-projection (GELU: gelu(up(x)); SwiGLU:
#: silu(gate(x))·up(x)), so the recompute stops before that matmul. Checked with FlopCounterMode for
#: every mix of MLP, norm, positions and n_kv_head (tests/flops/test_llama_counts.py).
NOT_RECOMPUTED_WITH_EARLY_STOP = ("mlp_down",)


# --------------------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------------------


def param_breakdown(cfg: ModelConfig) -> dict[str, int]:
    """Parameters by component, in total over all layers; `lm_head` is 0 when tied to `token_embedding`,
    `position_embedding` is 0 with rope (rotary positions have no parameters; Su et al. 2021)."""
    L, b = cfg.n_layer, int(cfg.bias)

    def part(name: str) -> int:
        return L * sum(m.params + m.d_out * b for m in block_matrices(cfg) if m.part == name)

    # LayerNorm: weight (+ bias); RMSNorm: weight only (Zhang & Sennrich 2019).
    norm = cfg.d_model * (1 + b if cfg.norm == "layernorm" else 1)
    return {
        "token_embedding": cfg.vocab_size * cfg.d_model,
        "position_embedding": cfg.max_seq_len * cfg.d_model if cfg.positions == "learned" else 0,
        "attention": part("attention"),
        "mlp": part("mlp"),
        "norms": (2 * L + 1) * norm,
        "lm_head": 0 if cfg.tie_embeddings else cfg.d_model * cfg.vocab_size,
    }


@dataclass(frozen=True)
class ParamCounts:
    """The three N's (README, "Which N"), named precisely."""

    total: int  # every distinct parameter (a tied LM head counted once)
    non_embedding: int  # total - token embedding - position embedding
    matmul: int  # weights that take part in a matmul, LM head included whether tied or not


def param_counts(cfg: ModelConfig) -> ParamCounts:
    parts = param_breakdown(cfg)
    total = sum(parts.values())
    return ParamCounts(
        total=total,
        non_embedding=total - parts["token_embedding"] - parts["position_embedding"],
        matmul=cfg.n_layer * block_matmul_params(cfg) + cfg.d_model * cfg.vocab_size,
    )


# --------------------------------------------------------------------------------------------------
# Per-component forward FLOPs
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Component:
    """One row of the per-component table: forward FLOPs of one occurrence, and how many there are."""

    name: str
    flops: int  # forward FLOPs of one occurrence, per step
    per_layer: bool  # True: once in every block (n_layer times); False: once per model
    matmul: bool  # False: non-matmul work, kept out of the headline numbers
    recomputed_early_stop: bool  # re-run by torch's checkpoint with early stop (`recompute_flops`)
    formula: str
    n_layer: int

    @property
    def count(self) -> int:
        return self.n_layer if self.per_layer else 1

    @property
    def total(self) -> int:
        return self.flops * self.count


#: The two T x T products of attention, the part of the forward that grows with T².
ATTENTION_SCORE_ROWS = ("attn_scores", "attn_values")


def components(cfg: ModelConfig, batch_size: int, seq_len: int) -> list[Component]:
    """The forward pass of one step, component by component.

    Matmul rows cost 2·H·D·W per matrix product (Kaplan et al. 2020, Table 1;
    Hoffmann et al. 2022, App. F) over the weight matrices of `block_matrices`, with attention over the
    full T x T square (PaLM App. B). QK^T and AV run once per *query* head, so they cost 2·B·T²·d each
    whatever n_kv_head is (a K/V head is shared by its group, not skipped; Ainslie et al. 2023).
    Non-matmul rows are rough operation counts, for scale only: embedding lookups 4·d per token
    (Kaplan et al. 2020, Table 1, "Embed"), LayerNorm 5 per element (fvcore / DeepSpeed profiler
    convention), RMSNorm 4 per element (square, mean, scale, weight), softmax 3 per score (Hoffmann et
    al. 2022, App. F), GELU 1 per element and SwiGLU 2 (SiLU, gating product), residual adds 1 per
    element (DeepSpeed profiler convention), RoPE 3 per rotated element of Q and K (x·cos + rot(x)·sin).
    """
    B, T, d, f, H, V = batch_size, seq_len, cfg.d_model, cfg.d_ff, cfg.n_head, cfg.vocab_size
    BT = B * T

    def row(name, flops, per_layer, matmul, recomputed, formula):
        return Component(name, flops, per_layer, matmul, recomputed, formula, cfg.n_layer)

    def matmul_row(m: Matrix) -> Component:
        return row(m.name, 2 * BT * m.d_in * m.d_out, True, True, m.name not in NOT_RECOMPUTED_WITH_EARLY_STOP,
                   m.formula)

    attention, mlp = ([m for m in block_matrices(cfg) if m.part == p] for p in ("attention", "mlp"))
    qkv, out_proj = attention
    rows = [
        matmul_row(qkv),
        row("attn_scores", 2 * B * T * T * d, True, True, True, "QK^T: 2·B·T²·d"),
        row("attn_values", 2 * B * T * T * d, True, True, True, "AV: 2·B·T²·d"),
        matmul_row(out_proj),
        *(matmul_row(m) for m in mlp),
        row("lm_head", 2 * BT * d * V, False, True, False, "2·B·T·d·V"),
        row("embedding_lookups", 4 * BT * d, False, False, False, "4·d per token"),
    ]
    if cfg.norm == "layernorm":
        rows += [row("layernorms", 2 * 5 * BT * d, True, False, True, "2 norms x 5·B·T·d"),
                 row("final_layernorm", 5 * BT * d, False, False, False, "5·B·T·d")]
    else:
        rows += [row("rmsnorms", 2 * 4 * BT * d, True, False, True, "2 norms x 4·B·T·d"),
                 row("final_rmsnorm", 4 * BT * d, False, False, False, "4·B·T·d")]
    if cfg.positions == "rope":
        rows.append(row("rope", 3 * BT * (d + cfg.kv_dim), True, False, True, "3·B·T·(d + n_kv_head·head_dim)"))
    rows.append(row("softmax", 3 * B * H * T * T, True, False, True, "3·B·H·T²"))
    if cfg.mlp == "swiglu":
        rows.append(row("swiglu", 2 * BT * f, True, False, True, "2·B·T·d_ff (SiLU, product)"))
    else:
        rows.append(row("gelu", BT * f, True, False, True, "B·T·d_ff"))
    rows.append(row("residual_adds", 2 * BT * d, True, False, False, "2·B·T·d"))
    return rows


# --------------------------------------------------------------------------------------------------
# Exact matmul FLOPs: forward, backward, training, training with recomputation
# --------------------------------------------------------------------------------------------------


def forward_flops(cfg: ModelConfig, batch_size: int, seq_len: int) -> int:
    """Forward matmul FLOPs of one step = 2·N_matmul·B·T + 4·B·T²·d·L (Kaplan et al. 2020, Table 1, with
    attention over the full square as in PaLM App. B), for any
    mix of MLP, norm, positions and n_kv_head (N_matmul holds the smaller K/V and the third SwiGLU
    matrix; the T² term does not depend on n_kv_head)."""
    return sum(c.total for c in components(cfg, batch_size, seq_len) if c.matmul)


def backward_flops(cfg: ModelConfig, batch_size: int, seq_len: int) -> int:
    """Backward = 2 x forward: each matmul needs one product for the input gradient and one for the
    weight gradient (Kaplan et al. 2020, §2.1)."""
    return 2 * forward_flops(cfg, batch_size, seq_len)


def train_flops(cfg: ModelConfig, batch_size: int, seq_len: int) -> int:
    """Model FLOPs of a training step: forward + backward = 3 x forward (Kaplan et al. 2020, §2.1: C ≈ 6NT;
    here exact, attention included)."""
    return forward_flops(cfg, batch_size, seq_len) + backward_flops(cfg, batch_size, seq_len)


def recompute_flops(cfg: ModelConfig, batch_size: int, seq_len: int, early_stop: bool = True) -> int:
    """Forward FLOPs that full activation checkpointing (every block) runs a second time.

    Without early stop every block's forward runs again: forward + backward + recomputed forward, the
    factor 4 of Narayanan et al. 2021, Eq. 3 (96 = 4 x 24).
    torch's non-reentrant `checkpoint` stops recomputing by default once every tensor saved for
    backward is rebuilt (`torch.utils.checkpoint.set_checkpoint_early_stop`); in a GPT-2 block and in a
    SwiGLU block alike the last such tensor is the input of the MLP down-projection, so that matmul is
    not recomputed (`NOT_RECOMPUTED_WITH_EARLY_STOP`; measured with FlopCounterMode on 4 GPT-2 blocks,
    d=512, T=256: 3.69 x forward, not 4.00). The LM head is outside the blocks and never recomputed.
    """
    return sum(
        c.total
        for c in components(cfg, batch_size, seq_len)
        if c.matmul and c.per_layer and (c.recomputed_early_stop or not early_stop)
    )


def train_recompute_flops(cfg: ModelConfig, batch_size: int, seq_len: int, early_stop: bool = True) -> int:
    """Hardware FLOPs of a training step with full checkpointing: training + the recomputed forward."""
    return train_flops(cfg, batch_size, seq_len) + recompute_flops(cfg, batch_size, seq_len, early_stop)


def non_matmul_flops(cfg: ModelConfig, batch_size: int, seq_len: int) -> int:
    """Rough forward non-matmul operations (softmax, norms, GELU / SwiGLU, RoPE, adds, lookups): not in
    the headline."""
    return sum(c.total for c in components(cfg, batch_size, seq_len) if not c.matmul)
