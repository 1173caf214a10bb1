"""Published FLOP estimates: a registry, one entry per estimate, in the shape of torch's flop_counter registry.

Each `Estimate` brings everything flopbench knows about it, and nothing else needs to change when one
is added: its formula (per step of B sequences of T tokens, as published), the phase it counts, its
citation, the exact analytic count it is compared with, and the exact difference from that count
together with the reason for it. `flops.reconcile` loops over `ESTIMATES`; `count` lists them; the
report draws those marked `report`.

The published formulas are kept as published: Narayanan et al. (`megatron`) and Korthikanti et al.
assume multi-head attention and a 4·d GELU MLP (12·d² matmul weights per block); Kaplan and Chinchilla
assume multi-head attention and a two-matrix MLP of width d_ff (4·d² + 2·d·d_ff). For other blocks the
explained gap holds the exact difference, 2·B·T·L·(published − actual block weights) per forward.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..model.config import ModelConfig
from . import analytic

#: The exact analytic counts an estimate can be compared with.
EXACT = ("forward", "train", "train_recompute", "train_recompute_no_early_stop", "train_recompute_selective")


@dataclass(frozen=True)
class Terms:
    """The pieces of the exact count that the published estimates leave out or add, for one step."""

    cfg: ModelConfig
    B: int
    T: int
    attention: int  # QK^T + AV over the full square (T x min(T, W) when sliding), all layers, forward
    not_rerun: int  # matmuls torch's checkpoint early stop does not re-run (pre-norm MLP down-projections)
    lm_head: int  # 2·B·T·d·V
    block_weights: int  # this config's matmul weights a token passes through in all blocks (active)
    tokens: int
    n_matmul: int  # N_active_matmul
    masked: int  # what a mask-based kernel adds over the sliding windows (`analytic.masked_square_flops`)
    causal_skipped: int  # forward attention FLOPs a causal kernel skips (`analytic.causal_attention_flops`)

    @classmethod
    def of(cls, cfg: ModelConfig, B: int, T: int) -> "Terms":
        rows = analytic.components(cfg, B, T)
        attention = sum(c.total for c in rows if c.name in analytic.ATTENTION_SCORE_ROWS)
        return cls(cfg, B, T, attention,
                   sum(c.total for c in rows if c.matmul and c.per_layer and not c.recomputed_early_stop),
                   sum(c.total for c in rows if c.name == "lm_head"),
                   analytic.active_matmul_params(cfg), B * T, analytic.param_counts(cfg).active_matmul,
                   analytic.masked_square_flops(cfg, B, T),
                   attention - analytic.causal_attention_flops(cfg, B, T))

    def block_gap(self, published_block_weights: int) -> int:
        """Forward FLOPs a formula written for blocks of `published_block_weights` matmul weights adds over
        this config's blocks: 2·B·T·(L·published − actual weights of all blocks)."""
        return 2 * self.tokens * (self.cfg.n_layer * published_block_weights - self.block_weights)

    @property
    def attention_gap(self) -> int:
        """Forward FLOPs the published formulas' attention term, 4·B·T²·d·L (every layer over all T keys,
        n_head·head_dim = d), adds over this config's: 0 unless head_dim is set apart or layers slide."""
        return 4 * self.tokens * self.T * self.cfg.d_model * self.cfg.n_layer - self.attention

    @property
    def gpt_4d(self) -> int:
        """12·d²: the block of Narayanan et al. 2021 and Korthikanti et al. 2022."""
        return analytic.gpt_block_matmul_params(self.cfg.d_model, 4 * self.cfg.d_model)

    @property
    def gpt_f(self) -> int:
        """4·d² + 2·d·d_ff: the block of Kaplan et al. 2020 and Hoffmann et al. 2022."""
        return analytic.gpt_block_matmul_params(self.cfg.d_model, self.cfg.d_ff)

    def assumes(self, block: str, published: int) -> str:
        """'; they assume <block> (...)' when the published block differs from this config's, else ''."""
        L = self.cfg.n_layer
        if published * L == self.block_weights:
            return self.assumes_attention()
        if len(self.cfg.layer_kinds()) == 1 and not self.cfg.is_moe:
            has = f"this {architecture(self.cfg)} block has {self.block_weights // L:,}"
        else:
            has = f"this {architecture(self.cfg)} model's {L} blocks use {self.block_weights:,} per token"
        return f"; they assume {block} ({published:,} matmul weights per block; {has})" + self.assumes_attention()

    def assumes_attention(self) -> str:
        """'; and attention of width d over all T keys' when that is not this config's attention, else ''."""
        return "; and attention of width d over all T keys in every layer" if self.attention_gap else ""


