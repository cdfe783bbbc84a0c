"""`build_model`: a model of one family (`attnlib.archs`) with one attention variant installed; the GPT-2 family: the
real `transformers.GPT2LMHeadModel`.

Everything around the attention core is GPT-2's own block (layer norms, MLP, `c_proj`, dropouts, tied
embeddings). Variants with an `attention_function` run inside GPT-2's `GPT2Attention` through transformers'
attention interface; variants with an `attention_module` (own projections) replace `block.attn`.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import GPT2Config, GPT2LMHeadModel, PretrainedConfig, PreTrainedModel

from .archs import Dims, arch_of, get_arch
from .archs.base import layer_runner
from .registry import VariantSpec, get_variant

GPT2_SMALL: dict[str, Any] = dict(n_layer=12, n_embd=768, n_head=12, n_positions=1024, vocab_size=50257)
# No attention-probability dropout by default: FlexAttention, linear and LSH cores have none, and a fair
# comparison gives every variant the same regularisation. Residual and embedding dropout stay GPT-2's 0.1.
DEFAULTS: dict[str, Any] = {**GPT2_SMALL, "attn_pdrop": 0.0, "use_cache": False}
_GPT2_FIELDS = set(GPT2Config().to_dict()) | set(GPT2Config.attribute_map)


def build_config(variant: str, seq_len: int | None = None, arch: str = "gpt2", **overrides: Any) -> PretrainedConfig:
    """The resolved, validated config of family `arch` with `variant`'s attention (what `build_model` builds);
    `ValueError` naming a bad parameter, `NotImplementedError` for a variant without a form on the family."""
    spec = get_variant(variant)
    if arch in spec.unsupported:
        raise NotImplementedError(f"{variant} on {arch}: {spec.unsupported[arch]}")
    return get_arch(arch).config(spec, seq_len, **overrides)


def family_config(spec: VariantSpec, seq_len: int | None = None, **overrides: Any) -> GPT2Config:
    """The GPT-2 family's config (`attnlib.archs`) for `spec`; raises `ValueError` naming the bad parameter.

    Args:
        spec: the variant.
        seq_len: the sequence length the model will be trained on (default `n_positions`); checked against
            `n_positions` and the variant's tiling (chunk sizes).
        **overrides: GPT2Config fields (`n_layer`, `n_embd`, `n_head`, `n_positions`, `vocab_size`, ...) and the
            variant's own parameters (see `VARIANTS[variant].params`).
    """
    variant = spec.name
    unknown = set(overrides) - _GPT2_FIELDS - set(spec.params)
    if unknown:
        raise ValueError(
            f"{sorted(unknown)[0]}: neither a GPT2Config field nor a parameter of variant {variant!r} "
            f"(its parameters: {', '.join(spec.params) or 'none'})"
        )
    config = GPT2Config(**{**DEFAULTS, **spec.params, **overrides})
    config.attnlib_variant, config.attnlib_arch = variant, "gpt2"
    config._attn_implementation = spec.attn_implementation
    _validate(spec, config, config.n_positions if seq_len is None else seq_len)
    return config


def _validate(spec: VariantSpec, config: GPT2Config, seq_len: int) -> None:
    for name in ("n_layer", "n_embd", "n_head", "n_positions", "vocab_size"):
        if not isinstance(getattr(config, name), int) or getattr(config, name) < 1:
            raise ValueError(f"{name}: must be an integer >= 1, got {getattr(config, name)!r}")
    if config.n_embd % config.n_head:
        raise ValueError(f"n_head: n_embd ({config.n_embd}) must be divisible by n_head ({config.n_head})")
    if not isinstance(seq_len, int) or seq_len < 1:
        raise ValueError(f"seq_len: must be an integer >= 1, got {seq_len!r}")
    if seq_len > config.n_positions:
        raise ValueError(f"seq_len: {seq_len} is longer than n_positions ({config.n_positions})")
    if config.attn_pdrop and not spec.attn_dropout:
        raise ValueError(f"attn_pdrop: variant {spec.name!r} has no attention dropout; set attn_pdrop=0")
    if spec.validate is not None:
        spec.validate(config, seq_len)


def build_model(variant: str, seq_len: int | None = None, arch: str = "gpt2", **overrides: Any) -> PreTrainedModel:
    """A freshly initialised model of family `arch` (`attnlib.archs`: GPT-2 small by default, or "llama") with
    `variant`'s attention; `overrides` are the family's config fields and the variant's parameters (for GPT-2 see
    `build_config`). All argument checks happen here, before any tensor is allocated on a device; a variant with
    no form for the family raises `NotImplementedError` saying why."""
    build_config(variant, seq_len, arch, **overrides)  # every check, before a tensor exists
    return get_arch(arch).build(get_variant(variant), seq_len, **overrides)


def build_family(spec: VariantSpec, seq_len: int | None = None, **overrides: Any) -> GPT2LMHeadModel:
    """The GPT-2 family's builder (`attnlib.archs`): GPT-2 with `spec`'s attention; see `build_config`."""
    config = family_config(spec, seq_len, **overrides)
    model = GPT2LMHeadModel(config)
    if spec.attention_module is not None:
        for layer_idx, block in enumerate(model.transformer.h):
            block.attn = spec.attention_module(config, layer_idx=layer_idx)
    return model


def attention_parameters(model: PreTrainedModel) -> int:
    """Parameters in the attention modules (projections included), summed over layers, in any family."""
    return sum(p.numel() for attn in arch_of(model.config).attention_modules(model) for p in attn.parameters())


def dims(config: GPT2Config) -> Dims:
    """GPT-2's sizes: every head has n_embd / n_head dimensions, keys and values as many heads as queries."""
    head_dim = config.n_embd // config.n_head
    return Dims(layers=config.n_layer, width=config.n_embd, heads=config.n_head,
                kv_heads=getattr(config, "n_kv_head", config.n_head), head_dim=head_dim, vocab=config.vocab_size)


