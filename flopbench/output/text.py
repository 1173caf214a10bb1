"""Terminal rendering of the documents the API returns (tables through tabulate). Formatting only: every
number shown on a terminal is formatted here (`si`, `flops`, `scientific`, `percent`), each command's
document has its `render_*` function, and `for_encoding` fits the text to a terminal that cannot show
every character (an ASCII-only one)."""

from __future__ import annotations

import math

from ..model.config import DTYPES

_SI = ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))
#: From here on `si` writes scientific notation: past 1000 E the largest prefix would only add digits.
SCIENTIFIC_FROM = 1e21


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
    """`value` scaled to its SI prefix, formatted with `fmt`: si(3.5e12, ".3f") == "3.500 T"; below 1000
    there is no prefix (and no trailing space). From `SCIENTIFIC_FROM` on, or not finite, scientific
    notation and a space instead of a prefix: si(1.23e305, ".3f") == "1.230e+305 " (any integer works)."""
    if (isinstance(value, float) and not math.isfinite(value)) or abs(value) >= SCIENTIFIC_FROM:
        return f"{scientific(value, fmt)} "
    for scale, prefix in _SI:
        if abs(value) >= scale:
            return f"{value / scale:{fmt}} {prefix}"
    return f"{value:{fmt}}"


def flops(n: int | float | None) -> str:
    """A FLOPs count with an SI prefix: 3.51 TFLOPs (a count, never a rate); 1.230e+305 FLOPs past 1000 E."""
    if n is None:
        return "-"
    return f"{n:.0f} FLOPs" if abs(n) < 1e3 else f"{si(n, '.3f')}FLOPs"


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


def table(rows: list[dict]) -> str:
    """A plain-text table of dict rows (keys are the headers), text left-aligned, via tabulate."""
    from tabulate import tabulate

    return tabulate(rows, headers="keys", tablefmt="simple", disable_numparse=True)


def _section(title: str, body: str) -> str:
    return f"\n{title}\n{'-' * len(title)}\n{body}\n"


def architecture(cfg: dict) -> str:
    """The architecture fields of a config document in one phrase: 'mlp=swiglu norm=rmsnorm ...'."""
    kv = cfg.get("n_kv_head") or cfg["n_head"]
    return (f"n_kv_head={kv} mlp={cfg.get('mlp', 'gelu')} norm={cfg.get('norm', 'layernorm')} "
            f"positions={cfg.get('positions', 'learned')} bias={cfg['bias']} tied={cfg['tie_embeddings']}")


def render_count(doc: dict) -> str:
    cfg, p, a = doc["config"], doc["params"], doc["analytic"]
    out = [
        f"flopbench count: {cfg['name']}  n_layer={cfg['n_layer']} d_model={cfg['d_model']} "
        f"n_head={cfg['n_head']} d_ff={cfg['d_ff']} vocab={cfg['vocab_size']}  {architecture(cfg)}  "
        f"batch={doc['batch_size']} x seq={doc['seq_len']} = {doc['tokens']:,} tokens per step\n",
        f"conventions: {doc['conventions']}\n",
        _section("Parameters", f"total {p['total']:,}   non-embedding {p['non_embedding']:,}   "
                               f"matmul (N in 2N/6N/8N) {p['matmul']:,}"),
    ]
    comp_rows = [
        {"component": c["name"], "formula": c["formula"], "x": c["count"], "forward": flops(c["forward"]),
         "train (3x)": flops(3 * c["forward"]) if c["matmul"] else "-",
         "kind": "matmul" if c["matmul"] else "non-matmul (approx.)"}
        for c in a["components"]
    ]
    out.append(_section("Forward FLOPs per component (per step)", table(comp_rows)))
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
    out.append(_section("Totals (matmul FLOPs per step)", table(headline)))
    est_rows = [
        {"estimate": name, "FLOPs": flops(v), "phase": a["estimate_details"][name]["phase"],
         "source": a["estimate_details"][name]["source"]}
        for name, v in a["estimates"].items()
    ]
    out.append(_section("Named estimates (per step)", table(est_rows)))
    rec_rows = [
        {"left": c["left"], "right": c["right"], "ratio": f"{c['ratio']:.4f}", "status": c["status"],
         "why": c["reason"]}
        for c in doc["reconciliation"]
    ]
    out.append(_section("Reconciliation", table(rec_rows)))
    if "fvcore" in counted and counted["fvcore"]["unsupported"]:
        skipped = ", ".join(f"{op} x{n}" for op, n in counted["fvcore"]["unsupported"].items())
        out.append(f"\nfvcore skipped (no FLOP handle, none of them a matmul): {skipped}\n")
    out.append(f"\ncounted in {doc['count_seconds']:.2f} s\n")
    return "".join(out)


