"""The one place where a time becomes a rate: achieved TFLOP/s, MFU and HFU.

- achieved TFLOP/s = FLOPs / seconds / 10^12 (a rate, FLOP/s, never "FLOPS");
- **MFU** = model FLOPs / (seconds x peak): model FLOPs never include recomputation (Chowdhery et al.
  2022, PaLM, App. B);
- **HFU** = hardware FLOPs / (seconds x peak): every FLOP executed, recomputed forwards included
  (Korthikanti et al. 2022, §6; Chowdhery et al. 2022, App. B).

`PRACTICAL_MFU` is the fraction of peak efficient training reaches in practice, measured on current
hardware: Llama 3 405B trained at 38-43 % BF16 MFU on 8K-16K H100s (Dubey et al. 2024, "The Llama 3 Herd
of Models", Table 4), torchtitan's Llama 3 8B at about 39 %; 0.40 is that range's middle, rounded down.
(Narayanan et al. 2021's 52 % counts the recomputed forward: an HFU, about 39 % MFU by flopbench's count.)
- **float8 steps** get three of each (`fp8_rates`): against the bf16 dense peak (`mfu`: comparable with every
  bf16 figure and with tokens/s), against the fp8 dense peak (`mfu_fp8_peak`), and against the FLOP-weighted
  peak (`mfu_weighted`, `weighted_peak`): ideal time = fp8 FLOPs / fp8 peak + other FLOPs / bf16 peak, and
  mfu_weighted = ideal time / measured time — the accounting proposed in torchtitan issue #560 ("MFU for
  float8 training"), which neither flatters a step that runs part of its work in bf16 nor penalizes it.

Without recomputation a step's hardware FLOPs are its model FLOPs, so the same fraction is the HFU to
expect when full recomputation adds work but not speed: it is what 8NT is divided by.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Measured MFU on H100s: Llama 3 405B, 38-43 % (Dubey et al. 2024, Table 4); see the module docstring.
PRACTICAL_MFU = 0.40
#: Where `PRACTICAL_MFU` comes from, in one line for outputs.
PRACTICAL_MFU_SOURCE = "Llama 3 405B's 38-43 % MFU on H100s, Dubey et al. 2024, Table 4"


def tflops_per_s(flops: int | float, seconds: float) -> float:
    """The rate a count of FLOPs over `seconds` amounts to, in TFLOP/s (10^12 FLOP/s)."""
    return flops / seconds / 1e12


def utilization(flops: int | float | None, seconds: float, peak_tflops: float | None) -> float | None:
    """FLOPs / (seconds x peak): MFU with model FLOPs, HFU with hardware FLOPs. None when the peak or the
    FLOPs are unknown."""
    if not peak_tflops or flops is None:
        return None
    return tflops_per_s(flops, seconds) / peak_tflops


@dataclass(frozen=True)
class Rates:
    """What one step time means: achieved TFLOP/s (model FLOPs / time), MFU and HFU."""

    achieved_tflops: float | None
    mfu: float | None
    hfu: float | None


def rates(model_flops: int | float | None, hardware_flops: int | float | None, seconds: float,
          peak_tflops: float | None) -> Rates:
    """Achieved TFLOP/s, MFU and HFU of a step of `seconds` (see the module docstring)."""
    achieved = None if model_flops is None else tflops_per_s(model_flops, seconds)
    return Rates(achieved, utilization(model_flops, seconds, peak_tflops),
                 utilization(hardware_flops, seconds, peak_tflops))


def weighted_peak(flops: int | float | None, fp8_flops: int | float | None, peak_tflops: float | None,
                  fp8_peak_tflops: float | None) -> float | None:
    """The FLOP-weighted peak TFLOP/s of a step that runs `fp8_flops` of its `flops` in float8 and the rest at
    `peak_tflops`: flops / (fp8_flops / fp8 peak + (flops − fp8_flops) / peak), the rate the step would reach
    if each part ran at its own peak (torchtitan issue #560). FLOPs / (seconds x this peak) = ideal time /
    measured time. None when either peak or the FLOPs are unknown."""
    if not peak_tflops or not fp8_peak_tflops or flops is None or fp8_flops is None or flops <= 0:
        return None
    return flops / (fp8_flops / fp8_peak_tflops + (flops - fp8_flops) / peak_tflops)


@dataclass(frozen=True)
class Fp8Rates:
    """MFU and HFU of a float8 step against the fp8 dense peak and against the FLOP-weighted peak."""

    mfu_fp8_peak: float | None
    mfu_weighted: float | None
    hfu_fp8_peak: float | None
    hfu_weighted: float | None


def fp8_rates(model_flops: int, hardware_flops: int | None, fp8_model_flops: int, fp8_hardware_flops: int | None,
              seconds: float, peak_tflops: float | None, fp8_peak_tflops: float | None) -> Fp8Rates:
    """A float8 step's MFU and HFU against the fp8 peak and the FLOP-weighted peak (`weighted_peak`); the
    model FLOPs' float8 part weights MFU, the hardware FLOPs' float8 part HFU (see the module docstring)."""
    return Fp8Rates(
        utilization(model_flops, seconds, fp8_peak_tflops),
        utilization(model_flops, seconds, weighted_peak(model_flops, fp8_model_flops, peak_tflops, fp8_peak_tflops)),
        utilization(hardware_flops, seconds, fp8_peak_tflops),
        utilization(hardware_flops, seconds,
                    weighted_peak(hardware_flops, fp8_hardware_flops, peak_tflops, fp8_peak_tflops)))


def gb_per_s(nbytes: int | float, seconds: float) -> float:
    """The bandwidth `nbytes` moved in `seconds` amount to, in GB/s (10^9 bytes/s, as datasheets count)."""
    return nbytes / seconds / 1e9


def bandwidth_utilization(nbytes: int | float | None, seconds: float, peak_gbps: float | None) -> float | None:
    """MBU, model bandwidth utilization = bytes a step must move / (seconds x peak bandwidth): the figure of
    memory-bound decoding, as MFU is of compute-bound work (Databricks, "LLM Inference Performance
    Engineering: Best Practices", 2023). None when the peak or the bytes are unknown."""
    if not peak_gbps or nbytes is None:
        return None
    return gb_per_s(nbytes, seconds) / peak_gbps
