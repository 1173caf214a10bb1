"""Command line: parse, call the Python API, render. No logic lives only here.

Every command that prints numbers has `--json` (one JSON document on stdout, nothing else there);
human output is a table on stdout, fitted to the terminal: its width (COLUMNS, else the terminal's, else
100 columns; `--wide` prints wide tables unfolded) and its encoding (an ASCII-only one gets ASCII
stand-ins, never a UnicodeEncodeError). Progress and warnings go to stderr; under `--json` only the
warnings, unless `--progress` is given. Help texts show argparse's defaults (`%(default)s`), which
tests/cli/test_terminal.py checks against the `RunOptions` / `InferOptions` defaults. Bad input is one
message on stderr and exit code 2 (`UsageError`), never a traceback: one line, wrapped to the width on a
terminal (`_error`). Ctrl-C is "flopbench: interrupted" and exit code 130, also while torch is being
imported (`import_holding_ctrl_c`). A closed pipe on the output (`flopbench gpus --json | head -1`) ends
the command quietly with exit code 141 (128 + SIGPIPE: what a shell reports for a Unix tool such as `cat`
in the same place, so `set -o pipefail` treats both alike); an output that cannot be written (a full disk)
is one line and exit code 2, as a results file that cannot be written is. `--help`, `estimate`, `count
--no-torch` and `gpus` where no GPU can be there never import torch: the API modules are imported by the
command that needs them.
"""

from __future__ import annotations

import argparse
import json
import importlib
import os
import signal
import sys
import threading

from .errors import UsageError
from .model.config import (ATTENTION, CHECKPOINTING_CHOICES, DEVICES, DTYPES, FP8_RECIPES, MAX_ITERS,
                           MAX_PROFILE_STEPS, MAX_WARMUP, MODES, OVERRIDABLE)
