"""The components family on a CPU: its settings (sensitivity axes in the sdpa job), every cell measured with its
count and FLOPs, failures as results, and the notebook template."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd

import pytest
import torch

from attnlib.components import KINDS, TRAINING_KINDS
from attnlib.experiments import components as components_family
from attnlib.experiments.components import WHOLE, ComponentsConfig, run_components_job
from attnlib.experiments.training import TrainConfig
from attnlib.pipeline import load_profile, plan, run_notebook
from attnlib.registry import supported_variants
from attnlib.measurement import Measurement
from attnlib.report import build_report
from attnlib.report.components import coverage_table
from attnlib.results import ComponentResult, Provenance, results_frame, write_result
from conftest import LLAMA_TINY, LLAMA_TINY_PARAMS

VARIANTS = supported_variants("gpt2")  # the profiles here are GPT-2 profiles

REPO = Path(__file__).resolve().parent.parent
TINY_MODEL = dict(n_layer=2, n_embd=32, n_head=4)


def tiny_config(variant: str = "sdpa", **overrides) -> ComponentsConfig:
    settings = dict(train=TrainConfig(variant=variant, model=TINY_MODEL), seq_lens=[16, 64], tokens_per_call=64, sensitivity_seq_len=16,
                    sensitivity={"batch_size": [1, 4], "n_head": [2, 4], "n_embd": [16, 32]}, training_seq_len=16,
                    trials=2,
                    window_s=0.01, warmup_calls=1, idle_s=0.01, order_seed=2)
    return ComponentsConfig(**{**settings, **overrides})


def test_settings_vary_one_axis_at_a_time_in_the_sensitivity_job_only() -> None:
    config = tiny_config()
    names = [s.name for s in config.settings()]
    assert names == ["forward/base/T16/B4/H4/C32", "forward/base/T64/B1/H4/C32", "forward/batch_size/T16/B1/H4/C32",
                     "forward/n_head/T16/B4/H2/C32", "forward/n_embd/T16/B4/H2/C16",  # a width keeps head dim 8
                     "training/base/T16/B4/H4/C32"]
    assert [s.name for s in tiny_config("flash").settings()] == names[:2]  # no sensitivity, no training step
    assert len(config.cells()) == 5 * (len(KINDS) + 1) + len(TRAINING_KINDS) + 1
    assert ComponentsConfig(**config.to_dict()).result_names() == config.result_names()
    assert len(set(config.result_names())) == len(config.cells()) * 2
    for bad in (dict(seq_lens=[16, 16]), dict(sensitivity={"depth": [2]}), dict(trials=0), dict(window_s=0),
                dict(training_variants=["performer"]),
                dict(sensitivity={"n_head": [3]})):  # 3 heads do not divide a width of 32
        with pytest.raises(ValueError):
            tiny_config(**bad)


def test_cut_seq_lens_leave_lengths_out_of_one_variants_job() -> None:
    """`cut_seq_lens`: the variant's job measures its other lengths (sensitivity and training settings untouched),
    every other job all of them; a cut of every length or of one not in the grid is refused before any GPU work."""
    cut = {"flash": [64], "sdpa": [16]}
    assert [s.name for s in tiny_config("flash", cut_seq_lens=cut).settings()] == ["forward/base/T16/B4/H4/C32"]
    sdpa = [s.name for s in tiny_config(cut_seq_lens=cut).settings()]
    assert sdpa[0] == "forward/base/T64/B1/H4/C32" and sdpa[-1] == "training/base/T16/B4/H4/C32" and len(sdpa) == 5
    assert len(tiny_config("linear", cut_seq_lens=cut).settings()) == 3  # two lengths and its training step
    for bad in ({"flash": [16, 64]}, {"flash": [32]}, {"nonesuch": [16]}):
        with pytest.raises((ValueError, KeyError)):
            tiny_config("flash", cut_seq_lens=bad)


def test_coverage_table_says_cut_where_a_length_was_left_out() -> None:
    coverage = pd.DataFrame({"variant": ["sdpa", "sdpa", "flash"], "setting": "base", "phase": "forward",
                             "seq_len": [16, 64, 16], "coverage": 0.97, "coverage_ci95": 0.01, "coverage_net": 0.96,
                             "time_coverage": 0.97, "max_cv": 0.02, "core_share": 0.2,
                             "core_over_mlp_j_per_flop": 1.5, "core_over_mlp_j_per_flop_ci95": 0.1})
    table = coverage_table(coverage, {"flash": [64]})
    assert "flash & forward & 64 & cut" in table and "sdpa & forward & 64 & 0.97" in table


@pytest.mark.parametrize("variant", ["sdpa", "lsh"])
def test_every_cell_is_measured_with_its_count_and_flops(tmp_path, variant: str) -> None:
    config = tiny_config(variant)
    frame = results_frame(run_components_job(config, tmp_path, progress=False))
    assert sorted(p.name for p in tmp_path.glob("*.json")) == sorted(config.result_names())
    assert (frame.status == "ok").all(), frame[frame.status != "ok"].error.tolist()
    assert (frame.calls >= 1).all() and (frame.tokens == frame.calls * frame.batch_size * frame.seq_len).all()
    counts = frame.groupby("component")["count"].first().to_dict()
    assert counts["layer_norm"] == 5 and counts["residual_add"] == 4 and counts[WHOLE] == 1
    training = frame[frame.phase == "training"]
    assert (len(training) > 0) == (variant == "sdpa") and set(training.component) <= {*TRAINING_KINDS, WHOLE}
    matmul = frame[frame.flops_per_call.notna()]
    assert set(matmul.component) == {"input_projection", "attention_core", "output_projection", "mlp", "lm_head"}
    assert (matmul.flops == matmul.calls * matmul.flops_per_call).all()
    elementwise = frame[frame.component.isin(["embedding", "layer_norm", "residual_add", WHOLE])]
    assert elementwise.flops_per_call.isna().all() and elementwise.tflops.isna().all()  # no silent zeros


@pytest.mark.parametrize("variant", ["sdpa", "mla"])
def test_a_llama_job_measures_every_cell_of_its_own_family(tmp_path, variant: str) -> None:
    """The components of the llama family's pass and training step (RMSNorms, RoPE, SwiGLU, MLA's rotated latent;
    both variants are among the default training variants),
    every result recording the family; a width on the sensitivity axis keeps the head dimension there too."""
    model = {**{k: v for k, v in LLAMA_TINY.items() if k != "max_position_embeddings"}, **LLAMA_TINY_PARAMS.get(variant, {})}
    config = tiny_config(train=TrainConfig(variant=variant, arch="llama", model=model), seq_lens=[16, 32],
                         sensitivity={"n_embd": [32]}, sensitivity_seq_len=16)
    if variant == "sdpa":
        assert [s.name for s in config.settings()][2:] == ["forward/n_embd/T16/B4/H2/C32", "training/base/T16/B4/H4/C64"]
    frame = results_frame(run_components_job(config, tmp_path, progress=False))
    assert sorted(p.name for p in tmp_path.glob("*.json")) == sorted(config.result_names())
    assert (frame.status == "ok").all(), frame[frame.status != "ok"].error.tolist()
    assert set(frame.arch) == {"llama"} and set(frame.component) == {*TRAINING_KINDS, WHOLE}
    assert frame.groupby("component")["count"].first()["layer_norm"] == 2 * LLAMA_TINY["num_hidden_layers"] + 1


def test_a_failed_cell_is_recorded_for_every_trial(tmp_path, monkeypatch) -> None:
    build = components_family._Job.build

    def build_or_oom(self, setting):
        if setting.seq_len == 64:
            raise torch.OutOfMemoryError("CUDA out of memory (fake)")
        return build(self, setting)

    monkeypatch.setattr(components_family._Job, "build", build_or_oom)
    frame = results_frame(run_components_job(tiny_config("gqa"), tmp_path, progress=False))
    failed = frame[frame.seq_len == 64]
    assert len(failed) == 2 * (len(KINDS) + 1) and (failed.status == "oom").all()  # gqa's T = 64: forward only
    assert (frame[frame.seq_len == 16].status == "ok").all()


def test_a_stopped_job_resumes_at_its_missing_windows(tmp_path, monkeypatch) -> None:
    config = tiny_config("flash")
    run_components_job(config, tmp_path, progress=False)
    written = {p.name: p.read_bytes() for p in tmp_path.glob("*.json")}
    missing = config.result_names()[::3]  # as if the job had been stopped: some windows never written
    for name in missing:
        (tmp_path / name).unlink()
    visited: list[str] = []
    visit = components_family._Job.visit
    monkeypatch.setattr(components_family._Job, "visit",
                        lambda self, cell, trials: visited.extend(config.result_name(cell, t) for t in trials)
                        or visit(self, cell, trials))
    again = run_components_job(config, tmp_path, progress=False)
    assert sorted(visited) == sorted(missing)  # only the missing windows are measured again
    assert len(again) == len(written) and sorted(p.name for p in tmp_path.glob("*.json")) == sorted(written)
    assert all((tmp_path / name).read_bytes() == data for name, data in written.items() if name not in missing)
    assert {r.status for r in again} == {"ok"}


def test_profile_plans_one_components_job_per_variant() -> None:
    jobs = plan(load_profile("components"), VARIANTS)
    assert [j.family for j in jobs] == ["components"] * len(VARIANTS)
    sdpa = ComponentsConfig(**next(j for j in jobs if j.variant == "sdpa").config)
    assert sdpa.seq_lens == [512, 8192] and sdpa.trials >= 3 and sdpa.window_s >= 1
    assert {s.axis for s in sdpa.settings()} == {"base", "batch_size", "n_head", "n_embd"}


def test_the_llama_profile_measures_every_llama_variant_at_2k_and_16k() -> None:
    """#27: the forward pass at T = 2048 for every variant of the 1B model, at 16K for those the budget's cut keeps
    (the reference, mla, sliding_window, linear), and sdpa's training step."""
    jobs = plan(load_profile("llama-components"), supported_variants("llama"))
    assert sorted(j.variant for j in jobs) == sorted(supported_variants("llama"))
    for job in jobs:
        config = ComponentsConfig(**job.config)
        assert config.train.arch == "llama" and config.trials >= 3 and config.window_s >= 1
        names = [s.name for s in config.settings()]
        long = ["forward/base/T16384/B1/H32/C2048"] if job.variant in ("sdpa", "mla", "sliding_window", "linear") else []
        assert names == ["forward/base/T2048/B4/H32/C2048", *long] + (
            ["training/base/T2048/B4/H32/C2048"] if job.variant == "sdpa" else [])


