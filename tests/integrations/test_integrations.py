"""`flopbench.integrations.MFUCallback` inside a real (tiny, CPU, offline) Hugging Face Trainer: the logged
MFU is the counted step FLOPs over the callback's timed window, checked against a second count of the
model outside the Trainer, a hand formula, and the Trainer's own 6N `total_flos`."""

import importlib
import os
import sys
import warnings

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no hub download: the model is built from a config
transformers = pytest.importorskip("transformers", reason="transformers is an extra: pip install -e .[hf]")
pytest.importorskip("accelerate", reason="the Trainer needs accelerate: pip install -e .[hf]")

from flopbench.errors import UsageError  # noqa: E402
from flopbench.flops.counter import count_module  # noqa: E402
from flopbench.integrations import MFUCallback, add_mfu_callback  # noqa: E402
from flopbench.model.inputs import Inputs  # noqa: E402

V, D, FF, L, H, B, T = 256, 64, 128, 2, 4, 2, 32  # vocab, hidden, MLP, layers, heads, batch, sequence
PEAK = 0.5  # TFLOP/s, given: the CPU has no table entry
RATES = ("mfu", "hfu", "achieved_tflops", "tokens_per_s")


def tiny_llama():
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=V, hidden_size=D, intermediate_size=FF, num_hidden_layers=L,
                                   num_attention_heads=H, num_key_value_heads=H, max_position_embeddings=T,
                                   tie_word_embeddings=False)
    return transformers.LlamaForCausalLM(cfg)


def train(tmp_path, callback=None, add=None, **args):
    """A Trainer over 16 random sequences of T tokens; `callback` in callbacks=, or `add(trainer)` after."""
    ids = torch.randint(0, V, (16, T), generator=torch.Generator().manual_seed(0))
    dataset = [{"input_ids": row, "labels": row} for row in ids]
    settings = dict(output_dir=str(tmp_path), max_steps=6, logging_steps=2, per_device_train_batch_size=B,
                    use_cpu=True, report_to=[], save_strategy="no", disable_tqdm=True) | args
    trainer = transformers.Trainer(model=tiny_llama(), args=transformers.TrainingArguments(**settings),
                                   train_dataset=dataset, callbacks=[callback] if callback else [])
    added = add(trainer) if add else None
    trainer.train()
    return trainer, added or callback


def micro_batch_flops() -> int:
    """flopbench's count of one forward + backward of a batch B x T, outside the Trainer (on the CPU)."""
    ids = torch.zeros(B, T, dtype=torch.long)
    return count_module(tiny_llama(), Inputs.of({"input_ids": ids, "labels": ids}), lambda out: out.loss,
                        meta=False).train


def logged(trainer) -> list[dict]:
    return [h for h in trainer.state.log_history if "achieved_tflops" in h]


def check_rates(trainer, callback, step_flops: int, tokens_per_step: int):
    """Each logged rate against the counted FLOPs per optimizer step x steps / the recorded window."""
    logs = logged(trainer)
    assert [h["step"] for h in logs] == [w.step for w in callback.windows] == [2, 4, 6][:len(logs)]
    assert [w.steps for w in callback.windows] == [1, 2, 2][:len(logs)]  # step 1 ran under the counter
    for h, w in zip(logs, callback.windows):
        assert w.seconds > 0 and w.model_flops == step_flops * w.steps
        assert h["mfu"] == pytest.approx(step_flops * w.steps / w.seconds / (PEAK * 1e12), rel=1e-12)
        assert h["achieved_tflops"] == pytest.approx(h["mfu"] * PEAK, rel=1e-12)
        assert h["tokens_per_s"] == pytest.approx(tokens_per_step * w.steps / w.seconds, rel=1e-12)


