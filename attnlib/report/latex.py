"""LaTeX from the summary tables: the main table, the prior study's table, and the number macros.

Macros are made by rule, never listed by hand: every summary row gives `\\data<Variant><Mode><Column>` for each
column of `DISPLAY`, its paired ratios to the reference with their intervals and verdicts
(`...EnergyRatio`, `...EnergyInterval`, `...EnergyVerdict`; `Throughput`, `Power` likewise), and the comparison with
its variant's eager row on the same card (`...VsEager<Quantity>`: the wording of `frames.Comparison`); every mode
gives its A/A bound and its groups (`<Mode>EnergyCheaper`, `...Indistinguishable`, `...Dearer`: each variant with
its ratio and interval); the run gives its facts. `macros.tex` holds the macros `paper.tex` uses, and only those;
one the data cannot give reads "n/a".
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pandas as pd

from .frames import INDISTINGUISHABLE, VERDICT_WORDS, compare

GIB = 2**30
# column -> (scale, format): the unit the paper prints (its text says mJ, GiB, %)
DISPLAY: dict[str, tuple[float, str]] = {
    "tokens_per_s_mean": (1, ",.0f"), "tokens_per_s_ci95": (1, ",.0f"), "tokens_per_s_spread": (100, ".1f"),
    "gpu_j_per_token_mean": (1e3, ".3f"), "gpu_j_per_token_ci95": (1e3, ".3f"), "gpu_j_per_token_cv": (100, ".1f"),
    "gpu_j_per_token_net_mean": (1e3, ".3f"), "gpu_power_mean_w_mean": (1, ".0f"),
    "gpu_mem_used_peak_bytes_max": (1 / GIB, ".1f"), "mfu_mean": (100, ".1f"),
    "mfu_spec_mean": (100, ".1f"), "energy_floor_multiple_mean": (1, ".1f"),
    "val_loss_mean": (1, ".3f"), "val_loss_ci95": (1, ".3f"), "seeds": (1, ".0f"), "windows": (1, ".0f"),
    "rounds": (1, ".0f"), "sm_clock_mean_mhz_mean": (1, ".0f"), "power_cap_share_mean": (100, ".0f"),
    "temperature_end_c_mean": (1, ".0f"), "steady_state_s": (1, ".0f"),
}
COMPARED = {"gpu_j_per_token": "Energy", "tokens_per_s": "Throughput"}
RATIO_NAMES = {"gpu_j_per_token": "Energy", "tokens_per_s": "Throughput", "gpu_power_mean_w": "Power"}


def fmt(value: Any, spec: str, scale: float = 1.0) -> str:
    """`value * scale` formatted, or "n/a" for None and NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return format(value * scale, spec)


def span(low: Any, high: Any, spec: str, scale: float = 1.0) -> str:
    """"507--536", or one value where both ends print the same."""
    a, b = fmt(low, spec, scale), fmt(high, spec, scale)
    return a if a == b else f"{a}--{b}"


def pm(mean: Any, ci: Any, spec: str, scale: float = 1.0) -> str:
    text = fmt(mean, spec, scale)
    return text if text == "n/a" or ci is None or pd.isna(ci) else text + r" $\pm$ " + fmt(ci, spec, scale)


def camel(*parts: str) -> str:
    return "".join(p.replace("_", " ").title().replace(" ", "") for p in parts)


DIGITS = ("Zero", "One", "Two", "Three", "Four", "Five", "Six", "Seven", "Eight", "Nine")


def spelled(number: int) -> str:
    """A number as a LaTeX macro name may hold it (letters only): 1024 -> "OneZeroTwoFour"."""
    return "".join(DIGITS[int(d)] for d in str(number))


def no_results_sentence(variants: list[str], where: str) -> str:
    """The sentence that names the variants a grid has no results for, so that none is silently absent ("" if
    none is)."""
    if not variants:
        return ""
    names = " and ".join([", ".join(variants[:-1]), variants[-1]] if len(variants) > 1 else variants)
    return f"{names} {'has' if len(variants) == 1 else 'have'} no results in {where} yet."


TEXT_ESCAPES = {"_": r"\_", "#": r"\#", "%": r"\%", ">": r"\textgreater{}", "<": r"\textless{}"}


def escape(text: Any) -> str:
    """Text for LaTeX: outside `$...$`, its special characters escaped (in the default font encoding a bare `>` or
    `<` prints as an inverted question or exclamation mark); math and characters already escaped stay as they are."""
    parts = str(text).split("$")
    return "$".join(re.sub(r"(?<!\\)[_#%<>]", lambda m: TEXT_ESCAPES[m.group()], part) if i % 2 == 0 else part
                    for i, part in enumerate(parts))


