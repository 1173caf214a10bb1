"""The Markdown report (`report.md`) and its tables (tabulate's "github" format).

Rendering only: every number arrives computed (`api.report` derives them); here they are formatted
(SI prefixes through `text.si`, percentages through `text.percent`, every other measured number through
`text.fixed`: one format per column) and laid out in four sections, one per plot, plus the rows that did
not run; a section or table with no rows is left out, and a line says why. tabulate writes these tables
because rich, which draws the terminal's, writes no Markdown.
"""

from __future__ import annotations

import re

from .text import above_ceiling_line, fixed, percent, si

#: Column headers of the counted and exact per-token series; an estimate's header is its name.
SERIES_HEADERS = {
    "counted_forward": "counted fwd", "fvcore_forward": "fvcore fwd", "exact_forward": "exact fwd",
    "exact_train": "exact train", "counted_train": "counted fwd+bwd",
    "exact_train_recompute": "exact ckpt full", "counted_train_recompute": "counted ckpt full",
}


def escape(text) -> str:
    """`text` (a model name, a label, a host name) as literal Markdown on one line: every line break becomes a
    space (a name holding "\\n# x" would start a heading), and the characters that open inline markup
    (CommonMark 0.31, §2.4 backslash escapes) are backslash-escaped: \\ ` * [ ] < > |, and _ where it can
    open or close emphasis (not inside a word, so fwd_bwd stays as it is; CommonMark §6.2)."""
    line = " ".join(str(text).splitlines())
    line = re.sub(r"([\\`*\[\]<>|])", r"\\\1", line)
    return re.sub(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])", r"\\_", line)


def _code(text) -> str:
    """`text` as a code span on one line (a backtick in it would end the span early)."""
    return "`" + " ".join(str(text).splitlines()).replace("`", "'") + "`"


def _fmt(v) -> str:
    """One table cell: "–" for None; integers with thousands separators; floats in fixed point with 4
    significant digits and thousands separators (`text.fixed`), so a column reads alike at every magnitude
    ("12,765" and "3,894", never "12,765" beside "3894")."""
    if v is None:
        return "–"
    if isinstance(v, float):
        return fixed(v, 4)
    if isinstance(v, int):
        return f"{v:,}"
    return escape(v)


def markdown_table(rows: list[dict], columns: dict[str, str]) -> str:
    """A GitHub Markdown table of `rows` (tabulate's "github" format); `columns` maps keys to headers."""
    from tabulate import tabulate

    body = [[_fmt(r.get(k)) for k in columns] for r in rows]
    return tabulate(body, headers=list(columns.values()), tablefmt="github", disable_numparse=True)


def _eng(v):
    return None if v is None else si(v, ".4g")


def _pct(v):
    return None if v is None else percent(v, space=" ")


