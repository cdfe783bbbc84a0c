"""`sdpa`: PyTorch's fused scaled dot-product attention, letting PyTorch pick its backend.

Exact softmax attention (Vaswani et al., 2017) in O(T) memory through the fused kernels SDPA dispatches to
(FlashAttention-2, memory-efficient, cuDNN or math). Cost: 4 T^2/2 H D forward FLOPs with the causal mask.
Also home of `sdpa_causal`, the pinned-backend call that `flash` and `cudnn` use.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from ..registry import VariantSpec, register
from ._common import require_no_softcap


def is_gqa(query: torch.Tensor, key: torch.Tensor) -> bool:
    """True when keys have fewer heads than queries (`[B, H, T, D]`), as in GQA models using our cores."""
    return key.shape[1] != query.shape[1]


def sdpa_causal(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    scaling: float | None,
    dropout: float = 0.0,
    backend: SDPBackend | None = None,
) -> torch.Tensor:
    """Causal SDPA on `[B, H, T, D]` inputs, pinned to `backend` on CUDA (SDPA raises if it cannot run it,
    so a pinned call never falls back silently). Keys/values may have fewer heads (GQA models). Causality runs from
    the first key, as transformers assumes wherever it passes no mask: several queries start at key 0 (a prefill,
    whose later keys, if any, are a static cache's empty slots); one query (a decode step) sees every key, where
    `is_causal` would let it see the first key only. Returns `[B, T, H, D]`.

    Several queries over more keys read only the first as many keys (causality from the first key never reaches
    further): the same result, and a square causal call that every backend runs (the FA2 backend refuses a causal
    call whose queries and keys differ in length: "No available kernel")."""
    if 1 < query.shape[-2] < key.shape[-2]:
        key, value = key[..., : query.shape[-2], :], value[..., : query.shape[-2], :]
    pin = sdpa_kernel([backend]) if backend is not None and query.is_cuda else contextlib.nullcontext()
    with pin:
        out = F.scaled_dot_product_attention(query, key, value, dropout_p=dropout, is_causal=query.shape[-2] > 1,
                                             scale=scaling, enable_gqa=is_gqa(query, key))
    return out.transpose(1, 2)


def sdpa_attention(
    module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
    attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0, **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers attention core: `[B, H, T, D]` in, `([B, T, H, D], None)` out; honours padding masks."""
    require_no_softcap(kwargs, "sdpa")
    if attention_mask is None:
        return sdpa_causal(query, key, value, scaling, dropout), None
    out = F.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling, enable_gqa=is_gqa(query, key)
    )
    return out.transpose(1, 2), None


register(
    VariantSpec(
        name="sdpa",
        description="torch scaled_dot_product_attention, PyTorch's own backend choice",
        exact=True,
        kernel=lambda device: "sdpa (PyTorch picks flash / mem-efficient / cuDNN / math)",
        attention_function=sdpa_attention,
        attn_dropout=True,
    )
)
