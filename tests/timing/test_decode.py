"""The decode loop: greedy tokens equal a full forward's, one compiled graph serves every static decode step
(dynamo's own counter, CPU), CUDA graphs asked for on CUDA, and host time vs device time (a fake GPU clock)."""

import pytest
import torch
from torch._dynamo.testing import CompileCounter

from flopbench.model.config import LLAMA_ARCH, ModelConfig
from flopbench.model.gpt import build_model
from flopbench.timing import decode
from flopbench.timing.decode import Generator, StepTime, compile_options, time_calls

GPT = ModelConfig("g", n_layer=2, d_model=32, n_head=4, vocab_size=64, max_seq_len=24)
# Mistral-like: GQA and a sliding window of 4 in every layer
WINDOWED = ModelConfig("w", n_layer=2, d_model=32, n_head=4, n_kv_head=2, d_ff=48, vocab_size=64, max_seq_len=24,
                       layer_types=("sliding", "sliding"), sliding_window=4, **LLAMA_ARCH)


@pytest.mark.parametrize("cfg", [GPT, WINDOWED], ids=["gpt2", "sliding-gqa"])
def test_generated_tokens_are_the_greedy_tokens_of_a_full_forward(cfg):
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    gen = Generator(model, cfg, batch_size=2, prompt_len=6, gen_len=5)
    gen.generate()  # a first generation leaves its K/V in the cache: the second must mask them
    gen.prefill()
    tokens = [gen.token]
    for step in range(4):
        gen.decode(step)
        tokens.append(gen.token)
    ids = gen.prompt
    with torch.no_grad():
        for token in tokens:  # greedy by hand: the argmax of the last position of the whole sequence so far
            expected = model(ids)[:, -1:].argmax(-1)
            assert torch.equal(token, expected)
            ids = torch.cat((ids, expected), dim=1)


def test_one_graph_serves_every_decode_step(monkeypatch):
    counters, options = [], []
    real = torch.compile

    def counting_compile(fn, **kwargs):  # dynamo with a counting backend in place of inductor
        counters.append(CompileCounter())
        options.append(kwargs)
        return real(fn, backend=counters[-1], **{k: v for k, v in kwargs.items() if k != "mode"})

    monkeypatch.setattr(torch, "compile", counting_compile)
    torch._dynamo.reset()
    gen = Generator(build_model(WINDOWED).eval(), WINDOWED, batch_size=2, prompt_len=6, gen_len=8, compile=True)
    gen.generate()
    gen.generate()  # 2 prefills, 14 decode steps at positions 6 .. 12
    prefill, step = counters
    assert options == [{"dynamic": False}, {"dynamic": False}]  # static shapes; no CUDA graphs on the CPU
    assert (prefill.frame_count, step.frame_count) == (1, 1)  # compiled once: no recompile at a new position
    explained = torch._dynamo.explain(gen.decode_step)(gen.token, gen.positions[3])
    assert (explained.graph_count, explained.graph_break_count) == (1, 0)


def test_decode_compiles_with_cuda_graphs_on_cuda():
    assert compile_options(torch.device("cuda")) == {"mode": "reduce-overhead", "dynamic": False}
    assert compile_options(torch.device("cpu")) == {"dynamic": False}


class FakeGpuClock:
    """A CUDA clock whose device times are given: mark i is at `device_at[i]` ms."""

    cuda = True

    def __init__(self, device_at):
        self.device_at, self.marks, self.synced = list(device_at), 0, False

    def mark(self):
        self.marks += 1
        return self.device_at[self.marks - 1]

    def sync(self):
        self.synced = True

    def elapsed_ms(self, start, end):
        assert self.synced, "read before the sync"
        return end - start


def test_host_time_beside_device_time_and_launch_bound(monkeypatch):
    host = iter([0.0, 0.002, 1.0, 1.0005])  # perf_counter: the first launch took 2 ms, the second 0.5 ms
    monkeypatch.setattr(decode.time, "perf_counter", lambda: next(host))
    clock = FakeGpuClock([0.0, 1.0, 1.0, 4.0])  # the GPU ran them in 1 ms and 3 ms
    times = time_calls([lambda: None, lambda: None], clock)
    assert times == [StepTime(1.0, pytest.approx(2.0), True), StepTime(3.0, pytest.approx(0.5), False)]


def test_launch_bound_is_none_on_the_cpu():
    (t,) = time_calls([lambda: sum(range(1000))], decode.Clock("cpu"))
    assert t.launch_bound is None and 0 < t.host_ms <= t.device_ms
