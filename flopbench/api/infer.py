"""`flopbench.infer`: prefill and decode of greedy generation — FLOPs and bytes, counted, timed, MFU and MBU.

One call, for flopbench's model (a preset or a config.json) with a static KV cache (`model.gpt.KVCache`,
preallocated to P + G positions):

1. **analytic** (`flops.inference`): the prefill's FLOPs (the forward over the P prompt tokens, the LM
   head on the last position only, as `generate` does) and bytes; each decode step's FLOPs and bytes at
   its context c (the keys attended, the new token included: P + 1 for the first step);
2. **counted**: FlopCounterMode over one prefill and one decode step, on the meta device and on the run's
   device, reconciled with the analytic values as `count` does;
3. **measured**: `warmup` untimed generations, then the prefill timed `iters` times and one generation of
   G tokens: 1 prefill + (G − 1) decode steps, each step timed on its own (CUDA events on a GPU,
   perf_counter on the CPU). The prefill's figure is MFU; a decode step's is MBU = bytes /
   (time x peak bandwidth) (`timing.rates`), reported as the median over the steps and per context bucket,
   with tokens/s = B / median step time.

The peaks are the dense TFLOP/s and the memory bandwidth of the GPU's entry in the peak table for the
dtype (or `peak_tflops` / `peak_gbps`); beside them the measured GEMM and copy-bandwidth ceilings.
`compile=True` applies torch.compile (dynamic shapes: the attended length grows each step, so CUDA
graphs, which need one static shape, are not used).
"""

from __future__ import annotations

import statistics
import sys
import time
from dataclasses import dataclass

import torch

from ..errors import UsageError, check_int, options_from
from ..flops import inference
from ..flops.analytic import masked_square_flops
from ..flops.counter import count_step
from ..flops.reconcile import Check
from ..hardware.detect import environment
from ..hardware.peaks import resolve_bandwidth, resolve_peak
from ..model.config import MAX_ITERS, MAX_WARMUP, ModelConfig, validate_shapes
from ..model.gpt import KVCache, build_model
from ..model.presets import as_config
from ..output.records import ResultWriter
from ..timing.bandwidth import copy_bandwidth
from ..timing.clock import Clock, TimingStats
from ..timing.device import TORCH_DTYPES, precision, resolve_device, resolve_dtype
from ..timing.gemm import gemm_ceiling
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
    out: str | None = "results"  # None: write nothing


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


class Generator:
    """Greedy generation over one model and one static cache: `prefill()`, then `decode(pos)` per token."""

    def __init__(self, model: torch.nn.Module, cfg: ModelConfig, options: InferOptions, device: torch.device,
                 dtype: str):
        self.model, self.device, self.dtype = model, device, dtype
        B, P, G = options.batch_size, options.prompt_len, options.gen_len
        gen = torch.Generator(device="cpu").manual_seed(0)
        self.prompt = torch.randint(0, cfg.vocab_size, (B, P), generator=gen).to(device)
        self.cache = KVCache(cfg, B, P + G, device, TORCH_DTYPES[dtype])
        self.forward = torch.compile(model, dynamic=True) if options.compile else model
        self.token = self.prompt[:, -1:]

    def prefill(self) -> None:
        with torch.no_grad(), precision(self.dtype, self.device):
            logits = self.forward(self.prompt, cache=self.cache, pos=0, last_only=True)
        self.token = logits.argmax(-1)

    def decode(self, pos: int) -> None:
        with torch.no_grad(), precision(self.dtype, self.device):
            logits = self.forward(self.token, cache=self.cache, pos=pos, last_only=True)
        self.token = logits.argmax(-1)


def _count(model: torch.nn.Module, cfg: ModelConfig, B: int, P: int, G: int, device) -> dict[str, int]:
    """FlopCounterMode over one prefill and the first decode step of `model` on `device`."""
    cache = KVCache(cfg, B, P + G, device, torch.float32)
    prompt = torch.zeros(B, P, dtype=torch.long, device=device)
    token = torch.zeros(B, 1, dtype=torch.long, device=device)
    with torch.no_grad():
        prefill = count_step(lambda: model(prompt, cache=cache, pos=0, last_only=True)).forward
        decode = count_step(lambda: model(token, cache=cache, pos=P, last_only=True)).forward
    return {"prefill": prefill, "decode": decode}


