"""The decoder-only model flopbench measures: GPT-2 (Radford et al. 2019), written after nanoGPT's model.py,
with every option of `ModelConfig` (Llama, Mistral, Mixtral, Qwen, Gemma, Phi-3, OLMo 2).

Blocks with norms before, around or after attention and MLP; learned position embeddings or rotary
ones (RoPE, Su et al. 2021, in the "rotate half" layout of the Hugging Face Llama code); a GELU MLP (4x in
GPT-2), a SwiGLU or GeGLU MLP (Shazeer 2020) or a mixture of experts (`MoE`); LayerNorm or RMSNorm,
QK-norm; causal attention, a band mask in sliding-window layers, a soft cap on the scores
(`model.attention`: SDPA or FlexAttention, and which kernel runs); fewer key/value heads than query
heads for grouped-query attention (Ainslie et al. 2023); an LM head tied to the token embedding or not.
Parameter counts match the published checkpoints and the transformers implementation of each family
(tests).

Activation checkpointing (`checkpointing="full"`) wraps every block in torch's non-reentrant
`checkpoint`. Its early stop is set explicitly because it changes the hardware FLOPs: with early stop
(torch's default) the recompute ends once every tensor backward needs is rebuilt, so a pre-norm dense
block's last matmul (the MLP down-projection) is not recomputed; without it the whole block runs again
(`flops.analytic.recomputed_with_early_stop`). Early stop off is checkpoint's `early_stop=False` argument
where torch has it (2.9+; it compiles), else the `set_checkpoint_early_stop(False)` context manager, which
dynamo skips (`checkpoint_early_stop`). Selective checkpointing (`checkpointing="selective"`, Korthikanti
et al. 2022, §4.1) checkpoints the attention core and the output projection of every block with an op
policy (`save_projections`, through `create_selective_checkpoint_contexts`, as torchtitan does): the
projection's output is kept, everything else recomputed. The projection needs the core's output, so QK^T,
softmax and AV are re-run whatever the kernel and the early stop, and the policy compiles as one graph.

Experts (`MoE`) route on the device and run through `torch._grouped_mm` where it runs (`Experts.impl`).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import (CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts,
                                    set_checkpoint_early_stop)

from ..errors import UsageError
from .attention import attention_core, attention_mask, flex_block_mask, has_flex, softcap
from .config import ATTENTION, CHECKPOINTING, ModelConfig

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

    def forward(self, seq_len: int, start: int | torch.Tensor = 0) -> Rope:
        if isinstance(start, torch.Tensor):  # static decoding (`KVCache`): gather, no host read of the position
            index = start + torch.arange(seq_len, device=start.device)
            return self.cos[index], self.sin[index]
        return self.cos[start:start + seq_len], self.sin[start:start + seq_len]


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, rope: Rope) -> torch.Tensor:
    """Rotate x (B, heads, T, head_dim): x·cos + rotate_half(x)·sin, elementwise (no matmul)."""
    cos, sin = (t.to(x.dtype) for t in rope)
    return x * cos + _rotate_half(x) * sin


def _norm(cfg: ModelConfig, width: int | None = None) -> nn.Module:
    width = width or cfg.d_model
    if cfg.norm == "rmsnorm":
        return nn.RMSNorm(width, eps=1e-5)  # weight only
    return nn.LayerNorm(width, bias=cfg.bias)


class KVCache:
    """A static cache of every layer's keys and values for generation, preallocated to `max_len` positions
    (as Hugging Face's StaticCache and gpt-fast do): decoding never reallocates. K/V are stored at n_kv_head
    heads (grouped-query attention shrinks the cache, Ainslie et al. 2023).

    Two ways to use it, chosen by the type of `pos` given to `GPT.forward`:
    - `pos` an int: a step at positions pos .. pos + T - 1 attends to the pos + T keys written so far (the
      last `sliding_window` of them in a sliding layer of a decode step): exactly the model's context, the
      FLOPs `flops.inference` counts;
    - `pos` a 0-d tensor (static decoding, gpt-fast's `generate.py`): the step writes its K/V in place
      (`index_copy_`) and attends over all `max_len` positions with a position mask (`mask`), so every
      decode step has the same shapes and one CUDA graph serves them all. The masked keys are work the
      kernel does and bytes it reads (`flops.inference.static_decode_flops`, `static_decode_bytes`).

    K and V are marked as static addresses (`torch._dynamo.mark_static_address`, as transformers'
    StaticCache does): under CUDA graphs the step reads and writes them in place instead of copying the
    cache into the graph's own input buffer on every replay."""

    def __init__(self, cfg: ModelConfig, batch_size: int, max_len: int, device: str | torch.device,
                 dtype: torch.dtype):
        shape = (cfg.n_layer, batch_size, cfg.kv_heads, max_len, cfg.head_dim)
        self.max_len = max_len
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        for t in (self.k, self.v):
            torch._dynamo.mark_static_address(t)

    def update(self, layer: int, pos: int | torch.Tensor, k: torch.Tensor,
               v: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Write the keys and values of positions pos .. pos + T - 1; return every key and value up to them
        (`pos` an int), or the whole cache (`pos` a tensor: static decoding, masked by `mask`)."""
        if isinstance(pos, torch.Tensor):
            index = pos + torch.arange(k.shape[2], device=pos.device)
            self.k[layer].index_copy_(2, index, k)
            self.v[layer].index_copy_(2, index, v)
            return self.k[layer], self.v[layer]
        end = pos + k.shape[2]
        self.k[layer, :, :, pos:end] = k
        self.v[layer, :, :, pos:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def mask(self, pos: torch.Tensor, t_q: int, window: int | None) -> torch.Tensor:
        """The boolean mask (True = attend) of `t_q` queries at positions pos .. pos + t_q - 1 over all
        `max_len` cached positions: a key after its query is masked (not written yet, or left from an earlier
        generation), and in a sliding layer a key `window` or more positions back (gpt-fast's causal mask
        row at `input_pos`, with Mistral's window)."""
        q = (pos + torch.arange(t_q, device=pos.device))[:, None]
        k = torch.arange(self.max_len, device=pos.device)[None, :]
        keep = k <= q
        return keep if window is None else keep & (k > q - window)


#: The matmuls whose outputs selective checkpointing keeps: the linear layers (`nn.Linear` dispatches `mm`,
#: or `addmm` with a bias; a float8 layer, `model.fp8`, `mm` on float8 tensors eagerly and `_scaled_mm` once
#: compiled, which torchtitan's save list keeps too). QK^T and AV are `bmm`s or one fused SDPA kernel.
_SAVED_MATMULS = (torch.ops.aten.mm.default, torch.ops.aten.addmm.default,
                  *((torch.ops.aten._scaled_mm.default,) if hasattr(torch.ops.aten, "_scaled_mm") else ()))


def save_projections(ctx, op, *args, **kwargs) -> CheckpointPolicy:
    """Selective checkpointing's op policy (`create_selective_checkpoint_contexts`): keep what the linear
    layers compute, recompute everything else in the checkpointed region — there, the attention core
    (QK^T, softmax, AV; Korthikanti et al. 2022, §4.1) — as torchtitan's op-level policy does (its
    `_save_list`, torchtitan/distributed/activation_checkpoint.py). MUST, not PREFER: torch.compile's
    partitioner may not override it, so a compiled step does the work the count says."""
    return CheckpointPolicy.MUST_SAVE if op in _SAVED_MATMULS else CheckpointPolicy.MUST_RECOMPUTE


#: `checkpoint(..., context_fn=)` for selective checkpointing: a fresh pair of policy contexts per call.
SELECTIVE_RECOMPUTE = functools.partial(create_selective_checkpoint_contexts, save_projections)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_type: str = "full"):
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = cfg.n_head, cfg.kv_heads, cfg.head_dim
        self.groups = cfg.n_head // cfg.kv_heads
        self.window = cfg.sliding_window if layer_type == "sliding" else None
        self.cap = cfg.attn_softcap
        self.selective = False  # recompute the attention core in backward (set by GPT)
        # Q (n_head·head_dim wide), K and V (kv_dim wide each) in one matmul.
        self.c_attn = nn.Linear(cfg.d_model, cfg.q_dim + 2 * cfg.kv_dim, bias=cfg.bias or cfg.qkv_bias)
        self.c_proj = nn.Linear(cfg.q_dim, cfg.d_model, bias=cfg.bias)
        # QK-norm: RMSNorm of each head's q and k (Qwen3, Gemma 3) or of the whole projections (OLMo 2).
        widths = {"head": (cfg.head_dim, cfg.head_dim), "proj": (cfg.q_dim, cfg.kv_dim)}.get(cfg.qk_norm)
        self.qk_norm = cfg.qk_norm
        self.q_norm, self.k_norm = (nn.RMSNorm(w, eps=1e-6) for w in widths) if widths else (None, None)

    def forward(self, x: torch.Tensor, rope: Rope | None = None, cache: KVCache | None = None, layer: int = 0,
                pos: int = 0, window_mask: torch.Tensor | None = None) -> torch.Tensor:
        """`window_mask`: this layer's mask for the step (`GPT.step_masks`: the sliding-window mask in a sliding
        layer, a flex block mask under `attention="flex"`), built once per forward by `GPT.forward`."""
        B, T, _ = x.shape
        q_dim, kv_dim = self.n_head * self.head_dim, self.n_kv_head * self.head_dim
        q, k, v = self.c_attn(x).split((q_dim, kv_dim, kv_dim), dim=2)
        if self.qk_norm == "proj":
            q, k = self.q_norm(q), self.k_norm(k)
        # (B, T, heads * head_dim) -> (B, heads, T, head_dim)
        q = q.view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        k, v = (t.view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2) for t in (k, v))
        if self.qk_norm == "head":
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = apply_rope(q, rope), apply_rope(k, rope)
        static = cache is not None and isinstance(pos, torch.Tensor)  # the whole cache, masked (KVCache)
        if cache is not None:  # generation: a prompt at pos 0 (causal), then one token per step (all keys)
            k, v = cache.update(layer, pos, k.to(cache.k.dtype), v.to(cache.v.dtype))
            q = q.to(cache.k.dtype)
            if T == 1 and self.window is not None and not static:  # a decode step sees the last `window` keys
                k, v = k[:, :, -self.window:], v[:, :, -self.window:]
        # `cache is None` first: under torch.jit.trace T is a tensor
        causal = not static and (cache is None or bool(T > 1))
        mask = window_mask if causal else None
        if static:
            mask = cache.mask(pos, T, self.window)
        if self.selective and torch.is_grad_enabled():
            return checkpoint(self.core_and_projection, q, k, v, mask, causal, use_reentrant=False,
                              context_fn=SELECTIVE_RECOMPUTE)
        return self.core_and_projection(q, k, v, mask, causal)

    def core_and_projection(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                            causal: bool) -> torch.Tensor:
        """`attention_core`, then the output projection: the region selective checkpointing wraps."""
        B, _, T, _ = q.shape
        y = attention_core(q, k, v, mask, causal, self.cap, self.groups)
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, -1))


