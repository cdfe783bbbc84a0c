"""Inference frames: one row per (variant, mode, phase, batch, context) with latency, energy per token, the cache's
bytes and the decode step as a multiple of its memory floor; the decode table, figures and the section's macros.

The memory floor of a decode step is the least it must read (every weight once and the cache as far as it
attends, `attnlib.decode.step_bytes_read`) over the card's measured read bandwidth (`calibrate_bandwidth`, in the
results folder's calibration like the GEMM floor)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from ..experiments.inference import cell_name, is_cut, variant_cut
from ..registry import VARIANTS
from ..results import read_run
from . import latex
from .figures import _empty, _save, variant_color, variant_marker
from .frames import (TRIAL_QUANTITIES, Comparison, aggregate, compare, family_of, family_variants, paired_frame,
                     latest_config, verdicts, with_calibration)

KEYS = ["variant", "mode", "phase", "batch_size", "context_len"]
REFERENCE = "sdpa"
FACTS = ["cache_bytes_per_token", "cache_bytes", "cache_allocated_bytes", "step_bytes_read"]  # fixed per cell


def with_floor(windows: pd.DataFrame, calibrations: dict[str, dict]) -> pd.DataFrame:
    """Per window: `ms_per_step` (decode, generate), `ms` per repetition (a prefill, a whole decode or
    generation), and `floor_multiple`: a decode step's time over the time its least bytes take at the card's
    measured read bandwidth (NaN on a card without one)."""
    gb_per_s = windows.get("device_uuid", pd.Series(index=windows.index, dtype=object)).map(
        lambda u: (calibrations.get(u, {}).get("bandwidth") or {}).get("gb_per_s") or math.nan)
    wall = pd.to_numeric(windows.wall_s, errors="coerce")
    ms_per_step = 1e3 * wall / pd.to_numeric(windows.steps, errors="coerce")
    floor_ms = 1e3 * pd.to_numeric(windows.step_bytes_read, errors="coerce") / (gb_per_s * 1e9)
    return windows.assign(ms_per_step=ms_per_step, ms=1e3 * wall / pd.to_numeric(windows.repetitions, errors="coerce"),
                          floor_multiple=(ms_per_step / floor_ms).where(windows.phase == "decode"))


def inference_summary(frame: pd.DataFrame, calibrations: dict[str, dict]) -> pd.DataFrame:
    """One row per cell: the variant's own windows aggregated, and for a paired cell its per-round ratios to the
    reference with their verdicts beyond the cell's A/A bound (`frames.paired_frame`, `frames.verdicts`;
    `protocol` "paired" or "unpaired"). Besides the aggregates' own names, `j_per_token_mean` / `_ci95` (GPU energy
    per token: per prompt token for a prefill, per generated token otherwise), `floor_multiple` (its mean) and the
    cell's cache sizes carry the columns inference tables are read by."""
    windows = frame[frame.kind == "inference"] if "kind" in frame else frame.iloc[:0]
    if windows.empty:
        return pd.DataFrame()
    windows = with_floor(with_calibration(windows, calibrations), calibrations)
    if "role" not in windows:
        windows = windows.assign(role=None, reference=None)
    own = windows[windows.role.isna() | (windows.role == "variant")]  # a pair's reference windows: its ratios only
    summary = aggregate(own, KEYS, (*TRIAL_QUANTITIES, "ms_per_step", "ms", "floor_multiple"))
    summary = summary.merge(paired_frame(windows, tuple(KEYS), round_column="trial"), on=KEYS, how="left")
    summary["protocol"] = summary["rounds"].map(lambda n: "unpaired" if pd.isna(n) else "paired")
    summary = verdicts(summary, ("mode", "phase", "batch_size", "context_len"))
    ok = own[own.status == "ok"]
    facts = ok.groupby(KEYS)[[f for f in FACTS if f in ok]].first().reset_index() if len(ok) else None
    if facts is not None:
        summary = summary.merge(facts, on=KEYS, how="left")
    summary["j_per_token_mean"], summary["j_per_token_ci95"] = summary.gpu_j_per_token_mean, summary.gpu_j_per_token_ci95
    summary["floor_multiple"] = summary.floor_multiple_mean
    order = {v: i for i, v in enumerate(VARIANTS)}
    return (summary.assign(_key=summary.variant.map(order))
            .sort_values(["_key", "phase", "mode", "context_len", "batch_size"]).drop(columns="_key")
            .reset_index(drop=True))


