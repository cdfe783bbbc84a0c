"""The family registry: what a family is called, what it is, and the module that builds it.

A family's module defines `build_family(spec, seq_len, **overrides)`: a freshly initialised transformers causal LM
of that family with the variant `spec`'s attention, every argument checked before a tensor is allocated. It is
imported when first used, so that the GPT-2 family can live in `attnlib.model`, which imports this registry.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from torch import nn


@dataclass(frozen=True)
class ArchSpec:
    """A model family: its `name` (the `arch` of every result), a line for tables, and the module that builds it."""

    name: str
    description: str
    module: str

    def build(self, spec: Any, seq_len: int | None, **overrides: Any) -> nn.Module:
        return importlib.import_module(self.module).build_family(spec, seq_len, **overrides)


ARCHS: dict[str, ArchSpec] = {a.name: a for a in (
    ArchSpec("gpt2", "GPT-2 small: 12 layers, width 768, 12 heads, learned positions, LayerNorm, GELU MLP",
             "attnlib.model"),
    ArchSpec("llama", "Llama-3.2-1B's shape: 16 layers, width 2048, 32 query / 8 KV heads of 64, RoPE, RMSNorm, "
             "SwiGLU", "attnlib.archs.llama"),
)}


def get_arch(name: str) -> ArchSpec:
    """The family registered as `name`; `ValueError` listing the valid names otherwise."""
    try:
        return ARCHS[name]
    except KeyError:
        raise ValueError(f"arch: unknown model family {name!r}; valid names: {', '.join(ARCHS)}") from None