class MLP(nn.Module):
    """GPT-2's MLP: d -> width, GELU (tanh approximation), width -> d."""

    def __init__(self, cfg: ModelConfig, width: int | None = None):
        super().__init__()
        width = width or cfg.d_ff
        self.c_fc = nn.Linear(cfg.d_model, width, bias=cfg.bias)
        self.gelu = nn.GELU(approximate="tanh")
        self.c_proj = nn.Linear(width, cfg.d_model, bias=cfg.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.gelu(self.c_fc(x)))


def gate_activation(cfg: ModelConfig):
    """The activation of a gated MLP's gate: SiLU for SwiGLU, GELU (tanh approximation) for GeGLU (and for
    the experts of a GELU model)."""
    return F.silu if cfg.mlp == "swiglu" else functools.partial(F.gelu, approximate="tanh")


class GatedMLP(nn.Module):
    """Llama's SwiGLU MLP (Shazeer 2020, eq. 6 with Swish_1 = SiLU) or Gemma's GeGLU (eq. 5, GELU-tanh
    gate): down(act(gate(x)) * up(x)), three matrices."""

    def __init__(self, cfg: ModelConfig, width: int | None = None):
        super().__init__()
        width = width or cfg.d_ff
        self.act = gate_activation(cfg)
        self.c_gate = nn.Linear(cfg.d_model, width, bias=cfg.bias)
        self.c_fc = nn.Linear(cfg.d_model, width, bias=cfg.bias)  # "up"
        self.c_proj = nn.Linear(width, cfg.d_model, bias=cfg.bias)  # "down"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.act(self.c_gate(x)) * self.c_fc(x))