def booktabs(header: list[str], rows: list[list[str]], align: str) -> str:
    """A LaTeX booktabs tabular (no jinja2 needed); its cells escaped (`escape`)."""
    body = "\n".join(" & ".join(escape(c) for c in row) + r" \\" for row in rows)
    return (f"\\begin{{tabular}}{{{align}}}\n\\toprule\n" + " & ".join(header) + " \\\\\n\\midrule\n" + body
            + "\n\\bottomrule\n\\end{tabular}\n")


def ratio_text(row: Any, quantity: str, spec: str = ".3f") -> str:
    """"0.972 [0.955, 0.990]": a paired ratio with its 95% interval; "n/a" without one."""
    ratio, low, high = (row.get(f"{quantity}_ratio{s}") for s in ("", "_low", "_high"))
    if ratio is None or pd.isna(ratio):
        return "n/a"
    if low is None or pd.isna(low):
        return fmt(ratio, spec)
    return f"{fmt(ratio, spec)} [{fmt(low, spec)}, {fmt(high, spec)}]"


def summary_table(summary: pd.DataFrame) -> str:
    """The paper's main table: absolute figures of the variant's own windows on its card, its paired ratios to the
    reference (bold where the verdict is a difference), the card's state, memory, MFU, quality. An unpaired row
    says so instead of a ratio, with its throughput spread between windows."""
    most_seeds = summary["seeds"].max() if "seeds" in summary else None

    def val_loss(r) -> str:  # a row with fewer seeds than the others says so
        text = pm(r.get("val_loss_mean"), r.get("val_loss_ci95"), ".3f")
        seeds = r.get("seeds")
        if seeds is None or pd.isna(seeds) or seeds == most_seeds:
            return text
        return f"{text} ({int(seeds)} of {int(most_seeds)} seeds)"

    def ratio(r, quantity: str) -> str:
        verdict = r.get(f"{quantity}_verdict")
        if verdict == "unpaired":
            return f"unpaired, spread {fmt(r.get('tokens_per_s_spread'), '.1f', 100)}%"
        text = ratio_text(r, quantity)
        return f"\\textbf{{{text}}}" if verdict in VERDICT_WORDS[quantity] else text

    rows = [[r.variant, r["mode"], r.status if r.status == "ok" else f"\\textbf{{{r.status}}}",
             fmt(r.get("rounds") if r.get("protocol") == "paired" else r.windows, ".0f"),
             fmt(r.tokens_per_s_mean, ",.0f"), fmt(r.gpu_j_per_token_mean, ".3f", 1e3),
             fmt(r.get("gpu_j_per_token_net_mean"), ".3f", 1e3), ratio(r, "gpu_j_per_token"), ratio(r, "tokens_per_s") if r.get("protocol") == "paired" else "",
             fmt(r.get("gpu_power_mean_w_ratio"), ".3f"), fmt(r.gpu_power_mean_w_mean, ".0f"),
             fmt(r.get("sm_clock_mean_mhz_mean"), ".0f"), fmt(r.get("power_cap_share_mean"), ".0f", 100),
             fmt(r.gpu_mem_used_peak_bytes_max, ".1f", 1 / GIB), fmt(r.mfu_mean, ".1f", 100),
             fmt(r.get("mfu_spec_mean"), ".1f", 100), fmt(r.energy_floor_multiple_mean, ".1f"), val_loss(r)]
            for _, r in summary.iterrows()]
    header = ["variant", "mode", "status", "n", "tokens/s", "mJ/token", "net mJ", "energy ratio [95\\%]",
              "throughput ratio [95\\%]", "power ratio", "W", "SM MHz", r"cap \%", "GiB", r"MFU \%",
              r"MFU$_\mathrm{spec}$ \%", r"$\times$floor", "val loss"]
    return booktabs(header, rows, "lllrrrrllrrrrrrrrr")


def kernel_table(summary: pd.DataFrame, check: dict | None) -> str:
    """Per variant, the kernel its results declare and the attention kernel the GPU check's profiler saw run
    (`scripts/gpu_check_variants.py`'s JSON, `check`): what ran, not only what was asked for."""
    ran = {c["variant"]: ", ".join(c.get("attention_kernels") or ["matmul + softmax (PyTorch ops)"])
           for c in (check or {}).get("checks", []) if "error" not in c}
    device = (check or {}).get("environment", {}).get("gpu", "no GPU check")
    rows = [[variant, group.kernel.dropna().iloc[0] if group.kernel.notna().any() else "n/a", ran.get(variant, "n/a")]
            for variant, group in summary.groupby("variant", sort=False)]
    return booktabs(["variant", "declared", f"ran ({device}, profiler)"], rows, "lll")


