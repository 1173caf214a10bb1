"""How long the whole `flopbench count` CLI call takes, and its peak memory, for a 70B-class config.

Budget: <= 4 s wall and <= 1 GiB peak RSS on a 2-core machine, analytic + torch + fvcore.
Each repeat is a fresh process (import time included, as a user sees it); wall time and the child's
max RSS come from os.wait4. Output: a JSON document on stdout (commit it under results/).

    python benchmarks/count_speed.py --repeats 7 > results/cpu/count_speed_70b.json
    python benchmarks/count_speed.py --model llama3-70b --args "--seq-len 8192" \
        > results/cpu/count_speed_llama3_70b.json

    python benchmarks/count_speed.py --repeats 3 --hf-configs benchmarks/hf_configs \
        > results/cpu/count_speed_hf_configs.json

Without `--model` it times the GPT-shaped 70B config (`CONFIG_70B`, on the gpt2 preset);
with `--model` it times `count --model MODEL` plus `--args` (a quoted string of further CLI arguments);
with `--hf-configs DIR` it times `count --model DIR/<name>.json` for every config.json there (one per
Hugging Face model type flopbench reads, at full size and the model's own sequence length), each with
the parameters it reports and whether every reconciliation check came out equal or explained.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import shlex
import statistics
import subprocess
import sys
import time

import torch

CONFIG_70B = ["--n-layer", "80", "--d-model", "8192", "--n-head", "64", "--d-ff", "28672",
              "--max-seq-len", "4096", "--seq-len", "4096", "--batch-size", "1"]


def one_run(argv: list[str]) -> tuple[float, int, dict]:
    """Wall time, peak RSS and the JSON document of one `count` process."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = proc.stdout.read()  # the child's stderr holds a line or two at most: it cannot fill its pipe
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)  # reaps the child: its own peak RSS, not the largest so far
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"count failed: {err.decode()}")
    return wall, usage.ru_maxrss * 1024, json.loads(out)  # Linux reports KiB


def time_command(argv: list[str], repeats: int) -> dict:
    """Median, min and max wall time and peak RSS of `repeats` fresh `count` processes."""
    runs = [one_run(argv) for _ in range(repeats)]
    walls = sorted(w for w, _, _ in runs)
    rss = [r for _, r, _ in runs]
    doc = runs[0][2]
    return {
        "command": " ".join(["flopbench", *argv[3:]]),
        "repeats": repeats,
        "wall_s": {"median": statistics.median(walls), "min": walls[0], "max": walls[-1], "all": walls},
        "peak_rss_mib": {"median": statistics.median(rss) / 2**20, "max": max(rss) / 2**20},
        "within_budget": statistics.median(walls) <= 4.0 and max(rss) <= 2**30,
        "seq_len": doc["seq_len"],
        "params": {k: doc["params"][k] for k in ("total", "active", "non_embedding") if k in doc["params"]},
        "reconciliation": sorted({c["status"] for c in doc["reconciliation"]}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--model", default=None, help="preset or config.json to count (default: the GPT-shaped 70B)")
    parser.add_argument("--args", default="", help='further `count` arguments, quoted: "--seq-len 8192"')
    parser.add_argument("--hf-configs", default=None, help="a folder of config.json files: time each")
    args = parser.parse_args()
    base = [sys.executable, "-m", "flopbench", "count"]
    load_before = round(os.getloadavg()[0], 2)  # other work on the machine slows every repeat
    if args.hf_configs:
        paths = sorted(pathlib.Path(args.hf_configs).glob("*.json"))
        result = {"models": {}}
        for path in paths:
            print(f"{path.stem} ...", file=sys.stderr, flush=True)
            result["models"][path.stem] = time_command([*base, "--model", str(path), "--json"], args.repeats)
        result["all_within_budget"] = all(m["within_budget"] for m in result["models"].values())
    else:
        config = ["--model", args.model, *shlex.split(args.args)] if args.model else [*CONFIG_70B,
                                                                                     *shlex.split(args.args)]
        result = time_command([*base, *config, "--json"], args.repeats)
    print(json.dumps({
        **result,
        "budget": {"wall_s": 4.0, "peak_rss_mib": 1024},
        "load_average_1m_before": load_before,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "torch": torch.__version__},
    }, indent=2))


if __name__ == "__main__":
    main()