from .model.hf import MAPPERS as HF_MODEL_TYPES
from .model.presets import PRESETS, resolve_config
from .output import text


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line naming the problem (exit 2), not usage + message."""

    def error(self, message: str):  # noqa: D401 - argparse API
        raise UsageError(message)

    def _print_message(self, message: str, file=None) -> None:  # argparse's hook for --help and --version
        """As argparse, but a failed write to stdout is not swallowed: `main` reports it like any other."""
        if message:
            if file is sys.stdout:
                _write(message)
            else:
                (file or sys.stderr).write(message)


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        if value.strip().isdigit():  # more digits than Python converts (4300)
            raise argparse.ArgumentTypeError(f"an integer of {len(value.strip())} digits is too large") from None
        raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from None
    if number <= 0:
        raise argparse.ArgumentTypeError(f"{value!r} must be a positive integer")
    return number


def _non_negative_int(value: str) -> int:
    return 0 if value.strip() == "0" else _positive_int(value)


def _at_most(parse, limit: int, what: str):
    """An argparse type: `parse`, then refuse a number above `limit` (`what` names the limit)."""
    def parse_bounded(value: str) -> int:
        number = parse(value)
        if number > limit:
            raise argparse.ArgumentTypeError(f"{value!r} is above the limit of {limit:,} {what}")
        return number
    return parse_bounded


def _positive_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not number > 0 or number == float("inf"):
        raise argparse.ArgumentTypeError(f"{value!r} must be a positive number")
    return number


def _modes(value: str) -> tuple[str, ...]:
    """`--modes`: comma-separated timed modes (`model.config.MODES`), each at most once, in the order given."""
    modes = tuple(m.strip() for m in value.split(","))
    allowed = ", ".join(MODES)
    for mode in modes:
        if mode not in MODES:
            name = repr(mode) if mode else "an empty name"
            raise argparse.ArgumentTypeError(f"{name} in {value!r} is not a mode: choose from {allowed}")
        if modes.count(mode) > 1:
            raise argparse.ArgumentTypeError(f"{mode!r} is named twice in {value!r}: choose from {allowed}, "
                                             f"each once")
    return modes


def _tokens(value: str) -> int:
    from .api.estimate import parse_tokens

    try:
        return parse_tokens(value)
    except UsageError as e:  # argparse would swallow a ValueError's message
        raise argparse.ArgumentTypeError(str(e)) from None


def _add_model_args(p: argparse.ArgumentParser, default_model: str, batch_size: int | None = 1,
                    wide: bool = True, progress: bool = False, seq_len: bool = True) -> None:
    """The model options a command shares; each command gets only those it uses (`batch_size` None, `seq_len`
    False: not offered), so that an option it would ignore is an error, not accepted and dropped."""
    p.add_argument("--model", default=default_model,
                   help=f"preset ({', '.join(PRESETS)}; default {default_model}) or the path of a Hugging Face "
                        f"config.json (model_type {', '.join(HF_MODEL_TYPES)}), read offline")
    for field in OVERRIDABLE:
        p.add_argument(f"--{field.replace('_', '-')}", type=_positive_int, default=None,
                       help=f"override the model's {field}")
    if batch_size is not None:
        p.add_argument("--batch-size", type=_positive_int, default=batch_size,
                       help="sequences per step (default %(default)s)")
    if seq_len:
        p.add_argument("--seq-len", type=_positive_int, default=None,
                       help="tokens per sequence (default: the model's max positions)")
    _add_output_args(p, wide=wide, progress=progress)


def _add_device_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", choices=DEVICES,
                   help="auto = cuda if available, else cpu (default %(default)s)")
    p.add_argument("--dtype", default="auto", choices=("auto", *DTYPES),
                   help="auto = bf16 on CUDA (fp16 before compute capability 8.0), fp32 on CPU; fp8 = "
                        "torchao float8 training of the block Linear layers, the rest bf16 (the fp8 extra; not "
                        "infer) (default %(default)s)")


def _add_step_args(p: argparse.ArgumentParser) -> None:
    """--warmup and --iters of a timed training step (run, explain)."""
    p.add_argument("--warmup", type=_at_most(_non_negative_int, MAX_WARMUP, "warm-up steps (MAX_WARMUP)"), default=3,
                   help=f"untimed steps first (default %(default)s, at most {MAX_WARMUP:,})")
    p.add_argument("--iters", type=_at_most(_positive_int, MAX_ITERS, "timed steps (MAX_ITERS)"), default=10,
                   help=f"timed steps (default %(default)s, at most {MAX_ITERS:,})")


def _add_output_args(p: argparse.ArgumentParser, wide: bool = False, progress: bool = False) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    if wide:
        p.add_argument("--wide", action="store_true",
                       help="print the tables at full width, unfolded (default: fit the terminal, COLUMNS or 100)")
    if progress:
        p.add_argument("--progress", action="store_true",
                       help="show progress on stderr under --json too (default: only warnings there)")


def _width(args: argparse.Namespace) -> int:
    return text.WIDE if getattr(args, "wide", False) else text.terminal_width()


def _progress(args: argparse.Namespace) -> "text.Progress":
    """The command's progress on stderr: quiet (warnings only) under --json unless --progress."""
    return text.Progress(sys.stderr, _width(args), quiet=args.json and not args.progress)


def _warn(lines, prefix: str, args: argparse.Namespace) -> None:
    width = min(_width(args), text.terminal_width())
    for line in lines:
        print(text.wrap(f"{prefix}{line}", width, "    "), file=sys.stderr)


def _config_from(args: argparse.Namespace):
    return resolve_config(args.model, **{f: getattr(args, f) for f in OVERRIDABLE})


def _emit(args: argparse.Namespace, doc: dict, render) -> None:
    if args.json:
        _write(json.dumps(doc, indent=2, default=str) + "\n")
    else:
        _write(render(doc, _width(args)))


class OutputError(Exception):
    """stdout could not be written for another reason than a closed pipe (a full disk: ENOSPC)."""

    def __init__(self, error: OSError):
        super().__init__(error.strerror or str(error))


