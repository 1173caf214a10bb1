"""Compile time of a gpt2 training step on the CPU: regional compilation (each block and the loss compiled on
their own, as `flopbench run --compile` does: `flopbench.timing.step`) against the whole model compiled at
once (what `run --compile` did before).

Each sample is a fresh Python process that builds the model and times its first fwd_bwd step (wall clock,
`Stepper.first_step`: dynamo, AOTAutograd, inductor, and one step) and then one steady step. Inductor's
FX-graph and AOTAutograd caches are off in every process, so each one traces, lowers and generates code
again; the compiled C++ kernels are shared through one cache folder, filled first by one untimed process per
variant ("cold", reported apart), because a kernel's gcc time is the same in both variants (identical kernels
are compiled once either way) and would only add the same noise to both. Medians and spread over `--runs`
processes per variant, alternated. The two "cold" figures are not comparable with each other: the regional
process runs first, into an empty kernel cache; the whole-model one then finds most of its kernels compiled.

Committed run (results/cpu/compile_time.json): gpt2 cut to 4 layers, B=1, T=16, 3 runs, on 2 CPU cores
shared with other jobs (load average about 9): 929 s wall. Each process spends about 30 s importing torch
there; `--runs 1 --n-layer 2` is the quick check.

    python benchmarks/compile_time.py --n-layer 4 --runs 3 --out results/cpu/compile_time.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

VARIANTS = ("regional", "whole")


def child(variant: str, n_layer: int, batch_size: int, seq_len: int) -> dict:
    """One sample, in this process: the first (compiling) and a steady fwd_bwd step of gpt2 on the CPU."""
    import torch
    from torch._dynamo.utils import counters

    from flopbench.model.gpt import build_model
    from flopbench.model.presets import resolve_config
    from flopbench.timing.step import Stepper

    torch.manual_seed(0)
    cfg = resolve_config("gpt2").replace(n_layer=n_layer)
    model = build_model(cfg, "cpu")
    device = torch.device("cpu")
    if variant == "regional":
        stepper = Stepper(model, cfg, batch_size, seq_len, device, "fp32", compile_model=True)
    else:  # the whole model in one torch.compile, the loss eager
        stepper = Stepper(model, cfg, batch_size, seq_len, device, "fp32", compile_model=False)
        torch._dynamo.reset()
        stepper.model, stepper.compiled = torch.compile(model, dynamic=False), True
    counters.clear()
    first_s = stepper.first_step("fwd_bwd")
    start = time.perf_counter()
    stepper.step("fwd_bwd")
    return {"first_step_s": first_s, "steady_step_s": time.perf_counter() - start,
            "graphs": counters["stats"]["unique_graphs"], "ops_captured": counters["stats"]["calls_captured"]}


def sample(variant: str, args: argparse.Namespace, cache: str) -> dict:
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache, "TORCHINDUCTOR_FX_GRAPH_CACHE": "0",
           "TORCHINDUCTOR_AUTOGRAD_CACHE": "0"}
    cmd = [sys.executable, __file__, "--child", variant, "--n-layer", str(args.n_layer),
           "--batch-size", str(args.batch_size), "--seq-len", str(args.seq_len)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "samples": [round(v, 3) for v in values]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--seq-len", type=int, default=16)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--out", default=None, help="write the JSON document here too")
    p.add_argument("--child", choices=VARIANTS, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.n_layer, args.batch_size, args.seq_len)))
        return

    import torch

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="compile_time_") as cache:
        cold = {v: sample(v, args, cache) for v in VARIANTS}  # fills the kernel cache
        runs = {v: [] for v in VARIANTS}
        for _ in range(args.runs):
            for v in VARIANTS:
                runs[v].append(sample(v, args, cache))
    doc = {
        "benchmark": "first fwd_bwd step (compile included) of gpt2, fp32, on the CPU: regional vs whole-model "
                     "compile",
        "model": "gpt2", "n_layer": args.n_layer, "batch_size": args.batch_size, "seq_len": args.seq_len,
        "torch": torch.__version__, "cpu_count": os.cpu_count(), "runs": args.runs,
        "method": "fresh process per sample; inductor FX-graph and AOTAutograd caches off; C++ kernels shared "
                  "through one cache filled by a cold process per variant first",
        "variants": {v: {"first_step_s": spread([r["first_step_s"] for r in runs[v]]),
                         "steady_step_s": spread([r["steady_step_s"] for r in runs[v]]),
                         "graphs": runs[v][0]["graphs"], "ops_captured": runs[v][0]["ops_captured"],
                         "cold_first_step_s": round(cold[v]["first_step_s"], 3)} for v in VARIANTS},
        "wall_s": round(time.perf_counter() - started, 1),
    }
    regional, whole = (doc["variants"][v]["first_step_s"]["median"] for v in VARIANTS)
    doc["whole_over_regional"] = round(whole / regional, 2)
    text = json.dumps(doc, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
