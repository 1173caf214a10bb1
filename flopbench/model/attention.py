"""The attention core, softmax(QK^T / sqrt(d_h) [soft-capped, masked]) V, and which kernel runs it.

Two ways to compute it (`model.config.ATTENTION`, the `run --attention` choice):
- "sdpa": `F.scaled_dot_product_attention`, where torch picks its kernel (flash, memory-efficient, cuDNN,
  or the math fallback). Grouped-query attention (Ainslie et al. 2023) goes in with `enable_gqa=True`
  (torch >= 2.5): the kernel broadcasts each K/V head over its group of query heads. A soft cap between
  QK^T and the softmax (Gemma 2) is something no SDPA kernel takes, so that path is written out as two
  matmuls over the same square ("eager"), with the query heads grouped under their K/V head so the K/V
  are broadcast, never copied (`grouped`).
- "flex": FlexAttention (`torch.nn.attention.flex_attention`, torch >= 2.5) with a block mask: the
  kernel skips the blocks of 128 x 128 the causal mask or the sliding window leaves empty, so a
  windowed layer computes only its band (as torchtitan does); a soft cap is its `score_mod`. Compiled
  on a GPU (eager flex materializes the scores); torch 2.13 has no flex backward on the CPU.

Which kernel ran is read from what dispatched (`watch_kernels`), never guessed from the settings: each
SDPA call is paired with the fused kernel op it dispatched, and a call that dispatched none fell to the
math kernel (fp32 scores, B·H·T² memory per layer).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

#: The kernel names a row's `attention_kernel` is made of ("eager": the soft-cap path's written-out matmuls).
KERNELS = ("flash", "efficient", "cudnn", "math", "flex", "eager")

#: Kernels that compute every score of the T x T square even under a causal mask (no block skipped).
FULL_SQUARE_KERNELS = ("math", "eager")

#: The fused SDPA kernel ops (aten names, torch >= 2.5) and the kernel each is; on the CPU SDPA's
#: fused kernel is the CPU flash kernel.
SDPA_OPS = {
    "_scaled_dot_product_flash_attention": "flash",
    "_scaled_dot_product_flash_attention_for_cpu": "flash",
    "_scaled_dot_product_efficient_attention": "efficient",
    "_scaled_dot_product_cudnn_attention": "cudnn",
}

#: FlexAttention's block size (`torch.nn.attention.flex_attention._DEFAULT_SPARSE_BLOCK_SIZE`).
FLEX_BLOCK_SIZE = 128

#: Devices whose SDPA kernels the expansion rule consults (`torch.backends.cuda.can_use_*`).
KERNEL_RULE_DEVICES = ("cuda",)


def softcap(x: torch.Tensor, cap: float | None) -> torch.Tensor:
    """cap·tanh(x / cap): Gemma 2's soft capping of attention scores and logits (Gemma Team 2024, §2)."""
    return x if cap is None else torch.tanh(x / cap) * cap


def attention_mask(t_q: int, t_k: int, window: int | None, device) -> torch.Tensor | None:
    """The boolean mask (True = attend) of `t_q` queries, the last `t_q` of `t_k` positions, over `t_k` keys:
    causal, and within `window` positions (itself included) when given. None when plain causal attention
    (`is_causal`) or no mask at all (one query against every cached key) does the same."""
    if window is None or window >= t_k:
        return None
    q = torch.arange(t_k - t_q, t_k, device=device)[:, None]
    k = torch.arange(t_k, device=device)[None, :]
    return (k <= q) & (k > q - window)


def has_flex() -> bool:
    """True where this torch has FlexAttention (`torch.nn.attention.flex_attention`, torch >= 2.5)."""
    try:
        import torch.nn.attention.flex_attention  # noqa: F401
    except ImportError:
        return False
    return True


@functools.lru_cache(maxsize=16)
def flex_block_mask(t_q: int, t_k: int, window: int | None, device):
    """FlexAttention's block mask of `attention_mask` (causal, within `window` when given), the queries the
    last `t_q` of `t_k` positions: blocks of `FLEX_BLOCK_SIZE` with no allowed score are skipped. Built once
    per shape and device, then reused by every step (create_block_mask evaluates the mask over T x T)."""
    from torch.nn.attention.flex_attention import create_block_mask

    offset = t_k - t_q

    def mask_mod(b, h, q, k):
        allowed = k <= q + offset
        return allowed if window is None else allowed & (k > q + offset - window)

    return create_block_mask(mask_mod, None, None, t_q, t_k, device=device)


