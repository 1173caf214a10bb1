"""Data-parallel runs under torchrun on the CPU (gloo): two ranks, rank 0 reports and writes once."""

import contextlib
import glob
import json
import os
import signal
import subprocess
import sys

import pytest

from flopbench.timing.distributed import aggregate

TINY = ["--n-layer", "2", "--d-model", "32", "--n-head", "2", "--vocab-size", "64", "--seq-len", "16",
        "--batch-size", "2", "--warmup", "1", "--iters", "3", "--no-gemm", "--peak-tflops", "1", "--device", "cpu"]


def torchrun(kind, out_dir):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "flopbench", "run",
           *TINY, "--dist", kind, "--checkpointing", "none", "--json", "--out", str(out_dir)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


@pytest.mark.parametrize("kind", ["ddp", "fsdp"])
def test_two_ranks_rank0_reports_once(kind, tmp_path):
    proc = torchrun(kind, tmp_path)
    doc = json.loads(proc.stdout)  # one JSON document: only rank 0 printed
    assert doc["parallelism"]["kind"] == kind and doc["parallelism"]["world_size"] == 2
    assert doc["parallelism"]["backend"] == "gloo"
    assert len(list(tmp_path.iterdir())) == 1  # one run folder, written by rank 0 only
    lines = (next(tmp_path.iterdir()) / "rows.jsonl").read_text().splitlines()
    assert len(lines) == len(doc["rows"]) == 3
    for row in doc["rows"]:
        d = row["distributed"]
        assert [r["rank"] for r in d["per_rank"]] == [0, 1]
        assert d["aggregate_tokens_per_s"] == pytest.approx(sum(r["tokens_per_s"] for r in d["per_rank"]))
        slowest = max(d["per_rank"], key=lambda r: r["median_ms"])
        assert row["time_ms"]["median_ms"] == slowest["median_ms"]
        assert row["tokens_per_s"] == pytest.approx(2 * 16 / (slowest["median_ms"] / 1e3))
        # per-GPU model FLOPs: each rank's own batch of 2 x 16 tokens
        assert row["mfu"] == pytest.approx(row["model_flops"] / (slowest["median_ms"] / 1e3) / 1e12)
        assert row["world_size"] == 2 and row["dist"] == kind


def test_ddp_with_experts_that_get_no_tokens(tmp_path):
    """A 16-expert top-1 Mixtral-like model on 2 x 16 tokens per rank: some expert gets no token on a rank.
    With one module per expert its weights had no gradient there and DDP's first backward failed ("Expected
    to have finished reduction in the prior iteration"); the stacked expert weights get a zero gradient."""
    config = tmp_path / "config.json"
    config.write_text(json.dumps({
        "model_type": "mixtral", "hidden_size": 32, "intermediate_size": 16, "num_hidden_layers": 1,
        "num_attention_heads": 2, "num_key_value_heads": 2, "max_position_embeddings": 32, "vocab_size": 64,
        "num_local_experts": 16, "num_experts_per_tok": 1}))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "flopbench", "run",
           "--model", str(config), *TINY[8:], "--dist", "ddp", "--checkpointing", "none", "--json", "--no-save"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [r["status"] for r in json.loads(proc.stdout)["rows"]] == ["ok"] * 3


# Rank FLOPBENCH_TEST_OOM_RANK runs out of memory in its first timed step (the forward row); the other rank
# has no such error. Before the ranks agreed on each row's status, the failing rank left the row early and
# the other waited for it in the gather of step times: a hang.
WORKER = """
import os, sys
import torch
from flopbench.api import run as run_module
from flopbench.cli import main

if os.environ["RANK"] == os.environ["FLOPBENCH_TEST_OOM_RANK"]:
    real, calls = run_module.time_step, []

    def time_step(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (injected)")
        return real(*args, **kwargs)

    run_module.time_step = time_step
sys.exit(main(sys.argv[1:]))
"""


