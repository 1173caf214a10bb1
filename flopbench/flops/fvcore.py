"""fvcore's `FlopCountAnalysis`, made comparable with FlopCounterMode.

fvcore traces the forward with torch.jit (positional tensor inputs only; it has no backward) and
reports **multiply-adds** (its docstring: "one fused multiply-add as one flop"); flopbench doubles every
matmul count into FLOPs. It has no handle for `aten::scaled_dot_product_attention` nor for
`aten::_grouped_mm` (the mixture-of-experts experts of transformers 5); `fvcore_analysis` adds both.
flopbench's own model is traced on the meta device (`count_fvcore`, layer-extrapolated like the torch
count); a user's module on a meta copy where torch.jit can trace one, else on the module
itself (`fvcore_module`). Where tracing fails, the result carries the reason.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass, field

import torch

from ..errors import describe_error
from ..model.config import ModelConfig
from ..model.gpt import build_model
from ..model.inputs import Inputs
from .counter import extrapolate_layers, grouped_mm_flops, meta_copy, meta_tensor

#: fvcore operators that are matrix products (their counts are multiply-adds; FLOPs = 2 x). A convolution is
#: one too (a matmul over im2col patches: N·C_out·H_out·W_out·C_in/groups·k_h·k_w multiply-adds, as
#: FlopCounterMode counts it); GPT-2 has none, a user's module may.
FVCORE_MATMUL_OPS = ("linear", "addmm", "mm", "matmul", "bmm", "einsum", "scaled_dot_product_attention", "conv",
                     "_grouped_mm")


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


def _fvcore_grouped_mm_handle(inputs, outputs) -> int:
    """Multiply-adds of `aten::_grouped_mm` (mixture-of-experts experts, transformers 5's default
    `experts_implementation="grouped_mm"`; fvcore has no handle and skips it): half of
    `counter.grouped_mm_flops`, the one formula, from the operand and output shapes."""
    from fvcore.nn.jit_handles import get_shape

    a, b, out = get_shape(inputs[0]), get_shape(inputs[1]), get_shape(outputs[0])
    return grouped_mm_flops(a, b, out_shape=out) // 2


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
    """fvcore's `FlopCountAnalysis` of `model(*inputs)`, with the SDPA and grouped-matmul handles, traced now.

    fvcore traces with torch.jit (script at import, trace to count): the deprecation and tracer warnings
    that brings are silenced here, and skipped operators are reported through `unsupported_ops()`
    rather than logged. Raises whatever the trace raises.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        from fvcore.nn import FlopCountAnalysis

        analysis = FlopCountAnalysis(model, inputs).set_op_handle(
            "aten::scaled_dot_product_attention", _fvcore_sdpa_handle,
            "aten::_grouped_mm", _fvcore_grouped_mm_handle,
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
    analyses: dict[ModelConfig, object] = {}

    def analysis(c: ModelConfig):
        if c not in analyses:
            analyses[c] = _fvcore_analysis(c, batch_size, seq_len)
        return analyses[c]

    by_operator = extrapolate_layers(cfg, lambda c: dict(analysis(c).by_operator()))
    unsupported = extrapolate_layers(cfg, lambda c: dict(analysis(c).unsupported_ops()))
    return FvcoreCount.from_counts(by_operator, unsupported)


def _fvcore_trace(module: torch.nn.Module, inputs: Inputs, on_meta: bool) -> FvcoreCount:
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.no_grad())
        if on_meta:
            module, inputs = meta_copy(module), inputs.map(meta_tensor)
            stack.enter_context(torch.device("meta"))
        analysis = fvcore_analysis(module, inputs.args)
    return FvcoreCount.from_counts(dict(analysis.by_operator()), dict(analysis.unsupported_ops()))


def fvcore_module(module: torch.nn.Module, inputs: Inputs,
                  on_meta: bool = True) -> tuple[FvcoreCount | None, str | None]:
    """fvcore's forward count of `module(*inputs.args)` (FLOPs = 2 x its multiply-adds), or None and why not.

    `on_meta`: trace a meta copy with meta inputs first (no arithmetic); where that fails (torch.jit
    cannot trace some meta kernels, e.g. convolutions), and without `on_meta`, trace the module itself
    under no_grad.
    """
    name = type(module).__name__
    if inputs.kwargs:
        return None, f"fvcore not run: it traces positional inputs only, and {name} was given keyword inputs"
    if not all(isinstance(a, torch.Tensor) for a in inputs.args):
        return None, f"fvcore not run: it traces tensor inputs only, and {name} was given other arguments"
    if on_meta:
        try:
            return _fvcore_trace(module, inputs, on_meta=True), None
        except Exception:  # retried on the real device below, which gives the error worth reporting
            pass
    try:
        return _fvcore_trace(module, inputs, on_meta=False), None
    except Exception as e:  # torch.jit cannot trace every module (custom output types, ...)
        return None, f"fvcore could not trace {name} with torch.jit: {describe_error(e)}"
