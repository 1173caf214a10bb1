"""`flopbench.explain`: where the MFU goes. A step timed as `run` times it, then profiled, every microsecond of
its time given to a class of work (`timing.breakdown`), and a waterfall from the dense peak down to the row's
MFU.

For each checkpointing mode asked for (`--checkpointing both` / `all` puts them side by side):
1. `run` times `mode` (default `train_step`) on the model and shape given: median step time, model and
   hardware FLOPs, MFU, the SM clock held (on a GPU with NVML);
2. on the same model, still warm, `profile_steps` more steps run under `torch.profiler`, each wrapped in
   `record_function(timing.breakdown.STEP)` and synchronized: CUDA kernels on a GPU, operators on the CPU;
   their time is attributed to the classes of `timing.breakdown.CLASSES` (idle where nothing ran), and
   the shares of the profiled steps scale the timed median (the profiler's own overhead is not timed);
3. FlopCounterMode counts one eager step per aten op (`flops.counter.count_step`): the FLOPs of the gemm
   and attention classes, matched to kernels by the op's class (an op's FLOPs go to the class its name
   falls in; kernels are not matched one by one, so a kernel that runs an op of another class is not
   seen);
4. the waterfall (`timing.breakdown.waterfall`, formula in its docstring) ends at the row's MFU exactly.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError, check_choice, check_int, options_from
from ..model.config import CHECKPOINTING_CHOICES, MAX_PROFILE_STEPS, MODES, ModelConfig
from ..model.presets import as_config
from ..output.records import ResultWriter, folder_safe
from ..timing import breakdown
from ..timing.clock import Clock
from ..timing.step import Stepper
from .run import RunOptions, run


@dataclass
class ExplainOptions:
    batch_size: int = 8
    seq_len: int | None = None  # None: the model's max positions
    device: str = "auto"
    dtype: str = "auto"
    checkpointing: str = "none"
    mode: str = "train_step"
    compile: bool = False
    warmup: int = 3
    iters: int = 10
    profile_steps: int = 3
    peak_tflops: float | None = None
    pad_vocab: int = 1
    out: str | Path | None = "results"  # None: write nothing


#: The kernels (operators on the CPU) a breakdown lists by their share of the profiled time.
TOP = 15


def profile_step(stepper: Stepper, mode: str, steps: int) -> dict:
    """`steps` steps of `mode` under torch.profiler: the class times (µs, idle included) summed over the
    steps, the mean profiled step (its window, ms), and the `TOP` kernels (operators) by share."""
    from torch.profiler import ProfilerActivity, profile, record_function

    # libkineto writes a "profiler_start" / "profiler_stop" line to stderr around every recording unless its
    # log level is raised (read once, when the profiler first starts); a user's own setting is kept
    os.environ.setdefault("KINETO_LOG_LEVEL", "99")
    cuda = stepper.device.type == "cuda"
    clock = Clock(stepper.device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            with record_function(breakdown.STEP):
                stepper.step(mode)
                clock.sync()
    spans, windows = breakdown.spans_of(prof, stepper.device.type)
    by_name: dict[str, float] = {}
    for window in windows:
        for name, us in breakdown.exclusive_times(spans, window).items():
            by_name[name] = by_name.get(name, 0.0) + us
    times = dict.fromkeys(breakdown.NAMES, 0.0)
    for name, us in by_name.items():
        times["idle" if name == "idle" else breakdown.classify(name)] += us
    total = sum(by_name.values()) or 1.0
    top = [{"name": name, "class": breakdown.classify(name), "share": us / total}
           for name, us in sorted(by_name.items(), key=lambda kv: -kv[1]) if name != "idle"][:TOP]
    return {"times_us": times, "profiled_step_ms": sum(b - a for a, b in windows) / max(len(windows), 1) / 1e3,
            "steps": len(windows), "top": top}


def explain_row(record: dict, stepper: Stepper, mode: str, steps: int) -> dict:
    """The breakdown of one measured `run` row: categories, waterfall, and what they rest on."""
    profiled = profile_step(stepper, mode, steps)
    counted = stepper.count(mode)
    for t in profiled["top"]:
        t["time_ms"] = t["share"] * record["time_ms"]["median_ms"]
    flops = breakdown.class_flops(counted.by_op)
    shares = breakdown.shares_of(profiled["times_us"])
    step_s = record["time_ms"]["median_ms"] / 1e3
    peak, clock_peak = record["peak_tflops"], record.get("peak_clock_tflops")
    kappa = clock_peak / peak if peak and clock_peak else None
    cats = [c.as_dict() for c in breakdown.categories(shares, flops, step_s)]
    waterfall = (breakdown.waterfall(shares, flops, record["model_flops"], step_s, peak, kappa) if peak else None)
    return {"mode": mode, "checkpointing": record["checkpointing"], "step_ms": step_s * 1e3,
            "profiled_step_ms": profiled["profiled_step_ms"], "profiled_steps": profiled["steps"],
            "mfu": record["mfu"], "hfu": record["hfu"], "model_flops": record["model_flops"],
            "hardware_flops": record["hardware_flops"], "clock_ratio": kappa, "categories": cats,
            "waterfall": waterfall, "flops_by_op": counted.by_op, "top": profiled["top"],
            "waterfall_note": None if peak else "no peak: pass peak_tflops (--peak-tflops) for a waterfall",
            "matching": MATCHING, "unmatched": unmatched(cats)}


#: How FlopCounterMode's per-op FLOPs meet the profiled kernels (said in every explained row).
MATCHING = ("by class: an aten op's FLOPs go to the class its name falls in (timing.breakdown.classify), and that "
            "class's time is its kernels' (operators') time; not kernel by kernel through correlation ids")


def unmatched(cats: list[dict]) -> list[str]:
    """The classes that hold counted FLOPs but no profiled time (their kernels were classified elsewhere):
    their achieved TFLOP/s cannot be known."""
    return [c["name"] for c in cats if c["flops"] and not c["time_ms"]]


def explain(config: ModelConfig | str, options: ExplainOptions | None = None, progress=None, **fields) -> dict:
    """Time, profile and explain one mode of `config` (a `ModelConfig` or a preset name): the `flopbench
    explain --json` document (see the module docstring). Options are `ExplainOptions` fields, as keywords
    or one `ExplainOptions`."""
    cfg = as_config(config)
    options = options_from(ExplainOptions, options, fields, "explain")
    check_choice("--mode", options.mode, MODES)
    check_choice("--checkpointing", options.checkpointing, CHECKPOINTING_CHOICES)
    if check_int("profile_steps", options.profile_steps, 1) > MAX_PROFILE_STEPS:
        raise UsageError(f"profile_steps={options.profile_steps}: at most {MAX_PROFILE_STEPS}")
    if options.mode == "forward" and options.checkpointing != "none":
        raise UsageError(f"--checkpointing {options.checkpointing}: a forward is not checkpointed; use none with "
                         f"--mode forward")
    progress = progress or (lambda msg: print(msg, file=sys.stderr, flush=True))
    run_options = RunOptions(batch_size=options.batch_size, seq_len=options.seq_len, device=options.device,
                             dtype=options.dtype, checkpointing=options.checkpointing, warmup=options.warmup,
                             iters=options.iters, peak_tflops=options.peak_tflops, compile=options.compile,
                             pad_vocab=options.pad_vocab, gemm=False, out=None, modes=(options.mode,))
    explained: list[dict] = []
    opened: dict = {}  # the results writer, opened once run's header is known, and the explain run_id

    def on_start(doc: dict) -> None:
        run_id = folder_safe(f"{time.strftime('%Y%m%d-%H%M%S')}-{doc['config']['name']}-explain-"
                             f"{doc['device'].split(':')[0]}-{doc['dtype']}")
        opened.update(run_id=run_id, writer=ResultWriter(options.out, run_id, doc["environment"]) if options.out
                      else None, header=doc)

    def on_measured(stepper: Stepper, record: dict) -> None:
        progress(f"profiling {options.mode} (checkpointing {record['checkpointing']}): "
                 f"{options.profile_steps} steps ...")
        explained.append(explain_row(record, stepper, options.mode, options.profile_steps))
        if opened.get("writer"):  # each row as soon as it is explained: a later failure keeps it
            opened["writer"].append(_row(opened["run_id"], opened["header"], explained[-1]))

    try:
        doc = run(cfg, run_options, progress=progress, on_start=on_start, on_measured=on_measured)
    finally:
        if opened.get("writer"):
            opened["writer"].close()
    rows = doc.pop("rows")
    failed = [r for r in rows if r["status"] != "ok"]
    for r in failed:
        progress(f"warning: {r['mode']} (checkpointing {r['checkpointing']}): {r['status']}: {r['error']}")
    writer = opened.get("writer")  # none on a torchrun rank other than 0, or with out=None
    return {**{k: v for k, v in doc.items() if k not in ("checks", "files", "run_id")},
            "run_id": opened.get("run_id", doc["run_id"]),
            "mode": options.mode, "explained": explained, "failed": failed,
            "files": writer.files if writer else None}


def _row(run_id: str, doc: dict, e: dict) -> dict:
    """One results-file row of an explained step (`doc`: run's header document)."""
    return {"run_id": run_id, "model": doc["config"]["name"], "kind": "explain", "mode": e["mode"],
            "checkpointing": e["checkpointing"], "status": "ok", "batch_size": doc["batch_size"],
            "seq_len": doc["seq_len"], "device": doc["device"], "dtype": doc["dtype"], "compile": doc["compile"],
            "peak_tflops": doc["peak"]["tflops"], "time_ms": {"median_ms": e["step_ms"]}, "mfu": e["mfu"],
            "hfu": e["hfu"], "model_flops": e["model_flops"], "hardware_flops": e["hardware_flops"],
            "categories": e["categories"], "waterfall": e["waterfall"], "config": doc["config"]}

