"""`flopbench.run`: build the model, count its FLOPs, time real steps, and turn the times into MFU and HFU.

Rows (one per timed mode, `model.config.MODES`):
- `forward`    — a forward pass without autograd;
- `fwd_bwd`    — forward + backward, for each checkpointing mode;
- `train_step` — forward + backward + AdamW step (fused on CUDA), for each checkpointing mode.
The run's dtype holds for the whole timed step: TF32 on or off for every float32 matmul (forward, loss,
backward with a checkpoint's recompute, optimizer; `timing.device.matmul_precision`), bf16 / fp16
autocast around the forward and the loss (`timing.device.autocast`).

MFU = analytic *model* FLOPs of the step / (median step time x peak): model FLOPs never include
recomputation. HFU = *hardware* FLOPs / (time x peak), the hardware FLOPs counted by FlopCounterMode over
one real step on the run's device (`hardware_flops`), so they include checkpoint recomputation and
whatever the attention kernel recomputes (flash attention's backward re-forms QK^T). Both come from
`timing.rates`. HFU counts QK^T and AV over the full T x T square, while a causal flash kernel computes
about half of it (the blocks above the diagonal are skipped): `hfu_causal` takes that half out of the
hardware FLOPs (`causal_skipped_flops`). Each row also shows what the simple rules give: `mfu_simple` with
2N (forward) or 6N per token (Kaplan et al. 2020, §2.1), which like MFU leave recomputation out, and
`hfu_simple` with 8N per token under full checkpointing (Narayanan et al. 2021, Eq. 3; 6N otherwise).

Three peaks side by side (MFU against the datasheet stays the headline): the datasheet dense peak
(`mfu`); the datasheet scaled by the median SM clock of the row's timed window over the clock the peak
is rated at (`peak_clock_tflops`, `mfu_vs_clock`; `hardware.peaks.rated_clock`, `clock_adjusted_peak`;
NVML's maximum clock only where the table has no rated clock, said in `peak_clock_source`); and the GEMM
ceiling measured before the rows (`mfu_vs_gemm`). On a GPU each row records `telemetry` over its timed steps
(`hardware.telemetry`: SM clock, power, temperature, throttle reasons, energy and joules per token) and
`throttled`; both are null on a CPU. `peak_memory_bytes` is the row's peak allocation
(`timing.memory.peak_bytes`); a run that cannot fit is refused before the model is built
(`timing.memory.check_fits`).

Status: "ok"; "oom" (out of memory — a CUDA or CPU allocator error, or on the CPU an estimate that
cannot fit); "recompile_limit" (a compiled run hit dynamo's recompile limit: it would otherwise silently
run eagerly while labelled compiled). Each compiled run starts from an empty dynamo cache
(``torch._dynamo.reset()``) and compiles with ``dynamic=False``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch

from ..errors import UsageError, options_from
from ..flops import analytic, estimates
from ..flops.counter import count_step
from ..flops.reconcile import explain_hardware_gap, explained_hardware_gap
from ..hardware.detect import environment, gpu_peak
from ..hardware.peaks import clock_adjusted_peak, rated_clock
from ..hardware.telemetry import Telemetry, open_telemetry, throttled
from ..model.config import (CHECKPOINTING_CHOICES, MAX_ITERS, MAX_WARMUP, MODES, ModelConfig, checkpointing_modes,
                            pad_vocab, validate_shapes, validate_tensor_sizes)
from ..model.gpt import build_model, lm_loss
from ..model.presets import as_config
from ..output.records import ResultWriter, folder_safe
from ..timing import distributed
from ..timing.clock import time_step
from ..timing.device import (
    TORCH_DTYPES,
    ModelDoesNotFit,
    autocast,
    drop_traceback,
    free_memory,
    is_oom,
    matmul_precision,
    oom_safe,
    precision,
    resolve_device,
    resolve_dtype,
)
from ..timing.gemm import gemm_ceiling
from ..timing.memory import RowVerdict, available_bytes, check_fits, peak_bytes, reset_peak
from ..timing.rates import rates, utilization
from ..timing.thresholds import Thresholds, run_checks


@dataclass
class RunOptions:
    batch_size: int = 8
    seq_len: int | None = None  # None: the model's max positions
    device: str = "auto"
    dtype: str = "auto"  # auto: bf16 on CUDA (fp16 before compute capability 8.0), fp32 on CPU
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
    status: str = "ok"  # ok | oom | recompile_limit
    error: str | None = None
    time_ms: dict = field(default_factory=dict)
    tokens_per_s: float | None = None
    model_flops: int = 0  # analytic, never including recomputation
    hardware_flops_analytic: int = 0  # analytic, recomputation included
    hardware_flops: int | None = None  # FlopCounterMode over one real step on the device
    hardware_flops_note: str = ""  # why counted and analytic hardware FLOPs differ
    simple_formula: str = ""  # the simple rule for the model FLOPs: 2N (forward) or 6N
    simple_flops: int = 0
    simple_hardware_formula: str = ""  # the simple rule for the hardware FLOPs: 8N with full checkpointing
    simple_hardware_flops: int = 0
    achieved_tflops: float | None = None  # model FLOPs / median time
    mfu: float | None = None  # against the datasheet peak: the headline
    hfu: float | None = None
    hfu_causal: float | None = None  # HFU without the half of QK^T / AV a causal kernel skips
    mfu_simple: float | None = None  # simple_flops in place of the model FLOPs
    hfu_simple: float | None = None  # simple_hardware_flops in place of the hardware FLOPs
    peak_clock_tflops: float | None = None  # datasheet peak x median SM clock / the peak's rated SM clock
    peak_clock_source: str | None = None  # how it was scaled (NVML's maximum clock only without a rated one)
    mfu_vs_clock: float | None = None
    mfu_vs_gemm: float | None = None  # against the GEMM ceiling measured in this run
    telemetry: dict | None = None  # `hardware.telemetry.summary` of the timed window (GPU only)
    throttled: bool | None = None  # a power / thermal / hardware slowdown was seen in the window
    peak_memory_bytes: int | None = None
    memory_estimate_bytes: int | None = None  # `timing.memory.estimate` of the row
    distributed: dict | None = None  # under torchrun: per_rank times, aggregate tokens/s, slowest rank

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ModeFlops:
    """The FLOP counts one step of a mode is rated with (see the module docstring)."""

    model: int  # analytic, never including recomputation
    hardware: int  # analytic, recomputation included
    simple: str  # 2N or 6N: the simple rule for `model`
    simple_flops: int
    simple_hardware: str  # 2N, 6N or 8N: the simple rule for `hardware`
    simple_hardware_flops: int


def flops_of_mode(cfg: ModelConfig, B: int, T: int, mode: str, checkpointing: str) -> ModeFlops:
    """Model and analytic hardware FLOPs of one step of `mode`, and the simple rules for each: 2N for a
    forward, 6N for training (Kaplan et al. 2020, §2.1), 8N for training with full recomputation (a fourth
    forward; Narayanan et al. 2021, Eq. 3) — which counts hardware FLOPs, so it rates HFU, not MFU."""
    simple = "2N" if mode == "forward" else "6N"
    simple_hw = "8N" if mode != "forward" and checkpointing == "full" else simple

    def rule(name):
        return estimates.REGISTRY[name].formula(cfg, B, T)

    if mode == "forward":
        f = analytic.forward_flops(cfg, B, T)
        return ModeFlops(f, f + analytic.masked_square_flops(cfg, B, T), simple, rule(simple), simple_hw,
                         rule(simple_hw))
    model = analytic.train_flops(cfg, B, T)
    hardware = model if checkpointing == "none" else analytic.train_recompute_flops(cfg, B, T,
                                                                                    checkpointing=checkpointing)
    return ModeFlops(model, hardware + passes(mode, checkpointing) * analytic.masked_square_flops(cfg, B, T),
                     simple, rule(simple), simple_hw, rule(simple_hw))


def passes(mode: str, checkpointing: str) -> int:
    """How many times a step of `mode` runs the attention core: once in a forward, three times in training
    (backward = 2 x forward), four with any recomputation (full or selective checkpointing re-runs it)."""
    return 1 if mode == "forward" else (3 if checkpointing == "none" else 4)


def causal_skipped_flops(cfg: ModelConfig, B: int, T: int, mode: str, checkpointing: str, rescore: int = 0) -> int:
    """The attention-score FLOPs in a step's hardware count that a causal kernel does not compute: half of
    every T x T product (QK^T, AV and their gradients) — only the blocks on or below the diagonal run.

    The T x T products of one forward are `estimates.Terms.attention` (from `analytic.components`); a step
    runs them once (forward), three times (forward + backward, backward = 2 x forward) or four times (with
    full recomputation), plus `rescore`, the QK^T a fused kernel's backward re-forms
    (`flops.reconcile.explained_hardware_gap`). Halving them is the registry's "causal" convention
    (`estimates.REGISTRY["causal"]`: training FLOPs with 3/2 of the forward attention taken out)."""
    terms = estimates.Terms.of(cfg, B, T)
    return passes(mode, checkpointing) * (terms.causal_skipped + terms.masked) + rescore // 2


@contextlib.contextmanager
def recompile_watch(enabled: bool):
    """While a compiled step runs: make dynamo's recompile limit raise (``fail_on_recompile_limit_hit``,
    ``fail_on_cache_limit_hit`` before torch 2.7) instead of running the frame eagerly, and collect dynamo's
    "hit config.<limit>" warning (torch 2.5 has no such flag, only the warning). Yields the list of
    warnings seen."""
    seen: list[str] = []
    if not enabled:
        yield seen
        return
    import torch._dynamo.config as dynamo_config

    class Catch(logging.Handler):
        def emit(self, record):
            message = record.getMessage()
            if "hit config." in message:
                seen.append(message.splitlines()[0])

    flags = {n: True for n in ("fail_on_recompile_limit_hit", "fail_on_cache_limit_hit") if hasattr(dynamo_config, n)}
    handler, logger = Catch(level=logging.WARNING), logging.getLogger("torch._dynamo")
    logger.addHandler(handler)
    try:
        with dynamo_config.patch(**flags) if flags else contextlib.nullcontext():
            yield seen
    finally:
        logger.removeHandler(handler)


def is_recompile_limit(error: BaseException) -> bool:
    """True for dynamo's hard failure at its recompile limit (named FailOnCacheLimitHit in torch 2.6)."""
    return type(error).__name__ in ("FailOnRecompileLimitHit", "FailOnCacheLimitHit")


