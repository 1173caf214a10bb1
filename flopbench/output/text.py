"""Terminal rendering of the documents the API returns (tables through tabulate). Formatting only: every
number shown on a terminal is formatted here (`si`, `flops`, `percent`), and each command's document has
its `render_*` function."""

from __future__ import annotations

from ..model.config import DTYPES

_SI = ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))


def si(value: int | float, fmt: str) -> str:
    """`value` scaled to its SI prefix, formatted with `fmt`: si(3.5e12, ".3f") == "3.500 T"; below 1000
    there is no prefix (and no trailing space)."""
    for scale, prefix in _SI:
        if abs(value) >= scale:
            return f"{value / scale:{fmt}} {prefix}"
    return f"{value:{fmt}}"


def flops(n: int | float | None) -> str:
    """A FLOPs count with an SI prefix: 3.51 TFLOPs (a count, never a rate)."""
    if n is None:
        return "-"
    return f"{n:.0f} FLOPs" if abs(n) < 1e3 else f"{si(n, '.3f')}FLOPs"


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
        out.append(f"GEMM ceiling: {g['tflops_median']:.1f} TFLOP/s median ({g['size']}^3 {g['dtype']}{vs})\n")
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
    return (
        f"flopbench estimate: {doc['model']}, N_matmul = {doc['n_matmul']:,}, {doc['tokens']:,} tokens "
        f"(sequences of {doc['seq_len']})\n"
        f"  compute   C = {doc['flops']:.4g} FLOPs ({flops(doc['flops'])}); {flops(doc['flops_per_token'])} per token\n"
        f"              {doc['method']}: {doc['method_formula']}\n"
        f"  hardware  {gpu}, {doc['dtype']} dense peak {doc['peak_tflops']:g} TFLOP/s ({doc['peak_source']})\n"
        f"  MFU       {doc['mfu']:.3f} ({doc['mfu_source']})\n"
        f"  GPU-hours {doc['gpu_hours']:,.0f}\n"
        f"  wall time {doc['wall_hours']:,.1f} h = {doc['wall_days']:,.2f} days on {doc['gpus']} GPUs\n"
        f"  (C / (G x peak x MFU); ignores communication, data loading, optimizer and logging)\n"
    )


def render_report(doc: dict) -> str:
    plots = "\n".join(f"  {p}" for p in doc["plots"].values()) or "  (none: matplotlib is not installed)"
    return f"flopbench report: {doc['rows']} rows from {doc['results']}\n  {doc['report']}\nplots:\n{plots}\n"
