"""The report on GPU-like results (energy, traces, a failure, calibrated cards, seeds): what a CPU smoke run never
shows. Results are built as the typed dataclasses the experiments write."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from attnlib.data import DataInfo
from attnlib.measurement import Measurement
from attnlib.report import build_report, latex
from attnlib.report.compare import compare
from attnlib.report.frames import compare as compare_rows
from attnlib.report.frames import ranking, summary_frame
from attnlib.results import ModelInfo, Provenance, QualityResult, TrialResult, results_frame, write_result

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
          device: str = "NVIDIA H100 80GB HBM3") -> TrialResult:
    tokens = int(tokens_per_s * 5)
    m = None if status != "ok" else Measurement(
        label="x", wall_s=5.0, tokens=tokens, flops=tokens * 8e8, tokens_per_s=tokens_per_s, gpu_j_per_token=j_per_token,
        gpu_j_per_token_net=j_per_token * 0.8, gpu_energy_j=j_per_token * tokens, gpu_power_mean_w=j_per_token * tokens_per_s,
        torch_peak_mem_bytes=12 * 2**30, tflops=tokens_per_s * 8e8 / 1e12, gpu_j_per_flop=j_per_token / 8e8,
        power_trace=[(0.1 * i, 500.0 + i) for i in range(100)] if index == 0 else None)
    config = {"window_s": 5.0, "unmeasured_steps": 10, "idle_s": 2.0, "train": {"batch_size": 16, "seq_len": 512}}
    return TrialResult(variant=variant, mode=mode, trial=index, order_seed=1, status=status, provenance=origin(device=device),
                       config=config, data=DATA, model=MODEL if m else None, measurement=m,
                       error=None if status == "ok" else "OutOfMemoryError: CUDA out of memory")


def quality(variant: str, seed: int, val_loss: float) -> QualityResult:
    return QualityResult(variant=variant, mode="graph", seed=seed, provenance=origin(), config={"tokens": 2_457_600},
                         data=DATA, model=MODEL, val_loss=val_loss, steps=300,
                         measurement=Measurement(label="q", wall_s=8.0, tokens=2_457_600, gpu_energy_j=5000.0),
                         loss_curve=[{"tokens": 0, "train_loss": None, "val_loss": 11.0},
                                     {"tokens": 2_457_600, "train_loss": val_loss, "val_loss": val_loss}])


@pytest.fixture
def results_dir(tmp_path) -> Path:
    folder = tmp_path / "paper"
    results = [trial("sdpa", mode, i, tps + 500 * i, jpt * (1 + 0.005 * i)) for i in range(5)
               for mode, tps, jpt in (("eager", 128e3, 4.15e-3), ("compile", 330e3, 1.9e-3), ("graph", 390e3, 1.79e-3))]
    results += [trial("baseline", "eager", i, 95e3, 5.3e-3 + 1e-5 * i) for i in range(5)]
    results += [trial("gqa", "eager", i, 128.5e3, 4.14e-3 + 1e-5 * i) for i in range(5)]  # overlaps sdpa eager
    results += [trial("baseline", "graph", i, 0, 0, status="oom") for i in range(5)]
    results += [quality(v, s, loss + 0.01 * s) for v, loss in (("sdpa", 4.5), ("baseline", 4.5), ("gqa", 4.6))
                for s in (1, 2, 3)]
    for i, r in enumerate(results):
        write_result(folder / "raw" / f"{i}.json", r)
    (folder / "calibration").mkdir()
    (folder / "calibration" / "GPU-0.json").write_text(
        '{"uuid": "GPU-0", "tflops": 680.0, "j_per_flop": 1.03e-12, "pj_per_flop": 1.03}')
    (folder / "run.json").write_text('{"chunks": [], "gpu_minutes": 22.5, "measured_fraction": 0.61, "device": "x"}')
    return folder


def test_summary_rows_stats_and_calibration(results_dir) -> None:
    summary = summary_frame(results_frame(results_dir), {"GPU-0": {"tflops": 680.0, "j_per_flop": 1.03e-12}},
                            ["baseline", "sdpa", "gqa"])
    assert list(zip(summary.variant, summary["mode"])) == [("baseline", "eager"), ("baseline", "graph"),
                                                          ("sdpa", "eager"), ("sdpa", "compile"), ("sdpa", "graph"),
                                                          ("gqa", "eager")]
    sdpa = summary[(summary.variant == "sdpa") & (summary["mode"] == "graph")].iloc[0]
    assert sdpa.trials == 5 and sdpa.tokens_per_s_mean == pytest.approx(391e3)
    assert sdpa.mfu_mean == pytest.approx(391e3 * 8e8 / 1e12 / 680.0)
    assert sdpa.energy_floor_multiple_mean == pytest.approx(sdpa.gpu_j_per_token_mean / 8e8 / 1.03e-12, rel=1e-3)
    assert sdpa.tokens_per_s_spread == pytest.approx(1 - 390e3 / 392e3)
    assert sdpa.seeds == 3 and sdpa.val_loss_mean == pytest.approx(4.52) and sdpa.val_loss_ci95 > 0
    oom = summary[(summary.variant == "baseline") & (summary["mode"] == "graph")].iloc[0]
    assert oom.status == "oom" and oom.trials == 0 and "out of memory" in oom.error and pd.isna(oom.tokens_per_s_mean)


def test_claims_hold_only_as_far_as_the_intervals_allow(results_dir) -> None:
    summary = summary_frame(results_frame(results_dir))
    tie = compare_rows(summary, ("gqa", "eager"), ("sdpa", "eager"), "gpu_j_per_token")
    assert not tie.distinct and tie.wording == "indistinguishable from"
    saving = compare_rows(summary, ("sdpa", "eager"), ("baseline", "eager"), "gpu_j_per_token")
    assert saving.distinct and saving.wording == f"{100 * (1 - saving.ratio):.0f}\\% lower than"
    assert compare_rows(summary, ("sdpa", "graph"), ("sdpa", "eager"), "tokens_per_s").wording.endswith("$\\times$")
    assert compare_rows(summary, ("baseline", "graph"), ("sdpa", "eager"), "tokens_per_s").wording == "n/a"
    assert ranking(summary, "eager") == "gqa $\\approx$ sdpa $<$ baseline"
    one_value = summary.copy()  # a row of a single window has no interval: no claim either way
    one_value.loc[(one_value.variant == "gqa") & (one_value["mode"] == "eager"), "gpu_j_per_token_ci95"] = float("nan")
    assert compare_rows(one_value, ("gqa", "eager"), ("sdpa", "eager"), "gpu_j_per_token").wording == "n/a"
    assert ranking(one_value, "eager") == "sdpa $<$ baseline (no interval: gqa)"
    modes = latex.mode_macros(summary)
    assert modes["GraphVsEagerEnergySavingRange"] == "57--57" and modes["GraphVsEagerEnergyNoSaving"] == "none"
    assert modes["EagerCheapestVariant"] == "gqa" and modes["EagerDearestVariant"] == "baseline"
    assert modes["EagerCheapestVsDearestEnergy"].endswith("lower than")
    spreads = summary.copy()  # rows within 2% between windows are counted; the widest is named
    eager = spreads["mode"] == "eager"
    spreads.loc[eager, "tokens_per_s_spread"] = spreads.loc[eager, "variant"].map({"gqa": 0.05, "sdpa": 0.02,
                                                                                    "baseline": 0.001})
    modes = latex.mode_macros(spreads)
    assert modes["EagerThroughputSpreadWithinTwoPct"] == "2 of 3"
    assert modes["EagerThroughputSpreadMaxPct"] == "5.0" and modes["EagerThroughputSpreadMaxVariant"] == "gqa"


def test_build_report_writes_tables_figures_and_only_used_macros(results_dir, tmp_path) -> None:
    paper = tmp_path / "paperdir"
    paper.mkdir()
    (paper / "paper.tex").write_text(r"\dataSdpaGraphGpuJPerTokenMean \dataSdpaEagerVsEagerEnergy \dataEagerEnergyRanking"
                                     r" \dataGqaEagerVsSdpaEnergy \dataGpuMinutes \dataNoSuchThing \dataValLossRanking")
    summary = build_report(results_dir, "paper", tmp_path / "figures", paper)
    macros = (paper / "generated" / "paper" / "macros.tex").read_text()
    names = re.findall(r"\\newcommand\{\\data(\w+)\}", macros)
    assert sorted(names) == sorted(["SdpaGraphGpuJPerTokenMean", "SdpaEagerVsEagerEnergy", "EagerEnergyRanking",
                                    "GqaEagerVsSdpaEnergy", "GpuMinutes", "NoSuchThing", "ValLossRanking"])
    assert r"\newcommand{\dataSdpaGraphGpuJPerTokenMean}{1.808}" in macros  # mJ, as the text prints it
    assert r"\newcommand{\dataGqaEagerVsSdpaEnergy}{indistinguishable from}" in macros
    assert r"\newcommand{\dataGpuMinutes}{22.5}" in macros and r"\newcommand{\dataNoSuchThing}{n/a}" in macros
    assert r"\newcommand{\dataSdpaEagerVsEagerEnergy}{n/a}" in macros  # a row is not compared with itself
    assert (results_dir / "summary.csv").exists() and len(summary) == 6
    table = (paper / "generated" / "paper" / "summary.tex").read_text()
    assert "\\textbf{oom}" in table and "4.191 $\\pm$ 0.041" in table
    for name in ("energy_per_token", "tokens_per_s", "peak_memory", "power_trace", "energy_vs_loss", "loss_curves"):
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
    assert row.tokens_per_s_ratio == pytest.approx(0.9) and row.gpu_j_per_token_ratio == pytest.approx(1.0)
    assert row.device_theirs == "NVIDIA H200" and row.device_ours == "NVIDIA H100 80GB HBM3"
    assert (theirs / "comparison.csv").exists() and "sdpa" in capsys.readouterr().out


def test_every_macro_the_paper_uses_is_made_by_a_rule(results_dir, tmp_path) -> None:
    """paper.tex quotes only macros some rule produces (from GPU-like results): none is n/a for want of a rule."""
    paper = paper_dir(tmp_path)
    build_report(results_dir, "paper", tmp_path / "figures", paper)
    macros = dict(re.findall(r"\\newcommand\{\\data(\w+)\}\{(.*)\}", (paper / "generated" / "paper" / "macros.tex").read_text()))
    rule_less = [n for n, v in macros.items() if v == "n/a" and not re.match(
        r"(Flash|Cudnn|Flex|Mla|SlidingWindow|Linear|Lsh|Gqa|Baseline|Sdpa)", n)]
    assert rule_less == [] and latex.used_macros((REPO / "paper" / "paper.tex").read_text())