def _write(out: str) -> None:
    """Write `out` to stdout and flush it: a closed pipe stays a BrokenPipeError, any other failure is an
    `OutputError` (see `main`)."""
    try:
        sys.stdout.write(text.for_encoding(out, getattr(sys.stdout, "encoding", None) or "utf-8"))
        sys.stdout.flush()
    except BrokenPipeError:
        raise
    except OSError as e:
        raise OutputError(e) from None


def cmd_count(args: argparse.Namespace) -> int:
    from .api.count import count

    doc = count(_config_from(args), args.batch_size, args.seq_len, torch_counter=not args.no_torch,
                fvcore=not (args.no_fvcore or args.no_torch))
    _emit(args, doc, text.render_count)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from .api.run import RunOptions, run
    from .timing.thresholds import Thresholds

    options = RunOptions(
        batch_size=args.batch_size, seq_len=args.seq_len, device=args.device, dtype=args.dtype,
        checkpointing=args.checkpointing, warmup=args.warmup, iters=args.iters, peak_tflops=args.peak_tflops,
        compile=args.compile, pad_vocab=args.pad_vocab, gemm=not args.no_gemm,
        out=None if args.no_save else args.out, modes=args.modes, dist=args.dist, attention=args.attention,
        fp8_recipe=args.fp8_recipe, peak_fp8_tflops=args.peak_fp8_tflops,
    )
    checks = Thresholds(min_mfu=args.min_mfu, min_hfu=args.min_hfu,
                        max_counted_vs_analytic=args.max_counted_vs_analytic, max_vs_baseline=args.max_vs_baseline)
    progress = text.RunProgress(_progress(args))

    def header(doc: dict) -> None:  # before anything is timed: on stdout, or under --json with the progress
        if args.json:
            progress.message(text.run_header(doc, _width(args)).rstrip("\n"))
        else:
            _write(text.run_header(doc, _width(args)))

    try:
        doc = run(_config_from(args), options, checks=checks, progress=progress.message, on_start=header,
                  on_step=progress.step)
    finally:
        progress.close()
        if args.dist:
            from .timing import distributed

            distributed.finish()
    if not doc["is_main"]:  # under torchrun only rank 0 prints
        return 0
    _emit(args, doc, lambda d, width: text.render_run(d, width, header=False))
    _warn([text.check_line(c) for c in doc["checks"]], "check: ", args)
    return 1 if any(not c["ok"] for c in doc["checks"]) else 0


def _with_progress(args: argparse.Namespace, function, options, render) -> int:
    """`function(config, options)` (infer, explain) with its progress lines on stderr, then its document."""
    progress = _progress(args)
    try:
        doc = function(_config_from(args), options, progress=progress.line)
    finally:
        progress.close()
    _emit(args, doc, render)
    return 0


def cmd_infer(args: argparse.Namespace) -> int:
    from .api.infer import InferOptions, infer

    options = InferOptions(batch_size=args.batch_size, prompt_len=args.prompt_len, gen_len=args.gen_len,
                           device=args.device, dtype=args.dtype, warmup=args.warmup, iters=args.iters,
                           peak_tflops=args.peak_tflops, peak_gbps=args.peak_gbps, compile=args.compile,
                           ceilings=not args.no_ceilings, out=None if args.no_save else args.out)
    return _with_progress(args, infer, options, text.render_infer)


def cmd_explain(args: argparse.Namespace) -> int:
    from .api.explain import ExplainOptions, explain

    options = ExplainOptions(batch_size=args.batch_size, seq_len=args.seq_len, device=args.device, dtype=args.dtype,
                             checkpointing=args.checkpointing, mode=args.mode, compile=args.compile,
                             warmup=args.warmup, iters=args.iters, profile_steps=args.profile_steps,
                             peak_tflops=args.peak_tflops, pad_vocab=args.pad_vocab,
                             out=None if args.no_save else args.out)
    return _with_progress(args, explain, options, text.render_explain)


