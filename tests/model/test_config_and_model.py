"""Config validation and the model's parameter counts against the published GPT-2 figures."""

import pytest
import torch

from flopbench.errors import UsageError
from flopbench.flops import analytic
from flopbench.model.config import ModelConfig, validate_shapes
from flopbench.model.gpt import build_model, lm_loss
from flopbench.model.presets import PRESETS, resolve_config

# the published Hugging Face GPT-2 checkpoints (Radford et al. 2019).
PUBLISHED_PARAMS = {
    "gpt2": 124_439_808,
    "gpt2-medium": 354_823_168,
    "gpt2-large": 774_030_080,
    "gpt2-xl": 1_557_611_200,
}


@pytest.mark.parametrize("name", PUBLISHED_PARAMS)
def test_preset_params_match_published(name):
    model = build_model(PRESETS[name], "meta")
    assert sum(p.numel() for p in model.parameters()) == PUBLISHED_PARAMS[name]
    assert analytic.param_counts(PRESETS[name]).total == PUBLISHED_PARAMS[name]


def test_gpt2_param_breakdown_by_hand():
    # gpt2: V=50257, P=1024, d=768, L=12, 4x MLP, biases, tied head.
    d, L, V, P = 768, 12, 50257, 1024
    per_block = (2 * 2 * d) + (d * 3 * d + 3 * d) + (d * d + d) + (d * 4 * d + 4 * d) + (4 * d * d + d)
    assert analytic.param_counts(PRESETS["gpt2"]).total == V * d + P * d + L * per_block + 2 * d
    n = analytic.param_counts(PRESETS["gpt2"])
    assert n.non_embedding == n.total - V * d - P * d
    assert n.matmul == L * 12 * d * d + d * V


def test_untied_and_biasless_params_match_model():
    cfg = ModelConfig(n_layer=3, d_model=64, n_head=4, d_ff=100, vocab_size=77, max_seq_len=32,
                      bias=False, tie_embeddings=False)
    model = build_model(cfg, "meta")
    assert sum(p.numel() for p in model.parameters()) == analytic.param_counts(cfg).total


def test_overrides_apply_on_top_of_preset():
    cfg = resolve_config("gpt2", n_layer=2, d_model=128, n_head=2)
    assert (cfg.n_layer, cfg.d_model, cfg.n_head, cfg.d_ff, cfg.vocab_size) == (2, 128, 2, 512, 50257)
    assert resolve_config("gpt2", d_model=128, n_head=2, d_ff=300).d_ff == 300


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(n_head=5), "n_head=5 does not divide d_model=768"),
        (dict(n_layer=0), "n_layer=0"),
        (dict(d_model=-8), "d_model=-8"),
        (dict(vocab_size=0), "vocab_size=0"),
    ],
)
def test_bad_configs_name_the_value(kwargs, fragment):
    with pytest.raises(UsageError, match=fragment.replace("(", r"\(")):
        resolve_config("gpt2", **kwargs)


def test_unknown_preset_lists_choices():
    with pytest.raises(UsageError, match="unknown model 'gpt5'.*gpt2-xl"):
        resolve_config("gpt5")


def test_seq_len_beyond_positions_rejected():
    with pytest.raises(UsageError, match="seq_len=2048 exceeds the model's 1024 positions"):
        validate_shapes(PRESETS["gpt2"], 1, 2048)


@pytest.mark.parametrize("checkpointing", ["none", "full"])
def test_model_trains_on_cpu_and_checkpointing_gives_same_gradients(checkpointing):
    cfg = ModelConfig(n_layer=2, d_model=32, n_head=4, vocab_size=50, max_seq_len=16)
    torch.manual_seed(0)
    reference = build_model(cfg, "cpu")
    model = build_model(cfg, "cpu", checkpointing=checkpointing)
    model.load_state_dict(reference.state_dict())
    idx = torch.randint(0, 50, (2, 16))
    for m in (reference, model):
        lm_loss(m(idx), idx).backward()
    for (name, p), q in zip(reference.named_parameters(), model.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=name)
    assert model.lm_head.weight is model.wte.weight  # tied


def test_overrides_of_the_new_fields_by_hand():
    """--sliding-window on a model without windows makes every layer slide (Mistral-style); --n-experts needs
    --top-k; llama3-8b with 8 experts of width 4096, 2 per token, counted by hand:
    per layer attention 4096·(4096 + 2·1024) + 4096² = 41,943,040, router 4096·8 = 32,768, experts
    8·3·4096² = 402,653,184 (2 of them active: 100,663,296), norms 2·4096; 32 layers; untied embeddings
    2·128256·4096 = 1,050,673,152 and the final norm 4096."""
    from flopbench.errors import UsageError
    from flopbench.flops import analytic
    from flopbench.model.presets import resolve_config

    windowed = resolve_config("llama3-8b", n_layer=2, sliding_window=1024)
    assert windowed.layer_types == ("sliding",) and windowed.sliding_window == 1024
    # the masked square of a mask-based kernel: 4·B·T·(T − W)·d per sliding layer
    assert analytic.masked_square_flops(windowed, 1, 4096) == 4 * 4096 * (4096 - 1024) * 4096 * 2
    with pytest.raises(UsageError, match="top_k=0 is not allowed: each token uses 1 to n_experts=8 experts"):
        resolve_config("llama3-8b", n_experts=8)
    moe = analytic.param_counts(resolve_config("llama3-8b", n_experts=8, top_k=2, d_ff_expert=4096))
    outside = 1_050_673_152 + 4096
    assert moe.total == 32 * (41_943_040 + 32_768 + 402_653_184 + 8192) + outside == 15_279_067_136
    assert moe.active == 32 * (41_943_040 + 32_768 + 100_663_296 + 8192) + outside == 5_615_390_720
