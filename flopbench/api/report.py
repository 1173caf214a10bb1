"""`flopbench report`: published estimates vs counted vs measured, as a Markdown report with PNG plots.

`report(results, out)` reads result rows (`output.records.read_rows`: one run folder, a sweep file, or a
folder of them) with pandas, derives every number the report shows here, and hands them to the renderers:
`output.plots` draws them, `output.markdown` writes them out. Into the output folder go `report.md` and
the plots that have rows to show (`PLOTS` from the timed steps of `run`, `sweep` and `explain`; the
roofline from `infer`'s rows, the waterfall from `explain`'s):

1. `flops_per_token.png` — FLOPs per token by model and sequence length: the published estimates marked
   `report` in `flops.estimates.ESTIMATES` (today 2N forward and 6N training per token, Kaplan et al. 2020,
   §2.1; 8N with full recomputation, Narayanan et al. 2021, Eq. 3; PaLM's 6N + 12·L·H·Q·T, Chowdhery et
   al. 2022, App. B), rebuilt from each row's `config`, against what torch's FlopCounterMode counted over
   one real step on the run's device (the rows' `hardware_flops`) and fvcore's forward count
   (`flops.fvcore.count_fvcore`, on the meta device, x2 for multiply-adds). Grouped by phase (forward,
   train, train with recomputation): each phase's estimates first, then what was counted.
2. `counted_over_6n.png` — exact training FLOPs ÷ 6N against sequence length (`analytic.train_flops` over
   a range of T: the attention term 12·L·d·T per token that 6N leaves out grows with T), with the measured
   rows' counted ÷ 6N as points.
3. `mfu_hfu.png` (training rows only) — measured MFU and HFU of the training steps by model and
   checkpointing mode, with the GEMM ceiling (measured large-matmul TFLOP/s ÷ peak) drawn as a line.
   Without a peak (a CPU) MFU and HFU are null; the plot then shows absolute TFLOP/s and says so.
4. `step_time.png` (training rows only) — measured step time against what the row's rule (6NT, or 8NT
   with checkpointing) would take at the peak, and at the fraction of peak efficient training reaches in
   practice (`timing.rates.PRACTICAL_MFU`, 0.40: Llama 3 405B's measured MFU; for 8NT the same fraction as
   an HFU). Without a peak, the measured GEMM ceiling stands in for it, labelled as such.
5. `roofline.png` (`infer` rows) — prefill and decode on the roofline (Williams et al. 2009).
6. `waterfall.png` (`explain` rows) — from the dense peak to the MFU, one measured loss per step.

A section with no rows is left out of `report.md`, and one line says which and why.

matplotlib is an optional extra (`pip install 'flopbench[plot]'`); without it the report has the
tables and says the plots are missing.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from ..errors import UsageError, check_arguments
from ..flops import analytic, estimates
from ..flops.fvcore import count_fvcore
from ..model.config import ModelConfig
from ..output import markdown, plots
from ..output.records import KEY_FIELDS, read_environment, read_rows
from ..timing.rates import PRACTICAL_MFU, weighted_peak

PLOTS = ("flops_per_token", "counted_over_6n", "mfu_hfu", "step_time")
TRAIN_MODES = ("train_step", "fwd_bwd")
NOISY = 2  # max / min step time above which the report calls a row's timing noisy
#: The phases of the per-token series, in the order the table and the plot show them.
PHASES = ("forward", "train", "train_recompute")
#: What each phase's series holds after its published estimates: (key in `flops_per_token`, kind).
COUNTED = {
    "forward": (("counted_forward", "counted"), ("fvcore_forward", "counted"), ("exact_forward", "exact")),
    "train": (("exact_train", "exact"), ("counted_train", "counted")),
    "train_recompute": (("exact_train_recompute", "exact"), ("counted_train_recompute", "counted")),
}
#: The (mode, checkpointing) rows whose counted hardware FLOPs make each phase's counted series.
_COUNTED_ROWS = (("counted_forward", ("forward",), "none"), ("counted_train", TRAIN_MODES, "none"),
                 ("counted_train_recompute", TRAIN_MODES, "full"))
RATIO_SEQ_LENS = tuple(2**k for k in range(6, 15, 2))  # the columns of the report's exact ÷ 6N table
#: The row fields the report reads, checked in every row before use (`output.records.FIELD_KINDS`: their types).
ROW_FIELDS = (*KEY_FIELDS, "status", "device", "simple_formula", "peak_tflops", "gemm_tflops", "simple_flops",
              "hardware_flops", "tokens_per_s", "achieved_tflops", "mfu", "hfu", "time_ms.median_ms", "time_ms.min_ms",
              "time_ms.max_ms", "config.n_layer", "config.d_model", "config.n_head", "config.vocab_size",
              "config.max_seq_len")


# --------------------------------------------------------------------------------------------------
# Rows -> numbers
# --------------------------------------------------------------------------------------------------


def _value(v):
    """A pandas cell as a plain Python value; NaN / missing -> None."""
    import pandas as pd

    if v is None or (pd.api.types.is_scalar(v) and pd.isna(v)):
        return None
    return v.item() if hasattr(v, "item") else v


def config_of(row) -> ModelConfig:
    """The `ModelConfig` a result row was measured with, rebuilt from its flattened `config.*` cells."""
    kwargs = {}
    for f in dataclasses.fields(ModelConfig):
        v = _value(row.get(f"config.{f.name}"))
        if v is None:
            continue
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if isinstance(f.default, tuple) and isinstance(v, str):  # a list cell is flattened to its JSON text
            try:
                v = tuple(json.loads(v))
            except (ValueError, TypeError):
                pass  # left as it is: ModelConfig names the bad value
        kwargs[f.name] = v
    return ModelConfig(**kwargs)


def reported_estimates() -> list[estimates.Estimate]:
    """The registry's estimates marked `report`, grouped by phase in the order of `PHASES`."""
    return [e for phase in PHASES for e in estimates.ESTIMATES if e.report and e.phase == phase]


