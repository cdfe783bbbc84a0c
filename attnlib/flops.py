"""Analytic training FLOPs per token of a model of any family with each attention variant (mask-exact convention).

    training FLOPs / token = 6 x P_matmul + 3.5 x (attention forward FLOPs per sequence x layers) / T

P_matmul counts every weight matrix a token is multiplied by (projections, MLP and the tied output head;
embedding lookups are not FLOPs). Attention forward FLOPs follow FlashAttention's convention: 4 x (unmasked
area) x query heads x head_dim (the family's `Dims`: key/value heads do not change it, and heads x head_dim
need not be the width), the causal area being T(T+1)/2 and a sliding window's the real band; backward costs
2.5 x forward (FlashAttention recomputes the scores), so training = 3.5 x forward. Linear and LSH attention
declare their own forward counts next to their code (`VariantSpec.attention_flops`).

`counted_training_flops` measures the same thing with `torch.utils.flop_counter.FlopCounterMode`, which counts
matmuls as executed: the full T x T square (no causal saving) and a backward of 2 x forward.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel, PretrainedConfig
from transformers.pytorch_utils import Conv1D

from .archs import dims_of
from .registry import get_variant

BACKWARD_OVER_FORWARD = 2.5


def causal_attention_flops(config: PretrainedConfig, seq_len: int) -> float:
    """Exact causal softmax attention, one layer, one sequence: 4 x T(T+1)/2 x query heads x head_dim."""
    return 4.0 * seq_len * (seq_len + 1) / 2 * dims_of(config).attention_width


def matmul_parameters(model: GPT2LMHeadModel) -> int:
    """Weights a token is multiplied by: every Conv1D/Linear weight, the output head included."""
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, (Conv1D, nn.Linear)))


@dataclass(frozen=True)
class FlopCount:
    variant: str
    seq_len: int
    matmul_parameters: int
    dense_flops_per_token: float  # 6 x P_matmul
    attention_flops_per_token: float  # 3.5 x forward attention / T, all layers
    training_flops_per_token: float
    formula: str

    def to_dict(self) -> dict:
        return asdict(self)


def training_flops_per_token(model: GPT2LMHeadModel, seq_len: int) -> FlopCount:
    """Training (forward + backward) FLOPs per token of `model` (built by `attnlib.build_model`) at `seq_len`."""
    config = model.config
    spec = get_variant(config.attnlib_variant)
    per_layer = (spec.attention_flops or causal_attention_flops)(config, seq_len)
    attention = (1 + BACKWARD_OVER_FORWARD) * per_layer * dims_of(config).layers / seq_len
    p = matmul_parameters(model)
    return FlopCount(
        variant=spec.name, seq_len=seq_len, matmul_parameters=p, dense_flops_per_token=6.0 * p,
        attention_flops_per_token=attention, training_flops_per_token=6.0 * p + attention,
        formula="6 x P_matmul + 3.5 x attention_forward(mask-exact) x layers / T",
    )


def attention_balance_length(model: GPT2LMHeadModel) -> float:
    """The length T at which exact causal attention's training FLOPs per token equal the dense ones (6 x P_matmul)
    in `model` (its family's native attention): past it the attention core is most of a step's arithmetic, which
    is where a mechanism that cuts the core can pay off. Attention per token grows as T + 1, so one count fixes it.
    It grows with the width: a wider model's crossovers are expected at longer contexts."""
    probe = 1024
    count = training_flops_per_token(model, probe)
    return count.dense_flops_per_token / (count.attention_flops_per_token / (probe + 1)) - 1


def layer_flops(attention: nn.Module, config: GPT2Config, seq_len: int, batch_size: int, backward: bool) -> float:
    """One call of one attention layer alone (`attention`: its projections and core) on `batch_size` sequences of
    `seq_len`, mask-exact: 2 x its projection weights per token and the core's forward count, times 3 and 3.5
    with the backward pass (the same convention as `training_flops_per_token`)."""
    spec = get_variant(config.attnlib_variant)
    core = (spec.attention_flops or causal_attention_flops)(config, seq_len)
    weights = sum(m.weight.numel() for m in attention.modules() if isinstance(m, (Conv1D, nn.Linear)))
    if backward:
        return batch_size * (6.0 * weights * seq_len + (1 + BACKWARD_OVER_FORWARD) * core)
    return batch_size * (2.0 * weights * seq_len + core)


def _attention_forward(config: GPT2Config, seq_len: int) -> float:
    """The variant's mask-exact forward attention FLOPs of one layer on one sequence of `seq_len` (0 at 0)."""
    spec = get_variant(config.attnlib_variant)
    return (spec.attention_flops or causal_attention_flops)(config, seq_len) if seq_len > 0 else 0.0


def prefill_flops(model: GPT2LMHeadModel, batch_size: int, seq_len: int) -> float:
    """Forward FLOPs of a prefill of `batch_size` prompts of `seq_len` tokens that keeps only the last position's
    logits: 2 x the weights below the head per token, 2 x the head's weights once per sequence, and the
    mask-exact attention of every layer."""
    head = model.lm_head.weight.numel()
    body = matmul_parameters(model) - head
    attention = dims_of(model.config).layers * _attention_forward(model.config, seq_len)
    return batch_size * (2.0 * body * seq_len + 2.0 * head + attention)


def decode_flops(model: GPT2LMHeadModel, batch_size: int, context_len: int, new_tokens: int) -> float:
    """Forward FLOPs of `new_tokens` decode steps after `context_len` tokens: 2 x every weight per step, and the
    attention the new tokens add under the variant's mask-exact count (its count at the final length minus its
    count at `context_len`: what the cache saves recomputing)."""
    config = model.config
    attention = dims_of(config).layers * (_attention_forward(config, context_len + new_tokens)
                                  - _attention_forward(config, context_len))
    return batch_size * (2.0 * matmul_parameters(model) * new_tokens + attention)


def counted_training_flops(model: nn.Module, input_ids: torch.Tensor) -> int:
    """FLOPs that FlopCounterMode sees in one forward + backward of `model` on `input_ids` (labels = inputs)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        model(input_ids, labels=input_ids).loss.backward()
    return counter.get_total_flops()
