"""flopbench: how many FLOPs a decoder-only transformer really executes, and how much of the GPU's peak it gets.

Three ways to know the FLOPs of a step, side by side: analytic (closed-form formulas from the config),
counted (what torch's FlopCounterMode and fvcore see dispatched) and measured (timed steps, MFU / HFU).

The Python API (the command line is a thin layer over it; see README "Use from Python"), one module of
`flopbench.api` per function:

- `count(config, batch_size, seq_len)` — analytic and counted FLOPs of one step (`flopbench count`);
- `run(config, batch_size=..., device=..., ..., checks=Thresholds(...))` — timed steps, MFU / HFU
  (`flopbench run`);
- `gpus()` — the GPU detected here and the dense peak table (`flopbench gpus`);
- `sweep(spec, out, resume)` — a TOML grid of runs into one results file (`flopbench sweep`);
- `report(results, out)` — the Markdown report and plots of result rows (`flopbench report`);
- `estimate(config, tokens, gpus, ...)` — training FLOPs, GPU-hours and days (`flopbench estimate`);
- `infer(config, prompt_len=..., gen_len=..., ...)` — prefill and decode FLOPs, bytes, MFU and MBU
  (`flopbench infer`);
- `explain(config, checkpointing=..., ...)` — where the MFU goes: a step's time by class of work and the
  waterfall from the dense peak down to the MFU (`flopbench explain`);
- `profile(module, example_inputs, loss_fn=None, ...)` — counted FLOPs, timed steps and MFU of any
  `nn.Module`;
- `measure(model, peak_tflops=None)` — a context manager giving per-step FLOPs, time and MFU of your
  own training loop;
- `to_dataframe(x)` — any of those results (or a results file / folder) as a pandas DataFrame;
  `read_rows(path)` reads saved rows.

`config` is a `ModelConfig` or a preset name (`PRESETS`). Bad input raises `UsageError`, whose
message names the value and what is allowed. Importing flopbench is cheap: every public name is
imported on first use (torch and pandas with the functions that need them), so that `import flopbench`
runs no code of its own: a Ctrl-C as the program starts reaches `flopbench.__main__`, which says
"interrupted" (exit code 130) rather than a traceback.
"""

__version__ = "0.1.0"

__all__ = ["ModelConfig", "PRESETS", "UsageError", "count", "run", "gpus", "sweep", "report", "estimate", "profile",
           "measure", "infer", "explain", "to_dataframe", "read_rows", "resolve_config", "RunOptions", "InferOptions",
           "ExplainOptions", "Thresholds", "Profile", "Measurement"]

#: Public names served from a submodule on first use (PEP 562), so `import flopbench` stays cheap.
_LAZY = {
    "UsageError": "errors", "ModelConfig": "model.config", "PRESETS": "model.presets",
    "resolve_config": "model.presets",
    "count": "api.count", "run": "api.run", "RunOptions": "api.run", "gpus": "api.gpus", "sweep": "api.sweep",
    "report": "api.report", "estimate": "api.estimate", "profile": "api.profile", "Profile": "api.profile",
    "measure": "api.measure", "Measurement": "api.measure", "Thresholds": "timing.thresholds", "infer": "api.infer",
    "InferOptions": "api.infer", "explain": "api.explain", "ExplainOptions": "api.explain",
    "to_dataframe": "output.records", "read_rows": "output.records",
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
