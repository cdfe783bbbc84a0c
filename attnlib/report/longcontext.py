"""Long-context frames: the sweep's summary per (variant, mode, seq_len), the layer's per (variant, layer_pass,
seq_len), and the crossover lengths from which a variant beats the reference (`sdpa`) for good."""

from __future__ import annotations

import math

import pandas as pd

from .frames import aggregate, with_calibration

GIB = 2**30
REFERENCE = "sdpa"
# quantity -> whether lower is better; peak memory has no interval (one maximum per cell)
CROSSOVER_QUANTITIES = {"gpu_j_per_token": True, "tokens_per_s": False, "torch_peak_mem_bytes": True}
# each quantity's column prefix in crossover.csv
PREFIXES = {"gpu_j_per_token": "", "tokens_per_s": "tokens_per_s_", "torch_peak_mem_bytes": "peak_mem_"}


def sweep_summary(frame: pd.DataFrame, calibrations: dict[str, dict]) -> pd.DataFrame:
    """One row per (variant, mode, seq_len) of the training sweep, with `batch_size`. Besides the aggregates'
    own names, `mean_power_w`, `peak_mem_gib` and `mfu` carry the columns long-context tables are read by."""
    windows = frame[frame.kind == "sweep"] if "kind" in frame else frame.iloc[:0]
    if windows.empty:
        return pd.DataFrame()
    summary = aggregate(with_calibration(windows, calibrations), ["variant", "mode", "seq_len", "batch_size"])
    summary["mean_power_w"] = summary.gpu_power_mean_w_mean
    summary["peak_mem_gib"] = summary.torch_peak_mem_bytes_max / GIB
    summary["mfu"] = summary.mfu_mean
    return summary.sort_values(["variant", "mode", "seq_len"]).reset_index(drop=True)


def layer_summary(frame: pd.DataFrame, calibrations: dict[str, dict]) -> pd.DataFrame:
    """One row per (variant, layer_pass, seq_len) of the attention layer alone, with energy per call."""
    windows = frame[frame.kind == "layer"] if "kind" in frame else frame.iloc[:0]
    if windows.empty:
        return pd.DataFrame()
    windows = windows.assign(gpu_j_per_call=pd.to_numeric(windows.gpu_energy_j, errors="coerce") / windows.calls)
    summary = aggregate(with_calibration(windows, calibrations), ["variant", "layer_pass", "seq_len", "batch_size"])
    per_call = windows[windows.status == "ok"].groupby(["variant", "layer_pass", "seq_len"]).gpu_j_per_call
    summary = summary.merge(per_call.mean().rename("gpu_j_per_call_mean").reset_index(), how="left",
                            on=["variant", "layer_pass", "seq_len"])
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


def crossover_frame(summary: pd.DataFrame, mode: str = "eager", reference: str = REFERENCE) -> pd.DataFrame:
    """One row per variant: from which length its energy per token stays below the reference's
    (`crossover_seq_len`, with `ci_low` / `ci_high` where the 95% intervals put it earliest / latest; empty when
    not within the grid), and the same for throughput (`tokens_per_s_...`) and peak memory (`peak_mem_...`). A
    length where the variant failed (out of memory) and the reference ran counts against the variant."""
    rows = summary[(summary["mode"] == mode) & (summary.status == "ok")] if len(summary) else summary
    if rows.empty or reference not in set(rows.variant):
        return pd.DataFrame(columns=["variant", "reference", "crossover_seq_len", "ci_low", "ci_high"])
    grid = sorted(summary[summary["mode"] == mode].seq_len.unique())
    ref = rows[rows.variant == reference].set_index("seq_len")
    out = []
    for variant in [v for v in summary.variant.unique() if v != reference]:
        own = rows[rows.variant == variant].set_index("seq_len")
        lengths = [t for t in grid if t in own.index or t in ref.index]  # both failed: no evidence either way
        row = {"variant": variant, "reference": reference}
        for quantity, lower_is_better in CROSSOVER_QUANTITIES.items():
            mean = "torch_peak_mem_bytes_max" if quantity == "torch_peak_mem_bytes" else f"{quantity}_mean"
            ci = None if quantity == "torch_peak_mem_bytes" else f"{quantity}_ci95"

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
    return pd.DataFrame(out)
