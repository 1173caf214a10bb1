"""What the GPU did while a row was timed: clocks, power, temperature, throttling and energy, from NVML.

A `Telemetry` samples one GPU in a background thread (`INTERVAL_S`: 20 Hz) between `start()` and
`stop()` — `api.run` starts it after the warm-up's sync and before the first timed mark
(`timing.clock.time_step`'s ``before_timed``), and stops it after the last, so warm-up, counting and the
start's own NVML calls stay outside the timed steps — and reads the GPU's total-energy counter
(``nvmlDeviceGetTotalEnergyConsumption``, millijoules since the driver loaded) at both ends. Each sample
holds the SM and memory clocks (``nvmlDeviceGetClockInfo``), the power draw (``nvmlDeviceGetPowerUsage``,
milliwatts), the temperature (``nvmlDeviceGetTemperature``) and the clocks-event ("throttle") reasons
(``nvmlDeviceGetCurrentClocksEventReasons``, called ``...ClocksThrottleReasons`` before NVML 12.535).
`stop()` gives the row's ``telemetry`` (`summary`); a reading the GPU does not support is None.

**Energy.** The counter reads in millijoules but advances in coarse steps: Yang, Adamek & Armour, "Part-time
Power Measurements: nvidia-smi's Lack of Attention" (arXiv:2312.02741, 2023) found NVML's power readings on
A100 and H100 refreshed every 100 ms (`ENERGY_UPDATE_S`), and an H200 here read 36 J over 78 ms at 122 W, 0 J
over 62 ms, and 768 J over 1.03 s: 743 W against its 700 W limit and a 638 W median reading, 110 J too many.
So each end of a window can be one update off: up to ``2 x ENERGY_UPDATE_S x`` the power limit in all
(``energy_error_j``, 140 J on a 700 W GPU). Energy is reported only over a window of at least
`MIN_ENERGY_WINDOW_S` (4 s: that bound is then at most 5 % of the energy at the limit) and only where its
mean power does not exceed the GPU's enforced power limit (``nvmlDeviceGetEnforcedPowerLimit``); otherwise
``energy_j`` and ``joules_per_token`` are None and ``energy_note`` says why (more ``--iters`` make the
window longer).

On a MIG slice the readings are the whole chip's (NVML reports clocks, power and energy per GPU), so the
energy includes the other slices' work; the summary's ``scope`` says so. Without NVML or on a CPU there
is no `Telemetry` (`open_telemetry` returns None) and rows carry ``telemetry: null``.
"""

from __future__ import annotations

import statistics
import threading
import time

import torch

from .detect import NVML_CLOCK_MEM, NVML_CLOCK_SM, NVML_TEMPERATURE_GPU, nvml_call, nvml_handle, physical_handle

#: Seconds between samples (20 Hz): many samples in a step of tens of milliseconds, little CPU.
INTERVAL_S = 0.05
#: How often the energy counter advances, taken as NVML's 100 ms power refresh (see the module docstring).
ENERGY_UPDATE_S = 0.1
#: The shortest timed window whose energy is reported: 2 x ENERGY_UPDATE_S is then <= 5 % of it.
MIN_ENERGY_WINDOW_S = 4.0

#: The clocks-event reason bits (nvml.h, nvmlClocksEventReason*), by name.
CLOCK_EVENT_REASONS = {
    0x1: "gpu_idle", 0x2: "applications_clocks_setting", 0x4: "sw_power_cap", 0x8: "hw_slowdown",
    0x10: "sync_boost", 0x20: "sw_thermal_slowdown", 0x40: "hw_thermal_slowdown", 0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}
#: The reasons that hold the clock below what the work asks for: a power cap, thermal or hardware slowdown.
THROTTLE_REASONS = ("sw_power_cap", "hw_slowdown", "sw_thermal_slowdown", "hw_thermal_slowdown",
                    "hw_power_brake_slowdown")


def reason_names(mask: int | None) -> list[str]:
    """The names of the bits set in a clocks-event reason mask (unknown bits as hex)."""
    if not mask:
        return []
    names = [name for bit, name in CLOCK_EVENT_REASONS.items() if mask & bit]
    unknown = mask & ~sum(CLOCK_EVENT_REASONS)
    return names + ([f"0x{unknown:x}"] if unknown else [])


def throttled(telemetry: dict | None) -> bool | None:
    """Whether a window's `summary` saw any of `THROTTLE_REASONS`; None without telemetry."""
    if telemetry is None:
        return None
    return any(r in THROTTLE_REASONS for r in telemetry["throttle_reasons"])


