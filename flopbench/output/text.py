"""Terminal output: the documents the API returns rendered for a person, and the progress shown while a
command runs. Formatting only: every number shown on a terminal is formatted here (`si`, `flops`,
`scientific`, `percent`, `grouped`), each command's document has its `render_*` function, and
`for_encoding` fits the text to a terminal that cannot show every character (an ASCII-only one).

One terminal library, rich, draws every terminal table (`table`: rich.table.Table, columns folded to the
width) and every progress bar (`Progress`: rich.progress, on a terminal only). tabulate is kept for one
thing rich does not write: the GitHub-Markdown tables of report.md (`output.markdown`).

Width: each `render_*` fits its lines into `width` columns (`terminal_width()`: COLUMNS, else the
terminal's width, else `DEFAULT_WIDTH`): prose is wrapped, table columns are folded. `width=WIDE` (the
CLI's `--wide`) prints every table at its full width and every line unbroken. The output is plain: no
colour, no markup, no box-drawing characters (a header rule of "-"), so it greps and survives any encoding.
"""

from __future__ import annotations

import io
import math
import shutil
import sys
import textwrap
import time

from ..model.config import DTYPES

_SI = ((1e24, "Y"), (1e21, "Z"), (1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))
#: From here on `si` writes scientific notation: past 1000 Y (yotta, the largest SI prefix before 2022) a
#: prefix would only add digits.
SCIENTIFIC_FROM = 1e27
#: The width when neither COLUMNS nor a terminal says (output piped to a file or another program).
DEFAULT_WIDTH = 100
#: `--wide`: so wide that no table is folded and no line wrapped.
WIDE = 1_000_000
#: Narrower than this, folding would leave columns one character wide: fold at this width instead.
MIN_WIDTH = 40


def terminal_width() -> int:
    """The width to fit output into: COLUMNS, else the terminal's width, else `DEFAULT_WIDTH` (not a
    terminal); never below `MIN_WIDTH`."""
    return max(MIN_WIDTH, shutil.get_terminal_size((DEFAULT_WIDTH, 24)).columns)


