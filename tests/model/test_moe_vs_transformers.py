"""flopbench's mixture-of-experts layer: parameters of a fixed case with shared experts worked by hand, and
its OUTPUT against transformers' sparse MoE blocks with the same weights (issue 24, item 17: the FLOP
counts cannot see routing weights that are not renormalized, or shared experts of the wrong width)."""

import pytest
import torch

from flopbench.flops import analytic
from flopbench.model.config import LLAMA_ARCH, ModelConfig
from flopbench.model.gpt import MoE, build_model

# d = 16, 2 heads; layer 0 routes over 4 SwiGLU experts of width 8 (top 2) plus 2 shared experts of width 6;
# layer 1 is dense (d_ff 24); V = 32, untied.
SHARED = ModelConfig(n_layer=2, d_model=16, n_head=2, d_ff=24, vocab_size=32, max_seq_len=16, n_experts=4,
                     top_k=2, d_ff_expert=8, n_shared_experts=2, d_ff_shared=6, dense_layers=(1,), **LLAMA_ARCH)


def test_shared_experts_parameters_by_hand():
    """By hand (no biases; RMSNorm weights only):
    - token embedding V·d = 32·16 = 512; LM head (untied) 512; final norm 16;
    - layer 0: Q, K, V, O 4·16·16 = 1,024; router 16·4 = 64; experts 4 x (gate, up, down) 4·3·16·8 = 1,536;
      the shared experts, one SwiGLU MLP of width n_shared·d_ff_shared = 2·6 = 12: 3·16·12 = 576 (at one
      expert's width, 6, it would be 288); norms 2·16 = 32 -> 3,232;
    - layer 1: 1,024 + 3·16·24 = 1,152 + 32 -> 2,208;
    total 512 + 512 + 16 + 3,232 + 2,208 = 6,480. A token skips 2 of the 4 routed experts: 2·384 = 768."""
    n = analytic.param_counts(SHARED)
    assert n.total == 512 + 512 + 16 + 3_232 + 2_208 == 6_480
    assert n.non_embedding == 6_480 - 512
    assert n.matmul == (1_024 + 64 + 1_536 + 576) + (1_024 + 1_152) + 512 == 5_888
    assert (n.active, n.active_matmul) == (6_480 - 768, 5_888 - 768)
    assert sum(p.numel() for p in build_model(SHARED, "meta").parameters()) == 6_480
    # The forward by hand, B·T = 4 tokens: 2 FLOPs per active matmul weight per token, plus the scores and
    # weighted sum, 2·2·T·q_dim per token per layer (causal, no window: flopbench counts the full square).
    assert analytic.forward_flops(SHARED, 1, 4) == 2 * 4 * 5_120 + 2 * (4 * 4 * 4 * 16)


transformers = pytest.importorskip("transformers", reason="transformers is a test-only extra")


def hf_block(model_type: str, **keys):
    """transformers' sparse MoE block of `model_type`, with random weights, run by its eager expert loop."""
    cfg = transformers.CONFIG_MAPPING[model_type](hidden_size=16, num_attention_heads=2, num_hidden_layers=1,
                                                  vocab_size=32, **keys)
    cfg._experts_implementation = "eager"
    module = {"mixtral": transformers.models.mixtral.modeling_mixtral.MixtralSparseMoeBlock,
              "qwen3_moe": transformers.models.qwen3_moe.modeling_qwen3_moe.Qwen3MoeSparseMoeBlock}[model_type]
    torch.manual_seed(0)
    block = module(cfg).eval()
    with torch.no_grad():
        for p in block.parameters():
            p.normal_(0, 0.5)
    return block


def copy_weights(ours: MoE, theirs) -> None:
    """transformers keeps the router as (E, d), each expert's gate and up projections stacked as
    gate_up_proj (E, 2f, d) (gate first: `.chunk(2)`) and down_proj (E, d, f), all as F.linear weights
    (out x in); flopbench keeps E x d_in x d_out (`Experts`)."""
    f = ours.experts.gate_weight.shape[-1]
    with torch.no_grad():
        ours.router.weight.copy_(theirs.gate.weight)
        ours.experts.gate_weight.copy_(theirs.experts.gate_up_proj[:, :f].transpose(1, 2))
        ours.experts.up_weight.copy_(theirs.experts.gate_up_proj[:, f:].transpose(1, 2))
        ours.experts.down_weight.copy_(theirs.experts.down_proj.transpose(1, 2))


def moe(n_shared: int = 0) -> MoE:
    cfg = ModelConfig(n_layer=1, d_model=16, n_head=2, d_ff=24, vocab_size=32, n_experts=4, top_k=2, d_ff_expert=8,
                      n_shared_experts=n_shared, d_ff_shared=6 if n_shared else None, **LLAMA_ARCH)
    return MoE(cfg).eval()


X = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("model_type, keys", [
    ("mixtral", dict(intermediate_size=8, num_local_experts=4, num_experts_per_tok=2)),  # always renormalizes
    ("qwen3_moe", dict(moe_intermediate_size=8, num_experts=4, num_experts_per_tok=2, norm_topk_prob=True)),
])
def test_moe_output_equals_transformers(model_type, keys):
    """The same weights, the same input, fp32: the same output. The top-2 routing weights are renormalized to
    sum to 1 (MixtralTopKRouter; Qwen3MoeTopKRouter with norm_topk_prob); without it each output shrinks by
    that sum (about half here)."""
    theirs = hf_block(model_type, **keys)
    ours = moe()
    copy_weights(ours, theirs)
    with torch.no_grad():
        expected, got = theirs(X), ours(X)
    assert expected.norm() > 1.0  # a real output, not zeros
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_shared_experts_output_equals_transformers():
    """Shared experts (DeepSeekMoE, Dai et al. 2024): every token also passes through one SwiGLU MLP of width
    n_shared·d_ff_shared = 2·6 = 12, added to the routed output: Mixtral's block plus transformers' own
    SwiGLU MLP (Qwen3MoeMLP) of that width, weights copied."""
    theirs = hf_block("mixtral", intermediate_size=8, num_local_experts=4, num_experts_per_tok=2)
    mlp_cfg = transformers.Qwen3MoeConfig(hidden_size=16, num_attention_heads=2, num_hidden_layers=1, vocab_size=32)
    shared = transformers.models.qwen3_moe.modeling_qwen3_moe.Qwen3MoeMLP(mlp_cfg, intermediate_size=12).eval()
    ours = moe(n_shared=2)
    copy_weights(ours, theirs)
    with torch.no_grad():
        for p in shared.parameters():
            p.normal_(0, 0.5)
        ours.shared.c_gate.weight.copy_(shared.gate_proj.weight)  # nn.Linear to nn.Linear: out x in both
        ours.shared.c_fc.weight.copy_(shared.up_proj.weight)
        ours.shared.c_proj.weight.copy_(shared.down_proj.weight)
        torch.testing.assert_close(ours(X), theirs(X) + shared(X), rtol=1e-5, atol=1e-5)
