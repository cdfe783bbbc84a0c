"""Analytic FLOPs by the mask-exact convention, cross-checked with FlopCounterMode where it sees the ops."""

from __future__ import annotations

import pytest

import attnlib
from attnlib.flops import (attention_balance_length, causal_attention_flops, counted_training_flops, matmul_parameters,
                           training_flops_per_token)
from conftest import SEQ_LEN, TINY, random_tokens, tiny_model


def test_baseline_matches_flop_counter() -> None:
    """FlopCounterMode counts eager attention as executed (full T x T square, backward = 2 x forward);
    the rest must be exactly 6 x P_matmul per token."""
    model = tiny_model("baseline").train()
    x = random_tokens()
    counted = counted_training_flops(model, x)
    tokens = x.numel()
    dense = 6 * matmul_parameters(model) * tokens
    attention_as_executed = TINY["n_layer"] * x.shape[0] * 3 * 4 * SEQ_LEN**2 * TINY["n_embd"]
    assert counted == dense + attention_as_executed


def test_mask_exact_attention_is_the_causal_half() -> None:
    model = tiny_model("baseline")
    count = training_flops_per_token(model, SEQ_LEN)
    expected = 3.5 * 4 * SEQ_LEN * (SEQ_LEN + 1) / 2 * TINY["n_embd"] * TINY["n_layer"] / SEQ_LEN
    assert count.attention_flops_per_token == pytest.approx(expected)
    assert count.training_flops_per_token == pytest.approx(6 * count.matmul_parameters + expected)


def test_gpt2_small_flops_per_token() -> None:
    """GPT-2 small at T = 512: 6 x 123.5M matmul weights (85M in blocks + 38.6M output head) + attention."""
    model = attnlib.build_model("sdpa", n_layer=12)
    count = training_flops_per_token(model, 512)
    assert count.matmul_parameters == 12 * (768 * 2304 + 768 * 768 + 2 * 768 * 3072) + 768 * 50257
    assert count.training_flops_per_token == pytest.approx(6 * count.matmul_parameters + 3.5 * 4 * 513 / 2 * 768 * 12)


def test_the_balance_length_is_where_attention_equals_the_dense_flops() -> None:
    """Below the balance length exact attention is the smaller part of a training step's FLOPs, above it the
    larger; the wider model's lies further out (GPT-2 small: about 11K tokens)."""
    model = attnlib.build_model("sdpa", n_layer=12)
    balance = attention_balance_length(model)
    for length, smaller in ((int(balance), True), (int(balance) + 1, False)):
        count = training_flops_per_token(model, length)
        assert (count.attention_flops_per_token < count.dense_flops_per_token) == smaller
    assert 11 * 1024 < balance < 12 * 1024
    assert attention_balance_length(attnlib.build_model("sdpa", n_layer=12, n_embd=1536, n_head=24)) > 1.5 * balance


def test_sliding_window_counts_the_band() -> None:
    full = tiny_model("sliding_window", window=SEQ_LEN)
    narrow = tiny_model("sliding_window", window=16)
    assert training_flops_per_token(full, SEQ_LEN).attention_flops_per_token == pytest.approx(
        training_flops_per_token(tiny_model("baseline"), SEQ_LEN).attention_flops_per_token)
    band = 16 * 17 / 2 + (SEQ_LEN - 16) * 16
    assert training_flops_per_token(narrow, SEQ_LEN).attention_flops_per_token == pytest.approx(
        3.5 * 4 * band * TINY["n_embd"] * TINY["n_layer"] / SEQ_LEN)


def test_subquadratic_variants_grow_linearly_in_seq_len() -> None:
    for name in ("linear", "lsh"):
        config = attnlib.build_config(name, n_positions=8192)
        flops = attnlib.VARIANTS[name].attention_flops
        assert flops(config, 8192) == pytest.approx(4 * flops(config, 2048))
        assert flops(config, 8192) < causal_attention_flops(config, 8192)


def test_linear_flops_match_counter_on_its_pytorch_path() -> None:
    """The chunked PyTorch path executes its intra-chunk square in full (the counter sees c x c, not the
    causal half) and the state products: counted - analytic = the masked half of each chunk, x3 / 3.5."""
    model = tiny_model("linear").train()
    x = random_tokens()
    counted = counted_training_flops(model, x) - 6 * matmul_parameters(model) * x.numel()
    c, d = 16, TINY["n_embd"] // TINY["n_head"]
    # executed forward per layer per sequence, all heads: q k^T and A v over full c x c chunks (4 c^2 D per
    # chunk), k^T v and q S (4 T D^2), and the q . normaliser product (2 T D)
    per_head = 4 * c * c * d * (SEQ_LEN // c) + 4 * SEQ_LEN * d * d + 2 * SEQ_LEN * d
    executed_forward = per_head * TINY["n_head"] * TINY["n_layer"] * x.shape[0]
    assert counted == pytest.approx(3 * executed_forward, rel=0.02)