class Telemetry:
    """Samples one NVML device between `start()` and `stop()`; reusable for one window after another."""

    def __init__(self, pynvml, handle, interval_s: float = INTERVAL_S, scope: str = "gpu",
                 owns_nvml: bool = False, min_energy_window_s: float = MIN_ENERGY_WINDOW_S):
        self.pynvml, self.handle, self.interval_s, self.scope = pynvml, handle, interval_s, scope
        self.owns_nvml, self.min_energy_window_s = owns_nvml, min_energy_window_s
        self.samples: list[dict] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._energy_mj: int | None = None
        self._power_limit_w: float | None = None
        self._started = 0.0

    def _call(self, function: str, *args):
        return nvml_call(self.pynvml, function, self.handle, *args)

    def _reasons(self) -> int | None:
        mask = self._call("nvmlDeviceGetCurrentClocksEventReasons")
        return mask if mask is not None else self._call("nvmlDeviceGetCurrentClocksThrottleReasons")

    def sample(self) -> dict:
        """Read the GPU once and keep the reading."""
        power_mw = self._call("nvmlDeviceGetPowerUsage")
        reading = {
            "sm_clock_mhz": self._call("nvmlDeviceGetClockInfo", NVML_CLOCK_SM),
            "mem_clock_mhz": self._call("nvmlDeviceGetClockInfo", NVML_CLOCK_MEM),
            "power_w": None if power_mw is None else power_mw / 1000.0,
            "temperature_c": self._call("nvmlDeviceGetTemperature", NVML_TEMPERATURE_GPU),
            "reasons": self._reasons(),
        }
        with self._lock:
            self.samples.append(reading)
        return reading

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def start(self) -> None:
        """Begin a window: read the energy counter, take a first sample, and sample in the background."""
        self.stop_sampling()
        with self._lock:
            self.samples = []
        limit_mw = self._call("nvmlDeviceGetEnforcedPowerLimit")
        self._power_limit_w = None if limit_mw is None else limit_mw / 1000.0
        self._energy_mj = self._call("nvmlDeviceGetTotalEnergyConsumption")
        self._started = time.perf_counter()
        self.sample()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="flopbench-telemetry", daemon=True)
        self._thread.start()

    def stop_sampling(self) -> None:
        """Stop the background thread (if running); safe to call at any time."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None

    def stop(self, tokens: int | None = None) -> dict:
        """End the window: stop sampling, take a last sample and read the energy counter; the `summary`
        with joules per token over `tokens` (the tokens the window's steps processed)."""
        self.stop_sampling()
        self.sample()
        end_mj = self._call("nvmlDeviceGetTotalEnergyConsumption")
        window = time.perf_counter() - self._started
        energy, note, limit = None, None, self._power_limit_w
        if end_mj is None or self._energy_mj is None:
            note = "this GPU reports no energy counter"
        elif window < self.min_energy_window_s:
            note = (f"timed window {window:.2f} s < {self.min_energy_window_s:g} s: too short for the energy counter, "
                    f"which advances about every {ENERGY_UPDATE_S:g} s (more --iters)")
        elif limit and (end_mj - self._energy_mj) / 1000.0 / window > limit:
            note = (f"the energy counter gives {(end_mj - self._energy_mj) / 1000.0 / window:.0f} W over the "
                    f"{window:.2f} s window, above the GPU's {limit:.0f} W power limit: its steps do not resolve "
                    f"this window (more --iters)")
        else:
            energy = (end_mj - self._energy_mj) / 1000.0
        error = 2 * ENERGY_UPDATE_S * limit if energy is not None and limit else None
        return summary(self.samples, energy, window, tokens, self.scope, note, error)

    def close(self) -> None:
        self.stop_sampling()
        if self.owns_nvml:
            nvml_call(self.pynvml, "nvmlShutdown")


def _values(samples: list[dict], key: str) -> list[float]:
    return [s[key] for s in samples if s.get(key) is not None]


def summary(samples: list[dict], energy_j: float | None, window_s: float, tokens: int | None,
            scope: str = "gpu", energy_note: str | None = None, energy_error_j: float | None = None) -> dict:
    """A row's ``telemetry``: SM / memory clock median and min, median power, max temperature, the
    clocks-event reasons seen (`throttled` says whether they held the clock down), energy (with its bound
    from the counter's steps, ``energy_error_j``) and joules per token."""
    def stats(key):
        values = _values(samples, key)
        return {"median": statistics.median(values), "min": min(values)} if values else None

    power, temperature = _values(samples, "power_w"), _values(samples, "temperature_c")
    seen: list[str] = []
    for s in samples:
        seen += [r for r in reason_names(s.get("reasons")) if r not in seen]
    return {
        "sm_clock_mhz": stats("sm_clock_mhz"),
        "mem_clock_mhz": stats("mem_clock_mhz"),
        "power_w": statistics.median(power) if power else None,
        "temperature_c": max(temperature) if temperature else None,
        "throttle_reasons": seen,
        "energy_j": energy_j,
        "energy_error_j": energy_error_j,
        "joules_per_token": energy_j / tokens if energy_j is not None and tokens else None,
        "energy_note": energy_note,
        "samples": len(samples),
        "window_s": window_s,
        "scope": scope,
    }


def open_telemetry(device: torch.device, interval_s: float = INTERVAL_S) -> Telemetry | None:
    """A `Telemetry` of the GPU `device` is on (found as `hardware.detect.nvml_handle` finds it), or None on
    a CPU or where NVML cannot be used. Call `close()` when done."""
    if device.type != "cuda":
        return None
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        return None
    try:
        handle, _ = nvml_handle(pynvml, device.index or 0)
    except Exception:
        nvml_call(pynvml, "nvmlShutdown")
        return None
    chip = physical_handle(pynvml, handle)
    scope = "gpu" if chip is handle else "the whole GPU this MIG slice is part of (other slices' work included)"
    return Telemetry(pynvml, chip, interval_s, scope, owns_nvml=True)
