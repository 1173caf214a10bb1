"""`flopbench.sweep`: run `flopbench.run` over a grid read from a TOML spec, into one results file.

The grid is models x seq_len x batch_size x dtype x checkpointing (in that nesting order); device,
warm-up, iterations, compile, vocabulary padding, peak and GEMM are one value for the whole sweep.
Every grid point is one call of `flopbench.run` (nothing here measures anything itself); each
row it measures, with the sweep's timing options added as `timing` ({warmup, iters, compile, gemm,
peak_tflops}), is appended to `<out>/<name>/rows.jsonl` (and `rows.csv`) by `output.records.ResultWriter`
the moment it exists, so a crash or Ctrl-C keeps every finished row; the writer holds the folder's lock,
so a second sweep on it is refused. A CUDA out-of-memory error is a row with `status: "oom"` (run records
it) and the sweep goes on. `--resume` skips the rows the file already has, keyed on (model, seq_len,
batch_size, checkpointing, dtype, mode); OOM rows count as present (on the same machine they would run out
of memory again). Every kept row must have been measured as the spec says now (`stale_row`: a grid point of
the spec, the same model config and the same timing options); otherwise --resume refuses, naming the first
difference, rather than mix numbers of two different sweeps in one file.

Limits (checked when the spec is read, before anything is planned): at most `MAX_GRID_POINTS` grid points
(models x seq_len x batch_size x dtype x checkpointing), `iters` <= `MAX_ITERS`, `warmup` <= `MAX_WARMUP`.

The forward pass never checkpoints (run records it with checkpointing "none"), so it is timed
once per shape, in the first checkpointing mode of the spec's list.

Spec format (see `benchmarks/*.toml`): top-level keys only.

    name = "gpt2_family"                 # optional; default: the file name without .toml
    description = "..."                  # optional, free text
    models = ["gpt2", { name = "gpt2-8l", preset = "gpt2", n_layer = 8 }]   # presets or overrides
    seq_len = [1024]                     # each grid axis: a list (or one value); seq_len omitted:
                                         # each model's max positions
    batch_size = [8]
    checkpointing = ["none", "full"]
    dtype = ["bf16"]                     # auto, fp32, tf32, bf16, fp16
    device = "cuda"                      # auto, cuda, cpu
    warmup = 3
    iters = 10
    compile = false
    pad_vocab = 1
    peak_tflops = 989.4                  # optional; default: the table entry of the detected GPU
    gemm = true                          # measure the GEMM ceiling at every grid point
    modes = ["forward", "fwd_bwd", "train_step"]
    attention = "sdpa"                   # or "flex": FlexAttention with a block mask (run --attention)
    fp8_recipe = "tensorwise"            # or "rowwise": the float8 recipe of dtype "fp8" (run --fp8-recipe)
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UsageError, check_arguments
from ..files import read_text
from ..flops import analytic
from ..hardware.detect import environment
from ..model.config import (ATTENTION, CHECKPOINTING, DEVICES, DTYPES, FP8_RECIPES, MAX_ITERS, MAX_WARMUP, MODES,
                            OVERRIDABLE,
                            ModelConfig, pad_vocab, validate_shapes)
from ..model.presets import resolve_config
from ..output.records import ResultWriter, check_folder_name, row_key
from ..output.text import Progress
from ..timing.device import ModelDoesNotFit, free_memory, resolve_device, resolve_dtype
from .run import RunOptions, run

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the tomli backport (a dependency there)
    import tomli as tomllib

#: Keys of a spec and their defaults (grid axes are tuples). `models` has no default.
DEFAULTS = {
    "name": None, "description": "",
    "seq_len": (None,), "batch_size": (8,), "checkpointing": ("none", "full"), "dtype": ("auto",),
    "device": "auto", "warmup": 3, "iters": 10, "compile": False, "pad_vocab": 1, "peak_tflops": None,
    "gemm": True, "modes": MODES, "attention": "sdpa", "fp8_recipe": FP8_RECIPES[0],
}
SPEC_KEYS = ("models", *DEFAULTS)
MODEL_TABLE_KEYS = ("name", "preset", *OVERRIDABLE)
#: The options every row of one sweep shares, stored in each row as `timing` and compared on --resume.
TIMING_FIELDS = ("warmup", "iters", "compile", "gemm", "peak_tflops", "attention", "fp8_recipe")
#: The most grid points of a spec: a larger grid would plan for minutes and run for years.
MAX_GRID_POINTS = 10_000


@dataclass(frozen=True)
class Spec:
    path: Path
    name: str
    models: tuple[ModelConfig, ...]
    seq_len: tuple[int | None, ...]
    batch_size: tuple[int, ...]
    checkpointing: tuple[str, ...]
    dtype: tuple[str, ...]  # resolved for the device (no "auto")
    device: str
    warmup: int
    iters: int
    compile: bool
    pad_vocab: int
    peak_tflops: float | None
    gemm: bool
    modes: tuple[str, ...]
    description: str = ""
    attention: str = "sdpa"
    fp8_recipe: str = FP8_RECIPES[0]


@dataclass(frozen=True)
class Point:
    """One grid point: one call of `run`, timing `modes` in one checkpointing mode."""

    cfg: ModelConfig  # padded as run pads it, so cfg.name is what the rows record as "model"
    seq_len: int
    batch_size: int
    dtype: str
    checkpointing: str
    modes: tuple[str, ...] = field(default=())

    def key(self, mode: str) -> tuple:
        """The resume key of the row this point measures for `mode` (see `row_key`)."""
        ckpt = "none" if mode == "forward" else self.checkpointing
        return (self.cfg.name, self.seq_len, self.batch_size, ckpt, self.dtype, mode)

    @property
    def label(self) -> str:
        return f"{self.cfg.name} T={self.seq_len} B={self.batch_size} {self.dtype} ckpt={self.checkpointing}"


# --------------------------------------------------------------------------------------------------
# Reading and checking a spec
# --------------------------------------------------------------------------------------------------


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _positive_int(v) -> bool:
    return _is_int(v) and v > 0


def check_grid_size(path: Path, n_models: int, *axes) -> None:
    """Refuse a grid of more than `MAX_GRID_POINTS` points (the product of the axes' lengths) before planning."""
    size = n_models
    for axis in axes:
        size *= len(axis)
    if size > MAX_GRID_POINTS:
        raise UsageError(f"spec {path}: {size:,} grid points (models x seq_len x batch_size x dtype x "
                         f"checkpointing), more than the limit of {MAX_GRID_POINTS:,}; split the sweep")


def load_spec(path: str | Path) -> Spec:
    """Read and check a sweep spec; any problem is a `UsageError` naming the file, key and value."""
    path = Path(path)
    try:
        raw = tomllib.loads(read_text(path))
    except UsageError as e:
        raise UsageError(f"--spec {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"--spec {path}: not TOML ({e})") from None

    def bad(key: str, value, allowed: str) -> UsageError:
        return UsageError(f"spec {path}: {key} = {value!r} is not allowed: {allowed}")

    unknown = sorted(set(raw) - set(SPEC_KEYS))
    if unknown:
        raise UsageError(f"spec {path}: unknown key {unknown[0]!r}; allowed keys: {', '.join(SPEC_KEYS)}")
    if "models" not in raw:
        raise UsageError(f"spec {path}: missing key 'models' (a list of presets or model tables)")
    get = {**DEFAULTS, **raw}.__getitem__

    def axis(key: str, ok, allowed: str) -> tuple:
        value = get(key)
        items = tuple(value) if isinstance(value, (list, tuple)) else (value,)
        if not items:
            raise bad(key, value, "give at least one value")
        if len(items) > MAX_GRID_POINTS:
            check_grid_size(path, len(items))
        for item in items:
            if not ok(item):
                raise bad(key, item, allowed)
        if len(set(items)) != len(items):
            raise bad(key, value, "values must not repeat")
        return items

    def scalar(key: str, ok, allowed: str):
        value = get(key)
        if not ok(value):
            raise bad(key, value, allowed)
        return value

    name = scalar("name", lambda v: v is None or (isinstance(v, str) and v.strip()), "a non-empty folder name")
    name = path.stem if name is None else name
    if check_folder_name(name):
        shown = name if len(name) <= 40 else f"{name[:37]}..."
        raise UsageError(f"spec {path}: name = {shown!r} is not allowed: {check_folder_name(name)} (the results "
                         f"go to --out/<name>)")
    try:
        device = resolve_device(scalar("device", lambda v: v in DEVICES, f"one of {', '.join(DEVICES)}"))
        dtype_names = axis("dtype", lambda v: v in ("auto", *DTYPES), f"auto, {', '.join(DTYPES)}")
        dtypes = tuple(dict.fromkeys(resolve_dtype(d, device) for d in dtype_names))
    except UsageError as e:
        raise UsageError(f"spec {path}: {e}") from None
    seq_len = axis("seq_len", lambda v: v is None or _positive_int(v), "positive integers")
    batch_size = axis("batch_size", _positive_int, "positive integers")
    checkpointing = axis("checkpointing", lambda v: v in CHECKPOINTING, ", ".join(CHECKPOINTING))
    raw_models = get("models")
    check_grid_size(path, len(raw_models) if isinstance(raw_models, list) else 1, seq_len, batch_size, dtypes,
                    checkpointing)
    padding = scalar("pad_vocab", _positive_int, "a positive integer (1 = no padding)")
    models = _models(raw_models, path, padding)
    peak = scalar("peak_tflops", lambda v: v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)
                                                         and 0 < v < float("inf")), "a positive number")
    return Spec(
        path=path,
        name=name,
        description=scalar("description", lambda v: isinstance(v, str), "text"),
        models=models,
        seq_len=seq_len,
        batch_size=batch_size,
        checkpointing=checkpointing,
        dtype=dtypes,
        device=str(device),
        warmup=scalar("warmup", lambda v: _is_int(v) and 0 <= v <= MAX_WARMUP, f"an integer from 0 to {MAX_WARMUP:,}"),
        iters=scalar("iters", lambda v: _is_int(v) and 1 <= v <= MAX_ITERS, f"an integer from 1 to {MAX_ITERS:,}"),
        compile=scalar("compile", lambda v: isinstance(v, bool), "true or false"),
        pad_vocab=padding,
        peak_tflops=None if peak is None else float(peak),
        gemm=scalar("gemm", lambda v: isinstance(v, bool), "true or false"),
        modes=axis("modes", lambda v: v in MODES, f"{', '.join(MODES)}"),
        attention=scalar("attention", lambda v: v in ATTENTION, f"one of {', '.join(ATTENTION)}"),
        fp8_recipe=scalar("fp8_recipe", lambda v: v in FP8_RECIPES, f"one of {', '.join(FP8_RECIPES)}"),
    )


