"""The decoder-only model flopbench measures: GPT-2 (Radford et al. 2019), written after nanoGPT's model.py,
with the Llama-family options of `ModelConfig`.

Pre-norm blocks; learned position embeddings or rotary ones (RoPE, Su et al. 2021, in the
"rotate half" layout of the Hugging Face Llama code); a GELU MLP (4x in GPT-2) or a SwiGLU MLP
(Shazeer 2020); LayerNorm or RMSNorm; causal attention through `F.scaled_dot_product_attention` (so
the GPU picks its flash / cuDNN kernel), with fewer key/value heads than query heads for grouped-query
attention (Ainslie et al. 2023); an LM head tied to the token embedding or not. Parameter counts match
the published GPT-2, Llama 2 / 3 and Mistral checkpoints (tests).

Grouped-query attention goes to SDPA with `enable_gqa=True` (torch >= 2.5): the kernel broadcasts each
K/V head over its group of query heads, and torch counts QK^T and AV over all query heads.

Activation checkpointing (`checkpointing="full"`) wraps every block in torch's non-reentrant
`checkpoint`. Its early stop is set explicitly because it changes the hardware FLOPs: with early stop
(torch's default) the recompute ends once every tensor backward needs is rebuilt, so a block's last
matmul (the MLP down-projection, GELU or SwiGLU alike) is not recomputed; without it the whole block
runs again. Early stop off is set through the `torch.utils.checkpoint.set_checkpoint_early_stop(False)`
context manager, which every torch pyproject allows has (the `checkpoint(..., early_stop=)` argument only
exists from torch 2.9); the flag is read when `checkpoint` runs the forward, so the context covers that
call. Early stop on is torch's default and needs no context (none in a compiled forward either).
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint, set_checkpoint_early_stop

from ..errors import UsageError
from .config import CHECKPOINTING, ModelConfig

Rope = tuple[torch.Tensor, torch.Tensor]  # (cos, sin), each (T, head_dim)


class RotaryEmbedding(nn.Module):
    """The cos / sin tables of RoPE (Su et al. 2021, eq. 34): position p, pair i rotates by
    p·theta^(-2i/head_dim). Non-persistent buffers: not parameters, not in the state dict, and built on
    whatever device the model is (meta included)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        half = torch.arange(0, cfg.head_dim, 2, dtype=torch.float32) / cfg.head_dim
        inv_freq = 1.0 / (cfg.rope_theta ** half)
        angles = torch.arange(cfg.max_seq_len, dtype=torch.float32)[:, None] * inv_freq[None, :]
        angles = torch.cat((angles, angles), dim=-1)  # (max_seq_len, head_dim), "rotate half" layout
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, seq_len: int, start: int = 0) -> Rope:
        return self.cos[start:start + seq_len], self.sin[start:start + seq_len]


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, rope: Rope) -> torch.Tensor:
    """Rotate x (B, heads, T, head_dim): x·cos + rotate_half(x)·sin, elementwise (no matmul)."""
    cos, sin = (t.to(x.dtype) for t in rope)
    return x * cos + _rotate_half(x) * sin


def _norm(cfg: ModelConfig) -> nn.Module:
    if cfg.norm == "rmsnorm":
        return nn.RMSNorm(cfg.d_model, eps=1e-5)  # weight only
    return nn.LayerNorm(cfg.d_model, bias=cfg.bias)


