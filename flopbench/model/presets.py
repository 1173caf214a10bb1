"""The named models (`PRESETS`) and `resolve_config`, which turns a name, a config.json path or a
`ModelConfig` into the config every command runs on.

Parameter counts of the presets equal the published checkpoints (tests): GPT-2 (Radford et al. 2019),
Llama 2 / 3, Mistral 7B, Mixtral 8x7B, Qwen3 8B and 30B-A3B, Gemma 2 9B (shapes of their Hugging Face
config.json files; totals from the papers and model cards cited beside each).
"""

from __future__ import annotations

import os

from ..errors import UsageError
from .config import LLAMA_ARCH, OVERRIDABLE, ModelConfig
from .hf import load_hf_config

PRESETS: dict[str, ModelConfig] = {
    "gpt2": ModelConfig("gpt2", n_layer=12, d_model=768, n_head=12),
    "gpt2-medium": ModelConfig("gpt2-medium", n_layer=24, d_model=1024, n_head=16),
    "gpt2-large": ModelConfig("gpt2-large", n_layer=36, d_model=1280, n_head=20),
    "gpt2-xl": ModelConfig("gpt2-xl", n_layer=48, d_model=1600, n_head=25),
    # A small model that trains a few steps on a laptop CPU in seconds: the default of `flopbench run`.
    "tiny": ModelConfig("tiny", n_layer=4, d_model=256, n_head=4, vocab_size=8192, max_seq_len=256),
    # Shapes of the published Hugging Face config.json files (meta-llama/Llama-2-7b-hf,
    # meta-llama/Meta-Llama-3-8B, meta-llama/Meta-Llama-3-70B, mistralai/Mistral-7B-v0.1).
    "llama2-7b": ModelConfig("llama2-7b", n_layer=32, d_model=4096, n_head=32, d_ff=11008, vocab_size=32000,
                             max_seq_len=4096, rope_theta=10000.0, **LLAMA_ARCH),
    "llama3-8b": ModelConfig("llama3-8b", n_layer=32, d_model=4096, n_head=32, n_kv_head=8, d_ff=14336,
                             vocab_size=128256, max_seq_len=8192, rope_theta=500000.0, **LLAMA_ARCH),
    "llama3-70b": ModelConfig("llama3-70b", n_layer=80, d_model=8192, n_head=64, n_kv_head=8, d_ff=28672,
                              vocab_size=128256, max_seq_len=8192, rope_theta=500000.0, **LLAMA_ARCH),
    "mistral-7b": ModelConfig("mistral-7b", n_layer=32, d_model=4096, n_head=32, n_kv_head=8, d_ff=14336,
                              vocab_size=32000, max_seq_len=32768, rope_theta=10000.0, layer_types=("sliding",),
                              sliding_window=4096, **LLAMA_ARCH),
    # mistralai/Mixtral-8x7B-v0.1: 46,702,792,704 parameters, 12.9B active (Jiang et al. 2024, §2: "47B
    # parameters ... 13B active parameters during inference").
    "mixtral-8x7b": ModelConfig("mixtral-8x7b", n_layer=32, d_model=4096, n_head=32, n_kv_head=8, d_ff=14336,
                                vocab_size=32000, max_seq_len=32768, rope_theta=1e6, n_experts=8, top_k=2,
                                **LLAMA_ARCH),
    # Qwen/Qwen3-8B (model card: 8.2B parameters, 6.95B non-embedding) and Qwen/Qwen3-30B-A3B (30.5B
    # parameters, 3.3B activated, 29.9B non-embedding): QK-norm per head, head_dim 128.
    "qwen3-8b": ModelConfig("qwen3-8b", n_layer=36, d_model=4096, n_head=32, n_kv_head=8, head_dim=128, d_ff=12288,
                            vocab_size=151936, max_seq_len=40960, rope_theta=1e6, qk_norm="head", **LLAMA_ARCH),
    "qwen3-30b-a3b": ModelConfig("qwen3-30b-a3b", n_layer=48, d_model=2048, n_head=32, n_kv_head=4, head_dim=128,
                                 d_ff=6144, vocab_size=151936, max_seq_len=40960, rope_theta=1e6, qk_norm="head",
                                 n_experts=128, top_k=8, d_ff_expert=768, **LLAMA_ARCH),
    # google/gemma-2-9b (Gemma Team 2024, "Gemma 2", Table 1 and §2: 8,324,201,984 non-embedding and
    # 917,504,000 embedding parameters): GeGLU, head_dim 256, alternating 4096-token sliding and full layers,
    # norms before and after attention and MLP, soft caps 50 (attention) and 30 (logits), tied embeddings.
    "gemma2-9b": ModelConfig("gemma2-9b", n_layer=42, d_model=3584, n_head=16, n_kv_head=8, head_dim=256,
                             d_ff=14336, vocab_size=256000, max_seq_len=8192, rope_theta=10000.0, bias=False,
                             tie_embeddings=True, mlp="geglu", norm="rmsnorm", positions="rope",
                             norm_position="sandwich", layer_types=("sliding", "full"), sliding_window=4096,
                             attn_softcap=50.0, final_softcap=30.0, embed_scale=True),
}


def _looks_like_path(model: str) -> bool:
    return model.endswith(".json") or "/" in model or "\\" in model or os.path.exists(model)


def resolve_config(model: str, **overrides) -> ModelConfig:
    """The preset named `model`, or the Hugging Face config.json at path `model` (a file, or a folder
    holding one), with `overrides` (fields of `OVERRIDABLE`, None = keep) applied."""
    unknown = set(overrides) - set(OVERRIDABLE)
    if unknown:
        raise UsageError(f"cannot override {sorted(unknown)}: overridable fields are {', '.join(OVERRIDABLE)}")
    if model in PRESETS:
        base = PRESETS[model]
    elif _looks_like_path(model):
        base = load_hf_config(model)
    else:
        raise UsageError(f"unknown model {model!r}: choose one of {', '.join(PRESETS)}, "
                         f"or give the path of a Hugging Face config.json")
    changes = {k: v for k, v in overrides.items() if v is not None}
    if "d_model" in changes and "d_ff" not in changes and base.d_ff == 4 * base.d_model:
        changes["d_ff"] = 4 * changes["d_model"]  # keep the preset's 4x MLP ratio
    if "sliding_window" in changes and "sliding" not in base.layer_types:
        changes["layer_types"] = ("sliding",)  # a window on a model without one: every layer slides (Mistral)
    if changes:
        changes["name"] = f"{base.name}+custom"
    return base.replace(**changes)


def as_config(config: ModelConfig | str) -> ModelConfig:
    """`config` itself, or the preset / config.json it names: what every API function accepts."""
    if isinstance(config, ModelConfig):
        return config
    if isinstance(config, str):
        return resolve_config(config)
    raise UsageError(f"config={type(config).__name__}: pass a ModelConfig or a preset name ({', '.join(PRESETS)})")