def _models(value, path: Path, pad_vocab_multiple: int) -> tuple[ModelConfig, ...]:
    """The spec's `models`: preset names, or tables {name, preset, overrides...}; padded as run pads."""
    items = value if isinstance(value, list) else [value]
    if not items:
        raise UsageError(f"spec {path}: models = [] is not allowed: give at least one model")
    configs = []
    for item in items:
        try:
            if isinstance(item, str):
                cfg = resolve_config(item)
            elif isinstance(item, dict):
                unknown = sorted(set(item) - set(MODEL_TABLE_KEYS))
                if unknown:
                    raise UsageError(f"model table key {unknown[0]!r} is unknown; allowed: "
                                     f"{', '.join(MODEL_TABLE_KEYS)}")
                if not isinstance(item.get("name"), str) or not isinstance(item.get("preset"), str):
                    raise UsageError(f"model table {item!r} needs name = \"...\" and preset = \"...\"")
                overrides = {k: v for k, v in item.items() if k not in ("name", "preset")}
                cfg = resolve_config(item["preset"], **overrides).replace(name=item["name"])
            else:
                raise UsageError(f"models entry {item!r} is not allowed: give a preset name or a table")
            configs.append(pad_vocab(cfg, pad_vocab_multiple))
        except UsageError as e:
            raise UsageError(f"spec {path}: {e}") from None
    names = [c.name for c in configs]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise UsageError(f"spec {path}: model {repeated[0]!r} appears twice; give each model a distinct name")
    return tuple(configs)


