"""Llama-family options (SwiGLU, RMSNorm, RoPE, grouped-query attention): parameters, FLOPs, counting, training."""

import random

import pytest
import torch
from helpers import counted_phases

from flopbench.api.run import RunOptions, run
from flopbench.errors import UsageError
from flopbench.flops import analytic, counter, estimates, fvcore
from flopbench.flops.counter import EXTRA_FLOP_FORMULAS
from flopbench.flops.reconcile import explain_hardware_gap, reconcile
from flopbench.model.config import ModelConfig
from flopbench.model.gpt import RotaryEmbedding, apply_rope, build_model, lm_loss
from flopbench.model.presets import PRESETS, resolve_config

aten = torch.ops.aten

# Published parameter counts (the Hugging Face checkpoints; Touvron et al. 2023, Table 1 rounds them).
PUBLISHED_PARAMS = {
    "llama2-7b": 6_738_415_616,
    "llama3-8b": 8_030_261_248,
    "llama3-70b": 70_553_706_496,
    "mistral-7b": 7_241_732_096,
}


def llama_params_by_hand(L, d, heads, kv_heads, f, V):
    """Untied embedding + LM head, per block: Q, O (d² each), K, V (d·kv_dim each), gate/up/down (d·f each),
    two RMSNorm weights (d each); a final RMSNorm; no biases, no position table."""
    kv_dim = kv_heads * (d // heads)
    block = 2 * d * d + 2 * d * kv_dim + 3 * d * f + 2 * d
    return 2 * V * d + L * block + d


def test_published_counts_by_hand():
    assert llama_params_by_hand(32, 4096, 32, 32, 11008, 32000) == 6_738_415_616
    assert llama_params_by_hand(32, 4096, 32, 8, 14336, 128256) == 8_030_261_248
    assert llama_params_by_hand(80, 8192, 64, 8, 28672, 128256) == 70_553_706_496
    assert llama_params_by_hand(32, 4096, 32, 8, 14336, 32000) == 7_241_732_096


@pytest.mark.parametrize("name", PUBLISHED_PARAMS)
def test_llama_presets_match_published_params(name):
    cfg = PRESETS[name]
    model = build_model(cfg, "meta")  # rope tables are buffers, built on meta without error
    assert sum(p.numel() for p in model.parameters()) == PUBLISHED_PARAMS[name]
    assert analytic.param_counts(cfg).total == PUBLISHED_PARAMS[name]
    assert model.wpe is None and not any("rope" in n for n, _ in model.named_parameters())
    assert "rope.cos" not in model.state_dict()  # non-persistent


def test_llama3_8b_param_breakdown_and_n_matmul():
    d, f, V, L, kv = 4096, 14336, 128256, 32, 8 * 128
    n = analytic.param_counts(PRESETS["llama3-8b"])
    parts = analytic.param_breakdown(PRESETS["llama3-8b"])
    assert parts == {"token_embedding": V * d, "position_embedding": 0, "attention": L * (2 * d * d + 2 * d * kv),
                     "mlp": L * 3 * d * f, "norms": (2 * L + 1) * d, "lm_head": d * V}
    assert n.non_embedding == n.total - V * d
    assert n.matmul == L * (2 * d * d + 2 * d * kv + 3 * d * f) + d * V == 7_504_658_432


def test_llama3_8b_forward_by_hand():
    # B=1, T=8192: 2·T·N_matmul + 4·T²·d·L; the T² term has all 32 query heads, not the 8 K/V heads.
    T, d, L = 8192, 4096, 32
    by_hand = 2 * T * 7_504_658_432 + 4 * T * T * d * L
    assert by_hand == 158_140_695_838_720
    assert analytic.forward_flops(PRESETS["llama3-8b"], 1, T) == by_hand
    rows = {c.name: c for c in analytic.components(PRESETS["llama3-8b"], 1, T)}
    assert rows["qkv_proj"].flops == 2 * T * d * (d + 2 * 1024)
    assert rows["attn_scores"].flops == rows["attn_values"].flops == 2 * T * T * d
    assert rows["mlp_gate"].flops == rows["mlp_up"].flops == rows["mlp_down"].flops == 2 * T * d * 14336
    assert [n for n, c in rows.items() if c.matmul and c.per_layer and not c.recomputed_early_stop] == ["mlp_down"]
    assert rows["rope"].flops == 3 * T * (d + 1024) and not rows["rope"].matmul
    assert "gelu" not in rows and "layernorms" not in rows and rows["swiglu"].flops == 2 * T * 14336


@pytest.mark.parametrize("name", [n for n in PRESETS if not n.startswith("gpt2")])
def test_presets_counted_equals_analytic(name):
    """Every non-GPT-2 preset (Llama, Mistral's sliding window, Mixtral's and Qwen3-MoE's experts, Qwen3's
    head_dim and QK-norm, Gemma 2's alternating windows and soft caps), counted at full size on meta at
    T = 8192 (past the 4096-token windows, where the masked square shows)."""
    cfg = PRESETS[name]
    T = min(8192, cfg.max_seq_len)
    assert counter.count_model(cfg, 1, T) == counted_phases(cfg, 1, T)


def test_llama3_70b_at_8192_counted_equals_analytic():
    cfg, T = PRESETS["llama3-70b"], 8192
    c = counter.count_model(cfg, 1, T)
    assert c["forward"] == analytic.forward_flops(cfg, 1, T) == 1_314_637_949_698_048
    assert c["train"] == 3 * c["forward"]
    assert c["train_recompute"] == analytic.train_recompute_flops(cfg, 1, T)
    assert fvcore.count_fvcore(cfg, 1, T).forward == c["forward"]


# --------------------------------------------------------------------------------------------------
# Random configs mixing every option
# --------------------------------------------------------------------------------------------------


def mixed_configs(n, seed):
    rng = random.Random(seed)
    for _ in range(n):
        n_head = rng.choice([1, 2, 3, 4, 8])
        d_model = n_head * rng.choice([4, 8, 12, 16])  # even head_dim: rope is always allowed
        yield ModelConfig(
            n_layer=rng.randint(1, 3),
            d_model=d_model,
            n_head=n_head,
            n_kv_head=rng.choice([None] + [k for k in range(1, n_head + 1) if n_head % k == 0]),
            d_ff=rng.randint(1, 4 * d_model),
            vocab_size=rng.randint(2, 200),
            max_seq_len=48,
            bias=rng.random() < 0.5,
            tie_embeddings=rng.random() < 0.5,
            mlp=rng.choice(["gelu", "swiglu"]),
            norm=rng.choice(["layernorm", "rmsnorm"]),
            positions=rng.choice(["learned", "rope"]),
        ), rng.randint(1, 2), rng.randint(1, 48)


def test_mixed_configs_cover_every_option():
    cfgs = [c for c, _, _ in mixed_configs(50, seed=3)]
    assert {c.mlp for c in cfgs} == {"gelu", "swiglu"} and {c.norm for c in cfgs} == {"layernorm", "rmsnorm"}
    assert {c.positions for c in cfgs} == {"learned", "rope"}
    assert any(1 < c.kv_heads < c.n_head for c in cfgs) and any(c.kv_heads == 1 < c.n_head for c in cfgs)


def test_mixed_random_configs_counted_equals_analytic():
    for cfg, B, T in mixed_configs(50, seed=3):
        assert counter.count_model(cfg, B, T) == counted_phases(cfg, B, T), (cfg, B, T)


def test_mixed_configs_without_early_stop():
    for cfg, B, T in mixed_configs(8, seed=4):
        assert counter.count_model(cfg, B, T, early_stop=False) == counted_phases(cfg, B, T, early_stop=False), cfg


def test_mixed_layer_extrapolation_equals_counting_the_whole_stack():
    for cfg, B, T in mixed_configs(4, seed=8):
        cfg = cfg.replace(n_layer=cfg.n_layer + 2)
        model = build_model(cfg, "meta", checkpointing="full")
        idx = torch.zeros(B, T, dtype=torch.long, device="meta")
        with counter.flop_counter() as fc:
            lm_loss(model(idx), idx).backward()
        assert fc.get_total_flops() == counter.count_model(cfg, B, T)["train_recompute"], cfg


def test_swiglu_early_stop_skips_only_mlp_down():
    # One SwiGLU + GQA + rope block, d=64, d_ff=96, T=32, vocab 1: checkpointing re-runs the forward of the
    # block except the down-projection 2·T·d_ff·d. Block forward by hand:
    # QKV 2·T·64·(64 + 2·32) + out 2·T·64² + gate, up, down 3·2·T·64·96 + QK^T, AV 2·2·T²·64.
    T, d, f, kv = 32, 64, 96, 32
    cfg = ModelConfig(n_layer=1, d_model=d, n_head=4, n_kv_head=2, d_ff=f, vocab_size=1, max_seq_len=T,
                      mlp="swiglu", norm="rmsnorm", positions="rope", bias=False)
    block = 2 * T * d * (d + 2 * kv) + 2 * T * d * d + 3 * 2 * T * d * f + 4 * T * T * d
    head = 2 * T * d
    c = counter.count_model(cfg, 1, T)
    assert c["forward"] == block + head
    assert c["train_recompute"] == 3 * (block + head) + block - 2 * T * f * d
    assert counter.count_model(cfg, 1, T, early_stop=False)["train_recompute"] == 3 * (block + head) + block


def test_mixed_fvcore_equals_analytic_forward():
    for cfg, B, T in mixed_configs(12, seed=5):
        fv = fvcore.count_fvcore(cfg, B, T)
        assert fv.forward == analytic.forward_flops(cfg, B, T), cfg
        layernorms = 2 * cfg.n_layer + 1 if cfg.norm == "layernorm" else 0  # fvcore has no rms_norm handle
        assert fv.non_matmul == 2 * 5 * layernorms * B * T * cfg.d_model
        assert "aten::scaled_dot_product_attention" not in fv.unsupported


def test_mixed_every_difference_is_explained():
    for cfg, B, T in mixed_configs(20, seed=11):
        fv = fvcore.count_fvcore(cfg, B, T)
        checks = reconcile(cfg, B, T, counter.count_model(cfg, B, T), fv.forward, fv.non_matmul, fv.unsupported)
        assert [c for c in checks if c.status == "unexplained"] == [], cfg
        assert {c.status for c in checks if c.left.startswith("counted.")} == {"equal"}


def test_published_estimates_for_llama2_7b_by_hand():
    # Korthikanti et al. / Narayanan et al. are written for MHA + a 4·d MLP: 12·d² matmul weights per block.
    # Llama 2 7B's block: 4·d² (MHA) + 3·d·11008 (SwiGLU) = 202,375,168 > 12·d² = 201,326,592.
    cfg, B, T = PRESETS["llama2-7b"], 1, 4096
    L, d, V, f = 32, 4096, 32000, 11008
    block = 4 * d * d + 3 * d * f
    assert block == 202_375_168 and 12 * d * d == 201_326_592
    est = estimates.estimates(cfg, B, T)
    assert est["korthikanti"].flops == pytest.approx(72 * B * T * L * d**2 * (1 + T / (6 * d) + V / (12 * L * d)),
                                                     rel=1e-12)
    assert est["korthikanti"].flops - analytic.train_flops(cfg, B, T) == 6 * B * T * L * (12 * d * d - block)
    assert est["6N"].flops == 6 * (L * block + d * V) * T
    assert est["palm"].flops == analytic.train_flops(cfg, B, T)  # exact with N = N_matmul
    # Kaplan's N = 2·d·L·(2·d + d_ff): a two-matrix MLP of width d_ff.
    assert est["kaplan"].flops == 3 * (2 * 2 * d * L * (2 * d + f) + 2 * L * T * d) * T
    checks = {c.left: c for c in reconcile(cfg, B, T, None, None)}
    assert checks["estimate korthikanti"].status == "explained"
    reason = checks["estimate korthikanti"].reason
    assert "201,326,592" in reason and "202,375,168" in reason


# --------------------------------------------------------------------------------------------------
# Grouped-query attention: what FlopCounterMode and fvcore count, on meta and on a real CPU model
# --------------------------------------------------------------------------------------------------

GQA = ModelConfig(n_layer=2, d_model=64, n_head=8, n_kv_head=2, d_ff=80, vocab_size=50, max_seq_len=32,
                  mlp="swiglu", norm="rmsnorm", positions="rope", bias=False, tie_embeddings=False)


def test_sdpa_formulas_broadcast_kv_heads():
    # q: 8 heads, k/v: 2 heads. QK^T and AV run per query head: 2 bmm of 2·B·H·T·S·D forward, 5 backward.
    B, H, Hkv, T, D = 2, 8, 2, 16, 8
    q, kv, go = (B, H, T, D), (B, Hkv, T, D), (B, H, T, D)
    forward = EXTRA_FLOP_FORMULAS[aten._scaled_dot_product_flash_attention_for_cpu]
    backward = EXTRA_FLOP_FORMULAS[aten._scaled_dot_product_flash_attention_for_cpu_backward]
    assert forward(q, kv, kv) == 2 * 2 * B * H * T * T * D == 131_072
    assert backward(go, q, kv, kv) == 5 * 2 * B * H * T * T * D
    for op in (aten._scaled_dot_product_flash_attention, aten._scaled_dot_product_efficient_attention):
        assert EXTRA_FLOP_FORMULAS[op](q, kv, kv) == forward(q, q, q)  # same as with K/V expanded


def test_sdpa_formulas_hand_torch_equal_head_counts(monkeypatch):
    # Older torch's sdpa_flop_count / sdpa_backward_flop_count assert that q, k and v have the same number of
    # heads (torch 2.13's broadcast K/V themselves). flopbench's formulas must give the same count on either:
    # simulate the strict ones, which see only equal head counts once K/V are broadcast to the query heads.
    import flopbench.flops.counter as counter_module

    def strict(real, shapes):
        heads = [s[1] for s in shapes]
        assert len(set(heads)) == 1, f"torch's formula got unequal head counts {heads}"
        return real(*shapes)

    forward_real, backward_real = counter_module.sdpa_flop_count, counter_module.sdpa_backward_flop_count
    monkeypatch.setattr(counter_module, "sdpa_flop_count", lambda *shapes: strict(forward_real, shapes))
    monkeypatch.setattr(counter_module, "sdpa_backward_flop_count", lambda *shapes: strict(backward_real, shapes))
    B, H, Hkv, T, D = 2, 8, 2, 16, 8
    q, kv = (B, H, T, D), (B, Hkv, T, D)
    for kernel in ("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention",
                   "_scaled_dot_product_efficient_attention"):
        assert EXTRA_FLOP_FORMULAS[getattr(aten, kernel)](q, kv, kv) == 2 * 2 * B * H * T * T * D, kernel
        assert EXTRA_FLOP_FORMULAS[getattr(aten, kernel + "_backward")](q, q, kv, kv) == 5 * 2 * B * H * T * T * D


def test_gqa_counted_on_meta():
    B, T, d, L = 2, 32, 64, 2
    c = counter.count_model(GQA, B, T)
    assert c == counted_phases(GQA, B, T)
    # Attention scores at full width: 4·B·T²·d per layer, not 4·B·T²·(n_kv_head·head_dim).
    assert c["forward"] - 2 * B * T * analytic.param_counts(GQA).matmul == 4 * B * T * T * d * L
    assert fvcore.count_fvcore(GQA, B, T).forward == c["forward"]


def test_gqa_counted_on_a_real_cpu_model():
    B, T, d, L = 2, 32, 64, 2
    torch.manual_seed(0)
    model = build_model(GQA, "cpu")
    idx = torch.randint(0, 50, (B, T))
    with counter.flop_counter() as fc, torch.no_grad():
        model(idx)
    assert fc.get_total_flops() == analytic.forward_flops(GQA, B, T)
    with counter.flop_counter() as fc:
        lm_loss(model(idx), idx).backward()
    # The CPU flash kernel's backward re-forms QK^T: a fifth bmm, 2·B·T²·d per layer, over all query heads.
    assert fc.get_total_flops() == analytic.train_flops(GQA, B, T) + 2 * B * T * T * d * L
    assert explain_hardware_gap(GQA, B, T, "fwd_bwd", fc.get_total_flops(), analytic.train_flops(GQA, B, T)) \
        == "attention backward re-forms QK^T (fused kernel: 5 bmm instead of 4)"


def test_gqa_equals_mha_with_each_kv_head_repeated_over_its_group():
    # A GQA model and an MHA model whose K/V projections repeat each GQA K/V head over its group of
    # query heads compute the same function (Ainslie et al. 2023, section 2).
    torch.manual_seed(0)
    gqa = build_model(GQA, "cpu")
    mha = build_model(GQA.replace(n_kv_head=None), "cpu")
    state = gqa.state_dict()
    d, hd, kv, group = GQA.d_model, GQA.head_dim, GQA.kv_heads, GQA.n_head // GQA.kv_heads
    for name, value in list(state.items()):
        if name.endswith("attn.c_attn.weight") or name.endswith("attn.c_attn.bias"):
            q, k, v = value.split((d, kv * hd, kv * hd), dim=0)
            expand = lambda t: t.reshape(kv, hd, *t.shape[1:]).repeat_interleave(group, dim=0).reshape(d, *t.shape[1:])
            state[name] = torch.cat((q, expand(k), expand(v)), dim=0)
    mha.load_state_dict(state)
    idx = torch.randint(0, GQA.vocab_size, (2, 32))
    with torch.no_grad():
        torch.testing.assert_close(gqa(idx), mha(idx))


# --------------------------------------------------------------------------------------------------
# RoPE
# --------------------------------------------------------------------------------------------------


def test_rope_is_a_rotation_by_relative_position():
    cfg = ModelConfig(n_layer=1, d_model=32, n_head=2, max_seq_len=16, positions="rope", rope_theta=100.0)
    cos, sin = RotaryEmbedding(cfg)(16)
    torch.manual_seed(0)
    q, k = torch.randn(2, 16), torch.randn(2, 16)  # (heads, head_dim), the same vector at every position
    rq = apply_rope(q[None, :, None, :].expand(1, 2, 16, 16), (cos, sin))[0]
    rk = apply_rope(k[None, :, None, :].expand(1, 2, 16, 16), (cos, sin))[0]
    torch.testing.assert_close(rq.norm(dim=-1), q.norm(dim=-1)[:, None].expand(2, 16))  # norm kept
    torch.testing.assert_close(rq[:, 0], q)  # position 0 is not rotated
    scores = rq @ rk.transpose(-1, -2)  # (heads, m, n): must depend on m - n only (Su et al. 2021, eq. 16)
    torch.testing.assert_close(scores[:, 1:, 1:], scores[:, :-1, :-1])
    # pair 0 of position 1 turns by theta^0 = 1 radian
    x = torch.zeros(1, 1, 2, 16)
    x[..., 0] = 1.0
    y = apply_rope(x, (cos[:2], sin[:2]))
    assert y[0, 0, 1, 0].item() == pytest.approx(torch.cos(torch.tensor(1.0)).item())
    assert y[0, 0, 1, 8].item() == pytest.approx(torch.sin(torch.tensor(1.0)).item())


# --------------------------------------------------------------------------------------------------
# Real training steps on the CPU
# --------------------------------------------------------------------------------------------------

TINY = dict(n_layer=2, d_model=32, n_head=4, d_ff=48, vocab_size=50, max_seq_len=16)
OPTIONS = {
    "gqa": dict(n_kv_head=2),
    "mqa": dict(n_kv_head=1),
    "swiglu": dict(mlp="swiglu"),
    "rmsnorm": dict(norm="rmsnorm"),
    "rope": dict(positions="rope"),
    "llama": dict(n_kv_head=2, mlp="swiglu", norm="rmsnorm", positions="rope", bias=False, tie_embeddings=False),
}


@pytest.mark.parametrize("option", OPTIONS)
def test_train_step_on_cpu_and_checkpointing_gives_same_gradients(option):
    cfg = ModelConfig(**TINY, **OPTIONS[option])
    torch.manual_seed(0)
    reference = build_model(cfg, "cpu")
    checkpointed = build_model(cfg, "cpu", checkpointing="full")
    checkpointed.load_state_dict(reference.state_dict())
    idx = torch.randint(0, 50, (2, 16))
    losses = []
    for m in (reference, checkpointed):
        loss = lm_loss(m(idx), idx)
        loss.backward()
        losses.append(loss)
    assert torch.isfinite(losses[0]) and losses[0].item() == pytest.approx(losses[1].item())
    assert 2.0 < losses[0].item() < 6.0  # ~ln(50) = 3.9 at init
    for (name, p), q in zip(reference.named_parameters(), checkpointed.parameters()):
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        torch.testing.assert_close(p.grad, q.grad, msg=name)
    optimizer = torch.optim.AdamW(reference.parameters(), lr=1e-2)
    optimizer.step()
    assert torch.isfinite(lm_loss(reference(idx), idx))


def test_llama_forward_under_bf16_autocast():
    cfg = ModelConfig(**TINY, **OPTIONS["llama"])
    model = build_model(cfg, "cpu")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(torch.randint(0, 50, (2, 16)))
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits.float()).all()


