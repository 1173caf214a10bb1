"""How long the whole `flopbench count` CLI call takes, and its peak memory, for a 70B-class config.

Budget: <= 4 s wall and <= 1 GiB peak RSS on a 2-core machine, analytic + torch + fvcore.
Each repeat is a fresh process (import time included, as a user sees it); wall time and the child's
max RSS come from os.wait4. Output: a JSON document on stdout (commit it under results/).

    python benchmarks/count_speed.py --repeats 7 > results/cpu/count_speed_70b.json
    python benchmarks/count_speed.py --model llama3-70b --args "--seq-len 8192" \
        > results/cpu/count_speed_llama3_70b.json

Without `--model` it times the GPT-shaped 70B config (`CONFIG_70B`, on the gpt2 preset);
with `--model` it times `count --model MODEL` plus `--args` (a quoted string of further CLI arguments).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time

import torch

CONFIG_70B = ["--n-layer", "80", "--d-model", "8192", "--n-head", "64", "--d-ff", "28672",
              "--max-seq-len", "4096", "--seq-len", "4096", "--batch-size", "1"]


def one_run(argv: list[str]) -> tuple[float, int]:
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"count failed: {proc.stderr.read().decode()}")
    return wall, usage.ru_maxrss * 1024  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--model", default=None, help="preset or config.json to count (default: the GPT-shaped 70B)")
    parser.add_argument("--args", default="", help='further `count` arguments, quoted: "--seq-len 8192"')
    args = parser.parse_args()
    config = ["--model", args.model, *shlex.split(args.args)] if args.model else [*CONFIG_70B, *shlex.split(args.args)]
    argv = [sys.executable, "-m", "flopbench", "count", *config, "--json"]
    load_before = round(os.getloadavg()[0], 2)  # other work on the machine slows every repeat
    runs = [one_run(argv) for _ in range(args.repeats)]
    walls = sorted(w for w, _ in runs)
    rss = [r for _, r in runs]
    print(json.dumps({
        "command": " ".join(["flopbench", *argv[3:]]),
        "repeats": args.repeats,
        "wall_s": {"median": statistics.median(walls), "min": walls[0], "max": walls[-1], "all": walls},
        "peak_rss_mib": {"median": statistics.median(rss) / 2**20, "max": max(rss) / 2**20},
        "budget": {"wall_s": 4.0, "peak_rss_mib": 1024},
        "within_budget": statistics.median(walls) <= 4.0 and max(rss) <= 2**30,
        "load_average_1m_before": load_before,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "torch": torch.__version__},
    }, indent=2))


if __name__ == "__main__":
    main()
