"""`flopbench.infer`: prefill and decode of greedy generation — FLOPs and bytes, counted, timed, MFU and MBU.

One call, for flopbench's model (a preset or a config.json) built with its weights in the run's dtype
(bf16 / fp16 weights, as inference engines keep them; fp32 and tf32 stay fp32; no autocast), with a static
KV cache (`model.gpt.KVCache`, preallocated to S = P + G positions):

1. **analytic** (`flops.inference`): the prefill's FLOPs (the forward over the P prompt tokens, the LM
   head on the last position only, as `generate` does) and bytes; each decode step's model FLOPs and bytes
   at its context c (the keys attended, the new token included: P + 1 for the first step), and its
   hardware FLOPs and bytes: a static decode step scores all S cached keys, the ones beyond c masked;
2. **counted**: FlopCounterMode over one prefill and one decode step, on the meta device (the context's
   keys) and on the run's device (the static step: all S keys), reconciled with the analytic model FLOPs
   as `count` does, the masked keys the explained difference;
3. **measured** (`timing.decode`): `warmup` untimed generations, then the prefill timed `iters` times and
   one generation of G tokens: 1 prefill + (G − 1) decode steps, each step timed on its own (CUDA events on a
   GPU, perf_counter on the CPU) and its host time beside it (`launch_bound` where host ≥ device). The
   prefill's figure is MFU; a decode step's is MBU = bytes / (time x peak bandwidth) (`timing.rates`),
   reported as the median over the steps and per context bucket, with tokens/s = B / median step time.
   Each phase's row is written the moment it is measured.

The peaks are the dense TFLOP/s (a MIG slice's share, as `run` rates it: `hardware.detect.gpu_peak`) and
the memory bandwidth of the GPU's entry in the peak table for the dtype (or `peak_tflops` / `peak_gbps`);
beside them the measured GEMM and copy-bandwidth ceilings. `compile=True` applies torch.compile with static
shapes, the decode step with CUDA graphs on CUDA (`timing.decode.compile_options`).
"""

from __future__ import annotations

import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import UsageError, check_int, options_from
from ..flops import inference
from ..flops.analytic import masked_square_flops
from ..flops.counter import count_step
from ..flops.reconcile import Check
from ..hardware.detect import environment, gpu_peak
from ..hardware.peaks import resolve_bandwidth
from ..model.config import MAX_ITERS, MAX_WARMUP, ModelConfig, validate_shapes
from ..model.gpt import KVCache, build_model
from ..model.presets import as_config
from ..output.records import ResultWriter, folder_safe
from ..timing.bandwidth import copy_bandwidth
from ..timing.clock import Clock, TimingStats
from ..timing.decode import Generator, StepTime, compile_options, time_decode, time_prefill
from ..timing.device import TORCH_DTYPES, matmul_precision, precision, resolve_device, resolve_dtype
from ..timing.gemm import gemm_ceiling
from ..timing.memory import check_infer_fits
from ..timing.rates import bandwidth_utilization, rates, utilization

#: Decode steps are summarised in up to this many buckets of context length.
BUCKETS = 4


@dataclass
class InferOptions:
    batch_size: int = 1
    prompt_len: int = 128
    gen_len: int = 32
    device: str = "auto"
    dtype: str = "auto"  # auto: bf16 on CUDA, fp32 on CPU
    warmup: int = 1  # untimed generations first
    iters: int = 5  # timed prefills
    peak_tflops: float | None = None
    peak_gbps: float | None = None
    compile: bool = False
    ceilings: bool = True  # measure the GEMM and copy-bandwidth ceilings
    out: str | Path | None = "results"  # None: write nothing


def _check(options: InferOptions, cfg: ModelConfig) -> None:
    check_int("batch_size", options.batch_size, 1)
    check_int("prompt_len", options.prompt_len, 1)
    check_int("gen_len", options.gen_len, 1)
    check_int("warmup", options.warmup, 0)
    check_int("iters", options.iters, 1)
    if options.iters > MAX_ITERS or options.warmup > MAX_WARMUP:
        raise UsageError(f"--iters {options.iters} / --warmup {options.warmup}: at most {MAX_ITERS} / {MAX_WARMUP}")
    total = options.prompt_len + options.gen_len
    if total > cfg.max_seq_len:
        raise UsageError(f"--prompt-len {options.prompt_len} + --gen-len {options.gen_len} = {total} exceeds the "
                         f"model's {cfg.max_seq_len} positions: use a shorter prompt or generation")
    validate_shapes(cfg, options.batch_size, total)


