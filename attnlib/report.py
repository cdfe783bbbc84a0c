"""From JSON results to the paper's tables (CSV, LaTeX booktabs), figures (PDF, PNG) and number macros.

Every number the paper prints comes from here: tables are `\\input`, figures `\\includegraphics`, and numbers in
the text are macros in `macros.tex`, so text and data cannot disagree. Figures that have no data (energy on a
CPU-only run) say so on the figure instead of showing zeros.
"""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path

import pandas as pd

from .measurement.stats import summarize
from .registry import VARIANTS

GIB = 2**30
# The prior study's published figures (RTX 4090, GPT-2 small, 20 epochs x 400 batches of 16 x 512),
# as listed in shared/reference/prior-implementation-pitfalls.md; their flaws are the paper's section 2.
PRIOR_STUDY = pd.DataFrame(
    [("baseline", "Baseline", 261, 18.3, 1.39, 2.85), ("sliding_window", "Sliding window", 256, 19.8, 1.43, 4.6),
     ("gqa", "GQA", 232, 18.6, 1.33, 2.85), ("mla", "MLA", 232, 17.7, 1.17, 1.2),
     ("flash", "Flash", 213, 16.5, 1.07, 3.6), ("sdpa", "SDPA", 211, 17.6, 1.27, 2.7),
     ("linear", "Linear", 207, 18.5, 1.21, 3.0), ("lsh", "LSH", 206, 17.2, 1.17, 3.1)],
    columns=["variant", "prior_name", "prior_epoch_s", "prior_mem_gb", "prior_energy_mj", "prior_final_loss"],
)
PRIOR_TOKENS_PER_EPOCH = 400 * 16 * 512
PRIOR_EPOCHS = 20  # their energy is the total over all epochs; their time is per epoch
PRIOR_STUDY["prior_tokens_per_s"] = PRIOR_TOKENS_PER_EPOCH / PRIOR_STUDY.prior_epoch_s
PRIOR_STUDY["prior_j_per_token"] = PRIOR_STUDY.prior_energy_mj * 1e6 / (PRIOR_EPOCHS * PRIOR_TOKENS_PER_EPOCH)
PRIOR_STUDY["prior_power_w"] = PRIOR_STUDY.prior_energy_mj * 1e6 / (PRIOR_EPOCHS * PRIOR_STUDY.prior_epoch_s)
PRIOR_NOTES = {"mla": "label leak", "flash": "wrong layout", "linear": "non-causal", "lsh": "random buckets",
               "sliding_window": "saw the future"}


def load_results(results_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(Path(results_dir).glob("raw/*.json"))]


def trial_frame(results: list[dict]) -> pd.DataFrame:
    """One row per trial window."""
    rows = []
    for r in results:
        if r["kind"] != "trial":
            continue
        m, model = r.get("measurement") or {}, r.get("model") or {}
        rows.append({
            "variant": r["variant"], "mode": r["mode"], "trial": r.get("trial"), "status": r["status"],
            "error": r.get("error"), "device": r.get("device", "unknown"), "device_uuid": r.get("device_uuid"),
            "kernel": model.get("kernel"), "params": model.get("params"), "tokens_per_s": m.get("tokens_per_s"),
            "gpu_j_per_token": m.get("j_per_token"), "gpu_j_per_token_net": m.get("j_per_token_net"),
            "mean_power_w": m.get("gpu_power_mean_w"), "peak_mem_bytes": m.get("torch_peak_mem_bytes"),
            "tflops": m.get("tflops"), "mfu": m.get("mfu"), "j_per_flop": m.get("j_per_flop"),
            "cpu_j_per_token_estimated": (m["cpu_energy_j"] / m["tokens"]) if m.get("cpu_energy_j") and m.get("tokens") else None,
            "co2_g_per_mtoken": (m["co2_kg"] * 1e3 / m["tokens"] * 1e6) if m.get("co2_kg") and m.get("tokens") else None,
            "window_s": m.get("wall_s"), "window_target_s": (r.get("config") or {}).get("window_s"),
            "idle_power_w": (r.get("idle") or {}).get("power_w"), "warmup_s": (r.get("timing") or {}).get("warmup_s"),
            "first_step_s": (r.get("timing") or {}).get("first_step_s"),
        })
    return pd.DataFrame(rows)


