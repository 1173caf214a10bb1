"""Activation checkpointing under torch.compile: every mode traces as one graph, and selective checkpointing
(an op policy) recomputes exactly the attention core, eager and compiled."""

import pytest
import torch

from flopbench.flops.counter import count_step
from flopbench.model.config import ModelConfig
from flopbench.model.gpt import build_model, lm_loss

GPT2 = ModelConfig("gpt2-like", n_layer=2, d_model=32, n_head=4, vocab_size=64, max_seq_len=16)
# Gemma-2-like: soft-capped attention (QK^T, softmax and AV written out as several ops), sliding windows, GQA.
GEMMA = ModelConfig("gemma2-like", n_layer=2, d_model=32, n_head=4, n_kv_head=2, vocab_size=64, max_seq_len=16,
                    mlp="geglu", norm="rmsnorm", positions="rope", bias=False, norm_position="sandwich",
                    layer_types=("sliding", "full"), sliding_window=8, attn_softcap=50.0, final_softcap=30.0)
MOE = ModelConfig("qwen3-moe-like", n_layer=2, d_model=32, n_head=4, n_kv_head=2, d_ff=48, vocab_size=64,
                  max_seq_len=16, n_experts=4, top_k=2, d_ff_expert=24, n_shared_experts=1, d_ff_shared=16,
                  mlp="swiglu", norm="rmsnorm", positions="rope", bias=False, qk_norm="head")
IDX = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(0))
MODES = [("none", True), ("full", True), ("full", False), ("selective", True)]


@pytest.mark.parametrize("checkpointing,early_stop", MODES, ids=["none", "full", "full-no-early-stop", "selective"])
@pytest.mark.parametrize("cfg", [GPT2, GEMMA, MOE], ids=lambda c: c.name)
def test_every_checkpointing_mode_compiles_as_one_graph(cfg, checkpointing, early_stop):
    """torch._dynamo.explain of the model under bf16 autocast: one graph, no break. Selective checkpointing
    used to enter `set_checkpoint_early_stop(False)`, which dynamo skips: a break in every block (3 graphs
    for 2 blocks), while the row said "compiled". Full checkpointing without early stop did the same in
    `GPT.forward`, and dynamo then left the whole forward uncompiled (0 graphs)."""
    torch._dynamo.reset()
    model = build_model(cfg, "cpu", checkpointing=checkpointing, early_stop=early_stop)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        explained = torch._dynamo.explain(model)(IDX)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons


@pytest.mark.parametrize("cfg", [GPT2, GEMMA], ids=lambda c: c.name)
def test_selective_compiled_step_equals_eager(cfg):
    """The selective policy through AOT autograd (forward + backward, one graph): the eager loss and
    gradients."""
    torch._dynamo.reset()
    model = build_model(cfg, "cpu", checkpointing="selective")

    def step(m):
        model.zero_grad(set_to_none=True)
        loss = lm_loss(m(IDX), IDX)
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    loss, grads = step(model)
    compiled_loss, compiled_grads = step(torch.compile(model, backend="aot_eager", fullgraph=True))
    torch.testing.assert_close(compiled_loss, loss)
    for name, grad in grads.items():
        torch.testing.assert_close(compiled_grads[name], grad, msg=name)


@pytest.mark.parametrize("cfg", [GPT2, GEMMA], ids=lambda c: c.name)
def test_selective_recomputes_the_attention_core_once_more(cfg):
    """A real CPU step with selective checkpointing counts the plain step plus one more forward of QK^T and
    AV, 4·B·T·keys·H·d_h per layer (keys = T in a full layer, W in a sliding one: the mask-based kernels
    compute the whole T x T square either way, so T·T here) — not the projections the policy saves, and the
    same with torch's early stop (the output projection needs the core's output, so AV is re-run)."""
    B, T = IDX.shape

    def train(checkpointing):
        model = build_model(cfg, "cpu", checkpointing=checkpointing)
        return count_step(lambda: model(IDX), lambda logits: lm_loss(logits, IDX)).train

    core = 4 * B * T * T * cfg.q_dim * cfg.n_layer
    assert train("selective") == train("none") + core