def _descendants(pid: int) -> list[int]:
    """Every process below `pid` (from /proc): torchrun starts each rank in a session of its own."""
    children: dict[int, list[int]] = {}
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat) as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(stat.split("/")[2]))
    found, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def run_bounded(cmd, timeout, env=None):
    """Run `cmd`; past `timeout` stop torchrun (SIGTERM: it stops its ranks), then kill whatever of it is left
    (the ranks included), and fail."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env=env)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        ranks = _descendants(proc.pid)
        proc.terminate()
        try:
            proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            pass
        for pid in [proc.pid, *ranks]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"{' '.join(cmd[:6])} ... did not finish in {timeout} s: a rank waits for another")
    return proc.returncode, out, err


def test_one_rank_out_of_memory_gives_an_oom_row_on_every_rank(tmp_path):
    """DDP's forward has no collectives, so the ranks meet again at the agreement after timing."""
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(worker), "run", *TINY,
           "--dist", "ddp", "--checkpointing", "none", "--json", "--out", str(tmp_path / "out")]
    code, out, err = run_bounded(cmd, timeout=120, env={**os.environ, "FLOPBENCH_TEST_OOM_RANK": "1"})
    assert code == 1 and "FAIL status [forward/none]: expected ok, measured oom" in err, err[-2000:]  # an oom row fails
    doc = json.loads(out)
    assert [(r["mode"], r["status"]) for r in doc["rows"]] == [("forward", "oom"), ("fwd_bwd", "ok"),
                                                                ("train_step", "ok")]
    assert doc["rows"][0]["error"].startswith("rank 1: CUDA out of memory") and doc["rows"][0]["mfu"] is None
    assert all(len(r["distributed"]["per_rank"]) == 2 for r in doc["rows"][1:])


def test_a_rank_failing_inside_collectives_ends_the_run_within_the_timeout(tmp_path):
    """Under FSDP the forward all-gathers parameters: the other rank is inside that collective when rank 1
    fails, so no agreement can reach it; the process group's timeout ends the run instead of a hang."""
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(worker), "run", *TINY,
           "--dist", "fsdp", "--checkpointing", "none", "--json", "--out", str(tmp_path / "out")]
    env = {**os.environ, "FLOPBENCH_TEST_OOM_RANK": "1", "FLOPBENCH_DIST_TIMEOUT_S": "10"}
    code, _, _ = run_bounded(cmd, timeout=150, env=env)
    assert code != 0


