"""report.md is literal about the names it prints: a model name, label or host name is
text, never Markdown structure."""

from flopbench.output.markdown import escape, report_markdown

EVIL = "tiny\n# Injected heading\n\n| a | b |\n<img src=x>"


def _report(name: str) -> str:
    row = {"model": name, "seq_len": 8, "batch_size": 2, "dtype": "fp32", "mode": "fwd_bwd", "checkpointing": "none",
           "status": "ok", "median_ms": 1.5, "min_ms": 1.0, "max_ms": 2.0, "mfu": 0.25, "hfu": 0.3,
           "gemm_fraction": None}
    env = {"hostname": "vm\n# host", "device": "cpu", "cpu_count": 2, "torch": "2.13", "timestamp": "t"}
    return report_markdown(results="out/s", n_rows=1, status_counts={"ok": 1}, models=[name], environments=[env],
                           series=[], per_token=[], ratio_table={}, ratios=[], rows=[row], noisy=0, noisy_factor=2.0,
                           predictions=[], failed=[], discount=0.5, plots={}, notes={})


def test_a_model_name_with_a_newline_starts_no_heading_and_no_table_row():
    """Before: the name went raw into the "Source:" line, so its second line was a heading of report.md."""
    md = _report(EVIL)
    headings = [line for line in md.splitlines() if line.startswith("#")]
    assert headings == ["# flopbench report", "## 1. FLOPs per token: published estimates vs counted",
                        "## 2. What 6N leaves out: training FLOPs ÷ 6N against sequence length",
                        "## 3. Measured utilisation: MFU and HFU",
                        "## 4. Time per step: measured vs 2N / 6N (Kaplan et al. 2020) and 8N (Narayanan et al. 2021)"]
    shown = r"tiny # Injected heading  \| a \| b \| \<img src=x\>"
    assert f"models: {shown}." in md  # the Source line: one line, the markup escaped
    assert f"| {shown} |" in md.replace("  |", " |")  # the table cell: one cell of the row, not three
    assert "- measured on `vm # host`: cpu" in md


def test_escape_keeps_words_and_escapes_markup():
    assert escape("fwd_bwd") == "fwd_bwd" and escape("llama3-8b") == "llama3-8b"  # unchanged: no markup there
    assert escape("_x_ *y* [z](u) `c` a|b") == r"\_x\_ \*y\* \[z\](u) \`c\` a\|b"
    assert escape("two\r\nlines\u2028three") == "two lines three"


def test_a_table_with_no_rows_is_a_line_saying_why():
    """A step row with no peak and no GEMM ceiling has no predicted time: the prediction table would be a
    header alone, so a line takes its place."""
    md = _report("tiny")
    section4 = md[md.index("## 4."):]
    assert "| measured ms " not in section4 and "No predicted times: no row that ran has a peak" in section4
