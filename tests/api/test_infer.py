"""`flopbench infer` on the CPU: the document, MFU and MBU by hand from the step times, files, bad input."""

import json

import pytest

import flopbench
from flopbench.api.infer import infer
from flopbench.cli import main
from flopbench.flops import inference
from flopbench.model.config import ModelConfig

SMALL = ModelConfig("small", n_layer=2, d_model=32, n_head=4, vocab_size=64, max_seq_len=32)
FAST = dict(batch_size=2, prompt_len=8, gen_len=5, device="cpu", warmup=0, iters=2, ceilings=False,
            peak_tflops=1.0, peak_gbps=10.0, progress=lambda m: None)


def test_infer_document_and_rates_by_hand():
    doc = infer(SMALL, out=None, **FAST)
    p, d = doc["prefill"], doc["decode"]
    assert p["flops"] == inference.prefill_flops(SMALL, 2, 8) and p["bytes"] == inference.prefill_bytes(SMALL, 2, 8, "fp32")
    seconds = p["time_ms"]["median_ms"] / 1e3
    assert p["mfu"] == pytest.approx(p["flops"] / (seconds * 1e12))  # peak 1 TFLOP/s
    # 4 decode steps (the first of the 5 tokens comes from the prefill) at contexts 9 .. 12
    assert [s["context"] for s in d["steps"]] == [9, 10, 11, 12]
    for s in d["steps"]:
        assert s["flops"] == inference.decode_flops(SMALL, 2, s["context"])
        assert s["bytes"] == inference.decode_bytes(SMALL, 2, s["context"], "fp32").total
        assert s["mbu"] == pytest.approx(s["bytes"] / (s["time_ms"] / 1e3) / 10e9)  # peak 10 GB/s
    median_ms = sorted(s["time_ms"] for s in d["steps"])[1:3]
    assert d["time_ms"]["median_ms"] == pytest.approx(sum(median_ms) / 2)
    assert d["tokens_per_s"] == pytest.approx(2 / (d["time_ms"]["median_ms"] / 1e3))
    assert all(r["status"] == "equal" for r in doc["reconciliation"]) and len(doc["reconciliation"]) == 4


def test_infer_writes_two_rows_and_is_in_the_api(tmp_path):
    doc = flopbench.infer(SMALL, out=str(tmp_path), **FAST)
    rows = flopbench.read_rows(doc["files"]["rows.jsonl"])
    assert list(rows["mode"]) == ["prefill", "decode"] and set(rows["kind"]) == {"infer"}
    assert rows["mbu"].notna().all()


@pytest.mark.parametrize("argv, fragment", [
    (["--prompt-len", "30", "--gen-len", "3"], "= 33 exceeds the model's 32 positions"),
    (["--gen-len", "0"], "'0' must be a positive integer"),
    (["--prompt-len", "0"], "'0' must be a positive integer"),
])
def test_infer_bad_lengths(capsys, tmp_path, argv, fragment):
    base = ["infer", "--n-layer", "1", "--d-model", "32", "--n-head", "2", "--vocab-size", "64", "--max-seq-len", "32",
            "--device", "cpu", "--no-ceilings", "--out", str(tmp_path)]
    assert main([*base, *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and fragment in err
    assert not list(tmp_path.rglob("rows.jsonl"))


def test_infer_cli_json(capsys):
    assert main(["infer", "--model", "tiny", "--device", "cpu", "--prompt-len", "16", "--gen-len", "4", "--iters", "1",
                 "--no-ceilings", "--no-save", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert {"flops", "bytes", "time_ms", "mfu"} <= set(doc["prefill"])
    assert {"steps", "time_ms", "tokens_per_s", "mbu", "mfu"} <= set(doc["decode"])


def test_report_draws_the_roofline_of_infer_rows(tmp_path):
    doc = infer(SMALL, out=str(tmp_path), **FAST)
    rep = flopbench.report(tmp_path, tmp_path / "rep")
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "## 5. Generation: the roofline" in md and "roofline" in rep["plots"]
    # the prefill's intensity is FLOPs / bytes from flops.inference, shown to 4 significant digits
    assert f"{doc['prefill']['flops'] / doc['prefill']['bytes']:.4g}" in md
    assert "| 1 " in md.split("## 5.")[1] and "| 10 " in md.split("## 5.")[1]  # the given peaks as the roofs