def per_token_series() -> list[dict]:
    """The series of the FLOPs-per-token table and plot, in order: for each phase, the registry's estimates
    marked `report` (key = the estimate's name; `name`, `cite` and `source` for the column header, the legend
    and the table's note), then that phase's counted and exact series (`COUNTED`). Each: {"key", "phase",
    "kind", "name", "cite", "source"}, kind one of "estimate", "counted", "exact"."""
    out = []
    for phase in PHASES:
        out += [{"key": e.name, "phase": phase, "kind": "estimate", "name": e.name, "cite": e.cite,
                 "source": e.source} for e in estimates.ESTIMATES if e.report and e.phase == phase]
        out += [{"key": key, "phase": phase, "kind": kind, "name": key, "cite": None, "source": None}
                for key, kind in COUNTED[phase]]
    return out


def step_rows(df):
    """The rows of timed steps (`run`, `sweep`, `explain`): all but `infer`'s prefill and decode rows, which
    the roofline section shows."""
    return df[df["kind"] != "infer"] if "kind" in df.columns else df


def _ok(df):
    return df[df["status"] == "ok"] if "status" in df.columns else df


def flops_per_token(df) -> list[dict]:
    """One row per (model, seq_len): the reported estimates (under their names), the exact analytic counts
    and the counted FLOPs, all per token."""
    out = []
    ok = _ok(df)
    if "hardware_flops" not in ok.columns:  # only rows that never ran (a model that did not fit)
        ok = ok.assign(hardware_flops=None)
    reported = reported_estimates()
    for (model, T), group in df.groupby(["model", "seq_len"], sort=False):
        T = int(T)
        cfg = config_of(group.iloc[0])
        row = {
            "model": model, "seq_len": T, "N_matmul": analytic.param_counts(cfg).matmul,
            **{e.name: e.formula(cfg, 1, T) / T for e in reported},
            "exact_forward": analytic.forward_flops(cfg, 1, T) / T,
            "exact_train": analytic.train_flops(cfg, 1, T) / T,
            "exact_train_recompute": analytic.train_recompute_flops(cfg, 1, T) / T,
        }
        mine = ok[(ok["model"] == model) & (ok["seq_len"] == T)]
        for name, modes, ckpt in _COUNTED_ROWS:
            hit = mine[mine["mode"].isin(modes) & (mine["checkpointing"] == ckpt) & mine["hardware_flops"].notna()]
            row[name] = (float(hit.iloc[0]["hardware_flops"]) / (int(hit.iloc[0]["batch_size"]) * T)
                         if len(hit) else None)
        try:
            row["fvcore_forward"] = count_fvcore(cfg, 1, T).forward / T
        except Exception as e:  # fvcore is a dependency, but its tracer is fragile across torch versions
            row["fvcore_forward"], row["fvcore_error"] = None, f"{type(e).__name__}: {e}"[:200]
        out.append(row)
    return out


def _six_n(cfg: ModelConfig, T: int) -> int:
    """6N per step of one sequence (Kaplan et al. 2020, §2.1), from the registry."""
    return estimates.REGISTRY["6N"].formula(cfg, 1, T)


