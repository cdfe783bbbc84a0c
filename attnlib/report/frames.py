"""Summary tables from the results DataFrame (`attnlib.results.results_frame`).

Aggregates keep the quantity's name and add the statistic: `gpu_j_per_token` -> `gpu_j_per_token_mean`,
`_ci95`, `_cv` (over a row's successful windows or seeds). A paired row adds its ratio to the reference,
`gpu_j_per_token_ratio` with `_ratio_low` and `_ratio_high` (95%, from the per-round ratios), and the `verdict`
those allow beyond the table's A/A bound. MFU and the energy floor multiple are computed here, once, from each
result's own card's calibration. `compare` says how two rows of one card differ only as far as their 95%
intervals allow.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..measurement.stats import paired_ratio, summarize
from ..registry import VARIANTS


def family_variants(frame: pd.DataFrame) -> list[str]:
    """The registered variants with a form on the model families of `frame`'s results, in table order (GPT-2 for
    results that predate the family axis): the rows a table of these results owes its reader."""
    archs = set(frame["arch"].dropna()) if "arch" in frame and len(frame) else set()
    return [v for v, spec in VARIANTS.items() if any(a not in spec.unsupported for a in archs or {"gpt2"})]

# per-window quantities summarised as mean / ci95 / cv
TRIAL_QUANTITIES = ("tokens_per_s", "gpu_j_per_token", "gpu_j_per_token_net", "gpu_power_mean_w", "tflops", "mfu",
                    "mfu_spec", "energy_floor_multiple", "wall_s")
# dense bf16 tensor-core TFLOP/s of each card's datasheet (no 2:4 sparsity), by a part of its NVML name: MFU the way
# most papers state it, beside ours against the GEMM rate calibrated on the card itself
SPEC_BF16_TFLOPS = {"H100 80GB HBM3": 989.4, "H200": 989.4}
# the card's state per window (`Measurement`), and the share of its state samples at the power cap or slowed down
STATE_QUANTITIES = ("temperature_start_c", "temperature_end_c", "sm_clock_mean_mhz", "power_cap_share",
                    "slowdown_share")
SLOWDOWNS = ("hw_slowdown", "sw_thermal_slowdown", "hw_thermal_slowdown", "hw_power_brake_slowdown")
# each paired row's ratios to the reference, per round
RATIO_QUANTITIES = ("gpu_j_per_token", "tokens_per_s", "gpu_power_mean_w")
MODE_ORDER = {"eager": 0, "compile": 1, "graph": 2}


def latest_config(windows: pd.DataFrame) -> dict[str, Any]:
    """The job config of the latest of `windows` (`{}` for none): the grid as the latest job ran it, its cuts
    included, which a table reads instead of the first job's."""
    return windows.sort_values("created").iloc[-1].config if len(windows) else {}


def load_calibrations(results_dir: Path) -> dict[str, dict]:
    """Each GPU's calibrated bf16 GEMM peak and J/FLOP (`calibration/<card uuid>.json`, `attnlib.calibrate_peak`),
    by card; empty when the run measured none (a CPU run)."""
    paths = sorted((Path(results_dir) / "calibration").glob("*.json"))
    return {c["uuid"]: c for c in (json.loads(p.read_text()) for p in paths) if c.get("uuid")}


def with_calibration(frame: pd.DataFrame, calibrations: dict[str, dict]) -> pd.DataFrame:
    """Add `mfu` (model TFLOP/s over the card's calibrated GEMM TFLOP/s), `mfu_spec` (over its datasheet's dense
    bf16 TFLOP/s, `SPEC_BF16_TFLOPS`) and `energy_floor_multiple` (J/FLOP over the card's GEMM J/FLOP) to every
    measured row; NaN on an uncalibrated card or one without a datasheet figure here."""
    frame = frame.copy()
    card = frame.get("device_uuid", pd.Series(index=frame.index, dtype=object)).map(lambda u: calibrations.get(u, {}))
    peak = card.map(lambda c: c.get("tflops") or math.nan)
    floor = card.map(lambda c: c.get("j_per_flop") or math.nan)
    tflops = pd.to_numeric(frame.get("tflops"), errors="coerce")
    frame["mfu"] = tflops / peak
    frame["mfu_spec"] = tflops / frame.get("device", pd.Series(index=frame.index, dtype=object)).map(spec_tflops)
    frame["energy_floor_multiple"] = pd.to_numeric(frame.get("gpu_j_per_flop"), errors="coerce") / floor
    return frame


