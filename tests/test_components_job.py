"""The components family on a CPU: its settings (sensitivity axes in the sdpa job), every cell measured with its
count and FLOPs, failures as results, and the notebook template."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from attnlib.components import KINDS
from attnlib.experiments import components as components_family
from attnlib.experiments.components import WHOLE, ComponentsConfig, run_components_job
from attnlib.experiments.training import TrainConfig
from attnlib.pipeline import load_profile, plan
from attnlib.registry import VARIANTS
from attnlib.results import results_frame

REPO = Path(__file__).resolve().parent.parent
TINY_MODEL = dict(n_layer=2, n_embd=32, n_head=4)


def tiny_config(variant: str = "sdpa", **overrides) -> ComponentsConfig:
    settings = dict(train=TrainConfig(variant=variant, model=TINY_MODEL), seq_lens=[16, 64], tokens_per_call=64, sensitivity_seq_len=16,
                    sensitivity={"batch_size": [1, 4], "n_head": [2, 4], "n_embd": [16, 32]}, trials=2,
                    window_s=0.01, warmup_calls=1, idle_s=0.01, order_seed=2)
    return ComponentsConfig(**{**settings, **overrides})


def test_settings_vary_one_axis_at_a_time_in_the_sensitivity_job_only() -> None:
    config = tiny_config()
    names = [s.name for s in config.settings()]
    assert names == ["base/T16/B4/H4/C32", "base/T64/B1/H4/C32", "batch_size/T16/B1/H4/C32",
                     "n_head/T16/B4/H2/C32", "n_embd/T16/B4/H2/C16"]  # a width keeps the head dimension (8)
    assert [s.axis for s in tiny_config("gqa").settings()] == ["base", "base"]
    assert len(config.cells()) == len(names) * (len(KINDS) + 1)
    assert ComponentsConfig(**config.to_dict()).result_names() == config.result_names()
    assert len(set(config.result_names())) == len(config.cells()) * 2
    for bad in (dict(seq_lens=[16, 16]), dict(sensitivity={"depth": [2]}), dict(trials=0), dict(window_s=0),
                dict(sensitivity={"n_head": [3]})):  # 3 heads do not divide a width of 32
        with pytest.raises(ValueError):
            tiny_config(**bad)


@pytest.mark.parametrize("variant", ["sdpa", "lsh"])
def test_every_cell_is_measured_with_its_count_and_flops(tmp_path, variant: str) -> None:
    config = tiny_config(variant)
    frame = results_frame(run_components_job(config, tmp_path, progress=False))
    assert sorted(p.name for p in tmp_path.glob("*.json")) == sorted(config.result_names())
    assert (frame.status == "ok").all(), frame[frame.status != "ok"].error.tolist()
    assert (frame.calls >= 1).all() and (frame.tokens == frame.calls * frame.batch_size * frame.seq_len).all()
    counts = frame.groupby("component")["count"].first().to_dict()
    assert counts["layer_norm"] == 5 and counts["residual_add"] == 4 and counts[WHOLE] == 1
    matmul = frame[frame.flops_per_call.notna()]
    assert set(matmul.component) == {"input_projection", "attention_core", "output_projection", "mlp", "lm_head"}
    assert (matmul.flops == matmul.calls * matmul.flops_per_call).all()
    elementwise = frame[frame.component.isin(["embedding", "layer_norm", "residual_add", WHOLE])]
    assert elementwise.flops_per_call.isna().all() and elementwise.tflops.isna().all()  # no silent zeros


def test_a_failed_cell_is_recorded_for_every_trial(tmp_path, monkeypatch) -> None:
    build = components_family._Job.build

    def build_or_oom(self, setting):
        if setting.seq_len == 64:
            raise torch.OutOfMemoryError("CUDA out of memory (fake)")
        return build(self, setting)

    monkeypatch.setattr(components_family._Job, "build", build_or_oom)
    frame = results_frame(run_components_job(tiny_config("gqa"), tmp_path, progress=False))
    failed = frame[frame.seq_len == 64]
    assert len(failed) == 2 * (len(KINDS) + 1) and (failed.status == "oom").all()
    assert (frame[frame.seq_len == 16].status == "ok").all()


def test_profile_plans_one_components_job_per_variant() -> None:
    jobs = plan(load_profile("components"), list(VARIANTS))
    assert [j.family for j in jobs] == ["components"] * len(VARIANTS)
    sdpa = ComponentsConfig(**next(j for j in jobs if j.variant == "sdpa").config)
    assert sdpa.seq_lens == [512, 8192] and sdpa.trials >= 3 and sdpa.window_s >= 1
    assert {s.axis for s in sdpa.settings()} == {"base", "batch_size", "n_head", "n_embd"}


def test_notebook_runs_a_tiny_grid(tmp_path) -> None:
    import papermill

    papermill.execute_notebook(REPO / "notebooks" / "components.ipynb", tmp_path / "components.ipynb",
                               parameters={"variant": "mla", "out_dir": str(tmp_path / "raw")}, kernel_name="python3",
                               progress_bar=False, cwd=str(REPO / "notebooks"))
    frame = results_frame(tmp_path)
    assert len(frame) == 2 * 2 * (len(KINDS) + 1) and (frame.status == "ok").all()
