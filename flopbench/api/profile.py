"""`flopbench.profile`: counted FLOPs, timed steps and MFU of any `nn.Module` (not only flopbench's GPT).

One call does what `run` does for the built-in model, for a user's module and example inputs:

1. **count** one step with FlopCounterMode on a meta copy, or on the module itself where the meta copy
   cannot run (`flops.counter.count_module`; the record says which and why), and the forward with fvcore
   where torch.jit can trace it (`flops.fvcore.fvcore_module`);
2. **time** two steps with `timing.clock.time_step` (CUDA events on a GPU, perf_counter on the CPU), on the
   module as it is (its train / eval mode untouched):
   - `forward`: the module call under `torch.no_grad()`;
   - `fwd_bwd` (as in `run`): forward, `loss_fn(output)` (default: the first floating tensor of the output
     `.float().pow(2).mean()`, see `model.inputs.default_loss`), backward; gradients set to None first.
     With `checkpointing="full"` the module call goes through torch's non-reentrant activation checkpoint;
3. **rate** each step: achieved TFLOP/s = model FLOPs / median time; MFU = model FLOPs / (median time x
   peak); HFU = hardware FLOPs (the recomputed forward included) / (median time x peak)
   (`timing.rates`). Model FLOPs of `fwd_bwd` are the counted forward + backward without checkpointing.
   The peak is `peak_tflops` if given, else the dense table entry for the GPU NVML names and the
   compute dtype (`hardware.detect.device_peak`); the CPU has none, so MFU is None there unless
   `peak_tflops` is given.

`dtype` ("fp32", "tf32", "bf16", "fp16", "fp8", "auto") applies the same autocast / TF32 setting as `run`: TF32 on
or off for the whole step, backward included (`timing.device.matmul_precision`), autocast around the module
call and the loss (`timing.device.autocast`); None (default) runs the module as it is, and the compute dtype
is read from the autocast state or the parameters. A CUDA out-of-memory error in one step gives that row `status="oom"`.
Side effects on the module: it is moved to `device` if one is given, its gradients are cleared, and
stateful layers (BatchNorm running statistics) update as in any forward in training mode.

`dtype="fp8"` rates a module the user has converted to float8 training (torchao's
``convert_to_float8_training``): it runs under bf16 autocast, as `run --dtype fp8` does, and a module none of
whose ops took a float8 operand is refused. `mfu` is against the bf16 peak; each row also has `fp8_flops` (of
its hardware FLOPs, those of ops with a float8 operand, `flops.counter.Float8Flops`), `fp8_model_flops` (the
same without recomputation) and the MFU and HFU against the fp8 peak (`peak_fp8_tflops`, else the table's)
and against the FLOP-weighted peak (`timing.rates.fp8_rates`); without fp8 these are None.

Where the count ran is said in `notes` (and `counted_on`): on a meta copy, or on the module's own device
when the copy could not run (a model that reads a value, e.g. `.item()`); that fall-back is also a
`UserWarning` (stderr), as it does real arithmetic and needs the memory. A module whose `forward` takes
`use_cache` (Hugging Face transformers models) is called with `use_cache=False` in every count and timed
step, unless the inputs set it: a step of training builds no KV cache, and the cache object it returns
(`DynamicCache`) is an output torch.jit, so fvcore, cannot trace.
"""

from __future__ import annotations

import contextlib
import inspect
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch

from ..errors import UsageError, check_arguments, describe_error
from ..flops.counter import count_module, uncounted_note
from ..flops.fvcore import fvcore_module
from ..hardware.detect import device_fp8_peak, device_peak, environment
from ..model.config import MODULE_CHECKPOINTING, base_dtype, check_steps
from ..model.inputs import Inputs, check_float8, check_module, loss_of
from ..output.records import to_dataframe
from ..timing.clock import time_step
from ..timing.device import (
    autocast,
    autocast_dtype,
    matmul_precision,
    module_device,
    oom_safe,
    parameter_dtype,
    peak_column,
    precision,
    resolve_dtype,
)
from ..timing.rates import fp8_rates, rates


