"""The step functions: regional compilation (one block's graph whatever the depth), full checkpointing around
compiled blocks, and a compiled loss that makes no fp32 copy of the logits."""

import copy

import torch
from torch._dynamo.utils import counters
from torch.profiler import ProfilerActivity, profile

from flopbench.model.config import ModelConfig
from flopbench.model.gpt import build_model, lm_loss
from flopbench.timing.step import Stepper

CPU = torch.device("cpu")
TINY = ModelConfig("tiny-step", n_layer=1, d_model=32, n_head=2, vocab_size=64, max_seq_len=16)


def captured_by_one_step(cfg: ModelConfig) -> dict:
    """dynamo's statistics over the first compiled fwd_bwd step of a fresh run of `cfg`."""
    stepper = Stepper(build_model(cfg, "cpu"), cfg, 2, 16, CPU, "fp32", compile_model=True)
    counters.clear()
    stepper.step("fwd_bwd")
    return dict(counters["stats"])


def test_regional_compile_captures_one_block_whatever_the_depth(compiler):
    """Each block is compiled on its own and blocks of one kind share the graph: 3 layers capture the same
    ops as 1, in two graphs (the block, the loss). A whole-model compile captures 3x the block's ops."""
    one, three = captured_by_one_step(TINY), captured_by_one_step(TINY.replace(n_layer=3))
    assert three == one
    assert three["unique_graphs"] == 2


def test_full_checkpointing_around_compiled_blocks_gives_the_eager_gradients(compiler):
    cfg = TINY.replace(n_layer=2)
    model = build_model(cfg, "cpu", checkpointing="full")
    twin = copy.deepcopy(model)
    compiled = Stepper(model, cfg, 2, 16, CPU, "fp32", compile_model=True)
    eager = Stepper(twin, cfg, 2, 16, CPU, "fp32", compile_model=False)
    for stepper in (compiled, eager):
        stepper.step("fwd_bwd")
    for (name, p), q in zip(model.named_parameters(), twin.parameters(), strict=True):
        assert p.grad is not None and torch.allclose(p.grad, q.grad, rtol=1e-4, atol=1e-6), name


def largest_allocation(fn) -> int:
    """The largest single CPU allocation, in bytes, made while `fn()` runs: torch.profiler records each
    allocation (and each free, negative) as a "[memory]" event, inductor's buffers included."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    return max(e.nbytes() for e in prof.profiler.kineto_results.events() if e.name() == "[memory]")


def test_compiled_loss_makes_no_fp32_copy_of_the_logits(compiler):
    """bf16 logits of 2 x 64 x 4096 are 1 MiB; the eager loss casts them to fp32 (2 MiB, B·T·V·4 bytes) and
    its backward makes an fp32 gradient as large. The compiled loss fuses the cast into the log-softmax:
    no allocation reaches the size of an fp32 copy."""
    B, T, V = 2, 64, 4096
    cfg = TINY.replace(vocab_size=V, max_seq_len=T)
    stepper = Stepper(build_model(cfg, "cpu"), cfg, B, T, CPU, "bf16", compile_model=True)
    logits = torch.randn(B, T, V, dtype=torch.bfloat16, requires_grad=True)
    fp32_copy = B * T * V * 4
    assert fp32_copy == 2 * 1024 * 1024

    def step(fn=None):
        stepper.loss(logits, fn).backward()

    step()  # compiles
    assert largest_allocation(lambda: step(lm_loss)) >= fp32_copy  # the probe sees the eager loss's copy
    assert largest_allocation(step) < fp32_copy