def architecture(cfg: ModelConfig) -> str:
    """A short name of the block's shape for the reasons: 'GQA 32/8 heads SwiGLU d_ff=14336', 'MHA GELU ...'."""
    if cfg.kv_heads == cfg.n_head:
        attention = "MHA"
    else:
        attention = f"{'MQA' if cfg.kv_heads == 1 else 'GQA'} {cfg.n_head}/{cfg.kv_heads} heads"
    mlp = {"gelu": "GELU", "swiglu": "SwiGLU", "geglu": "GeGLU"}[cfg.mlp]
    if cfg.is_moe:
        mlp = f"MoE {cfg.top_k}/{cfg.n_experts} {mlp} experts d_ff={cfg.d_ff_expert}"
    else:
        mlp = f"{mlp} d_ff={cfg.d_ff}"
    if "sliding" in cfg.layer_types:
        attention += f" window {cfg.sliding_window}"
    return f"{attention} {mlp}"


@dataclass(frozen=True)
class Estimate:
    """One published estimate (see the module docstring)."""

    name: str
    phase: str  # "forward", "train" or "train_recompute": what the published figure counts
    cite: str  # short citation for legends: "Kaplan et al. 2020"
    source: str  # full citation: paper, section or equation, and the formula
    formula: Callable[[ModelConfig, int, int], int]  # FLOPs per step of B x T tokens
    compare_to: str  # the exact analytic count (one of EXACT) it is reconciled with
    gap: Callable[[Terms], int]  # estimate − exact, as predicted from the config
    reason: Callable[[Terms], str]  # why they differ by exactly `gap`
    report: bool = False  # drawn beside the counted FLOPs in the report


def _megatron_like(cfg: ModelConfig, B: int, s: int, coeff: int, vocab_div: int) -> int:
    """coeff·B·s·l·h²·(1 + s/(6h) + V/(vocab_div·l·h)), evaluated in integers (exact)."""
    l, h, V = cfg.n_layer, cfg.d_model, cfg.vocab_size
    # coeff·B·s·l·h² + coeff·B·s²·l·h/6 + coeff·B·s·h·V/vocab_div; coeff is a multiple of 6 and vocab_div.
    return coeff * B * s * l * h * h + coeff // 6 * B * s * s * l * h + coeff // vocab_div * B * s * h * V


def _n(cfg: ModelConfig) -> int:
    """N of the simple rules: the matmul weights one token passes through (all of them in a dense model; the
    router, shared and top_k routed experts in a mixture of experts, as Megatron-LM and MaxText count)."""
    return analytic.param_counts(cfg).active_matmul


def _chinchilla(cfg: ModelConfig, B: int, T: int) -> int:
    """Hoffmann et al. 2022, App. F, training = 3 x forward: embeddings (2·T·V·d, counted as a matmul),
    QKV + output projection + MLP (2·T·(4·d² + 2·d·d_ff)), QK^T logits and AV (2·T²·d each), softmax
    (3·H·T²), final logits (2·T·d·V)."""
    L, d, f, H, V = cfg.n_layer, cfg.d_model, cfg.d_ff, cfg.n_head, cfg.vocab_size
    block = 2 * T * analytic.gpt_block_matmul_params(d, f) + 2 * T * T * d + 3 * H * T * T + 2 * T * T * d
    return 3 * B * (2 * T * V * d + L * block + 2 * T * d * V)


def _causal(cfg: ModelConfig, B: int, T: int) -> int:
    return analytic.train_flops(cfg, B, T) - 3 * Terms.of(cfg, B, T).causal_skipped


MHA_4D = "multi-head attention and a 4·d two-matrix MLP"
MHA_F = "multi-head attention and a two-matrix MLP"

