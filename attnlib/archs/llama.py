"""The Llama family: a decoder of exactly Llama-3.2-1B's shape, transformers' own `LlamaForCausalLM`.

16 layers, width 2048, 32 query heads and 8 key/value heads of 64 dimensions (grouped-query attention is the
model's own), SwiGLU MLP of 8192, RMSNorm, RoPE with theta 500,000 and llama3 scaling, a vocabulary of 128,256 tokens
and tied embeddings: 1,235,814,400 parameters. A variant plugs in as a transformers attention function, applied after
the model's own projections and RoPE; its parameters are attributes of the config, as on GPT-2, with this family's
values (`VariantSpec.arch_params["llama"]`) over the variant's defaults. The grouped-query axis is the model's own
`num_key_value_heads`: 8 native (the exact cores' rows), 32 and 1 the `mha` and `mqa` variants.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from ..registry import VariantSpec
from .base import Dims, layer_runner

NAME = "llama"
LLAMA_3_2_1B: dict[str, Any] = dict(
    vocab_size=128_256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
    num_key_value_heads=8, head_dim=64, hidden_act="silu", max_position_embeddings=131_072, rms_norm_eps=1e-5,
    rope_parameters={"rope_type": "llama3", "rope_theta": 500_000.0, "factor": 32.0, "low_freq_factor": 1.0,
                     "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
    tie_word_embeddings=True, attention_bias=False, mlp_bias=False, attention_dropout=0.0, initializer_range=0.02,
    bos_token_id=128_000, eos_token_id=128_001, use_cache=False,
)
_LLAMA_FIELDS = set(LlamaConfig().to_dict())


def family_config(spec: VariantSpec, seq_len: int | None = None, **overrides: Any) -> LlamaConfig:
    """The LlamaConfig of `spec` on this family: Llama-3.2-1B's shape, `overrides` (LlamaConfig fields and the
    variant's parameters) on top; `ValueError` naming a bad parameter."""
    own = {**spec.params, **spec.arch_params.get(NAME, {})}
    unknown = set(overrides) - _LLAMA_FIELDS - set(own)
    if unknown:
        raise ValueError(f"{sorted(unknown)[0]}: neither a LlamaConfig field nor a parameter of variant "
                         f"{spec.name!r} (its parameters: {', '.join(own) or 'none'})")
    params = {**own, **{k: v for k, v in overrides.items() if k in own}}
    fields = {k: v for k, v in {**overrides, **params}.items() if k in _LLAMA_FIELDS}  # a variant's own fields too
    config = LlamaConfig(**{**LLAMA_3_2_1B, **fields})  # num_key_value_heads=None: one per query head
    for name, value in params.items():
        if name not in _LLAMA_FIELDS:
            setattr(config, name, value)
    config.attnlib_variant, config.attnlib_arch = spec.name, NAME
    config._attn_implementation = spec.attn_implementation
    seq_len = config.max_position_embeddings if seq_len is None else seq_len
    for name in ("num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads", "vocab_size"):
        if not isinstance(getattr(config, name), int) or getattr(config, name) < 1:
            raise ValueError(f"{name}: must be an integer >= 1, got {getattr(config, name)!r}")
    if config.num_attention_heads % config.num_key_value_heads:
        raise ValueError(f"num_key_value_heads: num_attention_heads ({config.num_attention_heads}) must be divisible "
                         f"by num_key_value_heads ({config.num_key_value_heads})")
    if not isinstance(seq_len, int) or not 1 <= seq_len <= config.max_position_embeddings:
        raise ValueError(f"seq_len: an integer from 1 to max_position_embeddings ({config.max_position_embeddings}), "
                         f"got {seq_len!r}")
    if spec.validate is not None:
        spec.validate(config, seq_len)
    return config


def build_family(spec: VariantSpec, seq_len: int | None = None, **overrides: Any) -> LlamaForCausalLM:
    """A freshly initialised Llama-family model with `spec`'s attention: its attention function inside Llama's own
    attention, or its module for this family (`VariantSpec.arch_modules`) in place of it; see `family_config`."""
    module = spec.arch_modules.get(NAME)
    if spec.attention_function is None and module is None:
        raise NotImplementedError(f"{spec.name} on {NAME}: it replaces GPT-2's attention module, and has no form "
                                  "for this family")
    config = family_config(spec, seq_len, **overrides)
    model = LlamaForCausalLM(config)
    if module is not None:
        for index, layer in enumerate(model.model.layers):
            layer.self_attn = module(config, layer_idx=index)
    return model


