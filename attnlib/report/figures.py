"""The paper's figures, one function each, from the summary table and the results frame. Each writes PDF and PNG
without creation dates (a rebuild from the same results gives the same files); a figure without data says so
on the figure instead of showing zeros."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.lines  # noqa: E402
import matplotlib.patches  # noqa: E402
import matplotlib.ticker  # noqa: E402
import matplotlib.transforms  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

GIB = 2**30


def series_color(i: int) -> tuple:
    """The i-th line's colour: tab20's ten saturated colours, then its ten light ones, so that up to 20 lines
    (ten variants and the anchors) never share one."""
    return plt.get_cmap("tab20")((2 * i) % 20 + (2 * i // 20) % 2)


def _save(fig, out_dir: Path, name: str, rect: tuple[float, float, float, float] = (0, 0, 1, 1)) -> Path:
    """Write `name`.pdf and .png, laid out within `rect` of the figure (room outside it for a legend)."""
    fig.tight_layout(rect=rect)
    out_dir.mkdir(parents=True, exist_ok=True)
    for ext in ("pdf", "png"):
        fig.savefig(out_dir / f"{name}.{ext}", dpi=150,
                    metadata={"CreationDate": None} if ext == "pdf" else {"Software": None})
    plt.close(fig)
    return out_dir / f"{name}.png"


def _empty(ax, message: str) -> None:
    ax.text(0.5, 0.5, "\n".join(textwrap.wrap(message, 50)), ha="center", va="center", transform=ax.transAxes,
            fontsize=10, color="0.3")
    ax.set_xticks([])
    ax.set_yticks([])


def _bars(summary: pd.DataFrame, column: str, ci: str | None, scale: float, label: str, out_dir: Path, name: str) -> Path:
    fig, ax = plt.subplots(figsize=(7, 3.2))
    data = summary.dropna(subset=[column]) if column in summary else summary.iloc[0:0]
    if data.empty:
        _empty(ax, f"no {label} in these results: not measurable on this hardware (the JSON results give the reason)")
    else:
        modes, variants = list(dict.fromkeys(data["mode"])), list(dict.fromkeys(data.variant))
        width = 0.8 / len(modes)
        colors = [variant_color(v) for v in variants]  # the variant's colour; the mode is the bar's hatching
        for i, mode in enumerate(modes):
            d = data[data["mode"] == mode].set_index("variant").reindex(variants)
            xs = [j + (i - (len(modes) - 1) / 2) * width for j in range(len(variants))]
            err = None if ci is None else d[ci].fillna(0) * scale
            ax.bar(xs, d[column] * scale, width, yerr=err, capsize=2, color=colors, edgecolor="0.2", lw=0.4,
                   hatch=MODE_HATCHES[i % len(MODE_HATCHES)])
        ax.set_xticks(range(len(variants)), variants, rotation=30, ha="right")
        ax.set_ylabel(label)
        if len(modes) > 1:  # below the axes, over no bar
            handles = [matplotlib.patches.Patch(facecolor="white", edgecolor="0.2", hatch=MODE_HATCHES[i % len(
                MODE_HATCHES)], label=mode) for i, mode in enumerate(modes)]
            fig.legend(handles=handles, title="mode", fontsize=7, title_fontsize=7, loc="upper center", ncol=len(modes),
                       frameon=False, bbox_to_anchor=(0.5, 1.0))
            return _save(fig, out_dir, name, rect=(0, 0, 1, 0.88))
    return _save(fig, out_dir, name)


MODE_HATCHES = ("", "///", "...")  # eager, compile, graph bars: the mode by its hatching, the colour the variant's


def energy_per_token(summary: pd.DataFrame, out_dir: Path) -> Path:
    return _bars(summary, "gpu_j_per_token_mean", "gpu_j_per_token_ci95", 1e3, "GPU energy, mJ/token (95% CI)",
                 out_dir, "energy_per_token")


def tokens_per_s(summary: pd.DataFrame, out_dir: Path) -> Path:
    return _bars(summary, "tokens_per_s_mean", "tokens_per_s_ci95", 1.0, "training tokens/s (95% CI)", out_dir,
                 "tokens_per_s")


def peak_memory(summary: pd.DataFrame, out_dir: Path) -> Path:
    return _bars(summary, "gpu_mem_used_peak_bytes_max", None, 1 / GIB, "peak GPU memory in use, GiB", out_dir,
                 "peak_memory")


def power_trace(frame: pd.DataFrame, out_dir: Path) -> Path:
    """The first window of each variant and mode (its own, not its reference's): 1 s moving mean of the 10 Hz power
    samples, one panel per mode."""
    own = frame["role"].isna() | (frame["role"] == "variant") if "role" in frame else True
    traced = frame[(frame.kind == "trial") & own & frame.get("power_trace", pd.Series(dtype=object)).notna()] \
        if "power_trace" in frame else frame.iloc[:0]
    modes = sorted(set(traced["mode"]), key=["eager", "compile", "graph"].index) if len(traced) else ["none"]
    fig, axes = plt.subplots(1, len(modes), figsize=(3.4 * len(modes), 3.2), sharey=True, squeeze=False)
    if traced.empty:
        _empty(axes[0][0], "no GPU power trace in these results (CPU-only run)")
    for ax, mode in zip(axes[0], modes):
        for _, r in traced[traced["mode"] == mode].iterrows():
            trace = pd.DataFrame(r.power_trace, columns=["t", "w"])
            ax.plot(trace.t, trace.w.rolling(10).mean(), label=r.variant, lw=1, color=variant_color(r.variant))
        if len(traced):
            ax.set_title(mode, fontsize=9)
            ax.set_xlabel("time in window, s")
    if len(traced):
        axes[0][0].set_ylabel("GPU power, W (1 s moving mean)")
        handles, labels = axes[0][-1].get_legend_handles_labels()
        fig.legend(handles, labels, ncol=5, fontsize=6, loc="lower center", frameon=False)  # below, over no trace
        return _save(fig, out_dir, "power_trace", rect=(0, 0.14, 1, 1))
    return _save(fig, out_dir, "power_trace")


def energy_vs_loss(summary: pd.DataFrame, out_dir: Path) -> Path:
    fig, ax = plt.subplots(figsize=(5, 4))
    data = summary.dropna(subset=["gpu_j_per_token_mean", "val_loss_mean"]) if "val_loss_mean" in summary else summary.iloc[:0]
    if data.empty:
        _empty(ax, "energy vs loss needs GPU energy and quality runs")
    else:
        for _, r in data.iterrows():  # the variant's colour and marker; the mode by the marker's fill
            ax.errorbar(r.gpu_j_per_token_mean * 1e3, r.val_loss_mean, xerr=r.gpu_j_per_token_ci95 * 1e3,
                        yerr=0 if pd.isna(r.val_loss_ci95) else r.val_loss_ci95, fmt=variant_marker(r.variant), ms=5,
                        capsize=2, lw=0.8, color=variant_color(r.variant), fillstyle=MODE_FILLS.get(r["mode"], "full"))
        ax.set_xlabel("GPU energy, mJ/token")
        ax.set_ylabel("validation loss (mean over seeds, 95% CI)")
        modes = [m for m in MODE_FILLS if m in set(data["mode"])]
        handles = [matplotlib.lines.Line2D([], [], marker=variant_marker(v), ls="", color=variant_color(v), label=v)
                   for v in dict.fromkeys(data.variant)]  # a legend, not labels at the points: no collisions
        handles += [matplotlib.lines.Line2D([], [], marker="o", ls="", color="0.3", fillstyle=MODE_FILLS[m], label=m)
                    for m in modes]
        fig.legend(handles=handles, fontsize=7, loc="lower center", ncol=5, frameon=False)
        return _save(fig, out_dir, "energy_vs_loss", rect=(0, 0.16, 1, 1))
    return _save(fig, out_dir, "energy_vs_loss")


MODE_FILLS = {"eager": "none", "compile": "left", "graph": "full"}  # a point's mode by its marker's fill


def loss_curves(frame: pd.DataFrame, out_dir: Path) -> Path:
    """Mean validation loss over seeds against training tokens, from the first evaluation after step 0 (the
    initial loss, about ln 50257, would flatten the rest)."""
    fig, ax = plt.subplots(figsize=(7, 3.5))
    runs = frame[(frame.kind == "quality") & (frame.status == "ok")] if "kind" in frame else frame.iloc[:0]
    if runs.empty:
        _empty(ax, "no quality runs in these results")
    for variant, group in runs.groupby("variant", sort=False):
        points = pd.DataFrame([p for curve in group.loss_curve for p in curve if p["tokens"] > 0])
        mean = points.groupby("tokens").val_loss.mean()
        ax.plot(mean.index, mean.values, marker=variant_marker(variant), ms=3, label=variant, lw=1,
                color=variant_color(variant))
    if len(runs):
        ax.set_xlabel("training tokens")
        ax.set_ylabel("validation loss (mean over seeds)")
        fig.legend(*ax.get_legend_handles_labels(), ncol=5, fontsize=7, loc="lower center", frameon=False)
        return _save(fig, out_dir, "loss_curves", rect=(0, 0.12, 1, 1))
    return _save(fig, out_dir, "loss_curves")


def _registry_index(variant: str) -> int:
    from ..registry import VARIANTS

    names = list(VARIANTS)
    return names.index(variant) if variant in names else len(names)


def variant_color(variant: str) -> tuple:
    """One colour per variant in every figure: its place in the registry picks it."""
    return series_color(_registry_index(variant))


MARKERS = ("o", "s", "^", "v", "D", "P", "X", "<", ">", "p", "h", "*", "8")


def variant_marker(variant: str) -> str:
    """One marker per variant in every figure (told apart in greyscale too), by its place in the registry."""
    return MARKERS[_registry_index(variant) % len(MARKERS)]


RATIO_TICKS = (0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 1.0, 1.05, 1.1, 1.2, 1.3, 1.5, 2.0, 3.0, 5.0)


def _ratio_ticks(low: float, high: float, labels: int = 7) -> list[float]:
    """Ratio ticks between `low` and `high` on a log axis, 1 always among them, no two closer than a seventh of the
    axis (so that labels never collide, whatever the spread of the panel)."""
    span, ticks = math.log(high / low), [1.0]
    for candidate in sorted(RATIO_TICKS, key=lambda t: abs(math.log(t))):
        if low <= candidate <= high and all(abs(math.log(candidate / t)) >= span / labels for t in ticks):
            ticks.append(candidate)
    return sorted(ticks)


def ratio_axis(axis: matplotlib.axis.Axis) -> None:
    """A log axis of ratios labelled in plain numbers (0.97, 1, 1.3), never in powers of ten, ticks never crowded.
    Set the axis' limits first: the ticks are chosen between them."""
    axis.set_major_locator(matplotlib.ticker.FixedLocator(_ratio_ticks(*axis.get_view_interval())))
    axis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    axis.set_minor_locator(matplotlib.ticker.NullLocator())


def paired_ratios(summary: pd.DataFrame, out_dir: Path) -> Path:
    """Each paired row's ratio to the reference with its 95% interval, energy per token and throughput, one panel
    per mode, the mode's A/A bound shaded around 1: a ratio whose interval leaves the band is a difference."""
    paired = summary[summary.get("protocol", pd.Series(dtype=object)) == "paired"] if len(summary) else summary
    modes = [m for m in ("eager", "compile", "graph") if m in set(paired.get("mode", []))] or ["none"]
    quantities = (("gpu_j_per_token", "energy per token"), ("tokens_per_s", "throughput"))
    fig, axes = plt.subplots(len(quantities), len(modes), figsize=(3.4 * len(modes), 5.2), squeeze=False,
                             sharey=True)
    if paired.empty:
        _empty(axes[0][0], "no paired rows in these results")
        return _save(fig, out_dir, "paired_ratios")
    variants = list(dict.fromkeys(paired.variant))
    for row, (quantity, label) in enumerate(quantities):
        for col, mode in enumerate(modes):
            ax, rows = axes[row][col], paired[paired["mode"] == mode].set_index("variant")
            bound = rows[f"{quantity}_aa_bound"].dropna()
            if len(bound):
                ax.axvspan(1 - bound.iloc[0], 1 + bound.iloc[0], color="0.88", zorder=0)
            ax.axvline(1.0, color="0.3", lw=0.8)
            for y, variant in enumerate(variants):
                if variant not in rows.index or pd.isna(rows.loc[variant, f"{quantity}_ratio"]):
                    continue
                r = rows.loc[variant]
                err = [[r[f"{quantity}_ratio"] - r[f"{quantity}_ratio_low"]],
                       [r[f"{quantity}_ratio_high"] - r[f"{quantity}_ratio"]]]
                ax.errorbar(r[f"{quantity}_ratio"], y, xerr=err, fmt=variant_marker(variant), ms=4, capsize=2,
                            color=variant_color(variant))
            ax.set_yticks(range(len(variants)), variants, fontsize=7)
            ax.set_title(f"{mode}: {label}", fontsize=8)
            ax.set_xlabel(f"ratio to {rows.reference.dropna().iloc[0] if rows.reference.notna().any() else 'reference'}"
                          " (95% CI)", fontsize=7)
            ax.set_xscale("log")  # a ratio of 1.3 and one of 0.97 on one axis: equal factors, equal distances
            ratio_axis(ax.xaxis)
            ax.tick_params(axis="x", labelsize=6)
    axes[0][0].invert_yaxis()  # the axes share y: the first variant on top in every panel
    handles = [matplotlib.patches.Patch(color="0.88", label="A/A bound (the mode's noise floor)")]
    fig.legend(handles=handles, fontsize=7, loc="lower center", frameon=False)  # below the panels, over no data
    return _save(fig, out_dir, "paired_ratios", rect=(0, 0.04, 1, 1))


def _length_ticks(ax, lengths: list[int]) -> None:
    """A log axis of sequence lengths ticked at the measured ones: 512, 2K, 64K (K = 1024)."""
    ax.set_xticks(lengths, [f"{t // 1024}K" if t >= 1024 else str(t) for t in lengths])
    ax.minorticks_off()


def _per_length(sweep: pd.DataFrame, column: str, ci: str | None, scale: float, label: str, out_dir: Path,
                name: str) -> Path:
    """One line per variant against T (log-log): eager with its 95% band, the fast mode's cells as markers; a
    cell that failed is an x at the top of the axis, labelled with its status."""
    fig, ax = plt.subplots(figsize=(7, 4))
    eager = sweep[sweep["mode"] == "eager"] if len(sweep) else sweep
    measured = eager.dropna(subset=[column]) if column in eager else eager.iloc[:0]
    if measured.empty:
        _empty(ax, f"no {label} in these results (the JSON results give the reason)")
        return _save(fig, out_dir, name)
    top = measured[column].max() * scale * 1.6
    for variant, group in eager.groupby("variant", sort=False):
        color = variant_color(variant)
        ok = group.dropna(subset=[column]).sort_values("seq_len")
        ax.plot(ok.seq_len, ok[column] * scale, marker=variant_marker(variant), ms=3, lw=1, color=color,
                label=variant)
        if ci is not None:
            band = ok[ci].fillna(0) * scale
            ax.fill_between(ok.seq_len, ok[column] * scale - band, ok[column] * scale + band, color=color, alpha=0.2)
        failed = group[group.status != "ok"]
        ax.scatter(failed.seq_len, [top] * len(failed), marker="x", color=color)
        fast = sweep[(sweep.variant == variant) & (sweep["mode"] != "eager")].dropna(subset=[column])
        ax.scatter(fast.seq_len, fast[column] * scale, marker="^", color=color, s=18, zorder=3)
    ax.set(xscale="log", yscale="log", xlabel="sequence length T (tokens)", ylabel=label)
    _length_ticks(ax, sorted(sweep.seq_len.unique()))
    ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.text(0.01, 0.99, "x: out of memory or failed; triangles: fast mode", transform=ax.transAxes, fontsize=6,
            va="top")
    fig.legend(*ax.get_legend_handles_labels(), ncol=5, fontsize=6, loc="lower center", frameon=False)  # off the data
    return _save(fig, out_dir, name, rect=(0, 0.1, 1, 1))


def paired_ratio_vs_seq_len(sweep: pd.DataFrame, out_dir: Path, grid: list[int] | None = None) -> Path:
    """Each variant's paired ratio of energy per token to the reference against T (its fast mode's cells), with the
    95% interval as a band and the A/A bound shaded around 1 at each length: where a line leaves the shade for good
    is its crossover. A length not yet measured breaks the line (nothing is drawn across it); a cell that ran out of
    memory is an x on the top edge. `grid`: the lengths every variant is to be measured at (default: all measured
    ones); a variant's cell off the grid is drawn on its line, and an off-grid length it lacks breaks nothing."""
    fig, ax = plt.subplots(figsize=(7, 4))
    cells = sweep[(sweep.get("protocol", pd.Series(dtype=object)) == "paired")] if len(sweep) else sweep
    paired = cells.dropna(subset=["gpu_j_per_token_ratio"]) if len(cells) else cells
    if paired.empty:
        _empty(ax, "no paired long-context cells in these results yet")
        return _save(fig, out_dir, "longcontext_paired_ratios")
    bound = paired.groupby("seq_len").gpu_j_per_token_aa_bound.max().dropna().sort_index()
    if len(bound):
        ax.fill_between(bound.index, 1 - bound.values, 1 + bound.values, color="0.88", zorder=0, step="mid")
    ax.axhline(1.0, color="0.3", lw=0.8)
    lengths = sorted(cells.seq_len.unique())
    top = matplotlib.transforms.blended_transform_factory(ax.transData, ax.transAxes)
    for variant, group in cells.groupby("variant", sort=False):
        own = sorted(set(grid or lengths) | set(group.seq_len))
        g = group.drop_duplicates("seq_len").set_index("seq_len").reindex(own)  # unmeasured lengths: NaN, a gap
        color = variant_color(variant)
        if g.gpu_j_per_token_ratio.notna().any():
            ax.plot(g.index, g.gpu_j_per_token_ratio, marker=variant_marker(variant), ms=4, lw=1, color=color,
                    label=variant)
            ax.fill_between(g.index, g.gpu_j_per_token_ratio_low, g.gpu_j_per_token_ratio_high, alpha=0.15,
                            color=color)
            ax.errorbar(g.index, g.gpu_j_per_token_ratio, fmt="none", ecolor=color, elinewidth=0.8,  # a lone cell too
                        yerr=[g.gpu_j_per_token_ratio - g.gpu_j_per_token_ratio_low,
                              g.gpu_j_per_token_ratio_high - g.gpu_j_per_token_ratio])
        failed = g.index[g.status.notna() & (g.status != "ok")]
        ax.plot(failed, [0.97] * len(failed), "x", color=color, ms=6, transform=top, clip_on=False)
    ax.set(xscale="log", yscale="log", xlabel="sequence length T (tokens)",
           ylabel=f"energy per token / {paired.reference.dropna().iloc[0]}'s (95% CI)")
    _length_ticks(ax, lengths)
    ratio_axis(ax.yaxis)
    handles, labels = ax.get_legend_handles_labels()
    handles += [matplotlib.patches.Patch(color="0.88"), matplotlib.lines.Line2D([], [], color="0.3", marker="x", ls="")]
    fig.legend(handles, [*labels, "A/A bound", "out of memory"], ncol=7, fontsize=7, loc="lower center",
               frameon=False)
    return _save(fig, out_dir, "longcontext_paired_ratios", rect=(0, 0.06, 1, 1))


def layer_tflops_vs_seq_len(layers: pd.DataFrame, out_dir: Path) -> Path:
    """The attention layer alone (projections and core): model TFLOP/s (mask-exact FLOPs) against T per variant,
    forward and forward + backward side by side, 95% bands; what each kernel delivers where the rest of the model
    does not dilute it."""
    passes = ("forward", "forward_backward")
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    ok = layers[layers.status == "ok"].dropna(subset=["tflops_mean"]) if len(layers) else layers
    for ax, layer_pass in zip(axes, passes):
        part = ok[ok.layer_pass == layer_pass] if len(ok) else ok
        if part.empty:
            _empty(ax, "no layer-alone windows in these results")
            continue
        for variant, group in part.groupby("variant", sort=False):
            g = group.sort_values("seq_len")
            color = variant_color(variant)
            ax.plot(g.seq_len, g.tflops_mean, marker=variant_marker(variant), ms=3, lw=1, color=color, label=variant)
            band = g.tflops_ci95.fillna(0)
            ax.fill_between(g.seq_len, g.tflops_mean - band, g.tflops_mean + band, color=color, alpha=0.2)
        lengths = sorted(part.seq_len.unique())
        ax.set(xscale="log", yscale="log", xlabel="sequence length T (tokens)",
               title=layer_pass.replace("_", " + "))
        _length_ticks(ax, lengths)
        ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    axes[0].set_ylabel("attention layer alone, TFLOP/s (95% CI)")
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, ncol=5, fontsize=6, loc="lower center", frameon=False)
    return _save(fig, out_dir, "longcontext_layer_tflops", rect=(0, 0.1, 1, 1))


def energy_vs_seq_len(sweep: pd.DataFrame, out_dir: Path) -> Path:
    return _per_length(sweep, "gpu_j_per_token_mean", "gpu_j_per_token_ci95", 1e3, "GPU energy, mJ/token (95% CI)",
                       out_dir, "longcontext_energy")


def memory_vs_seq_len(sweep: pd.DataFrame, out_dir: Path) -> Path:
    return _per_length(sweep, "peak_mem_bytes", None, 1 / GIB, "peak GPU memory, GiB", out_dir,
                       "longcontext_memory")


def all_figures(summary: pd.DataFrame, frame: pd.DataFrame, out_dir: Path) -> list[Path]:
    sns.set_theme(style="whitegrid", context="paper")
    return [energy_per_token(summary, out_dir), tokens_per_s(summary, out_dir), peak_memory(summary, out_dir),
            power_trace(frame, out_dir), energy_vs_loss(summary, out_dir), loss_curves(frame, out_dir),
            paired_ratios(summary, out_dir)]