# Rank FLOPBENCH_TEST_OOM_RANK runs out of memory in every AdamW step; the forward and backward fit. Before the
# optimizer's first step was taken inside the agreed region, the failing rank left the timed steps while the other
# went on into the next step's gradient all-reduce, which met the failing rank's agreement instead: mismatched
# collectives, an error or a wait until the process group's timeout.
OPTIMIZER_WORKER = """
import os, sys
import torch
from flopbench.cli import main

if os.environ["RANK"] == os.environ["FLOPBENCH_TEST_OOM_RANK"]:
    def step(self, *args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB (injected in AdamW.step)")

    torch.optim.AdamW.step = step
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("kind", ["ddp", "fsdp"])
def test_out_of_memory_in_one_ranks_optimizer_step_gives_an_oom_row_on_every_rank(kind, tmp_path):
    worker = tmp_path / "worker.py"
    worker.write_text(OPTIMIZER_WORKER)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(worker), "run", *TINY,
           "--dist", kind, "--checkpointing", "none", "--json", "--out", str(tmp_path / "out")]
    env = {**os.environ, "FLOPBENCH_TEST_OOM_RANK": "1", "FLOPBENCH_DIST_TIMEOUT_S": "30"}
    code, out, err = run_bounded(cmd, timeout=150, env=env)
    assert code == 1 and "FAIL status [train_step/none]: expected ok, measured oom" in err, err[-2000:]
    doc = json.loads(out)  # rank 0's document: it, too, has the oom row, and the run ended normally
    assert [(r["mode"], r["status"]) for r in doc["rows"]] == [("forward", "ok"), ("fwd_bwd", "ok"),
                                                                ("train_step", "oom")]
    assert doc["rows"][2]["error"].startswith("rank 1: CUDA out of memory") and doc["rows"][2]["time_ms"] == {}
    rows = (next((tmp_path / "out").iterdir()) / "rows.jsonl").read_text().splitlines()
    assert [json.loads(r)["status"] for r in rows] == ["ok", "ok", "oom"]


def test_ddp_broadcasts_no_buffers_and_reduces_into_the_gradients(tmp_path):
    """The RoPE tables are constant buffers: broadcasting them costs a collective in every forward for nothing.
    Gradients are views into DDP's reduction buckets, so DDP's step needs no second copy of the gradients
    (the eager backward of the agreed counting phase then needs as much memory as the timed one)."""
    import torch
    import torch.distributed as dist

    from flopbench.model.config import ModelConfig
    from flopbench.model.gpt import build_model
    from flopbench.timing.distributed import DistInfo, wrap

    cfg = ModelConfig("ddp-buffers", n_layer=1, d_model=32, n_head=2, vocab_size=64, max_seq_len=16,
                      positions="rope")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        model = build_model(cfg, "cpu")
        assert any(True for _ in model.buffers())  # the RoPE tables a broadcast would send
        ddp = wrap(model, DistInfo("ddp", 0, 1, 0, "gloo"), torch.device("cpu"))
        ddp(torch.zeros(2, 16, dtype=torch.long)).float().sum().backward()
        assert not ddp.will_sync_module_buffers() and ddp.gradient_as_bucket_view is True
    finally:
        dist.destroy_process_group()


def test_fsdp_mixed_precision_policy_casts_parameters_to_the_run_dtype(tmp_path):
    """FSDP2 with bf16: parameters are all-gathered in bf16 for the compute (torchtitan's MixedPrecisionPolicy),
    gradients reduced and kept in fp32; with fp32 nothing is cast."""
    import torch
    import torch.distributed as dist

    from flopbench.model.config import ModelConfig
    from flopbench.model.gpt import build_model
    from flopbench.timing.distributed import DistInfo, wrap

    cfg = ModelConfig("fsdp-mp", n_layer=1, d_model=32, n_head=2, vocab_size=64, max_seq_len=16)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        seen = {}
        for dtype in ("bf16", "fp32"):
            model = build_model(cfg, "cpu")
            wrap(model, DistInfo("fsdp", 0, 1, 0, "gloo"), torch.device("cpu"), dtype)
            weights = []
            model.h[0].attn.c_attn.register_forward_pre_hook(lambda m, a, w=weights: w.append(m.weight.dtype))
            model(torch.zeros(2, 16, dtype=torch.long)).float().sum().backward()
            seen[dtype] = (weights, {p.grad.dtype for p in model.parameters()})
    finally:
        dist.destroy_process_group()
    assert seen["bf16"] == ([torch.bfloat16], {torch.float32})
    assert seen["fp32"] == ([torch.float32], {torch.float32})


def test_aggregate_by_hand():
    agg = aggregate([{"median_ms": 100.0}, {"median_ms": 200.0}], tokens_per_rank=1000)
    assert agg["aggregate_tokens_per_s"] == pytest.approx(10_000 + 5_000)
    assert agg["slowest_rank"] == 1 and agg["slowest_median_ms"] == 200.0


def test_dist_without_torchrun_is_a_usage_error(capsys, monkeypatch):
    from flopbench.cli import main

    for var in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    code = main(["run", *TINY, "--dist", "ddp", "--no-save"])
    _, err = capsys.readouterr()
    assert code == 2 and "needs torchrun" in err and err.count("\n") == 1


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["ddp", "fsdp"])
def test_nccl_on_the_gpus_here(kind, tmp_path):
    import torch

    n = torch.cuda.device_count()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(n), "-m", "flopbench", "run",
           "--n-layer", "2", "--d-model", "256", "--n-head", "4", "--vocab-size", "1024", "--seq-len", "256",
           "--batch-size", "4", "--iters", "5", "--no-gemm", "--device", "cuda", "--dist", kind,
           "--checkpointing", "none", "--json", "--no-save"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(proc.stdout)
    assert doc["parallelism"]["backend"] == "nccl" and doc["parallelism"]["world_size"] == n
    assert all(r["status"] == "ok" for r in doc["rows"])
