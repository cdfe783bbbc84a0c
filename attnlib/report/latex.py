"""LaTeX from the summary tables: the main table, the prior study's table, and the number macros.

Macros are made by rule, never listed by hand: every summary row gives `\\data<Variant><Mode><Column>` for each
column of `DISPLAY`; every row gives comparisons with its variant's eager row and with SDPA in its mode
(`...VsEager<Quantity>`, `...VsSdpa<Quantity>`: the wording of `frames.Comparison`, and `...Pct`); every mode gives
rankings; the run gives its facts. `macros.tex` holds the macros `paper.tex` uses, and only those; one the data
cannot give reads "n/a".
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pandas as pd

from .frames import compare, ranking

GIB = 2**30
# column -> (scale, format): the unit the paper prints (its text says mJ, GiB, %)
DISPLAY: dict[str, tuple[float, str]] = {
    "tokens_per_s_mean": (1, ",.0f"), "tokens_per_s_ci95": (1, ",.0f"), "tokens_per_s_spread": (100, ".1f"),
    "gpu_j_per_token_mean": (1e3, ".3f"), "gpu_j_per_token_ci95": (1e3, ".3f"), "gpu_j_per_token_cv": (100, ".1f"),
    "gpu_j_per_token_net_mean": (1e3, ".3f"), "gpu_power_mean_w_mean": (1, ".0f"),
    "gpu_mem_used_peak_bytes_max": (1 / GIB, ".1f"), "mfu_mean": (100, ".1f"), "energy_floor_multiple_mean": (1, ".1f"),
    "val_loss_mean": (1, ".3f"), "val_loss_ci95": (1, ".3f"), "seeds": (1, ".0f"), "trials": (1, ".0f"),
}
COMPARED = {"gpu_j_per_token": "Energy", "tokens_per_s": "Throughput"}


def fmt(value: Any, spec: str, scale: float = 1.0) -> str:
    """`value * scale` formatted, or "n/a" for None and NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return format(value * scale, spec)


def pm(mean: Any, ci: Any, spec: str, scale: float = 1.0) -> str:
    text = fmt(mean, spec, scale)
    return text if text == "n/a" or ci is None or pd.isna(ci) else text + r" $\pm$ " + fmt(ci, spec, scale)


def camel(*parts: str) -> str:
    return "".join(p.replace("_", " ").title().replace(" ", "") for p in parts)


def no_results_sentence(variants: list[str], where: str) -> str:
    """The sentence that names the variants a grid has no results for, so that none is silently absent ("" if
    none is)."""
    if not variants:
        return ""
    names = " and ".join([", ".join(variants[:-1]), variants[-1]] if len(variants) > 1 else variants)
    return f"{names} {'has' if len(variants) == 1 else 'have'} no results in {where} yet."


def booktabs(header: list[str], rows: list[list[str]], align: str) -> str:
    """A LaTeX booktabs tabular (no jinja2 needed)."""
    esc = lambda s: str(s).replace("_", r"\_").replace("%", r"\%")  # noqa: E731
    body = "\n".join(" & ".join(esc(c) if "$" not in str(c) else str(c) for c in row) + r" \\" for row in rows)
    return (f"\\begin{{tabular}}{{{align}}}\n\\toprule\n" + " & ".join(header) + " \\\\\n\\midrule\n" + body
            + "\n\\bottomrule\n\\end{tabular}\n")


def summary_table(summary: pd.DataFrame) -> str:
    """The paper's main table. An energy CV over 3% is printed in bold: reported as such, not hidden."""
    def cv(r) -> str:
        text = fmt(r.gpu_j_per_token_cv, ".1f", 100)
        return f"\\textbf{{{text}}}" if (r.gpu_j_per_token_cv or 0) > 0.03 else text

    most_seeds = summary["seeds"].max() if "seeds" in summary else None

    def val_loss(r) -> str:  # a row with fewer seeds than the others says so
        text = pm(r.get("val_loss_mean"), r.get("val_loss_ci95"), ".3f")
        seeds = r.get("seeds")
        if seeds is None or pd.isna(seeds) or seeds == most_seeds:
            return text
        return f"{text} ({int(seeds)} of {int(most_seeds)} seeds)"

    rows = [[r.variant, r["mode"], r.status if r.status == "ok" else f"\\textbf{{{r.status}}}", int(r.trials),
             pm(r.tokens_per_s_mean, r.tokens_per_s_ci95, ",.0f"),
             pm(r.gpu_j_per_token_mean, r.gpu_j_per_token_ci95, ".3f", 1e3), cv(r), fmt(r.gpu_power_mean_w_mean, ".0f"),
             fmt(r.gpu_mem_used_peak_bytes_max, ".1f", 1 / GIB), fmt(r.mfu_mean, ".1f", 100),
             fmt(r.energy_floor_multiple_mean, ".1f"), val_loss(r)]
            for _, r in summary.iterrows()]
    header = ["variant", "mode", "status", "n", "tokens/s", "mJ/token", r"CV \%", "W", "peak GiB", r"MFU \%",
              r"$\times$floor", "val loss"]
    return booktabs(header, rows, "llllrrrrrrrr")


