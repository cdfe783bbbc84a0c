"""The decision table at the paper's front and on the README: per model family and regime, the mechanisms that save
energy per token against the family's native attention beyond the regime's A/A bound (paired ratio and 95%
interval), with what each costs in quality, or "no mechanism helps" where the paired data say so. A regime without
paired measurements says that too: nothing is filled in from an unpaired run or another card's rows.

Every regime reads the `summary.csv` its folder's report wrote (`attnlib.report.build_report`: the one loader's
typed summary, with the paired ratios and verdicts of `frames.verdicts`), and the quality folder's `quality.csv`
and `recall.csv` (`attnlib.report.quality`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..experiments._paired import REFERENCE
from ..registry import supported_variants
from .figures import _empty, _save, plt, ratio_axis, variant_color, variant_marker
from .latex import booktabs, fmt, ratio_text
from .longcontext import crossover_cell, seq_label
from .quality import loss_difference

QUANTITY = "gpu_j_per_token"  # energy per token: the quantity every decision is about


@dataclass(frozen=True)
class Regime:
    """One row of the decision table: a family's `regime` ("training, T = 512"), read from `results/<folder>/`,
    its summary rows those of `modes` (the first a variant has paired: its fastest) where each column of `where`
    has its value (a length, an inference phase, a batch size)."""

    arch: str
    regime: str
    folder: str
    modes: tuple[str, ...]
    where: tuple[tuple[str, object], ...] = ()


REGIMES: tuple[Regime, ...] = (  # K = 1024 tokens
    Regime("gpt2", "training, T = 512", "paper", ("graph", "eager")),
    Regime("gpt2", "training, T = 8K", "longcontext", ("graph", "compile"), (("seq_len", 8192),)),
    Regime("gpt2", "training, T = 64K", "longcontext", ("graph", "compile"), (("seq_len", 65536),)),
    Regime("gpt2", "decode, batch 1, after 4K", "inference", ("cudagraph",),
           (("phase", "decode"), ("batch_size", 1), ("context_len", 4096))),  # the GPT-2 grid's contexts: 512, 4K
    Regime("llama", "training, T = 2K", "llama", ("compile", "eager")),
    Regime("llama", "training, T = 32K", "llama-longcontext", ("compile",), (("seq_len", 32768),)),
    Regime("llama", "training, T = 64K", "llama-longcontext", ("compile",), (("seq_len", 65536),)),
    Regime("llama", "prefill, T = 64K", "llama-inference", ("eager",), (("phase", "prefill"), ("context_len", 65536))),
    Regime("llama", "decode, batch 1, after 2K", "llama-inference", ("cudagraph",),
           (("phase", "decode"), ("batch_size", 1), ("context_len", 2048))),
    Regime("llama", "decode, batch 16, after 32K", "llama-inference", ("cudagraph",),  # batch 64: the pair's two
           (("phase", "decode"), ("batch_size", 16), ("context_len", 32768))),  # 64 GiB caches exceed an 80 GB card
)
FAMILY_NAMES = {"gpt2": "GPT-2 small", "llama": "Llama-3.2-1B shape"}


def regime_cells(summary: pd.DataFrame, regime: Regime) -> pd.DataFrame:
    """Every summary row of `regime` in one of its modes, measured or failed (out of memory), paired or not."""
    if summary.empty or "mode" not in summary:
        return summary.iloc[:0]
    rows = summary[summary["mode"].isin(regime.modes)]
    for column, value in regime.where:
        rows = rows[rows[column] == value] if column in rows else rows.iloc[:0]
    return rows


def regime_rows(summary: pd.DataFrame, regime: Regime) -> pd.DataFrame:
    """The paired summary rows of `regime`, one per variant: its first mode of `regime.modes` with a paired ratio
    (the reference's row is its A/A control)."""
    rows = regime_cells(summary, regime)
    if rows.empty or "protocol" not in rows or f"{QUANTITY}_ratio" not in rows:
        return rows.iloc[:0]
    rows = rows[(rows.protocol == "paired") & rows[f"{QUANTITY}_ratio"].notna()]
    rank = rows["mode"].map({m: i for i, m in enumerate(regime.modes)})
    return rows.assign(_rank=rank).sort_values("_rank").drop_duplicates("variant").drop(columns="_rank")


def aa_bound(rows: pd.DataFrame) -> float | None:
    """The regime's A/A bound (`frames.verdicts`' `<q>_aa_bound` of its control row); None without a control."""
    control = rows[rows.get(f"{QUANTITY}_verdict", pd.Series(dtype=object)) == "control"]
    return None if control.empty else float(control[f"{QUANTITY}_aa_bound"].iloc[0])


def quality_cost(variant: str, quality: pd.DataFrame, recall: pd.DataFrame) -> str:
    """What `variant` costs in what the model learns: its validation loss against sdpa's at the LM budget
    (`quality.loss_difference`: the difference of the means over seeds with its 95% half-width) and its worst MQAR
    accuracy over the recall grid; "not measured" where neither exists."""
    parts = []
    difference = loss_difference(quality, variant)
    if difference is not None:
        parts.append(f"loss {difference[0]:+.3f} ± {difference[1]:.3f}")
    if not recall.empty and variant in set(recall.variant):
        worst = recall[(recall.variant == variant) & (recall.status == "ok")]
        if len(worst):
            low = worst.loc[worst.accuracy_mean.idxmin()]
            parts.append(f"MQAR {low.accuracy_mean:.2f} at T = {int(low.seq_len)}, {int(low.kv_pairs)} pairs")
    return "; ".join(parts) if parts else "quality not measured"


def decision_frame(results_root: Path) -> pd.DataFrame:
    """One row per regime of `REGIMES`: whether it was measured paired with its A/A control (`measured`), the
    bound, and the mechanisms cheaper than the reference beyond it (`cheaper`: [(variant, ratio text, quality
    cost)], lowest ratio first), out of how many paired against it (`variants`); `unmeasured` of the family's
    `planned` mechanisms (every one with a form on it, the reference aside) have no result there yet, paired or
    failed."""
    quality, recall = _quality(results_root)
    out = []
    for regime in REGIMES:
        summary = _read(results_root / regime.folder / "summary.csv")
        rows = regime_rows(summary, regime)
        planned = set(supported_variants(regime.arch)) - {REFERENCE}
        tried = set(regime_cells(summary, regime).get("variant", []))
        bound = aa_bound(rows)
        others = rows[rows[f"{QUANTITY}_verdict"] != "control"] if len(rows) else rows
        # claims need the regime's A/A control: without it, paired cells are counted but nothing is claimed
        cheaper = others[others[f"{QUANTITY}_verdict"] == "cheaper"].sort_values(f"{QUANTITY}_ratio") \
            if bound is not None else others.iloc[:0]
        out.append({"arch": regime.arch, "regime": regime.regime, "folder": regime.folder,
                    "measured": bound is not None, "variants": len(others), "aa_bound": bound,
                    "planned": len(planned), "unmeasured": len(planned - tried),
                    "modes": ", ".join(dict.fromkeys(rows["mode"])) if len(rows) else "",
                    "cheaper": [(r.variant, ratio_text(r, QUANTITY), quality_cost(r.variant, quality, recall))
                                for _, r in cheaper.iterrows()]})
    return pd.DataFrame(out)


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path) if path.exists() else pd.DataFrame()


