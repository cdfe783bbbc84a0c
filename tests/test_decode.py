"""Decoding with each variant's cache (CPU, fp32, tiny models): prefill + steps give the full forward pass's logits
(teacher forcing), the ring buffer past its wrap-around, linear's recurrent state against its chunked training
form, MLA's absorbed step against its explicit attention, and cache bytes against the analytic figure."""

from __future__ import annotations

import pytest
import torch

from attnlib import VARIANTS as VARIANTS_SPEC
from attnlib import build_model, supported_variants
from attnlib.decode import Decoder, cache_bytes_per_token, cache_kind, step_bytes_read
from attnlib.model import causal_hidden_states
from conftest import LLAMA_TINY, LLAMA_TINY_PARAMS

TINY = dict(n_layer=2, n_embd=32, n_head=4, n_positions=32, vocab_size=97)
PARAMS = {"gqa": dict(n_kv_head=2), "sliding_window": dict(window=5), "mla": dict(kv_lora_rank=8),
          "linear": dict(chunk_size=4)}
DECODED = [v for v in supported_variants("gpt2") if v != "lsh"]


def tiny(variant: str) -> torch.nn.Module:
    """A tiny model whose biases are not zero (as after training): MLA's absorbed step must handle them."""
    torch.manual_seed(0)
    model = build_model(variant, **TINY, **PARAMS.get(variant, {})).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias"):
                parameter.normal_(0.0, 0.1)
    return model


