"""The report on GPU-like results (energy, traces, a failure, calibrated cards, seeds): what a CPU smoke run never
shows. Results are built as the typed dataclasses the experiments write."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from attnlib.data import DataInfo
from attnlib.measurement import Measurement, SteadyState
from attnlib.report import build_report, latex
from attnlib.report.compare import compare
from attnlib.report.frames import summary_frame, verdict
from attnlib.results import ModelInfo, Provenance, QualityResult, TrialResult, results_frame, write_result
from attnlib.results.schema import ROLES

REPO = Path(__file__).resolve().parent.parent
DATA = DataInfo(dataset="debian-docs", dataset_description="d", dataset_sha256="ab" * 32, documents=10,
                train_documents=9, val_documents=1, tokenizer="t", tokenizer_sha256="cd" * 32, train_tokens=10_000_000,
                val_tokens=1000, val_ngram_overlap=0.003, val_ngram_overlap_before=0.1, val_documents_dropped=2)
MODEL = ModelInfo(params=124_439_808, attention_params=1, kernel="k", exact=True, optimizer="AdamW (fused)",
                  training_flops_per_token=8e8)


def origin(card: str = "GPU-0", device: str = "NVIDIA H100 80GB HBM3") -> Provenance:
    return Provenance(attnlib_commit="abc", versions={"torch": "2.11", "flash-linear-attention": "0.6.0"},
                      python="3.12", device=device, device_uuid=card, created="2026-11-23T00:00:00+00:00")


def trial(variant: str, mode: str, index: int, tokens_per_s: float, j_per_token: float, status: str = "ok",
          device: str = "NVIDIA H100 80GB HBM3", role: str | None = "variant") -> TrialResult:
    """One training window: paired (`role` variant or reference, in the job of `variant`) or unpaired (None)."""
    tokens = int(tokens_per_s * 5)
    paired = role is not None
    m = None if status != "ok" else Measurement(
        label="x", wall_s=5.0, tokens=tokens, flops=tokens * 8e8, tokens_per_s=tokens_per_s, gpu_j_per_token=j_per_token,
        gpu_j_per_token_net=j_per_token * 0.8, gpu_energy_j=j_per_token * tokens, gpu_power_mean_w=j_per_token * tokens_per_s,
        torch_peak_mem_bytes=12 * 2**30, tflops=tokens_per_s * 8e8 / 1e12, gpu_j_per_flop=j_per_token / 8e8,
        power_trace=[(0.1 * i, 500.0 + i) for i in range(100)] if index == 0 else None,
        temperature_start_c=50.0 if paired else None, temperature_end_c=52.0 if paired else None,
        sm_clock_mean_mhz=1900.0 if paired else None, state_samples=10 if paired else 0,
        clock_event_shares={"sw_power_cap": 1.0 if mode == "graph" else 0.0} if paired else {})
    config = {"window_s": 5.0, "unmeasured_steps": 10, "idle_s": 2.0, "train": {"batch_size": 16, "seq_len": 512},
              "reference": "sdpa", "steady_state": {"stretch_s": 3.0, "tolerance": 0.005, "min_s": 12.0, "max_s": 60.0}}
    stretches = [{"workload": w, "gpu_j_per_token": j, "wall_s": 3.0, "temperature_c": 50}  # moving 1-2% a step
                 for j in (1.0, 1.02, 1.01, 1.03) for w in ROLES]
    steady = SteadyState(20.0, True, stretches) if paired else None
    return TrialResult(variant=variant, mode=mode, round=index, order_seed=1, status=status, provenance=origin(device=device),
                       config=config, data=DATA, model=MODEL if m else None, measurement=m, role=role,
                       reference="sdpa" if paired else None, steady_state=steady,
                       alone_gpu_mem_used_bytes=10 * 2**30 if paired and role == "variant" else None,
                       error=None if status == "ok" else "OutOfMemoryError: CUDA out of memory")


def paired_job(variant: str, mode: str, tokens_per_s: float, j_per_token: float, energy_factor: float,
               noise: tuple[float, ...] = (0.002, -0.003, 0.001, 0.0, -0.001)) -> list[TrialResult]:
    """A variant's paired windows: the reference drifts upward round by round (a warming card), the variant is
    `energy_factor` times it, give or take `noise`."""
    windows = []
    for i, n in enumerate(noise):
        reference = j_per_token * (1 + 0.004 * i)
        windows.append(trial(variant, mode, i, tokens_per_s, reference, role="reference"))
        windows.append(trial(variant, mode, i, tokens_per_s / energy_factor, reference * energy_factor * (1 + n)))
    return windows


def quality(variant: str, seed: int, val_loss: float) -> QualityResult:
    return QualityResult(variant=variant, mode="graph", seed=seed, provenance=origin(), config={"tokens": 2_457_600},
                         data=DATA, model=MODEL, val_loss=val_loss, steps=300,
                         measurement=Measurement(label="q", wall_s=8.0, tokens=2_457_600, gpu_energy_j=5000.0),
                         loss_curve=[{"tokens": 0, "train_loss": None, "val_loss": 11.0},
                                     {"tokens": 2_457_600, "train_loss": val_loss, "val_loss": val_loss}])


@pytest.fixture
def results_dir(tmp_path) -> Path:
    folder = tmp_path / "paper"
    results = [trial("sdpa", "compile", i, 330e3 + 500 * i, 1.9e-3 * (1 + 0.005 * i), role=None) for i in range(5)]
    for mode, tps, jpt in (("eager", 128e3, 4.15e-3), ("graph", 390e3, 1.79e-3)):
        results += paired_job("sdpa", mode, tps, jpt, 1.0)  # the A/A control
        results += paired_job("baseline", mode, tps, jpt, 1.30) if mode == "eager" else \
            [trial("baseline", "graph", i, 0, 0, status="oom", role=role) for i in range(5) for role in ROLES]
        results += paired_job("gqa", mode, tps, jpt, 0.95)
        results += paired_job("mla", mode, tps, jpt, 0.998, noise=(0.0, 0.0005, -0.0005, 0.0002, -0.0002))
    results += [quality(v, s, loss + 0.01 * s) for v, loss in (("sdpa", 4.5), ("baseline", 4.5), ("gqa", 4.6))
                for s in (1, 2, 3)]
    for i, r in enumerate(results):
        write_result(folder / "raw" / f"{i}.json", r)
    (folder / "calibration").mkdir()
    (folder / "calibration" / "GPU-0.json").write_text(
        '{"uuid": "GPU-0", "tflops": 680.0, "j_per_flop": 1.03e-12, "pj_per_flop": 1.03}')
    (folder / "run.json").write_text('{"chunks": [], "gpu_minutes": 22.5, "measured_fraction": 0.61, "device": "x"}')
    return folder


def test_summary_rows_paired_ratios_and_calibration(results_dir) -> None:
    summary = summary_frame(results_frame(results_dir), {"GPU-0": {"tflops": 680.0, "j_per_flop": 1.03e-12}},
                            ["baseline", "sdpa", "gqa", "mla"])
    assert list(zip(summary.variant, summary["mode"])) == [
        ("baseline", "eager"), ("baseline", "graph"), ("sdpa", "eager"), ("sdpa", "compile"), ("sdpa", "graph"),
        ("gqa", "eager"), ("gqa", "graph"), ("mla", "eager"), ("mla", "graph")]
    rows = summary.set_index(["variant", "mode"])
    gqa = rows.loc[("gqa", "graph")]  # its own windows only: the reference's enter its ratios, not its means
    assert gqa.protocol == "paired" and gqa.rounds == 5 and gqa.windows == 5
    assert gqa.tokens_per_s_mean == pytest.approx(390e3 / 0.95)
    assert gqa.gpu_j_per_token_ratio == pytest.approx(0.95, rel=2e-3) and gqa.gpu_j_per_token_ratio_low < 0.95
    assert gqa.mfu_mean == pytest.approx(390e3 / 0.95 * 8e8 / 1e12 / 680.0)
    assert gqa.power_cap_share_mean == 1.0 and gqa.sm_clock_mean_mhz_mean == 1900.0 and gqa.steady_state_s == 20.0
    assert gqa.gpu_mem_used_peak_bytes_max == 10 * 2**30  # alone on the card, not during the paired windows
    compiled = rows.loc[("sdpa", "compile")]  # an unpaired row: no ratio, its spread
    assert compiled.protocol == "unpaired" and pd.isna(compiled.gpu_j_per_token_ratio)
    assert compiled.gpu_j_per_token_verdict == "unpaired" and compiled.tokens_per_s_spread == pytest.approx(1 - 330e3 / 332e3)
    assert rows.loc[("sdpa", "graph")].seeds == 3 and rows.loc[("sdpa", "graph")].val_loss_mean == pytest.approx(4.52)
    oom = rows.loc[("baseline", "graph")]
    assert oom.status == "oom" and oom.windows == 0 and "out of memory" in oom.error and pd.isna(oom.tokens_per_s_mean)


def test_claims_hold_only_beyond_the_aa_bound(results_dir) -> None:
    summary = summary_frame(results_frame(results_dir)).set_index(["variant", "mode"])
    control = summary.loc[("sdpa", "eager")]
    assert control.gpu_j_per_token_verdict == "control" and control.gpu_j_per_token_ratio_low < 1 < control.gpu_j_per_token_ratio_high
    bound = control.gpu_j_per_token_aa_bound
    assert bound == pytest.approx(max(control.gpu_j_per_token_ratio_high - 1, 1 - control.gpu_j_per_token_ratio_low))
    assert summary.loc[("gqa", "eager"), "gpu_j_per_token_verdict"] == "cheaper"
    assert summary.loc[("baseline", "eager"), "gpu_j_per_token_verdict"] == "dearer"
    assert summary.loc[("gqa", "eager"), "tokens_per_s_verdict"] == "faster"
    mla = summary.loc[("mla", "eager")]  # its interval excludes 1, but its 0.2% is inside the A/A bound
    assert mla.gpu_j_per_token_ratio_high < 1 and 1 - mla.gpu_j_per_token_ratio < bound
    assert mla.gpu_j_per_token_verdict == "indistinguishable"
    assert verdict(0.97, 0.96, 0.98, None, ("cheaper", "dearer")) == "cheaper"  # no control: the interval decides
    assert verdict(0.97, 0.93, 1.01, 0.001, ("cheaper", "dearer")) == "indistinguishable"
    assert verdict(None, None, None, 0.01, ("cheaper", "dearer")) == "n/a"
    modes = latex.mode_macros(summary.reset_index())
    assert modes["EagerEnergyCheaper"].startswith("\\texttt{gqa} 0.95") and "mla" in modes["EagerEnergyIndistinguishable"]
    assert modes["EagerEnergyDearer"].startswith("\\texttt{baseline} 1.30") and modes["EagerAaEnergy"].startswith("1.0")
    assert modes["GraphPowerCapSharePct"] == "100" and modes["EagerSteadyStateConverged"] == "4 of 4"
    # consecutive stretches 2.0%, 1.0%, 2.0% apart; the second half (1.01, 1.03) over the first (1.0, 1.02)
    assert modes["EagerSteadyStateStepChangePct"] == "2.0" and modes["GraphSteadyStateDrift"] == "1.0\\% more"
    assert modes["CompileThroughputSpreadWithinTwoPct"] == "1 of 1"
    assert "sdpa" not in modes["GraphEnergyIndistinguishable"]  # the control is not in its own groups


def test_build_report_writes_tables_figures_and_only_used_macros(results_dir, tmp_path) -> None:
    paper = tmp_path / "paperdir"
    paper.mkdir()
    (paper / "paper.tex").write_text(r"\dataGqaGraphGpuJPerTokenMean \dataGqaGraphEnergyVerdict \dataGqaGraphEnergyInterval"
                                     r" \dataGraphEnergyCheaper \dataGpuMinutes \dataNoSuchThing \dataSdpaEagerVsEagerEnergy"
                                     r" \dataValLossHigherThanReference \dataAttnlibCommit")
    summary = build_report(results_dir, "paper", tmp_path / "figures", paper)
    macros = (paper / "generated" / "paper" / "macros.tex").read_text()
    names = re.findall(r"\\newcommand\{\\data(\w+)\}", macros)
    assert sorted(names) == sorted(["GqaGraphGpuJPerTokenMean", "GqaGraphEnergyVerdict", "GqaGraphEnergyInterval",
                                    "GraphEnergyCheaper", "GpuMinutes", "NoSuchThing", "SdpaEagerVsEagerEnergy",
                                    "ValLossHigherThanReference", "AttnlibCommit"])
    assert r"\newcommand{\dataGqaGraphEnergyVerdict}{cheaper}" in macros
    assert r"\newcommand{\dataGpuMinutes}{22.5}" in macros and r"\newcommand{\dataNoSuchThing}{n/a}" in macros
    assert r"\newcommand{\dataSdpaEagerVsEagerEnergy}{n/a}" in macros  # a row is not compared with itself
    assert r"\newcommand{\dataValLossHigherThanReference}{\texttt{gqa}}" in macros
    assert r"\newcommand{\dataAttnlibCommit}{abc}" in macros
    assert (results_dir / "summary.csv").exists() and len(summary) == 9
    table = (paper / "generated" / "paper" / "summary.tex").read_text()
    assert "\\textbf{oom}" in table and "unpaired, spread 0.6\\%" in table and "\\textbf{0.950 [" in table
    for name in ("energy_per_token", "tokens_per_s", "peak_memory", "power_trace", "energy_vs_loss", "loss_curves",
                 "paired_ratios"):
        assert (tmp_path / "figures" / "paper" / f"{name}.png").stat().st_size > 0


def paper_dir(tmp_path: Path) -> Path:
    """A copy of paper.tex in a folder of the test's own: reports never write into the repository."""
    folder = tmp_path / "paper-src"
    folder.mkdir()
    (folder / "paper.tex").write_text((REPO / "paper" / "paper.tex").read_text())
    return folder


