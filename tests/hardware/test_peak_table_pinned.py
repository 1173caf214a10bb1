"""Every cell of peaks.csv pinned to its published figure: a changed cell must fail a test.

The numbers below are typed in from the documents named per row, not read from peaks.csv: dense TFLOP/s
(a datasheet's 2:4-sparse figure halved where it prints only that), full-chip SMs, memory GB/s, and the SM
clock (MHz) each figure is rated at. A second method checks the clocks: peak = SMs x dense FLOP/clock/SM
(from the architecture whitepapers) x clock, within the datasheets' rounding."""

import pytest

from flopbench.hardware import peaks as hardware

DTYPES = ("fp32", "tf32", "bf16", "fp16", "fp8")
N = None

# key: (document, (fp32, tf32, bf16, fp16, fp8) TFLOP/s, SMs, GB/s, (fp32, tf32, bf16, fp16, fp8) rated clock MHz)
# fp8: e4m3 tensor-core matmuls with FP32 accumulate, dense; None on chips without fp8 tensor cores
PUBLISHED = {
    # NVIDIA GB200 NVL72 specifications, per GPU: sparse TF32 2.5 / BF16 5 / FP8 10 PFLOPS, so 2500 / 2 = 1250,
    # 5000 / 2 = 2500, 10000 / 2 = 5000; FP32 80 (no sparsity); 8 TB/s; no SM count or clock published
    "gb200": ("GB200 NVL72 specifications (per GPU)", (80, 1250, 2500, 2500, 5000), N, 8000, (N,) * 5),
    # HGX B200 specifications, per GPU: sparse TF32 2.2 / BF16 4.5 / FP8 9 PFLOPS halved: 1100, 2250, 4500; FP32 75
    "b200": ("HGX B200 specifications (per GPU), 7.7 TB/s", (75, 1100, 2250, 2250, 4500), N, 7700, (N,) * 5),
    "h100-pcie": ("H100 whitepaper, H100 PCIe (fp8 3026 sparse / 2 = 1513); H100 PCIe datasheet 2 TB/s",
                  (51.2, 378, 756, 756, 1513), 114, 2000, (1755, 1620, 1620, 1620, 1620)),
    "h100-nvl": ("H100 NVL datasheet: 60 fp32, sparse tf32 835 / bf16 1671 / fp8 3341 halved, 3.9 TB/s",
                 (60, 417.5, 835, 835, 3341 / 2), 132, 3900, (N, 1545, 1545, 1545, 1545)),
    "h100-sxm": ("H100 whitepaper, H100 SXM5 (1830 MHz boost); datasheet fp8 3958 sparse / 2 = 1979; 3.35 TB/s",
                 (66.9, 494.7, 989.4, 989.4, 3958 / 2), 132, 3350, (1980, 1830, 1830, 1830, 1830)),
    "h200-nvl": ("H200 NVL datasheet: same GH100 rates as H100 NVL (fp8 3341 / 2), 4.8 TB/s",
                 (60, 417.5, 835, 835, 1670.5), 132, 4800, (N, 1545, 1545, 1545, 1545)),
    "h200-sxm": ("H200 SXM datasheet: same GH100 rates as H100 SXM5 (fp8 3958 / 2), 4.8 TB/s",
                 (66.9, 494.7, 989.4, 989.4, 1979), 132, 4800, (1980, 1830, 1830, 1830, 1830)),
    # the H20 product brief prints dense figures only (no public datasheet): bf16 148, fp8 296 = 2 x 148; 4.0 TB/s
    "h20": ("H20 product brief: dense bf16/fp16 148, fp8 296", (N, N, 148, 148, 296), N, 4000, (N,) * 5),
    "a100-sxm4-80gb": ("A100 datasheet, 80GB SXM: 2,039 GB/s; A100 whitepaper 1410 MHz; no fp8",
                       (19.5, 156, 312, 312, N), 108, 2039, (1410,) * 4 + (N,)),
    "a100-sxm4-40gb": ("A100 datasheet, 40GB SXM: 1,555 GB/s", (19.5, 156, 312, 312, N), 108, 1555, (1410,) * 4 + (N,)),
    "a100-pcie-80gb": ("A100 datasheet, 80GB PCIe: 1,935 GB/s", (19.5, 156, 312, 312, N), 108, 1935,
                       (1410,) * 4 + (N,)),
    "a100-pcie-40gb": ("A100 datasheet, 40GB PCIe: 1,555 GB/s", (19.5, 156, 312, 312, N), 108, 1555,
                       (1410,) * 4 + (N,)),
    "a10g": ("A10 datasheet bf16/fp16 (AWS G5: 600 GB/s)", (N, N, 125, 125, N), N, 600, (N,) * 5),
    "a10": ("A10 datasheet", (31.2, 62.5, 125, 125, N), 72, 600, (1695,) * 4 + (N,)),
    "l40s": ("L40S datasheet: tf32 183 dense (366 sparse), bf16 362.05 dense (733 sparse), fp8 733 (1,466 sparse)",
             (91.6, 183, 362, 362, 733), 142, 864, (2520, 2520, 2490, 2490, 2520)),
    "l40": ("L40 datasheet: tf32 90.5, bf16 181.05, fp8 362 (724 sparse)", (90.5, 90.5, 181, 181, 362), 142, 864,
            (2490,) * 5),
    "l4": ("L4 datasheet: sparse tf32 120, bf16 242, fp8 485 halved", (30.3, 60, 121, 121, 485 / 2), 58, 300,
           (2040,) * 5),
    # RTX Blackwell whitepaper, RTX 5090: FP16 with FP32 accumulate 209.5 (419 sparse), FP8 with FP32 accumulate
    # 419 (838 sparse: 838 / 2 = 419); 1,792 GB/s
    "rtx-5090": ("RTX Blackwell whitepaper, RTX 5090 (FP32 accumulate)", (104.8, 104.8, 209.5, 209.5, 838 / 2), 170,
                 1792, (2407,) * 5),
    "rtx-4090": ("Ada whitepaper, RTX 4090 (FP32 accumulate; fp8 660.6 sparse / 2); 1,008 GB/s",
                 (82.6, 82.6, 165.2, 165.2, 660.6 / 2), 128, 1008, (2520,) * 5),
    "rtx-3090": ("GA102 whitepaper, RTX 3090 (FP32 accumulate); 936 GB/s", (35.6, 35.6, 71, 71, N), 82, 936,
                 (1695,) * 4 + (N,)),
    # RTX 6000 Ada datasheet: FP32 91.1, its one tensor figure FP8 1,457 sparse: 1457 / 2 = 728.5; 960 GB/s
    "rtx-6000-ada": ("RTX 6000 Ada datasheet", (91.1, N, N, N, 1457 / 2), 142, 960, (2505, N, N, N, 2505)),
    "v100-sxm2": ("V100 datasheet, SXM2: 15.7 / 125 tensor; 900 GB/s", (15.7, N, N, 125, N), 80, 900,
                  (1530, N, N, 1530, N)),
    "v100-pcie": ("V100 datasheet, PCIe: 14 / 112 tensor; 900 GB/s", (14, N, N, 112, N), 80, 900,
                  (1367, N, N, 1367, N)),
    "v100s-pcie": ("V100S datasheet: 16.4 / 130 tensor; 1,134 GB/s", (16.4, N, N, 130, N), 80, 1134,
                   (1597, N, N, 1597, N)),
    "t4": ("T4 datasheet: 8.1 / 65 mixed-precision tensor; 320 GB/s", (8.1, N, N, 65, N), 40, 320,
           (1590, N, N, 1590, N)),
    # AMD CDNA3 datasheets (MI300X, MI325X): sparse tf32 1307.4 / bf16 2614.9 / fp8 5229.8 halved: 653.7, 1307.4,
    # 2614.9; FP32 163.4; 304 CUs at a 2100 MHz peak engine clock; 5.3 TB/s (MI300X), 6 TB/s (MI325X)
    "mi300x": ("AMD Instinct MI300X datasheet", (163.4, 653.7, 1307.4, 1307.4, 2614.9), 304, 5300, (2100,) * 5),
    "mi325x": ("AMD Instinct MI325X datasheet", (163.4, 653.7, 1307.4, 1307.4, 2614.9), 304, 6000, (2100,) * 5),
}

