"""`--model path/to/config.json`: Hugging Face configs read offline, and one-line errors for bad files."""

import json
from pathlib import Path

import pytest

from flopbench.cli import main
from flopbench.errors import UsageError
from flopbench.flops import analytic
from flopbench.model.gpt import build_model
from flopbench.model.hf import load_hf_config
from flopbench.model.presets import PRESETS, resolve_config

# The config.json files published with the checkpoints (meta-llama/Llama-2-7b-hf,
# meta-llama/Meta-Llama-3-8B, mistralai/Mistral-7B-v0.1, openai-community/gpt2), keys as published.
LLAMA2_7B = {
    "_name_or_path": "meta-llama/Llama-2-7b-hf", "architectures": ["LlamaForCausalLM"], "bos_token_id": 1,
    "eos_token_id": 2, "hidden_act": "silu", "hidden_size": 4096, "initializer_range": 0.02,
    "intermediate_size": 11008, "max_position_embeddings": 4096, "model_type": "llama",
    "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 32, "pretraining_tp": 1,
    "rms_norm_eps": 1e-05, "rope_scaling": None, "tie_word_embeddings": False, "torch_dtype": "float16",
    "transformers_version": "4.31.0.dev0", "use_cache": True, "vocab_size": 32000,
}
LLAMA3_8B = {
    "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "bos_token_id": 128000, "eos_token_id": 128001, "hidden_act": "silu", "hidden_size": 4096,
    "initializer_range": 0.02, "intermediate_size": 14336, "max_position_embeddings": 8192, "model_type": "llama",
    "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8, "pretraining_tp": 1,
    "rms_norm_eps": 1e-05, "rope_scaling": None, "rope_theta": 500000.0, "tie_word_embeddings": False,
    "torch_dtype": "bfloat16", "transformers_version": "4.40.0.dev0", "use_cache": True, "vocab_size": 128256,
}
MISTRAL_7B = {
    "architectures": ["MistralForCausalLM"], "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu",
    "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 14336, "max_position_embeddings": 32768,
    "model_type": "mistral", "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
    "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "sliding_window": 4096, "tie_word_embeddings": False,
    "torch_dtype": "bfloat16", "transformers_version": "4.34.0.dev0", "use_cache": True, "vocab_size": 32000,
}
GPT2 = {
    "activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"], "attn_pdrop": 0.1,
    "bos_token_id": 50256, "embd_pdrop": 0.1, "eos_token_id": 50256, "initializer_range": 0.02,
    "layer_norm_epsilon": 1e-05, "model_type": "gpt2", "n_ctx": 1024, "n_embd": 768, "n_head": 12,
    "n_layer": 12, "n_positions": 1024, "resid_pdrop": 0.1, "summary_type": "cls_index", "vocab_size": 50257,
}
# meta-llama/Llama-3.2-1B: a Llama 3 whose LM head is tied to the token embedding.
LLAMA32_1B = {
    "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "bos_token_id": 128000, "eos_token_id": 128001, "head_dim": 64, "hidden_act": "silu", "hidden_size": 2048,
    "initializer_range": 0.02, "intermediate_size": 8192, "max_position_embeddings": 131072, "mlp_bias": False,
    "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 16, "num_key_value_heads": 8,
    "pretraining_tp": 1, "rms_norm_eps": 1e-05,
    "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "rope_theta": 500000.0, "tie_word_embeddings": True, "torch_dtype": "bfloat16",
    "transformers_version": "4.45.0.dev0", "use_cache": True, "vocab_size": 128256,
}
TINY_LLAMA = {
    "model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "intermediate_size": 96, "vocab_size": 100, "max_position_embeddings": 64,
}


def write(tmp_path, content, name="config.json"):
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