def cmd_gpus(args: argparse.Namespace) -> int:
    from .api.gpus import detection_needs_torch, gpus

    if args.lookup is None and detection_needs_torch():  # else the table needs no torch (seconds to import)
        import_holding_ctrl_c(TORCH_IMPORTS)
    doc = gpus(lookup=args.lookup)
    _emit(args, doc, text.render_gpu_lookup if args.lookup else text.render_gpus)
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from .api.sweep import sweep

    _emit(args, sweep(args.spec, out=args.out, resume=args.resume, progress=_progress(args)), text.render_sweep)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .api.report import report

    _emit(args, report(args.results, args.out), text.render_report)
    return 0


def cmd_estimate(args: argparse.Namespace) -> int:
    from .api.estimate import estimate

    doc = estimate(_config_from(args), args.tokens, args.gpus, seq_len=args.seq_len, recompute=args.recompute,
                   exact=args.exact, causal=args.causal, gpu=args.gpu, dtype=args.dtype,
                   peak_tflops=args.peak_tflops, mfu=args.mfu, hfu=args.hfu, mfu_from=args.mfu_from)
    _emit(args, doc, text.render_estimate)
    _warn(doc["warnings"], "warning: ", args)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="flopbench", description="How many FLOPs does this transformer execute, and how "
                                                   "much of the GPU's peak does it get?")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"flopbench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")

    p = sub.add_parser("count", help="analytic vs counted FLOPs of one step (no GPU needed)")
    _add_model_args(p, default_model="gpt2")
    p.add_argument("--no-fvcore", action="store_true", help="skip the fvcore count")
    p.add_argument("--no-torch", action="store_true", help="analytic only: no counting, torch is not imported")
    p.set_defaults(func=cmd_count)

    p = sub.add_parser("run", help="time real steps and report MFU / HFU (default: a small model that runs on a CPU)")
    _add_model_args(p, default_model="tiny", batch_size=8, progress=True)
    _add_device_args(p)
    p.add_argument("--checkpointing", default="both", choices=CHECKPOINTING_CHOICES,
                   help="activation checkpointing of every block; both = time each (default %(default)s)")
    _add_step_args(p)
    p.add_argument("--peak-tflops", type=_positive_float, default=None,
                   help="peak TFLOP/s to divide by (default: the table entry of the detected GPU; with --dtype "
                        "fp8 the bf16 peak)")
    p.add_argument("--fp8-recipe", default=FP8_RECIPES[0], choices=FP8_RECIPES,
                   help="with --dtype fp8: torchao's float8 scaling, per tensor or per row (default %(default)s)")
    p.add_argument("--peak-fp8-tflops", type=_positive_float, default=None,
                   help="with --dtype fp8: the fp8 dense peak TFLOP/s (default: the table entry)")
    p.add_argument("--modes", type=_modes, default=MODES, metavar="MODE[,MODE]",
                   help=f"the modes to time, comma-separated, from {', '.join(MODES)} (e.g. train_step; "
                        f"default %(default)s)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile each block and the loss (regional); rows record compile_s")
    p.add_argument("--pad-vocab", type=_positive_int, default=1, metavar="MULTIPLE",
                   help="pad the vocabulary to a multiple (e.g. 64: 50257 -> 50304; default %(default)s = none); "
                        "FLOPs count the padding")
    p.add_argument("--no-gemm", action="store_true", help="skip the GEMM-ceiling microbenchmark")
    save = p.add_mutually_exclusive_group()  # --out with --no-save would be ignored: refused
    save.add_argument("--out", default="results", help="folder for the results (default %(default)s/)")
    save.add_argument("--no-save", action="store_true", help="write no files")
    p.add_argument("--min-mfu", type=_positive_float, default=None, metavar="FRACTION",
                   help="check: every train_step row without checkpointing reaches this MFU (exit 1 if not)")
    p.add_argument("--min-hfu", type=_positive_float, default=None, metavar="FRACTION",
                   help="check: every train_step row with full checkpointing reaches this HFU (exit 1 if not)")
    p.add_argument("--max-counted-vs-analytic", type=_positive_float, default=None, metavar="FRACTION",
                   help="check: unexplained relative gap between counted and analytic FLOPs (exit 1 if above)")
    p.add_argument("--max-vs-baseline", default=None, metavar="FILE:TOLERANCE",
                   help="check: MFU within TOLERANCE below a stored run, e.g. results/baseline.json:0.05")
    p.add_argument("--dist", choices=("ddp", "fsdp"), default=None,
                   help="under torchrun: wrap in DDP or FSDP2 (fully_shard per block); rank 0 reports")
    p.add_argument("--attention", default="sdpa", choices=ATTENTION,
                   help="sdpa (torch picks the kernel) or flex (FlexAttention with a block mask, compiled on a "
                        "GPU; CPU: forward only) (default %(default)s)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("infer", help="generation: prefill and decode FLOPs, bytes, MFU and MBU (KV cache, greedy)")
    _add_model_args(p, default_model="tiny", batch_size=1, progress=True, seq_len=False)  # P + G, not T
    p.add_argument("--prompt-len", type=_positive_int, default=128, help="prompt tokens P (default %(default)s)")
    p.add_argument("--gen-len", type=_positive_int, default=32, help="generated tokens G (default %(default)s)")
    _add_device_args(p)
    p.add_argument("--warmup", type=_non_negative_int, default=1,
                   help="untimed generations first (default %(default)s)")
    p.add_argument("--iters", type=_positive_int, default=5, help="timed prefills (default %(default)s)")
    p.add_argument("--peak-tflops", type=_positive_float, default=None,
                   help="peak TFLOP/s to divide by (default: the table entry of the detected GPU)")
    p.add_argument("--peak-gbps", type=_positive_float, default=None,
                   help="peak memory bandwidth in GB/s for MBU (default: the table entry of the detected GPU)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile, static shapes; decode as one CUDA graph on CUDA (reduce-overhead)")
    p.add_argument("--no-ceilings", action="store_true", help="skip the GEMM and copy-bandwidth microbenchmarks")
    save = p.add_mutually_exclusive_group()  # --out with --no-save would be ignored: refused
    save.add_argument("--out", default="results", help="folder for the results (default %(default)s/)")
    save.add_argument("--no-save", action="store_true", help="write no files")
    p.set_defaults(func=cmd_infer)

    p = sub.add_parser("explain", help="where the MFU goes: a step's time by class of work, and the waterfall "
                                       "from the dense peak to the MFU")
    _add_model_args(p, default_model="tiny", batch_size=8, progress=True)
    _add_device_args(p)
    p.add_argument("--checkpointing", default="none", choices=CHECKPOINTING_CHOICES,
                   help="activation checkpointing; both / all = the modes side by side (default %(default)s)")
    p.add_argument("--mode", default="train_step", choices=MODES, help="the step explained (default %(default)s)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    _add_step_args(p)
    p.add_argument("--profile-steps", default=3,
                   type=_at_most(_positive_int, MAX_PROFILE_STEPS, "profiled steps (MAX_PROFILE_STEPS)"),
                   help="steps recorded by torch.profiler after the timed ones (default %(default)s)")
    p.add_argument("--peak-tflops", type=_positive_float, default=None,
                   help="peak TFLOP/s to divide by (default: the table entry of the detected GPU)")
    p.add_argument("--pad-vocab", type=_positive_int, default=1, metavar="MULTIPLE",
                   help="pad the vocabulary to a multiple (default %(default)s = none)")
    p.add_argument("--out", default="results", help="folder for the results (default %(default)s/)")
    p.add_argument("--no-save", action="store_true", help="write no files")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("gpus", help="the dense peak table and the GPU detected here")
    p.add_argument("--lookup", default=None, metavar="NAME",
                   help="the table entry and peak per dtype a GPU named NAME would get (an NVML name, a MIG "
                        "slice, a table key such as h100-sxm)")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    p.set_defaults(func=cmd_gpus)

    p = sub.add_parser("sweep", help="run a grid of models x shapes x checkpointing x dtype from a TOML spec")
    p.add_argument("--spec", required=True, metavar="FILE.toml", help="the sweep spec (see benchmarks/*.toml)")
    p.add_argument("--out", default="results",
                   help="results go to OUT/<spec name>/rows.jsonl (default %(default)s/)")
    p.add_argument("--resume", action="store_true", help="skip the rows the results file already has")
    _add_output_args(p, wide=True, progress=True)
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("report", help="Markdown report + PNG plots: analytic vs counted vs measured")
    p.add_argument("results", metavar="RESULTS", help="a rows.jsonl / rows.csv file, a run or sweep folder, "
                                                      "or a folder of them")
    p.add_argument("--out", default=None, metavar="DIR", help="where to write (default: RESULTS/report)")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("estimate", help="training time for T tokens on G GPUs: C = 6NT / (G x peak x MFU)")
    _add_model_args(p, default_model="gpt2", batch_size=None, wide=False)
    p.add_argument("--tokens", type=_tokens, required=True, help="training tokens: 300e9, 300B, 1.4T, 2.5M, 1000000")
    p.add_argument("--gpus", type=_positive_int, default=1, help="number of GPUs (default %(default)s)")
    p.add_argument("--gpu", default="h100", help="peak-table GPU: h100, h100-pcie, a100, h200, l4, \"H100 SXM\", "
                                                 "an NVML name ... (default h100 = H100 SXM; see `flopbench gpus`)")
    p.add_argument("--dtype", default="bf16", choices=DTYPES, help="peak-table column (default %(default)s)")
    p.add_argument("--peak-tflops", type=_positive_float, default=None, help="peak TFLOP/s per GPU (overrides --gpu)")
    p.add_argument("--mfu", type=_positive_float, default=None,
                   help="model FLOPs utilization, the fraction of peak reached (default 0.40: Llama 3 405B's "
                        "38-43%% on H100s)")
    p.add_argument("--hfu", type=_positive_float, default=None,
                   help="with --recompute: hardware FLOPs utilization, 8NT counting the recomputed forward "
                        "(default 0.40, the MFU without recomputation)")
    p.add_argument("--mfu-from", default=None, metavar="RESULTS",
                   help="use the median MFU (HFU with --recompute) of the train_step rows in these results")
    p.add_argument("--recompute", action="store_true",
                   help="full activation recomputation: C = 8NT (Narayanan et al. 2021, Eq. 3), divided by an HFU")
    p.add_argument("--exact", action="store_true", help="C = exact analytic matmul FLOPs incl. attention, "
                                                        "at --seq-len (default: the model's positions)")
    p.add_argument("--causal", action="store_true",
                   help="C = exact model FLOPs with QK^T and AV over half the T x T square under the causal mask "
                        "(Megatron-LM's count), at --seq-len as --exact")
    p.set_defaults(func=cmd_estimate)
    return parser


#: torch with numpy, as `import_holding_ctrl_c` imports them.
TORCH_IMPORTS = ("numpy", "torch")
#: What each command imports before it starts, with Ctrl-C held back (`import_holding_ctrl_c`): torch and
#: numpy, and torch._dynamo where the command counts FLOPs (FlopCounterMode loads it on first use).
#: `estimate` and `count --no-torch` import neither; `gpus` only where a GPU could be there (`cmd_gpus`).
COMMAND_IMPORTS = {
    "count": (*TORCH_IMPORTS, "torch._dynamo"), "run": (*TORCH_IMPORTS, "torch._dynamo"),
    "infer": (*TORCH_IMPORTS, "torch._dynamo"), "sweep": (*TORCH_IMPORTS, "torch._dynamo"),
    "explain": (*TORCH_IMPORTS, "torch._dynamo"), "report": TORCH_IMPORTS, "gpus": (), "estimate": (),
}


def import_holding_ctrl_c(modules) -> None:
    """Import `modules` with SIGINT blocked, so that a Ctrl-C during them arrives when they are done, as a
    KeyboardInterrupt in plain Python code. Without this it can be lost: torch's C extension imports numpy
    while it initialises (and torch._dynamo when a FLOP counter first runs) and takes any failure of that
    import, the KeyboardInterrupt too, for "numpy is missing", so the command ran to its end. A module that
    is not installed is left to the command (numpy is optional for torch)."""
    block = hasattr(signal, "pthread_sigmask") and threading.current_thread() is threading.main_thread()
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT}) if block else None
    try:
        for name in modules:
            try:
                importlib.import_module(name)
            except ImportError:
                pass
    finally:
        if block:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _error(message: str) -> None:
    """The one error message on stderr, "flopbench: error: ...": on a terminal wrapped to its width
    (`output.text.terminal_width`), continuation lines indented; in a log or a pipe one line, for grep."""
    line = f"flopbench: error: {message}"
    isatty = getattr(sys.stderr, "isatty", None)
    if isatty and isatty():
        line = text.wrap(line, text.terminal_width(), "    ")
    print(line, file=sys.stderr)