def scientific(value: int | float, fmt: str) -> str:
    """`value` as mantissa e exponent, the mantissa formatted with `fmt`: scientific(2.7989e21, ".4g") ==
    "2.799e+21" (what f"{value:.4g}" gives), but exact for integers of any size, where f"{value:e}" raises
    OverflowError past a float's ~1.8e308. Not finite: "inf", "-inf", "nan"."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value == 0:
        return f"{0:{fmt}}e+00"
    sign, n = "-" if value < 0 else "", abs(value)
    exp = math.floor(math.log10(n))  # math.log10 takes integers of any size
    if isinstance(n, int):  # log10 is a float: correct it near a power of ten
        exp += 1 if n >= 10 ** (exp + 1) else -1 if n < 10**exp else 0
    mantissa = n / 10**exp if exp >= 0 else n * 10**-exp
    text = f"{mantissa:{fmt}}"
    if float(text) >= 10:  # 9.9996 rounded up to 10.000
        exp, text = exp + 1, f"{mantissa / 10:{fmt}}"
    return f"{sign}{text}e{exp:+03d}"


def si(value: int | float, fmt: str) -> str:
    """`value` scaled to its SI prefix (k through Y), formatted with `fmt`: si(3.5e12, ".3f") == "3.500 T";
    below 1000 there is no prefix (and no trailing space). From `SCIENTIFIC_FROM` on, or not finite,
    scientific notation and a space instead of a prefix: si(1.23e305, ".3f") == "1.230e+305 " (any
    integer works)."""
    if (isinstance(value, float) and not math.isfinite(value)) or abs(value) >= SCIENTIFIC_FROM:
        return f"{scientific(value, fmt)} "
    for scale, prefix in _SI:
        if abs(value) >= scale:
            return f"{value / scale:{fmt}} {prefix}"
    return f"{value:{fmt}}"


def flops(n: int | float | None) -> str:
    """A FLOPs count with an SI prefix: 3.51 TFLOPs (a count, never a rate); 2.799 ZFLOPs; 1.230e+305
    FLOPs past 1000 YFLOPs."""
    if n is None:
        return "-"
    return f"{n:.0f} FLOPs" if abs(n) < 1e3 else f"{si(n, '.3f')}FLOPs"


def fixed(value: int | float | None, digits: int = 3, trim: bool = True) -> str:
    """A measured number as f"{value:.{digits}g}" writes it (`digits` significant digits, trailing zeros
    dropped), but never in scientific notation and with thousands separators, so a column reads alike at
    every magnitude: fixed(12765.4) == "12,765" and fixed(3894.0) == "3,894" (not "1.28e+04" and "3.89e+03",
    nor "12,765" beside "3894"); fixed(12.345) == "12.3", fixed(0.012345) == "0.0123", fixed(2.0) == "2"
    (at most 9 decimals); `trim=False` keeps the trailing zeros (fixed(0.2, trim=False) == "0.200": every
    digit measured); "-" for None."""
    if value is None:
        return "-"
    if not math.isfinite(value):
        return str(value)
    if value == 0:
        return "0"
    decimals = min(9, max(0, digits - 1 - math.floor(math.log10(abs(value)))))
    shown = f"{value:,.{decimals}f}"
    return shown.rstrip("0").rstrip(".") if trim and "." in shown else shown


def fixed_column(values: list, digits: int = 3) -> list[str]:
    """A column of measured numbers in one format: every value with the decimals `fixed` gives the largest
    (`digits` significant digits there), trailing zeros kept, so a column never changes its decimals from row
    to row: fixed_column([0.01, 0.019, 0.0367]) == ["0.0100", "0.0190", "0.0367"], fixed_column([529.4,
    57.3]) == ["529", "57"]; "-" for None."""
    finite = [abs(v) for v in values if v is not None and math.isfinite(v) and v != 0]
    decimals = min(9, max(0, digits - 1 - math.floor(math.log10(max(finite))))) if finite else 0
    return ["-" if v is None else str(v) if not math.isfinite(v) else f"{v:,.{decimals}f}" for v in values]


def fill_column(rows: list[dict], header: str, values: list, digits: int = 3) -> None:
    """Set `header` of each row to its value of `values` (in row order), formatted by `fixed_column`."""
    for row, shown in zip(rows, fixed_column(values, digits), strict=True):
        row[header] = shown


#: ASCII stand-ins for the non-ASCII characters flopbench prints (formulas, citations, ±), used where the
#: terminal's encoding cannot show them (e.g. PYTHONIOENCODING=ascii, or LANG=C on an older system).
ASCII_STANDINS = str.maketrans({"·": "*", "²": "^2", "³": "^3", "×": "x", "≈": "~", "÷": "/", "±": "+/-",
                                "§": "sec. ", "—": "-", "–": "-", "−": "-", "→": "->", "≤": "<=", "≥": ">=",
                                "…": "..."})


def for_encoding(text: str, encoding: str) -> str:
    """`text` unchanged if `encoding` can encode it; else with `ASCII_STANDINS` swapped in and any character
    still left over as "?", so printing it cannot raise UnicodeEncodeError."""
    try:
        text.encode(encoding)
        return text
    except LookupError:  # an encoding Python does not know: the stream would fail to write anything anyway
        return text
    except UnicodeEncodeError:
        return text.translate(ASCII_STANDINS).encode(encoding, "replace").decode(encoding)


def percent(x: float | None, digits: int = 1, space: str = "") -> str:
    """A fraction as a percentage, "46.2%"; "-" for None."""
    return "-" if x is None else f"{100 * x:.{digits}f}{space}%"


def wrap(text: str, width: int, indent: str = "  ") -> str:
    """Each line of `text` wrapped at spaces to `width` columns, continuation lines indented by `indent`; a
    word longer than the width (a path) is broken, so no line is wider. `width=WIDE`: unchanged."""
    if width >= WIDE:
        return text
    return "\n".join(textwrap.fill(line, width, subsequent_indent=indent, break_on_hyphens=False,
                                   drop_whitespace=True) if len(line) > width else line
                     for line in text.split("\n"))


def _console(width: int, file=None):
    """A rich Console that writes plain text (no colour, markup, emoji or highlighting) `width` columns wide."""
    from rich.console import Console

    return Console(file=file if file is not None else io.StringIO(), width=width, color_system=None,
                   highlight=False, markup=False, emoji=False, soft_wrap=False)


def _header_rule():
    """rich's box for `table`: no borders, a rule of ASCII "-" under the header (greppable, any encoding)."""
    from rich.box import Box

    return Box("    \n    \n -  \n    \n    \n    \n    \n    \n", ascii=True)


def table(rows: list[dict], width: int = DEFAULT_WIDTH, right: tuple[str, ...] = ()) -> str:
    """A plain-text table of dict rows (keys are the headers; every row's keys, in first-seen order) at most
    `width` columns wide: rich.table.Table, each cell folded within its column when the table is wider
    (overflow="fold"); `right` names the right-aligned columns. Trailing spaces are stripped."""
    from rich.table import Table

    headers = list(dict.fromkeys(k for r in rows for k in r))
    t = Table(box=_header_rule(), show_edge=False, pad_edge=False, padding=(0, 1, 0, 0), header_style=None)
    for h in headers:
        t.add_column(h, overflow="fold", justify="right" if h in right else "left")
    for r in rows:
        t.add_row(*("" if r.get(h) is None else str(r[h]) for h in headers))
    console = _console(width)
    console.print(t)
    return "\n".join(line.rstrip() for line in console.file.getvalue().rstrip("\n").split("\n"))


def table_with_notes(rows: list[dict], notes: list[str], header: str, width: int = DEFAULT_WIDTH) -> str:
    """`table(rows)` where each row also has a note (a sentence, under `header`) too long for a column: each
    note on its own lines under its row, indented and wrapped to the full `width`, so that neither the short
    cells nor the note are folded into a narrow column. `width=WIDE`: the note is the row's last cell."""
    if width >= WIDE:
        return table([{**r, header: n} for r, n in zip(rows, notes, strict=True)], width)
    lines = table(rows, WIDE).split("\n")  # the short cells unfolded: header, rule, then one line per row
    out = [wrap(line, width, "    ") for line in lines[:2]]
    for line, note in zip(lines[2:], notes, strict=True):
        out += [wrap(line, width, "    "), wrap(f"    {note}", width, "    ")]
    return "\n".join(out)


def _section(title: str, body: str) -> str:
    return f"\n{title}\n{'-' * len(title)}\n{body}\n"


