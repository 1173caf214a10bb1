"""The model's static KV cache: decoding with it gives the logits of a full forward, and what it dispatches
equals the analytic prefill / decode-step FLOPs (flops.inference)."""

import pytest
import torch

from flopbench.flops import analytic, inference
from flopbench.flops.counter import count_step
from flopbench.model.config import LLAMA_ARCH, ModelConfig
from flopbench.model.gpt import KVCache, build_model

GPT = ModelConfig("g", n_layer=2, d_model=32, n_head=4, vocab_size=64, max_seq_len=24)
LLAMA = ModelConfig("l", n_layer=2, d_model=32, n_head=4, n_kv_head=2, d_ff=48, vocab_size=64, max_seq_len=24,
                    **LLAMA_ARCH)
# Gemma-2-like: a sliding layer (window 4) then a full one, head_dim apart, soft caps, norms after; and a
# Qwen3-MoE-like: QK-norm, 4 experts of which 2 per token, the second layer dense.
WINDOWED = ModelConfig("w", n_layer=2, d_model=32, n_head=4, n_kv_head=2, head_dim=16, d_ff=48, vocab_size=64,
                       max_seq_len=24, bias=False, tie_embeddings=True, mlp="geglu", norm="rmsnorm", positions="rope",
                       norm_position="sandwich", layer_types=("sliding", "full"), sliding_window=4,
                       attn_softcap=50.0, final_softcap=30.0, embed_scale=True)
MOE = ModelConfig("m", n_layer=2, d_model=32, n_head=4, n_kv_head=2, d_ff=48, vocab_size=64, max_seq_len=24,
                  qk_norm="head", n_experts=4, top_k=2, d_ff_expert=24, dense_layers=(1,), **LLAMA_ARCH)
CONFIGS = [GPT, LLAMA, WINDOWED, MOE]
IDS = ["gpt2", "llama-gqa", "gemma2-like", "qwen3-moe-like"]


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_cached_decoding_equals_the_full_forward(cfg):
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    B, P, G = 2, 7, 5
    ids = torch.randint(0, cfg.vocab_size, (B, P + G))
    cache = KVCache(cfg, B, P + G, "cpu", torch.float32)
    with torch.no_grad():
        full = model(ids)
        logits = [model(ids[:, :P], cache=cache, pos=0, last_only=True)]
        for i in range(G):
            logits.append(model(ids[:, P + i:P + i + 1], cache=cache, pos=P + i, last_only=True))
    for i, step in enumerate(logits):
        torch.testing.assert_close(step[:, 0], full[:, P - 1 + i], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
@pytest.mark.parametrize("device", ["meta", "cpu"])
def test_counted_prefill_and_decode_equal_analytic(cfg, device):
    B, P = 3, 10
    model = build_model(cfg, device).eval()
    cache = KVCache(cfg, B, P + 4, device, torch.float32)
    prompt = torch.zeros(B, P, dtype=torch.long, device=device)
    token = torch.zeros(B, 1, dtype=torch.long, device=device)
    with torch.no_grad():
        prefill = count_step(lambda: model(prompt, cache=cache, pos=0, last_only=True)).forward
        steps = [count_step(lambda p=p: model(token, cache=cache, pos=p, last_only=True)).forward for p in (P, P + 1)]
    # the prompt's mask-based attention scores all P keys of a sliding layer (the masked square)
    assert prefill == inference.prefill_flops(cfg, B, P) + analytic.masked_square_flops(cfg, B, P)
    # context = P + 1 keys at the first step (the prompt and the new token), P + 2 at the second
    assert steps == [inference.decode_flops(cfg, B, P + 1), inference.decode_flops(cfg, B, P + 2)]
    # one more key: QK^T and AV in every full layer; a sliding layer's window of 4 is full already
    assert steps[1] - steps[0] == 4 * B * cfg.q_dim * cfg.count_layers("full")


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_static_decoding_over_the_whole_cache_equals_the_full_forward(cfg):
    # gpt-fast's static decode: the position is a tensor, every step attends over all P + G cached keys
    # (zeros not written yet, masked), a sliding layer's keys older than its window masked too
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    B, P, G = 2, 7, 5
    ids = torch.randint(0, cfg.vocab_size, (B, P + G))
    cache = KVCache(cfg, B, P + G, "cpu", torch.float32)
    cache.k.fill_(1e3), cache.v.fill_(-1e3)  # stale values from an earlier generation: masked, never read
    with torch.no_grad():
        full = model(ids)
        logits = [model(ids[:, :P], cache=cache, pos=0, last_only=True)]
        for i in range(G):
            logits.append(model(ids[:, P + i:P + i + 1], cache=cache, pos=torch.tensor(P + i), last_only=True))
    for i, step in enumerate(logits):
        torch.testing.assert_close(step[:, 0], full[:, P - 1 + i], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
@pytest.mark.parametrize("device", ["meta", "cpu"])
def test_counted_static_decode_step_scores_the_whole_cache(cfg, device):
    B, P, G = 3, 10, 4
    S = P + G
    model = build_model(cfg, device).eval()
    cache = KVCache(cfg, B, S, device, torch.float32)
    token = torch.zeros(B, 1, dtype=torch.long, device=device)
    with torch.no_grad():
        steps = [count_step(lambda p=p: model(token, cache=cache, pos=torch.tensor(p, device=device),
                                              last_only=True)).forward for p in (P, P + 1)]
    # the same FLOPs at every position (one shape): all S keys in every layer, full or sliding
    assert steps == [inference.static_decode_flops(cfg, B, S)] * 2
    # by hand: the model FLOPs at context P + 1, plus QK^T and AV over the masked keys, 4·B·n_head·head_dim
    # each: S - (P + 1) in a full layer, S - min(P + 1, W) in a sliding one
    masked = (S - (P + 1)) * cfg.count_layers("full") + (S - min(P + 1, cfg.sliding_window or S)) * \
        cfg.count_layers("sliding")
    assert steps[0] == inference.decode_flops(cfg, B, P + 1) + 4 * B * cfg.q_dim * masked