def _interrupted(program: bool) -> int:
    """Say "interrupted" and give exit code 130. As the program (`program`), first ignore any further Ctrl-C,
    then end the process at once (`os._exit`) rather than through the interpreter's exit: a second Ctrl-C
    during that exit interrupts torch's exit handlers (a traceback) or kills the process by SIGINT (-2
    instead of 130). Nothing is lost: every measured row is fsynced as it is written, and every `finally`
    (the results files, torchrun's process group) has already run."""
    if program:
        try:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        except ValueError:  # not the main thread: leave signals alone
            pass
    print("flopbench: interrupted", file=sys.stderr)
    if program:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a closed pipe or stream: nothing more can be said there
                pass
        os._exit(130)
    return 130


#: The exit code after a closed pipe on the output: 128 + SIGPIPE, as the shell reports for a Unix tool.
CLOSED_PIPE = 128 + getattr(signal, "SIGPIPE", 13)


def _detach_stdout() -> None:
    """Point stdout at the null device, so that the interpreter's own flush at exit cannot fail again (it
    would print "Exception ignored ... BrokenPipeError" and exit 120)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no file descriptor (a test's captured stream)
        pass


def _command(argv: list[str] | None) -> int:
    parser = build_parser()
    words = sys.argv[1:] if argv is None else argv
    if not words:  # bare `flopbench`: the commands, not an error about a missing one
        _write(parser.format_help())
        return 0
    args = parser.parse_args(argv)
    import_holding_ctrl_c(() if getattr(args, "no_torch", False) else COMMAND_IMPORTS.get(args.command, ()))
    return args.func(args)


def main(argv: list[str] | None = None) -> int:
    """The `flopbench` program; `argv` None = this process's command line. Only then does Ctrl-C end the
    process itself (see `_interrupted`): a caller passing `argv` gets 130 back and keeps its own Ctrl-C.
    A closed pipe on stdout or stderr gives `CLOSED_PIPE` and nothing more; an output that cannot be
    written (a full disk) one line and exit code 2."""
    program = argv is None
    try:
        try:
            return _command(argv)
        finally:  # also after --help / --version, which argparse prints and leaves unflushed
            try:
                sys.stdout.flush()
            except BrokenPipeError:
                raise
            except OSError as e:
                raise OutputError(e) from None
    except UsageError as e:
        _error(str(e))
        return 2
    except KeyboardInterrupt:
        return _interrupted(program=program)
    except BrokenPipeError:
        if program:
            _detach_stdout()
        return CLOSED_PIPE
    except OutputError as e:
        if program:
            _detach_stdout()
        _error(f"cannot write the output to stdout ({e})")
        return 2


if __name__ == "__main__":
    sys.exit(main())
