"""The Python API in `flopbench/__init__.py`: cheap import, counts by hand, the peak table, DataFrames, the results
files a run writes (fsynced rows, rows.csv replaced whole), the README example."""

import csv
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import flopbench
from flopbench import UsageError
from flopbench.cli import main

ROOT = Path(__file__).resolve().parents[2]
SMALL = flopbench.ModelConfig("small", n_layer=1, d_model=32, n_head=2, vocab_size=64, max_seq_len=16)
FAST = dict(batch_size=2, seq_len=16, device="cpu", warmup=0, iters=2, gemm=False, checkpointing="none")


def test_import_is_cheap_and_names_are_served_lazily():
    code = ("import sys, flopbench; assert 'torch' not in sys.modules and 'pandas' not in sys.modules; "
            "assert {'profile', 'measure', 'to_dataframe', 'Profile', 'RunOptions'} <= set(dir(flopbench)); "
            "from flopbench import profile; assert profile.__module__ == 'flopbench.api.profile'; "
            "assert callable(flopbench.profile) and callable(flopbench.measure)")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
    for name in flopbench.__all__:
        assert getattr(flopbench, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        flopbench.nope


def test_count_of_a_preset_name_by_hand(capsys):
    # GPT-2 small, B=2, T=64, by hand: d=768, L=12, V=50257, d_ff=4·d.
    # N_matmul = 12·d²·L + d·V = 84,934,656 + 38,597,376 = 123,532,032
    # forward = 2·B·T·N_matmul + 4·B·T²·d·L = 31,624,200,192 + 301,989,888 = 31,926,190,080; train = 3 x forward
    # checkpointing re-runs each block (2·B·T·12·d² + 4·B·T²·d = 1,837,105,152) but its MLP down-projection
    # (2·B·T·4·d·d = 603,979,776): + 12 x 1,233,125,376 = 14,797,504,512
    # (without the early stop, + 12 x 1,837,105,152)
    doc = flopbench.count("gpt2", 2, 64, fvcore=False)
    assert doc["params"]["matmul"] == 123_532_032
    assert doc["params"]["total"] == 124_439_808  # the published GPT-2 small (openai-community/gpt2)
    forward = 31_926_190_080
    assert doc["analytic"]["forward"] == forward == 2 * 2 * 64 * 123_532_032 + 4 * 2 * 64**2 * 768 * 12
    assert doc["analytic"]["train"] == 3 * forward
    assert doc["analytic"]["train_recompute"] == 3 * forward + 14_797_504_512 == 110_576_074_752
    assert doc["analytic"]["train_recompute_no_early_stop"] == 3 * forward + 12 * 1_837_105_152
    assert doc["analytic"]["estimates"]["6N"] == 6 * 123_532_032 * 2 * 64
    torch_counted = doc["counted"]["torch"]
    assert (torch_counted["forward"], torch_counted["train"], torch_counted["train_recompute"]) == (
        forward, 3 * forward, 110_576_074_752)
    assert "fvcore" not in doc["counted"]
    # The CLI prints the same document (light check: it calls count()).
    assert main(["count", "--model", "gpt2", "--batch-size", "2", "--seq-len", "64", "--no-fvcore", "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)
    assert cli["analytic"]["forward"] == forward
    assert cli["reconciliation"] == json.loads(json.dumps(doc["reconciliation"]))


def test_run_with_keyword_options_and_to_dataframe():
    doc = flopbench.run(SMALL, **FAST, peak_tflops=2.0, out=None, progress=lambda m: None)
    df = flopbench.to_dataframe(doc)
    assert list(df["mode"]) == ["forward", "fwd_bwd", "train_step"] and len(df) == len(doc["rows"])
    assert {"time_ms.median_ms", "mfu", "hfu", "config.d_model"} <= set(df.columns)
    assert df["mfu"].tolist() == pytest.approx([r["mfu"] for r in doc["rows"]])
    assert (df["peak_tflops"] == 2.0).all()
    both = flopbench.to_dataframe([doc, doc])
    assert len(both) == 2 * len(df)


def test_to_dataframe_of_files_count_documents_and_plain_rows(tmp_path):
    doc = flopbench.run(SMALL, **FAST, modes=("forward",), out=str(tmp_path), progress=lambda m: None)
    from_files = flopbench.to_dataframe(tmp_path)
    assert len(from_files) == 1 and from_files["mode"][0] == "forward"
    assert flopbench.read_rows(tmp_path).equals(from_files)
    count = flopbench.to_dataframe(flopbench.count(SMALL, 1, 16, fvcore=False))
    assert len(count) == 1 and count["analytic.forward"][0] == 2 * 16 * (12 * 32 * 32 + 32 * 64) + 4 * 16 * 16 * 32
    rows = flopbench.to_dataframe([{"a": 1, "b": {"c": 2}}, {"a": 3, "b": {"c": 4}}])
    assert rows.to_dict("list") == {"a": [1, 3], "b.c": [2, 4]}
    assert isinstance(rows, pd.DataFrame) and doc["files"] is not None


def _linear():
    import torch

    return torch.nn.Linear(4, 4)


def _x():
    import torch

    return torch.ones(2, 4)


@pytest.mark.parametrize("call, fragment", [
    (lambda: flopbench.run(SMALL, batch=2), "run(): unknown option 'batch'; allowed: batch_size, seq_len"),
    (lambda: flopbench.run(SMALL, flopbench.RunOptions(), out=None), "pass options=RunOptions(...) or keyword"),
    (lambda: flopbench.count(42), "config=int: pass a ModelConfig or a preset name (gpt2, "),
    (lambda: flopbench.count("gpt5"), "unknown model 'gpt5'"),
    (lambda: flopbench.to_dataframe(3.5), "to_dataframe(float): pass a run or count document"),
    (lambda: flopbench.to_dataframe("no/such/file.jsonl"), "no/such/file.jsonl: no such file"),
    # Issue 24, item 13: each of these was a TypeError from deep inside (or, for compile="yes", accepted and
    # recorded as "yes"); run(warmup=2.5) failed only after timing had started.
    (lambda: flopbench.estimate("gpt2", "1B", mfu="0.5"), "estimate(): mfu='0.5' is not allowed: give a number or None"),
    (lambda: flopbench.run(SMALL, **{**FAST, "warmup": 2.5}), "run(): warmup=2.5 is not allowed: give an integer"),
    (lambda: flopbench.run(SMALL, **FAST, out=123), "run(): out=123 is not allowed: give a str or a Path or None"),
    (lambda: flopbench.run(SMALL, **FAST, modes="forward"), "run(): modes='forward' is not allowed: give a tuple of strs"),
    (lambda: flopbench.run(SMALL, {"batch_size": 2}), "run(): options={'batch_size': 2} is not allowed: give a RunOptions"),
    (lambda: flopbench.infer(SMALL, out=123), "infer(): out=123 is not allowed: give a str or a Path or None"),
    (lambda: flopbench.infer(SMALL, peak_tflops="10"), "infer(): peak_tflops='10' is not allowed: give a number or None"),
    (lambda: flopbench.infer(SMALL, compile="yes"), "infer(): compile='yes' is not allowed: give True or False"),
    (lambda: flopbench.infer(SMALL, batch_size=True), "infer(): batch_size=True is not allowed: give an integer"),
    (lambda: flopbench.report(123), "report(): results=123 is not allowed: give a str or a Path"),
    (lambda: flopbench.sweep({"models": ["tiny"]}), "sweep(): spec={'models': ['tiny']} is not allowed: give a Spec or a str"),
    (lambda: flopbench.sweep("x.toml", resume="yes"), "sweep(): resume='yes' is not allowed: give True or False"),
    (lambda: flopbench.count("gpt2", 2.0), "count(): batch_size=2.0 is not allowed: give an integer"),
    (lambda: flopbench.gpus(lookup=5), "gpus(): lookup=5 is not allowed: give a str or None"),
    (lambda: flopbench.profile(_linear(), _x(), loss_fn=5), "profile(): loss_fn=5 is not allowed: give a callable or None"),
    (lambda: flopbench.profile(_linear(), _x(), iters=2.0), "profile(): iters=2.0 is not allowed: give an integer"),
    (lambda: flopbench.measure(_linear(), "989"), "measure(): peak_tflops='989' is not allowed: give a number or None"),
])
def test_api_bad_input_is_a_one_line_usage_error(call, fragment, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a call that wrongly went on would write its results here, not in the tree
    with pytest.raises(UsageError) as info:
        call()
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_gpus_table_is_peaks_csv_and_the_detected_gpu_gets_its_entry(monkeypatch, capsys):
    from flopbench.api import gpus as gpus_module
    from flopbench.hardware.detect import GpuInfo

    rows = list(csv.DictReader(io.StringIO((ROOT / "flopbench" / "hardware" / "peaks.csv").read_text())))
    monkeypatch.setattr(gpus_module, "detect_gpu", lambda index=0: GpuInfo("NVIDIA H100 80GB HBM3", source="test"))
    doc = flopbench.gpus()
    assert doc["detected"]["name"] == "NVIDIA H100 80GB HBM3" and doc["table_entry"] == "h100-sxm"
    assert [e["key"] for e in doc["table"]] == [r["key"] for r in rows]
    for entry, row in zip(doc["table"], rows):
        for dtype in ("fp32", "tf32", "bf16", "fp16"):
            assert entry[f"{dtype}_tflops"] == (float(row[dtype]) if row[dtype] else None), (row["key"], dtype)
    # H100 SXM5, dense (NVIDIA H100 whitepaper): FP32 66.9, TF32 494.7, BF16 and FP16 989.4 TFLOP/s.
    h100 = next(e for e in doc["table"] if e["key"] == "h100-sxm")
    assert (h100["fp32_tflops"], h100["tf32_tflops"], h100["bf16_tflops"], h100["fp16_tflops"]) == (
        66.9, 494.7, 989.4, 989.4)
    assert main(["gpus", "--json"]) == 0  # the CLI prints the same document
    assert json.loads(capsys.readouterr().out)["table_entry"] == "h100-sxm"
    assert main(["gpus"]) == 0
    assert "detected:" in capsys.readouterr().out


# --------------------------------------------------------------------------------------------------
# Results files: rows.jsonl fsynced as each row is written, rows.csv replaced, never rewritten in place
# --------------------------------------------------------------------------------------------------


def _fd_path(fd: int) -> str:
    return os.readlink(f"/proc/self/fd/{fd}")


needs_proc = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="reads /proc/self/fd (Linux)")


@needs_proc
def test_run_fsyncs_rows_jsonl_once_a_row_is_written(monkeypatch, tmp_path):
    synced = []  # (file name, its size at the fsync)
    real = os.fsync

    def fsync(fd):
        synced.append((os.path.basename(_fd_path(fd)), os.fstat(fd).st_size))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    doc = flopbench.run(SMALL, **FAST, out=str(tmp_path), progress=lambda m: None)
    jsonl = Path(doc["files"]["rows.jsonl"])
    sizes = [len(line) + 1 for line in jsonl.read_text(encoding="utf-8").splitlines()]
    assert len(sizes) == 3
    jsonl_syncs = [size for name, size in synced if name == "rows.jsonl"]
    # each row was on disk (fsynced) before the next one was measured: at 1, 2 and 3 rows' worth of bytes
    assert {sizes[0], sizes[0] + sizes[1], sum(sizes)} <= set(jsonl_syncs), (sizes, synced)


@needs_proc
def test_a_failed_rows_csv_write_leaves_the_previous_rows_csv_whole(monkeypatch, tmp_path):
    # The disk fails while rows.csv is rewritten for the second row: the first version must still be there,
    # whole (a file rewritten in place would be truncated or hold the half-written new version), and
    # rows.jsonl keeps both measured rows.
    real, csv_syncs = os.fsync, []

    def fsync(fd):
        if "rows.csv" in os.path.basename(_fd_path(fd)):
            csv_syncs.append(fd)
            if len(csv_syncs) >= 2:
                raise OSError(28, "No space left on device")
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    try:
        flopbench.run(SMALL, **FAST, out=str(tmp_path), progress=lambda m: None)
    except (UsageError, OSError):
        pass  # the failed write may stop the run (one line, nothing measured lost) or only warn
    [folder] = [p for p in tmp_path.iterdir() if p.is_dir()]
    jsonl = [json.loads(line) for line in (folder / "rows.jsonl").read_text().splitlines()]
    assert [r["mode"] for r in jsonl][:2] == ["forward", "fwd_bwd"]
    table = pd.read_csv(folder / "rows.csv")
    assert table["mode"].tolist() == ["forward"]
    assert table["model_flops"].tolist() == [jsonl[0]["model_flops"]]


def test_readme_use_from_python_example_runs():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Use from Python", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert blocks, "README section 'Use from Python' has no python block"
    namespace: dict = {}
    exec(compile("\n".join(blocks), "README.md (Use from Python)", "exec"), namespace)
    p, m = namespace["p"], namespace["m"]
    assert p.forward_flops == 2 * 16 * (32 * 128 + 128 * 10) and p.counted_on == "meta"
    assert len(m.records) == 4 and m.summary()["mfu"] > 0