def dims(config: LlamaConfig) -> Dims:
    """Llama's sizes: `head_dim` is its own (64 at 1B), query and key/value head counts its own too."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return Dims(layers=config.num_hidden_layers, width=config.hidden_size, heads=config.num_attention_heads,
                kv_heads=config.num_key_value_heads, head_dim=head_dim, vocab=config.vocab_size)


def causal_hidden_states(model: LlamaForCausalLM, input_ids: torch.Tensor, shared_blocks: bool = False,
                         checkpoint: bool = False) -> torch.Tensor:
    """Final hidden states `[B, T, C]` of `input_ids` `[B, T]`: Llama's own modules in LlamaModel's order
    (embedding, RoPE tables, decoder layers, final RMSNorm) for plain causal self-attention, with no attention mask
    built (`attnlib.model.causal_hidden_states` says why). `shared_blocks`: each layer one nested compile region;
    `checkpoint`: each layer recomputed in backward."""
    inner = model.model
    hidden = inner.embed_tokens(input_ids)
    positions = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
    rope = inner.rotary_emb(hidden, positions)
    run_layer = layer_runner(_shared_layer if shared_blocks else _layer, checkpoint)
    for layer in inner.layers:
        hidden = run_layer(layer, hidden, rope)
    return inner.norm(hidden)


def _layer(layer: nn.Module, hidden: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    out = layer(hidden, attention_mask=None, position_embeddings=rope)
    return out[0] if isinstance(out, tuple) else out


_shared_layer = torch.compiler.nested_compile_region(_layer)


def blocks(model: LlamaForCausalLM) -> list[nn.Module]:
    return list(model.model.layers)


def attention_modules(model: LlamaForCausalLM) -> list[nn.Module]:
    return [layer.self_attn for layer in model.model.layers]


def length_overrides(seq_len: int) -> dict[str, Any]:
    """Nothing to size: RoPE has no table (`max_position_embeddings` already covers 128K)."""
    return {}


def layer_overrides(layers: int) -> dict[str, Any]:
    return {"num_hidden_layers": layers}


def shape_overrides(heads: int, width: int) -> dict[str, Any]:
    """The config fields of `heads` query heads over a residual width `width`: head_dim = width / heads (Llama
    sets its head_dim apart from the width; here they move together, as GPT-2's do)."""
    return {"num_attention_heads": heads, "hidden_size": width, "head_dim": width // heads}


class Decoding:
    """What `attnlib.decode` and `attnlib.components` need of a Llama: its layers as (input RMSNorm, attention,
    post-attention RMSNorm, SwiGLU MLP), the token embedding, the RoPE tables of given positions (the model's own
    rotary embedding), the final norm and the head, and each attention's projections with RoPE applied, as
    LlamaAttention applies it."""

    def __init__(self, model: LlamaForCausalLM):
        inner = self.inner = model.model
        self.model, self.max_len, self.weight = model, model.config.max_position_embeddings, inner.embed_tokens.weight
        self.layers = [(layer.input_layernorm, layer.self_attn, layer.post_attention_layernorm, layer.mlp)
                       for layer in inner.layers]
        self.final_norm, self.lm_head = inner.norm, model.lm_head
        self.unread = ()

    def embed(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return self.inner.embed_tokens(ids)

    def rope(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin `[1, T, head_dim]` of `positions` `[T]`, in the weights' dtype (LlamaModel's, from its
        embeddings)."""
        return self.inner.rotary_emb(self.weight, positions.unsqueeze(0))

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.final_norm(hidden))

    def qkv(self, attn: nn.Module, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """Queries `[B, H, T, D]` and keys, values `[B, n_kv, T, D]`, queries and keys rotated to their positions."""
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

        B, T, _ = x.shape
        q, k, v = (proj(x).view(B, T, -1, attn.head_dim).transpose(1, 2)
                   for proj in (attn.q_proj, attn.k_proj, attn.v_proj))
        q, k = apply_rotary_pos_emb(q, k, *rope)
        return q, k, v

    def output(self, attn: nn.Module, y: torch.Tensor) -> torch.Tensor:
        """`[B, H, T, D]` attention output -> the output projection `[B, T, C]`."""
        return self.output_projection(attn)(y.transpose(1, 2).flatten(2))

    def output_projection(self, attn: nn.Module) -> nn.Module:
        return attn.o_proj

    def kv_heads(self, attn: nn.Module) -> int:
        return attn.config.num_key_value_heads


class _AttentionAlone(nn.Module):
    """Layer 0's attention on hidden states `[B, T, C]` with no mask and the fp32 RoPE tables of positions 0..T-1,
    computed at each call as LlamaModel computes them once per forward pass for all its layers."""

    def __init__(self, model: LlamaForCausalLM):
        super().__init__()
        self.attention, self.rotary = model.model.layers[0].self_attn, model.model.rotary_emb

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)
        rope = self.rotary(torch.empty(0, device=hidden.device), positions)  # fp32, as from fp32 embeddings
        return self.attention(hidden, position_embeddings=rope, attention_mask=None)[0]


attention_alone = _AttentionAlone
