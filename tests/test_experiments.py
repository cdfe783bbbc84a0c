"""Experiment families on the CPU with tiny models: the training engine, trials and quality jobs, typed results,
failure recording, the job plan and resumption."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import tarfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from attnlib import pipeline
from attnlib.data import prepare_data
from attnlib.experiments.quality import QualityConfig, run_quality_job
from attnlib.experiments.training import TrainConfig, Trainer, causal_lm_loss, chunked_causal_lm_loss
from attnlib.experiments.trials import TrialsConfig, run_trials_job
from attnlib.pipeline import load_profile, plan
from attnlib.results import (Provenance, QualityResult, TrialResult, load_results, read_result, results_frame, set_aside,
                             write_result)

REPO = Path(__file__).resolve().parent.parent
TINY_TRAIN = dict(seq_len=32, batch_size=2, model=dict(n_layer=1, n_embd=32, n_head=2, n_positions=64),
                  dataset="python-docs", max_documents=300)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def trainer_for(cache, **overrides) -> Trainer:
    config = TrainConfig(**{**dict(variant="sdpa", **TINY_TRAIN), **overrides})
    data = prepare_data(config.dataset, config.seq_len, cache, config.max_documents)
    return Trainer(config, data, torch.device("cpu"), total_steps=10)


def test_same_seed_same_losses_and_restart_reproduces(cache) -> None:
    first = trainer_for(cache)
    losses = [first.step().item() for _ in range(3)]
    assert [trainer_for(cache).step().item() for _ in range(1)] == losses[:1]
    assert trainer_for(cache, seed=7).step().item() != losses[0]
    first.restart(1234, 10)  # the same parameters, fresh weights, optimiser and data order: the same run again
    assert [first.step().item() for _ in range(3)] == losses


@pytest.mark.parametrize("scope", ["model", "block", "nested"])
def test_compiled_modes_match_eager(cache, scope: str) -> None:
    """Compiled (either scope) computes eager's loss: no attention mask is built, causality stays in the cores."""
    eager, compiled = trainer_for(cache, variant="baseline"), trainer_for(cache, variant="baseline", mode="compile",
                                                                          compile_scope=scope)
    for t in (eager, compiled):
        t.model.eval()  # no dropout: both runs see the same network
    ids, labels = eager.train_ids[:2], eager.train_labels[:2]
    torch.testing.assert_close(compiled._loss(ids, labels), eager._loss(ids, labels), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("autocast", [False, True])
def test_chunked_loss_equals_plain_loss_with_gradients(autocast: bool) -> None:
    """The chunked head + loss (long context: no [N, V] logits) gives the plain loss and its gradients, with ignored
    labels and a last chunk shorter than the others; under bf16 autocast within bf16 rounding."""
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 101, bias=False)
    hidden = torch.randn(3, 37, 16, requires_grad=True)
    labels = torch.randint(0, 101, (3, 37))
    labels[0, 5:9] = -100
    tolerance = dict(rtol=2e-2, atol=2e-3) if autocast else dict(rtol=1e-5, atol=1e-6)
    results = []
    for loss_fn in (causal_lm_loss, lambda h, y, m: chunked_causal_lm_loss(h, y, m, chunk_tokens=10)):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = loss_fn(hidden, labels, head)
        results.append((loss, *torch.autograd.grad(loss, [hidden, head.weight])))
    for plain, chunked in zip(*results):
        torch.testing.assert_close(chunked, plain, **tolerance)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):  # evaluation: the loss alone
        torch.testing.assert_close(chunked_causal_lm_loss(hidden, labels, head, 10), results[1][0])


@pytest.mark.parametrize("mode", ["eager", "compile"])
def test_trainer_with_chunked_loss_steps_like_the_plain_one(cache, mode: str) -> None:
    """`loss_chunk_tokens` changes memory, not the training: the same losses step after step."""
    plain, chunked = trainer_for(cache), trainer_for(cache, mode=mode, loss_chunk_tokens=24)
    for t in (plain, chunked):
        t.model.eval()
    for _ in range(3):
        torch.testing.assert_close(chunked.step(), plain.step(), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="loss_chunk_tokens"):
        TrainConfig(loss_chunk_tokens=0)


