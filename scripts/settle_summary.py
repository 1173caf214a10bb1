"""summary.md of a gpu_settle.sh folder: per step its status, wall time and the key numbers of its JSON.

    python scripts/settle_summary.py WORK_DIR > WORK_DIR/summary.md

Reads WORK_DIR/steps.tsv (one line per step: name, status, seconds, exit code; written by gpu_steps.sh) and
WORK_DIR/<name>.json, the step's `--json` document when it wrote one: `flopbench run` (per row MFU, HFU,
causal HFU, MFU against the clock-scaled peak, the attention kernel and compile seconds where the row
has them, peak memory), `flopbench infer` (prefill MFU and MBU, decode MBU and tokens/s),
`benchmarks/sdpa_probe.py` (backend and first kernel per case, time, memory) and `flopbench gpus`. Only
the standard library: it runs even where torch does not import.
"""

from __future__ import annotations

import json
import pathlib
import sys


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def _num(x, fmt=".1f") -> str:
    return "-" if x is None else format(x, fmt)


def _gb(x) -> str:
    return "-" if x is None else f"{x / 1e9:.2f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def run_lines(doc: dict) -> list[str]:
    """A `flopbench run --json` document: one table row per measured row."""
    rows = []
    for r in doc.get("rows", []):
        rows.append([f"{r.get('mode')}/{r.get('checkpointing')}", str(r.get("status")),
                     _num((r.get("time_ms") or {}).get("median_ms")), _pct(r.get("mfu")), _pct(r.get("hfu")),
                     _pct(r.get("hfu_causal")), _pct(r.get("mfu_vs_clock")), str(r.get("attention_kernel", "-")),
                     _num(r.get("compile_s")), _gb(r.get("peak_memory_bytes")), _num(r.get("achieved_tflops")),
                     _pct(r.get("mfu_weighted"))])
    fp8 = doc.get("fp8") or {}
    dtype = f"{doc.get('dtype')} {fp8['recipe']}" if fp8 else doc.get("dtype")
    head = (f"{(doc.get('config') or {}).get('name')}, B {doc.get('batch_size')} x T {doc.get('seq_len')}, "
            f"{dtype}, compile {doc.get('compile')}, peak {(doc.get('peak') or {}).get('tflops')} TFLOP/s")
    return [head, ""] + _table(["row", "status", "median ms", "MFU", "HFU", "HFU causal", "MFU vs clock",
                                "attention", "compile s", "peak GB", "TFLOP/s", "MFU weighted (fp8)"], rows)


def infer_lines(doc: dict) -> list[str]:
    """A `flopbench infer --json` document: the prefill's and the decode steps' rates."""
    p, d = doc.get("prefill") or {}, doc.get("decode") or {}
    head = (f"{(doc.get('config') or {}).get('name')}, B {doc.get('batch_size')}, P {doc.get('prompt_len')}, "
            f"G {doc.get('gen_len')}, {doc.get('dtype')}, compile {doc.get('compile')}")
    rows = [["prefill", _num((p.get("time_ms") or {}).get("median_ms"), ".2f"), _pct(p.get("mfu")), _pct(p.get("mbu")),
             "-", "-"],
            ["decode", _num((d.get("time_ms") or {}).get("median_ms"), ".3f"), _pct(d.get("mfu")), _pct(d.get("mbu")),
             _num(d.get("tokens_per_s")), str(d.get("launch_bound", "-"))]]
    return [head, ""] + _table(["phase", "median ms", "MFU", "MBU", "tokens/s", "launch bound"], rows)


def probe_lines(doc: dict) -> list[str]:
    """A `benchmarks/sdpa_probe.py` document: the backend each case ran."""
    rows = []
    for c in doc.get("cases", []):
        rows.append([c.get("mask", "-"), f"{c.get('n_head')}/{c.get('n_kv_head')}", str(c.get("seq_len")),
                     c.get("backend", c.get("status", "-")), _num(c.get("fwd_ms"), ".2f"),
                     _num(c.get("fwd_bwd_ms"), ".2f"), _gb(c.get("peak_bytes_above_inputs")),
                     ((c.get("kernels") or ["-"])[0])[:40]])
    return [f"torch {doc.get('torch')}, {doc.get('gpu') or doc.get('device')}", ""] + _table(
        ["mask", "heads/kv", "T", "backend", "fwd ms", "fwd+bwd ms", "peak GB", "top kernel"], rows)


def gpus_lines(doc: dict) -> list[str]:
    detected = doc.get("detected") or {}
    entry = doc.get("table_entry") or {}
    return [f"detected: {detected.get('name', 'none') if isinstance(detected, dict) else detected}; "
            f"table entry: {entry.get('name', 'none') if isinstance(entry, dict) else entry}"]


def lines_for(doc) -> list[str]:
    """The key numbers of one step's JSON document, by its kind."""
    if not isinstance(doc, dict):
        return []
    if "cases" in doc:
        return probe_lines(doc)
    if "prefill" in doc:
        return infer_lines(doc)
    if "rows" in doc:
        return run_lines(doc)
    if "table" in doc:
        return gpus_lines(doc)
    return ["keys: " + ", ".join(sorted(doc))[:90]]


def summary(work: pathlib.Path) -> str:
    out = ["# gpu_settle summary", ""]
    steps_file = work / "steps.tsv"
    steps = [line.split("\t") for line in steps_file.read_text().splitlines() if line] if steps_file.exists() else []
    out += _table(["step", "status", "wall s", "exit"], [s + ["-"] * (4 - len(s)) for s in steps]) + [""]
    for name, *_ in steps:
        path = work / f"{name}.json"
        if not path.exists() or not path.stat().st_size:
            continue
        out += [f"## {name}", ""]
        try:
            out += lines_for(json.loads(path.read_text()))
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError, AttributeError, KeyError) as e:
            out += [f"{path.name}: not a readable document ({type(e).__name__})"]
        out.append("")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.stdout.write(summary(pathlib.Path(sys.argv[1])))
