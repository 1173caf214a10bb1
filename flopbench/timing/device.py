"""Where and in what precision a step runs, and what to do when it runs out of memory.

- `resolve_device` / `resolve_dtype`: the `--device` / `--dtype` choices (`model.config.DEVICES`,
  `DTYPES`) made concrete; `module_device`, `parameter_dtype`, `autocast_dtype` read a user's module;
- `matmul_precision` (TF32 on or off for float32 matmuls: the whole step, backward and optimizer included),
  `autocast` (bf16 / fp16 autocast around the forward and the loss; weights stay fp32, as in nanoGPT) and
  `precision` (both, for code that is all forward);
- `peak_column`: the peak-table column a compute `torch.dtype` uses;
- `oom_safe`: run a step, and turn an out-of-memory error into a value, with the memory freed.
"""

from __future__ import annotations

import contextlib
import gc
import traceback
from collections.abc import Callable

import torch

from ..errors import UsageError
from ..model.config import DEVICES, DTYPES, base_dtype

#: The torch dtype each compute dtype runs in (tf32 is float32 with TF32 matmuls allowed; fp8 is bf16 but for the
#: matmuls of the layers converted to float8, `model.fp8`).
TORCH_DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16,
                "fp8": torch.bfloat16}


class ModelDoesNotFit(UsageError):
    """Out of memory building the model: `run` stops (exit 2); a sweep records OOM rows and goes on."""


def resolve_device(name: str) -> torch.device:
    if name not in DEVICES:
        raise UsageError(f"--device {name!r}: choose one of {', '.join(DEVICES)}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
        raise UsageError(f"--device cuda: CUDA is not available (torch {torch.__version__}, {build}, no usable GPU); "
                         f"use --device cpu or auto")
    return torch.device(name)


#: The first compute capability with bf16 tensor cores (Ampere, sm_80): older GPUs (V100 7.0, T4 7.5)
#: only emulate bf16, slowly, and the peak table has no bf16 rate for them.
BF16_MIN_CAPABILITY = (8, 0)


def resolve_dtype(name: str, device: torch.device) -> str:
    """The compute dtype `--dtype name` means on `device`: auto = bf16 on a GPU with bf16 tensor cores
    (compute capability >= 8.0), fp16 on an older GPU, fp32 on the CPU."""
    if name == "auto":
        if device.type != "cuda":
            return "fp32"
        return "bf16" if torch.cuda.get_device_capability(device) >= BF16_MIN_CAPABILITY else "fp16"
    if name not in DTYPES:
        raise UsageError(f"--dtype {name!r}: choose one of auto, {', '.join(DTYPES)}")
    if name == "tf32" and device.type != "cuda":
        raise UsageError("--dtype tf32 needs a CUDA device (TF32 is a tensor-core mode); use fp32 on the CPU")
    return name


@contextlib.contextmanager
def matmul_precision(dtype: str):
    """float32 matmuls in TF32 for "tf32", in full fp32 otherwise, until the block ends. It must cover the
    whole step: backward (and a checkpoint's recompute inside it) and the optimizer run float32 matmuls
    too, and PyTorch reads the setting when each runs, not when the forward did."""
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high" if dtype == "tf32" else "highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


def autocast(dtype: str, device: torch.device):
    """Autocast to bf16 / fp16 (weights stay fp32, as in nanoGPT), or nothing for fp32 / tf32. It wraps the
    forward and the loss only: backward ops run in the dtype autocast chose for their forward ("Automatic
    Mixed Precision", PyTorch docs: backward passes under autocast are not recommended)."""
    if base_dtype(dtype) in ("bf16", "fp16"):  # fp8: bf16 autocast around the float8 layers
        return torch.autocast(device.type, dtype=TORCH_DTYPES[dtype])
    return contextlib.nullcontext()


@contextlib.contextmanager
def precision(dtype: str, device: torch.device):
    """`matmul_precision` and `autocast` together, for work that is all forward (a GEMM, a no-grad pass)."""
    with matmul_precision(dtype), autocast(dtype, device):
        yield


def peak_column(dtype: torch.dtype) -> str | None:
    """The peak-table column of a compute ``torch.dtype``: bf16, fp16, and for float32 ``"tf32"`` when
    PyTorch may use TF32 for matmuls (``torch.set_float32_matmul_precision("high")`` or lower), else
    ``"fp32"``; None for a dtype the table has no column for (e.g. float64)."""
    if dtype == torch.bfloat16:
        return "bf16"
    if dtype == torch.float16:
        return "fp16"
    if dtype == torch.float32:
        return "fp32" if torch.get_float32_matmul_precision() == "highest" else "tf32"
    return None


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
        resolve_device("cuda")  # raises the one message for "no CUDA here"
    return found


def parameter_dtype(module: torch.nn.Module) -> torch.dtype:
    """The dtype of the module's first floating-point parameter (float32 if it has none)."""
    return next((p.dtype for p in module.parameters() if p.is_floating_point()), torch.float32)


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype in force now for `device`'s type, or None when autocast is off."""
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return None


#: How an out-of-memory error reads: torch's CUDA caching allocator ("CUDA out of memory"), and the CPU
#: allocator ("DefaultCPUAllocator: can't allocate memory: you tried to allocate 282 GB").
OOM_MESSAGES = ("out of memory", "can't allocate memory")


def is_oom(error: BaseException) -> bool:
    """True if `error` is an out-of-memory error (torch's own type, or a RuntimeError that says so)."""
    return isinstance(error, torch.OutOfMemoryError) or any(m in str(error).lower() for m in OOM_MESSAGES)


def free_memory(device: torch.device) -> None:
    """Drop what an interrupted or finished step left behind, so the next one starts from a clean cache."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def drop_traceback(error: BaseException) -> BaseException:
    """`error` without its traceback (and its chained errors'): the frames of a failed step hold its
    tensors (activations, gradients) for as long as the traceback lives, so memory can only be freed after."""
    seen, current = set(), error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if current.__traceback__ is not None:
            traceback.clear_frames(current.__traceback__)
        current.__traceback__ = None
        current = current.__cause__ or current.__context__
    return error


def oom_safe(fn: Callable[[], object], module: torch.nn.Module, device: torch.device):
    """`(fn(), None)`, or `(None, error)` when `fn` runs out of memory: then the error's traceback is dropped
    (it holds the step's tensors), the module's gradients are cleared and the cache freed, so the next step
    can still run. Any other error propagates."""
    error = None
    try:
        return fn(), None
    except (torch.OutOfMemoryError, RuntimeError) as e:
        if not is_oom(e):
            raise
        error = e
    drop_traceback(error)  # outside the except block, so no frame of the failed step is still referenced
    module.zero_grad(set_to_none=True)
    free_memory(device)
    return None, error