def _quality(results_root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The language-model table (`quality/quality.csv`) and the recall table (`quality/recall.csv`, or a recall
    folder's own), empty where not measured."""
    recall = next((_read(p) for p in (results_root / "quality" / "recall.csv", results_root / "recall" / "recall.csv")
                   if p.exists()), pd.DataFrame())
    return _read(results_root / "quality" / "quality.csv"), recall


def _saves(row: pd.Series) -> list[str]:
    """The cell of mechanisms that save: "gqa 0.952 [0.941, 0.963] (quality)", or what the data say instead."""
    if not row.measured and row.variants:
        plural = "s" if row.variants != 1 else ""
        return [f"{row.variants} mechanism{plural} paired so far; no claim before the reference's A/A control is "
                "measured"]
    if not row.measured:
        return ["not yet measured under the paired protocol"]
    left = [f"{row.unmeasured} of {row.planned} not yet measured"] if row.unmeasured else []
    if not row.cheaper and not row.variants:
        return ["only the reference's A/A control measured so far"] + left
    if not row.cheaper:
        return ([f"none of the {row.variants} measured so far"] if left
                else [f"no mechanism helps ({row.variants} measured against the reference)"]) + left
    return [f"{variant} {ratio} ({cost})" for variant, ratio, cost in row.cheaper] + left


def decision_markdown(decisions: pd.DataFrame) -> str:
    """The README's decision table: family, regime, what saves energy per token against the native attention."""
    lines = ["| model | regime | saves energy per token vs native attention: ratio [95% CI] (quality cost) | A/A bound |",
             "|---|---|---|---|"]
    for _, row in decisions.iterrows():
        bound = fmt(row.aa_bound, ".1%") if row.measured else "n/a"
        lines.append(f"| {FAMILY_NAMES[row.arch]} | {row.regime} | {'; '.join(_saves(row))} | {bound} |")
    return "\n".join(lines) + "\n"


def decision_table(decisions: pd.DataFrame) -> str:
    """The paper's Table 1 (a booktabs tabular): one line per mechanism that saves, or the regime's verdict."""
    rows = []
    for _, row in decisions.iterrows():
        cells = _saves(row)
        bound = fmt(row.aa_bound, ".1f", 100) + "%" if row.measured else "n/a"  # booktabs escapes the %
        for i, cell in enumerate(cells):
            cell = cell.replace("±", r"$\pm$")  # booktabs escapes the text around it
            rows.append([FAMILY_NAMES[row.arch] if i == 0 else "", row.regime if i == 0 else "",
                         bound if i == 0 else "", cell])
    return booktabs(["model", "regime", "A/A", "saves energy per token: ratio to the native attention [95\\% CI] "
                     "(quality cost)"], rows, "lllp{0.55\\linewidth}")


# (GPT-2's regime, the 1B model's) that the side-by-side comparison sets against each other, per mechanism
SIDE_BY_SIDE = (("training, T = 512", "training, T = 2K"),)


def side_by_side_frame(results_root: Path) -> pd.DataFrame:
    """Per mechanism measured paired on both models: its energy ratio to each model's native attention (GPT-2's
    fastest mode at T = 512, the 1B model's at T = 2K) with the intervals and verdicts; the reference's A/A control
    is the noise floor, not a mechanism."""
    regimes = {(r.arch, r.regime): r for r in REGIMES}
    rows = []
    for gpt2_regime, llama_regime in SIDE_BY_SIDE:
        both = {arch: regime_rows(_read(results_root / regimes[(arch, name)].folder / "summary.csv"),
                                  regimes[(arch, name)])
                for arch, name in (("gpt2", gpt2_regime), ("llama", llama_regime))}
        if any(table.empty for table in both.values()):
            continue
        both = {arch: table.set_index("variant") for arch, table in both.items()}
        for variant in [v for v in both["gpt2"].index if v in both["llama"].index and v != REFERENCE]:
            row = {"variant": variant, "gpt2_regime": gpt2_regime, "llama_regime": llama_regime}
            for arch, table in both.items():
                r = table.loc[variant]
                row.update({f"{arch}_{k}": r[f"{QUANTITY}_{k}"] for k in ("ratio", "ratio_low", "ratio_high",
                                                                             "verdict")})
            rows.append(row)
    return pd.DataFrame(rows)


def side_by_side_figure(pairs: pd.DataFrame, out_dir: Path) -> Path:
    """Each mechanism's energy ratio to the native attention on GPT-2 (x) against the 1B model (y), 95% intervals
    as error bars, log axes; the diagonal is "the same on both"."""
    fig, ax = plt.subplots(figsize=(5, 4.4))
    if pairs.empty:
        _empty(ax, "no mechanism measured paired on both models yet")
        return _save(fig, out_dir, "models_side_by_side")
    for _, r in pairs.iterrows():
        xerr = [[r.gpt2_ratio - r.gpt2_ratio_low], [r.gpt2_ratio_high - r.gpt2_ratio]]
        yerr = [[r.llama_ratio - r.llama_ratio_low], [r.llama_ratio_high - r.llama_ratio]]
        ax.errorbar(r.gpt2_ratio, r.llama_ratio, xerr=xerr, yerr=yerr, fmt=variant_marker(r.variant),
                    color=variant_color(r.variant), ms=5, capsize=2, label=r.variant)
    low = min(pairs[["gpt2_ratio_low", "llama_ratio_low"]].min().min(), 0.95)
    high = max(pairs[["gpt2_ratio_high", "llama_ratio_high"]].max().max(), 1.05)
    ax.plot([low, high], [low, high], color="0.6", lw=0.8, ls="--")
    ax.axhline(1, color="0.3", lw=0.6)
    ax.axvline(1, color="0.3", lw=0.6)
    ax.set(xscale="log", yscale="log", xlim=(low, high), ylim=(low, high),
           xlabel=f"GPT-2 small, {pairs.gpt2_regime.iloc[0]}: energy per token / sdpa's",
           ylabel=f"Llama-3.2-1B shape, {pairs.llama_regime.iloc[0]}: / native's")
    for axis in (ax.xaxis, ax.yaxis):
        ratio_axis(axis)
    fig.legend(*ax.get_legend_handles_labels(), ncol=4, fontsize=7, loc="lower center", frameon=False)
    return _save(fig, out_dir, "models_side_by_side", rect=(0, 0.06, 1, 1))


def front_frame(results_root: Path) -> pd.DataFrame:
    """Cost against quality per mechanism: its paired energy ratio in GPT-2's short-context training regime and at
    its longest long-context one, beside its validation-loss difference from sdpa's and its MQAR accuracy at the
    longest length and most pairs (NaN where a figure is not measured)."""
    regimes = {r.regime: r for r in REGIMES if r.arch == "gpt2"}
    short = regime_rows(_read(results_root / "paper" / "summary.csv"), regimes["training, T = 512"])
    long = regime_rows(_read(results_root / "longcontext" / "summary.csv"), regimes["training, T = 64K"])
    quality, recall = _quality(results_root)
    variants = list(dict.fromkeys([*short.get("variant", []), *quality.get("variant", []), *recall.get("variant", [])]))
    hardest = recall[(recall.status == "ok") & (recall.seq_len == recall.seq_len.max())] if len(recall) else recall
    hardest = hardest[hardest.kv_pairs == hardest.kv_pairs.max()] if len(hardest) else hardest
    rows = []
    for v in variants:
        pick = lambda frame, column: frame.loc[frame.variant == v, column].iloc[0] \
            if len(frame) and v in set(frame.variant) else float("nan")  # noqa: E731
        rows.append({"variant": v, "short_ratio": pick(short, f"{QUANTITY}_ratio"),
                     "long_ratio": pick(long, f"{QUANTITY}_ratio"),
                     "loss_delta": (loss_difference(quality, v) or (float("nan"),))[0],
                     "recall": pick(hardest, "accuracy_mean")})
    return pd.DataFrame(rows)


def front_figure(front: pd.DataFrame, out_dir: Path) -> Path:
    """Two panels: energy ratio at T = 512 against the validation-loss difference from sdpa, and energy ratio at
    64K against MQAR accuracy; one marker and colour per mechanism, as in every figure."""
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.6))
    panels = (("short_ratio", "loss_delta", "training at T = 512: energy / sdpa's", "validation loss - sdpa's"),
              ("long_ratio", "recall", "training at T = 64K: energy / sdpa's", "MQAR accuracy (hardest cell)"))
    for ax, (x, y, xlabel, ylabel) in zip(axes, panels):
        both = front.dropna(subset=[x, y]) if len(front) else front
        if both.empty:
            _empty(ax, "not both measured yet")
            continue
        for _, r in both.iterrows():
            ax.scatter(r[x], r[y], marker=variant_marker(r.variant), color=variant_color(r.variant), label=r.variant)
        ax.axvline(1, color="0.3", lw=0.6)
        ax.set(xscale="log", xlabel=xlabel, ylabel=ylabel)
        ratio_axis(ax.xaxis)
    handles = {label: h for ax in axes for h, label in zip(*ax.get_legend_handles_labels())}
    if handles:
        fig.legend(handles.values(), handles.keys(), ncol=6, fontsize=6, loc="lower center", frameon=False)
    return _save(fig, out_dir, "quality_front", rect=(0, 0.1, 1, 1))


