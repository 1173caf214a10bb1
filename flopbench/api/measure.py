"""`flopbench.measure`: per-step FLOPs, time and MFU of a user's own training loop, with counted FLOPs.

    with flopbench.measure(model, peak_tflops=989.4) as m:
        for batch in loader:
            loss = model(batch).loss
            loss.backward(); opt.step(); opt.zero_grad()
            m.step()                       # end of one step
    print(m.summary())                     # or m.records, m.to_dataframe()

(or `for i in m.steps(n): ...`, which calls `m.step()` after each iteration body).

Like Lightning's `ThroughputMonitor` (which divides a FLOPs-per-batch figure the user supplies by a window
of elapsed times), but the FLOPs are counted, not supplied, and each step is timed on its own:

- **FLOPs**: the first step runs under `flops.counter.flop_counter()` (FlopCounterMode): every matmul,
  convolution and fused attention kernel the step dispatches, forward, backward and any checkpoint
  recompute included — hardware FLOPs, as executed. Later steps reuse that count. Steps are told apart
  by the shapes of the tensors passed to the model's forward (a forward pre-hook records them, which is
  cheap); when a step's shapes have not been counted yet, the next step runs under the counter, and
  every step with those shapes gets its count. A step whose shapes were never counted has FLOPs None.
- **MFU** = model FLOPs per step / (step time x peak). The counted FLOPs include any recomputation the
  loop does (activation checkpointing); pass `model_flops=` (e.g. `profile(...).train_flops`) for the
  model FLOPs then, and the counted figure gives HFU. Without it, MFU = HFU = counted / (time x peak).
- **Time** of a step = the span between consecutive `step()` calls (the first from entering the block):
  everything the loop does, data loading and optimizer included, as a throughput monitor sees it. On
  CUDA the boundaries are CUDA events on the device's current stream (no synchronization inside the
  loop; `records` synchronizes once), on the CPU `time.perf_counter`.
- **Summary** statistics (median, IQR) leave out steps that ran under the counter (it slows them) and
  the first `warmup` steps (default 1: step 0, which also pays for lazy initialization).
- **Peak**: `peak_tflops`, else the dense table entry for the GPU NVML names and the compute dtype:
  `dtype` if given (a peak-table column: fp32, tf32, bf16, fp16), else the autocast dtype in force at
  the model's first forward, else the parameters' dtype. The CPU has no table entry: MFU None.
- **float8**: with `dtype="fp8"` (a model the user converted with torchao's ``convert_to_float8_training``, its
  loop under bf16 autocast) `mfu` is against the bf16 peak, and each record also has `fp8_flops` (of the
  counted FLOPs, those of ops with a float8 operand, `flops.counter.Float8Flops`) and the MFU and HFU against
  the fp8 peak (`peak_fp8_tflops`, else the table's) and the FLOP-weighted peak (`timing.rates.fp8_rates`).
  The weighted MFU needs the float8 share of the model FLOPs: the counted one, so None when `model_flops` is
  given. A counted step in which no op took a float8 operand is refused. Without fp8 these fields are None.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields

import torch
from torch.utils._pytree import tree_leaves

from ..errors import UsageError, check_arguments, check_int
from ..flops.counter import Float8Flops, UncountedOps, flop_counter, uncounted_note
from ..hardware.detect import device_fp8_peak, device_peak
from ..model.config import DTYPES, base_dtype
from ..model.inputs import check_float8, check_module
from ..output.records import to_dataframe
from ..timing.clock import Clock, TimingStats
from ..timing.device import autocast_dtype, module_device, parameter_dtype, peak_column
from ..timing.rates import Fp8Rates, fp8_rates, rates


#: The float8 rates of a record and of the summary: `timing.rates.Fp8Rates`' fields.
FP8_RATES = tuple(f.name for f in fields(Fp8Rates))


@dataclass(frozen=True)
class _Step:
    shapes: tuple  # the tensor shapes passed to the model's forward calls during the step
    counted: bool  # ran under the FLOP counter
    end: object  # the clock mark that ended it


class Measurement:
    """The state of one `with flopbench.measure(model) as m:` block; see the module docstring."""

    def __init__(self, model: torch.nn.Module, peak_tflops: float | None = None, *, model_flops: int | None = None,
                 dtype: str | None = None, device: str | torch.device | None = None, warmup: int = 1,
                 peak_fp8_tflops: float | None = None):
        self.model = check_module(model, "model")
        if model_flops is not None and (isinstance(model_flops, bool) or not isinstance(model_flops, int)
                                        or model_flops <= 0):
            raise UsageError(f"model_flops={model_flops!r}: pass a positive integer (FLOPs per step) or None")
        if dtype is not None and dtype not in DTYPES:
            raise UsageError(f"dtype={dtype!r}: choose one of None, {', '.join(DTYPES)}")
        check_int("warmup", warmup, 0)
        self.device = module_device(model, device)
        if peak_tflops is not None:
            device_peak(self.device, "fp32", peak_tflops)  # raises on a bad value, before the loop
        self.fp8_peak = device_fp8_peak(self.device, dtype, peak_fp8_tflops)  # (None, None) unless dtype "fp8"
        self.peak_tflops, self.model_flops, self.dtype, self.warmup = peak_tflops, model_flops, dtype, warmup
        self.clock = Clock(self.device)
        self._start = None
        self._steps: list[_Step] = []
        self._flops: dict[tuple, int] = {}  # counted FLOPs per step, by input shapes
        self._fp8_flops: dict[tuple, int] = {}  # of those, the FLOPs of ops with a float8 operand
        self._shapes: list[tuple] = []
        self._seen_dtype: torch.dtype | None = None
        self._counter = None
        self._watcher = None
        self._fp8 = None
        self.uncounted: dict[str, int] = {}  # matmul-like ops the counted steps dispatched without a formula
        self._hook = None
        self._peak: tuple[float | None, str] | None = None

    # --- the loop --------------------------------------------------------------------------------

    def __enter__(self) -> "Measurement":
        if self._hook is not None:
            raise UsageError("this measurement is already running: use a new flopbench.measure(...) per block")
        self._hook = self.model.register_forward_pre_hook(self._record_call, with_kwargs=True)
        self._start_counter()
        self._start = self.clock.mark()
        return self

    def __exit__(self, *exc) -> bool:
        self._hook.remove()
        self._stop_counter()  # a step left unfinished is dropped
        self._hook = None
        return False

    def _record_call(self, module, args, kwargs):
        self._shapes.append(tuple(tuple(t.shape) for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)))
        if self._seen_dtype is None:
            self._seen_dtype = autocast_dtype(self.device) or parameter_dtype(module)

    def _start_counter(self) -> None:
        self._counter = flop_counter()
        self._counter.__enter__()
        self._watcher = UncountedOps(self._counter)
        self._watcher.__enter__()
        self._fp8 = Float8Flops(self._counter)
        self._fp8.__enter__()

    def _stop_counter(self) -> tuple[int, int] | None:
        """(counted FLOPs, of them those of ops with a float8 operand) since `_start_counter`; None if not counting."""
        if self._counter is None:
            return None
        counter, self._counter = self._counter, None
        self._fp8.__exit__(None, None, None)
        self._watcher.__exit__(None, None, None)
        for name, calls in self._watcher.uncounted.items():
            self.uncounted[name] = self.uncounted.get(name, 0) + calls
        counter.__exit__(None, None, None)
        return counter.get_total_flops(), self._fp8.flops

    def step(self) -> None:
        """Mark the end of one step (call it once per iteration, after the optimizer step)."""
        if self._hook is None:
            raise UsageError("m.step() called outside its block: use it inside `with flopbench.measure(model) as m:`")
        end = self.clock.mark()
        shapes, self._shapes = tuple(self._shapes), []
        counted = self._stop_counter()
        if counted:
            if self.dtype == "fp8" and shapes:  # the model ran: its float8 layers must have
                check_float8("measure", self.model, counted[1])
            self._flops.setdefault(shapes, counted[0])
            self._fp8_flops.setdefault(shapes, counted[1])
        self._steps.append(_Step(shapes, counted is not None, end))
        if shapes not in self._flops:
            self._start_counter()  # new shapes: count the next step

    def steps(self, n: int) -> Iterator[int]:
        """`for i in m.steps(n):` runs the body n times and calls `m.step()` after each (not after a break)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise UsageError(f"steps({n!r}): n must be an integer >= 0")
        for i in range(n):
            yield i
            self.step()

    # --- results ---------------------------------------------------------------------------------

    @property
    def compute_dtype(self) -> str | None:
        """The peak-table column: `dtype` if given (bf16 for "fp8": the rest of a float8 step), else that of the
        autocast dtype in force at the model's first forward, else of the parameters' dtype (None for one the
        table lacks, e.g. float64)."""
        return base_dtype(self.dtype) if self.dtype else peak_column(self._seen_dtype or parameter_dtype(self.model))

    def peak(self) -> tuple[float | None, str]:
        """(peak TFLOP/s, where it came from) for `compute_dtype` on the model's device."""
        if self._peak is not None:
            return self._peak
        peak = device_peak(self.device, self.compute_dtype, self.peak_tflops,
                                   self._seen_dtype or parameter_dtype(self.model))
        if self._seen_dtype is not None or self.dtype:
            self._peak = peak  # settled once a forward has shown the compute dtype
        return peak

    @property
    def records(self) -> list[dict]:
        """One dict per finished step: step, time_ms, hardware_flops (counted), model_flops, achieved_tflops (model
        FLOPs / time), mfu, hfu, counted (ran under the counter), input_shapes; with dtype "fp8" fp8_flops,
        mfu_fp8_peak, mfu_weighted, hfu_fp8_peak, hfu_weighted (else None)."""
        if not self._steps:
            return []
        self.clock.sync()
        peak, _ = self.peak()
        out, start = [], self._start
        for i, s in enumerate(self._steps):
            ms = self.clock.elapsed_ms(start, s.end)
            start = s.end
            flops = self._flops.get(s.shapes)
            model = self.model_flops or flops
            r = rates(model, flops, ms / 1e3, peak)
            fp8 = self._fp8_flops.get(s.shapes) if self.dtype == "fp8" else None
            out.append({
                "step": i, "time_ms": ms, "hardware_flops": flops, "model_flops": model,
                "achieved_tflops": r.achieved_tflops, "mfu": r.mfu, "hfu": r.hfu,
                "counted": s.counted, "input_shapes": str(list(s.shapes)), "fp8_flops": fp8,
                **self._fp8_rates(model, flops, fp8, ms / 1e3, peak),
            })
        return out

    def _fp8_rates(self, model: int | None, hardware: int | None, fp8: int | None, seconds: float,
                   peak: float | None) -> dict:
        """The float8 MFU and HFU of `model` / `hardware` FLOPs, `fp8` of them float8, in `seconds` (all None
        without fp8); the model FLOPs' float8 share is the counted one unless `model_flops` was given."""
        if fp8 is None or model is None:
            return dict.fromkeys(FP8_RATES)
        f = fp8_rates(model, hardware, None if self.model_flops else fp8, fp8, seconds, peak, self.fp8_peak[0])
        return asdict(f)

    def summary(self) -> dict:
        """Statistics over the timed steps (not counted, index >= warmup): median / IQR time, FLOPs per
        step, achieved TFLOP/s and MFU at the median time (or, when steps differ in FLOPs, total FLOPs /
        total time), with the peak and notes."""
        records = self.records
        timed = [r for r in records if not r["counted"] and r["step"] >= self.warmup]
        peak, source = self.peak()
        notes = [] if peak else [f"{source}; MFU is None"]
        fp8_peak, fp8_source = self.fp8_peak
        if self.dtype == "fp8" and fp8_peak is None:
            notes.append(f"{fp8_source}; the fp8-peak and FLOP-weighted MFU and HFU are None")
        if self.dtype == "fp8" and self.model_flops:
            notes.append("model_flops given: its float8 share is unknown, so mfu_weighted is None")
        if self.uncounted:
            notes.append(uncounted_note(self.uncounted))
        doc = {"steps": len(records), "timed_steps": len(timed), "counted_steps": sum(r["counted"] for r in records),
               "device": str(self.device), "compute_dtype": self.compute_dtype,
               "peak_tflops": peak, "peak_source": source,
               "model_flops_source": "model_flops argument" if self.model_flops else "counted (as dispatched)",
               "time_ms": None, "hardware_flops": None, "model_flops": None, "achieved_tflops": None, "mfu": None,
               "hfu": None, "peak_fp8_tflops": fp8_peak, "peak_fp8_source": fp8_source, "fp8_flops": None,
               **dict.fromkeys(FP8_RATES), "uncounted": dict(self.uncounted), "notes": notes}
        if not timed:
            notes.append(f"no timed steps: the first {self.warmup} and the counted ones are left out; run more steps")
            return doc
        stats = TimingStats(tuple(r["time_ms"] for r in timed))
        doc["time_ms"] = {k: v for k, v in stats.as_dict().items() if k != "times_ms"}
        known = [r for r in timed if r["model_flops"] is not None]
        if len(known) < len(timed):
            notes.append(f"{len(timed) - len(known)} timed steps have shapes that were never counted: "
                         f"left out of the rates")
        if not known:
            return doc
        keys = ("model_flops", "hardware_flops", "fp8_flops")
        if len({tuple(r[k] for k in keys) for r in known}) == 1:
            seconds = statistics.median(r["time_ms"] for r in known) / 1e3
            doc.update({k: known[0][k] for k in keys})
            flops = [doc[k] for k in keys]
        else:  # the FLOPs per step stay None: the rates are over the totals
            seconds = sum(r["time_ms"] for r in known) / 1e3
            notes.append("steps differ in FLOPs (input shapes changed): rates are total FLOPs / total time")
            flops = [sum(r[k] for r in known if r[k] is not None) for k in keys]
            flops[2] = flops[2] if self.dtype == "fp8" else None
        r = rates(flops[0], flops[1], seconds, peak)
        doc["achieved_tflops"], doc["mfu"], doc["hfu"] = r.achieved_tflops, r.mfu, r.hfu
        doc.update(self._fp8_rates(*flops, seconds, peak))
        return doc

    def to_dataframe(self):
        """`records` as a pandas DataFrame."""
        return to_dataframe(self.records)


def measure(model: torch.nn.Module, peak_tflops: float | None = None, *, model_flops: int | None = None,
            dtype: str | None = None, device: str | torch.device | None = None, warmup: int = 1,
            peak_fp8_tflops: float | None = None) -> Measurement:
    """A context manager measuring each step of a training loop around `model`; see the module docstring."""
    check_arguments(measure, {"peak_tflops": peak_tflops, "model_flops": model_flops, "dtype": dtype,
                              "device": device, "warmup": warmup, "peak_fp8_tflops": peak_fp8_tflops})
    return Measurement(model, peak_tflops, model_flops=model_flops, dtype=dtype, device=device, warmup=warmup,
                       peak_fp8_tflops=peak_fp8_tflops)
