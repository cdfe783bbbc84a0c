"""Long-context frames: the sweep's summary per (variant, mode, seq_len), the layer's per (variant, layer_pass,
seq_len), and the crossover lengths from which a variant beats the reference (`sdpa`) for good: in the fast mode
from the paired ratios (beyond the A/A bound at each length), in eager mode (the second curve, unpaired) from the
cells' intervals."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from ..results import read_run
from . import figures, latex
from .figures import GIB
from ..experiments._paired import REFERENCE
from .frames import (INDISTINGUISHABLE, TRIAL_QUANTITIES, VERDICT_WORDS, aggregate, family_of, family_variants,
                     latest_config, paired_frame, provenance_text, verdicts, with_calibration)

# quantity -> whether lower is better; peak memory has no interval (one maximum per cell)
CROSSOVER_QUANTITIES = {"gpu_j_per_token": True, "tokens_per_s": False, "peak_mem_bytes": True}
# each quantity's column prefix in crossover.csv
PREFIXES = {"gpu_j_per_token": "", "tokens_per_s": "tokens_per_s_", "peak_mem_bytes": "peak_mem_"}
CROSSOVER_COLUMNS = ["variant", "reference", "measured", "crossover_seq_len", "ci_low", "ci_high"]
MEMORY_MARGIN = 0.05  # a memory crossover needs the variant at least 5% below the reference: a few MiB are not one


def sweep_summary(frame: pd.DataFrame, calibrations: dict[str, dict]) -> pd.DataFrame:
    """One row per (variant, mode, seq_len) of the training sweep, with `batch_size`: the variant's own windows
    aggregated and, for a paired (fast-mode) cell, its ratios to the reference at that length with their verdicts
    beyond the A/A bound of that length (`frames.paired_frame`, `frames.verdicts`). Besides the aggregates' own
    names, `mean_power_w`, `peak_mem_gib` and `mfu` carry the columns long-context tables are read by."""
    windows = frame[frame.kind == "sweep"] if "kind" in frame else frame.iloc[:0]
    if windows.empty:
        return pd.DataFrame()
    if "role" not in windows:
        windows = windows.assign(role=None)
    own = windows[windows.role.isna() | (windows.role == "variant")]
    keys = ["variant", "mode", "seq_len"]
    summary = aggregate(with_calibration(own, calibrations), [*keys, "batch_size"])
    summary = summary.merge(paired_frame(windows, keys, round_column="trial"), on=keys, how="left")
    summary["protocol"] = summary["rounds"].map(lambda n: "unpaired" if pd.isna(n) else "paired")
    summary = verdicts(summary, ("mode", "seq_len"))
    summary["mean_power_w"] = summary.gpu_power_mean_w_mean
    # eager: the allocator's peak, exact and blind to what earlier cells left cached; a paired cell: the device
    # memory in use with the variant's trainer alone on the card (CUDA-graph replays bypass the allocator)
    eager = summary["mode"] == "eager"
    alone = pd.to_numeric(summary.get("alone_gpu_mem_used_bytes", pd.Series(index=summary.index, dtype=float)),
                          errors="coerce")
    summary["peak_mem_bytes"] = summary.torch_peak_mem_bytes_max.where(
        eager, alone.where(alone.notna(), summary.gpu_mem_used_peak_bytes_max))
    summary["peak_mem_source"] = eager.map({True: "allocator peak", False: "device memory in use (NVML)"})
    summary["peak_mem_gib"] = summary.peak_mem_bytes / GIB
    summary["mfu"] = summary.mfu_mean
    return summary.sort_values(["variant", "mode", "seq_len"]).reset_index(drop=True)


def layer_summary(frame: pd.DataFrame, calibrations: dict[str, dict]) -> pd.DataFrame:
    """One row per (variant, layer_pass, seq_len) of the attention layer alone, with energy per call
    (`gpu_j_per_call_mean`, `_ci95`, `_cv`)."""
    windows = frame[frame.kind == "layer"] if "kind" in frame else frame.iloc[:0]
    if windows.empty:
        return pd.DataFrame()
    windows = windows.assign(gpu_j_per_call=pd.to_numeric(windows.gpu_energy_j, errors="coerce") / windows.calls)
    summary = aggregate(with_calibration(windows, calibrations), ["variant", "layer_pass", "seq_len", "batch_size"],
                        (*TRIAL_QUANTITIES, "gpu_j_per_call"))
    return summary.sort_values(["variant", "layer_pass", "seq_len"]).reset_index(drop=True)


def layer_macros(layers: pd.DataFrame, variants: list[str]) -> dict[str, str]:
    """Per variant of the family, the attention layer alone's forward + backward TFLOP/s at the longest length it
    ran (`LongContextLayer<Variant>Tflops`, with `...At`, that length) and at the shortest (`...TflopsShortest`);
    "not measured" (n/m) for a variant without such windows."""
    ok = layers[(layers.status == "ok") & (layers.layer_pass == "forward_backward")].dropna(subset=["tflops_mean"]) \
        if len(layers) else layers
    macros = {}
    for variant in variants:
        g = ok[ok.variant == variant].sort_values("seq_len") if len(ok) else ok
        key = "LongContextLayer" + latex.camel(variant)
        if g.empty:
            macros.update({key + "Tflops": "not measured", key + "At": "any length", key + "TflopsShortest": "n/m"})
            continue
        macros[key + "Tflops"] = latex.fmt(g.tflops_mean.iloc[-1], ".0f")
        macros[key + "At"] = seq_label(g.seq_len.iloc[-1])
        macros[key + "TflopsShortest"] = latex.fmt(g.tflops_mean.iloc[0], ".0f")
    return macros


def crossover_length(lengths: list[int], advantage: list[float | None]) -> float | None:
    """The length from which `advantage` (> 0: the variant is better; None: only the variant failed there;
    inf: only the reference failed) stays positive to the end of the grid, interpolated in log T between the last
    length where it is not and the first where it is (that first length itself where a failure leaves nothing to
    interpolate); the first length when positive everywhere, None when not positive at the last length."""
    k = len(lengths)
    while k > 0 and advantage[k - 1] is not None and advantage[k - 1] > 0:
        k -= 1
    if k == len(lengths):
        return None
    if k == 0:
        return float(lengths[0])
    before, after = advantage[k - 1], advantage[k]
    if before is None or math.isinf(after) or math.isnan(before):
        return float(lengths[k])
    fraction = -before / (after - before)
    return math.exp(math.log(lengths[k - 1]) + fraction * (math.log(lengths[k]) - math.log(lengths[k - 1])))


def crossover_frame(summary: pd.DataFrame, mode: str = "eager", reference: str = REFERENCE,
                    expected: list[str] | None = None, grid: list[int] | None = None,
                    cut: dict[str, list[int]] | None = None) -> pd.DataFrame:
    """One row per variant: from which length its energy per token stays below the reference's
    (`crossover_seq_len`, with `ci_low` / `ci_high` where the 95% intervals put it earliest / latest; empty when
    not within the grid), and the same for throughput (`tokens_per_s_...`) and peak memory (`peak_mem_...`, which
    must be at least `MEMORY_MARGIN` below). Paired cells (the fast mode) are judged by their ratios to the
    reference, the latest length by the claim the A/A bound allows; unpaired ones (eager) by the overlap of the two
    cells' intervals. A length where the variant failed (out of memory) and the reference ran counts against the
    variant. A variant without a result in `mode` at every length of the grid (ok or failed), or one of `expected`
    without any, gets a row with `measured` False and the lengths it has (`lengths_measured`): a length not yet
    measured is no evidence either way, and the variant is never silently absent. `grid`: the lengths a crossover
    is judged over (default: every length measured in `mode`); cells at other lengths are left out of it. `cut`:
    variant -> the grid's lengths its job leaves out (`LongContextConfig.cut_seq_lens`), counted in `lengths_cut`:
    such a variant is never claimed, however much of the rest it has."""
    in_mode = summary[summary["mode"] == mode] if len(summary) else summary
    if grid is not None and len(in_mode):
        in_mode = in_mode[in_mode.seq_len.isin(grid)]
    rows = in_mode[in_mode.status == "ok"] if len(in_mode) else in_mode
    if rows.empty or reference not in set(rows.variant):
        return pd.DataFrame(columns=CROSSOVER_COLUMNS)
    grid = sorted(in_mode.seq_len.unique())
    ref = rows[rows.variant == reference].set_index("seq_len")
    out = []
    for variant in [v for v in in_mode.variant.unique() if v != reference]:
        tried = set(in_mode[in_mode.variant == variant].seq_len)
        left_out = len(set(grid) & set((cut or {}).get(variant, [])))
        if tried != set(grid):  # partly measured: claims wait for the rest of its lengths
            out.append({"variant": variant, "reference": reference, "measured": False, "lengths_measured": len(tried),
                        "lengths_grid": len(grid), "lengths_cut": left_out})
            continue
        own = rows[rows.variant == variant].set_index("seq_len")
        lengths = [t for t in grid if t in own.index or t in ref.index]  # both failed: no evidence either way
        row = {"variant": variant, "reference": reference, "measured": True,
               "protocol": own.protocol.iloc[0] if len(own) and "protocol" in own else "unpaired"}
        for quantity, lower_is_better in CROSSOVER_QUANTITIES.items():
            found = [crossover_length(lengths, [advantage(own, ref, t, quantity, lower_is_better, bound)
                                                for t in lengths]) for bound in ("point", "early", "late")]
            prefix = PREFIXES[quantity]
            row[f"{prefix}crossover_seq_len"] = found[0]
            if quantity != "peak_mem_bytes":
                row[f"{prefix}ci_low"], row[f"{prefix}ci_high"] = found[1], found[2]
        out.append(row)
    out += [{"variant": v, "reference": reference, "measured": False, "lengths_measured": 0}
            for v in sorted(set(expected or []) - set(in_mode.variant) - {reference})]
    frame = pd.DataFrame(out)
    return frame.reindex(columns=[*frame.columns, *(c for c in CROSSOVER_COLUMNS if c not in frame)])  # none measured


def advantage(own: pd.DataFrame, ref: pd.DataFrame, t: int, quantity: str, lower_is_better: bool,
              which: str) -> float | None:
    """How much better the variant is than the reference at length `t` (> 0: better; None: the variant failed
    there and the reference ran; inf: only the reference failed). `which`: "point" (the estimate), "early" (the
    most favourable end of the 95% interval) or "late" (the least favourable end; for a paired cell also beyond the
    A/A bound). Peak memory has no interval: better means at least `MEMORY_MARGIN` lower."""
    if t not in own.index:
        return None
    if t not in ref.index:
        return math.inf
    if quantity == "peak_mem_bytes":
        a, b = own.loc[t, "peak_mem_bytes"], ref.loc[t, "peak_mem_bytes"]
        return None if pd.isna(a) or pd.isna(b) else 1 - MEMORY_MARGIN - a / b
    sign = 1 if lower_is_better else -1  # a ratio below 1 is better for energy, above 1 for throughput
    if own.loc[t].get("protocol") == "paired":
        ratio = own.loc[t, f"{quantity}_ratio"]
        low, high = own.loc[t, f"{quantity}_ratio_low"], own.loc[t, f"{quantity}_ratio_high"]
        bound = own.loc[t].get(f"{quantity}_aa_bound")
        bound = 0.0 if bound is None or pd.isna(bound) else bound
        point = sign * (1 - ratio)
        if which == "point":
            return point
        ends = sorted((sign * (1 - low), sign * (1 - high)))
        return ends[1] if which == "early" else min(ends[0], point - bound)
    a, b = own.loc[t, f"{quantity}_mean"], ref.loc[t, f"{quantity}_mean"]
    widths = own.loc[t, f"{quantity}_ci95"] + ref.loc[t, f"{quantity}_ci95"]
    margin = {"point": 0, "early": 1, "late": -1}[which] * widths
    return (b - a if lower_is_better else a - b) + margin


def seq_label(seq_len: float | None) -> str:
    """512, 2.9K, 64K: a length as the text prints it; "none" for no length."""
    if seq_len is None or (isinstance(seq_len, float) and math.isnan(seq_len)):
        return "none"
    return f"{seq_len / 1024:.3g}K" if seq_len >= 1000 else f"{seq_len:.0f}"


def crossover_cell(row, prefix: str, top: int, with_interval: bool = True) -> str:
    """One crossover as a table prints it (a row of `crossover_frame`, None for none; `prefix` picks the quantity):
    the length with the range its intervals allow ("1.82K [1.74K, 3.13K]", "> 64K" for a bound open past the grid),
    "none up to 64K", or why there is none yet (lengths measured so far, a grid cut, not measured)."""
    if row is None or not row.get("measured", False):
        done = row.get("lengths_measured") if row is not None else None
        if row is not None and row.get("lengths_cut", 0) > 0:
            return f"grid cut to {int(row['lengths_grid'] - row['lengths_cut'])} lengths: not claimed"
        return (f"{int(done)} of {int(row['lengths_grid'])} lengths so far" if done and not pd.isna(done)
                else "not measured")
    point = row.get(f"{prefix}crossover_seq_len")
    if point is None or pd.isna(point):
        return f"none up to {seq_label(top)}"
    if not with_interval:
        return seq_label(point)
    late = row.get(f"{prefix}ci_high")  # none: the interval (or the A/A bound) keeps it open past the grid
    late = f"> {seq_label(top)}" if late is None or pd.isna(late) else seq_label(late)
    return f"{seq_label(point)} [{seq_label(row.get(f'{prefix}ci_low'))}, {late}]"


def crossover_table(fast: pd.DataFrame, eager: pd.DataFrame, max_seq_len: int, eager_max_seq_len: int) -> str:
    """The paper's crossover table: per variant, from which length it beats the reference for good, with the
    length range the intervals allow: in the fast mode (paired) for energy, throughput and memory, and eager (the
    second curve) for energy."""
    variants = list(dict.fromkeys([*fast.get("variant", []), *eager.get("variant", [])]))
    by = lambda frame: {r.variant: r for _, r in frame.iterrows()} if len(frame) else {}  # noqa: E731
    fast_rows, eager_rows = by(fast), by(eager)
    cell = crossover_cell
    rows = [[v, cell(fast_rows.get(v), "", max_seq_len), cell(fast_rows.get(v), "tokens_per_s_", max_seq_len),
             cell(fast_rows.get(v), "peak_mem_", max_seq_len, False), cell(eager_rows.get(v), "", eager_max_seq_len)]
            for v in variants]
    memory = f"memory ($\\geq${latex.fmt(MEMORY_MARGIN, '.0f', 100)}\\% lower)"
    return latex.booktabs(["variant", "energy per token", "throughput", memory, "eager energy"], rows, "lllll")


def claimed_crossovers(crossover: pd.DataFrame) -> pd.DataFrame:
    """The rows measured at every length whose crossover the data claim, earliest first: a point estimate whose
    interval closes within the grid (`ci_high`; for paired cells the saving then exceeds the A/A bound by the last
    length). One whose interval stays open is a point estimate within the noise floor."""
    if not len(crossover):
        return crossover
    rows = crossover[crossover.measured.astype(bool) & crossover.crossover_seq_len.notna()]
    if "ci_high" in rows:
        rows = rows[rows.ci_high.notna()]
    return rows.sort_values("crossover_seq_len")


def crossovers_brief(crossover: pd.DataFrame, max_seq_len: int) -> str:
    """The abstract's clause: the variants whose energy per token stays below the reference's from some length,
    earliest first, how many do not within the grid, and how many are not yet measured at every length
    ("sliding_window from 512, linear from 3.52K; the other 6 not up to 64K"; "none of the 2 variants measured at
    every length so far, up to 64K; 7 are still to be measured"). A crossover counts only where its interval closes
    within the grid (`ci_high`: for paired cells the saving then exceeds the A/A bound by the last length); a point
    estimate below the reference whose interval stays open is named apart, as within the noise floor."""
    measured = crossover[crossover.measured.astype(bool)] if len(crossover) else crossover
    found = measured[measured.crossover_seq_len.notna()].sort_values("crossover_seq_len") if len(measured) else measured
    claimed = claimed_crossovers(crossover)
    parts = [f"{r.variant} from {seq_label(r.crossover_seq_len)}" for r in claimed.itertuples()]
    noise = ", ".join(f"{r.variant} from {seq_label(r.crossover_seq_len)}"
                      for r in found[~found.variant.isin(claimed.variant)].itertuples()) if len(found) else ""
    noise = f" ({noise}: a point estimate within the noise floor)" if noise else ""
    cut = int((crossover.get("lengths_cut", pd.Series(dtype=float)).fillna(0) > 0).sum()) if len(crossover) else 0
    rest, unmeasured = len(measured) - len(parts), len(crossover) - len(measured) - cut
    top = seq_label(max_seq_len)
    cut_text = f"{cut} measured at fewer lengths (the grid cut to fit its GPU budget), not claimed" if cut else ""
    if not parts and measured.empty:
        return (f"none yet: no variant is measured at every length up to {top}" if unmeasured
                else f"none claimed: {cut_text}")
    if not parts and unmeasured:
        variants = "variant" if len(measured) == 1 else "variants"
        text = (f"none of the {len(measured)} {variants} measured at every length so far, up to {top}{noise}; "
                f"{unmeasured} {'is' if unmeasured == 1 else 'are'} still to be measured")
    elif not parts:
        text = f"no variant up to {top}{noise}"
    else:
        named = ", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else parts[0]
        others = "the other one" if rest == 1 else f"the other {rest}"
        text = (named + (f"; {others} not up to {top}{noise}" if rest else "")
                + (f"; {unmeasured} not yet measured at every length" if unmeasured else ""))
    return text + (f"; {cut_text}" if cut else "")


def paired_cells(sweep: pd.DataFrame, mode: str) -> pd.DataFrame:
    """The sweep's paired cells in `mode` (the fast mode), measured or failed."""
    return sweep[(sweep["mode"] == mode) & (sweep.get("protocol") == "paired")] if len(sweep) else sweep


def paired_ratio_table(sweep: pd.DataFrame, mode: str, expected: list[str], grid: list[int] | None = None,
                       cut: dict[str, list[int]] | None = None) -> str:
    """The paired cells as numbers: per variant (the reference's own row first, its A/A control) and length of the
    `mode` grid, energy per token over the reference's with its 95% interval, bold where it is cheaper or dearer
    beyond the A/A bound there; "out of memory" (or the failure) where it failed; "--" where not yet measured,
    "off grid" at a length measured before the grid was cut to `grid` (default: every length is in it), and "cut"
    at a length `cut` leaves out of that variant's job."""
    cells = paired_cells(sweep, mode)
    lengths = sorted(cells.seq_len.unique()) if len(cells) else []
    by_cell = {(r.variant, r.seq_len): r for _, r in cells.iterrows()} if len(cells) else {}

    def cell(variant: str, seq_len: int) -> str:
        row = by_cell.get((variant, seq_len))
        if row is None and seq_len in (cut or {}).get(variant, []):
            return "cut"
        if row is None:
            return "--" if grid is None or seq_len in grid else "off grid"
        if row.status != "ok":
            return "out of memory" if row.status == "oom" else str(row.status)
        text = latex.ratio_text(row, "gpu_j_per_token")
        differs = row.get("gpu_j_per_token_verdict") in VERDICT_WORDS["gpu_j_per_token"]
        return f"\\textbf{{{text}}}" if differs else text

    variants = [REFERENCE, *[v for v in expected if v != REFERENCE]]
    rows = [[f"{v} (A/A)" if v == REFERENCE else v, *(cell(v, t) for t in lengths)] for v in variants]
    return latex.booktabs(["variant", *(f"$T = {seq_label(t)}$" for t in lengths)], rows, "l" + "l" * len(lengths))


def cut_note(cut: dict[str, list[int]]) -> str:
    """The sentence that says which variants' jobs leave which lengths out ("" when none do)."""
    groups: dict[tuple[int, ...], list[str]] = {}
    for variant, lengths in sorted(cut.items()):
        groups.setdefault(tuple(sorted(lengths)), []).append(variant)
    if not groups:
        return ""
    tt = lambda names: ", ".join("\\texttt{%s}" % name for name in names)  # noqa: E731
    parts = [f"{tt(names)} without {', '.join(seq_label(t) for t in lengths)}" for lengths, names in groups.items()]
    return (f"To fit the GPU budget the grid is cut for some variants ({'; '.join(parts)}): their rows say "
            "\\emph{cut} there, and no crossover is claimed for them.")


def reference_memory_text(sweep: pd.DataFrame, mode: str) -> str:
    """The reference's own peak memory in `mode` at each length it was measured, alone on the card ("20.1 GiB at
    32K, 31.2 GiB at 64K"; "out of memory at 64K": a cell that could not run, with its status): what shows that the
    model trains at each length on one card."""
    own = sweep[(sweep.variant == REFERENCE) & (sweep["mode"] == mode)] if len(sweep) else sweep
    if own.empty:
        return "not yet measured"
    return ", ".join(f"{r.peak_mem_gib:.1f} GiB at {seq_label(r.seq_len)}" if r.status == "ok"
                     else f"{'out of memory' if r.status == 'oom' else r.status} at {seq_label(r.seq_len)}"
                     for r in own.sort_values("seq_len").itertuples())


def longest_length_macros(sweep: pd.DataFrame, mode: str) -> dict[str, str]:
    """At the grid's longest length in `mode`: the paired variants grouped as cheaper, indistinguishable or dearer
    than the reference beyond the A/A bound there (each with its ratio and interval, "none" for an empty group),
    and how many ran out of memory there."""
    cells = paired_cells(sweep, mode)
    if cells.empty:
        return {}
    longest = cells.seq_len.max()
    there = cells[(cells.seq_len == longest) & (cells.variant != REFERENCE)]
    ok = there[there.status == "ok"]
    macros = {"LongContextLongestSeqLen": seq_label(longest),
              "LongContextLongestOom": str(int((there.status == "oom").sum()))}
    for word in (*VERDICT_WORDS["gpu_j_per_token"], INDISTINGUISHABLE):
        macros[latex.camel("long context longest", word)] = latex.group_text(
            ok[ok.get("gpu_j_per_token_verdict") == word], "gpu_j_per_token")
    return macros


def build_longcontext_report(frame: pd.DataFrame, calibrations: dict[str, dict], results_dir: Path, label: str,
                             figures_dir: Path, paper_dir: Path) -> pd.DataFrame:
    """A long-context results folder into `summary.csv` (the training sweep), `layer_summary.csv`, `crossover.csv`
    (the fast mode's, paired) and `crossover_eager.csv` (also under `paper/generated/<label>/`, with the crossover
    table and the macros `paper/longcontext.tex` uses) and the two figures against T; returns the sweep's
    summary."""
    sweep, layers = sweep_summary(frame, calibrations), layer_summary(frame, calibrations)
    sweeps = frame[frame.kind == "sweep"]
    paired_windows = sweeps[sweeps.role.notna()] if "role" in sweeps else sweeps.iloc[:0]
    windows = paired_windows if len(paired_windows) else sweeps
    config = latest_config(windows)
    fast_mode = config.get("fast_mode") or "graph"
    grid, cut = config.get("fast_mode_seq_lens"), config.get("cut_seq_lens", {})
    fast = crossover_frame(sweep, mode=fast_mode, expected=family_variants(frame), grid=grid, cut=cut)
    eager = crossover_frame(sweep, mode="eager", expected=family_variants(frame))
    generated = paper_dir / "generated" / label
    generated.mkdir(parents=True, exist_ok=True)
    for name, table in (("summary", sweep), ("layer_summary", layers), ("crossover", fast), ("crossover_eager", eager)):
        table.to_csv(results_dir / f"{name}.csv", index=False)
        table.to_csv(generated / f"{name}.csv", index=False)
    lengths = lambda mode: sorted(sweep[sweep["mode"] == mode].seq_len.unique()) if len(sweep) else []  # noqa: E731
    fast_lengths, eager_lengths = [t for t in lengths(fast_mode) if grid is None or t in grid], lengths("eager")
    off_grid = [t for t in lengths(fast_mode) if t not in fast_lengths]  # measured before the grid was cut
    (generated / "crossover.tex").write_text(crossover_table(fast, eager, fast_lengths[-1] if fast_lengths else 0,
                                                             eager_lengths[-1] if eager_lengths else 0))
    ratios = paired_ratio_table(sweep, fast_mode, family_variants(frame), grid, cut)
    (generated / "paired_ratios.tex").write_text(ratios)
    figures.energy_vs_seq_len(sweep, figures_dir / label)
    figures.paired_ratio_vs_seq_len(sweep, figures_dir / label, grid)
    figures.memory_vs_seq_len(sweep, figures_dir / label)
    figures.layer_tflops_vs_seq_len(layers, figures_dir / label)
    run = read_run(results_dir)
    paired = sweep[sweep.protocol == "paired"] if len(sweep) else sweep
    control = paired[paired.variant == REFERENCE] if len(paired) else paired
    bounds = control.gpu_j_per_token_aa_bound.dropna() if len(control) else pd.Series(dtype=float)
    all_lengths = sorted(set(fast_lengths) | set(eager_lengths))
    macros = {
        "LongContextDevice": frame.device.dropna().iloc[0] if frame.device.notna().any() else "n/a",
        "LongContextTokensPerStep": latex.fmt(config.get("tokens_per_step"), ",.0f"),
        "LongContextSeqLens": f"{seq_label(all_lengths[0])}--{seq_label(all_lengths[-1])}" if all_lengths else "n/a",
        "LongContextFastMode": fast_mode,
        "LongContextFastSeqLens": ", ".join(seq_label(t) for t in fast_lengths) or "none yet",
        "LongContextOffGridNote": (f"The cells at {', '.join(seq_label(t) for t in off_grid)} were measured before "
                                   "the grid was cut to fit its GPU budget; the table shows them (off grid: "
                                   "not measured there), the crossovers leave them out." if off_grid else ""),
        "LongContextCutNote": cut_note(cut),
        "LongContextPairedCells": str(len(paired)),
        "LongContextCrossoverRows": str(len(fast)),  # the paper's abstract speaks of crossovers only where there are
        "LongContextClaimedCrossovers": str(len(claimed_crossovers(fast))),  # the principles speak of them if any
        "LongContextEagerSeqLens": (f"{seq_label(eager_lengths[0])}--{seq_label(eager_lengths[-1])}"
                                    if eager_lengths else "none"),
        "LongContextRounds": str(config.get("rounds", "n/a")), "LongContextTrials": str(config.get("trials", "n/a")),
        "LongContextWindowS": str(config.get("window_s", "n/a")),
        "LongContextLayerWindowS": str(config.get("layer_window_s", "n/a")), "LongContextReference": REFERENCE,
        "LongContextLossChunkTokens": latex.fmt(config.get("train", {}).get("loss_chunk_tokens"), ",.0f"),
        "LongContextAaBound": (f"energy: {latex.span(bounds.min(), bounds.max(), '.1f', 100)}\\% over the lengths"
                               if len(bounds) else "not yet measured"),
        "LongContextMemoryMarginPct": latex.fmt(MEMORY_MARGIN, ".0f", 100),
        "LongContextReferencePeakMem": reference_memory_text(sweep, fast_mode),
        "LongContextCrossovers": (crossovers_brief(fast, fast_lengths[-1]) if len(fast) and fast_lengths
                                  else "no variant yet: no paired cell is measured" if paired.empty
                                  else f"no variant so far: {len(paired)} paired cells are measured, and the "
                                       f"claims wait for the reference's own job, the A/A control at each length"),
        "LongContextEagerCrossovers": (crossovers_brief(eager, eager_lengths[-1]) if len(eager) and eager_lengths
                                       else "n/a"),
        "LongContextGpuMinutes": latex.fmt(run.get("minutes"), ".1f"),
        "LongContextMeasuredFractionPct": latex.fmt(run.get("measured_fraction"), ".0f", 100),
        **layer_macros(layers, family_variants(frame)),
        **longest_length_macros(sweep, fast_mode),
        **dict(zip(("LongContextPairedCards", "LongContextPairedCommits"), provenance_text(paired_windows))),
    }
    latex.write_section_macros(macros, family_of(frame), "longcontext.tex", paper_dir, generated, ("LongContext",))
    return sweep
