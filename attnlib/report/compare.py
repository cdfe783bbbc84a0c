"""A reviewer's results against ours: per row (variant, mode) present in both, their value, ours, and theirs over
ours, and both devices. Across cards the paired ratios to the reference are what should agree (each was measured
against the reference on its own card); absolute figures differ with the card. Works from the two folders'
`summary.csv` (written by the report)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

QUANTITIES = ("tokens_per_s", "gpu_j_per_token")
RATIOS = ("gpu_j_per_token_ratio", "tokens_per_s_ratio")  # each row's paired ratio to the reference


def read_summary(results_dir: Path) -> pd.DataFrame:
    path = Path(results_dir) / "summary.csv"
    if not path.exists():
        raise ValueError(f"results: {path} is missing; build the report of {results_dir} first")
    return pd.read_csv(path)


def comparison_frame(theirs: pd.DataFrame, ours: pd.DataFrame) -> pd.DataFrame:
    """Rows present in both summaries: for each quantity's mean and each paired ratio (where both have it),
    `<name>_theirs`, `<name>_ours` and `<name>_theirs_over_ours`."""
    names = [f"{q}_mean" for q in QUANTITIES] + [r for r in RATIOS if r in theirs and r in ours]
    keep = ["variant", "mode", "device", *names]
    both = theirs[keep].merge(ours[keep], on=["variant", "mode"], suffixes=("_theirs", "_ours"))
    out = both[["variant", "mode", "device_theirs", "device_ours"]].copy()
    for name in names:
        out[f"{name}_theirs"], out[f"{name}_ours"] = both[f"{name}_theirs"], both[f"{name}_ours"]
        out[f"{name}_theirs_over_ours"] = out[f"{name}_theirs"] / out[f"{name}_ours"]
    return out


def compare(results_dir: Path, reference_dir: Path) -> pd.DataFrame:
    """Write `<results_dir>/comparison.csv` and print it: `results_dir` is theirs, `reference_dir` ours."""
    frame = comparison_frame(read_summary(results_dir), read_summary(reference_dir))
    frame.to_csv(Path(results_dir) / "comparison.csv", index=False)
    print(frame.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    return frame