def architecture(cfg: dict) -> str:
    """The architecture fields of a config document in one phrase: 'mlp=swiglu norm=rmsnorm ...', with the
    fields beyond GPT-2 and Llama (head_dim set apart, QK-norm, norm placement, windows, experts, soft caps)
    where a model has them."""
    kv = cfg.get("n_kv_head") or cfg["n_head"]
    words = [f"n_kv_head={kv} mlp={cfg.get('mlp', 'gelu')} norm={cfg.get('norm', 'layernorm')} "
             f"positions={cfg.get('positions', 'learned')} bias={cfg['bias']} tied={cfg['tie_embeddings']}"]
    if cfg.get("head_dim") and cfg["head_dim"] * cfg["n_head"] != cfg["d_model"]:
        words.append(f"head_dim={cfg['head_dim']}")
    words += [f"{key}={cfg[key]}" for key, plain in (("qk_norm", "none"), ("norm_position", "pre"))
              if cfg.get(key, plain) != plain]
    if "sliding" in cfg.get("layer_types", ()):
        words.append(f"window={cfg['sliding_window']} layers={'/'.join(cfg['layer_types'])} (cycled)")
    if cfg.get("n_experts"):
        shared = f" shared={cfg['n_shared_experts']}x{cfg['d_ff_shared']}" if cfg.get("n_shared_experts") else ""
        dense = f" dense_layers={len(cfg['dense_layers'])}" if cfg.get("dense_layers") else ""
        words.append(f"experts={cfg['n_experts']} top_k={cfg['top_k']} d_ff_expert={cfg['d_ff_expert']}{shared}{dense}")
    words += [f"{key}={cfg[key]}" for key in ("attn_softcap", "final_softcap") if cfg.get(key)]
    if cfg.get("embed_scale"):
        words.append("embed_scale")
    return " ".join(words)


#: Labels of the parameter counts `count` knows; any other integer count is shown under its key. N of the
#: simple rules is the active matmul count (= matmul for a model without experts).
PARAM_LABELS = {"total": "total", "non_embedding": "non-embedding", "matmul": "matmul", "active": "active",
                "active_matmul": "active matmul (N in 2N/6N/8N)"}


def _param_rows(p: dict) -> list[dict]:
    """The parameter table: the active counts only where they differ (a mixture of experts); else the matmul
    count is the N of the simple rules."""
    moe = p.get("active", p["total"]) != p["total"]
    labels = dict(PARAM_LABELS, **({} if moe else {"matmul": "matmul (N in 2N/6N/8N)"}))
    return [{"parameters": labels.get(k, k.replace("_", " ")), "count": f"{v:,}"} for k, v in p.items()
            if isinstance(v, int) and not isinstance(v, bool)  # a count a newer document adds is shown too
            and (moe or k not in ("active", "active_matmul"))]


def render_count(doc: dict, width: int = DEFAULT_WIDTH) -> str:
    cfg, p, a = doc["config"], doc["params"], doc["analytic"]
    params = _param_rows(p)
    out = [
        wrap(f"flopbench count: {cfg['name']}  n_layer={cfg['n_layer']} d_model={cfg['d_model']} "
             f"n_head={cfg['n_head']} d_ff={cfg['d_ff']} vocab={cfg['vocab_size']}  {architecture(cfg)}  "
             f"batch={doc['batch_size']} x seq={doc['seq_len']} = {doc['tokens']:,} tokens per step", width) + "\n",
        wrap(f"conventions: {doc['conventions']}", width) + "\n",
        _section("Parameters", table(params, width, right=("count",))),
    ]
    comp_rows = [
        {"component": c["name"], "formula": c["formula"], "x": c["count"], "forward": flops(c["forward"]),
         "train (3x)": flops(3 * c["forward"]) if c["matmul"] else "-",
         "kind": "matmul" if c["matmul"] else "non-matmul (approx.)"}
        for c in a["components"]
    ]
    out.append(_section("Forward FLOPs per component (per step)",
                        table(comp_rows, width, right=("x", "forward", "train (3x)"))))
    headline = [
        {"quantity": "forward", "analytic": flops(a["forward"])},
        {"quantity": "train (fwd + bwd)", "analytic": flops(a["train"])},
        {"quantity": "train, full checkpointing", "analytic": flops(a["train_recompute"])},
        {"quantity": "  same, no early stop", "analytic": flops(a["train_recompute_no_early_stop"])},
    ]
    counted = doc["counted"]
    if "torch" in counted:
        for row, key in zip(headline, ("forward", "train", "train_recompute", None)):
            row["torch (meta)"] = flops(counted["torch"][key]) if key else "-"
    if "fvcore" in counted:
        for row, key in zip(headline, ("forward", None, None, None)):
            row["fvcore x2"] = flops(counted["fvcore"][key]) if key else "(forward only)"
    out.append(_section("Totals (matmul FLOPs per step)",
                        table(headline, width, right=("analytic", "torch (meta)", "fvcore x2"))))
    est_rows = [
        {"estimate": name, "FLOPs": flops(v), "phase": a["estimate_details"][name]["phase"],
         "source": a["estimate_details"][name]["source"]}
        for name, v in a["estimates"].items()
    ]
    out.append(_section("Named estimates (per step)", table(est_rows, width, right=("FLOPs",))))
    rec_rows = [{"left": c["left"], "right": c["right"], "ratio": f"{c['ratio']:.4f}", "status": c["status"]}
                for c in doc["reconciliation"]]
    out.append(_section("Reconciliation", table_with_notes(rec_rows, [c["reason"] for c in doc["reconciliation"]],
                                                           "why", width)))
    if "fvcore" in counted and counted["fvcore"]["unsupported"]:
        skipped = ", ".join(f"{op} x{n}" for op, n in counted["fvcore"]["unsupported"].items())
        out.append("\n" + wrap(f"fvcore skipped (no FLOP handle, none of them a matmul): {skipped}", width) + "\n")
    if counted:  # `--no-torch`: nothing was counted, so no counting time
        out.append(f"\ncounted in {doc['count_seconds']:.2f} s\n")
    return "".join(out)


