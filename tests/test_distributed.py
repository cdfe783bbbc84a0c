"""The distributed job on CPU: torchrun with two gloo ranks runs every cell of a tiny grid, writes one result per
window with each rank's figures and their sum, and records a variant without a distributed form as unsupported."""

from __future__ import annotations

import pytest

from attnlib.experiments.distributed import DistributedConfig, launch
from attnlib.experiments.training import TrainConfig
from attnlib.results import results_frame

TINY_MODEL = dict(n_layer=2, n_embd=32, n_head=4)


def tiny_config(variant: str = "sdpa", **overrides) -> DistributedConfig:
    settings = dict(train=TrainConfig(variant=variant, dataset="python-docs", model=TINY_MODEL, seq_len=32,
                                      batch_size=2),
                    gpus=2, ddp_world_sizes=[1, 2, 4], cp_world_sizes=[1, 2], cp_seq_lens=[64], trials=2,
                    window_s=0.05, warmup_steps=1, idle_s=0.01, order_seed=3)
    return DistributedConfig(**{**settings, **overrides})


def test_config_resolves_cells_and_refuses_bad_values() -> None:
    config = tiny_config()
    assert config.cells() == [("ddp", 1, 32), ("ddp", 2, 32), ("context_parallel", 1, 64),
                              ("context_parallel", 2, 64)]  # 4 ranks: more than the 2 cards
    assert len(config.result_names()) == 4 * 2
    assert DistributedConfig(**config.to_dict()).result_names() == config.result_names()  # what papermill receives
    for bad in (dict(cp_seq_lens=[66]), dict(gpus=0), dict(ddp_world_sizes=[2, 2]), dict(window_s=0),
                dict(train=TrainConfig(mode="compile"))):
        with pytest.raises(ValueError):
            tiny_config(**bad)


def test_torchrun_job_measures_every_cell_on_its_ranks(tmp_path) -> None:
    config = tiny_config("sdpa")
    results = launch(config, tmp_path / "raw", tmp_path / "cache")
    assert sorted(p.name for p in (tmp_path / "raw").glob("*.json")) == sorted(config.result_names())
    assert len(results) == 8 and all(r.status == "ok" for r in results), [r.error for r in results]
    for r in results:
        assert len(r.ranks) == r.world_size  # each rank's own figures, beside the sum
        assert r.measurement.tokens == sum(rank["tokens"] for rank in r.ranks)
        assert r.measurement.gpu_energy_j is None and "rank 0" in r.measurement.reasons["gpu_energy_j"]  # no GPU
    cp = [r for r in results if r.strategy == "context_parallel"]
    assert {(r.world_size, r.form) for r in cp} == {(1, None), (2, "allgather (zigzag)")}
    assert all(r.measurement.tokens == r.calls * 64 for r in cp)  # the whole sequence, over all ranks
    ddp = [r for r in results if r.strategy == "ddp"]
    assert all(r.measurement.tokens == r.steps * r.world_size * 2 * 32 for r in ddp)  # weak scaling
    assert set(results_frame(tmp_path).kind) == {"distributed"}


def test_a_variant_without_a_distributed_form_is_recorded_unsupported(tmp_path) -> None:
    config = tiny_config("gqa", ddp_world_sizes=[2])
    results = launch(config, tmp_path / "raw", tmp_path / "cache")
    status = {(r.strategy, r.world_size): r.status for r in results}
    assert status == {("ddp", 2): "ok", ("context_parallel", 1): "ok", ("context_parallel", 2): "unsupported"}
    assert all("attention interface" in r.error for r in results if r.status == "unsupported")