def _label(variant: str, mode: str) -> str:
    """A row's or line's name: the variant, or transformers' generate with its cache for the anchor's modes."""
    return f"transformers generate, {mode.removeprefix('hf_')} cache" if mode.startswith("hf_") else variant


def decode_energy_vs_batch(summary: pd.DataFrame, out_dir: Path, context_len: int, mode: str) -> Path:
    """J per generated token against batch size at one context, per variant (95% intervals), with transformers'
    generate as dashed anchors."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    rows = summary[(summary.context_len == context_len) & (summary.status == "ok")
                   & (((summary.phase == "decode") & (summary["mode"] == mode)) | (summary.phase == "generate"))]
    if rows.empty:
        _empty(ax, "no decode measured in these results")
    for (variant, m), group in rows.groupby(["variant", "mode"], sort=False):
        group = group.sort_values("batch_size")  # the anchors: transformers' generate, sdpa's colour, dashed
        anchor = m.startswith("hf_")
        ax.errorbar(group.batch_size, group.j_per_token_mean, yerr=group.j_per_token_ci95.fillna(0),
                    marker="x" if m == "hf_dynamic" else "+" if anchor else variant_marker(variant), ms=4, capsize=2,
                    lw=1, ls="--" if anchor else "-", color=variant_color(variant), label=_label(variant, m))
    ax.set(xscale="log", yscale="log", xlabel="batch size (sequences decoded together)",
           ylabel="GPU energy, J per generated token")
    if not rows.empty:
        ax.set_xticks(sorted(rows.batch_size.unique()), [str(b) for b in sorted(rows.batch_size.unique())])
        ax.minorticks_off()
        fig.legend(*ax.get_legend_handles_labels(), ncol=4, fontsize=6, loc="lower center", frameon=False)  # off the data
    return _save(fig, out_dir, "inference_decode_energy", rect=(0, 0.14, 1, 1))


def decode_latency_vs_context(summary: pd.DataFrame, out_dir: Path, mode: str) -> Path:
    """ms per decode step against the context length, one panel per batch size, per variant."""
    rows = summary[(summary.phase == "decode") & (summary["mode"] == mode) & (summary.status == "ok")]
    batches = sorted(rows.batch_size.unique()) or [1]
    fig, axes = plt.subplots(1, len(batches), figsize=(3 * len(batches) + 1, 3.2), squeeze=False)
    for ax, batch in zip(axes[0], batches):
        data = rows[rows.batch_size == batch]
        if data.empty:
            _empty(ax, "no decode measured in these results")
            continue
        for variant, group in data.groupby("variant", sort=False):
            group = group.sort_values("context_len")
            ax.errorbar(group.context_len, group.ms_per_step_mean, yerr=group.ms_per_step_ci95.fillna(0),
                        marker=variant_marker(variant), ms=3, capsize=2, lw=1, color=variant_color(variant),
                        label=variant)
        ax.set(xscale="log", xlabel="context (tokens)", title=f"batch {batch}")
        ax.set_xticks(sorted(data.context_len.unique()), [str(t) for t in sorted(data.context_len.unique())])
        ax.minorticks_off()  # a log axis's minor labels (6 x 10^2, ...) crowd the two contexts
    axes[0][0].set_ylabel("ms per decode step")
    axes[0][-1].legend(fontsize=6, bbox_to_anchor=(1.02, 1), loc="upper left")
    return _save(fig, out_dir, "inference_decode_latency")


def cache_bytes(summary: pd.DataFrame, out_dir: Path, context_len: int) -> Path:
    """What each variant's cache holds per sequence after `context_len` tokens (all layers), as bars; constant
    caches (a ring, a recurrent state) are marked."""
    fig, ax = plt.subplots(figsize=(7, 3.2))
    rows = summary[(summary.phase == "prefill") & (summary.context_len == context_len) & (summary.status == "ok")]
    rows = rows.drop_duplicates("variant")
    if rows.empty:
        _empty(ax, f"no prefill of {context_len} tokens measured in these results")
    else:
        per_sequence = rows.cache_bytes / rows.batch_size / 2**20
        ax.bar(range(len(rows)), per_sequence, color=[variant_color(v) for v in rows.variant],
               hatch=["//" if b == 0 else "" for b in rows.cache_bytes_per_token], edgecolor="0.2", lw=0.4)
        for x, (value, per_token) in enumerate(zip(per_sequence, rows.cache_bytes_per_token)):
            ax.text(x, value, "constant" if per_token == 0 else f"{per_token / 1024:.0f}\nKiB/token", ha="center",
                    va="bottom", fontsize=6)  # two lines: the labels of neighbouring bars never touch
        ax.set_ylim(top=1.2 * per_sequence.max())
        ax.set_xticks(range(len(rows)), rows.variant, rotation=30, ha="right")
        ax.set_ylabel(f"cache per sequence, MiB\n(after {context_len} tokens)")
    return _save(fig, out_dir, "inference_cache_bytes")


def decode_table(summary: pd.DataFrame, mode: str, context_lens: list[int], batch_sizes: list[int]) -> str:
    """The paper's decode table: per variant (and anchor), batch and context, ms/step, J per generated token with
    its interval, its paired ratio to the reference (a column only where some row is paired), cache bytes per token
    and the floor multiple."""
    rows = summary[summary.phase.isin(["decode", "generate"]) & summary.context_len.isin(context_lens)
                   & summary.batch_size.isin(batch_sizes)
                   & ((summary["mode"] == mode) | (summary.phase == "generate"))]
    any_paired = "protocol" in rows and (rows.protocol == "paired").any()
    body = []
    for _, r in rows.iterrows():
        cells = [_label(r.variant, r["mode"]), str(r.batch_size), str(r.context_len)]
        if r.status != "ok":
            body.append(cells + [r.status] + [""] * (4 if any_paired else 3))
            continue
        ratio = [latex.ratio_text(r, "gpu_j_per_token") if r.get("protocol") == "paired" else "unpaired"]
        body.append(cells + [latex.fmt(r.ms_per_step_mean, ".2f"),
                             latex.pm(r.j_per_token_mean, r.j_per_token_ci95, ".2f", 1e3)]
                    + (ratio if any_paired else [])
                    + [latex.fmt(r.get("cache_bytes_per_token"), ",.0f"), latex.fmt(r.floor_multiple, ".1f")])
    body += [[v, "", "", "not measured"] + [""] * (4 if any_paired else 3) for v in not_measured(summary)]
    header = (["variant", "batch", "context", "ms/step", "mJ/token"] + (["energy ratio [95\\%]"] if any_paired else [])
              + ["cache B/token", "floor $\\times$"])
    return latex.booktabs(header, body, "lrrrr" + ("l" if any_paired else "") + "rr")


def prefill_table(summary: pd.DataFrame, cut: dict[str, list[str]] | None = None) -> str:
    """The paper's prefill table: per variant, one column per prompt length, ms per prefill and mJ per prompt token
    with its interval (a status where the cell did not run, "cut" where `cut`, `InferenceConfig.cut_cells`, left it
    out)."""
    rows = summary[summary.phase == "prefill"] if len(summary) else summary
    lengths = sorted(rows.context_len.unique()) if len(rows) else []
    body = []
    for variant, group in rows.groupby("variant", sort=False):
        cells = group.set_index("context_len")
        line = [variant]
        for t in lengths:
            r = cells.loc[t] if t in cells.index else None
            if r is None or r.status != "ok":
                left_out = is_cut(cell_name("prefill", "eager", int(group.batch_size.iloc[0]), t),
                                  variant_cut(cut or {}, variant))
                line += [r.status if r is not None else "cut" if left_out else "", ""]
                continue
            line += [latex.fmt(r.ms_mean, ",.1f"), latex.pm(r.gpu_j_per_token_mean, r.gpu_j_per_token_ci95, ".3f", 1e3)]
        body.append(line)
    header = ["variant"] + [h for t in lengths for h in (f"ms, T = {t:,}", "mJ/token")]
    return latex.booktabs(header, body, "l" + "rr" * len(lengths))


def prefill_macros(summary: pd.DataFrame) -> dict[str, str]:
    """The longest prefill (`InferencePrefillLongest`) and each variant's mJ per prompt token there
    (`InferencePrefill<Variant>Mj`, its status, or "not measured")."""
    rows = summary[summary.phase == "prefill"] if len(summary) else summary
    if rows.empty:
        return {"InferencePrefillLongest": "n/a"}
    longest = int(rows.context_len.max())
    macros = {"InferencePrefillLongest": f"{longest:,}"}
    at_longest = rows[rows.context_len == longest].set_index("variant")
    for variant in family_variants(summary):
        r = at_longest.loc[variant] if variant in at_longest.index else None
        macros[f"InferencePrefill{latex.camel(variant)}Mj"] = (
            "not measured" if r is None else latex.fmt(r.gpu_j_per_token_mean, ".2f", 1e3) if r.status == "ok"
            else str(r.status))
    return macros


def _cell(summary: pd.DataFrame, variant: str, mode: str, phase: str, batch: int, context: int) -> pd.DataFrame:
    return summary[(summary.variant == variant) & (summary["mode"] == mode) & (summary.phase == phase)
                   & (summary.batch_size == batch) & (summary.context_len == context)]


def decode_comparison(summary: pd.DataFrame, variant: str, mode: str, batch: int, context: int
                      ) -> Comparison | str | None:
    """`variant`'s decode energy per token against the reference's at one cell: a `Comparison`, the variant's
    status where it did not run ("unsupported", "oom"), or None where either has no result."""
    rows = pd.concat([_cell(summary, v, mode, "decode", batch, context) for v in (variant, REFERENCE)])
    if len(rows) == 2 and (rows.status == "ok").all():
        return compare(rows.assign(mode=mode), (variant, mode), (REFERENCE, mode), "gpu_j_per_token")
    status = rows[rows.variant == variant].status
    return status.iloc[0] if len(status) and status.iloc[0] != "ok" else None


def _beyond_spread(c: Comparison, between_job_spread: float | None) -> bool:
    """The intervals separate and the difference exceeds the between-job spread (a fraction; None: unknown)."""
    return c.distinct and (between_job_spread is None or abs(c.ratio - 1) > between_job_spread)


def _saving_words(c: Comparison | str | None, between_job_spread: float | None = None) -> str:
    """A table cell: the ratio and what the intervals allow ("0.41, 59% lower"), a status, or "not measured"."""
    if c is None or (isinstance(c, Comparison) and c.ratio is None):
        return "not measured"
    if isinstance(c, str):
        return c
    if not c.distinct:
        return f"{c.ratio:.2f}, indistinguishable"
    if not _beyond_spread(c, between_job_spread):
        return f"{c.ratio:.2f}, within the between-job spread"
    return f"{c.ratio:.2f}, {100 * abs(1 - c.ratio):.0f}% {'lower' if c.ratio < 1 else 'higher'}"


def savings_table(summary: pd.DataFrame, training: pd.DataFrame | None, mode: str, cells: list[tuple[int, int]],
                  train_seq_len: int, between_job_spread: float | None, cut: dict[str, list[str]] | None = None) -> str:
    """The paper's savings table: per variant, its decode energy per token over the reference's at each of `cells`
    ((batch, context)) beside its training energy per token over the reference's at `train_seq_len` (eager, the
    long-context results), worded as the intervals allow. A `SAME_DECODE` variant's decode is the reference's own
    computation, so it is not compared; another's difference no larger than `between_job_spread` (a fraction, see
    `same_decode_spread`) is called what it is; a cell that `cut` (`InferenceConfig.cut_cells`) left out says "cut".
    Every variant of the family is a row, measured or not."""
    t = (training[(training.seq_len == train_seq_len) & (training["mode"] == "eager")]
         if training is not None and len(training) else None)
    measured = set(summary.variant) if len(summary) else set()
    body = []
    for variant in [v for v in family_variants(summary) if v != REFERENCE]:
        if variant not in measured:
            decode = ["not measured"] * len(cells)
        elif variant in SAME_DECODE:
            decode = [f"{REFERENCE}'s own step"] * len(cells)
        else:
            decode = ["cut" if is_cut(cell_name("decode", mode, b, c), variant_cut(cut or {}, variant))
                      else _saving_words(decode_comparison(summary, variant, mode, b, c), between_job_spread)
                      for b, c in cells]
        status = [] if t is None else list(t[t.variant == variant].status)
        trained = (status[0] if status and status[0] != "ok" else "not measured" if t is None
                   else _saving_words(compare(t, (variant, "eager"), (REFERENCE, "eager"), "gpu_j_per_token")))
        body.append([variant, *decode, trained])
    header = (["variant"] + [f"decode, batch {b} after {c:,}" for b, c in cells]
              + [f"training at {train_seq_len:,} tokens (eager)"])
    return latex.booktabs(header, body, "l" + "l" * (len(cells) + 1))


def decode_savings_brief(summary: pd.DataFrame, mode: str, batch: int, context: int,
                         between_job_spread: float | None) -> str:
    """The abstract's clause: the variants whose decode at (`batch`, `context`) uses less energy per token than
    the reference's, beyond both intervals and the between-job spread, with their savings ("gqa (59%) and
    linear (81%) use less energy per generated token than sdpa"); the exact variants are not compared."""
    saved = []
    for variant in [v for v in VARIANTS if v != REFERENCE and v not in SAME_DECODE]:
        c = decode_comparison(summary, variant, mode, batch, context)
        if isinstance(c, Comparison) and c.ratio < 1 and _beyond_spread(c, between_job_spread):
            saved.append(f"{variant} ({100 * (1 - c.ratio):.0f}\\%)")
    if not saved:
        return f"no variant decodes with less energy per token than {REFERENCE} beyond the intervals"
    verb = " use" if len(saved) > 1 else " uses"
    return (", ".join(saved[:-1]) + " and " + saved[-1] if len(saved) > 1 else saved[0]) + verb + (
        f" less energy per generated token than {REFERENCE}")


