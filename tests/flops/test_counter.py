"""The FLOP counter's own formulas: grouped matmuls (mixture-of-experts experts) and the report of
matmul-like operators that have no formula, checked by hand and against transformers' Mixtral."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from flopbench.flops.counter import count_step


def test_grouped_mm_forward_and_backward_by_hand():
    torch.manual_seed(0)
    offs = torch.tensor([3, 7, 10], dtype=torch.int32)  # 10 tokens routed to 3 experts: 3, 4, 3 tokens
    a = torch.randn(10, 8, requires_grad=True)  # tokens x d
    b = torch.randn(3, 8, 4, requires_grad=True)  # experts x d x n
    grad = torch.randn(10, 4)
    step = count_step(lambda: torch._grouped_mm(a, b, offs=offs), lambda out: (out * grad).sum())
    # forward 2·tokens·d·n = 640; backward: input gradient (10x4 by 3x4x8) and weight gradient (8x10 by 10x4,
    # split by offs into 3 x 8 x 4): 640 each
    assert step.forward == 2 * 10 * 8 * 4 == 640
    assert step.train == 3 * 640 and step.uncounted == {}
    # plain FlopCounterMode has no formula for it: the experts' matmuls count as 0
    with FlopCounterMode(display=False) as plain:
        torch._grouped_mm(a, b, offs=offs)
    assert plain.get_total_flops() == 0


def test_matmul_like_ops_without_a_formula_are_listed():
    v, m = torch.randn(8), torch.randn(5, 8)
    step = count_step(lambda: torch.mv(m, v).sum() + torch.dot(v, v) + (m @ m.T).sum())
    assert step.forward == 2 * 5 * 8 * 5  # the mm has a formula; mv and dot have none
    assert step.uncounted == {"mv": 1, "dot": 1}


def test_mixtral_experts_are_counted():
    transformers = pytest.importorskip("transformers", reason="transformers is a test-only extra")
    cfg = transformers.MixtralConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                     num_key_value_heads=4, num_local_experts=4, num_experts_per_tok=2, vocab_size=128,
                                     max_position_embeddings=64)
    torch.manual_seed(0)
    model = transformers.MixtralForCausalLM(cfg).eval()
    ids = torch.randint(0, 128, (1, 64))
    with torch.no_grad():
        step = count_step(lambda: model(ids, use_cache=False))
    T, d, f, E, k, L, V = 64, 64, 128, 4, 2, 2, 128
    per_layer = (2 * T * d * 3 * d + 2 * T * d * d  # q, k, v and output projections
                 + 4 * T * T * d  # QK^T and AV
                 + 2 * T * d * E  # the router
                 + 2 * (k * T) * 3 * d * f)  # each token through its top-2 experts: gate, up, down
    assert step.forward == L * per_layer + 2 * T * d * V == 19_988_480
    assert step.uncounted == {}


def test_measure_lists_uncounted_ops():
    import flopbench

    class Dots(torch.nn.Module):  # a forward whose only matmul-like work is torch.dot: no FLOP formula
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.randn(8))

        def forward(self, x):
            return torch.dot(self.w, x)

    model = Dots()
    with flopbench.measure(model, peak_tflops=1.0) as m:
        for _ in m.steps(3):
            model(torch.randn(8)).backward()
    s = m.summary()
    assert s["uncounted"]["dot"] >= 1
    assert any("without a FLOP formula" in n and "dot" in n for n in s["notes"])
