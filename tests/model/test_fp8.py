"""float8 training (`model.fp8`): which layers are converted, and the float8 FLOPs counted apart from the rest.

The counted float8 FLOPs (`flops.counter.Float8Flops`, read from the ops' operands) must equal the converted
layers' FLOPs worked from their weight shapes here (2·B·T·d_in·d_out per matmul pass) and the analytic count
`run` rates with (`analytic.fp8_forward_flops` through `flops_of_mode`), exactly, in both recipes and with
every checkpointing mode."""

import pytest
import torch

from flopbench.api.run import flops_of_mode
from flopbench.errors import UsageError
from flopbench.flops.counter import count_step
from flopbench.model import fp8
from flopbench.model.config import FP8_RECIPES, ModelConfig
from flopbench.model.gpt import build_model, lm_loss

pytest.importorskip("torchao.float8")

B, T = 2, 32
CONFIGS = {
    "gpt2-like": ModelConfig("g", n_layer=2, d_model=64, n_head=4, vocab_size=128, max_seq_len=T),
    "llama-like": ModelConfig("l", n_layer=2, d_model=64, n_head=4, n_kv_head=2, d_ff=160, vocab_size=128,
                              max_seq_len=T, bias=False, tie_embeddings=False, mlp="swiglu", norm="rmsnorm",
                              positions="rope"),
    "moe-shared": ModelConfig("m", n_layer=2, d_model=64, n_head=4, vocab_size=128, max_seq_len=T, mlp="swiglu",
                              n_experts=4, top_k=2, d_ff_expert=32, n_shared_experts=1, d_ff_shared=48,
                              dense_layers=(0,)),
    "d_ff not /16": ModelConfig("o", n_layer=2, d_model=64, n_head=4, d_ff=100, vocab_size=128, max_seq_len=T),
}


def linear_shapes(model: torch.nn.Module, paths: list[str]) -> int:
    """Σ d_in·d_out over the converted layers, read off the model."""
    modules = dict(model.named_modules())
    return sum(modules[p].in_features * modules[p].out_features for p in paths)


def counted(model, cfg):
    idx = torch.randint(0, cfg.vocab_size, (B, T), generator=torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return count_step(lambda: model(idx), lambda logits: lm_loss(logits, idx))


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("recipe", FP8_RECIPES)
def test_counted_fp8_flops_equal_the_converted_layers(name, recipe):
    cfg = CONFIGS[name]
    for checkpointing in ("none", "full", "selective"):
        model = build_model(cfg, "cpu", checkpointing=checkpointing)
        paths = fp8.convert(model, recipe)
        step = counted(model, cfg)
        per_pass = 2 * B * T * linear_shapes(model, paths)  # one forward of every converted layer
        passes = 4 if checkpointing == "full" else 3  # the full recompute re-runs every converted layer
        assert step.fp8_forward == per_pass
        assert step.fp8_train == passes * per_pass, checkpointing
        assert 0 < step.fp8_train < step.train
        mode = flops_of_mode(cfg, B, T, "fwd_bwd", checkpointing, fp8=True)
        assert mode.fp8_hardware == step.fp8_train and mode.fp8_model == 3 * per_pass
        forward = flops_of_mode(cfg, B, T, "forward", "none", fp8=True)
        assert forward.fp8_model == forward.fp8_hardware == per_pass


def test_which_layers_are_converted():
    model = build_model(CONFIGS["moe-shared"], "cpu")
    paths = fp8.convert(model, "tensorwise")
    assert fp8.layer_patterns(paths) == ["h.*.attn.c_attn", "h.*.attn.c_proj", "h.*.mlp.c_gate", "h.*.mlp.c_fc",
                                         "h.*.mlp.c_proj", "h.*.mlp.shared.c_gate", "h.*.mlp.shared.c_fc",
                                         "h.*.mlp.shared.c_proj"]
    assert type(model.lm_head) is torch.nn.Linear and type(model.h[1].mlp.router) is torch.nn.Linear
    odd = build_model(CONFIGS["d_ff not /16"], "cpu")  # 64 x 100 and 100 x 64 cannot run in float8
    assert fp8.layer_patterns(fp8.convert(odd, "rowwise")) == ["h.*.attn.c_attn", "h.*.attn.c_proj"]


def test_full_recompute_of_fp8_rows_has_no_early_stop():
    """The analytic hardware FLOPs of a full-checkpointing fp8 step equal the counted total: the down-projection
    is recomputed (it is not without float8, `analytic.recomputed_with_early_stop`)."""
    cfg = CONFIGS["gpt2-like"]
    model = build_model(cfg, "cpu", checkpointing="full")
    fp8.convert(model, "tensorwise")
    total = counted(model, cfg).train
    plain, with_fp8 = (flops_of_mode(cfg, B, T, "fwd_bwd", "full", fp8=f).hardware for f in (False, True))
    down = 2 * B * T * 4 * 64 * 64 * cfg.n_layer  # the d_ff x d down-projection's forward, every layer
    assert with_fp8 - plain == down
    # the rest of the gap is the CPU flash kernel's backward re-forming QK^T (`explained_hardware_gap`)
    rescore = 2 * B * T * T * cfg.q_dim * cfg.n_layer
    assert total == with_fp8 + rescore


def test_bad_recipe_and_missing_torchao(monkeypatch):
    model = build_model(CONFIGS["gpt2-like"], "cpu")
    with pytest.raises(UsageError, match="--fp8-recipe 'blockwise': choose one of tensorwise, rowwise"):
        fp8.convert(model, "blockwise")
    monkeypatch.setitem(__import__("sys").modules, "torchao.float8", None)  # import fails as if not installed
    with pytest.raises(UsageError, match=r"needs torchao .*pip install 'flopbench\[fp8\]'"):
        fp8.convert(model, "tensorwise")


def test_selective_checkpointing_keeps_a_compiled_float8_matmul():
    """Compiled, a float8 layer's matmul is `_scaled_mm` (the tensor subclass is traced away): selective
    checkpointing must keep its output as it keeps `mm`'s, or a compiled selective step recomputes every
    projection that the count (eager: `mm` on float8 tensors) says it keeps."""
    from torch.utils.checkpoint import CheckpointPolicy

    from flopbench.model.gpt import save_projections

    assert save_projections(None, torch.ops.aten._scaled_mm.default) == CheckpointPolicy.MUST_SAVE
    assert save_projections(None, torch.ops.aten.bmm.default) == CheckpointPolicy.MUST_RECOMPUTE
