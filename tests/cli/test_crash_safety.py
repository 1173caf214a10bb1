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


SMALL = """
name = "s"
models = [{ name = "m1", preset = "tiny", n_layer = 1, d_model = 32, n_head = 2, vocab_size = 64, max_seq_len = 16 }]
seq_len = [8, 16]
batch_size = [2]
checkpointing = ["none", "full"]
dtype = ["fp32"]
device = "cpu"
warmup = 0
iters = 1
gemm = false
modes = ["fwd_bwd"]
"""


def test_ctrl_c_during_the_last_rows_csv_rewrite_keeps_both_files_whole(tmp_path, capsys, monkeypatch):
    """Ctrl-C lands in the rename of rows.csv after the 4th row: the row is in rows.jsonl, so it is counted,
    rows.csv is rebuilt to match, no temp file is left, and --resume has nothing to run or repair."""
    from flopbench.cli import main

    spec = tmp_path / "s.toml"
    spec.write_text(SMALL)
    real_replace, csv_renames = os.replace, []

    def replace(src, dst):
        if str(dst).endswith("rows.csv"):
            csv_renames.append(dst)
            if len(csv_renames) == 4:
                raise KeyboardInterrupt
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    code = main(["sweep", "--spec", str(spec), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    monkeypatch.undo()
    folder = tmp_path / "out" / "s"
    jsonl = [json.loads(line) for line in (folder / "rows.jsonl").read_text().splitlines()]
    assert code == 130 and len(jsonl) == 4
    assert "interrupted: 4 new rows kept" in err  # every row in the file, none undercounted
    csv = (folder / "rows.csv").read_text().splitlines()
    assert len(csv) == 1 + 4 and not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]

    code = main(["sweep", "--spec", str(spec), "--out", str(tmp_path / "out"), "--resume"])
    err = capsys.readouterr().err
    assert code == 0 and "resume: 4 rows already in" in err and "rebuilt" not in err
    assert (folder / "rows.csv").read_text().splitlines() == csv
