"""Property tests (hypothesis): for any legal config, the analytic formulas equal what torch counts, and
the parameter formula equals the model's parameters."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flopbench.flops import analytic, counter
from flopbench.model.config import ModelConfig
from flopbench.model.gpt import build_model


@st.composite
def configs(draw):
    n_head = draw(st.integers(1, 6))
    d_model = n_head * draw(st.integers(1, 12))
    cfg = ModelConfig(
        n_layer=draw(st.integers(1, 3)),
        d_model=d_model,
        n_head=n_head,
        d_ff=draw(st.integers(1, 4 * d_model + 8)),
        vocab_size=draw(st.integers(1, 200)),
        max_seq_len=48,
        bias=draw(st.booleans()),
        tie_embeddings=draw(st.booleans()),
    )
    return cfg, draw(st.integers(1, 3)), draw(st.integers(1, 48))


SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(configs())
def test_analytic_equals_counted(case):
    cfg, B, T = case
    assert counter.count_model(cfg, B, T) == {
        "forward": analytic.forward_flops(cfg, B, T),
        "train": analytic.train_flops(cfg, B, T),
        "train_recompute": analytic.train_recompute_flops(cfg, B, T),
    }


@SETTINGS
@given(configs())
def test_param_formula_equals_model_parameters(case):
    cfg, _, _ = case
    model = build_model(cfg, "meta")
    assert analytic.param_counts(cfg).total == sum(p.numel() for p in model.parameters())
