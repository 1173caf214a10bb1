"""Reconciliation can fail: a count off by 2 FLOPs, a wrong predicted gap or a gap in the wrong mode is "unexplained".

Every expected figure below is worked out by hand for one small GPT-2-shaped config, so these tests do not
lean on the formulas they check.
"""

import dataclasses

import pytest

from flopbench.api import run as run_module
from flopbench.cli import main
from flopbench.flops import estimates
from flopbench.flops.reconcile import explain_hardware_gap, explained_hardware_gap, reconcile
from flopbench.model.config import ModelConfig

# GPT-2 block (MHA, GELU MLP of 4·d), untouched defaults: bias, tied LM head, learned positions.
CFG = ModelConfig("r", n_layer=2, d_model=32, n_head=4, vocab_size=64, max_seq_len=16)
B, T, L, d, V = 2, 16, 2, 32, 64

# By hand. Matmul weights per block 12·d² = 12,288; N_matmul = L·12·d² + d·V = 24,576 + 2,048 = 26,624.
# forward = 2·B·T·N_matmul + 4·B·T²·d·L = 2·32·26,624 + 4·2·256·32·2 = 1,703,936 + 131,072
FORWARD = 1_835_008
TRAIN = 3 * FORWARD  # backward = 2 x forward
# Checkpointing re-runs each block's forward, 2·B·T·12·d² + 4·B·T²·d = 786,432 + 65,536 = 851,968, except
# (torch's early stop) its MLP down-projection 2·B·T·4d·d = 262,144: 2 x 589,824 = 1,179,648.
TRAIN_RECOMPUTE = TRAIN + 1_179_648
TRAIN_RECOMPUTE_NO_EARLY_STOP = TRAIN + 2 * 851_968
ATTENTION = 4 * B * T * T * d * L  # QK^T + AV over the full square, all layers: 131,072
# Selective checkpointing (Korthikanti et al. 2022, §4.1) re-runs only QK^T and AV of each block.
TRAIN_RECOMPUTE_SELECTIVE = TRAIN + ATTENTION
RESCORE = 2 * B * T * T * d * L  # fused attention's backward re-forms QK^T: 65,536
TORCH = {"forward": FORWARD, "train": TRAIN, "train_recompute": TRAIN_RECOMPUTE}
NON_MATMUL = 2 * 5 * (2 * L + 1) * B * T * d  # fvcore's LayerNorm, doubled: 51,200


def by_left(checks):
    return {c.left: c for c in checks}


def test_hand_figures_match_the_exact_counts():
    assert (FORWARD, TRAIN, TRAIN_RECOMPUTE, TRAIN_RECOMPUTE_NO_EARLY_STOP) == (
        1_835_008, 5_505_024, 6_684_672, 7_208_960)
    assert estimates.exact(CFG, B, T) == {"forward": FORWARD, "train": TRAIN, "train_recompute": TRAIN_RECOMPUTE,
                                          "train_recompute_no_early_stop": TRAIN_RECOMPUTE_NO_EARLY_STOP,
                                          "train_recompute_selective": TRAIN_RECOMPUTE_SELECTIVE}


def test_right_counts_are_equal_and_the_early_stop_row_is_explained():
    checks = by_left(reconcile(CFG, B, T, TORCH, FORWARD, NON_MATMUL, {"aten::gelu": L}))
    for left in ("counted.torch.forward", "counted.torch.train", "counted.torch.train_recompute",
                 "counted.fvcore.forward"):
        assert checks[left].status == "equal", left
    assert checks["fvcore incl. non-matmul"].status == "explained"
    assert checks["fvcore incl. non-matmul"].left_flops == FORWARD + 51_200
    early = checks["analytic.train_recompute"]
    assert (early.left_flops, early.right_flops, early.explained) == (TRAIN_RECOMPUTE, TRAIN_RECOMPUTE_NO_EARLY_STOP,
                                                                      -2 * 262_144)
    assert early.status == "explained"


@pytest.mark.parametrize("phase", ["forward", "train", "train_recompute"])
@pytest.mark.parametrize("off", [2, -2])
def test_a_torch_count_off_by_2_flops_is_unexplained(phase, off):
    counts = {**TORCH, phase: TORCH[phase] + off}
    statuses = {c.left: c.status for c in reconcile(CFG, B, T, counts, None)}
    assert statuses[f"counted.torch.{phase}"] == "unexplained"
    others = {f"counted.torch.{p}" for p in TORCH} - {f"counted.torch.{phase}"}
    assert {statuses[o] for o in others} == {"equal"}


def test_an_fvcore_count_off_by_2_flops_is_unexplained():
    checks = by_left(reconcile(CFG, B, T, None, FORWARD + 2, NON_MATMUL, {}))
    assert checks["counted.fvcore.forward"].status == "unexplained"
    assert checks["fvcore incl. non-matmul"].status == "unexplained"  # 2 more than the LayerNorm FLOPs
    assert "counted.torch.forward" not in checks  # not counted: no row


