"""Counted FLOPs: what the framework dispatches, by torch's `FlopCounterMode` and fvcore's `FlopCountAnalysis`.

Both run the real model on the **meta** device, so no memory is allocated and no arithmetic is done.
Every block of the model is identical, so a model of L layers is counted as
``count(1 layer) + (L - 1) * (count(2 layers) - count(1 layer))``: exact, and it keeps a 70B-class
config within a second (tests check it against counting the whole stack).

Two traps are closed here rather than left to the user:
- On the CPU, SDPA dispatches to `_scaled_dot_product_flash_attention_for_cpu`, for which torch has no
  FLOP formula, so attention would count 0. `flop_counter()` registers the flash-attention formulas
  for it (forward 2 bmm, backward 5 bmm, as torch counts the CUDA flash kernels).
- Grouped-query attention hands SDPA fewer K/V heads than query heads; torch's SDPA formula has
  asserted equal heads in some versions. `flop_counter()` counts every fused kernel with K/V broadcast
  to the query heads, so QK^T and AV cost 2·B·T²·d each whatever n_kv_head is.
- fvcore reports multiply-adds and has no handle for `aten::scaled_dot_product_attention`;
  `count_fvcore` adds one and doubles every matmul count into FLOPs.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from .config import ModelConfig
from .model import build_model, lm_loss

aten = torch.ops.aten


def _kv_as_query_heads(query_shape, key_shape, value_shape) -> tuple[tuple, tuple, tuple]:
    """q, k, v shapes (B, heads, T, head_dim) with K/V given the query's head count.

    With grouped-query attention (Ainslie et al. 2023) each K/V head serves a group of query heads, so
    QK^T and AV still run once per query head: 2·B·T²·d each, whatever n_kv_head is. torch 2.13's
    `sdpa_flop_count` broadcasts K/V heads itself; older versions assert equal head counts. Broadcasting
    here first gives the same count on every torch version (torch's formula is unchanged for MHA).
    """
    heads = query_shape[1]
    return (tuple(query_shape), (key_shape[0], heads, *key_shape[2:]), (value_shape[0], heads, *value_shape[2:]))


def _sdpa_forward(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(*_kv_as_query_heads(query_shape, key_shape, value_shape))


def _sdpa_backward(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out_shape, *_kv_as_query_heads(query_shape, key_shape, value_shape))


def _sdpa_kernels() -> dict:
    """The fused SDPA kernels (forward, backward) that exist in this torch, by name."""
    names = ("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention",
             "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention")
    mapping = {}
    for name in names:
        for suffix, formula in (("", _sdpa_forward), ("_backward", _sdpa_backward)):
            if hasattr(aten, name + suffix):
                mapping[getattr(aten, name + suffix)] = formula
    return mapping


#: FLOP formulas flopbench puts in front of torch's: the CPU flash-attention kernels (torch has none and
#: counts them as 0; forward 2 bmm, backward 5 bmm, as torch counts the CUDA flash kernels), and every
#: fused SDPA kernel made safe for fewer K/V heads than query heads (`_kv_as_query_heads`).
EXTRA_FLOP_FORMULAS: dict = _sdpa_kernels()


def flop_counter(display: bool = False, depth: int | None = None) -> FlopCounterMode:
    """A `FlopCounterMode` that also counts the CPU flash-attention kernels."""
    return FlopCounterMode(display=display, depth=depth, custom_mapping=EXTRA_FLOP_FORMULAS)


# --------------------------------------------------------------------------------------------------
# torch FlopCounterMode
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepCount:
    """FlopCounterMode's view of one training step: the forward alone, then forward + backward."""

    forward: int
    train: int  # forward + backward (+ the recomputed forward when checkpointing)
    forward_by_module: dict[str, int]
    train_by_module: dict[str, int]


def _by_module(counter: FlopCounterMode) -> dict[str, int]:
    return {module: sum(by_op.values()) for module, by_op in counter.get_flop_counts().items()}


@functools.lru_cache(maxsize=64)
def _count_step(cfg: ModelConfig, batch_size: int, seq_len: int, checkpointing: str, early_stop: bool) -> StepCount:
    """Count one forward + backward of `cfg` on meta, reading the counter between the two."""
    model = build_model(cfg, "meta", checkpointing=checkpointing, early_stop=early_stop)
    idx = torch.zeros(batch_size, seq_len, dtype=torch.long, device="meta")
    with flop_counter() as counter:
        loss = lm_loss(model(idx), idx)
        forward, forward_by_module = counter.get_total_flops(), _by_module(counter)
        loss.backward()
    return StepCount(forward, counter.get_total_flops(), forward_by_module, _by_module(counter))


def _by_layer_extrapolation(cfg: ModelConfig, measure: Callable[[ModelConfig], dict[str, int]]) -> dict[str, int]:
    """measure(cfg) for L layers from measuring 1 and 2 layers: every block is identical, so each
    count is affine in the number of layers. Models of 1 or 2 layers are measured as they are."""
    if cfg.n_layer <= 2:
        return measure(cfg)
    one = measure(cfg.replace(n_layer=1))
    two = measure(cfg.replace(n_layer=2))
    return {k: one.get(k, 0) + (cfg.n_layer - 1) * (two.get(k, 0) - one.get(k, 0)) for k in one | two}



def count_torch(cfg: ModelConfig, batch_size: int, seq_len: int, early_stop: bool = True) -> dict[str, int]:
    """FlopCounterMode totals per step for forward, train (fwd + bwd) and train with full checkpointing."""

    def measure(c: ModelConfig) -> dict[str, int]:
        plain = _count_step(c, batch_size, seq_len, "none", early_stop)
        checkpointed = _count_step(c, batch_size, seq_len, "full", early_stop)
        return {"forward": plain.forward, "train": plain.train, "train_recompute": checkpointed.train}

    return _by_layer_extrapolation(cfg, measure)


def module_breakdown(cfg: ModelConfig, batch_size: int, seq_len: int) -> dict[str, dict[str, int]]:
    """Counted FLOPs per module of one representative block (`h.*`) and the modules outside the blocks.

    Keys are module paths with the block index replaced by `*`; values hold "forward" and "train"
    (forward + backward, no checkpointing). Block rows are for one block; multiply by n_layer.
    """
    step = _count_step(cfg.replace(n_layer=1), batch_size, seq_len, "none", True)
    return {
        module.removeprefix("GPT.").replace("h.0", "h.*"): {"forward": step.forward_by_module.get(module, 0),
                                                             "train": flops}
        for module, flops in step.train_by_module.items()
        if module not in ("Global", "GPT")
    }


# --------------------------------------------------------------------------------------------------
# fvcore FlopCountAnalysis
# --------------------------------------------------------------------------------------------------

#: fvcore operators that are matrix products (their counts are multiply-adds; FLOPs = 2 x). A convolution is
#: one too (a matmul over im2col patches: N·C_out·H_out·W_out·C_in/groups·k_h·k_w multiply-adds, as
#: FlopCounterMode counts it); GPT-2 has none, a user's module may.
FVCORE_MATMUL_OPS = ("linear", "addmm", "mm", "matmul", "bmm", "einsum", "scaled_dot_product_attention", "conv")


def _fvcore_sdpa_handle(inputs, outputs) -> int:
    """Multiply-adds of `aten::scaled_dot_product_attention`: QK^T and AV over all positions (no causal
    halving, as torch's `sdpa_flop_count`), once per *query* head: the batch and head dimensions are the
    query's, so K/V with fewer heads (grouped-query attention, `enable_gqa=True`) count the same."""
    from fvcore.nn.jit_handles import get_shape

    q, k, v = (get_shape(x) for x in inputs[:3])
    *batch, t_q, d_qk = q
    s_k, d_v = k[-2], v[-1]
    n = 1
    for dim in batch:
        n *= dim
    return n * t_q * s_k * (d_qk + d_v)


@dataclass
class FvcoreCount:
    forward: int  # matmul FLOPs = 2 x fvcore's multiply-adds on the operators in FVCORE_MATMUL_OPS
    non_matmul: int  # 2 x fvcore's counts on other operators (LayerNorm; fvcore has no RMSNorm handle)
    by_operator: dict[str, int] = field(default_factory=dict)  # fvcore's raw counts (multiply-adds)
    unsupported: dict[str, int] = field(default_factory=dict)  # ops fvcore skipped -> calls per forward

    @classmethod
    def from_counts(cls, by_operator: dict[str, int], unsupported: dict[str, int]) -> "FvcoreCount":
        """fvcore's raw multiply-adds per operator, split into matmul and other FLOPs and doubled
        (integers: fvcore's einsum handle returns a float)."""
        matmul = sum(v for op, v in by_operator.items() if op in FVCORE_MATMUL_OPS)
        return cls(
            forward=round(2 * matmul),
            non_matmul=round(2 * (sum(by_operator.values()) - matmul)),
            by_operator=dict(sorted(by_operator.items())),
            unsupported=dict(sorted(unsupported.items())),
        )


def fvcore_analysis(model: torch.nn.Module, inputs: tuple):
    """fvcore's `FlopCountAnalysis` of `model(*inputs)`, with the SDPA handle, traced now.

    fvcore traces with torch.jit (script at import, trace to count): the deprecation and tracer warnings
    that brings are silenced here, and skipped operators are reported through `unsupported_ops()`
    rather than logged. Raises whatever the trace raises.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        from fvcore.nn import FlopCountAnalysis

        analysis = FlopCountAnalysis(model, inputs).set_op_handle(
            "aten::scaled_dot_product_attention", _fvcore_sdpa_handle
        )
        analysis.unsupported_ops_warnings(False)  # reported in FvcoreCount.unsupported instead
        analysis.uncalled_modules_warnings(False)
        analysis.total()  # trace now, inside the warning filter; the results are cached
    return analysis


def _fvcore_analysis(cfg: ModelConfig, batch_size: int, seq_len: int):
    idx = torch.zeros(batch_size, seq_len, dtype=torch.long, device="meta")
    return fvcore_analysis(build_model(cfg, "meta"), (idx,))


def count_fvcore(cfg: ModelConfig, batch_size: int, seq_len: int) -> FvcoreCount:
    """fvcore's forward count (it traces with torch.jit; it has no backward), made comparable: x2."""
    analyses: dict[int, object] = {}

    def analysis(c: ModelConfig):
        if c.n_layer not in analyses:
            analyses[c.n_layer] = _fvcore_analysis(c, batch_size, seq_len)
        return analyses[c.n_layer]

    by_operator = _by_layer_extrapolation(cfg, lambda c: dict(analysis(c).by_operator()))
    unsupported = _by_layer_extrapolation(cfg, lambda c: dict(analysis(c).unsupported_ops()))
    return FvcoreCount.from_counts(by_operator, unsupported)
