"""`flopbench estimate`: C = 6NT (Kaplan et al. 2020) / (G x peak x MFU), checked against hand calculations."""

import json

import pytest
from helpers import unwrapped

from flopbench.api.estimate import estimate, mfu_from_results, named_peak, parse_tokens
from flopbench.cli import main
from flopbench.errors import UsageError
from flopbench.model.presets import PRESETS

# gpt2-xl: N_matmul = 12·d²·L + d·V (the LM head counted: README, "Which N")
N_XL = 12 * 1600**2 * 48 + 1600 * 50257
assert N_XL == 1_554_971_200


def run_cli(argv, capsys):
    code = main(["estimate", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_gpt2_xl_300b_tokens_on_8_h100_by_hand(capsys):
    code, out, _ = run_cli(["--model", "gpt2-xl", "--tokens", "300B", "--gpus", "8", "--gpu", "h100", "--json"], capsys)
    doc = json.loads(out)
    C = 6 * N_XL * 300e9  # Kaplan et al. 2020, §2.1: 6·N·T = 2.799e21 FLOPs
    seconds = C / (8 * 989.4e12 * 0.4)  # G x H100 SXM dense bf16 peak x 0.4 (Llama 3 405B's measured MFU)
    assert code == 0 and doc["n_matmul"] == N_XL and doc["flops"] == 6 * N_XL * 300 * 10**9
    assert doc["peak_tflops"] == 989.4 and doc["mfu"] == 0.4 and doc["method"] == "6N"
    assert doc["wall_seconds"] == pytest.approx(seconds) and doc["wall_days"] == pytest.approx(10.2320, abs=1e-4)
    assert doc["gpu_hours"] == pytest.approx(8 * seconds / 3600)
    assert doc["gpu_hours"] == pytest.approx(1964.54, abs=0.01)


def test_mixture_of_experts_uses_the_active_weights():
    """Mixtral 8x7B by hand: per layer q, o 4096² each, k, v 4096·1024 each, router 4096·8, two of the eight
    SwiGLU experts 2·3·4096·14336; 32 layers plus the LM head 4096·32000. 6N takes these active weights
    (12.75B), not all 46.6B matmul weights."""
    per_layer = 2 * 4096**2 + 2 * 4096 * 1024 + 4096 * 8 + 2 * 3 * 4096 * 14336
    active = 32 * per_layer + 4096 * 32000
    assert active == 12_748_587_008
    doc = estimate("mixtral-8x7b", "1T", 64, seq_len=4096, gpu="h100-sxm")
    assert doc["n_matmul"] == active and doc["flops_per_token"] == 6 * active


def test_recompute_and_exact_by_hand():
    cfg, tokens = PRESETS["gpt2-xl"], 10**12
    assert estimate(cfg, tokens, recompute=True)["flops"] == 8 * N_XL * tokens
    # exact per token at T=1024: 6N + 12·L·d·T (attention scores, fwd + bwd) = 10,273,545,600, which is
    # the published train FLOPs of one gpt2-xl 1024-token sequence (3 x 3,506,703,564,800) / 1024
    per_token = 6 * N_XL + 12 * 48 * 1600 * 1024
    assert per_token == 3 * 3_506_703_564_800 // 1024 == 10_273_545_600
    doc = estimate(cfg, tokens, 64, exact=True, gpu="a100", mfu=0.4)
    assert doc["flops"] == per_token * tokens and doc["peak_tflops"] == 312
    assert doc["wall_seconds"] == pytest.approx(per_token * tokens / (64 * 312e12 * 0.4))
    # shorter sequences: less attention per token
    assert estimate(cfg, tokens, exact=True, seq_len=256)["flops_per_token"] == 6 * N_XL + 12 * 48 * 1600 * 256


@pytest.mark.parametrize("text, tokens", [
    ("300e9", 300 * 10**9), ("300B", 300 * 10**9), ("300b", 300 * 10**9), ("1.4T", 1_400_000_000_000),
    ("2.5M", 2_500_000), ("64k", 64_000), ("1000000", 1_000_000), ("1_000", 1000), (" 7 ", 7), ("1e3", 1000),
    ("0.5K", 500), ("15G", 15 * 10**9),
])
def test_parse_tokens(text, tokens):
    assert parse_tokens(text) == tokens


@pytest.mark.parametrize("text, fragment", [
    ("lots", "is not a token count"), ("1.4X", "is not a token count"), ("", "is not a token count"),
    ("-5", "is not a token count"), ("nan", "is not a token count"), ("inf", "is not a token count"),
    ("0.5", "not a whole number"), ("1.23456K", "not a whole number"), ("0", "must be at least 1"), ("B", "not a token"),
])
def test_parse_tokens_rejects(text, fragment):
    with pytest.raises(UsageError, match=fragment):
        parse_tokens(text)


def test_peak_lookup():
    peak, source = named_peak("h100", "bf16", None)
    assert peak == 989.4 and source.startswith("table: H100 SXM bf16 (NVIDIA H100 whitepaper: H100 SXM5")
    assert named_peak("h100-pcie", "bf16", None)[0] == 756
    assert named_peak("NVIDIA H100 NVL", "fp16", None)[0] == 835
    assert named_peak("h100", "tf32", None)[0] == 494.7  # the dtype picks the column
    assert named_peak("a100", "bf16", None)[0] == 312  # a key prefix whose entries agree
    assert named_peak("anything", "bf16", 123.0) == (123.0, "--peak-tflops")


def write_rows(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_mfu_from_results(tmp_path, capsys):
    def row(ms, ckpt="none", peak=100.0, mode="train_step", status="ok"):
        return {"model": "m", "mode": mode, "status": status, "checkpointing": ckpt, "peak_tflops": peak,
                "time_ms": {"median_ms": ms}, "model_flops": 10**11, "hardware_flops_analytic": 2 * 10**11}

    # MFU = 1e11 / (t x 100e12): 10 ms -> 0.1, 20 ms -> 0.05, 40 ms -> 0.025; median 0.05. The rest must be ignored.
    path = write_rows(tmp_path / "rows.jsonl", [row(10), row(20), row(40), row(1, mode="fwd_bwd"),
                                                 row(1, peak=None), row(1, status="oom"), row(50, ckpt="full")])
    assert mfu_from_results(path, recompute=False)[0] == pytest.approx(0.05)
    # with recomputation C counts the recomputed forward, so the utilisation does too: 2e11 / (50 ms x 100e12)
    assert mfu_from_results(path, recompute=True)[0] == pytest.approx(0.04)
    code, out, _ = run_cli(["--model", "gpt2", "--tokens", "1B", "--mfu-from", path, "--json"], capsys)
    doc = json.loads(out)
    assert code == 0 and doc["mfu"] == pytest.approx(0.05) and "median MFU of 3 train_step rows" in doc["mfu_source"]
    assert doc["wall_seconds"] == pytest.approx(6 * 123_532_032 * 1e9 / (989.4e12 * 0.05))


def test_text_output(capsys):
    code, out, _ = run_cli(["--model", "gpt2-xl", "--tokens", "300B", "--gpus", "8"], capsys)
    assert code == 0 and "N_matmul = 1,554,971,200" in out and "10.23 days on 8 GPUs" in out and "2.799e+21" in out


@pytest.mark.parametrize("argv, fragment", [
    (["--tokens", "1.4X"], "argument --tokens: '1.4X' is not a token count"),
    (["--tokens", "0"], "must be at least 1"),
    ([], "the following arguments are required: --tokens"),
    (["--tokens", "1B", "--gpus", "0"], "'0' must be a positive integer"),
    (["--tokens", "1B", "--gpu", "tpu-v5"], "--gpu 'tpu-v5' is not in the peak table"),
    (["--tokens", "1B", "--gpu", "v100"], "--gpu 'v100' is ambiguous"),
    (["--tokens", "1B", "--gpu", "t4"], "no dense bf16 peak"),
    (["--tokens", "1B", "--mfu", "1.5"], "--mfu 1.5: must be in (0, 1]"),
    (["--tokens", "1B", "--mfu", "0.4", "--mfu-from", "x"], "give one of them"),
    (["--tokens", "1B", "--mfu-from", "/nonexistent/rows.jsonl"], "no such file"),
    (["--tokens", "1B", "--model", "gpt5"], "unknown model 'gpt5'"),
    (["--tokens", "1B", "--exact", "--seq-len", "4096"], "seq_len=4096 exceeds"),
])
def test_bad_input(capsys, argv, fragment):
    code, out, err = run_cli(argv, capsys)
    assert code == 2 and out == "" and err.count("\n") == 1 and fragment in err, err


def test_mfu_from_cpu_rows_without_peak(tmp_path, capsys):
    path = write_rows(tmp_path / "rows.jsonl", [{"model": "m", "mode": "train_step", "status": "ok",
                                                 "checkpointing": "none", "peak_tflops": None,
                                                 "time_ms": {"median_ms": 5.0}, "model_flops": 10}])
    code, _, err = run_cli(["--tokens", "1B", "--mfu-from", path], capsys)
    assert code == 2 and "no train_step rows with checkpointing none and a known peak" in err


def test_python_api_estimate_equals_cli(capsys):
    import json

    import flopbench
    from flopbench.cli import main

    api = flopbench.estimate("gpt2-xl", "300B", 8, gpu="h100", mfu=0.4)
    assert main(["estimate", "--model", "gpt2-xl", "--tokens", "300B", "--gpus", "8", "--gpu", "h100", "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)
    assert api["flops"] == cli["flops"] == 6 * 1_554_971_200 * 300 * 10**9
    assert api["gpu_hours"] == pytest.approx(cli["gpu_hours"])
    with pytest.raises(flopbench.UsageError, match="give one of them"):
        flopbench.estimate("gpt2", 10**9, mfu=0.4, mfu_from="results/cpu")


@pytest.mark.parametrize("tokens, fragment", [
    ("1e300", "too many tokens"), ("1e1000000000", "is not a token count"), ("9" * 400, "too many tokens")])
def test_huge_token_counts_are_refused_in_one_line(capsys, tokens, fragment):
    from flopbench.cli import main

    assert main(["estimate", "--model", "gpt2", "--tokens", tokens]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and fragment in err


def test_huge_gpu_count_is_refused():
    with pytest.raises(UsageError, match="gpus=an integer of about 401 digits is above the limit"):
        estimate(PRESETS["gpt2"], 10**9, 10**400)


def test_mfu_from_rows_of_another_device_or_dtype_warns(tmp_path, capsys):
    from flopbench.cli import main

    assert main(["run", "--n-layer", "1", "--d-model", "32", "--n-head", "2", "--vocab-size", "64", "--seq-len", "16",
                 "--batch-size", "2", "--warmup", "0", "--iters", "1", "--no-gemm", "--device", "cpu",
                 "--checkpointing", "none", "--peak-tflops", "1", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    assert main(["estimate", "--model", "gpt2", "--tokens", "1B", "--gpu", "h100", "--mfu-from", str(tmp_path)]) == 0
    err = unwrapped(capsys.readouterr().err)
    assert "rows measured on cpu, not on a GPU; their MFU is applied to h100-sxm" in err
    assert "rows measured in fp32, the estimate is for bf16" in err
    # the same rows for an fp32 estimate: only the device differs
    assert main(["estimate", "--model", "gpt2", "--tokens", "1B", "--gpu", "h100", "--dtype", "fp32",
                 "--mfu-from", str(tmp_path)]) == 0
    err = unwrapped(capsys.readouterr().err)
    assert "not on a GPU" in err and "rows measured in" not in err


def test_mfu_from_the_same_gpu_is_silent(capsys):
    from pathlib import Path

    from flopbench.cli import main

    h200 = Path(__file__).resolve().parents[2] / "results" / "h200"
    assert main(["estimate", "--model", "gpt2-xl", "--tokens", "300B", "--gpus", "8", "--gpu", "h200",
                 "--mfu-from", str(h200)]) == 0
    assert capsys.readouterr().err == ""
    assert main(["estimate", "--model", "gpt2-xl", "--tokens", "300B", "--gpus", "8", "--gpu", "h100",
                 "--mfu-from", str(h200)]) == 0
    assert "rows measured on NVIDIA H200, the estimate is for h100-sxm" in unwrapped(capsys.readouterr().err)


def test_a_mig_slice_named_for_the_estimate_gets_its_share():
    # A100: 312 dense bf16 TFLOP/s on 108 SMs; a 1g.5gb slice has 14: 312 x 14 / 108 = 40.44
    peak, source = named_peak("NVIDIA A100-SXM4-40GB MIG 1g.5gb", "bf16", None)
    assert peak == pytest.approx(312 * 14 / 108) and "14/108 SMs" in source


# meta-llama/Llama-3.1-405B config.json (the keys that shape the FLOPs; no _name_or_path)
LLAMA31_405B = {"model_type": "llama", "hidden_size": 16384, "intermediate_size": 53248, "num_hidden_layers": 126,
                "num_attention_heads": 128, "num_key_value_heads": 8, "vocab_size": 128256,
                "max_position_embeddings": 131072, "rope_theta": 500000.0, "tie_word_embeddings": False}
# N_matmul by hand: per layer q and o 16384², k and v 16384·1024, SwiGLU 3·16384·53248; 126 layers + LM head
N_405B = 126 * (2 * 16384**2 + 2 * 16384 * 1024 + 3 * 16384 * 53248) + 16384 * 128256
assert N_405B == 403_747_897_344


@pytest.fixture
def llama_405b(tmp_path):
    path = tmp_path / "llama3-405b.json"
    path.write_text(json.dumps(LLAMA31_405B))
    return str(path)


def test_default_mfu_is_measured_and_lands_near_llama3_405b(llama_405b):
    """Llama 3 405B: 15.6T tokens (Dubey et al. 2024, §3.1), 30.84M H100 GPU-hours (Llama 3.1 model card),
    BF16 MFU 38-43 % on 8K-16K H100s (Dubey et al. 2024, Table 4). 6NT = 3.78e25 FLOPs (the paper: 3.8e25)."""
    tokens, reported = 15_600_000_000_000, 30.84e6
    doc = estimate(llama_405b, "15.6T")
    C = 6 * N_405B * tokens
    assert doc["model"] == "llama:llama3-405b" and doc["flops"] == C and C == pytest.approx(3.78e25, rel=1e-3)
    assert 0.38 <= doc["mfu"] <= 0.43  # a measured MFU on current hardware
    by_hand = {mfu: C / (989.4e12 * mfu) / 3600 for mfu in (0.5, 0.4)}  # 21.22M and 26.52M GPU-hours
    assert doc["gpu_hours"] == pytest.approx(by_hand[0.4]) and by_hand[0.4] == pytest.approx(26.525e6, rel=1e-4)
    assert abs(doc["gpu_hours"] - reported) < abs(by_hand[0.5] - reported)
    assert abs(doc["gpu_hours"] - reported) / reported < 0.15  # the rest: restarts, long context at 38 %, ...


def test_recompute_divides_by_an_hfu_and_says_so(capsys):
    """8NT counts the recomputed forward: hardware FLOPs, so the fraction of peak it is divided by is an HFU."""
    from flopbench.timing.rates import PRACTICAL_MFU

    doc = estimate("gpt2-xl", "300B", 8, recompute=True)
    assert doc["hfu"] == PRACTICAL_MFU and "mfu" not in doc and "HFU" in doc["hfu_source"]
    code, out, _ = run_cli(["--model", "gpt2-xl", "--tokens", "300B", "--recompute", "--hfu", "0.45", "--json"],
                           capsys)
    doc = json.loads(out)
    assert code == 0 and doc["hfu"] == 0.45 and doc["hfu_source"] == "--hfu"
    assert doc["gpu_hours"] == pytest.approx(8 * N_XL * 300e9 / (989.4e12 * 0.45) / 3600)
    code, out, _ = run_cli(["--model", "gpt2-xl", "--tokens", "300B", "--recompute"], capsys)
    assert code == 0 and "  HFU " in out and "  MFU " not in out and "G x peak x HFU" in unwrapped(out)
    code, out, _ = run_cli(["--model", "gpt2-xl", "--tokens", "300B"], capsys)
    assert "  MFU " in out and "HFU" not in out


@pytest.mark.parametrize("argv, fragment", [
    (["--recompute", "--mfu", "0.4"], "--mfu 0.4 with --recompute: 8NT counts the recomputed forward; pass --hfu"),
    (["--hfu", "0.4"], "--hfu 0.4 without --recompute: C counts model FLOPs; pass --mfu"),
    (["--recompute", "--hfu", "1.5"], "--hfu 1.5: must be in (0, 1]"),
    (["--causal", "--recompute"], "--causal with --recompute"),
])
def test_utilization_options_that_do_not_fit(capsys, argv, fragment):
    code, out, err = run_cli(["--model", "gpt2", "--tokens", "1B", *argv], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1 and fragment in err, err


def test_exact_says_which_seq_len_and_warns_at_long_maximum_positions(llama_405b, capsys):
    # exact per token at T = 131072: 6N + 12·L·n_head·head_dim·T = 6N + 12·126·16384·131072, 2.34 x 6N
    per_token = 6 * N_405B + 12 * 126 * 16384 * 131072
    code, out, err = run_cli(["--model", llama_405b, "--tokens", "15.6T", "--exact", "--json"], capsys)
    doc = json.loads(out)
    assert code == 0 and doc["seq_len"] == 131072 and doc["flops_per_token"] == per_token
    assert doc["seq_len_source"] == "the model's maximum positions"
    assert round(doc["flops"] / (6 * N_405B * 15.6e12), 2) == 2.34
    assert err.startswith("warning: ") and len(unwrapped(err).splitlines()) == 1 and "131,072" in err
    assert len(doc["warnings"]) == 1 and "--seq-len" in doc["warnings"][0]
    code, out, err = run_cli(["--model", llama_405b, "--tokens", "15.6T", "--exact"], capsys)
    assert "T = 131,072 tokens per sequence (the model's maximum positions)" in unwrapped(out)
    # the training length given: said, no warning
    code, out, err = run_cli(["--model", llama_405b, "--tokens", "15.6T", "--exact", "--seq-len", "8192"], capsys)
    assert code == 0 and err == "" and "T = 8,192 tokens per sequence (--seq-len)" in unwrapped(out)
    # maximum positions of at most 8192 (gpt2-xl: 1024) are said, not warned about
    code, out, err = run_cli(["--model", "gpt2-xl", "--tokens", "1B", "--exact"], capsys)
    assert err == "" and "T = 1,024 tokens per sequence (the model's maximum positions)" in unwrapped(out)


def test_6n_does_not_depend_on_seq_len(llama_405b, capsys):
    code, out, err = run_cli(["--model", llama_405b, "--tokens", "15.6T"], capsys)
    assert code == 0 and err == "" and "sequences of" not in out and "131" not in out and "T = " not in out
    assert estimate(llama_405b, "15.6T")["seq_len"] is None


def test_causal_halves_the_attention_square_by_hand(capsys):
    """Megatron-LM's `num_floating_point_operations` under a causal mask: QK^T and AV over half the T x T
    square. gpt2-xl at T = 1024, per token: 6N + 12·L·d·T / 2 (the exact count has 12·L·d·T)."""
    per_token = 6 * N_XL + 6 * 48 * 1600 * 1024
    assert per_token == 9_801_686_400  # 9,329,827,200 + 471,859,200
    doc = estimate("gpt2-xl", 10**12, causal=True)
    assert doc["method"] == "causal" and doc["flops_per_token"] == per_token and doc["flops"] == per_token * 10**12
    assert doc["seq_len"] == 1024 and "Megatron-LM" in doc["method_formula"]
    assert 6 * N_XL < per_token < estimate("gpt2-xl", 10**12, exact=True)["flops_per_token"]
    code, out, _ = run_cli(["--model", "gpt2-xl", "--tokens", "1T", "--causal", "--seq-len", "512"], capsys)
    assert code == 0 and "causal" in out and "Megatron-LM" in unwrapped(out) and "half" in unwrapped(out)
    assert "T = 512 tokens per sequence (--seq-len)" in unwrapped(out)


def test_fp8_estimate_divides_by_the_flop_weighted_peak():
    """Llama 3 8B under float8 training: every block Linear layer runs in fp8, the LM head (d x V = 4096 x 128,256)
    in bf16, so 6N's fp8 part is (N − d·V) / N; the weighted peak is 1 / (s / 1979 + (1 − s) / 989.4) on an H100
    SXM (dense fp8 and bf16, H100 whitepaper, the sparse figures halved)."""
    doc = estimate("llama3-8b", "15T", 1024, dtype="fp8")
    n = 7_504_658_432  # N_matmul of Llama 3 8B: 32 x (4096 x 6144 + 4096² + 3 x 4096 x 14336) + 4096 x 128,256
    assert doc["n_matmul"] == n
    share = (n - 4096 * 128_256) / n
    assert doc["fp8_share"] == pytest.approx(share, rel=1e-12)
    assert doc["peak_tflops"] == pytest.approx(1 / (share / 1979 + (1 - share) / 989.4), rel=1e-12)
    assert "FLOP-weighted" in doc["peak_source"]
    bf16 = estimate("llama3-8b", "15T", 1024, dtype="bf16")
    assert doc["gpu_hours"] == pytest.approx(bf16["gpu_hours"] * 989.4 / doc["peak_tflops"], rel=1e-12)


def test_fp8_estimate_on_a_gpu_without_fp8_is_refused(capsys):
    assert main(["estimate", "--model", "llama3-8b", "--tokens", "1T", "--dtype", "fp8", "--gpu", "a100"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "A100 SXM4 80GB has no fp8 tensor cores" in err
