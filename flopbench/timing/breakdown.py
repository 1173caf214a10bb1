"""Where a step's time goes: every microsecond of a profiled step given to one class of work, and the
waterfall from the dense peak down to the step's MFU.

**Classes** (`CLASSES`, matched in order against CUDA kernel names on a GPU, operator names on the CPU and
aten op names in a FLOP count; the first pattern that matches wins, so attention kernels built on CUTLASS
are attention, not gemm):

- `communication`: NCCL and gloo collectives;
- `optimizer`: AdamW, fused (`multi_tensor_apply` / `FusedAdam`) or foreach;
- `attention`: SDPA's flash, memory-efficient and cuDNN kernels, flex attention, the CPU flash kernel;
- `loss`: log-softmax and NLL over the logits (cross-entropy);
- `gemm`: mm, addmm, bmm, grouped and scaled mm; cuBLAS (`gemm`, `nvjet`), CUTLASS and triton matmul
  kernels. The soft-cap attention path is written out as two bmm, so its QK^T and AV are gemm here;
- `memory`: copies, fills, indexing, gathers and scatters; a dtype cast runs as a copy (`aten::copy_`, CUDA's copy
  kernels), so its time is memory too;
- `norm_elementwise`: norms, activations, residual adds, rotary, softmax, reductions, inductor's fused
  pointwise and reduction kernels;
- `other`: anything else;
- `idle`: the gaps inside the step where no kernel (on the CPU: no operator) ran: the device waited on
  the host.

**Attribution** (`class_times`): the spans (kernels, or operators) of a step are cut at every start and
end; each piece of time goes to the innermost span running then (the one that started last), so nested
CPU operators give each microsecond to the leaf that ran it, and overlapping kernels are not counted
twice; but a span of an `ENCLOSING` class (optimizer, loss, communication) keeps everything nested in it
(an unfused AdamW step runs elementwise ops). The class times plus idle add up to the step's window
exactly.

**Waterfall** (`waterfall`), with T the step time, P the dense peak, κ = SM clock held / rated clock (1
where unknown), s_c the share of step time of class c (Σ s_c = 1, idle included), F_gemm and F_attention
the FLOPs FlopCounterMode counts in each class over the same step (hardware FLOPs, recomputation
included) and F_model the model FLOPs:

    1                                                  the dense peak
    − (s_gemm + s_attention)·(1 − κ)                   clock below the rated clock
    − (s_gemm·κ − F_gemm / (P·T))                      GEMM efficiency at the held clock
    − (s_attention·κ − F_attention / (P·T))            attention at its achieved rate
    − (s_norm_elementwise + s_loss + s_optimizer + s_memory + s_other)   non-matmul time
    − s_communication                                  communication
    − s_idle                                           idle
    = (F_gemm + F_attention) / (P·T)                   = HFU
    − (F_gemm + F_attention − F_model) / (P·T)         recomputation and other hardware FLOPs
    = F_model / (P·T)                                  = MFU

Each line is exact algebra (the shares sum to 1), so the last value is the step's MFU to rounding.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .rates import utilization

#: (class, pattern) in matching order: data, read by `classify` only.
CLASSES: tuple[tuple[str, str], ...] = (
    ("communication", r"nccl|gloo|c10d::|all_?reduce|all_?gather|reduce_?scatter|all_?to_?all"),
    ("optimizer", r"adam|multi_tensor_apply|_foreach_|optimizer\.step"),
    ("attention", r"flash|fmha|attention|sdpa|flex_"),
    ("loss", r"log_?softmax|nll_?loss|cross_?entropy"),
    ("gemm", r"gemm|nvjet|cutlass|cublas|xmma|matmul|linear|mm(\b|_|backward)"),
    ("memory", r"memcpy|memset|copy|\bto\b|cast|fill|zero_|clone|contiguous|\bcat\b|index|"
               r"scatter|gather"),
    ("norm_elementwise", r"norm|gelu|silu|tanh|relu|softmax|elementwise|reduce|add|mul|div|sub|neg|sqrt|pow|"
                         r"exp|sum|mean|rope|rotary|embedding|triton_(poi|per|red)_"),
)
NAMES = tuple(name for name, _ in CLASSES) + ("other", "idle")
#: The classes whose time is not matmul work (the waterfall's "non-matmul time").
NON_MATMUL = ("norm_elementwise", "loss", "optimizer", "memory", "other")
_PATTERNS = tuple((name, re.compile(pattern, re.IGNORECASE)) for name, pattern in CLASSES)


def classify(name: str) -> str:
    """The class of a kernel, operator or aten op name (see the module docstring)."""
    for cls, pattern in _PATTERNS:
        if pattern.search(name):
            return cls
    return "other"


@dataclass(frozen=True)
class Span:
    """One kernel or operator on a step's timeline, in microseconds."""

    name: str
    start_us: float
    dur_us: float

    @property
    def end_us(self) -> float:
        return self.start_us + self.dur_us


#: Classes that claim the time of every span nested in theirs: the elementwise ops of an unfused AdamW step
#: are optimizer time, the log-softmax inside a cross-entropy is loss time.
ENCLOSING = ("communication", "optimizer", "loss")


