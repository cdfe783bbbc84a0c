"""attnlib's attention functions inside other transformers causal LMs: each one gives transformers' own sdpa result
(greedy tokens with the dynamic and the static cache, logits of padded batches) or raises an error that names it.
Never a silently wrong result."""

from __future__ import annotations

import warnings

import pytest
import torch
from transformers import (GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM,
                          Qwen2Config, Qwen2ForCausalLM)

import attnlib  # noqa: F401  (registers the functions)

FUNCTIONS = {"attnlib_baseline": "baseline", "attnlib_sdpa": "sdpa", "attnlib_fa2": "flash", "attnlib_cudnn": "cudnn", "attnlib_flex": "flex",
             "attnlib_sliding_window": "sliding_window"}
SMALL = dict(vocab_size=97, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=128)


def tiny_model(family: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if family == "llama":
        return LlamaForCausalLM(LlamaConfig(**SMALL)).eval()
    if family == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(**SMALL)).eval()
    if family == "mistral":  # a window shorter than the prompt: every layer attends within it
        return MistralForCausalLM(MistralConfig(**SMALL, sliding_window=6)).eval()
    return GPT2LMHeadModel(GPT2Config(vocab_size=97, n_embd=64, n_layer=2, n_head=4, n_positions=128,
                                      bos_token_id=0, eos_token_id=0)).eval()


def outcome(model: torch.nn.Module, implementation: str, run) -> torch.Tensor | Exception:
    model.set_attn_implementation(implementation)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            return run(model)
    except (NotImplementedError, ValueError) as error:
        return error


def assert_same_or_named_error(result, expected: torch.Tensor, implementation: str) -> None:
    if isinstance(result, Exception):
        assert FUNCTIONS[implementation] in str(result), f"{implementation}: unclear error {result!r}"
    else:
        assert torch.equal(result, expected) if result.dtype == torch.long else \
            torch.allclose(result, expected, atol=1e-5), f"{implementation}: differs from transformers' sdpa"


@pytest.mark.parametrize("family", ["llama", "qwen2", "mistral", "gpt2"])
@pytest.mark.parametrize("cache", ["dynamic", "static"])
def test_generate_gives_transformers_tokens_or_a_named_error(family: str, cache: str) -> None:
    ids = torch.randint(1, 97, (2, 10), generator=torch.Generator().manual_seed(1))

    def generate(model):
        return model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False,
                              pad_token_id=0, cache_implementation="static" if cache == "static" else None)

    model = tiny_model(family)
    expected = outcome(model, "sdpa", generate)
    results = {name: outcome(model, name, generate) for name in FUNCTIONS}
    for name, result in results.items():
        assert_same_or_named_error(result, expected, name)
    assert not isinstance(results["attnlib_sdpa"], Exception)  # sdpa honours every mask transformers passes
    if cache == "dynamic" and family != "mistral":  # no mask to honour: every full-attention core decodes
        assert not any(isinstance(results[n], Exception) for n in ("attnlib_fa2", "attnlib_cudnn", "attnlib_flex"))


@pytest.mark.parametrize("family", ["llama", "qwen2", "mistral", "gpt2"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_batches_give_transformers_logits_or_a_named_error(family: str, side: str) -> None:
    ids = torch.randint(1, 97, (2, 9), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0 if side == "left" else 1
    mask[1, -3:] = 0 if side == "right" else 1

    def logits(model):
        return model(ids, attention_mask=mask).logits * mask.unsqueeze(-1)  # padded positions predict nothing

    model = tiny_model(family)
    expected = outcome(model, "sdpa", logits)
    for name in FUNCTIONS:
        assert_same_or_named_error(outcome(model, name, logits), expected, name)


def test_sliding_window_reads_the_models_window_and_full_layers() -> None:
    """In Mistral the window comes from the model's config; a model without one gets a clear error."""
    ids = torch.randint(1, 97, (1, 5), generator=torch.Generator().manual_seed(3))
    mistral = tiny_model("mistral")
    full = outcome(mistral, "sdpa", lambda m: m(ids).logits)  # 5 tokens inside the window of 6: no mask passed
    assert torch.allclose(outcome(mistral, "attnlib_sliding_window", lambda m: m(ids).logits), full, atol=1e-5)
    error = outcome(tiny_model("llama"), "attnlib_sliding_window", lambda m: m(ids).logits)
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
    """Gemma 2 soft-caps its attention logits and alternates sliding and full layers. transformers refuses to set
    attention functions that use sdpa's masks on it, so a user sets `config._attn_implementation` directly:
    attnlib_baseline then gives transformers' own eager result (the core Gemma 2 is meant to run with), and every
    fused core refuses by name instead of dropping the cap."""
    from transformers import Gemma2Config, Gemma2ForCausalLM

    torch.manual_seed(0)
    model = Gemma2ForCausalLM(Gemma2Config(**{**SMALL, "head_dim": 16}, sliding_window=6, attn_logit_softcapping=5.0,
                                           query_pre_attn_scalar=16)).eval()
    ids = torch.randint(1, 97, (2, 12), generator=torch.Generator().manual_seed(5))

    def run(implementation: str):
        model.config._attn_implementation = implementation
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                tokens = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False,
                                        pad_token_id=0)
                return torch.cat([model(ids).logits.flatten(), tokens.flatten().float()])
        except NotImplementedError as error:
            return error

    expected = run("eager")
    assert torch.allclose(run("attnlib_baseline"), expected, atol=1e-5)
    for name in FUNCTIONS:
        if name != "attnlib_baseline":
            error = run(name)
            assert isinstance(error, NotImplementedError) and FUNCTIONS[name] in str(error), (name, error)
