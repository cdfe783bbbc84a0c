"""Training harness: determinism, failure recording, resumption and the job plan (CPU, tiny models)."""

from __future__ import annotations

import json

import pytest
import torch

from attnlib import pipeline, train
from attnlib.data import prepare_data
from attnlib.pipeline import Job, load_profile, plan, result_path
from attnlib.train import TrainConfig, Trainer, run_quality, run_trial

TINY_TRAIN = dict(seq_len=32, batch_size=2, model=dict(n_layer=1, n_embd=32, n_head=2, n_positions=64),
                  dataset="python-docs", max_documents=60, idle_s=0.1, unmeasured_steps=1, window_s=0.3,
                  quality_tokens=256, eval_every_tokens=128, eval_batches=1)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def losses(config: TrainConfig, cache, steps: int = 3) -> list[float]:
    data = prepare_data(config.dataset, config.seq_len, cache, config.max_documents)
    trainer = Trainer(config, data, torch.device("cpu"), total_steps=steps)
    return [trainer.step().item() for _ in range(steps)]


def test_same_seed_same_losses(cache) -> None:
    config = TrainConfig(variant="sdpa", **TINY_TRAIN)
    first, second = losses(config, cache), losses(config, cache)
    assert first == second
    assert losses(TrainConfig(variant="sdpa", **{**TINY_TRAIN, "seed": 7}), cache) != first


def test_trial_writes_a_self_describing_result(tmp_path, cache) -> None:
    result = run_trial(TrainConfig(variant="flex", **TINY_TRAIN), 0, tmp_path / "t.json", cache, progress=False)
    saved = json.loads((tmp_path / "t.json").read_text())
    assert saved["status"] == result["status"] == "ok", saved["error"]
    assert saved["schema"] == train.SCHEMA and saved["config"]["variant"] == "flex"
    assert saved["data"]["dataset"].startswith("python-docs") and saved["data"]["tokenizer_sha256"]
    m = saved["measurement"]
    assert m["tokens"] == saved["steps"] * 2 * 32 and m["tokens_per_s"] > 0 and m["flops"] > 0
    assert m["wall_s"] >= 0.3  # the window runs for window_s, never shorter
    assert m["flops"] == m["tokens"] * saved["model"]["flops"]["training_flops_per_token"]
    assert m["gpu_energy_j"] is None and m["reasons"]["gpu_energy_j"]  # CPU: none, with the reason
    assert m["mfu"] is None and "peak" in m["reasons"]["mfu"]
    assert saved["timing"]["warmup_s"] > 0 and saved["model"]["kernel"]


def test_quality_run_records_a_loss_curve(tmp_path, cache) -> None:
    config = TrainConfig(variant="linear", **{**TINY_TRAIN, "model": {**TINY_TRAIN["model"], "chunk_size": 16}})
    result = run_quality(config, tmp_path / "q.json", cache, progress=False)
    assert result["status"] == "ok", result["error"]
    assert [p["tokens"] for p in result["loss_curve"]] == [0, 128, 256]
    assert result["val_loss"] == result["loss_curve"][-1]["val_loss"] < result["loss_curve"][0]["val_loss"] + 1


@pytest.mark.parametrize("error,status", [(torch.OutOfMemoryError("CUDA out of memory"), "oom"),
                                          (NotImplementedError("no kernel"), "unsupported"),
                                          (RuntimeError("something else"), "error")])
def test_failures_are_recorded(tmp_path, cache, monkeypatch, error, status) -> None:
    def broken_step(self):
        raise error

    monkeypatch.setattr(Trainer, "step", broken_step)
    result = run_trial(TrainConfig(variant="sdpa", **TINY_TRAIN), 0, tmp_path / "f.json", cache, progress=False)
    assert result["status"] == status and json.loads((tmp_path / "f.json").read_text())["status"] == status


def test_nan_is_recorded(tmp_path, cache) -> None:
    config = TrainConfig(variant="sdpa", **{**TINY_TRAIN, "lr": 1e38, "grad_clip": 1e38, "unmeasured_steps": 3})
    assert run_trial(config, 0, tmp_path / "n.json", cache, progress=False)["status"] == "nan"


def test_plan_interleaves_trials_then_quality() -> None:
    profile = load_profile("smoke")
    jobs = plan(profile, ["a", "b"])
    assert [j.name for j in jobs] == ["a__eager__trial0", "b__eager__trial0", "a__eager__trial1", "b__eager__trial1",
                                      "a__eager__quality", "b__eager__quality"]


