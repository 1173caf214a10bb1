"""Every cell of peaks.csv pinned to its published figure (issue 24, item 17: a changed cell must fail a test).

The numbers below are typed in from the documents named per row, not read from peaks.csv: dense TFLOP/s
(a datasheet's 2:4-sparse figure halved where it prints only that), full-chip SMs, memory GB/s, and the SM
clock (MHz) each figure is rated at. A second method checks the clocks: peak = SMs x dense FLOP/clock/SM
(from the architecture whitepapers) x clock, within the datasheets' rounding."""

import pytest

from flopbench.hardware import peaks as hardware

DTYPES = ("fp32", "tf32", "bf16", "fp16")
N = None

# key: (document, (fp32, tf32, bf16, fp16) TFLOP/s, SMs, GB/s, (fp32, tf32, bf16, fp16) rated clock MHz)
PUBLISHED = {
    "h100-pcie": ("H100 whitepaper, H100 PCIe; H100 PCIe datasheet 2 TB/s",
                  (51.2, 378, 756, 756), 114, 2000, (1755, 1620, 1620, 1620)),
    "h100-nvl": ("H100 NVL datasheet: 60 fp32, sparse tf32 835 / bf16 1671 halved, 3.9 TB/s",
                 (60, 417.5, 835, 835), 132, 3900, (N, 1545, 1545, 1545)),
    "h100-sxm": ("H100 whitepaper, H100 SXM5 (1830 MHz boost); H100 SXM datasheet 3.35 TB/s",
                 (66.9, 494.7, 989.4, 989.4), 132, 3350, (1980, 1830, 1830, 1830)),
    "h200-nvl": ("H200 NVL datasheet: same GH100 rates as H100 NVL, 4.8 TB/s",
                 (60, 417.5, 835, 835), 132, 4800, (N, 1545, 1545, 1545)),
    "h200-sxm": ("H200 SXM datasheet: same GH100 rates as H100 SXM5, 4.8 TB/s",
                 (66.9, 494.7, 989.4, 989.4), 132, 4800, (1980, 1830, 1830, 1830)),
    "a100-sxm4-80gb": ("A100 datasheet, 80GB SXM: 2,039 GB/s; A100 whitepaper 1410 MHz",
                       (19.5, 156, 312, 312), 108, 2039, (1410,) * 4),
    "a100-sxm4-40gb": ("A100 datasheet, 40GB SXM: 1,555 GB/s", (19.5, 156, 312, 312), 108, 1555, (1410,) * 4),
    "a100-pcie-80gb": ("A100 datasheet, 80GB PCIe: 1,935 GB/s", (19.5, 156, 312, 312), 108, 1935, (1410,) * 4),
    "a100-pcie-40gb": ("A100 datasheet, 40GB PCIe: 1,555 GB/s", (19.5, 156, 312, 312), 108, 1555, (1410,) * 4),
    "a10g": ("A10 datasheet bf16/fp16 (AWS G5: 600 GB/s)", (N, N, 125, 125), N, 600, (N,) * 4),
    "a10": ("A10 datasheet", (31.2, 62.5, 125, 125), 72, 600, (1695,) * 4),
    "l40s": ("L40S datasheet: tf32 183 dense (366 sparse), bf16 362.05 dense (733 sparse)",
             (91.6, 183, 362, 362), 142, 864, (2520, 2520, 2490, 2490)),
    "l40": ("L40 datasheet: tf32 90.5, bf16 181.05", (90.5, 90.5, 181, 181), 142, 864, (2490,) * 4),
    "l4": ("L4 datasheet: sparse tf32 120, bf16 242 halved", (30.3, 60, 121, 121), 58, 300, (2040,) * 4),
    "rtx-4090": ("Ada whitepaper, RTX 4090 (FP32 accumulate); 1,008 GB/s",
                 (82.6, 82.6, 165.2, 165.2), 128, 1008, (2520,) * 4),
    "rtx-3090": ("GA102 whitepaper, RTX 3090 (FP32 accumulate); 936 GB/s", (35.6, 35.6, 71, 71), 82, 936, (1695,) * 4),
    "v100-sxm2": ("V100 datasheet, SXM2: 15.7 / 125 tensor; 900 GB/s", (15.7, N, N, 125), 80, 900, (1530, N, N, 1530)),
    "v100-pcie": ("V100 datasheet, PCIe: 14 / 112 tensor; 900 GB/s", (14, N, N, 112), 80, 900, (1367, N, N, 1367)),
    "v100s-pcie": ("V100S datasheet: 16.4 / 130 tensor; 1,134 GB/s", (16.4, N, N, 130), 80, 1134, (1597, N, N, 1597)),
    "t4": ("T4 datasheet: 8.1 / 65 mixed-precision tensor; 320 GB/s", (8.1, N, N, 65), 40, 320, (1590, N, N, 1590)),
}

