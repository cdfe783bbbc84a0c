"""The variant registry: one `VariantSpec` per attention mechanism, registered next to its code.

Adding a variant is one new module in `attnlib/variants/` that ends with `register(VariantSpec(...))`,
plus its import in `attnlib/variants/__init__.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from torch import nn


@dataclass(frozen=True)
class VariantSpec:
    """What a variant is, how it plugs into GPT-2 and which kernels it runs.

    A variant plugs in one of two ways:
    - `attention_function(module, query, key, value, attention_mask, scaling, dropout, **kw) -> (out, None)`
      is a transformers attention core (query/key/value `[B, H, T, D]`, out `[B, T, H, D]`) used inside GPT-2's
      own `GPT2Attention`, so the projections stay GPT-2's.
    - `attention_module(config, layer_idx)` replaces `GPT2Attention` when the variant changes the projections.

    Attributes:
        name: registry key, also the `--variants` name.
        description: one line for tables and `--help`.
        exact: True when the variant computes exact softmax attention (equal to `baseline` up to rounding).
        kernel: device type (`"cuda"`, `"cpu"`) -> name of the kernel the variant runs there, given what is
            installed; the forward pass chooses by the same function, so the name is what runs.
        params: the variant's own parameters and their defaults (overridable in `build_model`); they are
            stored as attributes of the model's `GPT2Config`.
        validate: `validate(config, seq_len)` raises `ValueError` naming the bad parameter.
        attn_dropout: whether the core implements attention-probability dropout (`attn_pdrop`).
        attention_flops: `attention_flops(config, seq_len)` -> forward FLOPs of one layer's attention core on one
            sequence, all heads, by the mask-exact convention (see `attnlib.flops`); None means exact causal
            softmax attention, 4 x T(T+1)/2 x n_head x head_dim.
        hf_name: the core's name in transformers' AttentionInterface (default `attnlib_<name>`; it must not
            contain "flash", which transformers reserves for its own FlashAttention loader).
        arch_params: model family (`attnlib.archs`) -> the variant's parameters there, over `params` (a window
            the family's models use, say).
        unsupported: model family -> why the variant has no form there; `build_model` raises with it.
        arch_modules: model family -> the variant's attention module there, replacing that family's own
            (`attention_module` is GPT-2's).
        decode_cache: what the variant keeps to decode one token at a time (`attnlib.decode.CACHES`): "kv" (keys
            and values), "latent" (MLA's), "ring" (a window's), "state" (linear attention's); None for a variant
            whose attended set depends on later tokens, which has no step-by-step form.
    """

    name: str
    description: str
    exact: bool
    kernel: Callable[[str], str]
    params: dict[str, Any] = field(default_factory=dict)
    attention_function: Callable | None = None
    attention_module: type[nn.Module] | None = None
    validate: Callable[[Any, int], None] | None = None
    attn_dropout: bool = False
    attention_flops: Callable[[Any, int], float] | None = None
    hf_name: str | None = None
    arch_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    unsupported: dict[str, str] = field(default_factory=dict)
    arch_modules: dict[str, type[nn.Module]] = field(default_factory=dict)
    decode_cache: str | None = "kv"

    def __post_init__(self) -> None:
        if (self.attention_function is None) == (self.attention_module is None):
            raise ValueError(f"variant {self.name!r}: set exactly one of attention_function, attention_module")

    @property
    def attn_implementation(self) -> str:
        """The `config._attn_implementation` GPT-2 runs with: the core's transformers name, or "sdpa" (only its
        mask is used) for variants with their own module."""
        if self.attention_function is not None:
            return self.hf_name or f"attnlib_{self.name}"
        return "sdpa"


VARIANTS: dict[str, VariantSpec] = {}


def register(spec: VariantSpec) -> VariantSpec:
    """Add `spec` to `VARIANTS` and, for attention functions, to transformers' attention interfaces."""
    if spec.name in VARIANTS:
        raise ValueError(f"variant {spec.name!r} is already registered")
    VARIANTS[spec.name] = spec
    if spec.attention_function is not None:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

        AttentionInterface.register(spec.attn_implementation, spec.attention_function)
        # sdpa_mask returns None for plain causal self-attention, so the core can use its causal kernel path;
        # a padding or cache mask arrives as a boolean [B, 1, Tq, Tk] tensor.
        AttentionMaskInterface.register(spec.attn_implementation, sdpa_mask)
    return spec


def supported_variants(arch: str) -> list[str]:
    """The variants with a form on model family `arch`, in table order."""
    return [name for name, spec in VARIANTS.items() if arch not in spec.unsupported]


def get_variant(name: str) -> VariantSpec:
    """The spec registered as `name`; `ValueError` listing the valid names otherwise."""
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(f"variant: unknown variant {name!r}; valid names: {', '.join(VARIANTS)}") from None