def report_markdown(*, results: str, n_rows: int, status_counts: dict[str, int], models: list[str],
                    environments: list[dict], series: list[dict], per_token: list[dict],
                    ratio_table: dict[str, tuple[list[int], list[float], int]], ratios: list[dict],
                    rows: list[dict], noisy: int, noisy_factor: float, predictions: list[dict],
                    failed: list[dict], discount: float, plots: dict[str, str], notes: dict[str, str],
                    above_ceiling: list[dict] = (), matplotlib: bool = True) -> str:
    """The text of report.md.

    `series`: the per-token columns in order ({"key", "kind", "name", "source"}: an estimate's header is its
    name, its `source` is cited under the table);
    `per_token`: `api.report.flops_per_token`; `ratio_table`: {model: (seq_lens, exact ÷ 6N, max_seq_len)};
    `ratios`: exact and counted training FLOPs ÷ 6N per measured (model, seq_len); `rows`: the measured rows
    (`api.report.measured_rows`); `noisy`: how many of them are noisy (max > `noisy_factor` x min);
    `predictions`: the rows with a predicted time and their `ratio`; `failed`: the rows that did not run;
    `discount`: the fraction of peak of the discounted prediction; `plots`: the PNGs drawn (by name);
    `notes`: by plot name, a sentence under its section; `above_ceiling`: the rows faster than their GEMM
    ceiling (`api.report.above_gemm_ceiling`), flagged under the utilisation table; `matplotlib`: whether it
    was there to draw. With no `rows` (only `infer` rows) sections 1–4 are left out, and `notes["steps"]`
    says why.
    """
    def image(name, alt):
        return f"![{alt}]({name}.png)\n\n" if name in plots else ""

    statuses = ", ".join(f"{v} {k}" for k, v in status_counts.items())
    lines = [
        "# flopbench report",
        "",
        f"Source: {_code(results)} — {n_rows} rows ({escape(statuses)}); models: {', '.join(map(escape, models))}.",
        "",
    ]
    for env in environments:
        gpu = (env.get("gpu") or {}).get("name") or "no GPU"
        e = {k: escape(env.get(k)) for k in ("device", "cpu_count", "torch", "cuda_runtime", "flopbench",
                                             "flopbench_git", "timestamp")}
        lines.append(f"- measured on {_code(env.get('hostname'))}: {e['device']}, {escape(gpu)}, {e['cpu_count']} CPUs, "
                     f"torch {e['torch']}, CUDA {e['cuda_runtime']}, flopbench {e['flopbench']} "
                     f"({e['flopbench_git']}), {e['timestamp']}")
    if not matplotlib:
        lines += ["", "**matplotlib is not installed, so this report has tables only** "
                      "(`pip install 'flopbench[plot]'` for the plots)."]
    if not rows:
        lines += ["", "Sections 1–4 (FLOPs per token, training FLOPs ÷ 6N, utilisation, time per step) are left "
                      f"out: {notes.get('steps', 'there are no timed steps')}."]
        return "\n".join(lines).rstrip() + "\n"
    columns = {"model": "model", "seq_len": "T", "N_matmul": "N_matmul",
               **{s["key"]: s["name"] if s["kind"] == "estimate" else SERIES_HEADERS.get(s["key"], s["key"])
                  for s in series}}
    lines += [
        "",
        "Conventions: FLOPs are matmul FLOPs (1 multiply-add = 2 FLOPs), attention over the full T×T square, "
        "backward = 2 × forward, N = N_matmul (see the flopbench README, \"Conventions\").",
        "*Counted torch* is FlopCounterMode over one real step on the run's device: fused attention kernels (the "
        "CPU flash kernel, flash / cuDNN on CUDA) re-form QKᵀ in backward (5 bmm, not 4), so there counted "
        "fwd+bwd sits 2·L·d·T FLOPs per token above the exact analytic count (each row's `hardware_flops_note` "
        "says which). *fvcore* is its forward count on the meta device, doubled.",
        "",
        "## 1. FLOPs per token: published estimates vs counted",
        "",
        image("flops_per_token", "FLOPs per token by model"),
        markdown_table([{k: (_eng(v) if isinstance(v, float) else v) for k, v in r.items()} for r in per_token],
                       columns),
        "",
        "FLOPs per token, by phase: forward, training (fwd+bwd), training with full activation recomputation; "
        "each phase's published estimates first. " + "".join(f"*{s['name']}*: {s['source']}. " for s in series
                                                             if s["kind"] == "estimate")
        + "*exact* = `analytic.forward_flops` / `train_flops` / `train_recompute_flops` (torch's checkpoint early "
        "stop: the MLP down-projection is not recomputed, so *exact ckpt full* is below 8N).",
        "",
        "## 2. What 6N leaves out: training FLOPs ÷ 6N against sequence length",
        "",
        image("counted_over_6n", "counted / 6N against seq_len"),
    ]
    seq_lens = next(iter(ratio_table.values()))[0] if ratio_table else []
    ratio_rows = [{"model": m, **{f"T={T}": f"{r:.3f}" + ("†" if T > max_seq_len else "")
                                  for T, r in zip(lens, curve)}}
                  for m, (lens, curve, max_seq_len) in ratio_table.items()]
    lines += [markdown_table(ratio_rows, {"model": "model", **{f"T={T}": f"T={T}" for T in seq_lens}}), "",
              "Exact ÷ 6N = 1 + 12·L·d·T / (6·N_matmul) per token (PaLM's 6N + 12·L·H·Q·T gives the same ratio for "
              "full attention); it grows linearly with T. † = beyond the model's positions (the same shape with a "
              "longer context). Measured:", ""]
    measured_ratio = [{"model": r["model"], "T": r["seq_len"], "exact": f"{r['exact']:.4f}",
                       "counted": None if r["counted"] is None else f"{r['counted']:.4f}"} for r in ratios]
    counted = {"counted": "counted torch fwd+bwd ÷ 6N"} if any(r["counted"] for r in measured_ratio) else {}
    lines += [markdown_table(measured_ratio, {"model": "model", "T": "T", "exact": "exact ÷ 6N", **counted}), ""]
    if not counted:
        lines += ["No training step was counted (no `fwd_bwd` or `train_step` row ran), so there is no counted "
                  "column.", ""]
    lines += ["## 3. Measured utilisation: MFU and HFU", "", image("mfu_hfu", "MFU and HFU by model and checkpointing")]
    if "mfu_hfu" in notes:
        lines += [f"Note: {notes['mfu_hfu']}.", ""]
    if noisy:
        lines += [f"Note: in {noisy} of {len(rows)} rows the slowest timed step took more than {noisy_factor} x the "
                  f"fastest: the machine was noisy while they ran; read their medians with the spread.", ""]
    fp8 = {"mfu_weighted": "MFU weighted (fp8)"} if any(r.get("mfu_weighted") is not None for r in rows) else {}
    table_rows = [{**r, "mfu": _pct(r["mfu"]), "hfu": _pct(r["hfu"]), "gemm_fraction": _pct(r["gemm_fraction"]),
                   "mfu_weighted": _pct(r.get("mfu_weighted")),
                   "spread": (f"{fixed(r['min_ms'], 4)}–{fixed(r['max_ms'], 4)}" if r["min_ms"] and r["max_ms"]
                              else None)}
                  for r in rows]
    lines += [markdown_table(table_rows, {
        "model": "model", "seq_len": "T", "batch_size": "B", "dtype": "dtype", "mode": "mode",
        "checkpointing": "ckpt", "status": "status", "median_ms": "median ms", "spread": "min–max ms",
        "tokens_per_s": "tokens/s",
        "achieved_tflops": "model TFLOP/s", "hardware_tflops": "hardware TFLOP/s", "mfu": "MFU", "hfu": "HFU",
        **fp8, "peak_tflops": "peak TFLOP/s", "gemm_tflops": "GEMM TFLOP/s", "gemm_fraction": "GEMM ÷ peak"}), ""]
    if above_ceiling:
        lines += [*(f"- **{above_ceiling_line(r)}**" for r in above_ceiling), ""]
    lines += ["## 4. Time per step: measured vs 2N / 6N (Kaplan et al. 2020) and 8N (Narayanan et al. 2021)", "",
              image("step_time", "step time")]
    if "step_time" in notes:
        lines += [f"Note: {notes['step_time']}.", ""]
    if predictions:
        lines += [f"Predicted = the row's rule (2N forward and 6N training per token, Kaplan et al. 2020, §2.1; 8N "
                  f"with full recomputation, Narayanan et al. 2021, Eq. 3) x tokens, at the rate in the *at* column "
                  f"(the dense peak, or the GEMM ceiling where no peak is known); *at {discount}*: at {discount} of "
                  f"that rate, the fraction reached in practice (`timing.rates.PRACTICAL_MFU`, a measured MFU; for 8N "
                  f"as an HFU).", ""]
        lines += [markdown_table(predictions, {
            "model": "model", "seq_len": "T", "batch_size": "B", "mode": "mode", "checkpointing": "ckpt",
            "median_ms": "measured ms", "simple_formula": "rule", "predicted_basis": "at",
            "predicted_ms": "predicted ms", "predicted_ms_discounted": f"predicted ms at {discount}",
            "ratio": "measured ÷ predicted"}), ""]
    else:
        lines += ["No predicted times: no row that ran has a peak TFLOP/s or a measured GEMM ceiling to predict "
                  "one from (give a peak, or measure the ceiling: `gemm = true` in a sweep spec).", ""]
    if failed:
        lines += ["## Rows that did not run", "", markdown_table(failed, {
            "model": "model", "seq_len": "T", "batch_size": "B", "dtype": "dtype", "mode": "mode",
            "checkpointing": "ckpt", "status": "status"}), ""]
    return "\n".join(lines).rstrip() + "\n"


