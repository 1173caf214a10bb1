"""`flopbench.estimate`: how long does training on T tokens take on G GPUs?

Training on T tokens costs C ≈ 6·N·T FLOPs (Kaplan et al. 2020, §2.1), ≈ 8·N·T with full activation
recomputation (forward + backward + a recomputed forward: the factor 4 of Narayanan et al. 2021,
Eq. 3), N = N_matmul, the matmul weights a token passes through: all of them in a dense model, the
router, shared and top_k experts of a mixture of experts (README, "Which N"). The GPUs do at most
G x peak FLOP/s; efficient training reaches a fraction U of that (`timing.rates.PRACTICAL_MFU`, 0.40,
measured on H100s: Dubey et al. 2024, Table 4), so

    time = C / (G x peak x U),    GPU-hours = C / (peak x U) / 3600.

U is an MFU when C counts model FLOPs (6N, exact, causal) and an HFU when C counts the recomputed
forward too (`RECOMPUTED`: 8N, exact with recomputation); the document says which by its key, "mfu" or "hfu".

C comes from `flopbench.flops`, never from a formula written here: the registered estimates "6N" /
"8N", with `exact` the full matmul count including the attention scores the 6N rule leaves out
(`analytic.train_flops`, `train_recompute_flops`), or with `causal` the registered "causal" estimate
(the exact count with QK^T and AV over the lower triangle only, as Megatron-LM counts), per sequence of
`seq_len` tokens (default the model's maximum positions), scaled to the token count. The peak is the
dense rate of the GPU's entry in the peak table for the compute dtype; for fp8 (float8 training of the block
Linear layers, `model.fp8`) the FLOP-weighted peak of the fp8 and bf16 rates, weighted by the part of C the
converted layers run (`fp8_share`, `fp8_weighted_peak`). U is given (`mfu`, or `hfu` with
recomputation), the median of measured `train_step` rows (`mfu_from_results`) or `PRACTICAL_MFU`. This
ignores communication, data loading, the optimizer step and logging; they only lower the U you should
assume. No torch is imported.
"""

from __future__ import annotations

import math
import re
import statistics
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from pathlib import Path

from ..errors import UsageError, check_arguments
from ..flops import analytic, estimates
from ..hardware.peaks import check_fp8, lookup_gpu, match_gpu, named_gpu, resolve_peak
from ..model.config import DTYPES, MAX_SIZE, ModelConfig, check_size, validate_shapes
from ..model.presets import as_config
from ..timing.rates import PRACTICAL_MFU, PRACTICAL_MFU_SOURCE, utilization, weighted_peak

