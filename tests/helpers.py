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
