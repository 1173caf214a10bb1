"""timing.memory: the estimate by hand, the refusal before building, the peak memory of a row."""

import resource

import pytest
import torch

from flopbench.api import run as run_module
from flopbench.api.run import RunOptions, run
from flopbench.cli import main
from flopbench.model.config import ModelConfig
from flopbench.timing import memory
from flopbench.timing.device import ModelDoesNotFit

CFG = ModelConfig("mem", n_layer=2, d_model=32, n_head=2, vocab_size=64, max_seq_len=16)
# Parameters by hand: wte 64·32 + wpe 16·32 + 2 blocks x (LN 64 + c_attn 32·96+96 + c_proj 32·32+32 + LN 64
# + c_fc 32·128+128 + c_proj 128·32+32) + ln_f 64 = 2048 + 512 + 2 x 12,704 + 64 (LM head tied)
PARAMS = 2048 + 512 + 2 * (64 + 3168 + 1056 + 64 + 4224 + 4128) + 64
B, T = 2, 16
SBH = T * B * 32


def test_estimate_by_hand():
    assert PARAMS == 28_032
    e = memory.estimate(CFG, B, T, "train_step", "none", "fp32")
    assert (e.weights, e.gradients, e.optimizer) == (4 * PARAMS, 4 * PARAMS, 8 * PARAMS)
    # Korthikanti et al. 2022, Eq. 1 without the 5·a·s²·b scores (fused SDPA): 34·s·b·h bytes at 16 bits,
    # x 4/2 in fp32
    assert e.activations == 2 * 34 * SBH * 2 == 139_264
    assert e.logits == B * T * 64 * (4 + 8) == 24_576  # logits + their fp32 copy and gradient
    assert e.total == 612_352
    full = memory.estimate(CFG, B, T, "fwd_bwd", "full", "bf16")
    # checkpointed: each block's input (2·s·b·h at 16 bits) + one block being recomputed (34·s·b·h)
    assert full.activations == 2 * 2 * SBH + 34 * SBH and full.optimizer == 0
    forward = memory.estimate(CFG, B, T, "forward", "none", "bf16")
    assert (forward.gradients, forward.activations, forward.logits) == (0, 0, B * T * 64 * 2)
    sharded = memory.estimate(CFG, B, T, "train_step", "none", "fp32", shards=2)
    assert sharded.weights == 2 * PARAMS and sharded.optimizer == 4 * PARAMS


def test_llama3_70b_on_a_24_gb_cpu_is_refused_up_front(monkeypatch, capsys):
    monkeypatch.setattr(run_module, "available_bytes", lambda device: (24_000_000_000, "test: 24 GB"))
    built = []
    monkeypatch.setattr(run_module, "build_model", lambda *a, **k: built.append(1))
    code = main(["run", "--model", "llama3-70b", "--device", "cpu", "--seq-len", "128", "--batch-size", "1",
                 "--no-save", "--no-gemm"])
    _, err = capsys.readouterr()
    assert code == 2 and built == []
    assert err.count("\n") == 1 and "does not fit on cpu" in err
    # 70,553,706,496 parameters x 4 bytes (fp32) = 282.2 GB of weights alone
    assert "weights 282.2 GB" in err and "24.0 GB free" in err


def test_a_row_that_cannot_fit_on_the_cpu_is_not_run(monkeypatch):
    forward = memory.estimate(CFG, B, T, "forward", "none", "fp32").total
    train = memory.estimate(CFG, B, T, "train_step", "none", "fp32").total
    free = (forward + train) // 2  # the forward fits, the train step does not
    monkeypatch.setattr(run_module, "available_bytes", lambda device: (free, "test"))
    doc = run(CFG, RunOptions(batch_size=B, seq_len=T, device="cpu", warmup=0, iters=1, gemm=False, out=None,
                              checkpointing="none", modes=("forward", "train_step")), progress=lambda m: None)
    assert [r["status"] for r in doc["rows"]] == ["ok", "oom"]
    assert "not run" in doc["rows"][1]["error"] and doc["rows"][1]["time_ms"] == {}
    assert doc["rows"][1]["memory_estimate_bytes"] == train == doc["memory"]["estimates"]["train_step/none"]["total"]


def test_check_fits_refuses_only_when_nothing_fits():
    plan = [("forward", "none"), ("train_step", "none")]
    smallest = memory.estimate(CFG, B, T, "forward", "none", "fp32").total
    verdicts = memory.check_fits(CFG, B, T, plan, torch.device("cpu"), "fp32", available=(smallest, "test"))
    assert verdicts[("forward", "none")].fits and not verdicts[("train_step", "none")].fits
    with pytest.raises(ModelDoesNotFit, match="smallest row \\(forward, checkpointing none\\)"):
        memory.check_fits(CFG, B, T, plan, torch.device("cpu"), "fp32", available=(smallest - 1, "test"))
    # unknown free memory refuses nothing
    assert all(v.fits for v in memory.check_fits(CFG, B, T, plan, torch.device("cpu"), "fp32",
                                                 available=(None, "unknown")).values())


