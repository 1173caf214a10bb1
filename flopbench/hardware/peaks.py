"""The dense peak table (``peaks.csv``: data, not code) and the one place it is read.

``peaks.csv`` holds *dense* TFLOP/s per compute dtype, from NVIDIA's and AMD's datasheets and whitepapers, with
a name pattern and a source per row. Where a datasheet prints only the 2:4-sparse figure, the table holds
half of it and says so. ``bf16``/``fp16`` are tensor-core rates with FP32 accumulate (what PyTorch uses);
``fp8`` the rate of float8 (e4m3) tensor-core matmuls with FP32 accumulate (``torch._scaled_mm``);
``fp32`` is the plain CUDA-core rate, ``tf32`` the tensor-core rate for float32 matmuls with TF32
allowed. An empty cell means "unsupported or unknown" and becomes ``None``: a wrong peak is worse than
none (llm.c's ``mfu.h`` takes the same line). The ``fp8`` column is filled on every row whose chip has fp8
tensor cores (Hopper, Ada, Blackwell, CDNA3), so there an empty cell means "none" and `check_fp8` refuses
``--dtype fp8`` by it. `resolve_peak` is the one lookup every command uses.
No torch here: `estimate` and `gpus --lookup` read the table without it.

AMD GPUs (MI300X, MI325X) are matched by the name torch gives them on ROCm ("AMD Instinct MI300X"): NVML does
not see them, and `hardware.detect` falls back to ``torch.cuda.get_device_name``. Their ``sms`` are compute
units, which is what torch's ``multi_processor_count`` counts there.

``sms`` is the full chip's SM count (with its source in ``sms_source``). A MIG slice ("NVIDIA H100 80GB
HBM3 MIG 1g.10gb") has only some of the SMs, and tensor throughput scales with them, so its peak is the
chip's x slice SMs / chip SMs (`resolve_peak`); the slice's SMs come from the device (torch's
``multi_processor_count``) or, without one, from `MIG_SMS_PER_SLICE`. Only profiles NVIDIA lists for the chip
(``mig_profiles.csv``) are accepted. ``<dtype>_clock_mhz`` is the SM clock each figure is rated at (with
``clock_source``), and `clock_adjusted_peak` scales a peak by the SM clock a run actually held over it.
"""

from __future__ import annotations

import csv
import functools
import importlib.resources
import math
import re
from dataclasses import dataclass, field

from ..errors import UsageError
from ..model.config import DTYPES


@dataclass(frozen=True)
class PeakEntry:
    """One row of ``peaks.csv``: a GPU model and its dense peak TFLOP/s per dtype."""

    key: str
    display_name: str
    tflops: dict[str, float | None] = field(hash=False)
    source: str
    match: tuple[re.Pattern[str], ...] = field(default=(), repr=False)
    sms: int | None = None  # SMs of the full chip (None: not in the table)
    mem_gbps: float | None = None  # memory bandwidth, GB/s (10^9 bytes/s), from the datasheet
    mem_source: str = ""
    rated_clock_mhz: dict[str, float | None] = field(default_factory=dict, hash=False)  # per dtype
    clock_source: str = ""

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
        sms = int(row["sms"]) if row["sms"].strip() else None
        mem = float(row["mem_gbps"]) if row["mem_gbps"].strip() else None
        clocks = {d: float(row[f"{d}_clock_mhz"]) if row[f"{d}_clock_mhz"].strip() else None for d in DTYPES}
    except (re.error, ValueError) as e:
        raise ValueError(f"peaks.csv row {key!r}: {e}") from e
    return PeakEntry(key, row["display_name"].strip(), tflops, row["source"].strip(), patterns, sms, mem,
                     row["mem_source"].strip(), clocks, row["clock_source"].strip())


@functools.cache
def _peak_table() -> tuple[PeakEntry, ...]:
    text = importlib.resources.files(__package__).joinpath("peaks.csv").read_text(encoding="utf-8")
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


#: The architectures with fp8 tensor cores, for `check_fp8`'s message.
FP8_ARCHITECTURES = "Hopper, Ada, Blackwell or CDNA3"