FLOOR_GOAL, ANCHOR_GOAL = 1.5, 0.5  # the native decode step at batch 1: x its memory floor; x the anchor's J/token


def decode_goals_words(reference: pd.DataFrame, anchor: pd.DataFrame) -> str:
    """The two goals for the native attention's decode at batch 1, each reached or not with the figure reached: its
    step within `FLOOR_GOAL` x its memory floor, and at most `ANCHOR_GOAL` x the energy per generated token of
    transformers' static-cache generate (`reference`, `anchor`: their summary rows); "" until both are measured."""
    if reference.empty or anchor.empty or reference.status.iloc[0] != "ok" or anchor.status.iloc[0] != "ok":
        return ""
    floor = reference.floor_multiple.iloc[0]
    energy = reference.j_per_token_mean.iloc[0] / anchor.j_per_token_mean.iloc[0]
    times = "$\\times$"

    def goal(value: float, target: float, what: str) -> str:  # what: the goal, "{}" where its multiple goes
        verdict = "reached" if value <= target else "not reached"
        return f"{what.format(f'{target}{times}')} is {verdict} ({value:.2f}{times})"

    floor_goal = goal(floor, FLOOR_GOAL, "a step within {} its memory floor")
    anchor_goal = goal(energy, ANCHOR_GOAL, "energy per generated token at most {} the anchor's")
    return f"Of the two goals for this step, {floor_goal} and {anchor_goal}."


