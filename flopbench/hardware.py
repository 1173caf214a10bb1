"""What the GPU is, what it could do, and what a plain GEMM actually reaches on it.

Three pieces:

* a **peak table** (``peaks.csv``, data, not code): *dense* TFLOP/s per compute dtype, from NVIDIA's
  datasheets and whitepapers. Where a datasheet prints only the 2:4-sparse figure, the table holds half of
  it and says so. ``bf16``/``fp16`` are tensor-core rates with FP32 accumulate (what PyTorch uses); ``fp32``
  is the plain CUDA-core rate, ``tf32`` the tensor-core rate for float32 matmuls with TF32 allowed. An empty
  cell means "unsupported or unknown" and becomes ``None``: a wrong peak is worse than none.
* **detection** through NVML (``pynvml``), falling back to ``torch.cuda`` when NVML is missing or fails.
* a **GEMM ceiling**: the TF/s that large square matmuls reach, a practical upper bound for MFU.
"""

from __future__ import annotations

import csv
import functools
import importlib.resources
import math
import re
import statistics
from dataclasses import asdict, dataclass, field

import torch

from flopbench.errors import UsageError
from flopbench.timing import time_step

DTYPES = ("fp32", "tf32", "bf16", "fp16")
"""The compute dtypes the peak table has a column for."""


# --------------------------------------------------------------------------------------------------
# The peak table


@dataclass(frozen=True)
class PeakEntry:
    """One row of ``peaks.csv``: a GPU model and its dense peak TFLOP/s per dtype."""

    key: str
    display_name: str
    tflops: dict[str, float | None] = field(hash=False)
    source: str
    match: tuple[re.Pattern[str], ...] = field(default=(), repr=False)

    def matches(self, name: str) -> bool:
        """True if ``name`` (an NVML device name) is this GPU, or is its key or display name."""
        name = name.strip()
        if name.lower() in (self.key, self.display_name.lower()):
            return True
        return any(p.search(name) for p in self.match)


def _parse_row(row: dict[str, str]) -> PeakEntry:
    key = row["key"].strip()
    try:
        patterns = tuple(re.compile(p, re.IGNORECASE) for p in row["match"].split("|") if p)
        tflops = {d: float(row[d]) if row[d].strip() else None for d in DTYPES}
    except (re.error, ValueError) as e:
        raise ValueError(f"peaks.csv row {key!r}: {e}") from e
    return PeakEntry(key, row["display_name"].strip(), tflops, row["source"].strip(), patterns)


@functools.cache
def _peak_table() -> tuple[PeakEntry, ...]:
    text = importlib.resources.files("flopbench").joinpath("peaks.csv").read_text(encoding="utf-8")
    return tuple(_parse_row(row) for row in csv.DictReader(text.splitlines()))


def load_peak_table() -> list[PeakEntry]:
    """The rows of ``peaks.csv`` in file order, which is also match precedence (parsed once, cached)."""
    return list(_peak_table())


def match_gpu(name: str) -> PeakEntry | None:
    """The table entry for a GPU name as NVML reports it (e.g. ``"NVIDIA H100 80GB HBM3"``), or None.

    Rows are tried in file order and the first whose pattern matches wins, so specific variants
    ("H100 PCIe", "H100 NVL") are listed before the general one, and patterns use word boundaries so
    that "L4" does not match "L40S" nor "A10" match "A100"/"A10G". A table key or display name
    (``"h100-sxm"``, ``"H100 SXM"``) matches too.
    """
    return next((e for e in _peak_table() if e.matches(name)), None)


def _check_dtype(dtype: str) -> str:
    if dtype not in DTYPES:
        raise UsageError(f"unknown peak dtype {dtype!r}; allowed: {', '.join(DTYPES)}")
    return dtype


def peak_tflops(name: str, dtype: str) -> float | None:
    """Dense peak TFLOP/s of GPU ``name`` for ``dtype`` (one of :data:`DTYPES`); None if not known."""
    entry = match_gpu(name)
    return entry.tflops[_check_dtype(dtype)] if entry else None


