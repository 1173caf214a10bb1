"""Mixture-of-experts layers on the CPU: the grouped matmul against the expert loop, no host sync, one
compiled graph, bf16 with shared experts, and the FLOPs a real CPU step counts."""

import contextlib

import pytest
import torch
from helpers import counted_phases

from flopbench.flops.counter import count_step
from flopbench.model import gpt
from flopbench.model.config import ModelConfig
from flopbench.model.gpt import build_model, experts_impl, grouped_mm_runs, lm_loss

aten = torch.ops.aten

LLAMA_ARCH = dict(mlp="swiglu", norm="rmsnorm", positions="rope", bias=False)
# Qwen3-MoE-like (4 experts, 2 per token, GQA); widths of 32 and 24 are rows of 16-byte multiples in fp32 and bf16.
MOE = ModelConfig("moe", n_layer=2, d_model=32, n_head=4, n_kv_head=2, d_ff=48, vocab_size=64, max_seq_len=16,
                  n_experts=4, top_k=2, d_ff_expert=24, **LLAMA_ARCH)
# DeepSeek-MoE-like: a shared expert beside the routed ones; GPT-2-like: GELU experts with biases.
SHARED = MOE.replace(name="shared", n_shared_experts=1, d_ff_shared=16)
GELU_BIAS = ModelConfig("gelu-moe", n_layer=2, d_model=32, n_head=4, vocab_size=64, max_seq_len=16, n_experts=4,
                        top_k=2, d_ff_expert=16)
IDX = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(0))

#: Tensor methods that hand a value to the host: on a GPU each waits for the device (a host sync).
HOST_READS = ("tolist", "item", "__bool__", "__int__", "__float__", "__index__", "cpu", "numpy", "nonzero")


@contextlib.contextmanager
def host_reads():
    """Counts calls of `HOST_READS` on any tensor while open (name -> calls)."""
    seen: dict[str, int] = {}
    real = {name: getattr(torch.Tensor, name) for name in HOST_READS}

    def counting(name):
        def read(self, *args, **kwargs):
            seen[name] = seen.get(name, 0) + 1
            return real[name](self, *args, **kwargs)
        return read

    for name in HOST_READS:
        setattr(torch.Tensor, name, counting(name))
    try:
        yield seen
    finally:
        for name, method in real.items():
            setattr(torch.Tensor, name, method)


def step(model, dtype=None):
    """Loss and parameter gradients of one forward + backward, under autocast to `dtype` if given."""
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=dtype) if dtype else contextlib.nullcontext():
        loss = lm_loss(model(IDX), IDX)
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("cfg", [MOE, SHARED, GELU_BIAS], ids=lambda c: c.name)
def test_grouped_mm_experts_equal_the_loop(cfg, monkeypatch):
    """The same weights through `torch._grouped_mm` and through the loop of one matmul per expert: the same
    loss and gradients (fp32 to rounding; bf16 autocast within bf16's precision)."""
    model = build_model(cfg, "cpu")
    assert experts_impl(model, "cpu", torch.float32) == experts_impl(model, "cpu", torch.bfloat16) == "grouped_mm"
    grouped = {dtype: step(model, dtype) for dtype in (None, torch.bfloat16)}
    monkeypatch.setattr(gpt.Experts, "impl", lambda self, *args, **kwargs: "loop")
    for dtype, (loss, grads) in grouped.items():
        loop_loss, loop_grads = step(model, dtype)
        tol = dict(rtol=1e-5, atol=1e-6) if dtype is None else dict(rtol=2e-2, atol=2e-3)
        torch.testing.assert_close(loss, loop_loss, **tol)
        for name, grad in grads.items():
            torch.testing.assert_close(grad, loop_grads[name], **tol, msg=name)


