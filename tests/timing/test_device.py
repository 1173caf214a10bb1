"""timing.device: the precision of a whole step, the auto dtype, out-of-memory errors and freeing after them."""

import weakref

import pytest
import torch
from helpers import RecordPrecision

from flopbench.timing import device as device_module
from flopbench.timing.device import (
    autocast,
    is_oom,
    matmul_precision,
    oom_safe,
    precision,
    resolve_dtype,
)

CPU = torch.device("cpu")




def test_matmul_precision_holds_in_backward():
    RecordPrecision.seen = []
    x = torch.randn(4, 4, requires_grad=True)
    before = torch.get_float32_matmul_precision()
    with matmul_precision("tf32"):
        with autocast("tf32", CPU):
            y = RecordPrecision.apply(x) @ x
        y.sum().backward()
    assert RecordPrecision.seen == ["high"]  # TF32 allowed in backward too
    assert torch.get_float32_matmul_precision() == before  # restored after the step


def test_precision_around_the_forward_alone_does_not_reach_backward():
    """Why the whole step needs `matmul_precision`: the setting is read when backward runs."""
    RecordPrecision.seen = []
    x = torch.randn(4, 4, requires_grad=True)
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        with precision("tf32", CPU):
            y = RecordPrecision.apply(x) @ x
        y.sum().backward()
    finally:
        torch.set_float32_matmul_precision(before)
    assert RecordPrecision.seen == ["highest"]


@pytest.mark.parametrize("capability, expected", [((7, 0), "fp16"), ((7, 5), "fp16"), ((8, 0), "bf16"),
                                                  ((9, 0), "bf16")])
def test_auto_dtype_is_fp16_on_gpus_without_bf16(monkeypatch, capability, expected):
    # V100 (7.0) and T4 (7.5) have fp16 tensor cores only; bf16 arrives with Ampere (8.0)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert resolve_dtype("auto", torch.device("cuda", 0)) == expected
    assert resolve_dtype("bf16", torch.device("cuda", 0)) == "bf16"  # asked for explicitly: kept


def test_auto_dtype_on_the_cpu_is_fp32():
    assert resolve_dtype("auto", CPU) == "fp32"


@pytest.mark.parametrize("error, expected", [
    (RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 282 GB. Error code 12"), True),
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"), True),
    (RuntimeError("CUDA error: out of memory"), True),
    (RuntimeError("mat1 and mat2 shapes cannot be multiplied"), False),
])
def test_is_oom(error, expected):
    assert is_oom(error) is expected


def test_oom_safe_frees_memory_only_after_the_traceback_is_gone(monkeypatch):
    """The failed step's tensors live in its frame, which the error's traceback holds: freeing memory while
    the traceback is alive frees nothing."""
    alive_when_freed = []
    ref = None

    def step():
        nonlocal ref
        activations = torch.ones(1024, 1024)
        ref = weakref.ref(activations)
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 282 GB")

    monkeypatch.setattr(device_module, "free_memory", lambda dev: alive_when_freed.append(ref() is not None))
    value, error = oom_safe(step, torch.nn.Linear(2, 2), CPU)
    assert value is None and is_oom(error) and error.__traceback__ is None
    assert alive_when_freed == [False]


def test_oom_safe_lets_other_errors_through():
    def step():
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    with pytest.raises(RuntimeError, match="shapes"):
        oom_safe(step, torch.nn.Linear(2, 2), CPU)
