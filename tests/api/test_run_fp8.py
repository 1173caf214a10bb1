"""`run --dtype fp8`: float8 training through torchao, end to end on the CPU, with the float8 FLOPs apart and
three MFUs (bf16 peak, fp8 peak, FLOP-weighted peak) checked by hand.

The CPU runs torch's float8 matmul (`torch._scaled_mm`) slowly, so the model is a small one with dimensions that
are multiples of 16 (a float8 matmul's requirement); the environment pretends to be an H100 SXM or an A100 where
a GPU's peak-table entry is the point."""

import json

import pytest

from flopbench.cli import main
from flopbench.api import run as run_module
from flopbench.api.run import RunOptions, run
from flopbench.errors import UsageError
from flopbench.model.config import ModelConfig
from helpers import pretend_gpu

pytest.importorskip("torchao.float8")

CFG = ModelConfig("fp8", n_layer=2, d_model=64, n_head=4, vocab_size=128, max_seq_len=32)
B, T = 2, 32
FAST = dict(batch_size=B, seq_len=T, device="cpu", warmup=0, iters=2, gemm=False, out=None, dtype="fp8")
# By hand: each block's Linear layers are 64 x 192 (QKV), 64 x 64, 64 x 256 and 256 x 64: 49,152 weights; a forward
# runs them at 2·B·T = 128 FLOPs per weight, over 2 blocks.
FP8_FORWARD = 2 * B * T * 49_152 * 2


def test_fp8_rows_count_the_converted_layers_apart_and_rate_three_ways(monkeypatch):
    pretend_gpu(monkeypatch, run_module, {"name": "NVIDIA H100 80GB HBM3", "source": "test"})
    doc = run(CFG, RunOptions(**FAST, checkpointing="all", modes=("forward", "fwd_bwd")), progress=lambda m: None)
    assert doc["dtype"] == "fp8" and doc["peak"]["dtype"] == "bf16"
    # H100 SXM5 dense peaks (H100 whitepaper, Table 1, sparse figures halved): bf16 989.4, fp8 1979 TFLOP/s
    assert doc["peak"]["tflops"] == 989.4 and doc["peak"]["fp8_tflops"] == 1979
    assert doc["fp8"] == {"recipe": "tensorwise", "converted": 8, "bf16": doc["fp8"]["bf16"],
                          "layers": ["h.*.attn.c_attn", "h.*.attn.c_proj", "h.*.mlp.c_fc", "h.*.mlp.c_proj"]}
    rows = {(r["mode"], r["checkpointing"]): r for r in doc["rows"]}
    assert set(rows) == {("forward", "none"), ("fwd_bwd", "none"), ("fwd_bwd", "full"), ("fwd_bwd", "selective")}
    passes = {("forward", "none"): 1, ("fwd_bwd", "none"): 3, ("fwd_bwd", "full"): 4, ("fwd_bwd", "selective"): 3}
    for key, r in rows.items():
        assert r["status"] == "ok" and r["fp8_recipe"] == "tensorwise"
        assert r["fp8_flops"] == r["fp8_flops_analytic"] == passes[key] * FP8_FORWARD
        assert 0 < r["fp8_flops"] < r["hardware_flops"]
        assert r["fp8_model_flops"] == (1 if key[0] == "forward" else 3) * FP8_FORWARD
        s = r["time_ms"]["median_ms"] / 1e3
        # ideal time: the fp8 part at 1979, the rest at 989.4 TFLOP/s; weighted MFU = ideal / measured
        ideal = (r["fp8_model_flops"] / 1979 + (r["model_flops"] - r["fp8_model_flops"]) / 989.4) / 1e12
        assert r["mfu"] == pytest.approx(r["model_flops"] / s / 989.4e12, rel=1e-9)
        assert r["mfu_fp8_peak"] == pytest.approx(r["model_flops"] / s / 1979e12, rel=1e-9)
        assert r["mfu_weighted"] == pytest.approx(ideal / s, rel=1e-9)
        hw_ideal = (r["fp8_flops"] / 1979 + (r["hardware_flops"] - r["fp8_flops"]) / 989.4) / 1e12
        assert r["hfu_weighted"] == pytest.approx(hw_ideal / s, rel=1e-9)
        assert r["mfu_fp8_peak"] < r["mfu_weighted"] < r["mfu"]


