"""`run` rows and the attention kernel: every row names the kernel that dispatched (`attention_kernel`), a
math-kernel row is warned about, `hfu_causal` takes out only what a kernel really skips, and FlexAttention
rows count the block mask's non-empty blocks."""

import pytest
from torch.nn.attention import SDPBackend, sdpa_kernel

from flopbench.api.run import RunOptions, run
from flopbench.errors import UsageError
from flopbench.model.config import LLAMA_ARCH, ModelConfig

FAST = dict(batch_size=2, seq_len=32, warmup=0, iters=1, gemm=False, device="cpu", peak_tflops=1.0, out=None)
SMALL = ModelConfig("small", n_layer=2, d_model=64, n_head=4, vocab_size=128, max_seq_len=32)
# Mistral-like: every layer slides, window 8 < T = 32, so SDPA gets a band mask and computes the whole square.
SLIDING = ModelConfig("sliding", n_layer=2, d_model=64, n_head=4, n_kv_head=2, d_ff=96, vocab_size=128,
                      max_seq_len=32, layer_types=("sliding",), sliding_window=8, **LLAMA_ARCH)
# Gemma-3-like: a sliding layer (band mask), then a full one (is_causal: the fused kernel skips half).
MIXED = SLIDING.replace(name="mixed", layer_types=("sliding", "full"))
SOFTCAP = SMALL.replace(name="softcap", attn_softcap=50.0)


def _run(cfg, progress=None, **options):
    messages = []
    doc = run(cfg, RunOptions(**{**FAST, **options}), progress=progress or messages.append)
    return doc, messages


def test_every_row_names_the_cpu_flash_kernel():
    doc, messages = _run(SMALL, checkpointing="none")
    assert [r["attention_kernel"] for r in doc["rows"]] == ["flash", "flash", "flash"]
    assert not [m for m in messages if "math attention kernel" in m]


def test_soft_cap_rows_are_eager_and_math_rows_warned():
    doc, _ = _run(SOFTCAP, checkpointing="none", modes=("forward",))
    assert doc["rows"][0]["attention_kernel"] == "eager"
    with sdpa_kernel(SDPBackend.MATH):  # what a GPU does when no fused kernel takes the inputs
        doc, messages = _run(SMALL, checkpointing="none", modes=("forward", "fwd_bwd"))
    assert [r["attention_kernel"] for r in doc["rows"]] == ["math", "math"]
    warnings = [m for m in messages if "math attention kernel" in m]
    assert len(warnings) == 2 and all(len(m) <= 100 for m in warnings)


@pytest.mark.parametrize("cfg", [SLIDING, SOFTCAP], ids=["band-mask", "soft-cap"])
def test_hfu_causal_equals_hfu_for_full_square_kernels(cfg):
    """Issue 23 item 7: a kernel given a band mask, and the soft-cap path's two matmuls, compute every score
    of the T x T square: nothing to take out, so hfu_causal == hfu (it was below)."""
    doc, _ = _run(cfg, checkpointing="full", modes=("forward", "fwd_bwd"))
    for r in doc["rows"]:
        assert r["hfu_causal"] == pytest.approx(r["hfu"], rel=1e-12)


def test_hfu_causal_takes_out_only_the_full_layers_half():
    """One band-mask layer (whole square) and one is_causal layer (the fused kernel skips half): per step the
    full layer's forward square is 4·B·T²·H·d_h = 4·2·32²·4·16 = 524,288 FLOPs, half skipped in each of the
    3 passes of fwd_bwd, plus half the QK^T the fused backward re-forms in that layer (2·B·T²·H·d_h / 2)."""
    doc, _ = _run(MIXED, checkpointing="none", modes=("fwd_bwd",))
    r = doc["rows"][0]
    layer = 4 * 2 * 32 * 32 * 4 * 16
    assert layer == 524_288
    rescore = layer // 4 if r["hardware_flops_note"].startswith("attention backward re-forms") else 0
    skipped = 3 * layer // 2 + rescore
    seconds = r["time_ms"]["median_ms"] / 1e3
    assert r["hfu_causal"] == pytest.approx((r["hardware_flops"] - skipped) / seconds / 1e12)


def test_flex_rows_count_the_block_mask_and_train_on_the_cpu_is_refused():
    """T = 32 fits one 128-block: flex computes the whole 32 x 32 square in each layer, the forward count of
    a mask-based kernel (2·B·T·12·d²... the same matmuls, attention 4·B·T²·d per layer)."""
    doc, _ = _run(SMALL, checkpointing="none", modes=("forward",), attention="flex")
    r = doc["rows"][0]
    assert r["attention_kernel"] == "flex" and r["hardware_flops_note"].startswith("analytic: FlexAttention")
    assert r["hardware_flops"] == r["model_flops"]  # one block: the whole square, as the analytic count
    assert r["hfu_causal"] == r["hfu"]
    with pytest.raises(UsageError, match="--attention flex on the CPU"):
        _run(SMALL, checkpointing="none", attention="flex")
    with pytest.raises(UsageError, match="--attention 'paged'"):
        _run(SMALL, attention="paged")


def test_cli_attention_flag(capsys):
    """`run --attention flex` on the CPU with training modes: one line, exit 2; a bad choice likewise."""
    from flopbench.cli import main

    assert main(["run", "--device", "cpu", "--attention", "flex", "--no-save", "--no-gemm", "--seq-len", "8"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--attention flex on the CPU" in err and "Traceback" not in err
    assert main(["run", "--attention", "paged"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "invalid choice: 'paged' (choose from 'sdpa', 'flex')" in err


def test_flex_hardware_flops_by_hand():
    """T = 256, window 64, blocks of 128: query block 0 meets key block 0 (128 x 128 scores), query block 1
    meets key blocks 0 and 1 (its first query, 128, sees keys from 65: 128 x 256). A mask-based kernel
    computes the whole 256 x 256 square per layer; flex 49,152 of its 65,536 scores. Forward hardware FLOPs
    = forward matmuls outside attention + 4·B·H·d_h·49,152 per layer; training adds 2 more passes and the
    re-formed QK^T (half a pass)."""
    from flopbench.api.run import flops_of_mode
    from flopbench.flops import analytic

    cfg = SLIDING.replace(max_seq_len=256, sliding_window=64)
    B, T, L, q = 2, 256, 2, 4 * 16
    assert analytic.flex_block_scores(T, 64) == 128 * 128 + 128 * 256 == 49_152
    flex_forward = 4 * B * q * 49_152 * L
    band = 4 * B * q * T * 64 * L  # components' attention: T x min(T, W) per layer
    assert flops_of_mode(cfg, B, T, "forward", "none", "flex").hardware == (
        analytic.forward_flops(cfg, B, T) - band + flex_forward)
    assert flops_of_mode(cfg, B, T, "fwd_bwd", "none", "flex").hardware == (
        analytic.train_flops(cfg, B, T) - 3 * band + 3 * flex_forward + flex_forward // 2)
