"""Thresholds on a `run` result, for CI: each violation is a line saying what was expected and what was
measured; the CLI exits 1 when any check fails (usage errors stay exit 2). From Python:
`flopbench.run(config, checks=Thresholds(min_mfu=0.35))` puts the results in the document's `checks`.

- `min_mfu`: every `train_step` row without checkpointing reaches this MFU (a row without MFU — no peak
  known — fails: a threshold that cannot be checked must not pass silently). Checkpointed rows are not held
  to it: their MFU leaves out the recomputed forward by definition.
- `min_hfu`: every `train_step` row with full checkpointing reaches this HFU (recompute included).
- `max_counted_vs_analytic`: for every measured row, the relative gap between the FLOPs counted on the
  device and the analytic hardware FLOPs, after the gaps `flops.reconcile.explained_hardware_gap` accounts for
  (fused attention re-forming QK^T in backward), is at most this. The raw gap is reported beside it.
- `baseline` + `max_regression`: every row keeps at least (1 - max_regression) of the MFU of the baseline
  row measured the same way — same model, seq_len, batch_size, dtype, mode and checkpointing
  (`output.records.KEY_FIELDS`) — or of its achieved TFLOP/s where MFU is null on either side. A row with
  no such baseline row (or only one that did not run) is a check line that passes but says so. The baseline
  is read and every row checked (`check_inputs`) before anything is measured: its MFU and achieved TFLOP/s
  must be positive and finite (an MFU of 0 would pass every row, an infinite one fail every row), and no
  two rows may be measured the same way (which one to hold the run to would be a guess).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import UsageError
from ..files import read_text
from ..flops.reconcile import explained_hardware_gap
from ..model.config import ModelConfig
from ..output.records import KEY_FIELDS, check_row, read_records, row_key

#: The fields of a baseline row the comparison reads (`output.records.FIELD_KINDS`: their types).
BASELINE_FIELDS = (*KEY_FIELDS, "status", "mfu", "achieved_tflops")


@dataclass(frozen=True)
class Thresholds:
    """The thresholds a run must meet (None = not checked); see the module docstring.

    `max_vs_baseline` is "FILE:TOLERANCE", e.g. "results/baseline.json:0.05"."""

    min_mfu: float | None = None
    min_hfu: float | None = None
    max_counted_vs_analytic: float | None = None
    max_vs_baseline: str | None = None

    def check_inputs(self) -> None:
        """Raise a UsageError now, before anything is measured, if the baseline cannot be used."""
        if self.max_vs_baseline:
            load_baseline_rows(parse_baseline(self.max_vs_baseline)[0])

    def check_plan(self, plan) -> None:
        """Raise a UsageError if `min_mfu` / `min_hfu` would hold no row of the run's `plan` ((mode,
        checkpointing) pairs): a threshold that checks nothing would pass silently."""
        for name, floor, ckpt in (("--min-mfu", self.min_mfu, "none"), ("--min-hfu", self.min_hfu, "full")):
            if floor is not None and ("train_step", ckpt) not in plan:
                raise UsageError(f"{name} {floor}: it checks train_step rows with checkpointing {ckpt}, and this run "
                                 f"times none (see --checkpointing and the modes); drop it or time those rows")


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
    """Rows of a baseline: a `run --json` document, or a rows.jsonl file; every row checked
    (`BASELINE_FIELDS`: positive, finite MFU and TFLOP/s; a row that ran has its achieved TFLOP/s; no two rows
    with the same `row_key`), else a one-line `UsageError`."""
    if path.suffix == ".jsonl":
        try:
            rows = read_records(path, need=BASELINE_FIELDS)
        except UsageError as e:
            raise UsageError(f"baseline {e}") from None
    else:
        try:
            text = read_text(path)
        except UsageError as e:
            raise UsageError(f"baseline {e}") from None
        try:
            doc = json.loads(text)
        except (ValueError, RecursionError) as e:
            raise UsageError(f"baseline {path}: not JSON ({getattr(e, 'msg', type(e).__name__)}, line "
                             f"{getattr(e, 'lineno', '?')})") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("rows"), list):
            raise UsageError(f"baseline {path}: expected a `flopbench run --json` document with a 'rows' list")
        rows = doc["rows"]
        for i, row in enumerate(rows):
            problem = check_row(row, BASELINE_FIELDS)
            if problem:
                raise UsageError(f"baseline {path}: rows[{i}]: {problem}")
    first: dict[tuple, int] = {}
    for i, row in enumerate(rows):
        if row["status"] == "ok" and row.get("achieved_tflops") is None:
            raise UsageError(f"baseline {path}: row {i + 1} ({_label(row)}) ran (status ok) but has no "
                             f"achieved_tflops to compare with")
        seen = first.setdefault(row_key(row), i + 1)
        if seen != i + 1:
            raise UsageError(f"baseline {path}: rows {seen} and {i + 1} are both {_label(row)}; keep one of them")
    return rows


def _label(row: dict) -> str:
    """"model T=.. B=.. dtype mode/checkpointing" of a row."""
    return f"{row['model']} T={row['seq_len']} B={row['batch_size']} {row['dtype']} {_key(row)}"


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
        baseline_rows = {row_key(r): r for r in load_baseline_rows(path)}
    for row in rows:
        key = _key(row)
        if row["status"] != "ok":
            results.append(CheckResult("status", key, "ok", row["status"], False))
            continue
        for name, floor, field, ckpt in (("min-mfu", min_mfu, "mfu", "none"),
                                         ("min-hfu", thresholds.min_hfu, "hfu", "full")):
            if floor is not None and row["mode"] == "train_step" and row["checkpointing"] == ckpt:
                value = row[field]
                results.append(CheckResult(name, key, f">= {floor:.3f}",
                                           "null (no peak known)" if value is None else f"{value:.3f}",
                                           value is not None and value >= floor))
        if max_counted_vs_analytic is not None and row["hardware_flops"] is not None:
            cfg = ModelConfig(**row["config"])
            analytic = row["hardware_flops_analytic"]
            explained = explained_hardware_gap(cfg, row["batch_size"], row["seq_len"], row["mode"],
                                               row["hardware_flops"] - analytic)
            gap = abs(row["hardware_flops"] - analytic - explained) / analytic
            raw = (row["hardware_flops"] - analytic) / analytic
            results.append(CheckResult("max-counted-vs-analytic", key, f"<= {max_counted_vs_analytic:.4f}",
                                       f"{gap:.4f} unexplained (raw {raw:+.4f})", gap <= max_counted_vs_analytic))
        if baseline_rows is not None:
            results.append(_vs_baseline(row, baseline_rows.get(row_key(row)), tolerance))
    return results


def _vs_baseline(row: dict, base: dict | None, tolerance: float) -> CheckResult:
    """The baseline check of one row that ran; `base`: the baseline row measured the same way, if any."""
    key = _key(row)
    if base is None or base["status"] != "ok":
        why = "no baseline row" if base is None else f"the baseline row has status {base['status']}"
        return CheckResult("vs-baseline", key, "a baseline row that ran", f"{why} for {_label(row)}; not compared",
                           True)
    metric = "mfu" if row["mfu"] is not None and base.get("mfu") is not None else "achieved_tflops"
    floor = (1 - tolerance) * base[metric]
    return CheckResult(f"vs-baseline {metric}", key, f">= {floor:.4g} ({1 - tolerance:.0%} of {base[metric]:.4g})",
                       f"{row[metric]:.4g}", row[metric] >= floor)