def ratio_curve(cfg: ModelConfig, seq_lens) -> list[float]:
    """Exact training FLOPs ÷ 6N (Kaplan et al. 2020, §2.1), per sequence length (= PaLM's estimate ÷ 6N)."""
    return [analytic.train_flops(cfg, 1, T) / _six_n(cfg, T) for T in seq_lens]


def ratios_over_6n(per_token: list[dict], configs: dict[str, ModelConfig]) -> list[dict]:
    """Per (model, seq_len) of `flops_per_token`: exact and counted training FLOPs ÷ 6N (counted: None
    where no training step was counted)."""
    out = []
    for r in per_token:
        six_n = _six_n(configs[r["model"]], r["seq_len"]) / r["seq_len"]
        out.append({"model": r["model"], "seq_len": r["seq_len"], "exact": r["exact_train"] / six_n,
                    "counted": r["counted_train"] / six_n if r.get("counted_train") else None})
    return out


def ratio_curves(configs: dict[str, ModelConfig], seq_lens) -> dict[str, tuple[list[int], list[float], int]]:
    """{model: (seq_lens, exact ÷ 6N at each, the model's max_seq_len)}."""
    seq_lens = list(seq_lens)
    return {m: (seq_lens, ratio_curve(cfg, seq_lens), cfg.max_seq_len) for m, cfg in configs.items()}


def curve_seq_lens(configs: dict[str, ModelConfig], measured) -> list[int]:
    """Powers of two from 16 to 4 x the longest context (at least 1024), and the measured lengths."""
    top = max(1024, 4 * max(cfg.max_seq_len for cfg in configs.values()))
    return sorted({2**k for k in range(4, top.bit_length()) if 2**k <= top} | set(measured))


def measured_rows(df) -> list[dict]:
    """Every measured row, with its predicted step time at peak (and at `PRACTICAL_MFU` of peak).

    The prediction is the row's `simple_flops` (per step: 2N forward and 6N training per token, Kaplan et
    al. 2020, §2.1; 8N with full recomputation, Narayanan et al. 2021, Eq. 3; `api.run.flops_of_mode`) at
    the peak; with no peak, at the GEMM ceiling the run measured (`predicted_basis` says which). A float8 row
    (`run --dtype fp8`) is predicted at its FLOP-weighted peak: the converted layers' share of the step's
    hardware FLOPs at the fp8 peak, the rest at the bf16 one (`timing.rates.weighted_peak`).
    """
    rows = []
    for _, r in df.iterrows():
        peak, gemm = _value(r.get("peak_tflops")), _value(r.get("gemm_tflops"))
        rate, basis = (peak, "peak") if peak else ((gemm, "GEMM ceiling") if gemm else (None, None))
        # the rule of the work a step does: 8N for checkpointed rows (`simple_hardware_flops`; rows written
        # before it existed held 8N in `simple_flops`)
        simple = _value(r.get("simple_hardware_flops")) or _value(r.get("simple_flops"))
        fp8, fp8_peak = _value(r.get("fp8_flops_analytic")), _value(r.get("peak_fp8_tflops"))
        if peak and fp8 and fp8_peak and simple:
            share = fp8 / _value(r.get("hardware_flops_analytic"))
            rate, basis = weighted_peak(simple, simple * share, peak, fp8_peak), "FLOP-weighted peak"
        ideal_ms = simple / (rate * 1e12) * 1e3 if rate and simple else None
        seconds = (_value(r.get("time_ms.median_ms")) or 0) / 1e3
        counted = _value(r.get("hardware_flops"))
        rows.append({
            "model": r["model"], "seq_len": int(r["seq_len"]), "batch_size": int(r["batch_size"]),
            "device": r.get("device"), "dtype": r.get("dtype"), "checkpointing": r["checkpointing"],
            "mode": r["mode"], "status": r.get("status", "ok"),
            "median_ms": seconds * 1e3 if seconds else None, "min_ms": _value(r.get("time_ms.min_ms")),
            "max_ms": _value(r.get("time_ms.max_ms")), "tokens_per_s": _value(r.get("tokens_per_s")),
            "achieved_tflops": _value(r.get("achieved_tflops")),
            "hardware_tflops": counted / seconds / 1e12 if counted and seconds else None,
            "mfu": _value(r.get("mfu")), "hfu": _value(r.get("hfu")), "mfu_weighted": _value(r.get("mfu_weighted")),
            "peak_tflops": peak, "gemm_tflops": gemm,
            "gemm_fraction": gemm / peak if gemm and peak else None,
            "simple_formula": _value(r.get("simple_hardware_formula")) or _value(r.get("simple_formula")),
            "predicted_basis": basis,
            "predicted_ms": ideal_ms, "predicted_ms_discounted": ideal_ms / PRACTICAL_MFU if ideal_ms else None,
        })
    return rows