# dense FLOP/clock per SM, (fp32, tf32, bf16, fp16), from the architecture whitepapers: Hopper 128 FP32 cores
# and 1024 dense FP16 FMA per SM; GA100 64 FP32 cores, 512 FP16 FMA; Ada / GA102 128 FP32 cores, GeForce and
# the L40 at half tensor rate with FP32 accumulate; Volta / Turing 8 tensor cores x 64 FMA
PER_SM = {
    "hopper": (256, 2048, 4096, 4096), "ga100": (128, 1024, 2048, 2048), "ga102-pro": (256, 512, 1024, 1024),
    "ga102-geforce": (256, 256, 512, 512), "ada-pro": (256, 512, 1024, 1024), "ada-half": (256, 256, 512, 512),
    "volta": (128, N, N, 1024), "turing": (128, N, N, 1024),
}
ARCH = {"h100-pcie": "hopper", "h100-nvl": "hopper", "h100-sxm": "hopper", "h200-nvl": "hopper",
        "h200-sxm": "hopper", "a100-sxm4-80gb": "ga100", "a100-sxm4-40gb": "ga100", "a100-pcie-80gb": "ga100",
        "a100-pcie-40gb": "ga100", "a10": "ga102-pro", "l40s": "ada-pro", "l40": "ada-half", "l4": "ada-pro",
        "rtx-4090": "ada-half", "rtx-3090": "ga102-geforce", "v100-sxm2": "volta", "v100-pcie": "volta",
        "v100s-pcie": "volta", "t4": "turing"}


def test_the_table_has_exactly_the_published_rows():
    assert [e.key for e in hardware.load_peak_table()] == list(PUBLISHED)


@pytest.mark.parametrize("key", PUBLISHED)
def test_every_cell_is_its_published_figure(key):
    document, tflops, sms, gbps, clocks = PUBLISHED[key]
    entry = next(e for e in hardware.load_peak_table() if e.key == key)
    assert tuple(entry.tflops[d] for d in DTYPES) == tflops, document
    assert entry.sms == sms and entry.mem_gbps == gbps, document
    assert tuple(entry.rated_clock_mhz[d] for d in DTYPES) == clocks, document
    assert entry.source and entry.mem_source and (entry.clock_source or all(c is None for c in clocks))


def test_the_l40s_tf32_cell_is_the_dense_figure():
    # L40S datasheet: TF32 Tensor Core 183 | 366 (sparse); the table holds dense figures only
    assert hardware.peak_tflops("NVIDIA L40S", "tf32") == 183
    assert hardware.peak_tflops("NVIDIA L40S", "tf32") == pytest.approx(366 / 2)


@pytest.mark.parametrize("key", ARCH)
def test_rated_clocks_give_the_peaks(key):
    """peak = SMs x dense FLOP/clock/SM x rated clock: within 1.1 % (the datasheets round: L4 tf32 60.6 is
    printed 60, V100S fp16 130.8 is printed 130)."""
    _, tflops, sms, _, clocks = PUBLISHED[key]
    for d, peak, per_sm, clock in zip(DTYPES, tflops, PER_SM[ARCH[key]], clocks, strict=True):
        if peak is None or clock is None:
            continue
        assert sms * per_sm * clock * 1e6 / 1e12 == pytest.approx(peak, rel=0.011), (key, d)


def test_a_mig_slice_gets_no_whole_chip_bandwidth():
    # the table holds the chip's bandwidth; a slice's share of the memory system is not in it: None, never 1555
    assert hardware.resolve_bandwidth("NVIDIA A100-SXM4-40GB", None)[0] == 1555
    value, source = hardware.resolve_bandwidth("NVIDIA A100-SXM4-40GB MIG 1g.5gb", None)
    assert value is None and "MIG" in source and "--peak-gbps" in source
    assert hardware.resolve_bandwidth("NVIDIA H100 80GB HBM3 MIG 3g.40gb", None)[0] is None
