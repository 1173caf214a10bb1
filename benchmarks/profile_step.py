"""Where the time of a training step goes: torch.profiler's operator / kernel table for one config.

When an MFU target is missed (e.g. gpt2-xl past 50 % MFU on an H100), this gives the profile-based
account — top kernels by device time (CUDA) or operators by CPU time — for the same step `flopbench run`
times (same model, autocast, fused AdamW, checkpointing mode; `flopbench.timing.step.Stepper`).

    python benchmarks/profile_step.py --model gpt2-xl --device cuda --batch-size 8 --seq-len 1024 \
        --pad-vocab 64 --compile --out results/<gpu>/profile_gpt2-xl.txt
"""

from __future__ import annotations

import argparse
import sys

import torch
from torch.profiler import ProfilerActivity, profile

from flopbench.timing.step import Stepper
from flopbench.model.config import pad_vocab
from flopbench.model.gpt import build_model
from flopbench.model.presets import resolve_config
from flopbench.timing.device import resolve_device, resolve_dtype


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--checkpointing", default="none", choices=("none", "full"))
    p.add_argument("--mode", default="train_step", choices=("forward", "fwd_bwd", "train_step"))
    p.add_argument("--compile", action="store_true")
    p.add_argument("--pad-vocab", type=int, default=1)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--out", default=None, help="also write the table to this file")
    args = p.parse_args()

    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    cfg = pad_vocab(resolve_config(args.model), args.pad_vocab)
    T = args.seq_len or cfg.max_seq_len
    model = build_model(cfg, device, checkpointing=args.checkpointing)
    stepper = Stepper(model, cfg, args.batch_size, T, device, dtype, args.compile)
    for _ in range(args.warmup):
        stepper.step(args.mode)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(args.steps):
            stepper.step(args.mode)
        if device.type == "cuda":
            torch.cuda.synchronize()
    sort_by = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
    header = (f"# {cfg.name} B={args.batch_size} T={T} {dtype} {args.mode} checkpointing={args.checkpointing} "
              f"compile={args.compile} on {device} ({torch.cuda.get_device_name() if device.type == 'cuda' else 'CPU'}),"
              f" {args.steps} profiled steps, torch {torch.__version__}; sorted by {sort_by}\n")
    table = header + prof.key_averages().table(sort_by=sort_by, row_limit=args.top)
    print(table)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    sys.exit(main())
