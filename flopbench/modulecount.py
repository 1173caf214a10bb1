"""Counted FLOPs of any `nn.Module`: torch's FlopCounterMode on a meta copy (else the real device), fvcore's forward.

**Meta copy.** `meta_copy` deep-copies the module with every parameter and buffer replaced by an empty
tensor on the meta device (the copy's memo maps each to its meta twin, so no data is copied and tied
weights stay tied). Counting runs on that copy, with the inputs as meta tensors and
`torch.device("meta")` as the default device for tensors the forward creates: no memory, no arithmetic,
and the user's module is untouched. Some modules cannot run there — a forward that reads values
(`.item()`, data-dependent branches), a tensor attribute that is not a registered buffer, a module
`copy.deepcopy` cannot copy. On any such failure the count runs on the module itself, on its device,
and the record says why (`meta_fallback`). The FLOPs are the same either way for a module whose
matmuls do not depend on values (tests check it), except for the backward of fused attention: on the
device torch counts the flash kernels' backward as 5 bmm (the kernel re-forms QK^T: hardware FLOPs),
on meta as 4 (the gradient's own work: model FLOPs), 2·B·H·T_q·T_k·d_head less per attention call.

**What is counted.** `forward` = the module call alone; `train` = forward + loss + backward (the loss
adds no matmul FLOPs unless `loss_fn` has matmuls of its own); `train_recompute` = the same with the
module call wrapped in torch's non-reentrant activation checkpoint (hardware FLOPs: the recomputed
forward is counted, minus what torch's early stop skips). FlopCounterMode counts matmuls, convolutions
and the fused attention kernels, 2 FLOPs per multiply-add (`counted.flop_counter`, which adds the CPU
flash-attention formulas). Backward through a first layer whose input needs no gradient has no
input-gradient matmul, so `train` is a little under 3 x `forward` for such models.

**fvcore** traces the forward with torch.jit (positional tensor inputs only), on a meta copy where
torch.jit can trace one, else on the module itself; its multiply-adds are doubled into FLOPs
(`counted.FvcoreCount`). Where tracing fails, the record carries the reason.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .counted import FvcoreCount, _by_module, flop_counter, fvcore_analysis
from .usermodule import Inputs, describe_error, loss_of


def meta_copy(module: torch.nn.Module) -> torch.nn.Module:
    """A deep copy of `module` whose parameters and buffers are empty meta tensors (see the module docstring).

    Raises whatever `copy.deepcopy` raises for a module it cannot copy.
    """
    memo: dict[int, object] = {}
    for p in module.parameters():
        memo[id(p)] = torch.nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
    for b in module.buffers():
        memo[id(b)] = torch.empty_like(b, device="meta")
    return copy.deepcopy(module, memo)


def _meta_tensor(t: torch.Tensor) -> torch.Tensor:
    meta = torch.empty_like(t, device="meta")
    return meta.requires_grad_(t.requires_grad) if t.is_floating_point() or t.is_complex() else meta


@dataclass
class ModuleCount:
    """FlopCounterMode's view of one step of a module (see the module docstring for each figure)."""

    forward: int
    train: int | None  # None when the loss needs no gradient (nothing requires grad)
    train_recompute: int | None  # only with checkpointing="full"
    counted_on: str  # "meta" or the device the module itself ran on
    meta_fallback: str | None = None  # why the meta copy could not be used
    train_note: str | None = None  # why train is None
    by_module: dict[str, dict[str, int]] = field(default_factory=dict)  # {module path: {forward, train}}


def _count(module: torch.nn.Module, inputs: Inputs, loss_fn: Callable | None, checkpointing: str,
           context: Callable[[], contextlib.AbstractContextManager]) -> ModuleCount:
    train = recompute = note = None
    with flop_counter() as counter:
        with context():
            output = inputs.call(module)
        forward, forward_by_module = counter.get_total_flops(), _by_module(counter)
        with context():
            loss = loss_of(loss_fn, output)
        if loss.requires_grad:
            loss.backward()
            train = counter.get_total_flops()
        else:
            note = "the loss needs no gradient (no parameter and no input requires grad): no backward to count"
    train_by_module = _by_module(counter)
    if train is not None and checkpointing == "full":
        with flop_counter() as counter:
            with context():
                loss = loss_of(loss_fn, inputs.call(module, checkpointed=True))
            loss.backward()
        recompute = counter.get_total_flops()
    by_module = {name: {"forward": forward_by_module.get(name, 0), "train": flops}
                 for name, flops in train_by_module.items() if name != "Global"}
    return ModuleCount(forward, train, recompute, counted_on="", train_note=note, by_module=by_module)


def count_module(module: torch.nn.Module, inputs: Inputs, loss_fn: Callable | None = None,
                 checkpointing: str = "none",
                 context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
                 meta: bool = True) -> ModuleCount:
    """Count one step of `module(inputs)` on a meta copy, or on the module itself where that fails.

    `context()` wraps the calls on the real device (the autocast / TF32 setting of the timed steps);
    on meta it is not needed (FLOPs do not depend on the dtype). `meta=False` skips the meta attempt.
    Counting on the real device leaves the module's gradients cleared (set to None).
    """
    reason = "meta copy not tried (meta=False)"
    if meta:
        try:
            copied = meta_copy(module)
            with torch.device("meta"):
                result = _count(copied, inputs.map(_meta_tensor), loss_fn, checkpointing, contextlib.nullcontext)
            result.counted_on = "meta"
            return result
        except Exception as e:  # anything the meta copy cannot do: count on the real device instead
            reason = describe_error(e)
    try:
        result = _count(module, inputs, loss_fn, checkpointing, context)
    finally:
        module.zero_grad(set_to_none=True)
    device = next((str(t.device) for t in (*module.parameters(), *module.buffers())), "cpu")
    result.counted_on, result.meta_fallback = device, reason
    return result


def _fvcore_trace(module: torch.nn.Module, inputs: Inputs, on_meta: bool) -> FvcoreCount:
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.no_grad())
        if on_meta:
            module, inputs = meta_copy(module), inputs.map(_meta_tensor)
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
