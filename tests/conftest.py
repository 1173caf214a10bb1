"""Shared test setup: `@pytest.mark.gpu` tests skip, with a reason, where CUDA is absent; `compiler` skips a
test where torch.compile cannot build a kernel."""

import pytest
import torch


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU: torch.cuda.is_available() is False on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def compiler():
    """Skip where torch.compile cannot build a kernel here (inductor needs a C++ compiler on the CPU)."""
    try:
        torch.compile(lambda x: x * 2 + 1)(torch.ones(4))
    except Exception as e:  # noqa: BLE001 - any failure means no compiler here
        pytest.skip(f"torch.compile does not work on this machine: {type(e).__name__}: {str(e)[:100]}")
