"""The inference family on a CPU: the grid, its accounting (tokens, FLOPs, cache bytes), the anchor, failures as
results."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from attnlib import build_model
from attnlib.decode import Decoder, cache_bytes_per_token
from attnlib.experiments import inference
from attnlib.experiments.inference import InferenceConfig, run_inference_job
from attnlib.experiments.training import TrainConfig
from attnlib.flops import causal_attention_flops, decode_flops, matmul_parameters, prefill_flops
from attnlib.pipeline import load_profile, plan, run_notebook
from attnlib.registry import supported_variants
from attnlib.measurement import Measurement
from attnlib.report import build_report
from attnlib.results import InferenceResult, ModelInfo, Provenance, results_frame, write_result

VARIANTS = supported_variants("gpt2")  # the profiles here are GPT-2 profiles

REPO = Path(__file__).resolve().parent.parent
TINY_MODEL = dict(n_layer=2, n_embd=32, n_head=4)


def tiny_config(variant: str = "sdpa", **overrides) -> InferenceConfig:
    settings = dict(train=TrainConfig(variant=variant, model=TINY_MODEL), prefill_lens=[16, 40], prefill_batch_size=2,
                    decode_batch_sizes=[1, 3], decode_context_lens=[8, 24], new_tokens=5, decode_mode="eager",
                    other_decode_cells={}, trials=2, window_s=0.02, warmup_reps=1, idle_s=0.01, order_seed=5)
    return InferenceConfig(**{**settings, **overrides})


def test_config_resolves_cells_and_refuses_bad_values() -> None:
    config = tiny_config(decode_mode="graph", other_decode_cells={"eager": [[1, 8]]})
    cells = config.cells()
    assert sum(phase == "prefill" for phase, *_ in cells.values()) == 2
    assert sorted(k for k, (phase, mode, *_) in cells.items() if phase == "decode" and mode == "graph") == sorted(
        f"decode/graph/B{b}/T{t}" for b in (1, 3) for t in (8, 24))
    assert cells["decode/eager/B1/T8"] == ("decode", "eager", 1, 8)
    assert sum(phase == "generate" for phase, *_ in cells.values()) == 4  # the sdpa job: 2 caches x 2 batches
    assert not any(p == "generate" for p, *_ in tiny_config("gqa").cells().values())
    assert config.n_positions == 40 and tiny_config(prefill_lens=[8]).n_positions == 24 + 5
    assert InferenceConfig(**config.to_dict()).result_names() == config.result_names()  # what papermill receives
    assert len(set(config.result_names())) == len(cells) * 2
    for bad in (dict(prefill_lens=[16, 16]), dict(decode_mode="fast"), dict(other_decode_cells={"eager": [[1]]}),
                dict(other_decode_cells={"fast": [[1, 8]]}),
                dict(trials=0), dict(window_s=0), dict(decode_batch_sizes=[])):
        with pytest.raises(ValueError):
            tiny_config(**bad)


def test_cut_cells_leave_out_named_cells_and_never_the_reference() -> None:
    """`cut_cells`: a variant's job measures its grid less the cells named (whole names or a leading part of one);
    every other job, the reference's included, its whole grid. A cut of the reference, of every cell, or one that
    names no cell is refused before any GPU work."""
    cut = {"flash": ["decode"], "gqa": ["decode/eager/B3", "prefill/eager/B2/T40"]}
    flash = tiny_config("flash", reference="sdpa", cut_cells=cut)
    assert [name for name in flash.cells()] == ["prefill/eager/B2/T16", "prefill/eager/B2/T40"]
    assert all("decode" not in name for name in flash.result_names())
    gqa = tiny_config("gqa", reference="sdpa", cut_cells=cut)
    assert sorted(gqa.cells()) == ["decode/eager/B1/T24", "decode/eager/B1/T8", "prefill/eager/B2/T16"]
    assert len(tiny_config("sdpa", reference="sdpa", cut_cells=cut).cells()) == 2 + 4 + 4  # generate included
    every_job = {"*": ["decode/eager/B3/T24"], "flash": ["decode"]}  # a cell cut from the grid: the reference's too
    assert "decode/eager/B3/T24" not in tiny_config("sdpa", reference="sdpa", cut_cells=every_job).cells()
    assert sorted(tiny_config("gqa", reference="sdpa", cut_cells=every_job).cells())[:3] == [
        "decode/eager/B1/T24", "decode/eager/B1/T8", "decode/eager/B3/T8"]
    for bad in ({"sdpa": ["decode"]}, {"flash": ["decode", "prefill"]}, {"flash": ["decode/graph"]},
                {"flash": ["dec"]}, {"nonesuch": ["decode"]}, {"*": ["decode"], "flash": ["prefill"]}):
        with pytest.raises((ValueError, KeyError)):
            tiny_config("flash", reference="sdpa", cut_cells=bad)


def test_grid_measures_every_cell_with_its_accounting(tmp_path) -> None:
    """Every cell of the sdpa grid (prefill, decode, transformers' generate with both caches) gives its trials;
    tokens, FLOPs and the caches' bytes follow from the cell's shape."""
    config = tiny_config()
    results = run_inference_job(config, tmp_path, progress=False)
    assert sorted(p.name for p in tmp_path.glob("*.json")) == sorted(config.result_names())
    frame = results_frame(results)
    assert (frame.status == "ok").all(), frame[frame.status != "ok"].error.tolist()
    model = build_model("sdpa", **config.model_overrides())
    per_token = cache_bytes_per_token(model, torch.float32)
    for _, r in frame.iterrows():
        assert r.repetitions >= 1 and r.tokens_per_s > 0
        if r.phase == "prefill":
            assert r.tokens == r.repetitions * r.batch_size * r.context_len and pd_isna(r.steps)
            assert r.flops == pytest.approx(r.repetitions * prefill_flops(model, r.batch_size, r.context_len))
            assert r.cache_bytes == per_token * r.batch_size * r.context_len
        else:
            assert r.tokens == r.repetitions * r.batch_size * config.new_tokens
            assert r.steps == r.repetitions * config.new_tokens
        if r.phase == "decode":
            assert r.cache_bytes == per_token * r.batch_size * (r.context_len + config.new_tokens)
            assert r.flops == pytest.approx(r.repetitions * decode_flops(model, r.batch_size, r.context_len, 5))
            assert r.step_bytes_read > matmul_parameters(model) * 4 - 1  # at least every weight once
    anchors = frame[frame.phase == "generate"]
    assert set(anchors["mode"]) == {"hf_dynamic", "hf_static"} and set(anchors.batch_size) == {1, 3}
    assert anchors.kernel.str.contains("generate").all() and not frame[frame.phase != "generate"].kernel.str.contains(
        "generate").any()


def pd_isna(value) -> bool:
    return value is None or value != value


def test_anchor_generates_what_our_decoder_generates() -> None:
    """transformers' generate on the job's weights and attnlib's Decoder pick the same greedy tokens: the anchor
    measures the same computation through another code path."""
    config = tiny_config()
    job = inference._Job(config, "/nonexistent")
    prompt = job.prompt(2, 8)
    ours = Decoder(job.model, 2, 8 + 6).generate(prompt, 6)
    from transformers import GPT2LMHeadModel
    import copy

    hf_config = copy.deepcopy(job.model.config)
    hf_config._attn_implementation = "sdpa"
    hf = GPT2LMHeadModel(hf_config).eval()
    hf.load_state_dict(job.model.state_dict())
    theirs = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=6, min_new_tokens=6,
                         do_sample=False, pad_token_id=0)[:, 8:]
    assert torch.equal(ours, theirs)


def test_a_failed_cell_is_recorded_for_every_trial_and_not_rerun(tmp_path, monkeypatch) -> None:
    """A fake out-of-memory in one cell: its trials are results with the reason, the cell is built once, and every
    other cell is measured. lsh has no cache: each of its cells is 'unsupported', with the reason."""
    lsh = results_frame(run_inference_job(tiny_config("lsh"), tmp_path / "lsh", progress=False))
    assert len(lsh) == len(tiny_config("lsh").result_names()) and (lsh.status == "unsupported").all()
    assert lsh.error.str.contains("no decode cache").all()
    built: list[str] = []
    work = inference._Job.work

    def work_or_oom(self, phase, mode, batch, context, model=None):
        built.append(f"{phase}/{mode}/B{batch}/T{context}")
        if (phase, batch, context) == ("decode", 3, 24):
            raise torch.OutOfMemoryError("CUDA out of memory (fake)")
        return work(self, phase, mode, batch, context, model)

    monkeypatch.setattr(inference._Job, "work", work_or_oom)
    frame = results_frame(run_inference_job(tiny_config("gqa"), tmp_path / "gqa", progress=False))
    failed = frame[(frame.phase == "decode") & (frame.batch_size == 3) & (frame.context_len == 24)]
    assert len(failed) == 2 and (failed.status == "oom").all() and failed.error.str.contains("fake").all()
    assert built.count("decode/eager/B3/T24") == 1
    assert (frame.drop(failed.index).status == "ok").all()


def test_a_paired_job_measures_each_round_of_a_cell_beside_the_reference(tmp_path) -> None:
    """Protocol v3 for inference: each prefill and decode round holds one window of the variant and one of the
    reference (sdpa's own model, same prompts), written together; the anchor stays unpaired; a stopped job resumes at
    its first missing round; the report gives each cell's per-round ratio and, in the reference's own job, the A/A
    control."""
    config = tiny_config("gqa", reference="sdpa", warm_s=0.01,
                         train=TrainConfig(variant="gqa", model={**TINY_MODEL, "n_kv_head": 2}))
    assert "n_kv_head" not in config.model_overrides("sdpa")  # the reference is built without gqa's own parameters
    cells = config.cells()
    assert all(config.paired(c) for c in cells) and len(config.result_names()) == 2 * len(cells) * config.trials
    frame = results_frame(run_inference_job(config, tmp_path / "raw", progress=False))
    assert (frame.status == "ok").all() and set(frame.role) == {"variant", "reference"}
    assert set(frame.reference) == {"sdpa"} and sorted(p.name for p in (tmp_path / "raw").glob("*.json")) == \
        sorted(config.result_names())
    ref = frame[frame.role == "reference"]
    own = frame[frame.role == "variant"].set_index(["phase", "batch_size", "context_len", "trial"])
    other = ref.set_index(["phase", "batch_size", "context_len", "trial"])
    assert (own.cache_bytes < other.cache_bytes).all()  # gqa's 2 key/value heads of 4: half the cache
    anchor = tiny_config("sdpa", reference="sdpa", warm_s=0.01)
    assert [c for c in anchor.cells() if not anchor.paired(c)] == [c for c in anchor.cells() if c.startswith("generate")]
    (tmp_path / "raw" / config.result_names()[-1]).unlink()  # as if stopped before the last round's windows
    (tmp_path / "raw" / config.result_names()[-2]).unlink()
    again = results_frame(run_inference_job(config, tmp_path / "raw", progress=False))
    assert sorted(p.name for p in (tmp_path / "raw").glob("*.json")) == sorted(config.result_names())
    assert len(again) >= len(cells) * config.trials
    from attnlib.report.inference import inference_summary
    sdpa = tiny_config("sdpa", reference="sdpa", warm_s=0.01, hf_anchor=False)
    run_inference_job(sdpa, tmp_path / "raw", progress=False)
    summary = inference_summary(results_frame(tmp_path), {})
    decode = summary[(summary.phase == "decode") & (summary.batch_size == 3) & (summary.context_len == 24)]
    rows = decode.set_index("variant")
    assert rows.loc["gqa", "protocol"] == "paired" and rows.loc["gqa", "rounds"] == config.trials
    assert rows.loc["gqa", "gpu_j_per_token_verdict"] in ("n/a", "cheaper", "dearer", "indistinguishable")
    assert rows.loc["sdpa", "gpu_j_per_token_verdict"] == "control"
    from attnlib.report.inference import decode_table
    table = decode_table(summary, "eager", [24], [3])
    assert "energy ratio [95\\%]" in table and "unpaired" not in table.split("\\midrule")[1].split("gqa &")[1]


def test_flops_of_prefill_and_decode() -> None:
    """Mask-exact forward counts: a decode step adds 2 x every weight and the attention of one more query (all
    earlier keys, or the window's); a prefill keeps the last position's logits only."""
    model = build_model("sdpa", **TINY_MODEL, n_positions=64)
    config, p = model.config, matmul_parameters(model)
    head = model.lm_head.weight.numel()
    assert decode_flops(model, 1, 10, 1) == pytest.approx(2 * p + 2 * 4 * 11 * 32)  # 2 layers, query 11 sees 11 keys
    assert decode_flops(model, 3, 10, 4) == pytest.approx(3 * (2 * p * 4 + 2 * (causal_attention_flops(config, 14)
                                                                               - causal_attention_flops(config, 10))))
    assert prefill_flops(model, 2, 16) == pytest.approx(2 * (2 * (p - head) * 16 + 2 * head
                                                             + 2 * causal_attention_flops(config, 16)))
    window = build_model("sliding_window", **TINY_MODEL, n_positions=64, window=4)
    assert decode_flops(window, 1, 30, 1) - 2 * matmul_parameters(window) == pytest.approx(2 * 4 * 4 * 32)


def test_profile_plans_one_inference_job_per_variant() -> None:
    profile = load_profile("inference")
    jobs = plan(profile, VARIANTS)
    assert [j.family for j in jobs] == ["inference"] * len(VARIANTS)
    config = InferenceConfig(**jobs[0].config)
    assert config.prefill_lens == [512, 4096, 32768] and config.decode_batch_sizes == [1, 16, 64]
    assert config.decode_context_lens == [512, 4096] and config.new_tokens == 256 and config.trials >= 3
    assert config.window_s >= 2 and config.decode_mode == "cudagraph" and config.other_decode_cells == {"eager": [[1, 512]]}
    assert config.n_positions == 32768 and config.reference is None  # the GPT-2 grid's committed, unpaired results


def test_the_llama_profile_pairs_every_cell_with_the_native_attention() -> None:
    """#27: prefill at 2K/16K/64K and decode at batch 1/16/64 after 2K/32K, each paired with the 8-KV-head sdpa; the
    grid cut to the GPU budget by cells, never the reference's."""
    from attnlib.registry import supported_variants
    from attnlib.report.inference import SAME_DECODE

    jobs = plan(load_profile("llama-inference"), supported_variants("llama"))
    for job in jobs:
        config = InferenceConfig(**job.config)
        assert config.train.arch == "llama" and config.reference == "sdpa" and config.warm_s > 0
        assert config.prefill_lens == [2048, 16384, 65536] and config.decode_context_lens == [2048, 32768]
        assert all(config.paired(c) for c in config.cells() if not c.startswith("generate"))
        assert "num_key_value_heads" not in config.model_overrides("sdpa")  # the reference: native 8 KV heads
        decoded = {(b, t) for phase, _, b, t in config.cells().values() if phase == "decode"}
        prefilled = {t for phase, _, _, t in config.cells().values() if phase == "prefill"}
        if job.variant == "sdpa":  # the reference keeps the grid, less the cell whose pair exceeds the card
            assert decoded == {(b, t) for b in (1, 16, 64) for t in (2048, 32768)} - {(64, 32768)}
            assert prefilled == {2048, 16384, 65536}
            continue
        assert prefilled == {2048, 65536}  # the budget's cut: 16K prefill is the reference's alone
        if job.variant in SAME_DECODE:  # the native attention's own step: prefill alone
            assert not decoded and len(config.cells()) == 2
        else:  # the budget's cut: batch 1 and each context's largest batch
            assert decoded == {(1, 2048), (64, 2048), (1, 32768), (16, 32768)}


def inference_result(variant: str, mode: str, phase: str, batch: int, context: int, trial: int, ms_per_step: float,
                     j_per_token: float, status: str = "ok", cut_cells: dict | None = None) -> InferenceResult:
    new = 0 if phase == "prefill" else 256
    reps = 4
    steps = reps * new or None
    tokens = reps * batch * (new or context)
    wall = (steps or reps) * ms_per_step / 1e3
    m = None if status != "ok" else Measurement(
        label="x", wall_s=wall, tokens=tokens, flops=tokens * 1e9, tokens_per_s=tokens / wall,
        gpu_j_per_token=j_per_token, gpu_energy_j=j_per_token * tokens, gpu_power_mean_w=j_per_token * tokens / wall)
    per_token = {"sdpa": 36864, "gqa": 9216, "linear": 0}.get(variant, 36864)
    provenance = Provenance(attnlib_commit="abc", versions={}, python="3.12", device="NVIDIA H100 80GB HBM3",
                            device_uuid="GPU-0", created="2026-11-24T00:00:00+00:00")
    config = InferenceConfig(train=TrainConfig(variant=variant), prefill_lens=[512, 4096], decode_batch_sizes=[1, 64],
                             decode_context_lens=[512, 4096], other_decode_cells={}, cut_cells=cut_cells or {}).to_dict()
    return InferenceResult(
        variant=variant, mode=mode, phase=phase, batch_size=batch, context_len=context, new_tokens=new, trial=trial,
        order_seed=1, status=status, provenance=provenance, config=config, measurement=m,
        model=ModelInfo(params=1, attention_params=1, kernel="k", exact=True) if m else None,
        error=None if m else "NotImplementedError: lsh: no decode cache", repetitions=reps if m else None,
        steps=steps if m else None, cache_bytes=per_token * batch * (context + new) if m else None,
        cache_bytes_per_token=per_token if m else None, step_bytes_read=3.35e6 * ms_per_step if new and m else None)


def test_inference_report_writes_tables_figures_and_the_sections_macros(tmp_path) -> None:
    """From a results folder: summary.csv with the issue's columns, the floor multiple from the card's measured
    bandwidth, the decode table, three figures and exactly the macros paper/inference.tex uses."""
    results = tmp_path / "inference"
    decode = {"sdpa": 2.0, "flash": 2.1, "gqa": 1.94, "linear": 1.2}  # ms per step at batch 1
    for trial in range(3):
        for variant, ms in decode.items():
            for batch, context in ((1, 512), (64, 4096), (1, 4096), (64, 512)):
                j = ms * (1 + 0.001 * trial) / 10 / batch ** 0.5
                write_result(results / "raw" / f"{variant}_d_{batch}_{context}_{trial}.json",
                             inference_result(variant, "cudagraph", "decode", batch, context, trial, ms, j))
            for context in (512, 4096):
                write_result(results / "raw" / f"{variant}_p_{context}_{trial}.json",
                             inference_result(variant, "eager", "prefill", 16, context, trial, 5.0, 1e-3))
        write_result(results / "raw" / f"hf_{trial}.json",
                     inference_result("sdpa", "hf_static", "generate", 1, 512, trial, 2.4, 0.39))
        write_result(results / "raw" / f"lsh_{trial}.json",
                     inference_result("lsh", "cudagraph", "decode", 1, 512, trial, 0, 0, status="unsupported"))
    calibration = {"uuid": "GPU-0", "tflops": 700.0, "j_per_flop": 1e-12, "bandwidth": {"gb_per_s": 3000.0}}
    (results / "calibration").mkdir()
    (results / "calibration" / "GPU-0.json").write_text(json.dumps(calibration))
    (tmp_path / "longcontext").mkdir()  # the training side of the savings table: the long-context grid's summary
    pd.DataFrame({"variant": ["sdpa", "linear", "baseline"], "mode": "eager", "seq_len": 4096,
                  "status": ["ok", "ok", "oom"], "gpu_j_per_token_mean": [4e-3, 3e-3, None],
                  "gpu_j_per_token_ci95": [1e-4, 1e-4, None]}).to_csv(tmp_path / "longcontext" / "summary.csv")
    paper = tmp_path / "paperdir"
    paper.mkdir()
    shutil.copy(REPO / "paper" / "inference.tex", paper / "inference.tex")
    summary = build_report(results, "inference", tmp_path / "figures", paper)
    for column in ("variant", "phase", "batch_size", "context_len", "status", "windows", "ms_per_step_mean", "ms_mean",
                   "tokens_per_s_mean", "j_per_token_mean", "j_per_token_ci95", "cache_bytes_per_token",
                   "floor_multiple"):
        assert column in summary, column
    sdpa = summary[(summary.variant == "sdpa") & (summary.phase == "decode") & (summary.batch_size == 1)
                   & (summary.context_len == 512)].iloc[0]
    assert sdpa.ms_per_step_mean == pytest.approx(2.0)
    assert sdpa.floor_multiple == pytest.approx(2.0 / (1e3 * 3.35e6 * 2.0 / 3e12))  # step time / (bytes / bandwidth)
    assert (results / "decode.csv").exists() and summary[summary.variant == "lsh"].status.tolist() == ["unsupported"]
    macros = (paper / "generated" / "inference" / "macros.tex").read_text()
    names = set(re.findall(r"\\newcommand\{\\data(\w+)\}", macros))
    assert names == set(re.findall(r"\\data(\w+)", (paper / "inference.tex").read_text()))
    assert "n/a" not in macros.replace("\\dataInferenceGpuMinutes}{n/a}", "").replace(
        "\\dataInferenceMeasuredFractionPct}{n/a}", "")
    savings = (paper / "generated" / "inference" / "savings.tex").read_text()
    assert "linear & 0.60, 40\\% lower & 0.60, 40\\% lower & 0.75, 25\\% lower \\\\" in savings
    assert "lsh & unsupported & not measured & not measured" in savings
    assert "baseline & not measured & not measured & oom \\\\" in savings  # its training cell: a result, not a gap
    table = (paper / "generated" / "inference" / "decode.tex").read_text()
    assert "transformers generate, static cache" in table and "unsupported" in table
    assert "gqa & 1 & 512 & 1.94" in table and "transformers generate, cudagraph" not in table
    assert "energy ratio" not in table  # no row is paired: no column of "unpaired"
    # a variant without results is named, never silently absent
    assert all(f"{v} & not measured & not measured & not measured" in savings for v in ("cudnn", "flex", "mla"))
    # flash decodes with sdpa's very step: their 5% apart is the between-job variation the text reports
    assert "\\dataInferenceSameDecodeSpreadPct}{5}" in macros and "\\dataInferenceSameDecodeMeasured}{2}" in macros
    # ... so flash's decode is not compared with sdpa's, and gqa's 3% (distinct intervals) is no saving either
    assert "flash & sdpa's own step & sdpa's own step &" in savings
    assert "gqa & 0.97, within the between-job spread &" in savings
    assert "\\dataInferenceSavingsBrief}{linear (40\\%) uses less energy per generated token than sdpa}" in macros
    assert "mla &  &  & not measured" in table
    for figure in ("inference_decode_energy", "inference_decode_latency", "inference_cache_bytes"):
        assert (tmp_path / "figures" / "inference" / f"{figure}.pdf").exists()


def test_decode_goals_are_reached_or_not_with_the_figure() -> None:
    from attnlib.report.inference import decode_goals_words

    reference = pd.DataFrame({"status": ["ok"], "floor_multiple": [2.53], "j_per_token_mean": [0.66]})
    anchor = pd.DataFrame({"status": ["ok"], "j_per_token_mean": [0.85]})
    words = decode_goals_words(reference, anchor)
    assert words == ("Of the two goals for this step, a step within 1.5$\\times$ its memory floor is not reached "
                     "(2.53$\\times$) and energy per generated token at most 0.5$\\times$ the anchor's is not reached "
                     "(0.78$\\times$).")
    assert "floor is reached (1.20" in decode_goals_words(reference.assign(floor_multiple=1.2), anchor)
    assert decode_goals_words(reference, anchor.iloc[:0]) == ""


def test_inference_report_says_cut_where_the_profile_left_a_cell_out(tmp_path) -> None:
    """A cell that `cut_cells` left out reads "cut" in the prefill and savings tables, not "not measured" (a gap)."""
    results = tmp_path / "inference"
    cut = {"gqa": ["decode/cudagraph/B64", "prefill/eager/B16/T4096"]}
    for trial in range(2):
        cells = [(v, "cudagraph", "decode", b, t) for v in ("sdpa", "gqa") for b in (1, 64) for t in (512, 4096)
                 if (v, b) != ("gqa", 64)]
        cells += [(v, "eager", "prefill", 16, t) for v in ("sdpa", "gqa") for t in (512, 4096) if (v, t) != ("gqa", 4096)]
        for variant, mode, phase, batch, context in cells:
            write_result(results / "raw" / f"{variant}_{phase}_{batch}_{context}_{trial}.json",
                         inference_result(variant, mode, phase, batch, context, trial, 2.0, 0.1 + 0.001 * trial,
                                          cut_cells=cut))
    (results / "calibration").mkdir()
    (results / "calibration" / "GPU-0.json").write_text(json.dumps(
        {"uuid": "GPU-0", "tflops": 700.0, "j_per_flop": 1e-12, "bandwidth": {"gb_per_s": 3000.0}}))
    paper = tmp_path / "paperdir"
    paper.mkdir()
    shutil.copy(REPO / "paper" / "inference.tex", paper / "inference.tex")
    build_report(results, "inference", tmp_path / "figures", paper)
    generated = paper / "generated" / "inference"
    assert "gqa & 1.00, indistinguishable & cut &" in (generated / "savings.tex").read_text()
    assert re.search(r"gqa & 2\.0 & [^&]+ & cut &", (generated / "prefill.tex").read_text())


@pytest.mark.slow
def test_notebook_runs_a_tiny_grid(tmp_path) -> None:
    """The family's notebook template, as papermill runs it for a job (here its tiny CPU default)."""
    out = tmp_path / "raw"
    run_notebook(REPO / "notebooks" / "inference.ipynb",
                 tmp_path / "inference.ipynb",
                 {"variant": "sliding_window", "out_dir": str(out)})
    frame = results_frame(tmp_path)  # the folder whose raw/ holds the results
    assert len(frame) == 2 * 6 and (frame.status == "ok").all() and set(frame.phase) == {"prefill", "decode"}


@pytest.mark.slow
def test_notebook_runs_when_every_cell_is_unsupported(tmp_path) -> None:
    """lsh has no decode form and its prefill of these lengths is unsupported too: the notebook still ends (the
    pipeline reads a failed notebook as a job to redo)."""
    config = InferenceConfig(train=TrainConfig(variant="lsh", model=TINY_MODEL), prefill_lens=[48],
                             prefill_batch_size=1, decode_batch_sizes=[1], decode_context_lens=[16], new_tokens=4,
                             decode_mode="eager", other_decode_cells={}, trials=1, window_s=0.05, warmup_reps=1,
                             idle_s=0.01).to_dict()
    run_notebook(REPO / "notebooks" / "inference.ipynb",
                 tmp_path / "inference.ipynb",
                 {"variant": "lsh", "config": config, "out_dir": str(tmp_path / "raw")})
    frame = results_frame(tmp_path)
    assert len(frame) == 2 and set(frame.status) == {"unsupported"}


@pytest.mark.parametrize("variant", ["sdpa", "mla"])
def test_a_llama_grid_decodes_with_its_own_cache_beside_transformers_generate(tmp_path, variant: str) -> None:
    """The inference job on the llama family: every cell runs with the variant's own cache (MLA's latent and its
    rotated key), the results say llama, and the sdpa job's anchor is transformers' own LlamaForCausalLM."""
    tiny = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, head_dim=8, vocab_size=97, bos_token_id=None, eos_token_id=None)
    tiny |= dict(kv_lora_rank=8, q_lora_rank=16, qk_rope_head_dim=4) if variant == "mla" else {}
    config = tiny_config(variant, train=TrainConfig(variant=variant, arch="llama", model=tiny), trials=1,
                         decode_batch_sizes=[2], prefill_lens=[16])
    assert config.model_overrides() == tiny  # RoPE: no position table to size
    frame = results_frame(run_inference_job(config, tmp_path, progress=False))
    assert (frame.status == "ok").all(), frame[frame.status != "ok"].error.tolist()
    assert set(frame.arch) == {"llama"}
    model = build_model(variant, arch="llama", **tiny)
    decode = frame[frame.phase == "decode"]
    assert (decode.cache_bytes == cache_bytes_per_token(model, torch.float32) * decode.batch_size
            * (decode.context_len + config.new_tokens)).all()
    anchors = frame[frame.phase == "generate"]
    assert (len(anchors) > 0) == (variant == "sdpa") and anchors.kernel.str.contains("LlamaForCausalLM").all()