def peak_shown(value: float | None, unit: str, source: str) -> str:
    """A peak and where it comes from: "989.4 TFLOP/s (H100 SXM ...)"; without one only "- TFLOP/s (none: see
    the warning)", since the command has already said why in a warning on stderr."""
    return f"{value:g} {unit} ({source})" if value else f"- {unit} (none: see the warning)"


def run_header(doc: dict, width: int = DEFAULT_WIDTH) -> str:
    """The first lines of `run`'s output, known before anything is timed: model, shape, dtype, device, peak
    (and the torchrun layout). The CLI prints them as the run starts; `render_run` begins with them."""
    cfg, env, peak = doc["config"], doc["environment"], doc["peak"]
    gpu = env.get("gpu")
    where = (f"{gpu['name']} (driver {gpu.get('driver_version')}, via {gpu['source']})" if gpu
             else f"CPU ({env['cpu_count']} cores)")
    lines = [
        f"flopbench run: {cfg['name']}  n_layer={cfg['n_layer']} d_model={cfg['d_model']} n_head={cfg['n_head']} "
        f"vocab={cfg['vocab_size']}  {architecture(cfg)}  batch={doc['batch_size']} x seq={doc['seq_len']}  "
        f"{doc['dtype']}{' compiled' if doc['compile'] else ''}",
        f"device: {doc['device']} = {where}; torch {env['torch']}, CUDA {env['cuda_runtime']}",
        f"peak: {peak_shown(peak['tflops'], 'TFLOP/s', peak['source'])}",
    ]
    if doc.get("fp8"):
        f8 = doc["fp8"]
        lines.append(f"fp8 peak: {peak_shown(peak.get('fp8_tflops'), 'TFLOP/s', peak.get('fp8_source'))}")
        lines.append(f"fp8 ({f8['recipe']}, torchao): {f8['converted']} Linear layers ({', '.join(f8['layers'])}); "
                     f"bf16: {f8['bf16']}")
    par = doc.get("parallelism")
    if par:
        lines.append(f"torchrun: {par['kind']} x {par['world_size']} ranks ({par['backend']}); each rank times its "
                     f"own batch; step time = the slowest rank's median; MFU / HFU per GPU")
    return "".join(wrap(line, width) + "\n" for line in lines)


def render_run(doc: dict, width: int = DEFAULT_WIDTH, header: bool = True) -> str:
    """`flopbench run`: the header (`run_header`; `header=False` leaves it out, the CLI printed it at the
    start), the GEMM ceiling, and per row its time and rates, then its FLOPs."""
    peak = doc["peak"]
    out = [run_header(doc, width)] if header else []
    if doc["gemm_ceiling"]:
        g = doc["gemm_ceiling"]
        vs = f", {percent(g['tflops_median'] / peak['tflops'])} of peak" if peak["tflops"] else ""
        clock = f", SM clock {g['sm_clock_mhz']:g} MHz" if g.get("sm_clock_mhz") else ""
        out.append(wrap(f"GEMM ceiling: {fixed(g['tflops_median'], trim=False)} TFLOP/s median "
                        f"({'x'.join(map(str, g['shape']))} {g['dtype']}, {g['seconds']:.2g} s{clock}{vs})",
                        width) + "\n")
    rows, counts = [], []
    for r in doc["rows"]:
        rows.append({
            "mode": r["mode"], "ckpt": r["checkpointing"], "status": r["status"],
            "step ms": None, "± IQR": None,  # filled below, one format per column (`fixed_column`)
            "tokens/s": f"{r['tokens_per_s']:,.0f}" if r["tokens_per_s"] else "-",
            "TFLOP/s": None, "MFU": percent(r["mfu"]), "causal": percent(r.get("mfu_causal")),
            "HFU": percent(r["hfu"]),
            "simple": f"{r['simple_formula']}: {percent(r['mfu_simple'])}",
        })
        if r.get("distributed"):
            d = r["distributed"]
            rows[-1]["all ranks tokens/s"] = f"{d['aggregate_tokens_per_s']:,.0f}"
            rows[-1]["slowest"] = f"rank {d['slowest_rank']}"
        counts.append({"mode": r["mode"], "ckpt": r["checkpointing"], "model FLOPs": flops(r["model_flops"]),
                       "HW FLOPs counted": flops(r["hardware_flops"]),
                       "HW analytic": flops(r["hardware_flops_analytic"])})
    times = [r["time_ms"] or {} for r in doc["rows"]]
    fill_column(rows, "step ms", [t.get("median_ms") for t in times])
    fill_column(rows, "± IQR", [t.get("iqr_ms") for t in times])
    fill_column(rows, "TFLOP/s", [r["achieved_tflops"] for r in doc["rows"]])
    out.append(_section("Measured (per step; step ms = median)", table(
        rows, width, right=("step ms", "± IQR", "tokens/s", "TFLOP/s", "MFU", "causal", "HFU", "all ranks tokens/s"))))
    out.append(_section("FLOPs (per step)", table(counts, width, right=("model FLOPs", "HW FLOPs counted",
                                                                        "HW analytic"))))
    if doc.get("fp8"):
        fp8_rows = [{"mode": r["mode"], "ckpt": r["checkpointing"], "fp8 FLOPs counted": flops(r["fp8_flops"]),
                     "fp8 analytic": flops(r["fp8_flops_analytic"]),
                     "fp8 share": percent(r["fp8_flops"] / r["hardware_flops"]) if r["fp8_flops"] is not None
                     and r["hardware_flops"] else "-",
                     "MFU fp8 peak": percent(r["mfu_fp8_peak"]), "MFU weighted": percent(r["mfu_weighted"]),
                     "HFU weighted": percent(r["hfu_weighted"])} for r in doc["rows"]]
        out.append(_section("fp8 (per step; weighted = fp8 FLOPs at the fp8 peak, the rest at the bf16 peak)",
                            table(fp8_rows, width, right=tuple(list(fp8_rows[0])[2:]) if fp8_rows else ())))
    notes = sorted({f"{r['mode']}/{r['checkpointing']}: {r['hardware_flops_note']}" for r in doc["rows"]
                    if r["hardware_flops_note"] not in ("", "equal")})
    if notes:
        out.append("\ncounted vs analytic hardware FLOPs:\n" + "".join(wrap(f"  {n}", width, "    ") + "\n"
                                                                      for n in notes))
    out.append("\n" + wrap("MFU = model FLOPs (no recompute) / (median time x peak), attention over the full T x T "
                           "square (PaLM, torchtitan); causal = the same with its lower triangle only (Megatron-LM, "
                           "MaxText); HFU = FLOPs counted on the "
                           "device (recompute included) / (time x peak); simple = 2N/6N (Kaplan et al. 2020) or 8N "
                           "(Narayanan et al. 2021) in place of the exact count.", width, "") + "\n")
    if doc["files"]:
        out.append(wrap(f"saved: {doc['files']['rows.jsonl']} (+ rows.csv, environment.json)", width) + "\n")
    return "".join(out)


