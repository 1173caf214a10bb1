"""`flopbench count`: the JSON keys the README documents, the terminal report (bad input: test_bad_input.py)."""

import json
import subprocess
import sys

from flopbench.cli import main


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_count_json_gpt2_xl_contract(capsys):
    code, out, err = run_cli(capsys, "count", "--model", "gpt2-xl", "--seq-len", "1024", "--batch-size", "1", "--json")
    assert code == 0
    doc = json.loads(out)
    fwd = 3_506_703_564_800
    assert doc["params"]["total"] == 1_557_611_200
    assert doc["params"]["non_embedding"] == 1_557_611_200 - 50257 * 1600 - 1024 * 1600
    a, c = doc["analytic"], doc["counted"]
    assert a["forward"] == fwd and a["train"] == 3 * fwd
    assert c["torch"]["forward"] == fwd and c["torch"]["train"] == 3 * fwd
    assert c["torch"]["train_recompute"] == a["train_recompute"]
    assert c["fvcore"]["forward"] == fwd
    assert set(a["estimates"]) >= {"2N", "6N", "8N", "palm", "megatron", "kaplan", "chinchilla", "causal"}
    flop_values = [a["forward"], a["train"], a["train_recompute"], *a["estimates"].values(),
                   *(c["torch"][k] for k in ("forward", "train", "train_recompute")), c["fvcore"]["forward"]]
    assert all(type(v) is int for v in flop_values)
    assert isinstance(c["fvcore"]["unsupported"], dict) and "aten::gelu" in c["fvcore"]["unsupported"]
    assert all(r["status"] in ("equal", "explained") for r in doc["reconciliation"])


def test_count_scales_with_batch(capsys):
    _, out1, _ = run_cli(capsys, "count", "--model", "gpt2", "--seq-len", "64", "--json", "--no-fvcore")
    _, out3, _ = run_cli(capsys, "count", "--model", "gpt2", "--seq-len", "64", "--batch-size", "3", "--json", "--no-fvcore")
    one, three = json.loads(out1), json.loads(out3)
    assert three["analytic"]["train"] == 3 * one["analytic"]["train"]
    assert three["counted"]["torch"]["train"] == 3 * one["counted"]["torch"]["train"]
    assert "fvcore" not in one["counted"]


def test_count_overrides(capsys):
    _, out, _ = run_cli(capsys, "count", "--model", "gpt2", "--n-layer", "2", "--d-model", "64", "--n-head", "4",
                        "--vocab-size", "100", "--seq-len", "16", "--json")
    doc = json.loads(out)
    assert doc["config"]["d_ff"] == 256
    # 2·T·(12·d²·L + d·V) + 4·T²·d·L
    assert doc["analytic"]["forward"] == 2 * 16 * (12 * 64 * 64 * 2 + 64 * 100) + 4 * 16 * 16 * 64 * 2


def test_count_terminal_report(capsys):
    code, out, err = run_cli(capsys, "count", "--model", "gpt2", "--seq-len", "128")
    assert code == 0
    for heading in ("Parameters", "Forward FLOPs per component", "Named estimates", "Reconciliation"):
        assert heading in out
    assert "unexplained" not in out
    assert "124,439,808" in out


def test_module_entry_point_exit_code_and_no_traceback():
    proc = subprocess.run([sys.executable, "-m", "flopbench", "count", "--n-head", "7"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("flopbench: error: n_head=7") and "Traceback" not in proc.stderr