@functools.cache
def _flex(device_type: str):
    """flex_attention, compiled on a GPU (eager flex materializes the whole score matrix)."""
    from torch.nn.attention.flex_attention import flex_attention

    return flex_attention if device_type == "cpu" else torch.compile(flex_attention, dynamic=False)


def expand_kv_for_kernel(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor) -> bool:
    """True where SDPA would fall to the math kernel with grouped K/V heads (`enable_gqa`) but the
    memory-efficient kernel takes them expanded to the query heads: torch's own rules decide
    (`torch.backends.cuda.can_use_flash_attention` / `_efficient_` / `_cudnn_` on `SDPAParams`). A mask
    rules out the flash kernel, and an older torch's memory-efficient kernel takes no `enable_gqa`, so a
    sliding window on a GQA model would otherwise go to math; where the torch at hand's kernels take the
    grouped heads, nothing is expanded. Only GPU kernels have these rules (`KERNEL_RULE_DEVICES`). The
    rules read shapes, dtypes and the device, so the answer is worked out once per shape (`kv_heads_rule`,
    on contiguous stand-ins), a constant to torch.compile (no graph break)."""
    if q.device.type not in KERNEL_RULE_DEVICES or q.shape[1] == k.shape[1]:
        return False
    return kv_heads_rule(q.device.type, q.dtype, tuple(q.shape), tuple(k.shape), mask.dtype, tuple(mask.shape))


@torch._dynamo.assume_constant_result
@functools.cache
def kv_heads_rule(device: str, dtype: torch.dtype, q_shape: tuple, kv_shape: tuple, mask_dtype: torch.dtype,
                  mask_shape: tuple) -> bool:
    """`expand_kv_for_kernel` for tensors of these shapes and dtypes (empty ones are put to torch's rules)."""
    from torch.backends import cuda

    def params(kv_heads: int, gqa: bool):
        q = torch.empty(q_shape, dtype=dtype, device=device)
        kv = torch.empty((kv_shape[0], kv_heads, *kv_shape[2:]), dtype=dtype, device=device)
        return cuda.SDPAParams(q, kv, kv, torch.empty(mask_shape, dtype=mask_dtype, device=device), 0.0, False, gqa)

    grouped = params(kv_shape[1], True)
    if any(rule(grouped) for rule in (cuda.can_use_flash_attention, cuda.can_use_efficient_attention,
                                      cuda.can_use_cudnn_attention)):
        return False
    return cuda.can_use_efficient_attention(params(q_shape[1], False))


def repeat_kv(t: torch.Tensor, groups: int) -> torch.Tensor:
    """(B, H_kv, T, d_h) -> (B, H_kv·groups, T, d_h): each K/V head repeated for its group of query heads,
    as one expand and one reshape (the copy the memory-efficient kernel needs; `expand_kv_for_kernel`)."""
    B, H_kv, T, d = t.shape
    return t[:, :, None].expand(B, H_kv, groups, T, d).reshape(B, H_kv * groups, T, d)


