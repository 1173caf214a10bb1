"""CI thresholds on `run`: violations exit 1 with expected vs measured; bad thresholds exit 2."""

import json

import pytest

from flopbench.cli import main
from flopbench.timing.thresholds import Thresholds, parse_baseline, run_checks

TINY = ["run", "--n-layer", "1", "--d-model", "32", "--n-head", "2", "--vocab-size", "64", "--seq-len", "16",
        "--batch-size", "2", "--warmup", "0", "--iters", "2", "--no-gemm", "--device", "cpu", "--no-save",
        "--checkpointing", "none"]


def cli(capsys, *argv):
    code = main([*TINY, *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_min_mfu_violation_exits_1_and_says_expected_and_measured(capsys):
    # A 1e6 TFLOP/s peak makes any CPU MFU tiny, so 0.35 must fail.
    code, out, err = cli(capsys, "--peak-tflops", "1e6", "--min-mfu", "0.35", "--json")
    assert code == 1
    doc = json.loads(out)
    failed = [c for c in doc["checks"] if not c["ok"]]
    assert [c["row"] for c in failed] == ["train_step/none"]
    assert "FAIL min-mfu [train_step/none]: expected >= 0.350, measured 0.000" in err


def test_min_mfu_pass_and_counted_vs_analytic_pass(capsys):
    # A 1e-9 TFLOP/s peak makes MFU huge, so a 0.01 floor passes; the CPU flash gap is explained.
    code, out, err = cli(capsys, "--peak-tflops", "1e-9", "--min-mfu", "0.01", "--max-counted-vs-analytic", "0.001")
    assert code == 0, err
    assert "ok   max-counted-vs-analytic [fwd_bwd/none]: expected <= 0.0010, measured 0.0000 unexplained (raw +" in err


def test_min_mfu_without_peak_fails_rather_than_passing(capsys):
    code, _, err = cli(capsys, "--min-mfu", "0.1")
    assert code == 1 and "measured null (no peak known)" in err


def test_baseline_regression(capsys, tmp_path):
    code, out, _ = cli(capsys, "--peak-tflops", "1", "--json")
    assert code == 0
    doc = json.loads(out)
    better = {**doc, "rows": [{**r, "mfu": r["mfu"] * 100} for r in doc["rows"]]}  # a baseline 100x faster
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps(better))
    checks = run_checks(doc, Thresholds(max_vs_baseline=f"{path}:0.05"))
    assert len(checks) == 3 and not any(c.ok for c in checks)
    assert checks[0].expected.startswith(">= ") and "95% of" in checks[0].expected
    same = tmp_path / "same.json"
    same.write_text(out)
    assert all(c.ok for c in run_checks(doc, Thresholds(max_vs_baseline=f"{same}:0.05")))


@pytest.mark.parametrize("spec", ["nofile.json", "x.json:2", "x.json:abc", ":0.1"])
def test_bad_baseline_spec(spec):
    from flopbench.errors import UsageError

    with pytest.raises(UsageError, match="FILE:TOLERANCE"):
        parse_baseline(spec)


def test_bad_baseline_file_is_exit_2_before_measuring(capsys, tmp_path):
    bad = tmp_path / "b.json"
    bad.write_text("{not json")
    code, out, err = cli(capsys, "--max-vs-baseline", f"{bad}:0.05")
    assert code == 2 and out == "" and "not JSON" in err and "timing" not in err
