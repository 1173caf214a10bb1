"""Property tests (hypothesis): for any legal config, the analytic formulas equal what torch counts, and
the parameter formula equals the model's parameters."""

from helpers import counted_phases
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flopbench.flops import analytic, counter
from flopbench.model.config import ModelConfig
from flopbench.model.gpt import build_model


@st.composite
def configs(draw):
    """Any legal config: every field flopbench models, drawn independently."""
    n_head = draw(st.integers(1, 6))
    n_kv_head = draw(st.sampled_from([k for k in range(1, n_head + 1) if n_head % k == 0]))
    positions = draw(st.sampled_from(["learned", "rope"]))
    head_dim = draw(st.one_of(st.none(), st.integers(1, 8).map(lambda h: 2 * h if positions == "rope" else h)))
    d_model = n_head * draw(st.integers(1, 6)) * (2 if positions == "rope" else 1)
    n_layer = draw(st.integers(1, 4))
    n_experts = draw(st.sampled_from([0, 0, 1, 3, 4]))
    moe = dict(n_experts=n_experts, top_k=draw(st.integers(1, max(n_experts, 1))), d_ff_expert=draw(st.integers(1, 24)),
               n_shared_experts=draw(st.integers(0, 2)),
               dense_layers=tuple(draw(st.sets(st.integers(0, n_layer - 1)))) if n_experts else ())
    cfg = ModelConfig(
        n_layer=n_layer, d_model=d_model, n_head=n_head, n_kv_head=n_kv_head, head_dim=head_dim,
        d_ff=draw(st.integers(1, 4 * d_model + 8)), vocab_size=draw(st.integers(1, 200)), max_seq_len=48,
        bias=draw(st.booleans()), qkv_bias=draw(st.booleans()), tie_embeddings=draw(st.booleans()),
        mlp=draw(st.sampled_from(["gelu", "swiglu", "geglu"])), norm=draw(st.sampled_from(["layernorm", "rmsnorm"])),
        positions=positions, norm_position=draw(st.sampled_from(["pre", "sandwich", "post"])),
        qk_norm=draw(st.sampled_from(["none", "head", "proj"])),
        layer_types=draw(st.sampled_from([("full",), ("sliding",), ("sliding", "full"), ("full", "sliding", "sliding")])),
        sliding_window=draw(st.integers(1, 48)), attn_softcap=draw(st.sampled_from([None, 20.0])),
        final_softcap=draw(st.sampled_from([None, 30.0])), embed_scale=draw(st.booleans()),
        **(moe if n_experts else {}),
    )
    return cfg, draw(st.integers(1, 3)), draw(st.integers(1, 48))


SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(configs())
def test_analytic_equals_counted(case):
    cfg, B, T = case
    assert counter.count_model(cfg, B, T) == counted_phases(cfg, B, T)


@SETTINGS
@given(configs())
def test_param_formula_equals_model_parameters(case):
    cfg, _, _ = case
    model = build_model(cfg, "meta")
    assert analytic.param_counts(cfg).total == sum(p.numel() for p in model.parameters())
