"""`flopbench.profile` on modules that are not flopbench's GPT: FLOPs against numbers written out by hand."""

import threading

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from helpers import FailOnCall, RecordPrecision

import flopbench
from flopbench import UsageError
from flopbench.flops.counter import count_module, meta_copy
from flopbench.hardware.detect import detect_gpu
from flopbench.hardware.peaks import match_gpu
from flopbench.model.inputs import Inputs

FAST = dict(warmup=1, iters=2)
A, B, C, N = 6, 10, 4, 3  # MLP: Linear(A, B) -> ReLU -> Linear(B, C), a batch of N rows


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(A, B), nn.ReLU(), nn.Linear(B, C))


MLP_FORWARD = 2 * N * (A * B + B * C)  # 2 FLOPs per multiply-add; biases are not matmul FLOPs
# backward: layer 2's input gradient (2·N·B·C) and both weight gradients (2·N·(A·B + B·C)); layer 1's input
# gradient is not computed because the input does not require grad
MLP_TRAIN = MLP_FORWARD + 2 * N * B * C + 2 * N * (A * B + B * C)


def tiny_convnet():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),  # 3x10x10 -> 8x10x10
        nn.ReLU(),
        nn.Conv2d(8, 4, 3, stride=2),  # 8x10x10 -> 4x4x4
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 5),
    )


def conv_flops(n, c_out, h_out, w_out, c_in, k):
    """2·N·C_out·H_out·W_out·C_in·k·k: one multiply-add per kernel weight per output element."""
    return 2 * n * c_out * h_out * w_out * c_in * k * k


CONV1, CONV2, HEAD = conv_flops(2, 8, 10, 10, 3, 3), conv_flops(2, 4, 4, 4, 8, 3), 2 * 2 * 64 * 5
CONV_FORWARD = CONV1 + CONV2 + HEAD
CONV_TRAIN = CONV_FORWARD + CONV1 + 2 * CONV2 + 2 * HEAD  # conv1: weight gradient only


def test_mlp_flops_by_hand():
    p = flopbench.profile(mlp(), torch.randn(N, A), peak_tflops=1.0, **FAST)
    assert (p.forward_flops, p.train_flops) == (MLP_FORWARD, MLP_TRAIN) == (2 * 3 * 100, 1200 + 240)
    assert p.train_flops != 3 * p.forward_flops
    assert p.counted_on == "meta" and p.meta_fallback is None
    assert p.fvcore_forward == MLP_FORWARD and p.fvcore_note is None
    assert p.by_module["Sequential.0"] == {"forward": 2 * N * A * B, "train": 2 * 2 * N * A * B}
    assert p.by_module["Sequential.2"] == {"forward": 2 * N * B * C, "train": 3 * 2 * N * B * C}
    assert p.parameters == A * B + B + B * C + C
    assert [(r.mode, r.status, r.model_flops) for r in p.rows] == [("forward", "ok", MLP_FORWARD),
                                                                     ("fwd_bwd", "ok", MLP_TRAIN)]


def test_convnet_flops_by_hand():
    p = flopbench.profile(tiny_convnet(), torch.randn(2, 3, 10, 10), **FAST)
    assert CONV_FORWARD == 86_400 + 18_432 + 1_280
    assert (p.forward_flops, p.train_flops) == (CONV_FORWARD, CONV_TRAIN)
    assert p.fvcore_forward == CONV_FORWARD  # fvcore's "conv" counts as a matmul, doubled


@pytest.mark.parametrize("make, inputs", [(mlp, lambda: torch.randn(N, A)),
                                          (tiny_convnet, lambda: torch.randn(2, 3, 10, 10))])
@pytest.mark.parametrize("checkpointing", ["none", "full"])
def test_meta_copy_and_real_device_agree(make, inputs, checkpointing):
    module, x = make(), inputs()
    on_meta = count_module(module, Inputs.of(x), checkpointing=checkpointing)
    on_cpu = count_module(module, Inputs.of(x), checkpointing=checkpointing, meta=False)
    assert on_meta.counted_on == "meta" and on_cpu.counted_on == "cpu"
    assert (on_meta.forward, on_meta.train, on_meta.train_recompute, on_meta.by_module) == \
           (on_cpu.forward, on_cpu.train, on_cpu.train_recompute, on_cpu.by_module)
    assert all(p.grad is None for p in module.parameters())  # counting leaves no gradients behind


def test_meta_copy_copies_no_data_and_keeps_ties():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 4)
            self.head = nn.Linear(4, 10, bias=False)
            self.head.weight = self.emb.weight
            self.register_buffer("pos", torch.arange(3))

        def forward(self, idx):
            return self.head(self.emb(idx) + self.emb(self.pos))

    module = Tied()
    copied = meta_copy(module)
    assert copied.head.weight is copied.emb.weight and copied.head.weight.is_meta and copied.pos.is_meta
    assert not module.emb.weight.is_meta
    p = flopbench.profile(module, torch.randint(0, 10, (2, 3)), **FAST)
    assert p.counted_on == "meta" and p.forward_flops == 2 * 2 * 3 * 4 * 10