def grid(spec: Spec) -> list[Point]:
    """Every grid point of `spec`, each shape checked (`validate_shapes`) before anything runs."""
    check_grid_size(spec.path, len(spec.models), spec.seq_len, spec.batch_size, spec.dtype, spec.checkpointing)
    points = []
    for cfg in spec.models:
        for T in spec.seq_len:
            T = cfg.max_seq_len if T is None else T
            for B in spec.batch_size:
                try:
                    validate_shapes(cfg, B, T)
                except UsageError as e:
                    raise UsageError(f"spec {spec.path}: model {cfg.name}: {e}") from None
                for dtype in spec.dtype:
                    for i, ckpt in enumerate(spec.checkpointing):
                        modes = tuple(m for m in spec.modes if m != "forward" or i == 0)
                        if modes:
                            points.append(Point(cfg, T, B, dtype, ckpt, modes))
    return points


# --------------------------------------------------------------------------------------------------
# Running a sweep
# --------------------------------------------------------------------------------------------------


def _options(spec: Spec, point: Point, modes: tuple[str, ...]) -> RunOptions:
    # pad_vocab=1: point.cfg is already padded (`model.config.pad_vocab` in `_models`).
    return RunOptions(
        batch_size=point.batch_size, seq_len=point.seq_len, device=spec.device, dtype=point.dtype,
        checkpointing=point.checkpointing, warmup=spec.warmup, iters=spec.iters, peak_tflops=spec.peak_tflops,
        compile=spec.compile, pad_vocab=1, gemm=spec.gemm, out=None, modes=modes, attention=spec.attention,
        fp8_recipe=spec.fp8_recipe,
    )