@dataclass
class ProfileRow:
    """One timed step of the module: how long it took and what that means in FLOP/s."""

    mode: str  # forward | fwd_bwd (the names of `run`'s modes)
    checkpointing: str
    status: str = "ok"  # ok | oom | skipped
    error: str | None = None
    time_ms: dict = field(default_factory=dict)  # TimingStats.as_dict(): median, min, max, IQR, n, times
    model_flops: int | None = None  # counted, never including recomputation
    hardware_flops: int | None = None  # counted, recomputation included (checkpointing="full")
    achieved_tflops: float | None = None  # model FLOPs / median time
    mfu: float | None = None
    hfu: float | None = None
    fp8_flops: int | None = None  # dtype fp8: of hardware_flops, those of ops with a float8 operand (counted)
    fp8_model_flops: int | None = None  # dtype fp8: of model_flops, the same
    mfu_fp8_peak: float | None = None  # dtype fp8: MFU against the fp8 dense peak (`timing.rates.fp8_rates`)
    mfu_weighted: float | None = None  # dtype fp8: MFU against the FLOP-weighted peak
    hfu_fp8_peak: float | None = None
    hfu_weighted: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Profile:
    """What `profile` found: the counts, one row per timed step, the peak, and notes on anything partial."""

    module: str  # class name
    parameters: int  # distinct parameters (tied ones once)
    device: str
    dtype: str | None  # the autocast / TF32 setting applied (None: the module ran as it is)
    compute_dtype: str | None  # the peak-table column used
    checkpointing: str
    counted_on: str  # "meta" or the device the count ran on
    meta_fallback: str | None  # why the meta copy could not be used (None: it was)
    forward_flops: int
    train_flops: int | None  # forward + backward, no recomputation: the MFU numerator of `fwd_bwd`
    train_hardware_flops: int | None  # with the recomputed forward when checkpointing="full"
    fvcore_forward: int | None  # 2 x fvcore's matmul multiply-adds
    fvcore_non_matmul: int | None
    fvcore_unsupported: dict[str, int]
    fvcore_note: str | None  # why fvcore gave no count
    peak_tflops: float | None
    peak_source: str
    peak_fp8_tflops: float | None  # dtype fp8: the fp8 dense peak
    peak_fp8_source: str | None
    rows: list[ProfileRow]
    notes: list[str]
    by_module: dict[str, dict[str, int]] = field(default_factory=dict)  # {module path: {forward, train}}
    uncounted: dict[str, int] = field(default_factory=dict)  # matmul-like ops dispatched without a FLOP formula
    environment: dict = field(default_factory=dict)

    def row(self, mode: str) -> ProfileRow:
        """The row of `mode` ("forward" or "fwd_bwd")."""
        for r in self.rows:
            if r.mode == mode:
                return r
        raise UsageError(f"mode {mode!r}: this profile has {', '.join(r.mode for r in self.rows)}")

    def as_dict(self) -> dict:
        return asdict(self)

    def records(self) -> list[dict]:
        """One flat-able dict per timed step: the step's row with the profile's scalar fields."""
        skip = ("rows", "by_module", "environment", "notes")
        common = {k: v for k, v in self.as_dict().items() if k not in skip}
        common["notes"] = "; ".join(self.notes)
        return [{**common, **r.as_dict()} for r in self.rows]

    def to_dataframe(self):
        """`records()` as a pandas DataFrame (nested fields as dotted columns)."""
        return to_dataframe(self)


def _check_options(checkpointing: str | None, warmup: int, iters: int) -> str:
    checkpointing = "none" if checkpointing is None else checkpointing
    if checkpointing not in MODULE_CHECKPOINTING:
        raise UsageError(f"checkpointing={checkpointing!r}: choose one of None, "
                         f"{', '.join(map(repr, MODULE_CHECKPOINTING))} (profile checkpoints the whole module call; "
                         f"selective recomputation needs flopbench's own model, whose attention core it knows)")
    check_steps(warmup, iters)
    return checkpointing


