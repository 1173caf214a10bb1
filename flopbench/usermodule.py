"""A user's own `nn.Module` and its inputs: how to call it, where it runs, what it computes in, which peak applies.

Shared by `flopbench.profile` (profiling.py) and `flopbench.measure` (measuring.py), so both read a
module the same way:

- **inputs**: a tensor (one positional argument), a tuple or list (positional arguments) or a dict
  (keyword arguments), as `torch.export` and fvcore take them;
- **device**: where the module's first parameter (else buffer) lives, unless one is given;
- **compute dtype** (the peak table column): the autocast dtype when autocast is on, else the dtype
  of the module's first floating-point parameter; float32 is `tf32` when TF32 matmuls are allowed
  (`hardware.peak_dtype`);
- **default loss** for a backward pass: `first floating tensor of the output .float().pow(2).mean()`,
  a scalar that depends on every output element, so backward reaches every parameter with a dense
  gradient, and whose own ops are elementwise (no matmul FLOPs added to the count).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch.utils._pytree import tree_leaves, tree_map_only

from .errors import UsageError
from .hardware import detect_gpu, peak_dtype, resolve_peak


def describe_error(error: BaseException) -> str:
    """One line for a record: the exception type and the first line of its message."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0][:300] if lines else ''}".rstrip(": ")


def check_int(name: str, value, minimum: int) -> int:
    """`value` if it is an integer >= `minimum` (bools excluded), else a `UsageError` naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UsageError(f"{name}={value!r}: {name} must be an integer >= {minimum}")
    return value


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


def module_device(module: torch.nn.Module, device: str | torch.device | None = None) -> torch.device:
    """The device to run on: `device` if given (checked), else where the module's first parameter (or
    buffer) is; the CPU for a module with neither."""
    if device is None:
        tensor = next(module.parameters(), None)
        if tensor is None:
            tensor = next(module.buffers(), None)
        found = tensor.device if tensor is not None else torch.device("cpu")
        if found.type == "meta":
            raise UsageError(f"{type(module).__name__} lives on the meta device: profile and measure time real "
                             f"steps; build it on cpu or cuda (flopbench counts on a meta copy by itself)")
        return found
    try:
        found = torch.device(device)
    except (RuntimeError, TypeError):
        raise UsageError(f"device={device!r}: use 'cpu', 'cuda' or 'cuda:N'") from None
    if found.type not in ("cpu", "cuda"):
        raise UsageError(f"device={device!r}: use 'cpu', 'cuda' or 'cuda:N'")
    if found.type == "cuda" and not torch.cuda.is_available():
        from .bench import resolve_device

        resolve_device("cuda")  # raises the one message for "no CUDA here"
    return found


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


def parameter_dtype(module: torch.nn.Module) -> torch.dtype:
    """The dtype of the module's first floating-point parameter (float32 if it has none)."""
    return next((p.dtype for p in module.parameters() if p.is_floating_point()), torch.float32)


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype in force now for `device`'s type, or None when autocast is off."""
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return None


def peak_column(dtype: torch.dtype) -> str | None:
    """The peak-table column a compute dtype uses (None for one the table has no column for, e.g. float64)."""
    try:
        return peak_dtype(dtype)
    except UsageError:
        return None


def resolve_module_peak(device: torch.device, column: str | None, peak_tflops: float | None,
                        dtype: torch.dtype | None = None) -> tuple[float | None, str]:
    """(peak TFLOP/s, where it came from) for a module computing in `column` on `device`: `peak_tflops`
    if given, else the table entry of the GPU NVML names; None with the reason otherwise (the CPU
    has no entry)."""
    if peak_tflops is None and column is None:
        return None, f"no peak-table column for {dtype}; pass peak_tflops="
    gpu = detect_gpu(device.index or 0) if device.type == "cuda" else None
    return resolve_peak(gpu.name if gpu else None, column or "fp32", peak_tflops)
