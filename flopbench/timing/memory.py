"""Memory: what a run will need (estimated before anything is built), what the machine has free, and
what each row's step actually used.

**Estimate** (`estimate`, per timed row), in bytes:
- weights: 4 per parameter (fp32: autocast computes in bf16 / fp16 but keeps the weights in fp32);
- gradients: 4 per parameter (fwd_bwd, train_step);
- AdamW state: 8 per parameter (train_step: exp_avg and exp_avg_sq, fp32 like the weights);
  weights, gradients and AdamW state are divided by the ranks under FSDP (it shards them);
- activations kept for backward, after Korthikanti et al. 2022 ("Reducing Activation Recomputation in
  Large Transformer Models"), §4.1, Eq. 1: s·b·h·(34 + 5·a·s/h) bytes per layer with 16-bit activations,
  i.e. 34·s·b·h + 5·a·s²·b. The 5·a·s²·b term is the T x T attention scores and their softmax / dropout,
  which the fused SDPA kernels flopbench's model uses never store, so it is left out; 34·s·b·h is scaled
  by (bytes per element / 2) for fp32. With full checkpointing only each block's input stays (2·s·b·h per
  layer at 16 bits), plus one block's activations while it is recomputed (§4.2). A forward without
  autograd keeps none;
- logits: b·s·V in the compute dtype, and for a backward also their fp32 copy for the loss and its
  gradient (4 + 4 bytes per element);
- cast weights: under bf16 / fp16 autocast, 2 bytes per matmul weight (every Linear and the LM head, all
  experts included): autocast casts each fp32 weight once and keeps the low-precision copy for the rest
  of the autocast region (torch's autocast weight cache, aten/src/ATen/autocast_mode.cpp, `cached_cast`),
  the forward included. None under FSDP with shards > 1 (its mixed-precision policy gathers the weights
  already in the run's dtype), and none in fp32;
- soft-capped attention scores: with a soft cap the attention core is written out as two matmuls over the
  T x T square (`model.gpt.attention_core`), so b·a·s·keys scores per layer exist (keys = s: sliding layers
  mask the whole square). Kept for backward per score: tanh's output (compute dtype), the fp32 softmax's
  output and its copy back in the compute dtype (2 + 4 + 2 bytes in bf16; 4 + 4 in fp32, where the copy is
  the same tensor), in every layer, or in one block at a time when checkpointing recomputes it. A forward
  without autograd holds one layer's at once: the scores, the fp32 copy softmax reads and its output
  (2 + 4 + 4 bytes in bf16; 4 + 4 in fp32, where the copy is the scores themselves).
It is an estimate (allocator fragmentation, workspaces and other temporaries are not in it).

**Inference** (`infer_estimate`, for `infer`): the weights in the run's dtype (the model is built in
it); the static KV cache, 2 (K and V) x layers x b x (prompt + generated) x KV heads x head_dim elements
in the run's dtype (`model.gpt.KVCache`); the prefill's forward without autograd over the prompt: one
block's activations at once (34·s·b·h at 16 bits, as above) and a soft cap's scores of one layer; the
logits of the last position only (b·V).

**Refusal.** `check_fits` compares the estimate with `available_bytes` (MemAvailable in /proc/meminfo
on Linux, else free physical pages from ``os.sysconf``; free device memory from ``torch.cuda.mem_get_info``
on a GPU) before the model is built: a run none of whose rows fits is refused with one line (the CPU does not
raise an out-of-memory error it can recover from: the kernel's OOM killer ends the process). On the CPU a
row whose estimate does not fit is not run either (`RowVerdict`); on a GPU it runs and a real out-of-memory
error makes it an "oom" row.

**Measured peak** (`reset_peak` / `peak_bytes`): ``torch.cuda.max_memory_allocated`` since the row began on a
GPU; on the CPU the process's peak resident set (``resource.getrusage``), which cannot be reset, so it is
the peak so far of the whole process.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import torch

from ..flops import analytic
from ..model.config import ModelConfig, base_dtype
from ..output.text import si
from .device import TORCH_DTYPES, ModelDoesNotFit

#: Bytes per parameter: fp32 weight, fp32 gradient, AdamW's two fp32 moments (Loshchilov & Hutter 2019).
WEIGHT_BYTES, GRAD_BYTES, ADAMW_BYTES = 4, 4, 8
#: Korthikanti et al. 2022, §4.1, Eq. 1: activation bytes per layer per s·b·h (16-bit activations), and
#: with full recomputation (§4.2) the checkpointed block input, 2·s·b·h.
ACTIVATION_COEFF, CHECKPOINT_COEFF = 34, 2


def gb(n: int | float | None) -> str:
    """Bytes as "282.2 GB" (SI, as memory is sold)."""
    return "unknown" if n is None else f"{si(n, '.1f')}B"


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes one timed row needs, by part (see the module docstring)."""

    weights: int
    gradients: int
    optimizer: int
    activations: int
    logits: int
    cast_weights: int = 0  # autocast's low-precision weight copies
    scores: int = 0  # a soft cap's T x T attention scores
    kv_cache: int = 0  # inference only

    PARTS = ("weights", "cast_weights", "gradients", "optimizer", "activations", "scores", "kv_cache", "logits")

    @property
    def total(self) -> int:
        return sum(getattr(self, n) for n in self.PARTS)

    def describe(self) -> str:
        return " + ".join(f"{name} {gb(getattr(self, name))}" for name in self.PARTS if getattr(self, name))

    def as_dict(self) -> dict:
        return {**asdict(self), "total": self.total}


