"""`flopbench sweep`: spec checking, grid, one results file, OOM rows, --resume, Ctrl-C (exit 130)."""

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from helpers import FailOnCall

from flopbench.api import run as run_module
from flopbench.api.sweep import grid, load_spec, row_key
from flopbench.cli import main
from flopbench.flops.analytic import train_flops
from flopbench.model.config import pad_vocab
from flopbench.output.records import read_records, read_rows

REPO = Path(__file__).resolve().parents[2]
MODEL = '{ name = "m1", preset = "tiny", n_layer = 1, d_model = 32, n_head = 2, vocab_size = 64, max_seq_len = 16 }'


def spec_file(tmp_path, body: str, name: str = "s.toml") -> Path:
    path = tmp_path / name
    path.write_text(body)
    return path


def small_spec(tmp_path, seq_len="[8, 16]", checkpointing='["none", "full"]', modes='["fwd_bwd"]', extra="") -> Path:
    return spec_file(tmp_path, f"""
name = "s"
models = [{MODEL}]
seq_len = {seq_len}
batch_size = [2]
checkpointing = {checkpointing}
dtype = ["fp32"]
device = "cpu"
warmup = 0
iters = 1
gemm = false
modes = {modes}
{extra}
""")


def sweep(argv, capsys):
    code = main(["sweep", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def keys_of(path: Path) -> list[tuple]:
    return [row_key(r) for r in read_records(path)]


def test_grid_order_and_forward_once(tmp_path):
    spec = load_spec(small_spec(tmp_path, modes='["forward", "fwd_bwd", "train_step"]'))
    points = grid(spec)
    assert [(p.seq_len, p.checkpointing, p.modes) for p in points] == [
        (8, "none", ("forward", "fwd_bwd", "train_step")), (8, "full", ("fwd_bwd", "train_step")),
        (16, "none", ("forward", "fwd_bwd", "train_step")), (16, "full", ("fwd_bwd", "train_step"))]
    # the forward is never checkpointed: its row key says "none" whichever point times it
    assert points[0].key("forward") == ("m1", 8, 2, "none", "fp32", "forward")
    assert points[1].key("train_step") == ("m1", 8, 2, "full", "fp32", "train_step")


def test_sweep_writes_one_file_with_every_row(tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, err = sweep(["--spec", str(small_spec(tmp_path)), "--out", str(out), "--json", "--progress"],
                              capsys)
    assert code == 0
    doc = json.loads(stdout)
    jsonl = out / "s" / "rows.jsonl"
    assert doc["files"]["rows.jsonl"] == str(jsonl) and doc["grid_points"] == 4 and doc["rows_skipped"] == 0
    assert keys_of(jsonl) == [("m1", 8, 2, "none", "fp32", "fwd_bwd"), ("m1", 8, 2, "full", "fp32", "fwd_bwd"),
                              ("m1", 16, 2, "none", "fp32", "fwd_bwd"), ("m1", 16, 2, "full", "fp32", "fwd_bwd")]
    rows = read_records(jsonl)
    cfg = pad_vocab(load_spec(small_spec(tmp_path)).models[0], 1)
    assert [r["model_flops"] for r in rows] == [train_flops(cfg, 2, T) for T in (8, 8, 16, 16)]
    assert all(r["status"] == "ok" and r["time_ms"]["n"] == 1 for r in rows)
    assert len(pd.read_csv(out / "s" / "rows.csv")) == 4
    assert json.loads((out / "s" / "environment.json").read_text())["device"] == "cpu"
    assert "sweep s" in err and "100%" in err  # the progress bar is on stderr


def test_oom_row_recorded_and_sweep_goes_on(tmp_path, capsys, monkeypatch):
    flaky = FailOnCall(run_module.time_step, fail_at=2)  # the second grid point runs out of memory
    monkeypatch.setattr(run_module, "time_step", flaky)
    out = tmp_path / "out"
    code, _, _ = sweep(["--spec", str(small_spec(tmp_path)), "--out", str(out)], capsys)
    assert code == 0 and flaky.calls == 4
    rows = read_records(out / "s" / "rows.jsonl")
    assert [r["status"] for r in rows] == ["ok", "oom", "ok", "ok"]
    assert rows[1]["checkpointing"] == "full" and rows[1]["mfu"] is None and "out of memory" in rows[1]["error"]
    # an OOM row counts as present: --resume does not run it again
    calls_before = flaky.calls
    code, _, err = sweep(["--spec", str(small_spec(tmp_path)), "--out", str(out), "--resume"], capsys)
    assert code == 0 and flaky.calls == calls_before and "4 rows already in" in err


def test_model_that_does_not_fit_gives_oom_rows(tmp_path, capsys, monkeypatch):
    real = run_module.build_model

    def build(cfg, device, *args, **kwargs):
        if cfg.name == "big":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")
        return real(cfg, device, *args, **kwargs)

    monkeypatch.setattr(run_module, "build_model", build)
    spec = small_spec(tmp_path, seq_len="[8]").read_text().replace(
        f"models = [{MODEL}]", f'models = [{MODEL}, {MODEL.replace("m1", "big")}]')
    out = tmp_path / "out"
    code, _, err = sweep(["--spec", str(spec_file(tmp_path, spec)), "--out", str(out)], capsys)
    assert code == 0 and "big does not fit on cpu" in err
    rows = read_records(out / "s" / "rows.jsonl")
    assert [(r["model"], r["checkpointing"], r["status"]) for r in rows] == [
        ("m1", "none", "ok"), ("m1", "full", "ok"), ("big", "none", "oom"), ("big", "full", "oom")]


def test_resume_runs_only_missing_points(tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    assert sweep(["--spec", str(small_spec(tmp_path, seq_len="[8]")), "--out", str(out)], capsys)[0] == 0
    # again without --resume: refuses to mix two sweeps in one file
    code, stdout, err = sweep(["--spec", str(small_spec(tmp_path, seq_len="[8]")), "--out", str(out)], capsys)
    assert code == 2 and stdout == "" and "already has rows: pass --resume" in err and err.count("\n") == 1

    real, calls = run_module.time_step, []
    monkeypatch.setattr(run_module, "time_step", lambda *a, **k: calls.append(1) or real(*a, **k))
    code, stdout, err = sweep(["--spec", str(small_spec(tmp_path, seq_len="[8, 16]")), "--out", str(out),
                               "--resume", "--json"], capsys)
    doc = json.loads(stdout)
    assert code == 0 and len(calls) == 2 and doc["rows_skipped"] == 2 and doc["rows_total"] == 4
    assert [row_key(r)[1:4] for r in doc["rows"]] == [(16, 2, "none"), (16, 2, "full")]
    keys = keys_of(out / "s" / "rows.jsonl")
    assert len(keys) == len(set(keys)) == 4
    assert len(pd.read_csv(out / "s" / "rows.csv")) == 4  # the CSV keeps the rows of the first session


def test_ctrl_c_keeps_finished_rows_and_exits_130(tmp_path, capsys, monkeypatch):
    real = run_module.time_step
    monkeypatch.setattr(run_module, "time_step", FailOnCall(real, fail_at=3, error=KeyboardInterrupt()))
    out = tmp_path / "out"
    code, stdout, err = sweep(["--spec", str(small_spec(tmp_path)), "--out", str(out)], capsys)
    assert code == 130 and stdout == ""
    assert "interrupted: 2 new rows kept" in err and "--resume" in err
    assert keys_of(out / "s" / "rows.jsonl") == [("m1", 8, 2, "none", "fp32", "fwd_bwd"),
                                                 ("m1", 8, 2, "full", "fp32", "fwd_bwd")]
    assert len(pd.read_csv(out / "s" / "rows.csv")) == 2

    monkeypatch.setattr(run_module, "time_step", real)
    code, _, _ = sweep(["--spec", str(small_spec(tmp_path)), "--out", str(out), "--resume"], capsys)
    keys = keys_of(out / "s" / "rows.jsonl")
    assert code == 0 and len(keys) == len(set(keys)) == 4


@pytest.mark.parametrize(
    "body, fragment",
    [
        (None, "no such file"),
        ("models = [", "not TOML"),
        ('models = ["tiny"]\nseqlen = [8]', "unknown key 'seqlen'"),
        ('seq_len = [8]', "missing key 'models'"),
        ('models = ["gpt5"]', "unknown model 'gpt5'"),
        ('models = []', "give at least one model"),
        ('models = ["tiny"]\nseq_len = ["long"]', "seq_len = 'long' is not allowed"),
        ('models = ["tiny"]\nseq_len = [0]', "seq_len = 0 is not allowed"),
        ('models = ["tiny"]\nseq_len = [4096]\ndevice = "cpu"', "seq_len=4096 exceeds"),
        ('models = ["tiny"]\ncheckpointing = ["both"]', "checkpointing = 'both' is not allowed: none, full"),
        ('models = ["tiny"]\ndtype = ["int8"]', "dtype = 'int8' is not allowed"),
        ('models = ["tiny"]\ndtype = ["tf32"]\ndevice = "cpu"', "tf32 needs a CUDA device"),
        ('models = ["tiny"]\niters = 0', "iters = 0 is not allowed"),
        ('models = ["tiny"]\ncompile = "yes"', "compile = 'yes' is not allowed: true or false"),
        ('models = ["tiny"]\npeak_tflops = -1', "peak_tflops = -1 is not allowed"),
        ('models = [{ name = "a", preset = "tiny", layers = 2 }]', "model table key 'layers' is unknown"),
        ('models = [{ preset = "tiny" }]', "needs name"),
        ('models = [{ name = "a", preset = "tiny", n_head = 3 }]', "does not divide d_model"),
        ('models = ["tiny", { name = "tiny", preset = "tiny" }]', "'tiny' appears twice"),
        ('models = ["tiny"]\nmodes = ["backward"]', "modes = 'backward' is not allowed"),
        ('models = ["tiny"]\nattention = "paged"', "attention = 'paged' is not allowed: one of sdpa, flex"),
        ('name = ".."\nmodels = ["tiny"]\nseq_len = [8]\nbatch_size = [1]\ndevice = "cpu"',
         "name = '..' is not allowed"),
        ('name = "a/b"\nmodels = ["tiny"]', "name = 'a/b' is not allowed: a folder name has no path separator"),
        ('name = "a\\u0000b"\nmodels = ["tiny"]', "name = 'a\\x00b' is not allowed"),
    ],
)
def test_bad_spec_is_one_line_exit_2(tmp_path, capsys, body, fragment):
    path = tmp_path / "missing.toml" if body is None else spec_file(tmp_path, body)
    code, out, err = sweep(["--spec", str(path), "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1 and fragment in err, err
    assert not (tmp_path / "out").exists()  # nothing ran, nothing written
    assert not list(tmp_path.glob("rows.*")) and not (tmp_path / "environment.json").exists()  # nor beside it


def test_cuda_spec_without_cuda_is_exit_2(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    code, _, err = sweep(["--spec", str(REPO / "benchmarks" / "gpt2_family.toml")], capsys)
    assert code == 2 and "CUDA is not available" in err


def test_shipped_specs(monkeypatch):
    smoke = grid(load_spec(REPO / "benchmarks" / "cpu_smoke.toml"))
    assert smoke[0].cfg.name == "tiny" and {p.cfg.name for p in smoke} == {"tiny", "tiny-wide"}
    assert len(smoke) == 8 and sum(len(p.modes) for p in smoke) == 20
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # only to read the GPU spec here
    family = load_spec(REPO / "benchmarks" / "gpt2_family.toml")
    points = grid(family)
    assert family.device == "cuda" and family.dtype == ("bf16",)
    assert [p.cfg.name for p in points[::2]] == ["gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"]
    assert {(p.seq_len, p.checkpointing) for p in points} == {(1024, "none"), (1024, "full")}


def test_python_api_sweep_matches_the_file(tmp_path):
    import flopbench

    doc = flopbench.sweep(small_spec(tmp_path), out=str(tmp_path / "out"), resume=False)
    df = flopbench.to_dataframe(doc)
    on_disk = read_rows(tmp_path / "out")
    assert len(df) == len(on_disk) == 4  # 2 seq_len x 2 checkpointing, fwd_bwd only
    assert sorted(df["seq_len"].tolist()) == [8, 8, 16, 16]


# -- resuming only rows measured as the spec says now ---------------------------------------------------------


def test_rows_carry_the_sweeps_timing_options(tmp_path, capsys):
    out = tmp_path / "out"
    assert sweep(["--spec", str(small_spec(tmp_path, seq_len="[8]", extra="peak_tflops = 2.5")), "--out", str(out)],
                 capsys)[0] == 0
    rows = read_records(out / "s" / "rows.jsonl")
    assert [r["timing"] for r in rows] == [{"warmup": 0, "iters": 1, "compile": False, "gemm": False,
                                            "peak_tflops": 2.5, "attention": "sdpa",
                                            "fp8_recipe": "tensorwise"}] * 2
    assert all(r["peak_tflops"] == 2.5 and r["time_ms"]["n"] == 1 for r in rows)  # what the timing dict says


@pytest.mark.parametrize("old, new, says", [
    ("n_layer = 1", "n_layer = 2", "model m1: config.n_layer 1 in the file vs 2 in the spec"),
    ("iters = 1", "iters = 2", "model m1: iters 1 in the file vs 2 in the spec"),
    ("warmup = 0", "warmup = 1", "model m1: warmup 0 in the file vs 1 in the spec"),
    ("gemm = false", "gemm = true", "model m1: gemm False in the file vs True in the spec"),
    ("modes = [", "peak_tflops = 5\nmodes = [", "model m1: peak_tflops None in the file vs 5.0 in the spec"),
    ("modes = [", "attention = 'flex'\nmodes = [", "model m1: attention 'sdpa' in the file vs 'flex' in the spec"),
    ("seq_len = [8, 16]", "seq_len = [8]", "model m1: seq_len 16 is not in the spec's [8]"),
])
def test_resume_refuses_rows_measured_another_way(tmp_path, capsys, old, new, says):
    out = tmp_path / "out"
    assert sweep(["--spec", str(small_spec(tmp_path)), "--out", str(out)], capsys)[0] == 0
    before = (out / "s" / "rows.jsonl").read_bytes()
    spec = small_spec(tmp_path)
    assert old in spec.read_text()
    spec.write_text(spec.read_text().replace(old, new))
    code, stdout, err = sweep(["--spec", str(spec), "--out", str(out), "--resume"], capsys)
    assert code == 2 and stdout == "" and err.count("\n") == 1, err
    assert says in err and "use a new --out, or drop those rows" in err
    assert (out / "s" / "rows.jsonl").read_bytes() == before


def test_resume_refuses_rows_of_an_older_flopbench_without_timing_options(tmp_path, capsys):
    out = tmp_path / "out"
    assert sweep(["--spec", str(small_spec(tmp_path, seq_len="[8]")), "--out", str(out)], capsys)[0] == 0
    jsonl = out / "s" / "rows.jsonl"
    jsonl.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "timing"}) + "\n"
                             for r in read_records(jsonl)))
    (out / "s" / "rows.csv").unlink()
    code, _, err = sweep(["--spec", str(small_spec(tmp_path, seq_len="[8, 16]")), "--out", str(out), "--resume"],
                         capsys)
    assert code == 2 and err.count("\n") == 1
    assert ("the row has no timing options (warmup, iters, compile, gemm, peak_tflops, attention, fp8_recipe: "
            "written by an older" in err)


def test_compiled_sweep_times_only_its_modes(tmp_path, capsys, compiler):
    """A sweep with `compile = true` and `modes = ["train_step"]` times compiled train steps only, each row
    with its compile time."""
    spec = small_spec(tmp_path, seq_len="[8]", modes='["train_step"]', extra="compile = true")
    out = tmp_path / "out"
    code, _, err = sweep(["--spec", str(spec), "--out", str(out)], capsys)
    assert code == 0, err
    rows = read_records(out / "s" / "rows.jsonl")
    assert [(r["checkpointing"], r["mode"]) for r in rows] == [("none", "train_step"), ("full", "train_step")]
    for r in rows:
        assert r["status"] == "ok" and r["timing"]["compile"] is True and r["compile_s"] > 0, r


MOE_FIELDS = ("n_experts", "top_k", "d_ff_expert", "n_shared_experts", "d_ff_shared", "dense_layers")


def test_resume_refuses_rows_whose_config_lacks_a_field_the_spec_sets(tmp_path, capsys):
    """Rows written before the mixture-of-experts fields existed, resumed under a spec that makes the same
    model name an MoE model: a field missing from the row's config is unknown, which is a difference, so the
    dense rows are not kept as rows of the MoE model (issue 24, item 17: a mutant that skipped missing fields
    survived every test)."""
    out = tmp_path / "out"
    assert sweep(["--spec", str(small_spec(tmp_path, seq_len="[8]")), "--out", str(out)], capsys)[0] == 0
    jsonl = out / "s" / "rows.jsonl"
    old_rows = [{**r, "config": {k: v for k, v in r["config"].items() if k not in MOE_FIELDS}}
                for r in read_records(jsonl)]
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in old_rows))
    (out / "s" / "rows.csv").unlink()
    spec = small_spec(tmp_path, seq_len="[8]")
    spec.write_text(spec.read_text().replace("max_seq_len = 16 }", "max_seq_len = 16, n_experts = 4, top_k = 2 }"))
    before = jsonl.read_bytes()
    code, stdout, err = sweep(["--spec", str(spec), "--out", str(out), "--resume"], capsys)
    assert code == 2 and stdout == "" and err.count("\n") == 1, err
    assert "model m1: config.n_experts 'missing' in the file vs 4 in the spec" in err, err
    assert jsonl.read_bytes() == before
