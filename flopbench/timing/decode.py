"""Time greedy generation: a prefill, then one decode step per token, over a static KV cache.

`Generator` holds one model, one prompt and one static cache (`model.gpt.KVCache`, P + G positions, in the
weights' dtype). The prefill runs the P prompt tokens at positions 0 .. P - 1, causal over them. Each decode
step runs one token at position p given as a 0-d tensor, as gpt-fast's `generate.py` does: it writes its K/V
in place and attends over the whole cache with a position mask (`KVCache.mask`), so every step has the same
shapes and the same inputs' addresses. `compile=True` compiles both with `dynamic=False`; on CUDA the
decode step with `mode="reduce-overhead"`, CUDA graphs: one graph, recorded once and replayed for every
step, one launch where the eager step makes one per kernel (torch.compile docs, "reduce-overhead"). On the
CPU there are no CUDA graphs: plain compilation.

`time_calls` times each call on the device's clock (`timing.clock.Clock`: CUDA events on a GPU,
perf_counter on the CPU) and on the host (perf_counter around the launch). A GPU step whose host time is
at least its device time is `launch_bound`: the GPU waited for the host to queue the kernels. On the CPU
the two are one clock, and `launch_bound` is None.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

import torch

from ..model.config import ModelConfig
from ..model.gpt import KVCache
from .clock import Clock
from .device import module_device, parameter_dtype


def compile_options(device: torch.device) -> dict:
    """torch.compile's arguments for a decode step on `device`: static shapes, and CUDA graphs on CUDA."""
    if device.type == "cuda":
        return {"mode": "reduce-overhead", "dynamic": False}
    return {"dynamic": False}


class Generator:
    """Greedy generation of `gen_len` tokens after a `prompt_len`-token prompt (random, seeded) on `model`:
    `prefill()` (the first new token), then `decode(i)` for i = 0 .. gen_len - 2 (token i + 2, at position
    prompt_len + i). `prefill_step` / `decode_step` are the eager steps, for counting."""

    def __init__(self, model: torch.nn.Module, cfg: ModelConfig, batch_size: int, prompt_len: int, gen_len: int,
                 compile: bool = False):
        self.model = model
        device, B, P, G = module_device(model), batch_size, prompt_len, gen_len
        gen = torch.Generator(device="cpu").manual_seed(0)
        self.prompt = torch.randint(0, cfg.vocab_size, (B, P), generator=gen).to(device)
        self.cache = KVCache(cfg, B, P + G, device, parameter_dtype(model))
        # one 0-d tensor per decode position, made before timing (position P: the first decode step)
        self.positions = [torch.tensor(p, device=device) for p in range(P, P + G)]
        self.graphs = compile and device.type == "cuda"  # CUDA graphs reuse their output buffer
        self._prefill, self._decode = self.prefill_step, self.decode_step
        if compile:
            self._prefill = torch.compile(self.prefill_step, dynamic=False)
            self._decode = torch.compile(self.decode_step, **compile_options(device))
        self.token = self.prompt[:, -1:]

    def prefill_step(self, prompt: torch.Tensor) -> torch.Tensor:
        """The next token (B, 1) after `prompt`, its K/V written to the cache (LM head on the last position)."""
        return self.model(prompt, cache=self.cache, pos=0, last_only=True).argmax(-1)

    def decode_step(self, token: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """The next token (B, 1) after `token` at position `pos` (a 0-d tensor), over the whole static cache."""
        return self.model(token, cache=self.cache, pos=pos, last_only=True).argmax(-1)

    @torch.no_grad()
    def prefill(self) -> None:
        self.token = self._prefill(self.prompt)

    @torch.no_grad()
    def decode(self, step: int) -> None:
        token = self._decode(self.token, self.positions[step])
        self.token = token.clone() if self.graphs else token  # the next replay overwrites the graph's output

    def generate(self) -> None:
        """One whole generation, untimed (a warm-up: compiles, records the CUDA graph)."""
        self.prefill()
        for step in range(len(self.positions) - 1):
            self.decode(step)


@dataclass(frozen=True)
class StepTime:
    """One timed call: its time on the device's clock, the host's time to launch it, and whether the host
    was the bottleneck (`launch_bound`: host_ms >= device_ms on a GPU; None on the CPU, one clock)."""

    device_ms: float
    host_ms: float
    launch_bound: bool | None

    def as_dict(self) -> dict:
        return asdict(self)


def time_calls(calls: Iterable[Callable[[], object]], clock: Clock) -> list[StepTime]:
    """Run each call once, bracketed by two marks of `clock` and, inside them, by `time.perf_counter`
    (the host's time to launch it); read the device times after one sync at the end."""
    marks = []
    for call in calls:
        start = clock.mark()
        host = time.perf_counter()
        call()
        host = time.perf_counter() - host
        marks.append((start, clock.mark(), host * 1e3))
    clock.sync()
    times = []
    for start, end, host_ms in marks:
        device_ms = clock.elapsed_ms(start, end)
        times.append(StepTime(device_ms, host_ms, host_ms >= device_ms if clock.cuda else None))
    return times


def time_prefill(gen: Generator, clock: Clock, iters: int) -> list[StepTime]:
    """The prefill timed `iters` times (each rewrites the prompt's K/V and the first new token)."""
    return time_calls([gen.prefill] * iters, clock)


def time_decode(gen: Generator, clock: Clock) -> list[StepTime]:
    """Every decode step of one generation (after a prefill), each timed on its own."""
    return time_calls([functools.partial(gen.decode, step) for step in range(len(gen.positions) - 1)], clock)
