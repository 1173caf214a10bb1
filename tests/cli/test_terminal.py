"""What a new user sees first: bare `flopbench`, `--version`, and numbers formatted for people."""

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from flopbench import __version__
from flopbench.cli import main
from flopbench.output import text

ROOT = Path(__file__).resolve().parents[2]


def test_bare_flopbench_lists_the_commands(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    for command in ("count", "run", "infer", "gpus", "sweep", "report", "estimate"):
        assert f"    {command} " in out


def test_version():
    done = subprocess.run([sys.executable, "-m", "flopbench", "--version"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == f"flopbench {__version__}"


def test_one_gpu_is_singular_and_a_small_gemm_ceiling_keeps_its_digits(capsys):
    assert main(["estimate", "--model", "gpt2", "--tokens", "1B"]) == 0
    assert "days on 1 GPU\n" in capsys.readouterr().out
    assert main(["estimate", "--model", "gpt2", "--tokens", "1B", "--gpus", "8"]) == 0
    assert "days on 8 GPUs\n" in capsys.readouterr().out
    assert main(["run", "--model", "tiny", "--n-layer", "1", "--seq-len", "16", "--batch-size", "1", "--iters", "1",
                 "--warmup", "0", "--checkpointing", "none", "--device", "cpu", "--no-save"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("GEMM ceiling:"))
    shown = line.split()[2]  # a CPU reaches ~0.02-0.3 TFLOP/s: three significant digits, never "0.0"
    assert float(shown) > 0 and shown != "0.0" and len(shown.replace("0.", "").lstrip("0")) >= 2


# --------------------------------------------------------------------------------------------------
# Output that fits the terminal: every line <= COLUMNS (100 here), `--wide` unfolded
# --------------------------------------------------------------------------------------------------

TINY = ["--model", "tiny", "--n-layer", "1", "--d-model", "32", "--n-head", "2", "--vocab-size", "64"]
TINY_RUN = ["run", *TINY, "--seq-len", "16", "--batch-size", "1", "--iters", "2", "--warmup", "1", "--device", "cpu",
            "--no-gemm", "--no-save", "--checkpointing", "none"]
TINY_SPEC = """name = "tiny_terminal"
models = [{ name = "t1", preset = "tiny", n_layer = 1, d_model = 32, n_head = 2, vocab_size = 64 }]
seq_len = [8, 16]
batch_size = [1]
checkpointing = ["none"]
dtype = ["fp32"]
device = "cpu"
warmup = 0
iters = 1
gemm = false
modes = ["forward", "fwd_bwd"]
"""


def widest(text: str) -> int:
    return max(len(line) for line in text.splitlines())


def run_at_100(capsys, monkeypatch, *argv) -> tuple[str, str]:
    monkeypatch.setenv("COLUMNS", "100")
    assert main(list(argv)) == 0
    out, err = capsys.readouterr()
    return out, err


@pytest.mark.parametrize("argv", [
    ["count", "--model", "gpt2"],  # the reconciliation table was ~400 columns wide
    ["count", "--model", "llama3-8b", "--seq-len", "128"],
    ["estimate", "--model", "gpt2-xl", "--tokens", "300B", "--gpus", "8"],
    ["estimate", "--model", "gpt2", "--tokens", "10B", "--mfu-from", "results/h200"],  # a warning on stderr too
    ["gpus"],
    ["infer", *TINY, "--device", "cpu", "--prompt-len", "8", "--gen-len", "3", "--warmup", "0", "--iters", "1",
     "--no-ceilings", "--no-save"],
    TINY_RUN,
    ["explain", *TINY, "--device", "cpu", "--batch-size", "2", "--seq-len", "16", "--warmup", "0", "--iters", "1",
     "--profile-steps", "1", "--peak-tflops", "1", "--checkpointing", "all", "--no-save"],  # 3 modes side by side
], ids=lambda argv: " ".join(argv[:3]))
def test_every_line_fits_100_columns(capsys, monkeypatch, argv):
    monkeypatch.chdir(ROOT)
    out, err = run_at_100(capsys, monkeypatch, *argv)
    assert out.strip()
    assert widest(out + err) <= 100, [line for line in (out + err).splitlines() if len(line) > 100]


def test_sweep_fits_100_columns_and_logs_a_line_per_grid_point(capsys, monkeypatch, tmp_path):
    spec = tmp_path / "tiny.toml"
    spec.write_text(TINY_SPEC)
    out, err = run_at_100(capsys, monkeypatch, "sweep", "--spec", str(spec), "--out", str(tmp_path / "out"))
    assert widest(out + err) <= 100
    assert len(out.splitlines()) >= 2 + 4  # the head, the table's header and rule, 4 rows (2 points x 2 modes)
    # not a terminal: no bar, one line per grid point and one at the end (plus the no-peak warning)
    progress = [line for line in err.splitlines() if line.startswith("sweep tiny_terminal")]
    assert len(progress) == 3 and "1/2" in progress[0] and "2/2" in progress[1] and "100% of the sweep" in progress[1]


def test_wide_prints_the_tables_unfolded(capsys, monkeypatch):
    folded, _ = run_at_100(capsys, monkeypatch, "count", "--model", "gpt2", "--no-fvcore")
    wide, _ = run_at_100(capsys, monkeypatch, "count", "--model", "gpt2", "--no-fvcore", "--wide")
    assert widest(folded) <= 100 < widest(wide)
    # unfolded, every reconciliation row is one line: the reason in full on the row's line
    row = next(line for line in wide.splitlines() if line.startswith("counted.torch.train_recompute "))
    assert row.rstrip().endswith("checkpoint early stop modelled: each block's MLP down-projection is not re-run")
    assert len(wide.splitlines()) < len(folded.splitlines())


def test_width_follows_columns(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "60")
    assert main(["count", "--model", "gpt2", "--no-fvcore"]) == 0
    assert widest(capsys.readouterr().out) <= 60


# --------------------------------------------------------------------------------------------------
# run: the header first, then the progress; --json stays JSON
# --------------------------------------------------------------------------------------------------


def test_run_header_comes_before_the_timing_and_each_row_logs_two_lines():
    env = {**os.environ, "COLUMNS": "100"}
    done = subprocess.run([sys.executable, "-m", "flopbench", *TINY_RUN, "--checkpointing", "both"], cwd=ROOT,
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert done.returncode == 0, done.stdout
    lines = done.stdout.splitlines()
    first = {key: next(i for i, line in enumerate(lines) if line.startswith(key))
             for key in ("flopbench run: tiny", "device: cpu", "peak: ", "timing forward", "Measured")}
    assert first["flopbench run: tiny"] < first["device: cpu"] < first["peak: "] < first["timing forward"]
    assert first["timing forward"] < first["Measured"]
    assert sum(line.startswith("flopbench run:") for line in lines) == 1  # printed once, not again at the end
    # not a terminal: per row one line as it starts and one with the time taken, never a line per step
    for row in ("forward (checkpointing none)", "fwd_bwd (checkpointing none)", "fwd_bwd (checkpointing full)",
                "train_step (checkpointing full)"):
        mentions = [line for line in lines if row in line]
        assert len(mentions) == 2, mentions
        assert mentions[1].startswith(f"{row}: 1 warm-up + 2 timed steps in ") and mentions[1].endswith(" s")


def test_json_is_quiet_unless_progress_and_stdout_stays_json(capsys, monkeypatch):
    out, err = run_at_100(capsys, monkeypatch, *TINY_RUN, "--json")
    assert json.loads(out)["rows"] and all(line.startswith(("warning:", "  ")) for line in err.splitlines())
    out, err = run_at_100(capsys, monkeypatch, *TINY_RUN, "--json", "--progress")
    doc = json.loads(out)  # stdout: the document, nothing else
    assert [r["mode"] for r in doc["rows"]] == ["forward", "fwd_bwd", "train_step"]
    lines = err.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("flopbench run: tiny"))
    timed = [i for i, line in enumerate(lines) if "1 warm-up + 2 timed steps in" in line]
    assert len(timed) == 3 and header < timed[0]


def test_run_progress_reports_every_step_with_its_phase():
    """On a terminal the bar moves each step: warm-up i/w, then timed i/n (a recording Progress here)."""
    from flopbench.api.run import run

    class Recording(text.Progress):
        def __init__(self):
            super().__init__(io.StringIO(), 100, live=False)
            self.updates = []

        def update(self, done, description=None):
            self.updates.append((done, description))
            super().update(done, description)

    progress = text.RunProgress(Recording())
    from flopbench.model.presets import resolve_config

    cfg = resolve_config("tiny", n_layer=1, d_model=32, n_head=2, vocab_size=64)
    run(cfg, batch_size=1, seq_len=8, device="cpu", warmup=2, iters=3, checkpointing="none", gemm=False, out=None,
        modes=("forward",), progress=progress.message, on_step=progress.step)
    assert progress.progress.updates == [
        (1, "forward (checkpointing none): warm-up 1/2"), (2, "forward (checkpointing none): warm-up 2/2"),
        (3, "forward (checkpointing none): timed 1/3"), (4, "forward (checkpointing none): timed 2/3"),
        (5, "forward (checkpointing none): timed 3/3")]
    assert "forward (checkpointing none): 2 warm-up + 3 timed steps in" in progress.progress.stream.getvalue()


# --------------------------------------------------------------------------------------------------
# help defaults are the API's defaults
# --------------------------------------------------------------------------------------------------


def _subparser(name: str):
    from flopbench.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return sub.choices[name]


@pytest.mark.parametrize("command, options_class, inverted", [
    ("run", "flopbench.api.run:RunOptions", {"no_gemm": "gemm"}),
    ("infer", "flopbench.api.infer:InferOptions", {"no_ceilings": "ceilings"}),
    ("explain", "flopbench.api.explain:ExplainOptions", {}),
])
def test_help_defaults_are_the_dataclass_defaults(command, options_class, inverted):
    import dataclasses
    import importlib

    module, name = options_class.split(":")
    defaults = {f.name: f.default for f in dataclasses.fields(getattr(importlib.import_module(module), name))}
    checked = 0
    for action in _subparser(command)._actions:
        if action.dest in inverted:  # --no-gemm: False means gemm=True
            assert action.default is False and defaults[inverted[action.dest]] is True
            checked += 1
        elif action.dest in defaults:
            assert action.default == defaults[action.dest], action.dest
            if action.default not in (None, False):
                assert f"default {action.default}" in action.help % {"default": action.default}, action.dest
            checked += 1
    assert checked >= 10


# --------------------------------------------------------------------------------------------------
# number formats
# --------------------------------------------------------------------------------------------------


def test_flops_use_prefixes_through_yotta_then_scientific():
    assert text.flops(2_798_948_160_000_000_000_000) == "2.799 ZFLOPs"  # 6 x 1,554,971,200 x 300e9
    assert text.flops(4.2e25) == "42.000 YFLOPs"
    assert text.flops(6.754e26) == "675.400 YFLOPs"
    assert text.flops(2.8e27) == "2.800e+27 FLOPs"  # past 1000 Y: scientific, never "2800.000 YFLOPs"


def test_estimate_never_prints_four_digits_before_a_prefix(capsys, monkeypatch):
    # 6 x 1,554,971,200 (gpt2-xl N_matmul) x 300e12 tokens = 2.799e+24 FLOPs = 2.799 YFLOPs
    out, _ = run_at_100(capsys, monkeypatch, "estimate", "--model", "gpt2-xl", "--tokens", "300000B")
    assert "C = 2.799e+24 FLOPs (2.799 YFLOPs)" in out
    out, _ = run_at_100(capsys, monkeypatch, "estimate", "--model", "gpt2-xl", "--tokens", "300000000B")
    assert "C = 2.799e+27 FLOPs;" in out  # beyond Y: scientific only
    assert not re.search(r"\d{4,}\.\d+ [kMGTPEZY]FLOPs", out)


def test_one_number_format_per_column():
    from flopbench.output.markdown import markdown_table

    md = markdown_table([{"t": 12765.4}, {"t": 3894.2}, {"t": 38.94}, {"t": 0.053141}], {"t": "tokens/s"})
    assert md.split("\n")[2:] == ["| 12,765     |", "| 3,894      |", "| 38.94      |", "| 0.05314    |"]
    assert [text.fixed(v) for v in (12765.4, 3894.2, 12.345, 0.012345, 0.0, 2.0, 0.0150)] == [
        "12,765", "3,894", "12.3", "0.0123", "0", "2", "0.015"]  # as .3g writes them, never 1.28e+04


def test_unknown_parameter_counts_are_rendered_too(capsys):
    assert main(["count", "--model", "gpt2", "--seq-len", "16", "--no-torch", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    doc["params"]["frozen_embeddings"] = 42_000_000  # a key another version may add
    rendered = text.render_count(doc, 100)
    lines = rendered.splitlines()
    assert any(re.fullmatch(r"frozen embeddings +42,000,000", line) for line in lines), rendered
    assert any(re.fullmatch(r"matmul \(N in 2N/6N/8N\) +123,532,032", line) for line in lines)
    assert not any(line.startswith("active") for line in lines)  # a dense model: active = total, not repeated


def test_a_mixture_of_experts_shows_its_active_counts(capsys):
    """Mixtral: N of the simple rules is the active matmul count (router and 2 of 8 experts per layer)."""
    assert main(["count", "--model", "mixtral-8x7b", "--seq-len", "16", "--no-torch"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(re.fullmatch(r"matmul +46,571,454,464", line) for line in lines)
    assert any(re.fullmatch(r"active +12,879,925,248", line) for line in lines)
    assert any(re.fullmatch(r"active matmul \(N in 2N/6N/8N\) +12,748,587,008", line) for line in lines)


def test_tables_are_plain_ascii_rules_and_no_markup():
    rendered = text.table([{"a [b]": "[bold]x[/bold]", "c": "1"}], 100)
    assert rendered.splitlines() == ["a [b]           c", "--------------- -", "[bold]x[/bold]  1"]


# --------------------------------------------------------------------------------------------------
# A newcomer's 100-column terminal: count's reconciliation, errors, the peak, infer's table, columns
# --------------------------------------------------------------------------------------------------


def test_count_reconciliation_fits_100_columns_without_splitting_a_name(capsys, monkeypatch):
    out, _ = run_at_100(capsys, monkeypatch, "count", "--model", "llama3-70b", "--no-torch")
    assert widest(out) <= 100
    doc_names = ("analytic.train_recompute_no_early_stop", "analytic.train_recompute")
    rec = out[out.index("Reconciliation"):]
    # every row's names whole on one line, its reason on its own lines under it
    row = next(line for line in rec.splitlines() if line.startswith("estimate megatron "))
    assert row.split()[2:5] == [doc_names[0], "0.9497", "explained"], row
    assert "o_early_stop" not in out.replace(doc_names[0], "")  # no name folded mid-word
    assert "\n    Narayanan et al. Eq. 3 re-runs every block in full; they assume" in rec
    assert len(out.splitlines()) <= 105  # 133 lines with the reasons folded into a 27-column "why"


def test_count_without_torch_says_nothing_about_counting_time(capsys, monkeypatch):
    out, _ = run_at_100(capsys, monkeypatch, "count", "--model", "gpt2", "--no-torch")
    assert "counted in" not in out
    out, _ = run_at_100(capsys, monkeypatch, "count", "--model", "gpt2", "--seq-len", "16", "--no-fvcore")
    assert re.search(r"\ncounted in \d+\.\d\d s\n$", out)


class Terminal(io.StringIO):
    """stderr as a terminal."""

    def isatty(self) -> bool:
        return True


def test_an_error_is_wrapped_to_the_terminal(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    assert main(["count", "--model", "gpt5"]) == 2  # names every preset: about 240 columns on one line
    one_line = capsys.readouterr().err
    assert one_line.count("\n") == 1 and len(one_line) > 200  # a log or a pipe: one line, for grep
    monkeypatch.setattr(sys, "stderr", Terminal())
    assert main(["count", "--model", "gpt5"]) == 2
    lines = sys.stderr.getvalue().splitlines()
    assert len(lines) >= 3 and widest(sys.stderr.getvalue()) <= 100
    assert lines[0].startswith("flopbench: error: unknown model 'gpt5'")
    assert all(line.startswith("    ") and not line.startswith("     ") for line in lines[1:])
    assert " ".join(line.strip() for line in lines) == one_line.strip()  # the same message, only wrapped
    assert "Traceback" not in sys.stderr.getvalue()


def test_a_missing_peak_is_explained_once(capsys, monkeypatch):
    _, _ = run_at_100(capsys, monkeypatch, *TINY_RUN)  # warm: imports
    out, err = run_at_100(capsys, monkeypatch, *TINY_RUN)
    assert (out + err).count("no GPU detected") == 1, out + err
    assert "peak: - TFLOP/s (none: see the warning)" in out
    out, err = run_at_100(capsys, monkeypatch, "infer", *TINY, "--device", "cpu", "--prompt-len", "8", "--gen-len",
                          "3", "--warmup", "0", "--iters", "1", "--no-ceilings", "--no-save")
    assert (out + err).count("no GPU detected: no peak;") == 1 and (out + err).count("no peak bandwidth") == 1


def test_infer_fills_the_prefill_tokens_per_s_and_keeps_its_rows_on_one_line(capsys, monkeypatch):
    out, _ = run_at_100(capsys, monkeypatch, "infer", *TINY, "--device", "cpu", "--prompt-len", "8", "--gen-len",
                        "3", "--warmup", "0", "--iters", "1", "--batch-size", "2", "--no-ceilings", "--no-save",
                        "--json")
    doc = json.loads(out)
    # tokens/s of the prefill: B x P tokens in its median time
    assert doc["prefill"]["tokens_per_s"] == pytest.approx(2 * 8 / (doc["prefill"]["time_ms"]["median_ms"] / 1e3))
    table = text.render_infer(doc, 100)
    head = next(line for line in table.splitlines() if line.startswith("phase"))
    prefill = next(line for line in table.splitlines() if line.startswith("prefill"))
    decode = next(line for line in table.splitlines() if line.startswith("decode "))
    assert head.split()[-1] == "tokens/s"
    assert prefill.split()[-1] == f"{doc['prefill']['tokens_per_s']:,.0f}"
    assert decode.split()[-1] == f"{doc['decode']['tokens_per_s']:,.0f}"
    assert "(median)" not in table and "decode = its median step" in table


def test_run_tflops_column_has_one_format(capsys, monkeypatch):
    out, _ = run_at_100(capsys, monkeypatch, *TINY_RUN, "--checkpointing", "both", "--json")
    doc = json.loads(out)
    rendered = text.render_run(doc, 100).splitlines()
    start = next(i for i, line in enumerate(rendered) if line.startswith("mode "))
    head = rendered[start]
    rows = rendered[start + 2:start + 2 + len(doc["rows"])]
    at = head.index("TFLOP/s") + len("TFLOP/s")  # right-aligned: the column ends under its header's end
    cells = [line[:at].split()[-1] for line in rows]
    decimals = {len(c.split(".")[1]) if "." in c else 0 for c in cells}
    assert len(decimals) == 1, cells
    largest = max(r["achieved_tflops"] for r in doc["rows"])
    assert max(cells, key=float) == f"{largest:.{decimals.pop()}f}"
    assert float(max(cells, key=float)) == pytest.approx(largest, rel=5e-3)  # 3 significant digits
