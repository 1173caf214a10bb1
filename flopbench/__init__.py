"""flopbench: how many FLOPs a decoder-only transformer really executes, and how much of the GPU's peak it gets.

Three ways to know the FLOPs of a step, side by side: analytic (closed-form formulas from the config),
counted (what torch's FlopCounterMode and fvcore see dispatched) and measured (timed steps, MFU / HFU).

The Python API (the command line is a thin layer over it; see README "Use from Python"):

- `count(config, batch_size, seq_len)` — analytic and counted FLOPs of one step (`flopbench count`);
- `run(config, batch_size=..., device=..., ...)` — timed steps, MFU / HFU (`flopbench run`);
- `gpus()` — the GPU detected here and the dense peak table (`flopbench gpus`);
- `sweep(spec, out, resume)` — a TOML grid of runs into one results file (`flopbench sweep`);
- `estimate(config, tokens, gpus, ...)` — training FLOPs, GPU-hours and days (`flopbench estimate`);
- `profile(module, example_inputs, loss_fn=None, ...)` — counted FLOPs, timed steps and MFU of any
  `nn.Module`;
- `measure(model, peak_tflops=None)` — a context manager giving per-step FLOPs, time and MFU of your
  own training loop;
- `to_dataframe(x)` — any of those results (or a results file / folder) as a pandas DataFrame;
  `read_rows(path)` reads saved rows.

`config` is a `ModelConfig` or a preset name (`PRESETS`). Bad input raises `UsageError`, whose
message names the value and what is allowed. Importing flopbench is cheap: torch and pandas are
imported on first use.
"""

from .config import PRESETS, ModelConfig, resolve_config
from .errors import UsageError

__version__ = "0.1.0"

__all__ = ["ModelConfig", "PRESETS", "UsageError", "count", "run", "gpus", "sweep", "estimate", "profile", "measure", "to_dataframe",
           "read_rows", "resolve_config", "RunOptions", "Profile", "Measurement"]

#: Public names served from a submodule on first use (PEP 562), so `import flopbench` stays cheap.
_LAZY = {
    "profile": "profiling", "Profile": "profiling",
    "measure": "measuring", "Measurement": "measuring",
    "to_dataframe": "results", "read_rows": "results",
    "RunOptions": "bench",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'flopbench' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


def _config(config: ModelConfig | str) -> ModelConfig:
    if isinstance(config, ModelConfig):
        return config
    if isinstance(config, str):
        return resolve_config(config)
    raise UsageError(f"config={type(config).__name__}: pass a ModelConfig or a preset name ({', '.join(PRESETS)})")


def count(config: ModelConfig | str, batch_size: int = 1, seq_len: int | None = None, **kwargs) -> dict:
    """Analytic and counted FLOPs of one step of `config`: the `flopbench count --json` document.

    `seq_len` defaults to the model's max positions. Keyword options of `flopbench.counting.count`:
    `torch_counter=True`, `fvcore=True`, `per_module=True`.
    """
    from .counting import count as _count

    return _count(_config(config), batch_size, seq_len, **kwargs)


def run(config: ModelConfig | str, options=None, progress=None, **fields) -> dict:
    """Build `config`, count its FLOPs, time real steps and report MFU / HFU: the `flopbench run --json` document.

    Options are `RunOptions` fields (defaults as the CLI's), given as keywords (`batch_size`, `seq_len`,
    `device`, `dtype`, `checkpointing`, `warmup`, `iters`, `peak_tflops`, `compile`, `pad_vocab_multiple`,
    `gemm`, `out` — `out=None` writes no files —, `modes`) or as one `RunOptions`. `progress(message)`
    receives status lines (default: stderr).
    """
    import dataclasses

    from .bench import RunOptions
    from .bench import run as _run

    if options is not None and fields:
        raise UsageError(f"run(): pass options=RunOptions(...) or keyword options, not both (got {sorted(fields)})")
    allowed = [f.name for f in dataclasses.fields(RunOptions)]
    unknown = sorted(set(fields) - set(allowed))
    if unknown:
        raise UsageError(f"run(): unknown option {unknown[0]!r}; allowed: {', '.join(allowed)}")
    return _run(_config(config), options or RunOptions(**fields), progress)


def gpus() -> dict:
    """The GPU detected here, its peak-table entry and the whole table: the `flopbench gpus --json` document."""
    from .hardware import gpu_report

    return gpu_report()


def sweep(spec, out: str = "results", resume: bool = False) -> dict:
    """Run a sweep spec (a TOML path or a loaded `flopbench.sweeping.Spec`): the `flopbench sweep --json` document.

    Every row is appended to `<out>/<spec name>/rows.jsonl` as it is measured; `resume=True` skips rows
    already there. `to_dataframe(doc)` gives the new rows as a DataFrame.
    """
    from .sweeping import Spec, load_spec, run_sweep

    return run_sweep(spec if isinstance(spec, Spec) else load_spec(spec), out=out, resume=resume)


def estimate(config: ModelConfig | str, tokens: int | str, gpus: int = 1, *, mfu: float | None = None,
             mfu_from: str | None = None, recompute: bool = False, exact: bool = False, **kwargs) -> dict:
    """Training compute and time for `tokens` (an int or "300B", "1.4T", ...) on `gpus` GPUs: the
    `flopbench estimate --json` document. C = 6NT (8NT with `recompute`, the exact count with `exact`),
    time = C / (gpus x peak x MFU), MFU given, read from results (`mfu_from`) or the seed's 0.5.
    Other keywords: `seq_len`, `gpu` (default "h100"), `dtype`, `peak_tflops`."""
    from .estimating import estimate as _estimate
    from .estimating import method_of, parse_tokens, resolve_mfu

    mfu, source = resolve_mfu(mfu, mfu_from, recompute)
    n_tokens = parse_tokens(tokens) if isinstance(tokens, str) else tokens
    return _estimate(_config(config), n_tokens, gpus, method=method_of(recompute, exact), mfu=mfu,
                     mfu_source=source, **kwargs)
