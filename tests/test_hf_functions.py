"""attnlib's attention functions inside other transformers causal LMs (`attnlib.hf_check`): each one gives the
model's own result (padded batches, generate with the dynamic and the static cache, gradients) or raises an error that
names it. Never a silently wrong result."""

from __future__ import annotations

import importlib.util
import json
import warnings
from pathlib import Path

import pytest
import torch

import attnlib
from attnlib import VARIANTS
from attnlib.hf_check import CASES, DROP_IN, check_function, tiny_causal_lm


def outcome(model: torch.nn.Module, implementation: str, run) -> torch.Tensor | Exception:
    model.set_attn_implementation(implementation)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            return run(model)
    except (NotImplementedError, ValueError) as error:
        return error


@pytest.mark.parametrize("family", ["llama", "qwen2", "mistral", "gpt2"])
def test_drop_in_functions_give_the_models_result_or_a_named_error(family: str) -> None:
    """The table: every drop-in function x padded left / right, generate with the dynamic / static cache, gradients,
    each the model's own sdpa result (generated steps judged by their logits against a cache-free forward pass over
    the same tokens) or an error that names the variant."""
    model = tiny_causal_lm(family)
    rows = [row for name in DROP_IN for row in check_function(model, VARIANTS[name].attn_implementation, family)]
    assert len(rows) == len(DROP_IN) * len(CASES)
    assert all(row.ok for row in rows), [row for row in rows if not row.ok]
    status = {(row.function, row.case): row.status for row in rows}
    assert all(status[("attnlib_sdpa", case)] == "same" for case in CASES)  # sdpa honours every mask transformers passes
    if family != "mistral":  # no mask to honour: every full-attention core decodes and trains as the model does
        for function in ("attnlib_fa2", "attnlib_cudnn", "attnlib_flex", "attnlib_baseline"):
            assert status[(function, "generate_dynamic")] == status[(function, "gradients")] == "same", function


def test_generate_gives_transformers_tokens_with_either_cache() -> None:
    """Greedy tokens too, not only logits: sdpa's core decodes Qwen2 exactly as transformers' sdpa does."""
    ids = torch.randint(1, 97, (2, 10), generator=torch.Generator().manual_seed(1))
    model = tiny_causal_lm("qwen2")
    for cache in ("dynamic", "static"):
        def generate(m):
            return m.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False,
                              pad_token_id=0, cache_implementation="static" if cache == "static" else None)
        assert torch.equal(outcome(model, "attnlib_sdpa", generate), outcome(model, "sdpa", generate)), cache


def test_sliding_window_reads_the_models_window_and_full_layers() -> None:
    """In Mistral the window comes from the model's config; a model without one gets a clear error."""
    ids = torch.randint(1, 97, (1, 5), generator=torch.Generator().manual_seed(3))
    mistral = tiny_causal_lm("mistral")
    full = outcome(mistral, "sdpa", lambda m: m(ids).logits)  # 5 tokens inside the window of 6: no mask passed
    assert torch.allclose(outcome(mistral, "attnlib_sliding_window", lambda m: m(ids).logits), full, atol=1e-5)
    error = outcome(tiny_causal_lm("llama"), "attnlib_sliding_window", lambda m: m(ids).logits)
    assert isinstance(error, ValueError) and "sets no window" in str(error)


@pytest.mark.parametrize("variant", attnlib.supported_variants("gpt2"))
def test_attnlib_models_decode_with_their_cache_as_without_or_say_why(variant: str) -> None:
    """`generate` on attnlib's own GPT-2 with transformers' cache: the tokens of the cache-free run, or an error
    that names the variant (its own cache lives in attnlib.decode)."""
    params = {"linear": {"chunk_size": 8}, "lsh": {"chunk_size": 8}, "sliding_window": {"window": 4}}.get(variant, {})
    torch.manual_seed(0)
    model = attnlib.build_model(variant, n_layer=2, n_embd=64, n_head=4, vocab_size=200, n_positions=64, **params).eval()
    ids = torch.randint(1, 200, (2, 10), generator=torch.Generator().manual_seed(4))

    def generate(use_cache: bool):
        return model.generate(ids, max_new_tokens=8, do_sample=False, use_cache=use_cache, pad_token_id=0)

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        without = generate(False)
        try:
            with_cache = generate(True)
        except NotImplementedError as error:
            assert variant in str(error) and variant in ("mla", "linear", "lsh"), error
            return
    assert torch.equal(with_cache, without)


