"""transformers 5 decoder models (dense and mixture-of-experts) counted exactly, by flopbench's counter and by
fvcore, against a hand formula from the tiny config; and the matmul-like operators torch has no FLOP formula
for (grouped, quantized, fused matmuls), each checked by hand."""

import pytest
import torch
from helpers import Logits
from torch.utils.flop_counter import FlopCounterMode

from flopbench.flops.counter import UncountedOps, count_step, flop_counter
from flopbench.flops.fvcore import fvcore_module
from flopbench.model.inputs import Inputs

transformers = pytest.importorskip("transformers", reason="transformers is a test-only extra")
aten = torch.ops.aten

# The tiny config every model is built from (random weights, nothing downloaded).
B, T, D, H, HD, KV, F, V, L = 2, 16, 64, 4, 16, 2, 128, 128, 2  # batch, seq, hidden, heads, head_dim, K/V heads, MLP
E, TOP_K, MOE_F = 4, 2, 32  # experts, experts per token, qwen3_moe's expert width (mixtral's experts are F wide)
DENSE = ["gpt2", "llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi3", "olmo2", "smollm3"]
MOE = ["mixtral", "qwen3_moe"]
# transformers 5.24 refuses SDPA for Gemma2 ("does not support an attention implementation through
# torch.nn.functional.scaled_dot_product_attention yet"): eager only.
CASES = [(m, a) for m in DENSE + MOE for a in ("eager", "sdpa") if (m, a) != ("gemma2", "sdpa")]
EXPERTS = ["grouped_mm", "batched_mm", "eager"]  # transformers' ExpertsInterface (integrations/moe.py) + eager




def build(model_type: str, attn: str = "eager", experts: str | None = None) -> Logits:
    if model_type == "gpt2":
        # no dropout, as the others' defaults: SDPA with dropout runs torch's math path (bmm) on the CPU
        kw = dict(n_embd=D, n_layer=L, n_head=H, n_inner=4 * D, n_positions=64, attn_pdrop=0.0, resid_pdrop=0.0,
                  embd_pdrop=0.0)
    else:
        kw = dict(hidden_size=D, intermediate_size=F, num_hidden_layers=L, num_attention_heads=H, head_dim=HD,
                  num_key_value_heads=KV, max_position_embeddings=64, pad_token_id=0)
    if model_type == "mixtral":
        kw.update(num_local_experts=E, num_experts_per_tok=TOP_K)
    if model_type == "qwen3_moe":
        kw.update(num_experts=E, num_experts_per_tok=TOP_K, moe_intermediate_size=MOE_F, decoder_sparse_step=1)
    if experts is not None:
        kw["experts_implementation"] = experts
    cfg = transformers.CONFIG_MAPPING[model_type](vocab_size=V, bos_token_id=1, eos_token_id=2, **kw)
    cfg._attn_implementation = attn
    torch.manual_seed(0)
    return Logits(transformers.AutoModelForCausalLM.from_config(cfg))


def experts_by_hand(model_type: str) -> int:
    """Matmul weights each token uses in the routed experts: top_k experts of gate, up and down (d x f each).
    Exact whatever the routing: every token goes to exactly top_k experts."""
    return TOP_K * 3 * D * (MOE_F if model_type == "qwen3_moe" else F)


def forward_by_hand(model_type: str) -> int:
    """2·B·T·(matmul weights used per token) + 4·B·T²·H·head_dim per layer (QK^T and AV over the full
    square, as torch counts SDPA and eager attention) + the LM head 2·B·T·D·V."""
    kv = H if model_type == "gpt2" else KV  # gpt2 has no grouped-query attention
    attention = D * H * HD + 2 * D * kv * HD + H * HD * D  # q, k, v, o
    if model_type == "gpt2":
        mlp = 2 * D * 4 * D  # fc in, fc out (GELU)
    elif model_type in MOE:
        mlp = D * E + experts_by_hand(model_type)  # the router, then the routed experts (no shared expert)
    else:
        mlp = 3 * D * F  # gate, up, down
    per_layer = 2 * B * T * (attention + mlp) + 4 * B * T * T * H * HD
    return L * per_layer + 2 * B * T * D * V


def ids() -> torch.Tensor:
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(0))


def count(model: Logits):
    x = ids()
    return count_step(lambda: model(x), lambda logits: logits.sum())


