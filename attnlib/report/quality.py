"""What each mechanism costs in what the model learns: the language-model runs (`attnlib.experiments.quality`) and
the recall runs (`attnlib.experiments.recall`) of a results folder, as tables, figures and the macros of the
paper's quality section.

- `lm_quality_frame`: per variant, final validation loss with its 95% interval over seeds, tokens, parameters, the
  GPU energy of a run, and the energy to a common target loss (read off each run's curve: the training energy up
  to the first evaluation at or below the target, interpolated linearly between evaluations).
- `recall_frame`: per variant, length and number of key-value pairs, MQAR accuracy with its 95% interval over seeds
  beside the GPU energy of a run.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from ..experiments._paired import REFERENCE
from ..registry import VARIANTS
from . import latex
from .figures import _empty, _save, variant_color, variant_marker
from .frames import _stats, family_variants

def _column(frame: pd.DataFrame, name: str) -> pd.Series:
    return frame[name] if name in frame else pd.Series(dtype=float)


def energy_to_loss(curve: list[dict], target: float) -> float | None:
    """Training energy (J) at which a run's validation loss first reaches `target`, interpolated linearly between
    the two evaluations around it; None if it never does or the curve has no energy."""
    points = [(p.get("gpu_j"), p["val_loss"]) for p in curve if p.get("val_loss") is not None]
    for (j0, l0), (j1, l1) in zip(points, points[1:]):
        if j0 is None or j1 is None:
            return None
        if l1 <= target:
            return j1 if l0 <= l1 else j0 + (j1 - j0) * (l0 - target) / (l0 - l1)
    return None


def lm_quality_frame(frame: pd.DataFrame) -> tuple[pd.DataFrame, float | None]:
    """One row per variant of the language-model runs, and the common target loss: the highest final mean
    validation loss among the variants run over several seeds, so that each of them reaches it."""
    runs = frame[(frame.kind == "quality") & (frame.status == "ok")] if "kind" in frame else frame.iloc[:0]
    if runs.empty:
        return pd.DataFrame(), None
    finals = runs.groupby("variant").val_loss.mean()
    multi = runs.groupby("variant").seed.nunique()
    target = float(finals[multi[multi > 1].index].max()) if (multi > 1).any() else float(finals.max())
    rows = []
    for variant, group in runs.groupby("variant", sort=False):
        to_target = [energy_to_loss(curve, target) for curve in group.loss_curve]
        rows.append({"variant": variant, "mode": group["mode"].iloc[0], "seeds": len(group),
                     "tokens": int(group.tokens.iloc[0]) if "tokens" in group else None,
                     "params": float(group.params.iloc[0]) if "params" in group else None,
                     **_stats(group.val_loss, "val_loss"), **_stats(_column(group, "gpu_energy_j"), "gpu_energy_j"),
                     **_stats(pd.Series(to_target, dtype=float), "energy_to_target_j"),
                     "reached_target": sum(e is not None for e in to_target)})
    order = {v: i for i, v in enumerate(family_variants(runs))}
    out = pd.DataFrame(rows)
    return out.assign(_k=out.variant.map(order)).sort_values("_k").drop(columns="_k").reset_index(drop=True), target


def recall_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (variant, seq_len, kv_pairs) of the recall runs: accuracy over seeds, GPU energy per run."""
    runs = frame[frame.kind == "recall"] if "kind" in frame else frame.iloc[:0]
    if runs.empty:
        return pd.DataFrame()
    rows = []
    for (variant, seq_len, pairs), group in runs.groupby(["variant", "seq_len", "kv_pairs"], sort=False):
        ok = group[group.status == "ok"]
        rows.append({"variant": variant, "seq_len": int(seq_len), "kv_pairs": int(pairs), "seeds": len(ok),
                     "status": "ok" if len(ok) else group.status.iloc[0],
                     **_stats(ok.accuracy, "accuracy"), **_stats(_column(ok, "gpu_energy_j"), "gpu_energy_j"),
                     "params": float(ok.params.iloc[0]) if len(ok) and "params" in ok else None})
    if not rows:
        return pd.DataFrame()
    order = {v: i for i, v in enumerate(family_variants(runs))}
    out = pd.DataFrame(rows)
    key = out.variant.map(order) * 10**9 + out.kv_pairs * 10**6 + out.seq_len
    return out.assign(_k=key).sort_values("_k").drop(columns="_k").reset_index(drop=True)


def lm_table(lm: pd.DataFrame, target: float | None) -> str:
    rows = [[r.variant, f"{int(r.seeds)}", latex.pm(r.val_loss_mean, r.val_loss_ci95, ".3f"),
             latex.fmt(r.params, ".1f", 1e-6), latex.fmt(r.tokens, ".1f", 1e-6),
             latex.pm(r.gpu_energy_j_mean, r.gpu_energy_j_ci95, ".1f", 1e-3),
             latex.pm(r.energy_to_target_j_mean, r.energy_to_target_j_ci95, ".1f", 1e-3)] for r in lm.itertuples()]
    header = ["variant", "seeds", "val.\\ loss", "params (M)", "tokens (M)", "GPU energy (kJ)",
              f"to loss {latex.fmt(target, '.3f')} (kJ)"]
    return latex.booktabs(header, rows, "lrrrrrr")


