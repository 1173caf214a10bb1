"""`flopbench.count`: analytic, torch-counted and fvcore-counted FLOPs of one step, side by side, as one document.

The document is what `flopbench count --json` prints (its keys are listed in the README, "`flopbench
count`"). Every FLOPs figure is an integer, per step of batch_size x seq_len tokens. With
`torch_counter=False` and `fvcore=False` (the CLI's `count --no-torch`) only the analytic part is
computed, and torch is never imported. A count that builds tensors (even on the meta device) first checks
that none would exceed torch's size limit (`model.config.validate_tensor_sizes`); the analytic part has
no limit beyond `model.config.MAX_SIZE` on each size.
"""

from __future__ import annotations

import time

from ..errors import check_arguments
from ..flops import analytic, estimates
from ..flops.reconcile import reconcile
from ..model.config import ModelConfig, validate_shapes, validate_tensor_sizes
from ..model.presets import as_config

CONVENTIONS = (
    "FLOPs are operation counts per step of batch_size x seq_len tokens; 1 multiply-add = 2 FLOPs; "
    "matmul FLOPs only (norms, softmax, GELU / SwiGLU, RoPE, adds and lookups are listed apart); attention "
    "counted over the full T x T square for every query head (GQA shrinks only the K/V projections); "
    "a sliding-window layer over T x min(T, W); a mixture of experts over the top_k experts each token uses "
    "(2N / 6N / 8N take N = the active matmul weights); backward = 2 x forward; train_recompute = full "
    "activation checkpointing, with torch's early stop; train_recompute_selective = the attention core re-run"
)


def analytic_section(cfg: ModelConfig, batch_size: int, seq_len: int) -> dict:
    """The closed-form part of the document."""
    B, T = batch_size, seq_len
    est = estimates.estimates(cfg, B, T)
    return {
        "forward": analytic.forward_flops(cfg, B, T),
        "backward": analytic.backward_flops(cfg, B, T),
        "train": analytic.train_flops(cfg, B, T),
        "train_recompute": analytic.train_recompute_flops(cfg, B, T, early_stop=True),
        "train_recompute_no_early_stop": analytic.train_recompute_flops(cfg, B, T, early_stop=False),
        "train_recompute_selective": analytic.train_recompute_flops(cfg, B, T, checkpointing="selective"),
        "masked_square_forward": analytic.masked_square_flops(cfg, B, T),
        "non_matmul_forward": analytic.non_matmul_flops(cfg, B, T),
        "estimates": {name: e.flops for name, e in est.items()},
        "estimate_details": {name: {"phase": e.phase, "source": e.source} for name, e in est.items()},
        "components": [
            {
                "name": c.name,
                "formula": c.formula,
                "matmul": c.matmul,
                "per_occurrence": c.flops,
                "count": c.count,
                "forward": c.total,
                "recomputed_with_early_stop": c.recomputed_early_stop,
            }
            for c in analytic.components(cfg, B, T)
        ],
    }


def params_section(cfg: ModelConfig) -> dict:
    n = analytic.param_counts(cfg)
    return {"total": n.total, "non_embedding": n.non_embedding, "matmul": n.matmul, "active": n.active,
            "active_matmul": n.active_matmul, "breakdown": analytic.param_breakdown(cfg)}


def count(config: ModelConfig | str, batch_size: int = 1, seq_len: int | None = None, *,
          torch_counter: bool = True, fvcore: bool = True, per_module: bool = True) -> dict:
    """Analytic and counted FLOPs of one step of `config` (a `ModelConfig` or a preset name): the
    `flopbench count --json` document. `seq_len` defaults to the model's max positions; `torch_counter`,
    `fvcore` and `per_module` turn the counted parts off."""
    check_arguments(count, {"batch_size": batch_size, "seq_len": seq_len, "torch_counter": torch_counter,
                            "fvcore": fvcore, "per_module": per_module})
    cfg = as_config(config)
    seq_len = cfg.max_seq_len if seq_len is None else seq_len
    validate_shapes(cfg, batch_size, seq_len)
    if torch_counter or fvcore:
        validate_tensor_sizes(cfg, batch_size, seq_len, analytic.param_counts(cfg).total)
    started = time.perf_counter()
    doc: dict = {
        "config": cfg.as_dict(),
        "batch_size": batch_size,
        "seq_len": seq_len,
        "tokens": batch_size * seq_len,
        "conventions": CONVENTIONS,
        "params": params_section(cfg),
        "analytic": analytic_section(cfg, batch_size, seq_len),
        "counted": {},
    }
    torch_counts = fv = None
    if torch_counter:
        from ..flops import counter

        torch_counts = counter.count_model(cfg, batch_size, seq_len)
        doc["counted"]["torch"] = {**torch_counts, "device": "meta", "tool": "torch.utils.flop_counter.FlopCounterMode"}
        if per_module:
            doc["counted"]["torch"]["per_module"] = counter.module_breakdown(cfg, batch_size, seq_len)
    if fvcore:
        from ..flops.fvcore import count_fvcore

        fv = count_fvcore(cfg, batch_size, seq_len)
        doc["counted"]["fvcore"] = {
            "forward": fv.forward,
            "non_matmul": fv.non_matmul,
            "by_operator_multiply_adds": fv.by_operator,
            "unsupported": fv.unsupported,
            "unit": "FLOPs = 2 x fvcore multiply-adds",
            "tool": "fvcore.nn.FlopCountAnalysis",
        }
    checks = reconcile(cfg, batch_size, seq_len, torch_counts,
                       fv.forward if fv else None, fv.non_matmul if fv else None, fv.unsupported if fv else None)
    doc["reconciliation"] = [c.as_dict() for c in checks]
    doc["count_seconds"] = round(time.perf_counter() - started, 3)
    return doc
