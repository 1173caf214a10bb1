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


def _qkv(B=2, H=4, H_kv=2, T=20, d=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(B, h, T, d, generator=gen) for h in (H, H_kv, H_kv)]


@pytest.mark.parametrize("window", [None, 5], ids=["causal", "window-5"])
def test_grouped_soft_cap_equals_repeated_kv_and_sdpa(window):
    """The grouped view gives what the old path gave: K/V repeated per query head (written out here), and
    with a cap so large tanh is linear, SDPA's own GQA result."""
    from flopbench.model.attention import attention_core, attention_mask

    q, k, v = _qkv()
    mask = attention_mask(20, 20, window, "cpu")
    cap = 30.0
    k_rep, v_rep = (t.repeat_interleave(2, dim=1) for t in (k, v))
    scores = cap * torch.tanh(q @ k_rep.transpose(-2, -1) / 4.0 / cap)  # 1/sqrt(16) = 1/4
    allowed = torch.ones(20, 20, dtype=torch.bool).tril() if mask is None else mask
    expected = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1) @ v_rep
    torch.testing.assert_close(attention_core(q, k, v, mask, True, cap, groups=2), expected)
    sdpa = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None, enable_gqa=True)
    torch.testing.assert_close(attention_core(q, k, v, mask, True, 1e6, groups=2), sdpa, rtol=1e-4, atol=1e-5)


def test_watch_kernels_reads_the_dispatch():
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from flopbench.model.attention import attention_core, attention_mask, watch_kernels

    q, k, v = _qkv()
    mask = attention_mask(20, 20, 5, "cpu")
    with watch_kernels() as log:
        attention_core(q, k, v, None, True, None, 2)
        attention_core(q, k, v, mask, True, None, 2)
    assert log.kernel == "flash" and log.skipping_calls == (1, 2)  # the masked call computes the whole square
    with sdpa_kernel(SDPBackend.MATH), watch_kernels() as log:
        attention_core(q, k, v, None, True, None, 2)
    assert log.kernel == "math" and log.skipping_calls == (0, 1)
    with watch_kernels() as log:
        attention_core(q, k, v, None, True, 50.0, 2)
    assert log.kernel == "eager" and log.skipping_calls == (0, 0)