def render_run(doc: dict) -> str:
    cfg, env, peak = doc["config"], doc["environment"], doc["peak"]
    gpu = env.get("gpu")
    where = (f"{gpu['name']} (driver {gpu.get('driver_version')}, via {gpu['source']})" if gpu
             else f"CPU ({env['cpu_count']} cores)")
    out = [
        f"flopbench run: {cfg['name']}  n_layer={cfg['n_layer']} d_model={cfg['d_model']} n_head={cfg['n_head']} "
        f"vocab={cfg['vocab_size']}  {architecture(cfg)}  batch={doc['batch_size']} x seq={doc['seq_len']}  "
        f"{doc['dtype']}{' compiled' if doc['compile'] else ''}\n",
        f"device: {doc['device']} = {where}; torch {env['torch']}, CUDA {env['cuda_runtime']}\n",
        f"peak: {peak['tflops'] if peak['tflops'] else '-'} TFLOP/s ({peak['source']})\n",
    ]
    par = doc.get("parallelism")
    if par:
        out.append(f"torchrun: {par['kind']} x {par['world_size']} ranks ({par['backend']}); each rank times its own "
                   f"batch; step time = the slowest rank's median; MFU / HFU per GPU\n")
    if doc["gemm_ceiling"]:
        g = doc["gemm_ceiling"]
        vs = f", {percent(g['tflops_median'] / peak['tflops'])} of peak" if peak["tflops"] else ""
        out.append(f"GEMM ceiling: {g['tflops_median']:.3g} TFLOP/s median ({g['size']}^3 {g['dtype']}{vs})\n")
    rows = []
    for r in doc["rows"]:
        t = r["time_ms"]
        rows.append({
            "mode": r["mode"], "ckpt": r["checkpointing"], "status": r["status"],
            "step ms (median ± IQR)": f"{t['median_ms']:.2f} ± {t['iqr_ms']:.2f}" if t else "-",
            "tokens/s": f"{r['tokens_per_s']:,.0f}" if r["tokens_per_s"] else "-",
            "TFLOP/s": f"{r['achieved_tflops']:.2f}" if r["achieved_tflops"] else "-",
            "MFU": percent(r["mfu"]), "HFU": percent(r["hfu"]),
            "simple": f"{r['simple_formula']}: {percent(r['mfu_simple'])}",
            "model FLOPs": flops(r["model_flops"]),
            "HW FLOPs counted": flops(r["hardware_flops"]),
            "HW analytic": flops(r["hardware_flops_analytic"]),
        })
        if r.get("distributed"):
            d = r["distributed"]
            rows[-1]["all ranks tokens/s"] = f"{d['aggregate_tokens_per_s']:,.0f}"
            rows[-1]["slowest"] = f"rank {d['slowest_rank']}"
    out.append(_section("Measured (per step)", table(rows)))
    notes = sorted({f"{r['mode']}/{r['checkpointing']}: {r['hardware_flops_note']}" for r in doc["rows"]
                    if r["hardware_flops_note"] not in ("", "equal")})
    if notes:
        out.append("\ncounted vs analytic hardware FLOPs:\n" + "".join(f"  {n}\n" for n in notes))
    out.append("\nMFU = model FLOPs (no recompute) / (median time x peak); HFU = FLOPs counted on the device "
               "(recompute included) / (time x peak); simple = 2N/6N (Kaplan et al. 2020) or 8N (Narayanan et al. 2021) "
               "in place of the exact count.\n")
    if doc["files"]:
        out.append(f"saved: {doc['files']['rows.jsonl']} (+ rows.csv, environment.json)\n")
    return "".join(out)


