"""`flopbench report`: tables and plots from a fixture sweep; degrades without matplotlib or a peak."""

import json
import re
import sys
from pathlib import Path

import pytest

from flopbench.api.report import PLOTS, config_of, ratio_curve, report
from flopbench.cli import main
from flopbench.model.config import ModelConfig
from flopbench.output.records import read_rows
from flopbench.output.text import fixed

PNG = b"\x89PNG\r\n\x1a\n"
GRID = 'seq_len = [16]\ncheckpointing = ["none", "full"]\ngemm = true'  # 4 grid points, 10 rows


def make_sweep(tmp_path, grid: str = GRID) -> str:
    """A tiny real sweep of models m1 (1 layer) and m2 (2 layers); rows in tmp/out/fx/rows.jsonl."""
    model = '{{ name = "{}", preset = "tiny", n_layer = {}, d_model = 32, n_head = 2, vocab_size = 64, max_seq_len = 16 }}'
    spec = tmp_path / "fx.toml"
    spec.write_text(f"""
models = [{model.format("m1", 1)}, {model.format("m2", 2)}]
batch_size = [2]
dtype = ["fp32"]
device = "cpu"
warmup = 0
iters = 1
{grid}
""")
    assert main(["sweep", "--spec", str(spec), "--out", str(tmp_path / "out")]) == 0
    return str(tmp_path / "out" / "fx")


@pytest.fixture(scope="module")
def cpu_sweep(tmp_path_factory):
    return make_sweep(tmp_path_factory.mktemp("cpu"))