@pytest.mark.parametrize("raw, preset, params", [
    (LLAMA2_7B, "llama2-7b", 6_738_415_616),
    (LLAMA3_8B, "llama3-8b", 8_030_261_248),
    (MISTRAL_7B, "mistral-7b", 7_241_732_096),
    (GPT2, "gpt2", 124_439_808),
])
def test_published_configs_reproduce_presets_and_counts(tmp_path, raw, preset, params):
    cfg = load_hf_config(write(tmp_path, raw))
    assert cfg.replace(name=preset) == PRESETS[preset]
    assert analytic.param_counts(cfg).total == params


def test_tied_llama_3_2_1b_is_counted_tied(tmp_path):
    # By hand, d = 2048, 16 layers, 32 heads of 64, 8 K/V heads (kv_dim 512), d_ff 8192, V = 128,256:
    #   token embedding V·d                               = 262,668,288 (the LM head shares it: +0)
    #   per block Q, O 2·d² = 8,388,608; K, V 2·d·512 = 2,097,152; gate, up, down 3·d·8192 = 50,331,648;
    #             two RMSNorm weights 2·d = 4,096         -> 60,821,504; x 16 = 973,144,064
    #   final RMSNorm d                                   = 2,048
    #   total 262,668,288 + 973,144,064 + 2,048           = 1,235,814,400 (untied it would be 1,498,482,688)
    block = 2 * 2048 * 2048 + 2 * 2048 * 512 + 3 * 2048 * 8192 + 2 * 2048
    assert block == 60_821_504 and 128256 * 2048 + 16 * block + 2048 == 1_235_814_400
    cfg = load_hf_config(write(tmp_path, LLAMA32_1B))
    assert cfg.tie_embeddings is True and cfg.bias is False and cfg.rope_theta == 500000.0
    assert (cfg.n_layer, cfg.d_model, cfg.n_head, cfg.kv_heads, cfg.head_dim, cfg.d_ff, cfg.vocab_size,
            cfg.max_seq_len) == (16, 2048, 32, 8, 64, 8192, 128256, 131072)
    n = analytic.param_counts(cfg)
    assert n.total == 1_235_814_400
    assert n.non_embedding == 1_235_814_400 - 262_668_288
    assert n.matmul == 16 * (block - 2 * 2048) + 2048 * 128256  # the LM head does its matmul, tied or not
    # Second method: the model itself, on meta (a tied weight is one parameter).
    assert sum(p.numel() for p in build_model(cfg, "meta").parameters()) == 1_235_814_400
    untied = load_hf_config(write(tmp_path, {**LLAMA32_1B, "tie_word_embeddings": False}))
    assert analytic.param_counts(untied).total == 1_235_814_400 + 262_668_288 == 1_498_482_688


def test_llama2_7b_fields_and_name(tmp_path):
    cfg = resolve_config(str(write(tmp_path, LLAMA2_7B)))
    assert cfg.name == "Llama-2-7b-hf"
    assert (cfg.n_layer, cfg.d_model, cfg.n_head, cfg.kv_heads, cfg.d_ff, cfg.vocab_size, cfg.max_seq_len) == (
        32, 4096, 32, 32, 11008, 32000, 4096)
    assert (cfg.mlp, cfg.norm, cfg.positions, cfg.bias, cfg.tie_embeddings) == (
        "swiglu", "rmsnorm", "rope", False, False)


def test_defaults_of_absent_keys(tmp_path):
    cfg = load_hf_config(write(tmp_path, {k: v for k, v in LLAMA3_8B.items() if k != "num_key_value_heads"}))
    assert cfg.n_kv_head is None and cfg.kv_heads == 32  # transformers: num_key_value_heads = num_attention_heads
    gpt2 = load_hf_config(write(tmp_path, {**GPT2, "n_inner": 1000, "tie_word_embeddings": False}))
    assert (gpt2.d_ff, gpt2.tie_embeddings) == (1000, False)
    biased = load_hf_config(write(tmp_path, {**TINY_LLAMA, "attention_bias": True, "mlp_bias": True}))
    assert biased.bias is True