def peak_table(entries: list[dict]) -> str:
    """The peak table (the `table` of the `gpus` document) as plain text."""
    from tabulate import tabulate

    rows = [(e["name"], *("-" if e[f"{d}_tflops"] is None else f"{e[f'{d}_tflops']:g}" for d in DTYPES))
            for e in entries]
    text = tabulate(rows, headers=("GPU", *DTYPES), tablefmt="simple", disable_numparse=True,
                    colalign=("left", *("right",) * len(DTYPES)))
    return text + "\ndense peak TFLOP/s (no 2:4 sparsity); bf16/fp16 = tensor cores, FP32 accumulate; - = none"


def check_line(check: dict) -> str:
    """One threshold check (`run`'s `checks` entries) as a line: "ok   min-mfu [train_step/none]: ..."."""
    verdict = "ok  " if check["ok"] else "FAIL"
    return f"{verdict} {check['check']} [{check['row']}]: expected {check['expected']}, measured {check['measured']}"


def render_infer(doc: dict) -> str:
    """`flopbench infer`: the prefill and the decode steps, FLOPs and bytes, time, MFU and MBU."""
    cfg, peak, p, d = doc["config"], doc["peak"], doc["prefill"], doc["decode"]
    out = [f"flopbench infer: {cfg['name']}  batch={doc['batch_size']} prompt={doc['prompt_len']} "
           f"generate={doc['gen_len']}  {doc['dtype']} on {doc['device']}\n",
           f"peak: {peak['tflops'] or '-'} TFLOP/s ({peak['source']}); {peak['gbps'] or '-'} GB/s "
           f"({peak['gbps_source']})\n"]
    c = doc["ceilings"]
    if c["gemm"]:
        out.append(f"ceilings: GEMM {c['gemm']['tflops_median']:.3g} TFLOP/s, "
                   f"copy {c['copy']['gbps_median']:.3g} GB/s\n")
    rows = [{"phase": "prefill", "context": doc["prompt_len"], "FLOPs": flops(p["flops"]),
             "bytes": si(p["bytes"], ".3g") + "B", "FLOP/byte": f"{p['intensity']:.3g}",
             "median ms": f"{p['time_ms']['median_ms']:.3g}", "TFLOP/s": f"{p['achieved_tflops']:.3g}",
             "MFU": percent(p["mfu"]), "MBU": percent(p["mbu"]), "tokens/s": "-"}]
    if d["time_ms"]:
        rows.append({"phase": "decode (median)", "context": d["context"], "FLOPs": flops(d["flops"]),
                     "bytes": si(d["bytes"], ".3g") + "B", "FLOP/byte": f"{d['intensity']:.3g}",
                     "median ms": f"{d['time_ms']['median_ms']:.3g}", "TFLOP/s": f"{d['achieved_tflops']:.3g}",
                     "MFU": percent(d["mfu"]), "MBU": percent(d["mbu"]), "tokens/s": f"{d['tokens_per_s']:,.0f}"})
    out.append(_section("Generation (per step)", table(rows)))
    if d["buckets"]:
        buckets = [{"context": f"{b['context_from']}-{b['context_to']}", "steps": b["steps"],
                    "median ms": f"{b['median_ms']:.3g}", "MBU": percent(b["mbu"]), "MFU": percent(b["mfu"])}
                   for b in d["buckets"]]
        out.append(_section("Decode steps by context", table(buckets)))
    rec = [{"counted": r["left"], "analytic": r["right"], "status": r["status"]} for r in doc["reconciliation"]]
    out.append(_section("Counted vs analytic", table(rec)))
    if doc["files"]:
        out.append(f"\nsaved: {doc['files']['rows.jsonl']}\n")
    return "".join(out)