def spec_tflops(device: object) -> float:
    """The datasheet's dense bf16 TFLOP/s of a card by its NVML name; NaN for a card not listed (or a CPU)."""
    return next((v for part, v in SPEC_BF16_TFLOPS.items() if isinstance(device, str) and part in device), math.nan)


def _stats(values: pd.Series, name: str) -> dict[str, float | None]:
    s = summarize([v for v in pd.to_numeric(values, errors="coerce") if not math.isnan(v)])
    return {f"{name}_mean": s.mean, f"{name}_ci95": s.ci95, f"{name}_cv": s.cv}


def aggregate(windows: pd.DataFrame, keys: list[str], quantities: tuple[str, ...] = TRIAL_QUANTITIES) -> pd.DataFrame:
    """One row per value of `keys` over measured windows: status (ok if any window succeeded, else the failure's),
    the number of successful windows (`windows`), each of `quantities`' mean / ci95 / cv, the throughput spread and
    the peak memory: `gpu_mem_used_peak_bytes_max`, the device memory in use (NVML, sampled every second), which
    counts CUDA-graph pools, and `torch_peak_mem_bytes_max`, the allocator's peak, which does not (a graph replay
    allocates nothing through it)."""
    rows = []
    for values, group in windows.groupby(keys, sort=False):
        ok, failed = group[group.status == "ok"], group[group.status != "ok"]
        row = {**dict(zip(keys, values)), "status": "ok" if len(ok) else failed.status.iloc[0],
               "error": None if failed.empty else failed.error.iloc[0], "windows": len(ok),
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


def with_state_shares(windows: pd.DataFrame) -> pd.DataFrame:
    """Add `power_cap_share` (the share of a window's state samples with the software power cap in force) and
    `slowdown_share` (the largest share of a thermal or hardware slowdown reason); NaN where the window has no
    reasons recorded (an unpaired window of schema 2, a CPU)."""
    shares = windows.get("clock_event_shares", pd.Series(index=windows.index, dtype=object))
    known = shares.map(lambda d: isinstance(d, dict)) & (pd.to_numeric(windows.get("state_samples"), errors="coerce")
                                                          .fillna(0) > 0)
    cap = shares.map(lambda d: d.get("sw_power_cap", 0.0) if isinstance(d, dict) else math.nan)
    slow = shares.map(lambda d: max([d.get(r, 0.0) for r in SLOWDOWNS]) if isinstance(d, dict) else math.nan)
    return windows.assign(power_cap_share=cap.where(known), slowdown_share=slow.where(known))


def paired_frame(windows: pd.DataFrame, keys: tuple[str, ...] = ("variant", "mode"),
                 round_column: str = "round") -> pd.DataFrame:
    """One row per value of `keys` of paired windows: `rounds` (those whose two windows both succeeded), the
    reference's name, and for each of RATIO_QUANTITIES the variant's ratio to the reference over those rounds with
    its 95% interval (`<q>_ratio`, `<q>_ratio_low`, `<q>_ratio_high`), the steady state the pair reached first
    (`steady_state_s`, `steady_state_converged`) and the variant's memory alone on the card."""
    paired = windows[windows.role.notna()] if "role" in windows else windows.iloc[:0]
    rows = []
    keys = list(keys)
    for values, group in paired.groupby(keys, sort=False):
        ok = group[group.status == "ok"]
        own, ref = (ok[ok.role == role].set_index(round_column) for role in ("variant", "reference"))
        rounds = sorted(set(own.index) & set(ref.index))
        row = {**dict(zip(keys, values)), "rounds": len(rounds), "reference": group.reference.iloc[0]}
        for q in RATIO_QUANTITIES:
            r = paired_ratio([own.loc[i, q] for i in rounds], [ref.loc[i, q] for i in rounds])
            row.update({f"{q}_ratio": r.ratio, f"{q}_ratio_low": r.low, f"{q}_ratio_high": r.high})
        first = own.iloc[0] if len(own) else None
        row["steady_state_s"] = None if first is None else first.get("steady_state_s")
        row["steady_state_converged"] = None if first is None else first.get("steady_state_converged")
        row.update(steady_state_motion(None if first is None else first.get("steady_state_stretches")))
        row["alone_gpu_mem_used_bytes"] = None if first is None else first.get("alone_gpu_mem_used_bytes")
        row["alone_torch_peak_mem_bytes"] = None if first is None else first.get("alone_torch_peak_mem_bytes")
        rows.append(row)
    return pd.DataFrame(rows, columns=None if rows else [*keys, "rounds", "reference"])


def steady_state_motion(stretches: Any) -> dict[str, float | None]:
    """How a pair's J/token moved while it was brought to steady state, over both trainers' stretches:
    `steady_state_step_change`, the median relative change between a trainer's consecutive stretches (what the
    settling rule compares with its tolerance: noise and warming together), and `steady_state_drift`, the mean of
    each trainer's second half of stretches over its first half, less 1, averaged over the two (warming alone)."""
    steps, drifts = [], []
    for workload in ("variant", "reference"):
        values = [s["gpu_j_per_token"] for s in stretches or [] if s.get("workload") == workload
                  and s.get("gpu_j_per_token")]
        steps += [abs(b / a - 1) for a, b in zip(values, values[1:])]
        if len(values) >= 4:
            half = len(values) // 2
            drifts.append(sum(values[half:]) / (len(values) - half) / (sum(values[:half]) / half) - 1)
    return {"steady_state_step_change": float(np.median(steps)) if steps else None,
            "steady_state_drift": float(np.mean(drifts)) if drifts else None}


def provenance_text(windows: pd.DataFrame) -> tuple[str, str]:
    """Where a table's measurements come from: how many cards ("3") and which commits ("7005ba9b8f4e, e97a00f...",
    12 digits each), over `windows` (its paired windows, or every result where it has none)."""
    cards = windows.get("device_uuid", pd.Series(dtype=object)).dropna()
    commits = windows.get("attnlib_commit", pd.Series(dtype=object)).dropna()
    return (str(cards.nunique()) if len(cards) else "n/a",
            ", ".join(sorted({str(c)[:12] + ("+dirty" if str(c).endswith("+dirty") else "") for c in commits}))
            or "n/a")


def family_of(frame: pd.DataFrame) -> str:
    """The one model family of a folder's results (`arch`; GPT-2 for results that predate the family axis);
    `ValueError` where a folder mixes families: one table, one model."""
    archs = set(frame["arch"].dropna()) if "arch" in frame else set()
    if len(archs) > 1:
        raise ValueError(f"results mix model families {sorted(archs)}; report each in its own folder")
    return archs.pop() if archs else "gpt2"


def summary_frame(frame: pd.DataFrame, calibrations: dict[str, dict] | None = None,
                  variant_order: list[str] | None = None) -> pd.DataFrame:
    """One row per (variant, mode) of the training windows: the variant's own windows aggregated (a paired job's
    reference windows only enter its ratios), its paired ratios to the reference and their `verdict`s
    (`verdicts`), `protocol` "paired" or "unpaired" (consecutive windows of one process, schema 2), and the quality
    of the variant's runs (whatever mode they ran in: compiling changes the speed, not the maths). A paired row's
    peak memory (`gpu_mem_used_peak_bytes_max`) is its device memory alone on the card: during the windows the
    reference's trainer holds memory too."""
    trials = frame[frame.kind == "trial"] if "kind" in frame else frame.iloc[:0]
    if trials.empty:
        return pd.DataFrame()
    if "role" not in trials:
        trials = trials.assign(role=None)
    own = with_state_shares(trials[trials.role.isna() | (trials.role == "variant")])
    summary = aggregate(with_calibration(own, calibrations or {}), ["variant", "mode"],
                        (*TRIAL_QUANTITIES, *STATE_QUANTITIES))
    summary = summary.merge(paired_frame(trials), on=["variant", "mode"], how="left")
    summary["protocol"] = summary["rounds"].map(lambda n: "unpaired" if pd.isna(n) else "paired")
    alone = pd.to_numeric(summary.get("alone_gpu_mem_used_bytes", pd.Series(index=summary.index, dtype=float)),
                          errors="coerce")
    summary["gpu_mem_used_peak_bytes_max"] = alone.where(alone.notna(), summary.gpu_mem_used_peak_bytes_max)
    summary = verdicts(summary)
    summary = summary.merge(quality_frame(frame), on="variant", how="left")
    summary.insert(0, "arch", family_of(trials))
    order = {v: i for i, v in enumerate(variant_order or [])}
    key = summary.variant.map(lambda v: order.get(v, len(order))) * 10 + summary["mode"].map(MODE_ORDER).fillna(9)
    return summary.assign(_key=key).sort_values("_key").drop(columns="_key").reset_index(drop=True)


# a ratio's verdict against the reference, by quantity: (below 1, above 1)
VERDICT_WORDS = {"gpu_j_per_token": ("cheaper", "dearer"), "tokens_per_s": ("slower", "faster"),
                 "gpu_power_mean_w": ("lower", "higher")}
INDISTINGUISHABLE = "indistinguishable"


def verdict(ratio: float | None, low: float | None, high: float | None, bound: float | None,
            words: tuple[str, str]) -> str:
    """`words[0]` (ratio below 1) or `words[1]` (above) where the 95% interval excludes 1 and the effect |ratio - 1|
    exceeds the A/A `bound`; "indistinguishable" otherwise; "n/a" without an interval. Without an A/A bound (no
    control in the table) the interval alone decides."""
    if ratio is None or low is None or high is None or any(pd.isna(v) for v in (ratio, low, high)):
        return "n/a"
    beyond = bound is None or pd.isna(bound) or abs(ratio - 1) > bound
    if (high < 1 or low > 1) and beyond:
        return words[0] if ratio < 1 else words[1]
    return INDISTINGUISHABLE


def aa_bounds(summary: pd.DataFrame, group: tuple[str, ...] = ("mode",)) -> dict[tuple, float | None]:
    """(the row's values of `group`..., quantity) -> the A/A control's noise bound there: the largest distance from 1
    of its ratio's interval (the reference paired with a second build of itself: the row whose variant is its own
    reference)."""
    bounds = {}
    control = summary[summary.variant == summary.reference] if "reference" in summary else summary.iloc[:0]
    for _, row in control.iterrows():
        for q in RATIO_QUANTITIES:
            low, high = row.get(f"{q}_ratio_low"), row.get(f"{q}_ratio_high")
            bounds[(*(row[g] for g in group), q)] = None if pd.isna(low) or pd.isna(high) else max(high - 1, 1 - low)
    return bounds


def verdicts(summary: pd.DataFrame, group: tuple[str, ...] = ("mode",)) -> pd.DataFrame:
    """Add `<q>_verdict` for each of RATIO_QUANTITIES and `<q>_aa_bound` (the A/A bound of the row's `group`: its
    mode, or its mode and length); the A/A row's verdict is "control"."""
    bounds = aa_bounds(summary, group)
    summary = summary.copy()
    for q in RATIO_QUANTITIES:
        summary[f"{q}_aa_bound"] = [bounds.get((*(r[g] for g in group), q)) for _, r in summary.iterrows()]
        summary[f"{q}_verdict"] = [
            "control" if r.get("reference") == r.variant else
            verdict(r.get(f"{q}_ratio"), r.get(f"{q}_ratio_low"), r.get(f"{q}_ratio_high"), r[f"{q}_aa_bound"],
                    VERDICT_WORDS[q]) if r["protocol"] == "paired" else "unpaired"
            for _, r in summary.iterrows()]
    return summary


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
