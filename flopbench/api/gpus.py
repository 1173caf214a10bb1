"""`flopbench.gpus`: the GPU detected here, its peak-table entry and the whole dense peak table."""

from __future__ import annotations

from ..hardware.detect import detect_gpu
from ..hardware.peaks import load_peak_table, match_gpu


def gpus(index: int = 0) -> dict:
    """The GPU detected here, its table entry and the whole peak table: the `flopbench gpus --json` document."""
    gpu = detect_gpu(index)
    entry = match_gpu(gpu.name) if gpu else None
    return {
        "detected": gpu.as_dict() if gpu else None,
        "table_entry": entry.key if entry else None,
        "table": [{"key": e.key, "name": e.display_name, **{f"{d}_tflops": v for d, v in e.tflops.items()},
                   "source": e.source} for e in load_peak_table()],
    }


