"""Selective checkpointing with sliding windows: the attention core runs four times (forward, two in
backward, one recomputed), and a mask-based kernel runs each over the whole T x T square."""

from flopbench.api.run import run
from flopbench.model.config import ModelConfig

# GPT-2 style block, d = 32, V = 64, one sliding layer with W = 4, B = 2, T = 16
CFG = ModelConfig("win", n_layer=1, d_model=32, n_head=2, vocab_size=64, max_seq_len=16, layer_types=("sliding",),
                  sliding_window=4)
B, T, W, d = 2, 16, 4, 32


def test_selective_row_with_a_window_by_hand():
    weights = 2 * B * T * (12 * d * d + d * 64)  # block matrices and the (tied) LM head
    band = 4 * B * T * W * d  # QK^T + AV over the window
    square_extra = 4 * B * T * (T - W) * d  # what a mask-based kernel scores beyond the window
    forward = weights + band
    doc = run(CFG, device="cpu", batch_size=B, seq_len=T, checkpointing="selective", modes=("fwd_bwd",), warmup=0,
              iters=1, gemm=False, out=None, progress=lambda m: None)
    (row,) = doc["rows"]
    assert row["model_flops"] == 3 * forward
    # forward + backward (3 passes) + the recomputed attention core (a 4th), each over the full square
    assert row["hardware_flops_analytic"] == 3 * forward + band + 4 * square_extra
    # counted on the CPU: the fused kernel's backward forms QK^T once more, over the full square
    assert row["hardware_flops"] - row["hardware_flops_analytic"] == 2 * B * T * T * d
    assert row["hardware_flops_note"].startswith("attention backward re-forms QK^T")