def test_cli_fp8_on_the_cpu_with_given_peaks(tmp_path, capsys):
    spec = tmp_path / "fp8.json"  # a config file: `--model` takes one
    spec.write_text(json.dumps({"model_type": "gpt2", "n_layer": 1, "n_embd": 64, "n_head": 4, "vocab_size": 128,
                                "n_positions": 32}))
    code = main(["run", "--model", str(spec), "--dtype", "fp8", "--fp8-recipe", "rowwise", "--device", "cpu",
                 "--batch-size", "2", "--warmup", "0", "--iters", "1", "--modes", "fwd_bwd", "--checkpointing",
                 "none", "--no-gemm", "--no-save", "--peak-tflops", "2", "--peak-fp8-tflops", "4", "--json"])
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    r = doc["rows"][0]
    assert doc["fp8"]["recipe"] == r["fp8_recipe"] == "rowwise" and doc["peak"]["fp8_source"] == "--peak-fp8-tflops"
    assert r["fp8_flops"] == 3 * 2 * 2 * 32 * 49_152  # fwd_bwd: 3 passes over one block's 49,152 weights
    seconds = r["time_ms"]["median_ms"] / 1e3
    ideal = (r["fp8_model_flops"] / 4 + (r["model_flops"] - r["fp8_model_flops"]) / 2) / 1e12
    assert r["mfu_weighted"] == pytest.approx(ideal / seconds, rel=1e-9)


@pytest.mark.parametrize("gpu", ["NVIDIA A100-SXM4-80GB", "Tesla V100-SXM2-16GB", "Tesla T4"])
def test_fp8_on_a_gpu_without_fp8_is_refused(monkeypatch, gpu):
    pretend_gpu(monkeypatch, run_module, {"name": gpu, "source": "test"})
    with pytest.raises(UsageError, match=r"--dtype fp8: the .* has no fp8 tensor cores") as info:
        run(CFG, RunOptions(**FAST, modes=("forward",)), progress=lambda m: None)
    assert "\n" not in str(info.value)


def test_fp8_without_torchao_is_one_line_and_exit_2(monkeypatch, capsys):
    monkeypatch.setitem(__import__("sys").modules, "torchao.float8", None)  # as if torchao were not installed
    code = main(["run", "--model", "tiny", "--dtype", "fp8", "--device", "cpu", "--no-save"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "pip install 'flopbench[fp8]'" in err


def test_infer_refuses_fp8(capsys):
    assert main(["infer", "--model", "tiny", "--dtype", "fp8", "--device", "cpu", "--no-save"]) == 2
    assert "infer --dtype fp8" in capsys.readouterr().err


def test_report_predicts_an_fp8_row_at_its_flop_weighted_peak(tmp_path):
    """`report` on an fp8 run: the predicted step time is the rule's FLOPs at the weighted peak (the converted
    layers' share of the analytic hardware FLOPs at the fp8 peak, the rest at the bf16 one), and the table shows
    the weighted MFU."""
    from flopbench.api.report import measured_rows, report
    from flopbench.output.records import read_rows

    doc = run(CFG, RunOptions(**{**FAST, "out": tmp_path / "runs"}, modes=("fwd_bwd",), checkpointing="none",
                              peak_tflops=2.0, peak_fp8_tflops=4.0), progress=lambda m: None)
    folder = tmp_path / "runs" / doc["run_id"]
    (row,) = measured_rows(read_rows(folder))
    r = doc["rows"][0]
    share = r["fp8_flops_analytic"] / r["hardware_flops_analytic"]
    weighted = 1 / (share / 4.0 + (1 - share) / 2.0)  # TFLOP/s
    assert row["predicted_basis"] == "FLOP-weighted peak"
    assert row["predicted_ms"] == pytest.approx(r["simple_hardware_flops"] / (weighted * 1e12) * 1e3, rel=1e-12)
    assert row["mfu_weighted"] == pytest.approx(r["mfu_weighted"], rel=1e-12)
    out = report(folder, tmp_path / "report")
    text = (tmp_path / "report" / "report.md").read_text()
    assert "MFU weighted (fp8)" in text and out is not None


def test_sweep_runs_fp8_beside_bf16_with_its_recipe(tmp_path, capsys):
    """A sweep's dtype axis takes fp8 (the recipe is the spec's `fp8_recipe`): the fp8 rows count the converted
    layers apart and carry the recipe in their timing options; the bf16 rows have no fp8 fields."""
    spec = tmp_path / "fp8.toml"
    spec.write_text('name = "f"\nmodels = [{ name = "fp8", preset = "tiny", n_layer = 1, d_model = 64, n_head = 4, '
                    'vocab_size = 128, max_seq_len = 32 }]\nseq_len = [32]\nbatch_size = [2]\ncheckpointing = ["none"]\n'
                    'dtype = ["bf16", "fp8"]\ndevice = "cpu"\nwarmup = 0\niters = 1\ngemm = false\n'
                    'modes = ["fwd_bwd"]\nfp8_recipe = "rowwise"\n')
    assert main(["sweep", "--spec", str(spec), "--out", str(tmp_path / "out"), "--json"]) == 0, capsys.readouterr().err
    rows = {r["dtype"]: r for r in json.loads(capsys.readouterr().out)["rows"]}
    assert set(rows) == {"bf16", "fp8"}
    assert rows["fp8"]["fp8_flops"] == 3 * 2 * 2 * 32 * 49_152 and rows["fp8"]["fp8_recipe"] == "rowwise"
    assert rows["bf16"]["fp8_flops"] is None and rows["bf16"]["fp8_recipe"] is None
    assert rows["fp8"]["timing"]["fp8_recipe"] == "rowwise"