def quality_frame(results: list[dict]) -> pd.DataFrame:
    rows = []
    for r in results:
        if r["kind"] == "quality":
            m = r.get("measurement") or {}
            rows.append({"variant": r["variant"], "mode": r["mode"], "quality_status": r["status"],
                         "val_loss": r.get("val_loss"), "quality_tokens": m.get("tokens"),
                         "quality_gpu_energy_j": m.get("gpu_energy_j"), "loss_curve": r.get("loss_curve")})
    return pd.DataFrame(rows)


def _stat(values: pd.Series) -> tuple[float | None, float | None, float | None]:
    s = summarize([None if v is None or (isinstance(v, float) and math.isnan(v)) else v for v in values])
    return s.mean, s.ci95, s.cv


def load_calibrations(results_dir: Path) -> dict[str, dict]:
    """Each GPU's calibrated bf16 GEMM peak and J/FLOP (`calibration/<card uuid>.json`, `attnlib.calibrate_peak`),
    by card; empty when the run measured none (a CPU run)."""
    paths = sorted((Path(results_dir) / "calibration").glob("*.json"))
    return {c["uuid"]: c for c in (json.loads(p.read_text()) for p in paths) if c.get("uuid")}


def summary_frame(results: list[dict], variant_order: list[str] | None = None,
                  calibrations: dict[str, dict] | None = None) -> pd.DataFrame:
    """One row per (variant, mode): means, 95% CIs and CVs over the successful trials, and quality.

    With calibrations, each trial's `mfu` is its model TFLOP/s over its own card's calibrated GEMM peak and its
    `energy_floor_multiple` its J/FLOP over that card's GEMM J/FLOP (the practical floor); a trial on an
    uncalibrated card has neither. Without any, `mfu` is the window's (against the data-sheet peak, if known)."""
    trials, quality = trial_frame(results), quality_frame(results)
    rows = []
    if trials.empty:
        return pd.DataFrame()
    if calibrations:
        card = trials.device_uuid.map(lambda u: calibrations.get(u, {}))
        trials["mfu"] = trials.tflops / card.map(lambda c: c.get("tflops") or math.nan)
        trials["energy_floor_multiple"] = trials.j_per_flop / card.map(lambda c: c.get("j_per_flop") or math.nan)
    else:
        trials["energy_floor_multiple"] = math.nan
    for (variant, mode), group in trials.groupby(["variant", "mode"], sort=False):
        ok = group[group.status == "ok"]
        failed = group[group.status != "ok"]
        tps, tps_ci, _ = _stat(ok.tokens_per_s)
        jpt, jpt_ci, jpt_cv = _stat(ok.gpu_j_per_token)
        jpt_net, _, _ = _stat(ok.gpu_j_per_token_net)
        rows.append({
            "variant": variant, "mode": mode,
            "status": "ok" if failed.empty else failed.status.iloc[0],
            "error": None if failed.empty else failed.error.iloc[0],
            "device": group.device.iloc[0], "kernel": group.kernel.iloc[0], "trials": len(ok),
            "tokens_per_s_mean": tps, "tokens_per_s_ci95": tps_ci,
            "gpu_j_per_token_mean": jpt, "gpu_j_per_token_ci95": jpt_ci, "gpu_j_per_token_cv": jpt_cv,
            "gpu_j_per_token_net_mean": jpt_net,
            "mean_power_w": _stat(ok.mean_power_w)[0],
            "peak_mem_gib": None if ok.peak_mem_bytes.isna().all() else ok.peak_mem_bytes.max() / GIB,
            "params_m": None if group.params.isna().all() else group.params.iloc[0] / 1e6,
            "model_tflops": _stat(ok.tflops)[0], "mfu": _stat(ok.mfu)[0], "j_per_flop": _stat(ok.j_per_flop)[0],
            "energy_floor_multiple": _stat(ok.energy_floor_multiple)[0],
            "cpu_j_per_token_estimated": _stat(ok.cpu_j_per_token_estimated)[0],
            "co2_g_per_mtoken_estimated": _stat(ok.co2_g_per_mtoken)[0],
            "warmup_s": _stat(ok.warmup_s)[0],
            "window_s_min": ok.window_s.min() if len(ok) else None,
            "short_windows": int((pd.to_numeric(ok.window_s) < pd.to_numeric(ok.window_target_s)).sum()),
        })
    summary = pd.DataFrame(rows)
    if not quality.empty:
        summary = summary.merge(quality.drop(columns=["loss_curve"]), on=["variant", "mode"], how="left")
        # compiling changes the speed, not the maths: a mode without its own quality run takes the variant's
        first = quality.dropna(subset=["val_loss"]).groupby("variant").first()
        summary["val_loss_from_mode"] = summary["mode"].where(summary.val_loss.notna(), summary.variant.map(first["mode"]))
        summary["val_loss"] = summary.val_loss.fillna(summary.variant.map(first.val_loss))
    else:
        summary["val_loss"] = None
    order = {v: i for i, v in enumerate(variant_order or [])}
    summary["_order"] = summary.variant.map(lambda v: order.get(v, len(order)))
    return summary.sort_values(["_order", "mode"]).drop(columns="_order").reset_index(drop=True)


