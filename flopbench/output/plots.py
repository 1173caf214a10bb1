"""The report's plots, drawn with matplotlib (an optional extra: `pyplot()` is None without it).

Drawing only: every number arrives computed (`api.report` derives them from the result rows and the
estimate registry); the functions here choose bars, colours, scales and labels, and write a PNG.
Legends sit outside the data area, so they never cover a bar or a line.
"""

from __future__ import annotations

import math
from pathlib import Path

DPI = 110
#: Per phase, the shades of the published estimates (light) and of the counted series (dark): blues for
#: forward, oranges for training, greens for training with full recomputation.
ESTIMATE_SHADES = {"forward": ("#9ecae1", "#c6dbef", "#6baed6"), "train": ("#fdae6b", "#fdd0a2", "#fd8d3c"),
                   "train_recompute": ("#a1d99b", "#c7e9c0", "#74c476")}
ESTIMATE_HATCHES = ("", "..", "xx", "\\\\")  # told apart within a phase once the shades run out
#: The counted series the FLOPs-per-token plot draws: key -> (legend, tick label, bar style).
COUNTED_STYLES = {
    "counted_forward": ("counted torch, forward", "torch fwd", dict(color="#08519c")),
    "fvcore_forward": ("fvcore, forward (meta, ×2)", "fvcore fwd", dict(color="#3182bd", hatch="//")),
    "counted_train": ("counted torch, fwd+bwd", "torch train", dict(color="#a63603")),
    "counted_train_recompute": ("counted torch, fwd+bwd, ckpt full", "torch ckpt", dict(color="#006d2c")),
}
_OUTSIDE = dict(loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)  # legend right of the axes
_LEGEND_W = 2.5  # inches of figure width the legend takes there


def pyplot():
    """matplotlib.pyplot on the Agg backend, or None when matplotlib is not installed."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _legend(ax) -> None:
    """The axes' legend, right of them; none for axes with no labelled artist (an empty legend box, and
    matplotlib's "No artists with labels found" warning on stderr)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, **_OUTSIDE)


def _save(plt, fig, path: Path) -> None:
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)


def grouped_bars(ax, labels: list[str], series: list[tuple[str, list, dict]]) -> None:
    """Bars for each (name, values, style) side by side in each group; None values leave a gap."""
    n = len(series)
    width = 0.8 / max(n, 1)
    for i, (name, values, style) in enumerate(series):
        xs = [g + (i - (n - 1) / 2) * width for g in range(len(labels))]
        ax.bar([x for x, v in zip(xs, values) if v is not None], [v for v in values if v is not None],
               width=width, label=name, **style)
    ax.set_xticks(range(len(labels)), labels)


def _bar_series(series: list[dict]) -> list[tuple[str, str, str, dict]]:
    """(legend, key, tick, style) of each drawn series: estimates in their phase's light shades, the counted
    series in `COUNTED_STYLES`; the exact counts are left to the table."""
    drawn, seen = [], {}
    for s in series:
        if s["kind"] == "estimate":
            i = seen[s["phase"]] = seen.get(s["phase"], -1) + 1
            shades = ESTIMATE_SHADES.get(s["phase"], ("#d9d9d9",))
            style = dict(color=shades[i % len(shades)])
            hatch = ESTIMATE_HATCHES[(i // len(shades)) % len(ESTIMATE_HATCHES)]
            if hatch:
                style["hatch"] = hatch
            legend = f"{s['name']} ({s['cite']})" if s.get("cite") else s["name"]
            drawn.append((legend, s["key"], s["name"], style))
        elif s["key"] in COUNTED_STYLES:
            legend, tick, style = COUNTED_STYLES[s["key"]]
            drawn.append((legend, s["key"], tick, style))
    return drawn


def plot_flops_per_token(plt, table: list[dict], series: list[dict], path: Path) -> None:
    """One panel per (model, seq_len) row of `table`, a bar per series (`api.report.per_token_series`:
    {"key", "phase", "kind", "name", "cite"}, in order); one legend for all panels, below them."""
    from matplotlib.ticker import EngFormatter

    bars = _bar_series(series)
    n = len(table)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    legend_rows = math.ceil(len(bars) / 4)
    legend_h = 0.25 * legend_rows + 0.2
    height = 3.8 * rows + 0.3 + legend_h
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, height), squeeze=False)
    for ax, row in zip(axes.flat, table):
        for i, (name, key, _, style) in enumerate(bars):
            if row.get(key) is not None:
                ax.bar(i, row[key], label=name, **style)
        ax.set_xticks(range(len(bars)), [b[2] for b in bars], rotation=35, ha="right", fontsize=8)
        ax.set_title(f"{row['model']}, T={row['seq_len']}  (N_matmul = {row['N_matmul']:,})", fontsize=10)
        ax.set_ylabel("FLOPs per token")
        ax.yaxis.set_major_formatter(EngFormatter(unit="FLOPs"))
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    handles = {}
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=4, fontsize=8)
    fig.suptitle("FLOPs per token: published estimates vs counted (torch on the run's device, fvcore)")
    fig.tight_layout(rect=(0, legend_h / height, 1, 1 - 0.3 / height))
    _save(plt, fig, path)