def test_a_folder_holding_config_json(tmp_path):
    write(tmp_path, TINY_LLAMA)
    assert resolve_config(str(tmp_path)).n_kv_head == 2


def test_count_cli_with_a_config_json_and_overrides(tmp_path, capsys):
    path = write(tmp_path, TINY_LLAMA, "tiny.json")
    assert main(["count", "--model", str(path), "--seq-len", "16", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    # By hand, B=1, T=16, d=64, kv_dim=2·16=32, d_ff=96, V=100, L=2, untied:
    # N_matmul = L·(64·(64+64) + 64² + 3·64·96) + 64·100 = 2·(8192 + 4096 + 18432) + 6400 = 67,840
    assert doc["params"]["matmul"] == 67_840
    assert doc["analytic"]["forward"] == 2 * 16 * 67_840 + 4 * 16 * 16 * 64 * 2
    assert doc["counted"]["torch"]["forward"] == doc["analytic"]["forward"] == doc["counted"]["fvcore"]["forward"]
    assert doc["config"]["mlp"] == "swiglu" and doc["config"]["n_kv_head"] == 2
    assert main(["count", "--model", str(path), "--n-layer", "3", "--n-kv-head", "4", "--seq-len", "16", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert (doc["config"]["n_layer"], doc["config"]["n_kv_head"], doc["config"]["name"]) == (
        3, 4, "llama:tiny+custom")  # named after tiny.json


def test_run_cli_accepts_a_config_json(tmp_path, capsys):
    path = write(tmp_path, TINY_LLAMA)
    code = main(["run", "--model", str(path), "--device", "cpu", "--batch-size", "1", "--seq-len", "8",
                 "--warmup", "0", "--iters", "1", "--no-gemm", "--no-save", "--checkpointing", "none", "--json"])
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["config"]["positions"] == "rope" and all(r["status"] == "ok" for r in doc["rows"])


@pytest.mark.parametrize("content, fragment", [
    ({**GPT2, "model_type": "falcon"}, "has model_type 'falcon' (not modelled): supported model types are gpt2, llama, mistral"),
    ({k: v for k, v in GPT2.items() if k != "model_type"}, "has no model_type: supported model types are gpt2"),
    ({k: v for k, v in LLAMA3_8B.items() if k not in ("hidden_size", "vocab_size")},
     "missing key(s) hidden_size, vocab_size (needed for model_type 'llama')"),
    ("{not json", "not JSON (Expecting property name enclosed in double quotes at line 1 column 2)"),
    ("[1, 2]", "a JSON list, not an object"),
    ({**TINY_LLAMA, "num_key_value_heads": 3}, "n_kv_head=3 does not divide n_head=4"),
    ({**TINY_LLAMA, "hidden_size": "big"}, "d_model='big' is not allowed"),
    ({**TINY_LLAMA, "attention_bias": True}, "attention_bias=True and mlp_bias=False differ"),
    ({**TINY_LLAMA, "head_dim": 15}, "head_dim=15 is odd: rope rotates pairs of dimensions"),
    ({**TINY_LLAMA, "model_type": "deepseek_v3"}, "has model_type 'deepseek_v3' (not modelled)"),
    ({**TINY_LLAMA, "q_lora_rank": 1536, "kv_lora_rank": 512}, "not modelled: q_lora_rank=1536, multi-head latent"),
    ({**TINY_LLAMA, "layer_types": ["full_attention", "chunked_attention"]},
     "not modelled: layer_types 'chunked_attention'"),
])
def test_bad_config_files_are_one_line_exit_2(tmp_path, capsys, content, fragment):
    path = write(tmp_path, content)
    assert main(["count", "--model", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "Traceback" not in err
    assert fragment in err and str(path) in err


def test_missing_file_is_one_line(tmp_path, capsys):
    assert main(["count", "--model", str(tmp_path / "nope.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope.json: no such file" in err
    with pytest.raises(UsageError, match="unknown model 'llama9'.*or give the path of a Hugging Face config.json"):
        resolve_config("llama9")


SHIPPED = Path(__file__).resolve().parents[2] / "benchmarks" / "hf_configs"


def test_gemma3_shipped_config_slides_5_layers_in_6():
    """google/gemma-3-1b-pt as shipped (transformers 4.x keys: sliding_window_pattern 6, no layer_types):
    Gemma 3 (Gemma Team 2025, §2.1) interleaves 5 local (sliding, 512) layers with 1 global one, so of 26
    layers, 5, 11, 17 and 23 are full (transformers: full where (i + 1) % 6 == 0)."""
    cfg = load_hf_config(SHIPPED / "gemma3_text.json")
    assert [i for i in range(26) if cfg.layer_type(i) == "full"] == [5, 11, 17, 23]
    assert (cfg.count_layers("full"), cfg.count_layers("sliding"), cfg.sliding_window) == (4, 22, 512)


QWEN2_WINDOWED = {**TINY_LLAMA, "model_type": "qwen2", "num_hidden_layers": 4, "use_sliding_window": True,
                  "sliding_window": 8}


@pytest.mark.parametrize("first, sliding", [(0, [0, 1, 2, 3]), (1, [1, 2, 3]), (2, [2, 3]), (3, [3]), (4, [])])
def test_qwen2_max_window_layers_boundary(tmp_path, first, sliding):
    """Qwen2Config (no layer_types, as 4.x wrote it): layer i slides if i >= max_window_layers."""
    cfg = load_hf_config(write(tmp_path, {**QWEN2_WINDOWED, "max_window_layers": first}))
    assert [i for i in range(4) if cfg.layer_type(i) == "sliding"] == sliding


@pytest.mark.parametrize("raw, sliding", [
    # Issue 24 item 2: every layer counted as sliding (3.5x under at T=65,536); transformers: full attention.
    ({**TINY_LLAMA, "model_type": "smollm3", "sliding_window": 4096, "use_sliding_window": False}, []),
    ({**TINY_LLAMA, "model_type": "smollm3", "num_hidden_layers": 4, "sliding_window": 8,
      "use_sliding_window": False}, []),
    ({**TINY_LLAMA, "model_type": "smollm3", "num_hidden_layers": 4, "sliding_window": 8,
      "use_sliding_window": False, "layer_types": ["sliding_attention"] * 4}, []),
    # with the switch on, the no-RoPE layers slide (every 4th by default: layer 3 of 0..3)
    ({**TINY_LLAMA, "model_type": "smollm3", "num_hidden_layers": 4, "sliding_window": 8,
      "use_sliding_window": True}, [3]),
    ({**TINY_LLAMA, "model_type": "smollm3", "num_hidden_layers": 4, "sliding_window": 8,
      "use_sliding_window": True, "no_rope_layers": [0, 1, 0, 1]}, [0, 2]),
    # Issue 24 item 2: transformers' Llama has no window, whatever the file says.
    ({**TINY_LLAMA, "sliding_window": 8}, []),
    ({**TINY_LLAMA, "sliding_window": 8, "layer_types": ["sliding_attention"] * 2}, []),
    # Issue 24 item 2: transformers 5 slides every Qwen3-MoE layer; max_window_layers is not read.
    ({**TINY_LLAMA, "model_type": "qwen3_moe", "head_dim": 16, "num_experts": 4, "num_experts_per_tok": 2,
      "use_sliding_window": True, "sliding_window": 8, "max_window_layers": 2}, [0, 1]),
    ({**QWEN2_WINDOWED, "use_sliding_window": False, "max_window_layers": 0}, []),
    ({**QWEN2_WINDOWED, "use_sliding_window": False, "layer_types": ["sliding_attention"] * 4}, []),
    ({**TINY_LLAMA, "model_type": "mixtral", "sliding_window": 8}, [0, 1]),
    ({**TINY_LLAMA, "model_type": "mistral"}, [0, 1]),  # default 4096
    ({**TINY_LLAMA, "model_type": "mistral", "sliding_window": None}, []),
])
def test_window_switch_keys(tmp_path, raw, sliding):
    cfg = load_hf_config(write(tmp_path, raw))
    assert [i for i in range(cfg.n_layer) if cfg.layer_type(i) == "sliding"] == sliding
    assert (cfg.sliding_window is None) == (not sliding)


def test_dense_layer_index_n_layer(tmp_path):
    """Layers are 0 .. n_layer - 1. transformers' Qwen3MoeDecoderLayer tests `layer_idx not in
    mlp_only_layers`, so an index n_layer (or -1) names no layer and makes none dense; a ModelConfig refuses it,
    since the analytic count would take it for a dense layer the model does not build."""
    raw = {**TINY_LLAMA, "model_type": "qwen3_moe", "head_dim": 16, "num_experts": 4, "num_experts_per_tok": 2}
    assert load_hf_config(write(tmp_path, {**raw, "mlp_only_layers": [2, -1]})).dense_layers == ()
    assert load_hf_config(write(tmp_path, {**raw, "mlp_only_layers": [1, 2]})).dense_layers == (1,)
    moe = dict(n_layer=2, n_experts=4, top_k=2)
    with pytest.raises(UsageError, match=r"dense_layers=\(2,\) is not allowed: give distinct layer indices 0 .. "
                                         r"n_layer - 1 = 1"):
        PRESETS["gpt2"].replace(dense_layers=(2,), **moe)
    assert PRESETS["gpt2"].replace(dense_layers=(1,), **moe).count_layers(moe=False) == 1


def test_smollm3_shipped_config_with_a_window_but_the_switch_off(tmp_path):
    """Issue 24 item 2, as reported: HuggingFaceTB/SmolLM3-3B with sliding_window 4096 and use_sliding_window
    false counted every layer as sliding (forward 3.5x under at T = 65,536). transformers' SmolLM3Attention
    takes no window unless use_sliding_window; with it, the no-RoPE layers (every 4th: 9 of 36) slide."""
    raw = json.loads((SHIPPED / "smollm3.json").read_text())
    assert load_hf_config(write(tmp_path, {**raw, "sliding_window": 4096})).count_layers("sliding") == 0
    cfg = load_hf_config(write(tmp_path, {**raw, "sliding_window": 4096, "use_sliding_window": True}))
    assert [i for i in range(36) if cfg.layer_type(i) == "sliding"] == list(range(3, 36, 4))


def test_config_files_in_one_folder_are_named_after_their_files(tmp_path):
    """cfgs/llama3-8b.json, cfgs/llama3-70b.json and cfgs/llama3-405b.json (no `_name_or_path`) are three
    models: named after the folder they would all be "llama:cfgs" and collide in sweeps and result folders."""
    folder = tmp_path / "cfgs"
    folder.mkdir()
    shapes = {"llama3-8b": {}, "llama3-70b": {"hidden_size": 8192, "num_hidden_layers": 80,
                                              "num_attention_heads": 64, "intermediate_size": 28672},
              "llama3-405b": {"hidden_size": 16384, "num_hidden_layers": 126, "num_attention_heads": 128,
                              "intermediate_size": 53248}}
    names = {stem: resolve_config(str(write(folder, {**LLAMA3_8B, **shape}, f"{stem}.json"))).name
             for stem, shape in shapes.items()}
    assert names == {"llama3-8b": "llama:llama3-8b", "llama3-70b": "llama:llama3-70b",
                     "llama3-405b": "llama:llama3-405b"}
    # a config.json names nothing: the model folder holding it does, as a path to the file or to the folder
    model = tmp_path / "some-model"
    model.mkdir()
    path = write(model, LLAMA3_8B)
    assert load_hf_config(path).name == load_hf_config(model).name == "llama:some-model"
    # `_name_or_path`, where the file has one, still wins
    assert load_hf_config(write(folder, LLAMA2_7B, "mine.json")).name == "Llama-2-7b-hf"
