"""Analytic vs counted vs published: every pair of numbers side by side, with the reason they differ.

Each `Check` carries the difference its reason predicts (`explained`), computed from the config; a
check whose actual difference is not the predicted one is reported as "unexplained" — so a change in
torch, fvcore or the model that moves a count shows up instead of hiding behind a ratio.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..model.config import ModelConfig
from . import estimates


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
    """Checks for one config and step shape: counted vs analytic (figures that are None, not counted, are
    skipped), torch's checkpoint early stop, then every registered published estimate vs the exact count."""
    B, T = batch_size, seq_len
    exact = estimates.exact(cfg, B, T)
    terms = estimates.Terms.of(cfg, B, T)
    checks: list[Check] = []
    if torch_counts is not None:
        masked = terms.masked
        window = (f"; the mask-based kernel scores every query against all T keys, not the last W = "
                  f"{cfg.sliding_window}: {masked:,} FLOPs per forward pass") if masked else ""
        checks += [
            Check("counted.torch.forward", torch_counts["forward"], "analytic.forward", exact["forward"], masked,
                  "the same matmuls: every linear layer, QK^T and AV over the full T x T square" + window),
            Check("counted.torch.train", torch_counts["train"], "analytic.train", exact["train"], 3 * masked,
                  "backward = 2 x forward: one product for the input gradient, one for the weight gradient" + window),
            Check("counted.torch.train_recompute", torch_counts["train_recompute"], "analytic.train_recompute",
                  exact["train_recompute"], 4 * masked,
                  "checkpoint early stop modelled: "
                  + ("each block's MLP down-projection is not re-run" if terms.not_rerun else "every matmul is re-run")
                  + window),
        ]
        if "train_recompute_selective" in torch_counts:
            checks.append(Check("counted.torch.train_recompute_selective", torch_counts["train_recompute_selective"],
                                "analytic.train_recompute_selective", exact["train_recompute_selective"],
                                4 * masked, "selective checkpointing re-runs QK^T and AV (Korthikanti et al. "
                                "2022, §4.1)" + window))
    if fvcore_forward is not None:
        checks.append(Check("counted.fvcore.forward", fvcore_forward, "analytic.forward", exact["forward"],
                            terms.masked,
                            "fvcore multiply-adds x 2, with flopbench's handle for scaled_dot_product_attention"
                            + (" (over the masked full square)" if terms.masked else "")))
        skipped = ", ".join(sorted(fvcore_unsupported or {})) or "nothing"
        if fvcore_non_matmul is not None:
            checks.append(Check("fvcore incl. non-matmul", fvcore_forward + fvcore_non_matmul,
                                "analytic.forward", exact["forward"], fvcore_non_matmul + terms.masked,
                                f"fvcore also counts LayerNorm ({fvcore_non_matmul:,} FLOPs; it has no RMSNorm "
                                f"handle), kept out of the headline; it skips {skipped}"))
    checks.append(Check("analytic.train_recompute", exact["train_recompute"], "analytic.train_recompute_no_early_stop",
                        exact["train_recompute_no_early_stop"], -terms.not_rerun,
                        "torch's early stop skips re-running each block's MLP down-projection (2·B·T·d_ff·d)"
                        if terms.not_rerun else "torch's early stop skips nothing here: a norm or a routing weight "
                        "after the MLP saves its output, so every matmul is re-run"))
    for e in estimates.ESTIMATES:
        checks.append(Check(f"estimate {e.name}", e.formula(cfg, B, T), f"analytic.{e.compare_to}",
                            exact[e.compare_to], e.gap(terms), e.reason(terms)))
    return checks


#: The hardware FLOPs note of a FlexAttention row: its hardware FLOPs are analytic, not counted.
FLEX_NOTE = ("analytic: FlexAttention runs under no FlopCounterMode in torch 2.13 (and torch's flex formula "
             "counts the whole square); QK^T and AV counted over the block mask's non-empty 128 x 128 "
             "blocks (flops.analytic.flex_attention_flops), its backward re-forming QK^T")


def explained_hardware_gap(cfg: ModelConfig, batch_size: int, seq_len: int, mode: str, gap: int) -> int:
    """The part of `gap` (counted - analytic hardware FLOPs of one real step) that a known kernel effect
    accounts for, or 0.

    Fused attention kernels (flash, memory-efficient, cuDNN; on the CPU the flash kernel too) do not
    keep the T x T scores for backward: their backward re-forms QK^T, which torch counts as a fifth
    bmm (README, "How counting works"): 2·B·T²·n_head·head_dim per layer per backward (over the whole
    square: torch counts a kernel's shapes, not its mask).
    """
    rescore = 2 * batch_size * seq_len * seq_len * cfg.q_dim * cfg.n_layer
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
