"""From a results folder to the paper: `frames` (summary tables), `figures` (one function per figure), `latex`
(tables and macros by rule), `prior` (the prior study), `compare` (a reviewer's results against ours),
`longcontext` (the long-context family's tables, crossovers and macros), `inference` (prefill and decode),
`components` (CLEAR's per-component energy and coverage)."""

from __future__ import annotations

import json

from pathlib import Path
from typing import Any

import pandas as pd

from ..provenance import LIBRARIES
from ..results import read_run, results_frame
from . import checks, figures, latex
from .frames import family_variants, load_calibrations, provenance_text, summary_frame
from .components import build_components_report
from .distributed import build_distributed_report
from .inference import build_inference_report
from .longcontext import build_longcontext_report
from .quality import build_quality_report, write_quality_outputs
from .prior import prior_macros, prior_table

REPO = Path(__file__).resolve().parent.parent.parent


def run_facts(frame: pd.DataFrame, summary: pd.DataFrame, calibrations: dict[str, dict], results_dir: Path,
              profile: str) -> dict[str, Any]:
    """The run's facts the text quotes (formatted): device, data, versions, windows, calibration, cost."""
    trials = frame[(frame.kind == "trial") & (frame.status == "ok")]
    paired = trials[trials.role.notna()] if "role" in trials else trials.iloc[:0]
    with_data = frame[frame["dataset"].notna()] if "dataset" in frame else frame.iloc[:0]
    first = (with_data if len(with_data) else frame).iloc[0]  # a failed job's result may carry no data info
    versions = first.get("versions") or {}
    run = read_run(results_dir)
    cards = list(calibrations.values())
    facts = {
        "profile": profile, "device": first.device, "num_variants": summary.variant.nunique(),
        "num_results": len(frame), "num_paired_windows": len(paired),
        "rounds_per_row": int(summary.rounds.max()) if "rounds" in summary and summary.rounds.notna().any() else "n/a",
        "unpaired_windows_per_row": (int(summary[summary.protocol == "unpaired"].windows.max())
                                     if (summary.get("protocol") == "unpaired").any() else "n/a"),
        "unpaired_modes": ", ".join(sorted(set(summary[summary.protocol == "unpaired"]["mode"])))
                          if "protocol" in summary else "n/a",
        "paired_cards": provenance_text(paired)[0] if len(paired) else "n/a",
        "seeds_per_variant": int(summary.seeds.max()) if "seeds" in summary and summary.seeds.notna().any() else "n/a",
        "window_s_min": latex.fmt(paired.wall_s.min() if len(paired) else None, ".2f"),
        "window_s_max": latex.fmt(paired.wall_s.max() if len(paired) else None, ".2f"),
        "dataset": first.get("dataset", "n/a"), "train_tokens": latex.fmt(first.get("train_tokens"), ",.0f"),
        "val_tokens": latex.fmt(first.get("val_tokens"), ",.0f"),
        "val_ngram_overlap_pct": latex.fmt(first.get("val_ngram_overlap"), ".2f", 100),
        "val_ngram_overlap_before_pct": latex.fmt(first.get("val_ngram_overlap_before"), ".1f", 100),
        "val_documents_dropped": first.get("val_documents_dropped", "n/a"),
        # the commits the table's measurements ran at (its paired windows'; else every result's)
        "attnlib_commit": provenance_text(paired if len(paired) else frame)[1],
        "gpu_minutes": latex.fmt(run.get("minutes"), ".1f"),
        "measured_fraction_pct": latex.fmt(run.get("measured_fraction"), ".0f", 100),
        "calibrated_tflops": latex.fmt(sum(c["tflops"] for c in cards) / len(cards) if cards else None, ".0f"),
        "floor_pj_per_flop": latex.fmt(sum(c["pj_per_flop"] for c in cards) / len(cards) if cards and
                                       all(c.get("pj_per_flop") for c in cards) else None, ".3f"),
        "floor_multiple_range": (f"{latex.fmt(summary.energy_floor_multiple_mean.min(), '.1f')}--"
                                 f"{latex.fmt(summary.energy_floor_multiple_mean.max(), '.1f')}"),
    }
    facts.update({f"version_{name.replace('-', '_')}": versions.get(name) or "absent" for name in LIBRARIES})
    if len(paired):
        config = paired.iloc[0].config
        steady = config["steady_state"]
        facts.update(window_s=config["window_s"], unmeasured_steps=config["unmeasured_steps"], idle_s=config["idle_s"],
                     batch_size=config["train"]["batch_size"], seq_len=config["train"]["seq_len"],
                     reference=config["reference"], steady_stretch_s=steady["stretch_s"],
                     steady_tolerance_pct=latex.fmt(steady["tolerance"], ".1f", 100), steady_min_s=steady["min_s"],
                     steady_max_s=steady["max_s"])
        for mode in ("compile", "graph"):  # what each compiled mode compiled: the whole model, or one shared block
            scope = config.get("compile_scopes", {}).get(mode, config["train"].get("compile_scope", "model"))
            facts[f"{mode}_compile_scope"] = {"model": "the whole forward pass and loss",
                                              "block": "one transformer block (shared by all layers) and the head with its loss"}[scope]
    quality = frame[frame.kind == "quality"]
    if len(quality):
        config = quality.iloc[0].config
        facts.update(quality_mtokens=latex.fmt(config["tokens"], ".2f", 1e-6),
                     quality_epochs=latex.fmt(config["tokens"] / first.train_tokens if first.get("train_tokens") else None,
                                              ".2f"))
    return facts


