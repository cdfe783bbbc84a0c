"""build_model: GPT-2's own block around each core, registry behaviour, and a ValueError for every bad input."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2LMHeadModel
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

import attnlib
from conftest import TINY, random_tokens

KERNEL_ONLY = ["sdpa", "flash", "cudnn", "flex", "sliding_window"]


def test_registry_lists_every_variant_in_table_order() -> None:
    assert list(attnlib.VARIANTS) == [
        "baseline", "sdpa", "flash", "cudnn", "flex", "gqa", "mla", "sliding_window", "linear", "lsh", "mha", "mqa"
    ]
    assert attnlib.supported_variants("gpt2") == list(attnlib.VARIANTS)[:10]
    assert attnlib.supported_variants("llama") == [v for v in attnlib.VARIANTS if v not in ("gqa", "lsh")]
    for spec in attnlib.VARIANTS.values():
        assert spec.description and spec.kernel("cuda") and spec.kernel("cpu")


def test_defaults_are_gpt2_small() -> None:
    config = attnlib.build_config("baseline")
    assert (config.n_layer, config.n_embd, config.n_head, config.n_positions, config.vocab_size) == (12, 768, 12, 1024, 50257)


def test_gpt2_block_is_kept_around_the_core(variant: str) -> None:
    model = attnlib.build_model(variant, **TINY)
    assert isinstance(model, GPT2LMHeadModel)
    assert model.lm_head.weight is model.transformer.wte.weight  # tied embeddings
    for block in model.transformer.h:
        assert block.attn.c_proj.weight.shape == (TINY["n_embd"], TINY["n_embd"])
        assert isinstance(block.attn.resid_dropout, torch.nn.Dropout)
        assert type(block.mlp).__name__ == "GPT2MLP" and type(block.ln_1).__name__ == "LayerNorm"


def test_variant_parameters_reach_the_model() -> None:
    model = attnlib.build_model("gqa", n_kv_head=1, **TINY)  # MQA
    assert model.config.n_kv_head == 1
    assert model.transformer.h[0].attn.c_attn.weight.shape == (TINY["n_embd"], TINY["n_embd"] + 2 * 16)


@pytest.mark.parametrize("name", KERNEL_ONLY)
def test_kernel_only_variants_serve_other_hf_models(name: str) -> None:
    """Registered in transformers' AttentionInterface: a tiny Llama with GQA (RoPE, 2 K/V heads) gives the
    eager logits with our core."""
    from transformers import LlamaConfig, LlamaForCausalLM

    hf_name = attnlib.VARIANTS[name].attn_implementation
    assert hf_name in ALL_ATTENTION_FUNCTIONS
    config = LlamaConfig(vocab_size=101, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, window=128)
    torch.manual_seed(0)
    eager = LlamaForCausalLM(config).eval()
    config._attn_implementation = hf_name
    ours = LlamaForCausalLM(config).eval()
    ours.load_state_dict(eager.state_dict())
    x = random_tokens()
    with torch.no_grad():
        torch.testing.assert_close(ours(x).logits, eager(x).logits, rtol=1e-5, atol=1e-5)


BAD_INPUTS = [
    (dict(variant="performer"), "variant"),
    (dict(variant="gqa", n_head=12, n_kv_head=5), "n_kv_head"),
    (dict(variant="gqa", n_kv_head=0), "n_kv_head"),
    (dict(variant="sliding_window", window=0), "window"),
    (dict(variant="mla", kv_lora_rank=0), "kv_lora_rank"),
    (dict(variant="lsh", n_buckets=3), "n_buckets"),
    (dict(variant="lsh", n_hashes=0), "n_hashes"),
    (dict(variant="baseline", seq_len=2048), "seq_len"),
    (dict(variant="sdpa", n_positions=256, seq_len=512), "seq_len"),
    (dict(variant="baseline", n_head=5), "n_head"),
    (dict(variant="flex", attn_pdrop=0.1), "attn_pdrop"),
    (dict(variant="sdpa", window=4), "window"),
    (dict(variant="baseline", n_layers=4), "n_layers"),
]


@pytest.mark.parametrize("kwargs,parameter", BAD_INPUTS, ids=[p for _, p in BAD_INPUTS])
def test_bad_input_raises_value_error_naming_the_parameter(kwargs: dict, parameter: str) -> None:
    kwargs = dict(kwargs)
    with pytest.raises(ValueError, match=parameter):
        attnlib.build_model(kwargs.pop("variant"), **kwargs)


def test_unknown_variant_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="baseline.*lsh"):
        attnlib.build_model("performer")


def test_variant_table_lists_every_variant() -> None:
    from attnlib.__main__ import variant_table

    table = variant_table()
    for spec in attnlib.VARIANTS.values():
        assert spec.name in table and spec.kernel("cpu") in table