def row_macros(summary: pd.DataFrame) -> dict[str, str]:
    """Per row: every DISPLAY column, the status, its paired ratios (`...EnergyRatio`, `...EnergyInterval`,
    `...EnergyVerdict`, for energy, throughput and power) and the comparison with its eager row (same card)."""
    macros: dict[str, str] = {}
    for _, r in summary.iterrows():
        key = camel(r.variant, r["mode"])
        macros[key + "Status"] = str(r.status)
        for column, (scale, spec) in DISPLAY.items():
            if column in r:
                macros[key + camel(column)] = fmt(r[column], spec, scale)
        for quantity, label in RATIO_NAMES.items():
            ratio, low, high = (r.get(f"{quantity}_ratio{s}") for s in ("", "_low", "_high"))
            macros[key + label + "Ratio"] = fmt(ratio, ".3f")
            macros[key + label + "Interval"] = (f"[{fmt(low, '.3f')}, {fmt(high, '.3f')}]"
                                                if low is not None and not pd.isna(low) else "n/a")
            macros[key + label + "Verdict"] = str(r.get(f"{quantity}_verdict", "n/a"))
            macros[key + label + "ChangePct"] = fmt(None if ratio is None or pd.isna(ratio) else abs(ratio - 1),
                                                    ".1f", 100)
        if r["mode"] != "eager":
            for quantity, label in COMPARED.items():
                c = compare(summary, (r.variant, r["mode"]), (r.variant, "eager"), quantity)
                macros[key + "VsEager" + label] = c.wording
                macros[key + "VsEager" + label + "Ratio"] = fmt(c.ratio, ".2f")
    return macros


def group_text(rows: pd.DataFrame, quantity: str) -> str:
    """"mla 0.972 [0.955, 0.990], gqa ...": the rows of one group, by ratio; "none" for none."""
    if rows.empty:
        return "none"
    rows = rows.sort_values(f"{quantity}_ratio")
    return ", ".join(f"\\texttt{{{r.variant}}} {ratio_text(r, quantity)}" for _, r in rows.iterrows())


def mode_macros(summary: pd.DataFrame) -> dict[str, str]:
    """How many variants are paired with the reference (`PairedVariants`, over the modes), then per mode: the A/A
    control's interval and bound per quantity, the variants grouped by their verdict against the reference (each
    with its ratio and interval), the largest throughput spread between windows and how many rows stay within 2%,
    the energy saving against eager on the same card where the intervals separate, and what share of the windows
    ran at the power cap."""
    macros: dict[str, str] = {}
    is_paired = summary.get("protocol", pd.Series("unpaired", index=summary.index)) == "paired"
    paired_any = summary[is_paired]
    macros["PairedVariants"] = str(paired_any[paired_any.variant != paired_any.reference].variant.nunique()
                                   if len(paired_any) else 0)
    for mode, rows in summary.groupby("mode"):
        key = camel(mode)
        paired = rows[is_paired[rows.index]]
        control = paired[paired.variant == paired.reference] if len(paired) else paired
        for quantity, label in RATIO_NAMES.items():
            if len(control):
                c = control.iloc[0]
                macros[key + "Aa" + label] = ratio_text(c, quantity)
                macros[key + "Aa" + label + "BoundPct"] = fmt(c.get(f"{quantity}_aa_bound"), ".1f", 100)
            others = paired[paired.variant != paired.reference] if len(paired) else paired
            verdict_of = others.get(f"{quantity}_verdict", pd.Series(dtype=object))
            for word in (*VERDICT_WORDS[quantity], INDISTINGUISHABLE):
                macros[key + label + camel(word)] = group_text(others[verdict_of == word], quantity)
        if len(paired):
            macros[key + "PowerCapSharePct"] = fmt(paired.power_cap_share_mean.mean(), ".0f", 100)
            macros[key + "SmClockRange"] = span(paired.sm_clock_mean_mhz_mean.min(), paired.sm_clock_mean_mhz_mean.max(),
                                                ".0f")
            macros[key + "PowerRange"] = span(paired.gpu_power_mean_w_mean.min(), paired.gpu_power_mean_w_mean.max(),
                                              ".0f")
            steady = pd.to_numeric(paired.steady_state_s, errors="coerce")
            macros[key + "SteadyStateRange"] = span(steady.min(), steady.max(), ".0f")
            converged = paired.steady_state_converged.map(lambda v: v is True or v == 1.0)
            macros[key + "SteadyStateConverged"] = f"{int(converged.sum())} of {len(paired)}"
            step, drift = (pd.to_numeric(paired.get(c, pd.Series(dtype=float)), errors="coerce").dropna().median()
                           for c in ("steady_state_step_change", "steady_state_drift"))
            macros[key + "SteadyStateStepChangePct"] = fmt(step, ".1f", 100)
            macros[key + "SteadyStateDrift"] = ("n/a" if pd.isna(drift) else
                                                f"{fmt(abs(drift), '.1f', 100)}\\% {'more' if drift >= 0 else 'less'}")
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


