"""The distributed report: `summary.csv` (one row per variant, strategy, world size and length), the scaling figure,
and the macros `paper/distributed.tex` uses.

Scaling efficiency is tok/s on N cards over N x tok/s on one card of the same variant, strategy and length; the
energy cost of parallelism is energy per token on N cards as a multiple of one card's (every card's energy
summed): what communication and waiting add, including the idle power of a card that waits.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from ..results import read_run
from . import latex
from .figures import GIB, _empty, _save, variant_color, variant_marker
from .frames import TRIAL_QUANTITIES, aggregate, compare, with_calibration
from .longcontext import seq_label

LINESTYLES = ("-", "--", ":", "-.")  # a variant's lengths apart, its colour and marker kept

KEYS = ["variant", "strategy", "world_size", "seq_len", "batch_size"]
STRATEGY_NAMES = {"ddp": "data parallel (DDP) training", "context_parallel": "context-parallel attention layer",
                  "ring_attention": "attention layer with PyTorch's ring attention"}


def distributed_summary(frame: pd.DataFrame, calibrations: dict[str, dict]) -> pd.DataFrame:
    """One row per (variant, strategy, world size, length): the aggregates (`comm_share_mean` among them: the share
    of step time in collectives), `scaling_efficiency`, `j_per_token_vs_one_gpu` (energy per token over one card's)
    and `peak_mem_gib_per_gpu` (the largest allocator peak of any card)."""
    windows = frame[frame.kind == "distributed"] if "kind" in frame else frame.iloc[:0]
    if windows.empty:
        return pd.DataFrame()
    summary = aggregate(with_calibration(windows, calibrations), KEYS, TRIAL_QUANTITIES + ("comm_share",))
    one = summary[(summary.world_size == 1) & (summary.status == "ok")].set_index(["variant", "strategy", "seq_len"])
    base = [one.loc[key] if key in one.index else None
            for key in zip(summary.variant, summary.strategy, summary.seq_len)]
    tps = [b.tokens_per_s_mean if b is not None else float("nan") for b in base]
    jpt = [b.gpu_j_per_token_mean if b is not None else float("nan") for b in base]
    summary["scaling_efficiency"] = summary.tokens_per_s_mean / (summary.world_size * pd.Series(tps, dtype=float))
    summary["j_per_token_vs_one_gpu"] = summary.gpu_j_per_token_mean / pd.Series(jpt, dtype=float)
    summary["peak_mem_gib_per_gpu"] = summary.torch_peak_mem_bytes_max / GIB
    return summary.sort_values(KEYS).reset_index(drop=True)


def scaling_figure(summary: pd.DataFrame, out_dir: Path) -> Path:
    """Per strategy: scaling efficiency and energy per token relative to one card, against the number of cards."""
    strategies = [s for s in STRATEGY_NAMES if len(summary) and ((summary.strategy == s) & (summary.status == "ok")).any()]
    fig, axes = plt.subplots(2, max(1, len(strategies)), figsize=(4.2 * max(1, len(strategies)), 5.6), squeeze=False)
    if not strategies:
        _empty(axes[0][0], "no measured distributed results")
    for column, strategy in enumerate(strategies):
        rows = summary[(summary.strategy == strategy) & (summary.status == "ok")]
        for i, ((variant, seq_len), group) in enumerate(rows.groupby(["variant", "seq_len"])):
            label = variant if strategy == "ddp" else f"{variant}, T = {seq_label(seq_len)}"
            for row, quantity in enumerate(("scaling_efficiency", "j_per_token_vs_one_gpu")):
                axes[row][column].plot(group.world_size, group[quantity], marker=variant_marker(variant),
                                       color=variant_color(variant), ls=LINESTYLES[i % len(LINESTYLES)], label=label)
        axes[0][column].set_title(STRATEGY_NAMES[strategy], fontsize=9)
        axes[0][column].axhline(1.0, color="grey", lw=0.5)
        axes[1][column].axhline(1.0, color="grey", lw=0.5)
        axes[1][column].set_xlabel("GPUs")
        for row in range(2):
            axes[row][column].set_xticks(sorted(rows.world_size.unique()) if len(rows) else [1])
        axes[0][column].legend(fontsize=6)
    axes[0][0].set_ylabel("scaling efficiency")
    axes[1][0].set_ylabel("J per token / one GPU's")
    return _save(fig, out_dir, "distributed_scaling")


def scaling_text(summary: pd.DataFrame) -> str:
    """One generated sentence per (variant, strategy, length) at its largest world size: throughput, efficiency and
    energy per token against one card, the wording following the intervals."""
    sentences = []
    ok = summary[summary.status == "ok"] if len(summary) else summary
    for (variant, strategy, seq_len), group in ok.groupby(["variant", "strategy", "seq_len"], sort=False):
        largest = group[group.world_size == group.world_size.max()].iloc[0]
        if largest.world_size == 1:
            continue
        rows = group[group.world_size.isin([1, largest.world_size])].assign(mode=group.world_size.astype(str))
        c = compare(rows, (variant, str(largest.world_size)), (variant, "1"), "gpu_j_per_token")
        what = "DDP training" if strategy == "ddp" else f"the {STRATEGY_NAMES[strategy]} at T = {seq_label(seq_len)}"
        sentences.append(f"{variant}, {what} on {largest.world_size} GPUs: "
                         f"{latex.fmt(largest.tokens_per_s_mean, ',.0f')} tokens/s, scaling efficiency "
                         f"{latex.fmt(largest.scaling_efficiency, '.2f')}, energy per token {c.wording} one GPU's"
                         + ("" if pd.isna(largest.comm_share_mean) else
                            f", {latex.fmt(largest.comm_share_mean, '.0f', 100)}% of step time in collectives") + ".")
    unsupported = summary[summary.status == "unsupported"] if len(summary) else summary
    for _, r in unsupported.drop_duplicates(["variant", "strategy"]).iterrows():
        sentences.append(f"{r.variant} has no {STRATEGY_NAMES[r.strategy]}: {r.error}.")
    return " ".join(sentences) or "n/a"


def build_distributed_report(frame: pd.DataFrame, calibrations: dict[str, dict], results_dir: Path, label: str,
                             figures_dir: Path, paper_dir: Path) -> pd.DataFrame:
    """A distributed results folder into `summary.csv` (also under `paper/generated/<label>/`), the scaling figure
    and the macros `paper/distributed.tex` uses; returns the summary."""
    summary = distributed_summary(frame, calibrations)
    generated = paper_dir / "generated" / label
    generated.mkdir(parents=True, exist_ok=True)
    summary.to_csv(results_dir / "summary.csv", index=False)
    summary.to_csv(generated / "summary.csv", index=False)
    scaling_figure(summary, figures_dir / label)
    windows = frame[frame.kind == "distributed"]
    config = windows.iloc[0].config if len(windows) else {}
    run = read_run(results_dir)
    sizes = sorted(summary.world_size.unique()) if len(summary) else []
    macros = {
        "DistributedDevice": frame.device.dropna().iloc[0] if frame.device.notna().any() else "n/a",
        "DistributedWorldSizes": ", ".join(str(w) for w in sizes) or "n/a",
        "DistributedCpSeqLens": " and ".join(seq_label(t) for t in config.get("cp_seq_lens", [])) or "n/a",
        "DistributedTrials": str(config.get("trials", "n/a")),
        "DistributedWindowS": str(config.get("window_s", "n/a")),
        "DistributedScaling": scaling_text(summary),
        "DistributedGpuMinutes": latex.fmt(run.get("minutes"), ".1f"),
    }
    latex.write_macros(macros, paper_dir / "distributed.tex", generated / "macros.tex", also=paper_dir / "paper.tex")
    return summary
