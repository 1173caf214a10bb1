"""Analytic vs counted vs published: every pair of numbers side by side, with the reason they differ.

Each `Check` carries the difference its reason predicts (`explained`), computed from the config; a
check whose actual difference is not the predicted one is reported as "unexplained" — so a change in
torch, fvcore or the model that moves a count shows up instead of hiding behind a ratio.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from . import analytic
from .config import ModelConfig


@dataclass(frozen=True)
class Check:
    left: str
    left_flops: int
    right: str
    right_flops: int
    explained: int  # the difference left - right that `reason` accounts for
    reason: str

    @property
    def ratio(self) -> float:
        return self.left_flops / self.right_flops if self.right_flops else float("nan")

    @property
    def status(self) -> str:
        diff = self.left_flops - self.right_flops
        if diff == 0 and self.explained == 0:
            return "equal"
        return "explained" if diff == self.explained else "unexplained"

    def as_dict(self) -> dict:
        return {**asdict(self), "ratio": self.ratio, "status": self.status}


def reconcile(cfg: ModelConfig, batch_size: int, seq_len: int, torch_counts: dict[str, int] | None,
              fvcore_forward: int | None, fvcore_non_matmul: int | None = None,
              fvcore_unsupported: dict[str, int] | None = None) -> list[Check]:
    """Checks for one config and step shape; counted figures that are None (not counted) are skipped."""
    B, T, L, d, f, H, V = (batch_size, seq_len, cfg.n_layer, cfg.d_model, cfg.d_ff, cfg.n_head,
                           cfg.vocab_size)
    fwd = analytic.forward_flops(cfg, B, T)
    train = analytic.train_flops(cfg, B, T)
    recompute = analytic.train_recompute_flops(cfg, B, T, early_stop=True)
    recompute_all = analytic.train_recompute_flops(cfg, B, T, early_stop=False)
    est = analytic.estimates(cfg, B, T)
    rows = analytic.components(cfg, B, T)

    def forward_of(names) -> int:
        return sum(c.total for c in rows if c.name in names)

    attention = forward_of(analytic.ATTENTION_SCORE_ROWS)  # QK^T + AV, full square: 4·B·T²·d·L
    not_rerun = forward_of(analytic.NOT_RECOMPUTED_WITH_EARLY_STOP)  # MLP down-projections: 2·B·T·d_ff·d·L
    lm_head = forward_of(("lm_head",))
    block_weights = analytic.block_matmul_params(cfg)

    def block_gap(published_block_weights: int) -> int:
        """Forward FLOPs a formula written for blocks of `published_block_weights` matmul weights adds
        over this config's blocks: 2·B·T·L·(published − actual)."""
        return 2 * B * T * L * (published_block_weights - block_weights)

    gpt_4d = analytic.gpt_block_matmul_params(d, 4 * d)  # 12·d²: Megatron / Korthikanti's block
    gpt_f = analytic.gpt_block_matmul_params(d, f)  # 4·d² + 2·d·d_ff: Kaplan / Chinchilla's block
    arch = _architecture(cfg)

    def assumes(block: str, published: int) -> str:
        if published == block_weights:
            return ""
        return f"; they assume {block} ({published:,} matmul weights per block; this {arch} block has {block_weights:,})"

    checks: list[Check] = []
    if torch_counts is not None:
        checks += [
            Check("counted.torch.forward", torch_counts["forward"], "analytic.forward", fwd, 0,
                  "the same matmuls: every linear layer, QK^T and AV over the full T x T square"),
            Check("counted.torch.train", torch_counts["train"], "analytic.train", train, 0,
                  "backward = 2 x forward: one product for the input gradient, one for the weight gradient"),
            Check("counted.torch.train_recompute", torch_counts["train_recompute"], "analytic.train_recompute",
                  recompute, 0, "checkpoint early stop modelled: each block's MLP down-projection is not re-run"),
        ]
    if fvcore_forward is not None:
        checks.append(Check("counted.fvcore.forward", fvcore_forward, "analytic.forward", fwd, 0,
                            "fvcore multiply-adds x 2, with flopbench's handle for scaled_dot_product_attention"))
        skipped = ", ".join(sorted(fvcore_unsupported or {})) or "nothing"
        if fvcore_non_matmul is not None:
            checks.append(Check("fvcore incl. non-matmul", fvcore_forward + fvcore_non_matmul,
                                "analytic.forward", fwd, fvcore_non_matmul,
                                f"fvcore also counts LayerNorm ({fvcore_non_matmul:,} FLOPs; it has no RMSNorm "
                                f"handle), kept out of the headline; it skips {skipped}"))
    checks += [
        Check("analytic.train", train, "estimate 6N", est["6N"].flops, 3 * attention,
              "6N leaves out attention scores (QK^T, AV): 12·L·d·T FLOPs per token"),
        Check("analytic.train_recompute", recompute, "estimate 8N", est["8N"].flops,
              4 * attention - not_rerun - lm_head,
              "8N leaves out attention and assumes the LM head and every MLP down-projection are re-run"),
        Check("analytic.train_recompute", recompute, "analytic.train_recompute_no_early_stop", recompute_all,
              -not_rerun, "torch's early stop skips re-running each block's MLP down-projection (2·B·T·d_ff·d)"),
        Check("estimate palm", est["palm"].flops, "analytic.train", train, 0,
              "PaLM's 6N + 12·L·H·Q·T per token is the exact full-attention count, N = N_matmul"),
        Check("estimate korthikanti", est["korthikanti"].flops, "analytic.train", train, 3 * block_gap(gpt_4d),
              "Korthikanti et al.'s model FLOPs" + (assumes("multi-head attention and a 4·d two-matrix MLP", gpt_4d)
                                                    or ": exact for multi-head attention and a 4·d MLP")),
        Check("estimate megatron", est["megatron"].flops, "analytic.train_recompute_no_early_stop",
              recompute_all, 4 * block_gap(gpt_4d),
              "Narayanan et al. Eq. 3 re-runs every block in full"
              + assumes("multi-head attention and a 4·d two-matrix MLP", gpt_4d)),
        Check("estimate kaplan", est["kaplan"].flops, "analytic.train", train,
              3 * block_gap(gpt_f) - 3 * (lm_head + attention // 2),
              "Kaplan's N leaves out the LM head, and 2·n_layer·n_ctx·d_attn is half of QK^T + AV"
              + assumes("multi-head attention and a two-matrix MLP", gpt_f)),
        Check("estimate chinchilla", est["chinchilla"].flops, "analytic.train", train,
              3 * B * (2 * T * V * d + 3 * L * H * T * T) + 3 * block_gap(gpt_f),
              "Chinchilla counts the embedding as a 2·T·V·d matmul and softmax as 3·H·T² per layer"
              + assumes("multi-head attention and a two-matrix MLP", gpt_f)),
        Check("estimate causal", est["causal"].flops, "analytic.train", train, -3 * attention // 2,
              "causal attention halved: only the lower triangle of QK^T and AV"),
    ]
    return checks


def _architecture(cfg: ModelConfig) -> str:
    """A short name of the block's shape for the reasons: 'GQA 32/8 SwiGLU', 'MHA GELU', ..."""
    if cfg.kv_heads == cfg.n_head:
        attention = "MHA"
    else:
        attention = f"{'MQA' if cfg.kv_heads == 1 else 'GQA'} {cfg.n_head}/{cfg.kv_heads} heads"
    return f"{attention} {'SwiGLU' if cfg.mlp == 'swiglu' else 'GELU'} d_ff={cfg.d_ff}"


def explained_hardware_gap(cfg: ModelConfig, batch_size: int, seq_len: int, mode: str, gap: int) -> int:
    """The part of `gap` (counted - analytic hardware FLOPs of one real step) that a known kernel effect
    accounts for, or 0.

    Fused attention kernels (flash, memory-efficient, cuDNN; on the CPU the flash kernel too) do not
    keep the T x T scores for backward: their backward re-forms QK^T, which torch counts as a fifth
    bmm (DESIGN.md section 2): 2·B·T²·d per layer per backward.
    """
    rescore = 2 * batch_size * seq_len * seq_len * cfg.d_model * cfg.n_layer
    return rescore if mode != "forward" and gap == rescore else 0


def explain_hardware_gap(cfg: ModelConfig, batch_size: int, seq_len: int, mode: str, counted: int | None,
                         analytic_hardware: int) -> str:
    """Why FLOPs counted over a real step differ from the analytic hardware FLOPs, or "unexplained"."""
    if counted is None:
        return "not counted"
    gap = counted - analytic_hardware
    if gap == 0:
        return "equal"
    if explained_hardware_gap(cfg, batch_size, seq_len, mode, gap):
        return "attention backward re-forms QK^T (fused kernel: 5 bmm instead of 4)"
    return f"unexplained: counted - analytic = {gap:,} FLOPs"