# per family: the folder of its short-context training table, where the native attention runs eager and compiled
MODE_TABLES = {"gpt2": "paper", "llama": "llama"}


def mode_effect_frame(results_root: Path) -> pd.DataFrame:
    """Per family: the native attention's training step eager and in its fastest mode (most tokens/s; same job,
    same card), energy per token and MFU in each, and the fastest mode's saving in energy per token over eager with
    a conservative 95% interval (the two rows' intervals at their far ends)."""
    rows = []
    for arch, folder in MODE_TABLES.items():
        summary = _read(results_root / folder / "summary.csv")
        needed = {"tokens_per_s_mean", f"{QUANTITY}_mean", f"{QUANTITY}_ci95", "mfu_mean"}
        if summary.empty or needed - set(summary):
            continue
        own = summary[summary.variant == REFERENCE].set_index("mode")
        if "eager" not in own.index or len(own) < 2:
            continue
        eager, fast = own.loc["eager"], own.loc[own.tokens_per_s_mean.idxmax()]
        (e, ce), (f, cf) = ((r[f"{QUANTITY}_mean"], r[f"{QUANTITY}_ci95"]) for r in (eager, fast))
        rows.append({"arch": arch, "fast_mode": fast.name, "eager_j_per_token": e, "fast_j_per_token": f,
                     "saving": 1 - f / e, "saving_low": 1 - (f + cf) / (e - ce),
                     "saving_high": 1 - (f - cf) / (e + ce), "eager_mfu": eager.mfu_mean, "fast_mfu": fast.mfu_mean})
    return pd.DataFrame(rows)


