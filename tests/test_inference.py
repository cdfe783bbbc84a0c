"""The inference family on a CPU: the grid, its accounting (tokens, FLOPs, cache bytes), the anchor, failures as
results."""

from __future__ import annotations

import pytest
import torch

from attnlib import build_model
from attnlib.decode import Decoder, cache_bytes_per_token
from attnlib.experiments import inference
from attnlib.experiments.inference import InferenceConfig, run_inference_job
from attnlib.experiments.training import TrainConfig
from attnlib.flops import causal_attention_flops, decode_flops, matmul_parameters, prefill_flops
from attnlib.pipeline import load_profile, plan
from attnlib.registry import VARIANTS
from attnlib.results import results_frame

TINY_MODEL = dict(n_layer=2, n_embd=32, n_head=4)


def tiny_config(variant: str = "sdpa", **overrides) -> InferenceConfig:
    settings = dict(train=TrainConfig(variant=variant, model=TINY_MODEL), prefill_lens=[16, 40], prefill_batch_size=2,
                    decode_batch_sizes=[1, 3], decode_context_lens=[8, 24], new_tokens=5, decode_mode="eager",
                    eager_decode_cells=[], trials=2, window_s=0.02, warmup_reps=1, idle_s=0.01, order_seed=5)
    return InferenceConfig(**{**settings, **overrides})


def test_config_resolves_cells_and_refuses_bad_values() -> None:
    config = tiny_config(decode_mode="graph", eager_decode_cells=[[1, 8]])
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
    for bad in (dict(prefill_lens=[16, 16]), dict(decode_mode="fast"), dict(eager_decode_cells=[[1]]),
                dict(trials=0), dict(window_s=0), dict(decode_batch_sizes=[])):
        with pytest.raises(ValueError):
            tiny_config(**bad)


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

    def work_or_oom(self, phase, mode, batch, context):
        built.append(f"{phase}/{mode}/B{batch}/T{context}")
        if (phase, batch, context) == ("decode", 3, 24):
            raise torch.OutOfMemoryError("CUDA out of memory (fake)")
        return work(self, phase, mode, batch, context)

    monkeypatch.setattr(inference._Job, "work", work_or_oom)
    frame = results_frame(run_inference_job(tiny_config("gqa"), tmp_path / "gqa", progress=False))
    failed = frame[(frame.phase == "decode") & (frame.batch_size == 3) & (frame.context_len == 24)]
    assert len(failed) == 2 and (failed.status == "oom").all() and failed.error.str.contains("fake").all()
    assert built.count("decode/eager/B3/T24") == 1
    assert (frame.drop(failed.index).status == "ok").all()


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
    jobs = plan(profile, list(VARIANTS))
    assert [j.family for j in jobs] == ["inference"] * len(VARIANTS)
    config = InferenceConfig(**jobs[0].config)
    assert config.prefill_lens == [512, 4096, 32768] and config.decode_batch_sizes == [1, 16, 64]
    assert config.decode_context_lens == [512, 4096] and config.new_tokens == 256 and config.trials >= 3
    assert config.window_s >= 2 and config.decode_mode == "graph"
    assert config.n_positions == 32768