@pytest.fixture
def gpu_rules(monkeypatch):
    """torch 2.5 - 2.x on a GPU, as sdp_utils states them: flash takes no mask; the memory-efficient kernel
    takes a mask but not grouped K/V heads; no cuDNN. Yields the (K/V heads, enable_gqa) SDPA was given."""
    from torch.backends import cuda

    from flopbench.model import attention

    monkeypatch.setattr(attention, "KERNEL_RULE_DEVICES", ("cpu",))
    monkeypatch.setattr(cuda, "can_use_flash_attention", lambda p, debug=False: p.attn_mask is None)
    monkeypatch.setattr(cuda, "can_use_efficient_attention", lambda p, debug=False: not p.enable_gqa)
    monkeypatch.setattr(cuda, "can_use_cudnn_attention", lambda p, debug=False: False)
    heads = []
    sdpa = F.scaled_dot_product_attention

    def spy(q, k, v, *args, **kwargs):
        heads.append((k.shape[1], kwargs.get("enable_gqa")))
        return sdpa(q, k, v, *args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    attention.kv_heads_rule.cache_clear()  # the answers are cached per shape: these rules' are their own
    yield heads
    attention.kv_heads_rule.cache_clear()


def test_masked_gqa_gets_kv_the_efficient_kernel_takes(gpu_rules):
    """Issue 23 item 6: a band mask rules out flash, and this torch's efficient kernel has no GQA, so with
    `enable_gqa` SDPA would fall to math; K/V go in expanded to the 4 query heads instead, same result."""
    from flopbench.model.attention import attention_core, attention_mask

    q, k, v = _qkv()
    mask = attention_mask(20, 20, 5, "cpu")
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
    gpu_rules.clear()
    torch.testing.assert_close(attention_core(q, k, v, mask, True, None, 2), expected)
    attention_core(q, k, v, None, True, None, 2)  # no mask: flash takes GQA, nothing expanded
    assert gpu_rules == [(4, False), (2, True)]
    explained = torch._dynamo.explain(attention_core)(q, k, v, mask, True, None, 2)
    assert explained.graph_break_count == 0  # the rule is a constant to torch.compile


def test_kv_stay_grouped_where_the_efficient_kernel_takes_gqa(gpu_rules, monkeypatch):
    from torch.backends import cuda

    from flopbench.model.attention import attention_core, attention_mask

    monkeypatch.setattr(cuda, "can_use_efficient_attention", lambda p, debug=False: True)  # a newer torch
    q, k, v = _qkv()
    attention_core(q, k, v, attention_mask(20, 20, 5, "cpu"), True, None, 2)
    assert gpu_rules == [(2, True)]


@pytest.mark.parametrize("T, window", [(300, None), (300, 128), (300, 100), (512, 200), (256, 129), (70, 8)])
def test_flex_block_scores_match_torchs_block_mask(T, window):
    """flops.analytic.flex_block_scores against the blocks torch's create_block_mask keeps (partial + full),
    each block's scores over real positions."""
    from flopbench.flops.analytic import flex_block_scores
    from flopbench.model.attention import FLEX_BLOCK_SIZE, flex_block_mask

    mask = flex_block_mask(T, T, window, "cpu")
    b = FLEX_BLOCK_SIZE
    assert mask.BLOCK_SIZE == (b, b)
    kept = mask.kv_num_blocks[0, 0].tolist()
    full = mask.full_kv_num_blocks[0, 0].tolist() if mask.full_kv_num_blocks is not None else [0] * len(kept)
    scores = 0
    for i, (n_partial, n_full) in enumerate(zip(kept, full)):
        blocks = mask.kv_indices[0, 0, i, :n_partial].tolist()
        blocks += mask.full_kv_indices[0, 0, i, :n_full].tolist() if n_full else []
        rows = min(T, (i + 1) * b) - i * b
        scores += sum(rows * (min(T, (j + 1) * b) - j * b) for j in blocks)
    assert flex_block_scores(T, window) == scores


@pytest.mark.parametrize("window, cap", [(None, None), (5, None), (5, 30.0)], ids=["causal", "window", "softcap"])
def test_flex_equals_sdpa_and_the_soft_cap_path(window, cap):
    """Eager FlexAttention (forward; the CPU has no flex backward) with the block mask and the soft cap as
    score_mod gives the SDPA / written-out result on the same inputs, grouped K/V heads included."""
    from flopbench.model.attention import attention_core, attention_mask, flex_block_mask

    q, k, v = _qkv()
    with torch.no_grad():
        expected = attention_core(q, k, v, attention_mask(20, 20, window, "cpu"), True, cap, 2)
        flex = attention_core(q, k, v, flex_block_mask(20, 20, window, "cpu"), True, cap, 2)
    torch.testing.assert_close(flex, expected, rtol=1e-4, atol=1e-5)


def test_a_flex_model_gives_the_sdpa_models_logits():
    """GPT(attention="flex"): the same weights give the same logits (sliding and full layers, soft caps,
    grouped K/V); an unknown choice is one UsageError naming the choices."""
    from flopbench.errors import UsageError

    torch.manual_seed(0)
    sdpa = build_model(SOFTCAP)
    flex = build_model(SOFTCAP, attention="flex")
    flex.load_state_dict(sdpa.state_dict())
    ids = torch.randint(0, SOFTCAP.vocab_size, (2, 20))
    with torch.no_grad():
        torch.testing.assert_close(flex(ids), sdpa(ids), rtol=1e-4, atol=1e-5)
    with pytest.raises(UsageError, match="attention='paged': choose one of sdpa, flex"):
        build_model(SOFTCAP, attention="paged")


def test_flex_model_forward_is_one_graph():
    """The block masks are built in GPT.forward and flex is a higher-order op: dynamo traces the whole
    forward of a sliding + full model with FlexAttention as one graph."""
    cfg = ModelConfig("s", n_layer=2, d_model=64, n_head=4, n_kv_head=2, d_ff=96, vocab_size=128, max_seq_len=256,
                      layer_types=("sliding", "full"), sliding_window=64, **LLAMA_ARCH)
    model = build_model(cfg, attention="flex")
    with torch.no_grad():
        explained = torch._dynamo.explain(model)(torch.randint(0, 128, (1, 256)))
    assert explained.graph_count == 1 and explained.graph_break_count == 0


def test_compiled_flex_soft_cap_model_compiles_once():
    """A compiled forward of a sliding + full flex model with a soft cap (a score_mod) is one frame, not
    recompiled on the second call."""
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    model = build_model(SOFTCAP, attention="flex")
    counter = CompileCounter()
    compiled = torch.compile(model, backend=counter, dynamic=False)
    ids = torch.randint(0, SOFTCAP.vocab_size, (2, 20))
    with torch.no_grad():
        compiled(ids)
        compiled(ids)
    assert counter.frame_count == 1


def test_eager_model_with_compiled_flex_compiles_once_per_layer_kind(monkeypatch):
    """On a GPU an eager model calls a compiled flex_attention (`_flex`): one compiled frame per kind of
    layer (sliding, full) at most, none on later steps."""
    from torch._dynamo.testing import CompileCounter
    from torch.nn.attention.flex_attention import flex_attention

    from flopbench.model import attention

    torch._dynamo.reset()
    counter = CompileCounter()
    compiled = torch.compile(flex_attention, backend=counter, dynamic=False)
    monkeypatch.setattr(attention, "_flex", lambda device_type: compiled)
    model = build_model(SOFTCAP, attention="flex")
    ids = torch.randint(0, SOFTCAP.vocab_size, (2, 20))
    with torch.no_grad():
        model(ids)
        first = counter.frame_count
        model(ids)
    assert first <= 2 and counter.frame_count == first
