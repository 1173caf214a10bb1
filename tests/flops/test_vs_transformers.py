"""flopbench against the transformers implementation itself, for every model type it reads.

Each case builds a small transformers model offline (random weights, nothing downloaded) from a config
that uses the family's FLOP-relevant features: head_dim set apart from hidden / heads, grouped-query
attention, sliding windows shorter than the sequence, experts with a dense layer, QK-norm, norms after
the sublayers. The config is written as transformers writes config.json (`to_json_string()`, only the
keys that differ from its defaults, so flopbench's defaults are tested too) and read back by flopbench.
Then:
- parameters: flopbench's analytic total == transformers' model == flopbench's own model, exactly;
- flopbench's own model of the same config, counted on meta == the analytic forward, train and
  train_recompute (full and selective);
- forward FLOPs: `flopbench.profile(<the transformers model>)` == flopbench's analytic forward, exactly,
  plus the masked square where windows slide (transformers, like flopbench's model, scores every key and
  masks: `analytic.masked_square_flops`).
"""

import pytest
import torch
from helpers import Logits, counted_phases

import flopbench
from flopbench.flops import analytic, counter
from flopbench.model.gpt import build_model
from flopbench.model.hf import load_hf_config

transformers = pytest.importorskip("transformers", reason="transformers is a test-only extra")
# transformers models call .item() in their forward, so profile counts them on the CPU and says so
pytestmark = pytest.mark.filterwarnings("ignore:flopbench.profile.*not on a meta copy")

B, T, V = 2, 16, 96
# hidden 64, 4 heads of 32 (q width 128, not 64), 2 K/V heads, MLP 96, 3 layers, windows of 5 positions
LLAMA_LIKE = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=32, max_position_embeddings=64, vocab_size=V)
QWEN3_MOE = dict(LLAMA_LIKE, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=40)
#: case name -> transformers config keys; the model type is the name up to "+". The "+" cases set the keys
#: that switch windows on or off (issue 24, item 2), each read by transformers' own rule for the family.
CASES = {
    "gpt2": dict(n_embd=64, n_layer=3, n_head=4, n_inner=96, n_positions=64, vocab_size=V, attn_pdrop=0.0,
                 resid_pdrop=0.0, embd_pdrop=0.0),
    "llama": dict(LLAMA_LIKE, tie_word_embeddings=True),
    "llama+sliding_window": dict(LLAMA_LIKE, sliding_window=5),  # Llama has no window: the key is not read
    "mistral": dict(LLAMA_LIKE, sliding_window=5),
    "mixtral": dict(LLAMA_LIKE, sliding_window=5, num_local_experts=4, num_experts_per_tok=2),
    "qwen2": dict(LLAMA_LIKE, use_sliding_window=True, sliding_window=5, max_window_layers=1),
    "qwen2+max_window_layers": dict(LLAMA_LIKE, use_sliding_window=True, sliding_window=5, max_window_layers=2),
    "qwen3": dict(LLAMA_LIKE),
    "qwen3+use_sliding_window_false": dict(LLAMA_LIKE, use_sliding_window=False, sliding_window=5,
                                           max_window_layers=0),
    "qwen3_moe": dict(QWEN3_MOE, mlp_only_layers=[1]),
    # transformers 5 slides every Qwen3-MoE layer (max_window_layers is not read); mlp_only_layers 3 is
    # the index n_layer: no such layer, so no dense layer from it
    "qwen3_moe+use_sliding_window": dict(QWEN3_MOE, use_sliding_window=True, sliding_window=5,
                                         max_window_layers=3, mlp_only_layers=[3]),
    "qwen3_moe+num_experts_0": dict(QWEN3_MOE, num_experts=0),  # dense, as transformers builds it
    "gemma": dict(LLAMA_LIKE),
    "gemma2": dict(LLAMA_LIKE, sliding_window=5),
    "gemma3_text": dict(LLAMA_LIKE, sliding_window=5, num_hidden_layers=4, sliding_window_pattern=2),
    "phi3": dict(LLAMA_LIKE, sliding_window=5),
    "olmo2": dict(LLAMA_LIKE),
    "smollm3": dict(LLAMA_LIKE, no_rope_layer_interval=2),
    "smollm3+use_sliding_window_false": dict(LLAMA_LIKE, no_rope_layer_interval=2, sliding_window=5,
                                             use_sliding_window=False),
    "smollm3+use_sliding_window": dict(LLAMA_LIKE, no_rope_layer_interval=2, sliding_window=5,
                                       use_sliding_window=True),
}
#: The cases where some layer slides (transformers' own rule; `test_windows_equal_transformers` checks it).
SLIDING = {"mistral", "mixtral", "qwen2", "qwen2+max_window_layers", "qwen3_moe+use_sliding_window", "gemma2",
           "gemma3_text", "phi3", "smollm3+use_sliding_window"}