def _mlp(cfg: ModelConfig, width: int | None = None) -> nn.Module:
    return MLP(cfg, width) if cfg.mlp == "gelu" else GatedMLP(cfg, width)


def even_split(slots: int, n_experts: int) -> list[int]:
    """`slots` token-expert assignments spread as evenly as they go over `n_experts` experts."""
    share, extra = divmod(slots, n_experts)
    return [share + (e < extra) for e in range(n_experts)]


#: (device type, dtype) -> whether `torch._grouped_mm` runs there, forward and backward (`grouped_mm_runs`).
_GROUPED_MM_RUNS: dict[tuple[str, torch.dtype], bool] = {}


def grouped_mm_runs(device_type: str, dtype: torch.dtype) -> bool:
    """Whether `torch._grouped_mm` runs forward and backward on `device_type` in `dtype`, found by trying it
    once on tiny tensors and remembered: by capability, not by version. (torch 2.5-2.7 have no such op;
    2.8 has it on Hopper GPUs only; 2.9+ on GPUs from SM80 and on the CPU in fp32 / bf16 / fp16; its meta
    kernel, which also shapes the fake tensors of torch.compile, takes bf16 only.) Inside a compiled
    region nothing is tried: a pair not tried before answers False. The try runs outside any dispatch
    mode (a FLOP counter does not see it), with gradients on and autocast off."""
    key = (device_type, dtype)
    if key not in _GROUPED_MM_RUNS:
        if torch.compiler.is_compiling() or not hasattr(torch, "_grouped_mm"):
            return False
        from torch.utils._python_dispatch import _disable_current_modes

        no_autocast = contextlib.nullcontext() if device_type == "meta" else torch.autocast(device_type, enabled=False)
        with _disable_current_modes(), torch.inference_mode(False), torch.enable_grad(), no_autocast:
            try:
                a = torch.ones(4, 8, dtype=dtype, device=device_type, requires_grad=True)
                b = torch.ones(2, 8, 8, dtype=dtype, device=device_type, requires_grad=True)
                out = torch._grouped_mm(a, b, offs=torch.tensor([1, 4], dtype=torch.int32, device=device_type))
                out.backward(torch.ones_like(out))
                _GROUPED_MM_RUNS[key] = True
            except (RuntimeError, NotImplementedError):  # no kernel for this device, dtype or GPU
                _GROUPED_MM_RUNS[key] = False
    return _GROUPED_MM_RUNS[key]