def test_on_a_gpu_rows_run_and_a_real_oom_decides():
    plan = [("forward", "none"), ("train_step", "none")]
    smallest = memory.estimate(CFG, B, T, "forward", "none", "fp32").total
    verdicts = memory.check_fits(CFG, B, T, plan, torch.device("cuda", 0), "fp32", available=(smallest, "test"))
    assert all(v.fits for v in verdicts.values())


def test_available_bytes_on_linux_reads_meminfo():
    free, source = memory.available_bytes(torch.device("cpu"))
    with open("/proc/meminfo") as f:
        available_kb = next(int(line.split()[1]) for line in f if line.startswith("MemAvailable:"))
    assert source == "MemAvailable in /proc/meminfo"
    assert abs(free - available_kb * 1024) < 2**30  # read a moment apart


def test_peak_bytes_on_a_gpu_is_reset_per_row(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: calls.append("reset"))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 123_456_789)
    gpu = torch.device("cuda", 0)
    memory.reset_peak(gpu)
    assert calls == ["reset"] and memory.peak_bytes(gpu) == 123_456_789


def test_rows_record_peak_memory_on_the_cpu():
    doc = run(CFG, RunOptions(batch_size=B, seq_len=T, device="cpu", warmup=0, iters=1, gemm=False, out=None,
                              checkpointing="none", modes=("forward",)), progress=lambda m: None)
    peak = doc["rows"][0]["peak_memory_bytes"]
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: kilobytes
    assert 0 < peak <= after


# Matmul weights of CFG by hand: 2 blocks x (c_attn 32·96 + c_proj 32·32 + c_fc 32·128 + c_proj 128·32) + the
# tied LM head 32·64
MATMUL = 2 * (32 * 96 + 32 * 32 + 32 * 128 + 128 * 32) + 32 * 64


def test_autocast_keeps_a_low_precision_copy_of_each_matmul_weight():
    assert MATMUL == 26_624
    for mode in ("forward", "fwd_bwd", "train_step"):
        assert memory.estimate(CFG, B, T, mode, "none", "bf16").cast_weights == 2 * MATMUL
        assert memory.estimate(CFG, B, T, mode, "none", "fp16").cast_weights == 2 * MATMUL
    assert memory.estimate(CFG, B, T, "forward", "none", "fp32").cast_weights == 0  # nothing is cast
    # FSDP's mixed-precision policy all-gathers the weights already in bf16: autocast casts none of them
    assert memory.estimate(CFG, B, T, "forward", "none", "bf16", shards=2).cast_weights == 0
    e = memory.estimate(CFG, B, T, "forward", "none", "bf16")
    assert e.total == 4 * PARAMS + 2 * MATMUL + B * T * 64 * 2 and "cast_weights 53.2 kB" in e.describe()


def test_the_casts_autocast_makes_are_the_matmul_weights():
    """A second method: record every fp32 -> bf16 copy of a parameter during a bf16 autocast forward (CPU)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from flopbench.model.gpt import build_model

    model = build_model(CFG, "cpu")
    params = {p.data_ptr() for p in model.parameters()}
    cast = {}

    class Casts(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func is torch.ops.aten._to_copy.default and args[0].data_ptr() in params \
                    and out.dtype == torch.bfloat16:
                cast[args[0].data_ptr()] = out.numel() * out.element_size()
            return out

    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16), Casts():
        model(torch.zeros(B, T, dtype=torch.long))
    biases = 2 * (96 + 32 + 128 + 32)  # F.linear's biases are cast too: a few bytes the estimate leaves out
    assert sum(cast.values()) == 2 * (MATMUL + biases)
    assert memory.estimate(CFG, B, T, "forward", "none", "bf16").cast_weights == 2 * MATMUL


def test_gpt2_xl_forward_estimate_meets_the_h200_peak():
    """results/h200/20261128-032038-gpt2-xl-pad64-cuda-bf16: the forward (B 8, T 1024, bf16) peaked at
    10,470,175,744 bytes; without autocast's bf16 weight copies the estimate was 7,054,926,336 (33 % under)."""
    from flopbench.model.config import pad_vocab
    from flopbench.model.presets import as_config

    e = memory.estimate(pad_vocab(as_config("gpt2-xl"), 64), 8, 1024, "forward", "none", "bf16")
    # 48 blocks x 12·1600² matmul weights + the LM head 1600·50304, 2 bytes each
    assert e.cast_weights == 2 * (48 * 12 * 1600**2 + 1600 * 50304) == 3_110_092_800
    assert e.total - e.cast_weights == 7_054_926_336
    assert abs(e.total - 10_470_175_744) / 10_470_175_744 < 0.05