def peak_dtype(dtype: torch.dtype) -> str:
    """The table column for a compute ``torch.dtype``.

    float32 maps to ``"tf32"`` when PyTorch is allowed to use TF32 for matmuls
    (``torch.set_float32_matmul_precision("high")`` or lower), else to ``"fp32"``.
    """
    if dtype == torch.bfloat16:
        return "bf16"
    if dtype == torch.float16:
        return "fp16"
    if dtype == torch.float32:
        return "fp32" if torch.get_float32_matmul_precision() == "highest" else "tf32"
    raise UsageError(f"no peak for dtype {dtype}; allowed: float32, bfloat16, float16")


def resolve_peak(gpu_name: str | None, dtype: str, override_tflops: float | None) -> tuple[float | None, str]:
    """The peak TFLOP/s to divide by, and where it came from.

    An explicit ``override_tflops`` (the ``--peak-tflops`` option) wins. Otherwise the table is looked
    up; an unknown GPU or an empty cell gives ``(None, reason)`` — never a guessed number.
    """
    if override_tflops is not None:
        if not (math.isfinite(override_tflops) and override_tflops > 0):
            raise UsageError(f"--peak-tflops must be a positive number, got {override_tflops!r}")
        return float(override_tflops), "--peak-tflops"
    _check_dtype(dtype)
    if gpu_name is None:
        return None, "no GPU detected: no peak; pass --peak-tflops (peak_tflops= in Python)"
    entry = match_gpu(gpu_name)
    if entry is None:
        return None, f"unknown GPU {gpu_name!r}: no peak in table; pass --peak-tflops (peak_tflops= in Python)"
    value = entry.tflops[dtype]
    if value is None:
        return None, (f"{entry.display_name}: no dense {dtype} peak in table; "
                      f"pass --peak-tflops (peak_tflops= in Python)")
    return value, f"table: {entry.display_name} {dtype} ({entry.source})"


def format_peak_table() -> str:
    """The peak table as plain text, for ``flopbench gpus``."""
    from tabulate import tabulate

    rows = [(e.display_name, *("-" if e.tflops[d] is None else f"{e.tflops[d]:g}" for d in DTYPES))
            for e in _peak_table()]
    text = tabulate(rows, headers=("GPU", *DTYPES), tablefmt="simple", disable_numparse=True,
                    colalign=("left", *("right",) * len(DTYPES)))
    return text + "\ndense peak TFLOP/s (no 2:4 sparsity); bf16/fp16 = tensor cores, FP32 accumulate; - = none"


# --------------------------------------------------------------------------------------------------
# Detection


@dataclass
class GpuInfo:
    """What is known about one GPU. Fields NVML (or torch) could not give are None."""

    name: str
    memory_total_bytes: int | None = None
    driver_version: str | None = None
    cuda_driver_version: str | None = None  # highest CUDA version the driver supports, e.g. "12.8"
    sm_clock_mhz: int | None = None
    sm_clock_max_mhz: int | None = None
    power_limit_w: float | None = None
    source: str = "none"  # "nvml", "torch" or "none"

    def as_dict(self) -> dict:
        return asdict(self)


def _text(value: str | bytes) -> str:
    """pynvml returns bytes in old versions, str in new ones."""
    return value.decode() if isinstance(value, bytes) else value


def _optional(fn, *args):
    """``fn(*args)``, or None if it raises (a field this GPU or driver does not report)."""
    try:
        return fn(*args)
    except Exception:
        return None


def _cuda_version_string(version: int | None) -> str | None:
    """NVML encodes CUDA 12.8 as 12080."""
    return None if version is None else f"{version // 1000}.{version % 1000 // 10}"


