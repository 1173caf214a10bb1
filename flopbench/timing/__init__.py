"""Timing real steps and what the times mean: the clock and its statistics (`clock`), the one place MFU and
HFU are computed (`rates`), device / precision / out-of-memory handling (`device`), the GEMM ceiling
(`gemm`), torchrun data parallelism (`distributed`), the CI thresholds on a run (`thresholds`), and the
step functions that are timed, eager or compiled (`step`).

(Named `timing`, not `measure`, so that it does not shadow the public function `flopbench.measure`.)"""