@pytest.mark.parametrize("variant", DECODED)
def test_prefill_and_steps_equal_the_full_forward(variant: str) -> None:
    """A 6-token prompt (not a multiple of linear's chunk), then 9 steps: past sliding_window's 5-slot ring."""
    model = tiny(variant)
    ids = torch.randint(0, TINY["vocab_size"], (3, 15), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = model.lm_head(causal_hidden_states(model, ids))
    decoder = Decoder(model, batch_size=3, max_len=20)
    logits = [decoder.prefill(ids[:, :6])]
    logits += [decoder.step(ids[:, t:t + 1]).unsqueeze(1) for t in range(6, 15)]
    torch.testing.assert_close(torch.cat(logits, dim=1), full, rtol=1e-5, atol=1e-5)
    assert decoder.length == 15


@pytest.mark.parametrize("variant", DECODED)
def test_cache_bytes_match_the_analytic_bytes(variant: str) -> None:
    model = tiny(variant)
    decoder = Decoder(model, batch_size=2, max_len=20)
    per_token = cache_bytes_per_token(model, torch.float32)
    if per_token:  # grows with the context: max_len positions allocated per sequence
        assert decoder.cache_bytes == 2 * 20 * per_token
    else:  # constant: the ring of `window` slots, or linear's state, whatever the context
        assert decoder.cache_bytes == Decoder(model, batch_size=2, max_len=30).cache_bytes > 0
    expected = {"gqa": 2 * 2 * 8, "mla": 8}.get(variant, 0 if variant in ("sliding_window", "linear") else 2 * 4 * 8)
    assert per_token == TINY["n_layer"] * expected * 4


def test_greedy_generation_is_the_argmax_of_the_full_forward() -> None:
    model = tiny("sdpa")
    prompt = torch.randint(0, TINY["vocab_size"], (2, 5), generator=torch.Generator().manual_seed(2))
    generated = Decoder(model, batch_size=2, max_len=12).generate(prompt, new_tokens=7)
    ids = torch.cat([prompt, generated], dim=1)
    with torch.no_grad():
        full = model.lm_head(causal_hidden_states(model, ids[:, :-1]))
    assert torch.equal(full[:, 4:].argmax(-1), generated)


def test_lsh_has_no_cache_and_bad_use_fails_early() -> None:
    with pytest.raises(NotImplementedError, match="lsh"):
        cache_kind("lsh")
    model = tiny("sdpa")
    with pytest.raises(ValueError, match="n_positions"):
        Decoder(model, batch_size=1, max_len=64)
    decoder = Decoder(model, batch_size=1, max_len=4)
    with pytest.raises(ValueError, match="max_len"):
        decoder.prefill(torch.zeros(1, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="eval"):
        Decoder(model.train(), batch_size=1, max_len=4)


def test_step_bytes_read_counts_weights_once_and_each_sequences_cache() -> None:
    """At 10 tokens of context: sdpa reads 2 x 4 heads x 8 dims per token per layer, the ring only its 5 slots,
    linear its state whatever the context; every variant reads its weights once (not the position table)."""
    read = {}
    for variant in ("sdpa", "sliding_window", "linear"):
        model = tiny(variant)
        weights = sum(p.numel() for n, p in model.named_parameters() if "wpe" not in n) * 4
        read[variant] = step_bytes_read(model, batch_size=3, context_len=10, dtype=torch.float32) - weights
    layers = TINY["n_layer"]
    assert read == {"sdpa": 3 * layers * 2 * 4 * 8 * 10 * 4, "sliding_window": 3 * layers * 2 * 4 * 8 * 5 * 4,
                    "linear": 3 * layers * 4 * (8 * 8 + 8) * 4}


@pytest.mark.parametrize("variant", ["gqa", "mla", "sliding_window", "linear"])
def test_warm_up_steps_undone_by_a_rewind_leave_the_decoder_as_it_was(variant: str) -> None:
    """What the "cudagraph" mode relies on before its capture: steps run and then rewound leave every cache as it
    was (linear's sums, the ring's slots past its wrap-around, the slots beyond a growing cache's length)."""
    model = tiny(variant)
    prompt = torch.randint(0, TINY["vocab_size"], (2, 10), generator=torch.Generator().manual_seed(4))
    warmed, fresh = Decoder(model, 2, 16), Decoder(model, 2, 16)
    for decoder in (warmed, fresh):
        decoder.prefill(prompt)
    before = warmed.mark()
    for _ in range(2):
        warmed._step_logits(torch.ones(2, 1, dtype=torch.long), warmed.position.fill_(warmed.length))
    warmed.rewind(before)
    for t in range(4):
        token = torch.full((2, 1), t + 5)
        torch.testing.assert_close(warmed.step(token), fresh.step(token), rtol=0, atol=0)


def test_decoder_refuses_an_unknown_mode_and_cuda_graphs_on_a_cpu() -> None:
    model = tiny("sdpa")
    with pytest.raises(ValueError, match="mode: one of"):
        Decoder(model, 1, 8, mode="fast")
    with pytest.raises(ValueError, match="CUDA"):
        Decoder(model, 1, 8, mode="cudagraph")


@pytest.mark.parametrize("variant", ["gqa", "mla", "sliding_window", "linear"])
def test_compiled_step_decodes_like_the_eager_one(variant: str) -> None:
    """The step has static shapes and updates its caches in place: compiled (on a GPU, with CUDA graphs) it gives
    the eager step's logits, past the ring's wrap-around; one compilation serves every position."""
    model = tiny(variant)
    prompt = torch.randint(0, TINY["vocab_size"], (2, 4), generator=torch.Generator().manual_seed(3))
    torch._dynamo.reset()
    eager, compiled = Decoder(model, 2, 16), Decoder(model, 2, 16, mode="compile")
    for decoder in (eager, compiled):
        decoder.prefill(prompt)
    with torch._dynamo.config.patch(error_on_recompile=True):
        for t in range(8):
            token = torch.full((2, 1), t)
            torch.testing.assert_close(compiled.step(token), eager.step(token), rtol=1e-5, atol=1e-5)
    torch._dynamo.reset()


@pytest.mark.parametrize("variant", DECODED)
def test_rewind_repeats_the_same_decode(variant: str) -> None:
    """Decoding from one prefill again after `rewind` gives the same logits: past the ring's wrap, and with
    linear's sums restored, so decode alone can be measured over repeated runs."""
    model = tiny(variant)
    prompt = torch.randint(0, TINY["vocab_size"], (2, 4), generator=torch.Generator().manual_seed(4))
    decoder = Decoder(model, batch_size=2, max_len=16)
    decoder.prefill(prompt)
    mark = decoder.mark()
    tokens = [torch.full((2, 1), t) for t in range(8)]
    first = torch.stack([decoder.step(t) for t in tokens])
    decoder.rewind(mark)
    assert decoder.length == 4
    torch.testing.assert_close(torch.stack([decoder.step(t) for t in tokens]), first, rtol=0, atol=0)


LLAMA_DECODED = [v for v in supported_variants("llama") if VARIANTS_SPEC[v].decode_cache is not None]


@pytest.mark.parametrize("variant", LLAMA_DECODED)
def test_a_llama_decodes_with_its_own_cache_as_its_full_forward(variant: str) -> None:
    """The llama family with each variant's cache (the native 2 key/value heads of 4, MHA, MQA, MLA's latent with
    its rotated shared key, the window's ring, linear's state): a 6-token prompt, then 9 steps past the ring's
    wrap-around, equal to the full forward pass's logits; the cache bytes are the analytic ones."""
    torch.manual_seed(0)
    model = build_model(variant, arch="llama", seq_len=32, **{**LLAMA_TINY, **LLAMA_TINY_PARAMS.get(variant, {})}).eval()
    ids = torch.randint(0, LLAMA_TINY["vocab_size"], (3, 15), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = model(ids).logits
    decoder = Decoder(model, batch_size=3, max_len=20)
    logits = [decoder.prefill(ids[:, :6])] + [decoder.step(ids[:, t:t + 1]).unsqueeze(1) for t in range(6, 15)]
    torch.testing.assert_close(torch.cat(logits, dim=1), full, rtol=1e-4, atol=1e-4)
    per_token = cache_bytes_per_token(model, torch.float32)
    kv_heads = model.config.num_key_value_heads
    expected = {"mla": 8 + 4, "sliding_window": 0, "linear": 0}.get(variant, 2 * kv_heads * LLAMA_TINY["head_dim"])
    assert per_token == 2 * expected * 4
    if per_token:
        assert decoder.cache_bytes == 3 * 20 * per_token
