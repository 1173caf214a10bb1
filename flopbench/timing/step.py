"""The step functions `run` times: a forward, forward + backward, and a whole training step, over one model,
eager or compiled, and the hardware FLOPs of one step counted on the eager model (`Stepper`).

Compiled runs compile *regions*, as torchtitan does (`torchtitan/models/llama3/infra/parallelize.py`,
`apply_compile`): each transformer block is compiled on its own with ``nn.Module.compile(dynamic=False)``
(`compile_blocks`), and blocks of the same kind (the same code and the same non-tensor attributes) share one
compiled graph, so the compile cost is that of one block per kind, not of the whole model. The embedding and
the LM head run eagerly. Full checkpointing wraps the compiled block (`model.gpt.GPT.forward` calls
``checkpoint(block, ...)``), so the recompute re-runs the compiled block. The loss is a compiled region of
its own (torchtitan compiles its cross-entropy the same way, `torchtitan/components/loss.py`): the cast of
the bf16 / fp16 logits to fp32 fuses into the log-softmax, so the B x T x V logits are not written again
in fp32 (the eager `lm_loss` makes that copy, and the log-softmax saves another for backward).

`compile_s` (`compile_seconds`): in a compiled run each row first runs one untimed step of its mode
(`Stepper.first_step`, before the warm-up), which compiles whatever graphs this mode needs that earlier rows
did not; `compile_s` is that step's wall time (synchronized on a GPU) minus the row's median timed step,
floored at 0 — the time the first step spent beyond a steady one: compiling, plus first-call costs such as
AdamW allocating its state. None for an eager run.

A compiled step that hits dynamo's recompile limit must fail instead of running the frame eagerly while the
row says compiled (`recompile_watch`, `is_recompile_limit`).
"""

from __future__ import annotations

import contextlib
import logging
import time

import torch

from ..flops.counter import StepCount, count_step
from ..model.config import ModelConfig
from ..model.gpt import lm_loss
from . import distributed
from .clock import Clock, TimingStats
from .device import autocast, matmul_precision


def compile_blocks(model: torch.nn.Module) -> None:
    """Compile each transformer block of `model` (``model.h``) in place with ``dynamic=False``: regional
    compilation (see the module docstring). Dynamo keys its cache on the block's code, so every block of one
    kind reuses the first one's graph: the frames compiled do not grow with the number of layers."""
    for block in model.h:
        block.compile(dynamic=False)


@contextlib.contextmanager
def eager_blocks(model: torch.nn.Module):
    """Until the block ends, `compile_blocks`' blocks run their own forward, not the compiled one
    (``nn.Module.compile`` keeps that in ``_compiled_call_impl``, None = eager). Counting needs it: a frame
    dynamo meets under a dispatch mode such as FlopCounterMode is run eagerly *and marked to be skipped for
    good* (`torch/_dynamo/types.py`, ConvertFrameReturn's default), so one count through a compiled block
    would leave every later step of the run eager while its rows say compiled."""
    saved = [(block, getattr(block, "_compiled_call_impl", None)) for block in model.h]
    for block, _ in saved:
        block._compiled_call_impl = None
    try:
        yield
    finally:
        for block, compiled in saved:
            block._compiled_call_impl = compiled


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


def compile_seconds(first_step_s: float | None, stats: TimingStats) -> float | None:
    """`compile_s` of a row: the first step's wall time beyond the median timed step, at least 0; None
    when no first step was run (an eager run). See the module docstring."""
    if first_step_s is None:
        return None
    return max(0.0, first_step_s - stats.median_ms / 1e3)


class Stepper:
    """The three step functions over one model, sharing its optimizer and a fixed random batch. With
    `compile_model` the blocks and the loss are compiled regions (see the module docstring); `eager` is the
    model itself, on which `count` counts."""

    def __init__(self, model: torch.nn.Module, cfg: ModelConfig, B: int, T: int, device: torch.device,
                 dtype: str, compile_model: bool, dist_info: distributed.DistInfo | None = None):
        self.eager = model
        self.compiled = compile_model
        self.loss_fn = lm_loss
        if compile_model:
            torch._dynamo.reset()  # this run's recompiles are its own, not added to an earlier run's
            compile_blocks(model)  # before DDP / FSDP2 wrap the model, as torchtitan orders them
            self.loss_fn = torch.compile(lm_loss, dynamic=False)
        self.model = distributed.wrap(model, dist_info, device, dtype) if dist_info else model
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

    def loss(self, logits: torch.Tensor, fn=None) -> torch.Tensor:
        """The step's loss: `fn` (default the run's: compiled in a compiled run) under the run's autocast."""
        with autocast(self.dtype, self.device):
            return (fn or self.loss_fn)(logits, self.targets)

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

    def first_step(self, mode: str) -> float | None:
        """In a compiled run: one untimed step of `mode`, which compiles what it needs; its wall time in
        seconds, the device synchronized before and after. None in an eager run (no step is run)."""
        if not self.compiled:
            return None
        clock = Clock(self.device)
        clock.sync()
        start = time.perf_counter()
        self.step(mode)
        clock.sync()
        return time.perf_counter() - start

    def count(self, mode: str) -> StepCount:
        """FlopCounterMode over one step of `mode` as dispatched on the device, on the eager model
        (`eager_blocks`) with the eager loss: the same matmuls as the compiled step, so a compiled run counts
        the same FLOPs as an eager one (the optimizer adds none)."""
        with matmul_precision(self.dtype), eager_blocks(self.eager):
            if mode == "forward":
                with torch.no_grad():
                    counted = count_step(lambda: self.forward(self.eager))
            else:
                self.eager.zero_grad(set_to_none=True)
                counted = count_step(lambda: self.forward(self.eager), lambda logits: self.loss(logits, lm_loss))
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return counted
