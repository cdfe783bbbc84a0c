"""`mla`: multi-head latent attention (DeepSeek-AI, 2024, DeepSeek-V2, arXiv:2405.04434).

K and V are up-projected from one shared latent c_kv = RMSNorm(W_dkv x) of `kv_lora_rank` dims, so a KV cache
needs only the latent (kv_lora_rank numbers per token instead of 2 n_embd). Queries keep a full projection (as in
DeepSeek-V2-Lite). GPT-2 adds learned absolute position embeddings to its input, so there is no rotary embedding
and hence no decoupled RoPE key: keys come from the latent alone. Attention itself is exact causal SDPA.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GPT2Config
from transformers.pytorch_utils import Conv1D

from ..registry import VariantSpec, register
from ._common import gpt2_init_, gpt2_output_projection, layer_cache, require_positive


class MultiHeadLatentAttention(nn.Module):
    def __init__(self, config: GPT2Config, layer_idx: int | None = None):
        super().__init__()
        self.config, self.layer_idx = config, layer_idx
        self.n_head, self.head_dim = config.n_head, config.n_embd // config.n_head
        self.q_proj = Conv1D(config.n_embd, config.n_embd)
        self.kv_down = Conv1D(config.kv_lora_rank, config.n_embd)  # W_dkv: x -> latent c_kv
        self.kv_norm = nn.RMSNorm(config.kv_lora_rank, eps=config.layer_norm_epsilon)
        self.k_up = Conv1D(config.n_embd, config.kv_lora_rank)  # W_uk
        self.v_up = Conv1D(config.n_embd, config.kv_lora_rank)  # W_uv
        for proj in (self.q_proj, self.kv_down, self.k_up, self.v_up):
            gpt2_init_(proj, config)
        self.c_proj, self.resid_dropout = gpt2_output_projection(config)
        self.attn_pdrop = config.attn_pdrop
        self.context_parallel = None  # (None, shard): set by attnlib.parallel.install_context_parallel

    def forward(self, hidden_states: torch.Tensor, past_key_values=None, attention_mask=None, **kwargs):
        if layer_cache(kwargs, past_key_values) is not None:
            raise NotImplementedError("mla: a latent KV cache is not implemented; build with use_cache=False")
        B, T, _ = hidden_states.shape
        latent = self.kv_norm(self.kv_down(hidden_states))  # [B, T, r]: all a cache would hold
        heads = lambda t: t.view(B, t.shape[1], self.n_head, self.head_dim).transpose(1, 2)  # noqa: E731  [B, H, T, D]
        q = heads(self.q_proj(hidden_states))
        if self.context_parallel is not None:  # this rank's tokens: gather every rank's latent, not keys and values
            from ..parallel import attend_gathered, gather_sequence  # (attnlib.parallel imports the variants)

            shard = self.context_parallel[1]
            latent = gather_sequence(latent, shard)
            y = attend_gathered(q, heads(self.k_up(latent)), heads(self.v_up(latent)), shard)
        else:
            y = F.scaled_dot_product_attention(
                q, heads(self.k_up(latent)), heads(self.v_up(latent)), attn_mask=attention_mask,
                is_causal=attention_mask is None, dropout_p=self.attn_pdrop if self.training else 0.0,
            )
        y = y.transpose(1, 2).reshape(B, T, -1)
        return self.resid_dropout(self.c_proj(y)), None


def validate(config: GPT2Config, seq_len: int) -> None:
    require_positive(config, "kv_lora_rank")


register(
    VariantSpec(
        name="mla",
        description="multi-head latent attention: K/V up-projected from a kv_lora_rank latent (DeepSeek-V2)",
        exact=True,  # exact softmax attention over low-rank K/V
        kernel=lambda device: "sdpa (PyTorch picks the backend)",
        params={"kv_lora_rank": 128},
        unsupported={"llama": "DeepSeek-V2's form for RoPE models (queries and keys with a decoupled RoPE part beside "
                              "the latent) is not built for the llama family"},
        attention_module=MultiHeadLatentAttention,
        validate=validate,
        attn_dropout=True,
    )
)