def test_module_that_reads_values_falls_back_with_the_reason():
    class Normalized(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(A, C)

        def forward(self, x):
            return self.lin(x) / x.abs().max().item()  # a value: meta tensors have none

    p = flopbench.profile(Normalized(), torch.randn(N, A), **FAST)
    assert p.counted_on == "cpu"
    assert p.meta_fallback == "RuntimeError: Tensor.item() cannot be called on meta tensors"
    assert (p.forward_flops, p.train_flops) == (2 * N * A * C, 2 * 2 * N * A * C)
    assert any(n.startswith("counted on cpu, not on a meta copy: RuntimeError") for n in p.notes)


def test_module_deepcopy_refuses_falls_back_with_the_reason():
    class Locked(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(A, C)
            self.lock = threading.Lock()

        def forward(self, x):
            return self.lin(x)

    p = flopbench.profile(Locked(), torch.randn(N, A), **FAST)
    assert p.counted_on == "cpu" and p.meta_fallback == "TypeError: cannot pickle '_thread.lock' object"
    assert p.forward_flops == 2 * N * A * C


def test_attention_backward_meta_counts_model_flops_device_may_count_the_refused_qk():
    b, h, t, d = 2, 4, 16, 8

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv = nn.Linear(h * d, 3 * h * d)

        def forward(self, x):
            q, k, v = self.qkv(x).view(b, t, 3, h, d).permute(2, 0, 3, 1, 4)
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    module, x = Attention(), torch.randn(b, t, h * d)
    linear, attention = 2 * b * t * (h * d) * (3 * h * d), 4 * b * h * t * t * d  # QK^T and AV, full square
    meta = count_module(module, Inputs.of(x))
    cpu = count_module(module, Inputs.of(x), meta=False)
    assert meta.forward == cpu.forward == linear + attention
    assert meta.train == meta.forward + linear + 2 * attention  # weight grad; 4 bmm for dQ, dK, dV
    # the CPU flash kernel re-forms QK^T in backward: a fifth bmm, counted as dispatched
    assert cpu.train - meta.train in (0, 2 * b * h * t * t * d)


def test_mfu_arithmetic_against_a_given_peak():
    p = flopbench.profile(mlp(), torch.randn(N, A), peak_tflops=2.5, **FAST)
    assert p.peak_tflops == 2.5 and p.peak_source == "--peak-tflops"
    for r in p.rows:
        seconds = r.time_ms["median_ms"] / 1e3
        assert r.time_ms["n"] == 2 and seconds > 0
        assert r.achieved_tflops == pytest.approx(r.model_flops / seconds / 1e12)
        assert r.mfu == pytest.approx(r.model_flops / (seconds * 2.5e12))
        assert r.hfu == r.mfu  # nothing recomputed
    df = p.to_dataframe()
    assert list(df["mode"]) == ["forward", "fwd_bwd"] and list(df["model_flops"]) == [MLP_FORWARD, MLP_TRAIN]
    assert df["mfu"].tolist() == pytest.approx([r.mfu for r in p.rows])


def test_cpu_without_a_peak_gives_no_mfu_and_says_why():
    p = flopbench.profile(mlp(), torch.randn(N, A), **FAST)
    assert p.peak_tflops is None and all(r.mfu is None and r.hfu is None for r in p.rows)
    assert all(r.achieved_tflops > 0 for r in p.rows)
    assert any("no GPU detected" in n and "MFU and HFU are None" in n for n in p.notes)


def test_checkpointing_full_counts_the_recompute_in_hfu_only():
    p = flopbench.profile(mlp(), torch.randn(N, A), peak_tflops=1.0, checkpointing="full", **FAST)
    # torch's early stop: the recompute ends once layer 1's output (saved for layer 2's weight gradient)
    # is rebuilt, so only layer 1 runs again
    assert p.train_flops == MLP_TRAIN and p.train_hardware_flops == MLP_TRAIN + 2 * N * A * B
    train = p.row("fwd_bwd")
    assert train.checkpointing == "full" and train.model_flops == MLP_TRAIN
    assert train.hfu / train.mfu == pytest.approx(p.train_hardware_flops / MLP_TRAIN)


def test_keyword_inputs_custom_loss_and_fvcore_note():
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(A, C)

        def forward(self, x, scale=1.0):
            return {"y": self.lin(x) * scale}

    p = flopbench.profile(Scaled(), {"x": torch.randn(N, A), "scale": 2.0}, loss_fn=lambda out: out["y"].sum(),
                          **FAST)
    assert (p.forward_flops, p.train_flops) == (2 * N * A * C, 4 * N * A * C)
    assert p.fvcore_forward is None and "positional inputs only" in p.fvcore_note


def test_untraceable_output_is_a_clear_fvcore_note():
    class Out:
        def __init__(self, y):
            self.y = y

    class Wrapped(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(A, C)

        def forward(self, x):
            return Out(self.lin(x))

    p = flopbench.profile(Wrapped(), torch.randn(N, A), loss_fn=lambda out: out.y.mean(), **FAST)
    assert p.forward_flops == 2 * N * A * C
    assert p.fvcore_forward is None and p.fvcore_note.startswith("fvcore could not trace Wrapped with torch.jit")
    with pytest.raises(UsageError, match="no floating-point tensor to build the default loss from; pass loss_fn="):
        flopbench.profile(Wrapped(), torch.randn(N, A), **FAST)


def test_frozen_module_has_no_train_step():
    module = mlp().requires_grad_(False)
    p = flopbench.profile(module, torch.randn(N, A), **FAST)
    assert p.train_flops is None and p.row("fwd_bwd").status == "skipped"
    assert "the loss needs no gradient" in p.row("fwd_bwd").error and p.row("forward").status == "ok"


def test_oom_in_one_step_is_recorded(monkeypatch):
    from flopbench.api import profile as profiling

    monkeypatch.setattr(profiling, "time_step", FailOnCall(profiling.time_step, fail_at=2))
    p = flopbench.profile(mlp(), torch.randn(N, A), peak_tflops=1.0, **FAST)
    assert [r.status for r in p.rows] == ["ok", "oom"] and p.row("fwd_bwd").mfu is None
    assert p.row("fwd_bwd").error.startswith("OutOfMemoryError: CUDA out of memory")


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(module="mlp"), "module=str: pass a torch.nn.Module"),
    (dict(example_inputs=3), "example_inputs=int: pass a tensor, a tuple"),
    (dict(checkpointing="selective"), "checkpointing='selective': choose one of None, 'none', 'full'"),
    (dict(iters=0), "iters=0: iters must be an integer >= 1"),
    (dict(warmup=-1), "warmup=-1: warmup must be an integer >= 0"),
    # issue 24, item 11: before, no cap (run, infer and sweep stop at MAX_ITERS = 10,000 timed steps)
    (dict(iters=10**9), "iters=1000000000, warmup=1: at most 10,000 timed and 1,000 warm-up steps"),
    (dict(warmup=10**6), "iters=2, warmup=1000000: at most 10,000 timed and 1,000 warm-up steps"),
    (dict(device="tpu"), "device='tpu': use 'cpu', 'cuda' or 'cuda:N'"),
    (dict(dtype="int8"), "'int8': choose one of auto, fp32, tf32, bf16, fp16, fp8"),
    (dict(peak_tflops=-1.0), "must be a positive number, got -1.0"),
    (dict(loss_fn=lambda y: y), "loss_fn returned a tensor of shape (3, 4): it must return a scalar tensor"),
])
def test_bad_input_is_a_usage_error(kwargs, fragment):
    args = dict(module=mlp(), example_inputs=torch.randn(N, A), **FAST) | kwargs
    with pytest.raises(UsageError) as info:
        flopbench.profile(args.pop("module"), args.pop("example_inputs"), **args)
    message = str(info.value)
    assert fragment in message and "\n" not in message