def test_run_measures_a_llama_config_on_cpu():
    cfg = ModelConfig("tiny-llama", **TINY, **OPTIONS["llama"])
    doc = run(cfg, RunOptions(batch_size=2, seq_len=16, device="cpu", warmup=0, iters=1, gemm=False, out=None,
                              modes=("forward", "fwd_bwd")), progress=lambda m: None)
    by = {(r["mode"], r["checkpointing"]): r for r in doc["rows"]}
    assert by[("forward", "none")]["hardware_flops"] == analytic.forward_flops(cfg, 2, 16)
    assert by[("forward", "none")]["hardware_flops_note"] == "equal"
    full = by[("fwd_bwd", "full")]
    assert full["hardware_flops_analytic"] == analytic.train_recompute_flops(cfg, 2, 16)
    assert full["hardware_flops_note"].startswith("attention backward re-forms QK^T")


# --------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(n_kv_head=5), "n_kv_head=5 does not divide n_head=12"),
        (dict(n_kv_head=0), "n_kv_head=0 is not allowed: n_kv_head must be a positive integer"),
        (dict(n_kv_head=24), "n_kv_head=24 does not divide n_head=12"),
        (dict(mlp="relu"), "mlp='relu' is not allowed: choose one of gelu, swiglu"),
        (dict(norm="batchnorm"), "norm='batchnorm' is not allowed: choose one of layernorm, rmsnorm"),
        (dict(positions="alibi"), "positions='alibi' is not allowed: choose one of learned, rope"),
        (dict(d_model=12, n_head=4, positions="rope"), "head_dim=3 (d_model=12 / n_head=4) is odd"),
        (dict(positions="rope", rope_theta=0), "rope_theta=0 is not allowed"),
        (dict(bias="yes"), "bias='yes' is not allowed: bias must be true or false"),
    ],
)
def test_bad_architecture_values_name_the_value(kwargs, fragment):
    with pytest.raises(UsageError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        ModelConfig(**kwargs)


def test_defaults_are_gpt2():
    cfg = PRESETS["gpt2"]
    assert (cfg.mlp, cfg.norm, cfg.positions, cfg.n_kv_head, cfg.kv_heads, cfg.kv_dim) == (
        "gelu", "layernorm", "learned", None, 12, 768)


def test_n_kv_head_override():
    cfg = resolve_config("llama3-8b", n_layer=2)
    assert (cfg.n_kv_head, cfg.mlp, cfg.name) == (8, "swiglu", "llama3-8b+custom")
    assert resolve_config("gpt2", n_kv_head=4).kv_dim == 4 * 64
    with pytest.raises(UsageError, match="n_kv_head=5 does not divide n_head=12"):
        resolve_config("gpt2", n_kv_head=5)