def test_nested_scope_traces_the_block_once_for_every_layer() -> None:
    """`shared_blocks`: the whole-model graph calls one block subgraph once per layer (compiled once), and computes
    what the plain forward computes."""
    from attnlib.model import build_model, causal_hidden_states

    torch.manual_seed(0)
    model = build_model("sdpa", seq_len=16, n_layer=3, n_embd=32, n_head=2, n_positions=16).eval()
    ids = torch.randint(0, 50257, (2, 16))
    graphs = []

    def capture(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    nested = torch.compile(lambda i: causal_hidden_states(model, i, shared_blocks=True), backend=capture)(ids)
    torch.testing.assert_close(nested, causal_hidden_states(model, ids))
    calls = [n for gm in graphs for n in gm.graph.nodes if n.op == "call_function" and "invoke_subgraph" in str(n.target)]
    assert len(graphs) == 1 and len(calls) == 3 and len({n.args[0].target for n in calls}) == 1
    torch._dynamo.reset()


def test_graph_mode_needs_cuda(cache) -> None:
    with pytest.raises(NotImplementedError, match="CUDA"):
        trainer_for(cache, mode="graph")


def test_loss_equals_transformers_loss(cache) -> None:
    trainer = trainer_for(cache)
    trainer.model.eval()
    ids, labels = trainer.train_ids[:2], trainer.train_labels[:2].clone()
    labels[1, 20:] = -100
    torch.testing.assert_close(trainer._loss(ids, labels), trainer.model(ids, labels=labels).loss)


def tiny_trials(**overrides) -> TrialsConfig:
    return TrialsConfig(train=TrainConfig(variant="flex", **TINY_TRAIN), **{
        **dict(modes=["eager", "compile", "graph"], rounds=2, window_s=0.3, unmeasured_steps=1, idle_s=0.1), **overrides})


def test_trials_job_writes_paired_typed_results(tmp_path, cache) -> None:
    results = run_trials_job(tiny_trials(), tmp_path, cache, progress=False)
    assert sorted((r.mode, r.round, r.role) for r in results) == [
        (m, t, role) for m in ("compile", "eager", "graph") for t in (0, 1) for role in ("reference", "variant")]
    ok = [r for r in results if r.status == "ok"]
    assert {r.mode for r in ok} == {"eager", "compile"}
    graph = [r for r in results if r.mode == "graph"]
    assert all(r.status == "unsupported" and "CUDA" in r.error for r in graph)  # a CPU has no CUDA graphs
    saved = read_result(tmp_path / "flex__eager__round1__variant.json")
    assert isinstance(saved, TrialResult) and saved == next(r for r in ok if (r.mode, r.round, r.role) == ("eager", 1, "variant"))
    reference = read_result(tmp_path / "flex__eager__round1__reference.json")
    assert (saved.variant, saved.reference, reference.variant, reference.role) == ("flex", "sdpa", "flex", "reference")
    assert saved.model.kernel != reference.model.kernel  # the reference window trained sdpa, not flex
    m = saved.measurement
    assert m.wall_s >= 0.3 and m.tokens == saved.steps * 64 and m.flops == m.tokens * saved.model.training_flops_per_token
    assert m.gpu_energy_j is None and m.reasons["gpu_energy_j"]  # CPU: none, with the reason
    assert saved.steady_state.steady_state_converged is None and saved.steady_state.steady_state_reason  # no counter to judge steady state by
    assert saved.provenance.versions["torch"] and saved.provenance.device == "cpu"
    assert saved.data.dataset.startswith("python-docs") and saved.config["train"]["variant"] == "flex"


def test_each_round_draws_its_own_order(tmp_path, cache, monkeypatch) -> None:
    """Rounds are the replicates: in each, one window of each role, in an order drawn from the recorded seed."""
    from attnlib.measurement import round_orders

    opened: list[str] = []
    import attnlib.experiments.trials as trials_module

    real = trials_module.measure

    def recording(label, **kwargs):
        opened.append(label)
        return real(label, **kwargs)

    monkeypatch.setattr(trials_module, "measure", recording)
    results = run_trials_job(tiny_trials(modes=["eager"], rounds=4, window_s=0.05), tmp_path, cache, progress=False)
    seed = results[0].order_seed
    assert [label.rsplit("/", 1)[1] for label in opened] == [role for order in round_orders(
        ["reference", "variant"], 4, seed) for role in order]
    assert len({tuple(o) for o in round_orders(["reference", "variant"], 4, seed)}) == 2  # both orders occur


def test_reference_setup_drops_the_variants_own_parameters() -> None:
    config = TrialsConfig(train=TrainConfig(variant="gqa", **{**TINY_TRAIN, "model": {**TINY_TRAIN["model"],
                                                                                      "n_kv_head": 1}}), modes=["eager"])
    reference = config.reference_config("eager")
    assert reference.variant == "sdpa" and "n_kv_head" not in reference.model and reference.model["n_layer"] == 1
    assert reference.seq_len == config.train.seq_len and reference.batch_size == config.train.batch_size
    with pytest.raises(ValueError, match="rounds"):
        tiny_trials(rounds=1)


def test_quality_job_runs_every_seed_with_a_loss_curve(tmp_path, cache) -> None:
    config = QualityConfig(train=TrainConfig(variant="linear", **{**TINY_TRAIN, "model": {**TINY_TRAIN["model"],
                                                                                           "chunk_size": 16}}),
                           seeds=[1, 2], tokens=256, eval_every_tokens=128, eval_batches=1, idle_s=0.1)
    results = run_quality_job(config, tmp_path, cache, progress=False)
    assert [r.seed for r in results] == [1, 2] and all(r.status == "ok" for r in results), [r.error for r in results]
    assert [p["tokens"] for p in results[0].loss_curve] == [0, 128, 256]
    assert results[0].val_loss != results[1].val_loss  # different seeds, different runs
    assert isinstance(read_result(tmp_path / "linear__quality__seed2.json"), QualityResult)


@pytest.mark.parametrize("error,status", [(torch.OutOfMemoryError("CUDA out of memory"), "oom"),
                                          (NotImplementedError("no kernel"), "unsupported"),
                                          (FloatingPointError("loss is nan"), "nan"),
                                          (RuntimeError("something else"), "error")])
def test_failures_are_recorded(tmp_path, cache, monkeypatch, error, status) -> None:
    def broken_step(self):
        raise error

    monkeypatch.setattr(Trainer, "step", broken_step)
    results = run_trials_job(tiny_trials(modes=["eager"]), tmp_path, cache, progress=False)
    assert [r.status for r in results] == [status] * 4
    assert json.loads((tmp_path / "flex__eager__round0__variant.json").read_text())["status"] == status


def test_compile_scope_per_mode(tmp_path, cache, monkeypatch) -> None:
    """A profile can compile one shared block in one mode and the whole model in another."""
    import attnlib.experiments._paired as paired_module

    seen = {}

    class Probe(Trainer):
        def __init__(self, config, *args, **kwargs):
            seen[config.mode] = config.compile_scope
            raise NotImplementedError("probe")

    monkeypatch.setattr(paired_module, "Trainer", Probe)
    run_trials_job(tiny_trials(modes=["compile", "graph"], compile_scopes={"graph": "block"}), tmp_path, cache,
                   progress=False)
    assert seen == {"compile": "model", "graph": "block"}
    with pytest.raises(ValueError, match="compile_scopes"):
        tiny_trials(compile_scopes={"eager": "block"})


def test_results_frame_columns_are_field_names(tmp_path, cache) -> None:
    run_trials_job(tiny_trials(modes=["eager"], rounds=2), tmp_path / "raw", cache, progress=False)
    frame = results_frame(tmp_path)
    for column in ("kind", "variant", "mode", "status", "round", "role", "reference", "tokens_per_s", "gpu_j_per_token", "wall_s",
                   "job_wall_s", "dataset", "params", "kernel", "attnlib_commit", "device"):
        assert column in frame, column
    assert frame.kind.tolist() == ["trial"] * 4 and frame.wall_s.min() >= 0.3


def test_plan_is_seeded_and_complete() -> None:
    """The paper's quality runs train in CUDA-graph mode with one compiled block, as its trials' graph mode does:
    they are part of each variant's trials job."""
    profile = load_profile("paper")
    jobs = plan(profile, ["sdpa", "gqa", "mla"])
    assert [j.family for j in jobs] == ["trials"] * 3 and {j.variant for j in jobs} == {"sdpa", "gqa", "mla"}
    assert [j.name for j in jobs] == [j.name for j in plan(profile, ["sdpa", "gqa", "mla"])]
    long = load_profile("longcontext")  # its seed draws sdpa sixth of ten
    assert jobs[0].variant == plan(long, list(long.variants))[0].variant == "sdpa"  # the A/A control comes first
    trials = jobs[0].config
    assert trials["modes"] == ["eager", "graph"] and trials["rounds"] >= 5 and trials["window_s"] >= 5
    assert trials["reference"] == "sdpa" and trials["steady_state"]["tolerance"] <= 0.005
    names = jobs[0].result_names()
    assert names[0] == f"{jobs[0].variant}__eager__round0__reference.json" and len(names) == 2 * 5 * 2 + 3
    assert names[-1] == f"{jobs[0].variant}__quality__seed3.json"
    quality = trials["quality"]
    assert quality["seeds"] == [1, 2, 3] and quality["train"]["mode"] == "graph"
    assert trials["compile_scopes"] == {"graph": "block"} and quality["train"]["compile_scope"] == "block"


def test_quality_runs_apart_when_no_trials_mode_trains_like_them(tmp_path) -> None:
    profile = tmp_path / "apart.toml"
    profile.write_text('[trials]\nmodes = ["eager"]\n[quality]\nmode = "compile"\n')
    jobs = plan(load_profile(str(profile)), ["sdpa"])
    assert [j.name for j in jobs] == ["sdpa__trials", "sdpa__quality"] and jobs[0].config["quality"] is None


@pytest.mark.slow
def test_trials_job_runs_its_quality_seeds_with_its_own_trainer(tmp_path, monkeypatch) -> None:
    built: list[str] = []
    init = Trainer.__init__

    def counting_init(self, config, *args, **kwargs):
        built.append(config.mode)
        init(self, config, *args, **kwargs)

    monkeypatch.setattr(Trainer, "__init__", counting_init)
    config = load_profile("smoke").job_config("trials", "sdpa")
    config = dataclasses.replace(config, rounds=2, window_s=0.2, idle_s=0.05,
                                 quality=dataclasses.replace(config.quality, seeds=[1, 2], tokens=2048))
    results = run_trials_job(config, tmp_path / "raw", tmp_path / "cache", progress=False)
    assert built == ["eager", "eager"] and [r.kind for r in results] == ["trial"] * 4 + ["quality"] * 2
    assert sorted(p.name for p in (tmp_path / "raw").glob("*.json")) == sorted(config.result_names())
    assert all(r.status == "ok" for r in results) and results[4].val_loss > 0
    # stopped after its windows and first seed: the resumed job keeps them and runs the second seed only
    written = {p.name: p.read_bytes() for p in (tmp_path / "raw").glob("*.json")}
    (tmp_path / "raw" / "sdpa__quality__seed2.json").unlink()
    built.clear()
    again = run_trials_job(config, tmp_path / "raw", tmp_path / "cache", progress=False)
    assert built == ["eager"] and again[:5] == results[:5] and again[5].seed == 2 and again[5].status == "ok"
    assert again[5].val_loss == pytest.approx(results[5].val_loss, rel=1e-4)  # the same seed, the same run
    assert all((tmp_path / "raw" / n).read_bytes() == b for n, b in written.items() if n != "sdpa__quality__seed2.json")
    built.clear()
    assert run_trials_job(config, tmp_path / "raw", tmp_path / "cache", progress=False) == again and built == []


def test_resume_skips_finished_and_redoes_broken(tmp_path, monkeypatch) -> None:
    profile = load_profile("smoke")
    ran: list[str] = []
    found: list[int] = []  # how many of its results each executed job found

    def fake_execute(job, results_dir, cache_dir, timeout_s) -> bool:
        ran.append(job.name)
        found.append(sum((results_dir / "raw" / name).exists() for name in job.result_names()))
        for name in job.result_names():
            (results_dir / "raw").mkdir(parents=True, exist_ok=True)
            (results_dir / "raw" / name).write_text(done_result)
        return True

    done_result = json.dumps({"kind": "trial", **json.loads(json.dumps(dataclasses.asdict(TrialResult(
        variant="sdpa", mode="eager", status="oom", provenance=None, config={}, round=0, order_seed=0))))})
    monkeypatch.setattr(pipeline, "execute", fake_execute)
    jobs = plan(profile, ["sdpa"])
    assert pipeline.run(profile, ["sdpa"], tmp_path, tmp_path / "cache") == 0
    assert ran == [j.name for j in jobs]
    ran.clear()
    record = (tmp_path / "run.json").read_text()
    assert pipeline.run(profile, ["sdpa"], tmp_path, tmp_path / "cache") == 0  # complete: nothing run or recorded
    assert ran == [] and (tmp_path / "run.json").read_text() == record
    (tmp_path / "raw" / jobs[0].result_names()[0]).write_text('{"status": "o')  # killed mid-write
    assert pipeline.run(profile, ["sdpa"], tmp_path, tmp_path / "cache") == 0 and ran == [jobs[0].name]
    ran.clear(), found.clear()
    assert pipeline.run(profile, ["sdpa"], tmp_path, tmp_path / "cache", force=True) == 0 and len(ran) == len(jobs)
    assert found == [0] * len(jobs)  # forced, a job starts from nothing (a resuming job would keep its windows)
    record = json.loads((tmp_path / "run.json").read_text())
    assert len(record["chunks"]) == 3 and record["device"] == "cpu" and record["minutes"] >= 0 and "gpu_minutes" not in record


def test_a_result_whose_family_disagrees_with_its_config_is_not_written(tmp_path) -> None:
    origin = Provenance(attnlib_commit="abc", versions={}, python="3.12", device="cpu", device_uuid=None,
                        created="2026-12-07T09:46:42+00:00")
    wrong = TrialResult(variant="sdpa", mode="eager", provenance=origin, config={"train": {"arch": "llama"}}, round=0,
                        order_seed=0)
    with pytest.raises(ValueError, match="arch 'gpt2', its config trained 'llama'"):
        write_result(tmp_path / "raw" / "x.json", wrong)
    assert not (tmp_path / "raw" / "x.json").exists()


def test_a_partial_cell_measured_again_keeps_its_earlier_windows_aside(tmp_path) -> None:
    """`set_aside` moves a partial cell's windows into raw/superseded/, stamped with their time of measurement, where
    the loader does not read them: a cell measured again in full overwrites nothing."""
    origin = Provenance(attnlib_commit="abc", versions={}, python="3.12", device="NVIDIA H100 80GB HBM3",
                        device_uuid="GPU-1", created="2026-12-07T09:46:42+00:00")
    names = [f"sdpa__eager__round{r}__variant.json" for r in range(3)]
    for r, name in enumerate(names[:2]):
        write_result(tmp_path / "raw" / name, TrialResult(variant="sdpa", mode="eager", provenance=origin, config={},
                                                          round=r, order_seed=0, role="variant"))
    before = {name: (tmp_path / "raw" / name).read_bytes() for name in names[:2]}
    moved = set_aside(tmp_path / "raw" / name for name in names)
    assert [p.name for p in moved] == [n.replace(".json", "__20261207T0946420000.json") for n in names[:2]]
    assert all(p.parent == tmp_path / "raw" / "superseded" for p in moved)
    assert [p.read_bytes() for p in moved] == list(before.values())
    assert load_results(tmp_path) == [] and not any((tmp_path / "raw" / n).exists() for n in names)


def test_a_run_never_mixes_devices_or_deletes_another_devices_results(tmp_path, capsys) -> None:
    """`--force` on a CPU into a folder measured on a GPU refuses before any work, and leaves the folder as it was."""
    kept = TrialResult(variant="sdpa", mode="eager", provenance=Provenance(
        attnlib_commit="abc", versions={}, python="3.12", device="NVIDIA H100 80GB HBM3", device_uuid="GPU-1",
        created="2026-12-06T00:00:00+00:00"), config={}, round=0, order_seed=0, role="variant", reference="sdpa")
    write_result(tmp_path / "raw" / "sdpa__eager__round0__variant.json", kept)
    (tmp_path / "run.json").write_text('{"device": "NVIDIA H100 80GB HBM3"}')
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    code = pipeline.main(["run", "--profile", "smoke", "--variants", "sdpa", "--results", str(tmp_path), "--force"])
    err = capsys.readouterr().err
    assert code == 2 and "NVIDIA H100 80GB HBM3" in err and "--results DIR" in err
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_max_minutes_stops_early_and_reports_what_is_left(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(pipeline, "execute", lambda job, *a: True)
    jobs = pipeline.plan(load_profile("smoke"), ["sdpa", "gqa"])  # trials (quality inside) and recall, each
    assert pipeline.run(load_profile("smoke"), ["sdpa", "gqa"], tmp_path, tmp_path, max_minutes=0) == len(jobs) - 1


def test_stop_minutes_bounds_a_job_and_the_chunk_is_recorded(tmp_path, monkeypatch) -> None:
    """A job still running at `stop_minutes` is stopped (papermill's cell timeout: the job is one cell); the chunk's
    time is in run.json, the job is marked and left for the next run."""
    timeouts = []

    def stopped(job, results_dir, cache_dir, timeout_s) -> bool:
        timeouts.append(timeout_s)
        return False

    monkeypatch.setattr(pipeline, "execute", stopped)
    jobs = pipeline.plan(load_profile("smoke"), ["sdpa", "gqa"])
    assert pipeline.run(load_profile("smoke"), ["sdpa", "gqa"], tmp_path, tmp_path, max_minutes=0,
                        stop_minutes=0.5) == len(jobs)  # the stopped job is left too
    chunk = json.loads((tmp_path / "run.json").read_text())["chunks"][0]
    assert len(timeouts) == 1 and 25 < timeouts[0] <= 30 and "stopped" in chunk["jobs"][0]


def test_no_job_starts_that_the_stop_would_cut_short(tmp_path, monkeypatch) -> None:
    """Once a job has finished, the next starts only if the time left before `stop_minutes` is at least as long as
    the shortest finished job took: a job begun with less would be stopped, its GPU time spent for nothing."""
    clock = [0.0]
    started = []

    def takes_two_minutes(job, results_dir, cache_dir, timeout_s) -> bool:
        started.append(job.name)
        clock[0] += 120
        return True

    monkeypatch.setattr(pipeline.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(pipeline, "execute", takes_two_minutes)
    monkeypatch.setattr(pipeline, "calibrate", lambda results_dir: None)
    jobs = pipeline.plan(load_profile("smoke"), ["sdpa", "gqa"])
    assert len(jobs) >= 3
    left = pipeline.run(load_profile("smoke"), ["sdpa", "gqa"], tmp_path, tmp_path, stop_minutes=5)
    assert len(started) == 2 and left == len(jobs) - 2  # at 4 min, 1 min left is less than a 2-minute job


def test_calibration_offers_the_sibling_folders_calibrations(tmp_path, monkeypatch) -> None:
    """A call that measures several results folders on one card calibrates it once: the calibration process is
    handed every sibling folder's calibrations to copy from, never its own folder's."""
    import torch

    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(pipeline.subprocess, "run", lambda args: calls.append(args) or SimpleNamespace(returncode=0))
    for name in ("llama", "llama-inference", "quality"):
        (tmp_path / name / "calibration").mkdir(parents=True)
    (tmp_path / "smoke").mkdir()  # no calibration folder: nothing to offer
    pipeline.calibrate(tmp_path / "llama-inference")
    args = calls[0]
    offered = args[args.index("--reuse") + 1:]
    assert offered == [str((tmp_path / n / "calibration").resolve()) for n in ("llama", "quality")]


def test_trimmed_notebooks_keep_results_plots_and_errors(tmp_path) -> None:
    outputs = [{"output_type": "stream", "name": "stderr", "text": "TqdmWarning: IProgress not found"},
               {"output_type": "stream", "name": "stdout", "text": "ok"},
               {"output_type": "error", "ename": "RuntimeError", "evalue": "x", "traceback": []}]
    timing = {"execution": {"iopub.status.busy": "2026-11-22T02:19:15Z"}, "papermill": {"duration": 0.1}, "tags": ["x"]}
    path = tmp_path / "n.ipynb"
    path.write_text(json.dumps({"cells": [{"cell_type": "code", "id": "77e0a1bb", "metadata": timing,
                                           "outputs": outputs}, {"cell_type": "markdown", "id": "5c94"}],
                                "metadata": {"papermill": {"parameters": {"a": 1}, "start_time": "2026-11-22"}}}))
    pipeline.tidy_executed(path)
    nb = json.loads(path.read_text())
    kept = nb["cells"][0]["outputs"]
    assert [o["output_type"] for o in kept] == ["stream", "error"] and kept[0]["name"] == "stdout"
    assert nb["cells"][0]["metadata"] == {"tags": ["x"]} and [c["id"] for c in nb["cells"]] == ["cell-0", "cell-1"]
    assert nb["metadata"]["papermill"] == {"parameters": {"a": 1}}


def test_unknown_profile() -> None:
    with pytest.raises(ValueError, match="unknown profile"):
        load_profile("huge")


@pytest.mark.parametrize("text,message", [("[train]\nbatch_sise = 4\n", "batch_sise"), ("[train\n", "TOML"),
                                          ("[variants.performer]\nwindow = 3\n", "performer"),
                                          ("[train]\nbatch_size = 0\n", "batch_size"),
                                          ("[trials]\nmodes = [\"turbo\"]\n", "modes"),
                                          ("[quality]\nseeds = [1, 1]\n", "seeds"),
                                          ("[trials]\ncompile_scopes = { graph = \"tiny\" }\n", "compile_scope"),
                                          ("[run]\ntrials = 3\n", "run"),
                                          ("[train]\nseq_len = 256\n", "runs no family"),
                                          ("[longcontext]\nfast_mode = \"turbo\"\n", "fast_mode")])
def test_malformed_profiles(tmp_path, text: str, message: str) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_profile(str(bad))


def test_cli_rejects_unknown_variant(capsys) -> None:
    assert pipeline.main(["run", "--profile", "smoke", "--variants", "performer"]) == 2
    assert "performer" in capsys.readouterr().err


def test_commit_named_by_the_environment_wins_over_a_stale_checkout(monkeypatch) -> None:
    import re

    from attnlib.provenance import attnlib_commit

    monkeypatch.delenv("ATTNLIB_COMMIT", raising=False)
    assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", attnlib_commit() or "")  # the checkout's HEAD
    monkeypatch.setenv("ATTNLIB_COMMIT", "4b72c191a64b03ee804a9901ae4aa13cdcdf1c05")
    assert attnlib_commit() == "4b72c191a64b03ee804a9901ae4aa13cdcdf1c05"
    for wrong in ("4b72c19", "85cf1e5", "not-a-commit"):  # short or mistyped: refused before any work
        monkeypatch.setenv("ATTNLIB_COMMIT", wrong)
        with pytest.raises(ValueError, match="40-digit"):
            attnlib_commit()


def test_the_gpu_queue_restores_what_the_previous_call_measured(tmp_path) -> None:
    """On a warm machine the queue's ignored stash holds the previous call's folders: a tree sent without them (its
    results.tgz not yet unpacked) gets them back before any job runs, so nothing is measured twice; a tree that has
    them is left as it is."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(REPO / "scripts" / "device_queue.sh", tmp_path / "scripts")
    stash = tmp_path / ".queue-stash" / "results" / "longcontext"
    (stash / "raw").mkdir(parents=True)
    for name in ("sdpa_512.json", "sdpa_2048.json"):
        (stash / "raw" / name).write_text("{}")
    (stash / "run.json").write_text('{"chunks": [1, 2]}')
    tree = tmp_path / "results" / "longcontext"
    (tree / "raw").mkdir(parents=True)
    (tree / "raw" / "sdpa_512.json").write_text("{}")
    (tree / "run.json").write_text('{"chunks": [1]}')

    def queue() -> str:  # ONLY matches no step: the restore runs, no job does
        return subprocess.run(["bash", "scripts/device_queue.sh", "1"], cwd=tmp_path, check=True, text=True,
                              capture_output=True, env={"PATH": "/usr/bin:/bin", "ATTNLIB_COMMIT": "0" * 40,
                                                        "ONLY": "^no step$", "SKIP_PREFLIGHT": "1"}).stdout

    assert "restored" in queue()
    assert sorted(p.name for p in (tree / "raw").iterdir()) == ["sdpa_2048.json", "sdpa_512.json"]
    assert (tree / "run.json").read_text() == '{"chunks": [1, 2]}'
    (tree / "run.json").write_text('{"chunks": [1, 2], "unpacked": true}')  # now the tree has every raw result
    assert "restored" not in queue() and "unpacked" in (tree / "run.json").read_text()


def test_the_gpu_queue_stops_before_any_gpu_work_when_its_preflight_fails(tmp_path) -> None:
    """Without the wheels and tokenizers every step needs (here: no attnlib importable at all), the call ends at
    once, saying why, and touches no results folder."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(REPO / "scripts" / "device_queue.sh", tmp_path / "scripts")
    done = subprocess.run(["bash", "scripts/device_queue.sh", "1"], cwd=tmp_path, text=True, capture_output=True,
                          env={"PATH": "/usr/bin:/bin", "ATTNLIB_COMMIT": "0" * 40})
    assert done.returncode == 1 and "preflight failed" in done.stdout and "ModuleNotFoundError" in done.stderr
    assert not (tmp_path / "results").exists()


def test_the_gpu_queue_measures_each_profile_on_its_card_only(tmp_path) -> None:
    """On an H200 the queue skips the timing studies and the reviewer's timed path, which are H100 figures, and a
    quality folder begun on an H100, saying so, instead of starting or mixing a table on another kind of card."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(REPO / "scripts" / "device_queue.sh", tmp_path / "scripts")
    (tmp_path / "bin").mkdir()
    smi = tmp_path / "bin" / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'NVIDIA H200'\n")
    smi.chmod(0o755)
    (tmp_path / "results" / "quality").mkdir(parents=True)
    (tmp_path / "results" / "quality" / "run.json").write_text('{\n "chunks": [],\n "device": "NVIDIA H100 80GB HBM3",\n'
                                                            ' "minutes": 1.0\n}\n')
    out = subprocess.run(["bash", "scripts/device_queue.sh", "1"], cwd=tmp_path, check=True, text=True,
                         capture_output=True, env={"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin", "ATTNLIB_COMMIT": "0" * 40,
                                                   "ONLY": "(longcontext|quality|reviewer_path)",
                                                   "SKIP_PREFLIGHT": "1"}).stdout
    assert "profile longcontext: measured on H100s, and this card is NVIDIA H200; skipped" in out
    assert ("profile quality: results/quality was begun on NVIDIA H100 80GB HBM3, and this card is NVIDIA H200; "
            "skipped") in out
    assert "check results/gpu/reviewer_path.json: measured on H100s, and this card is NVIDIA H200; skipped" in out
    assert "into results/" not in out and not (tmp_path / "results" / "longcontext").exists()
    assert not (tmp_path / "results" / "gpu").exists()


def test_a_gpu_queue_step_hands_its_options_to_the_pipeline(tmp_path) -> None:
    """A profile step with options ("--variants sdpa": one job before the rest of its table) runs the pipeline with
    them, in the step's folder, on the card it names."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(REPO / "scripts" / "device_queue.sh", tmp_path / "scripts")
    (tmp_path / "bin").mkdir()
    for name, body in (("nvidia-smi", "echo 'NVIDIA H100 80GB HBM3'"), ("python", 'echo "pipeline: $*"')):
        (tmp_path / "bin" / name).write_text(f"#!/bin/sh\n{body}\n")
        (tmp_path / "bin" / name).chmod(0o755)
    out = subprocess.run(["bash", "scripts/device_queue.sh", "1"], cwd=tmp_path, check=True, text=True,
                         capture_output=True, env={"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin", "ATTNLIB_COMMIT": "0" * 40,
                                                   "ONLY": "llama-longcontext .*--variants", "SKIP_PREFLIGHT": "1",
                                                   "OUT": str(tmp_path)}).stdout
    call = next(line for line in out.splitlines() if line.startswith("pipeline: "))
    assert "--profile llama-longcontext --results results/llama-longcontext" in call
    assert call.endswith("--variants sdpa") and out.count("pipeline: ") == 1


def test_the_gpu_queue_carries_the_autotuning_choices_between_calls(tmp_path) -> None:
    """Triton's cached autotuning choices (fla's kernels) sent in .autotune/ are in the cache before the first step,
    and the choices a call made come back in results.tgz under .autotune/, beside the results; nothing else of the
    cache travels."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(REPO / "scripts" / "device_queue.sh", tmp_path / "scripts")
    (tmp_path / "bin").mkdir()
    sent = tmp_path / ".autotune" / "k1" / "chunk_fwd.autotune.json"
    sent.parent.mkdir(parents=True)
    sent.write_text('{"configs_timings": "sent"}')
    step = ('test -f "$TRITON_CACHE_DIR/k1/chunk_fwd.autotune.json" || exit 3; mkdir -p "$TRITON_CACHE_DIR/k2" '
            '&& echo "{}" > "$TRITON_CACHE_DIR/k2/chunk_bwd.autotune.json" && echo x > "$TRITON_CACHE_DIR/k2/k.cubin"')
    for name, body in (("nvidia-smi", "echo 'NVIDIA H100 80GB HBM3'"), ("python", step)):
        (tmp_path / "bin" / name).write_text(f"#!/bin/sh\n{body}\n")
        (tmp_path / "bin" / name).chmod(0o755)
    (tmp_path / "out").mkdir()
    out = subprocess.run(["bash", "scripts/device_queue.sh", "1"], cwd=tmp_path, check=True, text=True,
                         capture_output=True, env={"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin", "ATTNLIB_COMMIT": "0" * 40,
                                                   "ONLY": "llama-longcontext .*--variants", "SKIP_PREFLIGHT": "1",
                                                   "OUT": str(tmp_path / "out")}).stdout
    assert "touched: results/llama-longcontext" in out
    with tarfile.open(tmp_path / "out" / "results.tgz") as archive:
        tuned = sorted(n for n in archive.getnames() if n.startswith(".autotune/") and n.endswith(".json"))
        assert not any(n.endswith(".cubin") for n in archive.getnames())
    assert tuned == [".autotune/k1/chunk_fwd.autotune.json", ".autotune/k2/chunk_bwd.autotune.json"]


@pytest.mark.parametrize("whole_group", [True, False])
def test_a_gpu_call_stopped_mid_step_still_returns_what_it_measured(tmp_path, whole_group: bool) -> None:
    """A call that runs past its limit is sent SIGTERM, to its whole process group or (as `timeout` does) to the
    queue's shell alone while the step runs on: the queue packs the folders it touched into $OUT at once, before it
    exits, so the windows written before the kill come back; a step that ends packs at once too."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(REPO / "scripts" / "device_queue.sh", tmp_path / "scripts")
    (tmp_path / "bin").mkdir()
    pipeline_fake = 'mkdir -p results/quality/raw && echo "{}" > results/quality/raw/window0.json && exec sleep 30'
    for name, body in (("nvidia-smi", "echo 'NVIDIA H200'"), ("python", pipeline_fake)):
        (tmp_path / "bin" / name).write_text(f"#!/bin/sh\n{body}\n")
        (tmp_path / "bin" / name).chmod(0o755)
    (tmp_path / "out").mkdir()
    call = subprocess.Popen(["bash", "scripts/device_queue.sh", "1"], cwd=tmp_path, text=True, stdout=subprocess.PIPE,
                            start_new_session=True,
                            env={"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin", "ATTNLIB_COMMIT": "0" * 40,
                                 "ONLY": "^profile recall", "SKIP_PREFLIGHT": "1", "OUT": str(tmp_path / "out")})
    for _ in range(100):  # until the step has written its first window
        if (tmp_path / "results" / "quality" / "raw" / "window0.json").exists():
            break
        time.sleep(0.1)
    (os.killpg if whole_group else os.kill)(call.pid, signal.SIGTERM)
    try:  # the step's fake sleeps 30 s, holding the output open: the trap must stop it, not wait for it
        out, _ = call.communicate(timeout=10)
    finally:
        subprocess.run(["pkill", "-KILL", "-s", str(call.pid)])  # nothing left behind if it did not
    assert call.returncode == 143 and "the call was stopped: packing what it measured" in out
    with tarfile.open(tmp_path / "out" / "results.tgz") as archive:
        assert "results/quality/raw/window0.json" in archive.getnames()
    assert (tmp_path / ".queue-stash" / "results" / "quality" / "raw" / "window0.json").exists()


def test_the_gpu_queue_names_real_profiles_and_scripts() -> None:
    """scripts/device_queue.sh's plan: every profile loads, every check's script exists and writes where the step
    looks for its output, so a GPU call never spends its minutes on a typo."""
    text = (REPO / "scripts" / "device_queue.sh").read_text()
    plan = re.search(r"^plan=\(\n(.*?)^\)", text, re.S | re.M).group(1)
    steps = re.findall(r'^  "(profile|check)(?:@H100)? ([^"]+)"$', plan, re.M)
    assert len(steps) == plan.count("\n")  # every line a step, its card (if any) one the queue knows
    llama = {p.stem for p in (REPO / "attnlib" / "profiles").glob("llama*.toml")}
    assert {rest.split()[0] for kind, rest in steps if kind == "profile"} == {"longcontext", "quality", "recall", *llama}
    for kind, rest in steps:
        first, folder, *command = rest.split()
        if kind == "profile":
            assert load_profile(first).name == first and folder.startswith("results/")
            options = dict(zip(command[::2], command[1::2]))  # the pipeline's own options, each with its value
            assert set(options) <= {"--variants"} and len(command) % 2 == 0
            assert all(v in load_profile(first).variants for v in options.get("--variants", "").split(",") if v)
        else:
            assert first.startswith(folder + "/") and command[:1] == ["python"] and (REPO / command[1]).exists()
            assert command[command.index("--out") + 1] == folder
