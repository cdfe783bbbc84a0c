"""The distributed job on CPU: torchrun with two gloo ranks runs every cell of a tiny grid, writes one result per
window with each rank's figures and their sum, and records a variant without a distributed form as unsupported."""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import pytest

from attnlib.experiments.distributed import DistributedConfig, _agreed_count, launch, run_distributed_job
from attnlib.experiments.training import TrainConfig
from attnlib.measurement import Measurement
from attnlib.report import build_report
from attnlib.results import DistributedResult, Provenance, results_frame, write_result
from attnlib.pipeline import run_notebook

REPO = Path(__file__).resolve().parent.parent
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
    ring = [("ring_attention", 1, 64), ("ring_attention", 2, 64)]  # PyTorch's ring: sdpa's core only
    assert tiny_config(ring_world_sizes=[1, 2]).cells() == config.cells() + ring
    assert tiny_config("gqa", ring_world_sizes=[1, 2]).cells() == tiny_config("gqa").cells()
    for bad in (dict(cp_seq_lens=[66]), dict(gpus=0), dict(ddp_world_sizes=[2, 2]), dict(window_s=0),
                dict(train=TrainConfig(mode="compile"))):
        with pytest.raises(ValueError):
            tiny_config(**bad)


def test_a_window_counts_its_steps_from_the_fastest_timed_one() -> None:
    durations = iter([0.05, 0.01, 0.02])  # a slow first step (an allocator growing) would shorten the window
    assert _agreed_count(lambda: time.sleep(next(durations)), 0.1, None) in (5, 6, 7, 8, 9, 10)  # not 2
    assert _agreed_count(lambda: None, 0.0, None, timed_calls=1) == 1  # at least one step


@pytest.mark.slow
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
    assert {(r.world_size, r.form) for r in cp} == {(1, "allgather (zigzag)"), (2, "allgather (zigzag)")}
    assert all(r.measurement.tokens == r.calls * 64 for r in cp)  # the whole sequence, over all ranks
    assert all(r.comm_share > 0 and "gloo" in r.comm_share_source for r in results if r.world_size == 2)
    ddp = [r for r in results if r.strategy == "ddp"]
    assert all(r.measurement.tokens == r.steps * r.world_size * 2 * 32 for r in ddp)  # weak scaling
    assert set(results_frame(tmp_path).kind) == {"distributed"}


@pytest.mark.slow
def test_a_variant_without_a_distributed_form_is_recorded_unsupported(tmp_path) -> None:
    config = tiny_config("lsh", ddp_world_sizes=[2])
    results = launch(config, tmp_path / "raw", tmp_path / "cache")
    status = {(r.strategy, r.world_size): r.status for r in results}
    assert status == {("ddp", 2): "ok", ("context_parallel", 1): "unsupported", ("context_parallel", 2): "unsupported"}
    assert all("no distributed form" in r.error for r in results if r.status == "unsupported")


def test_ring_attention_off_cuda_is_recorded_unsupported(tmp_path) -> None:
    config = tiny_config("sdpa", gpus=1, ddp_world_sizes=[1], cp_world_sizes=[1], ring_world_sizes=[1], trials=1)
    results = run_distributed_job(config, tmp_path, tmp_path / "cache", progress=False)  # one rank, no torchrun
    status = {r.strategy: r.status for r in results}
    assert status == {"ddp": "ok", "context_parallel": "ok", "ring_attention": "unsupported"}
    assert "CUDA" in next(r.error for r in results if r.strategy == "ring_attention")


def test_a_stopped_job_resumes_at_its_missing_windows(tmp_path, monkeypatch) -> None:
    from attnlib.experiments import distributed as family

    config = tiny_config("sdpa", gpus=1, ddp_world_sizes=[1], cp_world_sizes=[1])
    run_distributed_job(config, tmp_path, tmp_path / "cache", progress=False)
    written = {p.name: p.read_bytes() for p in tmp_path.glob("*.json")}
    missing = config.result_names()[1::2]  # as if stopped: every cell's second window never written
    for name in missing:
        (tmp_path / name).unlink()
    visited: list[str] = []
    visit = family._Job.visit
    monkeypatch.setattr(family._Job, "visit", lambda self, cell, trials: visited.extend(
        self.name(*self.cells[cell], t) for t in trials) or visit(self, cell, trials))
    again = run_distributed_job(config, tmp_path, tmp_path / "cache", progress=False)
    assert sorted(visited) == sorted(missing) and len(again) == len(written)
    assert all((tmp_path / n).read_bytes() == b for n, b in written.items() if n not in missing)
    assert sorted(p.name for p in tmp_path.glob("*.json")) == sorted(written)


