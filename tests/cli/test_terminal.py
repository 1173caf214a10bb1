"""What a new user sees first: bare `flopbench`, `--version`, and numbers formatted for people."""

import subprocess
import sys
from pathlib import Path

from flopbench import __version__
from flopbench.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_bare_flopbench_lists_the_commands(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    for command in ("count", "run", "infer", "gpus", "sweep", "report", "estimate"):
        assert f"    {command} " in out


def test_version():
    done = subprocess.run([sys.executable, "-m", "flopbench", "--version"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == f"flopbench {__version__}"


def test_one_gpu_is_singular_and_a_small_gemm_ceiling_keeps_its_digits(capsys):
    assert main(["estimate", "--model", "gpt2", "--tokens", "1B"]) == 0
    assert "days on 1 GPU\n" in capsys.readouterr().out
    assert main(["estimate", "--model", "gpt2", "--tokens", "1B", "--gpus", "8"]) == 0
    assert "days on 8 GPUs\n" in capsys.readouterr().out
    assert main(["run", "--model", "tiny", "--n-layer", "1", "--seq-len", "16", "--batch-size", "1", "--iters", "1",
                 "--warmup", "0", "--checkpointing", "none", "--device", "cpu", "--no-save"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("GEMM ceiling:"))
    shown = line.split()[2]  # a CPU reaches ~0.02-0.3 TFLOP/s: three significant digits, never "0.0"
    assert float(shown) > 0 and shown != "0.0" and len(shown.replace("0.", "").lstrip("0")) >= 2