class Stepper:
    """The three step functions over one model, sharing its optimizer and a fixed random batch."""

    def __init__(self, model: torch.nn.Module, cfg: ModelConfig, B: int, T: int, device: torch.device,
                 dtype: str, compile_model: bool, dist_info: distributed.DistInfo | None = None):
        self.eager = model
        wrapped = distributed.wrap(model, dist_info, device, dtype) if dist_info else model
        if compile_model:
            torch._dynamo.reset()  # this run's recompiles are its own, not added to an earlier run's
            self.model = torch.compile(wrapped, dynamic=False)
        else:
            self.model = wrapped
        self.device, self.dtype = device, dtype
        gen = torch.Generator(device="cpu").manual_seed(dist_info.rank if dist_info else 0)  # a batch per rank
        self.idx = torch.randint(0, cfg.vocab_size, (B, T), generator=gen).to(device)
        self.targets = torch.roll(self.idx, -1, dims=1)
        self.optimizer = None

    def optim(self) -> torch.optim.Optimizer:
        if self.optimizer is None:
            fused = self.device.type == "cuda"
            self.optimizer = torch.optim.AdamW(self.eager.parameters(), lr=1e-4, fused=fused)
        return self.optimizer

    def forward(self, model: torch.nn.Module) -> torch.Tensor:
        with autocast(self.dtype, self.device):
            return model(self.idx)

    def loss(self, logits: torch.Tensor) -> torch.Tensor:
        with autocast(self.dtype, self.device):
            return lm_loss(logits, self.targets)

    def step(self, mode: str) -> None:
        """One step of `mode`, all of it (backward and optimizer too) in the run's matmul precision."""
        with matmul_precision(self.dtype):
            if mode == "forward":
                with torch.no_grad():
                    self.forward(self.model)
                return
            self.eager.zero_grad(set_to_none=True)
            self.loss(self.forward(self.model)).backward()
            if mode == "train_step":
                self.optim().step()

    def counted_flops(self, mode: str) -> int:
        """Hardware FLOPs of one step as dispatched on the device (eager model: the same matmuls; the
        optimizer adds none)."""
        with matmul_precision(self.dtype):
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
    ckpts = checkpointing_modes(options.checkpointing)
    return [(m, "none") if m == "forward" else (m, c) for m in options.modes for c in ckpts
            if m != "forward" or c == ckpts[0]]