def _bucket(steps: list[dict]) -> list[dict]:
    """The decode steps in up to BUCKETS groups of consecutive contexts: median time, MBU and MFU of each."""
    size = -(-len(steps) // BUCKETS)
    groups = [steps[i:i + size] for i in range(0, len(steps), size)]
    return [{"context_from": g[0]["context"], "context_to": g[-1]["context"], "steps": len(g),
             "median_ms": statistics.median(s["time_ms"] for s in g),
             "mbu": _median([s["mbu"] for s in g]), "mfu": _median([s["mfu"] for s in g])} for g in groups]


def _median(values: list) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def weights_dtype(dtype: str) -> str:
    """The dtype `infer` builds the model in: bf16 / fp16 weights for those runs, as inference engines keep
    them (gpt-fast, vLLM), so a decode step reads 2 bytes per parameter, the bytes MBU divides; fp32 for
    fp32 and tf32 (TF32 is a matmul mode of float32 weights)."""
    return "fp32" if dtype == "tf32" else dtype


def _count_meta(cfg: ModelConfig, B: int, P: int, G: int) -> dict[str, int]:
    """FlopCounterMode over one prefill and the first decode step on the meta device, at the context's keys."""
    model = build_model(cfg, "meta").eval()
    cache = KVCache(cfg, B, P + G, "meta", torch.float32)
    prompt = torch.zeros(B, P, dtype=torch.long, device="meta")
    token = torch.zeros(B, 1, dtype=torch.long, device="meta")
    with torch.no_grad():
        prefill = count_step(lambda: model(prompt, cache=cache, pos=0, last_only=True)).forward
        decode = count_step(lambda: model(token, cache=cache, pos=P, last_only=True)).forward
    return {"prefill": prefill, "decode": decode}


def _count_device(gen: Generator) -> dict[str, int]:
    """FlopCounterMode over the eager prefill and first static decode step that `gen` times."""
    with torch.no_grad():
        prefill = count_step(lambda: gen.prefill_step(gen.prompt)).forward
        decode = count_step(lambda: gen.decode_step(gen.token, gen.positions[0])).forward
    return {"prefill": prefill, "decode": decode}


def _time_dict(times: list[StepTime], cuda: bool) -> tuple[dict, dict, bool | None]:
    """(device time_ms stats, host_ms stats without the per-step list, launch_bound of the medians)."""
    device = TimingStats(tuple(t.device_ms for t in times))
    host = TimingStats(tuple(t.host_ms for t in times))
    host_ms = {k: v for k, v in host.as_dict().items() if k != "times_ms"}
    return device.as_dict(), host_ms, (host.median_ms >= device.median_ms) if cuda else None


def infer(config: ModelConfig | str, options: InferOptions | None = None, progress=None, **fields) -> dict:
    """Prefill and decode of `config` (a `ModelConfig` or a preset name): the `flopbench infer --json` document
    (see the module docstring). Options are `InferOptions` fields, as keywords or one `InferOptions`. A run
    that cannot fit in memory (`timing.memory.check_infer_fits`, the KV cache included) raises
    `ModelDoesNotFit` before the model is built."""
    cfg = as_config(config)
    options = options_from(InferOptions, options, fields, "infer")
    _check(options, cfg)
    progress = progress or (lambda msg: print(msg, file=sys.stderr, flush=True))
    device = resolve_device(options.device)
    dtype = resolve_dtype(options.dtype, device)
    if dtype == "fp8":
        raise UsageError("infer --dtype fp8: float8 here is torchao's float8 training (run, sweep); generation "
                         "runs in fp32, tf32, bf16 or fp16")
    check_infer_fits(cfg, options.batch_size, options.prompt_len, options.gen_len, device, dtype)  # before building

    env = environment(device)
    gpu_name = env["gpu"]["name"] if env["gpu"] else None
    peak, peak_source = gpu_peak(env["gpu"], dtype, options.peak_tflops)  # a MIG slice's share, as `run`
    peak_gbps, gbps_source = resolve_bandwidth(gpu_name, options.peak_gbps)
    run_id = folder_safe(f"{time.strftime('%Y%m%d-%H%M%S')}-{cfg.name}-infer-{device.type}-{dtype}")
    for missing, source in ((peak, peak_source), (peak_gbps, gbps_source)):
        if missing is None:
            progress(f"warning: {source}")
    writer = ResultWriter(options.out, run_id, env) if options.out else None
    try:
        return _infer(cfg, options, progress, device, dtype, env, run_id, writer,
                      {"tflops": peak, "source": peak_source, "gbps": peak_gbps, "gbps_source": gbps_source})
    finally:
        if writer:
            writer.close()  # releases the folder's lock, checks rows.csv, removes temp files


def _infer(cfg, options, progress, device, dtype, env, run_id, writer, peaks) -> dict:
    """`infer` once the results folder is open: count, measure, and write each phase's row as it is measured."""
    B, P, G = options.batch_size, options.prompt_len, options.gen_len
    S = P + G  # the static cache's positions: every decode step attends over all of them, masked
    contexts = list(range(P + 1, P + G))  # G - 1 decode steps: the first token comes from the prefill
    analytic = {"prefill": inference.prefill_flops(cfg, B, P), "decode": inference.decode_flops(cfg, B, P + 1),
                "decode_hardware": inference.static_decode_flops(cfg, B, S)}
    progress(f"counting {cfg.name}: one prefill and one decode step, on meta and on {device} ...")
    counted = {"meta": _count_meta(cfg, B, P, G)}
    model = build_model(cfg, device, dtype=TORCH_DTYPES[weights_dtype(dtype)]).eval()
    gen = Generator(model, cfg, B, P, G, compile=options.compile)
    with matmul_precision(dtype):
        counted[str(device)] = _count_device(gen)
    checks = _reconcile(cfg, B, P, S, counted, analytic)
    ceilings = _ceilings(device, dtype, progress) if options.ceilings else {"gemm": None, "copy": None}
    doc = {
        "run_id": run_id, "config": cfg.as_dict(), "batch_size": B, "prompt_len": P, "gen_len": G,
        "cache_len": S, "device": str(device), "dtype": dtype, "weights_dtype": weights_dtype(dtype),
        "compile": options.compile, "compile_options": compile_options(device) if options.compile else None,
        "peak": peaks, "ceilings": ceilings, "prefill": None, "decode": None,
        "counted": counted, "analytic": analytic, "reconciliation": [c.as_dict() for c in checks],
        "environment": env, "files": writer.files if writer else None,
    }
    clock = Clock(device)
    with matmul_precision(dtype):
        progress(f"timing {options.warmup} warm-up generation(s), {options.iters} prefills, {G - 1} decode "
                 f"steps ...")
        for _ in range(options.warmup):
            gen.generate()
        doc["prefill"] = _prefill(cfg, B, P, dtype, time_prefill(gen, clock, options.iters), clock.cuda, peaks)
        if writer:
            writer.append(_row(doc, "prefill", doc["prefill"]))
        doc["decode"] = _decode(cfg, B, S, dtype, contexts, time_decode(gen, clock), clock.cuda, peaks)
    if writer:
        writer.append(_row(doc, "decode", doc["decode"]))
    if doc["decode"]["launch_bound"]:
        progress(f"warning: decode is launch-bound: the host took {doc['decode']['host_ms']['median_ms']:.3g} ms "
                 f"to launch a step the GPU ran in {doc['decode']['time_ms']['median_ms']:.3g} ms"
                 + ("" if options.compile else "; --compile replays each step as one CUDA graph"))
    return doc


def _reconcile(cfg: ModelConfig, B: int, P: int, S: int, counted: dict, analytic: dict) -> list[Check]:
    """Counted vs analytic model FLOPs of the prefill and the first decode step, on meta and on the device.
    Explained differences: the prompt's mask-based attention scores the whole P x P square in a sliding
    layer (`masked_square_flops`); the device's static decode step scores all S cached keys in every layer,
    the ones beyond its context masked (`inference.static_decode_flops`)."""
    square = masked_square_flops(cfg, B, P)
    masked_keys = analytic["decode_hardware"] - analytic["decode"]
    checks = []
    for where, c in counted.items():
        for phase in ("prefill", "decode"):
            static = phase == "decode" and where != "meta"
            reason = ("the same matmuls: LM head on the last position only; attention over the keys in the cache"
                      + ("; the prompt's mask-based attention scores all P keys, not the window"
                         if phase == "prefill" and square else "")
                      + (f"; the static cache: the step scores all S = {S} cached keys in every layer, "
                         f"{masked_keys:,} FLOPs on the masked ones" if static else ""))
            explained = square if phase == "prefill" else (masked_keys if static else 0)
            checks.append(Check(f"counted.{where}.{phase}", c[phase], f"analytic.{phase}", analytic[phase],
                                explained, reason))
    return checks


def _ceilings(device: torch.device, dtype: str, progress) -> dict:
    """The measured GEMM and device-to-device copy ceilings."""
    progress("ceilings: GEMM and device-to-device copy ...")
    with precision(dtype, device):
        gemm = gemm_ceiling(device, TORCH_DTYPES[dtype])
    return {"gemm": {k: v for k, v in gemm.items() if k != "times_ms"},
            "copy": copy_bandwidth(device, 2**30 if device.type == "cuda" else 2**26)}


def _prefill(cfg, B: int, P: int, dtype: str, times: list[StepTime], cuda: bool, peaks: dict) -> dict:
    """The prefill's figures from its timed runs."""
    flops, nbytes = inference.prefill_flops(cfg, B, P), inference.prefill_bytes(cfg, B, P, dtype)
    hardware = flops + masked_square_flops(cfg, B, P)  # a mask-based kernel scores the whole square
    time_ms, host_ms, launch_bound = _time_dict(times, cuda)
    seconds = time_ms["median_ms"] / 1e3
    r = rates(flops, hardware, seconds, peaks["tflops"])
    return {"flops": flops, "hardware_flops": hardware, "bytes": nbytes, "intensity": flops / nbytes,
            "time_ms": time_ms, "host_ms": host_ms, "launch_bound": launch_bound,
            "achieved_tflops": r.achieved_tflops, "mfu": r.mfu, "hfu": r.hfu, "tokens_per_s": B * P / seconds,
            "mbu": bandwidth_utilization(nbytes, seconds, peaks["gbps"])}


def _decode(cfg, B: int, S: int, dtype: str, contexts: list[int], times: list[StepTime], cuda: bool,
            peaks: dict) -> dict:
    """The decode steps' figures: per step (model FLOPs and MBU bytes at its context, hardware FLOPs and bytes
    of the whole static cache), and their summary."""
    peak, peak_gbps = peaks["tflops"], peaks["gbps"]
    hardware = inference.static_decode_flops(cfg, B, S)
    hardware_bytes = inference.static_decode_bytes(cfg, B, S, dtype).total
    steps = []
    for c, t in zip(contexts, times):
        flops, nbytes = inference.decode_flops(cfg, B, c), inference.decode_bytes(cfg, B, c, dtype).total
        seconds = t.device_ms / 1e3
        steps.append({"context": c, "flops": flops, "bytes": nbytes, "hardware_flops": hardware,
                      "hardware_bytes": hardware_bytes, "time_ms": t.device_ms, "host_ms": t.host_ms,
                      "launch_bound": t.launch_bound, "mfu": utilization(flops, seconds, peak),
                      "hfu": utilization(hardware, seconds, peak),
                      "mbu": bandwidth_utilization(nbytes, seconds, peak_gbps)})
    decode = {"steps": steps, "time_ms": None, "host_ms": None, "launch_bound": None, "launch_bound_steps": None,
              "tokens_per_s": None, "mbu": None, "mfu": None, "hfu": None, "achieved_tflops": None,
              "context": None, "flops": None, "bytes": None, "hardware_flops": hardware,
              "hardware_bytes": hardware_bytes, "intensity": None, "buckets": []}
    if steps:
        time_ms, host_ms, launch_bound = _time_dict(times, cuda)
        seconds = time_ms["median_ms"] / 1e3
        middle = steps[len(steps) // 2]
        decode.update(time_ms={k: v for k, v in time_ms.items() if k != "times_ms"}, host_ms=host_ms,
                      launch_bound=launch_bound,
                      launch_bound_steps=sum(bool(t.launch_bound) for t in times) if cuda else None,
                      tokens_per_s=B / seconds, mbu=_median([s["mbu"] for s in steps]),
                      mfu=_median([s["mfu"] for s in steps]), hfu=_median([s["hfu"] for s in steps]),
                      achieved_tflops=rates(middle["flops"], None, seconds, None).achieved_tflops,
                      context=middle["context"], flops=middle["flops"], bytes=middle["bytes"],
                      intensity=middle["flops"] / middle["bytes"], buckets=_bucket(steps))
    return decode


def _row(doc: dict, mode: str, part: dict) -> dict:
    """One results-file row of an `infer` document: the prefill, or the decode steps' summary."""
    median = (part["time_ms"] or {}).get("median_ms")
    seq_len = doc["prompt_len"] if mode == "prefill" else doc["prompt_len"] + doc["gen_len"]
    return {"run_id": doc["run_id"], "model": doc["config"]["name"], "kind": "infer", "mode": mode,
            "checkpointing": "none", "status": "ok" if median else "skipped", "batch_size": doc["batch_size"],
            "seq_len": seq_len, "prompt_len": doc["prompt_len"], "gen_len": doc["gen_len"], "device": doc["device"],
            "dtype": doc["dtype"], "compile": doc["compile"], "peak_tflops": doc["peak"]["tflops"],
            "peak_gbps": doc["peak"]["gbps"],
            "gemm_tflops": (doc["ceilings"]["gemm"] or {}).get("tflops_median"),
            "copy_gbps": (doc["ceilings"]["copy"] or {}).get("gbps_median"),
            "time_ms": part["time_ms"], "host_ms": part["host_ms"], "launch_bound": part["launch_bound"],
            "model_flops": part["flops"], "hardware_flops": part["hardware_flops"], "bytes": part["bytes"],
            "hardware_bytes": part.get("hardware_bytes"), "intensity": part["intensity"],
            "achieved_tflops": part["achieved_tflops"], "mfu": part["mfu"], "hfu": part["hfu"], "mbu": part["mbu"],
            "tokens_per_s": part.get("tokens_per_s"), "config": doc["config"]}