def plot_counted_over_6n(plt, curves: dict[str, tuple[list[int], list[float], int]],
                         points: dict[str, list[tuple[int, float]]], path: Path, rule: str = "6N") -> None:
    """Exact training FLOPs ÷ 6N against T, one line per model (`curves`: {model: (seq_lens, ratios,
    max_seq_len)}, dotted beyond max_seq_len), and the measured runs' counted ÷ 6N (`points`: {model:
    [(seq_len, ratio)]}) as rings. `rule` names 6N in the legend and title."""
    fig, ax = plt.subplots(figsize=(8 + _LEGEND_W, 5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    top = 0.0
    for i, (model, (seq_lens, ratios, max_seq_len)) in enumerate(curves.items()):
        color = colors[i % len(colors)]
        top = max([top, *ratios])
        inside = [(T, r) for T, r in zip(seq_lens, ratios) if T <= max_seq_len]
        beyond = [(T, r) for T, r in zip(seq_lens, ratios) if T >= inside[-1][0]] if inside else []
        if inside:
            ax.plot(*zip(*inside), color=color, marker=".", label=f"{model}: exact ÷ 6N (analytic)")
        if len(beyond) > 1:
            ax.plot(*zip(*beyond), color=color, linestyle=":", alpha=0.7)
        if points.get(model):
            ax.plot(*zip(*points[model]), color=color, marker="o", markersize=8, linestyle="none",
                    markerfacecolor="none", label=f"{model}: counted torch fwd+bwd ÷ 6N (measured run)")
    ax.axhline(1.0, color="black", linewidth=1, label=rule)
    ax.set_xscale("log", base=2)
    if top > 10:
        ax.set_yscale("log")
    ax.set_xlabel("sequence length T (tokens); dotted: beyond the model's positions")
    ax.set_ylabel("training FLOPs ÷ 6·N_matmul·T  (ratio)")
    ax.set_title(f"What {rule} leaves out:\nattention scores, 12·L·d·T FLOPs per token, grow with T")
    ax.grid(alpha=0.3)
    _legend(ax)
    fig.tight_layout()
    _save(plt, fig, path)


def _groups(rows: list[dict]) -> list[tuple]:
    return list(dict.fromkeys((r["model"], r["seq_len"], r["batch_size"], r["dtype"]) for r in rows))


def _pick(rows, group, ckpt, key):
    hit = [r[key] for r in rows if (r["model"], r["seq_len"], r["batch_size"], r["dtype"]) == group
           and r["checkpointing"] == ckpt]
    return hit[0] if hit else None


def plot_mfu_hfu(plt, train: list[dict], path: Path) -> str:
    """MFU and HFU bars of the training rows `train` (`api.report.train_rows`) by model and checkpointing,
    with each device's GEMM ceiling as a line; absolute TFLOP/s where a row has no peak. Returns a note for
    the report (what the y axis shows)."""
    groups = _groups(train)
    labels = [f"{m}\nT={T} B={B} {d}" for m, T, B, d in groups]
    with_peak = bool(train) and all(r["mfu"] is not None for r in train)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.9 * len(groups) + 2) + _LEGEND_W, 5))
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
    grouped_bars(ax, labels, [s for s in series if any(v is not None for v in s[1])])
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
    _legend(ax)
    fig.tight_layout()
    _save(plt, fig, path)
    return note


