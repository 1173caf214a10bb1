"""Malformed invocations across every command: each exits 2 with one line on stderr naming the problem,
never a traceback, and never a partly written results file."""

import pytest
import torch

from flopbench.cli import main

TINY_RUN = ["run", "--n-layer", "1", "--d-model", "32", "--n-head", "2", "--vocab-size", "64", "--seq-len", "8",
            "--iters", "1", "--warmup", "0", "--no-gemm", "--device", "cpu"]
GOOD_SPEC = """
name = "s"
models = ["tiny"]
seq_len = [8]
batch_size = [1]
checkpointing = ["none"]
dtype = ["fp32"]
device = "cpu"
iters = 1
"""


def files(tmp_path):
    """What the cases may read: (name, content) files written into tmp_path."""
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "notjson.jsonl").write_text("{this is not json\n")
    (tmp_path / "notjson.json").write_text("[1, 2")
    (tmp_path / "wrongschema.json").write_text('{"hello": 1}')
    (tmp_path / "nottoml.toml").write_text("models = [unclosed\n")
    (tmp_path / "empty.toml").write_text("")
    (tmp_path / "unknownkey.toml").write_text(GOOD_SPEC + 'colour = "red"\n')
    (tmp_path / "unknownmodel.toml").write_text(GOOD_SPEC.replace('"tiny"', '"gpt5"'))
    (tmp_path / "wrongtype.toml").write_text(GOOD_SPEC.replace("seq_len = [8]", 'seq_len = "long"'))
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "emptydir").mkdir()


