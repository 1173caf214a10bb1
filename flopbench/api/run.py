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
hardware FLOPs (`causal_skipped_flops`), only for the calls that ran such a kernel: a kernel given a mask,
the math kernel and the soft-cap path compute the whole square (there `hfu_causal` equals `hfu`). Each
row names the kernel that dispatched in its counted step (`attention_kernel`, `model.attention`), and a
row on the math kernel is warned about. With `attention="flex"` the hardware FLOPs are analytic (no
dispatch mode runs FlexAttention): the block mask's non-empty blocks (`flex_hardware_flops`). Each row
also shows what the simple rules give: `mfu_simple` with 2N (forward) or 6N per token (Kaplan et al.
2020, §2.1), which like MFU leave recomputation out, and `hfu_simple` with 8N per token under full
checkpointing (Narayanan et al. 2021, Eq. 3; 6N otherwise). MFU counts QK^T and AV over the full T x T square,
as PaLM (App. B) and torchtitan do; `mfu_causal` counts only the lower triangle (`model_flops_causal`, the
registry's "causal" estimate), as Megatron-LM (`num_floating_point_operations`) and MaxText do, so it compares
with their published MFU.

Three peaks side by side (MFU against the datasheet stays the headline): the datasheet dense peak
(`mfu`); the datasheet scaled by the median SM clock of the row's timed window over the clock the peak
is rated at (`peak_clock_tflops`, `mfu_vs_clock`; `hardware.peaks.rated_clock`, `clock_adjusted_peak`;
NVML's maximum clock only where the table has no rated clock, said in `peak_clock_source`); and the GEMM
ceiling measured before the rows (`mfu_vs_gemm`). On a GPU each row records `telemetry` over its timed steps
(`hardware.telemetry`: SM clock, power, temperature, throttle reasons, energy and joules per token) and
`throttled`; both are null on a CPU. `peak_memory_bytes` is the row's peak allocation
(`timing.memory.peak_bytes`); a run that cannot fit is refused before the model is built
(`timing.memory.check_fits`).

float8 training (`dtype="fp8"`, `fp8_recipe` "tensorwise" or "rowwise"): the block Linear layers are converted
with torchao before anything is compiled (`model.fp8`; the LM head and the attention core stay bf16, under
bf16 autocast). Each row gives `fp8_flops` (of the counted hardware FLOPs, those of ops with float8 operands,
`flops.counter.Float8Flops`) beside `fp8_flops_analytic` (the converted layers' FLOPs, `analytic.fp8_forward_flops`:
equal), and three MFUs and HFUs (`timing.rates.fp8_rates`): `mfu` against the bf16 peak, `mfu_fp8_peak`
against the fp8 peak and `mfu_weighted` against the FLOP-weighted peak.

Status: "ok"; "oom" (out of memory — a CUDA or CPU allocator error, or on the CPU an estimate that
cannot fit); "recompile_limit" (a compiled run hit dynamo's recompile limit: it would otherwise silently
run eagerly while labelled compiled). Each compiled run starts from an empty dynamo cache
(``torch._dynamo.reset()``) and compiles each block and the loss as regions with ``dynamic=False``; each of
its rows records `compile_s`. The step functions, and what is compiled, are `timing.step`'s; this module
orchestrates them.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..errors import UsageError, options_from
from ..flops import analytic, estimates
from ..flops.reconcile import FLEX_NOTE, explain_hardware_gap, explained_hardware_gap
from ..hardware.detect import environment, gpu_fp8_peak, gpu_peak
from ..hardware.peaks import clock_adjusted_peak, rated_clock
from ..hardware.telemetry import Telemetry, open_telemetry, throttled
from ..model.attention import KernelLog, has_flex, watch_kernels
from ..model.config import (ATTENTION, CHECKPOINTING_CHOICES, FP8_RECIPES, MODES, ModelConfig, base_dtype, check_steps,
                            checkpointing_modes, pad_vocab, validate_shapes, validate_tensor_sizes)
from ..model.fp8 import check_recipe, convert, fp8_layers, load_float8
from ..model.gpt import build_model, experts_impl
from ..model.presets import as_config
from ..output.records import ResultWriter, folder_safe
from ..timing import distributed
from ..timing.clock import time_step
from ..timing.device import (
    TORCH_DTYPES,
    ModelDoesNotFit,
    drop_traceback,
    free_memory,
    is_oom,
    oom_safe,
    precision,
    resolve_device,
    resolve_dtype,
)
from ..timing.gemm import gemm_ceiling
from ..timing.memory import RowVerdict, available_bytes, check_fits, peak_bytes, reset_peak
from ..timing.rates import fp8_rates, rates, utilization
from ..timing.step import Stepper, compile_seconds, is_recompile_limit, recompile_watch
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
    out: str | Path | None = "results"  # None: write nothing
    modes: tuple[str, ...] = MODES
    dist: str | None = None  # "ddp" | "fsdp" under torchrun (see flopbench.timing.distributed)
    attention: str = "sdpa"  # or "flex" (`model.attention.ATTENTION`): FlexAttention with a block mask, on a GPU
    fp8_recipe: str = FP8_RECIPES[0]  # with dtype "fp8": torchao's float8 recipe (`model.fp8`)
    peak_fp8_tflops: float | None = None  # with dtype "fp8": the fp8 dense peak (default: the peak table's)


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
    model_flops_causal: int = 0  # model_flops with attention's T x T square halved (Megatron-LM, MaxText)
    hardware_flops_analytic: int = 0  # analytic, recomputation included
    hardware_flops: int | None = None  # FlopCounterMode over one real step on the device
    hardware_flops_note: str = ""  # why counted and analytic hardware FLOPs differ
    simple_formula: str = ""  # the simple rule for the model FLOPs: 2N (forward) or 6N
    simple_flops: int = 0
    simple_hardware_formula: str = ""  # the simple rule for the hardware FLOPs: 8N with full checkpointing
    simple_hardware_flops: int = 0
    achieved_tflops: float | None = None  # model FLOPs / median time
    mfu: float | None = None  # against the datasheet peak: the headline
    mfu_causal: float | None = None  # model_flops_causal in place of model_flops
    hfu: float | None = None
    hfu_causal: float | None = None  # HFU without the half of QK^T / AV a causal kernel skips (= hfu when none)
    attention_kernel: str | None = None  # flash, efficient, cudnn, math, flex or eager (`model.attention`)
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
    experts_impl: str | None = None  # "grouped_mm" | "loop" (`model.gpt.Experts.impl`); None: no experts
    compile_s: float | None = None  # compiled runs: first step beyond a steady one (`timing.step`); else null
    fp8_flops: int | None = None  # dtype fp8: of hardware_flops, those of ops with float8 operands (counted)
    fp8_flops_analytic: int | None = None  # dtype fp8: the converted layers' hardware FLOPs (analytic)
    fp8_model_flops: int | None = None  # dtype fp8: the converted layers' model FLOPs (analytic)
    mfu_fp8_peak: float | None = None  # dtype fp8: MFU against the fp8 dense peak (`timing.rates.fp8_rates`)
    mfu_weighted: float | None = None  # dtype fp8: MFU against the FLOP-weighted peak
    hfu_fp8_peak: float | None = None
    hfu_weighted: float | None = None

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
    causal: int = 0  # `model` with QK^T and AV over the lower triangle only (Megatron-LM's count)
    fp8_model: int | None = None  # float8 training: the converted layers' part of `model`
    fp8_hardware: int | None = None  # ... and of `hardware`


def flops_of_mode(cfg: ModelConfig, B: int, T: int, mode: str, checkpointing: str,
                  attention: str = "sdpa", fp8: bool = False) -> ModeFlops:
    """Model and analytic hardware FLOPs of one step of `mode`, and the simple rules for each: 2N for a
    forward, 6N for training (Kaplan et al. 2020, §2.1), 8N for training with full recomputation (a fourth
    forward; Narayanan et al. 2021, Eq. 3) — which counts hardware FLOPs, so it rates HFU, not MFU.

    With `attention="flex"` the hardware FLOPs count QK^T and AV over the block mask's non-empty blocks
    (`analytic.flex_attention_flops`) in place of the square, in every pass of the attention core, plus
    the QK^T its backward re-forms (`flex_hardware_flops`).

    With `fp8` (float8 training, `model.fp8`) the converted layers' FLOPs are given apart
    (`analytic.fp8_forward_flops`): once in a forward, three times in training, four with full checkpointing,
    whose recompute then re-runs every converted layer, the down-projection included (so torch's early stop
    saves nothing there)."""
    simple = "2N" if mode == "forward" else "6N"
    simple_hw = "8N" if mode != "forward" and checkpointing == "full" else simple

    def rule(name):
        return estimates.REGISTRY[name].formula(cfg, B, T)

    if mode == "forward":
        model = analytic.forward_flops(cfg, B, T)
        hardware = model + analytic.masked_square_flops(cfg, B, T)
    else:
        model = analytic.train_flops(cfg, B, T)
        early_stop = not (fp8 and any(m.name == "mlp_down" and analytic.fp8_matrix(m)
                                      for m in analytic.block_matrices(cfg)))
        hardware = model if checkpointing == "none" else analytic.train_recompute_flops(
            cfg, B, T, early_stop=early_stop, checkpointing=checkpointing)
        hardware += passes(mode, checkpointing) * analytic.masked_square_flops(cfg, B, T)
    if attention == "flex":
        hardware = flex_hardware_flops(cfg, B, T, mode, checkpointing, hardware)
    causal = model - (1 if mode == "forward" else 3) * estimates.Terms.of(cfg, B, T).causal_skipped
    fp8_model = fp8_hardware = None
    if fp8:
        forward = analytic.fp8_forward_flops(cfg, B, T)
        fp8_model = forward if mode == "forward" else 3 * forward
        fp8_hardware = fp8_model + (forward if mode != "forward" and checkpointing == "full" else 0)
    return ModeFlops(model, hardware, simple, rule(simple), simple_hw, rule(simple_hw), causal, fp8_model,
                     fp8_hardware)


def flex_hardware_flops(cfg: ModelConfig, B: int, T: int, mode: str, checkpointing: str, square: int) -> int:
    """`square` (analytic hardware FLOPs with a mask-based kernel, `flops_of_mode`) with FlexAttention's
    block count in place of the masked square: every pass of the attention core computes the non-empty
    blocks (`analytic.flex_attention_flops`), and a backward re-forms their QK^T, half a forward's
    attention FLOPs (FlashAttention-2, Dao 2023, Algorithm 2: backward recomputes S = QK^T per block,
    as flex's backward kernel does; torch counts the fused SDPA kernels' backward the same way)."""
    terms = estimates.Terms.of(cfg, B, T)
    flex = analytic.flex_attention_flops(cfg, B, T)
    n = passes(mode, checkpointing)
    return square - n * (terms.attention + terms.masked) + n * flex + (flex // 2 if mode != "forward" else 0)


def passes(mode: str, checkpointing: str) -> int:
    """How many times a step of `mode` runs the attention core: once in a forward, three times in training
    (backward = 2 x forward), four with any recomputation (full or selective checkpointing re-runs it)."""
    return 1 if mode == "forward" else (3 if checkpointing == "none" else 4)


def causal_skipped_flops(cfg: ModelConfig, B: int, T: int, mode: str, checkpointing: str, rescore: int = 0,
                         skipping: tuple[int, int] = (1, 1)) -> int:
    """The attention-score FLOPs in a step's hardware count that a causal kernel does not compute: half of
    every T x T product (QK^T, AV and their gradients) — only the blocks on or below the diagonal run.

    A layer's forward T x T products are 4·B·T²·n_head·head_dim (`analytic.components`), half of them
    skipped; a step runs them once (forward), three times (forward + backward, backward = 2 x forward) or
    four times (with full recomputation), plus `rescore`, the QK^T a fused kernel's backward re-forms
    (`flops.reconcile.explained_hardware_gap`, every layer). Halving them is the registry's "causal"
    convention (`estimates.REGISTRY["causal"]`). Only layers whose kernel skips blocks count:
    `skipping` = (attention calls of the counted step that ran a fused kernel under `is_causal`, all
    attention calls; `model.attention.KernelLog.skipping_calls`). A kernel given a mask (a sliding
    window's band), the math kernel and the soft-cap path's matmuls compute the whole square: nothing
    skipped, so for a row of those alone `hfu_causal` equals `hfu`."""
    skip, calls = skipping
    if not calls:
        return 0
    per_step = passes(mode, checkpointing) * 2 * B * T * T * cfg.q_dim * cfg.n_layer + rescore // 2
    return per_step * skip // calls


def check_attention(attention: str, device: torch.device, plan: list[tuple[str, str]]) -> None:
    """A `UsageError` for an attention choice this torch and device cannot time: flex needs torch's
    FlexAttention (torch >= 2.5), and on the CPU torch 2.13 has no flex backward, so only forward rows."""
    allowed = ATTENTION if has_flex() else ("sdpa",)
    if attention not in allowed:
        raise UsageError(f"--attention {attention!r}: choose one of {', '.join(allowed)}"
                         + ("" if has_flex() else f" (torch {torch.__version__} has no FlexAttention)"))
    training = [m for m, _ in plan if m != "forward"]
    if attention == "flex" and device.type == "cpu" and training:
        raise UsageError(f"--attention flex on the CPU: torch has no FlexAttention backward there, so no "
                         f"{training[0]} rows; time mode forward only, or use a GPU")


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
    progress: Callable[[str], None] | None = None  # `run`'s status lines and warnings
    fp8: bool = False  # float8 training (`model.fp8`): the block Linear layers converted
    fp8_peak: float | None = None  # the fp8 dense peak


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


def first_optimizer_step(stepper: Stepper) -> None:
    """The optimizer's first step, on the counting phase's gradients set to zero, before the timed steps:
    it allocates AdamW's state (8 bytes per parameter) and the step's temporaries where the ranks of a
    torchrun job still agree on a failure (`measure_row`). With zero gradients AdamW changes each weight only
    by its decoupled weight decay, the same on every rank, so DDP's replicas stay equal."""
    for p in stepper.eager.parameters():
        if p.grad is not None:
            p.grad.zero_()
    stepper.optim().step()
    stepper.eager.zero_grad(set_to_none=True)


def measure_row(stepper: Stepper, ctx: RunContext, mode: str, checkpointing: str,
                verdict: RowVerdict | None = None) -> Row:
    """Count and time one mode; running out of memory gives a row with status "oom", dynamo's recompile
    limit one with "recompile_limit" (see the module docstring).

    Under torchrun every rank times its own steps; the row's time is the slowest rank's median (a
    data-parallel step runs at the pace of its slowest rank) and `per_rank` holds each rank's. The ranks
    agree on the row's status after counting (with a train step's first optimizer step,
    `first_optimizer_step`) and after timing, so none waits in a collective the others skipped
    (`distributed.agree`). Telemetry is rank 0's GPU's."""
    cfg, B, T, options = ctx.cfg, ctx.B, ctx.T, ctx.options
    flops = flops_of_mode(cfg, B, T, mode, checkpointing, options.attention, ctx.fp8)
    row = Row(mode, checkpointing, model_flops=flops.model, hardware_flops_analytic=flops.hardware,
              model_flops_causal=flops.causal,
              fp8_model_flops=flops.fp8_model, fp8_flops_analytic=flops.fp8_hardware,
              simple_formula=flops.simple, simple_flops=flops.simple_flops,
              simple_hardware_formula=flops.simple_hardware, simple_hardware_flops=flops.simple_hardware_flops,
              memory_estimate_bytes=verdict.estimate.total if verdict else None,
              experts_impl=experts_impl(stepper.eager, stepper.device.type, TORCH_DTYPES[stepper.dtype],
                                        options.compile))
    stepper.eager.checkpointing = checkpointing

    def fail(failure: Failure) -> Row:
        row.status, row.error = failure
        return row

    failure = ("oom", verdict.reason) if verdict is not None and not verdict.fits else None
    kernels = KernelLog()
    if failure is None and options.attention == "flex":  # no dispatch mode runs flex: analytic (reconcile)
        row.hardware_flops, row.attention_kernel = flops.hardware, "flex"
    elif failure is None:
        def counted() -> int:
            with watch_kernels() as log:
                total, fp8_part = stepper.count(mode).total(mode)
            kernels.calls, row.attention_kernel = log.calls, log.kernel
            row.fp8_flops = fp8_part if ctx.fp8 else None
            return total

        row.hardware_flops, failure = _attempt(counted, stepper, False)
    if failure is None and mode == "train_step":
        _, failure = _attempt(lambda: first_optimizer_step(stepper), stepper, False)
    failure = _together(ctx, failure)
    if failure:
        return fail(failure)

    telemetry = ctx.telemetry

    def report(done: int) -> None:  # a few microseconds inside a timed step (rich only records the count)
        if ctx.on_step:
            ctx.on_step(StepProgress(mode, checkpointing, done, options.warmup, options.iters))

    first_step_s = None

    def timed_steps():
        nonlocal first_step_s
        first_step_s = stepper.first_step(mode)  # compiled runs only: compiles, before the warm-up

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
    row.hardware_flops_note = (FLEX_NOTE if options.attention == "flex"
                               else explain_hardware_gap(cfg, B, T, mode, row.hardware_flops, flops.hardware))
    if "math" in (row.attention_kernel or "").split("+") and ctx.progress:
        ctx.progress(f"warning: {mode}/{checkpointing} ran torch's math attention kernel (no fused kernel "
                     f"took it)")
    row.time_ms = stats.as_dict()
    row.compile_s = compile_seconds(first_step_s, stats)
    if ctx.dist_info:
        per_rank = distributed.gather({k: v for k, v in row.time_ms.items() if k != "times_ms"})
        row.distributed = distributed.aggregate(per_rank, B * T)
        for r in row.distributed["per_rank"]:
            r["mfu"] = utilization(flops.model, r["median_ms"] / 1e3, ctx.peak)
        row.time_ms = {**row.time_ms, "median_ms": row.distributed["slowest_median_ms"]}
    _rate(row, ctx, stepper.device.type, kernels.skipping_calls)
    return row


def _rate(row: Row, ctx: RunContext, device_type: str, skipping: tuple[int, int] = (1, 1)) -> None:
    """Fill a measured row's rates from its median time (every division through `timing.rates`)."""
    cfg, B, T, peak = ctx.cfg, ctx.B, ctx.T, ctx.peak
    seconds = row.time_ms["median_ms"] / 1e3
    r = rates(row.model_flops, row.hardware_flops, seconds, peak)
    row.tokens_per_s = B * T / seconds
    row.achieved_tflops, row.mfu, row.hfu = r.achieved_tflops, r.mfu, r.hfu
    row.mfu_causal = utilization(row.model_flops_causal, seconds, peak)
    row.mfu_simple = utilization(row.simple_flops, seconds, peak)
    row.hfu_simple = utilization(row.simple_hardware_flops, seconds, peak)
    if row.hardware_flops is not None:
        rescore = explained_hardware_gap(cfg, B, T, row.mode, row.hardware_flops - row.hardware_flops_analytic)
        skipped = causal_skipped_flops(cfg, B, T, row.mode, row.checkpointing, rescore, skipping)
        row.hfu_causal = utilization(row.hardware_flops - skipped, seconds, peak)
    sm_clock = (row.telemetry or {}).get("sm_clock_mhz") or {}
    row.peak_clock_tflops, row.peak_clock_source = clock_adjusted_peak(
        peak, sm_clock.get("median"), ctx.rated_clock_mhz, (ctx.gpu or {}).get("sm_clock_max_mhz"))
    row.mfu_vs_clock = utilization(row.model_flops, seconds, row.peak_clock_tflops)
    row.mfu_vs_gemm = utilization(row.model_flops, seconds, ctx.gemm_tflops)
    if ctx.fp8:
        f = fp8_rates(row.model_flops, row.hardware_flops, row.fp8_model_flops, row.fp8_flops, seconds, peak,
                      ctx.fp8_peak)
        for name, value in asdict(f).items():  # mfu_fp8_peak, mfu_weighted, hfu_fp8_peak, hfu_weighted
            setattr(row, name, value)


def run(config: ModelConfig | str, options: RunOptions | None = None, progress=None,
        on_row: Callable[[dict], None] | None = None, checks: Thresholds | None = None,
        on_start: Callable[[dict], None] | None = None, on_step: Callable[[StepProgress], None] | None = None,
        on_measured: Callable[[Stepper, dict], None] | None = None, **fields) -> dict:
    """Build `config` (a `ModelConfig` or a preset name), count its FLOPs, time real steps and report MFU /
    HFU: the `flopbench run --json` document, one row per mode (see the module docstring).

    Options are `RunOptions` fields (defaults as the CLI's), given as keywords (`batch_size`, `seq_len`,
    `device`, `dtype`, `checkpointing`, `warmup`, `iters`, `peak_tflops`, `compile`, `pad_vocab`, `gemm`,
    `out` — `out=None` writes no files —, `modes`, `dist`, `attention`) or as one `RunOptions`. Rows are written to
    disk as they finish when `out` is set. In order, as the run goes: `on_start(doc)` receives the document
    once its header fields are known (config, shape, device, dtype, peak, environment; before anything is
    timed), `progress(message)` status lines and warnings (default: stderr), `on_step(StepProgress)` each
    warm-up and timed step of each row, `on_row(record)` each row the moment it is measured (a sweep
    appends it to its file), `on_measured(stepper, record)` each "ok" row right after, with the `Stepper` that
    timed it, still warm (`flopbench.explain` profiles the same step there). Only rank 0 of a torchrun job
    reports. `checks`
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
    compute = base_dtype(dtype)  # fp8: everything but the converted layers runs in bf16
    fp8 = dtype == "fp8"
    if fp8:
        check_recipe(options.fp8_recipe)
        load_float8()  # a usage error before anything is built when torchao is missing
    cfg = pad_vocab(cfg, options.pad_vocab)
    B = options.batch_size
    T = cfg.max_seq_len if options.seq_len is None else options.seq_len
    validate_shapes(cfg, B, T)
    validate_tensor_sizes(cfg, B, T, analytic.param_counts(cfg).total)
    check_steps(options.warmup, options.iters)
    plan = _modes_to_run(options)
    check_attention(options.attention, device, plan)
    checks.check_plan(plan)

    env = environment(device)
    gpu = env["gpu"]
    peak, peak_source = gpu_peak(gpu, compute, options.peak_tflops)  # dtype names = table columns
    fp8_peak, fp8_peak_source = gpu_fp8_peak(gpu, options.peak_fp8_tflops) if fp8 else (None, None)
    clock = rated_clock((gpu or {}).get("name"), compute)[0] if options.peak_tflops is None else None
    ctx = RunContext(cfg, B, T, options, device, peak, gpu, rated_clock_mhz=clock, dist_info=dist_info,
                     on_step=on_step, progress=progress, fp8=fp8, fp8_peak=fp8_peak)
    shards = dist_info.world_size if dist_info and dist_info.kind == "fsdp" else 1
    free = available_bytes(device)
    failure, verdicts = None, {}
    try:
        verdicts = check_fits(cfg, B, T, plan, device, compute, shards, available=free)
    except ModelDoesNotFit as e:
        failure = ("oom", str(e))
    failure = _together(ctx, failure)  # every rank stops, or none
    if failure:
        raise ModelDoesNotFit(failure[1])

    label = f"{dtype}-{options.fp8_recipe}" if fp8 else dtype
    run_id = folder_safe(f"{time.strftime('%Y%m%d-%H%M%S')}-{cfg.name}-{device.type}-{label}")
    if dist_info:
        run_id = f"{distributed.gather(run_id)[0]}-{dist_info.kind}{dist_info.world_size}"  # rank 0's clock
    writer = ResultWriter(options.out, run_id, env) if options.out else None
    doc = {
        "run_id": run_id, "config": cfg.as_dict(), "batch_size": B, "seq_len": T, "tokens_per_step": B * T,
        "device": str(device), "dtype": dtype, "compile": options.compile,
        "peak": {"tflops": peak, "source": peak_source, "dtype": compute,
                 **({"fp8_tflops": fp8_peak, "fp8_source": fp8_peak_source} if fp8 else {})},
        "fp8": fp8_layers(build_model(cfg, "meta"), options.fp8_recipe) if fp8 else None,
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
    elif fp8 and fp8_peak is None:
        progress(f"warning: {fp8_peak_source}; the fp8-peak and FLOP-weighted MFU and HFU will be null")

    if options.gemm:
        progress(f"GEMM ceiling: a search over {compute} matmul shapes, then the best for a while ...")
        sampler = open_telemetry(device)  # the SM clock the ceiling held, as the rows record theirs
        try:
            with precision(compute, device):
                doc["gemm_ceiling"] = {k: v for k, v in gemm_ceiling(device, TORCH_DTYPES[compute],
                                                                     telemetry=sampler).items() if k != "times_ms"}
        finally:
            if sampler:
                sampler.close()
        ctx.gemm_tflops = doc["gemm_ceiling"]["tflops_median"]

    progress(f"building {cfg.name} on {device} ...")
    failure, model = None, None
    try:
        model = build_model(cfg, device, attention=options.attention)
        if fp8:
            convert(model, options.fp8_recipe)
    except (torch.OutOfMemoryError, RuntimeError) as e:
        if not is_oom(e):
            raise
        failure = ("oom", f"{cfg.name} does not fit on {device}: out of memory building the model")
    failure = _together(ctx, failure)
    if failure:
        model = None
        free_memory(device)
        raise ModelDoesNotFit(failure[1])
    stepper = Stepper(model, cfg, B, T, device, compute, options.compile, dist_info)
    ctx.telemetry = open_telemetry(device)
    try:
        for mode, checkpointing in plan:
            progress(f"timing {mode} (checkpointing {checkpointing}): {options.warmup} warm-up + "
                     f"{options.iters} steps ...")
            row = measure_row(stepper, ctx, mode, checkpointing, verdicts.get((mode, checkpointing)))
            record = {"run_id": run_id, "model": cfg.name, "batch_size": B, "seq_len": T, "device": str(device),
                      "dtype": dtype, "fp8_recipe": options.fp8_recipe if fp8 else None,
                      "compile": options.compile, "peak_tflops": peak, "peak_fp8_tflops": fp8_peak,
                      "dist": dist_info.kind if dist_info else None,
                      "world_size": dist_info.world_size if dist_info else 1,
                      "gemm_tflops": ctx.gemm_tflops, **row.as_dict(), "config": cfg.as_dict()}
            doc["rows"].append(record)
            if writer:
                writer.append(record)
            if on_row:
                on_row(record)
            if on_measured and record["status"] == "ok":
                on_measured(stepper, record)
            free_memory(device)  # between rows: no step's tensors are referenced any more
    finally:
        if ctx.telemetry:
            ctx.telemetry.close()
        if writer:
            writer.close()  # releases the folder's lock, checks rows.csv, removes temp files
    if doc["is_main"]:
        doc["checks"] = [c.as_dict() for c in run_checks(doc, checks)]
    return doc