def _fmt(value, spec: str, scale: float = 1.0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return format(value * scale, spec)


def _pm(mean, ci, spec: str, scale: float = 1.0) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "n/a"
    return _fmt(mean, spec, scale) + ("" if ci is None or math.isnan(ci) else r" $\pm$ " + _fmt(ci, spec, scale))


def booktabs(header: list[str], rows: list[list[str]], align: str) -> str:
    """A LaTeX booktabs tabular (no jinja2 needed)."""
    esc = lambda s: str(s).replace("_", r"\_").replace("%", r"\%")  # noqa: E731
    body = "\n".join(" & ".join(esc(c) if "$" not in str(c) else str(c) for c in row) + r" \\" for row in rows)
    return (f"\\begin{{tabular}}{{{align}}}\n\\toprule\n" + " & ".join(header) + " \\\\\n\\midrule\n" + body
            + "\n\\bottomrule\n\\end{tabular}\n")


def summary_latex(summary: pd.DataFrame) -> str:
    """The paper's main table. An energy CV over 3% is printed in bold: reported as such, not hidden."""
    def cv(r) -> str:
        text = _fmt(r.gpu_j_per_token_cv, ".1f", 100)
        return f"\\textbf{{{text}}}" if (r.gpu_j_per_token_cv or 0) > 0.03 else text

    rows = [[r.variant, r["mode"], r.status if r.status == "ok" else f"\\textbf{{{r.status}}}", int(r.trials),
             _pm(r.tokens_per_s_mean, r.tokens_per_s_ci95, ",.0f"),
             _pm(r.gpu_j_per_token_mean, r.gpu_j_per_token_ci95, ".3f", 1e3), cv(r),
             _fmt(r.gpu_j_per_token_net_mean, ".3f", 1e3), _fmt(r.mean_power_w, ".0f"), _fmt(r.peak_mem_gib, ".1f"),
             _fmt(r.mfu, ".1f", 100), _fmt(r.energy_floor_multiple, ".1f"), _fmt(r.get("val_loss"), ".3f")]
            for _, r in summary.iterrows()]
    header = ["variant", "mode", "status", "n", "tokens/s", "mJ/token", r"CV \%", "net mJ/token", "W", "peak GiB",
              r"MFU \%", r"$\times$floor", "val loss"]
    return booktabs(header, rows, "llllrrrrrrrrr")


def prior_latex(summary: pd.DataFrame) -> str:
    """Their published figures converted to per-token units (20 epochs x 400 batches of 16 x 512) beside ours."""
    ours = summary[summary["mode"] == "eager"].set_index("variant")
    rows = []
    for _, p in PRIOR_STUDY.iterrows():
        o = ours.loc[p.variant] if p.variant in ours.index else None
        get = lambda key: None if o is None else o.get(key)  # noqa: E731
        rows.append([p.prior_name, f"{p.prior_tokens_per_s:,.0f}", f"{p.prior_j_per_token * 1e3:.1f}",
                     f"{p.prior_power_w:.0f}", f"{p.prior_mem_gb:.1f}",
                     f"{p.prior_final_loss:.2f}" + (f" ({PRIOR_NOTES[p.variant]})" if p.variant in PRIOR_NOTES else ""),
                     _fmt(get("tokens_per_s_mean"), ",.0f"), _fmt(get("gpu_j_per_token_mean"), ".2f", 1e3),
                     _fmt(get("mean_power_w"), ".0f"), _fmt(get("peak_mem_gib"), ".1f"), _fmt(get("val_loss"), ".2f")])
    header = ["variant", "tokens/s", "mJ/token", "W", "GB", "final loss", "tokens/s", "mJ/token", "W", "peak GiB",
              "val loss"]
    return booktabs(header, rows, "lrrrrlrrrrr")


def write_tables(summary: pd.DataFrame, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    summary.to_csv(out_dir / "summary.csv", index=False)
    (out_dir / "summary.tex").write_text(summary_latex(summary))
    (out_dir / "prior_comparison.tex").write_text(prior_latex(summary))


ROW_MACROS = ("TokensPerS", "MjPerToken", "ValLoss", "MjPerTokenCi", "PowerW", "PeakGib", "FloorMultiple", "Mfu")
NUMERIC = ["tokens_per_s_mean", "gpu_j_per_token_mean", "gpu_j_per_token_ci95", "gpu_j_per_token_cv", "mean_power_w",
           "peak_mem_gib", "mfu", "energy_floor_multiple", "val_loss"]


def discussion_macros(summary: pd.DataFrame, results: list[dict]) -> dict[str, str]:
    """The numbers the discussion quotes: method settings, data quality, per-row details, compile savings,
    rankings and the prior study in per-token units. "n/a" where the results cannot give one."""
    # every macro the paper may quote exists, "n/a" unless the results give it (a CPU run has one mode, no energy)
    variants = list(dict.fromkeys([*VARIANTS, *(summary.variant if len(summary) else [])]))
    modes = ("eager", "compile")
    macros: dict[str, str] = dict.fromkeys(
        [_macro_name(v, m) + suffix for v in variants for m in modes for suffix in ROW_MACROS]
        + [_macro_name(v) + suffix for v in variants for suffix in ("CompileSavingPct", "CompileSpeedup")]
        + [_macro_name(m) + suffix for m in modes
           for suffix in ("EnergyRanking", "WorstVariant", "WorstMjPerToken", "EnergySpread")]
        + [_macro_name(m) + suffix for m in modes for suffix in ("ThroughputSpreadPct", "ThroughputSpreadRow")]
        + ["CompileSavingMinPct", "CompileSavingMinVariant", "CompileSavingMaxPct", "CompileSavingMaxVariant",
           "CompilePowerChange", "CompileSpeedupMin", "CompileSpeedupMax", "SdpaOverBaselineEnergySavingPct", "SdpaOverBaselineSpeedup",
           "SdpaOverBaselinePowerRatio", "SdpaOverBaselineMemSavingPct", "BestValLossVariant", "BestValLoss",
           "WorstValLossVariant", "WorstValLoss"], "n/a")
    summary = summary.copy()
    for column in summary.columns.intersection(NUMERIC):  # None (not measurable, e.g. energy on a CPU) -> NaN
        summary[column] = pd.to_numeric(summary[column], errors="coerce")
    trials = trial_frame(results)
    config = next((r["config"] for r in results if r.get("config")), {})
    macros["IdleS"] = _fmt(config.get("idle_s"), "g")
    macros["WindowS"] = _fmt(config.get("window_s"), "g")
    macros["UnmeasuredSteps"] = str(config.get("unmeasured_steps", "n/a"))
    macros["QualityMTokens"] = _fmt(config.get("quality_tokens"), ".1f", 1e-6)
    train_tokens = next((r["data"]["train_tokens"] for r in results if (r.get("data") or {}).get("train_tokens")), None)
    macros["QualityEpochs"] = _fmt(config["quality_tokens"] / train_tokens if train_tokens and
                                   config.get("quality_tokens") else None, ".1f")
    ok = trials[trials.status == "ok"] if not trials.empty else trials
    macros["NumTrialWindows"] = str(len(ok))
    macros["TrialsPerRow"] = str(int(summary.trials.max())) if len(summary) else "n/a"
    macros["ShortWindows"] = str(int(summary.short_windows.sum())) if "short_windows" in summary else "n/a"
    macros["MinWindowS"] = _fmt(ok.window_s.min() if len(ok) else None, ".1f")
    macros["MaxWindowS"] = _fmt(ok.window_s.max() if len(ok) else None, ".1f")
    idle = ok.idle_power_w.dropna() if len(ok) else pd.Series(dtype=float)
    macros["IdlePowerRange"] = f"{idle.min():.0f}--{idle.max():.0f}" if len(idle) else "n/a"
    macros["TrialCards"] = str(ok.device_uuid.nunique()) if len(ok) and ok.device_uuid.notna().any() else "n/a"
    macros["QualityCards"] = _quality_cards(results, set(ok.device_uuid.dropna()) if len(ok) else set())
    for mode, rows in (ok.dropna(subset=["tokens_per_s"]).groupby("mode") if len(ok) else ()):
        # the largest trial-to-trial throughput difference of one variant, as a share of its fastest trial
        spread = rows.groupby("variant").tokens_per_s.agg(lambda t: 1 - t.min() / t.max())
        macros[f"{_macro_name(mode)}ThroughputSpreadPct"] = _fmt(spread.max(), ".0f", 100)
        macros[f"{_macro_name(mode)}ThroughputSpreadRow"] = f"{spread.idxmax()}/{mode}"
    noisy = summary[summary.gpu_j_per_token_cv > 0.03] if "gpu_j_per_token_cv" in summary else summary.iloc[:0]
    macros["HighCvRows"] = ", ".join(f"{r.variant}/{r['mode']} ({r.gpu_j_per_token_cv * 100:.1f}%)"
                                     for _, r in noisy.iterrows()) or "none"
    for _, r in summary.iterrows():
        key = _macro_name(r.variant, r["mode"])
        macros[f"{key}TokensPerS"] = _fmt(r.tokens_per_s_mean, ",.0f")
        macros[f"{key}MjPerToken"] = _fmt(r.gpu_j_per_token_mean, ".3f", 1e3)
        macros[f"{key}ValLoss"] = _fmt(r.get("val_loss"), ".3f")
        macros[f"{key}MjPerTokenCi"] = _fmt(r.gpu_j_per_token_ci95, ".3f", 1e3)
        macros[f"{key}PowerW"] = _fmt(r.mean_power_w, ".0f")
        macros[f"{key}PeakGib"] = _fmt(r.peak_mem_gib, ".1f")
        macros[f"{key}FloorMultiple"] = _fmt(r.get("energy_floor_multiple"), ".1f")
        macros[f"{key}Mfu"] = _fmt(r.mfu, ".1f", 100)
    by_mode = {m: g.set_index("variant") for m, g in summary[summary.status == "ok"].groupby("mode")}
    eager, compiled = by_mode.get("eager"), by_mode.get("compile")
    if eager is not None and compiled is not None:
        both = eager.index.intersection(compiled.index)
        saving = 1 - compiled.loc[both].gpu_j_per_token_mean / eager.loc[both].gpu_j_per_token_mean
        speedup = compiled.loc[both].tokens_per_s_mean / eager.loc[both].tokens_per_s_mean
        for variant in both:
            macros[f"{_macro_name(variant)}CompileSavingPct"] = _fmt(saving[variant], ".0f", 100)
            macros[f"{_macro_name(variant)}CompileSpeedup"] = _fmt(speedup[variant], ".2f")
        saving = saving.dropna()
        if len(saving):
            macros["CompileSavingMinPct"] = _fmt(saving.min(), ".0f", 100)
            macros["CompileSavingMinVariant"] = saving.idxmin()
            macros["CompileSavingMaxPct"] = _fmt(saving.max(), ".0f", 100)
            macros["CompileSavingMaxVariant"] = saving.idxmax()
            power_change = compiled.loc[both].mean_power_w.mean() / eager.loc[both].mean_power_w.mean() - 1
            macros["CompilePowerChange"] = (f"{_fmt(abs(power_change), '.0f', 100)}% "
                                            f"{'higher' if power_change > 0 else 'lower'}")
            macros["CompileSpeedupMin"] = _fmt(speedup.min(), ".2f")
            macros["CompileSpeedupMax"] = _fmt(speedup.max(), ".2f")
    for mode, frame in by_mode.items():
        ranked = frame.gpu_j_per_token_mean.dropna().sort_values()
        if len(ranked):
            macros[f"{_macro_name(mode)}EnergyRanking"] = " $<$ ".join(ranked.index)
            macros[f"{_macro_name(mode)}WorstVariant"] = ranked.index[-1]
            macros[f"{_macro_name(mode)}WorstMjPerToken"] = _fmt(ranked.iloc[-1], ".3f", 1e3)
            macros[f"{_macro_name(mode)}EnergySpread"] = _fmt(ranked.iloc[-1] / ranked.iloc[0], ".2f")
    if eager is not None and {"baseline", "sdpa"} <= set(eager.index):
        base, fused = eager.loc["baseline"], eager.loc["sdpa"]
        macros["SdpaOverBaselineEnergySavingPct"] = _fmt(1 - fused.gpu_j_per_token_mean / base.gpu_j_per_token_mean,
                                                         ".0f", 100)
        macros["SdpaOverBaselineSpeedup"] = _fmt(fused.tokens_per_s_mean / base.tokens_per_s_mean, ".2f")
        macros["SdpaOverBaselinePowerRatio"] = _fmt(fused.mean_power_w / base.mean_power_w, ".2f")
        macros["SdpaOverBaselineMemSavingPct"] = _fmt(1 - fused.peak_mem_gib / base.peak_mem_gib, ".0f", 100)
    quality = summary.dropna(subset=["val_loss"]).drop_duplicates("variant") if "val_loss" in summary else summary.iloc[:0]
    if len(quality):
        best, worst = quality.loc[quality.val_loss.idxmin()], quality.loc[quality.val_loss.idxmax()]
        macros.update(BestValLossVariant=best.variant, BestValLoss=_fmt(best.val_loss, ".3f"),
                      WorstValLossVariant=worst.variant, WorstValLoss=_fmt(worst.val_loss, ".3f"))
    prior = PRIOR_STUDY.set_index("variant")
    macros["PriorEnergyRanking"] = " $<$ ".join(prior.prior_j_per_token.sort_values().index)
    macros["PriorBaselineMjPerToken"] = _fmt(prior.loc["baseline"].prior_j_per_token, ".1f", 1e3)
    macros["PriorBaselinePowerW"] = _fmt(prior.loc["baseline"].prior_power_w, ".0f")
    macros["PriorBaselineTokensPerS"] = _fmt(prior.loc["baseline"].prior_tokens_per_s, ",.0f")
    macros["PriorFlashTokensPerS"] = _fmt(prior.loc["flash"].prior_tokens_per_s, ",.0f")
    macros["PriorEnergySpread"] = _fmt(prior.prior_j_per_token.max() / prior.prior_j_per_token.min(), ".2f")
    return macros


def _quality_cards(results: list[dict], trial_cards: set[str]) -> str:
    """Where the quality runs ran, relative to the timed trials' cards (a phrase for the text)."""
    runs = [r for r in results if r["kind"] == "quality" and r["status"] == "ok"]
    cards = {r.get("device_uuid") for r in runs} - {None}
    if not cards:
        return "n/a"
    if cards <= trial_cards:
        return "the same cards"
    trial_times = [r["created"] for r in results if r["kind"] == "trial" and r["status"] == "ok" and r.get("created")]
    when = ""
    if trial_times and all(r.get("created") for r in runs):
        when = (", before the trials" if max(r["created"] for r in runs) < min(trial_times) else
                ", after the trials" if min(r["created"] for r in runs) > max(trial_times) else "")
    other = len(cards - trial_cards)
    return f"{other} other card{'s' if other > 1 else ''} of the same model{when}"


def _macro_name(*parts: str) -> str:
    return "".join(p.replace("_", " ").title().replace(" ", "") for p in parts)


def write_macros(summary: pd.DataFrame, results: list[dict], profile: str, path: Path,
                 calibrations: dict[str, dict] | None = None) -> dict[str, str]:
    """`\\newcommand`s for every number the text quotes. Returns them as a dict too."""
    macros: dict[str, str] = {"Profile": profile}
    trials = trial_frame(results)
    macros["Device"] = str(trials.device.iloc[0]) if not trials.empty else "n/a"
    data = next((r["data"] for r in results if r.get("data")), {})
    macros["Dataset"] = data.get("dataset", "n/a")
    macros["DatasetSha"] = data.get("dataset_sha256", "n/a")[:12]
    macros["Tokenizer"] = data.get("tokenizer", "n/a")
    macros["TrainTokens"] = f"{data.get('train_tokens', 0):,}"
    macros["NumVariants"] = str(summary.variant.nunique())
    macros["NumResults"] = str(len(results))
    eager = summary[(summary["mode"] == "eager") & (summary.status == "ok")]
    for key in ("BestEnergyVariant", "BestEnergyMjPerToken", "FastestVariant", "FastestTokensPerS"):
        macros[key] = "n/a"  # stays so where the figure cannot be measured (no GPU energy on a CPU run)
    energy = eager.dropna(subset=["gpu_j_per_token_mean"])
    if not energy.empty:
        best = energy.loc[energy.gpu_j_per_token_mean.idxmin()]
        macros["BestEnergyVariant"] = best.variant
        macros["BestEnergyMjPerToken"] = _fmt(best.gpu_j_per_token_mean, ".3f", 1e3)
    speed = eager.dropna(subset=["tokens_per_s_mean"])
    if not speed.empty:
        fastest = speed.loc[speed.tokens_per_s_mean.idxmax()]
        macros["FastestVariant"] = fastest.variant
        macros["FastestTokensPerS"] = _fmt(fastest.tokens_per_s_mean, ",.0f")
    macros["MaxEnergyCv"] = _fmt(summary.gpu_j_per_token_cv.max() if "gpu_j_per_token_cv" in summary else None, ".1f", 100)
    cards = list((calibrations or {}).values())
    macros["CalibratedCards"] = str(len(cards))
    for key, field, spec in (("CalibratedTflops", "tflops", ".0f"), ("FloorPjPerFlop", "pj_per_flop", ".2f")):
        values = [c[field] for c in cards if c.get(field) is not None]
        macros[key] = _fmt(sum(values) / len(values) if values else None, spec)  # mean over the cards
        macros[key + "Range"] = (f"{_fmt(min(values), spec)}--{_fmt(max(values), spec)}" if len(values) > 1
                                 else macros[key])
    floor = summary.energy_floor_multiple.dropna() if "energy_floor_multiple" in summary else pd.Series(dtype=float)
    macros["MinFloorMultiple"] = _fmt(floor.min() if len(floor) else None, ".1f")
    macros["MaxFloorMultiple"] = _fmt(floor.max() if len(floor) else None, ".1f")
    macros.update(discussion_macros(summary, results))
    path.parent.mkdir(parents=True, exist_ok=True)
    esc = lambda s: str(s).replace("_", r"\_").replace("%", r"\%").replace("#", r"\#")  # noqa: E731
    path.write_text("".join(f"\\newcommand{{\\data{k}}}{{{esc(v)}}}\n" for k, v in macros.items()))
    return macros


def write_figures(summary: pd.DataFrame, results: list[dict], out_dir: Path) -> list[Path]:
    """The paper's figures as PDF and PNG; returns the PNG paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="paper")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []

    def save(fig, name: str) -> None:
        fig.tight_layout()
        for ext in ("pdf", "png"):
            # no creation date: a rebuild from the same results gives the same files
            fig.savefig(out_dir / f"{name}.{ext}", dpi=150,
                        metadata={"CreationDate": None} if ext == "pdf" else {"Software": None})
        plt.close(fig)
        written.append(out_dir / f"{name}.png")

    def empty(ax, message: str) -> None:
        message = "\n".join(textwrap.wrap(message, 50))
        ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, fontsize=10, color="0.3")
        ax.set_xticks([])
        ax.set_yticks([])

    def bars(column: str, ci: str | None, scale: float, label: str, name: str) -> None:
        fig, ax = plt.subplots(figsize=(7, 3.2))
        data = summary.dropna(subset=[column]) if column in summary else summary.iloc[0:0]
        if data.empty:
            empty(ax, f"no {label} in these results: not measurable on this hardware (the JSON results give the reason)")
        else:
            modes = list(dict.fromkeys(data["mode"]))
            variants = list(dict.fromkeys(data.variant))
            width = 0.8 / len(modes)
            for i, mode in enumerate(modes):
                d = data[data["mode"] == mode].set_index("variant").reindex(variants)
                xs = [j + (i - (len(modes) - 1) / 2) * width for j in range(len(variants))]
                err = None if ci is None else d[ci].fillna(0) * scale
                ax.bar(xs, d[column] * scale, width, yerr=err, capsize=3, label=mode)
            ax.set_xticks(range(len(variants)), variants, rotation=30, ha="right")
            ax.set_ylabel(label)
            if len(modes) > 1:
                ax.legend(title="mode")
        save(fig, name)

    bars("gpu_j_per_token_mean", "gpu_j_per_token_ci95", 1e3, "GPU energy, mJ/token (95% CI)", "energy_per_token")
    bars("tokens_per_s_mean", "tokens_per_s_ci95", 1.0, "training tokens/s (95% CI)", "tokens_per_s")
    bars("peak_mem_gib", None, 1.0, "peak allocated GPU memory, GiB", "peak_memory")

    traced = [r for r in results if r["kind"] == "trial" and r.get("trial") == 0
              and (r.get("measurement") or {}).get("power_trace")]
    modes = sorted({r["mode"] for r in traced}, reverse=True) or ["none"]  # eager first
    fig, axes = plt.subplots(1, len(modes), figsize=(3.6 * len(modes), 3.2), sharey=True, squeeze=False)
    if not traced:
        empty(axes[0][0], "no GPU power trace in these results (CPU-only run)")
    for ax, mode in zip(axes[0], modes):
        for r in (r for r in traced if r["mode"] == mode):
            trace = pd.DataFrame(r["measurement"]["power_trace"], columns=["t", "w"])
            # 1 s moving mean of the 10 Hz samples: the level of each variant, not its step-by-step ripple
            ax.plot(trace.t, trace.w.rolling(10).mean(), label=r["variant"], lw=1)
        if traced:
            ax.set_title(mode, fontsize=9)
            ax.set_xlabel("time in window, s")
    if traced:
        axes[0][0].set_ylabel("GPU power, W (1 s moving mean)")
        axes[0][-1].legend(ncol=2, fontsize=6)
    save(fig, "power_trace")

    fig, ax = plt.subplots(figsize=(5, 4))
    pareto = summary.dropna(subset=["gpu_j_per_token_mean", "val_loss"]) if "val_loss" in summary else summary.iloc[0:0]
    if pareto.empty:
        empty(ax, "energy vs loss needs GPU energy and quality runs")
    else:
        sns.scatterplot(data=pareto.assign(mj=pareto.gpu_j_per_token_mean * 1e3), x="mj", y="val_loss",
                        hue="variant", style="mode", ax=ax, s=60)
        ax.set_xlabel("GPU energy, mJ/token")
        ax.set_ylabel("validation loss after the fixed token budget")
    save(fig, "energy_vs_loss")

    fig, ax = plt.subplots(figsize=(7, 3.5))
    curves = [r for r in results if r["kind"] == "quality" and r.get("loss_curve")]
    if not curves:
        empty(ax, "no quality runs in these results")
    for r in curves:  # from the first evaluation after step 0: the initial loss (~ln 50257) would flatten the rest
        points = [(p["tokens"], p["val_loss"]) for p in r["loss_curve"] if p["tokens"] > 0]
        ax.plot(*zip(*points), marker=".", label=f"{r['variant']} ({r['mode']})", lw=1)
    if curves:
        ax.set_xlabel("training tokens")
        ax.set_ylabel("validation loss")
        ax.legend(ncol=3, fontsize=7)
    save(fig, "loss_curves")
    return written


def build_report(results_dir: Path, profile: str, figures_dir: Path, paper_dir: Path,
                 variant_order: list[str] | None = None) -> pd.DataFrame:
    """Everything the paper needs from one results folder: summary.csv, LaTeX tables, macros, figures."""
    results = load_results(results_dir)
    if not results:
        raise ValueError(f"results_dir: no results under {results_dir}/raw; run the pipeline first")
    devices = sorted({r["device"] for r in results if r.get("device")})  # a crashed notebook's result names none
    if len(devices) > 1:  # one table, one kind of card: timings from different devices are not comparable
        raise ValueError(f"results_dir: {results_dir}/raw mixes devices {devices}; report each in its own results folder")
    calibrations = load_calibrations(results_dir)
    summary = summary_frame(results, variant_order, calibrations)
    write_tables(summary, results_dir)
    generated = paper_dir / "generated" / profile
    write_tables(summary, generated)
    write_macros(summary, results, profile, generated / "macros.tex", calibrations)
    write_figures(summary, results, figures_dir / profile)
    return summary