def _oom_rows(point: Point, modes: tuple[str, ...], spec: Spec, error: str) -> list[dict]:
    """Rows for a grid point whose model did not fit at all (run stops before timing anything)."""
    return [{"run_id": None, "model": point.cfg.name, "batch_size": point.batch_size, "seq_len": point.seq_len,
             "device": spec.device, "dtype": point.dtype, "compile": spec.compile, "peak_tflops": spec.peak_tflops,
             "gemm_tflops": None, "mode": m, "checkpointing": point.key(m)[3], "status": "oom", "error": error,
             "config": point.cfg.as_dict()} for m in modes]


def _weight(spec: Spec, point: Point, modes: tuple[str, ...]) -> float:
    """Rough work of a grid point, for the ETA: analytic training FLOPs x steps (counted + warm-up + timed)."""
    steps = spec.warmup + spec.iters + 1
    return analytic.train_flops(point.cfg, point.batch_size, point.seq_len) * len(modes) * steps


_ENV_FIELDS = ("device", "torch", "cuda_runtime")


def _environment_changes(old: dict, new: dict) -> list[str]:
    pairs = [(k, old.get(k), new.get(k)) for k in _ENV_FIELDS]
    pairs.append(("gpu", (old.get("gpu") or {}).get("name"), (new.get("gpu") or {}).get("name")))
    return [f"{k}: {a} -> {b}" for k, a, b in pairs if a != b]


def timing_of(spec: Spec) -> dict:
    """The `timing` dict every row of `spec` carries: the options that change its numbers (`TIMING_FIELDS`)."""
    return {k: getattr(spec, k) for k in TIMING_FIELDS}


