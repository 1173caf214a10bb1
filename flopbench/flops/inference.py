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
2·B·N_active_matmul (every weight a token uses once, LM head included; the router, shared and top_k
experts of a mixture-of-experts layer) + 4·B·k·n_head·head_dim per layer (QKᵀ and AV of one query against
k keys, per query head; k = c, or min(c, W) in a sliding layer, whose cache keeps its last W keys in view).
Bytes per decode step, at `bytes_per_value` per element:

- every weight that takes part in a matmul read once: the blocks' matrices, biases and norms, the final
  norm and the LM head (d × V, tied or not); of a mixture-of-experts layer, the experts the step's tokens
  are routed to, at most min(n_experts, tokens·top_k) (an upper bound: tokens may share experts); the token
  (and position) embeddings are not read whole, only the B rows gathered;
- the KV cache read: 2·k·n_kv_head·head_dim·B values per layer (K and V of every attended position), and
  the new token's K and V written: 2·L·n_kv_head·head_dim·B.

A **static** decode step (gpt-fast's `generate.py`: one shape for every step, so one CUDA graph) scores
its query against all S = P + G positions of the preallocated cache in every layer, full or sliding, and
masks the keys beyond its context (`model.gpt.KVCache.mask`). The masked keys are work the kernel does and
bytes it reads: its **hardware** FLOPs and bytes are those of L·S keys (`static_decode_flops`,
`static_decode_bytes`), while its model FLOPs, and the bytes MBU divides, stay those of the context c.

Arithmetic intensity = FLOPs / bytes (Williams et al. 2009, "Roofline").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..model.config import ModelConfig
from . import analytic

#: Bytes per stored value of each compute dtype (weights and KV cache in that dtype).
BYTES_PER_VALUE = {"fp32": 4, "tf32": 4, "bf16": 2, "fp16": 2}


def prefill_flops(cfg: ModelConfig, batch_size: int, prompt_len: int) -> int:
    """Matmul FLOPs of the prefill: the forward over `prompt_len` tokens, LM head on the last position only
    (sliding layers over their windows; a mask-based kernel adds `analytic.masked_square_flops`)."""
    B, P, d, V = batch_size, prompt_len, cfg.d_model, cfg.vocab_size
    return analytic.forward_flops(cfg, B, P) - 2 * B * P * d * V + 2 * B * d * V


def attended_keys(cfg: ModelConfig, context: int) -> int:
    """Keys one query attends in all the layers together at `context`: c per full layer, min(c, W) per
    sliding layer."""
    return sum(n * analytic.keys_per_query(cfg, context, t) for (t, _), n in cfg.layer_kinds().items())


def step_flops(cfg: ModelConfig, batch_size: int, keys: int) -> int:
    """Matmul FLOPs of one decode step whose query scores `keys` keys over all the layers together:
    2·B·N_active_matmul + 4·B·n_head·head_dim·keys (QK^T and AV of one query, per query head)."""
    B = batch_size
    return 2 * B * analytic.param_counts(cfg).active_matmul + 4 * B * cfg.q_dim * keys


def decode_flops(cfg: ModelConfig, batch_size: int, context: int) -> int:
    """Model FLOPs of one decode step at `context` keys (the new token included): `step_flops` over the
    keys attended (`attended_keys`)."""
    return step_flops(cfg, batch_size, attended_keys(cfg, context))


def static_decode_flops(cfg: ModelConfig, batch_size: int, cache_len: int) -> int:
    """Hardware FLOPs of one static decode step: `step_flops` over all `cache_len` cached positions in every
    layer, the masked ones included (see the module docstring)."""
    return step_flops(cfg, batch_size, cfg.n_layer * cache_len)


def weights_read(cfg: ModelConfig, tokens: int = 1) -> int:
    """Parameters one forward step over `tokens` tokens reads in full: everything but the embedding tables,
    plus the LM-head matrix (d × V), which a tied model reads from the token embedding; of each
    mixture-of-experts layer only min(n_experts, tokens·top_k) experts (at most: tokens may share one)."""
    n = analytic.param_counts(cfg)
    unread = 0
    if cfg.is_moe:
        n_moe = cfg.count_layers(moe=True)
        per_expert = sum(m.params // m.copies for m in analytic.block_matrices(cfg, moe=True) if m.copies > 1)
        unread = n_moe * (cfg.n_experts - min(cfg.n_experts, tokens * cfg.top_k)) * per_expert
    return n.non_embedding - unread + (cfg.d_model * cfg.vocab_size if cfg.tie_embeddings else 0)


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


def step_bytes(cfg: ModelConfig, batch_size: int, keys: int, dtype: str) -> DecodeBytes:
    """Bytes moved by one decode step in `dtype` whose query reads the K and V of `keys` positions over all
    the layers together."""
    size, B, L = BYTES_PER_VALUE[dtype], batch_size, cfg.n_layer
    rows = B * cfg.d_model * (2 if cfg.positions == "learned" else 1)  # token (+ position) embedding rows
    kv = 2 * cfg.kv_dim * B  # K and V of one position in one layer
    return DecodeBytes(weights=size * weights_read(cfg, B), embedding_rows=size * rows,
                       kv_cache_read=size * kv * keys, kv_cache_written=size * kv * L)


def decode_bytes(cfg: ModelConfig, batch_size: int, context: int, dtype: str) -> DecodeBytes:
    """Bytes moved by one decode step at `context` keys (the new token included) in `dtype`: the bytes MBU
    divides."""
    return step_bytes(cfg, batch_size, attended_keys(cfg, context), dtype)


def static_decode_bytes(cfg: ModelConfig, batch_size: int, cache_len: int, dtype: str) -> DecodeBytes:
    """Bytes one static decode step reads and writes: the whole cache of `cache_len` positions read in every
    layer, the masked positions included (see the module docstring)."""
    return step_bytes(cfg, batch_size, cfg.n_layer * cache_len, dtype)


def prefill_bytes(cfg: ModelConfig, batch_size: int, prompt_len: int, dtype: str) -> int:
    """Bytes the prefill moves at least: the weights once, the embedding rows of every prompt token, and the
    KV cache of the prompt written (activations are not counted: they may stay on chip)."""
    size, B, P = BYTES_PER_VALUE[dtype], batch_size, prompt_len
    rows = B * P * cfg.d_model * (2 if cfg.positions == "learned" else 1)
    return size * (weights_read(cfg, B * P) + rows + 2 * cfg.n_layer * cfg.kv_dim * B * P)