def test_report_refuses_mixed_devices(results_dir, tmp_path) -> None:
    write_result(results_dir / "raw" / "other.json", trial("sdpa", "eager", 9, 1e5, 4e-3, device="NVIDIA H200"))
    with pytest.raises(ValueError, match="mixes devices"):
        build_report(results_dir, "paper", tmp_path / "f", paper_dir(tmp_path))


def test_reviewer_comparison(results_dir, tmp_path, capsys) -> None:
    build_report(results_dir, "paper", tmp_path / "figures", paper_dir(tmp_path))
    theirs = tmp_path / "mine"
    (theirs).mkdir()
    summary = pd.read_csv(results_dir / "summary.csv")
    summary.assign(tokens_per_s_mean=summary.tokens_per_s_mean * 0.9, device="NVIDIA H200").to_csv(
        theirs / "summary.csv", index=False)
    frame = compare(theirs, results_dir)
    row = frame[(frame.variant == "sdpa") & (frame["mode"] == "graph")].iloc[0]
    assert row.tokens_per_s_mean_theirs_over_ours == pytest.approx(0.9)
    assert row.gpu_j_per_token_mean_theirs_over_ours == pytest.approx(1.0)
    assert row.gpu_j_per_token_ratio_theirs == row.gpu_j_per_token_ratio_ours  # the paired ratios, side by side
    assert row.device_theirs == "NVIDIA H200" and row.device_ours == "NVIDIA H100 80GB HBM3"
    assert (theirs / "comparison.csv").exists() and "sdpa" in capsys.readouterr().out