def stale_row(row: dict, spec: Spec, by_key: dict[tuple, Point]) -> str | None:
    """How a row already in the results differs from what `spec` would measure now, or None. `by_key`:
    the spec's grid points by the `row_key` of each row they measure (`Point.key`).

    The row must be a grid point of the spec (its `row_key`), with the same model config (the full
    `ModelConfig` dict) and the same timing options (`timing_of`); a row without `config` or `timing`
    (written by an older flopbench) is unknown, which is a difference too."""
    model = row["model"]
    cfg = next((c for c in spec.models if c.name == model), None)
    if cfg is None:
        return f"model {model!r} is not in the spec (models: {', '.join(c.name for c in spec.models)})"
    point = by_key.get(row_key(row))
    if point is None:
        choices = {"seq_len": [cfg.max_seq_len if t is None else t for t in spec.seq_len],
                   "batch_size": list(spec.batch_size), "dtype": list(spec.dtype),
                   "checkpointing": list(spec.checkpointing), "mode": list(spec.modes)}
        field_ = next((f for f, allowed in choices.items() if row[f] not in allowed), "checkpointing")
        return f"model {model}: {field_} {row[field_]!r} is not in the spec's {choices[field_]}"
    old_cfg, new_cfg = row.get("config"), json.loads(json.dumps(point.cfg.as_dict(), default=str))
    if not isinstance(old_cfg, dict):
        return f"model {model}: the row has no config (written by an older flopbench), so its config is unknown"
    for name in new_cfg:
        if old_cfg.get(name, "missing") != new_cfg[name]:
            return (f"model {model}: config.{name} {old_cfg.get(name, 'missing')!r} in the file vs "
                    f"{new_cfg[name]!r} in the spec")
    timing = row.get("timing")
    if not isinstance(timing, dict):
        return (f"model {model}: the row has no timing options ({', '.join(TIMING_FIELDS)}: written by an older "
                f"flopbench), so they are unknown")
    for name, value in timing_of(spec).items():
        if name not in timing:
            return f"model {model}: the row has no timing.{name}, so it is unknown"
        if timing[name] != value:
            return f"model {model}: {name} {timing[name]!r} in the file vs {value!r} in the spec"
    return None


def run_sweep(spec: Spec, out: str | Path = "results", resume: bool = False, stderr=None,
              progress: Progress | None = None) -> dict:
    """Run every grid point of `spec` not yet in `<out>/<spec.name>/rows.jsonl` (with `resume`).

    Progress and warnings go to `progress` (default: an `output.text.Progress` on `stderr`, default
    sys.stderr): on a terminal a rich.progress bar weighted by each point's FLOPs, with the point, its row
    and step, and an ETA; elsewhere one line per grid point with the share done and the ETA.
    Ctrl-C (KeyboardInterrupt) is re-raised after saying what was kept; every finished row is on disk.
    """
    progress = progress or Progress(stderr or sys.stderr)
    points = grid(spec)
    env = environment(resolve_device(spec.device))
    try:
        with ResultWriter(out, spec.name, env, resume=resume, fresh=False, warn=progress.line) as writer:
            return _run_points(spec, points, writer, env, progress)
    finally:
        progress.close()


