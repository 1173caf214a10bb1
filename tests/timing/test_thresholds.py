"""CI thresholds on `run`: violations exit 1 with expected vs measured; bad thresholds exit 2."""

import json

import pytest
from helpers import unwrapped

from flopbench.cli import main
from flopbench.timing.thresholds import Thresholds, parse_baseline, run_checks

TINY = ["run", "--n-layer", "1", "--d-model", "32", "--n-head", "2", "--vocab-size", "64", "--seq-len", "16",
        "--batch-size", "2", "--warmup", "0", "--iters", "2", "--no-gemm", "--device", "cpu", "--no-save",
        "--checkpointing", "none"]


def cli(capsys, *argv):
    code = main([*TINY, *argv])
    out, err = capsys.readouterr()
    return code, out, unwrapped(err)


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


def test_baseline_rows_are_matched_by_model_and_shape_and_a_missing_one_is_said(capsys, tmp_path):
    """A baseline of another model (or shape) is not compared: each row says there was no baseline row."""
    code, out, _ = cli(capsys, "--peak-tflops", "1", "--json")
    doc = json.loads(out)
    slower = {**doc, "rows": [{**r, "mfu": r["mfu"] / 100} for r in doc["rows"]]}  # a 100x slower baseline ...
    rows = slower["rows"]
    slower["rows"] = [{**rows[0], "model": "other"}, {**rows[1], "seq_len": 8}, rows[2]]  # ... matching one row
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps(slower))
    checks = run_checks(doc, Thresholds(max_vs_baseline=f"{path}:0.05"))
    assert [(c.check, c.row, c.ok) for c in checks] == [
        ("vs-baseline", "forward/none", True), ("vs-baseline", "fwd_bwd/none", True),
        ("vs-baseline mfu", "train_step/none", True)]
    model = doc["rows"][0]["model"]
    assert checks[0].measured == f"no baseline row for {model} T=16 B=2 fp32 forward/none; not compared"
    assert checks[1].measured == f"no baseline row for {model} T=16 B=2 fp32 fwd_bwd/none; not compared"
    # the matched row: the floor is 95 % of the baseline's MFU, which is 1/100 of this run's
    base = doc["rows"][2]["mfu"] / 100
    assert checks[2].expected == f">= {0.95 * base:.4g} (95% of {base:.4g})"


@pytest.mark.parametrize("rows, fragment", [
    ([1, 2], "rows[0]: expected a JSON object (one result row), got a number"),
    ([{"mode": "fwd_bwd", "checkpointing": "none", "status": "ok", "mfu": 0.1}], "rows[0]: missing field 'model'"),
    ("ROW:mfu=high", "rows[0]: mfu = 'high' is not a positive, finite number or null"),
    ("ROW:achieved_tflops=None,mfu=None", "ran (status ok) but has no achieved_tflops"),
])
def test_a_malformed_baseline_is_exit_2_before_anything_is_measured(capsys, tmp_path, rows, fragment):
    if isinstance(rows, str):
        good = {"model": "m", "seq_len": 16, "batch_size": 2, "dtype": "fp32", "mode": "fwd_bwd",
                "checkpointing": "none", "status": "ok", "mfu": 0.1, "achieved_tflops": 1.0}
        changes = dict(kv.split("=") for kv in rows[4:].split(","))
        rows = [{**good, **{k: None if v == "None" else v for k, v in changes.items()}}]
    path = tmp_path / "b.json"
    path.write_text(json.dumps({"rows": rows}))
    code, out, err = cli(capsys, "--max-vs-baseline", f"{path}:0.05")
    assert code == 2 and out == "" and err.count("\n") == 1 and fragment in err, err
    assert "timing" not in err  # refused before measuring


GOOD_BASELINE_ROW = {"model": "m", "seq_len": 16, "batch_size": 2, "dtype": "fp32", "mode": "fwd_bwd",
                     "checkpointing": "none", "status": "ok", "mfu": 0.1, "achieved_tflops": 1.0}


@pytest.mark.parametrize("rows, fragment", [
    # Issue 24, item 14. Before: an MFU of 0 (or below) made every row pass (floor = 0.95 x 0), ...
    ([{**GOOD_BASELINE_ROW, "mfu": 0.0}], "rows[0]: mfu = 0.0 is not a positive, finite number or null"),
    ([{**GOOD_BASELINE_ROW, "mfu": -0.2}], "rows[0]: mfu = -0.2 is not a positive, finite number or null"),
    # ... an infinite one made every row fail, ...
    ([{**GOOD_BASELINE_ROW, "mfu": float("inf")}], "rows[0]: mfu = inf is not a positive, finite number or null"),
    ([{**GOOD_BASELINE_ROW, "mfu": None, "achieved_tflops": 0}],
     "rows[0]: achieved_tflops = 0 is not a positive, finite number or null"),
    # ... and of two rows measured the same way the last one won, silently.
    ([GOOD_BASELINE_ROW, {**GOOD_BASELINE_ROW, "mfu": 0.5}], "rows 1 and 2 are both m T=16 B=2 fp32 fwd_bwd/none; keep one"),
])
def test_a_baseline_with_impossible_or_repeated_rows_is_exit_2(capsys, tmp_path, rows, fragment):
    path = tmp_path / "b.json"
    path.write_text(json.dumps({"rows": rows}))  # json writes inf as Infinity, which json.loads reads back
    code, out, err = cli(capsys, "--max-vs-baseline", f"{path}:0.05")
    assert code == 2 and out == "" and err.count("\n") == 1 and fragment in err, err
    assert "timing" not in err  # refused before measuring


def test_a_baseline_jsonl_with_a_wrong_row_names_its_line(capsys, tmp_path):
    path = tmp_path / "b.jsonl"
    path.write_text('{"model": "m"}\n')
    code, _, err = cli(capsys, "--max-vs-baseline", f"{path}:0.05")
    assert code == 2 and f"baseline {path}: line 1: missing field 'seq_len'" in err and "timing" not in err


def test_min_mfu_holds_rows_without_checkpointing_and_min_hfu_the_checkpointed_ones(capsys):
    # With a 1 TFLOP/s peak a CPU step reaches a few % at most. Each floor applies to its own rows only:
    # min-mfu to train_step/none, min-hfu to train_step/full.
    code, out, err = cli(capsys, "--checkpointing", "both", "--peak-tflops", "1", "--min-mfu", "1e-9",
                         "--min-hfu", "0.9", "--json")
    doc = json.loads(out)
    by_check = {(c["check"], c["row"]): c for c in doc["checks"]}
    assert set(by_check) >= {("min-mfu", "train_step/none"), ("min-hfu", "train_step/full")}
    assert ("min-mfu", "train_step/full") not in by_check and ("min-hfu", "train_step/none") not in by_check
    assert by_check[("min-mfu", "train_step/none")]["ok"] and not by_check[("min-hfu", "train_step/full")]["ok"]
    full = next(r for r in doc["rows"] if r["mode"] == "train_step" and r["checkpointing"] == "full")
    assert by_check[("min-hfu", "train_step/full")]["measured"] == f"{full['hfu']:.3f}"
    assert code == 1 and "FAIL min-hfu [train_step/full]" in err
