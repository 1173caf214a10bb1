"""`flopbench.gpus`: the GPU detected here, its peak-table entry and the whole dense peak table; or, with
`lookup=NAME`, the table entry and the peak per dtype a GPU of that name would get, without having one.

torch is imported (seconds) only where a GPU could be there to describe (`detection_needs_torch`):
`hardware.detect` asks NVML about torch's device; the table itself and `lookup` need neither."""

from __future__ import annotations

import os
import sys

from ..errors import UsageError, check_arguments
from ..hardware.peaks import is_mig, load_peak_table, match_gpu, mig_slice_sms, named_gpu, rated_clock, resolve_peak
from ..model.config import DTYPES


def lookup_peaks(name: str) -> dict:
    """The `gpus --lookup NAME --json` document: NAME's table entry and, per dtype, the peak `run` would divide
    by on that GPU and where it comes from (`hardware.peaks.resolve_peak`, the lookup every command uses), and
    the SM clock that peak is rated at (`hardware.peaks.rated_clock`; None where the table has none).

    NAME is an NVML name ("NVIDIA H100 80GB HBM3"), a MIG slice's ("NVIDIA A100-SXM4-40GB MIG 1g.5gb": the
    chip's peak x the slice's SMs / the chip's, or None with the reason where the slice's SM count is not
    known without the device), a table key or display name ("h100-sxm", "H100 SXM") or an unambiguous key
    prefix ("a100")."""
    if not isinstance(name, str) or not name.strip():
        raise UsageError(f"--lookup {name!r}: give a GPU name, e.g. 'NVIDIA H100 80GB HBM3' or h100-sxm")
    entry, gpu_name = named_gpu(name, "--lookup")  # key prefixes too, and the one-line error
    mig = is_mig(gpu_name)
    peaks = {}
    for dtype in DTYPES:
        tflops, source = resolve_peak(gpu_name, dtype, None)
        peaks[dtype] = {"tflops": tflops, "source": source, "rated_clock_mhz": rated_clock(gpu_name, dtype)[0]}
    return {
        "lookup": name,
        "table_entry": {"key": entry.key, "name": entry.display_name, "sms": entry.sms, "source": entry.source,
                        **{f"{d}_tflops": v for d, v in entry.tflops.items()},
                        "rated_clock_mhz": dict(entry.rated_clock_mhz), "clock_source": entry.clock_source},
        "mig": {"slice_sms": mig_slice_sms(entry, gpu_name), "chip_sms": entry.sms} if mig else None,
        "peaks": peaks,
    }


#: Device files through which torch could reach a GPU that NVML does not report: the NVIDIA driver's control
#: device, ROCm's kernel driver (AMD GPUs: torch.cuda on ROCm) and WSL 2's GPU paravirtualisation.
GPU_DEVICE_FILES = ("/dev/nvidiactl", "/dev/kfd", "/dev/dxg")


def nvml_gpu_count() -> int | None:
    """How many GPUs NVML (nvidia-ml-py's pynvml: nvmlInit, nvmlDeviceGetCount) reports, without importing
    torch; None where NVML cannot be asked (no pynvml, no driver library)."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        return None
    try:
        return pynvml.nvmlDeviceGetCount()
    except Exception:
        return None
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


def detection_needs_torch() -> bool:
    """Whether describing the GPU here needs torch. NVML is asked first: where it reports a GPU, yes
    (`hardware.detect` finds torch's device in NVML by its UUID, and reads its SM count from torch). Where it
    reports none, only if torch could still reach a GPU: a GPU driver's device file exists (`GPU_DEVICE_FILES`:
    ROCm, a driver whose NVML library is missing), or this is not Linux, where there are none to look at.
    Otherwise no GPU can be there, and the table is printed without torch."""
    if nvml_gpu_count():
        return True
    return not sys.platform.startswith("linux") or any(os.path.exists(f) for f in GPU_DEVICE_FILES)


def detect_gpu(index: int = 0):
    """`hardware.detect.detect_gpu(index)` (a `GpuInfo`, or None) where a GPU can be here
    (`detection_needs_torch`); else None, and torch is not imported."""
    if not detection_needs_torch():
        return None
    from ..hardware import detect  # imports torch

    return detect.detect_gpu(index)


def detected_peaks(gpu) -> dict | None:
    """The peak per dtype the detected `gpu` gets, with its source (`hardware.detect.gpu_peak`: a MIG slice
    its share of the chip); None without a GPU."""
    if gpu is None:
        return None
    from ..hardware.detect import gpu_peak

    return {d: dict(zip(("tflops", "source"), gpu_peak(gpu, d), strict=True)) for d in DTYPES}


def gpus(index: int = 0, lookup: str | None = None) -> dict:
    """The GPU detected here (with the peak per dtype it gets: a MIG slice its share), its table entry and the
    whole peak table: the `flopbench gpus --json` document. With `lookup=NAME`: only NAME's table entry and
    peaks (`lookup_peaks`), nothing detected."""
    check_arguments(gpus, {"index": index, "lookup": lookup})
    if lookup is not None:
        return lookup_peaks(lookup)
    gpu = detect_gpu(index)
    entry = match_gpu(gpu.name) if gpu else None
    return {
        "detected": gpu.as_dict() if gpu else None,
        "table_entry": entry.key if entry else None,
        "detected_peaks": detected_peaks(gpu),
        "table": [{"key": e.key, "name": e.display_name, **{f"{d}_tflops": v for d, v in e.tflops.items()},
                   "sms": e.sms, "mem_gbps": e.mem_gbps, "source": e.source,
                   "rated_clock_mhz": dict(e.rated_clock_mhz)} for e in load_peak_table()],
    }