def train_by_hand(forward: int, attn: str) -> int:
    """Backward = 2 x forward for every matmul: gradients of both operands, the input of the first layer
    included (it is the embedding's output, which needs a gradient for the embedding weight). With SDPA, torch
    counts the CPU flash kernel's backward as 5 bmm, not 4: it re-forms QK^T (2·B·T²·H·head_dim per layer)."""
    return 3 * forward + (L * 2 * B * T * T * H * HD if attn == "sdpa" else 0)


@pytest.mark.parametrize("model_type, attn", CASES)
def test_forward_and_train_counted_exactly(model_type, attn):
    step = count(build(model_type, attn))
    assert step.forward == forward_by_hand(model_type)
    assert step.train == train_by_hand(step.forward, attn)
    assert step.uncounted == {}


def test_hand_formula_values():
    # written out once: llama-like 2 x (2·32·12288 + 2·32·24576 + 4·2·256·64) + 2·32·64·128
    assert forward_by_hand("llama") == 2 * (786_432 + 1_572_864 + 131_072) + 524_288 == 5_505_024
    assert forward_by_hand("mixtral") == 2 * (786_432 + 2 * 32 * (256 + 49_152) + 131_072) + 524_288 == 8_683_520
    assert forward_by_hand("qwen3_moe") == 3_964_928 and forward_by_hand("gpt2") == 7_077_888


@pytest.mark.parametrize("model_type", MOE)
@pytest.mark.parametrize("experts", EXPERTS)
def test_moe_every_experts_implementation_counted_exactly(model_type, experts):
    model = build(model_type, "eager", experts)
    assert model.model.config._experts_implementation == experts
    step = count(model)
    assert step.forward == forward_by_hand(model_type)
    assert step.train == 3 * step.forward and step.uncounted == {}


@pytest.mark.parametrize("model_type", MOE)
def test_plain_flop_counter_mode_misses_the_experts(model_type):
    model, x = build(model_type), ids()  # transformers' default experts_implementation: grouped_mm
    assert model.model.config._experts_implementation == "grouped_mm"
    with torch.no_grad(), FlopCounterMode(display=False) as plain, UncountedOps(plain) as watcher:
        model(x)
    # torch 2.13 has no formula for aten._grouped_mm: the experts' 2·B·T·top_k·3·d·f per layer count as 0
    assert plain.get_total_flops() == forward_by_hand(model_type) - L * 2 * B * T * experts_by_hand(model_type)
    assert watcher.uncounted == {"_grouped_mm": 2 * L}  # two per layer: the experts' gate_up and down
    with torch.no_grad(), flop_counter() as ours:
        model(x)
    assert ours.get_total_flops() == forward_by_hand(model_type)


@pytest.mark.parametrize("model_type, attn", CASES)
def test_fvcore_counts_the_same_forward(model_type, attn):
    fv, note = fvcore_module(build(model_type, attn), Inputs.of(ids()))
    assert note is None
    assert fv.forward == forward_by_hand(model_type)  # 2 x fvcore's multiply-adds on matmul operators
    assert not [op for op in fv.unsupported if any(k in op for k in ("mm", "matmul", "linear", "attention"))]


@pytest.mark.parametrize("model_type", MOE)
@pytest.mark.parametrize("experts", EXPERTS[1:])  # grouped_mm, transformers' default, is in CASES above
def test_fvcore_moe_other_experts_implementations(model_type, experts):
    fv, note = fvcore_module(build(model_type, "eager", experts), Inputs.of(ids()))
    assert note is None and fv.forward == forward_by_hand(model_type)


def test_profile_counts_the_experts_and_fvcore_agrees():
    import flopbench

    p = flopbench.profile(build("mixtral"), ids(), loss_fn=lambda logits: logits.sum(), warmup=0, iters=1)
    assert p.forward_flops == p.fvcore_forward == forward_by_hand("mixtral")
    assert p.train_flops == 3 * p.forward_flops and "aten::_grouped_mm" not in p.fvcore_unsupported


# --------------------------------------------------------------------------------------------------
# The operators themselves, by hand
# --------------------------------------------------------------------------------------------------


