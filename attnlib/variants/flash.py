"""`flash`: FlashAttention-2 (Dao, 2023, arXiv:2307.08691), exact attention tiled in on-chip memory.

Uses the `flash_attn` package when importable (its `flash_attn_func` takes `[B, T, H, D]`: the prior study passed
`[B, H, T, D]` and attended across heads); otherwise SDPA pinned to its FlashAttention-2 backend. On CPU there is
no FlashAttention kernel: plain SDPA runs, and `kernel("cpu")` says so.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.attention import SDPBackend

from ..registry import VariantSpec, register
from ._common import require_plain_full_causal
from .sdpa import sdpa_causal

try:
    from flash_attn import flash_attn_func
except ImportError:  # optional extra: `pip install attnlib[flash]`
    flash_attn_func = None


def kernel(device: str) -> str:
    if device != "cuda":
        return "sdpa (CPU: no FlashAttention kernel)"
    return "flash_attn.flash_attn_func (FA2)" if flash_attn_func is not None else "sdpa FLASH_ATTENTION (FA2)"


def flash_attention(
    module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
    attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0, **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers attention core: `[B, H, T, D]` in, `([B, T, H, D], None)` out."""
    require_plain_full_causal(attention_mask, kwargs, "flash")
    if query.is_cuda and flash_attn_func is not None:
        q, k, v = (t.transpose(1, 2) for t in (query, key, value))  # [B, T, H, D], flash_attn's layout
        return flash_attn_func(q, k, v, dropout_p=dropout, softmax_scale=scaling, causal=True), None
    return sdpa_causal(query, key, value, scaling, dropout, backend=SDPBackend.FLASH_ATTENTION), None


register(
    VariantSpec(
        name="flash",
        description="FlashAttention-2: flash_attn package, else SDPA's FA2 backend",
        exact=True,
        kernel=kernel,
        attention_function=flash_attention,
        hf_name="attnlib_fa2",
        attn_dropout=True,
    )
)
