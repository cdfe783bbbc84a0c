"""Tiny models for CPU tests: GPT-2 (2 layers, 64 wide, 4 heads, T = 64) and the llama family (2 layers, 64 wide,
4 query / 2 key/value heads of 16, llama3-scaled RoPE, T = 32)."""

from __future__ import annotations

import os

import pytest
import torch

import attnlib

if os.environ.get("PYTEST_XDIST_WORKER"):  # two workers on two cores: one thread each, not two competing
    torch.set_num_threads(1)

SEQ_LEN = 64
TINY = dict(n_layer=2, n_embd=64, n_head=4, n_positions=128, vocab_size=101, bos_token_id=None, eos_token_id=None)
# per-variant parameters small enough that the windows, chunks and buckets really cut the T = 64 sequence
TINY_PARAMS = {
    "gqa": dict(n_kv_head=2),
    "mla": dict(kv_lora_rank=16),
    "sliding_window": dict(window=16),
    "linear": dict(chunk_size=16),
    "lsh": dict(n_hashes=2, n_buckets=2, chunk_size=16),
}


def tiny_model(variant: str, **overrides) -> torch.nn.Module:
    """A tiny, seeded, eval-mode GPT-2 with `variant`'s attention."""
    torch.manual_seed(0)
    return attnlib.build_model(variant, seq_len=SEQ_LEN, **{**TINY, **TINY_PARAMS.get(variant, {}), **overrides}).eval()


def random_tokens(batch: int = 2, seq_len: int = SEQ_LEN, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, TINY["vocab_size"], (batch, seq_len), generator=torch.Generator().manual_seed(seed))


GPT2_VARIANTS = attnlib.supported_variants("gpt2")


@pytest.fixture(params=GPT2_VARIANTS)
def variant(request) -> str:
    """Each variant with a GPT-2 form (the tiny models here are GPT-2)."""
    return request.param


LLAMA_TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=16, vocab_size=101, max_position_embeddings=64, bos_token_id=None, eos_token_id=None,
                  rope_parameters={"rope_type": "llama3", "rope_theta": 500_000.0, "factor": 32.0,
                                   "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                   "original_max_position_embeddings": 32})
# per-variant parameters that really cut a T = 15-32 sequence (the key/value head axis at its own counts)
LLAMA_TINY_PARAMS = {"sliding_window": dict(window=5), "linear": dict(chunk_size=4),
                     "mha": dict(num_key_value_heads=None), "mqa": dict(num_key_value_heads=1),
                     "mla": dict(kv_lora_rank=8, q_lora_rank=16, qk_rope_head_dim=4)}
LLAMA_VARIANTS = attnlib.supported_variants("llama")


def tiny_llama(variant: str, **overrides) -> torch.nn.Module:
    """A tiny, seeded llama-family model with `variant`'s attention (train mode; `overrides` over `LLAMA_TINY`)."""
    torch.manual_seed(0)
    return attnlib.build_model(variant, arch="llama", seq_len=32, **{**LLAMA_TINY, **overrides})
