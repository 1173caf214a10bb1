"""`flopbench report`: analytic vs counted vs measured, as a Markdown report with PNG plots.

Reads result rows (`results.read_rows`: one run folder, a sweep file, or a folder of them) with pandas
and writes `report.md` and four plots into the output folder:

1. `flops_per_token.png` — FLOPs per token by model: the seed's 2N / 6N / 8N and PaLM's 6N + 12·L·H·Q·T
   (`analytic.estimates`, rebuilt from each row's `config`) against what torch's FlopCounterMode counted
   over one real step on the run's device (the rows' `hardware_flops_counted`) and fvcore's forward count
   (`counted.count_fvcore`, on the meta device, x2 for multiply-adds).
2. `counted_over_6n.png` — exact training FLOPs ÷ 6N against sequence length (`analytic.train_flops` over a
   range of T: the attention term 12·L·d·T per token that the seed's 6N leaves out grows with T), with
   the measured rows' counted ÷ 6N as points.
3. `mfu_hfu.png` — measured MFU and HFU of the training steps by model and checkpointing mode, with the
   GEMM ceiling (measured large-matmul TFLOP/s ÷ peak) drawn as a line. Without a peak (a CPU) MFU and
   HFU are null; the plot then shows absolute TFLOP/s and says so.
4. `step_time.png` — measured step time against what the seed's 6NT (8NT with checkpointing) would take
   at the peak, and at the seed's 0.5 of peak. Without a peak, the measured GEMM ceiling stands in for it,
   labelled as such.

matplotlib is an optional extra (`pip install 'flopbench[plot]'`); without it the report has the
tables and says the plots are missing.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

from . import analytic
from .config import ModelConfig
from .errors import UsageError
from .results import read_rows
from .textreport import si

SEED_DISCOUNT = 0.5  # the seed: efficient frameworks reach roughly half of peak
PLOTS = ("flops_per_token", "counted_over_6n", "mfu_hfu", "step_time")
TRAIN_MODES = ("train_step", "fwd_bwd")
NOISY = 2  # max / min step time above which the report calls a row's timing noisy


# --------------------------------------------------------------------------------------------------
# Rows -> tables
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
        kwargs[f.name] = v
    return ModelConfig(**kwargs)


def _shape_label(model: str, T: int) -> str:
    return f"{model}\nT={T}"


def _ok(df):
    return df[df["status"] == "ok"] if "status" in df.columns else df


def flops_per_token(df) -> list[dict]:
    """One row per (model, seq_len): analytic estimates and counted FLOPs, all per token."""
    from .counted import count_fvcore

    out = []
    ok = _ok(df)
    if "hardware_flops_counted" not in ok.columns:  # only rows that never ran (a model that did not fit)
        ok = ok.assign(hardware_flops_counted=None)
    for (model, T), group in df.groupby(["model", "seq_len"], sort=False):
        T = int(T)
        cfg = config_of(group.iloc[0])
        est = analytic.estimates(cfg, 1, T)
        row = {
            "model": model, "seq_len": T, "N_matmul": analytic.param_counts(cfg).matmul,
            "2N": est["2N"].flops / T, "6N": est["6N"].flops / T, "8N": est["8N"].flops / T,
            "palm": est["palm"].flops / T,
            "exact_forward": analytic.forward_flops(cfg, 1, T) / T,
            "exact_train": analytic.train_flops(cfg, 1, T) / T,
            "exact_train_recompute": analytic.train_recompute_flops(cfg, 1, T) / T,
        }
        mine = ok[(ok["model"] == model) & (ok["seq_len"] == T)]
        for name, modes, ckpt in (("counted_forward", ("forward",), "none"), ("counted_train", TRAIN_MODES, "none"),
                                  ("counted_train_recompute", TRAIN_MODES, "full")):
            hit = mine[mine["mode"].isin(modes) & (mine["checkpointing"] == ckpt)
                       & mine["hardware_flops_counted"].notna()]
            row[name] = (float(hit.iloc[0]["hardware_flops_counted"]) / (int(hit.iloc[0]["batch_size"]) * T)
                         if len(hit) else None)
        try:
            row["fvcore_forward"] = count_fvcore(cfg, 1, T).forward / T
        except Exception as e:  # fvcore is a dependency, but its tracer is fragile across torch versions
            row["fvcore_forward"], row["fvcore_error"] = None, f"{type(e).__name__}: {e}"[:200]
        out.append(row)
    return out


def ratio_curve(cfg: ModelConfig, seq_lens) -> list[float]:
    """Exact training FLOPs ÷ the seed's 6N, per sequence length (= PaLM's estimate ÷ 6N)."""
    return [analytic.train_flops(cfg, 1, T) / analytic.estimates(cfg, 1, T)["6N"].flops for T in seq_lens]


def measured_rows(df) -> list[dict]:
    """Every measured row, with the seed's predicted step time at peak (and at 0.5 of peak).

    The prediction is the row's `simple_flops` (2N / 6N / 8N per step, `bench._flops_of`) at the peak; with
    no peak, at the GEMM ceiling the run measured (`basis` says which).
    """
    rows = []
    for _, r in df.iterrows():
        peak, gemm = _value(r.get("peak_tflops")), _value(r.get("gemm_tflops"))
        rate, basis = (peak, "peak") if peak else ((gemm, "GEMM ceiling") if gemm else (None, None))
        simple = _value(r.get("simple_flops"))
        ideal_ms = simple / (rate * 1e12) * 1e3 if rate and simple else None
        seconds = (_value(r.get("time_ms.median_ms")) or 0) / 1e3
        counted = _value(r.get("hardware_flops_counted"))
        rows.append({
            "model": r["model"], "seq_len": int(r["seq_len"]), "batch_size": int(r["batch_size"]),
            "device": r.get("device"), "dtype": r.get("dtype"), "checkpointing": r["checkpointing"],
            "mode": r["mode"], "status": r.get("status", "ok"),
            "median_ms": seconds * 1e3 if seconds else None, "min_ms": _value(r.get("time_ms.min_ms")),
            "max_ms": _value(r.get("time_ms.max_ms")), "tokens_per_s": _value(r.get("tokens_per_s")),
            "achieved_tflops": _value(r.get("achieved_tflops")),
            "hardware_tflops": counted / seconds / 1e12 if counted and seconds else None,
            "mfu": _value(r.get("mfu")), "hfu": _value(r.get("hfu")), "peak_tflops": peak, "gemm_tflops": gemm,
            "gemm_fraction": gemm / peak if gemm and peak else None,
            "simple_formula": _value(r.get("simple_formula")), "predicted_basis": basis,
            "predicted_ms": ideal_ms, "predicted_ms_discounted": ideal_ms / SEED_DISCOUNT if ideal_ms else None,
        })
    return rows


# --------------------------------------------------------------------------------------------------
# Plots (matplotlib, optional)
# --------------------------------------------------------------------------------------------------


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _grouped_bars(ax, labels: list[str], series: list[tuple[str, list, dict]]) -> None:
    """Bars for each (name, values, style) side by side in each group; None values leave a gap."""
    n = len(series)
    width = 0.8 / max(n, 1)
    for i, (name, values, style) in enumerate(series):
        xs = [g + (i - (n - 1) / 2) * width for g in range(len(labels))]
        ax.bar([x for x, v in zip(xs, values) if v is not None], [v for v in values if v is not None],
               width=width, label=name, **style)
    ax.set_xticks(range(len(labels)), labels)


def plot_flops_per_token(plt, table: list[dict], path: Path) -> None:
    from matplotlib.ticker import EngFormatter

    n = len(table)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    height = 3.8 * rows + 0.9
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, height), squeeze=False)
    series = [  # (legend, key, tick, style)
        ("2N (seed, forward)", "2N", "2N", dict(color="#9ecae1")),
        ("counted torch, forward", "counted_forward", "torch fwd", dict(color="#08519c")),
        ("fvcore, forward (meta, ×2)", "fvcore_forward", "fvcore fwd", dict(color="#6baed6", hatch="//")),
        ("6N (seed, train)", "6N", "6N", dict(color="#fdae6b")),
        ("PaLM 6N + 12·L·H·Q·T", "palm", "PaLM", dict(color="#fd8d3c", hatch="..")),
        ("counted torch, fwd+bwd", "counted_train", "torch train", dict(color="#a63603")),
        ("8N (seed, recompute)", "8N", "8N", dict(color="#a1d99b")),
        ("counted torch, fwd+bwd, ckpt full", "counted_train_recompute", "torch ckpt", dict(color="#006d2c")),
    ]
    for ax, row in zip(axes.flat, table):
        for i, (name, key, _, style) in enumerate(series):
            if row.get(key) is not None:
                ax.bar(i, row[key], label=name, **style)
        ax.set_xticks(range(len(series)), [s[2] for s in series], rotation=35, ha="right", fontsize=8)
        ax.set_title(f"{row['model']}, T={row['seq_len']}  (N_matmul = {row['N_matmul']:,})", fontsize=10)
        ax.set_ylabel("FLOPs per token")
        ax.yaxis.set_major_formatter(EngFormatter(unit="FLOP"))
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    handles = {}
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=4, fontsize=8)
    fig.suptitle("FLOPs per token: analytic (seed, PaLM) vs counted (torch on the run's device, fvcore)")
    fig.tight_layout(rect=(0, 0.6 / height, 1, 1 - 0.3 / height))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_counted_over_6n(plt, table: list[dict], configs: dict[str, ModelConfig], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(8, 5))
    measured = sorted({r["seq_len"] for r in table})
    top = max(1024, 4 * max(cfg.max_seq_len for cfg in configs.values()))
    seq_lens = sorted({2**k for k in range(4, top.bit_length()) if 2**k <= top} | set(measured))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (model, cfg) in enumerate(configs.items()):
        color = colors[i % len(colors)]
        ratios = ratio_curve(cfg, seq_lens)
        inside = [(T, r) for T, r in zip(seq_lens, ratios) if T <= cfg.max_seq_len]
        beyond = [(T, r) for T, r in zip(seq_lens, ratios) if T >= inside[-1][0]] if inside else []
        if inside:
            ax.plot(*zip(*inside), color=color, marker=".", label=f"{model}: exact ÷ 6N (analytic)")
        if len(beyond) > 1:
            ax.plot(*zip(*beyond), color=color, linestyle=":", alpha=0.7)
        points = [(r["seq_len"], r["counted_train"] / r["6N"]) for r in table
                  if r["model"] == model and r.get("counted_train")]
        if points:
            ax.plot(*zip(*points), color=color, marker="o", markersize=8, linestyle="none", markerfacecolor="none",
                    label=f"{model}: counted torch fwd+bwd ÷ 6N (measured run)")
    ax.axhline(1.0, color="black", linewidth=1, label="6N rule (seed)")
    ax.set_xscale("log", base=2)
    if max(max(ratio_curve(cfg, seq_lens)) for cfg in configs.values()) > 10:
        ax.set_yscale("log")
    ax.set_xlabel("sequence length T (tokens); dotted: beyond the model's positions")
    ax.set_ylabel("training FLOPs ÷ 6·N_matmul·T  (ratio)")
    ax.set_title("What the seed's 6N leaves out: attention scores, 12·L·d·T FLOPs per token, grow with T")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _train_rows(rows: list[dict]) -> list[dict]:
    ok = [r for r in rows if r["status"] == "ok"]
    for mode in TRAIN_MODES:
        picked = [r for r in ok if r["mode"] == mode]
        if picked:
            return picked
    return []


def _groups(rows: list[dict]) -> list[tuple]:
    return list(dict.fromkeys((r["model"], r["seq_len"], r["batch_size"], r["dtype"]) for r in rows))


def _pick(rows, group, ckpt, key):
    hit = [r[key] for r in rows if (r["model"], r["seq_len"], r["batch_size"], r["dtype"]) == group
           and r["checkpointing"] == ckpt]
    return hit[0] if hit else None


def plot_mfu_hfu(plt, rows: list[dict], path: Path) -> str:
    """Returns a note for the report (what the y axis shows)."""
    train = _train_rows(rows)
    groups = _groups(train)
    labels = [f"{m}\nT={T} B={B} {d}" for m, T, B, d in groups]
    with_peak = bool(train) and all(r["mfu"] is not None for r in train)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.9 * len(groups) + 2), 5))
    mode = train[0]["mode"] if train else "train_step"
    if with_peak:
        keys, unit, ceiling_key = ("mfu", "hfu"), "fraction of dense peak", "gemm_fraction"
        names = ("MFU", "HFU")
        note = f"{mode} rows: MFU = model FLOPs / (time x peak), HFU = counted hardware FLOPs / (time x peak)"
    else:
        keys, unit, ceiling_key = ("achieved_tflops", "hardware_tflops"), "TFLOP/s", "gemm_tflops"
        names = ("model FLOP/s", "hardware FLOP/s")
        note = (f"{mode} rows: no peak TFLOP/s is known for (some of) these rows, so MFU and HFU are null there; "
                f"the plot shows absolute TFLOP/s for all of them instead (MFU's and HFU's numerators per second)")
    colors = {"none": ("#3182bd", "#9ecae1"), "full": ("#e6550d", "#fdae6b")}
    series = [(f"{name}, checkpointing {ckpt}", [_pick(train, g, ckpt, key) for g in groups],
               dict(color=colors[ckpt][j]))
              for ckpt in ("none", "full") for j, (name, key) in enumerate(zip(names, keys))]
    _grouped_bars(ax, labels, [s for s in series if any(v is not None for v in s[1])])
    ceilings = {}
    for r in train:
        if r[ceiling_key] is not None:
            ceilings.setdefault((r["device"], r["dtype"]), []).append(r[ceiling_key])
    styles = ["--", "-.", ":"]
    for i, ((device, dtype), values) in enumerate(ceilings.items()):
        v = sorted(values)[len(values) // 2]
        ax.axhline(v, color="black", linestyle=styles[i % 3], linewidth=1.2,
                   label=f"GEMM ceiling, {device} {dtype}: {v:.3g}" + ("" if with_peak else " TFLOP/s"))
    if not ceilings:
        note += "; no GEMM ceiling was measured (--no-gemm)"
    shown = [v for _, values, _ in series for v in values if v] + [v for vs in ceilings.values() for v in vs]
    log = bool(shown) and max(shown) > 20 * min(shown)  # bars far below the ceiling: log scale shows both
    if log:
        ax.set_yscale("log")
    ax.set_ylabel(unit + (", log scale" if log else ""))
    ax.set_title(("Measured MFU and HFU" if with_peak else "Measured TFLOP/s (no peak: MFU/HFU null)")
                 + f" by model and checkpointing ({mode})")
    if not with_peak:
        ax.set_xlabel("no peak TFLOP/s is known (for some rows), so MFU and HFU are null: "
                      "absolute TFLOP/s shown", color="#a50f15")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return note


def plot_step_time(plt, rows: list[dict], path: Path) -> str:
    train = _train_rows(rows)
    groups = _groups(train)
    labels = [f"{m}\nT={T} B={B} {d}" for m, T, B, d in groups]
    bases = {r["predicted_basis"] for r in train if r["predicted_basis"]}
    basis = " / ".join(sorted(bases)) or "none"
    fig, ax = plt.subplots(figsize=(max(6.0, 2.2 * len(groups) + 2), 5))
    series = []
    for ckpt, rule, shades in (("none", "6NT", ("#08519c", "#6baed6", "#c6dbef")),
                               ("full", "8NT", ("#a63603", "#fd8d3c", "#fdd0a2"))):
        series += [
            (f"measured, ckpt {ckpt}", [_pick(train, g, ckpt, "median_ms") for g in groups], dict(color=shades[0])),
            (f"{rule} at {SEED_DISCOUNT} x {basis}", [_pick(train, g, ckpt, "predicted_ms_discounted") for g in groups],
             dict(color=shades[1])),
            (f"{rule} at 100 % of {basis}", [_pick(train, g, ckpt, "predicted_ms") for g in groups],
             dict(color=shades[2], hatch="//")),
        ]
    _grouped_bars(ax, labels, [s for s in series if any(v is not None for v in s[1])])
    ax.set_yscale("log")
    ax.set_ylabel("time per step (ms, log scale)")
    mode = train[0]["mode"] if train else "train_step"
    ax.set_title(f"Time per step ({mode}): measured vs the seed's 6NT / 8NT at {basis}")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    if bases == {"peak"}:
        return f"predictions use the dense peak of each row and the seed's {SEED_DISCOUNT} discount"
    return ("no peak TFLOP/s is known for (some of) these rows: the predictions use the GEMM ceiling the run "
            "measured on the same device as the attainable rate instead, labelled so")


# --------------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------------


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        if v == 0:
            return "0"
        return f"{v:,.0f}" if abs(v) >= 1e4 else f"{v:.4g}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v).replace("|", "/").replace("\n", " ")


def markdown_table(rows: list[dict], columns: dict[str, str]) -> str:
    """A GitHub Markdown table of `rows` (tabulate's "github" format); `columns` maps keys to headers."""
    from tabulate import tabulate

    body = [[_fmt(r.get(k)) for k in columns] for r in rows]
    return tabulate(body, headers=list(columns.values()), tablefmt="github", disable_numparse=True)


def _eng(v):
    return None if v is None else si(v, ".4g")


def _environments(path: Path) -> list[dict]:
    files = sorted(path.rglob("environment.json")) if path.is_dir() else [path.with_name("environment.json")]
    envs = []
    for f in files:
        try:
            envs.append(json.loads(f.read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError):
            continue
    return envs


def _pct(v):
    return None if v is None else f"{100 * v:.1f} %"


def write_report(results: str | Path, out: str | Path | None = None) -> dict:
    """Write `report.md` (+ PNG plots when matplotlib is there) for the rows under `results`."""
    results = Path(results)
    df = read_rows(results)
    need = {"model", "seq_len", "batch_size", "mode", "checkpointing"}
    if df.empty or not need <= set(df.columns):
        raise UsageError(f"{results}: no flopbench result rows there (need columns {', '.join(sorted(need))})")
    out = Path(out) if out else (results if results.is_dir() else results.parent) / "report"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"--out {out}: cannot write there ({e.strerror or e})") from None

    per_token = flops_per_token(df)
    configs = {m: config_of(g.iloc[0]) for m, g in df.groupby("model", sort=False)}
    rows = measured_rows(df)
    plt = _pyplot()
    plots, notes = {}, {}
    if plt is not None:
        plot_flops_per_token(plt, per_token, out / "flops_per_token.png")
        plot_counted_over_6n(plt, per_token, configs, out / "counted_over_6n.png")
        notes["mfu_hfu"] = plot_mfu_hfu(plt, rows, out / "mfu_hfu.png")
        notes["step_time"] = plot_step_time(plt, rows, out / "step_time.png")
        plots = {name: str(out / f"{name}.png") for name in PLOTS}
    else:
        train = _train_rows(rows)
        if not (train and all(r["mfu"] is not None for r in train)):
            notes["mfu_hfu"] = "no peak TFLOP/s is known for (some of) these rows, so MFU and HFU are null there"

    text = _markdown(results, df, per_token, configs, rows, plots, notes, _environments(results))
    (out / "report.md").write_text(text, encoding="utf-8")
    return {"results": str(results), "out": str(out), "report": str(out / "report.md"), "plots": plots,
            "matplotlib": plt is not None, "rows": len(df),
            "status_counts": {k: int(v) for k, v in df["status"].value_counts().items()} if "status" in df else {},
            "notes": notes}


def _markdown(results, df, per_token, configs, rows, plots, notes, envs) -> str:
    def image(name, alt):
        return f"![{alt}]({name}.png)\n\n" if name in plots else ""

    statuses = ", ".join(f"{v} {k}" for k, v in df["status"].value_counts().items()) if "status" in df else ""
    lines = [
        "# flopbench report",
        "",
        f"Source: `{results}` — {len(df)} rows ({statuses}); models: {', '.join(configs)}.",
        "",
    ]
    for env in envs:
        gpu = (env.get("gpu") or {}).get("name") or "no GPU"
        lines.append(f"- measured on `{env.get('hostname')}`: {env.get('device')}, {gpu}, {env.get('cpu_count')} CPUs, "
                     f"torch {env.get('torch')}, CUDA {env.get('cuda_runtime')}, flopbench {env.get('flopbench')} "
                     f"({env.get('flopbench_git')}), {env.get('timestamp')}")
    if not plots:
        lines += ["", "**matplotlib is not installed, so this report has tables only** "
                      "(`pip install 'flopbench[plot]'` for the plots)."]
    lines += [
        "",
        "Conventions: FLOPs are matmul FLOPs (1 multiply-add = 2 FLOPs), attention over the full T×T square, "
        "backward = 2 × forward, N = N_matmul (DESIGN.md §2). *Counted torch* is FlopCounterMode over one real "
        "step on the run's device: fused attention kernels (the CPU flash kernel, flash / cuDNN on CUDA) re-form QKᵀ "
        "in backward (5 bmm, not 4), so there counted fwd+bwd sits 2·L·d·T FLOPs per token above the exact analytic "
        "count (each row's `hardware_flops_note` says which). *fvcore* is its forward count on the meta device, "
        "doubled.",
        "",
        "## 1. FLOPs per token: analytic vs counted",
        "",
        image("flops_per_token", "FLOPs per token by model"),
        markdown_table([{k: (_eng(v) if isinstance(v, float) else v) for k, v in r.items()} for r in per_token], {
            "model": "model", "seq_len": "T", "N_matmul": "N_matmul", "2N": "2N", "counted_forward": "counted fwd",
            "fvcore_forward": "fvcore fwd", "exact_forward": "exact fwd", "6N": "6N", "palm": "PaLM", "exact_train": "exact train",
            "counted_train": "counted fwd+bwd", "8N": "8N", "exact_train_recompute": "exact ckpt full",
            "counted_train_recompute": "counted ckpt full"}),
        "",
        "FLOPs per token. *exact* = `analytic.train_flops` / `train_recompute_flops` (torch's checkpoint early "
        "stop: the MLP down-projection is not recomputed, so *exact ckpt full* is below 8N).",
        "",
        "## 2. What 6N leaves out: training FLOPs ÷ 6N against sequence length",
        "",
        image("counted_over_6n", "counted / 6N against seq_len"),
    ]
    seq_lens = [2**k for k in range(6, 15, 2)]
    ratio_rows = [{"model": m, **{f"T={T}": f"{r:.3f}" + ("†" if T > cfg.max_seq_len else "")
                                  for T, r in zip(seq_lens, ratio_curve(cfg, seq_lens))}}
                  for m, cfg in configs.items()]
    lines += [markdown_table(ratio_rows, {"model": "model", **{f"T={T}": f"T={T}" for T in seq_lens}}), "",
              "Exact ÷ 6N = 1 + 12·L·d·T / (6·N_matmul) per token (PaLM's 6N + 12·L·H·Q·T gives the same ratio for "
              "full attention); it grows linearly with T. † = beyond the model's positions (the same shape with a "
              "longer context). Measured:", ""]
    measured_ratio = [{"model": r["model"], "T": r["seq_len"],
                       "exact": f"{r['exact_train'] / r['6N']:.4f}",
                       "counted": f"{r['counted_train'] / r['6N']:.4f}" if r.get("counted_train") else None}
                      for r in per_token]
    lines += [markdown_table(measured_ratio, {"model": "model", "T": "T", "exact": "exact ÷ 6N",
                                              "counted": "counted torch fwd+bwd ÷ 6N"}), ""]
    lines += ["## 3. Measured utilisation: MFU and HFU", "", image("mfu_hfu", "MFU and HFU by model and checkpointing")]
    if "mfu_hfu" in notes:
        lines += [f"Note: {notes['mfu_hfu']}.", ""]
    noisy = [r for r in rows if r["min_ms"] and r["max_ms"] and r["max_ms"] > NOISY * r["min_ms"]]
    if noisy:
        lines += [f"Note: in {len(noisy)} of {len(rows)} rows the slowest timed step took more than {NOISY} x the "
                  f"fastest: the machine was noisy while they ran; read their medians with the spread.", ""]
    table_rows = [{**r, "mfu": _pct(r["mfu"]), "hfu": _pct(r["hfu"]), "gemm_fraction": _pct(r["gemm_fraction"]),
                   "spread": f"{r['min_ms']:.4g}–{r['max_ms']:.4g}" if r["min_ms"] and r["max_ms"] else None}
                  for r in rows]
    lines += [markdown_table(table_rows, {
        "model": "model", "seq_len": "T", "batch_size": "B", "dtype": "dtype", "mode": "mode",
        "checkpointing": "ckpt", "status": "status", "median_ms": "median ms", "spread": "min–max ms",
        "tokens_per_s": "tokens/s",
        "achieved_tflops": "model TFLOP/s", "hardware_tflops": "hardware TFLOP/s", "mfu": "MFU", "hfu": "HFU",
        "peak_tflops": "peak TFLOP/s", "gemm_tflops": "GEMM TFLOP/s", "gemm_fraction": "GEMM ÷ peak"}), ""]
    lines += ["## 4. Time per step: measured vs the seed's prediction", "", image("step_time", "step time")]
    if "step_time" in notes:
        lines += [f"Note: {notes['step_time']}.", ""]
    pred = [r for r in rows if r["status"] == "ok" and r["predicted_ms"]]
    for r in pred:
        r["ratio"] = r["median_ms"] / r["predicted_ms"]
    lines += [markdown_table(pred, {
        "model": "model", "seq_len": "T", "batch_size": "B", "mode": "mode", "checkpointing": "ckpt",
        "median_ms": "measured ms", "simple_formula": "rule", "predicted_basis": "at", "predicted_ms": "predicted ms",
        "predicted_ms_discounted": f"predicted ms at {SEED_DISCOUNT}", "ratio": "measured ÷ predicted"}), ""]
    oom = [r for r in rows if r["status"] != "ok"]
    if oom:
        lines += ["## Rows that did not run", "", markdown_table(oom, {
            "model": "model", "seq_len": "T", "batch_size": "B", "dtype": "dtype", "mode": "mode",
            "checkpointing": "ckpt", "status": "status"}), ""]
    return "\n".join(lines).rstrip() + "\n"


def render(doc: dict) -> str:
    plots = "\n".join(f"  {p}" for p in doc["plots"].values()) or "  (none: matplotlib is not installed)"
    return f"flopbench report: {doc['rows']} rows from {doc['results']}\n  {doc['report']}\nplots:\n{plots}\n"
