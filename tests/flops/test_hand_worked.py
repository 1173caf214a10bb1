"""Hand-worked cases for what the counted-equals-analytic tests cannot see: the causal estimate of sliding
layers, non-matmul rows of experts, and the bytes of every inference term (GQA, windows, experts, K and V).

Every expected number is written out from the published shapes of the preset (Mistral 7B: Jiang et al.
2023, Table 1; Mixtral 8x7B: Jiang et al. 2024, Table 1; Llama 3 8B: Llama Team 2024, Table 3), not taken
from flopbench's own formulas.
"""

import pytest

from flopbench.flops import analytic, inference
from flopbench.flops.estimates import REGISTRY
from flopbench.model.presets import PRESETS

MISTRAL, MIXTRAL, LLAMA3 = PRESETS["mistral-7b"], PRESETS["mixtral-8x7b"], PRESETS["llama3-8b"]


def test_causal_attention_of_a_sliding_layer_is_the_band_under_the_diagonal():
    # Mistral 7B: 32 layers, all sliding, W = 4096, 32 query heads of 128 (n_head·head_dim = 4096).
    # At T = 8192 a query at position i sees min(i + 1, W) keys: the band has T·W - W²/2 (+ W/2) query-key
    # pairs; flopbench takes the continuous T·W - W²/2, the causal convention of Megatron-LM.
    L, T, W, q = 32, 8192, 4096, 32 * 128
    pairs = T * W - W * W // 2
    assert pairs == 25_165_824
    per_layer = 2 * 2 * q * pairs  # QK^T and AV, 2 FLOPs per multiply-add
    assert analytic.causal_attention_flops(MISTRAL, 1, T) == L * per_layer == 13_194_139_533_312
    # the "causal" estimate: exact training FLOPs with the skipped part of the attention taken out three times
    full_square = L * 2 * 2 * q * T * W  # the sliding layers' T x W rectangle, forward
    skipped = full_square - L * per_layer
    expected = analytic.train_flops(MISTRAL, 1, T) - 3 * skipped
    assert REGISTRY["causal"].formula(MISTRAL, 1, T) == expected
    assert round(expected / 1e12, 2) == 389.07


def test_causal_attention_of_a_full_layer_is_half_the_square():
    T, q, L = 2048, 4096, 32
    assert analytic.causal_attention_flops(LLAMA3, 1, T) == L * 2 * 2 * q * (T * T - T * T // 2)


def test_mixtral_non_matmul_rows_by_hand():
    # Mixtral 8x7B, B = 1, T = 4096: d = 4096, 32 layers, 32 query / 8 K/V heads of 128, 8 experts of
    # width 14336, top 2, SwiGLU (2 operations per element of the width each token uses), RMSNorm.
    B, T, d, L, H, kv, E, k, f = 1, 4096, 4096, 32, 32, 8 * 128, 8, 2, 14336
    BT = B * T
    expected = (
        4 * BT * d  # embedding lookups
        + L * 2 * 4 * BT * d  # two RMSNorms per block, 4 per element
        + 4 * BT * d  # final RMSNorm
        + L * 3 * BT * (H * 128 + kv)  # RoPE on Q and K
        + L * 3 * B * H * T * T  # softmax over the full square
        + L * 2 * BT * k * f  # the SwiGLU of the top_k experts a token uses, not of all 8
        + L * 3 * BT * E  # router softmax and top-k
        + L * 2 * BT * d  # residual adds
    )
    assert analytic.non_matmul_flops(MIXTRAL, B, T) == expected
    assert round(expected / 1e9, 1) == 66.6


def _mixtral_weights_read(experts: int) -> int:
    """Mixtral's parameters a decode step reads when `experts` of each layer's 8 are routed to."""
    d, L, kv, f, V = 4096, 32, 1024, 14336, 32000
    attention = d * d + 2 * d * kv + d * d  # Q, K, V, O
    per_layer = attention + d * 8 + experts * 3 * d * f + 2 * d  # router, experts' gate/up/down, two RMSNorms
    return L * per_layer + d + d * V  # final norm, LM head (untied); not the token embedding


@pytest.mark.parametrize("B, experts", [(1, 2), (2, 4), (8, 8)])
def test_mixtral_decode_reads_the_experts_its_tokens_may_use(B, experts):
    # B tokens x top 2 can reach min(8, 2·B) experts per layer: a batched step reads all 8
    b = inference.decode_bytes(MIXTRAL, B, 100, "bf16")
    assert b.weights == 2 * _mixtral_weights_read(experts)
    if B == 8:
        assert round(b.weights / 1e9, 1) == 93.1


def test_decode_bytes_with_gqa_and_a_window_by_hand():
    # Mistral 7B decoding at context 6000 > W = 4096: each layer's cache holds W keys in view;
    # K and V of 8 heads x 128, bf16.
    B, c, W, L, kv = 4, 6000, 4096, 32, 8 * 128
    b = inference.decode_bytes(MISTRAL, B, c, "bf16")
    assert b.kv_cache_read == 2 * (2 * kv * B * W * L)
    assert b.kv_cache_written == 2 * (2 * kv * B * L)
    assert b.embedding_rows == 2 * B * 4096  # rotary positions: token rows only
    below = inference.decode_bytes(MISTRAL, B, 1000, "fp32")  # below the window: every key
    assert below.kv_cache_read == 4 * (2 * kv * B * 1000 * L)


def test_prefill_bytes_write_both_k_and_v():
    # Llama 3 8B, B = 1, P = 2048, bf16: the weights once (d·V LM head untied, no embedding table), the
    # prompt's embedding rows, and the K and V of every prompt position in every layer.
    B, P, d, L, kv, f, V = 1, 2048, 4096, 32, 1024, 14336, 128256
    weights = L * (d * d + 2 * d * kv + d * d + 3 * d * f + 2 * d) + d + d * V
    expected = 2 * (weights + B * P * d + 2 * L * kv * B * P)
    assert inference.prefill_bytes(LLAMA3, B, P, "bf16") == expected
    assert round(expected / 1e9, 3) == 15.295