def mode_effect_words(effect: pd.DataFrame) -> str:
    """The sentence on how much compiling saves on each model and whether the saving shrinks on the 1B model (its
    interval wholly below GPT-2's), grows (wholly above) or cannot be told apart; "" until both are measured."""
    if set(effect.get("arch", [])) != set(MODE_TABLES):
        return ""
    gpt2, llama = (effect.set_index("arch").loc[arch] for arch in ("gpt2", "llama"))
    modes = {"graph": "with CUDA graphs", "compile": "compiled"}

    def pct(r: pd.Series) -> str:
        return f"{fmt(r.saving, '.0f', 100)}\\% [{fmt(r.saving_low, '.0f', 100)}, {fmt(r.saving_high, '.0f', 100)}]"

    def mfu(r: pd.Series) -> str:
        return (f"MFU {fmt(r.eager_mfu, '.1f', 100)}\\% eager, {fmt(r.fast_mfu, '.1f', 100)}\\% "
                f"{modes.get(r.fast_mode, r.fast_mode)}")

    trend = ("shrinks on the model that keeps the card busy" if llama.saving_high < gpt2.saving_low
             else "grows on the larger model" if llama.saving_low > gpt2.saving_high
             else "is the same on both models within the intervals")
    return (f"The native attention's fastest mode saves {pct(gpt2)} of its eager energy per token on GPT-2 small "
            f"({mfu(gpt2)}) and {pct(llama)} on the 1B model ({mfu(llama)}): the mode effect {trend}.")


