"""`flopbench gpus --lookup NAME`: the peak a GPU would get, MIG slices scaled by their SMs, without the GPU."""

import json

from flopbench.cli import main


def test_lookup_of_a_mig_slice_scales_by_its_sms(capsys):
    assert main(["gpus", "--lookup", "NVIDIA A100-SXM4-40GB MIG 1g.5gb", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    # A100: 312 dense bf16 TFLOP/s on 108 SMs; a 1g.5gb slice has 14 of them: 312 x 14 / 108 = 40.44
    assert doc["mig"] == {"slice_sms": 14, "chip_sms": 108}
    assert abs(doc["peaks"]["bf16"]["tflops"] - 312 * 14 / 108) < 1e-9


def test_lookup_text_and_unknown_name(capsys):
    assert main(["gpus", "--lookup", "h100-sxm"]) == 0
    out = capsys.readouterr().out
    assert "H100 SXM" in out and "989.4" in out and "494.7" in out
    assert main(["gpus", "--lookup", "b999"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'b999' is not in the peak table" in err


def test_lookup_shows_the_rated_clock(capsys):
    # H100 whitepaper: 989.4 = 132 SMs x 4096 dense bf16 FLOP/clock x 1830 MHz; fp32 66.9 = 132 x 256 x 1980 MHz
    assert main(["gpus", "--lookup", "NVIDIA H100 80GB HBM3", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["peaks"]["bf16"]["rated_clock_mhz"] == 1830 and doc["peaks"]["fp32"]["rated_clock_mhz"] == 1980
    assert doc["table_entry"]["rated_clock_mhz"] == {"fp32": 1980, "tf32": 1830, "bf16": 1830, "fp16": 1830}
    assert "1830 MHz" in doc["table_entry"]["clock_source"]
    assert main(["gpus", "--lookup", "h100-sxm"]) == 0
    out = capsys.readouterr().out
    bf16 = next(line for line in out.splitlines() if line.startswith("bf16"))
    assert bf16.split()[:3] == ["bf16", "989.4", "1830"] and "rated clock: H100 whitepaper" in out
    assert max(len(line) for line in out.splitlines()) <= 100
