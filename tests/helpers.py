"""Test helpers shared by several test files (importable: pytest puts tests/ on sys.path)."""

import torch

CUDA_OOM = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")


class FailOnCall:
    """Wraps a function (the timing call) so that its `fail_at`-th call (1-based) raises `error`
    instead; every call is counted in `calls`."""

    def __init__(self, real, fail_at: int, error: BaseException = CUDA_OOM):
        self.real, self.fail_at, self.error, self.calls = real, fail_at, error, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls == self.fail_at:
            raise self.error
        return self.real(*args, **kwargs)


class RecordPrecision(torch.autograd.Function):
    """Identity whose backward records the float32 matmul precision in force when backward runs."""

    seen: list[str] = []

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        RecordPrecision.seen.append(torch.get_float32_matmul_precision())
        return grad


def unwrapped(text: str) -> str:
    """`text` with the terminal's line folding undone: messages wider than the terminal continue on indented
    lines (`output.text.wrap`), so a phrase a test looks for may span two of them."""
    import re

    return re.sub(r"\n +", " ", text)


def counted_phases(cfg, batch_size: int, seq_len: int, early_stop: bool = True) -> dict:
    """What `flops.counter.count_model` must give, from the analytic formulas: each phase, plus what the
    model's mask-based attention kernel adds over any sliding windows (the masked square: once per
    attention pass; 0 without windows)."""
    from flopbench.flops import analytic

    B, T = batch_size, seq_len
    masked = analytic.masked_square_flops(cfg, B, T)
    return {
        "forward": analytic.forward_flops(cfg, B, T) + masked,
        "train": analytic.train_flops(cfg, B, T) + 3 * masked,
        "train_recompute": analytic.train_recompute_flops(cfg, B, T, early_stop=early_stop) + 4 * masked,
        "train_recompute_selective": analytic.train_recompute_flops(cfg, B, T, checkpointing="selective")
        + 4 * masked,
    }


class Logits(torch.nn.Module):
    """A transformers causal LM as `forward(ids) -> model(input_ids=ids, use_cache=False).logits`: one
    positional input, so fvcore can trace it."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, ids):
        return self.model(input_ids=ids, use_cache=False).logits


def pretend_gpu(monkeypatch, module, gpu: dict) -> None:
    """Make `module` (api.run, api.infer: each reads the GPU from `environment(device)`) see `gpu` there, so the
    peak-table lookup runs on the CPU with a real GPU's name."""
    real = module.environment

    def environment(device):
        return {**real(device), "gpu": gpu}

    monkeypatch.setattr(module, "environment", environment)


#: A float8 MLP for `profile` / `measure`: Linear(64, 128) -> ReLU -> Linear(128, 64) converted with torchao
#: (dims multiples of 16, as `torch._scaled_mm` needs), then a Linear(64, 8) head kept in bf16; a batch of 32.
FP8_BATCH, FP8_IN, FP8_HIDDEN, FP8_HEAD = 32, 64, 128, 8
#: By hand: the two float8 layers' forward is 2·32·(64·128 + 128·64) FLOPs; training runs it 3 times (forward,
#: input gradient, weight gradient: torchao's float8 backward computes the first layer's input gradient too).
FP8_FORWARD = 2 * FP8_BATCH * (FP8_IN * FP8_HIDDEN + FP8_HIDDEN * FP8_IN)
#: The bf16 head's forward, 2·32·64·8; its input needs a gradient, so training runs it 3 times too.
HEAD_FORWARD = 2 * FP8_BATCH * FP8_IN * FP8_HEAD


def float8_mlp():
    """`FP8_*`'s module, its two hidden layers converted to torchao's ``Float8Linear`` (the head left out)."""
    from flopbench.model.fp8 import load_float8  # torchao, without its import-time warnings

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(FP8_IN, FP8_HIDDEN), torch.nn.ReLU(),
                                 torch.nn.Linear(FP8_HIDDEN, FP8_IN), torch.nn.Linear(FP8_IN, FP8_HEAD))
    return load_float8().convert_to_float8_training(module, module_filter_fn=lambda m, fqn: fqn != "3")


def weighted_utilization(flops: int, fp8_flops: int, seconds: float, peak: float, fp8_peak: float) -> float:
    """MFU against the FLOP-weighted peak by hand: ideal time (the float8 FLOPs at `fp8_peak`, the rest at
    `peak`, TFLOP/s) / measured time."""
    return (fp8_flops / fp8_peak + (flops - fp8_flops) / peak) / 1e12 / seconds
