"""`flopbench.run`: build the model, count its FLOPs, time real steps, and turn the times into MFU and HFU.

Rows (one per timed mode, `model.config.MODES`):
- `forward`    — a forward pass without autograd;
- `fwd_bwd`    — forward + backward, for each checkpointing mode;
- `train_step` — forward + backward + AdamW step (fused on CUDA), for each checkpointing mode.

MFU = analytic *model* FLOPs of the step / (median step time x peak): model FLOPs never include
recomputation. HFU = *hardware* FLOPs / (time x peak), the hardware FLOPs counted by FlopCounterMode over
one real step on the run's device (`hardware_flops`), so they include checkpoint recomputation and
whatever the attention kernel recomputes (flash attention's backward re-forms QK^T). Both come from
`timing.rates`. Each row also shows what the simple rule would give (`simple_*`: 2N or 6N per token,
Kaplan et al. 2020, §2.1; 8N with recomputation, Narayanan et al. 2021, Eq. 3), so its gap is visible.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch

from ..errors import UsageError
from ..flops import analytic, estimates
from ..flops.counter import count_step
from ..flops.reconcile import explain_hardware_gap
from ..hardware.detect import environment
from ..hardware.peaks import resolve_peak
from ..model.config import CHECKPOINTING, CHECKPOINTING_CHOICES, MODES, ModelConfig, pad_vocab, validate_shapes
from ..model.gpt import build_model, lm_loss
from ..model.presets import as_config
from ..output.records import ResultWriter
from ..timing import distributed
from ..timing.clock import time_step
from ..timing.device import TORCH_DTYPES, ModelDoesNotFit, is_oom, oom_safe, precision, resolve_device, resolve_dtype
from ..timing.gemm import gemm_ceiling
from ..timing.rates import rates, utilization
from ..timing.thresholds import Thresholds, run_checks


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
    pad_vocab: int = 1
    gemm: bool = True
    out: str | None = "results"  # None: write nothing
    modes: tuple[str, ...] = MODES
    dist: str | None = None  # "ddp" | "fsdp" under torchrun (see flopbench.timing.distributed)


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
    hardware_flops: int | None = None  # FlopCounterMode over one real step on the device
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


def flops_of_mode(cfg: ModelConfig, B: int, T: int, mode: str, checkpointing: str) -> tuple[int, int, str, int]:
    """(model FLOPs, analytic hardware FLOPs, simple estimate's name, its FLOPs) of one step of `mode`."""
    simple = "2N" if mode == "forward" else ("8N" if checkpointing == "full" else "6N")
    simple_flops = estimates.REGISTRY[simple].formula(cfg, B, T)
    if mode == "forward":
        f = analytic.forward_flops(cfg, B, T)
        return f, f, simple, simple_flops
    model = analytic.train_flops(cfg, B, T)
    hardware = analytic.train_recompute_flops(cfg, B, T) if checkpointing == "full" else model
    return model, hardware, simple, simple_flops


class Stepper:
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

    def forward(self, model: torch.nn.Module) -> torch.Tensor:
        with precision(self.dtype, self.device):
            return model(self.idx)

    def loss(self, logits: torch.Tensor) -> torch.Tensor:
        with precision(self.dtype, self.device):
            return lm_loss(logits, self.targets)

    def step(self, mode: str) -> None:
        if mode == "forward":
            with torch.no_grad():
                self.forward(self.model)
            return
        self.eager.zero_grad(set_to_none=True)
        self.loss(self.forward(self.model)).backward()
        if mode == "train_step":
            self._optim().step()

    def counted_flops(self, mode: str) -> int:
        """Hardware FLOPs of one step as dispatched on the device (eager model: the same matmuls; the
        optimizer adds none)."""
        if mode == "forward":
            with torch.no_grad():
                counted = count_step(lambda: self.forward(self.eager)).forward
        else:
            self.eager.zero_grad(set_to_none=True)
            counted = count_step(lambda: self.forward(self.eager), self.loss).train
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return counted


def _modes_to_run(options: RunOptions) -> list[tuple[str, str]]:
    for mode in options.modes:
        if mode not in MODES:
            raise UsageError(f"mode {mode!r}: choose from {', '.join(MODES)}")
    if options.checkpointing not in CHECKPOINTING_CHOICES:
        raise UsageError(f"--checkpointing {options.checkpointing!r}: choose one of {', '.join(CHECKPOINTING_CHOICES)}")
    ckpts = CHECKPOINTING if options.checkpointing == "both" else (options.checkpointing,)
    return [(m, "none") if m == "forward" else (m, c) for m in options.modes for c in ckpts
            if m != "forward" or c == ckpts[0]]


def measure_row(stepper: Stepper, cfg: ModelConfig, B: int, T: int, mode: str, checkpointing: str,
                options: RunOptions, peak: float | None, dist_info: distributed.DistInfo | None = None) -> Row:
    """Count and time one mode; a CUDA out-of-memory error gives a row with status "oom".

    Under torchrun every rank times its own steps; the row's time is the slowest rank's median (a
    data-parallel step runs at the pace of its slowest rank) and `per_rank` holds each rank's."""
    model_flops, hw_analytic, simple_name, simple = flops_of_mode(cfg, B, T, mode, checkpointing)
    row = Row(mode, checkpointing, model_flops=model_flops, hardware_flops_analytic=hw_analytic,
              simple_formula=simple_name, simple_flops=simple)
    stepper.eager.checkpointing = checkpointing

    def count_and_time():
        row.hardware_flops = stepper.counted_flops(mode)
        return time_step(lambda i: stepper.step(mode), stepper.device, options.warmup, options.iters)

    stats, error = oom_safe(count_and_time, stepper.eager, stepper.device)
    if error:
        row.status, row.error = "oom", str(error).splitlines()[0][:300]
        return row
    row.hardware_flops_note = explain_hardware_gap(cfg, B, T, mode, row.hardware_flops, hw_analytic)
    row.time_ms = stats.as_dict()
    if dist_info:
        per_rank = distributed.gather({k: v for k, v in row.time_ms.items() if k != "times_ms"})
        row.distributed = distributed.aggregate(per_rank, B * T)
        for r in row.distributed["per_rank"]:
            r["mfu"] = utilization(model_flops, r["median_ms"] / 1e3, peak)
        row.time_ms = {**row.time_ms, "median_ms": row.distributed["slowest_median_ms"]}
    seconds = row.time_ms["median_ms"] / 1e3
    r = rates(row.model_flops, row.hardware_flops, seconds, peak)
    row.tokens_per_s = B * T / seconds
    row.achieved_tflops, row.mfu, row.hfu = r.achieved_tflops, r.mfu, r.hfu
    row.mfu_simple = utilization(row.simple_flops, seconds, peak)
    return row


def run(config: ModelConfig | str, options: RunOptions | None = None, progress=None,
        on_row: Callable[[dict], None] | None = None, checks: Thresholds | None = None, **fields) -> dict:
    """Build `config` (a `ModelConfig` or a preset name), count its FLOPs, time real steps and report MFU /
    HFU: the `flopbench run --json` document, one row per mode (see the module docstring).

    Options are `RunOptions` fields (defaults as the CLI's), given as keywords (`batch_size`, `seq_len`,
    `device`, `dtype`, `checkpointing`, `warmup`, `iters`, `peak_tflops`, `compile`, `pad_vocab`, `gemm`,
    `out` — `out=None` writes no files —, `modes`, `dist`) or as one `RunOptions`. Rows are written to
    disk as they finish when `out` is set. `progress(message)` receives status lines (default: stderr);
    `on_row(record)` each row the moment it is measured (a sweep appends it to its file). `checks`
    (`Thresholds`) are evaluated on the result: its `checks` list has one entry per check, each with `ok`."""
    if options is not None and fields:
        raise UsageError(f"run(): pass options=RunOptions(...) or keyword options, not both (got {sorted(fields)})")
    allowed = [f.name for f in dataclasses.fields(RunOptions)]
    unknown = sorted(set(fields) - set(allowed))
    if unknown:
        raise UsageError(f"run(): unknown option {unknown[0]!r}; allowed: {', '.join(allowed)}")
    cfg = as_config(config)
    options = options or RunOptions(**fields)
    checks = checks or Thresholds()
    checks.check_inputs()  # a bad baseline is a usage error before anything is measured
    progress = progress or (lambda msg: print(msg, file=sys.stderr, flush=True))
    device = resolve_device(options.device)
    dist_info = distributed.init(options.dist, device.type) if options.dist else None
    if dist_info:
        device = distributed.device_for(dist_info, device.type)
        if not dist_info.is_main:  # only rank 0 prints and writes
            progress, options = (lambda msg: None), dataclasses.replace(options, out=None)
    dtype = resolve_dtype(options.dtype, device)
    cfg = pad_vocab(cfg, options.pad_vocab)
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
        with precision(dtype, device):
            doc["gemm_ceiling"] = {k: v for k, v in gemm_ceiling(device, TORCH_DTYPES[dtype], size=size).items()
                                   if k != "times_ms"}

    progress(f"building {cfg.name} on {device} ...")
    try:
        model = build_model(cfg, device)
        stepper = Stepper(model, cfg, B, T, device, dtype, options.compile, dist_info)
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
    if doc["is_main"]:
        doc["checks"] = [c.as_dict() for c in run_checks(doc, checks)]
    return doc