#: Suffixes `parse_tokens` accepts (case-insensitive): K, M, B (= G), T.
TOKEN_SUFFIXES = {"k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9, "t": 10**12}

#: How C is computed; see `flops_per_sequence`.
METHODS = {
    "6N": "Kaplan et al. 2020, §2.1: C = 6·N_matmul·T",
    "8N": "with full recomputation (Narayanan et al. 2021, Eq. 3): C = 8·N_matmul·T",
    "exact": "exact matmul FLOPs incl. attention scores (analytic.train_flops), per token x T",
    "exact_recompute": "exact, full checkpointing with torch's early stop (analytic.train_recompute_flops), "
                       "per token x T",
    "causal": f"{estimates.REGISTRY['causal'].source}: QK^T and AV over half the T x T square, per token x T",
}

#: The methods whose C counts the recomputed forward: divided by an HFU, not an MFU.
RECOMPUTED = ("8N", "exact_recompute")

#: Maximum positions above this, taken as T when no `seq_len` is given, earn a warning: few models train
#: at their full context (Llama 3 405B pre-trained at 8,192, Dubey et al. 2024, §3.4.1), and the exact count
#: grows with T.
LONG_DEFAULT_SEQ_LEN = 8192

def parse_tokens(text: str) -> int:
    """A token count from "300e9", "300B", "1.4T", "2.5M", "64k" or "1000000" (whole numbers >= 1)."""
    s = str(text).strip().replace("_", "")
    scale = 1
    if s and s[-1].lower() in TOKEN_SUFFIXES and not s[-1].isdigit():
        scale, s = TOKEN_SUFFIXES[s[-1].lower()], s[:-1].strip()
    allowed = "write e.g. 300e9, 300B, 1.4T, 2.5M or 1000000"
    if not re.fullmatch(r"[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?|[0-9]+\.", s):
        raise UsageError(f"{text!r} is not a token count; {allowed}")
    try:
        value = Decimal(s) * scale
    except (InvalidOperation, ArithmeticError):  # ArithmeticError: decimal.Overflow past the exponent limit
        raise UsageError(f"{text!r} is not a token count; {allowed}") from None
    if value.adjusted() > len(str(MAX_SIZE)):  # before int(): "1e1000000000" would build a billion digits
        raise UsageError(f"{text!r} is too many tokens: at most {MAX_SIZE:.3e}")
    if value != value.to_integral_value():
        raise UsageError(f"{text!r} is not a whole number of tokens ({value})")
    if value < 1:
        raise UsageError(f"{text!r} is not allowed: the token count must be at least 1")
    return int(value)


def method_of(recompute: bool, exact: bool, causal: bool = False) -> str:
    """The key of METHODS the options choose; `causal` is an exact count of model FLOPs (no recomputation)."""
    if causal and recompute:
        raise UsageError("--causal with --recompute: the causal count is of model FLOPs; drop one of them")
    if causal:
        return "causal"
    return ("exact_recompute" if recompute else "exact") if exact else ("8N" if recompute else "6N")


def flops_per_sequence(cfg: ModelConfig, seq_len: int, method: str) -> int:
    """Training FLOPs of one sequence of `seq_len` tokens by `method` (a key of METHODS)."""
    if method in ("6N", "8N"):
        return estimates.REGISTRY[method].formula(cfg, 1, seq_len)
    if method == "exact":
        return analytic.train_flops(cfg, 1, seq_len)
    if method == "exact_recompute":
        return analytic.train_recompute_flops(cfg, 1, seq_len)
    if method == "causal":
        return estimates.REGISTRY["causal"].formula(cfg, 1, seq_len)
    raise UsageError(f"method {method!r}: choose one of {', '.join(METHODS)}")


def named_peak(gpu: str | None, dtype: str, peak_tflops: float | None) -> tuple[float, str]:
    """(dense peak TFLOP/s of one GPU named `gpu` for `dtype`, where it came from); `peak_tflops` wins. A MIG
    slice's name gets its share of the chip (`hardware.peaks.named_gpu`)."""
    if dtype not in DTYPES:
        raise UsageError(f"--dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    name = None if peak_tflops is not None else named_gpu(gpu or "h100")[1]
    peak, source = resolve_peak(name, dtype, peak_tflops)
    if peak is None:
        raise UsageError(f"--gpu {gpu!r} --dtype {dtype}: {source} (or choose a --dtype it has)")
    return peak, source


def fp8_share(cfg: ModelConfig, per_token: Fraction, method: str) -> Fraction:
    """The part of C float8 training runs in float8: the converted layers' FLOPs per token (each of their matmuls
    2·d_in·d_out per token, three passes in training, four when a full recompute re-runs them:
    `analytic.fp8_forward_flops`, which is linear in T) over C per token by `method` (`per_token`)."""
    passes = 4 if method in RECOMPUTED else 3
    return Fraction(passes * analytic.fp8_forward_flops(cfg, 1, 1)) / per_token


def fp8_weighted_peak(gpu: str | None, share: Fraction) -> tuple[float, str]:
    """(the FLOP-weighted peak of a float8 training run on `gpu`, where it came from): `share` of the FLOPs at the
    fp8 dense peak and the rest at the bf16 one (`timing.rates.weighted_peak`, torchtitan issue #560)."""
    check_fp8(named_gpu(gpu or "h100")[1], "--dtype")
    (bf16, _), (fp8, _) = named_peak(gpu, "bf16", None), named_peak(gpu, "fp8", None)
    peak = weighted_peak(1, float(share), bf16, fp8)
    return peak, (f"FLOP-weighted: {float(share):.1%} of C at the fp8 peak {fp8:g}, the rest at the bf16 peak "
                  f"{bf16:g} (table: {lookup_gpu(gpu or 'h100').display_name})")


def measured_where(path: str, gpu_key: str | None, dtype: str) -> list[str]:
    """Warnings when the rows `--mfu-from` reads were measured elsewhere than the estimate assumes: on another
    device (a CPU, or another GPU than `gpu_key`) or in another dtype. Their MFU need not carry over."""
    from ..output.records import read_environment, read_rows

    df = read_rows(path)
    rows = df[df["mode"] == "train_step"] if "mode" in df.columns else df
    warnings = []
    devices = sorted({str(d) for d in rows.get("device", [])})
    if any(not d.startswith("cuda") for d in devices):
        warnings.append(f"--mfu-from {path}: rows measured on {', '.join(devices)}, not on a GPU; their MFU is "
                        f"applied to {gpu_key or 'the --peak-tflops GPU'} as it is")
    names = sorted({(e.get("gpu") or {}).get("name") for e in read_environment(path)} - {None})
    others = [n for n in names if gpu_key and (match_gpu(n) is None or match_gpu(n).key != gpu_key)]
    if others:
        warnings.append(f"--mfu-from {path}: rows measured on {', '.join(others)}, the estimate is for {gpu_key}")
    dtypes = sorted({str(d) for d in rows.get("dtype", [])} - {dtype})
    if dtypes:
        warnings.append(f"--mfu-from {path}: rows measured in {', '.join(dtypes)}, the estimate is for {dtype}")
    return warnings


def mfu_from_results(path: str, recompute: bool) -> tuple[float, str]:
    """The median utilisation of the measured `train_step` rows in `path` that match the estimate.

    Without recomputation: the rows' MFU (model FLOPs / (time x peak)), checkpointing "none". With it
    (C counts the recomputed forward, like 8N): the rows with checkpointing "full", utilisation =
    analytic hardware FLOPs / (time x peak), so that C / utilisation gives back the measured time.
    """
    from ..output.records import read_rows

    flops_field = "hardware_flops_analytic" if recompute else "model_flops"
    need = ("mode", "status", "checkpointing", "peak_tflops", "time_ms.median_ms", flops_field)
    df = read_rows(path, need=need)  # each row checked: a wrong-shaped row is one line naming file and line
    if not set(need) <= set(df.columns):
        missing = ", ".join(sorted(set(need) - set(df.columns)))
        raise UsageError(f"--mfu-from {path}: not flopbench run rows (missing {missing})")
    ckpt = "full" if recompute else "none"
    rows = df[(df["mode"] == "train_step") & (df["status"] == "ok") & (df["checkpointing"] == ckpt)
              & df["peak_tflops"].notna() & df["time_ms.median_ms"].notna() & df[flops_field].notna()]
    if rows.empty:
        raise UsageError(f"--mfu-from {path}: no train_step rows with checkpointing {ckpt} and a known peak "
                         f"(rows measured without a peak, e.g. on a CPU, have no MFU; pass --mfu)")
    flops = rows[flops_field].astype(float)
    util = [utilization(f, t / 1e3, p) for f, t, p in zip(flops, rows["time_ms.median_ms"].astype(float),
                                                         rows["peak_tflops"].astype(float))]
    kind = "HFU (analytic hardware FLOPs)" if recompute else "MFU"
    where = f"{len(rows)} train_step rows (checkpointing {ckpt}) in {path}"
    return float(statistics.median(util)), f"median {kind} of {where}"


def resolve_utilization(mfu: float | None, hfu: float | None, mfu_from: str | None,
                        recompute: bool) -> tuple[float, str]:
    """The fraction of peak to divide C by and where it came from: given (`mfu`; `hfu` with recomputation,
    whose C counts hardware FLOPs), measured in a results file, or `PRACTICAL_MFU` (without recomputation a
    step's hardware FLOPs are its model FLOPs, so the same fraction serves as the HFU: `timing.rates`)."""
    if recompute and mfu is not None:
        raise UsageError(f"--mfu {mfu!r} with --recompute: 8NT counts the recomputed forward; pass --hfu")
    if not recompute and hfu is not None:
        raise UsageError(f"--hfu {hfu!r} without --recompute: C counts model FLOPs; pass --mfu")
    flag, given = ("--hfu", hfu) if recompute else ("--mfu", mfu)
    if given is not None and mfu_from is not None:
        raise UsageError(f"{flag} and --mfu-from: give one of them")
    if given is not None and (math.isnan(given) or not 0 < given <= 1):
        raise UsageError(f"{flag} {given!r}: must be in (0, 1], a fraction of peak")
    if mfu_from is not None:
        return mfu_from_results(mfu_from, recompute)
    if given is not None:
        return given, flag
    if recompute:
        return PRACTICAL_MFU, f"the MFU without recomputation, where HFU = MFU: {PRACTICAL_MFU_SOURCE}"
    return PRACTICAL_MFU, f"measured: {PRACTICAL_MFU_SOURCE}"


def seq_len_used(cfg: ModelConfig, seq_len: int | None, method: str) -> tuple[int | None, str | None, list[str]]:
    """(T the method counts at, where it came from, warnings): None for 6N / 8N, which do not depend on T;
    else `seq_len`, or the model's maximum positions with a warning when they exceed
    `LONG_DEFAULT_SEQ_LEN` (the attention term grows with T)."""
    if method in ("6N", "8N"):
        if seq_len is not None:
            validate_shapes(cfg, 1, seq_len)
        return None, None, []
    if seq_len is not None:
        return seq_len, "--seq-len", []
    T, warnings = cfg.max_seq_len, []
    if T > LONG_DEFAULT_SEQ_LEN:
        warnings.append(f"--{method.split('_')[0]} at T = {T:,}, the maximum positions: "
                        f"pass --seq-len, the training length")
    return T, "the model's maximum positions", warnings


def estimate(config: ModelConfig | str, tokens: int | str, gpus: int = 1, *, seq_len: int | None = None,
             recompute: bool = False, exact: bool = False, causal: bool = False, gpu: str | None = "h100",
             dtype: str = "bf16", peak_tflops: float | None = None, mfu: float | None = None,
             hfu: float | None = None, mfu_from: str | Path | None = None) -> dict:
    """Training compute and time for `tokens` (an int or "300B", "1.4T", ...) on `gpus` GPUs: the
    `flopbench estimate --json` document (see the module docstring). C = 6NT, 8NT with `recompute`, the
    exact count with `exact`, causal attention halved with `causal`; divided by an MFU (`mfu`) or, with
    `recompute`, an HFU (`hfu`), the median of measured rows (`mfu_from`, a results path) or
    `PRACTICAL_MFU`. The document holds "mfu" / "mfu_source", or "hfu" / "hfu_source" with `recompute`."""
    check_arguments(estimate, {"tokens": tokens, "gpus": gpus, "seq_len": seq_len, "recompute": recompute,
                               "exact": exact, "causal": causal, "gpu": gpu, "dtype": dtype,
                               "peak_tflops": peak_tflops, "mfu": mfu, "hfu": hfu, "mfu_from": mfu_from})
    cfg = as_config(config)
    tokens = parse_tokens(tokens) if isinstance(tokens, str) else tokens
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1:
        raise UsageError(f"tokens={tokens!r}: pass a positive integer or a count like \"300B\"")
    check_size("tokens", tokens)
    if isinstance(gpus, int) and not isinstance(gpus, bool):
        check_size("gpus", gpus)
    method = method_of(recompute, exact, causal)
    util, util_source = resolve_utilization(mfu, hfu, mfu_from, recompute)
    if not (isinstance(gpus, int) and gpus >= 1):
        raise UsageError(f"--gpus {gpus!r}: must be a positive integer")
    if not (0 < util <= 1) or math.isnan(util):
        raise UsageError(f"--mfu-from {mfu_from}: a median of {util!r}, not in (0, 1]")
    T, T_source, warnings = seq_len_used(cfg, seq_len, method)
    if T is not None:
        validate_shapes(cfg, 1, T)
    per_token = Fraction(flops_per_sequence(cfg, T or 1, method), T or 1)
    share = fp8_share(cfg, per_token, method) if dtype == "fp8" else None
    if share is not None and peak_tflops is None:
        peak, peak_source = fp8_weighted_peak(gpu, share)
    else:
        peak, peak_source = named_peak(gpu, dtype, peak_tflops)
    flops = per_token * tokens
    gpu_seconds = float(flops) / (peak * 1e12 * util)
    wall_seconds = gpu_seconds / gpus
    gpu_key = None if peak_tflops is not None else lookup_gpu(gpu or "h100").key
    kind = "hfu" if method in RECOMPUTED else "mfu"
    return {
        "model": cfg.name, "config": cfg.as_dict(), "n_matmul": analytic.param_counts(cfg).active_matmul,
        "seq_len": T, "seq_len_source": T_source, "tokens": tokens, "method": method,
        "method_formula": METHODS[method], "flops_per_token": float(per_token), "flops": round(flops),
        "gpus": gpus, "gpu": gpu_key, "dtype": dtype, "fp8_share": None if share is None else float(share),
        "peak_tflops": peak, "peak_source": peak_source, kind: util, f"{kind}_source": util_source,
        "gpu_hours": gpu_seconds / 3600, "wall_seconds": wall_seconds, "wall_hours": wall_seconds / 3600,
        "wall_days": wall_seconds / 86400,
        "warnings": warnings + (measured_where(mfu_from, gpu_key, dtype) if mfu_from is not None else []),
    }
