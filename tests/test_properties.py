"""Property tests (hypothesis): for any legal config, the analytic formulas equal what torch counts,
the parameter formula equals the model's parameters, and MFU / HFU fall as step time grows."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flopbench import analytic, counted
from flopbench.bench import Row
from flopbench.config import ModelConfig
from flopbench.model import build_model


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
    assert counted.count_torch(cfg, B, T) == {
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


@settings(max_examples=200, deadline=None)
@given(flops=st.integers(1, 10**18), hw_extra=st.integers(0, 10**17), peak=st.floats(1.0, 5000.0),
       t1=st.floats(1e-3, 1e4), factor=st.floats(1.001, 100.0))
def test_mfu_and_hfu_fall_as_time_grows(flops, hw_extra, peak, t1, factor):
    from flopbench.bench import _derive_rates

    fast, slow = Row("train_step", "full"), Row("train_step", "full")
    for row, ms in ((fast, t1), (slow, t1 * factor)):
        row.model_flops, row.hardware_flops_counted, row.simple_flops = flops, flops + hw_extra, flops
        _derive_rates(row, ms, batch_tokens=1024, peak=peak)
    assert slow.mfu < fast.mfu and slow.hfu < fast.hfu and slow.tokens_per_s < fast.tokens_per_s
    assert fast.hfu >= fast.mfu
    assert fast.mfu == pytest.approx(flops / (t1 / 1e3) / (peak * 1e12))