def estimate(cfg: ModelConfig, B: int, T: int, mode: str, checkpointing: str, dtype: str,
             shards: int = 1) -> MemoryEstimate:
    """The memory one step of `mode` needs (see the module docstring); `shards`: FSDP ranks."""
    n = analytic.param_counts(cfg).total
    element = TORCH_DTYPES[dtype].itemsize
    backward = mode != "forward"
    weights = WEIGHT_BYTES * n // shards
    grads = GRAD_BYTES * n // shards if backward else 0
    optimizer = ADAMW_BYTES * n // shards if mode == "train_step" else 0
    sbh = T * B * cfg.d_model
    layer = ACTIVATION_COEFF * sbh * element // 2
    if not backward:
        activations = 0
    elif checkpointing == "full":
        activations = cfg.n_layer * CHECKPOINT_COEFF * sbh * element // 2 + layer
    else:
        activations = cfg.n_layer * layer
    logits = B * T * cfg.vocab_size * (element + (8 if backward else 0))
    cast = 2 * analytic.param_counts(cfg).matmul if base_dtype(dtype) in ("bf16", "fp16") and shards == 1 else 0
    if not backward:
        scores = score_bytes(cfg, B, T, dtype, layers=1, saved=False)
    else:
        scores = score_bytes(cfg, B, T, dtype, layers=cfg.n_layer if checkpointing == "none" else 1, saved=True)
    return MemoryEstimate(weights, grads, optimizer, activations, logits, cast, scores)


def score_bytes(cfg: ModelConfig, B: int, T: int, dtype: str, layers: int, saved: bool) -> int:
    """Bytes of a soft cap's B x heads x T x T attention scores in `layers` layers (see the module docstring):
    what autograd keeps for backward (`saved`), else what one forward without autograd holds at once; 0
    without a soft cap (the fused SDPA kernels keep no scores)."""
    if cfg.attn_softcap is None:
        return 0
    element = TORCH_DTYPES[dtype].itemsize
    per_score = element + 4 + (0 if element == 4 else element if saved else 4)  # fp32: no copies
    return layers * B * cfg.n_head * T * T * per_score


