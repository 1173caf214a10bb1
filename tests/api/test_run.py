"""`flopbench run` on the CPU: every field, MFU / HFU arithmetic, files on disk, OOM rows, bad input."""

import json

import pandas as pd
import pytest
import torch
from helpers import FailOnCall
from torch.optim.optimizer import register_optimizer_step_pre_hook

from flopbench.api import run as run_module
from flopbench.api.run import RunOptions, run
from flopbench.cli import main
from flopbench.flops.analytic import train_flops, train_recompute_flops
from flopbench.hardware.detect import detect_gpu
from flopbench.hardware.peaks import match_gpu, rated_clock
from flopbench.hardware.telemetry import MIN_ENERGY_WINDOW_S
from flopbench.model.config import ModelConfig
from flopbench.model.gpt import lm_loss
from flopbench.output.records import read_rows

SMALL = ModelConfig("small", n_layer=2, d_model=64, n_head=4, vocab_size=128, max_seq_len=32)
FAST = dict(batch_size=2, seq_len=32, warmup=1, iters=3, gemm=False, device="cpu")


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    return run(SMALL, RunOptions(**FAST, peak_tflops=1.0, out=str(out)), progress=lambda m: None), out


def test_run_rows_and_every_field(cpu_run):
    doc, _ = cpu_run
    assert [(r["mode"], r["checkpointing"]) for r in doc["rows"]] == [
        ("forward", "none"), ("fwd_bwd", "none"), ("fwd_bwd", "full"), ("train_step", "none"), ("train_step", "full")]
    for r in doc["rows"]:
        assert r["status"] == "ok"
        t = r["time_ms"]
        assert t["n"] == 3 and t["min_ms"] <= t["median_ms"] <= t["max_ms"] and t["iqr_ms"] >= 0
        assert r["tokens_per_s"] == pytest.approx(2 * 32 / (t["median_ms"] / 1e3))
        assert r["hardware_flops_note"] in (
            "equal", "attention backward re-forms QK^T (fused kernel: 5 bmm instead of 4)")
    assert doc["peak"] == {"tflops": 1.0, "source": "--peak-tflops", "dtype": "fp32"}
    assert doc["environment"]["torch"] == torch.__version__


def test_mfu_hfu_arithmetic(cpu_run):
    doc, _ = cpu_run
    by = {(r["mode"], r["checkpointing"]): r for r in doc["rows"]}
    for (mode, ckpt), r in by.items():
        seconds = r["time_ms"]["median_ms"] / 1e3
        assert r["mfu"] == pytest.approx(r["model_flops"] / seconds / 1e12)
        assert r["hfu"] == pytest.approx(r["hardware_flops"] / seconds / 1e12)
    train = by[("train_step", "full")]
    assert train["model_flops"] == train_flops(SMALL, 2, 32)  # model FLOPs never include recompute
    assert train["hardware_flops_analytic"] == train_recompute_flops(SMALL, 2, 32)
    assert train["hfu"] > train["mfu"]  # recompute counted in HFU only
    assert by[("fwd_bwd", "full")]["hfu"] > by[("fwd_bwd", "full")]["mfu"]
    # simple rules: MFU with 6N whatever the checkpointing (model FLOPs), HFU with 8N under full checkpointing
    assert train["simple_formula"] == "6N" and train["simple_hardware_formula"] == "8N"
    assert by[("fwd_bwd", "none")]["simple_formula"] == by[("fwd_bwd", "none")]["simple_hardware_formula"] == "6N"
    assert by[("forward", "none")]["simple_formula"] == by[("forward", "none")]["simple_hardware_formula"] == "2N"