def test_latex_text_is_escaped_outside_math_only() -> None:
    """A bare `>` prints as an inverted question mark in LaTeX's default font encoding: tables and macros say
    `\\textgreater{}`; math and what is already escaped stay as they are."""
    assert latex.escape("gqa 512 [512, > 64K]") == r"gqa 512 [512, \textgreater{} 64K]"
    assert latex.escape(r"sliding_window 3.07$\times$, 5\% and 9%") == r"sliding\_window 3.07$\times$, 5\% and 9\%"
    assert latex.escape("$a_b < c$ #1, x<y") == r"$a_b < c$ \#1, x\textless{}y"
    assert r"\textgreater{} 64K" in latex.booktabs(["a"], [["> 64K"]], "l")


def test_every_macro_the_paper_uses_is_made_by_a_rule(results_dir, tmp_path) -> None:
    """paper.tex quotes only macros some rule produces (from GPU-like results): none is n/a for want of a rule."""
    paper = paper_dir(tmp_path)
    (results_dir.parent / "gpu").mkdir()
    for check in ("llama_check.json", "hf_functions.json"):  # the GPU checks' committed outputs
        shutil.copy(REPO / "results" / "gpu" / check, results_dir.parent / "gpu" / check)
    build_report(results_dir, "paper", tmp_path / "figures", paper)
    macros = dict(re.findall(r"\\newcommand\{\\data(\w+)\}\{(.*)\}", (paper / "generated" / "paper" / "macros.tex").read_text()))
    rule_less = [n for n, v in macros.items() if v == "n/a" and not re.match(
        r"(Flash|Cudnn|Flex|Mla|SlidingWindow|Linear|Lsh|Gqa|Baseline|Sdpa)", n)]
    assert rule_less == [] and latex.used_macros((REPO / "paper" / "paper.tex").read_text())