#: The registry, in the order `count` lists the estimates.
ESTIMATES: tuple[Estimate, ...] = (
    Estimate(
        "2N", "forward", "Kaplan et al. 2020", "Kaplan et al. 2020, §2.1: forward ≈ 2·N_matmul per token",
        lambda cfg, B, T: 2 * _n(cfg) * B * T,
        "forward", lambda t: -t.attention,
        lambda t: "2N leaves out attention scores (QK^T, AV): 4·L·d·T FLOPs per token", report=True),
    Estimate(
        "6N", "train", "Kaplan et al. 2020", "Kaplan et al. 2020, §2.1: training ≈ 6·N_matmul·T",
        lambda cfg, B, T: 6 * _n(cfg) * B * T,
        "train", lambda t: -3 * t.attention,
        lambda t: "6N leaves out attention scores (QK^T, AV): 12·L·d·T FLOPs per token", report=True),
    Estimate(
        "8N", "train_recompute", "Narayanan et al. 2021",
        "Narayanan et al. 2021, Eq. 3 (forward + backward + recomputed forward = 4 forwards): ≈ 8·N_matmul·T",
        lambda cfg, B, T: 8 * _n(cfg) * B * T,
        "train_recompute", lambda t: -(4 * t.attention - t.not_rerun - t.lm_head),
        lambda t: "8N leaves out attention and assumes the LM head and every MLP down-projection are re-run",
        report=True),
    Estimate(
        "palm", "train", "Chowdhery et al. 2022",
        "Chowdhery et al. 2022 (PaLM), App. B: 6N + 12·L·H·Q·T per token",
        lambda cfg, B, T: (6 * _n(cfg) + 12 * cfg.n_layer * cfg.n_head * cfg.head_dim * T) * B * T,
        "train", lambda t: 3 * t.masked,
        lambda t: "PaLM's 6N + 12·L·H·Q·T per token is the exact full-attention count, N = N_matmul"
        + (" (every layer over all T keys: it ignores the sliding windows)" if t.masked else ""), report=True),
    Estimate(
        "megatron", "train_recompute", "Narayanan et al. 2021",
        "Narayanan et al. 2021, Eq. 3: 96·B·s·l·h²·(1 + s/6h + V/16lh)",
        lambda cfg, B, T: _megatron_like(cfg, B, T, 96, 16),
        "train_recompute_no_early_stop", lambda t: 4 * (t.block_gap(t.gpt_4d) + t.attention_gap),
        lambda t: "Narayanan et al. Eq. 3 re-runs every block in full" + t.assumes(MHA_4D, t.gpt_4d)),
    Estimate(
        "korthikanti", "train", "Korthikanti et al. 2022",
        "Korthikanti et al. 2022, §5 (model FLOPs): 72·B·s·l·h²·(1 + s/6h + V/12lh)",
        lambda cfg, B, T: _megatron_like(cfg, B, T, 72, 12),
        "train", lambda t: 3 * (t.block_gap(t.gpt_4d) + t.attention_gap),
        lambda t: "Korthikanti et al.'s model FLOPs" + (t.assumes(MHA_4D, t.gpt_4d)
                                                       or ": exact for multi-head attention and a 4·d MLP")),
    Estimate(
        "kaplan", "train", "Kaplan et al. 2020",
        "Kaplan et al. 2020, Table 1: 3·(2N + 2·n_layer·n_ctx·d_attn) per token",
        lambda cfg, B, T: 3 * (2 * cfg.n_layer * analytic.gpt_block_matmul_params(cfg.d_model, cfg.d_ff)
                               + 2 * cfg.n_layer * T * cfg.d_model) * B * T,
        "train", lambda t: 3 * (t.block_gap(t.gpt_f) - t.lm_head + (t.attention_gap - t.attention) // 2),
        lambda t: ("Kaplan's N leaves out the LM head, and 2·n_layer·n_ctx·d_attn is half of QK^T + AV"
                   + t.assumes(MHA_F, t.gpt_f))),
    Estimate(
        "chinchilla", "train", "Hoffmann et al. 2022", "Hoffmann et al. 2022, App. F, backward = 2 x forward",
        _chinchilla,
        "train", lambda t: (3 * t.B * (2 * t.T * t.cfg.vocab_size * t.cfg.d_model + 3 * t.cfg.n_layer * t.cfg.n_head
                                       * t.T * t.T) + 3 * (t.block_gap(t.gpt_f) + t.attention_gap)),
        lambda t: ("Chinchilla counts the embedding as a 2·T·V·d matmul and softmax as 3·H·T² per layer"
                   + t.assumes(MHA_F, t.gpt_f))),
    Estimate(
        "causal", "train", "Megatron-LM",
        "exact training FLOPs with causal attention halved (Megatron-LM's convention since 2025)",
        _causal,
        "train", lambda t: -3 * t.causal_skipped,
        lambda t: "causal attention halved: only the lower triangle of QK^T and AV"
        + (" (in a sliding layer the band under the diagonal)" if "sliding" in t.cfg.layer_types else "")),
)

REGISTRY: dict[str, Estimate] = {e.name: e for e in ESTIMATES}


@dataclass(frozen=True)
class EstimateValue:
    """One estimate evaluated for a step."""

    name: str
    flops: int
    phase: str
    source: str


def estimates(cfg: ModelConfig, batch_size: int, seq_len: int) -> dict[str, EstimateValue]:
    """Every registered estimate, per step of batch_size x seq_len tokens, as published."""
    return {e.name: EstimateValue(e.name, e.formula(cfg, batch_size, seq_len), e.phase, e.source) for e in ESTIMATES}


def exact(cfg: ModelConfig, batch_size: int, seq_len: int) -> dict[str, int]:
    """The exact analytic counts an estimate is compared with (`EXACT`), per step."""
    B, T = batch_size, seq_len
    return {"forward": analytic.forward_flops(cfg, B, T), "train": analytic.train_flops(cfg, B, T),
            "train_recompute": analytic.train_recompute_flops(cfg, B, T, early_stop=True),
            "train_recompute_no_early_stop": analytic.train_recompute_flops(cfg, B, T, early_stop=False),
            "train_recompute_selective": analytic.train_recompute_flops(cfg, B, T, checkpointing="selective")}