def test_simple_mfu_and_hfu_by_hand(cpu_run):
    """mfu_simple uses 2N / 6N (no recompute, like MFU); hfu_simple 8N under full checkpointing (Narayanan
    et al. 2021: a fourth forward), 6N otherwise. N_matmul = 2 layers x 12·64² + 64·128 (LM head) = 106,496."""
    doc, _ = cpu_run
    n, tokens = 2 * 12 * 64 * 64 + 64 * 128, 2 * 32
    assert n == 106_496
    for r in doc["rows"]:
        seconds = r["time_ms"]["median_ms"] / 1e3
        per_token = 2 if r["mode"] == "forward" else 6
        hw_per_token = 8 if r["checkpointing"] == "full" else per_token
        assert r["mfu_simple"] == pytest.approx(per_token * n * tokens / seconds / 1e12)
        assert r["hfu_simple"] == pytest.approx(hw_per_token * n * tokens / seconds / 1e12)


def test_hfu_causal_by_hand(cpu_run):
    """A causal kernel computes half of every T x T product: forward QK^T + AV over the full square is
    A = 4·B·T²·d·L = 4·2·32²·64·2 = 1,048,576 FLOPs; a training step runs it 3 times (4 with the recompute),
    plus the QK^T the fused backward re-forms (A/2); hfu_causal takes half of all that out."""
    doc, _ = cpu_run
    A = 4 * 2 * 32 * 32 * 64 * 2
    assert A == 1_048_576
    for r in doc["rows"]:
        seconds = r["time_ms"]["median_ms"] / 1e3
        passes = 1 if r["mode"] == "forward" else (4 if r["checkpointing"] == "full" else 3)
        rescore = A // 2 if r["hardware_flops_note"].startswith("attention backward re-forms") else 0
        skipped = (passes * A + rescore) // 2
        assert r["hfu_causal"] == pytest.approx((r["hardware_flops"] - skipped) / seconds / 1e12)
        assert r["hfu_causal"] < r["hfu"]


def test_cpu_rows_have_no_telemetry_and_a_peak_memory(cpu_run):
    doc, _ = cpu_run
    for r in doc["rows"]:
        assert r["telemetry"] is None and r["throttled"] is None
        assert r["peak_clock_tflops"] is None and r["mfu_vs_clock"] is None and r["mfu_vs_gemm"] is None
        assert r["peak_memory_bytes"] > 0 and r["memory_estimate_bytes"] > 0


def test_files_written_and_rereadable(cpu_run):
    doc, out = cpu_run
    folder = out / doc["run_id"]
    lines = (folder / "rows.jsonl").read_text().splitlines()
    assert len(lines) == 5 and json.loads(lines[2])["checkpointing"] == "full"
    df = pd.read_csv(folder / "rows.csv")
    assert len(df) == 5 and {"mfu", "hfu", "time_ms.median_ms", "config.d_model"} <= set(df.columns)
    assert json.loads((folder / "environment.json").read_text())["device"] == "cpu"
    assert len(read_rows(out)) == 5


def test_unknown_peak_gives_null_mfu_and_a_warning(tmp_path):
    messages = []
    doc = run(SMALL, RunOptions(**FAST, modes=("forward",), out=None), progress=messages.append)
    assert doc["rows"][0]["mfu"] is None and doc["rows"][0]["achieved_tflops"] > 0
    assert any("MFU and HFU will be null" in m for m in messages)


def test_oom_in_one_mode_is_recorded_and_others_run(monkeypatch, tmp_path):
    monkeypatch.setattr(run_module, "time_step", FailOnCall(run_module.time_step, fail_at=2))  # the second mode OOMs
    doc = run(SMALL, RunOptions(**FAST, checkpointing="none", out=str(tmp_path)), progress=lambda m: None)
    assert [r["status"] for r in doc["rows"]] == ["ok", "oom", "ok"]
    assert doc["rows"][1]["mfu"] is None and "out of memory" in doc["rows"][1]["error"]
    assert len(read_rows(tmp_path)) == 3


def test_pad_vocab_counts_padded_matmul():
    doc = run(SMALL.replace(vocab_size=100), RunOptions(**FAST, modes=("fwd_bwd",), checkpointing="none",
                                                          pad_vocab=64, out=None), progress=lambda m: None)
    assert doc["config"]["vocab_size"] == 128
    assert doc["rows"][0]["model_flops"] == train_flops(SMALL, 2, 32)


