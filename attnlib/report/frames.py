"""Summary tables from the results DataFrame (`attnlib.results.results_frame`).

Aggregates keep the quantity's name and add the statistic: `gpu_j_per_token` -> `gpu_j_per_token_mean`,
`_ci95`, `_cv` (over a row's successful trials or seeds). MFU and the energy floor multiple are computed here,
once, from each result's own card's calibration. Comparisons (`compare`) say how two rows differ only as far
as their 95% intervals allow.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..measurement.stats import summarize

# per-trial quantities summarised as mean / ci95 / cv
TRIAL_QUANTITIES = ("tokens_per_s", "gpu_j_per_token", "gpu_j_per_token_net", "gpu_power_mean_w", "tflops", "mfu",
                    "energy_floor_multiple", "wall_s")
MODE_ORDER = {"eager": 0, "compile": 1, "graph": 2}


def load_calibrations(results_dir: Path) -> dict[str, dict]:
    """Each GPU's calibrated bf16 GEMM peak and J/FLOP (`calibration/<card uuid>.json`, `attnlib.calibrate_peak`),
    by card; empty when the run measured none (a CPU run)."""
    paths = sorted((Path(results_dir) / "calibration").glob("*.json"))
    return {c["uuid"]: c for c in (json.loads(p.read_text()) for p in paths) if c.get("uuid")}


def with_calibration(frame: pd.DataFrame, calibrations: dict[str, dict]) -> pd.DataFrame:
    """Add `mfu` (model TFLOP/s over the card's calibrated GEMM TFLOP/s) and `energy_floor_multiple` (J/FLOP over
    the card's GEMM J/FLOP) to every measured row; NaN on an uncalibrated card."""
    frame = frame.copy()
    card = frame.get("device_uuid", pd.Series(index=frame.index, dtype=object)).map(lambda u: calibrations.get(u, {}))
    peak = card.map(lambda c: c.get("tflops") or math.nan)
    floor = card.map(lambda c: c.get("j_per_flop") or math.nan)
    frame["mfu"] = pd.to_numeric(frame.get("tflops"), errors="coerce") / peak
    frame["energy_floor_multiple"] = pd.to_numeric(frame.get("gpu_j_per_flop"), errors="coerce") / floor
    return frame


def _stats(values: pd.Series, name: str) -> dict[str, float | None]:
    s = summarize([v for v in pd.to_numeric(values, errors="coerce") if not math.isnan(v)])
    return {f"{name}_mean": s.mean, f"{name}_ci95": s.ci95, f"{name}_cv": s.cv}


def aggregate(windows: pd.DataFrame, keys: list[str], quantities: tuple[str, ...] = TRIAL_QUANTITIES) -> pd.DataFrame:
    """One row per value of `keys` over measured windows: status (ok if any window succeeded, else the failure's),
    the number of successful windows (`trials`), each of `quantities`' mean / ci95 / cv, the throughput spread and
    the peak memory: `gpu_mem_used_peak_bytes_max`, the device memory in use (NVML, sampled every second), which
    counts CUDA-graph pools, and `torch_peak_mem_bytes_max`, the allocator's peak, which does not (a graph replay
    allocates nothing through it)."""
    rows = []
    for values, group in windows.groupby(keys, sort=False):
        ok, failed = group[group.status == "ok"], group[group.status != "ok"]
        row = {**dict(zip(keys, values)), "status": "ok" if len(ok) else failed.status.iloc[0],
               "error": None if failed.empty else failed.error.iloc[0], "trials": len(ok),
               "device": group.device.iloc[0], "kernel": ok.kernel.iloc[0] if len(ok) and "kernel" in ok else None}
        for quantity in quantities:
            row.update(_stats(ok[quantity] if quantity in ok else pd.Series(dtype=float), quantity))
        tps = pd.to_numeric(ok.get("tokens_per_s"), errors="coerce").dropna() if len(ok) else pd.Series(dtype=float)
        row["tokens_per_s_spread"] = 1 - tps.min() / tps.max() if len(tps) > 1 else None
        peak = pd.to_numeric(ok.get("torch_peak_mem_bytes"), errors="coerce").dropna() if len(ok) else []
        row["torch_peak_mem_bytes_max"] = float(max(peak)) if len(peak) else None
        used = pd.to_numeric(ok.get("gpu_mem_used_peak_bytes"), errors="coerce").dropna() if len(ok) else []
        row["gpu_mem_used_peak_bytes_max"] = float(max(used)) if len(used) else None
        row["params_mean"] = float(ok.params.iloc[0]) if len(ok) and "params" in ok else None
        rows.append(row)
    return pd.DataFrame(rows)


def summary_frame(frame: pd.DataFrame, calibrations: dict[str, dict] | None = None,
                  variant_order: list[str] | None = None) -> pd.DataFrame:
    """One row per (variant, mode) of the trials, with the quality of the variant's runs (whatever mode they
    ran in: compiling changes the speed, not the maths)."""
    trials = frame[frame.kind == "trial"] if "kind" in frame else frame.iloc[:0]
    if trials.empty:
        return pd.DataFrame()
    summary = aggregate(with_calibration(trials, calibrations or {}), ["variant", "mode"])
    summary = summary.merge(quality_frame(frame), on="variant", how="left")
    order = {v: i for i, v in enumerate(variant_order or [])}
    key = summary.variant.map(lambda v: order.get(v, len(order))) * 10 + summary["mode"].map(MODE_ORDER).fillna(9)
    return summary.assign(_key=key).sort_values("_key").drop(columns="_key").reset_index(drop=True)


def quality_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per variant: final validation loss over its successful seeds (`val_loss_mean`, `_ci95`), how
    many (`seeds`), in which mode they ran (`quality_mode`)."""
    columns = ["variant", "quality_mode", "seeds", "val_loss_mean", "val_loss_ci95", "val_loss_cv"]
    runs = frame[frame.kind == "quality"] if "kind" in frame else frame.iloc[:0]
    rows = []
    for variant, group in runs.groupby("variant", sort=False):
        ok = group[group.status == "ok"]
        rows.append({"variant": variant, "quality_mode": group["mode"].iloc[0], "seeds": len(ok),
                     **_stats(ok.val_loss, "val_loss")})
    return pd.DataFrame(rows, columns=columns)


@dataclass(frozen=True)
class Comparison:
    """Row `a` against row `b` on one quantity: `ratio` = a / b of the means; `distinct` when the 95% intervals
    do not overlap; `wording` says so ("indistinguishable from", "12% lower than", "1.4x higher than")."""

    a: str
    b: str
    quantity: str
    ratio: float | None
    distinct: bool

    @property
    def change_pct(self) -> float | None:
        return None if self.ratio is None else 100 * (self.ratio - 1)

    @property
    def wording(self) -> str:
        if self.ratio is None:
            return "n/a"
        if not self.distinct:
            return "indistinguishable from"
        if self.ratio < 1:
            return f"{100 * (1 - self.ratio):.0f}\\% lower than"
        return f"{self.ratio:.2f}$\\times$" if self.ratio >= 2 else f"{100 * (self.ratio - 1):.0f}\\% higher than"


def compare(summary: pd.DataFrame, a: tuple[str, str], b: tuple[str, str], quantity: str) -> Comparison:
    """Compare rows `a` and `b` (each `(variant, mode)`) on `quantity` (a column with `_mean` and `_ci95`)."""
    rows = summary.set_index(["variant", "mode"])
    name = lambda row: f"{row[0]}/{row[1]}"  # noqa: E731
    if a not in rows.index or b not in rows.index:
        return Comparison(name(a), name(b), quantity, None, False)
    ma, mb = rows.loc[a, f"{quantity}_mean"], rows.loc[b, f"{quantity}_mean"]
    ca, cb = rows.loc[a, f"{quantity}_ci95"], rows.loc[b, f"{quantity}_ci95"]
    if pd.isna(ma) or pd.isna(mb) or not mb or pd.isna(ca) or pd.isna(cb):  # a row of one value has no interval
        return Comparison(name(a), name(b), quantity, None, False)
    distinct = ma + ca < mb - cb or mb + cb < ma - ca
    return Comparison(name(a), name(b), quantity, float(ma / mb), bool(distinct))


def ranking(summary: pd.DataFrame, mode: str, quantity: str = "gpu_j_per_token") -> str:
    """Variants of `mode` from lowest to highest mean `quantity`; neighbours whose intervals overlap are joined
    by "$\\approx$" (a tie the data cannot break), others by "$<$". Rows of a single value have no interval and
    are named after the ranking, not placed in it."""
    mean, ci = f"{quantity}_mean", f"{quantity}_ci95"
    rows = summary[(summary["mode"] == mode) & summary[mean].notna()].sort_values(mean)
    unranked, rows = rows[rows[ci].isna()], rows[rows[ci].notna()]
    if rows.empty:
        return "n/a"
    text = rows.variant.iloc[0]
    for (_, prev), (_, row) in zip(rows.iloc[:-1].iterrows(), rows.iloc[1:].iterrows()):
        text += (" $\\approx$ " if prev[mean] + prev[ci] >= row[mean] - row[ci] else " $<$ ") + row.variant
    if not unranked.empty:
        text += f" (no interval: {', '.join(unranked.variant)})"
    return text