def roofline_section(points: list[dict], roofs: list[dict], with_plot: bool) -> str:
    """The report's generation section: each `infer` point (median step time, tokens/s, arithmetic intensity,
    achieved TFLOP/s, MFU, MBU) and the roofs it sits under (a line instead of a table when there are none)."""
    lines = ["", "## 5. Generation: the roofline", ""]
    if with_plot:
        lines += ["![roofline](roofline.png)", ""]
    lines += [markdown_table([{**p, "mfu": _pct(p.get("mfu")), "mbu": _pct(p.get("mbu"))} for p in points], {
        "label": "phase", "median_ms": "median ms", "tokens_per_s": "tokens/s", "intensity": "FLOP/byte",
        "tflops": "TFLOP/s", "mfu": "MFU", "mbu": "MBU"}), ""]
    if roofs:
        lines += [markdown_table(roofs, {"label": "roof", "tflops": "TFLOP/s", "gbps": "GB/s"}), ""]
    else:
        lines += ["No roofs: no peak is known for this device and no ceilings were measured (`infer "
                  "--no-ceilings`), so the plot has the points alone and MFU and MBU are null.", ""]
    lines += ["Attainable TFLOP/s = min(compute roof, bandwidth × FLOP/byte) (Williams et al. 2009): the prefill "
              "sits near the compute roof, a decode step far left, under the bandwidth roof (its figure is MBU)."]
    return "\n".join(lines) + "\n"