def row_macros(summary: pd.DataFrame) -> dict[str, str]:
    """Per row: every DISPLAY column, the status, and comparisons with its eager row and with SDPA."""
    macros: dict[str, str] = {}
    for _, r in summary.iterrows():
        key = camel(r.variant, r["mode"])
        macros[key + "Status"] = str(r.status)
        for column, (scale, spec) in DISPLAY.items():
            if column in r:
                macros[key + camel(column)] = fmt(r[column], spec, scale)
        for other, name in (((r.variant, "eager"), "VsEager"), (("sdpa", r["mode"]), "VsSdpa")):
            if other == (r.variant, r["mode"]):
                continue
            for quantity, label in COMPARED.items():
                c = compare(summary, (r.variant, r["mode"]), other, quantity)
                macros[key + name + label] = c.wording
                macros[key + name + label + "Pct"] = fmt(None if c.ratio is None else abs(c.change_pct), ".0f")
                macros[key + name + label + "Ratio"] = fmt(c.ratio, ".2f")
    return macros


def mode_macros(summary: pd.DataFrame) -> dict[str, str]:
    """Per mode: the energy ranking (ties where intervals overlap), the cheapest row against the dearest, the range
    of savings against eager where the intervals separate (and the rows without one), the largest throughput
    spread between trials and how many rows stay within 2%."""
    macros: dict[str, str] = {}
    for mode, rows in summary.groupby("mode"):
        key = camel(mode)
        macros[key + "EnergyRanking"] = ranking(summary, mode, "gpu_j_per_token")
        energy = rows.dropna(subset=["gpu_j_per_token_mean"])
        if len(energy):  # the cheapest row against the dearest, worded as their intervals allow
            cheapest = energy.loc[energy.gpu_j_per_token_mean.idxmin()]
            dearest = energy.loc[energy.gpu_j_per_token_mean.idxmax()]
            c = compare(summary, (cheapest.variant, mode), (dearest.variant, mode), "gpu_j_per_token")
            macros.update({key + "CheapestVariant": cheapest.variant, key + "DearestVariant": dearest.variant,
                           key + "CheapestVsDearestEnergy": c.wording})
        spread = rows.dropna(subset=["tokens_per_s_spread"])
        if len(spread):
            worst = spread.loc[spread.tokens_per_s_spread.idxmax()]
            macros[key + "ThroughputSpreadMaxPct"] = fmt(worst.tokens_per_s_spread, ".1f", 100)
            macros[key + "ThroughputSpreadMaxVariant"] = worst.variant
            within = int((spread.tokens_per_s_spread <= 0.02).sum())
            macros[key + "ThroughputSpreadWithinTwoPct"] = f"{within} of {len(spread)}"
        if mode != "eager":
            # a saving is quoted only where the intervals separate; the rows where they overlap are named
            savings = [compare(summary, (v, mode), (v, "eager"), "gpu_j_per_token") for v in rows.variant]
            pct = [1 - c.ratio for c in savings if c.ratio is not None and c.distinct and c.ratio < 1]
            macros[key + "VsEagerEnergySavingRange"] = (f"{fmt(min(pct), '.0f', 100)}--{fmt(max(pct), '.0f', 100)}"
                                                        if pct else "n/a")
            others = [c.a.split("/")[0] for c in savings if c.ratio is not None and not (c.distinct and c.ratio < 1)]
            macros[key + "VsEagerEnergyNoSaving"] = ", ".join(others) or "none"
    return macros


def quality_macros(summary: pd.DataFrame) -> dict[str, str]:
    per_variant = summary.drop_duplicates("variant").assign(mode="quality")
    return {"ValLossRanking": ranking(per_variant, "quality", "val_loss")}


def run_macros(facts: dict[str, Any]) -> dict[str, str]:
    """The run's facts (device, data, versions, windows, calibration, cost), already formatted by the caller."""
    return {camel(k): str(v) for k, v in facts.items()}


def used_macros(tex: str) -> list[str]:
    return sorted(set(re.findall(r"\\data([A-Za-z]+)", tex)))


# the experiment families' macros (generated/<family>/macros.tex, which paper.tex inputs where they exist)
SECTION_MACRO_PREFIXES = ("LongContext", "Inference", "Components", "Clear", "Distributed")


def write_macros(macros: dict[str, str], paper_tex: Path, path: Path, also: Path | None = None,
                 skip: tuple[str, ...] = ()) -> dict[str, str]:
    """`\\newcommand`s for exactly the macros `paper_tex` uses, but those starting with one of `skip` (another
    file defines them), and those of `macros` that `also` uses (a section's macros quoted in paper.tex's
    abstract); "n/a" for those the data cannot give."""
    esc = lambda s: str(s).replace("_", r"\_").replace("#", r"\#").replace("%", r"\%").replace(r"\\%", r"\%")  # noqa: E731
    names = {n for n in used_macros(paper_tex.read_text()) if not n.startswith(skip)}
    if also is not None and also.exists():
        names |= set(used_macros(also.read_text())) & set(macros)
    chosen = {name: macros.get(name, "n/a") for name in sorted(names)}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"\\newcommand{{\\data{k}}}{{{esc(v)}}}\n" for k, v in chosen.items()))
    return chosen
