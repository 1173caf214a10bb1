"""`flopbench gpus --lookup NAME`: the peak a GPU would get, MIG slices scaled by their SMs, without the GPU."""

import json
import subprocess
import sys
import types
from pathlib import Path

from flopbench.cli import main

ROOT = Path(__file__).resolve().parents[2]


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
    assert doc["table_entry"]["rated_clock_mhz"] == {"fp32": 1980, "tf32": 1830, "bf16": 1830, "fp16": 1830,
                                                    "fp8": 1830}  # 1979 = 132 x 8192 x 1830 MHz
    assert "1830 MHz" in doc["table_entry"]["clock_source"]
    assert main(["gpus", "--lookup", "h100-sxm"]) == 0
    out = capsys.readouterr().out
    bf16 = next(line for line in out.splitlines() if line.startswith("bf16"))
    assert bf16.split()[:3] == ["bf16", "989.4", "1830"] and "rated clock: H100 whitepaper" in out
    assert max(len(line) for line in out.splitlines()) <= 100


def fake_pynvml(count: int | None) -> types.ModuleType:
    """A pynvml that reports `count` GPUs; None: one that cannot initialise (no driver library)."""
    module = types.ModuleType("pynvml")

    def init():
        if count is None:
            raise OSError("NVML Shared Library Not Found")

    module.nvmlInit, module.nvmlShutdown, module.nvmlDeviceGetCount = init, lambda: None, lambda: count
    return module


def test_gpus_without_a_gpu_prints_the_table_without_importing_torch(tmp_path):
    """No NVML and no GPU driver's device file: nothing torch could find, so torch (seconds) is not imported."""
    code = ("import sys, types\n"
            "pynvml = types.ModuleType('pynvml')\n"
            "def init():\n    raise OSError('NVML Shared Library Not Found')\n"
            "pynvml.nvmlInit = init\n"
            "sys.modules['pynvml'] = pynvml\n"
            "import flopbench.api.gpus as api\n"
            f"api.GPU_DEVICE_FILES = ({str(tmp_path / 'nvidiactl')!r},)\n"
            "from flopbench.cli import main\n"
            "assert main(['gpus']) == 0\n"
            "print('torch imported:', 'torch' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "H100 SXM" in done.stdout and "detected: no CUDA GPU" in done.stdout
    assert done.stdout.rstrip().endswith("torch imported: False"), done.stdout[-300:]


def test_torch_is_asked_only_where_a_gpu_can_be(monkeypatch, tmp_path):
    from flopbench.api import gpus as api

    device = tmp_path / "kfd"
    monkeypatch.setattr(api, "GPU_DEVICE_FILES", (str(device),))
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(1))
    assert api.nvml_gpu_count() == 1 and api.detection_needs_torch()  # NVML's GPU: torch finds its UUID
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(0))
    assert api.nvml_gpu_count() == 0 and not api.detection_needs_torch()
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(None))
    assert api.nvml_gpu_count() is None and not api.detection_needs_torch()
    device.write_text("")  # ROCm's driver, no NVML: torch.cuda (HIP) may find a GPU
    assert api.detection_needs_torch()
    monkeypatch.setattr(sys, "platform", "win32")  # no device files to look at: ask torch
    device.unlink()
    assert api.detection_needs_torch()
