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
    p.add_argument("--model", default=default_model, help=f"preset: {', '.join(PRESETS)} (default {default_model})")
    for field in OVERRIDABLE:
        p.add_argument(f"--{field.replace('_', '-')}", type=_positive_int, default=None,
                       help=f"override the preset's {field}")
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


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="flopbench", description="How many FLOPs does this transformer execute, and how "
                                                   "much of the GPU's peak does it get?")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("count", help="analytic vs counted FLOPs of one step (no GPU needed)")
    _add_model_args(p, default_model="gpt2")
    p.add_argument("--no-fvcore", action="store_true", help="skip the fvcore count")
    p.set_defaults(func=cmd_count)
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
