#!/usr/bin/env python3
"""Mutation audit: put one realistic bug into a copy of flopbench at a time and check that the tests catch it.

Each mutant is a small source edit (a file, an exact snippet that must occur there once, its replacement), the
test files that must fail with it, and one line saying what bug it is. For each mutant the repository (its
tracked files and its untracked, not ignored ones) is copied into a temporary folder, the edit is applied there
and `python -m pytest -x -q -p no:cacheprovider <tests>` runs in the copy, with PYTHONPATH set so that the
copy's flopbench is the one imported (checked before anything runs). A mutant is *caught* when pytest fails,
*survived* when it passes. Before the mutants, the same tests run on the unmutated copy and must pass.

    python3 scripts/mutants.py              # every mutant; exit 1 if one survived or its snippet is gone
    python3 scripts/mutants.py --list       # names, files and what each one breaks
    python3 scripts/mutants.py --only NAME  # one mutant (repeatable)
    python3 scripts/mutants.py -j 2         # two copies, two mutants at a time
    python3 scripts/mutants.py --out results/cpu/mutants.txt

A snippet that is no longer in its file (the code moved) or occurs more than once is reported as "stale" and
also exits 1, so the list is kept current as the code changes.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import os
import platform
import queue
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

RECONCILE = ("tests/flops/test_reconcile.py",)
CLOCK = ("tests/timing/test_clock.py",)
MEASURE = ("tests/api/test_measure.py",)
RUN_PEAK = ("tests/api/test_run_peak.py",)
FILES = ("tests/api/test_api.py",)
HF = ("tests/model/test_hf_config.py",)
COUNTED = ("tests/flops/test_analytic_vs_counted.py",)
LLAMA = ("tests/flops/test_llama_counts.py",)
PEAKS = ("tests/hardware/test_peaks.py",)
GEMM = ("tests/timing/test_gemm.py",)
HAND = ("tests/flops/test_hand_worked.py",)
INFER_RATES = ("tests/api/test_infer_rates.py",)
MEMORY = ("tests/timing/test_memory.py",)
MOE_HF = ("tests/model/test_moe_vs_transformers.py",)
HF_HARD = ("tests/model/test_hf_hardening.py",)
BREAKDOWN = ("tests/timing/test_breakdown.py",)
FP8 = ("tests/model/test_fp8.py",)
RUN_FP8 = ("tests/api/test_run_fp8.py",)
ESTIMATE = ("tests/api/test_estimate.py",)
PROFILE_FP8 = ("tests/api/test_profile_fp8.py",)
TRAINER = ("tests/integrations/test_integrations.py",)
PINNED = ("tests/hardware/test_peak_table_pinned.py",)


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str  # relative to the repository root
    old: str  # must occur exactly once in `file`
    new: str
    tests: tuple[str, ...]
    what: str  # the bug, in one line


MUTANTS = (
    # --- reconciliation -----------------------------------------------------------------------------
    Mutant("reconcile-always-explained", "flopbench/flops/reconcile.py",
           'return "explained" if diff == self.explained else "unexplained"', 'return "explained"',
           RECONCILE, "every check is 'explained' whatever the two counts are"),
    Mutant("estimate-gap-from-the-difference", "flopbench/flops/reconcile.py",
           "exact[e.compare_to], e.gap(terms), e.reason(terms)",
           "exact[e.compare_to], e.formula(cfg, B, T) - exact[e.compare_to], e.reason(terms)",
           RECONCILE, "an estimate's explained gap is taken from the actual difference, so it always 'agrees'"),
    Mutant("hardware-gap-explained-in-forward", "flopbench/flops/reconcile.py",
           'mode != "forward" and gap == rescore', "gap == rescore",
           RECONCILE, "the backward's QK^T rescore explains a gap in a forward pass, which has no backward"),
    Mutant("hardware-gap-with-tolerance", "flopbench/flops/reconcile.py",
           "gap == rescore else 0", "abs(gap - rescore) <= rescore // 100 else 0",
           RECONCILE, "a gap within 1 % of the rescore counts as explained (rescore + 2 FLOPs passes)"),
    Mutant("threshold-gap-sign", "flopbench/timing/thresholds.py",
           'gap = abs(row["hardware_flops"] - analytic - explained) / analytic',
           'gap = (analytic - row["hardware_flops"] + explained) / analytic',
           RECONCILE, "--max-counted-vs-analytic drops abs(): counting too many FLOPs always passes"),
    Mutant("run-counts-forward-only", "flopbench/flops/counter.py",
           'return (self.forward, self.fp8_forward) if mode == "forward" else (self.train, self.fp8_train)',
           "return (self.forward, self.fp8_forward)",
           RECONCILE, "run's counted hardware FLOPs of a training step leave out the backward"),
    # --- timing -------------------------------------------------------------------------------------
    Mutant("clock-start-after-step", "flopbench/timing/clock.py",
           "start = clock.mark()\n        step(warmup + i)", "step(warmup + i)\n        start = clock.mark()",
           CLOCK, "the start mark is taken after the step: every step times at ~0"),
    Mutant("clock-warmup-off-by-one", "flopbench/timing/clock.py",
           "for i in range(warmup):", "for i in range(warmup - 1):",
           CLOCK, "one warm-up step too few"),
    Mutant("iqr-q3-minus-min", "flopbench/timing/clock.py",
           "return q3 - q1", "return q3 - min(self.times_ms)",
           CLOCK, "the interquartile range is q3 - min"),
    Mutant("median-is-mean", "flopbench/timing/clock.py",
           "return statistics.median(self.times_ms)", "return statistics.mean(self.times_ms)",
           CLOCK, "the 'median' step time is the mean, which one outlier drags"),
    Mutant("quartiles-exclusive", "flopbench/timing/clock.py",
           'method="inclusive"', 'method="exclusive"',
           CLOCK, "quartiles by the exclusive method (statistics' default), not the documented inclusive one"),
    Mutant("measure-ignores-warmup", "flopbench/api/measure.py",
           'if not r["counted"] and r["step"] >= self.warmup]', 'if not r["counted"]]',
           MEASURE, "measure's summary keeps the warm-up steps"),
    Mutant("measure-times-counted-steps", "flopbench/api/measure.py",
           'if not r["counted"] and r["step"] >= self.warmup]', 'if r["step"] >= self.warmup]',
           MEASURE, "measure's summary keeps steps slowed by the FLOP counter"),
    # --- the peak and the division ------------------------------------------------------------------
    Mutant("run-peak-always-bf16", "flopbench/api/run.py",
           "peak(gpu, compute, options.peak_tflops)", 'peak(gpu, "bf16", options.peak_tflops)',
           RUN_PEAK, "run divides by the bf16 peak whatever the dtype (fp32 MFU 15x too small on an H100)"),
    Mutant("mfu-not-divided-by-peak", "flopbench/timing/rates.py",
           "return tflops_per_s(flops, seconds) / peak_tflops", "return tflops_per_s(flops, seconds)",
           RUN_PEAK, "MFU is the achieved TFLOP/s: the division by the peak is dropped (invisible with peak 1)"),
    Mutant("mfu-at-the-fastest-step", "flopbench/api/run.py",
           'seconds = row.time_ms["median_ms"] / 1e3', 'seconds = row.time_ms["min_ms"] / 1e3',
           RUN_PEAK, "run's MFU uses the fastest step, not the median"),
    Mutant("mfu-from-hardware-flops", "flopbench/api/run.py",
           "r = rates(row.model_flops, row.hardware_flops, seconds, peak)",
           "r = rates(row.hardware_flops, row.hardware_flops, seconds, peak)",
           RUN_PEAK, "run's MFU divides hardware FLOPs (recompute, rescore included) instead of model FLOPs"),
    Mutant("peak-h100-bf16-sparse", "flopbench/hardware/peaks.csv",
           "H100$,66.9,494.7,989.4,989.4,", "H100$,66.9,494.7,1978.9,1978.9,",
           PEAKS, "the H100 SXM bf16 peak is the 2:4-sparse datasheet figure"),
    Mutant("peak-h100-fp32-is-tf32", "flopbench/hardware/peaks.csv",
           "H100$,66.9,494.7,989.4,989.4,", "H100$,494.7,494.7,989.4,989.4,",
           RUN_PEAK, "the H100 SXM fp32 column holds the TF32 tensor-core figure"),
    Mutant("gemm-multiply-adds", "flopbench/timing/gemm.py",
           "flops = 2 * math.prod(shape)", "flops = math.prod(shape)",
           GEMM, "the GEMM ceiling counts multiply-adds, not FLOPs (half the TFLOP/s)"),
    # --- results files ------------------------------------------------------------------------------
    Mutant("writer-no-fsync", "flopbench/output/records.py",
           "_write_all(fd, data)\n            os.fsync(fd)\n        except BaseException:",
           "_write_all(fd, data)\n        except BaseException:",
           FILES, "rows.jsonl is appended without fsync: a crash can lose rows already measured"),
    Mutant("writer-in-place", "flopbench/output/records.py",
           'tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)',
           "(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), str(path))",
           FILES, "rows.csv is rewritten in place, not written to a temp file and renamed"),
    # --- configs ------------------------------------------------------------------------------------
    Mutant("hf-llama-ignores-tie", "flopbench/model/hf.py",
           'read("tie_word_embeddings", bool, tie, "tie_embeddings")',
           'read("tie_embeddings", bool, tie, "tie_embeddings")',
           HF, "the Llama reader never sees tie_word_embeddings: a tied Llama 3.2 1B counts an extra LM head"),
    Mutant("tied-head-counted-twice", "flopbench/flops/analytic.py",
           '"lm_head": 0 if cfg.tie_embeddings else cfg.d_model * cfg.vocab_size,',
           '"lm_head": cfg.d_model * cfg.vocab_size,',
           HF, "a tied LM head is counted as parameters of its own"),
    Mutant("gqa-validation", "flopbench/model/config.py",
           "if cfg.n_kv_head is not None and cfg.n_head % cfg.n_kv_head:",
           "if cfg.n_kv_head is not None and cfg.n_kv_head > cfg.n_head:",
           LLAMA, "n_kv_head that does not divide n_head (5 of 12) is accepted"),
    # --- the counting core --------------------------------------------------------------------------
    Mutant("moe-every-expert-active", "flopbench/flops/analytic.py",
           "row(m.name, 2 * BT * m.d_in * m.d_out * m.used,", "row(m.name, 2 * BT * m.d_in * m.d_out * m.copies,",
           LLAMA, "a mixture of experts counted as if every token ran every expert (Mixtral 4x too many)"),
    Mutant("sliding-window-ignored", "flopbench/flops/analytic.py",
           'return seq_len if layer_type == "full" or cfg.sliding_window is None else min(seq_len, cfg.sliding_window)',
           "return seq_len", ("tests/model/test_config_and_model.py",),
           "sliding layers counted over all T keys: the window and the masked square vanish"),
    Mutant("attention-scores-per-kv-head", "flopbench/flops/analytic.py",
           'row(f"attn_scores{suffix}", 2 * BT * keys * q,', 'row(f"attn_scores{suffix}", 2 * BT * keys * cfg.kv_dim,',
           LLAMA, "QK^T counted over the K/V heads only: GQA attention undercounted"),
    Mutant("attention-values-halved", "flopbench/flops/analytic.py",
           'row(f"attn_values{suffix}", 2 * BT * keys * q,', 'row(f"attn_values{suffix}", BT * keys * q,',
           RECONCILE, "AV counted over the causal triangle while the convention is the full square"),
    Mutant("lm-head-dropped-when-tied", "flopbench/flops/analytic.py",
           'row("lm_head", 2 * BT * d * V,', 'row("lm_head", 0 if cfg.tie_embeddings else 2 * BT * d * V,',
           RECONCILE, "a tied LM head does no matmul in the analytic count"),
    Mutant("backward-factor-1", "flopbench/flops/analytic.py",
           "return 2 * forward_flops(cfg, batch_size, seq_len)", "return forward_flops(cfg, batch_size, seq_len)",
           RECONCILE, "backward = 1 x forward (the weight gradient forgotten)"),
    Mutant("recompute-no-early-stop", "flopbench/flops/analytic.py",
           'return not (matrix.name == "mlp_down" and cfg.norm_position == "pre")', "return True",
           RECONCILE, "checkpoint recompute assumed to re-run the MLP down-projection (torch's early stop ignored)"),
    Mutant("recompute-includes-lm-head", "flopbench/flops/analytic.py",
           "if c.matmul and c.per_layer and (c.recomputed_early_stop or not early_stop)",
           "if c.matmul and (c.recomputed_early_stop or not early_stop)",
           RECONCILE, "full recompute re-runs the LM head, which lies outside the checkpointed blocks"),
    Mutant("fvcore-not-doubled", "flopbench/flops/fvcore.py",
           "forward=round(2 * matmul),", "forward=round(matmul),",
           COUNTED, "fvcore's multiply-adds reported as FLOPs"),
    Mutant("sdpa-kv-heads-not-broadcast", "flopbench/flops/counter.py",
           "heads = query_shape[1]", "heads = key_shape[1]",
           LLAMA, "fused attention with fewer K/V heads counted per K/V head"),
    Mutant("sdpa-backward-as-forward", "flopbench/flops/counter.py",
           '("_backward", _sdpa_backward)', '("_backward", _sdpa_forward)',
           LLAMA, "fused attention's backward counted with the forward formula (2 bmm instead of 5)"),
    Mutant("cpu-flash-formula-missing", "flopbench/flops/counter.py",
           'names = ("_scaled_dot_product_flash_attention_for_cpu", ', "names = (",
           COUNTED, "the CPU flash-attention kernel counts 0 FLOPs"),
    Mutant("layer-extrapolation-off-by-one", "flopbench/flops/counter.py",
           "sum(n * slopes[kind][k] for kind, n in kinds.items())",
           "sum((n - 1) * slopes[kind][k] for kind, n in kinds.items())",
           COUNTED, "counting 1 and 2 layers, then extrapolating one block too many"),
    # --- an independent audit's survivors (45 planted bugs), now caught --------------------------------
    Mutant("causal-band-halved", "flopbench/flops/analytic.py",
           "n * 2 * B * cfg.q_dim * (2 * T * k - k * k)",
           "n * 2 * B * cfg.q_dim * ((2 * T * k - k * k) if k == T else T * k)",
           HAND, "the causal estimate halves a sliding layer's band (mistral-7b T=8192: 389.07e12 -> 375.88e12)"),
    Mutant("expert-activation-over-all-experts", "flopbench/flops/analytic.py",
           "width = cfg.top_k * cfg.d_ff_expert", "width = cfg.n_experts * cfg.d_ff_expert",
           HAND, "the experts' activation is counted over every expert (mixtral non-matmul 66.6e9 -> 89.1e9)"),
    Mutant("decode-reads-top-k-experts", "flopbench/flops/inference.py",
           "min(cfg.n_experts, tokens * cfg.top_k)", "cfg.top_k",
           HAND, "a batched decode step reads only top_k experts (mixtral B=8: 93.1 GB -> 25.5 GB, MBU 3.3x low)"),
    Mutant("prefill-writes-k-not-v", "flopbench/flops/inference.py",
           "2 * cfg.n_layer * cfg.kv_dim * B * P", "cfg.n_layer * cfg.kv_dim * B * P",
           HAND, "the prefill writes K but not V (llama3-8b P=2048: 15.295e9 -> 15.161e9 bytes)"),
    Mutant("decode-mfu-per-millisecond", "flopbench/api/infer.py",
           "seconds = t.device_ms / 1e3", "seconds = t.device_ms",
           INFER_RATES, "decode MFU (and MBU) divided by milliseconds: 1000x too small"),
    Mutant("prefill-mbu-at-the-fastest", "flopbench/api/infer.py",
           '"mbu": bandwidth_utilization(nbytes, seconds, peaks["gbps"])}',
           '"mbu": bandwidth_utilization(nbytes, time_ms["min_ms"] / 1e3, peaks["gbps"])}',
           INFER_RATES, "prefill MBU from the fastest prefill, not the median"),
    Mutant("infer-peak-always-bf16", "flopbench/api/infer.py",
           'gpu_peak(env["gpu"], dtype, options.peak_tflops)', 'gpu_peak(env["gpu"], "bf16", options.peak_tflops)',
           INFER_RATES, "infer always divides by the bf16 peak (fp32 on an H100 rated at 989.4, not 66.9)"),
    Mutant("selective-three-passes", "flopbench/api/run.py",
           'return 1 if mode == "forward" else (3 if checkpointing == "none" else 4)',
           'return 1 if mode == "forward" else (3 if checkpointing != "full" else 4)',
           ("tests/api/test_selective_window.py",), "selective recompute runs the masked attention square 3 times, not 4"),
    Mutant("sweep-resume-skips-missing-fields", "flopbench/api/sweep.py",
           'if old_cfg.get(name, "missing") != new_cfg[name]:', "if name in old_cfg and old_cfg[name] != new_cfg[name]:",
           ("tests/api/test_sweep.py",), "--resume keeps rows whose config lacks a field the spec sets (dense as MoE)"),
    Mutant("memory-active-experts", "flopbench/timing/memory.py",
           "n = analytic.param_counts(cfg).total", "n = analytic.param_counts(cfg).active",
           MEMORY, "the memory estimate holds the active experts only (mixtral refusal 186.8 GB -> 51.5 GB)"),
    Mutant("memory-grads-not-sharded", "flopbench/timing/memory.py",
           "grads = GRAD_BYTES * n // shards if backward else 0", "grads = GRAD_BYTES * n if backward else 0",
           MEMORY, "FSDP's gradients counted whole on every rank"),
    Mutant("memory-cast-weights-active", "flopbench/timing/memory.py",
           "cast = 2 * analytic.param_counts(cfg).matmul", "cast = 2 * analytic.param_counts(cfg).active_matmul",
           MEMORY, "autocast's low-precision copies of the active experts' weights only"),
    Mutant("kv-cache-at-query-heads", "flopbench/timing/memory.py",
           "* (P + G) * cfg.kv_heads *", "* (P + G) * cfg.n_head *",
           MEMORY, "infer's KV cache estimated at the query heads (GQA ignored)"),
    Mutant("shared-experts-one-width", "flopbench/flops/analytic.py",
           '_mlp_matrices(cfg, "shared", cfg.n_shared_experts * cfg.d_ff_shared,',
           '_mlp_matrices(cfg, "shared", cfg.d_ff_shared,',
           MOE_HF, "shared experts counted at one expert's width (params 40,352 -> 35,744)"),
    Mutant("routing-not-renormalized", "flopbench/model/gpt.py",
           "weight = weight / weight.sum(dim=-1, keepdim=True)", "weight = weight",
           MOE_HF, "the top_k routing weights are not renormalized: the MoE output differs from transformers'"),
    Mutant("gemma3-pattern-off-by-one", "flopbench/model/hf.py",
           '"sliding_window_pattern") - 1) + ("full",)', '"sliding_window_pattern")) + ("full",)',
           HF, "Gemma 3's 5:1 pattern read as 6:1"),
    Mutant("qwen2-max-window-layers-off-by-one", "flopbench/model/hf.py",
           '"sliding" if i >= first else "full"', '"sliding" if i > first else "full"',
           HF, "Qwen2's max_window_layers boundary off by one"),
    Mutant("dense-layer-index-n-layer", "flopbench/model/config.py",
           "not 0 <= i < cfg.n_layer for i in dense", "not 0 <= i <= cfg.n_layer for i in dense",
           HF, "dense_layers accepts the index n_layer (analytic and model parameters then differ)"),
    Mutant("zero-experts-default", "flopbench/model/hf.py",
           "experts = _n_experts(read, 128)", "experts = _n_experts(read, 128) or 128",
           HF_HARD, "qwen3_moe with num_experts 0 counted as 128 experts (30.53B, not 3.34B)"),
    Mutant("sparse-step-zero", "flopbench/model/hf.py", "if step < 1:", "if step < 0:",
           HF_HARD, "decoder_sparse_step 0 accepted"),
    Mutant("peak-l40s-tf32-sparse", "flopbench/hardware/peaks.csv",
           r"\bL40S\b,91.6,183,362,362,", r"\bL40S\b,91.6,366,362,362,",
           PINNED, "the L40S tf32 cell holds the 2:4-sparse figure: its estimate halves"),
    Mutant("mig-gets-whole-chip-bandwidth", "flopbench/hardware/peaks.py",
           "    if is_mig(gpu_name):\n        return None, f\"{gpu_name}: a MIG slice's share",
           "    if False:\n        return None, f\"{gpu_name}: a MIG slice's share",
           PINNED, "a MIG slice is given the whole chip's memory bandwidth (A100 1g.5gb: 1555 GB/s)"),
    Mutant("rated-clock-is-nvml-max", "flopbench/hardware/peaks.csv",
           "(H100 SXM5),1980,1830,1830,1830,", "(H100 SXM5),1980,1980,1980,1980,",
           PINNED, "the H100's tensor peak scaled by NVML's 1980 MHz, not the rated 1830 (mfu_vs_clock 8 % high)"),
    Mutant("mig-profile-unchecked", "flopbench/hardware/peaks.py",
           "    mig_profile(entry, name, option)  # a MIG profile", "    # mig_profile(entry, name, option)  # a MIG profile",
           ("tests/hardware/test_mig_profiles.py",), "an impossible MIG profile (99g: 1386 of 108 SMs) taken as given"),
    # --- explain ----------------------------------------------------------------------------------
    Mutant("waterfall-forgets-idle", "flopbench/timing/breakdown.py",
           '("idle", s["idle"]),', '("idle", 0.0),',
           BREAKDOWN, "the waterfall drops the idle share: it no longer ends at the MFU"),
    Mutant("breakdown-outermost-span", "flopbench/timing/breakdown.py",
           "else max(active, key=active.get)", "else min(active, key=active.get)",
           BREAKDOWN, "time goes to the outermost span (aten::linear) rather than the leaf that ran it"),
    Mutant("gemm-before-attention", "flopbench/timing/breakdown.py",
           '    ("attention", r"flash|fmha|attention|sdpa|flex_"),\n', "",
           BREAKDOWN, "flash-attention v3 and memory-efficient kernels (built on CUTLASS) classified as gemm"),
    # --- float8 training, causal MFU, the Trainer callback -----------------------------------------
    Mutant("fp8-subclass-not-seen", "flopbench/flops/counter.py",
           'data = getattr(value, "_data", value)', "data = value",
           FP8, "a float8 tensor subclass (torchao's, whose dtype is bf16) is not seen: fp8 FLOPs read 0"),
    Mutant("fp8-weighted-peak-arithmetic-mean", "flopbench/timing/rates.py",
           "return flops / (fp8_flops / fp8_peak_tflops + (flops - fp8_flops) / peak_tflops)",
           "return (fp8_flops * fp8_peak_tflops + (flops - fp8_flops) * peak_tflops) / flops",
           RUN_FP8, "the FLOP-weighted peak is the weighted arithmetic mean of the peaks, not the harmonic one"),
    Mutant("fp8-full-recompute-not-counted", "flopbench/api/run.py",
           'fp8_hardware = fp8_model + (forward if mode != "forward" and checkpointing == "full" else 0)',
           "fp8_hardware = fp8_model", FP8, "the converted layers' recompute is left out of the analytic fp8 FLOPs"),
    Mutant("fp8-converts-any-width", "flopbench/model/fp8.py",
           "and module.in_features % FP8_DIM_MULTIPLE == 0 and module.out_features % FP8_DIM_MULTIPLE == 0)", ")",
           FP8, "Linear layers whose width is not a multiple of 16 are converted (no float8 matmul takes them)"),
    Mutant("fp8-peaks-swapped", "flopbench/api/run.py",
           "seconds, peak,\n                      ctx.fp8_peak)", "seconds, ctx.fp8_peak,\n                      peak)",
           RUN_FP8, "the fp8 and bf16 peaks are swapped in an fp8 row's rates"),
    Mutant("fp8-any-gpu-has-fp8", "flopbench/hardware/peaks.py",
           'if entry is not None and entry.tflops["fp8"] is None:', "if False:",
           RUN_FP8, "fp8 is not refused on a GPU without fp8 tensor cores (A100, V100, T4)"),
    Mutant("fp8-estimate-two-passes", "flopbench/api/estimate.py",
           "Fraction(passes * analytic.fp8_forward_flops(cfg, 1, 1))",
           "Fraction(2 * analytic.fp8_forward_flops(cfg, 1, 1))", ESTIMATE,
           "estimate's fp8 share counts the converted layers' forward only, not forward + backward"),
    Mutant("fp8-report-at-bf16-peak", "flopbench/api/report.py",
           'rate, basis = weighted_peak(simple, simple * share, peak, fp8_peak), "FLOP-weighted peak"',
           'rate, basis = peak, "FLOP-weighted peak"', RUN_FP8, "report predicts an fp8 row at the bf16 peak"),
    Mutant("fp8-profile-recompute-as-model", "flopbench/flops/counter.py",
           "fp8_train_recompute=recompute.fp8_train if recompute else None)",
           "fp8_train_recompute=step.fp8_train if recompute else None)",
           PROFILE_FP8, "profile's checkpointed fp8 FLOPs leave the recomputed forward out"),
    Mutant("causal-mfu-one-pass", "flopbench/api/run.py",
           'causal = model - (1 if mode == "forward" else 3) * estimates.Terms.of(cfg, B, T).causal_skipped',
           "causal = model - estimates.Terms.of(cfg, B, T).causal_skipped",
           RUN_PEAK, "the causal MFU halves the square of the forward only, not of backward's two passes too"),
    Mutant("trainer-tokens-per-s-one-rank", "flopbench/integrations.py",
           'logs["tokens_per_s"] = w.tokens * self._world_size / w.seconds',
           'logs["tokens_per_s"] = w.tokens / w.seconds / max(1, w.steps)',
           TRAINER, "the Trainer callback's tokens/s divides by the steps once more"),
)


# --------------------------------------------------------------------------------------------------
# Running them
# --------------------------------------------------------------------------------------------------


def repo_files() -> list[str]:
    """Tracked files and untracked files git does not ignore, as the repository has them now."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                         capture_output=True, check=True).stdout.decode()
    return sorted({f for f in out.split("\0") if f and (ROOT / f).is_file()})