def test_logged_mfu_is_the_counted_step_over_the_window_and_exceeds_the_trainers_6n(tmp_path):
    trainer, cb = train(tmp_path, MFUCallback(peak_tflops=PEAK))
    flops = micro_batch_flops()
    assert cb.model_flops == cb.hardware_flops == flops and cb.tokens == B * T and cb.uncounted == {}
    check_rates(trainer, cb, flops, B * T)
    assert all(h["hfu"] == h["mfu"] for h in logged(trainer))  # no recomputation
    assert "mfu" not in trainer.state.log_history[-1]  # the final summary: no step since the last log
    # The Trainer's total_flos: 6 x tokens x non-embedding parameters (lm_head and RMSNorm weights included).
    n = trainer.model.num_parameters(exclude_embeddings=True)
    assert n == L * (4 * D * D + 3 * D * FF + 2 * D) + D + V * D
    assert trainer.state.total_flos == 6 * 6 * B * T * n
    # flopbench: 6 x tokens per matmul weight (no norm weights), plus attention's QK^T and AV: forward 2 bmm
    # of 2·B·H·T²·d_head each, backward 5 (the fused kernel re-forms QK^T), per layer.
    norms = 2 * L * D + D
    attention = 7 * 2 * B * H * T * T * (D // H) * L
    assert flops == 6 * B * T * (n - norms) + attention
    assert flops - 6 * B * T * n == attention - 6 * B * T * norms > 0


def test_gradient_accumulation_counts_every_micro_batch_and_add_puts_it_first(tmp_path):
    seen = []

    class Reporter(transformers.TrainerCallback):  # stands in for TensorBoard / W&B, which run in order
        def on_log(self, args, state, control, logs=None, **kwargs):
            seen.append(dict(logs))

    trainer, cb = train(tmp_path, Reporter(), add=lambda t: add_mfu_callback(t, peak_tflops=PEAK),
                        gradient_accumulation_steps=2, max_steps=4)
    assert trainer.callback_handler.callbacks[0] is cb
    flops = micro_batch_flops()
    assert cb.model_flops == 2 * flops and cb.tokens == 2 * B * T  # one optimizer step = 2 micro-batches
    check_rates(trainer, cb, 2 * flops, 2 * B * T)
    assert [s["mfu"] for s in seen if "mfu" in s] == [h["mfu"] for h in logged(trainer)] and len(seen) >= 2


def test_gradient_checkpointing_gives_hfu_above_mfu(tmp_path):
    fields = transformers.TrainingArguments.__dataclass_fields__  # renamed in transformers 5.x
    name = "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"
    trainer, cb = train(tmp_path, MFUCallback(peak_tflops=PEAK), max_steps=4, **{name: True})
    flops = micro_batch_flops()
    recomputed = cb.hardware_flops - cb.model_flops
    assert cb.model_flops == flops and 0 < recomputed < flops / 3  # at most the forward is recomputed
    for h in logged(trainer):
        assert h["hfu"] / h["mfu"] == pytest.approx(cb.hardware_flops / cb.model_flops, rel=1e-12)


def test_without_a_peak_one_warning_and_rates_without_mfu(tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer, cb = train(tmp_path, MFUCallback(), max_steps=4)
    ours = [str(w.message) for w in caught if "MFUCallback" in str(w.message)]
    assert len(ours) == 1 and "no GPU detected" in ours[0] and "achieved_tflops and tokens_per_s only" in ours[0]
    logs = logged(trainer)
    assert len(logs) == 2 and all("mfu" not in h and "hfu" not in h for h in logs)
    for h, w in zip(logs, cb.windows):
        assert h["achieved_tflops"] == pytest.approx(cb.model_flops * w.steps / w.seconds / 1e12, rel=1e-12)


@pytest.mark.parametrize("peak", [-1.0, 0, float("nan"), "989"])
def test_a_bad_peak_is_a_usage_error(peak):
    with pytest.raises(UsageError, match="peak"):
        MFUCallback(peak_tflops=peak)


def test_without_transformers_the_import_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers now raises ImportError
    monkeypatch.delitem(sys.modules, "flopbench.integrations")
    with pytest.raises(ImportError, match=r"pip install 'flopbench\[hf\]'"):
        importlib.import_module("flopbench.integrations")