def test_shards_split_the_plan_with_each_variant_on_every_gpu() -> None:
    profile = load_profile("paper")
    variants = ["a", "b", "c"]
    whole = plan(profile, variants)
    shards = [plan(profile, variants, (i, 2)) for i in range(2)]
    assert sorted(j.name for s in shards for j in s) == sorted(j.name for j in whole)  # each job exactly once
    assert abs(len(shards[0]) - len(shards[1])) <= 1
    gpus = {(j.variant, j.mode): set() for j in whole}
    for gpu, jobs in enumerate(shards):
        for job in jobs:
            if job.kind == "trial":
                gpus[job.variant, job.mode].add(gpu)
        assert [j.name for j in jobs] == [j.name for j in whole if j in jobs]  # still interleaved, in plan order
    assert all(used == {0, 1} for used in gpus.values())  # 3 trials on 2 GPUs: every variant and mode on both
    assert pipeline.main(["run", "--profile", "smoke", "--shard", "2/2"]) == 2


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


def test_resume_skips_finished_and_redoes_broken(tmp_path, monkeypatch) -> None:
    profile = load_profile("smoke")
    ran: list[str] = []

    def fake_execute(job: Job, profile, results_dir, cache_dir) -> None:
        ran.append(job.name)
        train.write_json_atomic(result_path(results_dir, job), {"status": "ok"})

    monkeypatch.setattr(pipeline, "execute", fake_execute)
    jobs = plan(profile, ["sdpa"])
    train.write_json_atomic(result_path(tmp_path, jobs[0]), {"status": "oom"})  # finished, as a failure
    result_path(tmp_path, jobs[1]).write_text('{"status": "o')  # killed mid-write (no atomic rename)
    assert pipeline.run(profile, ["sdpa"], tmp_path, tmp_path / "cache") == 0
    assert ran == [jobs[1].name, jobs[2].name]
    ran.clear()
    assert pipeline.run(profile, ["sdpa"], tmp_path, tmp_path / "cache") == 0 and ran == []
    assert pipeline.run(profile, ["sdpa"], tmp_path, tmp_path / "cache", force=True) == 0 and len(ran) == 3


def test_max_minutes_stops_early_and_reports_what_is_left(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(pipeline, "execute", lambda job, *a: train.write_json_atomic(result_path(tmp_path, job), {"status": "ok"}))
    assert pipeline.run(load_profile("smoke"), ["sdpa", "gqa"], tmp_path, tmp_path, max_minutes=0) == 5


def test_unknown_profile() -> None:
    with pytest.raises(ValueError, match="unknown profile"):
        load_profile("huge")


@pytest.mark.parametrize("text,message", [("[train]\nbatch_sise = 4\n", "batch_sise"), ("[train\n", "TOML"),
                                          ("[variants.performer]\nwindow = 3\n", "performer"),
                                          ("[train]\nbatch_size = 0\n", "batch_size"),
                                          ("[run]\nmodes = [\"eager\"]\nquality_modes = [\"compile\"]\n", "quality_modes")])
def test_malformed_profiles(tmp_path, text: str, message: str) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_profile(str(bad))


def test_cli_rejects_unknown_variant(capsys) -> None:
    assert pipeline.main(["run", "--profile", "smoke", "--variants", "performer"]) == 2
    assert "performer" in capsys.readouterr().err


def test_compile_mode_compiles_each_block(cache) -> None:
    """Regional compilation: blocks compiled (lazily), mask building and the head stay eager."""
    config = TrainConfig(variant="flex", mode="compile", **TINY_TRAIN)
    data = prepare_data(config.dataset, config.seq_len, cache, config.max_documents)
    trainer = Trainer(config, data, torch.device("cpu"), total_steps=1)
    assert all(block._compiled_call_impl is not None for block in trainer.model.transformer.h)
    assert trainer.model._compiled_call_impl is None


def test_head_loss_equals_transformers_loss(cache) -> None:
    config = TrainConfig(variant="sdpa", **TINY_TRAIN)
    data = prepare_data(config.dataset, config.seq_len, cache, config.max_documents)
    trainer = Trainer(config, data, torch.device("cpu"), total_steps=1)
    trainer.model.eval()  # no dropout: both computations see the same network
    ids, labels = data.train_ids[:2], data.train_labels[:2].clone()
    labels[1, 20:] = -100
    torch.testing.assert_close(trainer.loss(ids, labels), trainer.model(ids, labels=labels).loss)
