"""The attention core (model.attention): the soft-cap path broadcasts K/V instead of copying them, the
kernel a step dispatched is read from the dispatch, SDPA is kept off the math kernel where torch's rules
allow, and FlexAttention's block mask matches the analytic count of its non-empty blocks."""

import pytest
import torch
import torch.nn.functional as F

from flopbench.model.config import LLAMA_ARCH, ModelConfig
from flopbench.model.gpt import KVCache, build_model

# Gemma-2-like: a sliding layer (window 4) then a full one, grouped-query heads (4 query heads, 2 K/V), soft caps.
SOFTCAP = ModelConfig("w", n_layer=2, d_model=32, n_head=4, n_kv_head=2, head_dim=16, d_ff=48, vocab_size=64,
                      max_seq_len=24, bias=False, tie_embeddings=True, mlp="geglu", norm="rmsnorm", positions="rope",
                      norm_position="sandwich", layer_types=("sliding", "full"), sliding_window=4,
                      attn_softcap=50.0, final_softcap=30.0, embed_scale=True)


def _no_repeat_interleave(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("repeat_interleave copies K/V")

    monkeypatch.setattr(torch.Tensor, "repeat_interleave", refuse)
    monkeypatch.setattr(torch, "repeat_interleave", refuse)


def test_softcap_gqa_training_and_decode_make_no_kv_copy(monkeypatch):
    """Issue 23 item 4: Gemma-2-style attention with grouped K/V heads ran `repeat_interleave` on K/V (and on
    the whole cache, every decode step). A forward, a backward and cached decoding now run without it."""
    torch.manual_seed(0)
    model = build_model(SOFTCAP)
    ids = torch.randint(0, SOFTCAP.vocab_size, (2, 12))
    with torch.no_grad():
        expected = model(ids)
    _no_repeat_interleave(monkeypatch)
    model(ids).sum().backward()
    cache = KVCache(SOFTCAP, 2, 12, "cpu", torch.float32)
    with torch.no_grad():
        logits = [model(ids[:, :8], cache=cache, pos=0, last_only=True)]
        for p in range(8, 12):
            logits.append(model(ids[:, p:p + 1], cache=cache, pos=p, last_only=True))
    for i, step in enumerate(logits):
        torch.testing.assert_close(step[:, 0], expected[:, 7 + i], rtol=1e-4, atol=1e-5)