def check_fp8(gpu_name: str | None, option: str = "--dtype") -> None:
    """Refuse fp8 on a GPU the table knows has no fp8 tensor cores: a UsageError naming it (`option` asked for
    fp8). The table decides: an empty ``fp8`` cell on a known GPU (A100, A10, V100, T4, RTX 3090). An unknown
    GPU, or none, is not refused: the table knows nothing against it."""
    entry = match_gpu(gpu_name) if gpu_name else None
    if entry is not None and entry.tflops["fp8"] is None:
        raise UsageError(f"{option} fp8: the {entry.display_name} has no fp8 tensor cores (fp8 needs "
                         f"{FP8_ARCHITECTURES}); use bf16")


#: A MIG device name: "<GPU> MIG <profile>" (NVIDIA MIG User Guide, "MIG Device Names"): any name with the word
#: MIG is a slice, and its profile must be one `mig_profile` accepts.
MIG_WORD = re.compile(r"\bMIG\b\s*(.*)$", re.IGNORECASE)
#: "1g.10gb", "1g.5gb+me", "1c.3g.20gb": a compute instance ("1c.") runs on c of the GPU instance's g compute
#: slices (NVIDIA MIG User Guide, "MIG Device Names").
MIG_PROFILE = re.compile(r"^(?:(\d+)c\.)?(\d+)g\.\d+gb(?:\+me)?$", re.IGNORECASE)
#: The compute instances a GPU instance of g slices can hold, as c per g (NVIDIA MIG User Guide, "Supported
#: MIG Profiles", the CI profiles: 1c/2c/3c/4c/7c of a 7g, 1c/2c/4c of a 4g, 1c/2c/3c of a 3g, ...).
MIG_COMPUTE_SLICES = {1: (1,), 2: (1, 2), 3: (1, 2, 3), 4: (1, 2, 4), 7: (1, 2, 3, 4, 7)}

#: SMs in one MIG compute slice, by table-key prefix, where NVIDIA documents it. A100: seven compute
#: slices of 14 SMs (98 of the 108 SMs; NVIDIA MIG User Guide, "Supported MIG Profiles": 1g = 1/7 of the
#: SMs, and a 1g slice reports 14 multiprocessors to CUDA). Hopper slices are uneven (no published
#: per-profile SM count flopbench could cite), so `resolve_peak` gives None for them without a device.
MIG_SMS_PER_SLICE = {"a100": 14}


@dataclass(frozen=True)
class MigProfile:
    """A MIG profile that exists on its chip: its name, its GPU instance's compute slices (g) and the compute
    slices the device runs on (c of a "<c>c.<g>g..." compute instance, else g)."""

    name: str
    gpu_slices: int
    compute_slices: int


@functools.cache
def _mig_table() -> dict[str, tuple[str, ...]]:
    """``mig_profiles.csv``: table key -> the GPU-instance profiles NVIDIA lists for that chip."""
    text = importlib.resources.files(__package__).joinpath("mig_profiles.csv").read_text(encoding="utf-8")
    return {key: tuple(row["profiles"].split()) for row in csv.DictReader(text.splitlines())
            for key in row["keys"].split("|")}


def is_mig(name: str | None) -> bool:
    """True if ``name`` is a MIG device name (NVML and CUDA name a slice "<GPU> MIG <profile>")."""
    return bool(name) and MIG_WORD.search(name) is not None


def mig_profile(entry: PeakEntry, name: str, option: str = "--gpu") -> MigProfile | None:
    """The MIG profile in ``name`` (None if ``name`` is no MIG name), checked against the profiles NVIDIA lists
    for ``entry``'s chip (``mig_profiles.csv``) and the compute instances a GPU instance can hold
    (`MIG_COMPUTE_SLICES`); a UsageError naming the allowed profiles otherwise (`option` gave `name`)."""
    found = MIG_WORD.search(name)
    if found is None:
        return None
    text = found.group(1).strip()
    allowed = _mig_table().get(entry.key)
    if not allowed:
        raise UsageError(f"{option} {name!r}: the {entry.display_name} has no MIG profiles (NVIDIA MIG User Guide)")
    parsed = MIG_PROFILE.match(text)
    instance = text.split(".", 1)[1] if parsed and parsed.group(1) else text
    compute = int(parsed.group(1) or parsed.group(2)) if parsed else 0
    gpu_slices = int(parsed.group(2)) if parsed else 0
    if instance.lower() not in allowed or compute not in MIG_COMPUTE_SLICES.get(gpu_slices, ()):
        raise UsageError(f"{option} {name!r}: MIG profile {text!r} does not exist on the {entry.display_name}; "
                         f"choose one of {', '.join(allowed)}, or <c>c.<profile> with c in 1, 2, 3, 4, 7 and "
                         f"c <= g (NVIDIA MIG User Guide)")
    return MigProfile(text, gpu_slices, compute)