class KVCache:
    """A static cache of every layer's keys and values for generation, preallocated to `max_len` positions
    (as Hugging Face's StaticCache and gpt-fast do): decoding never reallocates, and a step at position p
    attends to the p + 1 keys written so far. K/V are stored at n_kv_head heads (grouped-query attention
    shrinks the cache, Ainslie et al. 2023)."""

    def __init__(self, cfg: ModelConfig, batch_size: int, max_len: int, device: str | torch.device,
                 dtype: torch.dtype):
        shape = (cfg.n_layer, batch_size, cfg.kv_heads, max_len, cfg.head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)

    def update(self, layer: int, pos: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Write the keys and values of positions pos .. pos + T - 1; return every key and value up to them."""
        end = pos + k.shape[2]
        self.k[layer, :, :, pos:end] = k
        self.v[layer, :, :, pos:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = cfg.n_head, cfg.kv_heads, cfg.head_dim
        # Q (d_model wide), K and V (kv_dim wide each) in one matmul.
        self.c_attn = nn.Linear(cfg.d_model, cfg.d_model + 2 * cfg.kv_dim, bias=cfg.bias)
        self.c_proj = nn.Linear(cfg.d_model, cfg.d_model, bias=cfg.bias)

    def forward(self, x: torch.Tensor, rope: Rope | None = None, cache: KVCache | None = None, layer: int = 0,
                pos: int = 0) -> torch.Tensor:
        B, T, C = x.shape
        kv_dim = self.n_kv_head * self.head_dim
        q, k, v = self.c_attn(x).split((C, kv_dim, kv_dim), dim=2)
        # (B, T, heads * head_dim) -> (B, heads, T, head_dim)
        q = q.view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        k, v = (t.view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2) for t in (k, v))
        if rope is not None:
            q, k = apply_rope(q, rope), apply_rope(k, rope)
        if cache is not None:  # generation: a prompt at pos 0 (causal), then one token per step (all keys)
            k, v = cache.update(layer, pos, k.to(cache.k.dtype), v.to(cache.v.dtype))
            q = q.to(cache.k.dtype)
        causal = cache is None or bool(T > 1)  # `cache is None` first: under torch.jit.trace T is a tensor
        y = F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=self.n_kv_head != self.n_head)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.c_proj(y)


class MLP(nn.Module):
    """GPT-2's MLP: d -> d_ff, GELU (tanh approximation), d_ff -> d."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.c_fc = nn.Linear(cfg.d_model, cfg.d_ff, bias=cfg.bias)
        self.gelu = nn.GELU(approximate="tanh")
        self.c_proj = nn.Linear(cfg.d_ff, cfg.d_model, bias=cfg.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.gelu(self.c_fc(x)))


class SwiGLU(nn.Module):
    """Llama's MLP (Shazeer 2020, eq. 6 with Swish_1 = SiLU): down(silu(gate(x)) * up(x)), three matrices."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.c_gate = nn.Linear(cfg.d_model, cfg.d_ff, bias=cfg.bias)
        self.c_fc = nn.Linear(cfg.d_model, cfg.d_ff, bias=cfg.bias)  # "up"
        self.c_proj = nn.Linear(cfg.d_ff, cfg.d_model, bias=cfg.bias)  # "down"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.silu(self.c_gate(x)) * self.c_fc(x))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln_1 = _norm(cfg)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = _norm(cfg)
        self.mlp = SwiGLU(cfg) if cfg.mlp == "swiglu" else MLP(cfg)

    def forward(self, x: torch.Tensor, rope: Rope | None = None, cache: KVCache | None = None, layer: int = 0,
                pos: int = 0) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), rope, cache, layer, pos)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """GPT-2, or a Llama-family model (see `ModelConfig`). `forward(idx)` returns logits (B, T, vocab_size).

    Generation: `forward(idx, cache=KVCache(...), pos=p, last_only=True)` runs the tokens `idx` at positions
    p, p + 1, ... against the cache and returns the logits of the last position only (B, 1, vocab_size),
    as `generate` does: a prompt at pos 0 (prefill), then one token per step (decode)."""

    def __init__(self, cfg: ModelConfig, checkpointing: str = "none", early_stop: bool = True):
        super().__init__()
        if checkpointing not in CHECKPOINTING:
            raise UsageError(f"checkpointing={checkpointing!r}: choose one of {', '.join(CHECKPOINTING)}")
        self.cfg = cfg
        self.checkpointing = checkpointing
        self.early_stop = early_stop
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.wpe = nn.Embedding(cfg.max_seq_len, cfg.d_model) if cfg.positions == "learned" else None
        self.rope = RotaryEmbedding(cfg) if cfg.positions == "rope" else None
        self.h = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = _norm(cfg)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.wte.weight
        if not any(p.is_meta for p in self.parameters()):
            self._init_weights()

    @torch.no_grad()
    def _init_weights(self) -> None:
        """GPT-2's init: N(0, 0.02), residual projections scaled by 1/sqrt(2 n_layer), zero biases."""
        for name, param in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(param)
            elif param.dim() == 2:
                std = 0.02 / math.sqrt(2 * self.cfg.n_layer) if name.endswith("c_proj.weight") else 0.02
                nn.init.normal_(param, mean=0.0, std=std)

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None, pos: int = 0,
                last_only: bool = False) -> torch.Tensor:
        _, T = idx.shape
        x = self.wte(idx)
        if self.wpe is not None:
            x = x + self.wpe(torch.arange(pos, pos + T, device=idx.device))
        rope = self.rope(T, pos) if self.rope is not None else None
        if cache is not None:
            for layer, block in enumerate(self.h):
                x = block(x, rope, cache, layer, pos)
            return self.lm_head(self.ln_f(x[:, -1:] if last_only else x))
        for block in self.h:
            if self.checkpointing == "full" and torch.is_grad_enabled():
                with contextlib.nullcontext() if self.early_stop else set_checkpoint_early_stop(False):
                    x = checkpoint(block, x, rope, use_reentrant=False)
            else:
                x = block(x, rope)
        return self.lm_head(self.ln_f(x))


def build_model(
    cfg: ModelConfig,
    device: str | torch.device = "cpu",
    checkpointing: str = "none",
    early_stop: bool = True,
) -> GPT:
    """Build `cfg` directly on `device` (on "meta" no memory is allocated and no init runs)."""
    with torch.device(device):
        return GPT(cfg, checkpointing=checkpointing, early_stop=early_stop)


def lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy over all positions."""
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())