def train_rows(rows: list[dict]) -> list[dict]:
    """The measured rows that ran, of the first training mode present (`TRAIN_MODES` order): the plots'."""
    ok = [r for r in rows if r["status"] == "ok"]
    for mode in TRAIN_MODES:
        picked = [r for r in ok if r["mode"] == mode]
        if picked:
            return picked
    return []


def noisy_rows(rows: list[dict]) -> list[dict]:
    """Rows whose slowest timed step took more than `NOISY` x the fastest."""
    return [r for r in rows if r["min_ms"] and r["max_ms"] and r["max_ms"] > NOISY * r["min_ms"]]


def above_gemm_ceiling(rows: list[dict]) -> list[dict]:
    """The rows that ran faster than the GEMM ceiling measured beside them (model TFLOP/s > `gemm_tflops`),
    each with `gemm_ratio`: the ceiling was then no ceiling (a burst at other clocks, or a matmul shape
    smaller than the model's), so its `mfu_vs_gemm` and the plots' ceiling line mislead."""
    keys = ("model", "seq_len", "batch_size", "mode", "checkpointing", "achieved_tflops", "gemm_tflops")
    return [{**{k: r[k] for k in keys}, "gemm_ratio": r["achieved_tflops"] / r["gemm_tflops"]} for r in rows
            if r["status"] == "ok" and r["achieved_tflops"] and r["gemm_tflops"]
            and r["achieved_tflops"] > r["gemm_tflops"]]


def predictions(rows: list[dict]) -> list[dict]:
    """The rows that ran and have a predicted time, with `ratio` = measured ÷ predicted."""
    return [{**r, "ratio": r["median_ms"] / r["predicted_ms"]} for r in rows
            if r["status"] == "ok" and r["predicted_ms"]]


# --------------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------------


def roofline(df) -> tuple[list[dict], list[dict]]:
    """The `infer` rows (prefill, decode) as roofline points {label, intensity, tflops, median_ms,
    tokens_per_s, mfu, mbu}, and the roofs they
    were measured under: the datasheet peaks and the measured GEMM / copy ceilings (Williams et al. 2009)."""
    if "kind" not in df.columns:
        return [], []
    rows = df[(df["kind"] == "infer") & (df["status"] == "ok")]
    points = [{"label": f"{r['model']} {r['mode']} B={int(r['batch_size'])} {r['device']}",
               "intensity": _value(r.get("intensity")), "tflops": _value(r.get("achieved_tflops")),
               "median_ms": _value(r.get("time_ms.median_ms")), "tokens_per_s": _value(r.get("tokens_per_s")),
               "mfu": _value(r.get("mfu")), "mbu": _value(r.get("mbu"))}
              for _, r in rows.iterrows()]
    roofs = []
    for _, r in rows.drop_duplicates(["device", "dtype"]).iterrows():
        peak, gbps = _value(r.get("peak_tflops")), _value(r.get("peak_gbps"))
        gemm, copy = _value(r.get("gemm_tflops")), _value(r.get("copy_gbps"))
        if peak or gbps:
            roofs.append({"label": f"datasheet, {r['device']} {r['dtype']}: {peak or '-'} TFLOP/s, {gbps or '-'} GB/s",
                          "tflops": peak, "gbps": gbps})
        if gemm or copy:
            roofs.append({"label": f"measured ceilings, {r['device']} {r['dtype']}: GEMM {gemm or 0:.3g} TFLOP/s, "
                                   f"copy {copy or 0:.3g} GB/s", "tflops": gemm, "gbps": copy})
    return points, roofs


def explanations(df) -> list[dict]:
    """The `flopbench explain` rows: {label, categories, waterfall} each."""
    if "kind" not in df.columns:
        return []
    rows = df[(df["kind"] == "explain") & (df["status"] == "ok")]
    return [{"label": f"{r['model']} {r['mode']} ckpt {r['checkpointing']} B={int(r['batch_size'])} {r['device']}",
             "categories": json.loads(r["categories"]), "waterfall": json.loads(_value(r.get("waterfall")) or "null")}
            for _, r in rows.iterrows()]  # list cells are JSON text (`output.records.flatten`)