@dataclass(frozen=True)
class StepProgress:
    """Where the timed steps of one row are, for `run(on_step=...)`: `done` of `warmup + iters` steps have
    finished (the first `warmup` untimed); `done=0` as the first step begins."""

    mode: str
    checkpointing: str
    done: int
    warmup: int
    iters: int


@dataclass
class RunContext:
    """What every row of one run shares."""

    cfg: ModelConfig
    B: int
    T: int
    options: RunOptions
    device: torch.device
    peak: float | None
    gpu: dict | None  # `environment`'s "gpu" record
    gemm_tflops: float | None = None
    rated_clock_mhz: float | None = None  # the SM clock the peak is rated at (`hardware.peaks.rated_clock`)
    telemetry: Telemetry | None = None
    dist_info: distributed.DistInfo | None = None
    on_step: Callable[[StepProgress], None] | None = None  # `run`'s per-step progress


Failure = tuple[str, str]  # (row status, one-line message)


def _together(ctx: RunContext, failure: Failure | None) -> Failure | None:
    """One rank's failure of a phase made every rank's (under torchrun, `distributed.agree`)."""
    if ctx.dist_info is None:
        return failure
    failures = distributed.agree(failure, ctx.device)
    if not failures:
        return None
    return failures[0][1], "; ".join(f"rank {rank}: {message}" for rank, _, message in failures)


