"""flopbench: how many FLOPs a decoder-only transformer really executes, and how much of the GPU's peak it gets.

Three ways to know the FLOPs of a step, side by side: analytic (closed-form formulas from the config),
counted (what torch's FlopCounterMode and fvcore see dispatched) and measured (timed steps, MFU / HFU).
"""

from .config import PRESETS, ModelConfig, resolve_config
from .errors import UsageError

__version__ = "0.1.0"

__all__ = ["ModelConfig", "PRESETS", "UsageError", "count", "resolve_config"]


def count(config: ModelConfig, batch_size: int = 1, seq_len: int | None = None, **kwargs) -> dict:
    """Analytic and counted FLOPs of one step; see `flopbench.counting.count`."""
    from .counting import count as _count

    return _count(config, batch_size, seq_len, **kwargs)
