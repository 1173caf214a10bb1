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