@pytest.mark.parametrize("dtype", [None, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("checkpointing", ["none", "full"])
def test_moe_step_reads_nothing_back_to_the_host(dtype, checkpointing):
    """Forward + backward of a MoE model (a checkpoint's recompute included) reads no tensor value on the
    host: the expert loop read the token count of every expert (`bincount().tolist()`) in every MoE layer,
    a sync per layer per step on a GPU. (The optimizer is left out: torch's CPU AdamW reads its step count.)"""
    model = build_model(MOE, "cpu", checkpointing=checkpointing)
    with host_reads() as seen:
        step(model, dtype)
    assert seen == {}


def test_moe_compiles_as_one_graph_forward_and_backward():
    """torch.compile of a MoE model (bf16 autocast, as a GPU run) traces one graph without a break, and the
    compiled forward + backward (AOT autograd: fake tensors through the grouped matmul's backward) gives the
    eager loss and gradients. The expert loop broke the graph in every MoE layer (`aten.bincount`'s output
    shape depends on the data), and a compiled train step ended at dynamo's recompile limit."""
    torch._dynamo.reset()
    model = build_model(MOE.replace(n_layer=1), "cpu")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        explained = torch._dynamo.explain(model)(IDX)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons
    eager_loss, eager_grads = step(model, torch.bfloat16)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    loss, grads = step(compiled, torch.bfloat16)
    torch.testing.assert_close(loss, eager_loss)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, eager_grads[name.removeprefix("_orig_mod.")], msg=name)


def test_shared_expert_runs_in_bf16():
    """A shared expert under bf16 autocast: its output is bf16 (a Linear under autocast) while the routed
    experts' output times the fp32 routing weight was fp32, and `index_add_` refused the mix
    ("self (BFloat16) and source (Float)"). A bf16 `run` on the CPU now measures every row, labelled with
    the grouped matmul."""
    from flopbench.api.run import run

    doc = run(SHARED, device="cpu", dtype="bf16", batch_size=2, seq_len=16, warmup=0, iters=1, gemm=False,
              out=None, peak_tflops=1.0, modes=("fwd_bwd",), checkpointing="none", progress=lambda m: None)
    assert [(r["status"], r["experts_impl"]) for r in doc["rows"]] == [("ok", "grouped_mm")]


def test_the_row_label_follows_the_implementation():
    """`experts_impl`: None without experts; "loop" where the grouped matmul cannot run: widths whose rows
    are not a multiple of 16 bytes (d_ff_expert = 6: 24 bytes in fp32, 12 in bf16), a dtype the kernel
    lacks (float64), and fp32 under torch.compile (the meta kernel that shapes fake tensors takes bf16 only)."""
    dense = ModelConfig("dense", n_layer=1, d_model=32, n_head=4, vocab_size=64, max_seq_len=16)
    assert experts_impl(build_model(dense, "meta"), "cpu", torch.float32) is None
    assert grouped_mm_runs("cpu", torch.float64) is False
    model = build_model(MOE, "cpu")
    assert experts_impl(model, "cpu", torch.float64) == "loop"
    assert experts_impl(model, "cpu", torch.float32, compiled=True) == "loop"
    assert experts_impl(model, "cpu", torch.bfloat16, compiled=True) == "grouped_mm"
    narrow = build_model(MOE.replace(d_ff_expert=6), "cpu")
    assert experts_impl(narrow, "cpu", torch.float32) == "loop"
    loss, _ = step(narrow)  # and the loop still runs
    assert torch.isfinite(loss)


@pytest.mark.parametrize("checkpointing", ["none", "full", "selective"])
@pytest.mark.parametrize("cfg", [MOE, SHARED, GELU_BIAS], ids=lambda c: c.name)
def test_a_real_cpu_step_counts_the_analytic_flops(cfg, checkpointing):
    """FlopCounterMode over one real CPU step of a MoE model (the grouped matmul, counted by
    `flops.counter.grouped_mm_flops`) equals the analytic count of `count_model` on meta, plus what the
    CPU flash-attention kernel re-forms in its backward: one QK^T per layer, 2·B·T²·H·d_h."""
    model = build_model(cfg, "cpu", checkpointing=checkpointing)
    counted = count_step(lambda: model(IDX), lambda logits: lm_loss(logits, IDX))
    key = {"none": "train", "full": "train_recompute", "selective": "train_recompute_selective"}[checkpointing]
    B, T = IDX.shape
    rescore = 2 * B * T * T * cfg.q_dim * cfg.n_layer
    assert counted.train == counted_phases(cfg, B, T)[key] + rescore
    assert counted.forward == counted_phases(cfg, B, T)["forward"]
    assert counted.uncounted == {}


def test_an_expert_without_tokens_gets_a_zero_gradient():
    """16 experts, one per token, 4 tokens: at least 12 experts get none. Their slices of the stacked weights
    get an exact zero gradient from the grouped matmul's backward (an empty group), as from the loop, so
    DDP finds every parameter with a gradient (tests/timing/test_distributed.py runs it under torchrun)."""
    cfg = MOE.replace(n_layer=1, n_experts=16, top_k=1, d_ff_expert=16)
    model = build_model(cfg, "cpu")
    idx, scores = IDX[:1, :4], []
    model.h[0].mlp.router.register_forward_hook(lambda module, args, out: scores.append(out.detach()))
    lm_loss(model(idx), idx).backward()
    used = set(scores[0].argmax(dim=-1).tolist())
    assert len(used) <= 4
    for name in ("gate", "up", "down"):
        grad = getattr(model.h[0].mlp.experts, f"{name}_weight").grad
        assert [e for e in range(16) if grad[e].abs().sum() > 0] == sorted(used)