def test_every_published_estimate_is_explained_by_its_gap():
    statuses = {c.left: c.status for c in reconcile(CFG, B, T, None, None)}
    estimate_rows = {k: v for k, v in statuses.items() if k.startswith("estimate ")}
    assert set(estimate_rows) == {f"estimate {e.name}" for e in estimates.ESTIMATES}
    # PaLM's formula, Korthikanti's and Narayanan's Eq. 3 are exact for this MHA + 4·d MLP block.
    assert {k for k, v in estimate_rows.items() if v == "equal"} == {"estimate palm", "estimate korthikanti",
                                                                      "estimate megatron"}
    assert set(estimate_rows.values()) == {"equal", "explained"}


def test_estimate_gaps_by_hand():
    gaps = {c.left: c.explained for c in reconcile(CFG, B, T, None, None)}
    assert gaps["estimate 2N"] == -ATTENTION == -131_072  # 2N leaves out QK^T and AV
    assert gaps["estimate 6N"] == -3 * ATTENTION == -393_216
    assert gaps["estimate causal"] == -3 * ATTENTION // 2 == -196_608  # the upper triangle, three times
    # 8N assumes 4 forwards of everything; torch re-runs neither the LM head nor the MLP down-projections.
    assert gaps["estimate 8N"] == -(4 * ATTENTION - 2 * 262_144 - 2 * B * T * d * V) == 131_072


@pytest.mark.parametrize("name", [e.name for e in estimates.ESTIMATES])
def test_a_registered_gap_wrong_by_2_is_unexplained(monkeypatch, name):
    entry = estimates.REGISTRY[name]
    wrong = dataclasses.replace(entry, gap=lambda t: entry.gap(t) + 2)
    monkeypatch.setattr(estimates, "ESTIMATES", tuple(wrong if e.name == name else e for e in estimates.ESTIMATES))
    statuses = {c.left: c.status for c in reconcile(CFG, B, T, None, None)}
    assert statuses[f"estimate {name}"] == "unexplained"
    assert all(s != "unexplained" for left, s in statuses.items() if left != f"estimate {name}")


# --------------------------------------------------------------------------------------------------
# The gap between counted and analytic hardware FLOPs of a real step
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["fwd_bwd", "train_step"])
def test_the_rescore_is_explained_with_a_backward(mode):
    assert RESCORE == 65_536
    assert explained_hardware_gap(CFG, B, T, mode, RESCORE) == RESCORE
    assert explain_hardware_gap(CFG, B, T, mode, TRAIN + RESCORE, TRAIN) == (
        "attention backward re-forms QK^T (fused kernel: 5 bmm instead of 4)")


@pytest.mark.parametrize("mode", ["fwd_bwd", "train_step"])
@pytest.mark.parametrize("extra", [2, -2])
def test_rescore_plus_2_is_unexplained(mode, extra):
    assert explained_hardware_gap(CFG, B, T, mode, RESCORE + extra) == 0
    assert explain_hardware_gap(CFG, B, T, mode, TRAIN + RESCORE + extra, TRAIN) == (
        f"unexplained: counted - analytic = {RESCORE + extra:,} FLOPs")


def test_a_rescore_sized_gap_in_a_forward_pass_is_unexplained():
    # A forward has no backward, so there is no QK^T to re-form: the same gap there is a real discrepancy.
    assert explained_hardware_gap(CFG, B, T, "forward", RESCORE) == 0
    assert explain_hardware_gap(CFG, B, T, "forward", FORWARD + RESCORE, FORWARD) == (
        "unexplained: counted - analytic = 65,536 FLOPs")


def test_equal_and_not_counted():
    assert explain_hardware_gap(CFG, B, T, "forward", FORWARD, FORWARD) == "equal"
    assert explain_hardware_gap(CFG, B, T, "fwd_bwd", None, TRAIN) == "not counted"


# --------------------------------------------------------------------------------------------------
# `flopbench run --max-counted-vs-analytic`: exit 1 when the counted FLOPs are off
# --------------------------------------------------------------------------------------------------

RUN = ["run", "--n-layer", "1", "--d-model", "32", "--n-head", "2", "--vocab-size", "64", "--seq-len", "16",
       "--batch-size", "2", "--warmup", "0", "--iters", "1", "--no-gemm", "--device", "cpu", "--no-save",
       "--max-counted-vs-analytic", "0.0001"]


def test_counted_flops_3_percent_off_fail_the_check(monkeypatch, capsys):
    import dataclasses

    real = run_module.Stepper.count

    def count(self, mode):  # every counted step 3 % above what it is
        step = real(self, mode)
        return dataclasses.replace(step, forward=step.forward * 103 // 100,
                                   train=None if step.train is None else step.train * 103 // 100)

    monkeypatch.setattr(run_module.Stepper, "count", count)
    assert main([*RUN, "--checkpointing", "none"]) == 1
    err = capsys.readouterr().err
    for row in ("forward/none", "fwd_bwd/none", "train_step/none"):
        assert f"FAIL max-counted-vs-analytic [{row}]" in err, err


def test_right_counted_flops_pass_the_check(capsys):
    # On the CPU the flash kernel's backward adds exactly the rescore: explained, so 0 unexplained.
    assert main([*RUN, "--checkpointing", "both"]) == 0
    err = capsys.readouterr().err
    assert err.count("ok   max-counted-vs-analytic") == 5 and "FAIL" not in err, err