def recall_table(recall: pd.DataFrame) -> str:
    """Variants down, (pairs, length) across: accuracy in % with its interval over seeds."""
    cells = sorted({(r.kv_pairs, r.seq_len) for r in recall.itertuples()})
    header = ["variant"] + [f"{p} pairs, {t}" for p, t in cells]
    rows = []
    for variant, group in recall.groupby("variant", sort=False):
        by = {(r.kv_pairs, r.seq_len): r for r in group.itertuples()}
        rows.append([variant] + [latex.pm(by[c].accuracy_mean, by[c].accuracy_ci95, ".0f", 100) if c in by
                                 and by[c].status == "ok" else (by[c].status if c in by else "") for c in cells])
    return latex.booktabs(header, rows, "l" + "r" * len(cells))


def recall_figure(recall: pd.DataFrame, out_dir: Path) -> Path:
    """MQAR accuracy against sequence length, one panel per number of pairs, one line per variant (its colour in
    every figure), the interval over seeds as error bars."""
    pairs = sorted(set(recall.kv_pairs)) if len(recall) else [0]
    fig, axes = plt.subplots(1, len(pairs), figsize=(3.4 * len(pairs), 3.0), sharey=True, squeeze=False)
    if recall.empty:
        _empty(axes[0][0], "no recall runs in these results")
        return _save(fig, out_dir, "recall_accuracy")
    for ax, p in zip(axes[0], pairs):
        for variant, group in recall[recall.kv_pairs == p].groupby("variant", sort=False):
            ok = group[group.status == "ok"].sort_values("seq_len")
            ax.errorbar(ok.seq_len, 100 * ok.accuracy_mean, yerr=100 * ok.accuracy_ci95.fillna(0),
                        marker=variant_marker(variant), ms=3,
                        capsize=2, lw=1, color=variant_color(variant), label=variant)
        ax.set(xscale="log", title=f"{p} key-value pairs", xlabel="sequence length T (tokens)")
        ax.set_xticks(sorted(set(recall.seq_len)), [str(t) for t in sorted(set(recall.seq_len))])
        ax.minorticks_off()
    axes[0][0].set_ylabel("MQAR accuracy, % (95% CI over seeds)")
    axes[0][0].set_ylim(-3, 103)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(6, len(labels)), fontsize=7, frameon=False)
    return _save(fig, out_dir, "recall_accuracy", rect=(0, 0.1, 1, 1))


def write_quality_outputs(frame: pd.DataFrame, results_dir: Path, generated: Path, figures_dir: Path) -> dict:
    """The language-model and recall tables of `frame` (whichever it holds) as CSV beside the results and LaTeX
    under `generated`, the recall figure under `figures_dir`; returns what was written by name."""
    written = {}
    lm, target = lm_quality_frame(frame)
    if len(lm):
        lm.to_csv(results_dir / "quality.csv", index=False)
        (generated / "quality_table.tex").write_text(lm_table(lm, target))
        written["quality"] = lm
    recall = recall_frame(frame)
    if len(recall):
        recall.to_csv(results_dir / "recall.csv", index=False)
        (generated / "recall_table.tex").write_text(recall_table(recall))
        written["recall"] = recall
        written["recall_figure"] = recall_figure(recall, figures_dir)
    return written


def loss_difference(lm: pd.DataFrame, variant: str, reference: str = "sdpa") -> tuple[float, float] | None:
    """`variant`'s final validation loss minus `reference`'s (means over seeds) and the half-width of the
    difference's 95% interval: the two intervals' half-widths in quadrature (a one-seed run has none, so it is judged
    against the reference's seed interval alone; infinite where neither has one: no claim). None where either is
    missing from `lm`."""
    if lm.empty or not {variant, reference} <= set(lm.variant):
        return None
    row, ref = (lm[lm.variant == v].iloc[0] for v in (variant, reference))
    widths = [w for w in (row.get("val_loss_ci95"), ref.get("val_loss_ci95")) if w is not None and not pd.isna(w)]
    return row.val_loss_mean - ref.val_loss_mean, (sum(w * w for w in widths) ** 0.5 if widths else float("inf"))


def loss_groups(lm: pd.DataFrame, reference: str = "sdpa") -> dict[str, list[str]]:
    """The variants whose final validation loss is higher than, lower than or indistinguishable from the
    reference's: "higher"/"lower" only where the difference of the means exceeds the half-width of its 95% interval
    (`loss_difference`), each variant with its difference."""
    groups: dict[str, list[str]] = {"higher": [], "lower": [], "indistinguishable": []}
    for variant in (lm.variant if len(lm) else []):
        difference = loss_difference(lm, variant, reference) if variant != reference else None
        if difference is None:
            continue
        delta, half = difference
        word = "indistinguishable" if abs(delta) <= half else "higher" if delta > 0 else "lower"
        groups[word].append(f"\\texttt{{{variant}}} ({delta:+.3f} $\\pm$ {half:.3f})")  # write_macros escapes _
    return groups