SOFTCAP = ModelConfig("softcap", n_layer=3, d_model=32, n_head=2, vocab_size=64, max_seq_len=16, attn_softcap=50.0)


def test_soft_capped_attention_scores_by_hand():
    """The soft cap is written out as two matmuls over the T x T square (`model.gpt.attention_core`). Kept for
    backward per score: tanh's output (compute dtype), the fp32 softmax's output (4 bytes) and its copy back in
    the compute dtype (the same tensor in fp32): 2 + 4 + 2 bytes in bf16, 4 + 4 in fp32. A forward without
    autograd holds one layer's scores at once: the masked scores, the fp32 copy softmax reads and its output."""
    square = B * 2 * T * T  # B x heads x T x keys
    assert memory.estimate(SOFTCAP, B, T, "fwd_bwd", "none", "bf16").scores == 3 * square * 8
    assert memory.estimate(SOFTCAP, B, T, "train_step", "none", "fp32").scores == 3 * square * 8
    assert memory.estimate(SOFTCAP, B, T, "fwd_bwd", "full", "bf16").scores == square * 8  # one block recomputed
    assert memory.estimate(SOFTCAP, B, T, "fwd_bwd", "selective", "bf16").scores == square * 8
    assert memory.estimate(SOFTCAP, B, T, "forward", "none", "bf16").scores == square * (2 + 4 + 4)
    assert memory.estimate(SOFTCAP, B, T, "forward", "none", "fp32").scores == square * (4 + 4)
    assert memory.estimate(CFG, B, T, "fwd_bwd", "none", "bf16").scores == 0  # fused SDPA keeps no scores


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_soft_capped_scores_saved_for_backward_are_what_the_estimate_says(dtype):
    """A second method: the T x T tensors autograd saves in one soft-capped attention core."""
    from flopbench.model.gpt import attention_core

    q, k, v = (torch.randn(B, 2, T, 8, dtype=dtype, requires_grad=True) for _ in range(3))  # head_dim 8 != T
    saved = {}

    def pack(t):
        if t.is_floating_point() and t.shape[-2:] == (T, T):
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        attention_core(q, k, v, None, True, 50.0)
    name = {torch.bfloat16: "bf16", torch.float32: "fp32"}[dtype]
    per_layer = memory.estimate(SOFTCAP, B, T, "fwd_bwd", "none", name).scores // SOFTCAP.n_layer
    assert sum(saved.values()) == per_layer == B * 2 * T * T * 8


MIXTRAL_PARAMS = (2 * 32000 * 4096 + 4096  # embedding and LM head (untied), final norm
                  + 32 * (2 * 4096 * 4096 + 2 * 4096 * 1024  # q, o; k, v at 8 KV heads of 128
                          + 4096 * 8 + 8 * 3 * 4096 * 14336 + 2 * 4096))  # router, all 8 experts, 2 norms


def test_mixtral_refusal_counts_every_expert_not_the_active_two(monkeypatch, capsys):
    """Every expert's weights are in memory, not only the top_k a token uses: 46.7e9 parameters x 4 bytes =
    186.8 GB (counting the 2 active of 8 would say 51.5 GB, and a 64 GB machine would build it and be killed)."""
    assert MIXTRAL_PARAMS == 46_702_792_704
    assert f"{4 * MIXTRAL_PARAMS / 1e9:.1f}" == "186.8"
    monkeypatch.setattr(run_module, "available_bytes", lambda device: (64_000_000_000, "test: 64 GB"))
    monkeypatch.setattr(run_module, "build_model", lambda *a, **k: pytest.fail("built"))
    code = main(["run", "--model", "mixtral-8x7b", "--device", "cpu", "--seq-len", "128", "--batch-size", "1",
                 "--no-save", "--no-gemm"])
    _, err = capsys.readouterr()
    assert code == 2 and err.count("\n") == 1 and "weights 186.8 GB" in err and "64.0 GB free" in err
    # bf16 autocast casts every expert's weights too: all matmul weights, the token embedding and the 65
    # norms (4096 each) left out
    from flopbench.model.presets import as_config

    cast = memory.estimate(as_config("mixtral-8x7b"), 1, 128, "forward", "none", "bf16").cast_weights
    assert cast == 2 * (MIXTRAL_PARAMS - 32000 * 4096 - 65 * 4096) == 2 * 46_571_454_464


