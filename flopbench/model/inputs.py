"""How flopbench calls a user's `nn.Module`: its example inputs and the default loss of a backward pass.

Shared by `flopbench.profile` and `flopbench.measure` (and the FLOP counter), so all read a module the
same way:

- **inputs**: a tensor (one positional argument), a tuple or list (positional arguments) or a dict
  (keyword arguments), as `torch.export` and fvcore take them;
- **default loss** for a backward pass: `first floating tensor of the output .float().pow(2).mean()`,
  a scalar that depends on every output element, so backward reaches every parameter with a dense
  gradient, and whose own ops are elementwise (no matmul FLOPs added to the count).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch.utils._pytree import tree_leaves, tree_map_only

from ..errors import UsageError


def check_float8(function: str, module: torch.nn.Module, fp8_flops: int) -> None:
    """`function(dtype="fp8")` rates a module converted to float8 training: refuse one whose counted step ran no op
    with a float8 operand (`flops.counter.Float8Flops`). The count, not a search for torchao's ``Float8Linear``,
    decides: it is what the fp8 FLOPs and rates are made of, whatever did the converting."""
    if not fp8_flops:
        raise UsageError(f"{function}(dtype='fp8'): {type(module).__name__} ran no op with a float8 operand; convert "
                         f"it with torchao.float8.convert_to_float8_training first")


def check_module(module, name: str = "module") -> torch.nn.Module:
    """`module`, if it is an `nn.Module`; else a UsageError naming the argument `name`."""
    if not isinstance(module, torch.nn.Module):
        raise UsageError(f"{name}={type(module).__name__}: pass a torch.nn.Module")
    return module


@dataclass(frozen=True)
class Inputs:
    """The example inputs of one call: `module(*args, **kwargs)`."""

    args: tuple = ()
    kwargs: dict = field(default_factory=dict)

    @classmethod
    def of(cls, example_inputs) -> "Inputs":
        if isinstance(example_inputs, torch.Tensor):
            return cls((example_inputs,))
        if isinstance(example_inputs, (tuple, list)):
            return cls(tuple(example_inputs))
        if isinstance(example_inputs, dict):
            return cls((), dict(example_inputs))
        raise UsageError(f"example_inputs={type(example_inputs).__name__}: pass a tensor, a tuple of positional "
                         f"arguments or a dict of keyword arguments")

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> "Inputs":
        """These inputs with `fn` applied to every tensor in them (nested containers included)."""
        args, kwargs = tree_map_only(torch.Tensor, fn, (self.args, self.kwargs))
        return Inputs(args, kwargs)

    def call(self, module: Callable, checkpointed: bool = False):
        """`module(*args, **kwargs)`; with `checkpointed`, through torch's non-reentrant activation
        checkpoint (its default early stop), so backward recomputes the forward it needs."""
        if checkpointed:
            from torch.utils.checkpoint import checkpoint

            return checkpoint(module, *self.args, use_reentrant=False, **self.kwargs)
        return module(*self.args, **self.kwargs)


def first_float_tensor(output) -> torch.Tensor | None:
    """The first floating-point tensor in a module's output (a tensor, tuple, list or dict of them)."""
    return next((t for t in tree_leaves(output) if isinstance(t, torch.Tensor) and t.is_floating_point()), None)


def default_loss(output) -> torch.Tensor:
    """`first floating tensor of output .float().pow(2).mean()` (see the module docstring)."""
    tensor = first_float_tensor(output)
    if tensor is None:
        raise UsageError(f"the module's output ({type(output).__name__}) holds no floating-point tensor to build "
                         f"the default loss from; pass loss_fn=")
    return tensor.float().pow(2).mean()


def loss_of(loss_fn: Callable | None, output) -> torch.Tensor:
    """`loss_fn(output)` (default: `default_loss`), checked to be a scalar tensor."""
    loss = (loss_fn or default_loss)(output)
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        what = type(loss).__name__ if not isinstance(loss, torch.Tensor) else f"a tensor of shape {tuple(loss.shape)}"
        raise UsageError(f"loss_fn returned {what}: it must return a scalar tensor")
    return loss
