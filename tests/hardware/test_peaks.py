"""The dense peak table: name matching, columns, the one peak lookup."""

import pytest
import torch

from flopbench.api.gpus import gpus
from flopbench.errors import UsageError
from flopbench.hardware import peaks as hardware
from flopbench.output.text import peak_table
from flopbench.timing.device import peak_column


@pytest.mark.parametrize("name, key, bf16", [
    ("NVIDIA H100 80GB HBM3", "h100-sxm", 989.4),
    ("NVIDIA H100 PCIe", "h100-pcie", 756),
    ("NVIDIA H100 NVL", "h100-nvl", 835),
    ("NVIDIA H200", "h200-sxm", 989.4),
    ("NVIDIA H200 NVL", "h200-nvl", 835),
    ("NVIDIA A100-SXM4-80GB", "a100-sxm4-80gb", 312),
    ("NVIDIA A100-SXM4-40GB", "a100-sxm4-40gb", 312),
    ("NVIDIA A100-PCIE-40GB", "a100-pcie-40gb", 312),
    ("NVIDIA A100 80GB PCIe", "a100-pcie-80gb", 312),
    ("NVIDIA A10G", "a10g", 125),
    ("NVIDIA L4", "l4", 121),
    ("NVIDIA L40S", "l40s", 362),
    ("NVIDIA GeForce RTX 4090", "rtx-4090", 165.2),
    ("NVIDIA GeForce RTX 3090", "rtx-3090", 71),
    ("Tesla V100-SXM2-16GB", "v100-sxm2", None),
    ("Tesla V100-PCIE-32GB", "v100-pcie", None),
    ("Tesla T4", "t4", None),
    # newer rows, by the name NVML (NVIDIA) or torch on ROCm (AMD) reports
    ("NVIDIA B200", "b200", 2250),
    ("NVIDIA GB200", "gb200", 2500),
    ("NVIDIA H20", "h20", 148),
    ("NVIDIA GeForce RTX 5090", "rtx-5090", 209.5),
    ("NVIDIA RTX 6000 Ada Generation", "rtx-6000-ada", None),
    ("AMD Instinct MI300X", "mi300x", 1307.4),
    ("AMD Instinct MI325X", "mi325x", 1307.4),
])
def test_real_nvml_names_match_their_entry(name, key, bf16):
    entry = hardware.match_gpu(name)
    assert entry is not None and entry.key == key
    assert hardware.peak_tflops(name, "bf16") == bf16


@pytest.mark.parametrize("name", [
    "NVIDIA B999", "NVIDIA GH200 480GB", "NVIDIA GeForce RTX 4090 D", "NVIDIA GeForce RTX 3090 Ti", "",
    "NVIDIA GeForce RTX 5090 D", "NVIDIA GeForce RTX 5090 Laptop GPU", "NVIDIA B300", "NVIDIA GB300",
    "NVIDIA RTX A6000", "Quadro RTX 6000", "AMD Instinct MI300A", "AMD Instinct MI308X",
])
def test_unknown_or_different_gpus_match_nothing(name):
    assert hardware.match_gpu(name) is None
    assert hardware.peak_tflops(name, "bf16") is None


def test_tf32_and_fp32_peaks():
    assert hardware.peak_tflops("NVIDIA H100 80GB HBM3", "tf32") == 494.7
    assert hardware.peak_tflops("NVIDIA H100 80GB HBM3", "fp32") == 66.9
    assert hardware.peak_tflops("NVIDIA A100-SXM4-80GB", "tf32") == 156
    assert hardware.peak_tflops("NVIDIA A100-SXM4-80GB", "fp32") == 19.5
    assert hardware.peak_tflops("Tesla V100-SXM2-16GB", "tf32") is None
    assert hardware.peak_tflops("Tesla V100-SXM2-16GB", "fp16") == 125


def test_bad_dtype_is_a_usage_error():
    with pytest.raises(UsageError, match="fp4") as info:
        hardware.peak_tflops("NVIDIA H100 PCIe", "fp4")
    assert "fp8" in str(info.value)  # the allowed list names every column


def test_table_is_well_formed():
    table = hardware.load_peak_table()
    assert len({e.key for e in table}) == len(table)
    for e in table:
        assert e.source and e.match
        assert all(v is None or v > 0 for v in e.tflops.values())
        assert hardware.match_gpu(e.display_name) is e and hardware.match_gpu(e.key) is e
    assert "H100 SXM" in peak_table(gpus()["table"])