def distributed_result(variant: str, strategy: str, world: int, seq_len: int, trial: int, tokens_per_s: float,
                       j_per_token: float, status: str = "ok") -> DistributedResult:
    wall, tokens = 2.0, int(2.0 * tokens_per_s)
    m = None if status != "ok" else Measurement(
        label="x", wall_s=wall, tokens=tokens, tokens_per_s=tokens_per_s, gpu_count=world,
        gpu_j_per_token=j_per_token, gpu_energy_j=j_per_token * tokens, torch_peak_mem_bytes=world * 2**30)
    provenance = Provenance(attnlib_commit="abc", versions={}, python="3.12", device="NVIDIA H200",
                            device_uuid="GPU-0", created="2026-11-24T00:00:00+00:00")
    return DistributedResult(
        variant=variant, mode="eager", strategy=strategy, world_size=world, seq_len=seq_len, batch_size=16,
        layer_pass=None, trial=trial, order_seed=1, status=status, provenance=provenance,
        config=tiny_config(variant).to_dict(), measurement=m, ranks=[{"tokens": tokens // world}] * world,
        comm_share=0.1 * (world - 1) if m else None,
        error=None if m else "NotImplementedError: lsh: no distributed form (its buckets are sorted over the "
                             "whole sequence)")


def test_report_gives_scaling_efficiency_energy_per_token_and_the_sections_macros(tmp_path) -> None:
    results = tmp_path / "distributed"
    for trial in range(3):
        jitter = 1 + 0.001 * trial
        for world, tps, jpt in ((1, 100.0, 1.0), (2, 180.0, 1.2), (4, 320.0, 1.5)):
            write_result(results / "raw" / f"sdpa_ddp_{world}_{trial}.json",
                         distributed_result("sdpa", "ddp", world, 512, trial, tps * jitter, jpt * jitter))
        write_result(results / "raw" / f"lsh_cp_{trial}.json",
                     distributed_result("lsh", "context_parallel", 2, 65536, trial, 0, 0, status="unsupported"))
    paper = tmp_path / "paperdir"
    paper.mkdir()
    shutil.copy(REPO / "paper" / "distributed.tex", paper / "distributed.tex")
    summary = build_report(results, "distributed", tmp_path / "figures", paper)
    for column in ("variant", "strategy", "world_size", "seq_len", "status", "windows", "tokens_per_s_mean",
                   "gpu_j_per_token_mean", "gpu_j_per_token_ci95", "scaling_efficiency", "peak_mem_gib_per_gpu"):
        assert column in summary, column
    four = summary[(summary.variant == "sdpa") & (summary.world_size == 4)].iloc[0]
    assert four.scaling_efficiency == pytest.approx(320 / (4 * 100)) and four.peak_mem_gib_per_gpu == pytest.approx(4)
    assert four.j_per_token_vs_one_gpu == pytest.approx(1.5)
    macros = (paper / "generated" / "distributed" / "macros.tex").read_text()
    names = set(re.findall(r"\\newcommand\{\\data(\w+)\}", macros))
    assert names == set(re.findall(r"\\data(\w+)", (paper / "distributed.tex").read_text()))
    assert "sdpa, DDP training on 4 GPUs: 320 tokens/s, scaling efficiency 0.80, energy per token 50\\% higher than one GPU's, 30\\% of step time in collectives" in macros
    assert "lsh has no context-parallel attention layer: NotImplementedError: lsh: no distributed form" in macros
    assert (tmp_path / "figures" / "distributed" / "distributed_scaling.pdf").exists()


@pytest.mark.slow
def test_notebook_runs_a_tiny_grid_on_two_cpu_ranks(tmp_path) -> None:
    """The family's notebook template, as papermill runs it for a job (here its tiny default: two gloo ranks)."""
    out = tmp_path / "raw"
    run_notebook(REPO / "notebooks" / "distributed.ipynb",
                 tmp_path / "distributed.ipynb",
                 {"variant": "linear", "out_dir": str(out), "cache_dir": str(tmp_path)})
    frame = results_frame(tmp_path)
    assert len(frame) == 4 * 2 and (frame.status == "ok").all(), frame.error.tolist()
    assert set(frame.form.dropna()) == {"carried_state (contiguous)"}


def test_profile_runs_on_the_gpus_asked_for_and_plans_its_own_variants() -> None:
    from attnlib.pipeline import load_profile, plan

    profile = load_profile("distributed", gpus=2)
    jobs = plan(profile, list(profile.variants))
    assert sorted(j.variant for j in jobs) == sorted(["sdpa", "gqa", "mla", "sliding_window", "linear"])
    config = DistributedConfig(**jobs[0].config)
    assert config.gpus == 2 and {w for _, w, _ in config.cells()} == {1, 2}  # 4 needs more cards
    assert load_profile("distributed").families["distributed"].get("gpus", 1) == 1
    with pytest.raises(ValueError, match="no \\[distributed\\] section"):
        load_profile("paper", gpus=2)
