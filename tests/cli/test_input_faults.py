"""Faults that only a real process shows: a `--model` that never ends (FIFO, /dev/zero), a terminal that
cannot print non-ASCII characters, Ctrl-C twice. Each runs `python -m flopbench` in a subprocess with a
timeout, and must end with its exit code and at most one line on stderr, never a traceback. Also the
number formatting that must survive any size (`output.text.si`, `flops`, `scientific`)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from flopbench.output import text

TINY = ["--n-layer", "1", "--d-model", "32", "--n-head", "2", "--vocab-size", "64", "--seq-len", "8"]


def flopbench(*args, env=None, timeout=30):
    return subprocess.run([sys.executable, "-m", "flopbench", *args], capture_output=True, text=True,
                          check=False, timeout=timeout, env={**os.environ, **(env or {})})


@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "model.fifo"
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("which", ["fifo", "dev_zero", "folder_with_fifo"])
def test_a_model_file_that_never_ends_is_refused(tmp_path, fifo, which):
    """Before: reading a FIFO blocked forever (nobody writes to it) and /dev/zero read until memory ran out."""
    if which == "dev_zero" and not os.path.exists("/dev/zero"):
        pytest.skip("no /dev/zero")
    if which == "folder_with_fifo":
        folder = tmp_path / "checkpoint"
        folder.mkdir()
        os.mkfifo(folder / "config.json")
    model = {"fifo": str(fifo), "dev_zero": "/dev/zero", "folder_with_fifo": str(tmp_path / "checkpoint")}[which]
    kind = {"fifo": "a FIFO", "dev_zero": "a character device", "folder_with_fifo": "a FIFO"}[which]
    r = flopbench("count", "--no-torch", "--model", model)
    assert r.returncode == 2 and r.stdout == "", r
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert f"{kind}, not a regular file" in r.stderr, r.stderr


@pytest.mark.parametrize("args, shown", [
    # The component formulas (2·B·T·d, T²) become 2*B*T*d and T^2.
    (["count", "--no-torch", "--wide", *TINY], ["2*B*T*d*3d", "QK^T: 2*B*T^2*d", "forward ~ 2*N_matmul per token"]),
    # The citation's section sign and the formula's dot.
    (["estimate", "--tokens", "1B"],
     ["Kaplan et al. 2020, sec. 2.1: C = 6*N_matmul*T", "compute   C = 7.412e+17 FLOPs"]),
])
def test_an_ascii_only_terminal_gets_ascii_stand_ins(args, shown):
    """Before: UnicodeEncodeError ('ascii' codec can't encode character '\\xb7') and exit 1."""
    r = flopbench(*args, env={"PYTHONIOENCODING": "ascii"})
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert r.stdout.isascii() and "?" not in r.stdout
    for fragment in shown:
        assert fragment in r.stdout


def test_json_on_an_ascii_terminal_is_the_same_document():
    """`--json` escapes non-ASCII characters (json.dump's ensure_ascii), so it parses to the UTF-8 run's document."""
    ascii_run = flopbench("estimate", "--tokens", "1B", "--json", env={"PYTHONIOENCODING": "ascii"})
    utf8_run = flopbench("estimate", "--tokens", "1B", "--json", env={"PYTHONIOENCODING": "utf-8"})
    assert ascii_run.returncode == utf8_run.returncode == 0 and ascii_run.stdout.isascii()
    doc = json.loads(ascii_run.stdout)
    assert doc == json.loads(utf8_run.stdout)
    assert doc["method_formula"] == "Kaplan et al. 2020, §2.1: C = 6·N_matmul·T"


@pytest.mark.parametrize("gap_s", [0.02, 0.05])
def test_ctrl_c_twice_exits_130_without_a_traceback(gap_s):
    """Before: the second SIGINT, 20-50 ms after the first, hit torch's exit handlers during shutdown: a
    traceback ("Exception ignored in atexit callback ... KeyboardInterrupt") or death by SIGINT (-2)."""
    p = subprocess.Popen([sys.executable, "-m", "flopbench", "run", "--device", "cpu", *TINY, "--iters", "10000",
                          "--warmup", "0", "--no-gemm", "--no-save", "--checkpointing", "none"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        seen = ""
        while "timing" not in seen:  # progress goes to stderr: wait until steps are being timed
            line = p.stderr.readline()
            assert line, f"ended before timing: {seen}"
            seen += line
        time.sleep(0.2)
        p.send_signal(signal.SIGINT)
        time.sleep(gap_s)
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130, (p.returncode, err)
    assert "Traceback" not in err and "flopbench: interrupted" in err, err


def test_numbers_of_any_size_format():
    """Before: si() divided an integer beyond a float's range (1.8e308) and raised OverflowError."""
    assert text.si(3.5e12, ".3f") == "3.500 T" and text.flops(3.51e12) == "3.510 TFLOPs"  # unchanged below 1000 E
    assert text.flops(123 * 10**303) == "1.230e+305 FLOPs"
    assert text.flops(10**5000) == "1.000e+5000 FLOPs"  # Python will not even str() an int this long
    assert text.flops(2_798_948_000_000_000_000_000) == "2.799 ZFLOPs"
    assert text.scientific(99_999_999, ".3f") == "1.000e+08"  # 9.9999999 rounds up: the exponent moves
    assert text.scientific(2.7989e21, ".4g") == f"{2.7989e21:.4g}" == "2.799e+21"
    assert text.flops(float("inf")) == "inf FLOPs" and text.flops(float("nan")) == "nan FLOPs"
    assert text.si(-(10**400), ".2f") == "-1.00e+400 "


def test_text_for_an_encoding():
    s = "2·B·T² ≈ 6·N × T ÷ G ± 1, §2.1 — ok ✓"
    assert text.for_encoding(s, "utf-8") is s
    assert text.for_encoding(s, "ascii") == "2*B*T^2 ~ 6*N x T / G +/- 1, sec. 2.1 - ok ?"
    assert text.for_encoding(s, "latin-1").encode("latin-1")  # stand-ins, then "?" for what is left


# A closed pipe, a full disk: every command (issue 24, item 9). Before: a BrokenPipeError / OSError traceback and
# exit code 1 (or "Exception ignored ... BrokenPipeError" and 120 from the interpreter's own flush at exit).
OUTPUT_COMMANDS = [
    [], ["--help"], ["--version"], ["run", "--help"], ["gpus", "--json"], ["count", "--no-torch", *TINY],
    ["estimate", "--tokens", "1B", "--json"],
    ["run", "--device", "cpu", *TINY, "--iters", "1", "--warmup", "0", "--no-gemm", "--no-save"],
]


@pytest.mark.parametrize("argv", OUTPUT_COMMANDS, ids=[" ".join(a[:2]) or "bare" for a in OUTPUT_COMMANDS])
def test_a_closed_pipe_ends_the_command_quietly_with_141(argv):
    """`flopbench gpus --json | true`: the reader has gone before anything is written. Exit code 141 = 128 +
    SIGPIPE, what the shell reports for `cat` in the same place; nothing on stderr but the command's progress."""
    p = subprocess.Popen([sys.executable, "-m", "flopbench", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    p.stdout.close()  # the reader ends at once
    try:
        _, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 141, (p.returncode, err)
    assert "Traceback" not in err and "Exception ignored" not in err and "error" not in err, err


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
@pytest.mark.parametrize("argv", OUTPUT_COMMANDS, ids=[" ".join(a[:2]) or "bare" for a in OUTPUT_COMMANDS])
def test_a_full_disk_is_one_line_and_exit_2(argv):
    """`flopbench count > /dev/full`: every write fails with ENOSPC."""
    with open("/dev/full", "w") as full:
        r = subprocess.run([sys.executable, "-m", "flopbench", *argv], stdout=full, stderr=subprocess.PIPE, text=True,
                           timeout=120, check=False)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr and "Exception ignored" not in r.stderr, r.stderr
    assert r.stderr.splitlines()[-1] == ("flopbench: error: cannot write the output to stdout (No space left on "
                                         "device)"), r.stderr
    if argv[:1] != ["run"]:  # run says what it builds on stderr first
        assert r.stderr.count("\n") == 1, r.stderr


# Ctrl-C while torch is imported (issue 24, item 10). torch's C extension imports numpy as it initialises and
# takes a failed import, the KeyboardInterrupt too, for "numpy is missing": the interrupt was lost and the
# command ran to its end (exit 0). This replays it: a Ctrl-C lands as torch's C extension is imported, and
# is swallowed there as torch's C code does.
CTRL_C_IN_TORCH_INIT = """
import os, runpy, signal, sys

class CtrlCInTorchInit:
    fired = False

    def find_spec(self, name, path=None, target=None):
        if name == "torch._C" and not self.fired:
            self.fired = True
            try:
                os.kill(os.getpid(), signal.SIGINT)
                for _ in range(10_000):  # Python raises the KeyboardInterrupt here if SIGINT is not held back
                    pass
            except KeyboardInterrupt:
                print("swallowed", file=sys.stderr)  # as torch's C code clears it
        return None

sys.meta_path.insert(0, CtrlCInTorchInit())
sys.argv = ["flopbench", "count", "--model", "tiny", "--seq-len", "8", "--json"]  # a command that imports torch
runpy.run_module("flopbench", run_name="__main__")
"""


def test_ctrl_c_during_torchs_own_initialisation_is_not_lost():
    r = subprocess.run([sys.executable, "-c", CTRL_C_IN_TORCH_INIT], capture_output=True, text=True, timeout=120,
                       check=False)
    assert r.returncode == 130, (r.returncode, r.stderr[-2000:])
    assert r.stdout == "" and "swallowed" not in r.stderr, r.stderr  # the command never started
    assert r.stderr.strip().splitlines()[-1] == "flopbench: interrupted" and "Traceback" not in r.stderr, r.stderr


#: The `flopbench` console script (`flopbench.__main__:program`), saying "started" once Python has found it.
STARTED = ("import sys\nfrom flopbench.__main__ import program\nprint('started', file=sys.stderr, flush=True)\n"
           "sys.argv = ['flopbench', *sys.argv[1:]]\nsys.exit(program())\n")


@pytest.mark.parametrize("delay_s", [0.0, 0.3, 0.6, 0.9, 1.5])
def test_ctrl_c_in_the_first_second_exits_130(delay_s):
    """A long run interrupted at a few moments of its start, counted from the moment the console script has
    found `program` (Python's own startup before that is not flopbench's): flopbench's imports, torch's, the
    first steps (a bounded number of tries, each one must give 130; no assertion on speed)."""
    p = subprocess.Popen([sys.executable, "-c", STARTED, "run", "--device", "cpu", *TINY, "--iters", "10000",
                          "--warmup", "0", "--no-gemm", "--no-save", "--checkpointing", "none"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert p.stderr.readline() == "started\n"
        time.sleep(delay_s)
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130, (p.returncode, err[-2000:])
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "flopbench: interrupted", err