def build_report(results_dir: Path, profile: str, figures_dir: Path, paper_dir: Path) -> pd.DataFrame:
    """Everything the paper needs from one results folder: summary.csv, LaTeX tables, macros, figures."""
    frame = results_frame(results_dir)  # ValueError for a folder without results
    devices = sorted(set(frame.device.dropna()))
    if len(devices) > 1:  # one table, one kind of card: timings from different devices are not comparable
        raise ValueError(f"results_dir: {results_dir}/raw mixes devices {devices}; report each in its own folder")
    calibrations = load_calibrations(results_dir)
    if frame.kind.isin(["sweep", "layer"]).any():  # a long-context folder: its own tables, figures and macros
        return build_longcontext_report(frame, calibrations, Path(results_dir), profile, figures_dir, paper_dir)
    if (frame.kind == "inference").any():  # an inference folder: its own tables, figures and macros
        return build_inference_report(frame, calibrations, Path(results_dir), profile, figures_dir, paper_dir)
    if (frame.kind == "component").any():  # a components folder: its own tables, figures and macros
        return build_components_report(frame, calibrations, Path(results_dir), profile, figures_dir, paper_dir)
    if not (frame.kind == "trial").any() and frame.kind.isin(["quality", "recall"]).any():  # a quality folder
        return build_quality_report(frame, Path(results_dir), profile, figures_dir, paper_dir)
    if (frame.kind == "distributed").any():  # a distributed folder: its own table, figure and macros
        return build_distributed_report(frame, calibrations, Path(results_dir), profile, figures_dir, paper_dir)
    summary = summary_frame(frame, calibrations, family_variants(frame))
    generated = paper_dir / "generated" / profile
    generated.mkdir(parents=True, exist_ok=True)
    summary.to_csv(results_dir / "summary.csv", index=False)
    summary.to_csv(generated / "summary.csv", index=False)
    (generated / "summary.tex").write_text(latex.summary_table(summary))
    arch = summary.arch.iloc[0] if len(summary) else "gpt2"
    gpu_checks = Path(results_dir).parent / "gpu"
    check = gpu_checks / "variants_check_h100.json"  # GPT-2's bf16 GPU check, profiler included
    (generated / "kernels.tex").write_text(latex.kernel_table(
        summary, json.loads(check.read_text()) if arch == "gpt2" and check.exists() else None))
    (generated / "prior_comparison.tex").write_text(prior_table(summary))
    macros = {**latex.run_macros(run_facts(frame, summary, calibrations, results_dir, profile)),
              **latex.row_macros(summary), **latex.mode_macros(summary), **latex.quality_macros(summary),
              **prior_macros()}
    if arch == "gpt2":  # the paper's method section: the other family's checks and the drop-in functions' table
        llama, drop_in = (checks.read_check(gpu_checks / name) for name in ("llama_check.json", "hf_functions.json"))
        (generated / "llama_check.tex").write_text(checks.llama_check_table(llama))
        macros.update(checks.check_macros(llama, drop_in))
    figures.all_figures(summary, frame, figures_dir / profile)
    write_quality_outputs(frame[frame.kind == "recall"], Path(results_dir), generated, figures_dir / profile)
    if arch == "gpt2":  # GPT-2's table is the paper's own (paper.tex)
        latex.write_macros(macros, paper_dir / "paper.tex", generated / "macros.tex", skip=latex.SECTION_MACRO_PREFIXES)
    else:  # another family's table is its own section (paper/<arch>.tex), its macros prefixed with the family
        prefix = latex.camel(arch)
        latex.write_macros({prefix + k: v for k, v in macros.items()}, paper_dir / f"{arch}.tex",
                           generated / "macros.tex",  # the cross-folder step and the family's other folders: theirs
                           skip=("Decision", *(prefix + kind for kind in latex.FAMILY_SECTION_PREFIXES)))
    return summary
