"""Hostile config.json files: every one is a single-line `UsageError` (exit 2 from the CLI) naming the file,
the key and the bad value, never a TypeError, RecursionError or ValueError from deep inside. FIFOs and
/dev/zero as `--model` are in tests/cli/test_input_faults.py (they need a subprocess and a timeout)."""

import json
import math
from pathlib import Path

import pytest

from flopbench.cli import main
from flopbench.errors import UsageError
from flopbench.flops import analytic
from flopbench.model.config import ModelConfig, pad_vocab
from flopbench.model.hf import load_hf_config

TINY_LLAMA = {
    "model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "intermediate_size": 96, "vocab_size": 100, "max_position_embeddings": 64,
}
TINY_GPT2 = {"model_type": "gpt2", "n_embd": 32, "n_layer": 2, "n_head": 2, "n_positions": 16, "vocab_size": 64}


def write(tmp_path, content) -> str:
    path = tmp_path / "config.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


def one_line_error(capsys, path) -> str:
    assert main(["count", "--no-torch", "--model", path, "--seq-len", "8"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("flopbench: error: "), err
    assert "Traceback" not in err and path in err
    return err


@pytest.mark.parametrize("content, fragment", [
    # Before: TypeError: unhashable type: 'list' / 'dict' (model_type looked up in a dict).
    ({**TINY_LLAMA, "model_type": ["llama"]}, "has model_type ['llama'] (not modelled): supported model types are gpt2, llama"),
    ({**TINY_LLAMA, "model_type": {"a": 1}}, "has model_type {'a': 1} (not modelled): supported model types"),
    ({**TINY_LLAMA, "model_type": 7}, "has model_type 7 (not modelled): supported model types"),
    # Before: TypeError: unsupported operand type(s) for *: 'dict' and 'int'.
    ({**TINY_LLAMA, "head_dim": {}}, "head_dim={} is not allowed: head_dim must be a JSON integer"),
    # Before: RecursionError from json.loads.
    ("[" * 100_000 + "]" * 100_000, "not JSON that flopbench reads (nested too deeply)"),
    ('{"model_type": "llama", "hidden_size": ' + "7" * 5000 + "}", "an integer of more than 4300 digits"),
    # Before: read without complaint, a NUL in the model's name (and in a run's file names).
    ({**TINY_LLAMA, "_name_or_path": "org/a\x00b"}, "_name_or_path='org/a\\x00b' is not allowed"),
    ({**TINY_LLAMA, "_name_or_path": "org/a\nb"}, "_name_or_path='org/a\\nb' is not allowed"),
    ({**TINY_LLAMA, "_name_or_path": ["x"]}, "_name_or_path=['x'] is not allowed"),
])
def test_hostile_config_json_is_one_line(tmp_path, capsys, content, fragment):
    assert fragment in one_line_error(capsys, write(tmp_path, content))


@pytest.mark.parametrize("raw, key, field, value", [
    # Before: accepted silently (4.0 == 4 heads became "no GQA"; 16.0 * 4 == 64 passed the head_dim check).
    ({**TINY_LLAMA, "num_key_value_heads": 4.0}, "num_key_value_heads", "n_kv_head", "4.0"),
    ({**TINY_LLAMA, "num_key_value_heads": True}, "num_key_value_heads", "n_kv_head", "True"),
    ({**TINY_LLAMA, "head_dim": 16.0}, "head_dim", "head_dim", "16.0"),
    ({**TINY_LLAMA, "head_dim": True}, "head_dim", "head_dim", "True"),
    # Refused before too, but naming the ModelConfig field only, not the key of the file.
    ({**TINY_LLAMA, "num_hidden_layers": 2.0}, "num_hidden_layers", "n_layer", "2.0"),
    ({**TINY_LLAMA, "num_hidden_layers": "2"}, "num_hidden_layers", "n_layer", "'2'"),
    ({**TINY_GPT2, "n_layer": 12.0}, "n_layer", "n_layer", "12.0"),
    ({**TINY_GPT2, "n_layer": True}, "n_layer", "n_layer", "True"),
    ({**TINY_GPT2, "n_layer": "12"}, "n_layer", "n_layer", "'12'"),
    ({**TINY_GPT2, "n_inner": 128.5}, "n_inner", "d_ff", "128.5"),
])
def test_an_integer_key_must_hold_a_json_integer(tmp_path, capsys, raw, key, field, value):
    err = one_line_error(capsys, write(tmp_path, raw))
    assert f"{field}={value} is not allowed: {key} must be a JSON integer" in err


@pytest.mark.parametrize("raw, fragment", [
    ({**TINY_GPT2, "tie_word_embeddings": 1},
     "tie_embeddings=1 is not allowed: tie_word_embeddings must be true or false"),
    ({**TINY_LLAMA, "attention_bias": "no", "mlp_bias": "no"}, "bias='no' is not allowed: attention_bias must be true"),
    ({**TINY_LLAMA, "rope_theta": "1e4"}, "rope_theta='1e4' is not allowed: rope_theta must be a JSON number"),
    # A 401-digit integer is valid JSON, but no float holds it: RoPE's frequencies could not be computed.
    ({**TINY_LLAMA, "rope_theta": 10**400}, "rope_theta=an integer of about 401 digits is not allowed"),
    # 4,001 digits parse (Python's limit is 4,300), and are refused as a size, not printed.
    ({**TINY_LLAMA, "num_hidden_layers": 10**4000}, "n_layer=an integer of about 4001 digits is above the limit"),
])
def test_other_wrong_types_and_sizes(tmp_path, capsys, raw, fragment):
    assert fragment in one_line_error(capsys, write(tmp_path, raw))


def test_integers_of_the_right_type_still_load(tmp_path):
    cfg = load_hf_config(write(tmp_path, {**TINY_LLAMA, "head_dim": 16, "rope_theta": 500000, "num_key_value_heads": 4,
                                          "_name_or_path": "org/tiny-llama"}))
    assert (cfg.name, cfg.n_kv_head, cfg.rope_theta, cfg.head_dim) == ("tiny-llama", None, 500000, 16)


def test_pad_vocab_is_exact_for_a_huge_vocabulary(tmp_path):
    """10**18 is a multiple of 64 (10**18 = 2**18 * 5**18), so 10**18 + 1 pads to 10**18 + 64. A float holds
    10**18 + 1 as 10**18 (53-bit mantissa), and float division would pad to 10**18: one row short."""
    vocab = 10**18 + 1
    cfg = load_hf_config(write(tmp_path, {**TINY_GPT2, "vocab_size": vocab}))
    assert math.ceil(vocab / 64) * 64 == 10**18  # what float division gets
    assert pad_vocab(cfg, 64).vocab_size == 10**18 + 64
    assert pad_vocab(cfg, 7).vocab_size % 7 == 0 and 0 <= pad_vocab(cfg, 7).vocab_size - vocab < 7


def test_names_must_be_printable():
    with pytest.raises(UsageError, match=r"name='a\\x00b' is not allowed"):
        ModelConfig(name="a\x00b")


TINY_QWEN3_MOE = {
    "model_type": "qwen3_moe", "hidden_size": 64, "num_hidden_layers": 4, "num_attention_heads": 4,
    "num_key_value_heads": 2, "head_dim": 16, "intermediate_size": 96, "vocab_size": 100,
    "max_position_embeddings": 64, "num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 40,
}
TINY_GEMMA3 = {
    "model_type": "gemma3_text", "hidden_size": 64, "num_hidden_layers": 12, "num_attention_heads": 4,
    "num_key_value_heads": 2, "head_dim": 16, "intermediate_size": 96, "vocab_size": 100,
    "max_position_embeddings": 64, "sliding_window": 8,
}


def test_zero_experts_is_a_dense_qwen3_moe(tmp_path):
    """Issue 24 item 1: `"num_experts": 0` fell back to the default 128 experts (an `or`). transformers'
    Qwen3MoeDecoderLayer builds experts only where num_experts > 0: a dense MLP of intermediate_size in every
    layer. By hand, d = 64, q width 4·16 = 64, K/V 2·16 = 32 each, d_ff 96, V = 100, 4 layers, untied:
    per layer q, o 2·64·64 = 8,192; k, v 2·64·32 = 4,096; MLP 3·64·96 = 18,432; norms 2·64 + QK-norm 2·16 = 160
    -> 30,880; embedding and LM head 2·100·64 = 12,800; final norm 64: 4·30,880 + 12,800 + 64 = 136,384."""
    cfg = load_hf_config(write(tmp_path, {**TINY_QWEN3_MOE, "num_experts": 0}))
    assert (cfg.n_experts, cfg.top_k, cfg.d_ff_expert, cfg.dense_layers, cfg.d_ff) == (0, 0, None, (), 96)
    assert analytic.param_counts(cfg).total == 4 * (8_192 + 4_096 + 18_432 + 160) + 12_800 + 64 == 136_384
    # transformers' name num_local_experts is the same attribute (Qwen3MoeConfig.attribute_map) and wins
    assert load_hf_config(write(tmp_path, {**TINY_QWEN3_MOE, "num_experts": 4, "num_local_experts": 0})).n_experts == 0
    assert load_hf_config(write(tmp_path, {**TINY_QWEN3_MOE, "num_experts": 0, "num_local_experts": 3})).n_experts == 3
    # The replay: the shipped Qwen3-30B-A3B file with 0 experts counted 30.53e9 parameters. Dense, by
    # hand: per layer Q, O 2·2048·4096 + K, V 2·2048·512 = 18,874,368; MLP 3·2048·6144 = 37,748,736; norms
    # 2·2048 + QK-norm 2·128 = 4,352 -> 56,627,456, x 48; embedding and LM head 2·151,936·2048; final norm 2048.
    raw = json.loads((Path(__file__).resolve().parents[2] / "benchmarks/hf_configs/qwen3_moe.json").read_text())
    dense = load_hf_config(write(tmp_path, {**raw, "num_experts": 0}))
    assert analytic.param_counts(dense).total == 48 * 56_627_456 + 2 * 151_936 * 2048 + 2048 == 3_340_449_792


def test_gemma_activation_is_read_from_the_family_key(tmp_path):
    """Issue 24 item 1 (the `or` audit): Gemma 2 / 3 read `hidden_activation` only, Gemma `hidden_act` only
    (transformers' GemmaMLP / Gemma2MLP): an empty or non-GELU value of the key read is refused, the other
    key is not read."""
    with pytest.raises(UsageError, match="hidden_activation=''"):
        load_hf_config(write(tmp_path, {**TINY_GEMMA3, "hidden_activation": "", "hidden_act": "gelu"}))
    assert load_hf_config(write(tmp_path, {**TINY_GEMMA3, "hidden_act": "silu"})).mlp == "geglu"


@pytest.mark.parametrize("raw, fragment", [
    # Issue 24 item 3: taken as 1 (experts in every layer); transformers fails on 0.
    ({**TINY_QWEN3_MOE, "decoder_sparse_step": 0}, "decoder_sparse_step=0 is not allowed: it must be >= 1"),
    ({**TINY_QWEN3_MOE, "decoder_sparse_step": -2}, "decoder_sparse_step=-2 is not allowed: it must be >= 1"),
    # Issue 24 item 4: a MemoryError traceback, an 8 GB tuple, 0 silently 6, negatives silently all full.
    ({**TINY_GEMMA3, "sliding_window_pattern": 2**60}, "sliding_window_pattern=1152921504606846976 is not "
                                                       "allowed: give 1 to num_hidden_layers=12"),
    ({**TINY_GEMMA3, "sliding_window_pattern": 10**9}, "sliding_window_pattern=1000000000 is not allowed"),
    ({**TINY_GEMMA3, "sliding_window_pattern": 2**61}, "sliding_window_pattern=2305843009213693952 is above"),
    ({**TINY_GEMMA3, "sliding_window_pattern": 0}, "sliding_window_pattern=0 is not allowed: give 1 to"),
    ({**TINY_GEMMA3, "sliding_window_pattern": -3}, "sliding_window_pattern=-3 is not allowed: give 1 to"),
    ({**TINY_GEMMA3, "sliding_window_pattern": 13}, "sliding_window_pattern=13 is not allowed: give 1 to"),
    # Issue 24 item 7: an object fell back to full attention (model types that did not read the key).
    *(({**TINY_LLAMA, "model_type": mt, "layer_types": {"0": "sliding_attention"}},
       "layer_types={'0': 'sliding_attention'} is not allowed: layer_types must be a JSON list")
      for mt in ("llama", "gemma", "olmo2", "qwen2", "smollm3")),
    ({**TINY_GPT2, "layer_types": {"0": "full_attention"}}, "layer_types must be a JSON list"),
    ({**TINY_GEMMA3, "layer_types": ["sliding_attention"] * 11}, "layer_types has 11 entries for num_hidden_layers=12"),
    ({**TINY_LLAMA, "model_type": "smollm3", "no_rope_layer_interval": 0, "use_sliding_window": True,
      "sliding_window": 4}, "no_rope_layer_interval=0 is not allowed"),
    ({**TINY_LLAMA, "model_type": "smollm3", "no_rope_layers": [1]}, "no_rope_layers=[1] is not allowed"),
    ({**TINY_GEMMA3, "use_bidirectional_attention": True}, "not modelled: use_bidirectional_attention=True"),
])
def test_bad_sparse_step_pattern_and_layer_types_are_one_line(tmp_path, capsys, raw, fragment):
    assert fragment in one_line_error(capsys, write(tmp_path, raw))


def test_gemma3_pattern_in_range_is_read(tmp_path):
    """1 and num_hidden_layers are the ends of the range: every layer full; only the last layer full."""
    assert load_hf_config(write(tmp_path, {**TINY_GEMMA3, "sliding_window_pattern": 1})).layer_types == ("full",)
    cfg = load_hf_config(write(tmp_path, {**TINY_GEMMA3, "sliding_window_pattern": 12}))
    assert [cfg.layer_type(i) for i in range(12)] == ["sliding"] * 11 + ["full"]


@pytest.mark.parametrize("flag", ["--d-ff-expert", "--top-k"])
def test_expert_options_on_a_dense_model_are_refused(capsys, flag):
    """Issue 24 item 6: --d-ff-expert on a dense model was ignored and kept in the config, where --top-k was
    refused: both are one line, exit 2."""
    assert main(["count", "--no-torch", "--model", "gpt2", flag, "2", "--seq-len", "8"]) == 2
    out, err = capsys.readouterr()
    field = flag[2:].replace("-", "_")
    assert out == "" and err.count("\n") == 1 and f"{field}=2 needs experts: set n_experts > 0" in err
    with pytest.raises(UsageError, match="d_ff_shared=8 needs experts"):
        ModelConfig(d_ff_shared=8)