def test_peak_dtype_follows_tf32_setting():
    assert peak_column(torch.bfloat16) == "bf16"
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("highest")
        assert peak_column(torch.float32) == "fp32"
        torch.set_float32_matmul_precision("high")
        assert peak_column(torch.float32) == "tf32"
    finally:
        torch.set_float32_matmul_precision(before)


def test_resolve_peak():
    assert hardware.resolve_peak("NVIDIA H100 80GB HBM3", "bf16", 500.0) == (500.0, "--peak-tflops")
    assert hardware.resolve_peak(None, "bf16", 123) == (123.0, "--peak-tflops")
    value, source = hardware.resolve_peak("NVIDIA H100 80GB HBM3", "bf16", None)
    assert value == 989.4 and source.startswith("table: H100 SXM bf16")
    value, source = hardware.resolve_peak("NVIDIA B999", "bf16", None)
    assert value is None and "NVIDIA B999" in source and "--peak-tflops" in source
    assert hardware.resolve_peak("Tesla T4", "bf16", None)[0] is None
    assert hardware.resolve_peak(None, "bf16", None)[0] is None
    with pytest.raises(UsageError):
        hardware.resolve_peak("NVIDIA H100 PCIe", "bf16", -1.0)


# --- SM counts, MIG slices, the clock-adjusted peak, `gpus(lookup=...)` -------------------------


def test_full_chip_sm_counts():
    # Whitepapers: H100 SXM5 132 SMs, H100 PCIe 114, A100 108; an empty cell is unknown, never guessed
    sms = {e.key: e.sms for e in hardware.load_peak_table()}
    assert (sms["h100-sxm"], sms["h100-pcie"], sms["h200-sxm"], sms["a100-sxm4-80gb"]) == (132, 114, 132, 108)
    assert sms["a10g"] is None


@pytest.mark.parametrize("name, dtype, sm_count, expected", [
    # 7 compute slices of 14 SMs on an A100 (MIG User Guide: 1g = 1/7): 312 x 14 / 108
    ("NVIDIA A100-SXM4-40GB MIG 1g.5gb", "bf16", None, 312 * 14 / 108),
    ("NVIDIA A100-SXM4-80GB MIG 3g.40gb", "bf16", None, 312 * 42 / 108),
    ("NVIDIA A100-SXM4-40GB MIG 1c.3g.20gb", "tf32", None, 156 * 14 / 108),  # a 1-slice compute instance
    # the SM count the device reports wins: an H100 SXM 1g.10gb slice has 16 of 132 SMs
    ("NVIDIA H100 80GB HBM3 MIG 1g.10gb", "bf16", 16, 989.4 * 16 / 132),
])
def test_mig_slice_gets_its_share_of_the_chip(name, dtype, sm_count, expected):
    value, source = hardware.resolve_peak(name, dtype, None, sm_count=sm_count)
    assert value == pytest.approx(expected)
    assert "SMs (MIG slice" in source and dtype in source


def test_mig_slice_without_a_known_sm_count_has_no_peak():
    value, source = hardware.resolve_peak("NVIDIA H100 80GB HBM3 MIG 1g.10gb", "bf16", None)
    assert value is None and "MIG slice" in source and "--peak-tflops" in source
    # the full chip of the same name is unaffected
    assert hardware.resolve_peak("NVIDIA H100 80GB HBM3", "bf16", None)[0] == 989.4


def test_clock_adjusted_peak_by_hand():
    # 989.4 TFLOP/s rated at 1830 MHz, held at a median 1650 MHz: 989.4 x 1650 / 1830 = 892.1
    value, source = hardware.clock_adjusted_peak(989.4, 1650, 1830, 1980)
    assert value == pytest.approx(892.1, abs=0.05) and "rated 1830 MHz" in source
    # no rated clock: NVML's 1980 MHz maximum, said in the source: 989.4 x 1650 / 1980 = 824.5
    value, source = hardware.clock_adjusted_peak(989.4, 1650, None, 1980)
    assert value == pytest.approx(824.5) and "no rated clock" in source
    assert hardware.clock_adjusted_peak(None, 1650, 1830, 1980) == (None, None)
    assert hardware.clock_adjusted_peak(989.4, None, 1830, 1980) == (None, None)
    assert hardware.clock_adjusted_peak(989.4, 1650, None, None) == (None, None)