def test_a_folder_without_results_is_an_error_not_an_empty_table(tmp_path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        results_frame(tmp_path / "missing")
    (tmp_path / "empty" / "raw").mkdir(parents=True)
    with pytest.raises(ValueError, match="holds no results"):
        results_frame(tmp_path / "empty")


@pytest.mark.slow
def test_the_exploration_notebook_opens_on_a_fresh_clone(tmp_path) -> None:
    """explore.ipynb with its default parameters: the committed training table, read as a newcomer would."""
    import json

    from attnlib.pipeline import run_notebook

    repo = Path(__file__).resolve().parent.parent
    run_notebook(repo / "notebooks" / "explore.ipynb", tmp_path / "explore.ipynb", {})
    cells = json.loads((tmp_path / "explore.ipynb").read_text())["cells"]
    assert not [o for c in cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert "gqa" in "".join(str(o) for c in cells for o in c.get("outputs", []))


def test_another_familys_table_is_its_own_section_with_prefixed_macros(tmp_path) -> None:
    """A llama folder's report writes generated/llama/ with every macro paper/llama.tex quotes, each prefixed with
    the family (so GPT-2's and the 1B model's tables coexist in one paper), and a rule behind each of them."""
    import dataclasses

    folder = tmp_path / "llama"
    results = []
    for mode, tps, jpt in (("eager", 40e3, 16.9e-3), ("compile", 52e3, 13.1e-3)):
        results += paired_job("sdpa", mode, tps, jpt, 1.0) + paired_job("mqa", mode, tps, jpt, 0.95)
        results += paired_job("mha", mode, tps, jpt, 1.06)
    for i, r in enumerate(results):
        write_result(folder / "raw" / f"{i}.json", dataclasses.replace(r, arch="llama"))
    (folder / "calibration").mkdir()
    (folder / "calibration" / "GPU-0.json").write_text('{"uuid": "GPU-0", "tflops": 680.0, "j_per_flop": 1.03e-12}')
    (folder / "run.json").write_text('{"chunks": [], "minutes": 30.0, "measured_fraction": 0.5}')
    paper = paper_dir(tmp_path)
    (paper / "llama.tex").write_text((REPO / "paper" / "llama.tex").read_text())
    summary = build_report(folder, "llama", tmp_path / "figures", paper)
    assert set(summary.arch) == {"llama"}
    macros = dict(re.findall(r"\\newcommand\{\\data(\w+)\}\{(.*)\}", (paper / "generated" / "llama" / "macros.tex").read_text()))
    quoted = set(latex.used_macros((REPO / "paper" / "llama.tex").read_text()))
    others = ("Decision", *("Llama" + kind for kind in latex.FAMILY_SECTION_PREFIXES))  # the family's other folders'
    assert set(macros) == {n for n in quoted if not n.startswith(others)} and any(n.startswith(others) for n in quoted)
    assert all(name.startswith("Llama") for name in macros)
    assert [n for n, v in macros.items() if v == "n/a"] == []
    assert macros["LlamaCompileEnergyCheaper"].startswith(r"\texttt{mqa}") and "mha" in macros["LlamaCompileEnergyDearer"]
    assert not (paper / "generated" / "paper" / "macros.tex").exists()  # GPT-2's macros are not touched


def test_a_family_section_takes_each_folders_own_macros(tmp_path) -> None:
    """paper/<arch>.tex is fed by several folders: each writes only its own kind, prefixed with the family."""
    section = tmp_path / "llama.tex"
    section.write_text(r"\dataLlamaCompileAaEnergy \dataLlamaInferenceRefJPerToken \dataLlamaLongContextCrossovers")
    written = latex.write_section_macros({"InferenceRefJPerToken": "0.5", "LongContextCrossovers": "x"}, "llama",
                                         "inference.tex", tmp_path, tmp_path / "generated", ("Inference",))
    assert written == {"LlamaInferenceRefJPerToken": "0.5"}
    gpt2 = tmp_path / "inference.tex"
    gpt2.write_text(r"\dataInferenceRefJPerToken")
    (tmp_path / "paper.tex").write_text("")
    assert latex.write_section_macros({"InferenceRefJPerToken": "0.4"}, "gpt2", "inference.tex", tmp_path,
                                      tmp_path / "g2", ("Inference",)) == {"InferenceRefJPerToken": "0.4"}