def peak_table(entries: list[dict], width: int = DEFAULT_WIDTH) -> str:
    """The peak table (the `table` of the `gpus` document) as plain text."""
    rows = [{"GPU": e["name"], **{d: "-" if e[f"{d}_tflops"] is None else f"{e[f'{d}_tflops']:g}" for d in DTYPES}}
            for e in entries]
    return table(rows, width, right=DTYPES) + "\n" + wrap(
        "dense peak TFLOP/s (no 2:4 sparsity); bf16/fp16/fp8 (e4m3) = tensor cores, FP32 accumulate; - = none",
        width)


def check_line(check: dict) -> str:
    """One threshold check (`run`'s `checks` entries) as a line: "ok   min-mfu [train_step/none]: ..."."""
    verdict = "ok  " if check["ok"] else "FAIL"
    return f"{verdict} {check['check']} [{check['row']}]: expected {check['expected']}, measured {check['measured']}"


def render_infer(doc: dict, width: int = DEFAULT_WIDTH) -> str:
    """`flopbench infer`: the prefill and the decode steps, FLOPs and bytes, time, MFU and MBU."""
    cfg, peak, p, d = doc["config"], doc["peak"], doc["prefill"], doc["decode"]
    out = [wrap(f"flopbench infer: {cfg['name']}  batch={doc['batch_size']} prompt={doc['prompt_len']} "
                f"generate={doc['gen_len']}  {doc['dtype']} on {doc['device']}", width) + "\n",
           wrap(f"peak: {peak_shown(peak['tflops'], 'TFLOP/s', peak['source'])}; "
                f"{peak_shown(peak['gbps'], 'GB/s', peak['gbps_source'])}", width) + "\n"]
    c = doc["ceilings"]
    if c["gemm"]:
        out.append(f"ceilings: GEMM {fixed(c['gemm']['tflops_median'])} TFLOP/s, "
                   f"copy {fixed(c['copy']['gbps_median'])} GB/s\n")
    phases = [("prefill", doc["prompt_len"], p)] + ([("decode", d["context"], d)] if d["time_ms"] else [])
    rows = [{"phase": name, "context": context, "FLOPs": flops(x["flops"]), "bytes": si(x["bytes"], ".3g") + "B",
             "FLOP/byte": None, "median ms": None, "TFLOP/s": None, "MFU": percent(x["mfu"]), "MBU": percent(x["mbu"]),
             "tokens/s": f"{x['tokens_per_s']:,.0f}" if x.get("tokens_per_s") else "-"} for name, context, x in phases]
    for header, key in (("FLOP/byte", "intensity"), ("TFLOP/s", "achieved_tflops")):
        fill_column(rows, header, [x[key] for _, _, x in phases])
    fill_column(rows, "median ms", [x["time_ms"]["median_ms"] for _, _, x in phases])
    numbers = ("context", "FLOPs", "bytes", "FLOP/byte", "median ms", "TFLOP/s", "MFU", "MBU", "tokens/s")
    out.append(_section("Generation (per step; decode = its median step)", table(rows, width, right=numbers)))
    if d["time_ms"]:
        host = "" if d["launch_bound"] is None else (  # on the CPU host and device are one clock
            f"; the host took {fixed(d['host_ms']['median_ms'])} ms to launch a step"
            + (": launch-bound, the GPU waited for it" if d["launch_bound"] else ""))
        out.append(wrap(f"decode: static cache of {doc['cache_len']} positions, each step scores all of them "
                        f"(masked beyond the context): hardware {flops(d['hardware_flops'])}, "
                        f"{si(d['hardware_bytes'], '.3g')}B per step{host}", width) + "\n")
    if d["buckets"]:
        buckets = [{"context": f"{b['context_from']}-{b['context_to']}", "steps": b["steps"],
                    "median ms": fixed(b["median_ms"]), "MBU": percent(b["mbu"]), "MFU": percent(b["mfu"])}
                   for b in d["buckets"]]
        out.append(_section("Decode steps by context", table(buckets, width, right=numbers + ("steps",))))
    rec = [{"counted": r["left"], "analytic": r["right"], "status": r["status"]} for r in doc["reconciliation"]]
    out.append(_section("Counted vs analytic", table(rec, width)))
    if doc["files"]:
        out.append("\n" + wrap(f"saved: {doc['files']['rows.jsonl']}", width) + "\n")
    return "".join(out)


