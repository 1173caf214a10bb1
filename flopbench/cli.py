"""Command line: parse, call the Python API, print. No logic lives only here.

Every command that prints numbers has `--json` (one JSON document on stdout, nothing else there);
human output is a table on stdout; progress and warnings go to stderr. Bad input is one line on stderr
and exit code 2 (`UsageError`), never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys

from . import textreport
from .config import OVERRIDABLE, PRESETS, resolve_config
from .errors import UsageError
from .hf_config import MAPPERS as HF_MODEL_TYPES


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line naming the problem (exit 2), not usage + message."""

    def error(self, message: str):  # noqa: D401 - argparse API
        raise UsageError(message)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive integer")
    return value


def _add_model_args(p: argparse.ArgumentParser, default_model: str) -> None:
    p.add_argument("--model", default=default_model,
                   help=f"preset ({', '.join(PRESETS)}; default {default_model}) or the path of a Hugging Face "
                        f"config.json (model_type {', '.join(HF_MODEL_TYPES)}), read offline")
    for field in OVERRIDABLE:
        p.add_argument(f"--{field.replace('_', '-')}", type=_positive_int, default=None,
                       help=f"override the model's {field}")
    p.add_argument("--batch-size", type=_positive_int, default=1, help="sequences per step (default 1)")
    p.add_argument("--seq-len", type=_positive_int, default=None,
                   help="tokens per sequence (default: the model's max positions)")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")


def _config_from(args: argparse.Namespace):
    return resolve_config(args.model, **{f: getattr(args, f) for f in OVERRIDABLE})


def _emit(args: argparse.Namespace, doc: dict, render) -> None:
    if args.json:
        json.dump(doc, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(render(doc))


def cmd_count(args: argparse.Namespace) -> int:
    from .counting import count

    doc = count(_config_from(args), args.batch_size, args.seq_len, fvcore=not args.no_fvcore)
    _emit(args, doc, textreport.render_count)
    return 0


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number")
    return value


def _non_negative_int(text: str) -> int:
    return 0 if text.strip() == "0" else _positive_int(text)


def cmd_run(args: argparse.Namespace) -> int:
    from .bench import RunOptions, run

    options = RunOptions(
        batch_size=args.batch_size, seq_len=args.seq_len, device=args.device, dtype=args.dtype,
        checkpointing=args.checkpointing, warmup=args.warmup, iters=args.iters, peak_tflops=args.peak_tflops,
        compile=args.compile, pad_vocab_multiple=args.pad_vocab, gemm=not args.no_gemm,
        out=None if args.no_save else args.out,
    )
    doc = run(_config_from(args), options)
    _emit(args, doc, textreport.render_run)
    return 0


def cmd_gpus(args: argparse.Namespace) -> int:
    from .hardware import detect_gpu, format_peak_table, load_peak_table, match_gpu

    gpu = detect_gpu()
    entry = match_gpu(gpu.name) if gpu else None
    doc = {
        "detected": gpu.as_dict() if gpu else None,
        "table_entry": entry.key if entry else None,
        "table": [{"key": e.key, "name": e.display_name, **{f"{d}_tflops": v for d, v in e.tflops.items()},
                   "source": e.source} for e in load_peak_table()],
    }

    def render(_doc):
        found = (f"detected: {gpu.name} (via {gpu.source}) -> {entry.display_name if entry else 'not in table'}"
                 if gpu else "detected: no CUDA GPU (NVML and torch.cuda found none)")
        return f"{format_peak_table()}\n\n{found}\n"

    _emit(args, doc, render)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="flopbench", description="How many FLOPs does this transformer execute, and how "
                                                   "much of the GPU's peak does it get?")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("count", help="analytic vs counted FLOPs of one step (no GPU needed)")
    _add_model_args(p, default_model="gpt2")
    p.add_argument("--no-fvcore", action="store_true", help="skip the fvcore count")
    p.set_defaults(func=cmd_count)

    from .bench import CHECKPOINTING_CHOICES, DEVICES, DTYPES

    p = sub.add_parser("run", help="time real steps and report MFU / HFU (default: a small model that runs on a CPU)")
    _add_model_args(p, default_model="tiny")
    p.set_defaults(batch_size=8)
    p.add_argument("--device", default="auto", choices=DEVICES, help="auto = cuda if available, else cpu")
    p.add_argument("--dtype", default="auto", choices=("auto", *DTYPES), help="auto = bf16 on CUDA, fp32 on CPU")
    p.add_argument("--checkpointing", default="both", choices=CHECKPOINTING_CHOICES,
                   help="activation checkpointing of every block; both = time each (default)")
    p.add_argument("--warmup", type=_non_negative_int, default=3, help="untimed steps first (default 3)")
    p.add_argument("--iters", type=_positive_int, default=10, help="timed steps (default 10)")
    p.add_argument("--peak-tflops", type=_positive_float, default=None,
                   help="peak TFLOP/s to divide by (default: the table entry of the detected GPU)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--pad-vocab", type=_positive_int, default=1, metavar="MULTIPLE",
                   help="pad the vocabulary to a multiple (e.g. 64: 50257 -> 50304); FLOPs count the padding")
    p.add_argument("--no-gemm", action="store_true", help="skip the GEMM-ceiling microbenchmark")
    p.add_argument("--out", default="results", help="folder for the results (default results/)")
    p.add_argument("--no-save", action="store_true", help="write no files")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("gpus", help="the dense peak table and the GPU detected here")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    p.set_defaults(func=cmd_gpus)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except UsageError as e:
        print(f"flopbench: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("flopbench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