def test_gemma2s_soft_capped_logits_are_applied_or_refused_by_name() -> None:
    """Gemma 2 soft-caps its attention logits and alternates sliding and full layers; transformers refuses to set
    attention functions that use sdpa's masks on it, so the check sets `config._attn_implementation` directly, as a
    user would. attnlib_baseline then gives transformers' own eager result (the core Gemma 2 is meant to run with) in
    every case, and every fused core refuses by name instead of dropping the cap."""
    model = tiny_causal_lm("gemma2")
    for name in DROP_IN:
        rows = check_function(model, VARIANTS[name].attn_implementation, "gemma2")
        expected = "same" if name == "baseline" else "named error"
        assert [row.status for row in rows] == [expected] * len(CASES), (name, rows)


def test_the_check_flags_a_silently_wrong_core() -> None:
    """A core that ignores masks and anchors causality at the first key (the bug transformers' cache exposes: one new
    query then sees key 0 only) is reported as differing, not passed: the table can fail."""
    from transformers import AttentionInterface

    def first_key_causal(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        out = torch.nn.functional.scaled_dot_product_attention(query, key, value, is_causal=True, scale=scaling,
                                                               enable_gqa=key.shape[1] != query.shape[1])
        return out.transpose(1, 2), None

    AttentionInterface.register("test_first_key_causal", first_key_causal)
    rows = {row.case: row for row in check_function(tiny_causal_lm("llama"), "test_first_key_causal", "llama")}
    assert {case: rows[case].status for case in CASES} == {"padded_left": "differs", "padded_right": "same",
                                                           "generate_dynamic": "differs", "generate_static": "differs",
                                                           "gradients": "same"}
    assert rows["generate_dynamic"].relative_difference > 1e-2 and not rows["generate_dynamic"].ok


def test_the_check_refuses_an_unknown_function_or_case_before_any_work() -> None:
    model = tiny_causal_lm("gpt2")
    with pytest.raises(ValueError, match="no attention function 'attnlib_flx'.*attnlib_flex"):
        check_function(model, "attnlib_flx")
    with pytest.raises(ValueError, match="unknown case.*padded"):
        check_function(model, "attnlib_sdpa", cases=("padded",))


def test_the_gpu_check_keeps_a_record_from_another_card_or_commit(tmp_path) -> None:
    """The GPU check reruns a table with a failed row: the record it replaces, made on another card or at another
    commit, stays beside it under names of its own; a rerun of the same code on the same card replaces its own."""
    path = Path(__file__).resolve().parent.parent / "scripts" / "gpu_check_hf_functions.py"
    spec = importlib.util.spec_from_file_location("gpu_check_hf_functions", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    old = {"device": "NVIDIA H200", "attnlib_commit": "a" * 40, "rows": [{"ok": False}]}
    (tmp_path / "hf_functions.json").write_text(json.dumps(old))
    (tmp_path / "hf_functions.md").write_text("old table")
    script.keep_previous(tmp_path, {"device": "NVIDIA H200", "attnlib_commit": "a" * 40})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf_functions.json", "hf_functions.md"]
    script.keep_previous(tmp_path, {"device": "NVIDIA H100 80GB HBM3", "attnlib_commit": "b" * 40})
    kept = tmp_path / f"hf_functions_nvidia-h200_{'a' * 12}"
    assert sorted(p.name for p in tmp_path.iterdir()) == [kept.name + ".json", kept.name + ".md"]
    assert json.loads(kept.with_suffix(".json").read_text()) == old and kept.with_suffix(".md").read_text() == "old table"