def infer_estimate(cfg: ModelConfig, B: int, P: int, G: int, dtype: str) -> MemoryEstimate:
    """The memory `infer` needs for batch `B`, a prompt of `P` tokens and `G` generated (see the module
    docstring): weights in the run's dtype, the KV cache of P + G positions, the prefill's activations of one
    block and a soft cap's scores of one layer, and the last position's logits."""
    element = TORCH_DTYPES[dtype].itemsize
    kv = 2 * cfg.n_layer * B * (P + G) * cfg.kv_heads * cfg.head_dim * element
    activations = ACTIVATION_COEFF * P * B * cfg.d_model * element // 2
    return MemoryEstimate(weights=analytic.param_counts(cfg).total * element, gradients=0, optimizer=0,
                          activations=activations, logits=B * cfg.vocab_size * element,
                          scores=score_bytes(cfg, B, P, dtype, layers=1, saved=False), kv_cache=kv)


def check_infer_fits(cfg: ModelConfig, B: int, P: int, G: int, device: torch.device, dtype: str) -> MemoryEstimate:
    """`infer_estimate`, or `ModelDoesNotFit` (one line, with the estimate) when it exceeds `available_bytes`
    — before anything is built. Unknown free memory refuses nothing."""
    e = infer_estimate(cfg, B, P, G, dtype)
    free, source = available_bytes(device)
    if free is not None and e.total > free:
        raise ModelDoesNotFit(
            f"{cfg.name} does not fit on {device} for infer: it needs about {gb(e.total)} ({e.describe()}; "
            f"{dtype}, batch {B} x (prompt {P} + gen {G})), {gb(free)} free ({source}); use a smaller model, "
            f"batch or length, or a larger machine")
    return e


def available_bytes(device: torch.device) -> tuple[int | None, str]:
    """(bytes free for a new allocation, where that figure came from); None where it cannot be known."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free), "torch.cuda.mem_get_info"
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "MemAvailable in /proc/meminfo"
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "free physical pages (os.sysconf)"
    except (AttributeError, OSError, ValueError):
        return None, "unknown"


@dataclass(frozen=True)
class RowVerdict:
    """Whether one planned row is run, from its estimate and the free memory."""

    estimate: MemoryEstimate
    fits: bool
    reason: str | None  # why it is not run


def check_fits(cfg: ModelConfig, B: int, T: int, plan: list[tuple[str, str]], device: torch.device, dtype: str,
               shards: int = 1, available: tuple[int | None, str] | None = None) -> dict[tuple[str, str], RowVerdict]:
    """Each planned (mode, checkpointing) row's estimate and whether it may run; raises `ModelDoesNotFit`
    (one line, with the estimate) when no row of the plan fits, before anything is built.

    `available`: (bytes, source), default `available_bytes(device)`. Unknown free memory refuses nothing.
    On a GPU every row runs (an out-of-memory error there is caught); only the whole-run refusal applies."""
    free, source = available if available is not None else available_bytes(device)
    verdicts = {}
    for mode, ckpt in plan:
        e = estimate(cfg, B, T, mode, ckpt, dtype, shards)
        runs = free is None or e.total <= free or device.type == "cuda"
        reason = None if runs else f"estimated {gb(e.total)} ({e.describe()}) > {gb(free)} free ({source}); not run"
        verdicts[(mode, ckpt)] = RowVerdict(e, runs, reason)
    smallest_row, smallest = min(((k, v.estimate) for k, v in verdicts.items()), key=lambda kv: kv[1].total)
    if free is not None and smallest.total > free:
        mode, ckpt = smallest_row
        raise ModelDoesNotFit(
            f"{cfg.name} does not fit on {device}: its smallest row ({mode}, checkpointing {ckpt}) needs about "
            f"{gb(smallest.total)} ({smallest.describe()}; {dtype}, batch {B} x seq {T}), {gb(free)} free "
            f"({source}); use a smaller model, batch or seq_len, or a larger machine")
    return verdicts


def reset_peak(device: torch.device) -> None:
    """Start a row's peak-memory count (a GPU's allocator statistics; the CPU's cannot be reset)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_bytes(device: torch.device) -> int | None:
    """The most memory allocated since `reset_peak` (GPU), or the process's peak resident set so far (CPU,
    ``ru_maxrss``: kilobytes on Linux, bytes on macOS); None where neither is known."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    try:
        import resource
        import sys
    except ImportError:  # not on Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)