def _attempt(fn: Callable[[], object], stepper: Stepper, compiled: bool) -> tuple[object, Failure | None]:
    """`(fn(), None)`, or `(None, (status, message))` when it ran out of memory ("oom") or hit dynamo's
    recompile limit ("recompile_limit"); memory is freed only after the failed step's traceback is gone."""
    with recompile_watch(compiled) as limit_hits:
        try:
            value, error = oom_safe(fn, stepper.eager, stepper.device)
        except Exception as e:  # noqa: BLE001 - anything but the recompile limit propagates
            if not is_recompile_limit(e):
                raise
            value, error = None, drop_traceback(e)
    if error is not None and is_oom(error):
        return None, ("oom", str(error).splitlines()[0][:300])
    if error is not None or limit_hits:
        stepper.eager.zero_grad(set_to_none=True)
        free_memory(stepper.device)
        reason = limit_hits[0] if limit_hits else str(error).splitlines()[0]
        return None, ("recompile_limit", f"{reason[:200]}; a compiled run would go on eagerly: not measured")
    return value, None


def measure_row(stepper: Stepper, ctx: RunContext, mode: str, checkpointing: str,
                verdict: RowVerdict | None = None) -> Row:
    """Count and time one mode; running out of memory gives a row with status "oom", dynamo's recompile
    limit one with "recompile_limit" (see the module docstring).

    Under torchrun every rank times its own steps; the row's time is the slowest rank's median (a
    data-parallel step runs at the pace of its slowest rank) and `per_rank` holds each rank's. The ranks
    agree on the row's status after counting and after timing, so none waits in a collective the others
    skipped (`distributed.agree`). Telemetry is rank 0's GPU's."""
    cfg, B, T, options = ctx.cfg, ctx.B, ctx.T, ctx.options
    flops = flops_of_mode(cfg, B, T, mode, checkpointing)
    row = Row(mode, checkpointing, model_flops=flops.model, hardware_flops_analytic=flops.hardware,
              simple_formula=flops.simple, simple_flops=flops.simple_flops,
              simple_hardware_formula=flops.simple_hardware, simple_hardware_flops=flops.simple_hardware_flops,
              memory_estimate_bytes=verdict.estimate.total if verdict else None)
    stepper.eager.checkpointing = checkpointing

    def fail(failure: Failure) -> Row:
        row.status, row.error = failure
        return row

    failure = ("oom", verdict.reason) if verdict is not None and not verdict.fits else None
    if failure is None:
        row.hardware_flops, failure = _attempt(lambda: stepper.counted_flops(mode), stepper, False)
    failure = _together(ctx, failure)
    if failure:
        return fail(failure)

    telemetry = ctx.telemetry

    def report(done: int) -> None:  # a few microseconds inside a timed step (rich only records the count)
        if ctx.on_step:
            ctx.on_step(StepProgress(mode, checkpointing, done, options.warmup, options.iters))

    def timed_steps():
        def step(i: int) -> None:
            stepper.step(mode)
            report(i + 1)

        report(0)
        try:  # telemetry starts after the warm-up's sync and before the first timed mark
            return time_step(step, stepper.device, options.warmup, options.iters,
                             before_timed=telemetry.start if telemetry else None)
        finally:
            if telemetry:
                telemetry.stop_sampling()

    reset_peak(stepper.device)
    stats, failure = _attempt(timed_steps, stepper, options.compile)
    failure = _together(ctx, failure)
    if failure:
        return fail(failure)
    row.peak_memory_bytes = peak_bytes(stepper.device)
    if telemetry:
        row.telemetry = telemetry.stop(tokens=B * T * options.iters)  # time_step synced: the GPU is idle
        row.throttled = throttled(row.telemetry)
    row.hardware_flops_note = explain_hardware_gap(cfg, B, T, mode, row.hardware_flops, flops.hardware)
    row.time_ms = stats.as_dict()
    if ctx.dist_info:
        per_rank = distributed.gather({k: v for k, v in row.time_ms.items() if k != "times_ms"})
        row.distributed = distributed.aggregate(per_rank, B * T)
        for r in row.distributed["per_rank"]:
            r["mfu"] = utilization(flops.model, r["median_ms"] / 1e3, ctx.peak)
        row.time_ms = {**row.time_ms, "median_ms": row.distributed["slowest_median_ms"]}
    _rate(row, ctx, stepper.device.type)
    return row


