"""Hostile config.json files: every one is a single-line `UsageError` (exit 2 from the CLI) naming the file,
the key and the bad value, never a TypeError, RecursionError or ValueError from deep inside. FIFOs and
/dev/zero as `--model` are in tests/cli/test_input_faults.py (they need a subprocess and a timeout)."""

import json
import math

import pytest

from flopbench.cli import main
from flopbench.errors import UsageError
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