def not_measured(summary: pd.DataFrame) -> list[str]:
    """The variants of these results' model families with no cell in these results."""
    measured = set(summary.variant) if len(summary) else set()
    return [v for v in family_variants(summary) if v not in measured]


# exact variants whose decode step is the same code (one SDPA call of the single query over a full KV cache)
SAME_DECODE = tuple(v for v, s in VARIANTS.items() if s.decode_cache == "kv" and s.attention_function is not None
                    and s.exact and "gpt2" not in s.unsupported)


def same_decode_spread(summary: pd.DataFrame, mode: str) -> tuple[float | None, int]:
    """The largest relative spread (max / min - 1) of decode energy per token among the `SAME_DECODE` variants
    over the cells where at least two of them were measured, and how many variants that takes in: identical code
    run in different jobs, so this is the between-job variation that no comparison across jobs can resolve."""
    rows = summary[(summary.phase == "decode") & (summary["mode"] == mode) & (summary.status == "ok")
                   & summary.variant.isin(SAME_DECODE)] if len(summary) else summary
    if rows.empty:
        return None, 0
    spreads = [g.j_per_token_mean.max() / g.j_per_token_mean.min() - 1
               for _, g in rows.groupby(["batch_size", "context_len"]) if len(g) > 1]
    return (max(spreads) if spreads else None), rows.variant.nunique()


