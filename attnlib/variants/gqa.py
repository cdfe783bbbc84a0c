"""`gqa`: grouped-query attention (Ainslie et al., 2023, arXiv:2305.13245).

`n_kv_head` key/value heads, each shared by n_head / n_kv_head query heads: the K/V projections and the KV cache
shrink by that factor; attention FLOPs do not change. `n_kv_head = 1` is multi-query attention (Shazeer, 2019);
`n_kv_head = n_head` is GPT-2's attention with the same weights layout (`c_attn` [n_embd, 3 n_embd]).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GPT2Config
from transformers.pytorch_utils import Conv1D

from ..registry import VariantSpec, register
from ._common import gpt2_init_, gpt2_output_projection, layer_cache, require_positive


class GroupedQueryAttention(nn.Module):
    def __init__(self, config: GPT2Config, layer_idx: int | None = None):
        super().__init__()
        self.config, self.layer_idx = config, layer_idx
        self.n_head, self.n_kv_head = config.n_head, config.n_kv_head
        self.head_dim = config.n_embd // config.n_head
        # q, k, v fused like GPT-2's c_attn, K and V with n_kv_head heads each
        self.c_attn = Conv1D((self.n_head + 2 * self.n_kv_head) * self.head_dim, config.n_embd)
        gpt2_init_(self.c_attn, config)
        self.c_proj, self.resid_dropout = gpt2_output_projection(config)
        self.attn_pdrop = config.attn_pdrop
        self.context_parallel = None  # (core, shard): set by attnlib.parallel.install_context_parallel

    def qkv(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries `[B, n_head, T, D]`, keys and values `[B, n_kv_head, T, D]` (also what decoding projects)."""
        B, T, _ = hidden_states.shape
        qkv = self.c_attn(hidden_states).view(B, T, self.n_head + 2 * self.n_kv_head, self.head_dim)
        return qkv.transpose(1, 2).split([self.n_head, self.n_kv_head, self.n_kv_head], dim=1)

    def forward(self, hidden_states: torch.Tensor, past_key_values=None, attention_mask=None, **kwargs):
        B, T, _ = hidden_states.shape
        q, k, v = self.qkv(hidden_states)  # [B, h, T, D]
        cache = layer_cache(kwargs, past_key_values)
        if cache is not None:  # the cache holds n_kv_head heads: GQA's memory saving
            k, v = cache.update(k, v, self.layer_idx)
        if self.context_parallel is not None:  # this rank's tokens of a sequence split across ranks
            core, shard = self.context_parallel
            y = core(q, k, v, shard)
        else:
            # without a mask causality runs from the first key, and one query over a cache sees every key
            # (`attnlib.variants.sdpa.sdpa_causal` says why)
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=attention_mask, is_causal=attention_mask is None and T > 1,
                dropout_p=self.attn_pdrop if self.training else 0.0, enable_gqa=True,
            )  # [B, H, T, D]
        y = y.transpose(1, 2).reshape(B, T, -1)
        return self.resid_dropout(self.c_proj(y)), None


def validate(config: GPT2Config, seq_len: int) -> None:
    require_positive(config, "n_kv_head")
    if config.n_head % config.n_kv_head:
        raise ValueError(f"n_kv_head: n_head ({config.n_head}) must be divisible by n_kv_head ({config.n_kv_head})")


register(
    VariantSpec(
        name="gqa",
        description="grouped-query attention: n_kv_head K/V heads shared by groups of query heads (1 = MQA)",
        exact=True,  # exact softmax attention of a different (smaller) parameterisation
        kernel=lambda device: "sdpa enable_gqa (PyTorch picks the backend)",
        params={"n_kv_head": 4},
        attention_module=GroupedQueryAttention,
        unsupported={"llama": "grouped-query attention is the llama family's own (8 key/value heads: its sdpa row); "
                              "the variants mha (32) and mqa (1) are the axis around it"},
        validate=validate,
        attn_dropout=True,
    )
)
