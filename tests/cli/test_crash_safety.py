"""Crash safety: a sweep killed with SIGKILL keeps every finished row intact, and --resume continues."""

import json
import os
import signal
import subprocess
import sys
import time

from flopbench.api.sweep import grid, load_spec, row_key

SPEC = """
name = "crash"
models = [{ name = "m", preset = "tiny", n_layer = 2, d_model = 64, n_head = 2, vocab_size = 256 }]
seq_len = [16, 32, 48, 64]
batch_size = [2]
checkpointing = ["none", "full"]
dtype = ["fp32"]
device = "cpu"
warmup = 1
iters = 20
gemm = false
modes = ["fwd_bwd"]
"""


def sweep_cmd(spec, out, *extra):
    return [sys.executable, "-m", "flopbench", "sweep", "--spec", str(spec), "--out", str(out), *extra]


def test_sigkill_mid_sweep_then_resume(tmp_path):
    spec = tmp_path / "crash.toml"
    spec.write_text(SPEC)
    out = tmp_path / "out"
    rows = out / "crash" / "rows.jsonl"
    proc = subprocess.Popen(sweep_cmd(spec, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if rows.exists() and len(rows.read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the sweep finished before it could be killed: make the spec longer"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    text = rows.read_text()
    assert text.endswith("\n")  # no half-written line: each row is one write, flushed and fsynced
    killed = [json.loads(line) for line in text.splitlines()]
    expected = len(grid(load_spec(spec)))
    assert 2 <= len(killed) < expected
    assert all(r["status"] == "ok" and r["time_ms"]["n"] == 20 for r in killed)

    done = subprocess.run(sweep_cmd(spec, out, "--resume"), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    final = [json.loads(line) for line in rows.read_text().splitlines()]
    assert final[: len(killed)] == killed  # the finished rows are untouched
    keys = [row_key(r) for r in final]
    assert len(final) == expected and len(set(keys)) == expected  # every point once, none twice