def blocks(model: GPT2LMHeadModel) -> list[torch.nn.Module]:
    return list(model.transformer.h)


def attention_modules(model: GPT2LMHeadModel) -> list[torch.nn.Module]:
    return [block.attn for block in model.transformer.h]


def length_overrides(seq_len: int) -> dict:
    """GPT-2's learned position table sized to `seq_len` (costs do not depend on its values)."""
    return {"n_positions": seq_len}


def layer_overrides(layers: int) -> dict:
    return {"n_layer": layers}


def shape_overrides(heads: int, width: int) -> dict:
    """The config fields of `heads` query heads over a residual width `width` (head_dim = width / heads)."""
    return {"n_head": heads, "n_embd": width}


class Decoding:
    """What `attnlib.decode` and `attnlib.components` need of a GPT-2: its layers as (ln_1, attention, ln_2, MLP),
    token plus learned position embeddings, ln_f (`final_norm`) and the head, and each attention's projections
    (GPT-2's fused `c_attn`, or a variant module's own `qkv`) and output projection. Positions enter at the input,
    so attention needs none."""

    def __init__(self, model: GPT2LMHeadModel):
        t = self.transformer = model.transformer
        self.model, self.max_len, self.weight = model, model.config.n_positions, t.wte.weight
        self.layers = [(block.ln_1, block.attn, block.ln_2, block.mlp) for block in t.h]
        self.final_norm, self.lm_head = t.ln_f, model.lm_head
        self.unread = (t.wpe.weight,)  # a step reads one row of the position table, not all of it

    def embed(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return self.transformer.wte(ids) + self.transformer.wpe(positions)

    def rope(self, positions: torch.Tensor) -> None:
        return None

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.final_norm(hidden))

    def qkv(self, attn: torch.nn.Module, x: torch.Tensor, rope: None) -> tuple[torch.Tensor, ...]:
        """Queries `[B, H, T, D]` and keys, values `[B, n_kv, T, D]`: GPT-2's fused `c_attn`, or a variant module's
        own `qkv`."""
        if hasattr(attn, "qkv"):
            return attn.qkv(x)
        B, T, _ = x.shape
        return tuple(t.view(B, T, -1, attn.head_dim).transpose(1, 2) for t in attn.c_attn(x).split(attn.split_size, 2))

    def output(self, attn: torch.nn.Module, y: torch.Tensor) -> torch.Tensor:
        """`[B, H, T, D]` attention output -> the output projection `[B, T, C]`."""
        return self.output_projection(attn)(y.transpose(1, 2).flatten(2))

    def output_projection(self, attn: torch.nn.Module) -> torch.nn.Module:
        return attn.c_proj

    def kv_heads(self, attn: torch.nn.Module) -> int:
        return getattr(attn, "n_kv_head", None) or attn.num_heads


class _AttentionAlone(torch.nn.Module):
    """Layer 0's attention on hidden states `[B, T, C]`: GPT-2 passes it nothing else for causal self-attention."""

    def __init__(self, model: GPT2LMHeadModel):
        super().__init__()
        self.attention = model.transformer.h[0].attn

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.attention(hidden)[0]


attention_alone = _AttentionAlone


def causal_hidden_states(model: GPT2LMHeadModel, input_ids: torch.Tensor, shared_blocks: bool = False,
                         checkpoint: bool = False) -> torch.Tensor:
    """Final hidden states `[B, T, C]` of `input_ids` `[B, T]`: GPT-2's own modules in GPT2Model's order, for plain
    causal self-attention without padding, so no attention mask is built.

    Why not `model.transformer(input_ids)`: transformers decides whether a causal mask can be skipped with
    data-dependent checks; under `torch.compile` they cannot run, so a traced model always carries a dense
    [B, 1, T, T] mask, which takes the causal kernels off the table (and pinned kernels refuse it). Every
    attnlib core applies causality itself when the mask is None.

    `shared_blocks`: each block runs as one nested compile region (`_shared_block`), so a whole-model
    `torch.compile` compiles the block once and reuses it for every layer; outside a compile it changes nothing.
    `checkpoint`: each block recomputed in backward (`attnlib.archs.base.layer_runner`)."""
    transformer = model.transformer
    positions = torch.arange(input_ids.shape[1], device=input_ids.device)
    hidden = transformer.drop(transformer.wte(input_ids) + transformer.wpe(positions))
    run_block = layer_runner(_shared_block if shared_blocks else _block, checkpoint)
    for block in transformer.h:
        hidden = run_block(block, hidden)
    return transformer.ln_f(hidden)


def _block(block: torch.nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    out = block(hidden)
    return out[0] if isinstance(out, tuple) else out  # transformers < 5.2 returns a tuple


_shared_block = torch.compiler.nested_compile_region(_block)