def waterfall_section(explained: list[dict], with_plot: bool) -> str:
    """The report's `flopbench explain` section: each explained row's time by class of work and its waterfall
    from the dense peak to the MFU, the rows side by side."""
    lines = ["", "## 6. Where the MFU goes (`flopbench explain`)", ""]
    if with_plot:
        lines += ["![waterfall](waterfall.png)", ""]
    labels = [e["label"] for e in explained]
    names = [c["name"] for c in explained[0]["categories"]]
    shares = [{"class": name, **{label: _pct(next(c["share"] for c in e["categories"] if c["name"] == name))
                                 for label, e in zip(labels, explained)}} for name in names]
    lines += [markdown_table(shares, {"class": "class", **{label: label for label in labels}}), ""]
    steps = [{"step": s["name"], **{label: _pct(e["waterfall"][i]["value"]) if e["waterfall"] else "–"
                                    for label, e in zip(labels, explained)}}
             for i, s in enumerate(explained[0]["waterfall"] or [])]
    if steps:
        lines += [markdown_table(steps, {"step": "step", **{label: label for label in labels}}), ""]
    lines += ["Each step of the waterfall is a measured loss (shares of the step's time from torch.profiler, FLOPs "
              "per class from FlopCounterMode); they add up from the dense peak to the row's MFU."]
    return "\n".join(lines) + "\n"