def recall_budget_text(frame: pd.DataFrame) -> str:
    """What each recall run trained, from the runs' own config: "800 steps of 32K tokens (26.2M tokens a run, eager
    mode)" (K = 1024); "n/a" before any run."""
    runs = frame[frame.kind == "recall"] if "kind" in frame else frame.iloc[:0]
    configs = [c for c in runs.get("config", []) if isinstance(c, dict) and c.get("steps") and c.get("tokens_per_step")]
    if not configs:
        return "n/a"
    steps, per_step, mode = configs[-1]["steps"], configs[-1]["tokens_per_step"], configs[-1]["train"]["mode"]
    tokens = steps * per_step
    total = f"{tokens / 1e6:.1f}M" if tokens >= 1e6 else f"{tokens:,}"
    return f"{steps:,} steps of {per_step / 1024:g}K tokens ({total} tokens a run, {mode} mode)"


def quality_macros(frame: pd.DataFrame, lm: pd.DataFrame, target: float | None,
                   recall: pd.DataFrame) -> dict[str, str]:
    """The quality section's numbers: the card whose energy the tables give (`QualityDevice`), the target loss, each
    variant's final loss and energy to the target, the variants grouped by their loss against sdpa's
    (`QualityLossHigher`, `...Lower`, `...Indistinguishable`), the budget, each recall cell's accuracy
    (`Recall<Variant>Kv<pairs>T<length>`, the numbers spelled: `latex.spelled`), and the sentences that name the
    variants with no runs yet (`QualityNotMeasured`, `RecallNotMeasured`), so that an unfinished run reads as one.
    Recall is owed by the reference and by the mechanisms that change its function: those not exact or with
    parameters of their own (on GPT-2: gqa, mla, sliding_window, linear, lsh), not by the exact kernels."""
    expected = family_variants(frame)
    recall_owed = [v for v in expected if v == REFERENCE or not VARIANTS[v].exact or VARIANTS[v].params]
    devices = sorted(set(frame.device.dropna())) if "device" in frame else []
    macros = {"QualityDevice": " and ".join(devices) or "none",
              "QualityNotMeasured": latex.no_results_sentence(
                  [v for v in expected if lm.empty or v not in set(lm.variant)], "the language-model runs"),
              "RecallNotMeasured": latex.no_results_sentence(
                  [v for v in recall_owed if recall.empty or v not in set(recall.variant)], "the recall runs"),
              "QualityTargetLoss": latex.fmt(target, ".3f"),
              "QualityLmTokensM": latex.fmt(lm.tokens.max() if len(lm) else None, ".1f", 1e-6),
              "QualityLmSeeds": latex.fmt(lm.seeds.max() if len(lm) else None, ".0f"),
              "RecallBudget": recall_budget_text(frame)}
    macros.update({f"QualityLoss{word.title()}": ", ".join(names) or "none"
                   for word, names in loss_groups(lm).items()})
    for r in lm.itertuples():
        macros[latex.camel(r.variant, "ValLoss")] = latex.pm(r.val_loss_mean, r.val_loss_ci95, ".3f")
        macros[latex.camel(r.variant, "EnergyToTargetKj")] = latex.pm(r.energy_to_target_j_mean,
                                                                     r.energy_to_target_j_ci95, ".1f", 1e-3)
    for r in recall.itertuples():
        name = latex.camel("recall", r.variant) + f"Kv{latex.spelled(r.kv_pairs)}T{latex.spelled(r.seq_len)}"
        macros[name] = latex.pm(
            r.accuracy_mean, r.accuracy_ci95, ".0f", 100)
    return macros


def build_quality_report(frame: pd.DataFrame, results_dir: Path, label: str, figures_dir: Path,
                         paper_dir: Path) -> pd.DataFrame:
    """A quality folder (language-model and recall runs) into its CSV tables, LaTeX tables, figures and macros;
    returns the language-model table (or the recall table where there is none)."""
    generated = paper_dir / "generated" / label
    generated.mkdir(parents=True, exist_ok=True)
    written = write_quality_outputs(frame, results_dir, generated, figures_dir / label)
    lm, target = lm_quality_frame(frame)
    recall = written.get("recall", pd.DataFrame())
    section = paper_dir / "quality.tex"  # the paper's quality section, once written, takes only what it uses
    macros = quality_macros(frame, lm, target, recall)
    if section.exists():
        latex.write_macros(macros, section, generated / "macros.tex")
    else:
        (generated / "macros.tex").write_text("".join(f"\\newcommand{{\\data{k}}}{{{v}}}\n"
                                                      for k, v in sorted(macros.items())))
    return lm if len(lm) else recall