def compute_dtype(device_type: str, weight: torch.Tensor) -> torch.dtype:
    """The dtype matmuls run in on `device_type` now: autocast's where it is on, else the weights'."""
    return torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else weight.dtype


class Experts(nn.Module):
    """`n_experts` MLPs of width d_ff_expert (GELU, or SwiGLU / GeGLU as `cfg.mlp` says), their weights
    stacked in tensors of n_experts x d_in x d_out, as torchtitan's GroupedExperts keeps them. Tokens sorted
    by expert run through one `torch._grouped_mm` per matrix (`run_grouped`, where `impl` says it runs),
    else one matmul per expert (`run_one`); on the meta device runs of experts with equal shares go through
    one bmm (`run_group`). Either way a token costs 2·d_in·d_out per matrix of its expert, the FLOPs of
    separate `nn.Linear`s."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        E, d, f = cfg.n_experts, cfg.d_model, cfg.d_ff_expert
        self.names = ("gate", "up", "down") if cfg.mlp != "gelu" else ("up", "down")
        self.act = gate_activation(cfg)
        self.widths = (d, f)
        for name in self.names:
            d_in, d_out = (f, d) if name == "down" else (d, f)
            self.register_parameter(f"{name}_weight", nn.Parameter(torch.empty(E, d_in, d_out)))
            self.register_parameter(f"{name}_bias", nn.Parameter(torch.empty(E, d_out)) if cfg.bias else None)
        for device_type in {self.up_weight.device.type, "meta"}:  # tried once, before any compile
            for dtype in (torch.bfloat16, torch.float16, torch.float32):
                grouped_mm_runs(device_type, dtype)

    def impl(self, device_type: str, dtype: torch.dtype, compiling: bool = False) -> str:
        """"grouped_mm" where `torch._grouped_mm` runs these experts on `device_type` in `dtype`, else
        "loop". The kernel needs rows of a multiple of 16 bytes (d_model and d_ff_expert), and under
        torch.compile a dtype its meta kernel takes (bf16)."""
        aligned = all(width * dtype.itemsize % 16 == 0 for width in self.widths)
        runs = grouped_mm_runs(device_type, dtype) and (not compiling or grouped_mm_runs("meta", dtype))
        return "grouped_mm" if aligned and runs else "loop"

    def _mlp(self, x: torch.Tensor, linear) -> torch.Tensor:
        if "gate" in self.names:
            return linear("down", self.act(linear("gate", x)) * linear("up", x))
        return linear("down", self.act(linear("up", x)))

    def run_grouped(self, x: torch.Tensor, offsets: torch.Tensor, expert: torch.Tensor,
                    dtype: torch.dtype) -> torch.Tensor:
        """Every expert on its rows of x (S, d), sorted by expert: rows offsets[e - 1] .. offsets[e] - 1
        (int32, on the device) go through expert e (`expert`: each row's expert, for the biases), in
        `dtype`. One `torch._grouped_mm` per matrix, as torchtitan (models/moe) and transformers 5
        (integrations/moe.py) run experts: no host sync, no per-expert launch."""
        def linear(name, h):
            y = torch._grouped_mm(h, getattr(self, f"{name}_weight").to(dtype), offs=offsets)
            bias = getattr(self, f"{name}_bias")
            return y if bias is None else y + bias.to(dtype)[expert]

        return self._mlp(x.to(dtype), linear)

    def run_group(self, x: torch.Tensor, first: int, last: int) -> torch.Tensor:
        """Experts first .. last - 1 on x (last - first, n, d): slice i of x through expert first + i."""
        def linear(name, h):
            y = torch.bmm(h, getattr(self, f"{name}_weight")[first:last])
            bias = getattr(self, f"{name}_bias")
            return y if bias is None else y + bias[first:last, None]

        return self._mlp(x, linear)

    def unbound(self) -> dict[str, tuple]:
        """Each matrix (and bias) split into one tensor per expert, once per forward: backward then stacks the
        experts' gradients in one op (slicing one expert out at a time would give each a full-size gradient)."""
        return {name: tuple(None if t is None else t.unbind(0)
                            for t in (getattr(self, f"{name}_weight"), getattr(self, f"{name}_bias")))
                for name in self.names}

    def run_one(self, x: torch.Tensor, expert: int, parts: dict[str, tuple]) -> torch.Tensor:
        """Expert `expert` on x (n, d), with the matrices of `unbound()`."""
        def linear(name, h):
            weights, biases = parts[name]
            y = h @ weights[expert]
            return y if biases is None else y + biases[expert]

        return self._mlp(x, linear)


def experts_impl(model: nn.Module, device_type: str, dtype: torch.dtype, compiled: bool = False) -> str | None:
    """How `model`'s experts run on `device_type` with matmuls in `dtype` ("grouped_mm" or "loop",
    `Experts.impl`), or None for a model without experts."""
    experts = next((m for m in model.modules() if isinstance(m, Experts)), None)
    return None if experts is None else experts.impl(device_type, dtype, compiled)


class MoE(nn.Module):
    """A mixture-of-experts MLP (Shazeer et al. 2017; Fedus et al. 2022; Jiang et al. 2024, "Mixtral"):
    a router (d -> n_experts, no bias) scores each token, softmax, the top_k experts' weights renormalized
    to sum to 1; each expert is an MLP of width d_ff_expert (`Experts`); shared experts (one MLP of width
    n_shared_experts·d_ff_shared, DeepSeekMoE) see every token and run first.

    Routing stays on the device: the token-expert pairs are sorted by expert, the offsets of each expert's
    rows are the cumulative counts of the sorted ids (`searchsorted`; torchtitan and transformers take the
    cumsum of a histogram, the same numbers), and each matrix of every expert is one `torch._grouped_mm`
    (`Experts.run_grouped`). No value goes to the host, so a step neither waits for the device nor breaks a
    compiled graph. Each output row is scaled by its routing weight and the top_k rows of a token summed
    (in a fixed order: deterministic, unlike an atomic index_add). Where the grouped matmul does not run
    (`Experts.impl`: an older torch, a GPU or dtype without the kernel, widths not a multiple of 16
    bytes) the experts run as a loop, one expert's contiguous slice at a time, with one host sync per
    layer (`bincount().tolist()`). FLOPs are 2·tokens·top_k·(matrices)·d·d_ff_expert whatever the routing
    (`flops.counter.grouped_mm_flops` counts the grouped matmul, which torch has no formula for). On the meta
    device tokens have no values to route by, so the assignments are spread evenly (`even_split`) and the
    experts that take the same number of tokens run as one bmm: the same total, with no data read, in two
    calls instead of n_experts (a 128-expert model counts in about a second)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.top_k, self.n_experts = cfg.top_k, cfg.n_experts
        self.router = nn.Linear(cfg.d_model, cfg.n_experts, bias=False)
        self.shared = _mlp(cfg, cfg.n_shared_experts * cfg.d_ff_shared) if cfg.n_shared_experts else None
        self.experts = Experts(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        probs = torch.softmax(self.router(flat).float(), dim=-1)
        weight, expert = probs.topk(self.top_k, dim=-1)
        weight = weight / weight.sum(dim=-1, keepdim=True)
        # the shared experts first: under checkpointing's early stop the routed ones after them save
        # tensors, so the shared matmuls are recomputed too (`flops.analytic.recomputed_with_early_stop`)
        shared = self.shared(flat) if self.shared is not None else None
        sorted_expert, order = expert.flatten().sort(stable=True)  # pairs (token, k) sorted by expert
        weight = weight.flatten()[order]
        if flat.is_meta:
            routed = self._even_split(flat, order // self.top_k, weight)
        else:
            dtype = compute_dtype(flat.device.type, self.experts.up_weight)
            grouped = self.experts.impl(flat.device.type, dtype, torch.compiler.is_compiling()) == "grouped_mm"
            run = self._grouped if grouped else self._loop
            routed = run(flat, sorted_expert, order, weight, dtype)
        out = routed if shared is None else shared + routed.to(shared.dtype)
        return out.view(*x.shape[:-1], -1)

    def _grouped(self, flat, sorted_expert, order, weight, dtype) -> torch.Tensor:
        """Every expert in one `torch._grouped_mm` per matrix; expert e's rows end at offsets[e], the count
        of sorted ids <= e. The rows go back to (token, k) order and each token's top_k are summed."""
        ends = torch.arange(1, self.n_experts + 1, device=flat.device)
        offsets = torch.searchsorted(sorted_expert, ends, out_int32=True)
        y = self.experts.run_grouped(flat.index_select(0, order // self.top_k), offsets, sorted_expert, dtype)
        y = (y * weight[:, None].to(y.dtype))[order.argsort()]
        return y.view(flat.shape[0], self.top_k, -1).sum(dim=1)

    def _loop(self, flat, sorted_expert, order, weight, dtype) -> torch.Tensor:
        """The experts one at a time, each on its contiguous slice of the sorted pairs (index_select, then
        index_add of its output times the routing weight): one host sync to read the counts."""
        counts = torch.bincount(sorted_expert, minlength=self.n_experts).tolist()
        token = order // self.top_k
        parts = self.experts.unbound()
        routed, start = torch.zeros(flat.shape, dtype=dtype, device=flat.device), 0
        for e, n in enumerate(counts):
            if n:
                rows = token[start:start + n]
                y = self.experts.run_one(flat.index_select(0, rows), e, parts)
                routed = routed.index_add(0, rows, (y * weight[start:start + n, None]).to(dtype))
                start += n
        return routed

    def _even_split(self, flat, token, weight) -> torch.Tensor:
        """On meta: the experts with equal shares of the even split are contiguous, one bmm per share."""
        counts = even_split(int(flat.shape[0]) * self.top_k, self.n_experts)  # int: a traced shape is a tensor
        routed, start, first = torch.zeros_like(flat), 0, 0
        weight = weight.to(flat.dtype)
        for n in sorted(set(counts), reverse=True):
            last = first + counts.count(n)
            if n:
                rows = token[start:start + n * (last - first)]
                y = self.experts.run_group(flat.index_select(0, rows).view(last - first, n, -1), first, last)
                routed = routed.index_add(0, rows, y.reshape(-1, y.shape[-1]) * weight[start:start + len(rows), None])
                start += len(rows)
            first = last
        return routed


class Block(nn.Module):
    """One layer: attention and MLP (or mixture of experts), each in a residual branch, with norms before
    them ("pre"), before and after them ("sandwich") or after them ("post"): `NORM_POSITIONS`."""

    def __init__(self, cfg: ModelConfig, layer: int = 0):
        super().__init__()
        self.position = cfg.norm_position
        self.ln_1 = _norm(cfg) if cfg.norm_position != "post" else None
        self.attn = CausalSelfAttention(cfg, cfg.layer_type(layer))
        self.ln_2 = _norm(cfg) if cfg.norm_position != "post" else None
        self.mlp = MoE(cfg) if cfg.layer_is_moe(layer) else _mlp(cfg)
        after = cfg.norm_position in ("sandwich", "post")
        self.ln_attn_out, self.ln_mlp_out = (_norm(cfg), _norm(cfg)) if after else (None, None)

    def forward(self, x: torch.Tensor, rope: Rope | None = None, cache: KVCache | None = None, layer: int = 0,
                pos: int = 0, window_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + normed(self.ln_attn_out, self.attn(normed(self.ln_1, x), rope, cache, layer, pos, window_mask))
        return x + normed(self.ln_mlp_out, self.mlp(normed(self.ln_2, x)))


def normed(norm: nn.Module | None, x: torch.Tensor) -> torch.Tensor:
    """norm(x), or x where the block has no norm at that place (`NORM_POSITIONS`)."""
    return x if norm is None else norm(x)


class GPT(nn.Module):
    """GPT-2, or any model `ModelConfig` describes. `forward(idx)` returns logits (B, T, vocab_size).

    Generation: `forward(idx, cache=KVCache(...), pos=p, last_only=True)` runs the tokens `idx` at positions
    p, p + 1, ... against the cache and returns the logits of the last position only (B, 1, vocab_size),
    as `generate` does: a prompt at pos 0 (prefill), then one token per step (decode). `p` an int attends to
    the keys written so far; `p` a 0-d tensor decodes statically over the whole cache (`KVCache`)."""

    def __init__(self, cfg: ModelConfig, checkpointing: str = "none", early_stop: bool = True,
                 attention: str = "sdpa"):
        super().__init__()
        if checkpointing not in CHECKPOINTING:
            raise UsageError(f"checkpointing={checkpointing!r}: choose one of {', '.join(CHECKPOINTING)}")
        if attention not in ATTENTION or (attention == "flex" and not has_flex()):
            allowed = ATTENTION if has_flex() else ("sdpa",)
            raise UsageError(f"attention={attention!r}: choose one of {', '.join(allowed)} (flex needs torch >= 2.5)")
        self.attention = attention
        self.cfg = cfg
        self.early_stop = early_stop
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.wpe = nn.Embedding(cfg.max_seq_len, cfg.d_model) if cfg.positions == "learned" else None
        self.rope = RotaryEmbedding(cfg) if cfg.positions == "rope" else None
        self.h = nn.ModuleList(Block(cfg, layer) for layer in range(cfg.n_layer))
        self.ln_f = _norm(cfg)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.wte.weight
        self.checkpointing = checkpointing
        if not any(p.is_meta for p in self.parameters()):
            self._init_weights()

    @property
    def checkpointing(self) -> str:
        return self._checkpointing

    @checkpointing.setter
    def checkpointing(self, mode: str) -> None:
        """"none", "full" (every block) or "selective" (the attention core of every block)."""
        self._checkpointing = mode
        for block in self.h:
            block.attn.selective = mode == "selective"

    @torch.no_grad()
    def _init_weights(self) -> None:
        """GPT-2's init: N(0, 0.02), residual projections scaled by 1/sqrt(2 n_layer), zero biases."""
        for name, param in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(param)
            elif param.dim() >= 2:  # matrices, and the experts' stacked matrices
                residual = name.endswith(("c_proj.weight", "down_weight"))
                std = 0.02 / math.sqrt(2 * self.cfg.n_layer) if residual else 0.02
                nn.init.normal_(param, mean=0.0, std=std)

    def step_masks(self, T: int, pos: int, device) -> tuple:
        """The masks of one step's (full, sliding) layers, built once per forward, not layer by layer. SDPA:
        none for a full layer (`is_causal`), the T x T boolean band of `attention_mask` for a sliding one
        (None when the window covers every key). Flex: a block mask for each (`flex_block_mask`)."""
        window = self.cfg.sliding_window if "sliding" in self.cfg.layer_types else None
        if self.attention == "flex":
            return (flex_block_mask(T, pos + T, None, device),
                    flex_block_mask(T, pos + T, window, device) if window else None)
        return None, attention_mask(T, pos + T, window, device) if window else None

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None, pos: int | torch.Tensor = 0,
                last_only: bool = False) -> torch.Tensor:
        _, T = idx.shape
        x = self.wte(idx)
        if self.cfg.embed_scale:  # Gemma: embeddings times sqrt(d_model), in the activations' dtype
            x = x * torch.tensor(self.cfg.d_model ** 0.5, dtype=x.dtype)
        static = cache is not None and isinstance(pos, torch.Tensor)  # static decoding: `KVCache`
        if self.wpe is not None:
            x = x + self.wpe(pos + torch.arange(T, device=idx.device) if static
                             else torch.arange(pos, pos + T, device=idx.device))
        rope = self.rope(T, pos) if self.rope is not None else None
        # the masks of this step, built once for every layer (a static decode step's come from the cache)
        prompt = (cache is None or bool(T > 1)) and not static
        masks = self.step_masks(T, pos, idx.device) if prompt else (None, None)
        if cache is not None:
            for layer, block in enumerate(self.h):
                x = block(x, rope, cache, layer, pos, window_mask=masks[block.attn.window is not None])
            return softcap(self.lm_head(self.ln_f(x[:, -1:] if last_only else x)), self.cfg.final_softcap)
        for block in self.h:
            if self.checkpointing == "full" and torch.is_grad_enabled():
                x = checkpoint_early_stop(block, x, rope, early_stop=self.early_stop,
                                          window_mask=masks[block.attn.window is not None])
            else:
                x = block(x, rope, window_mask=masks[block.attn.window is not None])
        return softcap(self.lm_head(self.ln_f(x)), self.cfg.final_softcap)


#: torch >= 2.9 takes `checkpoint(..., early_stop=)`; older ones only the context manager, which dynamo skips
#: (a graph break in every block).
EARLY_STOP_ARGUMENT = "early_stop" in inspect.signature(checkpoint).parameters


def checkpoint_early_stop(function, *args, early_stop: bool = True, **kwargs):
    """torch's non-reentrant `checkpoint(function, *args, **kwargs)` with its early stop on or off: as the
    `early_stop` argument where torch has it (it compiles), else through `set_checkpoint_early_stop`
    (eager only: under torch.compile that context breaks the graph)."""
    if early_stop:
        return checkpoint(function, *args, use_reentrant=False, **kwargs)
    if EARLY_STOP_ARGUMENT:
        return checkpoint(function, *args, use_reentrant=False, early_stop=False, **kwargs)
    with set_checkpoint_early_stop(False):
        return checkpoint(function, *args, use_reentrant=False, **kwargs)


def build_model(
    cfg: ModelConfig,
    device: str | torch.device = "cpu",
    checkpointing: str = "none",
    early_stop: bool = True,
    dtype: torch.dtype | None = None,
    attention: str = "sdpa",
) -> GPT:
    """Build `cfg` directly on `device` (on "meta" no memory is allocated and no init runs), its parameters
    in `dtype` (default float32); `attention`: "sdpa" or "flex" (`model.config.ATTENTION`). Inference
    engines keep bf16 / fp16 weights (gpt-fast's `model.to(dtype=precision)`), and `infer` does: built in
    that dtype, never held in float32 on the way. The rotary tables stay float32 (`RotaryEmbedding`;
    `apply_rope` casts them to the activations' dtype)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype or previous)
    try:
        with torch.device(device):
            return GPT(cfg, checkpointing=checkpointing, early_stop=early_stop, attention=attention)
    finally:
        torch.set_default_dtype(previous)


def lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy over all positions."""
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())