LONG_TABLES = {"gpt2": "longcontext", "llama": "llama-longcontext"}  # each family's paired long-context folder
LONGEST = 65536  # the longest length of both long-context grids


def _meta_model(variant: str, **config):
    """`variant`'s model built on the meta device: its shapes for a FLOP count, no weights allocated."""
    import torch

    from ..model import build_model

    with torch.device("meta"):
        return build_model(variant, **config)


def balance_lengths() -> dict[str, float]:
    """Per family, the length at which its native attention's training FLOPs per token equal the dense ones
    (`flops.attention_balance_length`)."""
    from ..flops import attention_balance_length

    return {arch: attention_balance_length(_meta_model(REFERENCE, arch=arch)) for arch in LONG_TABLES}


def cuts_core_arithmetic(variant: str, seq_len: int = 65536) -> bool:
    """Whether `variant`'s attention does at most half the exact core's training FLOPs per token at `seq_len` on
    GPT-2 small (a window, a linear state, hashing): the mechanisms whose crossover the width argument predicts."""
    from ..flops import training_flops_per_token

    own, exact = (training_flops_per_token(_meta_model(v, n_positions=seq_len), seq_len).attention_flops_per_token
                  for v in (variant, REFERENCE))
    return own <= exact / 2


def crossovers_frame(results_root: Path, balance: dict[str, float]) -> pd.DataFrame:
    """Per mechanism with a long-context crossover row on both models (each family's paired fastest mode,
    `longcontext.crossover_frame`): the length from which it stays cheaper than the native attention on each, as
    the crossover table prints it (`crossover_cell`), and, for a mechanism that cuts the core's arithmetic
    (`cuts_core_arithmetic`), the 1B crossover the width alone predicts: GPT-2's scaled by the ratio of the two
    `balance` lengths."""
    tables = {arch: _read(results_root / folder / "crossover.csv") for arch, folder in LONG_TABLES.items()}
    if any(t.empty or "variant" not in t for t in tables.values()):
        return pd.DataFrame()
    gpt2, llama = ({r.variant: r for _, r in tables[arch].iterrows()} for arch in ("gpt2", "llama"))
    scale = balance["llama"] / balance["gpt2"]
    return pd.DataFrame([
        {"variant": v, "gpt2": crossover_cell(gpt2[v], "", LONGEST), "llama": crossover_cell(llama[v], "", LONGEST),
         "llama_predicted": (gpt2[v].crossover_seq_len * scale if cuts_core_arithmetic(v) else float("nan"))}
        for v in gpt2 if v in llama])