def build_inference_report(frame: pd.DataFrame, calibrations: dict[str, dict], results_dir: Path, label: str,
                           figures_dir: Path, paper_dir: Path) -> pd.DataFrame:
    """An inference results folder into `summary.csv` (every cell), `decode.csv` (decode and generate), the decode
    table, three figures and the macros `paper/inference.tex` uses; returns the summary."""
    summary = inference_summary(frame, calibrations)
    generated = paper_dir / "generated" / label
    generated.mkdir(parents=True, exist_ok=True)
    decode = summary[summary.phase.isin(["decode", "generate"])] if len(summary) else summary
    for name, table in (("summary", summary), ("decode", decode)):
        table.to_csv(results_dir / f"{name}.csv", index=False)
        table.to_csv(generated / f"{name}.csv", index=False)
    config = latest_config(frame[frame.kind == "inference"])
    mode, cut = config.get("decode_mode", "graph"), config.get("cut_cells", {})
    contexts, batches = config.get("decode_context_lens", [512]), config.get("decode_batch_sizes", [1])
    # the largest batch the grid keeps after the longest context (a cell whose pair does not fit is cut from it)
    kept = [b for b in batches if not is_cut(cell_name("decode", mode, b, contexts[-1]), variant_cut(cut, REFERENCE))]
    last_batch = max(kept or batches)
    shown = sorted({batches[0], last_batch, batches[-1]})
    (generated / "decode.tex").write_text(decode_table(summary, mode, contexts, shown))
    (generated / "prefill.tex").write_text(prefill_table(summary, cut))
    out = figures_dir / label
    decode_energy_vs_batch(summary, out, contexts[0], mode)
    decode_latency_vs_context(summary, out, mode)
    cache_bytes(summary, out, config.get("prefill_lens", [512])[0])
    run = read_run(results_dir)
    longcontext = results_dir.parent / "longcontext" / "summary.csv"
    training = pd.read_csv(longcontext) if longcontext.exists() else None
    reference = _cell(summary, REFERENCE, mode, "decode", batches[0], contexts[0])
    anchor = _cell(summary, REFERENCE, "hf_static", "generate", batches[0], contexts[0])
    spread, spread_variants = same_decode_spread(summary, mode)
    (generated / "savings.tex").write_text(savings_table(
        summary, training, mode, [(batches[0], contexts[0]), (last_batch, contexts[-1])], contexts[-1], spread, cut))
    macros = {
        "InferenceDevice": frame.device.dropna().iloc[0] if frame.device.notna().any() else "n/a",
        "InferenceNewTokens": str(config.get("new_tokens", "n/a")),
        "InferencePrefillLens": ", ".join(str(t) for t in config.get("prefill_lens", [])) or "n/a",
        "InferencePrefillBatch": str(config.get("prefill_batch_size", "n/a")),
        "InferenceBatches": ", ".join(str(b) for b in batches), "InferenceContexts": " and ".join(map(str, contexts)),
        "InferenceDecodeMode": mode, "InferenceTrials": str(config.get("trials", "n/a")),
        "InferenceWindowS": str(config.get("window_s", "n/a")), "InferenceReference": REFERENCE,
        "InferenceRefJPerToken": latex.pm(reference.j_per_token_mean.iloc[0], reference.j_per_token_ci95.iloc[0], ".3f")
        if len(reference) else "n/a",
        "InferenceRefMsPerStep": latex.fmt(reference.ms_per_step_mean.iloc[0], ".2f") if len(reference) else "n/a",
        "InferenceRefFloorMultiple": latex.fmt(reference.floor_multiple.iloc[0], ".1f") if len(reference) else "n/a",
        "InferenceAnchorJPerToken": latex.pm(anchor.j_per_token_mean.iloc[0], anchor.j_per_token_ci95.iloc[0], ".3f")
        if len(anchor) else "n/a",
        "InferenceDecodeGoals": decode_goals_words(reference, anchor),
        "InferenceFirstBatch": str(batches[0]), "InferenceFirstContext": str(contexts[0]),
        "InferenceLastBatch": str(last_batch), "InferenceLastContext": str(contexts[-1]),
        "InferenceSavingsBrief": decode_savings_brief(summary, mode, last_batch, contexts[-1], spread),
        "InferenceSameDecode": ", ".join(SAME_DECODE),
        "InferenceSameDecodeSpreadPct": latex.fmt(spread, ".0f", 100),
        "InferenceSameDecodeMeasured": str(spread_variants),
        **prefill_macros(summary),
        "InferenceGpuMinutes": latex.fmt(run.get("minutes"), ".1f"),
        "InferenceMeasuredFractionPct": latex.fmt(run.get("measured_fraction"), ".0f", 100),
    }
    latex.write_section_macros(macros, family_of(frame), "inference.tex", paper_dir, generated, ("Inference",))
    return summary
