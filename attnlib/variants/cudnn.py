"""`cudnn`: SDPA pinned to cuDNN's fused flash attention (cuDNN 9 on Hopper), exact.

On the H100 the fastest exact kernel at long sequences in our readings. On CPU plain SDPA runs.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.attention import SDPBackend

from ..registry import VariantSpec, register
from ._common import require_plain_full_causal
from .sdpa import sdpa_causal


def cudnn_attention(
    module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
    attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0, **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers attention core: `[B, H, T, D]` in, `([B, T, H, D], None)` out."""
    require_plain_full_causal(attention_mask, kwargs, "cudnn")
    return sdpa_causal(query, key, value, scaling, dropout, backend=SDPBackend.CUDNN_ATTENTION), None


register(
    VariantSpec(
        name="cudnn",
        description="SDPA pinned to cuDNN fused attention",
        exact=True,
        kernel=lambda device: "sdpa CUDNN_ATTENTION" if device == "cuda" else "sdpa (CPU: no cuDNN kernel)",
        attention_function=cudnn_attention,
        attn_dropout=True,
    )
)