def crossovers_table(crossovers: pd.DataFrame) -> str:
    """The crossovers side by side, then the width's prediction for the 1B model ("--": none)."""
    body = [[r.variant, r.gpt2, r.llama, "--" if pd.isna(r.llama_predicted) else seq_label(r.llama_predicted)]
            for _, r in crossovers.iterrows()]
    return booktabs(["variant", "GPT-2 small", "1B (measured)", "1B (width predicts)"], body, "llll")


def side_by_side_words(pairs: pd.DataFrame) -> dict[str, str]:
    """`Same`: the mechanisms whose verdict against the native attention is the same on both models; `Changed`:
    the others, each with its two verdicts (the words of `frames.verdicts`)."""
    tt = lambda v: f"\\texttt{{{v.replace('_', chr(92) + '_')}}}"  # noqa: E731
    others = pairs[pairs.gpt2_verdict != "control"] if len(pairs) else pairs
    same = others[others.gpt2_verdict == others.llama_verdict] if len(others) else others
    changed = others[others.gpt2_verdict != others.llama_verdict] if len(others) else others
    return {"Same": ", ".join(f"{tt(r.variant)} ({r.gpt2_verdict})" for _, r in same.iterrows()) or "none",
            "Changed": ", ".join(f"{tt(r.variant)} ({r.gpt2_verdict} on GPT-2, {r.llama_verdict} at 1B)"
                                 for _, r in changed.iterrows()) or "none"}


def build_decisions(results_root: Path, paper_dir: Path, figures_dir: Path) -> pd.DataFrame:
    """`paper/generated/decisions/`: decisions.csv, the LaTeX table the paper opens with and the README's Markdown,
    the count of regimes with mechanisms paired beside their A/A control (`\\dataDecisionRegimesMeasured` of
    `\\dataDecisionRegimes`), and the two models side by side (models_side_by_side.csv,
    `figures/decisions/models_side_by_side`, `\\dataDecisionSideBySide` mechanisms), and the long-context crossovers
    on both models beside the width's prediction (crossovers.csv and .tex, the balance lengths' macros)."""
    decisions = decision_frame(results_root)
    out = paper_dir / "generated" / "decisions"
    out.mkdir(parents=True, exist_ok=True)
    decisions.to_csv(out / "decisions.csv", index=False)
    (out / "decisions.tex").write_text(decision_table(decisions))
    (out / "decisions.md").write_text(decision_markdown(decisions))
    pairs = side_by_side_frame(results_root)
    pairs.to_csv(out / "models_side_by_side.csv", index=False)
    side_by_side_figure(pairs, figures_dir / "decisions")
    front = front_frame(results_root)
    front.to_csv(out / "quality_front.csv", index=False)
    front_figure(front, figures_dir / "decisions")
    balance = balance_lengths()
    crossovers = crossovers_frame(results_root, balance)
    crossovers.to_csv(out / "crossovers.csv", index=False)
    (out / "crossovers.tex").write_text(crossovers_table(crossovers) if len(crossovers) else "")
    filled = int((decisions.measured & (decisions.variants > 0)).sum())  # an A/A control alone fills no regime
    (out / "macros.tex").write_text(
        f"\\newcommand{{\\dataDecisionRegimes}}{{{len(decisions)}}}\n"
        f"\\newcommand{{\\dataDecisionRegimesMeasured}}{{{filled}}}\n"
        f"\\newcommand{{\\dataDecisionSideBySide}}{{{len(pairs)}}}\n"
        + "".join(f"\\newcommand{{\\dataDecisionSideBySide{k}}}{{{v}}}\n" for k, v in side_by_side_words(pairs).items())
        + f"\\newcommand{{\\dataDecisionModeEffect}}{{{mode_effect_words(mode_effect_frame(results_root))}}}\n"
        + f"\\newcommand{{\\dataDecisionBalanceGptTwo}}{{{seq_label(balance['gpt2'])}}}\n"
        + f"\\newcommand{{\\dataDecisionBalanceLlama}}{{{seq_label(balance['llama'])}}}\n"
        + f"\\newcommand{{\\dataDecisionBalanceRatio}}{{{fmt(balance['llama'] / balance['gpt2'], '.1f')}}}\n"
        + f"\\newcommand{{\\dataDecisionCrossovers}}{{{len(crossovers)}}}\n")
    return decisions
