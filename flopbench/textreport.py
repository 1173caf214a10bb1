"""Terminal rendering of the documents the API returns (tables through tabulate). Formatting only."""

from __future__ import annotations

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


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


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
        vs = f", {_pct(g['tflops_median'] / peak['tflops'])} of peak" if peak["tflops"] else ""
        out.append(f"GEMM ceiling: {g['tflops_median']:.1f} TFLOP/s median ({g['size']}^3 {g['dtype']}{vs})\n")
    rows = []
    for r in doc["rows"]:
        t = r["time_ms"]
        rows.append({
            "mode": r["mode"], "ckpt": r["checkpointing"], "status": r["status"],
            "step ms (median ± IQR)": f"{t['median_ms']:.2f} ± {t['iqr_ms']:.2f}" if t else "-",
            "tokens/s": f"{r['tokens_per_s']:,.0f}" if r["tokens_per_s"] else "-",
            "TFLOP/s": f"{r['achieved_tflops']:.2f}" if r["achieved_tflops"] else "-",
            "MFU": _pct(r["mfu"]), "HFU": _pct(r["hfu"]),
            "simple": f"{r['simple_formula']}: {_pct(r['mfu_simple'])}",
            "model FLOPs": flops(r["model_flops"]),
            "HW FLOPs counted": flops(r["hardware_flops_counted"]),
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
               "(recompute included) / (time x peak); simple = the seed's 2N/6N/8N in place of the exact count.\n")
    if doc["files"]:
        out.append(f"saved: {doc['files']['rows.jsonl']} (+ rows.csv, environment.json)\n")
    return "".join(out)
