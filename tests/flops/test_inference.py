"""Generation FLOPs and bytes: flopbench's formulas against what transformers' own GPT-2 and Llama execute
with a KV cache (FlopCounterMode, eager attention, CPU, random weights, offline), and against hand formulas."""

import pytest
import torch

from flopbench.flops import inference
from flopbench.model.config import ModelConfig
from flopbench.model.hf import load_hf_config

transformers = pytest.importorskip("transformers", reason="transformers is a test-only extra: pip install -e .[test]")


def _count(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def _prefill_and_decode(model, B: int, P: int, vocab: int) -> tuple[int, int, int]:
    """FLOPs of a prefill (logits of the last position only) and of the next two decode steps."""
    torch.manual_seed(0)
    ids = torch.randint(0, vocab, (B, P))
    state = {}

    def prefill():
        state["out"] = model(ids, use_cache=True, logits_to_keep=1)

    def step():
        out = state["out"]
        nxt = out.logits[:, -1:].argmax(-1)
        state["out"] = model(nxt, past_key_values=out.past_key_values, use_cache=True)

    with torch.no_grad():
        return _count(prefill), _count(step), _count(step)


def test_gpt2_prefill_and_decode_equal_transformers(tmp_path):
    # the published reference: L=2, d=128, V=512, B=2, P=48: prefill 80,478,208; next decode step 1,935,360
    hf = transformers.GPT2Config(n_layer=2, n_embd=128, n_head=4, vocab_size=512, n_positions=64)
    model = transformers.GPT2LMHeadModel(hf).eval()
    model.config._attn_implementation = "eager"
    prefill, step1, step2 = _prefill_and_decode(model, B=2, P=48, vocab=512)
    (tmp_path / "config.json").write_text(hf.to_json_string())
    cfg = load_hf_config(tmp_path / "config.json")
    L, d, V, B, P = 2, 128, 512, 2, 48
    assert prefill == inference.prefill_flops(cfg, B, P) == 80_478_208
    assert prefill == 2 * B * P * 12 * d * d * L + 4 * B * P * P * d * L + 2 * B * d * V
    assert step1 == inference.decode_flops(cfg, B, P + 1) == 1_935_360
    assert step1 == 2 * B * 12 * d * d * L + 4 * B * (P + 1) * d * L + 2 * B * d * V
    assert step2 == inference.decode_flops(cfg, B, P + 2)


def test_llama_gqa_prefill_and_decode_equal_transformers(tmp_path):
    hf = transformers.LlamaConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                  intermediate_size=160, vocab_size=256, max_position_embeddings=64,
                                  tie_word_embeddings=False)
    model = transformers.LlamaForCausalLM(hf).eval()
    model.config._attn_implementation = "eager"
    prefill, step1, _ = _prefill_and_decode(model, B=3, P=20, vocab=256)
    (tmp_path / "config.json").write_text(hf.to_json_string())
    cfg = load_hf_config(tmp_path / "config.json")
    # by hand: per token 2·(d·(d + 2·kv_dim) + d² + 3·d·d_ff)·L, kv_dim = 2 heads x 16 = 32
    d, L, f, V, kv, B, P = 64, 2, 160, 256, 32, 3, 20
    block = d * (d + 2 * kv) + d * d + 3 * d * f
    assert prefill == inference.prefill_flops(cfg, B, P) == 2 * B * P * block * L + 4 * B * P * P * d * L + 2 * B * d * V
    assert step1 == inference.decode_flops(cfg, B, P + 1) == 2 * B * (block * L + d * V) + 4 * B * (P + 1) * d * L


def test_decode_bytes_by_hand():
    cfg = ModelConfig("g", n_layer=2, d_model=128, n_head=4, vocab_size=512, max_seq_len=64)  # GPT-2 style, tied
    d, L, V, B, c = 128, 2, 512, 2, 49
    # weights read: per block 12·d² matrices + biases (3d + d + 4d + d) + 2 LayerNorms (2·2d); final LayerNorm 2d;
    # the LM head d·V (tied: read from the embedding); not the embedding tables themselves.
    block = 12 * d * d + (3 * d + d + 4 * d + d) + 2 * 2 * d
    weights = L * block + 2 * d + d * V
    b = inference.decode_bytes(cfg, B, c, "bf16")
    assert b.weights == 2 * weights
    assert b.embedding_rows == 2 * B * 2 * d  # token and position rows, 2 bytes each
    assert b.kv_cache_read == 2 * (2 * L * d * B * c) and b.kv_cache_written == 2 * (2 * L * d * B)
    assert b.total == 2 * (weights + 2 * B * d + 2 * L * d * B * (c + 1))
    # GQA shrinks the cache: 2 of 4 heads
    gqa = cfg.replace(n_kv_head=2)
    assert inference.decode_bytes(gqa, B, c, "fp32").kv_cache_read == 4 * 2 * L * (d // 2) * B * c


def test_static_decode_scores_and_reads_every_cached_position_by_hand():
    # a sliding layer (window 4) and a full one, GQA 4 query heads over 2 K/V heads of 16: the static step at
    # context c = 10 with a cache of S = 16 positions scores 16 keys in both layers; the model's step
    # min(10, 4) + 10 = 14 keys
    cfg = ModelConfig("w", n_layer=2, d_model=64, n_head=4, n_kv_head=2, vocab_size=128, max_seq_len=32,
                      layer_types=("sliding", "full"), sliding_window=4)
    B, c, S = 3, 10, 16
    assert inference.static_decode_flops(cfg, B, S) - inference.decode_flops(cfg, B, c) == 4 * B * 64 * (32 - 14)
    static, model = inference.static_decode_bytes(cfg, B, S, "bf16"), inference.decode_bytes(cfg, B, c, "bf16")
    assert static.kv_cache_read == 2 * (2 * 32 * B * 32)  # K and V, 2 heads x 16 wide, 32 position-layers
    assert static.total - model.total == 2 * (2 * 32 * B * (32 - 14))  # only the cache read differs
