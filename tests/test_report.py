"""The report on GPU-like results (energy, traces, a failure, a calibration): what a CPU smoke run never shows."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from attnlib.registry import VARIANTS
from attnlib.report import build_report

REQUIRED = ["variant", "mode", "status", "device", "kernel", "trials", "tokens_per_s_mean", "tokens_per_s_ci95",
            "gpu_j_per_token_mean", "gpu_j_per_token_ci95", "gpu_j_per_token_net_mean", "mean_power_w", "peak_mem_gib",
            "params_m", "model_tflops", "mfu", "val_loss"]


def trial(variant: str, mode: str, index: int, tokens_per_s: float, j_per_token: float, status: str = "ok") -> dict:
    tokens = int(tokens_per_s * 10)
    measurement = None if status != "ok" else {
        "wall_s": 10.0 - 0.5 * (mode == "compile" and index == 2), "tokens": tokens, "tokens_per_s": tokens_per_s, "j_per_token": j_per_token,
        "j_per_token_net": j_per_token * 0.8, "gpu_power_mean_w": j_per_token * tokens_per_s,
        "torch_peak_mem_bytes": 12 * 2**30, "tflops": tokens_per_s * 8e8 / 1e12, "mfu": None,
        "j_per_flop": j_per_token / 8e8, "cpu_energy_j": 20.0, "co2_kg": 1e-4,
        "power_trace": [(0.1 * i, 500.0 + i) for i in range(100)] if index == 0 else None,
    }
    return {"kind": "trial", "variant": variant, "mode": mode, "trial": index, "status": status, "device": "NVIDIA H200",
            "device_uuid": f"GPU-{index % 2}", "created": "2026-02-01T00:00:00+00:00",
            "error": None if status == "ok" else "OutOfMemoryError: CUDA out of memory", "measurement": measurement,
            "model": {"kernel": "k", "params": 124_439_808}, "config": {"window_s": 10.0, "idle_s": 2.0}, "timing": {"warmup_s": 2.0, "first_step_s": 1.0},
            "data": {"dataset": "python-docs-3.12", "dataset_sha256": "ab" * 32, "tokenizer": "t", "train_tokens": 5}}


def quality(variant: str, val_loss: float) -> dict:
    return {"kind": "quality", "variant": variant, "mode": "eager", "status": "ok", "val_loss": val_loss,
            "device": "NVIDIA H200", "device_uuid": "GPU-9", "created": "2026-01-01T00:00:00+00:00",
            "measurement": {"tokens": 1000, "gpu_energy_j": 5.0},
            "loss_curve": [{"tokens": 0, "val_loss": 11.0}, {"tokens": 1000, "val_loss": val_loss}]}


@pytest.fixture
def results_dir(tmp_path):
    raw = tmp_path / "results" / "raw"
    raw.mkdir(parents=True)
    results = [trial("sdpa", mode, i, tps, jpt) for i in range(3)
               for mode, tps, jpt in (("eager", 145e3 + 1e3 * i, 4.1e-3), ("compile", 330e3 - 2e3 * i, 1.8e-3))]
    results += [trial("baseline", "eager", i, 92e3, 5.3e-3) for i in range(3)]
    results += [trial("baseline", "compile", 0, 0, 0, status="oom")]
    results += [quality("sdpa", 3.1), quality("baseline", 3.1)]
    for i, r in enumerate(results):
        (raw / f"{i}.json").write_text(json.dumps(r))
    (tmp_path / "results" / "calibration").mkdir()
    for uuid, tflops, j_per_flop in (("GPU-0", 661.0, 1.05e-12), ("GPU-1", 650.0, 1.10e-12)):  # two cards
        (tmp_path / "results" / "calibration" / f"{uuid}.json").write_text(json.dumps(
            {"uuid": uuid, "tflops": tflops, "j_per_flop": j_per_flop, "pj_per_flop": j_per_flop * 1e12}))
    return tmp_path


def test_summary_has_the_paper_columns_and_statistics(results_dir) -> None:
    summary = build_report(results_dir / "results", "paper", results_dir / "figures", results_dir / "paper",
                           ["baseline", "sdpa"])
    assert set(REQUIRED) <= set(summary.columns)
    csv = pd.read_csv(results_dir / "results" / "summary.csv")
    assert list(csv.variant) == ["baseline", "baseline", "sdpa", "sdpa"]
    sdpa = summary[(summary.variant == "sdpa") & (summary["mode"] == "eager")].iloc[0]
    assert sdpa.trials == 3 and sdpa.tokens_per_s_mean == pytest.approx(146e3)
    assert sdpa.tokens_per_s_ci95 == pytest.approx(4.303 * 1e3 / 3**0.5)  # t(0.975, 2) x std / sqrt(n)
    # each trial against its own card's calibration: trials 0 and 2 on GPU-0, trial 1 on GPU-1
    mfu = [(145e3 + 1e3 * i) * 8e8 / 1e12 / peak for i, peak in enumerate((661.0, 650.0, 661.0))]
    assert sdpa.mfu == pytest.approx(sum(mfu) / 3)
    floor = [(4.1e-3 / 8e8) / j_per_flop for j_per_flop in (1.05e-12, 1.10e-12, 1.05e-12)]
    assert sdpa.energy_floor_multiple == pytest.approx(sum(floor) / 3)
    assert sdpa.val_loss == 3.1
    compiled = summary[(summary.variant == "sdpa") & (summary["mode"] == "compile")].iloc[0]
    assert compiled.val_loss == 3.1 and compiled.val_loss_from_mode == "eager"  # one quality run per variant
    assert compiled.short_windows == 1 and compiled.window_s_min == 9.5 and sdpa.short_windows == 0
    failed = summary[(summary.variant == "baseline") & (summary["mode"] == "compile")].iloc[0]
    assert failed.status == "oom" and failed.trials == 0 and pd.isna(failed.gpu_j_per_token_mean)


def test_tables_macros_and_figures(results_dir) -> None:
    build_report(results_dir / "results", "paper", results_dir / "figures", results_dir / "paper", ["baseline", "sdpa"])
    generated = results_dir / "paper" / "generated" / "paper"
    table = (generated / "summary.tex").read_text()
    assert r"\toprule" in table and r"$\pm$" in table and r"\textbf{oom}" in table
    prior = (generated / "prior_comparison.tex").read_text()
    assert "Baseline & 12,555 & 21.2" in prior and "(wrong layout)" in prior  # 1.39 MJ over 20 x 400 x 8192 tokens
    macros = (generated / "macros.tex").read_text()
    assert r"\newcommand{\dataBestEnergyVariant}{sdpa}" in macros  # eager: sdpa 4.1 < baseline 5.3 mJ/token
    assert r"\newcommand{\dataCalibratedTflops}{656}" in macros and r"\dataCalibratedTflopsRange}{650--661}" in macros
    assert r"\newcommand{\dataDevice}{NVIDIA H200}" in macros
    assert r"\dataShortWindows}{1}" in macros and r"\dataSdpaCompileSavingPct}{" in macros
    assert r"\dataEagerEnergyRanking}{sdpa $<$ baseline}" in macros
    # trial-to-trial throughput: sdpa eager 145k..147k, compiled 326k..330k; compiled power 590 W against 599 W
    assert r"\dataEagerThroughputSpreadPct}{1}" in macros and r"\dataEagerThroughputSpreadRow}{sdpa/eager}" in macros
    assert r"\dataCompileThroughputSpreadRow}{sdpa/compile}" in macros
    assert r"\dataCompilePowerChange}{1\% lower}" in macros and r"\dataCompileSpeedupMax}{2.25}" in macros
    assert r"\dataTrialCards}{2}" in macros
    assert r"\dataQualityCards}{1 other card of the same model, before the trials}" in macros
    for name in ("energy_per_token", "tokens_per_s", "peak_memory", "power_trace", "energy_vs_loss", "loss_curves"):
        assert (results_dir / "figures" / "paper" / f"{name}.png").stat().st_size > 5000


def test_results_of_two_devices_are_refused(results_dir) -> None:
    """One table, one kind of card: an H100 trial among H200 results is an error, not a row."""
    (results_dir / "results" / "raw" / "h100.json").write_text(json.dumps({**trial("sdpa", "eager", 3, 1e5, 4e-3),
                                                                             "device": "NVIDIA H100 80GB HBM3"}))
    with pytest.raises(ValueError, match="mixes devices"):
        build_report(results_dir / "results", "paper", results_dir / "figures", results_dir / "paper", ["sdpa"])


def test_cpu_results_give_macros_that_say_n_a(tmp_path) -> None:
    """A CPU run measures no energy: every energy figure is "n/a", none is zero and nothing fails."""
    raw = tmp_path / "results" / "raw"
    raw.mkdir(parents=True)
    for i, result in enumerate(trial(v, "eager", t, 1e3, 0.0) for v in ("baseline", "sdpa") for t in range(2)):
        result["measurement"].update(j_per_token=None, j_per_token_net=None, gpu_power_mean_w=None, j_per_flop=None,
                                     torch_peak_mem_bytes=None, power_trace=None)
        result.update(device="cpu", device_uuid=None)
        (raw / f"{i}.json").write_text(json.dumps(result))
    build_report(tmp_path / "results", "smoke", tmp_path / "figures", tmp_path / "paper", ["baseline", "sdpa"])
    macros = (tmp_path / "paper" / "generated" / "smoke" / "macros.tex").read_text()
    assert r"\dataSdpaOverBaselineEnergySavingPct}{n/a}" in macros and r"\dataSdpaCompileSavingPct}{n/a}" in macros
    assert r"\dataSdpaOverBaselineSpeedup}{1.00}" in macros
    assert r"\dataTrialCards}{n/a}" in macros  # no GPU card: not "0 cards"
    repo = Path(__file__).resolve().parent.parent  # every macro the paper quotes is defined, or LaTeX fails
    quoted = set(re.findall(r"\\data([A-Za-z]+)", (repo / "paper" / "paper.tex").read_text()))
    assert quoted <= set(re.findall(r"newcommand\{\\data([A-Za-z]+)\}", macros))


def test_committed_paper_results_rebuild_to_the_committed_tables(tmp_path) -> None:
    """The reviewer path: the committed raw results give exactly the committed tables and macros."""
    repo = Path(__file__).resolve().parent.parent
    if not (repo / "results" / "paper" / "raw").is_dir():
        pytest.skip("no committed paper results in this checkout")
    build_report(repo / "results" / "paper", "paper", tmp_path / "figures", tmp_path / "paper", list(VARIANTS))
    for name in ("summary.tex", "prior_comparison.tex", "macros.tex"):
        committed = (repo / "paper" / "generated" / "paper" / name).read_text()
        assert (tmp_path / "paper" / "generated" / "paper" / name).read_text() == committed, name