CASES = [
    # count
    (["count", "--model", "gpt5"], "unknown model 'gpt5'"),
    (["count", "--n-head", "7"], "n_head=7 does not divide d_model=768"),
    (["count", "--n-layer", "0"], "'0' must be a positive integer"),
    (["count", "--d-model", "-64"], "'-64' must be a positive integer"),
    (["count", "--d-model", "big"], "'big' is not an integer"),
    (["count", "--vocab-size", "1.5"], "'1.5' is not an integer"),
    (["count", "--seq-len", "4096"], "seq_len=4096 exceeds the model's 1024 positions"),
    (["count", "--batch-size", "0"], "'0' must be a positive integer"),
    (["count", "--bogus"], "unrecognized arguments: --bogus"),
    # sizes torch cannot build, refused before any tensor (before: "Storage size calculation overflowed")
    (["count", "--batch-size", "100000000000"],
     ("batch_size x seq_len x the widest layer = 100000000000 x 1024 x 50257 "
      "= 5,146,316,800,000,000,000 elements, above the limit of 1,152,921,504,606,846,976 (2**60")),
    (["count", "--max-seq-len", "1000000000", "--seq-len", "1000000000"],
     "batch_size x n_head x seq_len^2 = 1 x 12 x 1000000000^2 = 12,000,000,000,000,000,000 elements, above the limit"),
    # 12 blocks of 12·d² weights alone, d = 2e9: 144 x 4e18 = 5.76e20 parameters
    (["count", "--d-model", "2000000000", "--n-head", "1"], "the parameter count = 576,"),
    # sizes beyond MAX_SIZE = 2**60, even for the analytic count (before: OverflowError formatting 10**300 layers)
    (["count", "--no-torch", "--n-layer", "1" + "0" * 300],
     "n_layer=an integer of about 301 digits is above the limit"),
    (["count", "--no-torch", "--batch-size", str(2**60 + 1)], f"batch_size={2**60 + 1} is above the limit of"),
    (["count", "--no-torch", "--n-layer", "9" * 5000], "an integer of 5000 digits is too large"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    # run
    ([*TINY_RUN[:-2], "--device", "tpu"], "invalid choice: 'tpu'"),
    ([*TINY_RUN, "--dtype", "int8"], "invalid choice: 'int8'"),
    ([*TINY_RUN, "--dtype", "tf32"], "--dtype tf32 needs a CUDA device"),
    ([*TINY_RUN, "--peak-tflops", "-3"], "'-3' must be a positive number"),
    ([*TINY_RUN, "--peak-tflops", "nan"], "'nan' must be a positive number"),
    ([*TINY_RUN, "--iters", "0"], "'0' must be a positive integer"),
    # before: ran for ever (2**63 - 1 timed steps)
    ([*TINY_RUN, "--iters", str(2**63 - 1)], f"'{2**63 - 1}' is above the limit of 10,000 timed steps (MAX_ITERS)"),
    ([*TINY_RUN, "--iters", "10001"], "'10001' is above the limit of 10,000 timed steps"),
    ([*TINY_RUN, "--warmup", "1001"], "'1001' is above the limit of 1,000 warm-up steps (MAX_WARMUP)"),
    ([*TINY_RUN, "--batch-size", "0"], "'0' must be a positive integer"),
    ([*TINY_RUN, "--warmup", "-1"], "'-1' must be a positive integer"),
    ([*TINY_RUN, "--checkpointing", "half"], "invalid choice: 'half'"),
    ([*TINY_RUN, "--pad-vocab", "0"], "'0' must be a positive integer"),
    ([*TINY_RUN, "--seq-len", "100000"], "seq_len=100000 exceeds"),
    ([*TINY_RUN, "--out", "{tmp}/a_file/sub"], "cannot write there"),
    ([*TINY_RUN, "--max-vs-baseline", "{tmp}/missing.json:0.05"], "missing.json: no such file"),
    ([*TINY_RUN, "--max-vs-baseline", "{tmp}/empty.txt:0.05"], "not JSON"),
    ([*TINY_RUN, "--max-vs-baseline", "{tmp}/notjson.json:0.05"], "not JSON"),
    ([*TINY_RUN, "--max-vs-baseline", "{tmp}/wrongschema.json:0.05"], "with a 'rows' list"),
    ([*TINY_RUN, "--max-vs-baseline", "{tmp}/wrongschema.json:7"], "FILE:TOLERANCE"),
    ([*TINY_RUN, "--min-mfu", "abc"], "'abc' is not a number"),
    ([*TINY_RUN, "--dist", "ddp"], "needs torchrun"),
    # issue 24, item 12: options the command would ignore. Before: accepted, and the run went on without them
    ([*TINY_RUN, "--no-save", "--out", "{tmp}/r"], "argument --out: not allowed with argument --no-save"),
    ([*TINY_RUN, "--checkpointing", "none", "--min-hfu", "0.3"],
     "--min-hfu 0.3: it checks train_step rows with checkpointing full, and this run times none"),
    ([*TINY_RUN, "--checkpointing", "full", "--min-mfu", "0.3"],
     "--min-mfu 0.3: it checks train_step rows with checkpointing none, and this run times none"),
    # infer: before, --seq-len was accepted and ignored (exit 0); its lengths are --prompt-len and --gen-len
    (["infer", "--seq-len", "100000"], "unrecognized arguments: --seq-len 100000"),
    # sweep
    (["sweep", "--spec", "{tmp}/missing.toml"], "missing.toml"),
    (["sweep", "--spec", "{tmp}/nottoml.toml"], "TOML"),
    (["sweep", "--spec", "{tmp}/empty.toml"], "models"),
    (["sweep", "--spec", "{tmp}/unknownkey.toml"], "colour"),
    (["sweep", "--spec", "{tmp}/unknownmodel.toml"], "gpt5"),
    (["sweep", "--spec", "{tmp}/wrongtype.toml"], "seq_len"),
    (["sweep"], "--spec"),
    # report
    (["report", "{tmp}/missing"], "missing"),
    (["report", "{tmp}/notjson.jsonl"], "not JSON"),
    (["report", "{tmp}/emptydir"], "no rows.jsonl"),
    # estimate
    (["estimate", "--model", "gpt2", "--tokens", "abc"], "abc"),
    (["estimate", "--model", "gpt2", "--tokens", "-5"], "-5"),
    (["estimate", "--model", "gpt2", "--tokens", "1B", "--gpus", "0"], "'0' must be a positive integer"),
    (["estimate", "--model", "gpt2", "--tokens", "1B", "--mfu", "1.5"], "1.5"),
    (["estimate", "--model", "gpt2", "--tokens", "1B", "--gpu", "b999"], "b999"),
    (["estimate", "--model", "gpt2", "--tokens", "1B", "--mfu-from", "{tmp}/missing"], "missing"),
    (["estimate", "--model", "gpt5", "--tokens", "1B"], "unknown model 'gpt5'"),
    # gpus
    (["gpus", "--bogus"], "unrecognized arguments: --bogus"),
]


@pytest.mark.parametrize("argv, fragment", CASES, ids=[" ".join(a)[:60] for a, _ in CASES])
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, argv, fragment):
    files(tmp_path)
    out_dir = tmp_path / "results"
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    if argv and argv[0] in ("run", "sweep") and "--out" not in argv:
        argv += ["--out", str(out_dir)]
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2, (argv, out, err)
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("flopbench: error: "), err
    assert fragment.replace("{tmp}", str(tmp_path)) in err, err
    assert "Traceback" not in err
    assert not list(out_dir.rglob("rows.jsonl")), "a results file was started"


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_missing(capsys, tmp_path):
    assert main([*TINY_RUN[:-2], "--device", "cuda", "--out", str(tmp_path)]) == 2
    assert "--device cuda: CUDA is not available" in capsys.readouterr().err
    assert not list(tmp_path.rglob("rows.jsonl"))