def _timed_row(row: ProfileRow, step: Callable[[int], object], module: torch.nn.Module, device: torch.device,
               warmup: int, iters: int, peak: float | None, fp8_peak: float | None) -> ProfileRow:
    """Time `step` into `row`; an out-of-memory error marks the row "oom" instead of raising."""
    stats, error = oom_safe(lambda: time_step(step, device, warmup, iters), module, device)
    if error:
        row.status, row.error = "oom", describe_error(error)
        return row
    row.time_ms = stats.as_dict()
    r = rates(row.model_flops, row.hardware_flops, stats.median_ms / 1e3, peak)
    row.achieved_tflops, row.mfu, row.hfu = r.achieved_tflops, r.mfu, r.hfu
    if row.fp8_flops is not None:
        f = fp8_rates(row.model_flops, row.hardware_flops, row.fp8_model_flops, row.fp8_flops, stats.median_ms / 1e3,
                      peak, fp8_peak)
        for name, value in asdict(f).items():  # mfu_fp8_peak, mfu_weighted, hfu_fp8_peak, hfu_weighted
            setattr(row, name, value)
    return row


class _CacheOff(torch.nn.Module):
    """`module` called with use_cache=False: for fvcore, which traces positional inputs only."""

    def __init__(self, module: torch.nn.Module):
        super().__init__()
        self.module = module

    def forward(self, *args, **kwargs):
        return self.module(*args, use_cache=False, **kwargs)


def _takes_use_cache(module: torch.nn.Module, inputs: Inputs) -> bool:
    """True when `module.forward` has a `use_cache` parameter the inputs leave unset (see the module
    docstring)."""
    try:
        signature = inspect.signature(module.forward)
        return ("use_cache" in signature.parameters
                and "use_cache" not in signature.bind_partial(*inputs.args, **inputs.kwargs).arguments)
    except (TypeError, ValueError):  # no signature to read, or inputs it cannot bind: call as given
        return False


