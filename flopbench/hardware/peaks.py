"""The dense peak table (``peaks.csv``: data, not code) and the one place it is read.

``peaks.csv`` holds *dense* TFLOP/s per compute dtype, from NVIDIA's datasheets and whitepapers, with a
name pattern and a source per row. Where a datasheet prints only the 2:4-sparse figure, the table holds
half of it and says so. ``bf16``/``fp16`` are tensor-core rates with FP32 accumulate (what PyTorch uses);
``fp32`` is the plain CUDA-core rate, ``tf32`` the tensor-core rate for float32 matmuls with TF32
allowed. An empty cell means "unsupported or unknown" and becomes ``None``: a wrong peak is worse than
none (llm.c's ``mfu.h`` takes the same line). `resolve_peak` is the one lookup every command uses.
No torch here: `estimate` and `gpus --lookup` read the table without it.
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




def lookup_gpu(name: str) -> PeakEntry:
    """The table entry for `name`: an NVML name, a table key or display name ("h100-sxm", "H100 SXM"), or a
    key prefix ("a100", "h100") whose entries all have the same peaks; else a UsageError listing the keys."""
    entry = match_gpu(name)
    if entry:
        return entry
    prefix = [e for e in _peak_table() if e.key.startswith(name.strip().lower())]
    if prefix and all(e.tflops == prefix[0].tflops for e in prefix):
        return prefix[0]
    keys = ", ".join(e.key for e in (prefix or _peak_table()))
    what = "is ambiguous (their peaks differ)" if prefix else "is not in the peak table"
    raise UsageError(f"--gpu {name!r} {what}; choose one of {keys} (or pass --peak-tflops)")
