"""Float8 training of flopbench's model: the block Linear layers converted with torchao, the rest in bf16.

`convert` swaps each Linear layer of the transformer blocks for torchao's ``Float8Linear``
(``torchao.float8.convert_to_float8_training``, with the ``tensorwise`` or ``rowwise`` recipe of
``Float8LinearConfig.from_recipe_name``): its forward matmul and both backward matmuls (input and weight
gradients) run in float8 with dynamic scales, e4m3 for activations and weights, e5m2 for gradients in the
tensorwise recipe and e4m3 with one scale per row in the rowwise one (torchao, "float8" README). What stays in
bf16 is what torchtitan keeps out of float8 (`torchtitan/components/quantization/float8.py`):
- the LM head (``lm_head``: its logits feed the loss, and torchtitan's filter skips ``output``);
- the attention core (QK^T, softmax, AV: SDPA's fused kernels have no float8 training path);
- the mixture-of-experts router (tiny, and its logits pick the experts) and the routed experts, whose
  stacked weights run through ``torch._grouped_mm``, not Linear layers;
- a Linear layer whose weight has a dimension that is not a multiple of 16 (`FP8_DIM_MULTIPLE`).

torchao is an optional extra (``pip install 'flopbench[fp8]'``); without it `--dtype fp8` is one line and
exit 2. torchao's import logs a warning per CUDA extension it cannot load and torch a deprecation for one
of its enums; `load_float8` keeps those out of flopbench's output.
"""

from __future__ import annotations

import contextlib
import logging
import re

from torch import nn

from ..errors import UsageError
from .config import FP8_DIM_MULTIPLE, FP8_RECIPES

#: How to get torchao, named wherever it is missing.
FP8_EXTRA = "pip install 'flopbench[fp8]'"
#: The block Linear layers `convert` leaves in bf16 by name: the mixture-of-experts router.
KEPT_BY_NAME = re.compile(r"\.router$")
#: What every fp8 run keeps in bf16, for the output (see the module docstring).
KEPT_IN_BF16 = f"lm_head, attention core, MoE router and experts, Linear dims not /{FP8_DIM_MULTIPLE}"


@contextlib.contextmanager
def _quiet(*names: str):
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def load_float8():
    """``torchao.float8``, imported without its warnings; a UsageError naming the extra when torchao is absent."""
    try:
        with _quiet("torchao", "torch.utils._pytree"):
            import torchao.float8 as float8
    except ImportError:
        raise UsageError(f"--dtype fp8 needs torchao (float8 training), which is not installed: {FP8_EXTRA}") from None
    return float8


def check_recipe(recipe: str) -> str:
    if recipe not in FP8_RECIPES:
        raise UsageError(f"--fp8-recipe {recipe!r}: choose one of {', '.join(FP8_RECIPES)}")
    return recipe


def converts(fqn: str, module: nn.Module) -> bool:
    """Whether `convert` makes `module` (at path `fqn` in the model) a float8 layer: a Linear layer inside a
    block (``h.<i>.``), not the router, with both weight dimensions multiples of `FP8_DIM_MULTIPLE`."""
    return (isinstance(module, nn.Linear) and fqn.startswith("h.") and not KEPT_BY_NAME.search(fqn)
            and module.in_features % FP8_DIM_MULTIPLE == 0 and module.out_features % FP8_DIM_MULTIPLE == 0)


def convert(model: nn.Module, recipe: str = FP8_RECIPES[0]) -> list[str]:
    """Convert `model`'s block Linear layers to torchao's float8 training layers in place (`converts` says
    which), with `recipe` ("tensorwise" or "rowwise"); the paths of the converted layers, in model order.
    Call it before compiling or wrapping the model (torchtitan's order: float8, then compile, then FSDP)."""
    check_recipe(recipe)
    float8 = load_float8()
    converted: list[str] = []

    def keep(module: nn.Module, fqn: str) -> bool:
        if converts(fqn, module):
            converted.append(fqn)
            return True
        return False

    float8.convert_to_float8_training(model, config=float8.Float8LinearConfig.from_recipe_name(recipe),
                                      module_filter_fn=keep)
    return converted


def fp8_layers(model: nn.Module, recipe: str) -> dict:
    """What `convert` makes float8 in `model` (a meta copy will do: nothing is converted here), for a run's
    document: the recipe, the converted layers' paths with the block index as ``*``, how many, and what stays
    in bf16."""
    paths = [fqn for fqn, module in model.named_modules() if converts(fqn, module)]
    return {"recipe": recipe, "layers": layer_patterns(paths), "converted": len(paths), "bf16": KEPT_IN_BF16}


def layer_patterns(paths: list[str]) -> list[str]:
    """Layer paths with the block index as ``*`` ("h.0.attn.c_attn" -> "h.*.attn.c_attn"), each once, in order."""
    return list(dict.fromkeys(re.sub(r"^h\.\d+\.", "h.*.", p) for p in paths))