def test_rated_clock_of_the_h100_and_h200_is_1830_mhz():
    # H100 whitepaper: 989.4 = 132 SMs x 4096 dense bf16 FLOP/clock x 1830 MHz; fp32 66.9 = 132 x 256 x 1980 MHz
    for name in ("NVIDIA H100 80GB HBM3", "NVIDIA H200", "NVIDIA H100 80GB HBM3 MIG 1g.10gb"):
        assert hardware.rated_clock(name, "bf16")[0] == 1830 and hardware.rated_clock(name, "fp32")[0] == 1980
    assert hardware.rated_clock("NVIDIA A10G", "bf16")[0] is None
    assert hardware.rated_clock(None, "bf16")[0] is None


def test_the_committed_gpt2_xl_row_reads_43_7_percent_against_the_clock():
    """results/h200 gpt2-xl train_step (none): MFU 41.235 % at a median 1725 MHz. Against NVML's 1980 MHz the
    clock-scaled MFU read 41.235 x 1980 / 1725 = 47.3 %; against the rated 1830 MHz: 41.235 x 1830 / 1725 = 43.7 %."""
    mfu, clock = 0.41235162034819034, 1725
    peak_clock, _ = hardware.clock_adjusted_peak(989.4, clock, hardware.rated_clock("NVIDIA H200", "bf16")[0], 1980)
    assert round(100 * mfu * 989.4 / peak_clock, 1) == 43.7


def test_gpus_lookup_gives_the_entry_and_the_peak_per_dtype():
    doc = gpus(lookup="NVIDIA A100-SXM4-40GB MIG 2g.10gb")
    assert doc["table_entry"]["key"] == "a100-sxm4-40gb" and doc["table_entry"]["sms"] == 108
    assert doc["mig"] == {"slice_sms": 28, "chip_sms": 108}
    assert doc["peaks"]["bf16"]["tflops"] == pytest.approx(312 * 28 / 108)
    assert doc["peaks"]["fp32"]["tflops"] == pytest.approx(19.5 * 28 / 108)
    h100 = gpus(lookup="h100-sxm")
    assert h100["mig"] is None and {d: p["tflops"] for d, p in h100["peaks"].items()} == {
        "fp32": 66.9, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4, "fp8": 1979}
    t4 = gpus(lookup="Tesla T4")["peaks"]["bf16"]
    assert t4["tflops"] is None and "no dense bf16 peak" in t4["source"]
    mig_h100 = gpus(lookup="NVIDIA H100 80GB HBM3 MIG 1g.10gb")
    assert mig_h100["peaks"]["bf16"]["tflops"] is None and "MIG slice" in mig_h100["peaks"]["bf16"]["source"]


def test_gpus_lookup_of_an_unknown_name_is_one_usage_line():
    with pytest.raises(UsageError) as info:
        gpus(lookup="NVIDIA B999")
    assert str(info.value).startswith("--lookup 'NVIDIA B999' is not in the peak table") and "\n" not in str(info.value)


# --- fp8: the column, the newer rows, the refusal ------------------------------------------------


@pytest.mark.parametrize("name, not_key", [
    # word boundaries: neither of each pair steals the other's name (rows are tried in file order)
    ("NVIDIA GB200", "b200"), ("NVIDIA B200", "gb200"), ("NVIDIA H20", "h200-sxm"), ("NVIDIA H200", "h20"),
    ("NVIDIA H200 NVL", "h20"), ("AMD Instinct MI300X", "mi325x"), ("AMD Instinct MI325X", "mi300x"),
    ("NVIDIA GeForce RTX 5090", "rtx-4090"), ("NVIDIA RTX 6000 Ada Generation", "l40"),
])
def test_newer_rows_steal_no_names(name, not_key):
    assert hardware.match_gpu(name).key != not_key


