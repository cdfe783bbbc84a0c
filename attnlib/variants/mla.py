"""`mla`: multi-head latent attention (DeepSeek-AI, 2024, DeepSeek-V2, arXiv:2405.04434).

K and V are up-projected from one shared latent c_kv = RMSNorm(W_dkv x) of `kv_lora_rank` dims, so a KV cache
needs only the latent (kv_lora_rank numbers per token instead of 2 n_embd). Attention itself is exact causal SDPA.

Two forms, one per model family:
- GPT-2 (`MultiHeadLatentAttention`): GPT-2 adds learned absolute position embeddings to its input, so there is no
  rotary embedding and hence no decoupled RoPE key: keys come from the latent alone; queries keep a full projection
  (as in DeepSeek-V2-Lite).
- RoPE models, the llama family (`RopeLatentAttention`), as DeepSeek-V2 defines it: RoPE cannot act on keys
  up-projected from a latent (the rotation would have to pass through W_uk, which a cache of latents then could not
  absorb), so each head's query and key have a `head_dim` part without positions, from the (query or key-value)
  latent, and a `qk_rope_head_dim` part with RoPE: the queries' from the query latent per head, the key's from the
  input, one shared by all heads (the "decoupled" key). A cache holds the latent and that key: kv_lora_rank +
  qk_rope_head_dim numbers per token and layer. Queries come from a `q_lora_rank` latent (DeepSeek-V2); the sizes
  on llama put its attention parameters within 10% of the native attention's.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GPT2Config
from transformers.pytorch_utils import Conv1D

from ..archs import dims_of
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
        if self.context_parallel is not None:  # this rank's tokens: gather every rank's latent, not keys and values
            from ..parallel import attend_gathered, gather_sequence  # (attnlib.parallel imports the variants)

            shard = self.context_parallel[1]
            latent = gather_sequence(self.latent(hidden_states), shard)
            y = attend_gathered(*self.project(hidden_states, latent=latent), shard)
        else:
            y = self.core(*self.project(hidden_states), attention_mask=attention_mask)
        y = y.transpose(1, 2).reshape(B, T, -1)
        return self.resid_dropout(self.c_proj(y)), None

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        """[B, T, H D] -> [B, H, T, D]"""
        return t.view(t.shape[0], t.shape[1], self.n_head, self.head_dim).transpose(1, 2)

    def latent(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """The normalised latent c_kv `[B, T, r]`: all a cache holds."""
        return self.kv_norm(self.kv_down(hidden_states))

    def project(self, hidden_states: torch.Tensor, rope: None = None,
                latent: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries, and keys and values up-projected from the latent (`latent` where the caller has it: a cache, or
        every rank's), `[B, H, T, D]` each; GPT-2 has no rotary positions (`rope` is None)."""
        latent = self.latent(hidden_states) if latent is None else latent
        return self._heads(self.q_proj(hidden_states)), self._heads(self.k_up(latent)), self._heads(self.v_up(latent))

    def core(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attention_mask=None) -> torch.Tensor:
        """Exact causal SDPA over the up-projected keys and values, `[B, H, T, D]`."""
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask, is_causal=attention_mask is None,
                                              dropout_p=self.attn_pdrop if self.training else 0.0)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class RopeLatentAttention(nn.Module):
    """DeepSeek-V2's MLA in a RoPE model (replaces `LlamaAttention`); see the module docstring."""

    def __init__(self, config: Any, layer_idx: int | None = None):
        from transformers import LlamaConfig
        from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

        super().__init__()
        dims = dims_of(config)
        self.config, self.layer_idx = config, layer_idx
        self.n_head, self.head_dim, self.rope_dim = dims.heads, dims.head_dim, config.qk_rope_head_dim
        self.kv_lora_rank = config.kv_lora_rank
        linear = lambda a, b: nn.Linear(a, b, bias=False)  # noqa: E731
        self.q_down = linear(dims.width, config.q_lora_rank)
        self.q_norm = nn.RMSNorm(config.q_lora_rank, eps=config.rms_norm_eps)
        self.q_up = linear(config.q_lora_rank, self.n_head * (self.head_dim + self.rope_dim))
        self.kv_down = linear(dims.width, config.kv_lora_rank + self.rope_dim)  # the latent and the shared RoPE key
        self.kv_norm = nn.RMSNorm(config.kv_lora_rank, eps=config.rms_norm_eps)
        self.kv_up = linear(config.kv_lora_rank, self.n_head * 2 * self.head_dim)  # keys without positions, values
        self.o_proj = linear(self.n_head * self.head_dim, dims.width)
        for module in (self.q_down, self.q_up, self.kv_down, self.kv_up, self.o_proj):
            nn.init.normal_(module.weight, std=config.initializer_range)  # Llama's initialisation
        # the model's RoPE (theta, llama3 scaling) over the rope part's own dimensions
        self.rotary = LlamaRotaryEmbedding(LlamaConfig(**{**config.to_dict(), "head_dim": self.rope_dim}))
        self.scaling = (self.head_dim + self.rope_dim) ** -0.5

    def forward(self, hidden_states: torch.Tensor, position_embeddings=None, attention_mask=None, **kwargs):
        if layer_cache(kwargs, kwargs.get("past_key_values")) is not None:
            raise NotImplementedError("mla: decoding from transformers' cache is not implemented (its cache would "
                                      "hold the latent and the RoPE key); generate with use_cache=False")
        B, T, _ = hidden_states.shape
        y = self.core(*self.project(hidden_states), attention_mask=attention_mask)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, self.n_head * self.head_dim)), None

    def rotate(self, t: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """`t` `[..., T, R]` rotated to `positions` `[T]` by the model's RoPE over the module's R dimensions."""
        cos, sin = self.rotary(t, positions.unsqueeze(0))  # [1, T, R]
        return t * cos + rotate_half(t) * sin

    def latent(self, hidden_states: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What a cache holds per position: the normalised latent `[B, T, r]` and the shared RoPE key `[B, T, R]`,
        rotated to `positions` `[T]`."""
        latent, k_rope = self.kv_down(hidden_states).split([self.kv_lora_rank, self.rope_dim], dim=-1)
        return self.kv_norm(latent), self.rotate(k_rope, positions)

    def project(self, hidden_states: torch.Tensor, rope: Any = None,
                latent: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, ...]:
        """Queries and keys `[B, H, T, D + R]` (the part without positions, then the rotated part: the key's one
        shared RoPE key broadcast to every head) and values `[B, H, T, D]`, for positions 0..T-1; from `latent`
        (`self.latent`'s pair) where the caller has it. The rotation is the module's own, over its R dimensions
        (`rope`, the family's tables over head_dim, does not apply)."""
        B, T, _ = hidden_states.shape
        H, D, R = self.n_head, self.head_dim, self.rope_dim
        positions = torch.arange(T, device=hidden_states.device)
        latent, k_rope = self.latent(hidden_states, positions) if latent is None else latent
        q = self.q_up(self.q_norm(self.q_down(hidden_states))).view(B, T, H, D + R).transpose(1, 2)
        q_nope, q_rope = q.split([D, R], dim=-1)
        k_nope, v = self.kv_up(latent).view(B, T, H, 2 * D).transpose(1, 2).split([D, D], dim=-1)
        k_rope = k_rope.unsqueeze(1).expand(B, H, T, R)
        return torch.cat((q_nope, self.rotate(q_rope, positions)), -1), torch.cat((k_nope, k_rope), -1), v

    def core(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attention_mask=None) -> torch.Tensor:
        """Exact causal SDPA at the scale of the D + R query-key dimensions, `[B, H, T, D]`."""
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask,
                                              is_causal=attention_mask is None and q.shape[2] > 1, scale=self.scaling)


def attention_flops(config: Any, seq_len: int) -> float:
    """Forward FLOPs of one layer's core on one sequence: 2 x causal area x heads x (query-key dims + value dims);
    the key dims carry the RoPE part where the form has one (4 x area x heads x head_dim without it)."""
    dims = dims_of(config)
    qk = dims.head_dim + getattr(config, "qk_rope_head_dim", 0)
    return 2.0 * seq_len * (seq_len + 1) / 2 * dims.heads * (qk + dims.head_dim)


def validate(config: Any, seq_len: int) -> None:
    names = ("kv_lora_rank", "q_lora_rank", "qk_rope_head_dim") if hasattr(config, "q_lora_rank") else ("kv_lora_rank",)
    for name in names:
        require_positive(config, name)
    if getattr(config, "qk_rope_head_dim", 0) % 2:
        raise ValueError(f"qk_rope_head_dim: RoPE rotates pairs of dimensions, got {config.qk_rope_head_dim}")


register(
    VariantSpec(
        name="mla",
        description="multi-head latent attention: K/V up-projected from a kv_lora_rank latent (DeepSeek-V2)",
        exact=True,  # exact softmax attention over low-rank K/V
        decode_cache="latent",
        kernel=lambda device: "sdpa (PyTorch picks the backend)",
        params={"kv_lora_rank": 128},
        # 1B: 11.08M attention parameters a layer, 1.06x the native 10.49M; a cache of 288 numbers a token and layer
        arch_params={"llama": {"kv_lora_rank": 256, "q_lora_rank": 1024, "qk_rope_head_dim": 32}},
        attention_module=MultiHeadLatentAttention,
        arch_modules={"llama": RopeLatentAttention},
        attention_flops=attention_flops,
        validate=validate,
        attn_dropout=True,
    )
)
