"""MFU inside the Hugging Face Trainer: `MFUCallback`, a `transformers.TrainerCallback`.

    from flopbench.integrations import add_mfu_callback
    trainer = Trainer(model, args, train_dataset=ds)
    add_mfu_callback(trainer, peak_tflops=989.4)      # or Trainer(..., callbacks=[MFUCallback()])

Every log of the training loop (each `logging_steps`) gains `mfu`, `hfu`, `achieved_tflops` and
`tokens_per_s`, over the optimizer steps since the previous log, in `trainer.state.log_history` too.
The Trainer calls its callbacks in order and puts `callbacks=[...]` after the reporting ones
(TensorBoard, W&B, ...), which would then log without these figures: `add_mfu_callback` puts it first.

The Trainer's own `total_flos` is 6 x tokens x non-embedding parameters (`Trainer.floating_point_ops`): no
attention T² matmuls, every expert of a mixture-of-experts counted as active, a tied LM head left out; it
gives no MFU.

- **FLOPs**: the first optimizer step runs under `flops.counter.flop_counter()` (FlopCounterMode), from
  `on_step_begin` to `on_step_end`: every micro-batch of gradient accumulation, forward, backward and any
  recomputed forward, on the Trainer's real batch, so only the experts the router picked count, and
  attention as its kernels run. That is the step's hardware FLOPs. An op dispatched with grad enabled
  while autograd runs a backward is a recomputed forward (gradient checkpointing: backward itself runs
  with grad disabled, torch's `checkpoint` re-enables it to recompute); model FLOPs leave those out
  (Chowdhery et al. 2022, PaLM, App. B). Counting on the real step costs no extra forward; that step
  runs slower under the counter, so it is left out of the rates.
- **Later steps** reuse the count. A step whose model inputs have other shapes (dynamic padding) is
  given the counted FLOPs per token x its tokens, with one warning: attention grows as T², so pad to
  a fixed length for exact figures.
- **Time**: between step ends (`timing.clock.Clock`: CUDA events, synchronized at each log), data loading
  included; evaluation and checkpoint saving are left out (the window restarts after them).
- **Processes**: FLOPs, tokens and time are this process's, so `mfu`, `hfu` and `achieved_tflops` are per
  GPU (equal work on every rank assumed); `tokens_per_s` is the whole job's: x `args.world_size`.
- **Peak**: `peak_tflops`, else the dense table entry (`hardware.detect.device_peak`) of the GPU NVML
  names for the Trainer's dtype: bf16 or fp16 from `TrainingArguments`, else the parameters' dtype
  (tf32 when float32 matmuls may use TF32). Without one (the CPU) only `achieved_tflops` and
  `tokens_per_s` are logged, and one warning says why.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from .errors import check_arguments
from .flops.counter import UncountedOps, flop_counter, uncounted_note
from .hardware.detect import device_peak
from .timing.clock import Clock
from .timing.device import parameter_dtype, peak_column
from .timing.rates import rates

try:
    from transformers import TrainerCallback
except ImportError as e:
    raise ImportError("flopbench.integrations needs transformers and accelerate: "
                      "pip install 'flopbench[hf]'") from e


class RecomputedFlops(TorchDispatchMode):
    """The FLOPs `counter` counts for ops run as a recomputed forward (see the module docstring); enter it
    after `counter`, so each op passes here first."""

    def __init__(self, counter):
        super().__init__()
        self.counter = counter
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not (torch.is_grad_enabled() and torch._C._current_graph_task_id() != -1):
            return func(*args, **(kwargs or {}))
        before = self.counter.get_total_flops()
        out = func(*args, **(kwargs or {}))
        self.flops += self.counter.get_total_flops() - before
        return out


@dataclass
class Window:
    """The optimizer steps between two logs of this process: what the logged rates divide."""

    step: int = 0  # the Trainer's global step at the log
    steps: int = 0
    seconds: float = 0.0
    tokens: int = 0  # this process's input tokens (padding included)
    model_flops: float = 0
    hardware_flops: float = 0


class MFUCallback(TrainerCallback):
    """Adds `mfu`, `hfu`, `achieved_tflops` (per GPU) and `tokens_per_s` (all processes) to the Trainer's
    logs; see the module docstring. `peak_tflops`: the GPU's dense peak, overriding the table.

    After training: `model_flops` / `hardware_flops` (the counted optimizer step, this process), `tokens`
    (its input tokens), `peak_tflops` / `peak_source`, and `windows`, one `Window` per log with rates."""

    def __init__(self, peak_tflops: float | None = None):
        check_arguments(MFUCallback.__init__, {"peak_tflops": peak_tflops})
        device_peak(torch.device("cpu"), "fp32", peak_tflops)  # raises on a bad value, before training
        self.peak_tflops, self.peak_source = peak_tflops, "peak_tflops argument"
        self.model_flops: int | None = None
        self.hardware_flops: int | None = None
        self.tokens: int | None = None
        self.uncounted: dict[str, int] = {}
        self.windows: list[Window] = []
        self._shapes: list[tuple] = []  # the input shapes of this step's forward calls
        self._counted_shapes: tuple = ()
        self._tokens = 0  # this step's input tokens
        self._counting = None  # (counter, uncounted-ops watcher, recompute watcher) during the counted step
        self._hook = self._clock = None
        self._start = self._end = None  # marks: where the running segment of the window starts, last step end
        self._segment_steps = 0
        self._window = Window()
        self._world_size = 1
        self._warned_shapes = False

    # --- Trainer events --------------------------------------------------------------------------

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.model_flops = self.hardware_flops = self._start = None  # each train() counts its first step
        self._window, self._segment_steps = Window(), 0
        self._clock = Clock(args.device)
        self._world_size = args.world_size
        self._hook = model.register_forward_pre_hook(self._record_call, with_kwargs=True)
        column = "bf16" if args.bf16 else "fp16" if args.fp16 else peak_column(parameter_dtype(model))
        peak, source = device_peak(args.device, column, self.peak_tflops, parameter_dtype(model))
        if peak is None:
            warnings.warn(f"MFUCallback: {source}; logging achieved_tflops and tokens_per_s only", stacklevel=2)
        self.peak_tflops, self.peak_source = peak, source

    def on_step_begin(self, args, state, control, **kwargs):
        self._shapes, self._tokens = [], 0
        if self.model_flops is None and self._counting is None:
            counter = flop_counter()
            self._counting = (counter, UncountedOps(counter), RecomputedFlops(counter))
            for mode in self._counting:
                mode.__enter__()

    def on_step_end(self, args, state, control, **kwargs):
        shapes, tokens = tuple(self._shapes), self._tokens
        if self._counting is not None:
            hardware, recomputed = self._stop_counting()
            self.model_flops, self.hardware_flops = hardware - recomputed, hardware
            self.tokens, self._counted_shapes = tokens, shapes
            self._start = self._clock.mark()  # the counted step is slow: the window starts after it
            return
        if self.model_flops is None:
            return
        self._end = self._clock.mark()
        self._segment_steps += 1
        scale = 1 if shapes == self._counted_shapes else tokens / self.tokens
        if scale != 1 and not self._warned_shapes:
            self._warned_shapes = True
            warnings.warn(f"MFUCallback: step {state.global_step} has other input shapes than the counted step; "
                          f"its FLOPs are the counted FLOPs per token x its tokens (attention grows as T²: "
                          f"pad to a fixed length for exact figures)", stacklevel=2)
        w = self._window
        w.steps, w.tokens = w.steps + 1, w.tokens + tokens
        w.model_flops += self.model_flops * scale
        w.hardware_flops += self.hardware_flops * scale

    def on_evaluate(self, args, state, control, **kwargs):
        self._close_segment(restart=True)

    def on_save(self, args, state, control, **kwargs):
        self._close_segment(restart=True)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self._window.steps == 0 or logs is None:
            return  # no timed step since the last log (the counted step, an evaluation's or the final log)
        self._close_segment(restart=False)
        w, self._window = self._window, Window()
        w.step = state.global_step
        self.windows.append(w)
        r = rates(w.model_flops, w.hardware_flops, w.seconds, self.peak_tflops)
        if r.mfu is not None:
            logs["mfu"], logs["hfu"] = r.mfu, r.hfu
        logs["achieved_tflops"] = r.achieved_tflops
        logs["tokens_per_s"] = w.tokens * self._world_size / w.seconds
        history = state.log_history[-1] if state.log_history else {}
        if history.get("step") == state.global_step:  # the Trainer stored a copy of `logs` before this call
            history.update({k: logs[k] for k in ("mfu", "hfu", "achieved_tflops", "tokens_per_s") if k in logs})

    def on_train_end(self, args, state, control, **kwargs):
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        if self._counting is not None:
            self._stop_counting()  # training ended inside the counted step

    # --- helpers ---------------------------------------------------------------------------------

    def _record_call(self, module, args, kwargs):
        if module.training:  # evaluation's forwards are no training step's
            self._shapes.append(tuple(tuple(t.shape) for t in tree_leaves((args, kwargs))
                                      if isinstance(t, torch.Tensor)))
            self._tokens += input_tokens(args, kwargs)

    def _stop_counting(self) -> tuple[int, int]:
        """(hardware FLOPs, recomputed FLOPs) of the counted step; the modes are left in reverse order."""
        counter, watcher, recomputed = self._counting
        self._counting = None
        for mode in reversed((counter, watcher, recomputed)):
            mode.__exit__(None, None, None)
        self.uncounted = dict(watcher.uncounted)
        note = uncounted_note(self.uncounted)
        if note:
            warnings.warn(f"MFUCallback: {note}", stacklevel=3)
        return counter.get_total_flops(), recomputed.flops

    def _close_segment(self, restart: bool) -> None:
        """Add the time from the segment's start to its last step end to the window; the next segment starts
        now (`restart`: after an evaluation or a save) or at that step end (a log)."""
        if self._start is None:
            return
        if self._segment_steps:
            self._clock.sync()
            self._window.seconds += self._clock.elapsed_ms(self._start, self._end) / 1e3
            self._start = self._end
        self._segment_steps = 0
        if restart:
            self._start = self._clock.mark()


def input_tokens(args: tuple, kwargs: dict) -> int:
    """Input tokens of one forward call of a transformers model: the elements of `input_ids` (batch x
    sequence), else of `inputs_embeds` without its hidden dimension; 0 for a call with neither."""
    ids = kwargs.get("input_ids", args[0] if args else None)
    if isinstance(ids, torch.Tensor):
        return ids.numel()
    embeds = kwargs.get("inputs_embeds")
    return embeds.numel() // embeds.shape[-1] if isinstance(embeds, torch.Tensor) else 0


def add_mfu_callback(trainer, peak_tflops: float | None = None) -> MFUCallback:
    """Add an `MFUCallback` to `trainer` ahead of its other callbacks, so the reporting ones (TensorBoard,
    W&B, ...) log its figures too; returns it."""
    callback = MFUCallback(peak_tflops)
    trainer.callback_handler.callbacks.insert(0, callback)
    return callback