def _rate(row: Row, ctx: RunContext, device_type: str) -> None:
    """Fill a measured row's rates from its median time (every division through `timing.rates`)."""
    cfg, B, T, peak = ctx.cfg, ctx.B, ctx.T, ctx.peak
    seconds = row.time_ms["median_ms"] / 1e3
    r = rates(row.model_flops, row.hardware_flops, seconds, peak)
    row.tokens_per_s = B * T / seconds
    row.achieved_tflops, row.mfu, row.hfu = r.achieved_tflops, r.mfu, r.hfu
    row.mfu_simple = utilization(row.simple_flops, seconds, peak)
    row.hfu_simple = utilization(row.simple_hardware_flops, seconds, peak)
    if row.hardware_flops is not None:
        rescore = explained_hardware_gap(cfg, B, T, row.mode, row.hardware_flops - row.hardware_flops_analytic)
        skipped = causal_skipped_flops(cfg, B, T, row.mode, row.checkpointing, rescore)
        row.hfu_causal = utilization(row.hardware_flops - skipped, seconds, peak)
    sm_clock = (row.telemetry or {}).get("sm_clock_mhz") or {}
    row.peak_clock_tflops, row.peak_clock_source = clock_adjusted_peak(
        peak, sm_clock.get("median"), ctx.rated_clock_mhz, (ctx.gpu or {}).get("sm_clock_max_mhz"))
    row.mfu_vs_clock = utilization(row.model_flops, seconds, row.peak_clock_tflops)
    row.mfu_vs_gemm = utilization(row.model_flops, seconds, ctx.gemm_tflops)