def profile(module: torch.nn.Module, example_inputs, loss_fn: Callable | None = None, *,
            peak_tflops: float | None = None, checkpointing: str | None = None,
            device: str | torch.device | None = None, dtype: str | None = None, warmup: int = 3, iters: int = 10,
            fvcore: bool = True, meta: bool = True, peak_fp8_tflops: float | None = None) -> Profile:
    """Count, time and rate one step of `module(example_inputs)`; see the module docstring.

    `example_inputs`: a tensor, a tuple of positional arguments or a dict of keyword arguments (tensors
    are moved to the module's device). `loss_fn(output) -> scalar` for the train step. `checkpointing`:
    None / "none", or "full" (the module call is checkpointed in the train step). `device`: where to run
    (default: where the module's parameters are; a given device moves the module there). `fvcore=False`
    skips fvcore, `meta=False` counts on the real device without trying a meta copy. `peak_fp8_tflops`: with
    `dtype="fp8"`, the fp8 dense peak (default: the peak table's).
    """
    check_module(module)
    check_arguments(profile, {"loss_fn": loss_fn, "peak_tflops": peak_tflops, "checkpointing": checkpointing,
                              "device": device, "dtype": dtype, "warmup": warmup, "iters": iters, "fvcore": fvcore,
                              "meta": meta, "peak_fp8_tflops": peak_fp8_tflops})
    checkpointing = _check_options(checkpointing, warmup, iters)
    dev = module_device(module, device)
    if device is not None:
        module.to(dev)
    dtype_name = None if dtype is None else resolve_dtype(dtype, dev)
    context = (lambda: precision(dtype_name, dev)) if dtype_name else contextlib.nullcontext
    step_precision = (lambda: matmul_precision(dtype_name)) if dtype_name else contextlib.nullcontext
    forward_autocast = (lambda: autocast(dtype_name, dev)) if dtype_name else contextlib.nullcontext
    inputs = Inputs.of(example_inputs).map(lambda t: t.to(dev))
    cache_off = _takes_use_cache(module, inputs)
    if cache_off:
        inputs = Inputs(inputs.args, {**inputs.kwargs, "use_cache": False})
    compute = None if dtype_name else (autocast_dtype(dev) or parameter_dtype(module))
    column = base_dtype(dtype_name) if dtype_name else peak_column(compute)  # fp8: mfu against the bf16 peak
    peak, peak_source = device_peak(dev, column, peak_tflops, compute)
    fp8 = dtype_name == "fp8"
    fp8_peak, fp8_peak_source = device_fp8_peak(dev, dtype_name, peak_fp8_tflops)

    counts = count_module(module, inputs, loss_fn, checkpointing, context, meta=meta)
    if counts.meta_fallback and meta:
        warnings.warn(f"flopbench.profile: {type(module).__name__} counted on {counts.counted_on}, not on a meta "
                      f"copy ({counts.meta_fallback}): real arithmetic, real memory", stacklevel=2)
    if fp8:
        check_float8("profile", module, counts.fp8_forward)
    if cache_off and fvcore:  # fvcore traces positional inputs only: the keyword goes in a wrapper
        wrapper = type(type(module).__name__, (_CacheOff,), {})(module)  # notes name the user's class
        fv, fv_note = fvcore_module(wrapper, Inputs(inputs.args, {k: v for k, v in inputs.kwargs.items()
                                                                   if k != "use_cache"}),
                                    on_meta=counts.counted_on == "meta")
    else:
        fv, fv_note = (fvcore_module(module, inputs, on_meta=counts.counted_on == "meta") if fvcore
                       else (None, "fvcore not run (fvcore=False)"))

    def forward_step(i):
        with context(), torch.no_grad():
            inputs.call(module)

    def fwd_bwd_step(i):  # the matmul precision holds for backward (and the recompute in it) too
        module.zero_grad(set_to_none=True)
        with step_precision():
            with forward_autocast():
                loss = loss_of(loss_fn, inputs.call(module, checkpointed=checkpointing == "full"))
            loss.backward()

    forward_row = ProfileRow("forward", "none", model_flops=counts.forward, hardware_flops=counts.forward)
    train_hw = counts.train_recompute if checkpointing == "full" else counts.train
    train_row = ProfileRow("fwd_bwd", checkpointing, model_flops=counts.train, hardware_flops=train_hw)
    if fp8:
        forward_row.fp8_flops = forward_row.fp8_model_flops = counts.fp8_forward
        train_row.fp8_model_flops = counts.fp8_train
        train_row.fp8_flops = counts.fp8_train_recompute if checkpointing == "full" else counts.fp8_train
    rows = [_timed_row(forward_row, forward_step, module, dev, warmup, iters, peak, fp8_peak)]
    if counts.train is None:
        train_row.status, train_row.error = "skipped", counts.train_note
        rows.append(train_row)
    else:
        rows.append(_timed_row(train_row, fwd_bwd_step, module, dev, warmup, iters, peak, fp8_peak))
    module.zero_grad(set_to_none=True)

    notes = []
    if counts.meta_fallback:
        notes.append(f"counted on {counts.counted_on}, not on a meta copy: {counts.meta_fallback}")
    else:
        notes.append("counted on meta: a copy of the module on the meta device (no arithmetic, no memory)")
    if cache_off:
        notes.append(f"called with use_cache=False ({type(module).__name__}.forward takes it): a training step "
                     f"builds no KV cache")
    if peak is None:
        notes.append(f"{peak_source}; MFU and HFU are None")
    if fp8 and fp8_peak is None:
        notes.append(f"{fp8_peak_source}; the fp8-peak and FLOP-weighted MFU and HFU are None")
    if counts.uncounted:
        notes.append(uncounted_note(counts.uncounted))
    if fv_note:
        notes.append(fv_note)
    elif fv.forward != counts.forward:
        skipped = ", ".join(fv.unsupported) or "none"
        notes.append(f"fvcore forward {fv.forward:,} != torch forward {counts.forward:,} "
                     f"(fvcore skipped: {skipped})")
    return Profile(
        module=type(module).__name__,
        parameters=sum(p.numel() for p in module.parameters()),
        device=str(dev), dtype=dtype_name, compute_dtype=column, checkpointing=checkpointing,
        counted_on=counts.counted_on, meta_fallback=counts.meta_fallback,
        forward_flops=counts.forward, train_flops=counts.train, train_hardware_flops=train_hw,
        fvcore_forward=fv.forward if fv else None, fvcore_non_matmul=fv.non_matmul if fv else None,
        fvcore_unsupported=fv.unsupported if fv else {}, fvcore_note=fv_note,
        peak_tflops=peak, peak_source=peak_source, peak_fp8_tflops=fp8_peak, peak_fp8_source=fp8_peak_source,
        rows=rows, notes=notes,
        by_module=counts.by_module, environment=environment(dev), uncounted=dict(counts.uncounted),
    )