def hf_config(name: str, **keys):
    """The case's transformers config (`keys` in place of the case's own, if given)."""
    cfg = transformers.CONFIG_MAPPING[name.split("+")[0]](bos_token_id=1, eos_token_id=2, pad_token_id=0,
                                                          **(keys or CASES[name]))
    cfg._attn_implementation = "eager"  # every family has it (Gemma 2 has no SDPA path in transformers 5)
    return cfg


def hf_model(name: str, cfg=None):
    cfg = cfg or hf_config(name)
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(cfg).eval(), cfg


def keys_seen(model, ids) -> tuple[int, ...]:
    """Per layer, how many keys the last query attends to, read off transformers' attention probabilities
    (eager attention returns them): T for full attention, the window for a sliding layer."""
    with torch.no_grad():
        probs = model(ids, output_attentions=True).attentions
    return tuple(int((p[0, 0, -1] > 0).sum()) for p in probs)


def keys_counted(cfg) -> tuple[int, ...]:
    """The same as flopbench counts it: a sliding layer's query sees its last `sliding_window` positions."""
    return tuple(min(T, cfg.sliding_window) if cfg.layer_type(i) == "sliding" else T for i in range(cfg.n_layer))


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request, tmp_path_factory):
    model, hf_cfg = hf_model(request.param)
    path = tmp_path_factory.mktemp(request.param) / "config.json"
    path.write_text(hf_cfg.to_json_string())  # use_diff=True: only what differs from the defaults
    return request.param, model, load_hf_config(path)


def test_parameters_equal_exactly(case):
    model_type, model, cfg = case
    theirs = model.num_parameters()  # distinct parameters: a tied LM head once
    assert analytic.param_counts(cfg).total == theirs, model_type
    assert sum(p.numel() for p in build_model(cfg, "meta").parameters()) == theirs


def test_forward_flops_equal_exactly(case):
    model_type, model, cfg = case
    ids = torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(0))
    prof = flopbench.profile(Logits(model), ids, warmup=0, iters=1, fvcore=False)
    assert prof.forward_flops == analytic.forward_flops(cfg, B, T) + analytic.masked_square_flops(cfg, B, T)
    assert prof.train_flops == 3 * prof.forward_flops  # eager attention: backward = 2 x forward


def test_flopbench_model_counted_on_meta_equals_analytic(case):
    """flopbench's own model of each model type, counted on the meta device: forward, train, full and
    selective recomputation equal the analytic counts (plus the masked square where windows slide)."""
    _, _, cfg = case
    assert counter.count_model(cfg, B, T) == counted_phases(cfg, B, T)


