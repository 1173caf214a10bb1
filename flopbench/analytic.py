"""Closed-form parameter and FLOP counts for a `ModelConfig`: no model is built.

Conventions (DESIGN.md section 2): one multiply-add = 2 FLOPs; a product of an (H x D) and a (D x W)
matrix costs 2·H·D·W (the seed's rule); attention scores are counted over all T x T positions ("full");
backward = 2 x forward; the headline numbers are matmul FLOPs only. Every figure is per *step* of
`batch_size` sequences of `seq_len` tokens, unless a name says "per token".
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import ModelConfig

# --------------------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------------------


def param_breakdown(cfg: ModelConfig) -> dict[str, int]:
    """Parameters by component, in total over all layers; `lm_head` is 0 when tied to `token_embedding`."""
    d, f, L, b = cfg.d_model, cfg.d_ff, cfg.n_layer, int(cfg.bias)
    norm = d * (1 + b)  # LayerNorm weight (+ bias)
    return {
        "token_embedding": cfg.vocab_size * d,
        "position_embedding": cfg.max_seq_len * d,
        "attention": L * (d * 3 * d + 3 * d * b + d * d + d * b),
        "mlp": L * (d * f + f * b + f * d + d * b),
        "norms": (2 * L + 1) * norm,
        "lm_head": 0 if cfg.tie_embeddings else d * cfg.vocab_size,
    }


@dataclass(frozen=True)
class ParamCounts:
    """The three N's of DESIGN.md section 2, named precisely."""

    total: int  # every distinct parameter (a tied LM head counted once)
    non_embedding: int  # total - token embedding - position embedding
    matmul: int  # weights that take part in a matmul, LM head included whether tied or not