def render_explain(doc: dict, width: int = DEFAULT_WIDTH) -> str:
    """`flopbench explain`: each checkpointing mode's time by class of work, then the waterfall from the dense
    peak to the MFU, the modes side by side."""
    peak, rows = doc["peak"], doc["explained"]
    out = [wrap(f"flopbench explain: {doc['config']['name']}  {doc['mode']}  batch={doc['batch_size']} "
                f"seq={doc['seq_len']}  {doc['dtype']} on {doc['device']}"
                f"{'  compiled' if doc['compile'] else ''}", width) + "\n",
           wrap(f"peak: {peak['tflops'] or '-'} TFLOP/s ({peak['source']})", width) + "\n"]
    for e in rows:
        out.append(wrap(f"checkpointing {e['checkpointing']}: step {fixed(e['step_ms'])} ms (median timed; "
                        f"profiled {fixed(e['profiled_step_ms'])} ms), MFU {percent(e['mfu'])}, "
                        f"HFU {percent(e['hfu'])}", width) + "\n")
    if not rows:
        return "".join(out)
    names = [c["name"] for c in rows[0]["categories"]]
    classes = []
    for i, name in enumerate(names):
        line = {"class": name}
        for e in rows:
            c = e["categories"][i]
            line[f"{e['checkpointing']} ms"] = None  # filled below, one format per column
            line[f"{e['checkpointing']} share"] = percent(c["share"])
            line[f"{e['checkpointing']} TFLOP/s"] = None
        classes.append(line)
    for e in rows:
        fill_column(classes, f"{e['checkpointing']} ms", [c["time_ms"] for c in e["categories"]])
        fill_column(classes, f"{e['checkpointing']} TFLOP/s", [c["achieved_tflops"] or None for c in e["categories"]])
    numbers = tuple(k for k in classes[0] if k != "class")
    out.append(_section("Where the step's time goes", table(classes, width, right=numbers)))
    if all(e["waterfall"] for e in rows):
        steps = []
        for i, w in enumerate(rows[0]["waterfall"]):
            line = {"step": w["name"]}
            for e in rows:
                v = e["waterfall"][i]
                line[f"{e['checkpointing']}"] = percent(v["value"])
                line[f"{e['checkpointing']} loss"] = percent(v["loss"]) if "loss" in v else ""
            steps.append(line)
        out.append(_section("From the dense peak to MFU", table(steps, width, right=tuple(steps[0])[1:])))
    else:
        out.append("\n" + wrap(rows[0]["waterfall_note"], width) + "\n")
    for e in rows:
        room = max(20, min(width, 100) - 34)
        top = [{"kernel" if doc["device"].startswith("cuda") else "operator":
                t["name"] if len(t["name"]) <= room else t["name"][:room - 3] + "...",
                "class": t["class"], "ms": None, "share": percent(t["share"])} for t in e["top"][:8]]
        fill_column(top, "ms", [t["time_ms"] for t in e["top"][:8]])
        if top:
            out.append(_section(f"Top of the step (checkpointing {e['checkpointing']})",
                                table(top, width, right=("ms", "share"))))
    if doc["files"]:
        out.append("\n" + wrap(f"saved: {doc['files']['rows.jsonl']}", width) + "\n")
    return "".join(out)


def render_gpu_lookup(doc: dict, width: int = DEFAULT_WIDTH) -> str:
    """`gpus --lookup NAME`: the table entry NAME matches and the peak per dtype it would get."""
    e = doc["table_entry"]
    mig = doc["mig"]
    head = wrap(f"{doc['lookup']} -> {e['name']} ({e['key']}, {e['sms'] or '?'} SMs; {e['source']})", width) + "\n"
    if mig:
        head += f"MIG slice: {mig['slice_sms'] or '?'} of {mig['chip_sms'] or '?'} SMs\n"
    rows = [{"dtype": d, "peak TFLOP/s": "-" if p["tflops"] is None else f"{p['tflops']:g}",
             "rated MHz": "-" if p["rated_clock_mhz"] is None else f"{p['rated_clock_mhz']:g}", "source": p["source"]}
            for d, p in doc["peaks"].items()]
    clocks = wrap(f"rated clock: {e['clock_source'] or 'none in the table'}", width) + "\n"
    return head + table(rows, width, right=("peak TFLOP/s", "rated MHz")) + "\n" + clocks