def test_the_features_were_read(case):
    """The cases exercise what they claim (else the equalities above would prove less)."""
    model_type, _, cfg = case
    if model_type != "gpt2":
        assert cfg.q_dim == 128 != cfg.d_model and cfg.kv_heads == 2
    assert (analytic.masked_square_flops(cfg, B, T) > 0) == (model_type in SLIDING)
    assert cfg.is_moe == (model_type in ("mixtral", "qwen3_moe", "qwen3_moe+use_sliding_window"))
    model_type = model_type.split("+")[0]
    assert cfg.qk_norm == {"qwen3": "head", "qwen3_moe": "head", "gemma3_text": "head", "olmo2": "proj"}.get(
        model_type, "none")
    assert cfg.norm_position == {"gemma2": "sandwich", "gemma3_text": "sandwich", "olmo2": "post"}.get(
        model_type, "pre")


def test_windows_equal_transformers(case):
    """Issue 24 item 2: each layer's window as transformers applies it (read off its attention
    probabilities, not its config) == flopbench's. The forward FLOPs above cannot see a window: transformers
    scores every key and masks, and the masked square is added back."""
    name, model, cfg = case
    ids = torch.randint(0, V, (1, T), generator=torch.Generator().manual_seed(0))
    assert keys_seen(model, ids) == keys_counted(cfg), name
    assert (5 in keys_seen(model, ids)) == (name in SLIDING)


def older_config_json(name: str) -> dict:
    """The case's config.json as transformers 4.x wrote it: `to_json_string()` without the keys that 5
    writes and 4.x did not: `layer_types` (4.x computed the layers from max_window_layers,
    sliding_window_pattern or no_rope_layers at load), `head_dim` (left at its default here), `rope_parameters`
    (4.x wrote `rope_theta`) and `_sliding_window_pattern`."""
    import json
    raw = json.loads(hf_config(name, **{k: v for k, v in CASES[name].items() if k != "head_dim"}).to_json_string())
    for key in ("layer_types", "head_dim", "rope_parameters", "_sliding_window_pattern", "no_rope_layers"):
        raw.pop(key, None)
    return dict(raw, transformers_version="4.44.2")


@pytest.mark.parametrize("name", sorted(CASES))
def test_older_config_json_reads_as_transformers_builds_it(tmp_path, name):
    """Issue 24 item 17: transformers 5 writes `layer_types` and `head_dim` into every config.json, so the
    readers' fallbacks (max_window_layers, sliding_window_pattern, no_rope_layer_interval, the head_dim
    defaults) never ran in the tests above. A file without them, built by transformers 5 itself: the same
    parameters and the same window in every layer."""
    import json
    raw = older_config_json(name)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(raw))
    cfg = load_hf_config(path)
    hf_cfg = transformers.AutoConfig.for_model(**raw)
    hf_cfg._attn_implementation = "eager"
    model, _ = hf_model(name, hf_cfg)
    assert analytic.param_counts(cfg).total == model.num_parameters()
    ids = torch.randint(0, V, (1, T), generator=torch.Generator().manual_seed(0))
    assert keys_seen(model, ids) == keys_counted(cfg)
    assert (5 in keys_counted(cfg)) == (name in SLIDING)


def test_moe_forward_by_hand():
    """Qwen3-MoE as configured above, written out: per token, attention 64·128 (q) + 2·64·64 (k, v) +
    128·64 (o) = 24,576; layers 0 and 2 route (router 64·4 = 256, top-2 experts of 3·64·40 = 7,680 each:
    15,616), layer 1 is dense (3·64·96 = 18,432); LM head 64·96 = 6,144: 129,536 weights per token,
    2·32·129,536 = 8,290,304 FLOPs. Attention scores 4·T·128 per token per layer: 3·4·32·16·128 = 786,432."""
    tokens = B * T
    per_token = 3 * 24_576 + 2 * (256 + 2 * 7_680) + 18_432 + 6_144
    by_hand = 2 * tokens * per_token + 3 * 4 * tokens * T * 128
    model, hf_cfg = hf_model("qwen3_moe")
    ids = torch.zeros(B, T, dtype=torch.long)
    prof = flopbench.profile(Logits(model), ids, warmup=0, iters=1, fvcore=False)
    assert prof.forward_flops == by_hand == 9_076_736