def render_gpu_lookup(doc: dict) -> str:
    """`gpus --lookup NAME`: the table entry NAME matches and the peak per dtype it would get."""
    e = doc["table_entry"]
    mig = doc["mig"]
    head = f"{doc['lookup']} -> {e['name']} ({e['key']}, {e['sms'] or '?'} SMs; {e['source']})\n"
    if mig:
        head += f"MIG slice: {mig['slice_sms'] or '?'} of {mig['chip_sms'] or '?'} SMs\n"
    rows = [{"dtype": d, "peak TFLOP/s": "-" if p["tflops"] is None else f"{p['tflops']:g}", "source": p["source"]}
            for d, p in doc["peaks"].items()]
    return head + table(rows) + "\n"


def render_gpus(doc: dict) -> str:
    gpu, key = doc["detected"], doc["table_entry"]
    entry = next((e["name"] for e in doc["table"] if e["key"] == key), "not in table")
    found = (f"detected: {gpu['name']} (via {gpu['source']}) -> {entry}" if gpu
             else "detected: no CUDA GPU (NVML and torch.cuda found none)")
    return f"{peak_table(doc['table'])}\n\n{found}\n"


def render_sweep(doc: dict) -> str:
    """The sweep's new rows as a terminal table."""
    rows = [{"model": r["model"], "T": r["seq_len"], "B": r["batch_size"], "dtype": r["dtype"],
             "ckpt": r["checkpointing"], "mode": r["mode"], "status": r["status"],
             "median ms": f"{r['time_ms']['median_ms']:.2f}" if r.get("time_ms") else "-",
             "TFLOP/s": "-" if r.get("achieved_tflops") is None else f"{r['achieved_tflops']:.3f}",
             "MFU": percent(r.get("mfu")), "HFU": percent(r.get("hfu"))} for r in doc["rows"]]
    head = (f"flopbench sweep {doc['name']}: {doc['grid_points_run']} of {doc['grid_points']} grid points run, "
            f"{len(doc['rows'])} new rows ({doc['rows_skipped']} already present), {doc['rows_total']} in "
            f"{doc['files']['rows.jsonl']}\n")
    return head + (table(rows) + "\n" if rows else "")


def render_estimate(doc: dict) -> str:
    gpu = f"{doc['gpus']} x {doc['gpu'] or 'GPU (--peak-tflops)'}"
    prefixed = f" ({flops(doc['flops'])})" if doc["flops"] < SCIENTIFIC_FROM else ""  # else flops() repeats it
    return (
        f"flopbench estimate: {doc['model']}, N_matmul = {doc['n_matmul']:,}, {doc['tokens']:,} tokens "
        f"(sequences of {doc['seq_len']})\n"
        f"  compute   C = {scientific(doc['flops'], '.4g')} FLOPs{prefixed}; "
        f"{flops(doc['flops_per_token'])} per token\n"
        f"              {doc['method']}: {doc['method_formula']}\n"
        f"  hardware  {gpu}, {doc['dtype']} dense peak {doc['peak_tflops']:g} TFLOP/s ({doc['peak_source']})\n"
        f"  MFU       {doc['mfu']:.3f} ({doc['mfu_source']})\n"
        f"  GPU-hours {doc['gpu_hours']:,.0f}\n"
        f"  wall time {doc['wall_hours']:,.1f} h = {doc['wall_days']:,.2f} days on {doc['gpus']} GPU{'s' if doc['gpus'] != 1 else ''}\n"
        f"  (C / (G x peak x MFU); ignores communication, data loading, optimizer and logging)\n"
    )


def render_report(doc: dict) -> str:
    plots = "\n".join(f"  {p}" for p in doc["plots"].values()) or "  (none: matplotlib is not installed)"
    return f"flopbench report: {doc['rows']} rows from {doc['results']}\n  {doc['report']}\nplots:\n{plots}\n"