def infer(config: ModelConfig | str, options: InferOptions | None = None, progress=None, **fields) -> dict:
    """Prefill and decode of `config` (a `ModelConfig` or a preset name): the `flopbench infer --json` document
    (see the module docstring). Options are `InferOptions` fields, as keywords or one `InferOptions`."""
    cfg = as_config(config)
    options = options_from(InferOptions, options, fields, "infer")
    _check(options, cfg)
    progress = progress or (lambda msg: print(msg, file=sys.stderr, flush=True))
    device = resolve_device(options.device)
    dtype = resolve_dtype(options.dtype, device)
    B, P, G = options.batch_size, options.prompt_len, options.gen_len

    env = environment(device)
    gpu_name = env["gpu"]["name"] if env["gpu"] else None
    peak, peak_source = resolve_peak(gpu_name, dtype, options.peak_tflops)
    peak_gbps, gbps_source = resolve_bandwidth(gpu_name, options.peak_gbps)
    run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{cfg.name}-infer-{device.type}-{dtype}"
    writer = ResultWriter(options.out, run_id, env) if options.out else None
    for missing, source in ((peak, peak_source), (peak_gbps, gbps_source)):
        if missing is None:
            progress(f"warning: {source}")

    contexts = list(range(P + 1, P + G))  # G - 1 decode steps: the first token comes from the prefill
    analytic = {"prefill": inference.prefill_flops(cfg, B, P), "decode": inference.decode_flops(cfg, B, P + 1)}
    progress(f"counting {cfg.name}: one prefill and one decode step, on meta and on {device} ...")
    counted = {"meta": _count(build_model(cfg, "meta").eval(), cfg, B, P, G, "meta")}
    model = build_model(cfg, device).eval()
    counted[str(device)] = _count(model, cfg, B, P, G, device)
    masked = {"prefill": masked_square_flops(cfg, B, P), "decode": 0}  # the decode step slices its window
    checks = [Check(f"counted.{where}.{phase}", c[phase], f"analytic.{phase}", analytic[phase], masked[phase],
                    "the same matmuls: LM head on the last position only; attention over the keys in the cache"
                    + ("; the prompt's mask-based attention scores all P keys, not the window" if masked[phase]
                       else ""))
              for where, c in counted.items() for phase in ("prefill", "decode")]

    ceilings = {"gemm": None, "copy": None}
    if options.ceilings:
        progress("ceilings: GEMM and device-to-device copy ...")
        with precision(dtype, device):
            gemm = gemm_ceiling(device, TORCH_DTYPES[dtype])
        ceilings["gemm"] = {k: v for k, v in gemm.items() if k != "times_ms"}
        ceilings["copy"] = copy_bandwidth(device, 2**30 if device.type == "cuda" else 2**26)

    gen = Generator(model, cfg, options, device, dtype)
    progress(f"timing {options.warmup} warm-up generation(s), {options.iters} prefills, {G - 1} decode steps ...")
    for _ in range(options.warmup):
        gen.prefill()
        for pos in range(P, P + G - 1):
            gen.decode(pos)
    clock = Clock(device)
    marks = []
    for _ in range(options.iters):
        start = clock.mark()
        gen.prefill()
        marks.append((start, clock.mark()))
    steps = []
    for pos in range(P, P + G - 1):
        start = clock.mark()
        gen.decode(pos)
        steps.append((start, clock.mark()))
    clock.sync()
    prefill_stats = TimingStats(tuple(clock.elapsed_ms(a, b) for a, b in marks))

    prefill_bytes = inference.prefill_bytes(cfg, B, P, dtype)
    r = rates(analytic["prefill"], analytic["prefill"], prefill_stats.median_ms / 1e3, peak)
    prefill = {"flops": analytic["prefill"], "bytes": prefill_bytes,
               "intensity": analytic["prefill"] / prefill_bytes, "time_ms": prefill_stats.as_dict(),
               "achieved_tflops": r.achieved_tflops, "mfu": r.mfu,
               "mbu": bandwidth_utilization(prefill_bytes, prefill_stats.median_ms / 1e3, peak_gbps)}
    step_rows = []
    for c, (a, b) in zip(contexts, steps):
        ms = clock.elapsed_ms(a, b)
        flops, nbytes = inference.decode_flops(cfg, B, c), inference.decode_bytes(cfg, B, c, dtype).total
        step_rows.append({"context": c, "flops": flops, "bytes": nbytes, "time_ms": ms,
                          "mfu": utilization(flops, ms / 1e3, peak),
                          "mbu": bandwidth_utilization(nbytes, ms / 1e3, peak_gbps)})
    decode = {"steps": step_rows, "time_ms": None, "tokens_per_s": None, "mbu": None, "mfu": None,
              "achieved_tflops": None, "context": None, "flops": None, "bytes": None, "intensity": None,
              "buckets": []}
    if step_rows:
        stats = TimingStats(tuple(s["time_ms"] for s in step_rows))
        middle = step_rows[len(step_rows) // 2]
        decode.update(time_ms={k: v for k, v in stats.as_dict().items() if k != "times_ms"},
                      tokens_per_s=B / (stats.median_ms / 1e3), mbu=_median([s["mbu"] for s in step_rows]),
                      mfu=_median([s["mfu"] for s in step_rows]),
                      achieved_tflops=rates(middle["flops"], None, stats.median_ms / 1e3, None).achieved_tflops,
                      context=middle["context"], flops=middle["flops"], bytes=middle["bytes"],
                      intensity=middle["flops"] / middle["bytes"], buckets=_bucket(step_rows))
    doc = {
        "run_id": run_id, "config": cfg.as_dict(), "batch_size": B, "prompt_len": P, "gen_len": G,
        "device": str(device), "dtype": dtype, "compile": options.compile,
        "peak": {"tflops": peak, "source": peak_source, "gbps": peak_gbps, "gbps_source": gbps_source},
        "ceilings": ceilings, "prefill": prefill, "decode": decode,
        "counted": counted, "analytic": analytic, "reconciliation": [c.as_dict() for c in checks],
        "environment": env, "files": writer.files if writer else None,
    }
    if writer:
        for mode, part in (("prefill", prefill), ("decode", decode)):
            writer.append(_row(doc, mode, part))
    return doc


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
            "time_ms": part["time_ms"], "model_flops": part["flops"], "bytes": part["bytes"],
            "intensity": part["intensity"], "achieved_tflops": part["achieved_tflops"],
            "mfu": part["mfu"], "mbu": part["mbu"], "tokens_per_s": part.get("tokens_per_s"),
            "config": doc["config"]}