def run(config: ModelConfig | str, options: RunOptions | None = None, progress=None,
        on_row: Callable[[dict], None] | None = None, checks: Thresholds | None = None,
        on_start: Callable[[dict], None] | None = None, on_step: Callable[[StepProgress], None] | None = None,
        **fields) -> dict:
    """Build `config` (a `ModelConfig` or a preset name), count its FLOPs, time real steps and report MFU /
    HFU: the `flopbench run --json` document, one row per mode (see the module docstring).

    Options are `RunOptions` fields (defaults as the CLI's), given as keywords (`batch_size`, `seq_len`,
    `device`, `dtype`, `checkpointing`, `warmup`, `iters`, `peak_tflops`, `compile`, `pad_vocab`, `gemm`,
    `out` — `out=None` writes no files —, `modes`, `dist`) or as one `RunOptions`. Rows are written to
    disk as they finish when `out` is set. In order, as the run goes: `on_start(doc)` receives the document
    once its header fields are known (config, shape, device, dtype, peak, environment; before anything is
    timed), `progress(message)` status lines and warnings (default: stderr), `on_step(StepProgress)` each
    warm-up and timed step of each row, `on_row(record)` each row the moment it is measured (a sweep
    appends it to its file). Only rank 0 of a torchrun job reports. `checks`
    (`Thresholds`) are evaluated on the result: its `checks` list has one entry per check, each with `ok`.
    A run that cannot fit in memory (`timing.memory.check_fits`) raises `ModelDoesNotFit` before the
    model is built."""
    cfg = as_config(config)
    options = options_from(RunOptions, options, fields, "run")
    checks = checks or Thresholds()
    checks.check_inputs()  # a bad baseline is a usage error before anything is measured
    progress = progress or (lambda msg: print(msg, file=sys.stderr, flush=True))
    device = resolve_device(options.device)
    dist_info = distributed.init(options.dist, device.type) if options.dist else None
    if dist_info:
        device = distributed.device_for(dist_info, device.type)
        if not dist_info.is_main:  # only rank 0 prints and writes
            progress, options = (lambda msg: None), dataclasses.replace(options, out=None)
            on_start = on_step = None
    dtype = resolve_dtype(options.dtype, device)
    cfg = pad_vocab(cfg, options.pad_vocab)
    B = options.batch_size
    T = cfg.max_seq_len if options.seq_len is None else options.seq_len
    validate_shapes(cfg, B, T)
    validate_tensor_sizes(cfg, B, T, analytic.param_counts(cfg).total)
    if options.warmup < 0 or options.iters < 1:
        raise UsageError(f"--warmup {options.warmup} / --iters {options.iters}: need warmup >= 0 and iters >= 1")
    if options.iters > MAX_ITERS or options.warmup > MAX_WARMUP:
        raise UsageError(f"--iters {options.iters} / --warmup {options.warmup}: at most {MAX_ITERS} / {MAX_WARMUP} "
                         f"(a larger value would run for days)")
    plan = _modes_to_run(options)

    env = environment(device)
    gpu = env["gpu"]
    peak, peak_source = gpu_peak(gpu, dtype, options.peak_tflops)  # dtype names = table columns
    clock = rated_clock((gpu or {}).get("name"), dtype)[0] if options.peak_tflops is None else None
    ctx = RunContext(cfg, B, T, options, device, peak, gpu, rated_clock_mhz=clock, dist_info=dist_info,
                     on_step=on_step)
    shards = dist_info.world_size if dist_info and dist_info.kind == "fsdp" else 1
    free = available_bytes(device)
    failure, verdicts = None, {}
    try:
        verdicts = check_fits(cfg, B, T, plan, device, dtype, shards, available=free)
    except ModelDoesNotFit as e:
        failure = ("oom", str(e))
    failure = _together(ctx, failure)  # every rank stops, or none
    if failure:
        raise ModelDoesNotFit(failure[1])

    run_id = folder_safe(f"{time.strftime('%Y%m%d-%H%M%S')}-{cfg.name}-{device.type}-{dtype}")
    if dist_info:
        run_id = f"{distributed.gather(run_id)[0]}-{dist_info.kind}{dist_info.world_size}"  # rank 0's clock
    writer = ResultWriter(options.out, run_id, env) if options.out else None
    doc = {
        "run_id": run_id, "config": cfg.as_dict(), "batch_size": B, "seq_len": T, "tokens_per_step": B * T,
        "device": str(device), "dtype": dtype, "compile": options.compile,
        "peak": {"tflops": peak, "source": peak_source, "dtype": dtype},
        "gemm_ceiling": None, "environment": env, "rows": [], "files": writer.files if writer else None,
        "memory": {"available_bytes": free[0], "source": free[1],
                   "estimates": {f"{m}/{c}": v.estimate.as_dict() for (m, c), v in verdicts.items()}},
        "parallelism": {**dist_info.as_dict(), "model_flops_per_gpu": "each rank's own batch (torchtitan, Megatron)"}
        if dist_info else None,
        "is_main": dist_info is None or dist_info.is_main,
    }
    if on_start:  # the header first: after every usage check, so a bad invocation prints one line only
        on_start(doc)
    if peak is None:
        progress(f"warning: {peak_source}; MFU and HFU will be null")

    if options.gemm:
        progress(f"GEMM ceiling: a search over {dtype} matmul shapes, then the best for a while ...")
        sampler = open_telemetry(device)  # the SM clock the ceiling held, as the rows record theirs
        try:
            with precision(dtype, device):
                doc["gemm_ceiling"] = {k: v for k, v in gemm_ceiling(device, TORCH_DTYPES[dtype],
                                                                     telemetry=sampler).items() if k != "times_ms"}
        finally:
            if sampler:
                sampler.close()
        ctx.gemm_tflops = doc["gemm_ceiling"]["tflops_median"]

    progress(f"building {cfg.name} on {device} ...")
    failure, model = None, None
    try:
        model = build_model(cfg, device)
    except (torch.OutOfMemoryError, RuntimeError) as e:
        if not is_oom(e):
            raise
        failure = ("oom", f"{cfg.name} does not fit on {device}: out of memory building the model")
    failure = _together(ctx, failure)
    if failure:
        model = None
        free_memory(device)
        raise ModelDoesNotFit(failure[1])
    stepper = Stepper(model, cfg, B, T, device, dtype, options.compile, dist_info)
    ctx.telemetry = open_telemetry(device)
    try:
        for mode, checkpointing in plan:
            progress(f"timing {mode} (checkpointing {checkpointing}): {options.warmup} warm-up + "
                     f"{options.iters} steps ...")
            row = measure_row(stepper, ctx, mode, checkpointing, verdicts.get((mode, checkpointing)))
            record = {"run_id": run_id, "model": cfg.name, "batch_size": B, "seq_len": T, "device": str(device),
                      "dtype": dtype, "compile": options.compile, "peak_tflops": peak,
                      "dist": dist_info.kind if dist_info else None,
                      "world_size": dist_info.world_size if dist_info else 1,
                      "gemm_tflops": ctx.gemm_tflops, **row.as_dict(), "config": cfg.as_dict()}
            doc["rows"].append(record)
            if writer:
                writer.append(record)
            if on_row:
                on_row(record)
            free_memory(device)  # between rows: no step's tensors are referenced any more
    finally:
        if ctx.telemetry:
            ctx.telemetry.close()
        if writer:
            writer.close()  # releases the folder's lock, checks rows.csv, removes temp files
    if doc["is_main"]:
        doc["checks"] = [c.as_dict() for c in run_checks(doc, checks)]
    return doc