def test_report_files_and_numbers(cpu_sweep, tmp_path, capsys):
    capsys.readouterr()
    code = main(["report", cpu_sweep, "--out", str(tmp_path / "rep"), "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0 and doc["matplotlib"] and doc["rows"] == 10
    for name in PLOTS:
        png = tmp_path / "rep" / f"{name}.png"
        assert doc["plots"][name] == str(png) and png.stat().st_size > 10_000 and png.read_bytes()[:8] == PNG
    md = (tmp_path / "rep" / "report.md").read_text()
    for name in PLOTS:
        assert f"]({name}.png)" in md
    # m1: L=1, d=32, d_ff=128, V=64: N_matmul = 4·32² + 2·32·128 + 32·64 = 14,336; per token at T=16:
    # 6N = 86,016, exact train = 6N + 12·L·d·T = 86,016 + 6,144 = 92,160, ratio 1.0714.
    assert re.search(r"\|\s*m1\s*\|\s*16\s*\|\s*14,336\s*\|", md) and re.search(r"\|\s*1\.0714\s*\|", md)
    # counted on the CPU: flash attention's backward re-forms QK^T, +2·L·d·T = 1,024 per token -> 93,184
    assert "93.18 k" in md
    assert "MFU and HFU are null" in md  # a CPU has no peak
    assert "GEMM ceiling" in md


def test_report_with_a_peak_plots_mfu(tmp_path):
    results = make_sweep(tmp_path, 'seq_len = [16]\ncheckpointing = ["none"]\nmodes = ["train_step"]\n'
                                   'gemm = false\npeak_tflops = 0.5')
    doc = report(results)  # default --out: RESULTS/report
    md = (tmp_path / "out" / "fx" / "report" / "report.md").read_text()
    assert doc["report"].endswith("fx/report/report.md") and "MFU and HFU are null" not in md
    rows = read_rows(results)
    train = rows[(rows["mode"] == "train_step") & (rows["checkpointing"] == "none")].iloc[0]
    # the MFU cell is the row's MFU in percent: model FLOPs / (median time x 0.5 TFLOP/s)
    mfu = train["model_flops"] / (train["time_ms.median_ms"] / 1e3) / 0.5e12
    assert train["mfu"] == pytest.approx(mfu) and f"{100 * mfu:.1f} %" in md
    assert all((tmp_path / "out" / "fx" / "report" / f"{n}.png").stat().st_size > 10_000 for n in PLOTS)


def test_report_without_matplotlib_has_tables_only(cpu_sweep, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    doc = report(cpu_sweep, tmp_path / "rep")
    md = (tmp_path / "rep" / "report.md").read_text()
    assert doc["plots"] == {} and not doc["matplotlib"] and not list((tmp_path / "rep").glob("*.png"))
    assert "matplotlib is not installed" in md and re.search(r"\|\s*m2\s*\|\s*16\s*\|", md) and ".png)" not in md


def test_config_rebuilt_from_csv_rows(cpu_sweep):
    rows = read_rows(f"{cpu_sweep}/rows.csv")
    assert config_of(rows.iloc[-1]) == ModelConfig("m2", n_layer=2, d_model=32, n_head=2, vocab_size=64,
                                                   max_seq_len=16)


def test_ratio_curve_grows_with_T():
    cfg = ModelConfig("gpt2", n_layer=12, d_model=768, n_head=12)
    # 1 + 12·L·d·T / (6·N_matmul), N_matmul(gpt2) = 12·12·768² + 768·50257 = 123,532,032
    assert ratio_curve(cfg, [1024, 4096]) == pytest.approx(
        [1 + 12 * 12 * 768 * 1024 / (6 * 123_532_032), 1 + 12 * 12 * 768 * 4096 / (6 * 123_532_032)])


@pytest.mark.parametrize("make, fragment", [
    (lambda p: p / "nothing", "no such file"),
    (lambda p: p, "no rows.jsonl below this folder"),
])
def test_report_bad_input(tmp_path, capsys, make, fragment):
    code = main(["report", str(make(tmp_path))])
    _, err = capsys.readouterr()
    assert code == 2 and err.count("\n") == 1 and fragment in err


def test_committed_cpu_report_is_what_the_code_writes_today(tmp_path, monkeypatch):
    """results/cpu/report/report.md is regenerated from the committed cpu_smoke rows, byte for byte: a change
    to any number, label or table of the report shows up here (regenerate it with
    `flopbench report results/cpu/cpu_smoke --out results/cpu/report` when the change is meant)."""
    root = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(root)  # the report names its source by the path given
    report("results/cpu/cpu_smoke", tmp_path)
    assert (tmp_path / "report.md").read_text() == (root / "results/cpu/report/report.md").read_text()


def test_a_registered_estimate_marked_for_the_report_appears_in_it(cpu_sweep, tmp_path, monkeypatch):
    """Adding an estimate to the registry is all it takes to put it in the report's table."""
    import dataclasses

    from flopbench.flops import estimates

    twice = dataclasses.replace(estimates.REGISTRY["6N"], name="12N", formula=lambda cfg, B, T: 12 * 14_336 * B * T)
    monkeypatch.setattr(estimates, "ESTIMATES", (*estimates.ESTIMATES, twice))
    report(cpu_sweep, tmp_path)
    md = (tmp_path / "report.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| model ") and "N_matmul" in line)
    assert "| 12N " in header
    # m1: 12 x N_matmul (14,336) per token = 172,032 -> "172 k" in the m1 row
    m1 = next(line for line in md.splitlines() if re.match(r"\|\s*m1\s*\|\s*16\s*\|\s*14,336", line))
    assert "172 k" in m1


def make_infer(out) -> Path:
    """A real tiny `infer` on the CPU (1 layer, d 32, P 8, G 4; no ceilings): its folder below `out`."""
    import flopbench

    cfg = ModelConfig("g", n_layer=1, d_model=32, n_head=2, vocab_size=64, max_seq_len=16)
    flopbench.infer(cfg, prompt_len=8, gen_len=4, device="cpu", warmup=0, iters=1, ceilings=False, out=str(out),
                    progress=lambda m: None)
    return Path(out)


def _dash_rows(md: str) -> list[str]:
    """The table rows of `md` whose every cell after the first is "–" (a table of nothing), and header
    lines with no row under them."""
    lines = md.splitlines()
    empty = [line for line in lines if line.startswith("|") and not line.startswith("|--")
             and set(c.strip() for c in line.strip("|").split("|")[1:]) == {"–"}]
    return empty + [a for a, b, *c in zip(lines, lines[1:], lines[2:]) if a.startswith("| ") and b.startswith("|--")
                    and not (c and c[0].startswith("|"))]


def test_a_report_of_infer_rows_draws_and_writes_only_what_has_data(tmp_path):
    """Only prefill and decode rows: no training or step plot and no training table (before: the FLOPs per
    token table's counted columns, the counted ÷ 6N column, a utilisation table of prefill and decode with
    null MFU, an empty prediction table and an empty roofs table, all "–" or header only); one line says
    what was left out. matplotlib warns nothing (an empty legend warned "No artists with labels found")."""
    import warnings

    make_infer(tmp_path / "out")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        doc = report(tmp_path / "out", tmp_path / "rep")
    assert sorted(doc["plots"]) == ["roofline"]
    assert sorted(p.name for p in (tmp_path / "rep").glob("*.png")) == ["roofline.png"]
    md = (tmp_path / "rep" / "report.md").read_text()
    assert [line for line in md.splitlines() if line.startswith("## ")] == ["## 5. Generation: the roofline"]
    assert md.count("Sections 1–4") == 1 and "only `infer` rows" in md
    assert _dash_rows(md) == [], _dash_rows(md)
    assert "No roofs" in md  # ceilings=False and a CPU has no peak
    # the decode row's measured numbers are in the roofline section: its tokens/s = B / median step time
    rows = read_rows(tmp_path / "out")
    decode = rows[rows["mode"] == "decode"].iloc[0]
    assert decode["tokens_per_s"] == pytest.approx(1 / (decode["time_ms.median_ms"] / 1e3))
    assert f"| {fixed(decode['tokens_per_s'], 4)} " in md


def test_a_folder_of_training_and_infer_rows_keeps_each_in_its_sections(cpu_sweep, tmp_path):
    """A sweep and an infer side by side: the four step plots and the roofline are drawn; the utilisation
    table holds the sweep's rows and no prefill or decode row."""
    import shutil

    shutil.copytree(cpu_sweep, tmp_path / "both" / "fx")
    make_infer(tmp_path / "both")
    doc = report(tmp_path / "both", tmp_path / "rep")
    assert sorted(doc["plots"]) == sorted([*PLOTS, "roofline"]) and doc["rows"] == 12
    md = (tmp_path / "rep" / "report.md").read_text()
    section3 = md[md.index("## 3."):md.index("## 4.")]
    assert "| prefill " not in section3 and "| decode " not in section3 and "| train_step " in section3
    assert "| g prefill B=1 cpu " in md[md.index("## 5."):]
    assert "Sections 1–4" not in md and _dash_rows(md) == [], _dash_rows(md)


def test_rows_above_their_gemm_ceiling_are_flagged(tmp_path, capsys):
    """A row faster than its GEMM ceiling is flagged (a CPU report once showed one at 2x, unflagged).
    Fabricated from two committed rows: one set to 2x its ceiling, one left below it."""
    root = Path(__file__).resolve().parents[2] / "results" / "cpu" / "cpu_smoke"
    rows = [json.loads(line) for line in (root / "rows.jsonl").read_text().splitlines()[:2]]
    assert rows[1]["achieved_tflops"] < rows[1]["gemm_tflops"]
    rows[0]["achieved_tflops"] = 2 * rows[0]["gemm_tflops"]  # 2 x 0.1954 = 0.3908 TFLOP/s
    folder = tmp_path / "fx"
    folder.mkdir()
    (folder / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "environment.json").write_text((root / "environment.json").read_text())
    doc = report(folder, tmp_path / "rep")
    assert [(r["model"], r["mode"], r["checkpointing"]) for r in doc["above_gemm_ceiling"]] == [
        (rows[0]["model"], rows[0]["mode"], rows[0]["checkpointing"])]
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "above its GEMM ceiling" in md and "0.3908" in md and "2 ×" in md
    assert main(["report", str(folder), "--out", str(tmp_path / "rep2")]) == 0
    out = capsys.readouterr().out
    flagged = [line for line in out.splitlines() if "above its GEMM ceiling" in line]
    assert len(flagged) == 1 and "0.3908" in flagged[0] and rows[0]["mode"] in flagged[0]
    assert max(len(line) for line in out.splitlines()) <= 100