def exclusive_times(spans: list[Span], window: tuple[float, float]) -> dict[str, float]:
    """Microseconds of each span name in `window` = (start, end), and "idle": each piece of time goes to the
    innermost span running then (the latest started), unless an enclosing span of an `ENCLOSING` class is
    running (the outermost such span takes it); no span running is idle. The values sum to the window's
    length."""
    start, end = window
    times: dict[str, float] = {"idle": 0.0}
    cuts = []
    for i, s in enumerate(spans):
        a, b = max(s.start_us, start), min(s.end_us, end)
        if b > a:
            cuts.append((a, 1, i))
            cuts.append((b, 0, i))
    cuts.sort()
    active: dict[int, float] = {}  # index -> start, of the spans running now
    enclosing = {i for i, s in enumerate(spans) if classify(s.name) in ENCLOSING}
    at = start
    for t, opens, i in cuts:
        if t > at:
            if active:
                outer = [j for j in active if j in enclosing]
                owner = min(outer, key=active.get) if outer else max(active, key=active.get)
                name = spans[owner].name
            else:
                name = "idle"
            times[name] = times.get(name, 0.0) + (t - at)
            at = t
        if opens:
            active[i] = t
        else:
            active.pop(i, None)
    times["idle"] += max(0.0, end - at)
    return times


def class_times(spans: list[Span], window: tuple[float, float]) -> dict[str, float]:
    """Microseconds of each class (`NAMES`, idle included) in `window`: `exclusive_times` by `classify`."""
    times = dict.fromkeys(NAMES, 0.0)
    for name, us in exclusive_times(spans, window).items():
        times["idle" if name == "idle" else classify(name)] += us
    return times


def class_flops(flops_by_op: dict[str, int]) -> dict[str, int]:
    """FLOPs per class from a count per aten op name (`FlopCounterMode.get_flop_counts()["Global"]`)."""
    out: dict[str, int] = {}
    for op, flops in flops_by_op.items():
        cls = classify(f"aten::{op}")
        out[cls] = out.get(cls, 0) + int(flops)
    return out


@dataclass(frozen=True)
class Category:
    name: str
    time_ms: float
    share: float
    flops: int
    achieved_tflops: float | None

    def as_dict(self) -> dict:
        return {"name": self.name, "time_ms": self.time_ms, "share": self.share, "flops": self.flops,
                "achieved_tflops": self.achieved_tflops}


def categories(shares: dict[str, float], flops: dict[str, int], step_s: float) -> list[Category]:
    """Each class's time (share x step time), FLOPs and achieved TFLOP/s (FLOPs / its time)."""
    out = []
    for name in NAMES:
        seconds = shares.get(name, 0.0) * step_s
        f = flops.get(name, 0)
        out.append(Category(name, seconds * 1e3, shares.get(name, 0.0), f,
                            f / seconds / 1e12 if f and seconds > 0 else None))
    return out


def shares_of(times_us: dict[str, float]) -> dict[str, float]:
    """Class times as shares of their sum (the window), which sum to 1."""
    total = sum(times_us.values())
    return {k: (v / total if total else 0.0) for k, v in times_us.items()}


def waterfall(shares: dict[str, float], flops: dict[str, int], model_flops: int, step_s: float, peak_tflops: float,
              clock_ratio: float | None = None) -> list[dict]:
    """The steps from the dense peak (1.0) down to MFU = model FLOPs / (step time x peak), each a named loss
    (the formula is in the module docstring). `flops` holds the counted FLOPs per class; those outside
    gemm and attention (none in flopbench's model) count with gemm. Returns [{name, value}], the value
    after each step: the first 1.0, then HFU after "idle", the last the MFU."""
    kappa = 1.0 if clock_ratio is None else clock_ratio
    s = {name: shares.get(name, 0.0) for name in NAMES}
    f_attention = flops.get("attention", 0)
    f_gemm = sum(flops.values()) - f_attention

    def part(f: int) -> float:
        return utilization(f, step_s, peak_tflops)

    losses = [
        ("clock below the rated clock", (s["gemm"] + s["attention"]) * (1 - kappa)),
        ("GEMM efficiency", s["gemm"] * kappa - part(f_gemm)),
        ("attention at its achieved rate", s["attention"] * kappa - part(f_attention)),
        ("non-matmul time", sum(s[c] for c in NON_MATMUL)),
        ("communication", s["communication"]),
        ("idle", s["idle"]),
        ("recomputation and other hardware FLOPs", part(f_gemm + f_attention) - part(model_flops)),
    ]
    steps, value = [{"name": "dense peak", "value": 1.0}], 1.0
    for name, loss in losses:
        value -= loss
        steps.append({"name": name, "value": value, "loss": loss})
    steps.append({"name": "MFU", "value": part(model_flops)})
    return steps


def spans_of(profile, device_type: str) -> tuple[list[Span], list[tuple[float, float]]]:
    """The spans and step windows of a `torch.profiler` run whose steps were each wrapped in
    `record_function(STEP)`: CUDA kernels (and memcpy / memset) on a GPU, each step's window from its first
    kernel's start to its last kernel's end; CPU operators on the CPU, each step's window its range."""
    spans, marks = [], []
    for e in profile.profiler.kineto_results.events():
        name = e.name()
        start, dur = e.start_ns() / 1e3, e.duration_ns() / 1e3
        on_device = "CUDA" in str(e.device_type())
        if name == STEP:
            if not on_device:
                marks.append((start, start + dur))
        elif on_device == (device_type == "cuda"):
            spans.append(Span(name, start, dur))
    if device_type != "cuda":
        return spans, marks
    windows = []
    for a, b in marks:
        inside = [s for s in spans if a <= s.start_us <= b]
        if inside:
            windows.append((min(s.start_us for s in inside), max(s.end_us for s in inside)))
    return spans, windows


#: The `record_function` name each profiled step is wrapped in.
STEP = "flopbench::step"
