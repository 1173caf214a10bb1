"""`flopbench.measure` around a user's own CPU training loop: per-step counted FLOPs, times, MFU, summary."""

import pytest
import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

import flopbench
from flopbench import UsageError
from flopbench.hardware.detect import detect_gpu
from flopbench.hardware.peaks import peak_tflops

A, B, C = 8, 16, 4  # Linear(A, B) -> ReLU -> Linear(B, C)


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(A, B), nn.ReLU(), nn.Linear(B, C))


def train_flops(n):
    """forward 2·n·(A·B + B·C), plus layer 2's input gradient and both weight gradients (the input needs none)."""
    forward = 2 * n * (A * B + B * C)
    return forward + 2 * n * B * C + 2 * n * (A * B + B * C)


def train_loop(model, m, sizes, checkpointed=False):
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for n in sizes:
        x = torch.randn(n, A)
        y = checkpoint(model, x, use_reentrant=False) if checkpointed else model(x)
        y.pow(2).mean().backward()
        opt.step()
        opt.zero_grad()
        m.step()


def test_per_step_records_with_the_first_steps_count():
    model = mlp()
    with flopbench.measure(model, peak_tflops=0.5) as m:
        train_loop(model, m, [4] * 4)
    records = m.records
    assert [r["step"] for r in records] == [0, 1, 2, 3]
    assert [r["counted"] for r in records] == [True, False, False, False]
    assert {r["hardware_flops"] for r in records} == {train_flops(4)} == {2 * 4 * 192 + 2 * 4 * 64 + 2 * 4 * 192}
    for r in records:
        seconds = r["time_ms"] / 1e3
        assert seconds > 0 and r["input_shapes"] == "[((4, 8),)]"
        assert r["model_flops"] == r["hardware_flops"]
        assert r["achieved_tflops"] == pytest.approx(r["hardware_flops"] / seconds / 1e12)
        assert r["mfu"] == pytest.approx(r["hardware_flops"] / (seconds * 0.5e12)) and r["hfu"] == r["mfu"]
    s = m.summary()
    assert (s["steps"], s["timed_steps"], s["counted_steps"]) == (4, 3, 1)
    times = sorted(r["time_ms"] for r in records[1:])
    assert s["time_ms"]["median_ms"] == pytest.approx(times[1]) and s["time_ms"]["n"] == 3
    assert s["hardware_flops"] == train_flops(4) and s["peak_tflops"] == 0.5 and s["compute_dtype"] == "fp32"
    assert s["mfu"] == pytest.approx(train_flops(4) / (times[1] / 1e3 * 0.5e12))
    df = m.to_dataframe()
    assert len(df) == 4 and df["hardware_flops"].tolist() == [train_flops(4)] * 4