def render_gpus(doc: dict, width: int = DEFAULT_WIDTH) -> str:
    gpu, key = doc["detected"], doc["table_entry"]
    entry = next((e["name"] for e in doc["table"] if e["key"] == key), "not in table")
    found = (f"detected: {gpu['name']} (via {gpu['source']}) -> {entry}" if gpu
             else "detected: no CUDA GPU (NVML and torch.cuda found none)")
    return f"{peak_table(doc['table'], width)}\n\n{wrap(found, width)}\n"


def render_sweep(doc: dict, width: int = DEFAULT_WIDTH) -> str:
    """The sweep's new rows as a terminal table."""
    rows = [{"model": r["model"], "T": r["seq_len"], "B": r["batch_size"], "dtype": r["dtype"],
             "ckpt": r["checkpointing"], "mode": r["mode"], "status": r["status"],
             "median ms": None, "TFLOP/s": None, "MFU": percent(r.get("mfu")), "HFU": percent(r.get("hfu"))}
            for r in doc["rows"]]
    fill_column(rows, "median ms", [(r.get("time_ms") or {}).get("median_ms") for r in doc["rows"]])
    fill_column(rows, "TFLOP/s", [r.get("achieved_tflops") for r in doc["rows"]])
    head = wrap(f"flopbench sweep {doc['name']}: {doc['grid_points_run']} of {doc['grid_points']} grid points run, "
                f"{len(doc['rows'])} new rows ({doc['rows_skipped']} already present), {doc['rows_total']} in "
                f"{doc['files']['rows.jsonl']}", width) + "\n"
    return head + (table(rows, width, right=("T", "B", "median ms", "TFLOP/s", "MFU", "HFU")) + "\n" if rows else "")


def render_estimate(doc: dict, width: int = DEFAULT_WIDTH) -> str:
    gpu = f"{doc['gpus']} x {doc['gpu'] or 'GPU (--peak-tflops)'}"
    prefixed = f" ({flops(doc['flops'])})" if doc["flops"] < SCIENTIFIC_FROM else ""  # else flops() repeats it
    kind = "hfu" if "hfu" in doc else "mfu"  # 8NT and the exact recompute count are divided by an HFU
    seq = ([f"              T = {doc['seq_len']:,} tokens per sequence ({doc['seq_len_source']})"]
           if doc["seq_len"] is not None else [])
    lines = [
        f"flopbench estimate: {doc['model']}, N_matmul = {doc['n_matmul']:,}, {doc['tokens']:,} tokens",
        f"  compute   C = {scientific(doc['flops'], '.4g')} FLOPs{prefixed}; "
        f"{flops(doc['flops_per_token'])} per token",
        f"              {doc['method']}: {doc['method_formula']}",
        *seq,
        f"  hardware  {gpu}, {doc['dtype']} dense peak {doc['peak_tflops']:g} TFLOP/s ({doc['peak_source']})",
        f"  {kind.upper()}       {doc[kind]:.3f} ({doc[f'{kind}_source']})",
        f"  GPU-hours {doc['gpu_hours']:,.0f}",
        f"  wall time {doc['wall_hours']:,.1f} h = {doc['wall_days']:,.2f} days on {doc['gpus']} "
        f"GPU{'s' if doc['gpus'] != 1 else ''}",
        f"  (C / (G x peak x {kind.upper()}); ignores communication, data loading, optimizer and logging)",
    ]
    return "".join(wrap(line, width, " " * (14 if i else 2)) + "\n" for i, line in enumerate(lines))


def above_ceiling_line(r: dict) -> str:
    """One row faster than its GEMM ceiling (`api.report.above_gemm_ceiling`), as a sentence."""
    return (f"{r['model']} {r['mode']}/{r['checkpointing']} T={r['seq_len']} B={r['batch_size']} runs above its GEMM "
            f"ceiling: {fixed(r['achieved_tflops'], 4)} > {fixed(r['gemm_tflops'], 4)} TFLOP/s "
            f"({r['gemm_ratio']:.3g} ×): that ceiling is no ceiling for it")


def render_report(doc: dict, width: int = DEFAULT_WIDTH) -> str:
    plots = [f"  {p}" for p in doc["plots"].values()] or ["  (none: matplotlib is not installed)"]
    lines = [f"flopbench report: {doc['rows']} rows from {doc['results']}", f"  {doc['report']}", "plots:", *plots]
    lines += [f"warning: {above_ceiling_line(r)}" for r in doc.get("above_gemm_ceiling", ())]
    return "".join(wrap(line, width, "    ") + "\n" for line in lines)


