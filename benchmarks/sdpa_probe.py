"""Which attention kernel the model's attention core runs: causal and band (sliding-window) masks x
multi-head and grouped-query heads, at one sequence length, with its time and peak memory.

torch picks the SDPA backend at run time (flash, memory-efficient, cuDNN, or the math fallback that forms
the B x heads x T x T scores in fp32), and the choice differs between torch versions and masks: any mask
rules out the flash kernel, and older torch has no memory-efficient kernel for grouped-query attention.
This probe calls `flopbench.model.gpt.attention_core` — the function the model calls — forward and
backward, and reads the backend off the profiler: the aten operator that ran
(``aten::_scaled_dot_product_{flash,efficient,cudnn}_attention``, or none of them: the math kernel) and
the device kernels with the most time.

    python benchmarks/sdpa_probe.py --device cuda --seq-len 8192 > sdpa_probe.json

One JSON document on stdout, a short table on stderr.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

from flopbench.model.gpt import attention_core, attention_mask

#: aten operator (substring) -> backend name, the first match wins.
BACKENDS = (("_scaled_dot_product_flash_attention", "flash"), ("_scaled_dot_product_efficient_attention", "efficient"),
            ("_scaled_dot_product_cudnn_attention", "cudnn"), ("_flash_attention", "flash"),
            ("_efficient_attention", "efficient"), ("flex_attention", "flex"))


def backend_of(op_names: list[str]) -> str:
    """The SDPA backend from the aten operators a call ran: "math" when none of the fused ones ran."""
    for needle, name in BACKENDS:
        if any(needle in op for op in op_names):
            return name
    return "math"


def _timed_ms(fn, device: torch.device, iters: int) -> float:
    """Median milliseconds of `fn` over `iters` calls after one warm-up (CUDA events on a GPU)."""
    fn()
    times = []
    for _ in range(iters):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def probe(mask_kind: str, n_head: int, n_kv_head: int, T: int, head_dim: int, window: int, device: torch.device,
          dtype: torch.dtype, iters: int) -> dict:
    """One case: forward and forward + backward of the attention core, its backend, kernels, time, memory."""
    gen = torch.Generator(device="cpu").manual_seed(0)
    q = torch.randn(1, n_head, T, head_dim, generator=gen).to(device, dtype).requires_grad_()
    k, v = (torch.randn(1, n_kv_head, T, head_dim, generator=gen).to(device, dtype).requires_grad_()
            for _ in range(2))
    mask = attention_mask(T, T, window if mask_kind == "band" else None, device)
    groups = n_head // n_kv_head

    def forward():
        with torch.no_grad():
            return attention_core(q, k, v, mask, True, None, groups)

    def forward_backward():
        attention_core(q, k, v, mask, True, None, groups).sum().backward()
        q.grad = k.grad = v.grad = None

    case = {"mask": mask_kind, "window": window if mask_kind == "band" else None, "n_head": n_head,
            "n_kv_head": n_kv_head, "seq_len": T, "head_dim": head_dim, "dtype": str(dtype).replace("torch.", "")}
    try:
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        forward_backward()  # warm-up outside the profile
        with profile(activities=activities) as prof:
            forward_backward()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
        events = prof.key_averages()
        ops = sorted({e.key for e in events if e.key.startswith("aten::")})
        kernels = sorted(((getattr(e, "device_time_total", 0) or getattr(e, "cuda_time_total", 0), e.key)
                          for e in events if not e.key.startswith("aten::")
                          and (getattr(e, "device_time_total", 0) or getattr(e, "cuda_time_total", 0)) > 0),
                         reverse=True)[:5]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
        fwd_ms = _timed_ms(forward, device, iters)
        fwd_bwd_ms = _timed_ms(forward_backward, device, iters)
        peak = torch.cuda.max_memory_allocated(device) - base if device.type == "cuda" else None
        case.update(status="ok", backend=backend_of(ops),
                    attention_ops=[op for op in ops if "attention" in op or op in ("aten::bmm", "aten::_softmax")],
                    kernels=[name for _, name in kernels], fwd_ms=fwd_ms, fwd_bwd_ms=fwd_bwd_ms,
                    peak_bytes_above_inputs=peak)
    except (torch.OutOfMemoryError, RuntimeError) as e:
        case.update(status="oom" if "out of memory" in str(e).lower() else "error", error=str(e).splitlines()[0][:200])
    return case


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default=None, help="bf16 (default on CUDA) or fp32 (default on the CPU)")
    p.add_argument("--seq-len", type=int, default=8192)
    p.add_argument("--window", type=int, default=4096, help="the band mask's window (Mistral's 4096)")
    p.add_argument("--n-head", type=int, default=32)
    p.add_argument("--n-kv-head", type=int, default=8, help="key/value heads of the grouped-query cases")
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--iters", type=int, default=5)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[
        args.dtype or ("bf16" if device.type == "cuda" else "fp32")]
    cases = [probe(m, args.n_head, kv, args.seq_len, args.head_dim, args.window, device, dtype, args.iters)
             for m in ("causal", "band") for kv in (args.n_head, args.n_kv_head)]
    doc = {"torch": torch.__version__, "device": str(device),
           "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None, "cases": cases}
    print(json.dumps(doc, indent=1))
    for c in cases:
        heads = f"{c['n_head']}/{c['n_kv_head']}"
        if c["status"] != "ok":
            print(f"{c['mask']:<6} heads {heads:<6} {c['status']}: {c.get('error', '')}"[:100], file=sys.stderr)
            continue
        print(f"{c['mask']:<6} heads {heads:<6} {c['backend']:<9} fwd {c['fwd_ms']:8.2f} ms  fwd+bwd "
              f"{c['fwd_bwd_ms']:8.2f} ms  {(c['kernels'] or ['-'])[0][:30]}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