def test_sharded_estimates_by_hand():
    """Under FSDP (shards > 1) each rank holds 1/shards of the weights, gradients and AdamW state; its own
    batch's activations and logits are whole; nothing is cast (the policy gathers bf16 weights)."""
    for shards in (2, 4):
        e = memory.estimate(CFG, B, T, "train_step", "none", "bf16", shards=shards)
        one = memory.estimate(CFG, B, T, "train_step", "none", "bf16")
        assert (e.weights, e.gradients, e.optimizer) == (4 * PARAMS // shards, 4 * PARAMS // shards,
                                                         8 * PARAMS // shards)
        assert e.activations == one.activations == 2 * 34 * SBH and e.logits == one.logits == B * T * 64 * (2 + 8)
        assert e.cast_weights == 0 and one.cast_weights == 2 * MATMUL
    from flopbench.model.presets import as_config

    mixtral = memory.estimate(as_config("mixtral-8x7b"), 1, 128, "train_step", "none", "bf16", shards=8)
    assert (mixtral.weights, mixtral.gradients, mixtral.optimizer) == (
        4 * MIXTRAL_PARAMS // 8, 4 * MIXTRAL_PARAMS // 8, 8 * MIXTRAL_PARAMS // 8)
    plan = [("train_step", "none")]
    free = (memory.estimate(CFG, B, T, "train_step", "none", "fp32", shards=4).total, "test")
    assert memory.check_fits(CFG, B, T, plan, torch.device("cpu"), "fp32", shards=4, available=free)
    with pytest.raises(ModelDoesNotFit):
        memory.check_fits(CFG, B, T, plan, torch.device("cpu"), "fp32", shards=2, available=free)


LLAMA3_8B_PARAMS = 8_030_261_248


def test_infer_llama3_8b_on_a_24_gb_cpu_is_refused_before_building(monkeypatch, capsys):
    from flopbench.api import infer as infer_module

    monkeypatch.setattr(memory, "available_bytes", lambda device: (24_000_000_000, "test: 24 GB"))
    monkeypatch.setattr(infer_module, "build_model", lambda *a, **k: pytest.fail("built"))
    code = main(["infer", "--model", "llama3-8b", "--device", "cpu", "--no-save", "--no-ceilings"])
    _, err = capsys.readouterr()
    assert code == 2 and err.count("\n") == 1 and "does not fit on cpu for infer" in err
    # fp32 on the CPU: 8,030,261,248 parameters x 4 bytes; the KV cache: 2 x 32 layers x batch 1 x (128 + 32)
    # positions x 8 KV heads x 128 x 4 bytes = 41,943,040
    assert f"weights {4 * LLAMA3_8B_PARAMS / 1e9:.1f} GB" == "weights 32.1 GB" and "weights 32.1 GB" in err
    assert 2 * 32 * 1 * 160 * 8 * 128 * 4 == 41_943_040 and "kv_cache 41.9 MB" in err and "24.0 GB free" in err


def test_infer_refusal_is_decided_by_the_kv_cache(monkeypatch):
    """bf16, batch 64, 4096 + 4096 positions: the weights (2 bytes each) and one block's prefill activations fit
    in 100 GB; the KV cache, 2 x 32 x 64 x 8192 x 8 x 128 x 2 bytes = 68.7 GB, does not."""
    from flopbench.api import infer as infer_module
    from flopbench.model.presets import as_config

    cfg = as_config("llama3-8b")
    kv = 2 * 32 * 64 * 8192 * 8 * 128 * 2
    e = memory.infer_estimate(cfg, 64, 4096, 4096, "bf16")
    assert e.kv_cache == kv == 68_719_476_736
    assert e.weights == 2 * LLAMA3_8B_PARAMS
    assert e.activations == 34 * 4096 * 64 * 4096  # Korthikanti's 34·s·b·h at 16 bits, one block
    assert e.logits == 64 * 128_256 * 2  # the last position only
    assert e.total - kv < 100e9 < e.total
    monkeypatch.setattr(memory, "available_bytes", lambda device: (100_000_000_000, "test: 100 GB"))
    monkeypatch.setattr(infer_module, "build_model", lambda *a, **k: pytest.fail("built"))
    with pytest.raises(ModelDoesNotFit, match=r"kv_cache 68\.7 GB.*bf16, batch 64 x \(prompt 4096 \+ gen 4096\)"):
        infer_module.infer(cfg, batch_size=64, prompt_len=4096, gen_len=4096, device="cpu", dtype="bf16", out=None,
                           ceilings=False, progress=lambda m: None)


def test_infer_estimate_of_a_soft_capped_prefill():
    """One layer's scores of the prompt at once (no autograd): B x heads x P x P x (2 + 4 + 4) bytes in bf16."""
    e = memory.infer_estimate(SOFTCAP, 2, 8, 4, "bf16")
    assert e.scores == 2 * 2 * 8 * 8 * 10
    assert e.kv_cache == 2 * 3 * 2 * 12 * 2 * 16 * 2  # K and V x layers x B x (P + G) x KV heads x head_dim x 2