class Progress:
    """Progress of a long command on `stream` (stderr), at most `width` columns wide.

    `line(message)`: a status line or a warning (wrapped). `start(description, total)` begins a task,
    `update(done, description)` moves it, `finish(summary)` ends it and prints `summary`. On a terminal
    the task is a live rich.progress bar (description, bar, done/total, elapsed, ETA) that disappears when
    the task finishes (transient): what stays is one line per task. Not a terminal (a log file, a pipe,
    CI): no bar and nothing per step, only the lines, so a log gets a few lines per task. `quiet` (`--json`
    without `--progress`): only warnings (lines starting "warning:"). `close()` ends a bar left running
    (an error, Ctrl-C)."""

    def __init__(self, stream=None, width: int | None = None, quiet: bool = False, live: bool | None = None,
                 clock=time.monotonic):
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock  # seconds, for the elapsed time and the ETA (a test passes its own)
        self.width = terminal_width() if width is None or width >= WIDE else width
        self.quiet = quiet
        isatty = getattr(self.stream, "isatty", None)
        self.live = not quiet and (bool(isatty and isatty()) if live is None else live)
        self._bar = self._task = None
        self._started, self._done, self._total = clock(), 0, 0

    def line(self, message: str) -> None:
        if self.quiet and not message.startswith("warning:"):
            return
        text = for_encoding(wrap(message, self.width), getattr(self.stream, "encoding", None) or "utf-8")
        if self._bar is not None:
            self._bar.console.print(text, markup=False, highlight=False, soft_wrap=True)
        else:
            self.stream.write(text + "\n")
            self.stream.flush()

    def start(self, description: str, total: int, steps: bool = True) -> None:
        """Begin a task of `total` units: steps (shown as done/total), or with `steps=False` a weight such as
        FLOPs (shown as a percentage)."""
        self.close()
        self._started, self._done, self._total = self.clock(), 0, total
        if not self.live:
            return
        from rich.progress import Progress as Bar

        self._bar = Bar(*bar_columns(self.width, steps), console=_console_for(self.stream, self.width),
                        transient=True, expand=True, get_time=self.clock)
        self._bar.start()
        self._task = self._bar.add_task(description, total=total)

    def update(self, done: int, description: str | None = None) -> None:
        self._done = done
        if self._bar is not None:
            self._bar.update(self._task, completed=done, **({"description": description} if description else {}))

    def elapsed(self) -> float:
        """Seconds since `start`."""
        return self.clock() - self._started

    def eta(self) -> str:
        """The time left, from the pace so far ("?" before anything is done)."""
        if not self._done or not self._total:
            return "?"
        return f"{self.elapsed() * (self._total - self._done) / self._done:.0f} s"

    def finish(self, summary: str | None = None) -> None:
        self.close()
        if summary:
            self.line(summary)

    def close(self) -> None:
        if self._bar is not None:
            bar, self._bar = self._bar, None
            bar.stop()


#: The live bar's cells: the bar gets `BAR_MIN_WIDTH` to `BAR_MAX_WIDTH` columns, and only on a terminal
#: at least `BAR_FROM_WIDTH` wide; the description at least `DESCRIPTION_MIN_WIDTH`.
BAR_MIN_WIDTH, BAR_MAX_WIDTH, BAR_FROM_WIDTH, DESCRIPTION_MIN_WIDTH = 10, 30, 60, 10


def bar_columns(width: int, steps: bool = True) -> list:
    """The columns of the live progress bar (rich.progress), in the order they give way when `width` is
    short: the description first (cut with "…"), then the bar (between `BAR_MIN_WIDTH` and `BAR_MAX_WIDTH`
    cells; none below `BAR_FROM_WIDTH` columns), never the done/total count, the elapsed time or the ETA,
    which are not wrapped ("0:01:05 ETA 0:03:20")."""
    from rich.progress import (BarColumn, MofNCompleteColumn, TaskProgressColumn, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)
    from rich.table import Column

    fixed_cell = Column(no_wrap=True, justify="right")
    columns = [TextColumn("{task.description}", markup=False, table_column=Column(
        ratio=1, no_wrap=True, overflow="ellipsis", min_width=DESCRIPTION_MIN_WIDTH))]
    if width >= BAR_FROM_WIDTH:
        columns.append(BarColumn(bar_width=None, table_column=Column(min_width=BAR_MIN_WIDTH, max_width=BAR_MAX_WIDTH)))
    count = MofNCompleteColumn(table_column=fixed_cell) if steps else TaskProgressColumn(table_column=fixed_cell)
    return columns + [count, TimeElapsedColumn(table_column=fixed_cell), TextColumn("ETA", table_column=fixed_cell),
                      TimeRemainingColumn(table_column=fixed_cell)]


def _console_for(stream, width: int):
    """A rich Console on a terminal `stream` (colours as the terminal allows) `width` columns wide."""
    from rich.console import Console

    return Console(file=stream, width=width, highlight=False, markup=False, emoji=False)


class RunProgress:
    """`run`'s progress on a `Progress`: its status lines (`message`) and, per timed row, a bar over the
    warm-up and timed steps (`step`, given `api.run.StepProgress`) that ends in one line with the time taken."""

    def __init__(self, progress: Progress):
        self.progress = progress

    def message(self, msg: str) -> None:
        self.progress.line(msg)

    def step(self, s) -> None:
        total, name = s.warmup + s.iters, f"{s.mode} (checkpointing {s.checkpointing})"
        if s.done == 0:
            self.progress.start(f"{name}: warm-up", total)
            return
        phase = f"warm-up {s.done}/{s.warmup}" if s.done <= s.warmup else f"timed {s.done - s.warmup}/{s.iters}"
        self.progress.update(s.done, f"{name}: {phase}")
        if s.done == total:
            self.progress.finish(f"{name}: {s.warmup} warm-up + {s.iters} timed steps in "
                                 f"{self.progress.elapsed():.1f} s")

    def close(self) -> None:
        self.progress.close()