def test_cli_run_json(capsys, tmp_path):
    code = main(["run", "--n-layer", "1", "--d-model", "32", "--n-head", "2", "--vocab-size", "64", "--seq-len", "16",
                 "--batch-size", "2", "--warmup", "0", "--iters", "2", "--checkpointing", "full", "--no-gemm",
                 "--peak-tflops", "2.5", "--out", str(tmp_path), "--json", "--progress"])
    out, err = capsys.readouterr()
    assert code == 0
    doc = json.loads(out)
    # a forward without autograd saves nothing, so it never checkpoints
    assert [(r["mode"], r["checkpointing"]) for r in doc["rows"]] == [
        ("forward", "none"), ("fwd_bwd", "full"), ("train_step", "full")]
    assert doc["peak"]["tflops"] == 2.5 and all(r["mfu"] > 0 for r in doc["rows"])
    assert "timing" in err  # progress goes to stderr


TINY_CLI = ["run", "--n-layer", "1", "--d-model", "32", "--n-head", "2", "--vocab-size", "64", "--seq-len", "16",
            "--batch-size", "2", "--warmup", "0", "--iters", "1", "--no-gemm", "--no-save", "--json"]


def test_cli_modes_times_only_the_modes_named(capsys):
    code = main([*TINY_CLI, "--checkpointing", "all", "--modes", "train_step,forward"])
    out, _ = capsys.readouterr()
    assert code == 0
    assert [(r["mode"], r["checkpointing"]) for r in json.loads(out)["rows"]] == [
        ("train_step", "none"), ("train_step", "full"), ("train_step", "selective"), ("forward", "none")]


@pytest.mark.parametrize("modes", ["train_step,backward", "", "forward,forward"])
def test_cli_bad_modes_are_one_line_exit_2(capsys, modes):
    code = main([*TINY_CLI, "--modes", modes])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "--modes" in err and "forward, fwd_bwd, train_step" in err


