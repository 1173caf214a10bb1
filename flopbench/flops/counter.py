"""Counted FLOPs: what the framework dispatches, seen by torch's `FlopCounterMode`.

`flop_counter()` is the counter every count in flopbench runs under, and `count_step` is the one loop
that counts a forward and then a backward under it, on whatever device the tensors are. It serves
flopbench's own model (`count_model`, on the **meta** device: no memory, no arithmetic), any user
module (`count_module`: on a meta copy, else on the module's own device), and one real step of `run`.

Every block of flopbench's model is identical, so a model of L layers is counted as
``count(1 layer) + (L - 1) * (count(2 layers) - count(1 layer))`` (`extrapolate_layers`): exact, and it
keeps a 70B-class config within a second (tests check it against counting the whole stack).

Two traps are closed here rather than left to the user:
- On the CPU, SDPA dispatches to `_scaled_dot_product_flash_attention_for_cpu`, for which torch has no
  FLOP formula, so attention would count 0. `flop_counter()` registers the flash-attention formulas
  for it (forward 2 bmm, backward 5 bmm, as torch counts the CUDA flash kernels).
- Grouped-query attention hands SDPA fewer K/V heads than query heads; torch's SDPA formula has
  asserted equal heads in some versions. `flop_counter()` counts every fused kernel with K/V broadcast
  to the query heads, so QK^T and AV cost 2·B·T²·d each whatever n_kv_head is.

**Meta copy** of a user's module: `meta_copy` deep-copies it with every parameter and buffer replaced
by an empty meta tensor (the copy's memo maps each to its meta twin, so no data is copied and tied
weights stay tied). Counting runs on that copy, with the inputs as meta tensors and
`torch.device("meta")` as the default device for tensors the forward creates. Some modules cannot run
there — a forward that reads values (`.item()`, data-dependent branches), a tensor attribute that is
not a registered buffer, a module `copy.deepcopy` cannot copy. On any such failure the count runs on
the module itself, on its device, and the result says why (`meta_fallback`). The FLOPs are the same
either way for a module whose matmuls do not depend on values (tests check it), except for the
backward of fused attention: on the device torch counts the flash kernels' backward as 5 bmm (the
kernel re-forms QK^T: hardware FLOPs), on meta as 4, 2·B·H·T_q·T_k·d_head less per attention call.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from ..errors import describe_error
from ..model.config import ModelConfig
from ..model.gpt import build_model, lm_loss
from ..model.inputs import Inputs, loss_of

aten = torch.ops.aten


def _kv_as_query_heads(query_shape, key_shape, value_shape) -> tuple[tuple, tuple, tuple]:
    """q, k, v shapes (B, heads, T, head_dim) with K/V given the query's head count.

    With grouped-query attention (Ainslie et al. 2023) each K/V head serves a group of query heads, so
    QK^T and AV still run once per query head: 2·B·T²·d each, whatever n_kv_head is. torch 2.13's
    `sdpa_flop_count` broadcasts K/V heads itself; older versions assert equal head counts. Broadcasting
    here first gives the same count on every torch version (torch's formula is unchanged for MHA).
    """
    heads = query_shape[1]
    return (tuple(query_shape), (key_shape[0], heads, *key_shape[2:]), (value_shape[0], heads, *value_shape[2:]))


def _sdpa_forward(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(*_kv_as_query_heads(query_shape, key_shape, value_shape))


def _sdpa_backward(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out_shape, *_kv_as_query_heads(query_shape, key_shape, value_shape))


def _sdpa_kernels() -> dict:
    """The fused SDPA kernels (forward, backward) that exist in this torch, by name."""
    names = ("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention",
             "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention")
    mapping = {}
    for name in names:
        for suffix, formula in (("", _sdpa_forward), ("_backward", _sdpa_backward)):
            if hasattr(aten, name + suffix):
                mapping[getattr(aten, name + suffix)] = formula
    return mapping


def _elements(shape) -> int:
    n = 1
    for dim in shape:
        n *= dim
    return n


def _matmul_by_output(a_shape, out_shape) -> int:
    """A product of a (... x K) by a K-deep right operand into `out`: every output element is a K-term dot
    product, K multiplies and K adds, so 2 x (output elements) x K, as torch's `mm_flop` counts 2·M·K·N."""
    return 2 * _elements(out_shape) * a_shape[-1]


def grouped_mm_flops(a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of `aten._grouped_mm(a, b, offs)` (`F.grouped_mm`): one matmul per group, the mixture-of-experts
    experts of transformers 5 (`experts_implementation="grouped_mm"`, its default). torch 2.13 has no formula
    for it, so plain FlopCounterMode counts the experts as 0.

    `offs` splits the one ragged dimension of a 2-D operand into groups; whatever the split, every output
    element of every group is a dot product over the shared dimension, so (torch's `F.grouped_mm` docstring
    for the layouts; each checked against a per-group loop in tests/flops/test_transformers_ops.py):
    - 2-D x 3-D, a (S x K) rows split by offs, b (G x K x N) → S x N: 2·S·K·N (the forward: S token-expert
      pairs, K = d). Its backward is a 2-D x 3-D (grad_a: S x N by G x N x K) and a 2-D x 2-D (grad_b).
    - 2-D x 2-D, a (K x S) by b (S x N), the shared S split by offs → G x K x N: each group g multiplies
      K x S_g by S_g x N, 2·K·N·ΣS_g = 2·K·S·N (the weight gradient: the output holds G blocks but the
      work is over S once, so it is read from the inputs, not from the output).
    - 3-D x 3-D (G x M x K by G x K x N, no offs) → G x M x N, and 3-D x 2-D (G x M x K by K x N_total,
      N split by offs) → M x N_total: 2 x (output elements) x K, as are their backward forms.
    So each backward form costs exactly the forward, and forward + backward = 3 x forward. Rows past
    `offs[-1]` are skipped by the kernel (expert-parallel sentinels) but counted here: a shape-only formula
    cannot see `offs`' values, so with such rows the count is an upper bound.
    """
    if len(a_shape) == 2 and len(b_shape) == 2:
        return 2 * a_shape[0] * a_shape[1] * b_shape[1]
    return _matmul_by_output(a_shape, out_shape)


def _quantized_mm(a_shape, *args, out_shape=None, **kwargs) -> int:
    """`aten._int_mm(a, b)`, `aten._weight_int8pack_mm(a, w, scales)`, `aten._weight_int4pack_mm*(a, w, ...)`:
    activations a (M x K) by a quantized weight into M x N, 2·M·K·N as an `mm` of those shapes. Read from a
    and the output only: a packed int4 weight's shape is not K x N (`_convert_weight_to_int4pack`).
    Dequantizing the weight (scales, zero points) is not counted, as torch counts no bias in `addmm`."""
    return _matmul_by_output(a_shape, out_shape)


def _addmm_activation(bias_shape, a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    """`aten._addmm_activation(bias, a, b, use_gelu)`: `addmm` fused with ReLU / GELU (a fused Linear +
    activation): the matmul's 2·M·K·N, as torch's `addmm_flop` (bias and activation not counted)."""
    return _matmul_by_output(a_shape, out_shape)


def _addbmm(self_shape, batch1_shape, batch2_shape, *args, out_shape=None, **kwargs) -> int:
    """`aten.addbmm(self, b1 (B x n x m), b2 (B x m x p))`: B products n x m by m x p summed into one n x p:
    2·B·n·m·p, as torch's `bmm_flop` counts the B products (the sum over B not counted, as in `baddbmm`)."""
    batches, n, m = batch1_shape
    return 2 * batches * n * m * batch2_shape[-1]


def _matmul_formulas() -> dict:
    """The matmul-like operators torch 2.13 has no FLOP formula for, that exist in this torch, by name."""
    formulas = {"_grouped_mm": grouped_mm_flops, "_scaled_grouped_mm": grouped_mm_flops,  # FP8: same layouts
                "_int_mm": _quantized_mm, "_weight_int8pack_mm": _quantized_mm,
                "_weight_int4pack_mm": _quantized_mm, "_weight_int4pack_mm_for_cpu": _quantized_mm,
                "_weight_int4pack_mm_with_scales_and_zeros": _quantized_mm,
                "_addmm_activation": _addmm_activation, "addbmm": _addbmm}
    return {getattr(aten, name): formula for name, formula in formulas.items() if hasattr(aten, name)}


#: FLOP formulas flopbench puts in front of torch's: the CPU flash-attention kernels (torch has none and
#: counts them as 0; forward 2 bmm, backward 5 bmm, as torch counts the CUDA flash kernels), every fused
#: SDPA kernel made safe for fewer K/V heads than query heads (`_kv_as_query_heads`), the grouped matmul of
#: mixture-of-experts layers (`grouped_mm_flops`), and the quantized and fused matmuls torch has no formula
#: for (`_matmul_formulas`).
EXTRA_FLOP_FORMULAS: dict = {**_sdpa_kernels(), **_matmul_formulas()}

#: Operator names that do matmul-like work; one dispatched without a FLOP formula is reported, never a silent 0.
#: Matches every aten matmul (mm, addmm, bmm, baddbmm, addbmm, _grouped_mm and its FP8 form, _int_mm,
#: _weight_int*pack_mm, addmv, dot, vdot, _scaled_mm, convolutions, fused attention); `linear`, `matmul`,
#: `einsum` decompose to these before a dispatch mode sees them.
MATMUL_LIKE = re.compile(r"mm|matmul|bmm|conv|linear|einsum|attention|dot|mv\b|tensordot|gemm")


def flop_counter(display: bool = False, depth: int | None = None) -> FlopCounterMode:
    """A `FlopCounterMode` that also counts the CPU flash-attention kernels and grouped matmuls."""
    return FlopCounterMode(display=display, depth=depth, custom_mapping=EXTRA_FLOP_FORMULAS)


def uncounted_note(uncounted: dict[str, int]) -> str | None:
    """The one-line note a result carries when matmul-like ops ran without a FLOP formula (None if none)."""
    if not uncounted:
        return None
    ops = ", ".join(f"{name} x{calls}" for name, calls in sorted(uncounted.items()))
    return f"matmul-like ops without a FLOP formula, not in the FLOPs: {ops}"


class UncountedOps(TorchDispatchMode):
    """Records the matmul-like operators dispatched inside it that `counter` has no FLOP formula for
    (`uncounted`: name -> calls), so a count that misses work says so."""

    def __init__(self, counter: FlopCounterMode):
        super().__init__()
        self.known = set(counter.flop_registry)
        self.uncounted: dict[str, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        packet = func._overloadpacket
        if packet not in self.known and MATMUL_LIKE.search(packet.__name__):
            self.uncounted[packet.__name__] = self.uncounted.get(packet.__name__, 0) + 1
        return func(*args, **(kwargs or {}))


#: The float8 dtypes a matmul operand may hold (e4m3 for activations and weights, e5m2 for gradients; the
#: "fnuz" forms are AMD's).
FLOAT8_DTYPES = frozenset(getattr(torch, name) for name in ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz",
                                                            "float8_e5m2fnuz") if hasattr(torch, name))


def is_float8(value) -> bool:
    """True for a float8 tensor, or a tensor subclass holding float8 data in ``_data`` (torchao's
    ``Float8TrainingTensor``, whose own dtype is the high-precision one it stands for)."""
    data = getattr(value, "_data", value)
    return isinstance(data, torch.Tensor) and data.dtype in FLOAT8_DTYPES


class Float8Flops(TorchDispatchMode):
    """Counts, with `counter`'s own formulas, the FLOPs of the ops dispatched inside it that take a float8
    operand (`is_float8`): the matmuls a float8 training layer runs in float8, forward and backward, recomputed
    ones included. Read from the ops' operands, not from which module runs them: FlopCounterMode's per-module
    attribution is not reliable inside a checkpoint's recompute."""

    def __init__(self, counter: FlopCounterMode):
        super().__init__()
        self.registry = counter.flop_registry
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = self.registry.get(func._overloadpacket)
        if formula is not None and any(is_float8(a) for a in (*args, *kwargs.values())):
            self.flops += formula(*args, **kwargs, out_val=out)
        return out


# --------------------------------------------------------------------------------------------------
# The one counting loop
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepCount:
    """FlopCounterMode's view of one step: the forward alone, then forward + backward."""

    forward: int
    train: int | None  # forward + backward (+ any recomputed forward); None when nothing needed a gradient
    forward_by_module: dict[str, int]
    train_by_module: dict[str, int]
    uncounted: dict[str, int] = field(default_factory=dict)  # matmul-like ops without a formula -> calls
    by_op: dict[str, int] = field(default_factory=dict)  # the whole step's FLOPs per aten op name ("mm", ...)
    fp8_forward: int = 0  # of `forward`, the FLOPs of ops with a float8 operand (`Float8Flops`)
    fp8_train: int = 0  # of `train`, the same

    def total(self, mode: str) -> tuple[int | None, int]:
        """The FLOPs of one step of `mode` ("forward": the forward alone; else `train`) and the float8 part."""
        return (self.forward, self.fp8_forward) if mode == "forward" else (self.train, self.fp8_train)


def by_module(counter: FlopCounterMode) -> dict[str, int]:
    """The counter's FLOPs per module path (every op under a module counts for it and its parents)."""
    return {module: sum(by_op.values()) for module, by_op in counter.get_flop_counts().items()}


def by_op(counter: FlopCounterMode) -> dict[str, int]:
    """The counter's FLOPs per aten op name (e.g. "mm", "_scaled_dot_product_flash_attention"), all modules."""
    return {packet.__name__: flops for packet, flops in counter.get_flop_counts().get("Global", {}).items()}


def count_step(forward: Callable[[], object], loss: Callable[[object], torch.Tensor] | None = None) -> StepCount:
    """Count `output = forward()`, then `loss(output).backward()`, under one `flop_counter()` (with `Float8Flops`
    for the float8 part), reading the counters between the two. `train` is None without `loss`, or when the
    loss needs no gradient."""
    train = None
    with flop_counter() as counter, UncountedOps(counter) as watcher, Float8Flops(counter) as fp8:
        output = forward()
        forward_flops, forward_by_module, fp8_forward = counter.get_total_flops(), by_module(counter), fp8.flops
        if loss is not None:
            value = loss(output)
            if value.requires_grad:
                value.backward()
                train = counter.get_total_flops()
    return StepCount(forward_flops, train, forward_by_module, by_module(counter), dict(watcher.uncounted),
                     by_op(counter), fp8_forward, fp8.flops)


# --------------------------------------------------------------------------------------------------
# flopbench's model, on meta
# --------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _count_model_step(cfg: ModelConfig, batch_size: int, seq_len: int, checkpointing: str,
                      early_stop: bool) -> StepCount:
    model = build_model(cfg, "meta", checkpointing=checkpointing, early_stop=early_stop)
    idx = torch.zeros(batch_size, seq_len, dtype=torch.long, device="meta")
    return count_step(lambda: model(idx), lambda logits: lm_loss(logits, idx))


def extrapolate_layers(cfg: ModelConfig, measure: Callable[[ModelConfig], dict[str, int]]) -> dict[str, int]:
    """measure(cfg) for L layers from small models: every layer of one kind (`ModelConfig.layer_kinds`:
    full or sliding attention, dense or mixture-of-experts MLP) is identical, so each count is affine in
    the number of layers of each kind. Measuring 1 and 2 layers of the first kind gives its slope s_1 and
    the fixed part (embeddings, final norm, LM head: m(1 layer) − s_1); 1 layer of each other kind k gives
    s_k = m(1 layer of k) − fixed. The model counts fixed + Σ_k n_k·s_k. Models of 1 or 2 layers are
    measured as they are."""
    if cfg.n_layer <= 2:
        return measure(cfg)
    kinds = cfg.layer_kinds()
    first = next(iter(kinds))
    one, two = measure(cfg.uniform(first, 1)), measure(cfg.uniform(first, 2))
    ones = {kind: measure(cfg.uniform(kind, 1)) for kind in kinds if kind != first}
    keys = {k for m in (one, two, *ones.values()) for k in m}
    fixed = {k: 2 * one.get(k, 0) - two.get(k, 0) for k in keys}
    slopes = {first: {k: two.get(k, 0) - one.get(k, 0) for k in keys}}
    slopes |= {kind: {k: m.get(k, 0) - fixed[k] for k in keys} for kind, m in ones.items()}
    return {k: fixed[k] + sum(n * slopes[kind][k] for kind, n in kinds.items()) for k in sorted(keys)}


def count_model(cfg: ModelConfig, batch_size: int, seq_len: int, early_stop: bool = True) -> dict[str, int]:
    """FlopCounterMode totals per step for forward, train (fwd + bwd), train with full checkpointing
    (`train_recompute`) and with selective checkpointing (`train_recompute_selective`)."""

    def measure(c: ModelConfig) -> dict[str, int]:
        plain = _count_model_step(c, batch_size, seq_len, "none", early_stop)
        full = _count_model_step(c, batch_size, seq_len, "full", early_stop)
        selective = _count_model_step(c, batch_size, seq_len, "selective", early_stop)
        return {"forward": plain.forward, "train": plain.train, "train_recompute": full.train,
                "train_recompute_selective": selective.train}

    return extrapolate_layers(cfg, measure)


def module_breakdown(cfg: ModelConfig, batch_size: int, seq_len: int) -> dict[str, dict[str, int]]:
    """Counted FLOPs per module of one representative block (`h.*`) and the modules outside the blocks.

    Keys are module paths with the block index replaced by `*`; values hold "forward" and "train"
    (forward + backward, no checkpointing). Block rows are for one block; multiply by n_layer.
    """
    step = _count_model_step(cfg.replace(n_layer=1), batch_size, seq_len, "none", True)
    return {
        module.removeprefix("GPT.").replace("h.0", "h.*"): {"forward": step.forward_by_module.get(module, 0),
                                                             "train": flops}
        for module, flops in step.train_by_module.items()
        if module not in ("Global", "GPT")
    }


# --------------------------------------------------------------------------------------------------
# Any nn.Module: on a meta copy, else on its own device
# --------------------------------------------------------------------------------------------------


def meta_copy(module: torch.nn.Module) -> torch.nn.Module:
    """A deep copy of `module` whose parameters and buffers are empty meta tensors (see the module docstring).

    Raises whatever `copy.deepcopy` raises for a module it cannot copy.
    """
    memo: dict[int, object] = {}
    for p in module.parameters():
        memo[id(p)] = torch.nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
    for b in module.buffers():
        memo[id(b)] = torch.empty_like(b, device="meta")
    return copy.deepcopy(module, memo)


def meta_tensor(t: torch.Tensor) -> torch.Tensor:
    """An empty meta tensor like `t` (requiring grad where `t` does)."""
    meta = torch.empty_like(t, device="meta")
    return meta.requires_grad_(t.requires_grad) if t.is_floating_point() or t.is_complex() else meta


@dataclass
class ModuleCount:
    """FlopCounterMode's view of one step of a module.

    `forward` = the module call alone; `train` = forward + loss + backward (the loss adds no matmul
    FLOPs unless `loss_fn` has matmuls of its own); `train_recompute` = the same with the module call
    wrapped in torch's non-reentrant activation checkpoint (hardware FLOPs: the recomputed forward is
    counted, minus what torch's early stop skips). Backward through a first layer whose input needs no
    gradient has no input-gradient matmul, so `train` is a little under 3 x `forward` for such models.
    """

    forward: int
    train: int | None  # None when the loss needs no gradient (nothing requires grad)
    train_recompute: int | None  # only with checkpointing="full"
    counted_on: str  # "meta" or the device the module itself ran on
    meta_fallback: str | None = None  # why the meta copy could not be used
    train_note: str | None = None  # why train is None
    by_module: dict[str, dict[str, int]] = field(default_factory=dict)  # {module path: {forward, train}}
    uncounted: dict[str, int] = field(default_factory=dict)  # matmul-like ops with no FLOP formula -> calls
    fp8_forward: int = 0  # of `forward`, the FLOPs of ops with a float8 operand (`Float8Flops`)
    fp8_train: int | None = None  # of `train`, the same
    fp8_train_recompute: int | None = None  # of `train_recompute`, the same (the recomputed forward included)


def _count_module_step(module: torch.nn.Module, inputs: Inputs, loss_fn: Callable | None, checkpointing: str,
                       context: Callable[[], contextlib.AbstractContextManager]) -> ModuleCount:
    def forward(checkpointed: bool = False):
        with context():
            return inputs.call(module, checkpointed=checkpointed)

    def loss(output):
        with context():
            return loss_of(loss_fn, output)

    step = count_step(forward, loss)
    note = None if step.train is not None else (
        "the loss needs no gradient (no parameter and no input requires grad): no backward to count")
    recompute = None
    if step.train is not None and checkpointing == "full":
        recompute = count_step(lambda: forward(checkpointed=True), loss)
    by_module_flops = {name: {"forward": step.forward_by_module.get(name, 0), "train": flops}
                       for name, flops in step.train_by_module.items() if name != "Global"}
    return ModuleCount(step.forward, step.train, recompute.train if recompute else None, counted_on="",
                       train_note=note, by_module=by_module_flops, uncounted=step.uncounted,
                       fp8_forward=step.fp8_forward, fp8_train=None if step.train is None else step.fp8_train,
                       fp8_train_recompute=recompute.fp8_train if recompute else None)


def count_module(module: torch.nn.Module, inputs: Inputs, loss_fn: Callable | None = None,
                 checkpointing: str = "none",
                 context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
                 meta: bool = True) -> ModuleCount:
    """Count one step of `module(inputs)` on a meta copy, or on the module itself where that fails.

    `context()` wraps the calls on the real device (the autocast / TF32 setting of the timed steps);
    on meta it is not needed (FLOPs do not depend on the dtype). `meta=False` skips the meta attempt.
    Counting on the real device leaves the module's gradients cleared (set to None).
    """
    reason = "meta copy not tried (meta=False)"
    if meta:
        try:
            copied = meta_copy(module)
            with torch.device("meta"):
                result = _count_module_step(copied, inputs.map(meta_tensor), loss_fn, checkpointing,
                                            contextlib.nullcontext)
            result.counted_on = "meta"
            return result
        except Exception as e:  # anything the meta copy cannot do: count on the real device instead
            reason = describe_error(e)
    try:
        result = _count_module_step(module, inputs, loss_fn, checkpointing, context)
    finally:
        module.zero_grad(set_to_none=True)
    device = next((str(t.device) for t in (*module.parameters(), *module.buffers())), "cpu")
    result.counted_on, result.meta_fallback = device, reason
    return result
