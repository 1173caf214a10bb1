"""`run`: build the model, count its FLOPs, time real steps, and turn the times into MFU and HFU.

Rows (one per timed mode):
- `forward`    — a forward pass without autograd;
- `fwd_bwd`    — forward + backward, for each checkpointing mode;
- `train_step` — forward + backward + AdamW step (fused on CUDA), for each checkpointing mode.

MFU (DESIGN.md section 2) = analytic *model* FLOPs of the step / (median step time x peak): model FLOPs
never include recomputation. HFU = *hardware* FLOPs / (time x peak), the hardware FLOPs counted by
FlopCounterMode over one real step on the run's device, so they include checkpoint recomputation and
whatever the attention kernel recomputes (flash attention's backward re-forms QK^T). Each row also shows
what the seed's simple 2N / 6N / 8N would give (`simple_*`), so the gap of the simple rule is visible.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch

from . import analytic, distributed
from .config import ModelConfig, validate_shapes
from .counted import flop_counter
from .errors import UsageError
from .hardware import gemm_ceiling, resolve_peak
from .model import build_model, lm_loss
from .reconcile import explain_hardware_gap
from .results import ResultWriter, environment
from .timing import time_step, tflops_per_s, utilization

MODES = ("forward", "fwd_bwd", "train_step")
DEVICES = ("auto", "cuda", "cpu")
DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
CHECKPOINTING_CHOICES = ("none", "full", "both")


class ModelDoesNotFit(UsageError):
    """Out of memory building the model: `run` stops (exit 2); a sweep records OOM rows and goes on."""


@dataclass
class RunOptions:
    batch_size: int = 8
    seq_len: int | None = None  # None: the model's max positions
    device: str = "auto"
    dtype: str = "auto"  # auto: bf16 on CUDA, fp32 on CPU
    checkpointing: str = "both"
    warmup: int = 3
    iters: int = 10
    peak_tflops: float | None = None
    compile: bool = False
    pad_vocab_multiple: int = 1
    gemm: bool = True
    out: str | None = "results"  # None: write nothing
    modes: tuple[str, ...] = MODES
    dist: str | None = None  # "ddp" | "fsdp" under torchrun (see flopbench.distributed)


def resolve_device(name: str) -> torch.device:
    if name not in DEVICES:
        raise UsageError(f"--device {name!r}: choose one of {', '.join(DEVICES)}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
        raise UsageError(f"--device cuda: CUDA is not available (torch {torch.__version__}, {build}, no usable GPU); "
                         f"use --device cpu or auto")
    return torch.device(name)


def resolve_dtype(name: str, device: torch.device) -> str:
    if name == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if name not in DTYPES:
        raise UsageError(f"--dtype {name!r}: choose one of auto, {', '.join(DTYPES)}")
    if name == "tf32" and device.type != "cuda":
        raise UsageError("--dtype tf32 needs a CUDA device (TF32 is a tensor-core mode); use fp32 on the CPU")
    return name


def padded_config(cfg: ModelConfig, multiple: int) -> ModelConfig:
    """`cfg` with the vocabulary padded up to a multiple of `multiple` (nanoGPT pads 50257 to 50304 so the
    LM-head matmul tiles evenly). The padded rows are real matmul work, and every count uses them."""
    if multiple < 1:
        raise UsageError(f"--pad-vocab {multiple}: must be a positive integer (1 = no padding)")
    padded = math.ceil(cfg.vocab_size / multiple) * multiple
    return cfg if padded == cfg.vocab_size else cfg.replace(vocab_size=padded, name=f"{cfg.name}+pad{multiple}")


@contextlib.contextmanager
def precision(dtype: str, device: torch.device):
    """Autocast for bf16 / fp16 (weights stay fp32, as in nanoGPT); TF32 on or off for fp32 matmuls."""
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high" if dtype == "tf32" else "highest")
    try:
        if dtype in ("bf16", "fp16"):
            with torch.autocast(device.type, dtype=DTYPES[dtype]):
                yield
        else:
            yield
    finally:
        torch.set_float32_matmul_precision(previous)


@dataclass
class Row:
    """One measured mode: what was timed, how long it took, and what that means in FLOP/s."""

    mode: str
    checkpointing: str
    status: str = "ok"  # ok | oom
    error: str | None = None
    time_ms: dict = field(default_factory=dict)
    tokens_per_s: float | None = None
    model_flops: int = 0  # analytic, never including recomputation
    hardware_flops_analytic: int = 0  # analytic, recomputation included
    hardware_flops_counted: int | None = None  # FlopCounterMode over one real step on the device
    hardware_flops_note: str = ""  # why counted and analytic hardware FLOPs differ
    simple_formula: str = ""
    simple_flops: int = 0
    achieved_tflops: float | None = None  # model FLOPs / median time
    mfu: float | None = None
    hfu: float | None = None
    mfu_simple: float | None = None
    distributed: dict | None = None  # under torchrun: per_rank times, aggregate tokens/s, slowest rank

    def as_dict(self) -> dict:
        return asdict(self)


def _flops_of(cfg: ModelConfig, B: int, T: int, mode: str, checkpointing: str) -> tuple[int, int, str, int]:
    """(model FLOPs, analytic hardware FLOPs, simple formula name, simple formula FLOPs) of one step."""
    est = analytic.estimates(cfg, B, T)
    if mode == "forward":
        f = analytic.forward_flops(cfg, B, T)
        return f, f, "2N", est["2N"].flops
    model = analytic.train_flops(cfg, B, T)
    if checkpointing == "full":
        return model, analytic.train_recompute_flops(cfg, B, T), "8N", est["8N"].flops
    return model, model, "6N", est["6N"].flops


class _Stepper:
    """The three step functions over one model, sharing its optimizer and a fixed random batch."""

    def __init__(self, model: torch.nn.Module, cfg: ModelConfig, B: int, T: int, device: torch.device,
                 dtype: str, compile_model: bool, dist_info: distributed.DistInfo | None = None):
        self.eager = model
        wrapped = distributed.wrap(model, dist_info, device) if dist_info else model
        self.model = torch.compile(wrapped) if compile_model else wrapped
        self.device, self.dtype = device, dtype
        gen = torch.Generator(device="cpu").manual_seed(dist_info.rank if dist_info else 0)  # a batch per rank
        self.idx = torch.randint(0, cfg.vocab_size, (B, T), generator=gen).to(device)
        self.targets = torch.roll(self.idx, -1, dims=1)
        self.optimizer = None

    def _optim(self) -> torch.optim.Optimizer:
        if self.optimizer is None:
            fused = self.device.type == "cuda"
            self.optimizer = torch.optim.AdamW(self.eager.parameters(), lr=1e-4, fused=fused)
        return self.optimizer

    def step(self, mode: str, model: torch.nn.Module | None = None) -> None:
        model = model or self.model
        with precision(self.dtype, self.device):
            if mode == "forward":
                with torch.no_grad():
                    model(self.idx)
                return
            self.eager.zero_grad(set_to_none=True)
            loss = lm_loss(model(self.idx), self.targets)
        loss.backward()
        if mode == "train_step":
            self._optim().step()

    def counted_flops(self, mode: str) -> int:
        """Hardware FLOPs of one step as dispatched on the device (eager model: the same matmuls)."""
        with flop_counter() as counter:
            self.step("fwd_bwd" if mode == "train_step" else mode, model=self.eager)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return counter.get_total_flops()


def _modes_to_run(options: RunOptions) -> list[tuple[str, str]]:
    for mode in options.modes:
        if mode not in MODES:
            raise UsageError(f"mode {mode!r}: choose from {', '.join(MODES)}")
    if options.checkpointing not in CHECKPOINTING_CHOICES:
        raise UsageError(f"--checkpointing {options.checkpointing!r}: choose one of {', '.join(CHECKPOINTING_CHOICES)}")
    ckpts = ("none", "full") if options.checkpointing == "both" else (options.checkpointing,)
    return [(m, "none") if m == "forward" else (m, c) for m in options.modes for c in ckpts
            if m != "forward" or c == ckpts[0]]


def is_oom(error: BaseException) -> bool:
    """True if `error` is an out-of-memory error (torch's own type, or a RuntimeError that says so)."""
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()


def free_memory(device: torch.device) -> None:
    """Drop what an interrupted step left behind, so the next one starts from a clean cache."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def oom_safe(fn: Callable[[], object], module: torch.nn.Module, device: torch.device):
    """`(fn(), None)`, or `(None, error)` when `fn` runs out of memory: then the module's gradients are
    cleared and the cache freed, so the next step can still run. Any other error propagates."""
    try:
        return fn(), None
    except (torch.OutOfMemoryError, RuntimeError) as e:
        if not is_oom(e):
            raise
        module.zero_grad(set_to_none=True)
        free_memory(device)
        return None, e


def measure_row(stepper: _Stepper, cfg: ModelConfig, B: int, T: int, mode: str, checkpointing: str,
                options: RunOptions, peak: float | None, dist_info: distributed.DistInfo | None = None) -> Row:
    """Count and time one mode; a CUDA out-of-memory error gives a row with status "oom".

    Under torchrun every rank times its own steps; the row's time is the slowest rank's median (a
    data-parallel step runs at the pace of its slowest rank) and `per_rank` holds each rank's."""
    model_flops, hw_analytic, simple_name, simple = _flops_of(cfg, B, T, mode, checkpointing)
    row = Row(mode, checkpointing, model_flops=model_flops, hardware_flops_analytic=hw_analytic,
              simple_formula=simple_name, simple_flops=simple)
    stepper.eager.checkpointing = checkpointing

    def count_and_time():
        row.hardware_flops_counted = stepper.counted_flops(mode)
        return time_step(lambda i: stepper.step(mode), stepper.device, options.warmup, options.iters)

    stats, error = oom_safe(count_and_time, stepper.eager, stepper.device)
    if error:
        row.status, row.error = "oom", str(error).splitlines()[0][:300]
        return row
    row.hardware_flops_note = explain_hardware_gap(cfg, B, T, mode, row.hardware_flops_counted, hw_analytic)
    row.time_ms = stats.as_dict()
    if dist_info:
        per_rank = distributed.gather({k: v for k, v in row.time_ms.items() if k != "times_ms"})
        row.distributed = distributed.aggregate(per_rank, B * T)
        for r in row.distributed["per_rank"]:
            r["mfu"] = utilization(model_flops, r["median_ms"] / 1e3, peak)
        row.time_ms = {**row.time_ms, "median_ms": row.distributed["slowest_median_ms"]}
    _derive_rates(row, row.time_ms["median_ms"], B * T, peak)
    return row


def _derive_rates(row: Row, median_ms: float, batch_tokens: int, peak: float | None) -> None:
    """tokens/s, achieved TFLOP/s, and (when the peak is known) MFU, HFU and the simple formula's MFU."""
    seconds = median_ms / 1e3
    row.tokens_per_s = batch_tokens / seconds
    row.achieved_tflops = tflops_per_s(row.model_flops, seconds)
    row.mfu = utilization(row.model_flops, seconds, peak)
    row.hfu = utilization(row.hardware_flops_counted, seconds, peak)
    row.mfu_simple = utilization(row.simple_flops, seconds, peak)


def run(cfg: ModelConfig, options: RunOptions | None = None, progress=None,
        on_row: Callable[[dict], None] | None = None) -> dict:
    """Measure `cfg`: one row per mode (see module docstring). Rows are written to disk as they finish
    when `options.out` is set. `progress(message)` is called with status lines (default: stderr);
    `on_row(record)` with each row the moment it is measured (the sweep appends it to its file)."""
    options = options or RunOptions()
    progress = progress or (lambda msg: print(msg, file=sys.stderr, flush=True))
    device = resolve_device(options.device)
    dist_info = distributed.init(options.dist, device.type) if options.dist else None
    if dist_info:
        device = distributed.device_for(dist_info, device.type)
        if not dist_info.is_main:  # only rank 0 prints and writes
            progress, options = (lambda msg: None), dataclasses.replace(options, out=None)
    dtype = resolve_dtype(options.dtype, device)
    cfg = padded_config(cfg, options.pad_vocab_multiple)
    B = options.batch_size
    T = cfg.max_seq_len if options.seq_len is None else options.seq_len
    validate_shapes(cfg, B, T)
    if options.warmup < 0 or options.iters < 1:
        raise UsageError(f"--warmup {options.warmup} / --iters {options.iters}: need warmup >= 0 and iters >= 1")
    plan = _modes_to_run(options)

    env = environment(device)
    gpu_name = env["gpu"]["name"] if env["gpu"] else None
    peak, peak_source = resolve_peak(gpu_name, dtype, options.peak_tflops)  # dtype names = table columns
    run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{cfg.name}-{device.type}-{dtype}"
    if dist_info:
        run_id = f"{distributed.gather(run_id)[0]}-{dist_info.kind}{dist_info.world_size}"  # rank 0's clock
    writer = ResultWriter(options.out, run_id, env) if options.out else None
    if peak is None:  # after every usage check, so a bad invocation prints one line only
        progress(f"warning: {peak_source}; MFU and HFU will be null")
    doc = {
        "run_id": run_id, "config": cfg.as_dict(), "batch_size": B, "seq_len": T, "tokens_per_step": B * T,
        "device": str(device), "dtype": dtype, "compile": options.compile,
        "peak": {"tflops": peak, "source": peak_source, "dtype": dtype},
        "gemm_ceiling": None, "environment": env, "rows": [], "files": writer.files if writer else None,
        "parallelism": {**dist_info.as_dict(), "model_flops_per_gpu": "each rank's own batch (torchtitan, Megatron)"}
        if dist_info else None,
        "is_main": dist_info is None or dist_info.is_main,
    }

    if options.gemm:
        size = 8192 if device.type == "cuda" else 512
        progress(f"GEMM ceiling: {size}x{size} {dtype} matmuls ...")
        ceiling_dtype = torch.float32 if dtype in ("fp32", "tf32") else DTYPES[dtype]
        with precision(dtype, device):
            doc["gemm_ceiling"] = {k: v for k, v in gemm_ceiling(device, ceiling_dtype, size=size).items()
                                   if k != "times_ms"}

    progress(f"building {cfg.name} on {device} ...")
    try:
        model = build_model(cfg, device)
        stepper = _Stepper(model, cfg, B, T, device, dtype, options.compile, dist_info)
    except (torch.OutOfMemoryError, RuntimeError) as e:
        if not is_oom(e):
            raise
        raise ModelDoesNotFit(f"{cfg.name} does not fit on {device}: out of memory building the model") from None
    for mode, checkpointing in plan:
        progress(f"timing {mode} (checkpointing {checkpointing}): {options.warmup} warm-up + {options.iters} steps ...")
        row = measure_row(stepper, cfg, B, T, mode, checkpointing, options, peak, dist_info)
        record = {"run_id": run_id, "model": cfg.name, "batch_size": B, "seq_len": T, "device": str(device),
                  "dtype": dtype, "compile": options.compile, "peak_tflops": peak,
                  "dist": dist_info.kind if dist_info else None, "world_size": dist_info.world_size if dist_info else 1,
                  "gemm_tflops": doc["gemm_ceiling"]["tflops_median"] if doc["gemm_ceiling"] else None,
                  **row.as_dict(), "config": cfg.as_dict()}
        doc["rows"].append(record)
        if writer:
            writer.append(record)
        if on_row:
            on_row(record)
    return doc