def make_copy(files: list[str], parent: Path, index: int) -> Path:
    copy = parent / f"copy{index}"
    for f in files:
        (copy / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, copy / f)
    return copy


def env_for(copy: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(copy) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # no stale .pyc between a mutant and the restored file
    return env


def check_import(copy: Path) -> None:
    out = subprocess.run([sys.executable, "-c", "import flopbench; print(flopbench.__file__)"], cwd=copy,
                         env=env_for(copy), capture_output=True, text=True)
    path = Path(out.stdout.strip() or "?").resolve()
    if out.returncode or copy.resolve() not in path.parents:
        sys.exit(f"mutants: the copy imports flopbench from {path}, not from {copy}: {out.stderr.strip()}")


def pytest(copy: Path, tests, timeout: float) -> tuple[int | None, float, str]:
    """(pytest's exit code or None on timeout, seconds, the last lines of its output)."""
    started = time.monotonic()
    try:
        out = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
                             cwd=copy, env=env_for(copy), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, time.monotonic() - started, ""
    output = (out.stdout + out.stderr).strip().splitlines()
    return out.returncode, time.monotonic() - started, output[-1] if output else ""


def stale(m: Mutant) -> str | None:
    """Why the mutant cannot be applied to the repository as it is now, or None."""
    path = ROOT / m.file
    if not path.is_file():
        return f"{m.file} does not exist"
    n = path.read_text(encoding="utf-8").count(m.old)
    return None if n == 1 else f"its snippet occurs {n} times in {m.file} (must be once)"


def run_mutant(m: Mutant, copy: Path, timeout: float) -> tuple[str, float, str]:
    target = copy / m.file
    original = target.read_text(encoding="utf-8")
    target.write_text(original.replace(m.old, m.new, 1), encoding="utf-8")
    try:
        code, seconds, last = pytest(copy, m.tests, timeout)
    finally:
        target.write_text(original, encoding="utf-8")
    if code is None:
        return "caught", seconds, f"timed out after {timeout:.0f} s"
    if code == 1:  # a test failed
        return "caught", seconds, last
    if code == 2:  # collection or import failed: caught, but not by an assertion
        return "caught", seconds, f"collection error: {last}"
    if code == 0:
        return "SURVIVED", seconds, last
    return "ERROR", seconds, f"pytest exit {code}: {last}"


def header() -> list[str]:
    try:
        import torch

        torch_version = torch.__version__
    except ImportError:
        torch_version = "not installed"
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                           text=True).stdout.strip()
    now = datetime.datetime.now().astimezone()
    return [f"# flopbench mutation audit (scripts/mutants.py), {now:%Y-%m-%d %H:%M %Z}",
            f"# machine: {platform.node()}, {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
            f"# python {platform.python_version()}, torch {torch_version}, "
            f"git {commit}{' + uncommitted changes' if dirty else ''}"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--only", action="append", metavar="NAME", help="run only this mutant (repeatable)")
    parser.add_argument("-j", type=int, default=1, metavar="N", help="parallel copies (default 1)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per pytest run (default 900)")
    parser.add_argument("--out", metavar="FILE", help="also write the report to FILE")
    args = parser.parse_args(argv)

    names = [m.name for m in MUTANTS]
    if len(set(names)) != len(names):
        sys.exit("mutants: two mutants share a name")
    if args.list:
        for m in MUTANTS:
            print(f"{m.name:34} {m.file:32} {m.what}")
        return 0
    unknown = sorted(set(args.only or ()) - set(names))
    if unknown:
        sys.exit(f"mutants: unknown mutant {unknown[0]!r}; see --list")
    if args.j < 1:
        sys.exit("mutants: -j must be at least 1")
    chosen = [m for m in MUTANTS if not args.only or m.name in args.only]

    lines = header()
    print("\n".join(lines), flush=True)
    results: dict[str, tuple[str, float, str]] = {}
    for m in chosen:
        why = stale(m)
        if why:
            results[m.name] = ("STALE", 0.0, why)
    runnable = [m for m in chosen if m.name not in results]

    files = repo_files()
    with tempfile.TemporaryDirectory(prefix="flopbench-mutants-") as tmp:
        copies = [make_copy(files, Path(tmp), i) for i in range(min(args.j, max(1, len(runnable))))]
        check_import(copies[0])
        tests = sorted({t for m in runnable for t in m.tests})
        if tests:
            code, seconds, last = pytest(copies[0], tests, args.timeout)
            line = f"# baseline (no mutant): pytest exit {code} in {seconds:.0f} s over {len(tests)} files: {last}"
            print(line, flush=True)
            lines.append(line)
            if code != 0:
                print("mutants: the tests fail without any mutant; fix them first", file=sys.stderr)
                return 2
        free: queue.Queue[Path] = queue.Queue()
        for c in copies:
            free.put(c)

        def work(m: Mutant):
            copy = free.get()
            try:
                return m, run_mutant(m, copy, args.timeout)
            finally:
                free.put(copy)

        with concurrent.futures.ThreadPoolExecutor(len(copies)) as pool:
            for m, result in pool.map(work, runnable):
                results[m.name] = result
                print(f"  {result[0]:9} {result[1]:6.1f} s  {m.name}", flush=True)

    lines.append("")
    for m in chosen:
        status, seconds, detail = results[m.name]
        lines.append(f"{status:9} {seconds:6.1f} s  {m.name:34} {m.what}  [{detail}]")
    counts = {s: sum(r[0] == s for r in results.values()) for s in ("caught", "SURVIVED", "STALE", "ERROR")}
    lines.append("")
    lines.append(f"total {len(chosen)}: {counts['caught']} caught, {counts['SURVIVED']} survived, "
                 f"{counts['STALE']} stale, {counts['ERROR']} errors; "
                 f"{sum(r[1] for r in results.values()):.0f} s of pytest")
    report = "\n".join(lines) + "\n"
    print(report[report.index("\n\n") + 1:] if "\n\n" in report else report, end="")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(report, encoding="utf-8")
    return 0 if counts["caught"] == len(chosen) else 1


if __name__ == "__main__":
    sys.exit(main())