def grouped(q: torch.Tensor, groups: int) -> torch.Tensor:
    """q (B, H, T, d_h) viewed as (B, H_kv, groups, T, d_h): query head h = g·groups + i is in group g, the
    group K/V head g serves (as `repeat_interleave` on K/V pairs them), so K/V (B, H_kv, 1, T, d_h)
    broadcast over the groups without a copy."""
    B, H, T, d = q.shape
    return q.view(B, H // groups, groups, T, d)


def attention_core(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask, causal: bool,
                   cap: float | None, groups: int = 1) -> torch.Tensor:
    """softmax(QK^T / sqrt(head_dim) [softcapped, masked]) V over (B, heads, T, head_dim) tensors: the
    "attention core" that selective checkpointing recomputes (Korthikanti et al. 2022, §4.1).

    `mask`: None (causal when `causal`, else every key), a boolean mask (`attention_mask`), or a flex
    `BlockMask` (`flex_block_mask`: FlexAttention runs, the soft cap as its score_mod). Without a soft
    cap it is SDPA (the GPU picks its kernel; K/V heads expanded where only that keeps it off the math
    kernel, `expand_kv_for_kernel`). With one it is written out: two matmuls over the same (T, keys)
    square, the same FLOPs, the query heads grouped under their K/V head (`grouped`). `groups`: query
    heads per K/V head, known from the config (under torch.jit.trace a comparison of shapes is a tensor)."""
    if mask is not None and not isinstance(mask, torch.Tensor):  # a flex BlockMask
        def score_mod(score, b, h, q_idx, k_idx):
            return softcap(score, cap)

        return _flex(q.device.type)(q, k, v, score_mod=score_mod if cap else None, block_mask=mask,
                                    enable_gqa=groups > 1)
    if cap is None:
        if groups > 1 and mask is not None and expand_kv_for_kernel(q, k, mask):
            k, v, groups = repeat_kv(k, groups), repeat_kv(v, groups), 1
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and mask is None,
                                              enable_gqa=groups > 1)
    B, H, T_q, d = q.shape
    qg = grouped(q, groups)  # (B, H_kv, groups, T, d); K/V (B, H_kv, 1, keys, d) broadcast over groups
    k, v = k[:, :, None], v[:, :, None]
    scores = softcap(qg @ k.transpose(-2, -1) * d ** -0.5, cap)
    if mask is None and causal:
        mask = torch.ones(T_q, k.shape[-2], dtype=torch.bool, device=q.device).tril(k.shape[-2] - T_q)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    y = torch.softmax(scores.float(), dim=-1).to(q.dtype) @ v
    return y.view(B, H, T_q, d)


class KernelLog:
    """The attention kernels one counted step dispatched: per SDPA forward call, (kernel, masked)."""

    def __init__(self):
        self.calls: list[tuple[str, bool]] = []
        self.fused: list[str] = []

    @property
    def kernel(self) -> str:
        """The kernels seen, "+"-joined in `KERNELS` order ("eager" when no SDPA call ran: the soft-cap
        path's matmuls)."""
        seen = {kernel for kernel, _ in self.calls}
        return "+".join(k for k in KERNELS if k in seen) or "eager"

    @property
    def skipping_calls(self) -> tuple[int, int]:
        """(calls whose kernel skips the blocks above the diagonal, all attention calls): a fused SDPA
        kernel under `is_causal`. A masked call, the math kernel and the written-out path compute the
        whole square."""
        skipping = sum(1 for kernel, masked in self.calls if kernel not in FULL_SQUARE_KERNELS and not masked)
        return skipping, len(self.calls)


class _FusedOps(TorchDispatchMode):
    def __init__(self, log: KernelLog):
        super().__init__()
        self.log = log

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._overloadpacket.__name__
        if name in SDPA_OPS:
            self.log.fused.append(SDPA_OPS[name])
        return func(*args, **(kwargs or {}))


class _SdpaCalls(TorchFunctionMode):
    def __init__(self, log: KernelLog):
        super().__init__()
        self.log = log

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is not F.scaled_dot_product_attention:
            return func(*args, **kwargs)
        before = len(self.log.fused)
        out = func(*args, **kwargs)
        kernel = self.log.fused[-1] if len(self.log.fused) > before else "math"
        mask = kwargs.get("attn_mask", args[3] if len(args) > 3 else None)
        self.log.calls.append((kernel, mask is not None))
        return out


class watch_kernels:
    """`with watch_kernels() as log:` records the attention kernels dispatched inside (`KernelLog`): each
    `F.scaled_dot_product_attention` call and the fused kernel op it dispatched (`SDPA_OPS`), or "math"
    when it dispatched none (torch's math kernel decomposes into bmm and softmax). FlexAttention cannot
    run under a Python dispatch mode in torch 2.13, so a model with flex is not watched: `run` labels
    its rows "flex" from the model, whose core has no other path."""

    def __enter__(self) -> KernelLog:
        self.log = KernelLog()
        self.modes = (_SdpaCalls(self.log), _FusedOps(self.log))
        for mode in self.modes:
            mode.__enter__()
        return self.log

    def __exit__(self, *exc) -> None:
        for mode in reversed(self.modes):
            mode.__exit__(*exc)