def grouped_flops_by_loop(a, b, offs) -> int:
    """2·m·k·n summed over the groups of `aten._grouped_mm(a, b, offs)`, each group's shapes spelled out."""
    starts = [0, *offs.tolist()[:-1]]
    groups = list(zip(starts, offs.tolist()))
    if a.dim() == 2 and b.dim() == 3:  # a's rows split: (e - s) x K by K x N
        return sum(2 * (e - s) * a.shape[1] * b.shape[2] for s, e in groups)
    if a.dim() == 2 and b.dim() == 2:  # the shared dimension split: M x (e - s) by (e - s) x N
        return sum(2 * a.shape[0] * (e - s) * b.shape[1] for s, e in groups)
    if a.dim() == 3 and b.dim() == 2:  # b's columns split: M x K by K x (e - s)
        return sum(2 * a.shape[1] * a.shape[2] * (e - s) for s, e in groups)
    raise AssertionError("3-D x 3-D has no offs")


OFFS = [4, 8, 16]  # 3 groups of 4, 4 and 8 (sizes multiples of 4: the CPU kernel needs 16-byte strides)


@pytest.mark.parametrize("form", ["2Dx3D", "2Dx2D", "3Dx2D", "3Dx3D"])
def test_grouped_mm_every_form_and_its_backward(form):
    torch.manual_seed(0)
    offs = torch.tensor(OFFS, dtype=torch.int32)
    a, b, o = {"2Dx3D": (torch.randn(16, 8), torch.randn(3, 8, 12), offs),  # tokens x d by experts x d x f
               "2Dx2D": (torch.randn(8, 16), torch.randn(16, 12), offs),  # the weight-gradient form
               "3Dx2D": (torch.randn(3, 4, 8), torch.randn(8, 16), offs),
               "3Dx3D": (torch.randn(3, 4, 8), torch.randn(3, 8, 12), None)}[form]
    a.requires_grad_(), b.requires_grad_()
    expected = 2 * 3 * 4 * 8 * 12 if o is None else grouped_flops_by_loop(a, b, o)
    step = count_step(lambda: torch._grouped_mm(a, b, offs=o), lambda out: (out * torch.ones_like(out)).sum())
    assert step.forward == expected
    # the backward's two products (gradients of a and of b) are _grouped_mm calls of other forms, each
    # doing the forward's work: train = 3 x forward
    assert step.train == 3 * expected and step.uncounted == {}


def test_quantized_and_fused_matmuls_by_hand():
    M, K, N = 32, 64, 16
    x, w8 = torch.randn(M, K), torch.randint(-8, 8, (N, K), dtype=torch.int8)
    i8a, i8b = torch.randint(-8, 8, (M, K), dtype=torch.int8), torch.randint(-8, 8, (K, N), dtype=torch.int8)
    w4 = aten._convert_weight_to_int4pack_for_cpu(torch.randint(0, 16, (N, K), dtype=torch.int32), 1)
    cases = {
        "_int_mm": (lambda: torch._int_mm(i8a, i8b), 2 * M * K * N),
        "_weight_int8pack_mm": (lambda: aten._weight_int8pack_mm(x, w8, torch.randn(N)), 2 * M * K * N),
        "_weight_int4pack_mm_for_cpu": (  # packed weight shape N x K/2: K is read from the activations
            lambda: aten._weight_int4pack_mm_for_cpu(x, w4, 32, torch.randn(K // 32, N, 2)), 2 * M * K * N),
        "_addmm_activation": (lambda: aten._addmm_activation(torch.randn(N), x, torch.randn(K, N), use_gelu=True),
                              2 * M * K * N),
        "addbmm": (lambda: torch.addbmm(torch.randn(5, 7), torch.randn(3, 5, 6), torch.randn(3, 6, 7)),
                   2 * 3 * 5 * 6 * 7),
    }
    for name, (call, flops) in cases.items():
        with FlopCounterMode(display=False) as plain, UncountedOps(plain) as watcher:
            call()
        assert plain.get_total_flops() == 0 and watcher.uncounted == {name: 1}, name  # torch 2.13: no formula
        step = count_step(call)
        assert (step.forward, step.uncounted) == (flops, {}), name


def test_scaled_grouped_mm_fp8_on_meta():
    fp8 = torch.float8_e4m3fn
    with torch.device("meta"):
        a = torch.empty(16, 32, dtype=fp8)
        b = torch.empty(4, 16, 32, dtype=fp8).transpose(-2, -1)  # experts x K x N, column-major
        scale_a, scale_b, offs = torch.empty(16), torch.empty(4, 16), torch.empty(4, dtype=torch.int32)
        step = count_step(lambda: aten._scaled_grouped_mm(a, b, scale_a, scale_b, offs=offs, out_dtype=torch.bfloat16))
    assert step.forward == 2 * 16 * 32 * 16 and step.uncounted == {}
