"""Tiny GPT-2 configurations for CPU tests: 2 layers, 64 wide, 4 heads, T = 64."""

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
