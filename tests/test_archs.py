"""The model-family axis: the llama family at Llama-3.2-1B's shape, each variant on it checked against an exact
reference (causality, token mixing, outputs and gradients), and variants without a form there saying why."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaForCausalLM

import attnlib
from attnlib.archs import ARCHS, get_arch

TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            head_dim=16, vocab_size=101, max_position_embeddings=64)
EXACT = ["baseline", "sdpa", "flash", "cudnn", "flex"]


def tiny_llama(variant: str, **overrides) -> LlamaForCausalLM:
    torch.manual_seed(0)
    return attnlib.build_model(variant, arch="llama", seq_len=32, **{**TINY, **overrides})


def test_the_llama_family_has_llama_3_2_1b_shape() -> None:
    with torch.device("meta"):
        model = attnlib.build_model("sdpa", arch="llama", seq_len=2048)
    c = model.config
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.num_key_value_heads, c.head_dim) == (16, 2048, 32, 8, 64)
    assert (c.intermediate_size, c.vocab_size, c.tie_word_embeddings, c.hidden_act) == (8192, 128_256, True, "silu")
    assert c.rope_parameters["rope_type"] == "llama3" and c.rope_parameters["rope_theta"] == 500_000.0
    assert sum(p.numel() for p in model.parameters()) == 1_235_814_400
    assert c.attnlib_arch == "llama" and c._attn_implementation == "attnlib_sdpa"
    assert set(ARCHS) == {"gpt2", "llama"} and attnlib.build_model("sdpa", n_layer=1).config.attnlib_arch == "gpt2"
    with pytest.raises(ValueError, match="valid names: gpt2, llama"):
        get_arch("mamba")


@pytest.mark.parametrize("variant", EXACT)
@pytest.mark.parametrize("kv_heads", [4, 2, 1], ids=["MHA", "GQA", "MQA"])
def test_exact_kernels_give_llamas_own_logits_and_gradients(variant: str, kv_heads: int) -> None:
    """The same weights under transformers' own sdpa attention and under the variant: equal logits, equal
    gradients of every parameter."""
    ours = tiny_llama(variant, num_key_value_heads=kv_heads)
    theirs = LlamaForCausalLM(ours.config.__class__(**{**ours.config.to_dict(), "_attn_implementation": "sdpa"}))
    theirs.load_state_dict(ours.state_dict())
    theirs.set_attn_implementation("sdpa")
    ids = torch.randint(0, 101, (2, 32), generator=torch.Generator().manual_seed(1))
    out_ours, out_theirs = ours(ids, labels=ids), theirs(ids, labels=ids)
    torch.testing.assert_close(out_ours.logits, out_theirs.logits, atol=2e-5, rtol=1e-4)
    out_ours.loss.backward()
    out_theirs.loss.backward()
    for (name, a), (_, b) in zip(ours.named_parameters(), theirs.named_parameters()):
        torch.testing.assert_close(a.grad, b.grad, atol=2e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("variant", ["sdpa", "sliding_window", "linear"])
def test_llama_variants_are_causal_and_mix_tokens(variant: str) -> None:
    model = tiny_llama(variant, **({"window": 8} if variant == "sliding_window" else
                                   {"chunk_size": 8} if variant == "linear" else {})).eval()
    ids = torch.randint(0, 101, (1, 32), generator=torch.Generator().manual_seed(2))
    changed = ids.clone()
    changed[0, 20:] = (changed[0, 20:] + 1) % 101
    with torch.no_grad():
        a, b = model(ids).logits, model(changed).logits
    torch.testing.assert_close(a[:, :20], b[:, :20])  # the future never reaches the past
    assert not torch.allclose(a[:, 20:], b[:, 20:])  # and what changed reaches the tokens after it
    early = ids.clone()
    early[0, 0] = (early[0, 0] + 1) % 101
    with torch.no_grad():
        assert not torch.allclose(model(early).logits[:, 5], a[:, 5])  # token 0 reaches token 5 through attention


def test_sliding_window_on_llama_uses_the_familys_window_and_equals_a_banded_reference() -> None:
    assert attnlib.build_model("sliding_window", arch="llama", seq_len=32, **TINY).config.window == 1024
    model = tiny_llama("sliding_window", window=8).eval()
    ids = torch.randint(0, 101, (1, 32), generator=torch.Generator().manual_seed(3))
    band = torch.ones(32, 32, dtype=torch.bool).tril() & ~torch.ones(32, 32, dtype=torch.bool).tril(-8)
    reference = LlamaForCausalLM(model.config.__class__(**{**model.config.to_dict(), "_attn_implementation": "sdpa"}))
    reference.load_state_dict(model.state_dict())
    reference.set_attn_implementation("sdpa")
    with torch.no_grad():  # transformers' sdpa honours an explicit [B, 1, T, T] mask as given
        expected = reference(ids, attention_mask=band[None, None]).logits
        torch.testing.assert_close(model(ids).logits, expected, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("variant", ["gqa", "mla", "lsh"])
def test_variants_without_a_llama_form_say_why(variant: str) -> None:
    with pytest.raises(NotImplementedError, match=f"{variant} on llama: "):
        attnlib.build_model(variant, arch="llama", **TINY)


def test_llama_config_errors_name_the_parameter() -> None:
    with pytest.raises(ValueError, match="num_key_value_heads"):
        attnlib.build_model("sdpa", arch="llama", **{**TINY, "num_key_value_heads": 3})
    with pytest.raises(ValueError, match="n_kv_head"):
        attnlib.build_model("sdpa", arch="llama", n_kv_head=2)
    with pytest.raises(ValueError, match="seq_len"):
        attnlib.build_model("sdpa", arch="llama", seq_len=10**6)
