"""`baseline`: materialised causal attention, GPT-2's eager maths: the reference every variant is checked against.

Computes the full [B, H, T, T] score matrix, masks the future, softmax, then multiplies by V, as transformers'
GPT-2 `eager` path does. Cost: 4 T^2 H D forward FLOPs actually executed (the masked half is computed too),
O(T^2) memory. Unlike transformers' `eager` core it applies the causal mask itself when none is given, so a
whole-model `torch.compile` never needs transformers' mask builder (see `attnlib.model.causal_hidden_states`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import VariantSpec, register
from ._common import repeat_kv


def eager_causal_attention(
    module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
    attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0, **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers attention core: `[B, H, Tq, D]` queries, `[B, H, Tk, D]` keys/values in, `([B, Tq, H, D],
    None)` out. `attention_mask`: None (plain causal from the first key, and one query sees every key, as
    transformers assumes without a mask: `attnlib.variants.sdpa.sdpa_causal`) or a boolean `[B, 1, Tq, Tk]` mask
    (True = may attend), as transformers' `sdpa_mask` builds for padding and caches."""
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    key, value = repeat_kv(query, key, value)  # a grouped-query model's key/value heads, one per query head
    scores = (query @ key.transpose(-1, -2)) * scaling  # [B, H, Tq, Tk]
    softcap = kwargs.get("softcap")
    if softcap is not None:  # Gemma 2's logit soft-capping, as transformers' eager core applies it
        scores = torch.tanh(scores / softcap) * softcap
    if attention_mask is None:
        q_len, k_len = query.shape[-2], key.shape[-2]
        visible = torch.ones(q_len, k_len, dtype=torch.bool, device=query.device)
        attention_mask = visible if q_len == 1 else visible.tril()
        window = kwargs.get("sliding_window")
        if window is not None:  # a layer that attends within a window: the last `window` keys of each query
            position = k_len - 1 if q_len == 1 else 0  # of the first query among the keys
            attention_mask = attention_mask & ~visible.tril(position - window)
    scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
    probs = F.softmax(scores, dim=-1).to(value.dtype)  # softmax runs in fp32 under autocast, as in GPT-2
    probs = F.dropout(probs, p=dropout, training=module.training)
    return (probs @ value).transpose(1, 2), None


register(
    VariantSpec(
        name="baseline",
        description="materialised causal attention (matmul, causal mask, softmax, matmul): the reference",
        exact=True,
        kernel=lambda device: "eager matmul + softmax (materialised scores)",
        attention_function=eager_causal_attention,
        attn_dropout=True,
    )
)
