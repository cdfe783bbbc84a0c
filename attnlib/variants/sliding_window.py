"""`sliding_window`: causal local attention over the last `window` tokens (Longformer / Mistral style).

Query i sees keys i - window + 1 ... i. On CUDA, FlexAttention with a block mask skips every block outside the
band, so cost grows as T x window, not T^2: forward FLOPs 4 H D x (band area), band area = sum_i min(i + 1, window).
On CPU the same mask is applied densely (see `flex`). `window >= T` equals full causal attention.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn
from transformers import GPT2Config

from ..archs import dims_of
from ..registry import VariantSpec, register
from ._common import require_no_softcap, require_plain_causal, require_positive
from .flex import MaskMod, causal_mask_mod, flex_masked
from .sdpa import sdpa_causal


@functools.lru_cache(maxsize=32)
def sliding_window_mask_mod(window: int, offset: int = 0) -> MaskMod:
    """Query i (at position i + `offset` among the keys: keys from before the queries, e.g. a halo) sees the
    keys i + offset - window + 1 ... i + offset."""
    def mask_mod(b: torch.Tensor, h: torch.Tensor, q_idx: torch.Tensor, kv_idx: torch.Tensor) -> torch.Tensor:
        return (q_idx + offset >= kv_idx) & (q_idx + offset - kv_idx < window)

    return mask_mod


def layer_window(module: nn.Module, kwargs: dict) -> int | None:
    """The window of this layer: the `sliding_window` its model passes (None: a full-attention layer of a model
    with mixed layer types), else attnlib's GPT-2 `config.window`, else the model config's `sliding_window`;
    `ValueError` where none is set (a model without sliding-window layers)."""
    if "sliding_window" in kwargs:
        return kwargs["sliding_window"]
    config = module.config
    window = getattr(config, "window", None) or getattr(config, "sliding_window", None)
    if window is None:
        raise ValueError(f"sliding_window: {type(config).__name__} sets no window (neither `window` nor "
                         "`sliding_window`); set config.sliding_window, or choose a full-attention core")
    return window


def sliding_window_attention(
    module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
    attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0, **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers attention core. Causality runs from the first key (`sdpa_causal` says why); one query over a
    cache (a decode step) sees the window's last keys: SDPA over them, exactly."""
    require_plain_causal(attention_mask, "sliding_window")
    require_no_softcap(kwargs, "sliding_window")
    window = layer_window(module, kwargs)
    if query.shape[-2] == 1:
        keep = slice(None) if window is None else slice(-int(window), None)
        return sdpa_causal(query, key[..., keep, :], value[..., keep, :], scaling), None
    mask_mod = causal_mask_mod if window is None else sliding_window_mask_mod(int(window))
    return flex_masked(query, key, value, scaling, mask_mod), None


def attention_flops(config: GPT2Config, seq_len: int) -> float:
    """Forward FLOPs of one layer on one sequence: 4 x band area x query heads x head_dim, band area =
    sum_i min(i + 1, window)."""
    w = min(config.window, seq_len)
    band_area = w * (w + 1) / 2 + (seq_len - w) * w
    return 4.0 * band_area * dims_of(config).attention_width


def validate(config: GPT2Config, seq_len: int) -> None:
    require_positive(config, "window")


register(
    VariantSpec(
        name="sliding_window",
        description="causal local attention over the last `window` tokens, block-sparse FlexAttention on CUDA",
        exact=False,
        decode_cache="ring",
        kernel=lambda device: "flex_attention block-sparse band (compiled Triton)" if device == "cuda" else "sdpa + dense band mask",
        params={"window": 128},
        arch_params={"llama": {"window": 1024}},  # as Gemma 3's local layers
        attention_function=sliding_window_attention,
        attention_flops=attention_flops,
        validate=validate,
    )
)
