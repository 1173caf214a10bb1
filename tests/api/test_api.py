"""The Python API in `flopbench/__init__.py`: cheap import, the CLI's twins, DataFrames, the README example."""

import json
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


def test_count_takes_a_preset_name_and_equals_the_cli(capsys):
    doc = flopbench.count("gpt2", 2, 64, fvcore=False)
    assert main(["count", "--model", "gpt2", "--batch-size", "2", "--seq-len", "64", "--no-fvcore", "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)
    drop = ("count_seconds",)
    assert {k: v for k, v in doc.items() if k not in drop} == {k: v for k, v in cli.items() if k not in drop}
    assert doc["analytic"]["forward"] == 2 * 2 * 64 * (12 * 768**2 * 12 + 768 * 50257) + 4 * 2 * 64**2 * 768 * 12


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


@pytest.mark.parametrize("call, fragment", [
    (lambda: flopbench.run(SMALL, batch=2), "run(): unknown option 'batch'; allowed: batch_size, seq_len"),
    (lambda: flopbench.run(SMALL, flopbench.RunOptions(), out=None), "pass options=RunOptions(...) or keyword"),
    (lambda: flopbench.count(42), "config=int: pass a ModelConfig or a preset name (gpt2, "),
    (lambda: flopbench.count("gpt5"), "unknown model 'gpt5'"),
    (lambda: flopbench.to_dataframe(3.5), "to_dataframe(float): pass a run or count document"),
    (lambda: flopbench.to_dataframe("no/such/file.jsonl"), "no/such/file.jsonl: no such file"),
])
def test_api_bad_input_is_a_one_line_usage_error(call, fragment):
    with pytest.raises(UsageError) as info:
        call()
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_gpus_equals_the_cli(capsys):
    assert main(["gpus", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(flopbench.gpus()))
    assert main(["gpus"]) == 0
    assert "detected:" in capsys.readouterr().out


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