def plot_step_time(plt, train: list[dict], path: Path, discount: float) -> str:
    """Measured step time of the training rows `train` against their rule's prediction (6NT, Kaplan et al.
    2020; 8NT with checkpointing, Narayanan et al. 2021) at the peak or GEMM ceiling, and at `discount` of
    it. Returns a note for the report (what the predictions are based on)."""
    groups = _groups(train)
    labels = [f"{m}\nT={T} B={B} {d}" for m, T, B, d in groups]
    bases = {r["predicted_basis"] for r in train if r["predicted_basis"]}
    basis = " / ".join(sorted(bases)) or "none"
    fig, ax = plt.subplots(figsize=(max(6.0, 2.2 * len(groups) + 2) + _LEGEND_W, 5))
    series = []
    for ckpt, rule, shades in (("none", "6NT", ("#08519c", "#6baed6", "#c6dbef")),
                               ("full", "8NT", ("#a63603", "#fd8d3c", "#fdd0a2"))):
        series += [
            (f"measured, ckpt {ckpt}", [_pick(train, g, ckpt, "median_ms") for g in groups], dict(color=shades[0])),
            (f"{rule} at {discount} x {basis}", [_pick(train, g, ckpt, "predicted_ms_discounted") for g in groups],
             dict(color=shades[1])),
            (f"{rule} at 100 % of {basis}", [_pick(train, g, ckpt, "predicted_ms") for g in groups],
             dict(color=shades[2], hatch="//")),
        ]
    grouped_bars(ax, labels, [s for s in series if any(v is not None for v in s[1])])
    ax.set_yscale("log")
    ax.set_ylabel("time per step (ms, log scale)")
    mode = train[0]["mode"] if train else "train_step"
    ax.set_title(f"Time per step ({mode}): measured vs 6NT (Kaplan) / 8NT (Narayanan) at {basis}")
    ax.grid(axis="y", alpha=0.3)
    _legend(ax)
    fig.tight_layout()
    _save(plt, fig, path)
    if bases == {"peak"}:
        return (f"predictions use the dense peak of each row, and {discount} of it, the fraction reached in "
                f"practice (timing.rates.PRACTICAL_MFU, a measured MFU; for 8NT as an HFU)")
    return ("no peak TFLOP/s is known for (some of) these rows: the predictions use the GEMM ceiling the run "
            "measured on the same device as the attainable rate instead, labelled so")


def plot_roofline(plt, points: list[dict], roofs: list[dict], path: Path) -> None:
    """The roofline (Williams et al. 2009): attainable TFLOP/s = min(compute roof, bandwidth x intensity)
    against arithmetic intensity (FLOPs per byte moved), log-log, with each measured point.

    `points`: {label, intensity (FLOP/byte), tflops (achieved)}; `roofs`: {label, tflops, gbps} (a datasheet
    peak or a measured ceiling; either may be None)."""
    fig, ax = plt.subplots(figsize=(8 + _LEGEND_W, 5))
    xs = [p["intensity"] for p in points if p["intensity"]] or [1.0]
    lo, hi = min(xs) / 4, max(xs) * 4
    for r in roofs:
        if r["tflops"] and r["gbps"]:
            ridge = r["tflops"] * 1e3 / r["gbps"]  # FLOP/byte where the bandwidth roof meets the compute roof
            lo, hi = min(lo, ridge / 4), max(hi, ridge * 4)
    grid = [lo * (hi / lo) ** (i / 200) for i in range(201)]
    for r, style in zip(roofs, ("-", "--", ":", "-.")):
        if not (r["tflops"] or r["gbps"]):
            continue
        ys = [min(r["tflops"] or math.inf, (r["gbps"] or math.inf) * x / 1e3) for x in grid]
        ax.plot(grid, ys, color="black", linestyle=style, linewidth=1.2, label=r["label"])
    markers = ("o", "s", "^", "D", "v", "P")
    for i, p in enumerate(q for q in points if q["intensity"] and q["tflops"]):
        ax.plot(p["intensity"], p["tflops"], marker=markers[i % len(markers)], markersize=9, linestyle="none",
                label=f"{p['label']}: {p['tflops']:.3g} TFLOP/s at {p['intensity']:.3g} FLOP/byte")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOPs per byte moved)")
    ax.set_ylabel("achieved TFLOP/s")
    ax.set_title("Roofline: prefill (compute-bound) and decode (memory-bound)")
    ax.grid(alpha=0.3, which="both")
    _legend(ax)
    _save(plt, fig, path)


def plot_waterfall(plt, explained: list[dict], path: Path) -> None:
    """Each explained step's waterfall (`timing.breakdown.waterfall`): a bar per loss, floating from the value
    before it to the value after, from the dense peak (1.0) down to the MFU; one panel per row.

    `explained`: {label, waterfall: [{name, value, loss?}]}."""
    n = len(explained)
    fig, axes = plt.subplots(1, n, figsize=(6 * n, 5), squeeze=False)
    for ax, e in zip(axes[0], explained):
        steps = e["waterfall"]
        names = [s["name"] for s in steps]
        for i, s in enumerate(steps):
            if "loss" in s:  # a loss: from the value before down to the value after
                ax.bar(i, -s["loss"], bottom=s["value"] + s["loss"], color="#de2d26" if s["loss"] > 0 else "#31a354")
            else:  # the dense peak and the MFU: whole bars
                ax.bar(i, s["value"], color="#3182bd")
            ax.text(i, max(s["value"], 0) + 0.01, f"{100 * s['value']:.1f}%", ha="center", fontsize=7)
        ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
        ax.set_ylim(0, 1.08)
        ax.set_ylabel("fraction of the dense peak")
        ax.set_title(e["label"], fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    _save(plt, fig, path)
