"""Thresholds on a `run` result, for CI: each violation is a line saying what was expected and what was
measured; the CLI exits 1 when any check fails (usage errors stay exit 2). From Python:
`flopbench.run(config, checks=Thresholds(min_mfu=0.35))` puts the results in the document's `checks`.

- `min_mfu`: every `train_step` row reaches this MFU (a row without MFU — no peak known — fails: a
  threshold that cannot be checked must not pass silently).
- `max_counted_vs_analytic`: for every measured row, the relative gap between the FLOPs counted on the
  device and the analytic hardware FLOPs, after the gaps `flops.reconcile.explained_hardware_gap` accounts for
  (fused attention re-forming QK^T in backward), is at most this. The raw gap is reported beside it.
- `baseline` + `max_regression`: every (mode, checkpointing) row also in the baseline run keeps at least
  (1 - max_regression) of the baseline's MFU (or of its achieved TFLOP/s where MFU is null on either side).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import UsageError
from ..flops.reconcile import explained_hardware_gap
from ..model.config import ModelConfig
from ..output.records import read_records


@dataclass(frozen=True)
class Thresholds:
    """The thresholds a run must meet (None = not checked); see the module docstring.

    `max_vs_baseline` is "FILE:TOLERANCE", e.g. "results/baseline.json:0.05"."""

    min_mfu: float | None = None
    max_counted_vs_analytic: float | None = None
    max_vs_baseline: str | None = None

    def check_inputs(self) -> None:
        """Raise a UsageError now, before anything is measured, if the baseline cannot be used."""
        if self.max_vs_baseline:
            load_baseline_rows(parse_baseline(self.max_vs_baseline)[0])


@dataclass(frozen=True)
class CheckResult:
    check: str
    row: str  # "mode/checkpointing"
    expected: str
    measured: str
    ok: bool

    def as_dict(self) -> dict:
        return asdict(self)


def parse_baseline(spec: str) -> tuple[Path, float]:
    """`results/baseline.json:0.05` -> (path, 0.05)."""
    path, sep, tol = spec.rpartition(":")
    try:
        tolerance = float(tol)
    except ValueError:
        tolerance = -1.0
    if not sep or not path or not 0 <= tolerance < 1:
        raise UsageError(f"--max-vs-baseline {spec!r}: expected FILE:TOLERANCE with 0 <= TOLERANCE < 1, "
                         f"e.g. results/baseline.json:0.05")
    return Path(path), tolerance


def load_baseline_rows(path: Path) -> list[dict]:
    """Rows of a baseline: a `run --json` document, or a rows.jsonl file."""
    if path.suffix == ".jsonl":
        try:
            return read_records(path)
        except UsageError as e:
            raise UsageError(f"baseline {e}") from None
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise UsageError(f"baseline {path}: cannot read it ({e.strerror or e})") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"baseline {path}: not JSON ({e.msg}, line {e.lineno})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("rows"), list):
        raise UsageError(f"baseline {path}: expected a `flopbench run --json` document with a 'rows' list")
    return doc["rows"]


def _key(row: dict) -> str:
    return f"{row['mode']}/{row['checkpointing']}"


def run_checks(doc: dict, thresholds: Thresholds) -> list[CheckResult]:
    """Evaluate `thresholds` on a `run` document."""
    min_mfu, max_counted_vs_analytic = thresholds.min_mfu, thresholds.max_counted_vs_analytic
    baseline = thresholds.max_vs_baseline
    results: list[CheckResult] = []
    rows = doc["rows"]
    baseline_rows = None
    if baseline:
        path, tolerance = parse_baseline(baseline)
        baseline_rows = {_key(r): r for r in load_baseline_rows(path) if r.get("status") == "ok"}
    for row in rows:
        key = _key(row)
        if row["status"] != "ok":
            results.append(CheckResult("status", key, "ok", row["status"], False))
            continue
        if min_mfu is not None and row["mode"] == "train_step":
            mfu = row["mfu"]
            results.append(CheckResult("min-mfu", key, f">= {min_mfu:.3f}",
                                       "null (no peak known)" if mfu is None else f"{mfu:.3f}",
                                       mfu is not None and mfu >= min_mfu))
        if max_counted_vs_analytic is not None and row["hardware_flops"] is not None:
            cfg = ModelConfig(**row["config"])
            analytic = row["hardware_flops_analytic"]
            explained = explained_hardware_gap(cfg, row["batch_size"], row["seq_len"], row["mode"],
                                               row["hardware_flops"] - analytic)
            gap = abs(row["hardware_flops"] - analytic - explained) / analytic
            raw = (row["hardware_flops"] - analytic) / analytic
            results.append(CheckResult("max-counted-vs-analytic", key, f"<= {max_counted_vs_analytic:.4f}",
                                       f"{gap:.4f} unexplained (raw {raw:+.4f})", gap <= max_counted_vs_analytic))
        if baseline_rows is not None and key in baseline_rows:
            base = baseline_rows[key]
            metric = "mfu" if row["mfu"] is not None and base.get("mfu") is not None else "achieved_tflops"
            floor = (1 - tolerance) * base[metric]
            results.append(CheckResult(f"vs-baseline {metric}", key, f">= {floor:.4g} ({1 - tolerance:.0%} of "
                                       f"{base[metric]:.4g})", f"{row[metric]:.4g}", row[metric] >= floor))
    return results
