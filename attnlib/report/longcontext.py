"""Long-context frames: the sweep's summary per (variant, mode, seq_len), the layer's per (variant, layer_pass,
seq_len), and the crossover lengths from which a variant beats the reference (`sdpa`) for good."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from . import figures, latex
from ..registry import VARIANTS
from .figures import GIB
from .frames import TRIAL_QUANTITIES, aggregate, compare, with_calibration

REFERENCE = "sdpa"
# quantity -> whether lower is better; peak memory has no interval (one maximum per cell)
CROSSOVER_QUANTITIES = {"gpu_j_per_token": True, "tokens_per_s": False, "peak_mem_bytes": True}
# each quantity's column prefix in crossover.csv
PREFIXES = {"gpu_j_per_token": "", "tokens_per_s": "tokens_per_s_", "peak_mem_bytes": "peak_mem_"}


def sweep_summary(frame: pd.DataFrame, calibrations: dict[str, dict]) -> pd.DataFrame:
    """One row per (variant, mode, seq_len) of the training sweep, with `batch_size`. Besides the aggregates'
    own names, `mean_power_w`, `peak_mem_gib` and `mfu` carry the columns long-context tables are read by."""
    windows = frame[frame.kind == "sweep"] if "kind" in frame else frame.iloc[:0]
    if windows.empty:
        return pd.DataFrame()
    summary = aggregate(with_calibration(windows, calibrations), ["variant", "mode", "seq_len", "batch_size"])
    summary["mean_power_w"] = summary.gpu_power_mean_w_mean
    # eager: the allocator's peak, exact and blind to what earlier cells left cached; CUDA graphs: the device memory
    # in use (NVML), since graph replays allocate nothing through the allocator
    eager = summary["mode"] == "eager"
    summary["peak_mem_bytes"] = summary.torch_peak_mem_bytes_max.where(eager, summary.gpu_mem_used_peak_bytes_max)
    summary["peak_mem_source"] = eager.map({True: "allocator peak", False: "device memory in use (NVML)"})
    summary["peak_mem_gib"] = summary.peak_mem_bytes / GIB
    summary["mfu"] = summary.mfu_mean
    return summary.sort_values(["variant", "mode", "seq_len"]).reset_index(drop=True)


def layer_summary(frame: pd.DataFrame, calibrations: dict[str, dict]) -> pd.DataFrame:
    """One row per (variant, layer_pass, seq_len) of the attention layer alone, with energy per call
    (`gpu_j_per_call_mean`, `_ci95`, `_cv`)."""
    windows = frame[frame.kind == "layer"] if "kind" in frame else frame.iloc[:0]
    if windows.empty:
        return pd.DataFrame()
    windows = windows.assign(gpu_j_per_call=pd.to_numeric(windows.gpu_energy_j, errors="coerce") / windows.calls)
    summary = aggregate(with_calibration(windows, calibrations), ["variant", "layer_pass", "seq_len", "batch_size"],
                        (*TRIAL_QUANTITIES, "gpu_j_per_call"))
    return summary.sort_values(["variant", "layer_pass", "seq_len"]).reset_index(drop=True)


def crossover_length(lengths: list[int], advantage: list[float | None]) -> float | None:
    """The length from which `advantage` (> 0: the variant is better; None: only the variant failed there;
    inf: only the reference failed) stays positive to the end of the grid, interpolated in log T between the last
    length where it is not and the first where it is (that first length itself where a failure leaves nothing to
    interpolate); the first length when positive everywhere, None when not positive at the last length."""
    k = len(lengths)
    while k > 0 and advantage[k - 1] is not None and advantage[k - 1] > 0:
        k -= 1
    if k == len(lengths):
        return None
    if k == 0:
        return float(lengths[0])
    before, after = advantage[k - 1], advantage[k]
    if before is None or math.isinf(after) or math.isnan(before):
        return float(lengths[k])
    fraction = -before / (after - before)
    return math.exp(math.log(lengths[k - 1]) + fraction * (math.log(lengths[k]) - math.log(lengths[k - 1])))


def crossover_frame(summary: pd.DataFrame, mode: str = "eager", reference: str = REFERENCE,
                    expected: list[str] | None = None) -> pd.DataFrame:
    """One row per variant: from which length its energy per token stays below the reference's
    (`crossover_seq_len`, with `ci_low` / `ci_high` where the 95% intervals put it earliest / latest; empty when
    not within the grid), and the same for throughput (`tokens_per_s_...`) and peak memory (`peak_mem_...`). A
    length where the variant failed (out of memory) and the reference ran counts against the variant. A variant
    of `expected` without results gets a row with `measured` False, so that it is never silently absent."""
    rows = summary[(summary["mode"] == mode) & (summary.status == "ok")] if len(summary) else summary
    if rows.empty or reference not in set(rows.variant):
        return pd.DataFrame(columns=["variant", "reference", "measured", "crossover_seq_len", "ci_low", "ci_high"])
    grid = sorted(summary[summary["mode"] == mode].seq_len.unique())
    ref = rows[rows.variant == reference].set_index("seq_len")
    out = []
    for variant in [v for v in summary.variant.unique() if v != reference]:
        own = rows[rows.variant == variant].set_index("seq_len")
        lengths = [t for t in grid if t in own.index or t in ref.index]  # both failed: no evidence either way
        row = {"variant": variant, "reference": reference, "measured": True}
        for quantity, lower_is_better in CROSSOVER_QUANTITIES.items():
            mean = quantity if quantity == "peak_mem_bytes" else f"{quantity}_mean"
            ci = None if quantity == "peak_mem_bytes" else f"{quantity}_ci95"

            def advantage(t: int, sign: int) -> float | None:
                """variant better by this much at t; `sign` +1 / -1 widens / narrows by the intervals."""
                if t not in own.index:
                    return None  # the variant failed (out of memory) where the reference ran
                if t not in ref.index:
                    return math.inf  # the reference failed where the variant ran
                a, b = own.loc[t, mean], ref.loc[t, mean]
                margin = sign * ((own.loc[t, ci] if ci else 0) + (ref.loc[t, ci] if ci else 0))
                return (b - a if lower_is_better else a - b) + margin

            found = [crossover_length(lengths, [advantage(t, s) for t in lengths]) for s in (0, 1, -1)]
            prefix = PREFIXES[quantity]
            row[f"{prefix}crossover_seq_len"] = found[0]
            if ci:
                row[f"{prefix}ci_low"], row[f"{prefix}ci_high"] = found[1], found[2]
        out.append(row)
    measured = set(summary.variant)
    out += [{"variant": v, "reference": reference, "measured": False}
            for v in sorted(set(expected or []) - measured - {reference})]
    return pd.DataFrame(out)


def seq_label(seq_len: float | None) -> str:
    """512, 2.9K, 64K: a length as the text prints it; "none" for no length."""
    if seq_len is None or (isinstance(seq_len, float) and math.isnan(seq_len)):
        return "none"
    return f"{seq_len / 1024:.3g}K" if seq_len >= 1000 else f"{seq_len:.0f}"


def crossover_table(crossover: pd.DataFrame, max_seq_len: int) -> str:
    """The paper's crossover table: per variant, from which length it beats the reference for good, with the
    length range the intervals allow."""
    def cell(row, prefix: str, with_interval: bool = True) -> str:
        point = row.get(f"{prefix}crossover_seq_len")
        if point is None or pd.isna(point):
            return f"none up to {seq_label(max_seq_len)}"
        if not with_interval:
            return seq_label(point)
        return f"{seq_label(point)} [{seq_label(row.get(f'{prefix}ci_low'))}, {seq_label(row.get(f'{prefix}ci_high'))}]"

    rows = [[r.variant, cell(r, ""), cell(r, "tokens_per_s_"), cell(r, "peak_mem_", False)] if r.measured
            else [r.variant] + ["not measured"] * 3 for _, r in crossover.iterrows()]
    return latex.booktabs(["variant", "energy per token", "throughput", "peak memory"], rows, "llll")


def crossovers_brief(crossover: pd.DataFrame, max_seq_len: int) -> str:
    """The abstract's clause: the variants whose energy per token stays below the reference's from some length,
    earliest first, and how many do not within the grid ("sliding_window from 512, linear from 3.52K; the other
    6 not up to 64K")."""
    measured = crossover[crossover.measured] if len(crossover) else crossover
    found = measured[measured.crossover_seq_len.notna()].sort_values("crossover_seq_len") if len(measured) else measured
    parts = [f"{r.variant} from {seq_label(r.crossover_seq_len)}" for r in found.itertuples()]
    rest = len(measured) - len(found)
    named = (", ".join(parts[:-1]) + " and " + parts[-1]) if len(parts) > 1 else "".join(parts) or "no variant"
    others = "the other one" if rest == 1 else f"the other {rest}"
    return named + (f"; {others} not up to {seq_label(max_seq_len)}" if rest and parts else
                    f" up to {seq_label(max_seq_len)}" if not parts else "")


def explanation(sweep: pd.DataFrame, frame: pd.DataFrame, crossover: pd.DataFrame, at: int,
                reference: str = REFERENCE) -> str:
    """One generated sentence per variant: its crossover, and at length `at` (eager) how its energy per token
    compares with the reference's, by throughput, mean power (energy per token = power / throughput) and FLOPs
    per token. The wording follows the intervals (`frames.compare`)."""
    eager = sweep[sweep["mode"] == "eager"]
    flops = (frame[(frame.kind == "sweep") & (frame.status == "ok")]
             .groupby(["variant", "seq_len"]).training_flops_per_token.first())
    sentences = []
    for _, row in crossover[crossover.measured.astype(bool)].iterrows():
        v = row.variant
        point = row.crossover_seq_len
        text = (f"{v} stays below {reference}'s energy per token from T $\\approx$ {seq_label(point)} "
                f"(95\\% range {seq_label(row.ci_low)}--{seq_label(row.ci_high)})" if not pd.isna(point)
                else f"{v} does not stay below {reference}'s energy per token up to {seq_label(eager.seq_len.max())}")
        at_length = eager[eager.seq_len == at]
        energy = compare(at_length, (v, "eager"), (reference, "eager"), "gpu_j_per_token")
        if energy.ratio is not None and (v, at) in flops and (reference, at) in flops:
            m = at_length[at_length.variant == v].iloc[0]
            r = at_length[at_length.variant == reference].iloc[0]
            text += (f"; at {seq_label(at)} it is {energy.wording} {reference} "
                     f"({m.tokens_per_s_mean / r.tokens_per_s_mean:.2f}$\\times$ its throughput at "
                     f"{m.gpu_power_mean_w_mean / r.gpu_power_mean_w_mean:.2f}$\\times$ its power, with "
                     f"{flops[(v, at)] / flops[(reference, at)]:.2f}$\\times$ its FLOPs per token)")
        failed = eager[(eager.variant == v) & (eager.status != "ok")]
        if len(failed):
            text += f"; it ran out of memory or failed from T = {seq_label(failed.seq_len.min())}"
        sentences.append(text + ".")
    sentences.append(latex.no_results_sentence(crossover.variant[~crossover.measured.astype(bool)].tolist(),
                                               "this grid"))
    return " ".join(s for s in sentences if s)


def build_longcontext_report(frame: pd.DataFrame, calibrations: dict[str, dict], results_dir: Path, label: str,
                             figures_dir: Path, paper_dir: Path) -> pd.DataFrame:
    """A long-context results folder into `summary.csv` (the training sweep), `layer_summary.csv`, `crossover.csv`
    (also under `paper/generated/<label>/`, with the crossover table and the macros `paper/longcontext.tex`
    uses) and the two figures against T; returns the sweep's summary."""
    sweep, layers = sweep_summary(frame, calibrations), layer_summary(frame, calibrations)
    crossover = crossover_frame(sweep, expected=list(VARIANTS))
    generated = paper_dir / "generated" / label
    generated.mkdir(parents=True, exist_ok=True)
    for name, table in (("summary", sweep), ("layer_summary", layers), ("crossover", crossover)):
        table.to_csv(results_dir / f"{name}.csv", index=False)
        table.to_csv(generated / f"{name}.csv", index=False)
    lengths = sorted(sweep.seq_len.unique()) if len(sweep) else []
    (generated / "crossover.tex").write_text(crossover_table(crossover, lengths[-1] if lengths else 0))
    figures.energy_vs_seq_len(sweep, figures_dir / label)
    figures.memory_vs_seq_len(sweep, figures_dir / label)
    config = frame[frame.kind == "sweep"].iloc[0].config if (frame.kind == "sweep").any() else {}
    run = json.loads((results_dir / "run.json").read_text()) if (results_dir / "run.json").exists() else {}
    at = 32768 if 32768 in lengths else (lengths[-1] if lengths else 0)
    macros = {
        "LongContextDevice": frame.device.dropna().iloc[0] if frame.device.notna().any() else "n/a",
        "LongContextTokensPerStep": latex.fmt(config.get("tokens_per_step"), ",.0f"),
        "LongContextSeqLens": f"{seq_label(lengths[0])}--{seq_label(lengths[-1])}" if lengths else "n/a",
        "LongContextFastMode": config.get("fast_mode") or "none",
        "LongContextFastSeqLens": " and ".join(seq_label(t) for t in config.get("fast_mode_seq_lens", [])) or "none",
        "LongContextTrials": str(config.get("trials", "n/a")), "LongContextWindowS": str(config.get("window_s", "n/a")),
        "LongContextLayerWindowS": str(config.get("layer_window_s", "n/a")), "LongContextReference": REFERENCE,
        "LongContextLossChunkTokens": latex.fmt(config.get("train", {}).get("loss_chunk_tokens"), ",.0f"),
        "LongContextExplainedAt": seq_label(at),
        "LongContextExplanation": explanation(sweep, frame, crossover, at) if len(crossover) else "n/a",
        "LongContextCrossovers": crossovers_brief(crossover, lengths[-1]) if len(crossover) and lengths else "n/a",
        "LongContextGpuMinutes": latex.fmt(run.get("gpu_minutes"), ".1f"),
        "LongContextMeasuredFractionPct": latex.fmt(run.get("measured_fraction"), ".0f", 100),
    }
    latex.write_macros(macros, paper_dir / "longcontext.tex", generated / "macros.tex", also=paper_dir / "paper.tex")
    return sweep