def param_counts(cfg: ModelConfig) -> ParamCounts:
    parts = param_breakdown(cfg)
    total = sum(parts.values())
    d, f = cfg.d_model, cfg.d_ff
    matmul = cfg.n_layer * (4 * d * d + 2 * d * f) + d * cfg.vocab_size
    return ParamCounts(
        total=total,
        non_embedding=total - parts["token_embedding"] - parts["position_embedding"],
        matmul=matmul,
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

    Matmul rows follow the seed's rule 2·H·D·W per matrix product (Kaplan et al. 2020, Table 1;
    Hoffmann et al. 2022, App. F), with attention over the full T x T square (PaLM App. B).
    Non-matmul rows are rough operation counts, for scale only: embedding lookups 4·d per token
    (Kaplan et al. 2020, Table 1, "Embed"), LayerNorm 5 per element (fvcore / DeepSpeed profiler
    convention), softmax 3 per score (Hoffmann et al. 2022, App. F), GELU and residual adds 1 per
    element (DeepSpeed profiler convention).
    """
    B, T, d, f, H, V = batch_size, seq_len, cfg.d_model, cfg.d_ff, cfg.n_head, cfg.vocab_size
    BT = B * T

    def row(name, flops, per_layer, matmul, recomputed, formula):
        return Component(name, flops, per_layer, matmul, recomputed, formula, cfg.n_layer)

    return [
        row("qkv_proj", 2 * BT * d * 3 * d, True, True, True, "2·B·T·d·3d"),
        row("attn_scores", 2 * B * T * T * d, True, True, True, "QK^T: 2·B·T²·d"),
        row("attn_values", 2 * B * T * T * d, True, True, True, "AV: 2·B·T²·d"),
        row("attn_out_proj", 2 * BT * d * d, True, True, True, "2·B·T·d²"),
        row("mlp_up", 2 * BT * d * f, True, True, True, "2·B·T·d·d_ff"),
        # Early stop: the last tensor a block saves for backward is mlp_down's input, so mlp_down is
        # not re-run (see `recompute_flops`).
        row("mlp_down", 2 * BT * f * d, True, True, False, "2·B·T·d_ff·d"),
        row("lm_head", 2 * BT * d * V, False, True, False, "2·B·T·d·V"),
        row("embedding_lookups", 4 * BT * d, False, False, False, "4·d per token"),
        row("layernorms", 2 * 5 * BT * d, True, False, True, "2 norms x 5·B·T·d"),
        row("final_layernorm", 5 * BT * d, False, False, False, "5·B·T·d"),
        row("softmax", 3 * B * H * T * T, True, False, True, "3·B·H·T²"),
        row("gelu", BT * f, True, False, True, "B·T·d_ff"),
        row("residual_adds", 2 * BT * d, True, False, False, "2·B·T·d"),
    ]


# --------------------------------------------------------------------------------------------------
# Exact matmul FLOPs: forward, backward, training, training with recomputation
# --------------------------------------------------------------------------------------------------


def forward_flops(cfg: ModelConfig, batch_size: int, seq_len: int) -> int:
    """Forward matmul FLOPs of one step = 2·N_matmul·B·T + 4·B·T²·d·L (DESIGN.md section 3)."""
    return sum(c.total for c in components(cfg, batch_size, seq_len) if c.matmul)


def backward_flops(cfg: ModelConfig, batch_size: int, seq_len: int) -> int:
    """Backward = 2 x forward: each matmul needs one product for the input gradient and one for the
    weight gradient (the seed's rule; Kaplan et al. 2020, section 2.1)."""
    return 2 * forward_flops(cfg, batch_size, seq_len)


def train_flops(cfg: ModelConfig, batch_size: int, seq_len: int) -> int:
    """Model FLOPs of a training step: forward + backward = 3 x forward (the seed's C = 6NT, exact)."""
    return forward_flops(cfg, batch_size, seq_len) + backward_flops(cfg, batch_size, seq_len)


def recompute_flops(cfg: ModelConfig, batch_size: int, seq_len: int, early_stop: bool = True) -> int:
    """Forward FLOPs that full activation checkpointing (every block) runs a second time.

    Without early stop every block's forward runs again (the seed's "backward = three forwards").
    torch's non-reentrant `checkpoint` stops recomputing by default once every tensor saved for
    backward is rebuilt (`torch.utils.checkpoint.set_checkpoint_early_stop`); in a GPT-2 block the last
    such tensor is the input of the MLP down-projection, so that matmul is not recomputed
    (DESIGN.md section 3: 3.69 x forward measured, not 4.00). The LM head is outside the blocks and
    never recomputed.
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
    """Rough forward non-matmul operations (softmax, norms, GELU, adds, lookups): not in the headline."""
    return sum(c.total for c in components(cfg, batch_size, seq_len) if not c.matmul)


# --------------------------------------------------------------------------------------------------
# Named estimates from the literature, each per step, as published
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    name: str
    flops: int
    phase: str  # "forward", "train" or "train_recompute"
    source: str


def _megatron_like(cfg: ModelConfig, batch_size: int, seq_len: int, coeff: int, vocab_div: int) -> int:
    """coeff·B·s·l·h²·(1 + s/(6h) + V/(vocab_div·l·h)), evaluated in integers (exact)."""
    B, s, l, h, V = batch_size, seq_len, cfg.n_layer, cfg.d_model, cfg.vocab_size
    # coeff·B·s·l·h² + coeff·B·s²·l·h/6 + coeff·B·s·h·V/vocab_div; coeff is a multiple of 6 and vocab_div.
    return coeff * B * s * l * h * h + coeff // 6 * B * s * s * l * h + coeff // vocab_div * B * s * h * V


def estimates(cfg: ModelConfig, batch_size: int, seq_len: int) -> dict[str, Estimate]:
    """Every named estimate, per step of batch_size x seq_len tokens.

    - `2N`, `6N`, `8N` — the seed: forward ≈ 2N per token, training ≈ 6NT, with activation
      recomputation ≈ 8NT, with N = N_matmul (attention scores are not in it).
    - `palm` — Chowdhery et al. 2022 (PaLM), App. B: 6N + 12·L·H·Q·T FLOPs per token for training
      (H heads of size Q), with N = N_matmul.
    - `megatron` — Narayanan et al. 2021, Eq. 3 (training with full recomputation, 4·h MLP):
      96·B·s·l·h²·(1 + s/(6h) + V/(16·l·h)).
    - `korthikanti` — Korthikanti et al. 2022, model FLOPs (no recomputation, 4·h MLP):
      72·B·s·l·h²·(1 + s/(6h) + V/(12·l·h)).
    - `kaplan` — Kaplan et al. 2020, Table 1: C_forward = 2N + 2·n_layer·n_ctx·d_attn per token with
      N the non-embedding parameters (LM head excluded), training = 3 x forward (section 2.1).
    - `chinchilla` — Hoffmann et al. 2022, App. F: embeddings (2·T·V·d, counted as a matmul), QKV,
      QK^T logits, softmax (3·H·T²), AV, output projection, MLP, final logits; training = 3 x forward.
    - `causal` — the exact training count with attention scores halved for the causal mask
      (Megatron-LM's convention since 2025), reported beside the full-attention default.
    """
    B, T, L, d, f, H, V = (batch_size, seq_len, cfg.n_layer, cfg.d_model, cfg.d_ff, cfg.n_head,
                           cfg.vocab_size)
    tokens = B * T
    n = param_counts(cfg)
    kaplan_n = 2 * d * L * (2 * d + f)  # Kaplan's N = 2·d_model·n_layer·(2·d_attn + d_ff)
    chinchilla_forward = B * (
        2 * T * V * d
        + L * (2 * 3 * T * d * d + 2 * T * T * d + 3 * H * T * T + 2 * T * T * d + 2 * T * d * d + 4 * T * d * f)
        + 2 * T * d * V
    )
    attention_scores = sum(c.total for c in components(cfg, B, T) if c.name in ATTENTION_SCORE_ROWS)
    E = Estimate
    items = [
        E("2N", 2 * n.matmul * tokens, "forward", "seed: forward ≈ 2·N_matmul per token"),
        E("6N", 6 * n.matmul * tokens, "train", "seed: training ≈ 6·N_matmul·T"),
        E("8N", 8 * n.matmul * tokens, "train_recompute", "seed: with recomputation ≈ 8·N_matmul·T"),
        E("palm", (6 * n.matmul + 12 * L * H * cfg.head_dim * T) * tokens, "train",
          "Chowdhery et al. 2022 (PaLM), App. B: 6N + 12·L·H·Q·T per token"),
        E("megatron", _megatron_like(cfg, B, T, 96, 16), "train_recompute",
          "Narayanan et al. 2021, Eq. 3: 96·B·s·l·h²·(1 + s/6h + V/16lh)"),
        E("korthikanti", _megatron_like(cfg, B, T, 72, 12), "train",
          "Korthikanti et al. 2022: 72·B·s·l·h²·(1 + s/6h + V/12lh)"),
        E("kaplan", 3 * (2 * kaplan_n + 2 * L * T * d) * tokens, "train",
          "Kaplan et al. 2020, Table 1: 3·(2N + 2·n_layer·n_ctx·d_attn) per token"),
        E("chinchilla", 3 * chinchilla_forward, "train", "Hoffmann et al. 2022, App. F, backward = 2 x forward"),
        E("causal", train_flops(cfg, B, T) - 3 * attention_scores // 2, "train",
          "exact training FLOPs with causal attention halved (Megatron-LM since 2025)"),
    ]
    return {e.name: e for e in items}