def _run_points(spec: Spec, points: list[Point], writer: ResultWriter, env: dict, bar: Progress) -> dict:
    """The body of `run_sweep`, with the folder's `writer` open (and locked)."""
    jsonl = Path(writer.files["rows.jsonl"])
    by_key = {p.key(m): p for p in points for m in p.modes}
    for line, row in enumerate(writer.rows, 1):
        problem = stale_row(row, spec, by_key)
        if problem:
            raise UsageError(f"--resume: {jsonl} row {line} was not measured as {spec.path} says now: {problem}; "
                             f"use a new --out, or drop those rows from {jsonl}")
    old_env = writer.previous_environment
    if old_env and _environment_changes(old_env, env):
        bar.line(f"warning: resuming on another environment ({'; '.join(_environment_changes(old_env, env))}); "
                 f"{writer.files['environment.json']} describes the first")

    done = {row_key(r) for r in writer.rows}
    todo = [(p, tuple(m for m in p.modes if p.key(m) not in done)) for p in points]
    todo = [(p, modes) for p, modes in todo if modes]
    skipped = sum(len(p.modes) for p in points) - sum(len(m) for _, m in todo)
    if skipped:
        bar.line(f"resume: {skipped} rows already in {jsonl}, {len(todo)} of {len(points)} grid points to run")
    first_new = len(writer.rows)
    timing = timing_of(spec)

    def keep(row: dict) -> None:
        writer.append({**row, "timing": timing})

    warned: set[str] = set()
    total, done = sum(_weight(spec, p, m) for p, m in todo), 0
    bar.start(f"sweep {spec.name}", total, steps=False)  # weighted by FLOPs: a percentage, not a count
    try:
        for i, (point, modes) in enumerate(todo, 1):
            where = f"sweep {spec.name} {i}/{len(todo)} {point.label}"
            bar.update(done, where)

            def progress(msg: str, where=where) -> None:
                if msg.startswith("warning:"):
                    if msg not in warned:
                        warned.add(msg)
                        bar.line(msg)
                else:
                    bar.update(done, f"{where}: {msg.split(':')[0].rstrip(' .')}")

            def on_step(s, where=where) -> None:
                bar.update(done, f"{where}: {s.mode}/{s.checkpointing} step {s.done}/{s.warmup + s.iters}")

            started = time.monotonic()
            try:
                run(point.cfg, _options(spec, point, modes), progress=progress, on_row=keep, on_step=on_step)
            except ModelDoesNotFit as e:
                bar.line(f"{point.label}: {e}; recorded as oom")
                for row in _oom_rows(point, modes, spec, str(e)):
                    keep(row)
            free_memory(resolve_device(spec.device))  # the finished model's memory, before the next
            done += _weight(spec, point, modes)
            bar.update(done, where)
            if not bar.live:  # a log: one line per grid point, not a bar
                bar.line(f"{where}: done in {time.monotonic() - started:.1f} s; {100 * done / total:.0f}% of the "
                         f"sweep, ETA {bar.eta()}")
    except KeyboardInterrupt:
        bar.close()
        bar.line(f"interrupted: {writer.appended} new rows kept in {jsonl} ({len(writer.rows)} in all); "
                 f"run again with --resume to continue")
        raise
    bar.finish(f"sweep {spec.name}: {len(todo)} grid points in {bar.elapsed():.1f} s" if todo else None)
    new_rows = writer.rows[first_new:]
    statuses = [r["status"] for r in new_rows]
    return {
        "spec": str(spec.path), "name": spec.name, "description": spec.description, "files": writer.files,
        "grid_points": len(points), "grid_points_run": len(todo), "rows_skipped": skipped,
        "rows_total": len(writer.rows), "status_counts": {s: statuses.count(s) for s in sorted(set(statuses))},
        "rows": new_rows,
    }


def sweep(spec: Spec | str | Path, out: str | Path = "results", resume: bool = False,
          progress: Progress | None = None) -> dict:
    """Run a sweep spec (a TOML path or a loaded `Spec`): the `flopbench sweep --json` document.

    Every row is appended to `<out>/<spec name>/rows.jsonl` as it is measured; `resume=True` skips rows
    already there. `progress`: where the progress goes (an `output.text.Progress`; default stderr).
    `flopbench.to_dataframe(doc)` gives the new rows as a DataFrame."""
    check_arguments(sweep, {"spec": spec, "out": out, "resume": resume, "progress": progress})
    return run_sweep(spec if isinstance(spec, Spec) else load_spec(spec), out=out, resume=resume, progress=progress)