@pytest.mark.slow
def test_notebook_runs_a_tiny_grid(tmp_path) -> None:
    run_notebook(REPO / "notebooks" / "components.ipynb",
                 tmp_path / "components.ipynb",
                 {"variant": "mla", "out_dir": str(tmp_path / "raw")})
    frame = results_frame(tmp_path)
    assert len(frame) == 2 * (2 * (len(KINDS) + 1) + len(TRAINING_KINDS) + 1) and (frame.status == "ok").all()


def component_result(variant: str, seq_len: int, component: str, count: int, trial: int, j_per_call: float,
                     flops: float | None, setting: str = "base", batch_size: int | None = None) -> ComponentResult:
    calls, power_w = 1000, 500.0  # every window at one power: its time is its energy over 500 W
    m = Measurement(label="x", wall_s=j_per_call * calls / power_w, tokens=calls * seq_len,
                    flops=calls * flops if flops else 0.0, gpu_energy_j=j_per_call * calls,
                    gpu_energy_net_j=0.5 * j_per_call * calls, gpu_j_per_flop=j_per_call / flops if flops else None,
                    gpu_power_mean_w=power_w)
    provenance = Provenance(attnlib_commit="abc", versions={}, python="3.12", device="NVIDIA H100 80GB HBM3",
                            device_uuid="GPU-0", created="2026-11-24T00:00:00+00:00")
    return ComponentResult(variant=variant, mode="eager", component=component, phase="forward", seq_len=seq_len,
                           batch_size=batch_size or max(1, 8192 // seq_len), n_head=12, n_embd=768, setting=setting,
                           trial=trial, order_seed=1, provenance=provenance,
                           config={"seq_lens": [512, 8192], "trials": 3, "window_s": 1.2, "tokens_per_call": 8192,
                                   "sensitivity_variant": "sdpa", "sensitivity_seq_len": 512},
                           measurement=m, count=count, calls=calls, flops_per_call=flops)


def test_components_report_gives_coverage_shares_and_the_sections_macros(tmp_path) -> None:
    """Coverage = sum of count x energy per call over the whole pass's, repeated on each of a model's rows; shares
    sum to one; energy per FLOP against the floor for matmul components; exactly the macros the section uses."""
    results = tmp_path / "components"
    counts = {"embedding": 1, "layer_norm": 25, "input_projection": 12, "attention_core": 12,
              "output_projection": 12, "mlp": 12, "residual_add": 24, "lm_head": 1}
    per_call = {"embedding": 1e-4, "layer_norm": 2e-4, "input_projection": 1e-3, "attention_core": 2e-3,
                "output_projection": 4e-4, "mlp": 3e-3, "residual_add": 1e-4, "lm_head": 5e-3}
    flops = {"input_projection": 1e9, "attention_core": 5e8, "output_projection": 3e8, "mlp": 4e9, "lm_head": 6e9}
    total = sum(counts[k] * per_call[k] for k in counts)
    for variant in ("sdpa", "linear"):
        for seq_len in (512, 8192):
            for trial in range(3):
                noise = 1 + 0.01 * trial
                for kind in counts:
                    write_result(results / "raw" / f"{variant}_{seq_len}_{kind}_{trial}.json", component_result(
                        variant, seq_len, kind, counts[kind], trial, per_call[kind] * noise, flops.get(kind)))
                write_result(results / "raw" / f"{variant}_{seq_len}_whole_{trial}.json", component_result(
                    variant, seq_len, WHOLE, 1, trial, total / 0.97 * noise, None))
    for trial in range(3):  # one sensitivity model of sdpa: batch 1, its components cover 90% of its pass
        for kind in counts:
            write_result(results / "raw" / f"sdpa_B1_{kind}_{trial}.json", component_result(
                "sdpa", 512, kind, counts[kind], trial, per_call[kind], flops.get(kind), "batch_size", 1))
        write_result(results / "raw" / f"sdpa_B1_whole_{trial}.json", component_result(
            "sdpa", 512, WHOLE, 1, trial, total / 0.9, None, "batch_size", 1))
    (results / "calibration").mkdir()
    (results / "calibration" / "GPU-0.json").write_text(json.dumps({"uuid": "GPU-0", "tflops": 700.0,
                                                                    "j_per_flop": 1e-12}))
    paper = tmp_path / "paperdir"
    paper.mkdir()
    shutil.copy(REPO / "paper" / "components.tex", paper / "components.tex")
    summary = build_report(results, "components", tmp_path / "figures", paper)
    for column in ("variant", "seq_len", "batch_size", "phase", "component", "calls", "j_per_call_mean",
                   "j_per_call_ci95", "j_per_call_cv", "flops_per_call", "j_per_flop", "floor_multiple", "coverage"):
        assert column in summary, column
    assert summary[summary.setting == "base"].coverage.to_numpy() == pytest.approx(0.97)
    parts = summary[summary.component != WHOLE]
    assert parts.groupby(["variant", "seq_len", "batch_size"]).share.sum().to_numpy() == pytest.approx(1.0)
    mlp = summary[(summary.component == "mlp")].iloc[0]
    assert mlp.j_per_flop == pytest.approx(3e-3 * 1.01 / 4e9) and mlp.floor_multiple == pytest.approx(3e-3 * 1.01 / 4e9 / 1e-12)
    coverage = pd.read_csv(results / "coverage.csv")
    assert coverage.core_over_mlp_j_per_flop.to_numpy() == pytest.approx((2e-3 / 5e8) / (3e-3 / 4e9))
    macros = (paper / "generated" / "components" / "macros.tex").read_text()
    names = set(re.findall(r"\\newcommand\{\\data(\w+)\}", macros))
    assert names == set(re.findall(r"\\data(\w+)", (paper / "components.tex").read_text()))
    assert "\\dataComponentsCoverageRange}{0.97--0.97}" in macros
    # every window took as long as the energy says at one power, so the time adds up like the energy does
    assert coverage.time_coverage.to_numpy() == pytest.approx(coverage.coverage.to_numpy())
    assert coverage.coverage_net.notna().all()
    assert (coverage.coverage_ci95 > 0).all() and coverage.core_over_mlp_j_per_flop_ci95.notna().all()
    assert "The coverage interval includes 1 for 0 of the 4 models." in macros  # 0.97, intervals of ~1%
    assert "At $T$ = 512 the attention core is dearer for sdpa" in macros
    assert "baseline, flash, cudnn, flex, gqa, mla, sliding\\_window and lsh have no results" in macros
    assert "mla &  &  & not measured" in (paper / "generated" / "components" / "coverage.tex").read_text()
    assert "CLEAR (published)" in (paper / "generated" / "components" / "coverage.tex").read_text()
    sensitivity = (paper / "generated" / "components" / "sensitivity.tex").read_text().splitlines()
    assert [line.split(" & ")[0] for line in sensitivity if " & " in line][1:] == ["the base model", "batch 1"]
    assert "coverage is 0.90--0.97; the least, for batch 1 (0.90 $\\pm$ 0.00" in macros
    assert "has an interval that excludes 1" in macros
    for figure in ("components_share", "components_floor"):
        assert (tmp_path / "figures" / "components" / f"{figure}.pdf").exists()
