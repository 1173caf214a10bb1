"""The decoder-only model flopbench measures: GPT-2 (Radford et al. 2019), written after nanoGPT's model.py.

Pre-LN blocks, learned position embeddings, a 4x GELU MLP, a causal attention through
`F.scaled_dot_product_attention` (so the GPU picks its flash / cuDNN kernel), and an LM head tied to
the token embedding. Parameter counts match the published GPT-2 checkpoints (DESIGN.md section 3).

Activation checkpointing (`checkpointing="full"`) wraps every block in torch's non-reentrant
`checkpoint`. Its `early_stop` flag is explicit because it changes the hardware FLOPs: with early stop
(torch's default) the recompute ends once every tensor backward needs is rebuilt, so a block's last
matmul (the MLP down-projection) is not recomputed; without it the whole block runs again.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .config import ModelConfig
from .errors import UsageError

CHECKPOINTING_MODES = ("none", "full")


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.c_attn = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=cfg.bias)  # Q, K, V in one matmul
        self.c_proj = nn.Linear(cfg.d_model, cfg.d_model, bias=cfg.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        # (B, T, C) -> (B, n_head, T, head_dim)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.c_proj(y)


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.c_fc = nn.Linear(cfg.d_model, cfg.d_ff, bias=cfg.bias)
        self.gelu = nn.GELU(approximate="tanh")
        self.c_proj = nn.Linear(cfg.d_ff, cfg.d_model, bias=cfg.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.gelu(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.d_model, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.d_model, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """GPT-2. `forward(idx)` returns logits of shape (B, T, vocab_size)."""

    def __init__(self, cfg: ModelConfig, checkpointing: str = "none", early_stop: bool = True):
        super().__init__()
        if checkpointing not in CHECKPOINTING_MODES:
            raise UsageError(f"checkpointing={checkpointing!r}: choose one of {', '.join(CHECKPOINTING_MODES)}")
        self.cfg = cfg
        self.checkpointing = checkpointing
        self.early_stop = early_stop
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.wpe = nn.Embedding(cfg.max_seq_len, cfg.d_model)
        self.h = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model, bias=cfg.bias)
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

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        _, T = idx.shape
        pos = torch.arange(T, device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        for block in self.h:
            if self.checkpointing == "full" and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False, early_stop=self.early_stop)
            else:
                x = block(x)
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