def mig_slice_sms(entry: PeakEntry, name: str) -> int | None:
    """SMs of the MIG slice ``name`` names, from `MIG_SMS_PER_SLICE`; None where flopbench does not know (or
    the profile does not exist on the chip: `mig_profile`)."""
    per_slice = next((n for prefix, n in MIG_SMS_PER_SLICE.items() if entry.key.startswith(prefix)), None)
    try:
        profile = mig_profile(entry, name)
    except UsageError:
        return None
    return None if profile is None or per_slice is None else per_slice * profile.compute_slices


def resolve_peak(gpu_name: str | None, dtype: str, override_tflops: float | None, sm_count: int | None = None,
                 mig: bool | None = None) -> tuple[float | None, str]:
    """The peak TFLOP/s to divide by, and where it came from.

    An explicit ``override_tflops`` (the ``--peak-tflops`` option) wins. Otherwise the table is looked
    up; an unknown GPU or an empty cell gives ``(None, reason)`` — never a guessed number.

    A MIG slice (``mig`` True, or a MIG device name) gets the chip's peak x slice SMs / chip SMs: tensor
    throughput is per SM, and a slice owns only its SMs (NVIDIA MIG User Guide, "Supported MIG
    Profiles", "fraction of SMs"). ``sm_count`` is the slice's SMs as the device reports them (torch's
    ``multi_processor_count``); without it the profile in the name is looked up (`mig_slice_sms`).
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
    if not (mig or is_mig(gpu_name)):
        return value, f"table: {entry.display_name} {dtype} ({entry.source})"
    try:
        profile = mig_profile(entry, gpu_name, "GPU")
    except UsageError as e:  # a detected name: a profile not in the tables (a newer driver's) is no error
        if not sm_count:
            return None, f"{e}: no peak; pass --peak-tflops"
        profile = None
    slice_sms = sm_count or mig_slice_sms(entry, gpu_name)
    if entry.sms is None or slice_sms is None:
        missing = "the full chip's SM count" if entry.sms is None else "the SM count of this MIG slice"
        return None, (f"{gpu_name!r} is a MIG slice of {entry.display_name} and {missing} is unknown here (the "
                      f"device reports it; `flopbench gpus` on it shows it): no peak; pass --peak-tflops")
    what = f"MIG slice {profile.name}" if profile else "MIG slice"
    return (value * slice_sms / entry.sms,
            f"table: {entry.display_name} {dtype} × {slice_sms}/{entry.sms} SMs ({what}) ({entry.source})")


def rated_clock(gpu_name: str | None, dtype: str) -> tuple[float | None, str]:
    """(the SM clock in MHz at which the table's ``dtype`` peak of GPU ``gpu_name`` is rated, its source), or
    (None, why). The clock is the one the datasheet figure implies: peak / (SMs x dense FLOP/clock/SM), e.g.
    the H100 SXM5's 989.4 TFLOP/s = 132 SMs x 4096 dense bf16 FLOP/clock x 1830 MHz (H100 whitepaper), below
    the 1980 MHz NVML reports as its maximum. A MIG slice runs at its chip's clock."""
    entry = match_gpu(gpu_name) if gpu_name else None
    if entry is None:
        return None, "no table entry"
    mhz = entry.rated_clock_mhz.get(_check_dtype(dtype))
    if mhz is None:
        return None, f"no rated {dtype} clock for the {entry.display_name} in the table"
    return mhz, f"{entry.display_name} {dtype} rated at {mhz:g} MHz ({entry.clock_source})"


def clock_adjusted_peak(peak: float | None, sm_clock_mhz: float | None, rated_clock_mhz: float | None,
                        max_clock_mhz: float | None = None) -> tuple[float | None, str | None]:
    """(the peak at the SM clock a run held, how it was scaled): ``peak`` x ``sm_clock_mhz`` / the clock the
    peak is rated at (`rated_clock`).

    A tensor core does a fixed number of FLOPs per clock, so the rate is linear in the SM clock. The rated
    clock can sit below the GPU's maximum (H100 SXM5: 1830 MHz rated, 1980 MHz maximum), so dividing by the
    maximum would make the peak about 8 % low and `mfu_vs_clock` 8 % high. Only without a rated clock is
    ``max_clock_mhz`` (NVML's ``nvmlDeviceGetMaxClockInfo``) used, and the source says so. (None, None)
    where the peak, the clock held or both reference clocks are unknown."""
    if not peak or not sm_clock_mhz or not (rated_clock_mhz or max_clock_mhz):
        return None, None
    if rated_clock_mhz:
        return (peak * sm_clock_mhz / rated_clock_mhz,
                f"peak x median SM clock {sm_clock_mhz:g} MHz / rated {rated_clock_mhz:g} MHz")
    return (peak * sm_clock_mhz / max_clock_mhz,
            f"peak x median SM clock {sm_clock_mhz:g} MHz / NVML's maximum {max_clock_mhz:g} MHz: no rated clock "
            f"in the table, so this peak may be low (the rated clock can sit below the maximum)")


def lookup_gpu(name: str, option: str = "--gpu") -> PeakEntry:
    """The table entry for `name`: an NVML name, a table key or display name ("h100-sxm", "H100 SXM"), or a
    key prefix ("a100", "h100") whose entries all have the same peaks; else a UsageError listing the keys
    (naming the command-line `option` that gave `name`)."""
    entry = match_gpu(name)
    if entry:
        return entry
    prefix = [e for e in _peak_table() if e.key.startswith(name.strip().lower())]
    if prefix and all(e.tflops == prefix[0].tflops for e in prefix):
        return prefix[0]
    keys = ", ".join(e.key for e in (prefix or _peak_table()))
    what = "is ambiguous (their peaks differ)" if prefix else "is not in the peak table"
    raise UsageError(f"{option} {name!r} {what}; choose one of {keys} (or pass --peak-tflops)")


def named_gpu(name: str, option: str = "--gpu") -> tuple[PeakEntry, str]:
    """(table entry, the name to give `resolve_peak`) for a GPU a user names (`lookup_gpu`): the name itself
    when it matches a row, so a MIG slice's name keeps its share of the chip; else the entry's display name
    (a key prefix such as "a100"). A MIG profile that does not exist on the chip is a UsageError (`mig_profile`)."""
    entry = lookup_gpu(name, option)
    mig_profile(entry, name, option)  # a MIG profile that does not exist on the chip: a UsageError
    return entry, name if match_gpu(name) else entry.display_name


def resolve_bandwidth(gpu_name: str | None, override_gbps: float | None) -> tuple[float | None, str]:
    """The peak memory bandwidth (GB/s) to divide by for MBU, and where it came from: `override_gbps` (the
    `--peak-gbps` option), else the table's datasheet figure for the GPU; None with the reason otherwise (no
    GPU, an unknown one, or a MIG slice, whose share of the memory system the table does not hold)."""
    if override_gbps is not None:
        if not (math.isfinite(override_gbps) and override_gbps > 0):
            raise UsageError(f"--peak-gbps must be a positive number, got {override_gbps!r}")
        return float(override_gbps), "--peak-gbps"
    if gpu_name is None:
        return None, "no GPU detected: no peak bandwidth; pass --peak-gbps (peak_gbps= in Python)"
    entry = match_gpu(gpu_name)
    if entry is None or entry.mem_gbps is None:
        return None, f"no memory bandwidth in the table for {gpu_name!r}; pass --peak-gbps (peak_gbps= in Python)"
    if is_mig(gpu_name):
        return None, f"{gpu_name}: a MIG slice's share of the memory bandwidth is not in the table; pass --peak-gbps"
    return entry.mem_gbps, f"table: {entry.display_name} {entry.mem_gbps:g} GB/s ({entry.mem_source})"
