"""`flex`: PyTorch FlexAttention (Dong et al., 2024, arXiv:2412.05496) with a causal BlockMask.

FlexAttention compiles a `mask_mod` into a fused Triton kernel that skips fully masked blocks, so causal
attention costs about half of dense. Compiled on CUDA; FlexAttention has no CPU backward, so on CPU the same
`mask_mod` is materialised as a dense boolean mask for SDPA. Also home of `flex_masked`, which
`sliding_window` uses with its own `mask_mod`.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention.flex_attention import BlockMask, create_block_mask, create_mask, flex_attention

from ..registry import VariantSpec, register
from ._common import require_plain_full_causal, strict_recompiles
from .sdpa import is_gqa, sdpa_causal

MaskMod = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def causal_mask_mod(b: torch.Tensor, h: torch.Tensor, q_idx: torch.Tensor, kv_idx: torch.Tensor) -> torch.Tensor:
    """Query i sees keys 0 ... i."""
    return q_idx >= kv_idx


@functools.cache
def _compiled_flex_attention() -> Callable:
    return torch.compile(flex_attention, dynamic=False)


strict_recompiles()  # one compiled flex_attention per shape and grad mode; never the eager, T x T fall-back


@functools.lru_cache(maxsize=32)
def block_mask(mask_mod: MaskMod, q_len: int, kv_len: int, device: str) -> BlockMask:
    """The BlockMask of `mask_mod` for `q_len` queries over `kv_len` keys, built once per shape."""
    return create_block_mask(mask_mod, B=None, H=None, Q_LEN=q_len, KV_LEN=kv_len, device=device)


def flex_masked(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scaling: float | None,
                mask_mod: MaskMod) -> torch.Tensor:
    """Attention under `mask_mod` on `[B, H, T, D]` queries and `[B, H_kv, S, D]` keys and values (S = T for
    self-attention); returns `[B, T, H, D]`.

    CUDA: compiled FlexAttention with a block-sparse mask. CPU: SDPA with the dense mask of the same `mask_mod`.
    """
    q_len, kv_len, gqa = query.shape[-2], key.shape[-2], is_gqa(query, key)
    if query.is_cuda:
        mask = block_mask(mask_mod, q_len, kv_len, str(query.device))
        out = _compiled_flex_attention()(query, key, value, block_mask=mask, scale=scaling, enable_gqa=gqa)
    else:
        dense = create_mask(mask_mod, None, None, q_len, kv_len, device=query.device)
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=dense, scale=scaling, enable_gqa=gqa)
    return out.transpose(1, 2)


def flex_causal_attention(
    module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
    attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0, **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers attention core: `[B, H, T, D]` in, `([B, T, H, D], None)` out. Causality runs from the first
    key (`sdpa_causal` says why); one query over a cache (a decode step) sees every key, which SDPA computes
    exactly, without compiling a FlexAttention kernel per cache length."""
    require_plain_full_causal(attention_mask, kwargs, "flex")
    if query.shape[-2] == 1:
        return sdpa_causal(query, key, value, scaling), None
    return flex_masked(query, key, value, scaling, causal_mask_mod), None


register(
    VariantSpec(
        name="flex",
        description="FlexAttention with a causal BlockMask (compiled on CUDA)",
        exact=True,
        kernel=lambda device: "flex_attention (compiled Triton)" if device == "cuda" else "sdpa + dense mask of the mask_mod (CPU: flex has no backward)",
        attention_function=flex_causal_attention,
    )
)