@pytest.mark.parametrize("warmup, timed", [(3, 2), (0, 4), (1, 4)])
def test_summary_leaves_out_the_warmup_steps_and_the_counted_one(warmup, timed):
    # The module docstring: summary statistics leave out steps that ran under the counter (step 0 here, the
    # only shapes) and the first `warmup` steps. Of 5 steps (0..4): warmup=3 leaves 3 and 4; warmup=0 and
    # warmup=1 leave 1..4 (step 0 is both counted and a warm-up step).
    model = mlp()
    with flopbench.measure(model, peak_tflops=0.5, warmup=warmup) as m:
        train_loop(model, m, [4] * 5)
    records = m.records
    s = m.summary()
    assert (s["steps"], s["timed_steps"], s["counted_steps"]) == (5, timed, 1)
    kept = sorted(r["time_ms"] for r in records[5 - timed:])
    # the median of an even count is the mean of the middle two
    median = (kept[timed // 2 - 1] + kept[timed // 2]) / 2
    assert s["time_ms"]["n"] == timed and s["time_ms"]["median_ms"] == pytest.approx(median)
    assert s["mfu"] == pytest.approx(train_flops(4) / (median / 1e3 * 0.5e12))


def test_steps_iterator_calls_step_after_each_body_and_not_after_a_break():
    model = mlp()
    with flopbench.measure(model) as m:
        for i in m.steps(5):
            model(torch.randn(2, A)).sum().backward()
            if i == 3:
                break
    assert len(m.records) == 3  # the 4th body broke off before its step() call
    assert all(r["hardware_flops"] == train_flops(2) for r in m.records)
    assert m.summary()["mfu"] is None and "no GPU detected" in m.summary()["notes"][0]  # the CPU has no peak


def test_new_input_shape_is_counted_on_the_next_step():
    model = mlp()
    with flopbench.measure(model, peak_tflops=1.0) as m:
        train_loop(model, m, [4, 4, 6, 6, 6, 9])
    records = m.records
    assert [r["counted"] for r in records] == [True, False, False, True, False, False]
    # step 2 ran with new shapes uncounted; step 3 had the same shapes and was counted for both
    assert [r["hardware_flops"] for r in records] == [train_flops(4)] * 2 + [train_flops(6)] * 3 + [None]
    s = m.summary()
    assert s["hardware_flops"] is None and any("never counted" in n for n in s["notes"])
    assert any("total FLOPs / total time" in n for n in s["notes"])
    timed = [r for r in records[1:] if not r["counted"] and r["hardware_flops"]]
    assert s["achieved_tflops"] == pytest.approx(sum(r["hardware_flops"] for r in timed)
                                                 / (sum(r["time_ms"] for r in timed) / 1e3) / 1e12)


def test_checkpointed_loop_counts_recompute_and_model_flops_gives_mfu():
    model = mlp()
    with flopbench.measure(model, peak_tflops=1.0, model_flops=train_flops(4)) as m:
        train_loop(model, m, [4, 4, 4], checkpointed=True)
    r = m.records[1]
    # counted (hardware) FLOPs: torch's early stop recomputes layer 1 only (what layer 2's weight grad needs)
    assert r["hardware_flops"] == train_flops(4) + 2 * 4 * A * B and r["model_flops"] == train_flops(4)
    assert r["hfu"] / r["mfu"] == pytest.approx(r["hardware_flops"] / train_flops(4))
    assert m.summary()["model_flops_source"] == "model_flops argument"


def test_counted_flops_equal_profile_train_flops():
    model, x = mlp(), torch.randn(4, A)
    p = flopbench.profile(model, x, warmup=0, iters=1)
    with flopbench.measure(model) as m:
        for _ in m.steps(2):
            model(x).float().pow(2).mean().backward()
    assert m.records[1]["hardware_flops"] == p.train_flops == train_flops(4)


def test_autocast_in_the_loop_sets_the_peak_dtype():
    model = mlp()
    with flopbench.measure(model) as m:
        for _ in m.steps(2):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                y = model(torch.randn(4, A))
            y.float().sum().backward()
    assert m.summary()["compute_dtype"] == "bf16"
    assert m.records[0]["hardware_flops"] == train_flops(4)


def test_summary_with_only_the_counted_step():
    model = mlp()
    with flopbench.measure(model, peak_tflops=1.0) as m:
        train_loop(model, m, [4])
    s = m.summary()
    assert s["timed_steps"] == 0 and s["mfu"] is None and "no timed steps" in s["notes"][-1]


def test_misuse_is_a_usage_error():
    model = mlp()
    m = flopbench.measure(model)
    with pytest.raises(UsageError, match=r"m.step\(\) called outside its block"):
        m.step()
    with pytest.raises(UsageError, match="model=str: pass a torch.nn.Module"):
        flopbench.measure("model")
    with pytest.raises(UsageError, match="model_flops=0: pass a positive integer"):
        flopbench.measure(model, model_flops=0)
    with pytest.raises(UsageError, match="dtype='bfloat16': choose one of None, fp32, tf32, bf16, fp16"):
        flopbench.measure(model, dtype="bfloat16")
    with pytest.raises(UsageError, match="must be a positive number, got -2"):
        flopbench.measure(model, peak_tflops=-2)
    with m:
        with pytest.raises(UsageError, match="already running"):
            m.__enter__()
    assert m.records == []


@pytest.mark.gpu
def test_cuda_loop_events_and_mfu():
    model = nn.Sequential(nn.Linear(1024, 4096), nn.GELU(), nn.Linear(4096, 1024)).cuda()
    opt = torch.optim.AdamW(model.parameters(), fused=True)
    x = torch.randn(4096, 1024, device="cuda")
    with flopbench.measure(model) as m:
        for _ in m.steps(8):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = model(x).float().pow(2).mean()
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    forward = 2 * 4096 * (1024 * 4096 + 4096 * 1024)
    s = m.summary()
    assert m.records[0]["hardware_flops"] == forward + 2 * 4096 * 4096 * 1024 + forward
    assert s["compute_dtype"] == "bf16" and s["time_ms"]["median_ms"] > 0
    name = detect_gpu(0).name
    table = peak_tflops(name, "bf16")
    assert table is not None, f"{name!r} has no bf16 entry in peaks.csv: add its dense datasheet peak"
    assert s["peak_tflops"] == table
    seconds = s["time_ms"]["median_ms"] / 1e3
    assert 0 < s["mfu"] < 1
    assert s["mfu"] == pytest.approx(m.records[0]["hardware_flops"] / (seconds * table * 1e12))