# dense FLOP/clock per SM (per CU on CDNA3), (fp32, tf32, bf16, fp16, fp8), from the architecture whitepapers:
# Hopper 128 FP32 cores and 1024 dense FP16 FMA per SM, fp8 twice that; GA100 64 FP32 cores, 512 FP16 FMA; Ada /
# GA102 / GeForce Blackwell 128 FP32 cores, GeForce and the L40 at half tensor rate with FP32 accumulate; Volta /
# Turing 8 tensor cores x 64 FMA; CDNA3 (the MI300X datasheet's rates / 304 CUs / 2100 MHz)
PER_SM = {
    "hopper": (256, 2048, 4096, 4096, 8192), "ga100": (128, 1024, 2048, 2048, N),
    "ga102-pro": (256, 512, 1024, 1024, N), "ga102-geforce": (256, 256, 512, 512, N),
    "ada-pro": (256, 512, 1024, 1024, 2048), "ada-half": (256, 256, 512, 512, 1024),
    "blackwell-geforce": (256, 256, 512, 512, 1024), "volta": (128, N, N, 1024, N), "turing": (128, N, N, 1024, N),
    "cdna3": (256, 1024, 2048, 2048, 4096),
}
ARCH = {"h100-pcie": "hopper", "h100-nvl": "hopper", "h100-sxm": "hopper", "h200-nvl": "hopper",
        "h200-sxm": "hopper", "a100-sxm4-80gb": "ga100", "a100-sxm4-40gb": "ga100", "a100-pcie-80gb": "ga100",
        "a100-pcie-40gb": "ga100", "a10": "ga102-pro", "l40s": "ada-pro", "l40": "ada-half", "l4": "ada-pro",
        "rtx-5090": "blackwell-geforce", "rtx-4090": "ada-half", "rtx-3090": "ga102-geforce",
        "rtx-6000-ada": "ada-pro", "v100-sxm2": "volta", "v100-pcie": "volta", "v100s-pcie": "volta", "t4": "turing",
        "mi300x": "cdna3", "mi325x": "cdna3"}


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
