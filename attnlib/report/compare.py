"""A reviewer's results against ours: per row (variant, mode) present in both, their value, ours, the ratio, and
both devices. Works from the two folders' `summary.csv` (written by the report)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

QUANTITIES = ("tokens_per_s", "gpu_j_per_token")


def read_summary(results_dir: Path) -> pd.DataFrame:
    path = Path(results_dir) / "summary.csv"
    if not path.exists():
        raise ValueError(f"results: {path} is missing; build the report of {results_dir} first")
    return pd.read_csv(path)


def comparison_frame(theirs: pd.DataFrame, ours: pd.DataFrame) -> pd.DataFrame:
    """Rows present in both summaries: `<q>_theirs`, `<q>_ours`, `<q>_ratio` (theirs / ours) for each quantity."""
    keep = ["variant", "mode", "device", *[f"{q}_mean" for q in QUANTITIES]]
    both = theirs[keep].merge(ours[keep], on=["variant", "mode"], suffixes=("_theirs", "_ours"))
    out = both[["variant", "mode", "device_theirs", "device_ours"]].copy()
    for q in QUANTITIES:
        out[f"{q}_theirs"], out[f"{q}_ours"] = both[f"{q}_mean_theirs"], both[f"{q}_mean_ours"]
        out[f"{q}_ratio"] = out[f"{q}_theirs"] / out[f"{q}_ours"]
    return out


def compare(results_dir: Path, reference_dir: Path) -> pd.DataFrame:
    """Write `<results_dir>/comparison.csv` and print it: `results_dir` is theirs, `reference_dir` ours."""
    frame = comparison_frame(read_summary(results_dir), read_summary(reference_dir))
    frame.to_csv(Path(results_dir) / "comparison.csv", index=False)
    shown = frame.assign(**{f"{q}_{s}": frame[f"{q}_{s}"].map(f) for q, f in
                            (("tokens_per_s", "{:,.0f}".format), ("gpu_j_per_token", lambda v: f"{v * 1e3:.3f} mJ"))
                            for s in ("theirs", "ours")})
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return frame
