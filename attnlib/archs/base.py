"""The family registry: what a family is called, what it is, and the module that knows its anatomy.

A family's module defines, for models `attnlib.build_model` built:
- `family_config(spec, seq_len, **overrides)`: the family's config with variant `spec`'s attention, every argument
  checked (`ValueError` naming the bad one);
- `build_family(spec, seq_len, **overrides)`: a freshly initialised transformers causal LM of that family with the
  variant `spec`'s attention, every argument checked before a tensor is allocated;
- `dims(config)`: its `Dims`, what FLOP counts read;
- `causal_hidden_states(model, input_ids, shared_blocks, checkpoint)`: the final hidden states of plain causal
  self-attention, the family's own modules in its own order, with no attention mask built (`attnlib.model` says
  why), each layer one nested compile region (`shared_blocks`) and recomputed in backward (`checkpoint`,
  `layer_runner`);
- `blocks(model)` and `attention_modules(model)`: its decoder layers and their attention modules;
- `length_overrides(seq_len)`, `layer_overrides(layers)` and `shape_overrides(heads, width)`: the config fields
  that set a model's positions to `seq_len` (learned positions have a table to size), its depth, and its query
  heads and width;
- `attention_alone(model)`: layer 0's attention as a module of hidden states `[B, T, C]` -> `[B, T, C]`, holding
  what the family passes it besides (positions, no mask), for measuring a layer alone;
- `Decoding(model)`: what `attnlib.decode` and `attnlib.components` run a model with: its layers' parts,
  embeddings, positions, final norm and head, and each attention's projections.
It is imported when first used, so that the GPT-2 family can live in `attnlib.model`, which imports this registry.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable

import torch
import torch.utils.checkpoint
from torch import nn


@dataclass(frozen=True)
class Dims:
    """The sizes FLOP counts and caches read: `heads` query heads and `kv_heads` key/value heads of `head_dim`,
    which need not multiply to the residual `width`."""

    layers: int
    width: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int

    @property
    def attention_width(self) -> int:
        """Query heads x head_dim: the width attention's scores and outputs are computed over."""
        return self.heads * self.head_dim


@dataclass(frozen=True)
class ArchSpec:
    """A model family: its `name` (the `arch` of every result), a line for tables, the module that builds it and
    its tokenizer."""

    name: str
    description: str
    module: str
    tokenizer: str  # `attnlib.data.load_tokenizer`'s name: the family's own, which its results are measured on

    @property
    def anatomy(self) -> ModuleType:
        return importlib.import_module(self.module)

    def config(self, spec: Any, seq_len: int | None, **overrides: Any) -> Any:
        return self.anatomy.family_config(spec, seq_len, **overrides)

    def build(self, spec: Any, seq_len: int | None, **overrides: Any) -> nn.Module:
        return self.anatomy.build_family(spec, seq_len, **overrides)

    def dims(self, config: Any) -> Dims:
        return self.anatomy.dims(config)

    def causal_hidden_states(self, model: nn.Module, input_ids: torch.Tensor, shared_blocks: bool = False,
                             checkpoint: bool = False) -> torch.Tensor:
        return self.anatomy.causal_hidden_states(model, input_ids, shared_blocks, checkpoint)

    def blocks(self, model: nn.Module) -> list[nn.Module]:
        return self.anatomy.blocks(model)

    def attention_modules(self, model: nn.Module) -> list[nn.Module]:
        return self.anatomy.attention_modules(model)

    def length_overrides(self, seq_len: int) -> dict[str, Any]:
        return self.anatomy.length_overrides(seq_len)

    def layer_overrides(self, layers: int) -> dict[str, Any]:
        return self.anatomy.layer_overrides(layers)

    def shape_overrides(self, heads: int, width: int) -> dict[str, Any]:
        return self.anatomy.shape_overrides(heads, width)

    def attention_alone(self, model: nn.Module) -> nn.Module:
        return self.anatomy.attention_alone(model)

    def decoding(self, model: nn.Module) -> Any:
        return self.anatomy.Decoding(model)


ARCHS: dict[str, ArchSpec] = {a.name: a for a in (
    ArchSpec("gpt2", "GPT-2 small: 12 layers, width 768, 12 heads, learned positions, LayerNorm, GELU MLP",
             "attnlib.model", "gpt2"),
    ArchSpec("llama", "Llama-3.2-1B's shape: 16 layers, width 2048, 32 query / 8 KV heads of 64, RoPE, RMSNorm, "
             "SwiGLU", "attnlib.archs.llama", "llama3"),
)}


def get_arch(name: str) -> ArchSpec:
    """The family registered as `name`; `ValueError` listing the valid names otherwise."""
    try:
        return ARCHS[name]
    except KeyError:
        raise ValueError(f"arch: unknown model family {name!r}; valid names: {', '.join(ARCHS)}") from None


def arch_of(config: Any) -> ArchSpec:
    """The family of a config `attnlib.build_model` made (a bare GPT-2 config, without the attribute, is GPT-2)."""
    return get_arch(getattr(config, "attnlib_arch", "gpt2"))


def dims_of(config: Any) -> Dims:
    return arch_of(config).dims(config)


def layer_runner(run: Callable[..., torch.Tensor], checkpoint: bool) -> Callable[..., torch.Tensor]:
    """`run` (one decoder layer's call), recomputed in the backward pass instead of keeping its activations when
    `checkpoint` (activation checkpointing: a layer's inputs are all a long sequence keeps; PyTorch's non-reentrant
    form, dropout masks replayed)."""
    if not checkpoint:
        return run
    return lambda *args: torch.utils.checkpoint.checkpoint(run, *args, use_reentrant=False)
