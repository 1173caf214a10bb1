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