def quality_macros(summary: pd.DataFrame, reference: str = "sdpa") -> dict[str, str]:
    """Validation loss against the reference's over the seeds: the variants whose intervals lie below, overlap or lie
    above its interval (seeds are the replicates of a quality run; there is no pairing to exploit)."""
    per_variant = summary.drop_duplicates("variant").assign(mode="quality")
    groups: dict[str, list[str]] = {"Lower": [], "Indistinguishable": [], "Higher": []}
    for variant in per_variant.variant:
        if variant == reference:
            continue
        c = compare(per_variant, (variant, "quality"), (reference, "quality"), "val_loss")
        if c.ratio is not None:
            groups["Indistinguishable" if not c.distinct else "Lower" if c.ratio < 1 else "Higher"].append(variant)
    return {f"ValLoss{name}ThanReference" if name != "Indistinguishable" else "ValLossIndistinguishableFromReference":
            ", ".join(f"\\texttt{{{v}}}" for v in variants) or "none" for name, variants in groups.items()}


def run_macros(facts: dict[str, Any]) -> dict[str, str]:
    """The run's facts (device, data, versions, windows, calibration, cost), already formatted by the caller."""
    return {camel(k): str(v) for k, v in facts.items()}


def used_macros(tex: str) -> list[str]:
    return sorted(set(re.findall(r"\\data([A-Za-z]+)", tex)))


# the experiment families' macros (generated/<family>/macros.tex, which paper.tex inputs where they exist)
SECTION_MACRO_PREFIXES = ("LongContext", "Inference", "Components", "Clear", "Distributed", "Decision", "Llama",
                          "Recall", "QualityLoss", "QualityLm", "QualityTarget", "QualityDevice",
                          "QualityNotMeasured")


# the experiment families whose folders another model family's section (paper/<arch>.tex) quotes, by macro prefix
FAMILY_SECTION_PREFIXES = ("LongContext", "Inference", "Components", "Clear")


def write_section_macros(macros: dict[str, str], arch: str, section: str, paper_dir: Path, generated: Path,
                         kinds: tuple[str, ...]) -> dict[str, str]:
    """A results folder's macros: GPT-2's for its own section file (`section`, e.g. "longcontext.tex", and those
    paper.tex's abstract quotes); another family's prefixed with the family's name (`\\dataLlamaLongContext...`)
    for that family's section, `paper/<arch>.tex`, which all its folders feed: each writes only its own `kinds`."""
    if arch == "gpt2":
        return write_macros(macros, paper_dir / section, generated / "macros.tex", also=paper_dir / "paper.tex")
    prefix = camel(arch)
    return write_macros({prefix + k: v for k, v in macros.items()}, paper_dir / f"{arch}.tex", generated / "macros.tex",
                        only=tuple(prefix + kind for kind in kinds))


def write_macros(macros: dict[str, str], paper_tex: Path, path: Path, also: Path | None = None,
                 skip: tuple[str, ...] = (), only: tuple[str, ...] = ()) -> dict[str, str]:
    """`\\newcommand`s for exactly the macros `paper_tex` uses, but those starting with one of `skip` (another
    file defines them) or, with `only`, not starting with one of `only` (a section several folders feed), and
    those of `macros` that `also` uses (a section's macros quoted in paper.tex's abstract); "n/a" for those the data
    cannot give."""
    names = {n for n in used_macros(paper_tex.read_text()) if not n.startswith(skip) and (not only or n.startswith(only))}
    if also is not None and also.exists():
        names |= set(used_macros(also.read_text())) & set(macros)
    chosen = {name: macros.get(name, "n/a") for name in sorted(names)}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"\\newcommand{{\\data{k}}}{{{escape(v)}}}\n" for k, v in chosen.items()))
    return chosen