def test_unwritable_out_is_a_usage_error(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code = main(["run", "--n-layer", "1", "--d-model", "32", "--n-head", "2", "--seq-len", "8", "--iters", "1",
                 "--no-gemm", "--out", str(blocker / "sub")])
    _, err = capsys.readouterr()
    assert code == 2 and "cannot write there" in err


def test_cpu_out_of_memory_is_an_oom_row(monkeypatch, tmp_path):
    cpu_oom = RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 282 GB. Error code 12")
    monkeypatch.setattr(run_module, "time_step", FailOnCall(run_module.time_step, fail_at=2, error=cpu_oom))
    doc = run(SMALL, RunOptions(**FAST, checkpointing="none", out=str(tmp_path)), progress=lambda m: None)
    assert [r["status"] for r in doc["rows"]] == ["ok", "oom", "ok"]
    assert "can't allocate memory" in doc["rows"][1]["error"]
    assert len(read_rows(tmp_path)) == 3


def test_run_id_is_a_safe_folder_name(tmp_path):
    doc = run(SMALL.replace(name="small+custom"), RunOptions(**FAST, modes=("forward",), out=str(tmp_path)),
              progress=lambda m: None)
    assert "+" not in doc["run_id"] and "small-custom" in doc["run_id"]
    assert (tmp_path / doc["run_id"] / "rows.jsonl").exists()


def test_tf32_holds_for_the_whole_step():
    """--dtype tf32 must cover backward, the checkpoint's recompute inside it, and the optimizer, not only
    the forward. On the CPU the Stepper runs the same code a GPU would (only resolve_dtype refuses tf32)."""
    cfg = ModelConfig("tf32", n_layer=1, d_model=32, n_head=2, vocab_size=64, max_seq_len=16)
    model = run_module.build_model(cfg, "cpu")
    stepper = run_module.Stepper(model, cfg, 2, 16, torch.device("cpu"), "tf32", False)
    seen = []

    def now(where):
        seen.append((where, torch.get_float32_matmul_precision()))

    model.h[0].register_forward_pre_hook(lambda m, a: now("block forward"))
    model.lm_head.register_full_backward_hook(lambda m, gi, go: now("backward"))
    optimizer_hook = register_optimizer_step_pre_hook(lambda o, a, k: now("optimizer"))
    model.checkpointing = "full"
    torch.set_float32_matmul_precision("highest")
    try:
        stepper.step("train_step")
    finally:
        optimizer_hook.remove()
    assert [where for where, _ in seen] == ["block forward", "backward", "block forward", "optimizer"]
    assert {precision for _, precision in seen} == {"high"}  # the recompute ("block forward" #2) too
    assert torch.get_float32_matmul_precision() == "highest"  # restored after the step


def test_checkpointing_works_without_the_early_stop_argument(monkeypatch):
    """torch < 2.9 has no checkpoint(..., early_stop=): the model must not pass it (pyproject allows 2.5)."""
    from flopbench.model import gpt

    real = gpt.checkpoint

    def checkpoint_before_2_9(function, *args, use_reentrant=None, **kwargs):
        if "early_stop" in kwargs:
            raise TypeError("checkpoint() got an unexpected keyword argument 'early_stop'")
        return real(function, *args, use_reentrant=use_reentrant, **kwargs)

    monkeypatch.setattr(gpt, "checkpoint", checkpoint_before_2_9)
    monkeypatch.setattr(gpt, "EARLY_STOP_ARGUMENT", False)  # what the import-time check finds on torch < 2.9
    doc = run(SMALL, RunOptions(**FAST, modes=("fwd_bwd",), checkpointing="full", out=None), progress=lambda m: None)
    row = doc["rows"][0]
    assert row["status"] == "ok" and not row["hardware_flops_note"].startswith("unexplained")
    # early stop off still re-runs the whole block: counted on meta, 2·B·T·d_ff·d per layer more than with it
    from flopbench.flops.counter import count_step

    idx = torch.zeros(2, 32, dtype=torch.long, device="meta")
    counts = {}
    for early_stop in (True, False):
        model = run_module.build_model(SMALL, "meta", checkpointing="full", early_stop=early_stop)
        counts[early_stop] = count_step(lambda m=model: m(idx), lambda logits: lm_loss(logits, idx)).train
    assert counts[False] - counts[True] == 2 * 2 * 32 * 256 * 64 * 2 == train_recompute_flops(
        SMALL, 2, 32, early_stop=False) - train_recompute_flops(SMALL, 2, 32)


# --- compiled runs: dynamo's recompile limit -----------------------------------------------------

TINY = ModelConfig("tiny-compile", n_layer=1, d_model=32, n_head=2, vocab_size=64, max_seq_len=16)
COMPILED = dict(batch_size=2, seq_len=16, warmup=0, iters=1, gemm=False, device="cpu", out=None, compile=True,
                checkpointing="none")


@pytest.fixture
def recompile_limit():
    """Set dynamo's per-frame recompile limit (its name before torch 2.7: cache_size_limit) through dynamo's
    own `config.patch`, undone after the test (monkeypatch's undo can delete a config alias for good)."""
    import torch._dynamo.config as dynamo_config

    name = "recompile_limit" if "recompile_limit" in dynamo_config.get_config_copy() else "cache_size_limit"
    patches = []

    def set_limit(n: int) -> None:
        patch = dynamo_config.patch(**{name: n})
        patch.__enter__()
        patches.append(patch)

    yield set_limit
    for patch in reversed(patches):
        patch.__exit__(None, None, None)


@pytest.fixture
def dynamo_warnings():
    """dynamo's "hit config.<limit>" warnings: the sign that a frame fell back to eager."""
    import logging

    seen = []

    class Catch(logging.Handler):
        def emit(self, record):
            if "hit config." in record.getMessage():
                seen.append(record.getMessage())

    handler, logger = Catch(), logging.getLogger("torch._dynamo")
    logger.addHandler(handler)
    yield seen
    logger.removeHandler(handler)


def test_compiled_runs_in_one_process_each_compile_afresh(compiler, recompile_limit, dynamo_warnings):
    """A sweep or an API loop runs several compiled runs in one process. With a recompile limit of 1 a second
    shape would exceed it and run eagerly (labelled compiled) unless each run starts from an empty cache."""
    recompile_limit(1)
    first = run(TINY, RunOptions(**COMPILED, modes=("forward",)), progress=lambda m: None)
    second = run(TINY.replace(max_seq_len=8), RunOptions(**{**COMPILED, "seq_len": 8}, modes=("forward",)),
                 progress=lambda m: None)
    assert [r["status"] for r in first["rows"] + second["rows"]] == ["ok", "ok"]
    assert dynamo_warnings == []  # no frame fell back to eager


def test_recompile_limit_within_a_run_fails_the_row(compiler, recompile_limit):
    """forward (no autograd) and fwd_bwd are two graphs of the same frame: a limit of 1 is hit by the second,
    which must not be timed eagerly and labelled compiled."""
    recompile_limit(1)
    doc = run(TINY, RunOptions(**COMPILED, modes=("forward", "fwd_bwd")), progress=lambda m: None)
    assert [r["status"] for r in doc["rows"]] == ["ok", "recompile_limit"]
    assert "recompile" in doc["rows"][1]["error"] and doc["rows"][1]["mfu"] is None
    assert doc["compile"] is True


def test_compiled_rows_record_compile_s_and_count_the_eager_flops(compiler):
    """compile_s: the first, compiling, step beyond a steady one (dynamo traces afresh in every run, so it is
    more than 0); null in an eager run. Hardware FLOPs are counted on the eager model, so compiling does not change them, and
    counting leaves the steps compiled: three graphs, the block without and with autograd, and the loss."""
    from torch._dynamo.utils import counters

    options = dict(COMPILED, modes=("forward", "fwd_bwd"))
    counters.clear()
    compiled = run(TINY, RunOptions(**options), progress=lambda m: None)["rows"]
    assert counters["stats"]["unique_graphs"] == 3
    eager = run(TINY, RunOptions(**{**options, "compile": False}), progress=lambda m: None)["rows"]
    for c, e in zip(compiled, eager, strict=True):
        assert c["status"] == e["status"] == "ok"
        assert c["compile_s"] > 0 and e["compile_s"] is None
        assert c["hardware_flops"] == e["hardware_flops"] > 0


# --- telemetry and the three peaks, with a fake NVML on the CPU ----------------------------------


def test_telemetry_covers_the_timed_steps_and_rates_the_three_peaks(monkeypatch):
    from hardware.fake_nvml import FakeNvml

    from flopbench.hardware.telemetry import Telemetry

    gpu = dict(name="NVIDIA H100 80GB HBM3", uuid="GPU-1", sm_clock=[1500, 1650, 1650], mem_clock=2619,
               power_mw=600000, temperature=[60, 75], reasons=[0, 0x4],
               energy_mj=[0, 0, 0, 1000, 1000, 3000])  # the GEMM ceiling's window, then each row: 1 J, 2 J
    nvml = FakeNvml([gpu])
    real_env = run_module.environment
    monkeypatch.setattr(run_module, "environment",
                        lambda device: {**real_env(device), "gpu": {"name": gpu["name"], "sm_clock_max_mhz": 1980}})
    monkeypatch.setattr(run_module, "open_telemetry", lambda device: Telemetry(nvml, gpu, interval_s=60,
                                                                                   min_energy_window_s=0))
    real_step = run_module.Stepper.step
    monkeypatch.setattr(run_module.Stepper, "step", lambda self, mode: (nvml.calls.append("step"),
                                                                         real_step(self, mode))[1])
    B, T, warmup, iters = 2, 32, 1, 2
    doc = run(SMALL, RunOptions(batch_size=B, seq_len=T, warmup=warmup, iters=iters, device="cpu", out=None,
                                checkpointing="none", modes=("forward", "fwd_bwd")), progress=lambda m: None)
    # the energy counter brackets the GEMM ceiling's sustained window, then each row's timed steps only: 1 warm-up
    # step, read, 2 timed steps, read
    order = [c for c in nvml.calls if c in ("step", "energy_mj")]
    assert order == ["energy_mj", "energy_mj"] + ["step", "energy_mj", "step", "step", "energy_mj"] * 2
    gemm = doc["gemm_ceiling"]["tflops_median"]
    assert doc["gemm_ceiling"]["sm_clock_mhz"] == 1575  # its samples: 1500 and 1650 MHz
    peak = doc["peak"]["tflops"]
    assert peak == 66.9  # fp32 on the CPU, rated as an H100 SXM
    for r, energy in zip(doc["rows"], (1.0, 2.0), strict=True):
        t = r["telemetry"]
        assert t["energy_j"] == energy and t["joules_per_token"] == pytest.approx(energy / (B * T * iters))
        assert t["temperature_c"] == 75 and t["power_w"] == 600.0 and t["throttle_reasons"] == ["sw_power_cap"]
        assert r["throttled"] is True
        seconds = r["time_ms"]["median_ms"] / 1e3
        clock = t["sm_clock_mhz"]["median"]
        assert r["peak_clock_tflops"] == pytest.approx(66.9 * clock / 1980)
        assert r["mfu_vs_clock"] == pytest.approx(r["model_flops"] / seconds / 1e12 / (66.9 * clock / 1980))
        assert r["mfu_vs_gemm"] == pytest.approx(r["model_flops"] / seconds / 1e12 / gemm)
        assert r["mfu"] == pytest.approx(r["model_flops"] / seconds / 1e12 / peak)  # the headline is unchanged


def test_telemetry_starts_before_the_first_timed_mark_even_when_nvml_is_slow(monkeypatch):
    """Issue 23 item 14: telemetry.start() (an energy read, the power limit, a first sample, a thread start) ran
    inside the first timed step; in 15 of 15 H200 rows that step was the slowest. With an NVML that takes
    0.3 s per reading, a start inside the window would add over a second to the first step."""
    from hardware.fake_nvml import FakeNvml

    from flopbench.hardware.telemetry import Telemetry
    from flopbench.timing.clock import Clock

    delay = 0.3
    gpu = dict(name="NVIDIA H100 80GB HBM3", uuid="GPU-1", sm_clock=1650, power_mw=600000, energy_mj=[0, 1000])
    nvml = FakeNvml([gpu], delay_s=delay)
    real_env = run_module.environment
    monkeypatch.setattr(run_module, "environment",
                        lambda device: {**real_env(device), "gpu": {"name": gpu["name"], "sm_clock_max_mhz": 1980}})
    monkeypatch.setattr(run_module, "open_telemetry", lambda device: Telemetry(nvml, gpu, interval_s=60))
    real_mark = Clock.mark
    monkeypatch.setattr(Clock, "mark", lambda self: (nvml.calls.append("mark"), real_mark(self))[1])
    real_step = run_module.Stepper.step
    monkeypatch.setattr(run_module.Stepper, "step", lambda self, mode: (nvml.calls.append("step"),
                                                                         real_step(self, mode))[1])
    doc = run(SMALL, RunOptions(batch_size=1, seq_len=8, warmup=1, iters=2, device="cpu", out=None, gemm=False,
                                modes=("forward",)), progress=lambda m: None)
    order = [c for c in nvml.calls if c in ("step", "energy_mj", "mark")]
    assert order == ["step", "energy_mj", "mark", "step", "mark", "mark", "step", "mark", "energy_mj"]
    times = doc["rows"][0]["time_ms"]["times_ms"]
    assert times[0] < delay * 1e3, times  # no NVML reading inside the first timed step


@pytest.mark.parametrize("name, reference, note", [
    ("NVIDIA H100 80GB HBM3", 1830, "rated 1830 MHz"),  # H100 whitepaper: 989.4 = 132 x 4096 x 1830 MHz
    ("NVIDIA A10G", 1980, "NVML's maximum 1980 MHz: no rated clock"),  # no rated clock in the table
])
def test_clock_peak_divides_by_the_rated_clock(monkeypatch, name, reference, note):
    """Issue 23 item 13: NVML's maximum (1980 MHz on an H100) made mfu_vs_clock 8 % high; the rated clock is the
    reference, and NVML's maximum only where the table has none, with a note."""
    from hardware.fake_nvml import FakeNvml

    from flopbench.hardware.telemetry import Telemetry

    gpu = dict(name=name, uuid="GPU-1", sm_clock=1725, mem_clock=2619)
    nvml = FakeNvml([gpu])
    real_env = run_module.environment
    monkeypatch.setattr(run_module, "environment",
                        lambda device: {**real_env(device), "gpu": {"name": name, "sm_clock_max_mhz": 1980}})
    monkeypatch.setattr(run_module, "open_telemetry", lambda device: Telemetry(nvml, gpu, interval_s=60))
    doc = run(SMALL, RunOptions(batch_size=1, seq_len=8, warmup=0, iters=1, device="cpu", dtype="bf16", out=None,
                                gemm=False, modes=("forward",)), progress=lambda m: None)
    peak = {"NVIDIA H100 80GB HBM3": 989.4, "NVIDIA A10G": 125}[name]
    assert doc["peak"]["tflops"] == peak
    r = doc["rows"][0]
    assert r["peak_clock_tflops"] == pytest.approx(peak * 1725 / reference)  # H100: 932.6, not 862.0
    assert note in r["peak_clock_source"]
    seconds = r["time_ms"]["median_ms"] / 1e3
    assert r["mfu_vs_clock"] == pytest.approx(r["model_flops"] / seconds / 1e12 / (peak * 1725 / reference))


@pytest.mark.gpu
def test_cuda_counted_matches_analytic_and_mfu_in_range(tmp_path):
    cfg = ModelConfig("gpu-small", n_layer=4, d_model=512, n_head=8, vocab_size=8192, max_seq_len=512)
    doc = run(cfg, RunOptions(batch_size=8, seq_len=512, device="cuda", warmup=3, iters=10, out=None, gemm=False),
              progress=lambda m: None)
    gpu = detect_gpu(0)
    entry = match_gpu(gpu.name)
    assert entry is not None, f"{gpu.name!r} is not in peaks.csv"
    assert doc["dtype"] == ("bf16" if torch.cuda.get_device_capability() >= (8, 0) else "fp16")
    assert doc["peak"]["tflops"] == entry.tflops[doc["dtype"]]  # the table entry of the detected GPU and dtype
    for r in doc["rows"]:
        assert r["status"] == "ok"
        assert not r["hardware_flops_note"].startswith("unexplained"), r
        assert 0 < r["mfu"] < 1 and r["hfu"] >= r["mfu"] and r["hfu_causal"] < r["hfu"]
        t = r["telemetry"]
        assert t is not None and t["samples"] >= 2 and t["sm_clock_mhz"]["median"] > 0
        assert isinstance(r["throttled"], bool) and t["power_w"] > 0
        if t["energy_j"] is not None:  # only over a long window, at no more than the power limit
            assert t["window_s"] >= MIN_ENERGY_WINDOW_S and t["joules_per_token"] > 0
            assert t["energy_j"] / t["window_s"] <= gpu.power_limit_w
        else:
            assert t["window_s"] < MIN_ENERGY_WINDOW_S or "power limit" in t["energy_note"]
        rated = rated_clock(gpu.name, doc["dtype"])[0] or gpu.sm_clock_max_mhz  # the clock may exceed it
        assert r["peak_clock_tflops"] == pytest.approx(doc["peak"]["tflops"] * t["sm_clock_mhz"]["median"] / rated)
        assert 0 < r["peak_memory_bytes"] <= torch.cuda.get_device_properties(0).total_memory
