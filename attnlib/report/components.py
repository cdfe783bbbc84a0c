"""Component frames (CLEAR): per component, energy per call with its interval, time, power, energy per FLOP as
a multiple of the card's GEMM floor; per model, the coverage (the components' energy, each counted as often as a
forward pass calls it, over the whole pass's, measured the same way) and each component's share; the paper's
coverage table, two figures and the section's macros."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from ..components import KINDS
from ..experiments.components import WHOLE
from ..registry import VARIANTS
from ..results import read_run
from . import latex
from .figures import _empty, _save
from .frames import aggregate, family_of, family_variants, latest_config, with_calibration

MODEL_KEYS = ["variant", "setting", "seq_len", "batch_size", "n_head", "n_embd", "phase"]
KEYS = [*MODEL_KEYS, "component"]
# CLEAR's published figures (../shared/seeds/002): component-wise variance under 9.5%, over 90% of the energy captured
CLEAR_CV_MAX, CLEAR_COVERAGE_MIN = 0.095, 0.90


def components_summary(frame: pd.DataFrame, calibrations: dict[str, dict]) -> pd.DataFrame:
    """One row per (model, component): `j_per_call_mean` / `_ci95` / `_cv` (GPU energy per call, gross) and the
    net figure, `ms_per_call_mean`, mean power, `j_per_flop` and `floor_multiple` (matmul components), `count`,
    `share` (of the components' energy per pass) and `coverage` (repeated on each of the model's rows)."""
    windows = frame[frame.kind == "component"] if "kind" in frame else frame.iloc[:0]
    if windows.empty:
        return pd.DataFrame()
    calls = pd.to_numeric(windows.calls, errors="coerce")
    windows = with_calibration(windows, calibrations).assign(
        j_per_call=pd.to_numeric(windows.gpu_energy_j, errors="coerce") / calls,
        j_per_call_net=pd.to_numeric(windows.gpu_energy_net_j, errors="coerce") / calls,
        ms_per_call=1e3 * pd.to_numeric(windows.wall_s, errors="coerce") / calls)
    summary = aggregate(windows, KEYS, ("j_per_call", "j_per_call_net", "ms_per_call", "gpu_power_mean_w",
                                        "energy_floor_multiple", "calls"))
    ok = windows[windows.status == "ok"]
    facts = ok.groupby(KEYS)[["count", "flops_per_call"]].first().reset_index() if len(ok) else None
    if facts is not None:
        summary = summary.merge(facts, on=KEYS, how="left")
    summary["calls"] = summary.calls_mean
    summary["j_per_flop"] = summary.j_per_call_mean / summary.flops_per_call
    summary["floor_multiple"] = summary.energy_floor_multiple_mean
    parts = summary.component != WHOLE
    per_pass, total, whole = _per_pass(summary, "j_per_call_mean", parts)
    summary["share"] = (per_pass / total).where(parts)
    summary["coverage"] = total / whole
    # the interval of a ratio of sums, each component's interval scaled by its count, added in quadrature
    _, total_ci_squared, whole_ci_squared = _per_pass(summary, "j_per_call_ci95", parts, squared=True)
    summary["coverage_ci95"] = summary.coverage * (total_ci_squared / total ** 2 + whole_ci_squared / whole ** 2) ** 0.5
    summary["coverage_net"] = _ratio(summary, "j_per_call_net_mean", parts)
    summary["time_coverage"] = _ratio(summary, "ms_per_call_mean", parts)
    order = {v: i for i, v in enumerate(VARIANTS)}
    kinds = {k: i for i, k in enumerate((*KINDS, WHOLE))}
    return (summary.assign(_v=summary.variant.map(order), _k=summary.component.map(kinds))
            .sort_values(["_v", "setting", "seq_len", "batch_size", "n_head", "n_embd", "_k"])
            .drop(columns=["_v", "_k"]).reset_index(drop=True))


def _per_pass(summary: pd.DataFrame, column: str, parts: pd.Series, squared: bool = False
              ) -> tuple[pd.Series, pd.Series, pd.Series]:
    """`column` x count per component, its sum over a model's components and the whole pass's value, on every row
    of the model (`squared`: each term and the whole's value squared, for intervals in quadrature)."""
    per_pass = summary[column] * summary["count"]
    value = summary[column]
    if squared:
        per_pass, value = per_pass ** 2, value ** 2
    groups = [summary[k] for k in MODEL_KEYS]
    return (per_pass, per_pass.where(parts).groupby(groups).transform("sum"),
            value.where(~parts).groupby(groups).transform("max"))


def _ratio(summary: pd.DataFrame, column: str, parts: pd.Series) -> pd.Series:
    """The components' sum of `column` per pass over the whole pass's (coverage of energy, net energy or time)."""
    _, total, whole = _per_pass(summary, column, parts)
    return total / whole


def coverage_frame(summary: pd.DataFrame) -> pd.DataFrame:
    """One row per model: coverage, the largest component CV, and the attention core's share of the forward
    pass's component energy and its energy per FLOP over the MLP's."""
    rows = []
    for values, group in summary.groupby(MODEL_KEYS, sort=False):
        by = group.set_index("component")
        core, mlp = (by.loc[k] if k in by.index else None for k in ("attention_core", "mlp"))
        parts = group[group.component != WHOLE]
        whole = by.loc[WHOLE] if WHOLE in by.index else None
        ratio = None if core is None or mlp is None else core.j_per_flop / mlp.j_per_flop
        rows.append({**dict(zip(MODEL_KEYS, values)), "coverage": group.coverage.iloc[0],
                     "coverage_ci95": group.coverage_ci95.iloc[0], "coverage_net": group.coverage_net.iloc[0],
                     "time_coverage": group.time_coverage.iloc[0], "max_cv": parts.j_per_call_cv.max(),
                     # mean power of the components run alone (their energy over their time per pass) and the pass's
                     "parts_power_w": 1e3 * (parts.j_per_call_mean * parts["count"]).sum()
                     / (parts.ms_per_call_mean * parts["count"]).sum(),
                     "whole_power_w": None if whole is None else whole.gpu_power_mean_w_mean,
                     "core_share": None if core is None else core.share,
                     "core_over_mlp_j_per_flop": ratio,
                     "core_over_mlp_j_per_flop_ci95": None if ratio is None else ratio * (
                         (core.j_per_call_ci95 / core.j_per_call_mean) ** 2
                         + (mlp.j_per_call_ci95 / mlp.j_per_call_mean) ** 2) ** 0.5})
    return pd.DataFrame(rows)


def _table_cells(r) -> list[str]:
    """A model's coverage ± interval, net and time coverage, worst CV, core share and core/MLP energy per FLOP."""
    return [latex.pm(r.coverage, r.coverage_ci95, ".2f"), latex.fmt(r.coverage_net, ".2f"),
            latex.fmt(r.time_coverage, ".2f"), latex.fmt(r.max_cv, ".1f", 100), latex.fmt(r.core_share, ".1f", 100),
            latex.pm(r.core_over_mlp_j_per_flop, r.core_over_mlp_j_per_flop_ci95, ".2f")]


TABLE_HEADER = ["coverage", "net", "time", "max CV \\%", "core share \\%", "core / MLP J/FLOP"]


def coverage_table(coverage: pd.DataFrame, cut: dict[str, list[int]] | None = None) -> str:
    """The paper's table: per variant, phase and length (base models), coverage, the worst component CV, the
    core's share and its energy per FLOP against the MLP's, and a "cut" row at each length `cut`
    (`ComponentsConfig.cut_seq_lens`) left out of a measured variant's job; CLEAR's published figures last."""
    base = coverage[coverage.setting == "base"]
    body = [[r.variant, r.phase, str(r.seq_len), *_table_cells(r)] for _, r in base.iterrows()]
    body += [[v, "forward", str(t), "cut", "", "", "", "", ""] for v in base.variant.unique()
             for t in sorted((cut or {}).get(v, [])) if not ((base.variant == v) & (base.seq_len == t)).any()]
    body += [[v, "", "", "not measured", "", "", "", "", ""] for v in not_measured(coverage)]
    body.append(["CLEAR (published)", "forward", "", f"$>$ {CLEAR_COVERAGE_MIN:.2f}", "", "",
                 f"$<$ {100 * CLEAR_CV_MAX:.1f}", "", ""])
    return latex.booktabs(["variant", "phase", "T", *TABLE_HEADER], body, "llrrrrrrr")


def sensitivity_rows(coverage: pd.DataFrame, variant: str, seq_len: int) -> pd.DataFrame:
    """`variant`'s forward models at `seq_len`: its base model, then one per value of each varied axis."""
    rows = coverage[(coverage.variant == variant) & (coverage.phase == "forward") & (coverage.seq_len == seq_len)]
    axes = {"base": 0, "batch_size": 1, "n_head": 2, "n_embd": 3}
    return rows.assign(_a=rows.setting.map(axes)).sort_values(["_a", "batch_size", "n_head", "n_embd"]).drop(columns="_a")


def _varied(r) -> str:
    return {"batch_size": f"batch {r.batch_size}", "n_head": f"{r.n_head} heads",
            "n_embd": f"width {r.n_embd}"}.get(r.setting, "the base model")


def sensitivity_table(rows: pd.DataFrame) -> str:
    """CLEAR's sensitivity axes for one variant: batch size, heads at a fixed width, width at a fixed head size."""
    body = [[_varied(r), str(r.batch_size), str(r.n_head), str(r.n_embd), *_table_cells(r)] for _, r in rows.iterrows()]
    if len(rows) < 2:  # a run without the sensitivity job (--variants)
        body = [["not measured in this run", *[""] * 9]]
    return latex.booktabs(["model", "B", "heads", "width", *TABLE_HEADER], body, "lrrrrrrrrr")


def sensitivity_text(rows: pd.DataFrame) -> str:
    """The sensitivity grid in a sentence: ranges of coverage, core share and core/MLP energy per FLOP, and the
    model with the least coverage, with whether its interval includes 1 (a point estimate, not a ranking)."""
    if len(rows) < 2:
        return "n/a"
    low = rows.loc[rows.coverage.idxmin()]
    includes = low.coverage - low.coverage_ci95 <= 1 <= low.coverage + low.coverage_ci95
    span = lambda x, spec, scale=1: f"{scale * x.min():{spec}}--{scale * x.max():{spec}}"  # noqa: E731
    return (f"Around {low.variant}'s model at $T$ = {low.seq_len}, with one of batch size, heads and width varied at a "
            f"time (Table~\\ref{{tab:sensitivity}}), coverage is {span(rows.coverage, '.2f')}; the least, for "
            f"{_varied(low)} ({latex.pm(low.coverage, low.coverage_ci95, '.2f')}, component CVs up to "
            f"{100 * low.max_cv:.0f}\\%), has an interval that {'includes' if includes else 'excludes'} 1; the attention "
            f"core takes {span(rows.core_share, '.1f', 100)}\\% of the "
            f"components' energy at {span(rows.core_over_mlp_j_per_flop, '.2f')}$\\times$ the MLP's energy per FLOP.")


def not_measured(coverage: pd.DataFrame) -> list[str]:
    """The variants of these results' model families with no model in these results."""
    measured = set(coverage.variant) if len(coverage) else set()
    return [v for v in family_variants(coverage) if v not in measured]


def excess_text(coverage: pd.DataFrame, tolerance: float = 0.03) -> str:
    """Where the components' energy exceeds the pass's, say from what: their time (a component alone takes
    longer than inside the pass, `time_coverage` above 1 + `tolerance`) or their power (the time adds up, but a
    component run alone draws more than the pass). Generated from the base models' coverage rows."""
    models = coverage[coverage.setting == "base"]
    within = ((models.coverage - models.coverage_ci95 <= 1) & (models.coverage + models.coverage_ci95 >= 1)).sum()
    opening = f"The coverage interval includes 1 for {within} of the {len(models)} models."
    base = models[models.coverage > 1 + tolerance]
    if base.empty:
        return opening + " No model's components exceed its pass by more than {:.0f}\\%.".format(100 * tolerance)
    slow = base[base.time_coverage > 1 + tolerance]
    hot = base[base.time_coverage <= 1 + tolerance]
    sentences = [opening]
    if len(slow):
        sentences.append(
            f"In {len(slow)} of the {len(base)} models whose components exceed the pass by more than "
            f"{100 * tolerance:.0f}\\%, the components alone take longer than inside it (time coverage "
            f"{slow.time_coverage.min():.2f}--{slow.time_coverage.max():.2f}; Table~\\ref{{tab:coverage}} "
            "names them), most likely waiting for launches that the pass hides behind the work it has queued; their "
            f"mean power is {slow.parts_power_w.min():.0f}--{slow.parts_power_w.max():.0f}~W against the pass's "
            f"{slow.whole_power_w.min():.0f}--{slow.whole_power_w.max():.0f}~W, and net of idle their coverage is "
            f"{slow.coverage_net.min():.2f}--{slow.coverage_net.max():.2f}.")
    if len(hot):
        sentences.append(
            f"In {'the other ' if len(slow) else ''}{len(hot)} the time adds up (time coverage "
            f"{hot.time_coverage.min():.2f}--{hot.time_coverage.max():.2f}) but the components alone draw more "
            f"power, {hot.parts_power_w.min():.0f}--{hot.parts_power_w.max():.0f}~W against the pass's "
            f"{hot.whole_power_w.min():.0f}--{hot.whole_power_w.max():.0f}~W, most likely because a loop of one kernel holds the card in another "
            "power state than the pass's mix of kernels.")
    return " ".join(sentences)


def lm_head_text(summary: pd.DataFrame, seq_len: int) -> str:
    """The LM head's share of the forward pass and its energy per FLOP over the GEMM floor beside the MLP's (base
    models at `seq_len`), ranges over the variants."""
    rows = summary[(summary.setting == "base") & (summary.phase == "forward") & (summary.seq_len == seq_len)]
    head, mlp = rows[rows.component == "lm_head"], rows[rows.component == "mlp"]
    if head.empty or mlp.empty or head.floor_multiple.isna().all():
        return "n/a"
    span = lambda x, spec, scale=1: f"{scale * x.min():{spec}}--{scale * x.max():{spec}}"  # noqa: E731
    return (f"At $T$ = {seq_len} the LM head takes {span(head.share, '.0f', 100)}\\% of the forward pass's energy "
            f"at {span(head.floor_multiple, '.1f')}$\\times$ the GEMM floor, against the MLP's "
            f"{span(mlp.floor_multiple, '.1f')}$\\times$.")


def core_text(coverage: pd.DataFrame, lengths: list[int]) -> str:
    """CLEAR's claim put to each variant: is the attention core dearer per FLOP than the MLP (forward, base
    models), as far as the 95% intervals allow."""
    base = coverage[(coverage.setting == "base") & (coverage.phase == "forward")
                    & coverage.core_over_mlp_j_per_flop.notna()]
    sentences = []
    for length in lengths:
        rows = base[base.seq_len == length]
        if rows.empty:
            continue
        groups = {"dearer": [], "cheaper": [], "indistinguishable": []}
        for r in rows.itertuples():
            low = r.core_over_mlp_j_per_flop - r.core_over_mlp_j_per_flop_ci95
            high = r.core_over_mlp_j_per_flop + r.core_over_mlp_j_per_flop_ci95
            key = "dearer" if low > 1 else "cheaper" if high < 1 else "indistinguishable"
            groups[key].append(f"{r.variant} {r.core_over_mlp_j_per_flop:.2f}$\\times$")
        said = [f"{kind} for {', '.join(names)}" for kind, names in groups.items() if names]
        sentences.append(f"At $T$ = {length} the attention core is " + "; ".join(said) + " (its energy per FLOP over "
                         "the MLP's).")
    return " ".join(sentences) or "n/a"


def component_color(kind: str):
    """One colour per component kind in every components figure (tab10 in `KINDS` order)."""
    return plt.get_cmap("tab10")(KINDS.index(kind) % 10)


def share_bars(summary: pd.DataFrame, out_dir: Path) -> Path:
    """Stacked bars per variant: each component's share of the forward pass's component energy, one panel per
    length (base models)."""
    base = summary[(summary.setting == "base") & (summary.phase == "forward") & (summary.component != WHOLE)
                   & summary.share.notna()]
    lengths = sorted(base.seq_len.unique()) or [0]
    fig, axes = plt.subplots(1, len(lengths), figsize=(4 * len(lengths) + 1, 3.4), squeeze=False)
    for ax, length in zip(axes[0], lengths):
        data = base[base.seq_len == length].pivot_table(index="variant", columns="component", values="share",
                                                        sort=False)
        if data.empty:
            _empty(ax, "no component energy in these results (a GPU's NVML counter measures it)")
            continue
        data = data[[k for k in KINDS if k in data]]
        data.plot.bar(stacked=True, ax=ax, width=0.8, legend=False, color=[component_color(k) for k in data])
        ax.set(title=f"T = {length}", ylabel="share of forward-pass energy", xlabel="")
    axes[0][-1].legend(fontsize=6, bbox_to_anchor=(1.02, 1), loc="upper left")
    return _save(fig, out_dir, "components_share")


def floor_bars(summary: pd.DataFrame, out_dir: Path, seq_len: int) -> Path:
    """Energy per FLOP of each matmul component as a multiple of the card's GEMM floor, per variant (95%
    intervals), at one length."""
    fig, ax = plt.subplots(figsize=(7, 3.2))
    data = summary[(summary.setting == "base") & (summary.phase == "forward") & (summary.seq_len == seq_len)
                   & summary.floor_multiple.notna()]
    if data.empty:
        _empty(ax, "no energy per FLOP in these results (a calibrated GPU measures it)")
    else:
        kinds = [k for k in KINDS if k in set(data.component)]
        variants = list(dict.fromkeys(data.variant))
        width = 0.8 / len(kinds)
        for i, kind in enumerate(kinds):
            d = data[data.component == kind].set_index("variant").reindex(variants)
            xs = [j + (i - (len(kinds) - 1) / 2) * width for j in range(len(variants))]
            ax.bar(xs, d.floor_multiple, width, yerr=d.energy_floor_multiple_ci95.fillna(0), capsize=2, label=kind,
                   color=component_color(kind))
        ax.axhline(1, color="k", lw=0.8)
        ax.set_yscale("log")  # LSH's and materialised cores sit 100x above the rest: a linear axis hides the rest
        ax.set_xticks(range(len(variants)), variants, rotation=30, ha="right")
        ax.set(ylabel="J/FLOP over the GEMM floor (log)", title=f"T = {seq_len}")
        fig.legend(*ax.get_legend_handles_labels(), fontsize=6, ncol=len(kinds), loc="lower center", frameon=False)
    return _save(fig, out_dir, "components_floor", rect=(0, 0.07, 1, 1))


def build_components_report(frame: pd.DataFrame, calibrations: dict[str, dict], results_dir: Path, label: str,
                            figures_dir: Path, paper_dir: Path) -> pd.DataFrame:
    """A components results folder into `summary.csv`, `coverage.csv`, the coverage table, two figures and the
    macros `paper/components.tex` uses; returns the summary."""
    summary = components_summary(frame, calibrations)
    coverage = coverage_frame(summary) if len(summary) else pd.DataFrame()
    generated = paper_dir / "generated" / label
    generated.mkdir(parents=True, exist_ok=True)
    for name, table in (("summary", summary), ("coverage", coverage)):
        table.to_csv(results_dir / f"{name}.csv", index=False)
        table.to_csv(generated / f"{name}.csv", index=False)
    config = latest_config(frame[frame.kind == "component"])
    table = coverage_table(coverage, config.get("cut_seq_lens")) if len(coverage) else ""
    (generated / "coverage.tex").write_text(table)
    sensitivity = (sensitivity_rows(coverage, config.get("sensitivity_variant"), config.get("sensitivity_seq_len"))
                   if len(coverage) else coverage)
    (generated / "sensitivity.tex").write_text(sensitivity_table(sensitivity))
    lengths = config.get("seq_lens", [512])
    out = figures_dir / label
    share_bars(summary, out)
    floor_bars(summary, out, lengths[0])
    run = read_run(results_dir)
    base = coverage[coverage.setting == "base"] if len(coverage) else coverage
    macros = {
        "ComponentsDevice": frame.device.dropna().iloc[0] if frame.device.notna().any() else "n/a",
        "ComponentsSeqLens": " and ".join(map(str, lengths)),
        "ComponentsTokensPerCall": latex.fmt(config.get("tokens_per_call"), ",.0f"),
        "ComponentsTrials": str(config.get("trials", "n/a")), "ComponentsWindowS": str(config.get("window_s", "n/a")),
        "ComponentsCoverageRange": (f"{latex.fmt(base.coverage.min(), '.2f')}--{latex.fmt(base.coverage.max(), '.2f')}"
                                    if len(base) else "n/a"),
        "ComponentsMaxCvPct": latex.fmt(base.max_cv.max() if len(base) else None, ".1f", 100),
        "ClearCvMaxPct": f"{100 * CLEAR_CV_MAX:.1f}", "ClearCoverageMin": f"{CLEAR_COVERAGE_MIN:.2f}",
        "ComponentsExcess": excess_text(base) if len(base) else "n/a",
        "ComponentsCoreDearer": core_text(base, lengths) if len(base) else "n/a",
        "ComponentsLmHead": lm_head_text(summary, lengths[0]) if len(summary) else "n/a",
        "ComponentsSensitivity": sensitivity_text(sensitivity),
        "ComponentsNotMeasured": latex.no_results_sentence(
            not_measured(coverage), "this run") or "Every variant was measured.",
        "ComponentsGpuMinutes": latex.fmt(run.get("minutes"), ".1f"),
        "ComponentsMeasuredFractionPct": latex.fmt(run.get("measured_fraction"), ".0f", 100),
    }
    latex.write_section_macros(macros, family_of(frame), "components.tex", paper_dir, generated, ("Components", "Clear"))
    return summary