@pytest.mark.parametrize("name, fp8, bf16", [
    # datasheet fp8 figures, sparse ones halved: H100 SXM / H200 3958 / 2; H100 PCIe 3026 / 2 (whitepaper);
    # H100 NVL / H200 NVL 3341 / 2; L4 485 / 2; L40S 733 dense; RTX 4090 660.6 / 2 with FP32 accumulate
    ("NVIDIA H100 80GB HBM3", 3958 / 2, 989.4), ("NVIDIA H200", 3958 / 2, 989.4), ("NVIDIA H100 PCIe", 3026 / 2, 756),
    ("NVIDIA H100 NVL", 3341 / 2, 835), ("NVIDIA H200 NVL", 3341 / 2, 835), ("NVIDIA L4", 485 / 2, 121),
    ("NVIDIA L40S", 733, 362), ("NVIDIA GeForce RTX 4090", 660.6 / 2, 165.2),
    # B200: HGX B200 per GPU FP8 9 PFLOPS and BF16 4.5 PFLOPS, both sparse: 9000 / 2, 4500 / 2
    ("NVIDIA B200", 9000 / 2, 4500 / 2),
    # GB200: GB200 NVL72 per GPU FP8 10 PFLOPS and BF16 5 PFLOPS, both sparse: 10000 / 2, 5000 / 2
    ("NVIDIA GB200", 10000 / 2, 5000 / 2),
    # H20 product brief, dense: fp8 296 = 2 x bf16 148
    ("NVIDIA H20", 296, 148),
    # RTX Blackwell whitepaper, RTX 5090 with FP32 accumulate: FP8 838 sparse / 2, FP16 419 sparse / 2
    ("NVIDIA GeForce RTX 5090", 838 / 2, 419 / 2),
    # AMD CDNA3 datasheets: FP8 5229.8 and BF16 2614.9 with sparsity, halved
    ("AMD Instinct MI300X", 5229.8 / 2, 2614.9 / 2), ("AMD Instinct MI325X", 5229.8 / 2, 2614.9 / 2),
])
def test_fp8_and_bf16_cells_are_the_datasheet_figures(name, fp8, bf16):
    assert hardware.peak_tflops(name, "fp8") == pytest.approx(fp8, abs=0.05)
    assert hardware.peak_tflops(name, "bf16") == pytest.approx(bf16, abs=0.05)


@pytest.mark.parametrize("name, display", [
    ("NVIDIA A100-SXM4-80GB", "A100 SXM4 80GB"), ("Tesla V100-SXM2-16GB", "V100 SXM2"), ("Tesla T4", "T4"),
    ("NVIDIA A10G", "A10G"), ("NVIDIA GeForce RTX 3090", "GeForce RTX 3090"),
    ("NVIDIA A100-SXM4-40GB MIG 1g.5gb", "A100 SXM4 40GB"),
])
def test_fp8_is_refused_on_a_gpu_without_fp8_tensor_cores(name, display):
    with pytest.raises(UsageError) as info:
        hardware.check_fp8(name)
    message = str(info.value)
    assert message.startswith(f"--dtype fp8: the {display} has no fp8 tensor cores") and "\n" not in message
    assert "Hopper, Ada, Blackwell or CDNA3" in message and message.endswith("use bf16")


@pytest.mark.parametrize("name", [
    "NVIDIA H100 80GB HBM3", "NVIDIA H100 80GB HBM3 MIG 1g.10gb", "NVIDIA L4", "NVIDIA GeForce RTX 4090",
    "NVIDIA B200", "NVIDIA GB200", "NVIDIA H20", "AMD Instinct MI300X", "NVIDIA RTX 6000 Ada Generation",
    "NVIDIA B999", None,  # unknown or no GPU: the table knows nothing against fp8
])
def test_fp8_is_allowed_on_fp8_gpus_and_unknown_ones(name):
    assert hardware.check_fp8(name) is None


def test_fp8_shows_in_gpus_and_lookup_within_100_columns():
    doc = gpus()
    b200 = next(e for e in doc["table"] if e["key"] == "b200")
    assert b200["fp8_tflops"] == 4500 and b200["rated_clock_mhz"]["fp8"] is None
    text = peak_table(doc["table"])
    assert max(len(line) for line in text.splitlines()) <= 100
    header, rule, *rows = text.splitlines()
    assert header.split()[-1] == "fp8" and "fp8 (e4m3)" in text
    a100 = next(r for r in rows if r.startswith("A100 SXM4 80GB"))
    assert a100.split()[-1] == "-"  # no fp8 on the A100
    lookup = gpus(lookup="NVIDIA H100 80GB HBM3")
    assert lookup["peaks"]["fp8"] == {"tflops": 1979, "rated_clock_mhz": 1830,
                                      "source": lookup["peaks"]["fp8"]["source"]}
    assert lookup["table_entry"]["fp8_tflops"] == 1979
    from flopbench.output.text import render_gpu_lookup
    lines = render_gpu_lookup(gpus(lookup="AMD Instinct MI325X")).splitlines()
    assert max(len(line) for line in lines) <= 100
    assert any(line.startswith("fp8") and "2614.9" in line and "2100" in line for line in lines)