def _detect_with_nvml(index: int) -> GpuInfo:
    """Ask NVML about GPU ``index``. Raises (ImportError, ``pynvml.NVMLError``, ...) if it cannot."""
    import pynvml

    pynvml.nvmlInit()
    try:
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        cuda_version = getattr(pynvml, "nvmlSystemGetCudaDriverVersion_v2", None)
        cuda = _optional(cuda_version) if cuda_version else None
        if cuda is None:
            cuda = _optional(pynvml.nvmlSystemGetCudaDriverVersion)
        driver = _optional(pynvml.nvmlSystemGetDriverVersion)
        memory = _optional(pynvml.nvmlDeviceGetMemoryInfo, handle)
        power_mw = _optional(pynvml.nvmlDeviceGetEnforcedPowerLimit, handle)
        return GpuInfo(
            name=_text(pynvml.nvmlDeviceGetName(handle)),
            memory_total_bytes=None if memory is None else int(memory.total),
            driver_version=None if driver is None else _text(driver),
            cuda_driver_version=_cuda_version_string(cuda),
            sm_clock_mhz=_optional(pynvml.nvmlDeviceGetClockInfo, handle, pynvml.NVML_CLOCK_SM),
            sm_clock_max_mhz=_optional(pynvml.nvmlDeviceGetMaxClockInfo, handle, pynvml.NVML_CLOCK_SM),
            power_limit_w=None if power_mw is None else power_mw / 1000.0,
            source="nvml",
        )
    finally:
        _optional(pynvml.nvmlShutdown)


def _detect_with_torch(index: int) -> GpuInfo | None:
    if not torch.cuda.is_available() or index >= torch.cuda.device_count():
        return None
    props = _optional(torch.cuda.get_device_properties, index)
    return GpuInfo(
        name=torch.cuda.get_device_name(index),
        memory_total_bytes=getattr(props, "total_memory", None),
        source="torch",
    )


def detect_gpu(index: int = 0) -> GpuInfo | None:
    """Describe GPU ``index``: through NVML if it works, else through ``torch.cuda``; None if no GPU."""
    try:
        return _detect_with_nvml(index)
    except Exception:  # no pynvml, no driver library, no such device, ...
        return _detect_with_torch(index)


def gpu_report(index: int = 0) -> dict:
    """What `flopbench gpus` shows: the GPU detected here, its table entry, and the whole peak table."""
    gpu = detect_gpu(index)
    entry = match_gpu(gpu.name) if gpu else None
    return {
        "detected": gpu.as_dict() if gpu else None,
        "table_entry": entry.key if entry else None,
        "table": [{"key": e.key, "name": e.display_name, **{f"{d}_tflops": v for d, v in e.tflops.items()},
                   "source": e.source} for e in load_peak_table()],
    }


# --------------------------------------------------------------------------------------------------
# GEMM ceiling


def gemm_ceiling(device: str | torch.device, dtype: torch.dtype, size: int = 8192, iters: int = 20,
                 warmup: int = 5) -> dict:
    """Time ``iters`` square ``size``×``size`` matmuls and report the TFLOP/s they reach.

    Each product costs 2·size³ FLOPs. Inputs are random normal (zeros would let some hardware run
    cooler and faster) and alternate between two pairs; timed by `flopbench.timing.time_step`.
    """
    if size < 1 or iters < 1 or warmup < 0:
        raise UsageError(f"gemm_ceiling needs size >= 1, iters >= 1, warmup >= 0; got {size}, {iters}, {warmup}")
    device = torch.device(device)
    gen = torch.Generator().manual_seed(0)
    pairs = [tuple(torch.randn(size, size, generator=gen).to(device=device, dtype=dtype) for _ in range(2))
             for _ in range(2)]
    out = torch.empty(size, size, device=device, dtype=dtype)
    flops = 2 * size**3
    stats = time_step(lambda i: torch.mm(*pairs[i % 2], out=out), device, warmup=warmup, iters=iters)
    times_ms = list(stats.times_ms)
    tflops = [flops / (t * 1e-3) / 1e12 for t in times_ms]
    return {
        "size": size,
        "dtype": str(dtype).removeprefix("torch."),
        "device": str(device),
        "tflops_median": statistics.median(tflops),
        "tflops_min": min(tflops),
        "tflops_max": max(tflops),
        "times_ms": times_ms,
    }