def report(results: str | Path, out: str | Path | None = None) -> dict:
    """Write `report.md` (+ PNG plots when matplotlib is there) for the rows under `results`.

    `out` defaults to `RESULTS/report` (next to a results file: its folder's `report`). Returns a document:
    results, out, report (report.md's path), plots ({name: path}, empty without matplotlib), matplotlib,
    rows, status_counts, notes, above_gemm_ceiling (`above_gemm_ceiling`: rows faster than their ceiling).
    """
    check_arguments(report, {"results": results, "out": out})
    results = Path(results)
    df = read_rows(results, need=ROW_FIELDS)  # a wrong-shaped row: one line naming its file and line
    need = {"model", "seq_len", "batch_size", "mode", "checkpointing"}
    if df.empty or not need <= set(df.columns):
        raise UsageError(f"{results}: no flopbench result rows there (need columns {', '.join(sorted(need))})")
    steps = step_rows(df)
    try:
        configs = {m: config_of(g.iloc[0]) for m, g in df.groupby("model", sort=False)}
        per_token = flops_per_token(steps) if len(steps) else []
    except UsageError as e:
        raise UsageError(f"{results}: a row's config is not a model config ({e})") from None
    out = Path(out) if out else (results if results.is_dir() else results.parent) / "report"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"--out {out}: cannot write there ({e.strerror or e})") from None

    series = per_token_series()
    ratios = ratios_over_6n(per_token, configs)
    step_configs = {m: configs[m] for m in dict.fromkeys(steps["model"])}
    rows = measured_rows(steps)
    train = train_rows(rows)
    six_n = estimates.REGISTRY["6N"]
    plt = plots.pyplot()
    drawn, notes = {}, {}
    if not rows:
        notes["steps"] = ("these results hold only `infer` rows (prefill and decode), and those are in the "
                          "roofline section")
    if plt is not None and rows:
        plots.plot_flops_per_token(plt, per_token, series, out / "flops_per_token.png")
        curves = ratio_curves(step_configs, curve_seq_lens(step_configs, {r["seq_len"] for r in per_token}))
        points = {m: [(r["seq_len"], r["counted"]) for r in ratios if r["model"] == m and r["counted"]]
                  for m in step_configs}
        plots.plot_counted_over_6n(plt, curves, points, out / "counted_over_6n.png",
                                   rule=f"{six_n.name} ({six_n.cite})")
        if train:  # a plot without rows would be empty axes (and matplotlib's "no artists" warning)
            notes["mfu_hfu"] = plots.plot_mfu_hfu(plt, train, out / "mfu_hfu.png")
            notes["step_time"] = plots.plot_step_time(plt, train, out / "step_time.png", discount=PRACTICAL_MFU)
        drawn = {name: str(out / f"{name}.png") for name in PLOTS if train or name not in ("mfu_hfu", "step_time")}
    elif train and not all(r["mfu"] is not None for r in train):
        notes["mfu_hfu"] = "no peak TFLOP/s is known for (some of) these rows, so MFU and HFU are null there"
    if rows and not train:
        notes["mfu_hfu"] = notes["step_time"] = (f"no training rows ({' or '.join(TRAIN_MODES)}) that ran, so nothing "
                                                 f"to show here")

    status_counts = {k: int(v) for k, v in df["status"].value_counts().items()} if "status" in df else {}
    above = above_gemm_ceiling(rows)
    text = markdown.report_markdown(
        results=str(results), n_rows=len(df), status_counts=status_counts, models=list(configs),
        environments=read_environment(results), series=series, per_token=per_token,
        ratio_table=ratio_curves(step_configs, RATIO_SEQ_LENS), ratios=ratios, rows=rows,
        noisy=len(noisy_rows(rows)), noisy_factor=NOISY, predictions=predictions(rows),
        failed=[r for r in rows if r["status"] != "ok"], discount=PRACTICAL_MFU, plots=drawn, notes=notes,
        above_ceiling=above, matplotlib=plt is not None)
    points, roofs = roofline(df)
    if points:
        if plt is not None:
            plots.plot_roofline(plt, points, roofs, out / "roofline.png")
            drawn["roofline"] = str(out / "roofline.png")
        text += markdown.roofline_section(points, roofs, "roofline" in drawn)
    explained = explanations(df)
    if explained:
        if plt is not None and all(e["waterfall"] for e in explained):
            plots.plot_waterfall(plt, explained, out / "waterfall.png")
            drawn["waterfall"] = str(out / "waterfall.png")
        text += markdown.waterfall_section(explained, "waterfall" in drawn)
    (out / "report.md").write_text(text, encoding="utf-8")
    return {"results": str(results), "out": str(out), "report": str(out / "report.md"), "plots": drawn,
            "matplotlib": plt is not None, "rows": len(df), "status_counts": status_counts, "notes": notes,
            "above_gemm_ceiling": above}