def test_meta_module_is_refused():
    with torch.device("meta"):
        module = mlp()
    with pytest.raises(UsageError, match="lives on the meta device"):
        flopbench.profile(module, torch.randn(N, A))




class Recorded(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = mlp()

    def forward(self, x):
        return self.inner(RecordPrecision.apply(x))


def test_tf32_holds_in_the_timed_backward(monkeypatch):
    """profile(dtype="tf32") times fwd_bwd with TF32 allowed in backward too, not only in the forward."""
    from flopbench.api import profile as profile_module

    monkeypatch.setattr(profile_module, "resolve_dtype", lambda name, dev: name)  # tf32 needs CUDA otherwise
    timed = []
    real_time_step = profile_module.time_step

    def time_step(step, device, warmup, iters):  # what the timed steps' backward saw
        RecordPrecision.seen = []
        stats = real_time_step(step, device, warmup, iters)
        timed.append(list(RecordPrecision.seen))
        return stats

    monkeypatch.setattr(profile_module, "time_step", time_step)
    x = torch.randn(N, A, requires_grad=True)
    torch.set_float32_matmul_precision("highest")
    flopbench.profile(Recorded(), x, dtype="tf32", fvcore=False, **FAST)
    assert timed[0] == []  # forward under no_grad: no backward
    assert timed[1] == ["high"] * (FAST["warmup"] + FAST["iters"])
    assert torch.get_float32_matmul_precision() == "highest"


@pytest.mark.gpu
def test_cuda_profile_bf16_counts_match_cpu_and_mfu_in_range():
    module = nn.Sequential(nn.Linear(1024, 4096), nn.GELU(), nn.Linear(4096, 1024)).cuda()
    x = torch.randn(4096, 1024, device="cuda")
    p = flopbench.profile(module, x, dtype="bf16", warmup=3, iters=10)
    forward = 2 * 4096 * (1024 * 4096 + 4096 * 1024)
    assert p.device.startswith("cuda") and p.compute_dtype == "bf16" and p.forward_flops == forward
    assert p.train_flops == forward + 2 * 4096 * 4096 * 1024 + forward
    on_device = count_module(module, Inputs.of(x), meta=False)
    assert (on_device.forward, on_device.train) == (p.forward_flops, p.train_flops)
    entry = match_gpu(detect_gpu(0).name)
    assert entry is not None and p.peak_tflops == entry.tflops["bf16"]  # the detected GPU's table entry
    assert all(0 < r.mfu < 1 for r in p.rows)


# --------------------------------------------------------------------------------------------------
# A Hugging Face transformers model: where it was counted, and use_cache=False
# --------------------------------------------------------------------------------------------------

HF_L, HF_D, HF_V, HF_T = 1, 32, 64, 16


def tiny_hf_gpt2():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=HF_L, n_embd=HF_D, n_head=2, vocab_size=HF_V, n_positions=32,
                                     bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(config)  # built offline from the config: no download


# forward of GPT-2, B = 1, by hand: per layer QKV 2·T·d·3d, QK^T and AV 2·T²·d each, output projection 2·T·d²,
# MLP 2 x 2·T·d·4d; then the LM head 2·T·d·V
HF_FORWARD = (HF_L * (2 * HF_T * HF_D * 3 * HF_D + 2 * 2 * HF_T * HF_T * HF_D + 2 * HF_T * HF_D * HF_D
                      + 2 * 2 * HF_T * HF_D * 4 * HF_D) + 2 * HF_T * HF_D * HF_V)


def test_transformers_model_is_counted_without_a_cache_and_fvcore_agrees():
    model = tiny_hf_gpt2()
    idx = torch.randint(0, HF_V, (1, HF_T))
    with pytest.warns(UserWarning, match="GPT2LMHeadModel counted on cpu, not on a meta copy"):
        p = flopbench.profile(model, idx, **FAST)
    assert HF_FORWARD == 491_520
    assert p.forward_flops == HF_FORWARD
    # without use_cache=False the output holds a DynamicCache, which torch.jit (so fvcore) cannot trace
    assert p.fvcore_note is None and p.fvcore_forward == HF_FORWARD
    assert any(n.startswith("called with use_cache=False (GPT2LMHeadModel.forward takes it)") for n in p.notes)
    # transformers' mask code reads a value (.item()) when no cache is passed: the count ran on the CPU, and
    # the notes say where and why
    assert p.counted_on == "cpu" and "item()" in p.meta_fallback
    assert p.notes[0] == f"counted on cpu, not on a meta copy: {p.meta_fallback}"
    assert all(r.status == "ok" for r in p.rows)


def test_use_cache_given_by_the_caller_is_kept():
    model = tiny_hf_gpt2()
    idx = torch.randint(0, HF_V, (1, HF_T))
    p = flopbench.profile(model, {"input_ids": idx, "use_cache": True}, fvcore=False, **FAST)
    assert p.forward_flops == HF_FORWARD  # a cache built on the side adds no matmul
    assert not any("use_cache=False" in n for n in p.notes)


def test_a_meta_count_says_so():
    p = flopbench.profile(mlp(), torch.randn(N, A), **FAST)
    assert p.counted_on == "meta" and p.meta_fallback is None
    assert p.notes[0].startswith("counted on meta: a copy of the module on the meta device")


def test_matmul_like_ops_without_a_formula_are_listed_not_silently_zero():
    """torch has no FLOP formula for aten.dot: a module built on it counts 0 FLOPs, and the profile says
    which op was left out rather than reporting 0 as if it were the truth."""

    class Dots(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(8))

        def forward(self, x):
            return torch.dot(x, self.w)

    prof = flopbench.profile(Dots(), torch.ones(8), warmup=0, iters=1, fvcore=False)
    assert prof.forward_flops == 0
    assert prof.uncounted == {"dot": 1}  # one counted forward (dot's backward is two elementwise products)
    assert "matmul-like ops without a FLOP formula, not in the FLOPs: dot x1" in prof.notes
