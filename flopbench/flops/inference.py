"""Generation, analytically: the FLOPs and the bytes moved of a prefill and of each decode step.

Generation has two phases of very different cost (Pope et al. 2022, "Efficiently Scaling Transformer
Inference", §2; Kim et al. 2023 "Full Stack Optimization of Transformer Inference", §2.2):

- **prefill** runs the forward over the P prompt tokens at once and is compute-bound: its figure is MFU.
  As `generate` does, the LM head runs on the **last position only** (the logits of the other prompt
  positions are never used): forward FLOPs over P tokens − 2·B·P·d·V + 2·B·d·V.
- **decode** produces one token per sequence per step and is memory-bound: every step reads all the
  weights and the KV cache, so its figure is model bandwidth utilization, MBU = bytes / (time × peak
  bandwidth) (Databricks, "LLM Inference Performance Engineering: Best Practices", 2023).

Conventions, as for training: 1 multiply-add = 2 FLOPs, matmul FLOPs only, attention over every key the
query sees. At context c (the keys attended, the new token included) a decode step costs
2·B·N_matmul (every weight once per token, LM head included) + 4·B·c·n_head·head_dim·L (QKᵀ and AV of one
query against c keys, per query head). Bytes per decode step, at `bytes_per_value` per element:

- every weight that takes part in a matmul read once: the blocks' matrices, biases and norms, the final
  norm and the LM head (d × V, tied or not); the token (and position) embeddings are not read whole,
  only the B rows gathered;
- the KV cache read: 2·L·c·n_kv_head·head_dim·B values (K and V of every attended position), and the new
  token's K and V written: 2·L·n_kv_head·head_dim·B.

Arithmetic intensity = FLOPs / bytes (Williams et al. 2009, "Roofline").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..model.config import ModelConfig
from . import analytic

#: Bytes per stored value of each compute dtype (weights and KV cache in that dtype).
BYTES_PER_VALUE = {"fp32": 4, "tf32": 4, "bf16": 2, "fp16": 2}


def prefill_flops(cfg: ModelConfig, batch_size: int, prompt_len: int) -> int:
    """Matmul FLOPs of the prefill: the forward over `prompt_len` tokens, LM head on the last position only."""
    B, P, d, V = batch_size, prompt_len, cfg.d_model, cfg.vocab_size
    return analytic.forward_flops(cfg, B, P) - 2 * B * P * d * V + 2 * B * d * V


def decode_flops(cfg: ModelConfig, batch_size: int, context: int) -> int:
    """Matmul FLOPs of one decode step at `context` keys (the new token included):
    2·B·N_matmul + 4·B·c·n_head·head_dim·L."""
    B = batch_size
    n_matmul = analytic.param_counts(cfg).matmul
    return 2 * B * n_matmul + 4 * B * context * cfg.n_head * cfg.head_dim * cfg.n_layer


def weights_read(cfg: ModelConfig) -> int:
    """Parameters one forward step reads in full: everything but the embedding tables, plus the LM-head
    matrix (d × V), which a tied model reads from the token embedding."""
    n = analytic.param_counts(cfg)
    return n.non_embedding + (cfg.d_model * cfg.vocab_size if cfg.tie_embeddings else 0)


@dataclass(frozen=True)
class DecodeBytes:
    """Bytes one decode step moves, by kind (see the module docstring)."""

    weights: int
    embedding_rows: int
    kv_cache_read: int
    kv_cache_written: int

    @property
    def total(self) -> int:
        return self.weights + self.embedding_rows + self.kv_cache_read + self.kv_cache_written

    def as_dict(self) -> dict:
        return {**asdict(self), "total": self.total}


def decode_bytes(cfg: ModelConfig, batch_size: int, context: int, dtype: str) -> DecodeBytes:
    """Bytes moved by one decode step at `context` keys (the new token included) in `dtype`."""
    size, B, L = BYTES_PER_VALUE[dtype], batch_size, cfg.n_layer
    rows = B * cfg.d_model * (2 if cfg.positions == "learned" else 1)  # token (+ position) embedding rows
    kv = 2 * L * cfg.kv_dim * B  # K and V of one position, every layer
    return DecodeBytes(weights=size * weights_read(cfg), embedding_rows=size * rows,
                       kv_cache_read=size * kv * context, kv_cache_written=size * kv)


def prefill_bytes(cfg: ModelConfig, batch_size: int, prompt_len: int, dtype: str) -> int:
    """Bytes the prefill moves at least: the weights once, the embedding rows of every prompt token, and the
    KV cache of the prompt written (activations are not counted: they may stay on chip)."""
    size, B, P = BYTES_PER_VALUE[dtype], batch_size, prompt_len
    rows = B * P * cfg.d_model * (2 if cfg.positions == "learned" else 1)
    return size * (weights_read(cfg) + rows + 2 * cfg.n_layer * cfg.kv_dim * B * P)
